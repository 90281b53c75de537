//! Software prefetch for the receive path.
//!
//! A received datagram's first touches of its peer are cache misses: the worker serves hundreds
//! of peers, each tens of KB, in arrival order, so a peer's lines are cold again by its next
//! datagram (the first counter a datagram bumps, the own SRTP receiver behind its box, the stream
//! table behind that). The epoll backend knows every ready socket before it reads the first, so it
//! asks for their peers' lines a level at a time (`MediaPeer::prefetch_receive`), and the misses
//! overlap with each other and with the `recvmmsg` calls in between.
//!
//! Measured (`bench/results/2026-12-06-media-ab-prefetch-epoll.json`: 300 ACTIVE audio
//! subscribers, 4 interleaved rounds): on epoll the media thread's CPU is 0.807x without it, lower
//! in every round. On io_uring, where a batch's datagrams are all copied before the first is fed,
//! the same prefetch saved nothing (1.36 against 1.38 CPU-s, 5 pairs): the misses moved into the
//! prefetch's own map lookups. So only `worker::run_worker` prefetches.

/// How many levels of pointers `MediaPeer::prefetch_receive` follows, 0 first: each level's
/// lines are read through pointers the level before brought in.
pub const RECEIVE_LEVELS: u8 = 3;

/// Asks the CPU to bring `value`'s first cache line into L1. A hint: it reads nothing the
/// program sees and never faults, whatever the address.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect and cannot fault; `value` is a live reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
