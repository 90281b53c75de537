//! `MessageView`: the read-only Python view of a decoded message.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use serde_json::Value;

use super::errors::IntoPyResult;
use crate::codec::json::to_json;
use crate::codec::schema::MESSAGES;
use crate::codec::{FieldValue, MapValue, MessageDesc, MessageView, Scalar};

/// A read-only view of one protobuf message. Fields read by their proto
/// names; `kind` names the chosen variant of the message's first oneof.
#[pyclass(name = "MessageView", module = "lkswarm._core", frozen)]
pub struct PyMessageView {
    pub view: MessageView,
}

impl PyMessageView {
    pub fn new(view: MessageView) -> Self {
        Self { view }
    }
}

#[pymethods]
impl PyMessageView {
    fn __getattribute__(slf: &Bound<'_, Self>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let desc = this.view.desc();
        if let Some(pos) = field_of(desc, name)? {
            if let Some(value) = this.view.scalar(pos) {
                return scalar_to_py(py, value.py()?);
            }
            if let Some(tuple) = elements_to_py(py, &this.view, pos)? {
                return Ok(tuple);
            }
            return field_to_py(py, this.view.get(pos).py()?);
        }
        if name.to_str()? == "kind" {
            return this.kind(py);
        }
        // Methods and dunder attributes.
        // SAFETY: both pointers are valid, borrowed for the duration of the call;
        // PyObject_GenericGetAttr returns a new reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyObject_GenericGetAttr(slf.as_ptr(), name.as_ptr()))
                .map(Bound::unbind)
        }
    }

    fn __getattr__(&self, name: &str) -> PyResult<Py<PyAny>> {
        Err(PyAttributeError::new_err(format!("{} message has no field {name:?}", self.view.desc().full_name)))
    }

    /// The canonical proto3 JSON mapping (as `json_format.MessageToDict`).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &to_json(&self.view).py()?)
    }

    /// Full name of the message type, e.g. `livekit.SignalResponse`.
    #[getter]
    fn type_name(&self) -> &'static str {
        self.view.desc().full_name
    }

    /// Proto names of the fields present on the wire.
    fn present_fields(&self) -> PyResult<Vec<&'static str>> {
        let desc = self.view.desc();
        let mut out = Vec::new();
        for (pos, field) in desc.fields.iter().enumerate() {
            if self.view.has(pos).py()? {
                out.push(field.name);
            }
        }
        Ok(out)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let dict = to_json(&self.view).py()?;
        let _ = py;
        Ok(format!("<{} {}>", self.view.desc().full_name, dict))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<PyMessageView>() else { return Ok(false) };
        let other = other.get();
        let _ = py;
        Ok(self.view.desc().full_name == other.view.desc().full_name
            && to_json(&self.view).py()? == to_json(&other.view).py()?)
    }
}

impl PyMessageView {
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let desc = self.view.desc();
        if desc.oneofs.is_empty() {
            return Ok(py.None());
        }
        Ok(match self.view.which_oneof(0).py()? {
            Some(pos) => PyString::intern(py, desc.fields[pos].name).into_any().unbind(),
            None => py.None(),
        })
    }
}

/// Slots of the attribute-name cache: (message type, name object) -> field position.
const NAME_CACHE_SLOTS: usize = 1024;
/// `pos` of a name that is not a field of the type.
const NOT_A_FIELD: u32 = 0xFFFF;

/// One slot: the name object (a strong reference) and `type index << 16 | position`.
struct NameSlot {
    name: AtomicPtr<pyo3::ffi::PyObject>,
    key: AtomicU32,
}

/// Attribute names in code are interned, so the same objects come back read after read; this
/// pointer-keyed cache answers them without comparing strings. Every access holds the GIL (this
/// module is built for GIL-enabled CPython), so slots are never written concurrently; the atomics
/// only keep that free of data races in Rust's terms. A slot owns a reference to its name, so the
/// address cannot be reused by another string while it is cached. A static, not a thread-local:
/// thread-locals of a loaded extension cost a `__tls_get_addr` call on every read.
static NAME_CACHE: [NameSlot; NAME_CACHE_SLOTS] =
    [const { NameSlot { name: AtomicPtr::new(std::ptr::null_mut()), key: AtomicU32::new(u32::MAX) } };
        NAME_CACHE_SLOTS];

/// The position of the field called `name` in `desc`, if it is one.
fn field_of(desc: &'static MessageDesc, name: &Bound<'_, PyString>) -> PyResult<Option<usize>> {
    let type_index = message_index(desc);
    let name_ptr = name.as_ptr();
    let slot =
        &NAME_CACHE[((name_ptr as usize >> 4) ^ (type_index as usize).wrapping_mul(0x9E37_79B9)) % NAME_CACHE_SLOTS];
    let key = slot.key.load(Ordering::Relaxed);
    if slot.name.load(Ordering::Relaxed) == name_ptr && key >> 16 == type_index {
        let pos = key & 0xFFFF;
        return Ok((pos != NOT_A_FIELD).then_some(pos as usize));
    }
    let pos = desc.field_by_name(name.to_str()?).map_or(NOT_A_FIELD, |p| p as u32);
    // SAFETY: the GIL is held (we are inside a Python call); the slot takes its own reference to
    // the new name and gives up the one it held on the old.
    unsafe { pyo3::ffi::Py_IncRef(name_ptr) };
    let old = slot.name.swap(name_ptr, Ordering::Relaxed);
    slot.key.store(type_index << 16 | pos, Ordering::Relaxed);
    if !old.is_null() {
        // SAFETY: as above; `old` was a reference this slot owned. Releasing a `str` runs no Python code.
        unsafe { pyo3::ffi::Py_DecRef(old) };
    }
    Ok((pos != NOT_A_FIELD).then_some(pos as usize))
}

/// The index of `desc` in the schema's table of message types.
#[inline]
fn message_index(desc: &'static MessageDesc) -> u32 {
    let offset = (desc as *const MessageDesc as usize).wrapping_sub(MESSAGES.as_ptr() as usize);
    (offset / std::mem::size_of::<MessageDesc>()) as u32
}

/// A repeated message field as a tuple of views, built in place (the common `for p in x.items`).
fn elements_to_py(py: Python<'_>, view: &MessageView, pos: usize) -> PyResult<Option<Py<PyAny>>> {
    if !view.is_message_list(pos) {
        return Ok(None);
    }
    let count = view.element_count(pos);
    // SAFETY: PyTuple_New returns a new tuple of `count` NULL slots (or NULL with an exception);
    // each slot is filled exactly once below, by PyTuple_SetItem, which steals the reference.
    let tuple = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyTuple_New(count as pyo3::ffi::Py_ssize_t))? };
    let mut filled = 0usize;
    let mut failure = None;
    let is_elements = view.for_each_element(pos, |element| {
        if failure.is_some() || filled >= count {
            return;
        }
        match Py::new(py, PyMessageView::new(element)) {
            Ok(object) => {
                // SAFETY: `filled < count` and the tuple is new and not yet shared; PyTuple_SetItem
                // steals the reference, and cannot fail for an index in range.
                unsafe {
                    pyo3::ffi::PyTuple_SetItem(tuple.as_ptr(), filled as pyo3::ffi::Py_ssize_t, object.into_ptr())
                };
                filled += 1;
            }
            Err(error) => failure = Some(error),
        }
    });
    if !is_elements {
        return Ok(None);
    }
    if let Some(error) = failure {
        return Err(error);
    }
    if filled != count {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("message view changed while it was read"));
    }
    Ok(Some(tuple.unbind()))
}

fn scalar_to_py(py: Python<'_>, s: Scalar<'_>) -> PyResult<Py<PyAny>> {
    Ok(match s {
        Scalar::I64(v) => v.into_pyobject(py)?.into_any().unbind(),
        Scalar::U64(v) => v.into_pyobject(py)?.into_any().unbind(),
        Scalar::F32(v) => PyFloat::new(py, f64::from(v)).into_any().unbind(),
        Scalar::F64(v) => PyFloat::new(py, v).into_any().unbind(),
        Scalar::Bool(v) => PyBool::new(py, v).to_owned().into_any().unbind(),
        Scalar::Enum(v) => v.into_pyobject(py)?.into_any().unbind(),
        Scalar::Str(v) => PyString::new(py, v).into_any().unbind(),
        Scalar::Bytes(v) => PyBytes::new(py, v).into_any().unbind(),
    })
}

fn field_to_py(py: Python<'_>, value: FieldValue<'_>) -> PyResult<Py<PyAny>> {
    Ok(match value {
        FieldValue::Scalar(s) => scalar_to_py(py, s)?,
        FieldValue::Message { view, .. } => Py::new(py, PyMessageView::new(view))?.into_any(),
        FieldValue::List(values) => {
            let items = values.into_iter().map(|s| scalar_to_py(py, s)).collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        FieldValue::Messages(views) => {
            let items = views.into_iter().map(|v| Py::new(py, PyMessageView::new(v))).collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        FieldValue::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                let value = match v {
                    MapValue::Scalar(s) => scalar_to_py(py, s)?,
                    MapValue::Message(m) => Py::new(py, PyMessageView::new(m))?.into_any(),
                };
                dict.set_item(scalar_to_py(py, k)?, value)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// Converts a JSON value into plain Python objects.
pub fn json_to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any().unbind()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any().unbind()
        }
    })
}
