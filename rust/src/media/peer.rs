//! One simulated participant's WebRTC side, sans-I/O: a subscriber PeerConnection
//! (answers the server's offers) and, for publishers, a publisher PeerConnection
//! (offers synthetic audio and simulcast video).
//!
//! Theory of operation
//! -------------------
//! Each PeerConnection is one str0m `Rtc` bound to its own local UDP address:
//! livekit's single UDP port routes by the client's address first, so two
//! PeerConnections must never share one (see docs/media-tier-research.md §0.1).
//!
//! The caller owns sockets and clocks. It feeds datagrams (`handle_datagram`)
//! and wake-ups (`handle_timeout`) with the current `Instant`, then calls
//! `poll` to collect datagrams to send; `poll` also returns when the peer next
//! wants to be woken. Signaling goes through plain methods (`accept_offer`,
//! `create_publisher_offer`, `accept_answer`, `add_remote_candidate`) whose
//! SDP strings the caller carries over the SignalSession.
//!
//! Lifecycle of each PeerConnection:
//!
//! ```text
//! new --ICE checking--> ice connected --DTLS--> connected (SRTP keys; ACTIVE for the primary)
//!  \__________________ no connection by the deadline / DTLS error __________> failed
//! ```
//!
//! A peer fails once (first reason wins) and then ignores all input. The
//! subscriber PeerConnection is the primary one (livekit's subscriber_primary),
//! so its `Connected` is what makes the participant ACTIVE.
//!
//! The subscriber runs str0m in RTP mode: every new packet arrives as one event
//! and is accounted in `RxStats` without depacketizing. The publisher runs in
//! frame mode so str0m packetizes VP8 (payload descriptor, picture id), H.264
//! (STAP-A, FU-A) and Opus; what it sends, and when, is the `publish::Publisher`'s,
//! which the peer lends the publisher's transport to write each due frame, then
//! drains it. Each `Rtc` with its bookkeeping is a `transport::Transport`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Event, IceConnectionState, Input, Output, RtcError};

use super::clip::{MediaLibrary, SIMULCAST_RIDS};
use super::publish::{Publisher, Write};
use super::rxstats::RxStats;
use super::sdp::{candidate_from_init, msid_tracks_by_mid};
use super::transport::Transport;

/// The values the peer's API speaks, defined apart so `publish` needs nothing of this module.
pub use super::types::{Datagram, Pc, PeerCounters};

/// Something the owner of the peer must hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    IceState {
        pc: Pc,
        state: &'static str,
    },
    Connected {
        pc: Pc,
    },
    /// The first RTP packet of a subscribed track.
    FirstPacket {
        track_id: String,
        kind: &'static str,
    },
    /// The peer is dead; `reason` is a short code, `detail` a sentence.
    Failed {
        reason: &'static str,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// ICE + DTLS of each PeerConnection must complete within this, or the peer fails.
    pub connect_timeout: Duration,
    /// Simulate talk spurts (ITU-T P.59) on audio instead of continuous speech.
    pub talk_spurts: bool,
    pub seed: u64,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig { connect_timeout: Duration::from_secs(30), talk_spurts: false, seed: 0 }
    }
}

/// Per-track receive accounting, keyed by SSRC.
#[derive(Debug, Clone)]
pub struct RxTrack {
    pub track_id: String,
    pub kind: &'static str,
    /// As in WebRTC stats' `mimeType`: `audio/opus`, `video/VP8`, `video/H264` (what the SFU sent).
    pub codec: String,
    pub mid: String,
    pub stats: RxStats,
}

/// A backstop for our own connectivity checks. str0m's ICE agent acts only on `Input::Timeout`;
/// the hub runs those when str0m asks, and under CPU load a subscriber was seen that had its offer
/// and candidates yet had sent nothing 30 s later ("ICE new, 0 datagrams sent"). Forcing a timeout
/// inside the signaling call instead sends checks before our answer has left on the WebSocket: the
/// server drops them and `latency_ms.active` grows by str0m's 250 ms retransmission (p50 7 -> 210 ms).
/// So checks are forced only if nothing has arrived from the server by this delay.
const OWN_CHECKS_AFTER: Duration = Duration::from_millis(500);
pub struct MediaPeer {
    subscriber: Transport,
    publisher: Option<Transport>,
    pending_offer: Option<SdpPendingOffer>,
    /// The publisher's synthetic media, from its offer on (the tracks it offered).
    publishing: Option<Publisher>,
    /// The clips a publisher offer may use; the `Publisher` takes its own handle.
    library: MediaLibrary,
    rx: HashMap<Ssrc, RxTrack>,
    tracks_by_mid: HashMap<String, String>,
    events: Vec<(Instant, PeerEvent)>,
    /// Datagrams produced while handling input, until `poll` hands them out. str0m
    /// must be drained after every input (in RTP mode it holds one received packet).
    outbox: Vec<Datagram>,
    failed: bool,
    config: PeerConfig,
    pub counters: PeerCounters,
}

impl MediaPeer {
    pub fn new(
        cert: &DtlsCert,
        subscriber_addr: SocketAddr,
        library: MediaLibrary,
        config: PeerConfig,
        now: Instant,
    ) -> Result<Self, String> {
        Ok(MediaPeer {
            subscriber: Transport::subscriber(cert, subscriber_addr, now)?,
            publisher: None,
            pending_offer: None,
            publishing: None,
            library,
            rx: HashMap::new(),
            tracks_by_mid: HashMap::new(),
            events: Vec::new(),
            outbox: Vec::new(),
            failed: false,
            config,
            counters: PeerCounters::default(),
        })
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn local_addrs(&self) -> Vec<(Pc, SocketAddr)> {
        let mut addrs = vec![(Pc::Subscriber, self.subscriber.local)];
        if let Some(publisher) = &self.publisher {
            addrs.push((Pc::Publisher, publisher.local));
        }
        addrs
    }

    pub fn is_connected(&self, pc: Pc) -> bool {
        self.transport(pc).is_some_and(|t| t.connected_at.is_some())
    }

    /// Whether a PeerConnection of this live peer is still in its ICE/DTLS handshake.
    pub fn is_connecting(&self) -> bool {
        !self.failed
            && [Pc::Subscriber, Pc::Publisher]
                .into_iter()
                .any(|pc| self.transport(pc).is_some_and(|t| t.connected_at.is_none()))
    }

    pub fn take_events(&mut self) -> Vec<(Instant, PeerEvent)> {
        std::mem::take(&mut self.events)
    }

    pub fn rx_tracks(&self) -> impl Iterator<Item = &RxTrack> {
        self.rx.values()
    }

    fn transport(&self, pc: Pc) -> Option<&Transport> {
        match pc {
            Pc::Subscriber => Some(&self.subscriber),
            Pc::Publisher => self.publisher.as_ref(),
        }
    }

    fn transport_mut(&mut self, pc: Pc) -> Option<&mut Transport> {
        match pc {
            Pc::Subscriber => Some(&mut self.subscriber),
            Pc::Publisher => self.publisher.as_mut(),
        }
    }

    /// Marks the peer failed (first reason wins) and closes both PeerConnections.
    pub fn fail(&mut self, now: Instant, reason: &'static str, detail: String) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.subscriber.rtc.disconnect();
        if let Some(publisher) = &mut self.publisher {
            publisher.rtc.disconnect();
        }
        self.events.push((now, PeerEvent::Failed { reason, detail }));
    }

    // -- signaling ------------------------------------------------------------------------

    /// Answers an offer from the server on the subscriber PeerConnection.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("unparsable subscriber offer: {e}"))?;
        self.tracks_by_mid.extend(msid_tracks_by_mid(sdp));
        let answer =
            self.subscriber.rtc.sdp_api().accept_offer(offer).map_err(|e| format!("subscriber offer rejected: {e}"))?;
        self.subscriber.undrained = true;
        Ok(answer.to_sdp_string())
    }

    /// Creates the publisher PeerConnection and its first offer: one audio m-line
    /// (if `audio_cid`) and one video m-line with the library's layers (if `video_cid`).
    pub fn create_publisher_offer(
        &mut self,
        publisher_addr: SocketAddr,
        cert: &DtlsCert,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        now: Instant,
    ) -> Result<String, String> {
        if self.publisher.is_some() {
            return Err("the publisher PeerConnection already exists".into());
        }
        if audio_cid.is_some() && self.library.audio.is_none() {
            return Err("no audio clip loaded".into());
        }
        if video_cid.is_some() && self.library.video.is_empty() {
            return Err("no video clip loaded".into());
        }
        let mut transport = Transport::publisher(cert, publisher_addr, now, self.library.video_codec)?;
        let stream_id = "lkswarm".to_string();
        let mut api = transport.rtc.sdp_api();
        let audio_mid = audio_cid.map(|cid| {
            api.add_media(MediaKind::Audio, Direction::SendOnly, Some(stream_id.clone()), Some(cid.into()), None)
        });
        let layers = self.library.video.len();
        let video_mid = video_cid.map(|cid| {
            let simulcast = (layers > 1).then(|| {
                let mut simulcast = Simulcast::new();
                for rid in SIMULCAST_RIDS.iter().take(layers) {
                    simulcast.add_send_layer(SimulcastLayer::new(rid));
                }
                simulcast
            });
            api.add_media(MediaKind::Video, Direction::SendOnly, Some(stream_id.clone()), Some(cid.into()), simulcast)
        });
        let (offer, pending) = api.apply().ok_or("nothing to offer")?;
        self.pending_offer = Some(pending);
        let (talk_spurts, seed) = (self.config.talk_spurts, self.config.seed);
        self.publishing = Some(Publisher::new(self.library.clone(), audio_mid, video_mid, talk_spurts, seed, now));
        self.publisher = Some(transport);
        Ok(offer.to_sdp_string())
    }

    /// Applies the server's answer to our publisher offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("unparsable publisher answer: {e}"))?;
        let pending = self.pending_offer.take().ok_or("an answer arrived with no offer pending")?;
        let publisher = self.publisher.as_mut().ok_or("no publisher PeerConnection")?;
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("publisher answer rejected: {e}"))?;
        publisher.undrained = true;
        match &mut self.publishing {
            Some(publishing) => publishing.choose_payload_types(&mut publisher.rtc),
            None => Ok(()),
        }
    }

    /// Adds a trickled server candidate (`candidateInit` JSON) to the PeerConnection `target`.
    pub fn add_remote_candidate(&mut self, pc: Pc, candidate_init: &str, now: Instant) -> Result<(), String> {
        let candidate = candidate_from_init(candidate_init)?;
        let Some(candidate) = candidate else {
            return Ok(()); // end-of-candidates
        };
        let transport = self.transport_mut(pc).ok_or("no such PeerConnection yet")?;
        transport.remote_candidates.push(candidate.addr().to_string());
        transport.rtc.add_remote_candidate(candidate);
        transport.undrained = true;
        if transport.datagrams_received == 0 && transport.own_checks_at.is_none() {
            transport.own_checks_at = Some(now + OWN_CHECKS_AFTER);
        }
        Ok(())
    }

    // -- I/O ------------------------------------------------------------------------------

    /// Which of this peer's PeerConnections owns the local address `destination`.
    pub fn pc_for(&self, destination: SocketAddr) -> Option<Pc> {
        if self.subscriber.local == destination {
            Some(Pc::Subscriber)
        } else if self.publisher.as_ref().is_some_and(|p| p.local == destination) {
            Some(Pc::Publisher)
        } else {
            None
        }
    }

    /// Feeds one received datagram that arrived at `now` (the kernel's receive time where the
    /// caller has it). Garbage is counted and dropped, never fatal.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        self.counters.datagrams_received += 1;
        if self.failed {
            return;
        }
        let Some(pc) = self.pc_for(destination) else {
            self.counters.foreign_datagrams += 1;
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            self.counters.foreign_datagrams += 1;
            return;
        };
        let transport = self.transport_mut(pc).expect("pc_for found it");
        transport.datagrams_received += 1;
        transport.own_checks_at = None;
        transport.undrained = true;
        let now = transport.advance_clock(now);
        let result = transport.rtc.handle_input(Input::Receive(now, receive));
        if let Err(error) = result {
            self.on_rtc_error(pc, now, error);
        }
        self.drain_to_outbox(pc, now);
    }

    fn drain_to_outbox(&mut self, pc: Pc, now: Instant) {
        let mut outbox = std::mem::take(&mut self.outbox);
        self.drain(pc, now, &mut outbox);
        self.outbox = outbox;
    }

    fn on_rtc_error(&mut self, pc: Pc, now: Instant, error: RtcError) {
        match error {
            RtcError::Dtls(e) => self.fail(now, "dtls_failed", format!("{} PeerConnection: DTLS: {e}", pc.name())),
            _ => self.counters.input_errors += 1,
        }
    }

    /// Wakes the peer at `now`: str0m timers, due media frames and the connect deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        for pc in [Pc::Subscriber, Pc::Publisher] {
            let Some(transport) = self.transport_mut(pc) else { continue };
            let own_checks_due = transport.own_checks_at.is_some_and(|at| at <= now);
            if own_checks_due {
                transport.own_checks_at = None;
            }
            if transport.next_timeout <= now || own_checks_due {
                transport.undrained = true;
                let input_at = transport.advance_clock(now);
                if let Err(error) = transport.rtc.handle_input(Input::Timeout(input_at)) {
                    self.on_rtc_error(pc, now, error);
                }
                if !self.failed {
                    self.drain_to_outbox(pc, now);
                }
            }
            self.check_deadline(pc, now);
        }
    }

    fn check_deadline(&mut self, pc: Pc, now: Instant) {
        let timeout = self.config.connect_timeout;
        let Some(transport) = self.transport(pc) else { return };
        if transport.connected_at.is_some() || now.duration_since(transport.created_at) < timeout {
            return;
        }
        let (reason, what) = if transport.rtc.is_connected() {
            ("dtls_timeout", "ICE connected but the DTLS handshake did not complete")
        } else {
            ("ice_timeout", "ICE did not connect (no answer to connectivity checks)")
        };
        let mut detail = format!(
            "{} PeerConnection: {what} within {:.0} s (ICE {}, {} datagrams sent, {} received; remote candidates {})",
            pc.name(),
            timeout.as_secs_f64(),
            transport.ice_state,
            transport.datagrams_sent,
            transport.datagrams_received,
            transport.remote_candidates.join(" ")
        );
        if self.counters.foreign_datagrams > 0 {
            detail.push_str(&format!(" ({} foreign datagrams received)", self.counters.foreign_datagrams));
        }
        self.fail(now, reason, detail);
    }

    /// Writes media frames that are due, drains both PeerConnections into `out`, and
    /// returns when the peer next wants `handle_timeout`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Datagram>) -> Instant {
        out.append(&mut self.outbox);
        if self.failed {
            return now + Duration::from_secs(3600);
        }
        self.drain(Pc::Subscriber, now, out);
        if self.publisher.is_some() {
            self.drain(Pc::Publisher, now, out);
            if self.is_connected(Pc::Publisher) {
                self.write_due_media(now, out);
            }
        }
        let mut wake = self.subscriber.next_timeout;
        if let Some(publisher) = &self.publisher {
            wake = wake.min(publisher.next_timeout);
            if publisher.connected_at.is_some() {
                if let Some(next_due) = self.publishing.as_ref().and_then(Publisher::next_due) {
                    wake = wake.min(next_due);
                }
            }
        }
        for pc in [Pc::Subscriber, Pc::Publisher] {
            if let Some(t) = self.transport(pc) {
                if t.connected_at.is_none() {
                    wake = wake.min(t.created_at + self.config.connect_timeout);
                }
                if let Some(at) = t.own_checks_at {
                    wake = wake.min(at);
                }
            }
        }
        wake.max(now)
    }

    /// Writes the publisher's due frames, audio first, draining the publisher transport after
    /// each (see `publish`): stops at the first failure, before video if audio failed the peer.
    fn write_due_media(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        self.write_due_track(now, out, Publisher::write_next_audio);
        if !self.failed {
            self.write_due_track(now, out, Publisher::write_next_video);
        }
    }

    fn write_due_track(
        &mut self,
        now: Instant,
        out: &mut Vec<Datagram>,
        write_next: fn(&mut Publisher, Instant, &mut Transport, &mut PeerCounters) -> Write,
    ) {
        loop {
            let (Some(publishing), Some(transport)) = (&mut self.publishing, &mut self.publisher) else { return };
            match write_next(publishing, now, transport, &mut self.counters) {
                Write::NoneDue => return,
                Write::Written => self.drain(Pc::Publisher, now, out),
                Write::NoWriter => {}
            }
            if self.failed {
                return;
            }
        }
    }

    fn drain(&mut self, pc: Pc, now: Instant, out: &mut Vec<Datagram>) {
        if self.transport(pc).is_some_and(|t| !t.undrained) {
            return;
        }
        loop {
            let transport = self.transport_mut(pc).expect("drain of an existing pc");
            let output = match transport.rtc.poll_output() {
                Ok(output) => output,
                Err(error) => {
                    self.on_rtc_error(pc, now, error);
                    if self.failed {
                        return;
                    }
                    continue;
                }
            };
            match output {
                Output::Timeout(at) => {
                    transport.next_timeout = at;
                    transport.undrained = false;
                    return;
                }
                Output::Transmit(transmit) => {
                    transport.datagrams_sent += 1;
                    self.counters.datagrams_sent += 1;
                    self.counters.bytes_sent += transmit.contents.len() as u64;
                    out.push(Datagram {
                        source: transmit.source,
                        destination: transmit.destination,
                        contents: transmit.contents.into(),
                    });
                }
                Output::Event(event) => self.on_event(pc, now, event),
            }
            if self.failed {
                return;
            }
        }
    }

    fn on_event(&mut self, pc: Pc, now: Instant, event: Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                let state = match state {
                    IceConnectionState::New => "new",
                    IceConnectionState::Checking => "checking",
                    IceConnectionState::Connected => "connected",
                    IceConnectionState::Completed => "completed",
                    IceConnectionState::Disconnected => "disconnected",
                };
                if let Some(transport) = self.transport_mut(pc) {
                    transport.ice_state = state;
                }
                self.events.push((now, PeerEvent::IceState { pc, state }));
            }
            Event::Connected => {
                if let Some(transport) = self.transport_mut(pc) {
                    if transport.connected_at.is_none() {
                        transport.connected_at = Some(now);
                        if pc == Pc::Publisher {
                            if let Some(publishing) = &mut self.publishing {
                                publishing.start(now);
                            }
                        }
                        self.events.push((now, PeerEvent::Connected { pc }));
                    }
                }
            }
            Event::RtpPacket(packet) => self.on_rtp(&packet),
            Event::KeyframeRequest(request) => {
                self.counters.keyframe_requests += 1;
                if let Some(publishing) = &mut self.publishing {
                    publishing.on_keyframe_request(request.mid, request.rid);
                }
            }
            _ => {}
        }
    }

    fn on_rtp(&mut self, packet: &str0m::rtp::RtpPacket) {
        let ssrc = packet.header.ssrc;
        let now = packet.timestamp; // the datagram's arrival, not when the hub got to it
        let arrival_s = now.duration_since(self.subscriber.created_at).as_secs_f64();
        let header = &packet.header;
        if let Some(track) = self.rx.get_mut(&ssrc) {
            // The per-packet path: one lookup, then RFC 3550 accounting.
            track.stats.record(header.sequence_number, header.timestamp, arrival_s, packet.payload.len());
            return;
        }
        let (mid, kind) = match self.subscriber.rtc.direct_api().stream_rx(&ssrc) {
            Some(stream) => {
                let mid = stream.mid();
                let kind = self.subscriber.rtc.media(mid).map(|m| m.kind());
                (mid.to_string(), kind)
            }
            None => (String::new(), None),
        };
        let (kind, clock_rate) = match kind {
            Some(MediaKind::Video) => ("video", 90_000),
            _ => ("audio", 48_000),
        };
        let codec = self.subscriber.rtc.codec_config().find(|p| p.pt() == header.payload_type);
        let codec = codec.map_or_else(|| format!("{kind}/unknown"), |p| format!("{kind}/{}", p.spec().codec));
        let track_id = self.tracks_by_mid.get(&mid).cloned().unwrap_or_default();
        self.events.push((now, PeerEvent::FirstPacket { track_id: track_id.clone(), kind }));
        let mut stats = RxStats::new(clock_rate);
        stats.record(header.sequence_number, header.timestamp, arrival_s, packet.payload.len());
        self.rx.insert(ssrc, RxTrack { track_id, kind, codec, mid, stats });
    }
}
