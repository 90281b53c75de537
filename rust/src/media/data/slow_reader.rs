//! A slow data reader (`--data-slow-readers`): a receiver that stops draining its data channels
//! for `pause` every `every`, to show what one stalled reader does to everyone else's messages.
//!
//! Theory of operation
//! -------------------
//! A WebRTC application cannot push back on a data channel: what stalls is the SCTP receiver,
//! whose window fills and whose acknowledgements stop. We get the same effect on the wire by
//! holding the DTLS records (RFC 7983: first byte 20..=63) that arrive on the PeerConnection the
//! server sends data on, during a pause, and handing them to str0m, in order and unchanged, when
//! the pause ends. After the handshake DTLS carries only SCTP, so media (SRTP), RTCP and ICE
//! (STUN) keep flowing and the peer stays connected; the server sees a receiver that stopped
//! acknowledging: its SCTP retransmits and its queue for us grows, its 50 ms reliable write
//! deadline runs out, and messages to us are lost or late. The messages that do arrive count as
//! read at the release, so their latency includes the pause.
//!
//! ```text
//! reading --next_pause_at--> paused (hold DTLS, up to HELD_BYTES_CAP) --paused_until--> reading
//! ```
//!
//! Memory is bounded: past `HELD_BYTES_CAP` held bytes a datagram is dropped (counted), as a full
//! socket buffer would drop it; SCTP retransmits what matters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The most a paused reader holds; more is dropped.
pub const HELD_BYTES_CAP: usize = 4 * 1024 * 1024;

/// Whether a datagram is a DTLS record (RFC 7983 demultiplexing).
pub fn is_dtls(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| (20..=63).contains(b))
}

/// A slow reader's figures over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowReaderCounts {
    pub pauses: u64,
    /// DTLS datagrams held during pauses (and handed on later).
    pub held_datagrams: u64,
    /// Dropped because the held bytes were at the cap.
    pub dropped_datagrams: u64,
    pub max_held_bytes: u64,
    /// Total time spent paused, ms.
    pub paused_ms: u64,
}

/// A held datagram: its source and destination addresses, and its bytes.
pub type Held = (SocketAddr, SocketAddr, Vec<u8>);

#[derive(Debug)]
pub struct SlowReader {
    pause: Duration,
    every: Duration,
    next_pause_at: Instant,
    paused_until: Option<Instant>,
    held: VecDeque<Held>,
    held_bytes: usize,
    pub counts: SlowReaderCounts,
}

/// The shortest pause a slow reader takes (and so, its period being longer, the shortest period).
pub const MIN_PAUSE: Duration = Duration::from_millis(1);

impl SlowReader {
    /// Pauses of `pause` every `every` (a pause shorter than the period), the first at `first_at`.
    pub fn new(pause: Duration, every: Duration, first_at: Instant) -> Result<Self, String> {
        // At least a millisecond: `is_paused` steps over the periods a stall slept through one by one,
        // on the datagram path, so a nanosecond period would spin the media thread.
        if pause < MIN_PAUSE || pause >= every {
            return Err(format!(
                "a slow reader's pause ({pause:?}) must be at least {MIN_PAUSE:?} and shorter than its period \
                 ({every:?})"
            ));
        }
        Ok(SlowReader {
            pause,
            every,
            next_pause_at: first_at,
            paused_until: None,
            held: VecDeque::new(),
            held_bytes: 0,
            counts: SlowReaderCounts::default(),
        })
    }

    /// Starts a pause that is due by `now`; true while paused.
    pub fn is_paused(&mut self, now: Instant) -> bool {
        if self.paused_until.is_none() && now >= self.next_pause_at {
            let until = self.next_pause_at + self.pause;
            if now < until {
                self.counts.pauses += 1;
                self.counts.paused_ms += u64::try_from(self.pause.as_millis()).unwrap_or(u64::MAX);
                self.paused_until = Some(until);
            }
            // A pause the media thread slept through entirely is not taken late.
            while self.next_pause_at <= now {
                self.next_pause_at += self.every;
            }
        }
        self.paused_until.is_some_and(|until| now < until)
    }

    /// Holds a DTLS datagram that arrived during a pause (or drops it at the cap); false if it is
    /// to be handled now.
    pub fn hold(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, datagram: &[u8]) -> bool {
        if !is_dtls(datagram) || !self.is_paused(now) {
            return false;
        }
        if self.held_bytes + datagram.len() > HELD_BYTES_CAP {
            self.counts.dropped_datagrams += 1;
            return true;
        }
        self.held.push_back((source, destination, datagram.to_vec()));
        self.held_bytes += datagram.len();
        self.counts.held_datagrams += 1;
        self.counts.max_held_bytes = self.counts.max_held_bytes.max(self.held_bytes as u64);
        true
    }

    /// Ends a pause that is over by `now`: the held datagrams, oldest first, to feed now.
    pub fn release(&mut self, now: Instant) -> Vec<Held> {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            self.held_bytes = 0;
            return self.held.drain(..).collect();
        }
        Vec::new()
    }

    /// When this reader next changes state (a pause ends, or the next one starts).
    pub fn next_wake(&self) -> Instant {
        self.paused_until.unwrap_or(self.next_pause_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn holds_dtls_during_pauses_and_releases_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut reader = SlowReader::new(ms(100), ms(1000), t0 + ms(50)).unwrap();
        assert!(!reader.hold(t0, addr(), addr(), &[23, 1]), "before the first pause");
        assert!(reader.hold(t0 + ms(60), addr(), addr(), &[23, 2]));
        assert!(!reader.hold(t0 + ms(70), addr(), addr(), &[0x80, 3]), "SRTP flows");
        assert!(!reader.hold(t0 + ms(70), addr(), addr(), &[0, 1]), "STUN flows");
        assert!(reader.hold(t0 + ms(90), addr(), addr(), &[23, 4]));
        assert!(reader.release(t0 + ms(149)).is_empty());
        assert_eq!(reader.next_wake(), t0 + ms(150));
        let released: Vec<u8> = reader.release(t0 + ms(150)).iter().map(|(_, _, d)| d[1]).collect();
        assert_eq!(released, [2, 4]);
        assert_eq!(reader.next_wake(), t0 + ms(1050));
        assert!(!reader.hold(t0 + ms(500), addr(), addr(), &[23, 5]));
        assert_eq!(
            reader.counts,
            SlowReaderCounts { pauses: 1, held_datagrams: 2, dropped_datagrams: 0, max_held_bytes: 4, paused_ms: 100 }
        );
    }

    #[test]
    fn held_bytes_are_capped_and_slept_through_pauses_are_not_taken_late() {
        let t0 = Instant::now();
        let mut reader = SlowReader::new(Duration::from_secs(1), Duration::from_secs(2), t0).unwrap();
        let big = vec![23u8; 1 << 20];
        for _ in 0..6 {
            assert!(reader.hold(t0, addr(), addr(), &big));
        }
        assert_eq!((reader.counts.held_datagrams, reader.counts.dropped_datagrams), (4, 2));
        assert_eq!(reader.release(t0 + Duration::from_secs(1)).len(), 4);
        // Asleep from 1.5 s to 3.5 s: the pause at 2 s is over, the next is at 4 s.
        assert!(!reader.is_paused(t0 + Duration::from_millis(3500)));
        assert_eq!(reader.next_wake(), t0 + Duration::from_secs(4));
        assert_eq!(reader.counts.pauses, 1);
        assert!(SlowReader::new(Duration::from_secs(2), Duration::from_secs(2), t0).is_err());
        assert!(SlowReader::new(Duration::ZERO, Duration::from_secs(2), t0).is_err());
        // A nanosecond pause and period would spin `is_paused` over every period slept through.
        assert!(SlowReader::new(Duration::from_nanos(1), Duration::from_nanos(2), t0).is_err());
        assert!(SlowReader::new(MIN_PAUSE, MIN_PAUSE * 2, t0).is_ok());
    }
}
