//! Batched UDP receive (`recvmmsg`) for the hub's worker.
//!
//! The hub's sockets are registered edge-triggered (mio), so a readable socket must be read until
//! the kernel says its queue is empty. One `recvfrom` per datagram plus a last one that answers
//! `WouldBlock` is two system calls for the common case of one queued datagram. A batch that
//! comes back short proves the queue empty in the same call, so that case costs one.
//!
//! Every datagram also carries the kernel's receive time (`SO_TIMESTAMPNS`, stamped when the
//! datagram reached the socket). The hub may read a socket milliseconds after that (it batches
//! wakeups, see `hub.rs`); arrival times for jitter, TWCC and "first packet" come from the kernel,
//! so that delay is never measured as the network's.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

/// Datagrams read per call.
pub const RECV_BATCH: usize = 8;
/// Room for one datagram; RTP on a 1500-byte MTU fits with margin.
pub const RECV_BUFFER_BYTES: usize = 2048;
/// Room for the control messages of one datagram: a `timespec` timestamp, with margin.
pub const CONTROL_BYTES: usize = 64;

/// One received datagram's length, source and kernel receive time.
#[derive(Debug, Clone, Copy, Default)]
struct Received {
    len: usize,
    /// Longer than its buffer (`MSG_TRUNC`): the bytes read are only a prefix.
    truncated: bool,
    source: Option<SocketAddr>,
    kernel_time: Option<Duration>,
}

/// Reusable buffers for `recv_batch`.
pub struct RecvBatch {
    buffers: Box<[[u8; RECV_BUFFER_BYTES]; RECV_BATCH]>,
    controls: Box<[[u64; CONTROL_BYTES / 8]; RECV_BATCH]>, // u64 for cmsghdr alignment
    received: [Received; RECV_BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: Box::new([[0; RECV_BUFFER_BYTES]; RECV_BATCH]),
            controls: Box::new([[0; CONTROL_BYTES / 8]; RECV_BATCH]),
            received: [Received::default(); RECV_BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last `recv_batch`: contents, source (None for an address family the
    /// hub never uses, which the caller drops) and the kernel's receive time as time since the Unix
    /// epoch (None when the socket was not set up with `enable_receive_timestamps`).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>, Option<Duration>)> {
        self.received[..self.count]
            .iter()
            .zip(self.buffers.iter())
            .map(|(received, buffer)| (&buffer[..received.len], received.source, received.kernel_time))
    }

    /// Whether datagram `index` of the last batch was longer than its buffer, so that its bytes
    /// are only a prefix (the caller drops and counts it: never fed as if whole).
    pub fn truncated(&self, index: usize) -> bool {
        self.received[..self.count].get(index).is_some_and(|received| received.truncated)
    }

    /// Whether the last batch was short, so the socket's queue was empty when it was read.
    pub fn drained(&self) -> bool {
        self.count < RECV_BATCH
    }
}

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time (`SO_TIMESTAMPNS`).
pub fn enable_receive_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid option pointer and length for an int-valued socket option.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads up to `RECV_BATCH` datagrams from the non-blocking socket `fd` into `batch`; returns how
/// many (an error of `WouldBlock` when none was queued).
pub fn recv_batch(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.count = 0;
    // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero lengths).
    let mut names: [libc::sockaddr_storage; RECV_BATCH] = unsafe { zeroed() };
    let mut iovecs: [MaybeUninit<libc::iovec>; RECV_BATCH] = [MaybeUninit::uninit(); RECV_BATCH];
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; RECV_BATCH] = unsafe { zeroed() };
    for (i, (buffer, control)) in batch.buffers.iter_mut().zip(batch.controls.iter_mut()).enumerate() {
        let iovec = iovecs[i].write(libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: RECV_BUFFER_BYTES });
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_iov = iovec;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = CONTROL_BYTES as _;
    }
    // SAFETY: every header points at a live buffer of RECV_BUFFER_BYTES, a sockaddr_storage and a
    // control buffer of CONTROL_BYTES, all of which outlive the call; the kernel writes at most
    // those lengths.
    let count = unsafe {
        libc::recvmmsg(fd, headers.as_mut_ptr(), RECV_BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
    };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = count as usize;
    for i in 0..count {
        let len = (headers[i].msg_len as usize).min(RECV_BUFFER_BYTES);
        let truncated = headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let kernel_time = kernel_timestamp(&headers[i].msg_hdr);
        batch.received[i] = Received { len, truncated, source: socket_addr(&names[i]), kernel_time };
    }
    batch.count = count;
    Ok(count)
}

/// The `SCM_TIMESTAMPNS` control message of a received datagram, if the kernel attached one.
fn kernel_timestamp(header: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `header` is what recvmmsg filled in: its control pointer and length describe bytes
    // the kernel wrote into our control buffer, which the CMSG macros walk without leaving it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let stamp = libc::CMSG_DATA(cmsg).cast::<libc::timespec>().read_unaligned();
                let seconds = u64::try_from(stamp.tv_sec).ok()?;
                let nanos = u32::try_from(stamp.tv_nsec).ok().filter(|n| *n < 1_000_000_000)?;
                return Some(Duration::new(seconds, nanos));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// The kernel receive time among control messages delivered as raw bytes (io_uring's multishot
/// `recvmsg` puts them inside the provided buffer, at no particular alignment).
pub fn control_timestamp(control: &[u8]) -> Option<Duration> {
    // Copied into storage aligned for `cmsghdr`, which the CMSG macros read field by field.
    let mut aligned = [0u64; CONTROL_BYTES / 8];
    let len = control.len().min(CONTROL_BYTES);
    // SAFETY: `aligned` has room for CONTROL_BYTES >= len bytes; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(control.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), len) };
    // SAFETY: all-zero is a valid msghdr.
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_control = aligned.as_mut_ptr().cast();
    header.msg_controllen = len as _;
    kernel_timestamp(&header)
}

/// A source address delivered as raw `sockaddr` bytes (io_uring's multishot `recvmsg`).
pub fn socket_addr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = name.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: `storage` has room for len bytes; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(), len)
    };
    socket_addr(&storage)
}

fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let v4 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(v6.sin6_port), v6.sin6_flowinfo, v6.sin6_scope_id)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_datagram_longer_than_its_buffer_is_marked_truncated() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&[7; RECV_BUFFER_BYTES + 1], receiver.local_addr().unwrap()).unwrap();
        sender.send_to(&[8; RECV_BUFFER_BYTES], receiver.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            match recv_batch(receiver.as_raw_fd(), &mut batch) {
                Ok(count) => got.extend((0..count).map(|i| batch.truncated(i))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.len() == 2 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, vec![true, false]);
        assert!(!batch.truncated(RECV_BATCH), "past the batch: not a datagram");
    }

    #[test]
    fn a_short_batch_reads_every_queued_datagram_with_its_source() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            sender.send_to(&[i; 5], receiver.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            match recv_batch(receiver.as_raw_fd(), &mut batch) {
                Ok(_) => got.extend(batch.datagrams().map(|(d, s, _)| (d.to_vec(), s))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.len() == 3 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 3);
        for (i, (data, source)) in got.iter().enumerate() {
            assert_eq!(data, &vec![i as u8; 5]);
            assert_eq!(*source, Some(sender.local_addr().unwrap()));
        }
        assert!(batch.drained() || batch.count == 0);
    }

    #[test]
    fn the_kernel_stamps_arrival_so_a_late_read_still_knows_when_the_datagram_came() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        enable_receive_timestamps(receiver.as_raw_fd()).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel turns receive stamping on in a deferred work item when the first socket asks
        // for it; until then it stamps at read time. So a few tries, one of which must be stamped
        // when it was sent.
        let mut seen = Vec::new();
        for _ in 0..10 {
            let before_send = std::time::SystemTime::now();
            sender.send_to(b"x", receiver.local_addr().unwrap()).unwrap();
            let after_send = std::time::SystemTime::now();
            std::thread::sleep(Duration::from_millis(60)); // the hub reading late
            let mut batch = RecvBatch::default();
            assert_eq!(recv_batch(receiver.as_raw_fd(), &mut batch).unwrap(), 1);
            let read_at = std::time::SystemTime::now();
            let (_, _, stamp) = batch.datagrams().next().unwrap();
            let stamp = std::time::UNIX_EPOCH + stamp.expect("SO_TIMESTAMPNS attached a timestamp");
            let slack = Duration::from_millis(1);
            if stamp + slack >= before_send && stamp <= after_send + slack {
                assert!(read_at.duration_since(stamp).unwrap() >= Duration::from_millis(59));
                return;
            }
            seen.push(stamp.duration_since(after_send).unwrap_or_default());
        }
        panic!("no datagram was stamped on arrival; stamped this long after the send: {seen:?}");
    }

    #[test]
    fn without_timestamps_enabled_a_datagram_has_none() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", receiver.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::default();
        for _ in 0..100 {
            if recv_batch(receiver.as_raw_fd(), &mut batch).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(batch.datagrams().map(|(_, _, stamp)| stamp).collect::<Vec<_>>(), vec![None]);
    }

    #[test]
    fn an_empty_socket_would_block() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let error = recv_batch(receiver.as_raw_fd(), &mut RecvBatch::default()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }
}
