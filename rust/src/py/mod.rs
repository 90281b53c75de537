//! The Python face of the core (`lkswarm._core`). All PyO3 code lives here.

mod buffer;
mod codec;
mod data;
mod data_track;
mod errors;
mod events;
mod media;
mod view;
mod ws;

use pyo3::prelude::*;

/// `lkswarm._core`: the native half of lkswarm.
#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("build_profile", if cfg!(debug_assertions) { "debug" } else { "release" })?;
    m.add_class::<view::PyMessageView>()?;
    codec::register(m)?;
    ws::register(m)?;
    media::register(m)?;
    events::register(m)?;
    Ok(())
}
