//! The subscriber's own SRTP receive path (issue #24): a steady stream's RTP skips str0m's
//! receive machinery.
//!
//! Theory of operation
//! -------------------
//! str0m receives the first packet of every stream (`on_rtp`): it maps the SSRC to its section,
//! creates the stream's registers and hands us the packet with its extended sequence number.
//! From then on the stream is *tracked* here: a datagram of a tracked SSRC is parsed, checked
//! against the replay window and opened (AES-GCM, aws-lc-rs) by `srtp_rx::SrtpReceiver` with the
//! keys str0m exported from DTLS, counted in our `RxStats`, and handed to str0m only as a
//! receipt (`Rtc::handle_external_rtp`: sequence number, RTP time, transport-wide sequence
//! number) so its receiver reports, NACKs, TWCC feedback and pause detection go on as before.
//! No `RtpHeader`, no payload copy, no `RtpPacket` event, usually no poll.
//!
//! Receipts that can move no str0m timer are *deferred*: they feed str0m's registers (receiver
//! reports, NACK, TWCC feedback, the pause check), which str0m reads only when one of its timers
//! runs. So they wait here, with their arrival times, and are handed over in one run
//! (`flush_receipts`) before str0m next has any input of this PeerConnection (a timer, a datagram
//! on its path) or when `RECEIPT_BATCH` are waiting. One run touches the peer's `Rtc` once instead
//! of once per packet, whose cache misses were most of the receipt's cost; and a deferred packet
//! changes nothing the hub must re-arm, so the hub skips servicing the peer (`receive_own_srtp`
//! answers `Received::Quiet`). A receipt may wait when it arrives in order (a gap arms str0m's
//! NACK timer, so a packet after one goes at once, with those before it) and either has no
//! transport-wide sequence number (livekit-server's audio) or has one while str0m's TWCC feedback
//! is already due (`twcc_armed`: the first receipt after a feedback sets that timer, so it goes at
//! once). Order within a stream is kept, and str0m sees every receipt at its arrival time, so its
//! reports, NACKs and feedback are what immediate receipts would have made.
//!
//! Everything else keeps str0m's path: RTCP, STUN, DTLS, RTX and other unknown SSRCs, a stream
//! whose section was given to another track (its next packet must start the new track's
//! accounting), packets during an ICE restart (which waits for the first RTP), a payload type
//! str0m refuses as a main stream's, a header we cannot parse, and every packet of a peer
//! whose DTLS negotiated a profile other than AEAD-AES-GCM or that runs with
//! `LKSWARM_SRTP_RX=str0m` (the A/B switch). A packet that fails authentication or replays is
//! dropped and counted, as str0m would drop it; so is one older than its stream's first packet,
//! which str0m's register refuses (a downtrack's head can arrive out of order).
//!
//! str0m delivering a packet of a tracked stream (an ICE restart's, say) marks it seen in the
//! window rather than starting the window over: the packets received here stay seen.

use std::sync::OnceLock;
use std::time::Instant;

use str0m::rtp::{Extension, ExternalRtp, ExternalRtpReceipt, RtpReceiveDrops, SeqNo, Ssrc};
use str0m::Rtc;

use super::{MediaPeer, Pc};
use crate::media::prefetch::prefetch;
use crate::media::srtp_rx::{peek_ssrc, GcmProfile, SrtpReceiver, SrtpRxError};
use crate::media::types::{PeerCounters, Received};

/// Why str0m's receive path consumed an RTP datagram without delivering media, by the name the
/// report gives each reason (`media.srtp_receive.str0m_dropped`). The one list of the reasons: the
/// Python side reads the names from `_core.STR0M_DROP_REASONS`.
pub type Str0mDrops = [(&'static str, u64); 7];

/// `drops` (`Rtc::rtp_receive_drops`, patch item 9) as named counts.
pub fn str0m_drops_by_reason(drops: &RtpReceiveDrops) -> Str0mDrops {
    [
        ("unknown_stream", drops.unknown_stream),
        ("before_keys", drops.before_keys),
        ("unknown_payload_type", drops.unknown_payload_type),
        ("duplicates", drops.duplicates),
        ("auth_failed", drops.auth_failed),
        ("malformed", drops.malformed),
        ("padding_only", drops.padding_only),
    ]
}

/// The reasons' names, in the report's order.
pub fn str0m_drop_reasons() -> [&'static str; 7] {
    str0m_drops_by_reason(&RtpReceiveDrops::default()).map(|(reason, _)| reason)
}

/// The most receipts deferred before they are handed to str0m in one run: 32 packets of one
/// 50 packet/s audio stream are 640 ms, under str0m's pause threshold, and usually a timer
/// (receiver report, ICE) flushes sooner.
const RECEIPT_BATCH: usize = 32;

/// The environment variable that selects the receive path: `own` (the default) or `str0m`.
pub const SRTP_RX_ENV: &str = "LKSWARM_SRTP_RX";

/// Whether this process receives steady SRTP on its own path (`LKSWARM_SRTP_RX`, read once).
fn own_path_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var(SRTP_RX_ENV).map_or(true, |v| v.trim() != "str0m"))
}

/// The receiver once DTLS has exported keys, or why there is none.
#[derive(Default)]
pub(super) enum OwnSrtp {
    /// No stream tracked yet (DTLS keys are read when the first is).
    #[default]
    NotYet,
    On(Box<OwnReceiver>),
    /// This peer receives everything through str0m; the reason is for the report.
    Off(&'static str),
}

pub(super) struct OwnReceiver {
    receiver: SrtpReceiver,
    /// Reused for every packet's plaintext: no allocation per packet.
    plaintext: Vec<u8>,
    /// The negotiated transport-wide-cc extension id. BUNDLE gives an id one meaning across all
    /// sections, and str0m parses every packet with its session-wide map, so one id serves every
    /// stream, even one whose section did not negotiate the extension (livekit-server's audio
    /// sections may not): the first section that has it names it.
    twcc_ext_id: Option<u8>,
    /// Receipts not yet handed to str0m, in arrival order, with the time str0m is to be given.
    deferred: Vec<(Instant, ExternalRtp)>,
    /// str0m's TWCC feedback is known to be due (its timer armed) since the last hand-over; false
    /// once str0m has any other input, which may send the feedback.
    twcc_armed: bool,
}

impl OwnSrtp {
    fn start(rtc: &mut Rtc) -> OwnSrtp {
        if !own_path_enabled() {
            return OwnSrtp::Off("disabled by LKSWARM_SRTP_RX=str0m");
        }
        let api = rtc.direct_api();
        let Some(keying) = api.srtp_receive_keying() else {
            return OwnSrtp::Off("DTLS negotiated an SRTP profile other than AEAD-AES-GCM");
        };
        let profile = match keying.master_key.len() {
            16 => GcmProfile::Aes128,
            _ => GcmProfile::Aes256,
        };
        match SrtpReceiver::new(profile, &keying.master_key, &keying.master_salt) {
            Ok(receiver) => OwnSrtp::On(Box::new(OwnReceiver {
                receiver,
                plaintext: Vec::with_capacity(1500),
                twcc_ext_id: None,
                deferred: Vec::with_capacity(RECEIPT_BATCH),
                twcc_armed: false,
            })),
            Err(_) => OwnSrtp::Off("the exported SRTP keys were refused"),
        }
    }
}

/// The counter of a packet the own path drops, as str0m would: a replay, one older than the replay
/// window, a failed authentication, or one older than its stream's first. `None` for a refusal that
/// is str0m's to judge.
fn drop_counter(counters: &mut PeerCounters, error: SrtpRxError) -> Option<&mut u64> {
    match error {
        SrtpRxError::Replayed => Some(&mut counters.srtp_own_replayed),
        SrtpRxError::TooOld => Some(&mut counters.srtp_own_too_old),
        SrtpRxError::AuthFailed => Some(&mut counters.srtp_own_auth_failed),
        SrtpRxError::BeforeFirst => Some(&mut counters.srtp_own_before_first),
        SrtpRxError::Malformed | SrtpRxError::UnknownSsrc | SrtpRxError::BadKey => None,
    }
}

impl MediaPeer {
    /// Starts tracking `ssrc` after str0m delivered its packet `seq_no` (of section `mid`), or
    /// re-seeds it when str0m delivered one of a tracked stream (its register moved).
    pub(super) fn track_own_srtp(&mut self, ssrc: Ssrc, seq_no: SeqNo, mid: str0m::media::Mid) {
        if matches!(self.own_srtp, OwnSrtp::NotYet) {
            self.own_srtp = OwnSrtp::start(&mut self.primary.rtc);
        }
        let OwnSrtp::On(own) = &mut self.own_srtp else { return };
        let twcc_ext_id =
            self.primary.rtc.media(mid).and_then(|m| m.remote_extmap().id_of(Extension::TransportSequenceNumber));
        match (own.twcc_ext_id, twcc_ext_id) {
            // Two sections name different ids (BUNDLE forbids it): this stream stays with str0m.
            (Some(known), Some(id)) if known != id => return,
            (None, Some(id)) => own.twcc_ext_id = Some(id),
            _ => {}
        }
        own.receiver.track(*ssrc, *seq_no); // a tracked SSRC marks str0m's packet seen
    }

    /// Stops tracking `ssrc` (its section now carries another track).
    pub(super) fn forget_own_srtp(&mut self, ssrc: Ssrc) {
        self.flush_receipts(); // its deferred receipts belong to the old track
        if let OwnSrtp::On(own) = &mut self.own_srtp {
            own.receiver.forget(*ssrc);
        }
    }

    /// Prefetches (`media::prefetch`) what `receive_own_srtp` touches first, one level of
    /// pointers per call, `level` 0 to `RECEIVE_LEVELS - 1`: the peer's own lines; then the own
    /// receiver behind its box and the received tracks' table; then the receiver's stream table.
    pub(crate) fn prefetch_receive(&self, level: u8) {
        match level {
            0 => {
                prefetch(&self.counters);
                prefetch(&self.restart);
                prefetch(&self.own_srtp);
                prefetch(&self.rx);
                prefetch(&self.last_arrival);
                prefetch(&self.primary.datagrams_received);
                prefetch(&self.primary.last_input_at);
            }
            1 => {
                if let OwnSrtp::On(own) = &self.own_srtp {
                    prefetch(&own.receiver);
                    prefetch(&own.deferred);
                }
                // A subscriber receives a few tracks: each one's accounting, by address only.
                for track in self.rx.values().take(4) {
                    prefetch(track);
                }
            }
            _ => {
                if let OwnSrtp::On(own) = &self.own_srtp {
                    own.receiver.prefetch_streams();
                    if let Some(last) = own.deferred.last() {
                        prefetch(last);
                    }
                }
            }
        }
    }

    /// Receives one datagram of the primary PeerConnection on the own path if it is SRTP of a
    /// tracked stream; `None` when str0m should have it (see the module doc). Borrows field by
    /// field so the stream's accounting is looked up once.
    pub(super) fn receive_own_srtp(&mut self, pc: Pc, now: Instant, data: &[u8]) -> Option<Received> {
        if pc != Pc::Subscriber || self.restart.is_some() {
            return None;
        }
        let OwnSrtp::On(own) = &mut self.own_srtp else { return None };
        let ssrc = peek_ssrc(data)?;
        if !own.receiver.is_tracked(ssrc) {
            return None;
        }
        let Some(track) = self.rx.get_mut(&Ssrc::from(ssrc)) else {
            // The section now carries another track: str0m's path starts its accounting.
            own.receiver.forget(ssrc);
            return None;
        };
        let opened = match own.receiver.open(data, &mut own.plaintext, own.twcc_ext_id) {
            Ok(opened) => opened,
            Err(error) => {
                // `None`: not ours to judge (a header we cannot parse, an SSRC forgotten
                // meanwhile), so str0m's path has the packet.
                *drop_counter(&mut self.counters, error)? += 1;
                self.primary.datagrams_received += 1;
                self.last_arrival = Some(now);
                return Some(Received::Quiet);
            }
        };
        let transport = &mut self.primary;
        let at = transport.advance_clock(now);
        let receipt = ExternalRtp {
            ssrc: opened.ssrc.into(),
            seq_no: opened.index.into(),
            payload_type: opened.payload_type.into(),
            timestamp: opened.timestamp,
            transport_cc: opened.transport_cc,
            payload_len: opened.payload_len,
        };
        transport.datagrams_received += 1;
        self.last_arrival = Some(now);
        self.counters.srtp_own_packets += 1;
        let arrival_s = at.duration_since(transport.created_at).as_secs_f64();
        let in_order = track.stats.follows_in_order(opened.sequence);
        track.stats.record(opened.sequence, opened.timestamp, arrival_s, opened.payload_len);
        own.deferred.push((at, receipt));
        let moves_no_timer = in_order && (receipt.transport_cc.is_none() || own.twcc_armed);
        if moves_no_timer && own.deferred.len() < RECEIPT_BATCH {
            return Some(Received::Quiet);
        }
        Some(self.hand_over_receipts())
    }

    /// Hands str0m the deferred receipts before it has any other input of the primary
    /// PeerConnection (see `hand_over_receipts`). That input may send the TWCC feedback, so the
    /// next receipt with a transport-wide number goes at once, to arm its timer again.
    pub(super) fn flush_receipts(&mut self) -> Received {
        let received = self.hand_over_receipts();
        if let OwnSrtp::On(own) = &mut self.own_srtp {
            own.twcc_armed = false;
        }
        received
    }

    /// Hands str0m the deferred receipts in arrival order (see the module doc), notes whether
    /// its TWCC feedback is now due, then takes its next timeout, or drains it when a receipt left
    /// output (a timer ran, a paused stream resumed, a gap armed the NACK timer at once).
    /// `Received::Quiet` when nothing changed that the hub must act on (no output, the same
    /// deadline).
    fn hand_over_receipts(&mut self) -> Received {
        let OwnSrtp::On(own) = &mut self.own_srtp else { return Received::Quiet };
        let Some(&(last_at, _)) = own.deferred.last() else { return Received::Quiet };
        let transport = &mut self.primary;
        let timeout_before = transport.next_timeout;
        let mut error = None;
        for (at, receipt) in own.deferred.drain(..) {
            match transport.rtc.handle_external_rtp(at, &receipt) {
                Ok(ExternalRtpReceipt::Accounted) => {}
                // No longer a main stream str0m knows: its next packets go through str0m. This
                // one was authenticated and counted here; only str0m's reports miss it.
                Ok(ExternalRtpReceipt::Refused) => {
                    own.receiver.forget(*receipt.ssrc);
                    self.counters.srtp_receipts_refused += 1;
                }
                Ok(_) => self.counters.srtp_own_replayed += 1, // str0m's register had it already
                Err(e) => error = Some((at, e)),
            }
        }
        if let Some((at, error)) = error {
            self.on_rtc_error(Pc::Subscriber, at, error);
            if self.failed {
                return Received::Service;
            }
        }
        let transport = &mut self.primary;
        if let OwnSrtp::On(own) = &mut self.own_srtp {
            own.twcc_armed = transport.rtc.twcc_feedback_pending();
        }
        match transport.rtc.quiet_timeout() {
            Some(timeout) if timeout == timeout_before => Received::Quiet,
            Some(timeout) => {
                transport.next_timeout = timeout; // TWCC feedback moved it earlier: re-arm
                Received::Service
            }
            None => {
                transport.undrained = true;
                self.drain_to_outbox(Pc::Subscriber, last_at);
                Received::Service
            }
        }
    }

    /// What str0m's receive path consumed without delivering media, over both PeerConnections
    /// (patch item 9), by reason: the refusals of the packets the own path left to str0m, which
    /// the own path counts for its own in `counters`.
    pub fn str0m_rtp_drops(&self) -> Str0mDrops {
        let mut total = str0m_drops_by_reason(&self.primary.rtc.rtp_receive_drops());
        if let Some(publisher) = &self.publisher {
            let more = str0m_drops_by_reason(&publisher.rtc.rtp_receive_drops());
            for ((_, count), (_, more)) in total.iter_mut().zip(more) {
                *count += more;
            }
        }
        total
    }

    /// Why this peer received all SRTP through str0m, if it did after tracking was attempted.
    pub fn own_srtp_off_reason(&self) -> Option<&'static str> {
        match self.own_srtp {
            OwnSrtp::Off(reason) => Some(reason),
            _ => None,
        }
    }
}
