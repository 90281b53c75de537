//! Batched UDP receive (`recvmmsg`) for the hub's worker.
//!
//! The hub's sockets are registered edge-triggered (mio), so a readable socket must be read until
//! the kernel says its queue is empty. One `recvfrom` per datagram plus a last one that answers
//! `WouldBlock` is two system calls for the common case of one queued datagram. A batch that
//! comes back short proves the queue empty in the same call, so that case costs one.

use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams read per call.
pub const RECV_BATCH: usize = 8;
/// Room for one datagram; RTP on a 1500-byte MTU fits with margin.
pub const RECV_BUFFER_BYTES: usize = 2048;

/// Reusable buffers for `recv_batch`.
pub struct RecvBatch {
    buffers: Box<[[u8; RECV_BUFFER_BYTES]; RECV_BATCH]>,
    received: [(usize, Option<SocketAddr>); RECV_BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: Box::new([[0; RECV_BUFFER_BYTES]; RECV_BATCH]),
            received: [(0, None); RECV_BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last `recv_batch`: contents and source (None for an address family
    /// the hub never uses, which the caller drops).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        self.received[..self.count]
            .iter()
            .zip(self.buffers.iter())
            .map(|(&(len, source), buffer)| (&buffer[..len], source))
    }

    /// Whether the last batch was short, so the socket's queue was empty when it was read.
    pub fn drained(&self) -> bool {
        self.count < RECV_BATCH
    }
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
    for (i, buffer) in batch.buffers.iter_mut().enumerate() {
        let iovec = iovecs[i].write(libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: RECV_BUFFER_BYTES });
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_iov = iovec;
        header.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live buffer of RECV_BUFFER_BYTES and a sockaddr_storage,
    // all of which outlive the call; the kernel writes at most those lengths.
    let count = unsafe {
        libc::recvmmsg(fd, headers.as_mut_ptr(), RECV_BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
    };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = count as usize;
    for i in 0..count {
        let len = (headers[i].msg_len as usize).min(RECV_BUFFER_BYTES);
        batch.received[i] = (len, socket_addr(&names[i]));
    }
    batch.count = count;
    Ok(count)
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
                Ok(_) => got.extend(batch.datagrams().map(|(d, s)| (d.to_vec(), s))),
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
    fn an_empty_socket_would_block() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        let error = recv_batch(receiver.as_raw_fd(), &mut RecvBatch::default()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }
}
