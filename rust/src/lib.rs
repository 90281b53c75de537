//! lkswarm's native core. The codec (`codec`, `ws`) and the media peer
//! (`media::peer`, `media::publish`) are sans-I/O: bytes in, bytes out, with no
//! sockets, timers or threads, and time, where needed, an argument. The one
//! exception is `media::hub`, the media tier's I/O shell: it owns the UDP sockets,
//! an epoll loop and one worker thread that drives the sans-I/O peers. The PyO3
//! layer lives in `py/` behind the `python` feature so this crate builds and tests
//! without Python.

pub mod codec;
pub mod error;
pub mod ws;

#[cfg(feature = "python")]
mod py;

pub use error::{DecodeReason, Error, Result};
pub mod media;
