//! WebSocket framing for `lkswarm/ws.py`: one call per received chunk, one per sent frame.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::buffer::with_bytes;
use crate::ws::{client_frame_len, encode_client_frame, parse_frames, Frame};

/// xorshift64* state for masking keys. RFC 6455 wants keys a browser script
/// cannot predict; a load generator has no such script, and a syscall per
/// frame would dominate the cost of small frames.
static MASK_STATE: AtomicU64 = AtomicU64::new(0);

fn next_mask() -> [u8; 4] {
    let mut x = MASK_STATE.load(Ordering::Relaxed);
    if x == 0 {
        // Seeded once from the OS through std's randomly keyed hasher.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        x = h.finish() | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    MASK_STATE.store(x, Ordering::Relaxed);
    let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (v >> 32).to_le_bytes()[..4].try_into().unwrap_or([0; 4])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ws_encode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(ws_parse_frames, m)?)?;
    Ok(())
}

/// One final, masked client frame carrying `payload`; the mask is random unless given (tests).
#[pyfunction]
#[pyo3(signature = (opcode, payload, mask = None))]
fn ws_encode_frame<'py>(
    py: Python<'py>,
    opcode: u8,
    payload: &Bound<'py, PyAny>,
    mask: Option<[u8; 4]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mask = mask.unwrap_or_else(next_mask);
    with_bytes(payload, |data| {
        PyBytes::new_with(py, client_frame_len(data.len()), |out| {
            encode_client_frame(opcode, data, mask, out);
            Ok(())
        })
    })?
}

/// Complete frames at the start of `buf` as `(fin, opcode, masked, payload)` tuples, and the bytes they used.
#[pyfunction]
fn ws_parse_frames<'py>(
    py: Python<'py>,
    buf: &Bound<'py, PyAny>,
    max_len: u64,
) -> PyResult<(Bound<'py, PyList>, usize)> {
    let mut frames: Vec<Frame> = Vec::new();
    let (items, used) = with_bytes(buf, |data| -> PyResult<_> {
        let used = parse_frames(data, max_len, &mut frames).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let items = frames
            .iter()
            .map(|f| {
                PyTuple::new(
                    py,
                    [
                        f.fin.into_pyobject(py)?.to_owned().into_any(),
                        f.opcode.into_pyobject(py)?.into_any(),
                        f.masked.into_pyobject(py)?.to_owned().into_any(),
                        PyBytes::new(py, &data[f.start..f.end]).into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok((items, used))
    })??;
    Ok((PyList::new(py, items)?, used))
}
