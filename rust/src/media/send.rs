//! Batched UDP send (`sendmmsg`) for the hub.
//!
//! A peer serviced once per wakeup often has several datagrams for one socket (RTCP, TWCC
//! feedback, a video frame in several packets). `sendmmsg` sends them in one system call where one
//! `sendto` each cost a call apiece. It needs no io_uring, so it is also what the epoll backend and
//! the Python-side calls (`Hub::with_peer`) use.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::types::Datagram;

/// Datagrams handed to one `sendmmsg`.
const SEND_BATCH: usize = 32;

/// `address` as the C socket address the kernel reads, and its length.
pub fn c_socket_addr(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match address {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for a sockaddr_in.
            let out = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = v4.port().to_be();
            out.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let out = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            out.sin6_flowinfo = v6.flowinfo();
            out.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// What one `send_batch` did: datagrams the kernel refused, and system calls made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    pub errors: u64,
    pub syscalls: u64,
}

/// Sends every datagram of `datagrams` from the non-blocking socket `fd`, `SEND_BATCH` to a call.
/// A datagram the kernel refuses (a full buffer, an unreachable address) is counted and skipped;
/// the ones after it are still sent.
pub fn send_batch<'a>(fd: RawFd, datagrams: impl Iterator<Item = &'a Datagram>) -> SendOutcome {
    let mut outcome = SendOutcome::default();
    let mut datagrams = datagrams.peekable();
    // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero lengths).
    let mut names: [libc::sockaddr_storage; SEND_BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iovecs: [libc::iovec; SEND_BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { zeroed() };
    while datagrams.peek().is_some() {
        let mut count = 0;
        while count < SEND_BATCH {
            let Some(datagram) = datagrams.next() else { break };
            let (name, name_len) = c_socket_addr(datagram.destination);
            names[count] = name;
            iovecs[count] = libc::iovec {
                iov_base: datagram.contents.as_ptr().cast_mut().cast(),
                iov_len: datagram.contents.len(),
            };
            let header = &mut headers[count].msg_hdr;
            header.msg_name = (&mut names[count] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = name_len;
            header.msg_iov = &mut iovecs[count];
            header.msg_iovlen = 1;
            count += 1;
        }
        let mut first = 0;
        while first < count {
            // SAFETY: headers[first..count] each point at a live name, one iovec and the datagram's
            // bytes (borrowed for the whole call); the kernel only reads them.
            let sent = unsafe {
                libc::sendmmsg(fd, headers[first..].as_mut_ptr(), (count - first) as libc::c_uint, libc::MSG_DONTWAIT)
            };
            outcome.syscalls += 1;
            if sent < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                outcome.errors += 1; // the first unsent datagram is refused: skip it, send the rest
                first += 1;
            } else {
                first += (sent as usize).max(1).min(count - first);
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn one_call_sends_a_run_of_datagrams_to_their_destinations() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receivers: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let datagrams: Vec<Datagram> = (0..5u8)
            .map(|i| Datagram {
                source: sender.local_addr().unwrap(),
                destination: receivers[usize::from(i % 2)].local_addr().unwrap(),
                contents: vec![i; 3 + usize::from(i)],
            })
            .collect();
        let outcome = send_batch(sender.as_raw_fd(), datagrams.iter());
        assert_eq!(outcome, SendOutcome { errors: 0, syscalls: 1 });
        let mut buffer = [0u8; 64];
        for (i, receiver) in [0u8, 2, 4, 1, 3].iter().map(|&i| (i, &receivers[usize::from(i % 2)])) {
            receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let (len, from) = receiver.recv_from(&mut buffer).unwrap();
            assert_eq!((&buffer[..len], from), (&vec![i; 3 + usize::from(i)][..], sender.local_addr().unwrap()));
        }
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_rest_still_go() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to =
            |destination: SocketAddr| Datagram { source: sender.local_addr().unwrap(), destination, contents: vec![7] };
        // An IPv6 destination from an IPv4 socket: EAFNOSUPPORT for that one datagram.
        let datagrams = [to("[::1]:9".parse().unwrap()), to(receiver.local_addr().unwrap())];
        let outcome = send_batch(sender.as_raw_fd(), datagrams.iter());
        assert_eq!(outcome.errors, 1);
        receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(receiver.recv_from(&mut [0u8; 8]).unwrap().0, 1);
    }
}
