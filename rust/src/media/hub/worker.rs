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

use mio::{Events, Poll};

use super::{HubEvent, IdHasher, Shared, State};
use crate::media::deadline::Fired;
use crate::media::peer::MediaPeer;
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

/// How long the worker sleeps before it waits in epoll: what is left of `COALESCE` since its last
/// wakeup, cut short by the earliest deadline, and nothing unless the hub is `steady` (no peer
/// connecting, every socket with kernel timestamps).
fn nap_before_wait(steady: bool, since_last_wakeup: Duration, until_deadline: Duration) -> Duration {
    if !steady {
        return Duration::ZERO;
    }
    let nap = COALESCE.saturating_sub(since_last_wakeup).min(until_deadline);
    if nap < MIN_NAP {
        Duration::ZERO
    } else {
        nap
    }
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

/// How long the worker may block next (until the earliest deadline, at most `MAX_WAIT`) and how
/// much of that it first naps (`nap_before_wait`); the two backends share it.
pub(super) fn plan_wait(shared: &Shared, last_wakeup: Instant) -> (Duration, Duration) {
    let state = shared.lock();
    let now = Instant::now();
    let until_deadline =
        state.heap.peek().map_or(MAX_WAIT, |Reverse((at, _))| at.saturating_duration_since(now).min(MAX_WAIT));
    let steady = state.connecting == 0 && !state.untimestamped;
    (until_deadline, nap_before_wait(steady, now.duration_since(last_wakeup), until_deadline))
}

/// Naps as `plan_wait` says, then returns how long the worker may still block and the system calls spent
/// so far (the wait's own, and the nap's); both loops start each round with it.
pub(super) fn nap_then_plan(shared: &Shared, last_wakeup: Instant) -> (Duration, u64) {
    let (mut timeout, nap) = plan_wait(shared, last_wakeup);
    let mut syscalls = 1;
    if !nap.is_zero() {
        std::thread::sleep(nap);
        timeout = timeout.saturating_sub(nap);
        syscalls += 1;
    }
    (timeout, syscalls)
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

/// Wakes every peer whose deadline has passed, recording how late; adds them to `touched`.
pub(super) fn fire_deadlines(state: &mut State, now: Instant, touched: &mut Touched) {
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
        let wanted = slot.deadline.wake();
        let peer = &mut slot.peer;
        state_timeouts += 1;
        if catch_unwind(AssertUnwindSafe(|| peer.handle_timeout(now))).is_err() {
            peer.fail(now, "internal_error", "panic in the media tier".into());
        }
        touched.insert(id);
        state.timer_lag.record(now.saturating_duration_since(wanted));
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
        let (timeout, mut syscalls) = nap_then_plan(shared, last_wakeup);
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
        for event in events.iter() {
            let Some(&(id, index)) = state.owners.get(&event.token()) else { continue };
            let Some(slot) = state.slots.get_mut(&id) else { continue };
            let Some(socket) = slot.sockets.get(index) else { continue };
            let (local, fd) = (socket.local, socket.socket.as_raw_fd());
            let mut received = Received::Quiet;
            loop {
                syscalls += 1;
                match recv_batch(fd, &mut batch) {
                    Ok(_) => {
                        for (data, source, kernel_time) in batch.datagrams() {
                            let Some(source) = source else { continue }; // not IPv4/IPv6: never ours
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
        fire_deadlines(&mut state, now, &mut touched);
        for id in touched.iter().copied() {
            service(shared, &mut state, id, now, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nap_while_a_peer_is_connecting() {
        assert_eq!(nap_before_wait(false, Duration::ZERO, MAX_WAIT), Duration::ZERO);
    }

    #[test]
    fn in_steady_state_wakeups_are_coalesce_apart_but_never_past_a_deadline() {
        assert_eq!(nap_before_wait(true, Duration::from_millis(1), MAX_WAIT), Duration::from_millis(3));
        assert_eq!(nap_before_wait(true, Duration::from_millis(1), Duration::from_millis(2)), Duration::from_millis(2));
        assert_eq!(nap_before_wait(true, Duration::from_millis(9), MAX_WAIT), Duration::ZERO);
        assert_eq!(nap_before_wait(true, Duration::from_millis(1), Duration::ZERO), Duration::ZERO);
        assert_eq!(nap_before_wait(true, Duration::from_micros(3_950), MAX_WAIT), Duration::ZERO);
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
