//! Receive accounting for data-channel messages, per (sender identity, channel label).
//!
//! Theory of operation
//! -------------------
//! Our probe payloads carry a per-(sender, channel) counter from 0 (`packet::read_probe`). Like
//! RTP receive statistics, a flow keeps the first and highest counter seen, so
//! `expected = highest - first + 1` and `missing = expected - unique received` (never below 0).
//! Duplicates are found with a sliding bitmap of the `WINDOW` counters below the highest: a
//! counter inside it that was already seen is a duplicate; one older than the window is assumed
//! new (counted, flagged neither way), which bounds memory per flow. A counter below the highest
//! that was not yet seen is counted `out_of_order` (reordering on `_lossy`, which is unordered).
//!
//! Payloads without the magic (official SDK messages, other tools) are counted as received with
//! their bytes and flag the flow `foreign`; they have no counter, so no loss or order figures.
//! The flow table is capped (`MAX_FLOWS`); messages of flows beyond it are counted in
//! `flows_overflow` and in the running totals only.

use std::collections::HashMap;

/// Counters below the highest that dedupe remembers.
const WINDOW: u64 = 1024;
/// (sender, channel) flows kept per peer.
pub const MAX_FLOWS: usize = 4096;
/// A probe counter at or above this is no sender's: 2^40 messages is 12 days at a million a second.
pub const MAX_COUNTER: u64 = 1 << 40;

/// One flow's figures as reported: what `FlowStats` counted, with `expected` and `missing` worked out.
/// Shared by data messages (`FlowSummary`) and data tracks (`TrackFlowSummary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowCounts {
    pub received: u64,
    pub payload_bytes: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub missing: u64,
    pub expected: u64,
    /// Without our stamp (another client's): counted, with no loss, order or latency figures.
    pub foreign: bool,
}

impl From<&FlowStats> for FlowCounts {
    fn from(stats: &FlowStats) -> Self {
        FlowCounts {
            received: stats.received,
            payload_bytes: stats.payload_bytes,
            duplicates: stats.duplicates,
            out_of_order: stats.out_of_order,
            missing: stats.missing(),
            expected: stats.expected(),
            foreign: stats.foreign,
        }
    }
}

/// One (sender identity, channel label) flow.
#[derive(Debug, Clone, Default)]
pub struct FlowStats {
    pub received: u64,
    pub payload_bytes: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Probe messages counted once each (received minus duplicates minus foreign).
    pub unique: u64,
    pub foreign: bool,
    first: Option<u64>,
    highest: u64,
    /// Bit i: counter `highest - i` seen (bit 0 = highest).
    seen: Box<[u64; (WINDOW / 64) as usize]>,
}

impl FlowStats {
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |first| self.highest - first + 1)
    }

    pub fn missing(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }

    fn bit(&mut self, back: u64) -> (usize, u64) {
        ((back / 64) as usize, 1u64 << (back % 64))
    }

    /// Moves the window so `counter` becomes the highest.
    fn advance(&mut self, counter: u64) {
        let shift = counter - self.highest;
        self.highest = counter;
        if shift >= WINDOW {
            self.seen.fill(0);
            return;
        }
        let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
        let seen = &mut self.seen;
        for i in (0..seen.len()).rev() {
            let mut word = if i >= words { seen[i - words] << bits } else { 0 };
            if bits > 0 && i > words {
                word |= seen[i - words - 1] >> (64 - bits);
            }
            seen[i] = word;
        }
    }

    /// Accounts one probe message carrying `counter`; false, accounting nothing, for a counter no sender of
    /// ours reaches (`MAX_COUNTER` and above: a forged or corrupt probe). Such a counter beside a real one
    /// made `expected` wrap (0 and u64::MAX: 0 expected) or add up to 2^64 missing messages.
    #[must_use]
    pub fn record_probe(&mut self, counter: u64, payload_bytes: usize) -> bool {
        if counter >= MAX_COUNTER {
            return false;
        }
        self.received += 1;
        self.payload_bytes += payload_bytes as u64;
        let Some(first) = self.first else {
            self.first = Some(counter);
            self.highest = counter;
            self.seen[0] = 1;
            self.unique += 1;
            return true;
        };
        if counter < first {
            // Earlier than the first we saw (reordered start): widen the expected range.
            self.first = Some(counter);
        }
        if counter > self.highest {
            self.advance(counter);
            self.seen[0] |= 1;
            self.unique += 1;
            return true;
        }
        let back = self.highest - counter;
        if back >= WINDOW {
            self.unique += 1;
            self.out_of_order += 1;
            return true;
        }
        let (word, mask) = self.bit(back);
        if self.seen[word] & mask != 0 {
            self.duplicates += 1;
        } else {
            self.seen[word] |= mask;
            self.unique += 1;
            self.out_of_order += 1;
        }
        true
    }

    pub fn record_foreign(&mut self, payload_bytes: usize) {
        self.received += 1;
        self.payload_bytes += payload_bytes as u64;
        self.foreign = true;
    }
}

/// Every flow a peer receives: per sender identity, its channels (a few labels, searched in order).
#[derive(Debug, Default)]
pub struct ReceiveStats {
    by_sender: HashMap<String, Vec<(String, FlowStats)>>,
    flow_count: usize,
    pub flows_overflow: u64,
    /// Running sums over every flow, so hub totals (read every second) need no walk of the table.
    messages: u64,
    payload_bytes: u64,
}

impl ReceiveStats {
    /// The flow of (sender, channel) for a message of `payload_bytes`, created on first use;
    /// None past `MAX_FLOWS`. Lookups borrow the keys, so the per-message path allocates only for
    /// a new flow. The message counts in `totals` either way.
    pub fn flow(&mut self, sender: &str, channel: &str, payload_bytes: usize) -> Option<&mut FlowStats> {
        self.messages += 1;
        self.payload_bytes += payload_bytes as u64;
        let known = self.by_sender.get(sender).and_then(|c| c.iter().position(|(label, _)| label == channel));
        if known.is_none() && self.flow_count >= MAX_FLOWS {
            self.flows_overflow += 1;
            return None;
        }
        if !self.by_sender.contains_key(sender) {
            self.by_sender.insert(sender.to_string(), Vec::new());
        }
        let channels = self.by_sender.get_mut(sender).expect("inserted above");
        let index = match known {
            Some(index) => index,
            None => {
                self.flow_count += 1;
                channels.push((channel.to_string(), FlowStats::default()));
                channels.len() - 1
            }
        };
        Some(&mut channels[index].1)
    }

    /// (sender, channel label, stats) of every flow.
    pub fn flows(&self) -> impl Iterator<Item = (&str, &str, &FlowStats)> {
        self.by_sender
            .iter()
            .flat_map(|(sender, channels)| channels.iter().map(move |(label, f)| (sender.as_str(), label.as_str(), f)))
    }

    /// (messages, payload bytes) over all flows.
    pub fn totals(&self) -> (u64, u64) {
        (self.messages, self.payload_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_of(counters: &[u64]) -> FlowStats {
        let mut flow = FlowStats::default();
        for &c in counters {
            assert!(flow.record_probe(c, 10));
        }
        flow
    }

    #[test]
    fn a_counter_no_sender_reaches_is_refused_and_accounts_nothing() {
        // 0 and u64::MAX side by side made `expected` wrap to 0; 2^63 beside 0 made 2^63 messages missing.
        let mut flow = flow_of(&[0, 1, 2]);
        assert!(!flow.record_probe(u64::MAX, 10));
        assert!(!flow.record_probe(1 << 63, 10));
        assert!(!flow.record_probe(MAX_COUNTER, 10));
        assert_eq!((flow.received, flow.expected(), flow.missing()), (3, 3, 0));
        assert!(flow.record_probe(MAX_COUNTER - 1, 10), "the last counter a sender can reach");
    }

    #[test]
    fn in_order_stream_has_nothing_missing() {
        let flow = flow_of(&(5..105).collect::<Vec<_>>());
        assert_eq!(
            (flow.received, flow.expected(), flow.missing(), flow.duplicates, flow.out_of_order),
            (100, 100, 0, 0, 0)
        );
        assert_eq!(flow.payload_bytes, 1000);
    }

    #[test]
    fn gaps_duplicates_and_reordering() {
        let flow = flow_of(&[0, 1, 3, 2, 2, 6, 6, 4]);
        assert_eq!(flow.expected(), 7);
        assert_eq!(flow.unique, 6);
        assert_eq!(flow.missing(), 1); // 5
        assert_eq!(flow.duplicates, 2);
        assert_eq!(flow.out_of_order, 2); // 2 and 4
    }

    #[test]
    fn window_shifts_keep_old_bits() {
        let mut counters: Vec<u64> = (0..300).collect();
        counters.extend([299, 200, 100, 1000, 999, 999, 100]);
        let flow = flow_of(&counters);
        assert_eq!(flow.duplicates, 5); // 299, 200, 100, the second 999, 100 again (still in the window)
        assert_eq!(flow.expected(), 1001);
        assert_eq!(flow.unique, 302);
    }

    #[test]
    fn foreign_flows_and_the_flow_cap() {
        let mut stats = ReceiveStats::default();
        stats.flow("sdk-user", "_reliable", 42).unwrap().record_foreign(42);
        let flow = stats.flow("sdk-user", "_reliable", 0).unwrap();
        assert!(flow.foreign && flow.received == 1 && flow.expected() == 0 && flow.missing() == 0);
        for i in 0..MAX_FLOWS {
            let _ = stats.flow(&format!("s{i}"), "_lossy", 1);
        }
        assert_eq!(stats.flows_overflow, 1);
        assert_eq!(stats.totals(), (2 + MAX_FLOWS as u64, 42 + MAX_FLOWS as u64));
    }
}
