//! Module-level codec functions of `lkswarm._core`.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use super::buffer::{source, with_bytes};
use super::errors::{to_py, IntoPyResult};
use super::view::PyMessageView;
use crate::codec::encode::{self, AddTrack, Layer};
use crate::codec::json::{encode_json, to_json};
use crate::codec::schema::{self, FILE_DESCRIPTOR_SET};
use crate::codec::wire::MAX_DEPTH;
use crate::codec::{peek, MessageDesc, MessageView, Source};
use crate::error::Error;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_request, m)?)?;
    m.add_function(wrap_pyfunction!(decode_response, m)?)?;
    m.add_function(wrap_pyfunction!(decode_message, m)?)?;
    m.add_function(wrap_pyfunction!(peek_request, m)?)?;
    m.add_function(wrap_pyfunction!(peek_response, m)?)?;
    m.add_function(wrap_pyfunction!(encode_request, m)?)?;
    m.add_function(wrap_pyfunction!(encode_response, m)?)?;
    m.add_function(wrap_pyfunction!(encode_message, m)?)?;
    m.add_function(wrap_pyfunction!(decode_response_json, m)?)?;
    m.add_function(wrap_pyfunction!(decode_request_json, m)?)?;
    m.add_function(wrap_pyfunction!(encode_request_json, m)?)?;
    m.add_function(wrap_pyfunction!(encode_response_json, m)?)?;
    m.add_function(wrap_pyfunction!(encode_ping, m)?)?;
    m.add_function(wrap_pyfunction!(encode_leave, m)?)?;
    m.add_function(wrap_pyfunction!(encode_trickle, m)?)?;
    m.add_function(wrap_pyfunction!(encode_offer, m)?)?;
    m.add_function(wrap_pyfunction!(encode_answer, m)?)?;
    m.add_function(wrap_pyfunction!(encode_add_track, m)?)?;
    m.add_function(wrap_pyfunction!(encode_subscription, m)?)?;
    m.add_function(wrap_pyfunction!(encode_update_metadata, m)?)?;
    m.add_function(wrap_pyfunction!(schema_descriptor_set, m)?)?;
    m.add_function(wrap_pyfunction!(noop, m)?)?;
    Ok(())
}

fn decode(src: Arc<dyn Source>, desc: &'static MessageDesc) -> PyResult<PyMessageView> {
    Ok(PyMessageView::new(MessageView::decode(src, desc).py()?))
}

/// Decodes a SignalRequest from any bytes-like object, without copying it.
#[pyfunction]
fn decode_request(buf: &Bound<'_, PyAny>) -> PyResult<PyMessageView> {
    decode(source(buf)?, schema::signal_request())
}

/// Decodes a SignalResponse from any bytes-like object, without copying it.
#[pyfunction]
fn decode_response(buf: &Bound<'_, PyAny>) -> PyResult<PyMessageView> {
    decode(source(buf)?, schema::signal_response())
}

fn message_desc(type_name: &str) -> PyResult<&'static MessageDesc> {
    schema::message_by_name(type_name)
        .ok_or_else(|| PyTypeError::new_err(format!("unknown message type {type_name:?}")))
}

/// Decodes any message of our schema by full name (`livekit.JoinRequest`).
#[pyfunction]
fn decode_message(type_name: &str, buf: &Bound<'_, PyAny>) -> PyResult<PyMessageView> {
    decode(source(buf)?, message_desc(type_name)?)
}

fn peek_with(
    py: Python<'_>,
    cache: &'static PyOnceLock<Vec<Py<PyString>>>,
    desc: &'static MessageDesc,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Option<Py<PyString>>> {
    let names = cache.get_or_init(py, || desc.fields.iter().map(|f| PyString::intern(py, f.name).unbind()).collect());
    let found = with_bytes(buf, |b| peek(b, desc))?.py()?;
    Ok(found.map(|pos| names[pos].clone_ref(py)))
}

static REQUEST_NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();
static RESPONSE_NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// The oneof name of a SignalRequest frame, read from its tags only.
#[pyfunction]
fn peek_request(py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyString>>> {
    peek_with(py, &REQUEST_NAMES, schema::signal_request(), buf)
}

/// The oneof name of a SignalResponse frame, read from its tags only.
#[pyfunction]
fn peek_response(py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyString>>> {
    peek_with(py, &RESPONSE_NAMES, schema::signal_response(), buf)
}

/// Converts a Python mapping (as produced by `to_dict`) into a JSON value.
///
/// Nesting is capped (as upb caps message depth): a self-referencing or absurdly
/// deep mapping must raise `CodecError`, not overflow the native stack.
fn py_to_json(obj: &Bound<'_, PyAny>, path: &str, depth: u32) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(to_py(Error::encode(path, format!("nested deeper than {MAX_DEPTH} levels"))));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::Number(v.into()));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::Number(v.into()));
        }
        return Err(to_py(Error::encode(path, "integer out of 64-bit range")));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Ok(Number::from_f64(v).map_or_else(
            || {
                Value::String(
                    if v.is_nan() {
                        "NaN"
                    } else if v > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    }
                    .into(),
                )
            },
            Value::Number,
        ));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        // A str with a lone surrogate has no UTF-8 form; protobuf strings cannot hold it.
        let text = s.to_str().map_err(|_| to_py(Error::encode(path, "string holds a lone surrogate")))?;
        return Ok(Value::String(text.to_string()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        use base64::Engine as _;
        return Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_bytes())));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list.iter().enumerate().map(|(i, x)| py_to_json(&x, &format!("{path}[{i}]"), depth + 1)).collect();
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t.iter().enumerate().map(|(i, x)| py_to_json(&x, &format!("{path}[{i}]"), depth + 1)).collect();
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key: String = k.extract().map_err(|_| to_py(Error::encode(path, "mapping keys must be strings")))?;
            let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            map.insert(key, py_to_json(&v, &child, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(m) = obj.cast::<PyMapping>() {
        let d = PyDict::new(obj.py());
        for item in m.items()?.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            d.set_item(k, v)?;
        }
        return py_to_json(d.as_any(), path, depth);
    }
    let type_name = obj.get_type().name().map_or_else(|_| "object".to_string(), |n| n.to_string());
    Err(to_py(Error::encode(path, format!("unsupported value of type {type_name}"))))
}

fn encode_mapping<'py>(
    py: Python<'py>,
    mapping: &Bound<'py, PyAny>,
    desc: &'static MessageDesc,
) -> PyResult<Bound<'py, PyBytes>> {
    let value = py_to_json(mapping, "", 0)?;
    let bytes = encode_json(&value, desc).py()?;
    Ok(PyBytes::new(py, &bytes))
}

/// Encodes a SignalRequest from its JSON mapping (proto or JSON field names).
#[pyfunction]
fn encode_request<'py>(py: Python<'py>, mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    encode_mapping(py, mapping, schema::signal_request())
}

/// Encodes a SignalResponse from its JSON mapping (for test servers and replay).
#[pyfunction]
fn encode_response<'py>(py: Python<'py>, mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    encode_mapping(py, mapping, schema::signal_response())
}

/// Encodes any message of our schema by full name.
#[pyfunction]
fn encode_message<'py>(py: Python<'py>, type_name: &str, mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    encode_mapping(py, mapping, message_desc(type_name)?)
}

fn text_of(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str().map_err(|_| to_py(Error::encode("", "JSON text holds a lone surrogate")))?.to_string());
    }
    with_bytes(obj, |b| String::from_utf8(b.to_vec()))?.map_err(|_| to_py(Error::encode("", "JSON text is not UTF-8")))
}

fn decode_json(obj: &Bound<'_, PyAny>, desc: &'static MessageDesc) -> PyResult<PyMessageView> {
    let text = text_of(obj)?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| to_py(Error::encode("", format!("invalid JSON: {e}"))))?;
    let bytes = encode_json(&value, desc).py()?;
    decode(Arc::new(bytes), desc)
}

/// Decodes a JSON text frame (protojson) into a SignalResponse view.
#[pyfunction]
fn decode_response_json(text: &Bound<'_, PyAny>) -> PyResult<PyMessageView> {
    decode_json(text, schema::signal_response())
}

/// Decodes a JSON text frame into a SignalRequest view (for test servers).
#[pyfunction]
fn decode_request_json(text: &Bound<'_, PyAny>) -> PyResult<PyMessageView> {
    decode_json(text, schema::signal_request())
}

fn encode_json_text(mapping: &Bound<'_, PyAny>, desc: &'static MessageDesc) -> PyResult<String> {
    let value = py_to_json(mapping, "", 0)?;
    let bytes = encode_json(&value, desc).py()?;
    let view = MessageView::decode(Arc::new(bytes), desc).py()?;
    let canonical = to_json(&view).py()?;
    serde_json::to_string(&canonical).map_err(|e| to_py(Error::encode("", e.to_string())))
}

/// Encodes a SignalRequest as a protojson text frame.
#[pyfunction]
fn encode_request_json(mapping: &Bound<'_, PyAny>) -> PyResult<String> {
    encode_json_text(mapping, schema::signal_request())
}

/// Encodes a SignalResponse as a protojson text frame (for test servers).
#[pyfunction]
fn encode_response_json(mapping: &Bound<'_, PyAny>) -> PyResult<String> {
    encode_json_text(mapping, schema::signal_response())
}

/// `SignalRequest{ping_req{timestamp, rtt}}`.
#[pyfunction]
fn encode_ping(py: Python<'_>, timestamp_ms: i64, rtt_ms: i64) -> Bound<'_, PyBytes> {
    let (buf, n) = encode::ping(timestamp_ms, rtt_ms);
    PyBytes::new(py, &buf[..n])
}

/// `SignalRequest{leave{can_reconnect, reason, action}}`.
#[pyfunction]
#[pyo3(signature = (reason, action = 0, can_reconnect = false))]
fn encode_leave(py: Python<'_>, reason: i32, action: i32, can_reconnect: bool) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &encode::leave(reason, action, can_reconnect))
}

/// `SignalRequest{trickle{candidateInit, target, final}}`.
#[pyfunction]
#[pyo3(signature = (candidate_init, target, r#final = false))]
fn encode_trickle<'py>(py: Python<'py>, candidate_init: &str, target: i32, r#final: bool) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &encode::trickle(candidate_init, target, r#final))
}

/// `SignalRequest{offer{type: "offer", sdp, id}}`.
#[pyfunction]
#[pyo3(signature = (sdp, id = 0))]
fn encode_offer<'py>(py: Python<'py>, sdp: &str, id: u32) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &encode::offer(sdp, id))
}

/// `SignalRequest{answer{type: "answer", sdp, id}}`.
#[pyfunction]
#[pyo3(signature = (sdp, id = 0))]
fn encode_answer<'py>(py: Python<'py>, sdp: &str, id: u32) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &encode::answer(sdp, id))
}

/// `SignalRequest{add_track{...}}`; `layers` holds `(quality, width, height, bitrate)` tuples.
#[pyfunction]
#[pyo3(signature = (cid, name, r#type, source = 0, width = 0, height = 0, muted = false, disable_dtx = false,
                    layers = Vec::new(), stereo = false, disable_red = false, stream = ""))]
#[allow(clippy::too_many_arguments)]
fn encode_add_track<'py>(
    py: Python<'py>,
    cid: &str,
    name: &str,
    r#type: i32,
    source: i32,
    width: u32,
    height: u32,
    muted: bool,
    disable_dtx: bool,
    layers: Vec<(i32, u32, u32, u32)>,
    stereo: bool,
    disable_red: bool,
    stream: &str,
) -> Bound<'py, PyBytes> {
    let request = AddTrack {
        cid,
        name,
        track_type: r#type,
        width,
        height,
        muted,
        disable_dtx,
        source,
        layers: layers
            .into_iter()
            .map(|(quality, width, height, bitrate)| Layer { quality, width, height, bitrate })
            .collect(),
        stereo,
        disable_red,
        stream,
    };
    PyBytes::new(py, &encode::add_track(&request))
}

/// `SignalRequest{subscription{track_sids, subscribe}}`.
#[pyfunction]
#[pyo3(signature = (track_sids, subscribe = true))]
fn encode_subscription(py: Python<'_>, track_sids: Vec<String>, subscribe: bool) -> Bound<'_, PyBytes> {
    let sids: Vec<&str> = track_sids.iter().map(String::as_str).collect();
    PyBytes::new(py, &encode::subscription(&sids, subscribe))
}

/// `SignalRequest{update_metadata{metadata, name, attributes, request_id}}`.
#[pyfunction]
#[pyo3(signature = (metadata = "", name = "", attributes = None, request_id = 0))]
fn encode_update_metadata<'py>(
    py: Python<'py>,
    metadata: &str,
    name: &str,
    attributes: Option<std::collections::HashMap<String, String>>,
    request_id: u32,
) -> Bound<'py, PyBytes> {
    let attrs = attributes.unwrap_or_default();
    let pairs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    PyBytes::new(py, &encode::update_metadata(metadata, name, &pairs, request_id))
}

/// The encoded `FileDescriptorSet` of our schema (`protos/`).
#[pyfunction]
fn schema_descriptor_set(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, FILE_DESCRIPTOR_SET)
}

/// Does nothing: the per-call floor for benchmarks.
#[pyfunction]
fn noop(buf: &Bound<'_, PyAny>) {
    let _ = buf;
}
