//! The hub's worker thread: one loop that waits in epoll, reads every ready socket in batches,
//! feeds each datagram to its peer with the kernel's arrival time, serves due deadlines, and
//! services the touched peers (sends their datagrams, collects their events, re-arms deadlines).
//! See the hub's module doc for why wakeups are coalesced in steady state.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Events, Poll, Token};

use super::{HubEvent, IdHasher, Owner, Shared, State};
use crate::media::deadline::Fired;
use crate::media::peer::MediaPeer;
use crate::media::prefetch::RECEIVE_LEVELS;
use crate::media::recv::{recv_batch, RecvBatch};
use crate::media::send::send_batch;
use crate::media::types::{Datagram, Received};

/// The peers a wakeup touched, to service once each.
pub(super) type Touched = HashSet<u32, BuildHasherDefault<IdHasher>>;
/// Datagrams of one wakeup queued for a batched send (io_uring), with the socket to send them from.
pub(super) type Outbox = Vec<(RawFd, Datagram)>;

/// Upper bound on one epoll wait, so `close` is noticed promptly.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);
/// The least time between two wakeups in steady state (see the module doc). Four milliseconds cut
/// wakeups about 16-fold and the thread's CPU by about 14 % at 300 peers; any datagram waits at most
/// this long to be read, well inside one 20 ms audio frame.
const COALESCE: Duration = Duration::from_millis(4);
/// Shorter naps are skipped: a sleep is itself a context switch.
const MIN_NAP: Duration = Duration::from_micros(100);
/// Kernel timestamps older than this (a clock step) are not believed.
const MAX_QUEUED: Duration = Duration::from_secs(1);

/// The first instant of the hub's wakeup grid at or after `at`: `anchor` plus a whole number of
/// `COALESCE` steps.
fn on_grid(anchor: Instant, at: Instant) -> Instant {
    let step = COALESCE.as_nanos();
    let steps = at.saturating_duration_since(anchor).as_nanos().div_ceil(step);
    anchor + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX))
}

/// The wait the worker plans at `now`: how long it may block (until the earliest deadline, at
/// most `MAX_WAIT`) and how much of that it first naps.
///
/// While any peer is connecting (`steady` false) it naps nothing and blocks until the earliest
/// deadline itself. In steady state it plans its wakeups on a grid of instants `COALESCE` apart
/// (from `anchor`): it naps until the first instant after its last wakeup, and a deadline is served
/// on the first instant at or after it. Deadlines of all peers then share wakeups: served at their
/// own instants, the str0m timers of a hundred audio receivers (TWCC feedback, reports) and the
/// publishers' frames cut each nap short, and the worker woke 2-3 times per `COALESCE`. (A datagram
/// that arrives while the worker blocks after its nap, or a poke from Python, still wakes it at
/// once, off the grid; with traffic flowing, the wait after a nap seldom blocks at all.)
fn plan(
    steady: bool,
    now: Instant,
    last_wakeup: Instant,
    earliest: Option<Instant>,
    anchor: Instant,
) -> (Duration, Duration) {
    let until = |at: Instant| at.saturating_duration_since(now).min(MAX_WAIT);
    if !steady {
        return (earliest.map_or(MAX_WAIT, until), Duration::ZERO);
    }
    let timeout = earliest.map_or(MAX_WAIT, |at| until(on_grid(anchor, at)));
    // Past the next instant by less than `MIN_NAP`: that one is this wakeup's, not the next.
    let nap = until(on_grid(anchor, last_wakeup + MIN_NAP)).min(timeout);
    (timeout, if nap < MIN_NAP { Duration::ZERO } else { nap })
}

/// When a datagram arrived, on the monotonic clock: `now` less its time in the socket queue, which
/// the kernel's wall-clock stamp gives.
pub(super) fn arrival(now: Instant, wall_now: SystemTime, kernel_time: Option<Duration>) -> Instant {
    let Some(stamp) = kernel_time else { return now };
    let queued = wall_now.duration_since(UNIX_EPOCH + stamp).unwrap_or_default();
    if queued > MAX_QUEUED {
        return now;
    }
    now.checked_sub(queued).unwrap_or(now)
}

/// Drains one peer: sends its datagrams (one `sendmmsg` per socket, or into `outbox` for the
/// caller to send with the rest of its wakeup's), collects its events, re-arms its deadline.
pub(super) fn service(shared: &Shared, state: &mut State, id: u32, now: Instant, outbox: Option<&mut Outbox>) {
    let mut scratch = std::mem::take(&mut state.scratch);
    let Some(slot) = state.slots.get_mut(&id) else {
        state.scratch = scratch;
        return;
    };
    let wake = match catch_unwind(AssertUnwindSafe(|| slot.peer.poll(now, &mut scratch))) {
        Ok(wake) => wake,
        Err(_) => {
            slot.peer.fail(now, "internal_error", "panic in the media tier".into());
            now + Duration::from_secs(3600)
        }
    };
    // A datagram goes out of the socket it names as its source, else the peer's first.
    let socket_of = |source: SocketAddr| {
        slot.sockets.iter().position(|s| s.local == source).unwrap_or(0).min(slot.sockets.len().saturating_sub(1))
    };
    let (mut send_errors, mut syscalls) = (0, 0);
    match outbox {
        Some(outbox) => {
            for datagram in scratch.drain(..) {
                if let Some(socket) = slot.sockets.get(socket_of(datagram.source)) {
                    outbox.push((socket.socket.as_raw_fd(), datagram));
                }
            }
        }
        None if !scratch.is_empty() => {
            for (index, socket) in slot.sockets.iter().enumerate() {
                let mine = scratch.iter().filter(|d| socket_of(d.source) == index);
                let outcome = send_batch(socket.socket.as_raw_fd(), mine);
                send_errors += outcome.errors;
                syscalls += outcome.syscalls;
            }
            scratch.clear();
        }
        None => {}
    }
    let had_events = !state.events.is_empty();
    for (at, event) in slot.peer.take_events() {
        state.events.push(HubEvent { peer: id, at_s: shared.seconds(at), event });
    }
    if !had_events && !state.events.is_empty() {
        shared.events_ready.signal();
    }
    if slot.deadline.set(wake) {
        state.heap.push(Reverse((wake, id)));
    }
    let connecting = slot.peer.is_connecting();
    if connecting != slot.connecting {
        slot.connecting = connecting;
        if connecting {
            state.connecting += 1;
        } else {
            state.connecting -= 1;
        }
    }
    state.send_errors += send_errors;
    state.syscalls += syscalls;
    state.scratch = scratch;
}

/// One round of the worker, as planned before its wait.
pub(super) struct Round {
    /// How long the worker may still block.
    pub timeout: Duration,
    /// The system calls spent so far: the wait's own, and the nap's.
    pub syscalls: u64,
    /// The grid's anchor when the round was planned in steady state, so that `fire_deadlines` measures
    /// lateness from the instants this round planned for, even if a peer was added meanwhile.
    pub grid: Option<Instant>,
}

/// Plans the round (`plan`, from the earliest deadline and whether the hub is steady), naps as it
/// says and returns the rest of the plan; both loops start each round with it.
pub(super) fn nap_then_plan(shared: &Shared, last_wakeup: Instant) -> Round {
    let state = shared.lock();
    let earliest = state.heap.peek().map(|Reverse((at, _))| *at);
    let steady = state.connecting == 0 && !state.untimestamped;
    drop(state);
    let (mut timeout, nap) = plan(steady, Instant::now(), last_wakeup, earliest, shared.anchor);
    let mut syscalls = 1;
    if !nap.is_zero() {
        std::thread::sleep(nap);
        timeout = timeout.saturating_sub(nap);
        syscalls += 1;
    }
    Round { timeout, syscalls, grid: steady.then_some(shared.anchor) }
}

/// Hands one received datagram to its peer, at its kernel arrival time; says whether the peer
/// must be serviced for it (see `Received`).
pub(super) fn feed(
    peer: &mut MediaPeer,
    now: Instant,
    arrived_at: Instant,
    source: SocketAddr,
    local: SocketAddr,
    data: &[u8],
) -> Received {
    match catch_unwind(AssertUnwindSafe(|| peer.handle_datagram(arrived_at, source, local, data))) {
        Ok(received) => received,
        Err(_) => {
            peer.fail(now, "internal_error", "panic in the media tier".into());
            Received::Service
        }
    }
}

/// Sockets whose peers are prefetched together (`media::prefetch`), just before their datagrams
/// are fed: enough misses in flight to overlap, few enough lines (about a dozen a peer) to stay
/// in L1.
const PREFETCH_CHUNK: usize = 16;

/// Prefetches the peers owning the sockets `tokens` names (the first `PREFETCH_CHUNK`), a level of
/// pointers at a time, so that each level's misses overlap across the peers.
fn prefetch_receivers(state: &State, tokens: impl Iterator<Item = Token>) {
    let mut peers: [Option<&MediaPeer>; PREFETCH_CHUNK] = [None; PREFETCH_CHUNK];
    for (peer, token) in peers.iter_mut().zip(tokens) {
        let owner = state.owners.get(&token);
        *peer = owner.and_then(|owner| state.slots.get(&owner.peer)).map(|slot| &*slot.peer);
    }
    for level in 0..RECEIVE_LEVELS {
        for peer in peers.iter().flatten() {
            peer.prefetch_receive(level);
        }
    }
}

/// How late a deadline `wake` is served at `now`: from the deadline itself, or in a round planned on
/// the grid (`grid`, its anchor) from the grid instant it was due on. A datagram may wake the worker
/// between the deadline and that instant: the deadline is then served early, with no lag.
fn timer_lag(now: Instant, wake: Instant, grid: Option<Instant>) -> Duration {
    let wanted = grid.map_or(wake, |anchor| on_grid(anchor, wake));
    now.saturating_duration_since(wanted)
}

/// Wakes every peer whose deadline has passed, recording how late; adds them to `touched`.
///
/// In a round planned on the grid (`Round::grid`) a deadline was due on its grid instant (`plan`), so
/// lateness counts from there: the timer lag says how far the worker fell behind its plan, never the
/// planned wait for the grid.
pub(super) fn fire_deadlines(state: &mut State, now: Instant, grid: Option<Instant>, touched: &mut Touched) {
    let mut state_timeouts = 0;
    while let Some(Reverse((at, id))) = state.heap.peek().copied() {
        if at > now {
            break;
        }
        state.heap.pop();
        let Some(slot) = state.slots.get_mut(&id) else { continue };
        match slot.deadline.fire(at, now) {
            Fired::Stale => continue,
            Fired::Rearm(wake) => {
                state.heap.push(Reverse((wake, id)));
                continue;
            }
            Fired::Due => {}
        }
        let lag = timer_lag(now, slot.deadline.wake(), grid);
        let peer = &mut slot.peer;
        state_timeouts += 1;
        if catch_unwind(AssertUnwindSafe(|| peer.handle_timeout(now))).is_err() {
            peer.fail(now, "internal_error", "panic in the media tier".into());
        }
        touched.insert(id);
        state.timer_lag.record(lag);
    }
    state.timeouts += state_timeouts;
}

/// The epoll backend (`io.rs`): waits in epoll, then one `recvmmsg` per ready socket until it is
/// drained, and one `sendmmsg` per serviced socket.
pub(super) fn run_worker(shared: &Shared, mut poll: Poll) {
    let mut events = Events::with_capacity(4096); // a 4 ms batch of thousands of peers
    let mut batch = RecvBatch::default();
    let mut touched = Touched::default();
    let mut last_wakeup = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let Round { timeout, mut syscalls, grid } = nap_then_plan(shared, last_wakeup);
        if let Err(error) = poll.poll(&mut events, Some(timeout)) {
            if error.kind() != ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        let mut state = shared.lock();
        let now = Instant::now();
        let wall_now = SystemTime::now();
        last_wakeup = now;
        state.wakeups += 1;
        touched.clear();
        let mut ahead = events.iter();
        for (position, event) in events.iter().enumerate() {
            if position % PREFETCH_CHUNK == 0 {
                prefetch_receivers(&state, ahead.by_ref().take(PREFETCH_CHUNK).map(|event| event.token()));
            }
            let Some(&Owner { peer: id, index, .. }) = state.owners.get(&event.token()) else { continue };
            let Some(slot) = state.slots.get_mut(&id) else { continue };
            let Some(socket) = slot.sockets.get(index) else { continue };
            let (local, fd) = (socket.local, socket.socket.as_raw_fd());
            let mut received = Received::Quiet;
            loop {
                syscalls += 1;
                match recv_batch(fd, &mut batch) {
                    Ok(_) => {
                        for (index, (data, source, kernel_time)) in batch.datagrams().enumerate() {
                            let Some(source) = source else { continue }; // not IPv4/IPv6: never ours
                            if batch.truncated(index) {
                                slot.peer.handle_truncated_datagram();
                                received = Received::Service;
                                continue;
                            }
                            let arrived_at = arrival(now, wall_now, kernel_time);
                            if feed(&mut slot.peer, now, arrived_at, source, local, data) == Received::Service {
                                received = Received::Service;
                            }
                        }
                        if batch.drained() {
                            break; // a short batch emptied the queue: no WouldBlock call needed
                        }
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break, // e.g. ICMP port unreachable surfaced as ECONNREFUSED
                }
            }
            if received == Received::Service {
                touched.insert(id);
            }
        }
        state.syscalls += syscalls;
        fire_deadlines(&mut state, now, grid, &mut touched);
        for id in touched.iter().copied() {
            service(shared, &mut state, id, now, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn no_nap_while_a_peer_is_connecting_and_deadlines_are_served_at_their_own_instant() {
        let anchor = Instant::now();
        let (now, deadline) = (ms(anchor, 10) + Duration::from_micros(300), ms(anchor, 11));
        assert_eq!(plan(false, now, now, Some(deadline), anchor), (Duration::from_micros(700), Duration::ZERO));
        assert_eq!(plan(false, now, now, None, anchor), (MAX_WAIT, Duration::ZERO));
    }

    #[test]
    fn in_steady_state_wakeups_fall_on_the_grid_and_deadlines_on_the_instant_at_or_after_them() {
        let anchor = Instant::now();
        let at = |us: u64| anchor + Duration::from_micros(us);
        // Woken at 8.2 ms: naps to the next instant, 12 ms.
        assert_eq!(plan(true, at(8_200), at(8_200), None, anchor), (MAX_WAIT, Duration::from_micros(3_800)));
        // A deadline at 9.5 ms is served at 12 ms with the rest, not at its own instant.
        let due = Some(at(9_500));
        assert_eq!(
            plan(true, at(8_200), at(8_200), due, anchor),
            (Duration::from_micros(3_800), Duration::from_micros(3_800))
        );
        // A deadline on an instant is served on it; an overdue one at once.
        assert_eq!(plan(true, at(8_200), at(8_200), Some(at(12_000)), anchor).0, Duration::from_micros(3_800));
        assert_eq!(plan(true, at(8_200), at(8_200), Some(at(7_000)), anchor), (Duration::ZERO, Duration::ZERO));
        // Woken by a datagram just before an instant: that instant is this wakeup's; it naps to the next.
        assert_eq!(plan(true, at(11_950), at(11_950), None, anchor).1, Duration::from_micros(4_050));
        // Planning late in the step: only the rest of it is napped; under `MIN_NAP`, none.
        assert_eq!(plan(true, at(11_000), at(8_200), None, anchor).1, Duration::from_millis(1));
        assert_eq!(plan(true, at(11_950), at(8_200), None, anchor).1, Duration::ZERO);
    }

    #[test]
    fn timer_lag_counts_from_the_grid_instant_in_a_planned_round_and_from_the_deadline_otherwise() {
        let anchor = Instant::now();
        let at = |us: u64| anchor + Duration::from_micros(us);
        // A deadline at 9.5 ms, due on the 12 ms instant: served at 12.3 ms it is 0.3 ms late.
        assert_eq!(timer_lag(at(12_300), at(9_500), Some(anchor)), Duration::from_micros(300));
        // Served early, by a datagram's wakeup at 10 ms: no lag, never a negative one.
        assert_eq!(timer_lag(at(10_000), at(9_500), Some(anchor)), Duration::ZERO);
        // A deadline on an instant counts from itself.
        assert_eq!(timer_lag(at(12_300), at(12_000), Some(anchor)), Duration::from_micros(300));
        // Not on the grid (a peer was connecting): from the deadline.
        assert_eq!(timer_lag(at(12_300), at(9_500), None), Duration::from_micros(2_800));
    }

    #[test]
    fn grid_instants_are_whole_steps_from_the_anchor() {
        let anchor = Instant::now();
        assert_eq!(on_grid(anchor, anchor), anchor);
        assert_eq!(on_grid(anchor, ms(anchor, 8)), ms(anchor, 8));
        assert_eq!(on_grid(anchor, ms(anchor, 8) + Duration::from_nanos(1)), ms(anchor, 12));
        assert_eq!(on_grid(anchor, anchor - Duration::from_millis(3)), anchor); // before the hub: its start
    }

    #[test]
    fn arrival_is_now_less_the_time_the_kernel_says_the_datagram_queued() {
        let now = Instant::now();
        let wall_now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let stamp = Duration::from_secs(1_800_000_000) - Duration::from_millis(3);
        assert_eq!(arrival(now, wall_now, Some(stamp)), now - Duration::from_millis(3));
        assert_eq!(arrival(now, wall_now, None), now);
        // A stamp in the future or from before a clock step is not believed.
        assert_eq!(arrival(now, wall_now, Some(stamp + Duration::from_secs(1))), now);
        assert_eq!(arrival(now, wall_now, Some(stamp - Duration::from_secs(5))), now);
    }
}
