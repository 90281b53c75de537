//! Data-channel load (issue #21): probe messages sent on `_reliable` / `_lossy`, and received
//! messages accounted per (sender identity, channel label).
//!
//! Theory of operation
//! -------------------
//! Which PeerConnection carries the channels (docs: shared notes "data-and-signaling" §A): in
//! dual-PC mode the server opens its channels on the subscriber PeerConnection (we receive there)
//! and adopts the `_reliable` / `_lossy` we add to our publisher offer (we send there); in
//! single-PC mode both directions use the channels we put in the join offer. `DataState` keeps the
//! open channels of each PeerConnection by id and label (`Event::ChannelOpen`), so it can find
//! the channel to write on and the label of a received message, whichever side opened it.
//!
//! Submodules: `packet` (wire encoding and reading of `DataPacket`), `sender` (the rate schedule,
//! on the media thread, with no Python per message), `stats` (per-flow counters). A peer's
//! `DataState` adds the per-peer figures: malformed packets (the first error kept), packets of
//! other kinds (`other`), and a latency histogram of probe messages (now − send time, both
//! SystemTime µs; negative differences, from clock skew between hosts, count as 0).

pub mod packet;
pub mod rpc;
pub mod rpc_queue;
pub mod sender;
pub mod slow_reader;
pub mod stats;
pub mod track;
pub mod track_stats;

use std::time::{Duration, Instant};

use str0m::change::SdpApi;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};

use super::lag::LagHistogram;
use super::types::Pc;
use packet::{parse_data_packet, read_probe, Kind};
pub use sender::unix_now_us;
use sender::{DataSender, ResendCounts};
use slow_reader::{SlowReader, SlowReaderCounts};
use stats::{FlowCounts, ReceiveStats};
use track::{TrackSender, DATA_TRACK_LABEL};
use track_stats::TrackReceive;

/// The channel labels lkswarm sends on, by `Kind`.
pub const RELIABLE_LABEL: &str = "_reliable";
pub const LOSSY_LABEL: &str = "_lossy";

/// Adds livekit's two client channels to an offer (in-band DCEP, as the JS SDK creates them):
/// `_reliable` ordered and fully reliable, `_lossy` unordered with no retransmissions.
pub fn add_livekit_channels(api: &mut SdpApi) {
    api.add_channel_with_config(ChannelConfig { label: RELIABLE_LABEL.into(), ..ChannelConfig::default() });
    api.add_channel_with_config(ChannelConfig {
        label: LOSSY_LABEL.into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..ChannelConfig::default()
    });
    // Data-track packets (`track`): unordered, no retransmission, as the SDKs open it.
    api.add_channel_with_config(ChannelConfig {
        label: DATA_TRACK_LABEL.into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..ChannelConfig::default()
    });
}

/// DataPacket's `value` variants are fields up to 18 (`packet::parse_data_packet`).
pub const OTHER_FIELDS: usize = 19;

/// How long RPC answers wait for a reliable channel of ours to open (then `no_channel`), or for room in
/// its buffer without any being written (then `refused`): longer than a PeerConnection's ICE and DTLS
/// on loopback, shorter than an SDK caller's 7 s timeout.
pub const RPC_WAIT: Duration = Duration::from_secs(3);

/// What waiting RPC answers wait for (`DataState::rpc_waited_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcWait {
    ForChannel,
    ForRoom,
}

/// RPC calls to this participant and what became of them (`rpc`). Each request ends in exactly one
/// of `answered`, `no_channel`, `over_limit`, `refused` and `unreadable`, or is still pending
/// (`DataSummary::rpc_pending`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcCounts {
    pub requests: u64,
    /// Acked, then answered as `rpc::Answer` says: refused with `rpc::UNSUPPORTED_METHOD` (or
    /// `UNSUPPORTED_VERSION`), or with the request's payload.
    pub answered: u64,
    /// No reliable channel of ours to answer on: on two PeerConnections only a data publisher opens
    /// channels (on its publisher PeerConnection).
    pub no_channel: u64,
    /// Past `rpc_queue::MAX_PENDING_RPC_ANSWER_BYTES` of answers waiting at once.
    pub over_limit: u64,
    /// A write failed, or the channel's buffer stayed full for `peer::data::RPC_CHANNEL_WAIT`.
    pub refused: u64,
    /// From a caller with no identity (hidden), or malformed (no id: also counted as malformed).
    pub unreadable: u64,
}

pub fn kind_of_label(label: &str) -> Option<Kind> {
    match label {
        RELIABLE_LABEL => Some(Kind::Reliable),
        LOSSY_LABEL => Some(Kind::Lossy),
        _ => None,
    }
}

/// A peer's data-channel state; see the module doc.
#[derive(Debug, Default)]
pub struct DataState {
    /// Open channels: (PeerConnection slot, id, label).
    open: Vec<(Pc, ChannelId, String)>,
    pub sender: DataSender,
    pub received: ReceiveStats,
    pub malformed: u64,
    pub malformed_detail: String,
    /// Well-formed DataPackets that are not `user` (chat, RPC, streams, ...), and by the DataPacket field
    /// number of their variant (`OTHER_FIELDS`).
    pub other: u64,
    pub other_by_field: [u64; OTHER_FIELDS],
    /// Created with the first probe received, so quiet peers carry no histogram.
    pub latency: Option<LagHistogram>,
    /// Set for a slow reader (`--data-slow-readers`).
    pub slow: Option<SlowReader>,
    /// Data tracks: this peer's publisher schedule (`track`) and receive accounting (`track_stats`).
    pub track_sender: TrackSender,
    pub track_received: TrackReceive,
    pub rpc: RpcCounts,
    /// How this participant answers RPC calls (`--rpc-echo`).
    pub rpc_answer: rpc::Answer,
    /// Encoded answers (an ack, then a response, per request) for the peer to write.
    pub rpc_queue: rpc_queue::RpcQueue,
    /// What waiting answers wait for, and since when (`peer::data::write_rpc_answers`).
    pub rpc_wait: Option<(RpcWait, Instant)>,
}

impl DataState {
    pub fn on_open(&mut self, pc: Pc, id: ChannelId, label: String) {
        self.open.retain(|(p, i, _)| !(*p == pc && *i == id));
        self.open.push((pc, id, label));
    }

    /// Forgets a closed channel; returns its label.
    pub fn on_close(&mut self, pc: Pc, id: ChannelId) -> Option<String> {
        let index = self.open.iter().position(|(p, i, _)| *p == pc && *i == id)?;
        Some(self.open.remove(index).2)
    }

    /// The open channel labelled `label` on `pc`.
    pub fn channel(&self, pc: Pc, label: &str) -> Option<ChannelId> {
        self.open.iter().find(|(p, _, l)| *p == pc && l == label).map(|(_, id, _)| *id)
    }

    fn on_rpc_request(&mut self, label: &str, caller: &str, request: &[u8]) {
        self.rpc.requests += 1;
        if caller.is_empty() {
            // A well-formed request from a hidden caller (the server blanks its identity): nobody to address.
            self.rpc.unreadable += 1;
            return;
        }
        match self.rpc_queue.push(caller, request, self.rpc_answer) {
            Ok(rpc_queue::Queued::OverLimit) => self.rpc.over_limit += 1,
            Ok(rpc_queue::Queued::TooLarge) => self.rpc.refused += 1,
            Ok(rpc_queue::Queued::Yes) => {}
            Err(error) => {
                self.rpc.unreadable += 1;
                self.malformed += 1;
                if self.malformed_detail.is_empty() {
                    self.malformed_detail = format!("{label}: {error}");
                }
            }
        }
    }

    pub fn has_rpc_answers(&self) -> bool {
        !self.rpc_queue.is_empty()
    }

    /// Whether waiting answers have waited `RPC_WAIT` for `what` (a wait for something else, or no
    /// wait, starts one now); a true ends the wait, and the caller drops the answers.
    pub fn rpc_waited_out(&mut self, what: RpcWait, now: Instant) -> bool {
        let since = match self.rpc_wait {
            Some((waiting_for, since)) if waiting_for == what => since,
            _ => self.rpc_wait.insert((what, now)).1,
        };
        let out = now.saturating_duration_since(since) >= RPC_WAIT;
        if out {
            self.rpc_wait = None;
        }
        out
    }

    pub fn open_labels(&self) -> Vec<String> {
        self.open.iter().map(|(_, _, label)| label.clone()).collect()
    }

    /// Accounts one message received on channel `id` of `pc`, whose last datagram arrived at
    /// `arrived_at_us` (µs since the epoch: the kernel's arrival time, not when the hub got to it,
    /// so the media thread's batching of wake-ups is not counted as the server's latency).
    pub fn on_message(&mut self, pc: Pc, id: ChannelId, message: &[u8], arrived_at_us: u64) {
        let label = match self.open.iter().find(|(p, i, _)| *p == pc && *i == id) {
            Some((_, _, label)) => label.as_str(),
            None => "?",
        };
        if label == DATA_TRACK_LABEL {
            self.track_received.on_packet(message, arrived_at_us);
            return;
        }
        let view = match parse_data_packet(message) {
            Ok(view) => view,
            Err(error) => {
                self.malformed += 1;
                if self.malformed_detail.is_empty() {
                    self.malformed_detail = format!("{label}: {error}");
                }
                return;
            }
        };
        let Some(payload) = view.user_payload else {
            self.other += 1;
            if let Some(slot) = view.other_variant.and_then(|field| self.other_by_field.get_mut(usize::from(field))) {
                *slot += 1;
            }
            if let Some(request) = view.rpc_request {
                let label = label.to_owned(); // it borrows `open`; RPCs are rare enough to copy it
                self.on_rpc_request(&label, view.sender(), request);
            }
            return;
        };
        let Some(flow) = self.received.flow(view.sender(), label, payload.len()) else { return };
        match read_probe(payload) {
            Some((sent_at_us, counter)) => {
                if !flow.record_probe(counter, payload.len()) {
                    self.malformed += 1;
                    if self.malformed_detail.is_empty() {
                        self.malformed_detail = format!("{label}: probe counter {counter} is no sender's (>= 2^40)");
                    }
                    return;
                }
                let latency_us = arrived_at_us.saturating_sub(sent_at_us);
                self.latency.get_or_insert_with(LagHistogram::default).record(Duration::from_micros(latency_us));
            }
            None => flow.record_foreign(payload.len()),
        }
    }
}

/// One received flow, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub sender: String,
    pub channel: String,
    pub counts: FlowCounts,
}

/// A peer's data figures, detached from the peer (`MediaHub.peer_stats()["data"]`).
#[derive(Debug, Clone, Default)]
pub struct DataSummary {
    /// By `Kind` (0 reliable, 1 lossy).
    pub sent: [u64; 2],
    pub payload_bytes_sent: [u64; 2],
    pub send_blocked: u64,
    pub send_skipped: u64,
    pub malformed: u64,
    pub malformed_detail: String,
    pub other: u64,
    /// (DataPacket field number, packets) for each variant received.
    pub other_by_field: Vec<(u8, u64)>,
    pub channels_open: Vec<String>,
    pub received: Vec<FlowSummary>,
    pub flows_overflow: u64,
    pub send_burst: u64,
    pub resend: ResendCounts,
    /// A slow reader's figures; None for the others.
    pub slow_reader: Option<SlowReaderCounts>,
    /// Data tracks (`track_stats::TrackSummary`).
    pub track: track_stats::TrackSummary,
    pub rpc: RpcCounts,
    /// RPC requests whose answers are still waiting to be written (for a channel, or the next service).
    pub rpc_pending: u64,
}

impl DataState {
    pub fn summary(&self) -> DataSummary {
        let counts = &self.sender.counts;
        let mut received: Vec<FlowSummary> = self
            .received
            .flows()
            .map(|(sender, channel, f)| FlowSummary {
                sender: sender.to_string(),
                channel: channel.to_string(),
                counts: f.into(),
            })
            .collect();
        received.sort_by(|a, b| (&a.sender, &a.channel).cmp(&(&b.sender, &b.channel)));
        DataSummary {
            sent: [counts[0].sent, counts[1].sent],
            payload_bytes_sent: [counts[0].payload_bytes, counts[1].payload_bytes],
            send_blocked: counts[0].blocked + counts[1].blocked,
            send_skipped: counts[0].skipped + counts[1].skipped,
            malformed: self.malformed,
            malformed_detail: self.malformed_detail.clone(),
            other: self.other,
            other_by_field: (0..OTHER_FIELDS as u8).zip(self.other_by_field).filter(|&(_, count)| count > 0).collect(),
            channels_open: self.open_labels(),
            received,
            flows_overflow: self.received.flows_overflow,
            send_burst: counts[0].burst + counts[1].burst,
            resend: self.sender.resend,
            slow_reader: self.slow.as_ref().map(|slow| slow.counts),
            track: track_stats::summarize(&self.track_sender, &self.track_received),
            rpc: self.rpc,
            rpc_pending: self.rpc_queue.pending_requests(),
        }
    }

    /// (messages sent, `user` messages received, their payload bytes): for hub totals. Messages of
    /// flows past the table's cap count here too.
    pub fn totals(&self) -> (u64, u64, u64) {
        let (received, bytes) = self.received.totals();
        (self.sender.counts[0].sent + self.sender.counts[1].sent, received, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::packet::{encode_user_packet, fill_probe, UserFields};
    use super::*;

    fn probe(identity: &str, counter: u64, sent_at_us: u64) -> Vec<u8> {
        let nonce = [0; 16];
        let fields =
            UserFields { kind: Kind::Lossy, identity, topic: "", destinations: &[], sequence: 0, nonce: &nonce };
        let mut out = Vec::new();
        encode_user_packet(&mut out, &fields, 40, |p| fill_probe(p, sent_at_us, counter));
        out
    }

    /// ChannelId has no public constructor; a received event is the only source, so the state
    /// is exercised through the label lookup with ids taken from a live `Rtc` in the loopback
    /// test. Here: messages on an unknown id are accounted under the label "?".
    #[test]
    fn accounts_probes_foreign_other_and_malformed() {
        let mut state = DataState::default();
        let id = fake_id();
        let now = unix_now_us();
        for counter in [0, 1, 1, 3] {
            state.on_message(Pc::Subscriber, id, &probe("alice", counter, now - 2_000), now);
        }
        // A foreign (SDK) payload: user packet with plain text.
        let nonce = [0; 16];
        let fields = UserFields {
            kind: Kind::Reliable,
            identity: "bob",
            topic: "",
            destinations: &[],
            sequence: 1,
            nonce: &nonce,
        };
        let mut sdk = Vec::new();
        encode_user_packet(&mut sdk, &fields, 5, |p| p.copy_from_slice(b"hello"));
        state.on_message(Pc::Subscriber, id, &sdk, now);
        state.on_message(Pc::Subscriber, id, &[0x4a, 0x00], now); // chat_message
        state.on_message(Pc::Subscriber, id, &[0x12, 0x09, 0x01], now); // truncated user
        state.on_message(Pc::Subscriber, id, &[0xff], now);

        let flows: Vec<_> = state.received.flows().collect();
        let alice = flows.iter().find(|f| f.0 == "alice").unwrap().2;
        assert_eq!((alice.received, alice.duplicates, alice.expected(), alice.missing()), (4, 1, 4, 1));
        let bob = flows.iter().find(|f| f.0 == "bob").unwrap().2;
        assert!(bob.foreign && bob.received == 1 && bob.payload_bytes == 5);
        assert_eq!((state.other, state.malformed), (1, 2));
        assert_eq!(state.summary().other_by_field, vec![(9, 1)]);
        assert!(state.malformed_detail.starts_with("?: "), "{}", state.malformed_detail);
        let latency = state.latency.as_ref().unwrap();
        assert_eq!(latency.count(), 4);
        assert!(latency.quantile_us(0.5) >= 2_000 && latency.quantile_us(0.5) < 1_000_000);
    }

    /// `DataPacket(participant_identity=caller, rpc_request=RpcRequest(id=id, method="m", version=1))`.
    fn rpc_request(caller: &str, id: &str) -> Vec<u8> {
        let mut request = vec![0x0a, id.len() as u8];
        request.extend_from_slice(id.as_bytes());
        request.extend_from_slice(b"\x12\x01m\x28\x01");
        let mut packet = vec![0x22, caller.len() as u8];
        packet.extend_from_slice(caller.as_bytes());
        packet.extend_from_slice(&[0x52, request.len() as u8]);
        packet.extend_from_slice(&request);
        packet
    }

    #[test]
    fn a_wait_for_room_starts_when_the_wait_for_a_channel_ends() {
        let mut state = DataState::default();
        let t0 = Instant::now();
        assert!(!state.rpc_waited_out(RpcWait::ForChannel, t0));
        assert!(!state.rpc_waited_out(RpcWait::ForChannel, t0 + Duration::from_millis(2_900)));
        // the channel opened, and the buffer has no room: that wait starts now, not at t0
        assert!(!state.rpc_waited_out(RpcWait::ForRoom, t0 + Duration::from_millis(3_000)));
        assert!(!state.rpc_waited_out(RpcWait::ForRoom, t0 + Duration::from_millis(5_900)));
        assert!(state.rpc_waited_out(RpcWait::ForRoom, t0 + Duration::from_millis(6_000)));
        assert!(state.rpc_wait.is_none());
    }

    #[test]
    fn rpc_requests_queue_an_ack_and_a_refusal_each_and_a_flood_is_bounded() {
        let mut state = DataState::default();
        let id = fake_id();
        let take = |state: &mut DataState| {
            let mut answers = Vec::new();
            state.rpc_queue.write(|message| {
                answers.push(message.to_vec());
                Ok(true)
            });
            answers
        };
        state.on_message(Pc::Subscriber, id, &rpc_request("agent", "r-1"), 0);
        assert!(state.has_rpc_answers());
        let answers = take(&mut state);
        let request = b"\x0a\x03r-1\x12\x01m\x28\x01";
        assert_eq!(answers, rpc::rpc_answers("agent", request, rpc::Answer::Unsupported).unwrap().to_vec());
        assert!(!state.has_rpc_answers());
        state.rpc_answer = rpc::Answer::Echo; // --rpc-echo
        state.on_message(Pc::Subscriber, id, &rpc_request("agent", "r-1"), 0);
        assert_eq!(take(&mut state), rpc::rpc_answers("agent", request, rpc::Answer::Echo).unwrap().to_vec());
        state.rpc_answer = rpc::Answer::Unsupported;
        let flood = rpc_queue::MAX_PENDING_RPC_ANSWER_BYTES / 100; // more than the queue's bytes take
        for k in 0..flood {
            state.on_message(Pc::Subscriber, id, &rpc_request("agent", &format!("s-{k}")), 0);
        }
        let queued = state.summary().rpc_pending;
        assert!(queued > 1_000 && state.rpc.over_limit == flood as u64 - queued, "{queued} {:?}", state.rpc);
        assert_eq!(take(&mut state).len() as u64, 2 * queued);
        let requests = 2 + flood as u64;
        assert_eq!(state.rpc.requests, requests);
        assert_eq!(state.summary().other_by_field, vec![(10, requests)]);
        // no id: nothing to answer, and unreadable
        state.on_message(Pc::Subscriber, id, &[0x22, 0x01, b'a', 0x52, 0x02, 0x28, 0x01], 0);
        assert_eq!((state.rpc.unreadable, state.malformed), (1, 1));
        // from a hidden caller (no identity): well formed, but nobody to answer
        let mut hidden = rpc_request("x", "r-h");
        hidden.drain(..3); // drops participant_identity "x"
        state.on_message(Pc::Subscriber, id, &hidden, 0);
        assert_eq!((state.rpc.unreadable, state.malformed, state.has_rpc_answers()), (2, 1, false));
    }

    fn fake_id() -> ChannelId {
        // The first channel a fresh Rtc creates; only used as an opaque key here.
        let mut rtc = str0m::Rtc::new(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        api.add_channel("x".into())
    }
}
