//! The io_uring backend of the hub's worker (`io.rs` says when it runs).
//!
//! Each socket has one multishot `recvmsg` in flight, over a ring of provided buffers: the kernel
//! picks a buffer per datagram and posts a completion holding its source address, its control
//! messages (the `SO_TIMESTAMPNS` arrival time, as with `recvmmsg`) and its bytes, laid out as an
//! `io_uring_recvmsg_out`. The worker hands each buffer back once the peer has read it. Every
//! datagram a wakeup produces becomes a `SendMsg` entry, and all of them go in one submission.
//!
//! So a wakeup costs one `io_uring_enter` to wait (which also runs the receives: with
//! `DEFER_TASKRUN` they happen when the worker asks, not in interrupts), one to submit the sends,
//! and the nap, whatever the number of sockets and datagrams. The epoll backend pays one
//! `recvmmsg` per ready socket and one `sendmmsg` per serviced socket on top.
//!
//! Wakeup coalescing, deadlines and servicing are the epoll backend's (`worker.rs`). Other threads
//! reach the worker through an eventfd that the ring reads (`IoHandle::wake`), and list the sockets
//! to arm or cancel in `State`: only the thread that made a `SINGLE_ISSUER` ring may submit to it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use mio::Token;

use super::worker::{arrival, feed, fire_deadlines, nap_then_plan, service, Outbox, Round, Touched};
use super::{Owner, Shared, State};
use crate::media::recv::{control_timestamp, socket_addr_from_bytes, CONTROL_BYTES, RECV_BUFFER_BYTES};
use crate::media::send::c_socket_addr;
use crate::media::types::{Datagram, Received};

/// Submission queue entries; the completion queue has twice as many (the kernel keeps any
/// overflow, `IORING_FEAT_NODROP`).
const RING_ENTRIES: u32 = 4096;
/// Provided buffers (a power of two). A 4 ms wakeup at thousands of peers reads hundreds of
/// datagrams; should they run out, a receive ends with ENOBUFS, its datagrams wait in the socket
/// and it is re-armed once buffers come back.
const BUFFERS: u16 = 2048;
/// One buffer: the `io_uring_recvmsg_out` header, the source address, the control messages and
/// the datagram (room for 1,940 bytes, more than RTP on a 1500-byte MTU).
const BUFFER_BYTES: usize = RECV_BUFFER_BYTES;
const BUFFER_GROUP: u16 = 0;

/// Completion tags (`user_data`). A socket's receive is tagged with its `Token`, a send with
/// `SEND` and its slot; the tags at the top are never tokens (those count up from 0).
const WAKE: u64 = u64::MAX;
const CANCEL: u64 = u64::MAX - 1;
const PROBE: u64 = u64::MAX - 2;
const SEND: u64 = 1 << 62;

/// The send slot a completion tag names, if it is a send's.
fn send_index(tag: u64) -> Option<usize> {
    (SEND..2 * SEND).contains(&tag).then(|| (tag - SEND) as usize)
}

/// The longest the worker waits for outstanding operations when it stops.
const DRAIN: Duration = Duration::from_secs(1);

/// A ring of provided buffers (`IORING_REGISTER_PBUF_RING`) and the memory behind it.
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    memory: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let ring_bytes = usize::from(BUFFERS) * size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; the kernel wants the ring page-aligned.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let memory = vec![0u8; usize::from(BUFFERS) * BUFFER_BYTES];
        let mut buffers = BufRing { ring: ring.cast(), ring_bytes, memory, tail: 0 };
        for bid in 0..BUFFERS {
            buffers.push(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    fn buffer(&self, bid: u16) -> &[u8] {
        let start = usize::from(bid) * BUFFER_BYTES;
        &self.memory[start..start + BUFFER_BYTES]
    }

    /// Hands buffer `bid` back (visible to the kernel at the next `publish`).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (BUFFERS - 1));
        let address = self.memory.as_ptr() as u64 + u64::from(bid) * BUFFER_BYTES as u64;
        // SAFETY: slot < BUFFERS, inside the mapping; the kernel reads only entries below the tail.
        let entry = unsafe { &mut *self.ring.add(slot) };
        entry.set_addr(address);
        entry.set_len(BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the ring's tail field (inside its first entry), which the kernel reads with
        // acquire semantics; it is only ever written here.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the kernel pinned its own reference to these pages.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

/// One datagram in flight as a `SendMsg`: the header, address and bytes the kernel reads, boxed
/// so they stay put until its completion.
struct SendSlot {
    contents: Vec<u8>,
    name: libc::sockaddr_storage,
    iov: libc::iovec,
    header: libc::msghdr,
}

#[derive(Default)]
struct Sends {
    /// Boxed: the kernel holds pointers into a slot while the `Vec` may grow and move.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<SendSlot>>,
    free: Vec<usize>,
}

impl Sends {
    fn prepare(&mut self, fd: RawFd, datagram: Datagram) -> squeue::Entry {
        let index = self.free.pop().unwrap_or_else(|| {
            // SAFETY: all-zero is a valid value for these plain C structs.
            let (name, iov, header) = unsafe { (zeroed(), zeroed(), zeroed()) };
            self.slots.push(Box::new(SendSlot { contents: Vec::new(), name, iov, header }));
            self.slots.len() - 1
        });
        let slot = &mut *self.slots[index];
        let (name, name_len) = c_socket_addr(datagram.destination);
        slot.contents = datagram.contents;
        slot.name = name;
        slot.iov = libc::iovec { iov_base: slot.contents.as_mut_ptr().cast(), iov_len: slot.contents.len() };
        slot.header.msg_name = (&mut slot.name as *mut libc::sockaddr_storage).cast();
        slot.header.msg_namelen = name_len;
        slot.header.msg_iov = &mut slot.iov;
        slot.header.msg_iovlen = 1;
        opcode::SendMsg::new(types::Fd(fd), &slot.header).build().user_data(SEND | index as u64)
    }

    fn complete(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.contents = Vec::new();
            self.free.push(index);
        }
    }
}

pub(in crate::media::hub) struct Uring {
    /// Declared first so it is dropped first: the kernel lets go of the buffers before they go.
    ring: IoUring,
    buffers: BufRing,
    /// What every multishot `recvmsg` reads: only its name and control lengths matter.
    template: Box<libc::msghdr>,
    sends: Sends,
    wake_fd: RawFd,
    wake_buffer: Box<u64>,
    /// Operations submitted whose last completion has not come: what `drain` waits for.
    in_flight: usize,
    /// Completions other than sends found right after a submission, for the next wakeup.
    deferred: Vec<cqueue::Entry>,
}

fn build_ring() -> io::Result<IoUring> {
    // Cheapest completion delivery first: no interrupt-time work, receives run when we wait.
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES))
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

impl Uring {
    /// Sets up the ring and its buffers and checks that multishot `recvmsg` works here; the error
    /// is the one line the report shows for falling back.
    pub(in crate::media::hub) fn open(bind_ip: IpAddr, wake_fd: RawFd) -> Result<Uring, String> {
        let ring = build_ring().map_err(|e| format!("io_uring_setup: {e}"))?;
        let buffers = BufRing::new().map_err(|e| format!("io_uring buffers: {e}"))?;
        // SAFETY: the ring memory lives in `buffers`, dropped after `ring` (field order).
        unsafe { ring.submitter().register_buf_ring_with_flags(buffers.ring as u64, BUFFERS, BUFFER_GROUP, 0) }
            .map_err(|e| format!("io_uring provided buffer ring: {e}"))?;
        // SAFETY: all-zero is a valid msghdr.
        let mut template: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        template.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        template.msg_controllen = CONTROL_BYTES as _;
        let mut uring = Uring {
            ring,
            buffers,
            template,
            sends: Sends::default(),
            wake_fd,
            wake_buffer: Box::new(0),
            in_flight: 0,
            deferred: Vec::new(),
        };
        uring.probe(bind_ip).map_err(|e| format!("io_uring multishot recvmsg: {e}"))?;
        Ok(uring)
    }

    fn recv_entry(&self, fd: RawFd, tag: u64) -> squeue::Entry {
        opcode::RecvMsgMulti::new(types::Fd(fd), &*self.template, BUFFER_GROUP).build().user_data(tag)
    }

    /// Queues `entry`, submitting what is queued when the submission queue is full; returns the
    /// system calls that took.
    fn push(&mut self, entry: &squeue::Entry) -> u64 {
        let mut syscalls = 0;
        // SAFETY: every entry's buffers (template, send slots, provided buffers, the wake buffer)
        // live in `self` until the operation's last completion or until `drain` gives up and
        // leaks them.
        while unsafe { self.ring.submission().push(entry) }.is_err() {
            let _ = self.ring.submit();
            syscalls += 1;
        }
        if entry.get_user_data() != CANCEL {
            self.in_flight += 1;
        }
        syscalls
    }

    /// Waits up to `timeout` for a completion (submitting whatever is queued).
    fn wait(&mut self, timeout: Duration) {
        let timespec = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }

    /// Arms a multishot receive on a fresh socket, has one datagram arrive, and cancels it again.
    fn probe(&mut self, bind_ip: IpAddr) -> Result<(), String> {
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(|e| format!("probe socket: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| format!("probe socket: {e}"))?; // as the hub's are
        let entry = self.recv_entry(socket.as_raw_fd(), PROBE);
        self.push(&entry);
        self.ring.submit().map_err(|e| format!("submit: {e}"))?;
        socket.send_to(b"probe", socket.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let (mut verdict, mut ended, mut cancelled) = (None, false, false);
        let deadline = Instant::now() + DRAIN;
        while !ended && Instant::now() < deadline {
            if verdict.is_some() && !cancelled {
                let cancel = opcode::AsyncCancel::new(PROBE).build().user_data(CANCEL);
                self.push(&cancel);
                cancelled = true;
            }
            self.wait(Duration::from_millis(50));
            let mut recycled = Vec::new();
            for cqe in self.ring.completion() {
                if cqe.user_data() != PROBE {
                    continue;
                }
                recycled.extend(cqueue::buffer_select(cqe.flags()));
                ended |= !cqueue::more(cqe.flags());
                verdict.get_or_insert(match cqe.result() {
                    error if error < 0 => Err(io::Error::from_raw_os_error(-error).to_string()),
                    _ if !cqueue::more(cqe.flags()) => Err("ended after one datagram".to_string()),
                    _ => Ok(()),
                });
            }
            for bid in recycled {
                self.buffers.push(bid);
            }
            self.buffers.publish();
        }
        if ended {
            self.in_flight -= 1;
        } else {
            return Err("no completion within a second".into());
        }
        verdict.unwrap_or_else(|| Err("no completion".into()))
    }

    /// The worker loop (see the module doc; `worker::run_worker` is the epoll one).
    pub(in crate::media::hub) fn run(mut self, shared: &Shared) {
        let mut touched = Touched::default();
        let mut outbox = Outbox::new();
        let mut rearm: Vec<u64> = Vec::new();
        let mut last_wakeup = Instant::now();
        let wake = self.wake_entry();
        self.push(&wake);
        while !shared.stop.load(Ordering::SeqCst) {
            let Round { timeout, mut syscalls, grid } = nap_then_plan(shared, last_wakeup);
            self.wait(if self.deferred.is_empty() { timeout } else { Duration::ZERO });
            let mut state = shared.lock();
            let now = Instant::now();
            let wall_now = SystemTime::now();
            last_wakeup = now;
            state.wakeups += 1;
            touched.clear();
            rearm.extend(std::mem::take(&mut state.uring_arm).into_iter().map(|token| token.0 as u64));
            for token in std::mem::take(&mut state.uring_cancel) {
                syscalls += self.push(&opcode::AsyncCancel::new(token.0 as u64).build().user_data(CANCEL));
            }
            self.complete(&mut state, now, wall_now, &mut touched, &mut rearm);
            fire_deadlines(&mut state, now, grid, &mut touched);
            for id in touched.iter().copied() {
                service(shared, &mut state, id, now, Some(&mut outbox));
            }
            for (fd, datagram) in outbox.drain(..) {
                let entry = self.sends.prepare(fd, datagram);
                syscalls += self.push(&entry);
            }
            for tag in rearm.drain(..) {
                let entry = if tag == WAKE { Some(self.wake_entry()) } else { self.socket_recv(&state, tag) };
                if let Some(entry) = entry {
                    syscalls += self.push(&entry);
                }
            }
            // Under the lock: a queued entry names its socket by descriptor, which `remove_peer`
            // would close (and a new socket could reuse) once the lock is let go.
            if !self.ring.submission().is_empty() {
                let _ = self.ring.submit();
                syscalls += 1;
                self.reap_sends(&mut state);
            }
            state.syscalls += syscalls;
        }
        self.drain();
    }

    /// A read of the wake eventfd: it completes when another thread calls `IoHandle::wake`.
    fn wake_entry(&mut self) -> squeue::Entry {
        let buffer = (&mut *self.wake_buffer as *mut u64).cast::<u8>();
        opcode::Read::new(types::Fd(self.wake_fd), buffer, 8).build().user_data(WAKE)
    }

    /// The receive to (re-)arm for the socket tagged `tag`, if it still belongs to a peer.
    fn socket_recv(&self, state: &State, tag: u64) -> Option<squeue::Entry> {
        let &Owner { peer: id, index, .. } = state.owners.get(&Token(tag as usize))?;
        let socket = state.slots.get(&id)?.sockets.get(index)?;
        Some(self.recv_entry(socket.socket.as_raw_fd(), tag))
    }

    /// Frees the slots of sends that completed as they were submitted (UDP sends mostly do), so
    /// their completions do not end the next wait at once: a wakeup with nothing to do.
    fn reap_sends(&mut self, state: &mut State) {
        let Uring { ring, sends, in_flight, deferred, .. } = self;
        for cqe in ring.completion() {
            let tag = cqe.user_data();
            if let Some(index) = send_index(tag) {
                *in_flight -= 1;
                sends.complete(index);
                state.send_errors += u64::from(cqe.result() < 0);
            } else {
                deferred.push(cqe);
            }
        }
    }

    /// Reaps every completion: datagrams to their peers (buffers handed back), sends freed,
    /// ended receives and the wake read queued in `rearm`.
    fn complete(
        &mut self,
        state: &mut State,
        now: Instant,
        wall_now: SystemTime,
        touched: &mut Touched,
        rearm: &mut Vec<u64>,
    ) {
        let mut recycled = false;
        let Uring { ring, buffers, template, sends, in_flight, deferred, .. } = self;
        for cqe in deferred.drain(..).chain(ring.completion()) {
            let (tag, result, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            if tag == CANCEL {
                continue;
            }
            if !cqueue::more(flags) {
                *in_flight -= 1;
            }
            match (tag, send_index(tag)) {
                (WAKE, _) => rearm.push(WAKE),
                (PROBE, _) => {}
                (_, Some(index)) => {
                    sends.complete(index);
                    state.send_errors += u64::from(result < 0);
                }
                _ => {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        if let Ok(length) = usize::try_from(result) {
                            deliver(
                                state,
                                tag,
                                &buffers.buffer(bid)[..length.min(BUFFER_BYTES)],
                                template,
                                now,
                                wall_now,
                                touched,
                            );
                        }
                        buffers.push(bid);
                        recycled = true;
                    }
                    // Ended: out of buffers (ENOBUFS), an error such as ECONNREFUSED, or cancelled
                    // (then the socket has no owner and `socket_recv` skips it).
                    if !cqueue::more(flags) {
                        rearm.push(tag);
                    }
                }
            }
        }
        if recycled {
            buffers.publish();
        }
    }

    /// Cancels everything in flight and waits for the last completions, so that no operation
    /// outlives the buffers it writes or reads; if the kernel is slow to let go, leaks them.
    fn drain(mut self) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL);
        self.push(&cancel);
        let deadline = Instant::now() + DRAIN;
        while self.in_flight > 0 && Instant::now() < deadline {
            self.wait(Duration::from_millis(10));
            for cqe in self.ring.completion() {
                if cqe.user_data() != CANCEL && !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
            }
        }
        if self.in_flight > 0 {
            std::mem::forget(std::mem::take(&mut self.buffers.memory));
            std::mem::forget(std::mem::take(&mut self.sends.slots));
            std::mem::forget(std::mem::replace(&mut self.wake_buffer, Box::new(0)));
        }
    }
}

/// Feeds one received datagram (a provided buffer's `io_uring_recvmsg_out`) to its socket's peer.
fn deliver(
    state: &mut State,
    tag: u64,
    bytes: &[u8],
    template: &libc::msghdr,
    now: Instant,
    wall_now: SystemTime,
    touched: &mut Touched,
) {
    let Ok(out) = types::RecvMsgOut::parse(bytes, template) else { return };
    let Some(&Owner { peer: id, local, .. }) = state.owners.get(&Token(tag as usize)) else { return };
    let Some(slot) = state.slots.get_mut(&id) else { return };
    let Some(source) = socket_addr_from_bytes(out.name_data()) else { return }; // not IPv4/IPv6: never ours
    if out.is_payload_truncated() {
        slot.peer.handle_truncated_datagram();
        touched.insert(id);
        return;
    }
    let arrived_at = arrival(now, wall_now, control_timestamp(out.control_data()));
    if feed(&mut slot.peer, now, arrived_at, source, local, out.payload_data()) == Received::Service {
        touched.insert(id);
    }
}

#[cfg(test)]
mod tests;
