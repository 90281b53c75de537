//! Receive accounting for data-track packets, per subscriber handle (one remote track each).
//!
//! Theory of operation
//! -------------------
//! The server forwards each subscribed track under a handle of the subscriber's own, and tells the
//! subscriber over signaling which track each handle is (`data_track_subscriber_handles`, the full
//! map each time). Python passes every new map in (`set_handles`, once per map, never per packet).
//!
//! Packets can beat their map: the server starts forwarding as soon as the subscription exists,
//! while the map travels over the WebSocket and then through Python. So a packet whose handle is
//! not (yet) mapped opens a *pending* flow for that handle, accounted like any other; a later map
//! naming the handle adopts it. Packets of flows still pending when figures are read count as
//! `unknown_handle` (never silently dropped). A handle that a new map points at another track
//! starts a new flow; the old one stays in the figures.
//!
//! Loss and order come from the 16-bit packet sequence, unwrapped to 64 bits against the highest
//! seen (a step of up to ±32,767 is taken as the nearest), then fed to the data channels'
//! `FlowStats` (first/highest, a duplicate window, out of order). Latency is now − the user
//! timestamp (both µs since the epoch); packets without one (another client's) are counted and
//! flagged `foreign`, with no latency. Malformed packets are counted with the first error kept.

use std::collections::HashMap;
use std::time::Duration;

use super::stats::{FlowCounts, FlowStats};
use super::track::{parse_packet, TrackSender};
use crate::media::lag::LagHistogram;

/// Flows kept per peer (mapped or pending).
pub const MAX_TRACK_FLOWS: usize = 4096;

/// Where a subscriber handle points: the publisher and its track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleTarget {
    pub publisher_identity: String,
    pub track_sid: String,
}

/// One handle's packets.
#[derive(Debug, Clone, Default)]
pub struct TrackFlow {
    pub handle: u16,
    /// None while the handle is unmapped.
    pub target: Option<HandleTarget>,
    pub stats: FlowStats,
    /// Unwrapped sequence of the highest packet seen.
    highest: Option<u64>,
}

impl TrackFlow {
    /// The 64-bit sequence of `sequence`, nearest to the highest seen (the first starts at 2^32,
    /// so reordering before it cannot go below 0).
    fn unwrap(&mut self, sequence: u16) -> u64 {
        let Some(highest) = self.highest else {
            let first = (1u64 << 32) + u64::from(sequence);
            self.highest = Some(first);
            return first;
        };
        let delta = i64::from(sequence.wrapping_sub(highest as u16) as i16);
        let extended = highest.saturating_add_signed(delta);
        if extended > highest {
            self.highest = Some(extended);
        }
        extended
    }
}

/// A peer's data-track receive side; see the module doc.
#[derive(Debug, Default)]
pub struct TrackReceive {
    flows: Vec<TrackFlow>,
    /// Current handle -> index in `flows`.
    by_handle: HashMap<u16, usize>,
    /// Handles as the latest map names them.
    map: HashMap<u16, HandleTarget>,
    pub malformed: u64,
    pub malformed_detail: String,
    /// Packets of handles past the flow cap: counted here only.
    pub flows_overflow: u64,
    /// Handle maps received.
    pub maps: u64,
    /// Created with the first timestamped packet, so quiet peers carry no histogram.
    pub latency: Option<LagHistogram>,
    frames: u64,
    bytes: u64,
}

impl TrackReceive {
    /// Replaces the handle map (the server always sends the whole of it).
    pub fn set_handles(&mut self, handles: Vec<(u16, HandleTarget)>) {
        self.maps += 1;
        self.map = handles.into_iter().collect();
        let mut stale = Vec::new();
        for (&handle, &index) in &self.by_handle {
            let flow = &mut self.flows[index];
            match (&flow.target, self.map.get(&handle)) {
                (None, Some(target)) => flow.target = Some(target.clone()), // a pending flow adopted
                (Some(old), Some(new)) if old != new => stale.push(handle), // re-used for another track
                (Some(_), None) => stale.push(handle),                      // unsubscribed
                _ => {}
            }
        }
        for handle in stale {
            self.by_handle.remove(&handle);
        }
    }

    /// Accounts one `_data_track` message that arrived at `arrived_at_us` (µs since the epoch).
    pub fn on_packet(&mut self, packet: &[u8], arrived_at_us: u64) {
        let view = match parse_packet(packet) {
            Ok(view) => view,
            Err(error) => {
                self.malformed += 1;
                if self.malformed_detail.is_empty() {
                    self.malformed_detail = format!("_data_track: {error}");
                }
                return;
            }
        };
        self.frames += 1;
        self.bytes += view.payload.len() as u64;
        let index = match self.by_handle.get(&view.handle) {
            Some(&index) => index,
            None if self.flows.len() >= MAX_TRACK_FLOWS => {
                self.flows_overflow += 1;
                return;
            }
            None => {
                let target = self.map.get(&view.handle).cloned();
                self.flows.push(TrackFlow { handle: view.handle, target, ..TrackFlow::default() });
                self.by_handle.insert(view.handle, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let flow = &mut self.flows[index];
        let sequence = flow.unwrap(view.sequence);
        if !flow.stats.record_probe(sequence, view.payload.len()) {
            self.malformed += 1; // an unwrapped sequence past 2^40: 1,000 years of frames at 30 Hz
            return;
        }
        match view.user_timestamp_us {
            Some(sent_at_us) => {
                let latency_us = arrived_at_us.saturating_sub(sent_at_us);
                self.latency.get_or_insert_with(LagHistogram::default).record(Duration::from_micros(latency_us));
            }
            None => flow.stats.foreign = true,
        }
    }

    pub fn flows(&self) -> &[TrackFlow] {
        &self.flows
    }

    /// (frames, payload bytes) received over every handle, known or not.
    pub fn totals(&self) -> (u64, u64) {
        (self.frames, self.bytes)
    }

    /// Packets of flows whose handle no map has named.
    pub fn unknown_handle(&self) -> u64 {
        self.flows.iter().filter(|f| f.target.is_none()).map(|f| f.stats.received).sum::<u64>() + self.flows_overflow
    }
}

/// One received track (or pending handle), as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFlowSummary {
    pub handle: u16,
    /// "" for a handle no map named.
    pub publisher: String,
    pub track_sid: String,
    /// `foreign`: no lkswarm user timestamp (another client's frames), so no latency.
    pub counts: FlowCounts,
}

/// A peer's data-track figures, detached from the peer.
#[derive(Debug, Clone, Default)]
pub struct TrackSummary {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub send_blocked: u64,
    pub send_skipped: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub unknown_handle: u64,
    pub malformed: u64,
    pub malformed_detail: String,
    pub handle_maps: u64,
    pub received: Vec<TrackFlowSummary>,
}

pub fn summarize(sender: &TrackSender, receive: &TrackReceive) -> TrackSummary {
    let (frames_received, bytes_received) = receive.totals();
    let received = receive
        .flows()
        .iter()
        .map(|flow| {
            let (publisher, track_sid) = flow
                .target
                .as_ref()
                .map_or((String::new(), String::new()), |t| (t.publisher_identity.clone(), t.track_sid.clone()));
            TrackFlowSummary { handle: flow.handle, publisher, track_sid, counts: (&flow.stats).into() }
        })
        .collect();
    TrackSummary {
        frames_sent: sender.counts.frames_sent,
        bytes_sent: sender.counts.bytes_sent,
        send_blocked: sender.counts.blocked,
        send_skipped: sender.counts.skipped,
        frames_received,
        bytes_received,
        unknown_handle: receive.unknown_handle(),
        malformed: receive.malformed,
        malformed_detail: receive.malformed_detail.clone(),
        handle_maps: receive.maps,
        received,
    }
}

#[cfg(test)]
mod tests {
    use super::super::track::{encode_probe, ProbeFields};
    use super::*;

    fn packet(handle: u16, sequence: u16, sent_at_us: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let fields =
            ProbeFields { handle, sequence, frame_number: sequence, timestamp_90khz: 0, user_timestamp_us: sent_at_us };
        encode_probe(&mut out, &fields, 10);
        out
    }

    fn target(identity: &str, sid: &str) -> HandleTarget {
        HandleTarget { publisher_identity: identity.into(), track_sid: sid.into() }
    }

    #[test]
    fn wrap_gaps_duplicates_and_reordering() {
        let mut receive = TrackReceive::default();
        receive.set_handles(vec![(1, target("alice", "DTR_a"))]);
        for sequence in [65_533u16, 65_534, 65_535, 0, 2, 1, 1, 4] {
            receive.on_packet(&packet(1, sequence, 1_000), 3_000);
        }
        let flow = &receive.flows()[0];
        assert_eq!(flow.target.as_ref().unwrap().publisher_identity, "alice");
        let stats = &flow.stats;
        assert_eq!((stats.received, stats.expected(), stats.missing()), (8, 8, 1)); // 3 missing
        assert_eq!((stats.duplicates, stats.out_of_order, stats.payload_bytes), (1, 1, 80));
        assert_eq!(receive.latency.as_ref().unwrap().count(), 8);
        assert_eq!(receive.unknown_handle(), 0);
    }

    #[test]
    fn reordering_before_the_first_packet_and_long_runs() {
        let mut receive = TrackReceive::default();
        receive.set_handles(vec![(5, target("bob", "DTR_b"))]);
        receive.on_packet(&packet(5, 3, 0), 0);
        receive.on_packet(&packet(5, 2, 0), 0);
        for sequence in 4..=200_000u32 {
            receive.on_packet(&packet(5, sequence as u16, 0), 0);
        }
        let stats = &receive.flows()[0].stats;
        assert_eq!((stats.expected(), stats.missing(), stats.out_of_order), (199_999, 0, 1));
    }

    #[test]
    fn pending_handles_are_adopted_or_counted_unknown() {
        let mut receive = TrackReceive::default();
        receive.on_packet(&packet(1, 0, 0), 0); // before its map
        receive.on_packet(&packet(9, 0, 0), 0); // never mapped
        receive.set_handles(vec![(1, target("alice", "DTR_a"))]);
        receive.on_packet(&packet(1, 1, 0), 0);
        assert_eq!(receive.flows()[0].stats.received, 2);
        assert_eq!(receive.unknown_handle(), 1);
        // Handle 1 now names another track: a new flow, the old one kept.
        receive.set_handles(vec![(1, target("carol", "DTR_c"))]);
        receive.on_packet(&packet(1, 50, 0), 0);
        let names: Vec<_> = receive.flows().iter().filter_map(|f| f.target.as_ref()).map(|t| &t.track_sid).collect();
        assert_eq!(names, ["DTR_a", "DTR_c"]);
        assert_eq!(receive.totals(), (4, 40));
        assert_eq!(receive.maps, 2);
    }

    #[test]
    fn malformed_and_foreign_packets() {
        let mut receive = TrackReceive::default();
        receive.on_packet(&[0x18, 0], 0);
        receive.on_packet(&[0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(receive.malformed, 2);
        assert!(receive.malformed_detail.starts_with("_data_track: "), "{}", receive.malformed_detail);
        let plain = [0x18, 0, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2];
        receive.set_handles(vec![(4, target("sdk", "DTR_s"))]);
        receive.on_packet(&plain, 0);
        let flow = &receive.flows()[0];
        assert!(flow.stats.foreign && flow.stats.received == 1 && receive.latency.is_none());
    }
}
