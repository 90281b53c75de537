//! Python views of data tracks (`media::data::track`, `track_stats`): the `track` dict inside
//! `MediaHub.peer_stats()["data"]`, and the argument shapes of the `data_track_*` methods.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::media::data::track::TrackPublish;
use crate::media::data::track_stats::{HandleTarget, TrackSummary};

/// `data_track_publish`'s arguments as the sender takes them.
pub fn track_publish(handle: u16, rate_hz: f64, size_bytes: usize) -> TrackPublish {
    TrackPublish { handle, rate_hz, payload_bytes: size_bytes }
}

/// `data_track_handles`'s `(sub_handle, publisher_identity, track_sid)` triples.
pub fn handle_targets(handles: Vec<(u16, String, String)>) -> Vec<(u16, HandleTarget)> {
    handles
        .into_iter()
        .map(|(handle, publisher_identity, track_sid)| (handle, HandleTarget { publisher_identity, track_sid }))
        .collect()
}

/// `peer_stats()["data"]["track"]`; see `_core.pyi` for the keys.
pub fn track_dict<'py>(py: Python<'py>, track: &TrackSummary) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("frames_sent", track.frames_sent)?;
    dict.set_item("bytes_sent", track.bytes_sent)?;
    dict.set_item("send_blocked", track.send_blocked)?;
    dict.set_item("send_skipped", track.send_skipped)?;
    dict.set_item("frames_received", track.frames_received)?;
    dict.set_item("bytes_received", track.bytes_received)?;
    dict.set_item("unknown_handle", track.unknown_handle)?;
    dict.set_item("malformed", track.malformed)?;
    dict.set_item("malformed_detail", &track.malformed_detail)?;
    dict.set_item("handle_maps", track.handle_maps)?;
    let received = PyList::empty(py);
    for flow in &track.received {
        let f = PyDict::new(py);
        f.set_item("handle", flow.handle)?;
        f.set_item("publisher", &flow.publisher)?;
        f.set_item("track_sid", &flow.track_sid)?;
        super::data::set_flow_counts(&f, &flow.counts)?;
        received.append(f)?;
    }
    dict.set_item("received", received)?;
    Ok(dict)
}
