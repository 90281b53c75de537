//! The one place where core errors become Python exceptions. The exception
//! classes are declared in Python (`lkswarm/errors.py`) so that `CodecError`
//! can subclass both `LkswarmError` and `ValueError`.

use pyo3::prelude::*;

use crate::error::Error;

pyo3::import_exception!(lkswarm.errors, CodecError);
pyo3::import_exception!(lkswarm.errors, MediaError);

/// Converts a core error into the matching Python exception.
pub fn to_py(err: Error) -> PyErr {
    match &err {
        Error::Decode { offset, path, .. } => CodecError::new_err((err.to_string(), Some(*offset), path.clone())),
        Error::Encode { path, .. } => CodecError::new_err((err.to_string(), None::<usize>, path.clone())),
        Error::Media { .. } => MediaError::new_err(err.to_string()),
    }
}

/// `?`-friendly conversion for results of the core crate.
pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
