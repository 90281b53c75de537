//! The peer's I/O (`MediaPeer`'s sans-I/O surface, see the module doc): datagrams in
//! (`handle_datagram`, with a slow reader's hold), wake-ups (`handle_timeout`: str0m timers, the
//! connect deadline), and `poll`: due media frames and data messages written, both
//! PeerConnections drained into datagrams, str0m's events handled (`on_event`, `on_rtp`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, RtcError};

use super::{Datagram, MediaPeer, Pc, PeerCounters, PeerEvent, Received, RxTrack};
use crate::media::publish::{Publisher, Write};
use crate::media::rxstats::RxStats;
use crate::media::transport::Transport;

/// Received RTP streams (SSRCs) a peer accounts, at most; a room's tracks with their retransmission
/// streams and a few SSRC changes each stay far below it.
pub const MAX_RX_STREAMS: usize = 1024;

impl MediaPeer {
    /// Which of this peer's PeerConnections owns the local address `destination`.
    pub fn pc_for(&self, destination: SocketAddr) -> Option<Pc> {
        if self.primary.local == destination {
            Some(Pc::Subscriber)
        } else if self.publisher.as_ref().is_some_and(|p| p.local == destination) {
            Some(Pc::Publisher)
        } else {
            None
        }
    }

    /// Feeds one received datagram that arrived at `now` (the kernel's receive time where the
    /// caller has it). Garbage is counted and dropped, never fatal. Says whether the caller must
    /// `poll` the peer for it: a steady packet on the own SRTP path usually needs nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Received {
        self.counters.datagrams_received += 1;
        if self.failed {
            return Received::Service;
        }
        let Some(pc) = self.pc_for(destination) else {
            self.counters.foreign_datagrams += 1;
            return Received::Service;
        };
        if self.hold_for_slow_reader(pc, now, source, destination, data) {
            return Received::Service;
        }
        self.feed_datagram(pc, now, source, destination, data)
    }

    /// Counts a datagram the kernel cut to fit the receive buffer; its prefix is never fed.
    pub fn handle_truncated_datagram(&mut self) {
        self.counters.datagrams_received += 1;
        self.counters.datagrams_truncated += 1;
    }

    /// Hands one datagram of `pc` to its `Rtc`.
    pub(super) fn feed_datagram(
        &mut self,
        pc: Pc,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> Received {
        if let Some(received) = self.receive_own_srtp(pc, now, data) {
            return received;
        }
        if pc == Pc::Subscriber {
            self.flush_receipts(); // str0m sees this datagram after the receipts before it
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            self.counters.foreign_datagrams += 1;
            return Received::Service;
        };
        let transport = self.transport_mut(pc).expect("pc_for found it");
        transport.datagrams_received += 1;
        if data.first().is_some_and(|&b| b < 4) {
            // STUN (RFC 7983): the server's connectivity checks have arrived.
            transport.heard_checks = true;
            transport.own_checks_at = None;
        }
        transport.undrained = true;
        self.last_arrival = Some(now); // the kernel's arrival time, for data latency
        let transport = self.transport_mut(pc).expect("pc_for found it");
        let now = transport.advance_clock(now);
        let result = transport.rtc.handle_input(Input::Receive(now, receive));
        if let Err(error) = result {
            self.on_rtc_error(pc, now, error);
        }
        self.drain_to_outbox(pc, now);
        Received::Service
    }

    pub(super) fn drain_to_outbox(&mut self, pc: Pc, now: Instant) {
        let mut outbox = std::mem::take(&mut self.outbox);
        self.drain(pc, now, &mut outbox);
        self.outbox = outbox;
    }

    pub(super) fn on_rtc_error(&mut self, pc: Pc, now: Instant, error: RtcError) {
        match error {
            RtcError::Dtls(e) => {
                let detail = format!("{} PeerConnection: DTLS: {e}", self.pc_name(pc));
                self.fail(now, "dtls_failed", detail);
            }
            _ => self.counters.input_errors += 1,
        }
    }

    /// Wakes the peer at `now`: str0m timers, due media frames and the connect deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        self.release_slow_reader(now);
        for pc in [Pc::Subscriber, Pc::Publisher] {
            let Some(transport) = self.transport_mut(pc) else { continue };
            let own_checks_due = transport.own_checks_at.is_some_and(|at| at <= now);
            if own_checks_due {
                transport.own_checks_at = None;
            }
            if transport.next_timeout <= now || own_checks_due {
                if pc == Pc::Subscriber {
                    // str0m's timers read what the deferred receipts account (reports, pause check).
                    self.flush_receipts();
                }
                let Some(transport) = self.transport_mut(pc) else { continue };
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
        self.check_restart_deadline(now);
    }

    pub(super) fn check_deadline(&mut self, pc: Pc, now: Instant) {
        let timeout = self.config.connect_timeout;
        let Some(transport) = self.transport(pc) else { return };
        if transport.connected_at.is_some() || now.duration_since(transport.created_at) < timeout {
            return;
        }
        let name = self.pc_name(pc);
        let (reason, what) = if transport.rtc.is_connected() {
            ("dtls_timeout", "ICE connected but the DTLS handshake did not complete")
        } else {
            ("ice_timeout", "ICE did not connect (no answer to connectivity checks)")
        };
        let mut detail = format!(
            "{} PeerConnection: {what} within {:.0} s (ICE {}, {} datagrams sent, {} received; remote candidates {})",
            name,
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
        }
        let media_connected = self.is_connected(Pc::Publisher);
        if media_connected && self.publishing.is_some() {
            self.write_due_media(now, out);
        }
        if !self.failed {
            self.write_due_data(now, out);
        }
        if !self.failed {
            self.write_rpc_answers(now, out);
        }
        if !self.failed {
            self.write_due_data_track(now, out);
        }
        let mut wake = self.primary.next_timeout;
        if let Some(deadline) = self.arm_restart(now) {
            wake = wake.min(deadline);
        }
        if let Some(publisher) = &self.publisher {
            wake = wake.min(publisher.next_timeout);
        }
        if let Some(due) = self.data_next_due() {
            wake = wake.min(due);
        }
        if let Some(due) = self.rpc_next_due(now) {
            wake = wake.min(due);
        }
        if let Some(due) = self.data.track_sender.next_due() {
            wake = wake.min(due);
        }
        if media_connected {
            if let Some(next_due) = self.publishing.as_ref().and_then(Publisher::next_due) {
                wake = wake.min(next_due);
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
    pub(super) fn write_due_media(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        self.write_due_track(now, out, Publisher::write_next_audio);
        if !self.failed {
            self.write_due_track(now, out, Publisher::write_next_video);
        }
    }

    pub(super) fn write_due_track(
        &mut self,
        now: Instant,
        out: &mut Vec<Datagram>,
        write_next: fn(&mut Publisher, Instant, &mut Transport, &mut PeerCounters) -> Write,
    ) {
        let media_pc = self.media_pc();
        loop {
            let transport = match media_pc {
                Pc::Publisher => self.publisher.as_mut(),
                Pc::Subscriber => Some(&mut self.primary),
            };
            let (Some(publishing), Some(transport)) = (&mut self.publishing, transport) else { return };
            match write_next(publishing, now, transport, &mut self.counters) {
                Write::NoneDue => return,
                Write::Written => self.drain(media_pc, now, out),
                Write::NoWriter => {}
            }
            if self.failed {
                return;
            }
        }
    }

    pub(super) fn drain(&mut self, pc: Pc, now: Instant, out: &mut Vec<Datagram>) {
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

    pub(super) fn on_event(&mut self, pc: Pc, now: Instant, event: Event) {
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
                let signal_pc = self.signal_pc(pc);
                self.events.push((now, PeerEvent::IceState { pc: signal_pc, state }));
                if pc == Pc::Subscriber && matches!(state, "connected" | "completed") {
                    self.restart_on_ice_connected(now);
                }
            }
            Event::Connected => {
                let media_pc = self.media_pc();
                let (signal_pc, primary) = (self.signal_pc(pc), pc == Pc::Subscriber);
                if let Some(transport) = self.transport_mut(pc) {
                    if transport.connected_at.is_none() {
                        transport.connected_at = Some(now);
                        if pc == media_pc {
                            if let Some(publishing) = &mut self.publishing {
                                publishing.start(now);
                            }
                        }
                        self.events.push((now, PeerEvent::Connected { pc: signal_pc, primary }));
                    }
                }
            }
            Event::RtpPacket(packet) => {
                self.on_rtp(&packet);
                if self.restart.is_some() {
                    self.restart_on_rtp(packet.timestamp);
                }
            }
            Event::KeyframeRequest(request) => {
                self.counters.keyframe_requests += 1;
                if let Some(publishing) = &mut self.publishing {
                    publishing.on_keyframe_request(request.mid, request.rid);
                }
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(pc, now, id, label),
            Event::ChannelData(data) => self.on_channel_data(pc, &data),
            Event::ChannelClose(id) => self.on_channel_close(pc, id),
            _ => {}
        }
    }

    pub(super) fn on_rtp(&mut self, packet: &str0m::rtp::RtpPacket) {
        let ssrc = packet.header.ssrc;
        let now = packet.timestamp; // the datagram's arrival, not when the hub got to it
        let arrival_s = now.duration_since(self.primary.created_at).as_secs_f64();
        let header = &packet.header;
        if let Some(track) = self.rx.get_mut(&ssrc) {
            // A tracked stream's packet that str0m received (during an ICE restart, say): RFC 3550
            // accounting, and the own SRTP path re-seeded from str0m's sequence number.
            track.stats.record(header.sequence_number, header.timestamp, arrival_s, packet.payload.len());
            let mid = Mid::from(track.mid.as_str());
            self.track_own_srtp(ssrc, packet.seq_no, mid);
            return;
        }
        if self.rx.len() + self.retired_rx.len() >= MAX_RX_STREAMS {
            // Every SSRC gets its statistics and its own SRTP state, kept to the end for the report:
            // a server that keeps changing SSRCs must not grow them (and the per-packet scans) forever.
            self.counters.rtp_past_stream_cap += 1;
            return;
        }
        let (mid, kind) = match self.primary.rtc.direct_api().stream_rx(&ssrc) {
            Some(stream) => {
                let mid = stream.mid();
                let kind = self.primary.rtc.media(mid).map(|m| m.kind());
                (Some(mid), kind)
            }
            None => (None, None),
        };
        if kind == Some(MediaKind::Audio) {
            // NACK audio as browsers do, which is not at all (libwebrtc negotiates no audio NACK).
            // str0m would otherwise wake this receiver every 33 ms to look for losses to NACK, each
            // a timer run and a full poll: about as many wakes as audio packets. Loss is still
            // counted and reported, and RTCP receiver reports and TWCC feedback go on as before.
            if let Some(stream) = self.primary.rtc.direct_api().stream_rx(&ssrc) {
                stream.suppress_nack(true);
            }
        }
        let (kind, clock_rate) = match kind {
            Some(MediaKind::Video) => ("video", 90_000),
            _ => ("audio", 48_000),
        };
        let codec = self.primary.rtc.codec_config().find(|p| p.pt() == header.payload_type);
        let codec = codec.map_or_else(|| format!("{kind}/unknown"), |p| format!("{kind}/{}", p.spec().codec));
        if let Some(mid) = mid {
            // Later packets of this stream take the own SRTP path (own_srtp.rs).
            self.track_own_srtp(ssrc, packet.seq_no, mid);
        }
        let mid = mid.map(|m| m.to_string()).unwrap_or_default();
        let track_id = self.tracks_by_mid.get(&mid).cloned().unwrap_or_default();
        self.events.push((now, PeerEvent::FirstPacket { track_id: track_id.clone(), kind }));
        let mut stats = RxStats::new(clock_rate);
        stats.record(header.sequence_number, header.timestamp, arrival_s, packet.payload.len());
        self.rx.insert(ssrc, RxTrack { track_id, kind, codec, mid, stats });
    }
}
