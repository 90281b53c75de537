//! Python views of data-channel load (`media::data`): the `data` dict of `MediaHub.peer_stats`
//! and the argument parsing of `MediaHub.data_publish`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::media::data::packet::Kind;
use crate::media::data::DataSummary;

/// "reliable" or "lossy", as `data_publish` takes it.
pub fn kind_from_name(channel: &str) -> Result<Kind, Error> {
    match channel {
        "reliable" => Ok(Kind::Reliable),
        "lossy" => Ok(Kind::Lossy),
        other => Err(Error::media(format!("unknown data channel {other:?} (reliable or lossy)"))),
    }
}

fn per_channel<'py>(py: Python<'py>, values: [u64; 2]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("reliable", values[0])?;
    dict.set_item("lossy", values[1])?;
    Ok(dict)
}

/// `peer_stats()["data"]`; see `_core.pyi` for the keys.
pub fn data_dict<'py>(py: Python<'py>, data: &DataSummary) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("sent", per_channel(py, data.sent)?)?;
    dict.set_item("bytes_sent", per_channel(py, data.payload_bytes_sent)?)?;
    dict.set_item("send_blocked", data.send_blocked)?;
    dict.set_item("send_skipped", data.send_skipped)?;
    dict.set_item("malformed", data.malformed)?;
    dict.set_item("malformed_detail", &data.malformed_detail)?;
    dict.set_item("other", data.other)?;
    dict.set_item("channels_open", &data.channels_open)?;
    dict.set_item("senders_overflow", data.flows_overflow)?;
    let received = PyList::empty(py);
    for flow in &data.received {
        let f = PyDict::new(py);
        f.set_item("sender", &flow.sender)?;
        f.set_item("channel", &flow.channel)?;
        f.set_item("received", flow.received)?;
        f.set_item("bytes", flow.payload_bytes)?;
        f.set_item("duplicates", flow.duplicates)?;
        f.set_item("out_of_order", flow.out_of_order)?;
        f.set_item("missing", flow.missing)?;
        f.set_item("expected", flow.expected)?;
        f.set_item("foreign", flow.foreign)?;
        received.append(f)?;
    }
    dict.set_item("received", received)?;
    Ok(dict)
}
