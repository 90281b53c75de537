//! Which I/O backend the hub's worker runs, chosen at start and recorded in its totals.
//!
//! - `io_uring` (`uring.rs`): a multishot `recvmsg` per socket over a ring of provided buffers, and
//!   every datagram of a wakeup sent as `SendMsg` entries in one submission: a few system calls
//!   per wakeup, whatever the number of sockets or datagrams.
//! - `epoll` (`worker.rs`): mio's epoll, one `recvmmsg` per ready socket, one `sendmmsg` per
//!   serviced socket. The fallback wherever io_uring is refused: Docker's default seccomp profile
//!   answers `io_uring_setup` with EPERM, `kernel.io_uring_disabled` refuses it, older kernels
//!   lack multishot `recvmsg` (6.0) or provided buffer rings (5.19).
//!
//! Unless forced (`Hub::start_with`, or `LKSWARM_MEDIA_IO=io_uring|epoll`), the hub tries io_uring
//! and falls back to epoll, keeping the refusal as one line for the report. A forced backend that
//! cannot start is an error rather than a silent fallback, so a test of it tests what it names.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::net::UdpSocket;
use mio::{Interest, Poll, Registry, Token, Waker};

use super::uring::Uring;
use super::State;

/// The environment variable that forces a backend: `io_uring` or `epoll`.
pub const MEDIA_IO_ENV: &str = "LKSWARM_MEDIA_IO";
/// The epoll backend's waker.
pub(super) const WAKER_TOKEN: Token = Token(usize::MAX);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaIo {
    IoUring,
    #[default]
    Epoll,
}

impl MediaIo {
    pub fn name(self) -> &'static str {
        match self {
            MediaIo::IoUring => "io_uring",
            MediaIo::Epoll => "epoll",
        }
    }

    pub fn from_name(name: &str) -> Option<MediaIo> {
        match name {
            "io_uring" => Some(MediaIo::IoUring),
            "epoll" => Some(MediaIo::Epoll),
            _ => None,
        }
    }
}

/// The backend a hub runs, and why not io_uring when it was wanted but refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IoChoice {
    pub backend: MediaIo,
    pub fallback: Option<String>,
}

/// The backend asked for: `explicit` if given, else `LKSWARM_MEDIA_IO`, else None (try io_uring).
pub(super) fn requested(explicit: Option<MediaIo>) -> Result<Option<MediaIo>, String> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    match std::env::var(MEDIA_IO_ENV) {
        Ok(value) if value.is_empty() || value == "auto" => Ok(None),
        Ok(value) => MediaIo::from_name(&value)
            .map(Some)
            .ok_or_else(|| format!("{MEDIA_IO_ENV}={value:?}: expected io_uring, epoll or auto")),
        Err(_) => Ok(None),
    }
}

/// Applies the rule of the module doc to `forced` and the outcome of `try_uring`.
pub(super) fn choose<U>(
    forced: Option<MediaIo>,
    try_uring: impl FnOnce() -> Result<U, String>,
) -> Result<(Option<U>, IoChoice), String> {
    match forced {
        Some(MediaIo::Epoll) => Ok((None, IoChoice { backend: MediaIo::Epoll, fallback: None })),
        Some(MediaIo::IoUring) => try_uring()
            .map(|uring| (Some(uring), IoChoice { backend: MediaIo::IoUring, fallback: None }))
            .map_err(|refused| format!("io_uring was asked for and refused: {refused}")),
        None => Ok(match try_uring() {
            Ok(uring) => (Some(uring), IoChoice { backend: MediaIo::IoUring, fallback: None }),
            Err(refused) => (None, IoChoice { backend: MediaIo::Epoll, fallback: Some(refused) }),
        }),
    }
}

/// The worker's half of a backend, owned by the worker thread (an io_uring ring must be driven
/// by the thread that made it: `IORING_SETUP_SINGLE_ISSUER`).
pub(super) enum Driver {
    Epoll(Poll),
    Uring(Box<Uring>),
}

/// The half the other threads use: waking the worker and (un)registering sockets.
pub(super) enum IoHandle {
    Epoll {
        registry: Registry,
        waker: Waker,
    },
    /// An eventfd the ring reads; sockets are armed and cancelled by the worker itself.
    Uring {
        wake: OwnedFd,
    },
}

impl IoHandle {
    pub(super) fn wake(&self) {
        match self {
            IoHandle::Epoll { waker, .. } => {
                let _ = waker.wake();
            }
            IoHandle::Uring { wake } => {
                let one: u64 = 1;
                // SAFETY: writes the 8 bytes of `one` to an eventfd we own. An error (a full
                // counter) means the worker is already due to wake.
                let _ = unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
            }
        }
    }

    pub(super) fn register(&self, state: &mut State, token: Token, socket: &mut UdpSocket) -> Result<(), String> {
        match self {
            IoHandle::Epoll { registry, .. } => {
                registry.register(socket, token, Interest::READABLE).map_err(|e| format!("epoll register: {e}"))
            }
            IoHandle::Uring { .. } => {
                state.uring_arm.push(token);
                self.wake();
                Ok(())
            }
        }
    }

    pub(super) fn deregister(&self, state: &mut State, token: Token, socket: &mut UdpSocket) {
        match self {
            IoHandle::Epoll { registry, .. } => {
                let _ = registry.deregister(socket);
            }
            IoHandle::Uring { .. } => {
                // The ring holds the socket open until its receive is cancelled.
                state.uring_cancel.push(token);
                self.wake();
            }
        }
    }
}

/// Opens the backend `forced` names, or the best one available (see the module doc).
pub(super) fn open(forced: Option<MediaIo>, bind_ip: IpAddr) -> Result<(Driver, IoHandle, IoChoice), String> {
    let mut wake_fd = None;
    let (uring, choice) = choose(forced, || {
        // Blocking: io_uring completes a read of an O_NONBLOCK file with EAGAIN instead of waiting.
        // A writer blocks only on a full counter (2^64 - 2 wakes), never in practice.
        // SAFETY: eventfd takes no pointers; a non-negative result is a descriptor we now own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let uring = Uring::open(bind_ip, fd.as_raw_fd())?;
        wake_fd = Some(fd);
        Ok(uring)
    })?;
    if let (Some(uring), Some(wake)) = (uring, wake_fd) {
        return Ok((Driver::Uring(Box::new(uring)), IoHandle::Uring { wake }, choice));
    }
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let registry = poll.registry().try_clone().map_err(|e| format!("epoll: {e}"))?;
    let waker = Waker::new(poll.registry(), WAKER_TOKEN).map_err(|e| format!("eventfd: {e}"))?;
    Ok((Driver::Epoll(poll), IoHandle::Epoll { registry, waker }, choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_io_uring_falls_back_to_epoll_and_says_why() {
        let (uring, choice) = choose::<()>(None, || Err("io_uring_setup: Operation not permitted".into())).unwrap();
        assert!(uring.is_none());
        assert_eq!(choice.backend, MediaIo::Epoll);
        assert_eq!(choice.fallback.as_deref(), Some("io_uring_setup: Operation not permitted"));
    }

    #[test]
    fn a_forced_backend_is_never_silently_replaced() {
        let error = choose::<()>(Some(MediaIo::IoUring), || Err("EPERM".into())).unwrap_err();
        assert!(error.contains("refused: EPERM"), "{error}");
        let (uring, choice) = choose::<()>(Some(MediaIo::Epoll), || panic!("never tried")).unwrap();
        assert!(uring.is_none());
        assert_eq!(choice, IoChoice { backend: MediaIo::Epoll, fallback: None });
        let (uring, choice) = choose(None, || Ok(7)).unwrap();
        assert_eq!((uring, choice.backend, choice.fallback), (Some(7), MediaIo::IoUring, None));
    }

    #[test]
    fn the_request_comes_from_the_argument_before_the_environment() {
        assert_eq!(requested(Some(MediaIo::Epoll)), Ok(Some(MediaIo::Epoll)));
        assert_eq!(MediaIo::from_name("io_uring"), Some(MediaIo::IoUring));
        assert_eq!(MediaIo::from_name("uring"), None);
        assert_eq!(MediaIo::IoUring.name(), "io_uring");
    }

    #[test]
    fn forcing_epoll_opens_epoll_with_no_fallback() {
        // The whole path, not the rule alone: an epoll hub opens and reports no fallback.
        let (driver, _handle, choice) = open(Some(MediaIo::Epoll), "127.0.0.1".parse().unwrap()).unwrap();
        assert!(matches!(driver, Driver::Epoll(_)));
        assert_eq!(choice, IoChoice { backend: MediaIo::Epoll, fallback: None });
    }
}
