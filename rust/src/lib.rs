//! lkswarm's sans-I/O core: bytes in, bytes out. No sockets, timers or threads;
//! time, where needed, is an argument. The PyO3 layer lives in `py/` behind
//! the `python` feature so this crate builds and tests without Python.

pub mod codec;
pub mod error;
pub mod ws;

#[cfg(feature = "python")]
mod py;

pub use error::{DecodeReason, Error, Result};
pub mod media;
