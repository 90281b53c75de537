//! Wakes the Python event loop when the hub has events, instead of Python polling for them.
//!
//! An `eventfd` that the hub signals when its event list goes from empty to non-empty (under the
//! state lock, in `service`) and clears when the list is taken (under the same lock, in
//! `take_events`). So a reader woken by it always finds the events that woke it, and an event
//! pushed after a take signals again: none waits for a poll. Python registers the descriptor with
//! its loop (`loop.add_reader`); a steady run with no events wakes it never, where a 20 ms poll
//! woke it 50 times a second.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(super) struct EventsReady {
    fd: OwnedFd,
}

impl EventsReady {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventsReady { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable. A full counter (never, at one per empty-to-non-empty
    /// change) would refuse with EAGAIN while it is still readable, so errors are moot.
    pub(super) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Makes the descriptor unreadable again (EAGAIN when it already was).
    pub(super) fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from a descriptor we own.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(ready: &EventsReady) -> bool {
        let mut poll = libc::pollfd { fd: ready.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn a_signal_makes_the_descriptor_readable_until_it_is_cleared() {
        let ready = EventsReady::new().unwrap();
        assert!(!readable(&ready));
        ready.signal();
        ready.signal();
        assert!(readable(&ready));
        ready.clear();
        assert!(!readable(&ready));
        ready.clear(); // clearing an unreadable one is harmless
        assert!(!readable(&ready));
    }
}
