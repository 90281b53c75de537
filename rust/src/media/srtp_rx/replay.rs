//! One SSRC's receive state: the highest authenticated packet index (ROC and s_l together), its
//! estimate for a new SEQ (RFC 3711 §3.3.1 and Appendix A), and the replay list (§3.3.2) as a
//! 128-packet sliding window, libsrtp's default, so both accept and refuse the same packets.

use super::SrtpRxError;

/// Packets the replay window covers: the highest index and the 127 before it.
pub(super) const WINDOW_PACKETS: u64 = 128;
/// The SRTP packet index is 48 bits: ROC (32) and SEQ (16) (RFC 3711 §3.3.1).
pub(super) const MAX_INDEX: u64 = (1 << 48) - 1;
const HALF_SEQ_SPACE: u64 = 1 << 15;

/// An index estimated for a packet that passed the replay check, not yet authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub index: u64,
    /// `index` minus the highest authenticated index.
    delta: i64,
}

#[derive(Debug, Clone)]
pub(super) struct StreamState {
    pub ssrc: u32,
    /// The index the stream was tracked from, its first packet. str0m's receive register starts at
    /// a stream's first packet and refuses anything older; so does this path, so that a packet
    /// the register would refuse is never counted here as received. livekit-server can send the
    /// head of a downtrack out of order: a packet just before the first may arrive after it.
    first_index: u64,
    highest_index: u64,
    /// Bit k set: index `highest_index - k` was received. Bit 0 is `highest_index` itself.
    seen: u128,
}

impl StreamState {
    /// A stream whose packet `received_index` was already received and authenticated.
    pub fn new(ssrc: u32, received_index: u64) -> Self {
        let index = received_index & MAX_INDEX;
        StreamState { ssrc, first_index: index, highest_index: index, seen: 1 }
    }

    /// Records `index` as received elsewhere (str0m delivered it): the window moves up to it when
    /// it is newer, or marks it seen; one older than the window changes nothing. The packets this
    /// path received stay seen, so a duplicate of one is still refused.
    pub fn mark_received(&mut self, index: u64) {
        let index = index & MAX_INDEX;
        let delta = index as i64 - self.highest_index as i64;
        if delta > -(WINDOW_PACKETS as i64) {
            self.accept(Candidate { index, delta });
        }
    }

    /// The index a packet with `sequence` has, and whether the replay list lets it through.
    /// Checked before authentication, as RFC 3711 §3.3 orders it and libsrtp does: a replay
    /// costs no AES.
    pub fn check(&self, sequence: u16) -> Result<Candidate, SrtpRxError> {
        let index = estimate_index(self.highest_index, sequence);
        if index > MAX_INDEX {
            // 2^48 packets under one key: RFC 3711 §9.2 requires a new one.
            return Err(SrtpRxError::BadKey);
        }
        if index < self.first_index {
            return Err(SrtpRxError::BeforeFirst);
        }
        // Both below 2^48: the difference fits an i64 exactly.
        let delta = index as i64 - self.highest_index as i64;
        if delta > 0 {
            return Ok(Candidate { index, delta });
        }
        let age = delta.unsigned_abs();
        if age >= WINDOW_PACKETS {
            return Err(SrtpRxError::TooOld);
        }
        if self.seen & (1u128 << age) != 0 {
            return Err(SrtpRxError::Replayed);
        }
        Ok(Candidate { index, delta })
    }

    /// Records an authenticated packet: only these move s_l, the ROC and the window (§3.3.1).
    pub fn accept(&mut self, candidate: Candidate) {
        if candidate.delta > 0 {
            let advance = candidate.delta.unsigned_abs();
            self.seen = if advance >= WINDOW_PACKETS { 0 } else { self.seen << advance };
            self.seen |= 1;
            self.highest_index = candidate.index;
        } else {
            self.seen |= 1u128 << candidate.delta.unsigned_abs();
        }
    }
}

/// RFC 3711 Appendix A: the ROC `v` that puts SEQ closest to s_l, so index = v * 2^16 + SEQ.
/// With ROC 0 the "ROC - 1" branch would make the index negative, which no sender can have used;
/// then ROC 0 stands (a jump forward of more than 2^15), exactly as libsrtp's estimate does.
/// The result exceeds `MAX_INDEX` only once the ROC has passed 2^32 - 1.
pub(super) fn estimate_index(highest_index: u64, sequence: u16) -> u64 {
    let roc = highest_index >> 16;
    let s_l = highest_index & 0xffff;
    let seq = u64::from(sequence);
    let v = if s_l < HALF_SEQ_SPACE {
        if seq > s_l + HALF_SEQ_SPACE {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if s_l - HALF_SEQ_SPACE > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | seq
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROC_1: u64 = 1 << 16;

    #[test]
    fn estimate_across_the_wrap() {
        assert_eq!(estimate_index(65_535, 0), ROC_1, "65535 then 0: ROC + 1");
        assert_eq!(estimate_index(ROC_1, 65_535), 65_535, "0 then a late 65535: ROC - 1");
        assert_eq!(estimate_index(ROC_1 + 5, 65_530), 65_530);
        assert_eq!(estimate_index(ROC_1 + 5, 6), ROC_1 + 6);
        assert_eq!(estimate_index(40_000, 7_231), ROC_1 + 7_231, "s_l - 2^15 > SEQ");
        assert_eq!(estimate_index(40_000, 7_232), 7_232, "s_l - 2^15 == SEQ stays");
        assert_eq!(estimate_index(1_000, 33_768), 33_768, "SEQ - s_l == 2^15 stays");
        assert_eq!(estimate_index(ROC_1 + 1_000, 33_769), 33_769, "SEQ - s_l > 2^15: ROC - 1");
        assert_eq!(estimate_index(1_000, 33_769), 33_769, "ROC 0 cannot go back: libsrtp's reading");
        assert_eq!(estimate_index(MAX_INDEX, 0), MAX_INDEX + 1, "past 2^48: the caller refuses");
    }

    fn accept(stream: &mut StreamState, sequence: u16) -> u64 {
        let candidate = stream.check(sequence).unwrap();
        stream.accept(candidate);
        candidate.index
    }

    #[test]
    fn window_covers_the_highest_and_127_before() {
        let mut stream = StreamState::new(1, 1_000);
        assert_eq!(stream.check(1_000), Err(SrtpRxError::Replayed), "the tracked packet was seen");
        assert_eq!(accept(&mut stream, 1_200), 1_200);
        assert_eq!(stream.check(1_072), Err(SrtpRxError::TooOld), "128 back: too old");
        assert_eq!(accept(&mut stream, 1_073), 1_073, "127 back, unseen");
        assert_eq!(stream.check(1_073), Err(SrtpRxError::Replayed), "now seen");
        assert_eq!(accept(&mut stream, 1_199), 1_199);
        assert_eq!(accept(&mut stream, 1_201), 1_201);
        assert_eq!(stream.check(1_199), Err(SrtpRxError::Replayed), "the window moved with the index");
        assert_eq!(accept(&mut stream, 1_198), 1_198);
    }

    #[test]
    fn packets_older_than_the_first_are_refused_as_str0m_refuses_them() {
        let mut stream = StreamState::new(1, 1_000);
        assert_eq!(stream.check(999), Err(SrtpRxError::BeforeFirst), "late, from before the first");
        assert_eq!(accept(&mut stream, 1_002), 1_002);
        assert_eq!(accept(&mut stream, 1_001), 1_001, "late, but after the first");
        assert_eq!(stream.check(990), Err(SrtpRxError::BeforeFirst));
        let mut wrapped = StreamState::new(1, ROC_1 + 2);
        assert_eq!(wrapped.check(65_535), Err(SrtpRxError::BeforeFirst), "from before the wrap");
        assert_eq!(accept(&mut wrapped, 3), ROC_1 + 3);
    }

    #[test]
    fn marking_keeps_what_was_seen_and_moves_up() {
        let mut stream = StreamState::new(1, 1_000);
        assert_eq!(accept(&mut stream, 1_005), 1_005);
        stream.mark_received(1_003); // str0m delivered a late one (say, during an ICE restart)
        assert_eq!(stream.check(1_003), Err(SrtpRxError::Replayed));
        assert_eq!(stream.check(1_005), Err(SrtpRxError::Replayed), "still seen: not started over");
        assert_eq!(accept(&mut stream, 1_004), 1_004);
        stream.mark_received(ROC_1 + 10); // str0m carried the stream across a wrap
        assert_eq!(stream.check(10), Err(SrtpRxError::Replayed));
        assert_eq!(accept(&mut stream, 11), ROC_1 + 11, "the ROC follows the mark");
        stream.mark_received(1_006); // older than the window: nothing changes
        assert_eq!(accept(&mut stream, 12), ROC_1 + 12);
    }

    #[test]
    fn a_check_alone_moves_nothing() {
        let mut stream = StreamState::new(1, 65_530);
        assert_eq!(accept(&mut stream, 65_534), 65_534);
        let candidate = stream.check(1).unwrap();
        assert_eq!(candidate.index, ROC_1 + 1);
        assert_eq!(stream.check(65_533).map(|c| c.index), Ok(65_533), "s_l still 65534");
    }

    #[test]
    fn wrap_then_late_packets_from_before_it() {
        let mut stream = StreamState::new(1, 65_533);
        assert_eq!(accept(&mut stream, 0), ROC_1);
        assert_eq!(accept(&mut stream, 65_535), 65_535, "late, from ROC 0");
        assert_eq!(accept(&mut stream, 1), ROC_1 + 1);
        assert_eq!(accept(&mut stream, 65_534), 65_534);
        assert_eq!(stream.check(65_535), Err(SrtpRxError::Replayed));
        assert_eq!(stream.check(0), Err(SrtpRxError::Replayed));
    }

    #[test]
    fn a_jump_past_the_window_clears_it() {
        let mut stream = StreamState::new(1, 10);
        assert_eq!(accept(&mut stream, 10 + 500), 510);
        assert_eq!(accept(&mut stream, 509), 509);
        assert_eq!(stream.check(10), Err(SrtpRxError::TooOld), "too old");
    }

    #[test]
    fn the_index_space_ends_at_2_to_the_48() {
        let mut stream = StreamState::new(1, MAX_INDEX - 10);
        stream.mark_received(MAX_INDEX);
        assert_eq!(stream.check(0), Err(SrtpRxError::BadKey));
        assert_eq!(stream.check(65_534).map(|c| c.index), Ok(MAX_INDEX - 1));
    }
}
