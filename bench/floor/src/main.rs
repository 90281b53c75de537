//! The physical floor under lkswarm's live receive path (issue #24).
//!
//! `floor recv --variant recvmmsg|io_uring --sockets N --warmup-s W --measure-s S` binds N UDP
//! sockets on 127.0.0.1, prints their ports as one JSON line, then reads whatever arrives on them
//! and does nothing with it. After W seconds it measures S seconds: packets received and the CPU
//! time of the process (getrusage, user + system; the receiver is one thread), and prints them as
//! a second JSON line.
//!
//! `floor send --ports P1,P2,... --rate 50 --size 100 --seconds T` replays an audio-like stream
//! from another process: every 1/rate seconds one datagram of `size` bytes to every port, in one
//! burst, as an SFU forwards one publisher's packet to all of a room's subscribers.
//!
//! `--open` (on both sides): the sender seals every datagram with AES-256-GCM (its first 12 bytes,
//! an RTP fixed header, are the associated data and the nonce; a 16-byte tag ends it) and the
//! receiver opens each one in place, with aws-lc-rs as the product's SRTP receive path does: the
//! floor of a receiver that authenticates what it counts. Datagrams that fail are counted
//! (`auth_failed`; 0 unless something is wrong).
//!
//! The two receivers:
//! - `recvmmsg`: level-triggered epoll over the sockets; per ready socket one `recvmmsg` of up to
//!   32 datagrams (with the source address, as the hub reads them);
//! - `io_uring`: one multishot `recvmsg` per socket over a ring of provided buffers, each
//!   completion's buffer handed straight back. Where the kernel or a seccomp filter refuses
//!   io_uring, it prints `{"io_uring": "refused: <error>"}` and exits 0; where multishot recvmsg is
//!   refused, it falls back to one plain `recvmsg` SQE per socket, re-armed on completion.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

const BATCH: usize = 32;
const BUFFER_BYTES: usize = 2048;
const RING_ENTRIES: u16 = 4096;
const BUFFER_GROUP: u16 = 7;
/// `--open`'s key. Not a secret: the sender and the receiver are this binary, on loopback.
const BENCH_KEY: [u8; 32] = [0x5a; 32];
/// An RTP fixed header: the associated data, and here also the nonce (it holds a per-tick counter).
const HEADER_BYTES: usize = NONCE_LEN;
const TAG_BYTES: usize = 16;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// What one receiver counted.
#[derive(Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    wakeups: u64,
    syscalls: u64,
    auth_failed: u64,
}

fn bench_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &BENCH_KEY).expect("a 32-byte AES-256-GCM key"))
}

/// Opens one sealed datagram in place; false when it is too short or does not authenticate.
fn open_datagram(key: &LessSafeKey, datagram: &mut [u8]) -> bool {
    if datagram.len() < HEADER_BYTES + TAG_BYTES {
        return false;
    }
    let (header, sealed) = datagram.split_at_mut(HEADER_BYTES);
    let Ok(nonce) = Nonce::try_assume_unique_for_key(header) else { return false };
    key.open_in_place(nonce, Aad::from(&*header), sealed).is_ok()
}

/// The `--open` part of a receiver's JSON line.
fn open_fields(key: Option<&LessSafeKey>, counts: &Counts) -> String {
    match key {
        Some(_) => format!(", \"open\": \"aes-256-gcm\", \"auth_failed\": {}", counts.auth_failed),
        None => String::new(),
    }
}

/// The measurement window: counts before it are the warm-up's and are discarded.
struct Window {
    start: Instant,
    warmup: Duration,
    end: Duration,
    measuring: bool,
    cpu_0: f64,
    at_0: Option<Instant>,
    /// The least time between two wakeups, as the hub's steady state keeps it (0: none).
    coalesce: Duration,
    last_wakeup: Instant,
}

impl Window {
    fn new(warmup_s: f64, measure_s: f64, coalesce_ms: f64) -> Self {
        Window {
            coalesce: Duration::from_secs_f64(coalesce_ms / 1e3),
            last_wakeup: Instant::now(),
            start: Instant::now(),
            warmup: Duration::from_secs_f64(warmup_s),
            end: Duration::from_secs_f64(warmup_s + measure_s),
            measuring: false,
            cpu_0: 0.0,
            at_0: None,
        }
    }

    /// Called once per wakeup; returns false when the window is over.
    fn tick(&mut self, counts: &mut Counts) -> bool {
        let elapsed = self.start.elapsed();
        if !self.measuring && elapsed >= self.warmup {
            self.measuring = true;
            *counts = Counts::default();
            self.cpu_0 = cpu_seconds();
            self.at_0 = Some(Instant::now());
        }
        elapsed < self.end
    }

    /// Sleeps so that wakeups are at least `coalesce` apart; called right before each wait.
    fn nap(&mut self) {
        let since = self.last_wakeup.elapsed();
        if since < self.coalesce {
            std::thread::sleep(self.coalesce - since);
        }
    }

    fn woke(&mut self) {
        self.last_wakeup = Instant::now();
    }

    fn report(&self, variant: &str, sockets: usize, counts: &Counts, extra: &str) -> String {
        let cpu_s = cpu_seconds() - self.cpu_0;
        let wall_s = self.at_0.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let ns = if counts.packets > 0 { cpu_s * 1e9 / counts.packets as f64 } else { 0.0 };
        format!(
            "{{\"variant\": \"{variant}\", \"sockets\": {sockets}, \"packets\": {}, \"bytes\": {}, \
             \"cpu_s\": {cpu_s:.4}, \"wall_s\": {wall_s:.3}, \"ns_per_packet\": {ns:.1}, \
             \"wakeups\": {}, \"syscalls\": {}, \"coalesce_ms\": {}{extra}}}",
            counts.packets,
            counts.bytes,
            counts.wakeups,
            counts.syscalls,
            self.coalesce.as_secs_f64() * 1e3
        )
    }
}

fn bind_sockets(count: usize) -> io::Result<Vec<UdpSocket>> {
    (0..count)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect()
}

fn print_ports(sockets: &[UdpSocket]) -> io::Result<()> {
    let ports: Vec<String> =
        sockets.iter().map(|s| s.local_addr().map(|a| a.port().to_string())).collect::<io::Result<_>>()?;
    emit(&format!("{{\"ports\": [{}]}}", ports.join(", ")));
    Ok(())
}

fn emit(line: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// -- recvmmsg over epoll ------------------------------------------------------------------------

fn recv_mmsg(sockets: &[UdpSocket], window: &mut Window, key: Option<&LessSafeKey>) -> io::Result<String> {
    // SAFETY: plain epoll calls on descriptors we own; the event buffer outlives every call.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    for (index, socket) in sockets.iter().enumerate() {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: index as u64 };
        // SAFETY: see above.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4096];
    let mut buffers = vec![[0u8; BUFFER_BYTES]; BATCH];
    // SAFETY: all-zero is a valid value for these C structs.
    let mut names: Vec<libc::sockaddr_in6> = vec![unsafe { zeroed() }; BATCH];
    let mut iovecs: Vec<libc::iovec> =
        buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: BUFFER_BYTES }).collect();
    // SAFETY: as above.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut counts = Counts::default();
    while window.tick(&mut counts) {
        window.nap();
        // SAFETY: events has room for its length.
        let ready = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 100) };
        counts.syscalls += 1;
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        window.woke();
        counts.wakeups += 1;
        for event in &events[..ready as usize] {
            let fd = sockets[event.u64 as usize].as_raw_fd();
            for (i, header) in headers.iter_mut().enumerate() {
                header.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in6).cast();
                header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
                header.msg_hdr.msg_iov = &mut iovecs[i];
                header.msg_hdr.msg_iovlen = 1;
                header.msg_len = 0;
            }
            // SAFETY: every header points at buffers that outlive the call.
            let got = unsafe {
                libc::recvmmsg(fd, headers.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
            };
            counts.syscalls += 1;
            if got > 0 {
                counts.packets += got as u64;
                counts.bytes += headers[..got as usize].iter().map(|h| h.msg_len as u64).sum::<u64>();
                if let Some(key) = key {
                    for (buffer, header) in buffers.iter_mut().zip(&headers[..got as usize]) {
                        counts.auth_failed += u64::from(!open_datagram(key, &mut buffer[..header.msg_len as usize]));
                    }
                }
            }
        }
    }
    // SAFETY: closing the descriptor we created.
    unsafe { libc::close(epoll) };
    let extra = format!(", \"batch\": {BATCH}{}", open_fields(key, &counts));
    Ok(window.report("recvmmsg", sockets.len(), &counts, &extra))
}

// -- io_uring -----------------------------------------------------------------------------------

/// A ring of provided buffers (IORING_REGISTER_PBUF_RING) and the memory behind it.
struct BufRing {
    ring: *mut io_uring::types::BufRingEntry,
    ring_bytes: usize,
    memory: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<Self> {
        let ring_bytes = RING_ENTRIES as usize * size_of::<io_uring::types::BufRingEntry>();
        // SAFETY: an anonymous private mapping (page-aligned, as the kernel requires).
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
        let mut this =
            BufRing { ring: ring.cast(), ring_bytes, memory: vec![0u8; RING_ENTRIES as usize * BUFFER_BYTES], tail: 0 };
        for bid in 0..RING_ENTRIES {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    fn buffer(&mut self, bid: u16) -> &mut [u8] {
        &mut self.memory[bid as usize * BUFFER_BYTES..(bid as usize + 1) * BUFFER_BYTES]
    }

    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (RING_ENTRIES - 1)) as usize;
        let addr = self.memory.as_ptr() as u64 + bid as u64 * BUFFER_BYTES as u64;
        // SAFETY: slot < RING_ENTRIES, inside the mapping.
        let entry = unsafe { &mut *self.ring.add(slot) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field of the first entry, which the kernel reads with acquire semantics.
        let tail = unsafe { &*(io_uring::types::BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new().
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

fn build_ring() -> io::Result<(io_uring::IoUring, &'static str)> {
    // Cheapest completion delivery first: no IPI, task work run when we wait.
    let tuned = io_uring::IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(8192);
    match tuned {
        Ok(ring) => Ok((ring, "single_issuer+defer_taskrun")),
        Err(_) => io_uring::IoUring::builder().setup_coop_taskrun().build(8192).map(|r| (r, "coop_taskrun")),
    }
}

fn recv_uring(sockets: &[UdpSocket], window: &mut Window, key: Option<&LessSafeKey>) -> io::Result<String> {
    use io_uring::{cqueue, opcode, types};

    let (mut ring, setup) = match build_ring() {
        Ok(built) => built,
        Err(error) => return Ok(format!("{{\"io_uring\": \"refused: {error}\"}}")),
    };
    let mut buffers = BufRing::new()?;
    // SAFETY: the ring memory lives in `buffers` until after the ring is dropped below.
    let registered =
        unsafe { ring.submitter().register_buf_ring_with_flags(buffers.ring as u64, RING_ENTRIES, BUFFER_GROUP, 0) };
    let multishot = registered.is_ok();
    // SAFETY: all-zero is a valid msghdr; only its name and control lengths matter for multishot.
    let mut template: libc::msghdr = unsafe { zeroed() };
    template.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    // Plain recvmsg fallback: a buffer, name and header per socket.
    let mut plain_buffers = vec![[0u8; BUFFER_BYTES]; if multishot { 0 } else { sockets.len() }];
    // SAFETY: as above.
    let mut plain_names: Vec<libc::sockaddr_in6> = vec![unsafe { zeroed() }; plain_buffers.len()];
    let mut plain_iovecs: Vec<libc::iovec> = plain_buffers
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: BUFFER_BYTES })
        .collect();
    // SAFETY: as above.
    let mut plain_headers: Vec<libc::msghdr> = vec![unsafe { zeroed() }; plain_buffers.len()];
    for (i, header) in plain_headers.iter_mut().enumerate() {
        header.msg_name = (&mut plain_names[i] as *mut libc::sockaddr_in6).cast();
        header.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
        header.msg_iov = &mut plain_iovecs[i];
        header.msg_iovlen = 1;
    }
    let arm = |ring: &mut io_uring::IoUring, index: usize, headers: &mut [libc::msghdr]| -> io::Result<()> {
        let fd = types::Fd(sockets[index].as_raw_fd());
        let entry = if multishot {
            opcode::RecvMsgMulti::new(fd, &template, BUFFER_GROUP).build()
        } else {
            headers[index].msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
            opcode::RecvMsg::new(fd, &mut headers[index]).build()
        }
        .user_data(index as u64);
        // SAFETY: the msghdr and buffers outlive the operation (they live until the function returns,
        // after the ring is dropped, which cancels everything in flight).
        while unsafe { ring.submission().push(&entry) }.is_err() {
            ring.submit()?;
        }
        Ok(())
    };
    for index in 0..sockets.len() {
        arm(&mut ring, index, &mut plain_headers)?;
    }
    ring.submit()?;
    let mut counts = Counts::default();
    let mut refused_multishot: Option<String> = None;
    let mut rearm: Vec<usize> = Vec::with_capacity(sockets.len());
    let timeout = types::Timespec::new().nsec(100_000_000);
    let args = types::SubmitArgs::new().timespec(&timeout);
    while window.tick(&mut counts) {
        window.nap();
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ETIME) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {}
            Err(error) => return Err(error),
        }
        window.woke();
        counts.syscalls += 1;
        counts.wakeups += 1;
        let mut recycled = false;
        for cqe in ring.completion() {
            let index = cqe.user_data() as usize;
            let result = cqe.result();
            let flags = cqe.flags();
            if result < 0 {
                if result == -libc::EINVAL && counts.packets == 0 && multishot {
                    refused_multishot = Some(io::Error::from_raw_os_error(-result).to_string());
                }
                if !cqueue::more(flags) {
                    rearm.push(index);
                }
                continue;
            }
            if multishot {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let buffer = buffers.buffer(bid);
                    let data = &buffer[..result as usize];
                    if let Ok(out) = types::RecvMsgOut::parse(data, &template) {
                        let payload = out.payload_data();
                        let (start, len) = (payload.as_ptr() as usize - data.as_ptr() as usize, payload.len());
                        counts.packets += 1;
                        counts.bytes += len as u64;
                        if let Some(key) = key {
                            counts.auth_failed += u64::from(!open_datagram(key, &mut buffer[start..start + len]));
                        }
                    }
                    buffers.push(bid);
                    recycled = true;
                }
                if !cqueue::more(flags) {
                    rearm.push(index);
                }
            } else {
                counts.packets += 1;
                counts.bytes += result as u64;
                if let Some(key) = key {
                    let datagram = &mut plain_buffers[index][..result as usize];
                    counts.auth_failed += u64::from(!open_datagram(key, datagram));
                }
                rearm.push(index);
            }
        }
        if recycled {
            buffers.publish();
        }
        if refused_multishot.is_some() {
            break;
        }
        for index in rearm.drain(..) {
            arm(&mut ring, index, &mut plain_headers)?;
        }
    }
    drop(ring);
    let mode = if multishot { "multishot recvmsg, provided buffer ring" } else { "plain recvmsg per socket" };
    let mut extra = format!(", \"io_uring\": \"ok\", \"mode\": \"{mode}\", \"setup\": \"{setup}\"");
    extra.push_str(&open_fields(key, &counts));
    if let Err(error) = registered {
        extra.push_str(&format!(", \"buf_ring\": \"refused: {error}\""));
    }
    if let Some(error) = refused_multishot {
        extra.push_str(&format!(", \"multishot\": \"refused: {error}\""));
    }
    Ok(window.report("io_uring", sockets.len(), &counts, &extra))
}

// -- sender -------------------------------------------------------------------------------------

fn send(ports: &[u16], rate: f64, size: usize, seconds: f64, key: Option<&LessSafeKey>) -> io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let minimum = if key.is_some() { HEADER_BYTES + TAG_BYTES } else { 2 };
    let mut payload = vec![0u8; size.max(minimum)];
    payload[0] = 0x80; // RTP v2
    payload[1] = 0x6f; // PT 111 (Opus)
                       // SAFETY: all-zero is a valid sockaddr_in.
    let addresses: Vec<libc::sockaddr_in> = ports
        .iter()
        .map(|&port| {
            let mut a: libc::sockaddr_in = unsafe { zeroed() };
            a.sin_family = libc::AF_INET as u16;
            a.sin_port = port.to_be();
            a.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) };
            a
        })
        .collect();
    let mut iovec = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut headers: Vec<libc::mmsghdr> = addresses
        .iter()
        .map(|a| {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (a as *const libc::sockaddr_in).cast_mut().cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_iov = &mut iovec;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let ticks = (seconds * rate).ceil() as u64;
    let mut sent = 0u64;
    for tick in 0..ticks {
        let due = start + period * tick as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let seq = (tick as u16).to_be_bytes();
        payload[2] = seq[0];
        payload[3] = seq[1];
        if let Some(key) = key {
            seal_tick(key, &mut payload, tick);
        }
        for chunk in headers.chunks_mut(256) {
            let mut offset = 0;
            let mut attempts = 0;
            while offset < chunk.len() && attempts < 100 {
                attempts += 1;
                // SAFETY: the headers point at addresses and a payload that outlive the call.
                let n = unsafe {
                    libc::sendmmsg(socket.as_raw_fd(), chunk[offset..].as_mut_ptr(), (chunk.len() - offset) as u32, 0)
                };
                if n < 0 {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted || error.kind() == io::ErrorKind::WouldBlock {
                        continue;
                    }
                    return Err(error);
                }
                offset += n as usize;
                sent += n as u64;
            }
        }
    }
    emit(&format!("{{\"sent\": {sent}, \"seconds\": {:.3}}}", start.elapsed().as_secs_f64()));
    Ok(())
}

/// Seals the datagram for one tick in place: bytes 4..12 of the header carry the tick (a fresh nonce
/// each time), the body is zeros, the tag its last 16 bytes. The iovecs point at this buffer, so it
/// is rewritten, never reallocated.
fn seal_tick(key: &LessSafeKey, datagram: &mut [u8], tick: u64) {
    datagram[4..HEADER_BYTES].copy_from_slice(&tick.to_be_bytes());
    let (header, rest) = datagram.split_at_mut(HEADER_BYTES);
    let (body, tag_out) = rest.split_at_mut(rest.len() - TAG_BYTES);
    body.fill(0);
    let nonce = Nonce::try_assume_unique_for_key(header).expect("the header is one nonce long");
    let tag = key
        .seal_in_place_separate_tag(nonce, Aad::from(&*header), body)
        .expect("sealing a datagram shorter than 2^32 blocks");
    tag_out.copy_from_slice(tag.as_ref());
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("recv") => {
            let variant = arg(&args, "--variant", "recvmmsg");
            let count: usize = arg(&args, "--sockets", "300").parse().expect("--sockets");
            let warmup: f64 = arg(&args, "--warmup-s", "2").parse().expect("--warmup-s");
            let measure: f64 = arg(&args, "--measure-s", "15").parse().expect("--measure-s");
            let coalesce: f64 = arg(&args, "--coalesce-ms", "0").parse().expect("--coalesce-ms");
            let key = args.iter().any(|a| a == "--open").then(bench_key);
            let sockets = bind_sockets(count)?;
            print_ports(&sockets)?;
            let mut window = Window::new(warmup, measure, coalesce);
            let line = match variant.as_str() {
                "recvmmsg" => recv_mmsg(&sockets, &mut window, key.as_ref())?,
                "io_uring" => recv_uring(&sockets, &mut window, key.as_ref())?,
                other => panic!("unknown variant {other}"),
            };
            emit(&line);
        }
        Some("send") => {
            let ports: Vec<u16> = arg(&args, "--ports", "")
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().expect("--ports"))
                .collect();
            let rate: f64 = arg(&args, "--rate", "50").parse().expect("--rate");
            let size: usize = arg(&args, "--size", "100").parse().expect("--size");
            let seconds: f64 = arg(&args, "--seconds", "10").parse().expect("--seconds");
            let key = args.iter().any(|a| a == "--open").then(bench_key);
            send(&ports, rate, size, seconds.min(600.0), key.as_ref())?;
        }
        _ => {
            eprintln!("usage: floor recv --variant recvmmsg|io_uring --sockets N --warmup-s W --measure-s S [--coalesce-ms C] [--open]");
            eprintln!("       floor send --ports P1,P2,... --rate 50 --size 100 --seconds T [--open]");
            std::process::exit(2);
        }
    }
    Ok(())
}
