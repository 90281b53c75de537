//! Python views of data-channel load (`media::data`): the `data` dict of `MediaHub.peer_stats`
//! and the argument parsing of `MediaHub.data_publish`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::media::data::packet::Kind;
use crate::media::data::stats::FlowCounts;
use crate::media::data::DataSummary;

/// One flow's figures into its dict (`received`, `bytes`, `duplicates`, `out_of_order`, `missing`,
/// `expected`, `foreign`), for data messages and data tracks alike.
pub fn set_flow_counts(dict: &Bound<'_, PyDict>, counts: &FlowCounts) -> PyResult<()> {
    dict.set_item("received", counts.received)?;
    dict.set_item("bytes", counts.payload_bytes)?;
    dict.set_item("duplicates", counts.duplicates)?;
    dict.set_item("out_of_order", counts.out_of_order)?;
    dict.set_item("missing", counts.missing)?;
    dict.set_item("expected", counts.expected)?;
    dict.set_item("foreign", counts.foreign)
}

/// A non-negative, finite number of seconds, as a duration (`what` names the argument).
pub fn seconds(value_s: f64, what: &str) -> Result<std::time::Duration, Error> {
    // A duration from Python is added to an `Instant`, which panics past about 2^63 ns of uptime: anything
    // longer than this (over 31 years) is a mistake, refused here rather than failing a peer later.
    if value_s > MAX_SECONDS {
        return Err(Error::media(format!("{what}: at most {MAX_SECONDS:e} s, got {value_s:e}")));
    }
    std::time::Duration::try_from_secs_f64(value_s).map_err(|e| Error::media(format!("{what}: {e} ({value_s})")))
}

/// The longest duration a hub method takes from Python.
pub const MAX_SECONDS: f64 = 1e9;

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
    dict.set_item("other_by_field", data.other_by_field.iter().copied().collect::<std::collections::BTreeMap<_, _>>())?;
    let rpc = PyDict::new(py);
    rpc.set_item("requests", data.rpc.requests)?;
    rpc.set_item("answered", data.rpc.answered)?;
    rpc.set_item("no_channel", data.rpc.no_channel)?;
    rpc.set_item("over_limit", data.rpc.over_limit)?;
    rpc.set_item("refused", data.rpc.refused)?;
    rpc.set_item("unreadable", data.rpc.unreadable)?;
    rpc.set_item("pending", data.rpc_pending)?;
    dict.set_item("rpc", rpc)?;
    dict.set_item("channels_open", &data.channels_open)?;
    dict.set_item("senders_overflow", data.flows_overflow)?;
    dict.set_item("send_burst", data.send_burst)?;
    dict.set_item("resumes", data.resend.resumes)?;
    dict.set_item("resent", data.resend.resent)?;
    dict.set_item("resend_unavailable", data.resend.unavailable)?;
    if let Some(slow) = &data.slow_reader {
        let s = PyDict::new(py);
        s.set_item("pauses", slow.pauses)?;
        s.set_item("paused_ms", slow.paused_ms)?;
        s.set_item("held_datagrams", slow.held_datagrams)?;
        s.set_item("dropped_datagrams", slow.dropped_datagrams)?;
        s.set_item("max_held_bytes", slow.max_held_bytes)?;
        dict.set_item("slow_reader", s)?;
    }
    let received = PyList::empty(py);
    for flow in &data.received {
        let f = PyDict::new(py);
        f.set_item("sender", &flow.sender)?;
        f.set_item("channel", &flow.channel)?;
        set_flow_counts(&f, &flow.counts)?;
        received.append(f)?;
    }
    dict.set_item("received", received)?;
    dict.set_item("track", super::data_track::track_dict(py, &data.track)?)?;
    Ok(dict)
}
