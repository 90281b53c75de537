//! `MediaHub`: the light media tier (rust/src/media/) as seen from Python.
//!
//! Every method that takes the hub's lock releases the GIL first, so the media
//! worker thread and the asyncio thread never wait on each other through Python.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::data::{data_dict, kind_from_name, seconds};
use super::errors::IntoPyResult;
use super::events::{pc_from_signal_target, PyHubEvent};
use crate::error::Error;
use crate::media::clip::{Clip, ClipFrame, MediaLibrary, VideoCodec};
use crate::media::data::rpc::Answer as RpcAnswer;
use crate::media::data::sender::{Burst, DataPublish};
use crate::media::hub::{Hub, MediaIo, PeerSummary};
use crate::media::peer::{str0m_drop_reasons, PeerConfig};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMediaHub>()?;
    // The one list of str0m's receive-drop reasons: the report's `str0m_dropped` keys.
    m.add("STR0M_DROP_REASONS", PyTuple::new(m.py(), str0m_drop_reasons())?)?;
    Ok(())
}

#[pyclass(name = "MediaHub", module = "lkswarm._core", frozen)]
pub struct PyMediaHub {
    hub: Hub,
}

fn clip_from(frames: Vec<(Vec<u8>, bool)>, interval_s: f64, clock_rate: u32) -> PyResult<Arc<Clip>> {
    let frames = frames.into_iter().map(|(data, keyframe)| ClipFrame { data: Arc::from(data), keyframe }).collect();
    let interval = seconds(interval_s, "frame interval").py()?;
    Clip::new(frames, interval, clock_rate).map(Arc::new).map_err(Error::media).py()
}

fn summary_dict<'py>(py: Python<'py>, summary: &PeerSummary) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let c = &summary.counters;
    dict.set_item("datagrams_received", c.datagrams_received)?;
    dict.set_item("foreign_datagrams", c.foreign_datagrams)?;
    dict.set_item("datagrams_truncated", c.datagrams_truncated)?;
    dict.set_item("input_errors", c.input_errors)?;
    dict.set_item("datagrams_sent", c.datagrams_sent)?;
    dict.set_item("bytes_sent", c.bytes_sent)?;
    dict.set_item("frames_sent", c.frames_sent)?;
    dict.set_item("frames_skipped", c.frames_skipped)?;
    dict.set_item("frames_muted", c.frames_muted)?;
    dict.set_item("keyframe_requests", c.keyframe_requests)?;
    dict.set_item("ice_restarts", c.ice_restarts)?;
    dict.set_item("rtp_past_stream_cap", c.rtp_past_stream_cap)?;
    dict.set_item("srtp_own_packets", c.srtp_own_packets)?;
    dict.set_item("srtp_own_replayed", c.srtp_own_replayed)?;
    dict.set_item("srtp_own_too_old", c.srtp_own_too_old)?;
    dict.set_item("srtp_own_auth_failed", c.srtp_own_auth_failed)?;
    dict.set_item("srtp_own_before_first", c.srtp_own_before_first)?;
    dict.set_item("srtp_receipts_refused", c.srtp_receipts_refused)?;
    dict.set_item("srtp_own_off", summary.srtp_own_off)?;
    let str0m_dropped = PyDict::new(py);
    for (reason, count) in summary.str0m_rtp_drops {
        str0m_dropped.set_item(reason, count)?;
    }
    dict.set_item("srtp_str0m_dropped", str0m_dropped)?;
    dict.set_item("subscriber_connected", summary.subscriber_connected)?;
    dict.set_item("publisher_connected", summary.publisher_connected)?;
    dict.set_item("failed", summary.failed)?;
    dict.set_item("single_pc", summary.single_pc)?;
    let tracks = PyList::empty(py);
    for track in &summary.tracks {
        let t = PyDict::new(py);
        t.set_item("track_id", &track.track_id)?;
        t.set_item("kind", track.kind)?;
        t.set_item("codec", &track.codec)?;
        t.set_item("mid", &track.mid)?;
        t.set_item("packets", track.stats.packets)?;
        t.set_item("bytes", track.stats.bytes)?;
        t.set_item("expected", track.stats.expected())?;
        t.set_item("lost", track.stats.lost())?;
        t.set_item("jitter_ms", track.stats.jitter_ms())?;
        t.set_item("bitrate_bps", track.stats.bitrate_bps())?;
        tracks.append(t)?;
    }
    dict.set_item("tracks", tracks)?;
    dict.set_item("data", data_dict(py, &summary.data)?)?;
    Ok(dict)
}

#[pymethods]
impl PyMediaHub {
    /// ``io`` forces the I/O backend (``"io_uring"`` or ``"epoll"``); None: ``LKSWARM_MEDIA_IO``
    /// if set, else io_uring where the kernel allows it, else epoll (``io_fallback`` says why).
    #[new]
    #[pyo3(signature = (bind_ip = "127.0.0.1", io = None))]
    fn new(py: Python<'_>, bind_ip: &str, io: Option<&str>) -> PyResult<Self> {
        let ip: IpAddr = bind_ip.parse().map_err(|_| Error::media(format!("bad bind address {bind_ip:?}"))).py()?;
        let io = io
            .map(|name| {
                MediaIo::from_name(name)
                    .ok_or_else(|| Error::media(format!("unknown media I/O {name:?} (io_uring or epoll)")))
            })
            .transpose()
            .py()?;
        let hub = py.detach(|| Hub::start_with(ip, io)).py()?;
        Ok(PyMediaHub { hub })
    }

    /// The I/O backend the media thread runs: ``"io_uring"`` or ``"epoll"``.
    #[getter]
    fn io_backend(&self) -> &'static str {
        self.hub.io().backend.name()
    }

    /// Why io_uring was refused and the hub fell back to epoll, in one line; None otherwise.
    #[getter]
    fn io_fallback(&self) -> Option<String> {
        self.hub.io().fallback
    }

    /// CPU seconds the media thread has used so far (all of them once closed); None where the
    /// system gives no per-thread clock.
    #[getter]
    fn thread_cpu_s(&self) -> Option<f64> {
        self.hub.thread_cpu_s()
    }

    /// Loads the pre-encoded clips every publisher loops.
    #[pyo3(signature = (audio, video_layers, audio_frame_s = 0.02, video_frame_s = 1.0 / 30.0, video_codec = "vp8"))]
    fn set_library(
        &self,
        py: Python<'_>,
        audio: Option<Vec<(Vec<u8>, bool)>>,
        video_layers: Vec<Vec<(Vec<u8>, bool)>>,
        audio_frame_s: f64,
        video_frame_s: f64,
        video_codec: &str,
    ) -> PyResult<()> {
        let video_codec = VideoCodec::from_name(video_codec)
            .ok_or_else(|| Error::media(format!("unknown video codec {video_codec:?} (vp8 or h264)")))
            .py()?;
        let audio = audio.map(|frames| clip_from(frames, audio_frame_s, 48_000)).transpose()?;
        let mut video = Vec::with_capacity(video_layers.len());
        for layer in video_layers {
            let clip = clip_from(layer, video_frame_s, 90_000)?;
            if !clip.starts_with_keyframe() {
                return Err(Error::media("every video layer must start with a keyframe")).py();
            }
            video.push(clip);
        }
        if video.len() > 3 {
            return Err(Error::media("at most 3 simulcast layers (q, h, f)")).py();
        }
        py.detach(|| self.hub.set_library(MediaLibrary { audio, video, video_codec }));
        Ok(())
    }

    /// Seconds on the hub's clock (the clock of event timestamps).
    fn now_s(&self) -> f64 {
        self.hub.now_s()
    }

    /// Creates a peer and its socket; returns (peer id, local UDP port). With ``single_pc`` the
    /// peer has one PeerConnection for both directions (``/rtc/v1``): offer with ``join_offer``.
    /// With ``rpc_echo`` it answers every RPC call with the request's payload.
    #[pyo3(signature = (seed = 0, talk_spurts = false, connect_timeout_s = 30.0, single_pc = false, rpc_echo = false))]
    fn add_peer(
        &self,
        py: Python<'_>,
        seed: u64,
        talk_spurts: bool,
        connect_timeout_s: f64,
        single_pc: bool,
        rpc_echo: bool,
    ) -> PyResult<(u32, u16)> {
        let connect_timeout = seconds(connect_timeout_s, "connect timeout").py()?;
        let rpc_answer = if rpc_echo { RpcAnswer::Echo } else { RpcAnswer::Unsupported };
        let config = PeerConfig { connect_timeout, talk_spurts, seed, single_pc, rpc_answer };
        py.detach(|| self.hub.add_peer(config)).py()
    }

    /// Answers the server's subscriber offer.
    fn accept_offer(&self, py: Python<'_>, peer: u32, sdp: &str) -> PyResult<String> {
        py.detach(|| self.hub.accept_offer(peer, sdp)).py()
    }

    /// Opens the publisher PeerConnection and returns its offer; with ``data`` it carries the
    /// ``_reliable`` and ``_lossy`` channels (then it may have no track).
    #[pyo3(signature = (peer, audio_cid = None, video_cid = None, data = false))]
    fn publisher_offer(
        &self,
        py: Python<'_>,
        peer: u32,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        data: bool,
    ) -> PyResult<String> {
        py.detach(|| self.hub.publisher_offer(peer, audio_cid, video_cid, data)).py()
    }

    /// Sends probe messages on the peer's ``channel`` ("reliable" or "lossy") at ``rate_hz``, each
    /// ``size_bytes`` of payload (>= 20), from when the channel is open; replaces that channel's
    /// schedule. Written on the media thread; see ``_core.pyi``.
    #[pyo3(signature = (
        peer, channel, rate_hz, size_bytes, topic = "", destinations = Vec::new(), identity = "",
        burst_count = 0, burst_every_s = 0.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn data_publish(
        &self,
        py: Python<'_>,
        peer: u32,
        channel: &str,
        rate_hz: f64,
        size_bytes: usize,
        topic: &str,
        destinations: Vec<String>,
        identity: &str,
        burst_count: u32,
        burst_every_s: f64,
    ) -> PyResult<()> {
        let kind = kind_from_name(channel).py()?;
        let burst = Burst { count: burst_count, every: seconds(burst_every_s, "burst_every_s").py()? };
        let spec = DataPublish {
            kind,
            rate_hz,
            size_bytes,
            topic: topic.to_string(),
            destinations,
            identity: identity.to_string(),
            burst,
        };
        py.detach(|| self.hub.data_publish(peer, spec)).py()
    }

    /// Stops the peer's probe messages on both channels.
    fn data_stop(&self, py: Python<'_>, peer: u32) -> PyResult<()> {
        py.detach(|| self.hub.data_stop(peer)).py()
    }

    /// Writes one data-track frame (a single packet: header, user timestamp, ``size_bytes`` of
    /// filler) every ``1/rate_hz`` s under ``handle`` on the peer's ``_data_track`` channel, from
    /// when it is open; replaces any earlier schedule. See ``_core.pyi``.
    fn data_track_publish(
        &self,
        py: Python<'_>,
        peer: u32,
        handle: u16,
        rate_hz: f64,
        size_bytes: usize,
    ) -> PyResult<()> {
        let spec = super::data_track::track_publish(handle, rate_hz, size_bytes);
        py.detach(|| self.hub.data_track_publish(peer, spec)).py()
    }

    /// Stops the peer's data-track frames.
    fn data_track_stop(&self, py: Python<'_>, peer: u32) -> PyResult<()> {
        py.detach(|| self.hub.data_track_stop(peer)).py()
    }

    /// Replaces the peer's subscriber-handle map: ``(sub_handle, publisher_identity, track_sid)``.
    fn data_track_handles(&self, py: Python<'_>, peer: u32, handles: Vec<(u16, String, String)>) -> PyResult<()> {
        let handles = super::data_track::handle_targets(handles);
        py.detach(|| self.hub.data_track_handles(peer, handles)).py()
    }

    /// ``(latency µs, count)`` buckets of every timestamped data-track packet received.
    fn data_track_latency(&self, py: Python<'_>) -> Vec<(u64, u64)> {
        py.detach(|| self.hub.data_track_latency().buckets())
    }

    /// After a signal resume: writes again the peer's reliable messages past the server's
    /// ``last_message_seq`` (the ones it still keeps); see ``_core.pyi``.
    fn data_resend_after(&self, py: Python<'_>, peer: u32, last_sequence: u32) -> PyResult<()> {
        py.detach(|| self.hub.data_resend_after(peer, last_sequence)).py()
    }

    /// The server muted (or unmuted) the peer's audio or ``video`` track: its frames stop (or
    /// resume, video on a keyframe). Raises MediaError when the peer publishes no such track.
    fn set_track_muted(&self, py: Python<'_>, peer: u32, video: bool, muted: bool) -> PyResult<()> {
        py.detach(|| self.hub.set_track_muted(peer, video, muted)).py()
    }

    /// Makes the peer a slow data reader: it stops draining its data channels for ``pause_s``
    /// every ``every_s``, the first time ``first_after_s`` from now.
    fn data_slow_reader(
        &self,
        py: Python<'_>,
        peer: u32,
        pause_s: f64,
        every_s: f64,
        first_after_s: f64,
    ) -> PyResult<()> {
        let pause = seconds(pause_s, "pause_s").py()?;
        let every = seconds(every_s, "every_s").py()?;
        let first_after = seconds(first_after_s, "first_after_s").py()?;
        py.detach(|| self.hub.data_slow_reader(peer, pause, every, first_after)).py()
    }

    /// One-way latency of received probe messages, all peers: (µs, count) per non-empty bucket,
    /// ascending, as ``timer_lag``; the slow readers' alone with ``slow_readers``, else the others'.
    #[pyo3(signature = (slow_readers = false))]
    fn data_latency(&self, py: Python<'_>, slow_readers: bool) -> Vec<(u64, u64)> {
        py.detach(|| self.hub.data_latency(slow_readers).buckets())
    }

    /// A single-PC peer's join offer, ``(sdp, offer id)``: the send sections for the given tracks,
    /// 3 recvonly audio and 3 recvonly video sections, and the ``_reliable``/``_lossy`` channels.
    #[pyo3(signature = (peer, audio_cid = None, video_cid = None))]
    fn join_offer(
        &self,
        py: Python<'_>,
        peer: u32,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
    ) -> PyResult<(String, u32)> {
        py.detach(|| self.hub.join_offer(peer, audio_cid, video_cid)).py()
    }

    /// Applies the server's answer: to the publisher offer (dual-PC, returns None), or to a
    /// single-PC peer's offer, whose tracks ``mid_to_track_id`` maps; then returns the follow-up
    /// ``(sdp, offer id)`` if a re-offer was asked for meanwhile.
    #[pyo3(signature = (peer, sdp, mid_to_track_id = None))]
    fn accept_answer(
        &self,
        py: Python<'_>,
        peer: u32,
        sdp: &str,
        mid_to_track_id: Option<HashMap<String, String>>,
    ) -> PyResult<Option<(String, u32)>> {
        py.detach(|| self.hub.accept_answer(peer, sdp, mid_to_track_id.as_ref())).py()
    }

    /// A single-PC peer's answer to ``media_sections_requirement``: ``(sdp, offer id)``, or None
    /// while an offer is pending (``accept_answer`` then returns the follow-up).
    fn reoffer(&self, py: Python<'_>, peer: u32, num_audios: u32, num_videos: u32) -> PyResult<Option<(String, u32)>> {
        py.detach(|| self.hub.reoffer(peer, num_audios, num_videos)).py()
    }

    /// A single-PC peer's ICE restart after a signal resume: ``(sdp, offer id)``, an offer with
    /// new ICE credentials that replaces any pending offer (its answer died with the old
    /// WebSocket) and carries the re-offer requests accumulated meanwhile. ``MediaResumed`` follows
    /// once ICE is connected again and media flows; by the peer's connect timeout otherwise it fails
    /// with ``ice_restart_timeout`` (or ``ice_restart_rejected`` if the answer kept the old
    /// credentials). A dual-PC peer's restart is the server's offer to ``accept_offer``.
    fn ice_restart(&self, py: Python<'_>, peer: u32) -> PyResult<(String, u32)> {
        py.detach(|| self.hub.ice_restart(peer)).py()
    }

    /// Adds a trickled candidate; `target` is livekit's SignalTarget (0 publisher, 1 subscriber),
    /// ignored for a single-PC peer (its one PeerConnection takes every candidate).
    fn add_candidate(&self, py: Python<'_>, peer: u32, target: u32, candidate_init: &str) -> PyResult<()> {
        let pc = pc_from_signal_target(target)?;
        py.detach(|| self.hub.add_remote_candidate(peer, pc, candidate_init)).py()
    }

    /// Events since the last call, oldest first: ``PcConnected``, ``IceStateChanged``,
    /// ``FirstPacket``, ``MediaResumed`` or ``PeerFailed`` (py/events.rs).
    fn take_events(&self, py: Python<'_>) -> Vec<PyHubEvent> {
        let events = py.detach(|| self.hub.take_events());
        events.into_iter().map(PyHubEvent::from).collect()
    }

    /// A descriptor that is readable while events wait for ``take_events`` (for
    /// ``loop.add_reader``; owned by the hub, valid until ``close``).
    fn events_fd(&self) -> i32 {
        self.hub.events_fd()
    }

    /// Current figures of one peer, or None if unknown.
    fn peer_stats<'py>(&self, py: Python<'py>, peer: u32) -> PyResult<Option<Bound<'py, PyDict>>> {
        let summary = py.detach(|| self.hub.summary(peer));
        summary.map(|s| summary_dict(py, &s)).transpose()
    }

    /// Closes the peer's sockets and returns its final figures (None if unknown).
    fn remove_peer<'py>(&self, py: Python<'py>, peer: u32) -> PyResult<Option<Bound<'py, PyDict>>> {
        let summary = py.detach(|| self.hub.remove_peer(peer));
        summary.map(|s| summary_dict(py, &s)).transpose()
    }

    /// Running totals over every peer the hub has had: packets, bytes, loss and connected subscribers.
    fn totals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = py.detach(|| self.hub.totals());
        let dict = PyDict::new(py);
        dict.set_item("peers", t.peers)?;
        dict.set_item("subscribers_connected", t.subscribers_connected)?;
        dict.set_item("datagrams_received", t.datagrams_received)?;
        dict.set_item("datagrams_sent", t.datagrams_sent)?;
        dict.set_item("bytes_sent", t.bytes_sent)?;
        dict.set_item("packets_received", t.packets_received)?;
        dict.set_item("bytes_received", t.bytes_received)?;
        dict.set_item("packets_expected", t.packets_expected)?;
        dict.set_item("packets_lost", t.packets_lost)?;
        dict.set_item("wakeups", t.wakeups)?;
        dict.set_item("timeouts", t.timeouts)?;
        dict.set_item("syscalls", t.syscalls)?;
        dict.set_item("data_sent", t.data_sent)?;
        dict.set_item("data_received", t.data_received)?;
        dict.set_item("data_bytes_received", t.data_bytes_received)?;
        dict.set_item("data_track_sent", t.data_track_sent)?;
        dict.set_item("data_track_received", t.data_track_received)?;
        Ok(dict)
    }

    /// How late the media thread served its peers' deadlines: (lateness in µs, count) per
    /// non-empty bucket, ascending, for an HdrHistogram (each value is its bucket's highest).
    fn timer_lag(&self, py: Python<'_>) -> Vec<(u64, u64)> {
        py.detach(|| self.hub.timer_lag().buckets())
    }

    /// (deadlines served so far, those served more than ``limit_s`` late): the saturation check's input.
    fn timer_lag_above(&self, py: Python<'_>, limit_s: f64) -> (u64, u64) {
        let limit = Duration::try_from_secs_f64(limit_s.max(0.0)).unwrap_or(Duration::MAX);
        py.detach(|| self.hub.timer_lag_above(limit))
    }

    #[getter]
    fn peer_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.hub.peer_count())
    }

    #[getter]
    fn send_errors(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.hub.send_errors())
    }

    /// Stops the media thread and closes every socket. Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.hub.close());
    }
}
