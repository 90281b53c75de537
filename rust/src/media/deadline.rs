//! One peer's place in the hub's timer heap.
//!
//! The heap holds at most a few entries per peer. A peer's `Deadline` remembers
//! when the peer wants `handle_timeout` (`wake`) and its earliest entry in the
//! heap (`armed`). A deadline that moves earlier is pushed; one that moves later
//! is not: its earlier entry fires, finds the peer not yet due and re-arms at
//! `wake`. Entries other than `armed` are stale and skipped when popped.

use std::time::{Duration, Instant};

/// Far enough ahead to mean "no entry in the heap" for `Deadline::armed`.
const NEVER: Duration = Duration::from_secs(86_400);

/// One peer's side of the timer heap.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the peer next wants `handle_timeout`.
    wake: Instant,
    /// The earliest of this peer's heap entries; the peer's other entries are stale.
    armed: Instant,
}

/// What a popped heap entry means for its peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Fired {
    /// Superseded by an earlier entry: skip it.
    Stale,
    /// The deadline moved later: push this instead; nothing is due.
    Rearm(Instant),
    /// Run `handle_timeout` now.
    Due,
}

impl Deadline {
    pub fn new(now: Instant) -> Self {
        Deadline { wake: now + NEVER, armed: now + NEVER }
    }

    /// Records the peer's next deadline; true if it must be pushed (earlier than what is armed).
    pub fn set(&mut self, wake: Instant) -> bool {
        self.wake = wake;
        if wake < self.armed {
            self.armed = wake;
            true
        } else {
            false
        }
    }

    /// When the peer last asked to be woken (a `Due` entry is served `now - wake()` late).
    pub fn wake(&self) -> Instant {
        self.wake
    }

    /// The peer's heap entry for `at` was popped at `now` (`at <= now`).
    pub fn fire(&mut self, at: Instant, now: Instant) -> Fired {
        if self.armed != at {
            Fired::Stale
        } else if self.wake > now {
            self.armed = self.wake;
            Fired::Rearm(self.wake)
        } else {
            self.armed = now + NEVER; // consumed: `service` arms whatever comes next
            Fired::Due
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_deadline_that_moves_later_is_not_pushed_and_re_arms_when_its_entry_fires() {
        let t0 = Instant::now();
        let mut deadline = Deadline::new(t0);
        assert!(deadline.set(ms(t0, 100)), "the first deadline is pushed");
        for later in [150, 200, 250] {
            assert!(!deadline.set(ms(t0, later)), "a later deadline is not pushed");
        }
        assert_eq!(deadline.fire(ms(t0, 100), ms(t0, 100)), Fired::Rearm(ms(t0, 250)));
        assert_eq!(deadline.fire(ms(t0, 250), ms(t0, 250)), Fired::Due);
    }

    #[test]
    fn a_deadline_that_moves_earlier_is_pushed_and_the_old_entry_goes_stale() {
        let t0 = Instant::now();
        let mut deadline = Deadline::new(t0);
        assert!(deadline.set(ms(t0, 100)));
        assert!(deadline.set(ms(t0, 40)), "an earlier deadline is pushed");
        assert_eq!(deadline.fire(ms(t0, 40), ms(t0, 40)), Fired::Due);
        assert_eq!(deadline.fire(ms(t0, 100), ms(t0, 100)), Fired::Stale);
        assert!(deadline.set(ms(t0, 120)), "after firing, the next deadline is pushed again");
    }

    #[test]
    fn the_heap_stays_small_while_every_packet_moves_the_deadline_later() {
        // The receiver pattern: each packet pushes str0m's next timeout a little later.
        let t0 = Instant::now();
        let mut deadline = Deadline::new(t0);
        let mut heap: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
        for packet in 0..5_000u64 {
            let now = ms(t0, packet * 20);
            while let Some(&Reverse(at)) = heap.peek() {
                if at > now {
                    break;
                }
                heap.pop();
                match deadline.fire(at, now) {
                    Fired::Rearm(wake) => heap.push(Reverse(wake)),
                    Fired::Due => {
                        if deadline.set(now + Duration::from_millis(1_000)) {
                            heap.push(Reverse(now + Duration::from_millis(1_000)));
                        }
                    }
                    Fired::Stale => {}
                }
            }
            if deadline.set(now + Duration::from_millis(1_000)) {
                heap.push(Reverse(now + Duration::from_millis(1_000)));
            }
            assert!(heap.len() <= 2, "heap grew to {} entries", heap.len());
        }
    }
}
