//! Receive accounting for one RTP stream (one SSRC): RFC 3550 loss and jitter.
//!
//! Theory of operation
//! -------------------
//! Every received packet is fed as (extended sequence number, RTP timestamp,
//! arrival time in seconds, payload size). Loss follows RFC 3550 §6.4.1:
//! expected = highest extended sequence - base + 1, lost = expected - received,
//! which tolerates reordering (a late packet raises `received` without moving
//! the highest sequence) and never goes negative because duplicates are not
//! counted twice by the caller (str0m only reports new packets). Jitter is the
//! A.8 estimator, J += (|D| - J) / 16, with D measured in RTP clock units.
//!
//! The extended sequence number is computed here from 16-bit numbers
//! (RFC 3550 A.1 style cycle counting), so the stats do not depend on a
//! particular WebRTC library's unwrapping.

/// Sequence-number distance beyond which a jump is treated as a restart, not loss.
const MAX_DROPOUT: u64 = 3000;

#[derive(Debug, Clone, Default)]
pub struct RxStats {
    pub packets: u64,
    pub bytes: u64,
    base_seq: u64,
    max_seq: u64,
    cycles: u64,
    last_seq16: u16,
    started: bool,
    /// RFC 3550 jitter estimate in RTP clock units, scaled by 16 (A.8's integer form).
    jitter_x16: f64,
    last_transit: Option<f64>,
    pub first_arrival_s: f64,
    pub last_arrival_s: f64,
    clock_rate: u32,
}

impl RxStats {
    pub fn new(clock_rate: u32) -> Self {
        RxStats { clock_rate: clock_rate.max(1), ..RxStats::default() }
    }

    /// Accounts one new packet.
    /// Whether `seq16` comes right after the highest sequence number received: no gap opens and
    /// nothing arrives out of order.
    pub fn follows_in_order(&self, seq16: u16) -> bool {
        self.started && seq16 == self.last_seq16.wrapping_add(1)
    }

    pub fn record(&mut self, seq16: u16, rtp_timestamp: u32, arrival_s: f64, payload_len: usize) {
        self.packets += 1;
        self.bytes += payload_len as u64;
        self.last_arrival_s = arrival_s;
        if !self.started {
            self.started = true;
            self.first_arrival_s = arrival_s;
            self.base_seq = u64::from(seq16);
            self.max_seq = u64::from(seq16);
            self.last_seq16 = seq16;
        } else {
            self.update_sequence(seq16);
        }
        // Transit = arrival (in clock units) - RTP timestamp; only differences matter,
        // so the arbitrary RTP timestamp origin cancels out.
        let arrival_units = arrival_s * f64::from(self.clock_rate);
        let transit = arrival_units - f64::from(rtp_timestamp);
        if let Some(previous) = self.last_transit {
            let mut d = (transit - previous).abs();
            // A timestamp wrap shows as a jump of ~2^32 units; fold it back.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.jitter_x16 += d - self.jitter_x16 / 16.0;
        }
        self.last_transit = Some(transit);
    }

    fn update_sequence(&mut self, seq16: u16) {
        let forward = seq16.wrapping_sub(self.last_seq16);
        if forward != 0 && u64::from(forward) < MAX_DROPOUT {
            if seq16 < self.last_seq16 {
                self.cycles += 1 << 16;
            }
            self.last_seq16 = seq16;
            self.max_seq = self.cycles + u64::from(seq16);
        } else if u64::from(self.last_seq16.wrapping_sub(seq16)) < MAX_DROPOUT {
            // Reordered (older than the highest seen): counted as received, max unchanged.
        } else {
            // A large jump: the sender restarted its sequence. Re-base so the gap is not loss.
            let received_before = self.packets - 1;
            self.last_seq16 = seq16;
            self.cycles = 0;
            self.max_seq = u64::from(seq16);
            self.base_seq = u64::from(seq16).saturating_sub(received_before);
        }
    }

    pub fn expected(&self) -> u64 {
        if self.started {
            self.max_seq.saturating_sub(self.base_seq) + 1
        } else {
            0
        }
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter_x16 / 16.0 / f64::from(self.clock_rate) * 1000.0
    }

    pub fn bitrate_bps(&self) -> f64 {
        let span_s = self.last_arrival_s - self.first_arrival_s;
        if span_s > 0.0 {
            self.bytes as f64 * 8.0 / span_s
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stats: &mut RxStats, seqs: &[u16]) {
        for (i, &seq) in seqs.iter().enumerate() {
            stats.record(seq, 960 * i as u32, 0.02 * i as f64, 100);
        }
    }

    #[test]
    fn in_order_stream_has_no_loss_and_no_jitter() {
        let mut stats = RxStats::new(48_000);
        feed(&mut stats, &[10, 11, 12, 13, 14]);
        assert_eq!(stats.expected(), 5);
        assert_eq!(stats.lost(), 0);
        assert!(stats.jitter_ms() < 1e-9);
        assert_eq!(stats.bytes, 500);
    }

    #[test]
    fn gaps_count_as_loss_and_late_packets_recover_it() {
        let mut stats = RxStats::new(48_000);
        feed(&mut stats, &[1, 2, 5, 6]);
        assert_eq!(stats.lost(), 2);
        stats.record(3, 960 * 2, 0.1, 100); // reordered arrival
        assert_eq!(stats.lost(), 1);
        assert_eq!(stats.expected(), 6);
    }

    #[test]
    fn wraparound_extends_the_sequence() {
        let mut stats = RxStats::new(90_000);
        feed(&mut stats, &[65_534, 65_535, 0, 1]);
        assert_eq!(stats.expected(), 4);
        assert_eq!(stats.lost(), 0);
    }

    #[test]
    fn restart_is_not_loss() {
        let mut stats = RxStats::new(90_000);
        feed(&mut stats, &[100, 101, 40_000, 40_001]);
        assert_eq!(stats.lost(), 0);
        assert_eq!(stats.packets, 4);
    }

    #[test]
    fn jitter_follows_rfc3550_estimator() {
        let mut stats = RxStats::new(1000);
        // Timestamps advance 20 units per packet; arrivals alternate early/late by 4 ms.
        let arrivals = [0.0, 0.024, 0.040, 0.064, 0.080];
        for (i, arrival) in arrivals.iter().enumerate() {
            stats.record(i as u16, 20 * i as u32, *arrival, 10);
        }
        // |D| is 4 units each step: J = J + (4 - J)/16 applied 4 times.
        let mut j = 0.0;
        for _ in 0..4 {
            j += (4.0 - j) / 16.0;
        }
        assert!((stats.jitter_ms() - j).abs() < 1e-6, "{} vs {}", stats.jitter_ms(), j);
    }
}
