//! The media hub's events as Python sees them: one frozen class per `PeerEvent` variant, so
//! Python matches on types and reads named attributes instead of unpacking positional strings.
//!
//! Every event carries the hub's peer id and `at_s`, seconds on the hub's clock
//! (`MediaHub.now_s`). A PeerConnection is named by LiveKit's `SignalTarget` number (0 publisher,
//! 1 subscriber), the number Python already passes to `MediaHub.add_candidate` and the signaling
//! messages carry; it is not the discriminant of the Rust `Pc`.

use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyString};

use super::errors::IntoPyResult;
use crate::error::Error;
use crate::media::hub::HubEvent;
use crate::media::peer::PeerEvent;
use crate::media::types::Pc;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PcConnected>()?;
    m.add_class::<IceStateChanged>()?;
    m.add_class::<FirstPacket>()?;
    m.add_class::<MediaResumed>()?;
    m.add_class::<PeerFailed>()?;
    Ok(())
}

/// LiveKit's `SignalTarget` of a PeerConnection: PUBLISHER = 0, SUBSCRIBER = 1.
pub fn signal_target(pc: Pc) -> u32 {
    match pc {
        Pc::Publisher => 0,
        Pc::Subscriber => 1,
    }
}

/// The PeerConnection of a `SignalTarget` number, or a `MediaError` naming the bad one.
pub fn pc_from_signal_target(target: u32) -> PyResult<Pc> {
    match target {
        0 => Ok(Pc::Publisher),
        1 => Ok(Pc::Subscriber),
        other => Err(Error::media(format!("unknown signal target {other} (0 publisher, 1 subscriber)"))).py(),
    }
}

/// One hub event as its Python class.
#[derive(IntoPyObject)]
pub enum PyHubEvent {
    PcConnected(PcConnected),
    IceStateChanged(IceStateChanged),
    FirstPacket(FirstPacket),
    MediaResumed(MediaResumed),
    PeerFailed(PeerFailed),
}

impl From<HubEvent> for PyHubEvent {
    fn from(event: HubEvent) -> Self {
        let (peer, at_s) = (event.peer, event.at_s);
        match event.event {
            PeerEvent::Connected { pc, primary } => {
                PyHubEvent::PcConnected(PcConnected { peer, at_s, pc: signal_target(pc), primary })
            }
            PeerEvent::IceState { pc, state } => PyHubEvent::IceStateChanged(IceStateChanged {
                peer,
                at_s,
                pc: signal_target(pc),
                state: state.to_string(),
            }),
            PeerEvent::FirstPacket { track_id, kind } => {
                PyHubEvent::FirstPacket(FirstPacket { peer, at_s, track_id, kind: kind.to_string() })
            }
            PeerEvent::MediaResumed => PyHubEvent::MediaResumed(MediaResumed { peer, at_s }),
            PeerEvent::Failed { reason, detail } => {
                PyHubEvent::PeerFailed(PeerFailed { peer, at_s, reason: reason.to_string(), detail })
            }
        }
    }
}

/// Python's repr of a float or a string, so a repr reads as the constructor call.
fn float_repr(py: Python<'_>, value: f64) -> PyResult<String> {
    Ok(PyFloat::new(py, value).repr()?.to_string())
}

fn str_repr(py: Python<'_>, value: &str) -> PyResult<String> {
    Ok(PyString::new(py, value).repr()?.to_string())
}

/// A PeerConnection connected (ICE and DTLS done); the primary one's (the dual subscriber
/// PeerConnection, or the single one, which reports `pc` 0 as the server names it) makes the
/// participant ACTIVE.
#[pyclass(module = "lkswarm._core", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct PcConnected {
    #[pyo3(get)]
    peer: u32,
    #[pyo3(get)]
    at_s: f64,
    /// `SignalTarget`: 0 publisher, 1 subscriber.
    #[pyo3(get)]
    pc: u32,
    /// This connection makes the participant ACTIVE: the dual subscriber PeerConnection or the
    /// single one (livekit's primary PeerConnection).
    #[pyo3(get)]
    primary: bool,
}

#[pymethods]
impl PcConnected {
    /// `primary` defaults to the dual-PC rule: the subscriber PeerConnection is the primary one.
    #[new]
    #[pyo3(signature = (peer, at_s, pc, primary = None))]
    fn new(peer: u32, at_s: f64, pc: u32, primary: Option<bool>) -> PyResult<Self> {
        let primary = primary.unwrap_or(pc_from_signal_target(pc)? == Pc::Subscriber);
        Ok(PcConnected { peer, at_s, pc, primary })
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("peer", "at_s", "pc", "primary")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "PcConnected(peer={}, at_s={}, pc={}, primary={})",
            self.peer,
            float_repr(py, self.at_s)?,
            self.pc,
            if self.primary { "True" } else { "False" }
        ))
    }
}

/// A PeerConnection's ICE connection state changed (`new`, `checking`, `connected`,
/// `completed` or `disconnected`).
#[pyclass(module = "lkswarm._core", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct IceStateChanged {
    #[pyo3(get)]
    peer: u32,
    #[pyo3(get)]
    at_s: f64,
    /// `SignalTarget`: 0 publisher, 1 subscriber.
    #[pyo3(get)]
    pc: u32,
    #[pyo3(get)]
    state: String,
}

#[pymethods]
impl IceStateChanged {
    #[new]
    fn new(peer: u32, at_s: f64, pc: u32, state: String) -> PyResult<Self> {
        pc_from_signal_target(pc)?;
        Ok(IceStateChanged { peer, at_s, pc, state })
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("peer", "at_s", "pc", "state")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "IceStateChanged(peer={}, at_s={}, pc={}, state={})",
            self.peer,
            float_repr(py, self.at_s)?,
            self.pc,
            str_repr(py, &self.state)?
        ))
    }
}

/// The first RTP packet of a subscribed track arrived (`at_s` is its kernel arrival time).
#[pyclass(module = "lkswarm._core", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct FirstPacket {
    #[pyo3(get)]
    peer: u32,
    #[pyo3(get)]
    at_s: f64,
    /// The track's id from the subscriber offer's msid (the publisher's track sid), "" if unknown.
    #[pyo3(get)]
    track_id: String,
    /// `audio` or `video`.
    #[pyo3(get)]
    kind: String,
}

#[pymethods]
impl FirstPacket {
    #[new]
    fn new(peer: u32, at_s: f64, track_id: String, kind: String) -> Self {
        FirstPacket { peer, at_s, track_id, kind }
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("peer", "at_s", "track_id", "kind")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "FirstPacket(peer={}, at_s={}, track_id={}, kind={})",
            self.peer,
            float_repr(py, self.at_s)?,
            str_repr(py, &self.track_id)?,
            str_repr(py, &self.kind)?
        ))
    }
}

/// After an ICE restart (a signal resume: the server's offer with new credentials on the dual
/// subscriber PeerConnection, or `MediaHub.ice_restart` on a single one), the primary
/// PeerConnection's ICE is connected again and media flows: `at_s` is the first RTP packet's arrival
/// since, or ICE's reconnection if no media is expected (the peer never received RTP, or every
/// section it did is no longer receiving: those tracks were removed). Once per restart.
#[pyclass(module = "lkswarm._core", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct MediaResumed {
    #[pyo3(get)]
    peer: u32,
    #[pyo3(get)]
    at_s: f64,
}

#[pymethods]
impl MediaResumed {
    #[new]
    fn new(peer: u32, at_s: f64) -> Self {
        MediaResumed { peer, at_s }
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("peer", "at_s")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("MediaResumed(peer={}, at_s={})", self.peer, float_repr(py, self.at_s)?))
    }
}

/// The peer is dead (first failure wins): `reason` is a short code (`ice_timeout`, `dtls_timeout`,
/// `dtls_failed`, `ice_restart_timeout`, `ice_restart_rejected`, `internal_error`), `detail` a
/// sentence for the report.
#[pyclass(module = "lkswarm._core", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct PeerFailed {
    #[pyo3(get)]
    peer: u32,
    #[pyo3(get)]
    at_s: f64,
    #[pyo3(get)]
    reason: String,
    #[pyo3(get)]
    detail: String,
}

#[pymethods]
impl PeerFailed {
    #[new]
    fn new(peer: u32, at_s: f64, reason: String, detail: String) -> Self {
        PeerFailed { peer, at_s, reason, detail }
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("peer", "at_s", "reason", "detail")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "PeerFailed(peer={}, at_s={}, reason={}, detail={})",
            self.peer,
            float_repr(py, self.at_s)?,
            str_repr(py, &self.reason)?,
            str_repr(py, &self.detail)?
        ))
    }
}
