//! Copy-free access to any bytes-like Python object.

use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::codec::Source;

/// Bytes owned by a Python object that the source keeps alive.
enum Owner {
    Bytes(#[allow(dead_code)] Py<PyBytes>),
    Buffer(#[allow(dead_code)] PyBuffer<u8>),
}

pub struct PySource {
    _owner: Owner,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr` points into memory owned by `_owner`: an immutable `bytes`
// object, or an exported buffer whose export keeps it from being resized or
// freed. The pointer is only read, and only while the GIL is held (every
// read happens inside a Python call), so moving or sharing the holder
// between threads cannot race with Python code.
unsafe impl Send for PySource {}
// SAFETY: see `Send` above.
unsafe impl Sync for PySource {}

impl Source for PySource {
    fn immutable(&self) -> bool {
        matches!(self._owner, Owner::Bytes(_))
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` stays valid for the life of `_owner` (see above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Wraps `obj` (bytes, bytearray, memoryview or any C-contiguous buffer) without copying.
pub fn source(obj: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Source>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let data = b.as_bytes();
        return Ok(Arc::new(PySource {
            ptr: data.as_ptr(),
            len: data.len(),
            _owner: Owner::Bytes(b.clone().unbind()),
        }));
    }
    let buf = PyBuffer::<u8>::get(obj)
        .map_err(|_| PyTypeError::new_err(format!("expected a bytes-like object, got {}", type_name(obj))))?;
    if !buf.is_c_contiguous() {
        return Err(PyTypeError::new_err("expected a C-contiguous buffer"));
    }
    let (ptr, len) = (buf.buf_ptr() as *const u8, buf.len_bytes());
    Ok(Arc::new(PySource { ptr, len, _owner: Owner::Buffer(buf) }))
}

/// Runs `f` on the bytes of `obj` without keeping them.
pub fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let src = source(obj)?;
    Ok(f(src.bytes()))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "object".to_string(), |n| n.to_string())
}
