//! The media thread's CPU time, for the report: where a generator's CPU goes, the media thread
//! against Python's (the process total less this).
//!
//! Read from other threads through the thread's CPU clock while it runs; as it ends, the thread
//! stores its own total, so a read after `Hub::close` joined it still answers (Linux names a
//! thread's clock by its thread id, which a later thread may reuse: the clock is never read once
//! the thread has said it ended).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

pub(super) struct ThreadCpu {
    clock: Option<libc::clockid_t>,
    ended: AtomicBool,
    final_ns: AtomicU64,
}

fn read_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; a stale clock fails with EINVAL.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(u64::try_from(now.tv_sec).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec).ok()?)
}

impl ThreadCpu {
    /// The CPU clock of `worker`, which must not have been joined yet.
    pub(super) fn of(worker: &JoinHandle<()>) -> ThreadCpu {
        use std::os::unix::thread::JoinHandleExt;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread's pthread_t is valid until joined, and we hold its unjoined handle;
        // the call writes one clockid_t we own.
        let found = unsafe { libc::pthread_getcpuclockid(worker.as_pthread_t(), &mut clock) } == 0;
        ThreadCpu { clock: found.then_some(clock), ended: AtomicBool::new(false), final_ns: AtomicU64::new(0) }
    }

    /// Called by the thread itself as it ends.
    pub(super) fn record_end(&self) {
        if let Some(ns) = read_ns(libc::CLOCK_THREAD_CPUTIME_ID) {
            self.final_ns.store(ns, Ordering::Release);
        }
        self.ended.store(true, Ordering::Release);
    }

    /// CPU seconds the thread has used so far (all of them once it ended); None where the
    /// system gave no clock.
    pub(super) fn seconds(&self) -> Option<f64> {
        let ns = if self.ended.load(Ordering::Acquire) {
            Some(self.final_ns.load(Ordering::Acquire)).filter(|&ns| ns > 0)
        } else {
            self.clock.and_then(read_ns)
        };
        ns.map(|ns| ns as f64 / 1e9)
    }
}
