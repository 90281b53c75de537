//! The I/O shell of the media tier: UDP sockets, an I/O loop and a timer heap,
//! on one worker thread that never touches Python.
//!
//! Theory of operation
//! -------------------
//! A `Hub` owns every `MediaPeer` of a generator process and one UDP socket per
//! PeerConnection (bound to `bind_ip:0`): one for a single-PC (`/rtc/v1`) peer, one for a
//! dual-PC subscriber and a second once it publishes. Its worker thread waits (in io_uring, or
//! in epoll where io_uring is refused: `hub/io.rs`) until a datagram arrives or the earliest
//! peer deadline passes, then, under
//! the state lock: reads each ready socket until it would block and feeds the
//! datagrams to their peer; wakes every peer whose deadline passed; and for
//! each touched peer drains str0m's output, sending its datagrams from the
//! peer's own socket and re-arming its deadline in the heap.
//!
//! Python (the signaling side) calls in with short critical sections: adding
//! a peer, applying SDP, adding candidates, collecting events and stats. Each
//! call services the touched peer at once and pokes the worker (a mio `Waker`, or an eventfd
//! the io_uring ring reads), so a new deadline is never missed. No Python object exists per
//! packet; Python sees only state changes and totals.
//!
//! Wakeups are batched once every peer is connected. Each datagram is its own wakeup otherwise:
//! thousands a second, each a context switch that cost about 5.6 us, a sixth of the thread's CPU.
//! So in steady state the worker plans its wakeups on a grid of instants `COALESCE` apart, reading
//! everything that queued meanwhile in one round; a peer's deadline (a media frame, a str0m timer)
//! is served on the first instant at or after it, never later, so all deadlines of a step share one
//! wakeup (`worker::plan`; a datagram that arrives while the worker blocks still wakes it at once).
//! Audio frames, 20 ms apart, keep one phase of the grid; video frames (33.3 ms) leave 0-4 ms late.
//! Arrival times come from the kernel (`recv.rs`), so the batching shows in neither jitter nor TWCC. While any peer is still in its ICE/DTLS handshake there is
//! no nap and no grid, so `latency_ms.active` never includes one.
//!
//! The heap keeps one live entry per peer (`deadline.rs` says how). str0m
//! moves a receiver's deadline on nearly every packet; pushing each move (lazy
//! deletion) grew the heap to one entry per packet of the last few seconds,
//! whose sift-downs were a fifth of the loop's own time.
//! A panic inside one peer fails that peer only (`catch_unwind`); the lock is
//! recovered from poisoning so the other peers go on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::Token;
use str0m::config::DtlsCert;

use super::clip::MediaLibrary;
use super::data::DataSummary;
use super::deadline::Deadline;
use super::lag::LagHistogram;
use super::peer::{MediaPeer, PeerConfig, PeerEvent, RxTrack, Str0mDrops};
use super::recv::enable_receive_timestamps;
use super::types::{Datagram, IdHasher, IdMap, Pc, PeerCounters};
use crate::error::Error;

mod cpu;
mod data;
mod data_track;
mod io;
mod ready;
mod uring;
mod worker;

use cpu::ThreadCpu;
use io::{Driver, IoHandle};
pub use io::{IoChoice, MediaIo, MEDIA_IO_ENV};
use worker::{run_worker, service};
/// What Python learns about a peer, stamped with seconds since the hub started.
#[derive(Debug, Clone)]
pub struct HubEvent {
    pub peer: u32,
    pub at_s: f64,
    pub event: PeerEvent,
}

/// Final or current figures of one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerSummary {
    pub counters: PeerCounters,
    pub tracks: Vec<RxTrack>,
    pub subscriber_connected: bool,
    pub publisher_connected: bool,
    pub failed: bool,
    /// One PeerConnection for both directions: both `*_connected` then report it.
    pub single_pc: bool,
    /// Data-channel load (`media::data`).
    pub data: DataSummary,
    /// Why this peer received every SRTP packet through str0m, if it did (`peer/own_srtp.rs`).
    pub srtp_own_off: Option<&'static str>,
    /// RTP that str0m's receive path consumed without delivering media, by reason.
    pub str0m_rtp_drops: Str0mDrops,
}

/// Hub-wide running totals: live peers plus everything removed peers had counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubTotals {
    pub peers: u64,
    /// Connected primary PeerConnections: dual-PC subscribers and single PeerConnections.
    pub subscribers_connected: u64,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    /// Worker loop iterations (returns from epoll or io_uring waits) and peer timeouts served: where the
    /// hub's CPU goes.
    pub wakeups: u64,
    pub timeouts: u64,
    /// The I/O backend the worker runs (`Hub::io` also says why not io_uring, if it was refused).
    pub io: MediaIo,
    /// System calls the hub made to wait, sleep, receive and send (io_uring: `io_uring_enter`s):
    /// over `datagrams_received`, what the backend costs per packet.
    pub syscalls: u64,
    /// Data-channel probe messages sent, and messages / payload bytes received (`media::data`).
    pub data_sent: u64,
    pub data_received: u64,
    pub data_bytes_received: u64,
    /// Data-track frames sent and packets received (`media::data::track`).
    pub data_track_sent: u64,
    pub data_track_received: u64,
}

impl HubTotals {
    fn add_peer(&mut self, peer: &MediaPeer) {
        let c = &peer.counters;
        self.datagrams_received += c.datagrams_received;
        self.datagrams_sent += c.datagrams_sent;
        self.bytes_sent += c.bytes_sent;
        for track in peer.rx_tracks() {
            self.packets_received += track.stats.packets;
            self.bytes_received += track.stats.bytes;
            self.packets_expected += track.stats.expected();
            self.packets_lost += track.stats.lost();
        }
        let (data_sent, data_received, data_bytes_received) = peer.data().totals();
        self.data_sent += data_sent;
        self.data_received += data_received;
        self.data_bytes_received += data_bytes_received;
        let data = peer.data();
        self.data_track_sent += data.track_sender.counts.frames_sent;
        self.data_track_received += data.track_received.totals().0;
    }
}

struct Slot {
    /// Boxed: a `MediaPeer` is about 23 KB (two `Rtc`s), and inline it made every bucket of `slots`
    /// that size, so finding a datagram's peer by id missed the cache on the key alone.
    peer: Box<MediaPeer>,
    sockets: Vec<PcSocket>,
    deadline: Deadline,
    /// Counted in `State::connecting`.
    connecting: bool,
}

/// Whose a socket is: its peer, its index among the peer's sockets, and its address, kept here so
/// that a datagram's delivery reads no more of the peer's slot than the peer.
#[derive(Clone, Copy)]
struct Owner {
    peer: u32,
    index: usize,
    local: SocketAddr,
}

struct State {
    slots: IdMap<u32, Slot>,
    owners: IdMap<Token, Owner>,
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    events: Vec<HubEvent>,
    next_peer: u32,
    next_token: usize,
    send_errors: u64,
    scratch: Vec<Datagram>,
    /// What removed peers had counted, so `totals` never goes backwards.
    retired: HubTotals,
    wakeups: u64,
    timeouts: u64,
    /// How late each due deadline was served: the media thread's own saturation signal.
    timer_lag: LagHistogram,
    /// Data-message latency of removed peers (live peers keep their own; `data_latency` merges),
    /// slow readers' (`[1]`) apart from the others' (`[0]`).
    retired_data_latency: [LagHistogram; 2],
    /// Data-track packet latency of removed peers (`data_track_latency` merges the live ones').
    retired_data_track_latency: LagHistogram,
    /// Peers with a PeerConnection in its handshake; the worker batches wakeups only at 0.
    connecting: usize,
    /// A socket refused `SO_TIMESTAMPNS`: arrival times are then read times, so the worker never
    /// naps (a nap would show up as jitter).
    untimestamped: bool,
    /// See `HubTotals::syscalls`.
    syscalls: u64,
    /// io_uring only: sockets whose multishot receive the worker is to start, and to cancel.
    uring_arm: Vec<Token>,
    uring_cancel: Vec<Token>,
}

struct Shared {
    state: Mutex<State>,
    io: IoHandle,
    choice: IoChoice,
    stop: AtomicBool,
    anchor: Instant,
    bind_ip: IpAddr,
    cert: DtlsCert,
    library: Mutex<MediaLibrary>,
    /// Readable while `State::events` is non-empty (`ready`).
    events_ready: ready::EventsReady,
    /// The worker thread's CPU time (`Hub::thread_cpu_s`).
    cpu: ThreadCpu,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.anchor).as_secs_f64()
    }
}

pub struct Hub {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Hub {
    /// Starts the worker thread. `bind_ip` is where PeerConnection sockets listen. The I/O
    /// backend is the one `LKSWARM_MEDIA_IO` names, else the best available (`io.rs`).
    pub fn start(bind_ip: IpAddr) -> crate::Result<Hub> {
        Self::start_with(bind_ip, None)
    }

    /// `start`, with the I/O backend forced (`io`), or chosen as `start` does (None).
    pub fn start_with(bind_ip: IpAddr, io: Option<MediaIo>) -> crate::Result<Hub> {
        Self::start_inner(bind_ip, io).map_err(Error::media)
    }

    fn start_inner(bind_ip: IpAddr, io: Option<MediaIo>) -> Result<Hub, String> {
        let forced = io::requested(io)?;
        let cert = super::shared_certificate()?;
        // The backend is opened on the worker thread, which alone may drive an io_uring ring;
        // its other half (`IoHandle`) comes back here for `Shared`, and `Shared` goes back.
        let (opened_tx, opened_rx) = mpsc::channel::<Result<(IoHandle, IoChoice), String>>();
        let (shared_tx, shared_rx) = mpsc::channel::<Arc<Shared>>();
        let worker = std::thread::Builder::new()
            .name("lkswarm-media".into())
            .spawn(move || {
                let driver = match io::open(forced, bind_ip) {
                    Ok((driver, handle, choice)) => {
                        let _ = opened_tx.send(Ok((handle, choice)));
                        driver
                    }
                    Err(error) => {
                        let _ = opened_tx.send(Err(error));
                        return;
                    }
                };
                let Ok(shared) = shared_rx.recv() else { return };
                match driver {
                    Driver::Epoll(poll) => run_worker(&shared, poll),
                    Driver::Uring(uring) => uring.run(&shared),
                }
                shared.cpu.record_end();
            })
            .map_err(|e| format!("cannot start the media thread: {e}"))?;
        let (handle, choice) = opened_rx.recv().map_err(|_| "the media thread ended at start".to_string())??;
        let events_ready =
            ready::EventsReady::new().map_err(|e| format!("cannot create the hub's event descriptor: {e}"))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: IdMap::default(),
                owners: IdMap::default(),
                heap: BinaryHeap::new(),
                events: Vec::new(),
                next_peer: 1,
                next_token: 0,
                send_errors: 0,
                scratch: Vec::new(),
                retired: HubTotals::default(),
                wakeups: 0,
                timeouts: 0,
                timer_lag: LagHistogram::default(),
                retired_data_latency: [LagHistogram::default(), LagHistogram::default()],
                retired_data_track_latency: LagHistogram::default(),
                connecting: 0,
                untimestamped: false,
                syscalls: 0,
                uring_arm: Vec::new(),
                uring_cancel: Vec::new(),
            }),
            io: handle,
            choice,
            events_ready,
            cpu: ThreadCpu::of(&worker),
            stop: AtomicBool::new(false),
            anchor: Instant::now(),
            bind_ip,
            cert,
            library: Mutex::new(MediaLibrary::default()),
        });
        shared_tx.send(Arc::clone(&shared)).map_err(|_| "the media thread ended at start".to_string())?;
        Ok(Hub { shared, worker: Mutex::new(Some(worker)) })
    }

    pub fn set_library(&self, library: MediaLibrary) {
        *self.shared.library.lock().unwrap_or_else(|p| p.into_inner()) = library;
    }

    /// Seconds since the hub started (the clock of `HubEvent::at_s`).
    pub fn now_s(&self) -> f64 {
        self.shared.seconds(Instant::now())
    }

    /// Creates a peer with its primary socket (the subscriber PeerConnection's, or with
    /// `config.single_pc` the one PeerConnection's); returns (peer id, its port).
    pub fn add_peer(&self, config: PeerConfig) -> crate::Result<(u32, u16)> {
        self.add_peer_inner(config).map_err(Error::media)
    }

    fn add_peer_inner(&self, config: PeerConfig) -> Result<(u32, u16), String> {
        let library = self.shared.library.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut state = self.shared.lock();
        let (socket, local) = self.bind()?;
        let now = Instant::now();
        let peer = guarded(|| MediaPeer::new(&self.shared.cert, local, library, config, now))??;
        let id = state.next_peer;
        state.next_peer += 1;
        let socket = register(&self.shared.io, &mut state, id, 0, socket, local)?;
        state.slots.insert(
            id,
            Slot { peer: Box::new(peer), sockets: vec![socket], deadline: Deadline::new(now), connecting: false },
        );
        service(&self.shared, &mut state, id, now, None); // arms the connect deadline and str0m's first timer
        drop(state);
        self.shared.io.wake(); // the worker may be waiting on a later deadline
        Ok((id, local.port()))
    }

    fn bind(&self) -> Result<(UdpSocket, SocketAddr), String> {
        let socket = UdpSocket::bind(SocketAddr::new(self.shared.bind_ip, 0))
            .map_err(|e| format!("cannot bind a UDP socket on {}: {e}", self.shared.bind_ip))?;
        let local = socket.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        Ok((socket, local))
    }

    /// Runs `f` on one peer under the lock, services it, and wakes the worker.
    fn with_peer<T>(&self, id: u32, f: impl FnOnce(&mut MediaPeer, Instant) -> Result<T, String>) -> Result<T, String> {
        let mut state = self.shared.lock();
        let now = Instant::now();
        let slot = state.slots.get_mut(&id).ok_or_else(|| format!("no media peer {id}"))?;
        let result = match catch_unwind(AssertUnwindSafe(|| f(&mut slot.peer, now))) {
            Ok(result) => result,
            Err(_) => {
                slot.peer.fail(now, "internal_error", "panic in the media tier".into());
                Err("panic in the media tier".into())
            }
        };
        service(&self.shared, &mut state, id, now, None);
        drop(state);
        self.shared.io.wake();
        result
    }

    pub fn accept_offer(&self, id: u32, sdp: &str) -> crate::Result<String> {
        self.with_peer(id, |peer, _| peer.accept_offer(sdp)).map_err(Error::media)
    }

    /// Applies the server's answer. A dual-PC peer's is to its publisher offer (returns None); a
    /// single-PC peer's maps mids to tracks (`mid_to_track_id` wins over `a=msid`) and returns the
    /// follow-up offer (sdp, id) if a re-offer was asked for meanwhile.
    pub fn accept_answer(
        &self,
        id: u32,
        sdp: &str,
        mid_to_track_id: Option<&HashMap<String, String>>,
    ) -> crate::Result<Option<(String, u32)>> {
        self.with_peer(id, |peer, _| {
            if peer.is_single() {
                peer.accept_single_answer(sdp, mid_to_track_id)
            } else {
                peer.accept_answer(sdp).map(|()| None)
            }
        })
        .map_err(Error::media)
    }

    /// A single-PC peer's join offer (sdp, id 1): its send sections, receive sections and data channels.
    pub fn join_offer(
        &self,
        id: u32,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
    ) -> crate::Result<(String, u32)> {
        self.with_peer(id, |peer, now| peer.create_join_offer(audio_cid, video_cid, now)).map_err(Error::media)
    }

    /// A single-PC peer's re-offer for `media_sections_requirement` (sdp, id), or None while an
    /// offer is pending (the follow-up then comes back from `accept_answer`).
    pub fn reoffer(&self, id: u32, audios: u32, videos: u32) -> crate::Result<Option<(String, u32)>> {
        self.with_peer(id, |peer, _| peer.reoffer(audios, videos)).map_err(Error::media)
    }

    /// A single-PC peer's ICE restart after a signal resume (sdp, id): an offer with new ICE
    /// credentials, replacing any pending offer. `PeerEvent::MediaResumed` follows once ICE is
    /// connected again and media flows; the peer fails if not within its connect timeout.
    pub fn ice_restart(&self, id: u32) -> crate::Result<(String, u32)> {
        self.with_peer(id, |peer, now| peer.ice_restart(now)).map_err(Error::media)
    }

    pub fn add_remote_candidate(&self, id: u32, pc: Pc, candidate_init: &str) -> crate::Result<()> {
        self.with_peer(id, |peer, now| peer.add_remote_candidate(pc, candidate_init, now)).map_err(Error::media)
    }

    /// Opens the publisher PeerConnection (a second socket) and returns its offer; with `data`
    /// it carries the `_reliable` and `_lossy` channels.
    pub fn publisher_offer(
        &self,
        id: u32,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        data: bool,
    ) -> crate::Result<String> {
        self.publisher_offer_inner(id, audio_cid, video_cid, data).map_err(Error::media)
    }

    fn publisher_offer_inner(
        &self,
        id: u32,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        data: bool,
    ) -> Result<String, String> {
        let (socket, local) = self.bind()?;
        let cert = self.shared.cert.clone();
        let offer =
            self.with_peer(id, |peer, now| peer.create_publisher_offer(local, &cert, audio_cid, video_cid, data, now))?;
        let mut state = self.shared.lock();
        let socket = register(&self.shared.io, &mut state, id, 1, socket, local)?;
        if let Some(slot) = state.slots.get_mut(&id) {
            slot.sockets.push(socket);
        }
        Ok(offer)
    }

    /// Closes a peer's sockets and forgets it; returns its final figures.
    pub fn remove_peer(&self, id: u32) -> Option<PeerSummary> {
        let mut state = self.shared.lock();
        let mut slot = state.slots.remove(&id)?;
        state.connecting -= usize::from(slot.connecting);
        let summary = summarize(&slot.peer);
        state.retired.add_peer(&slot.peer);
        if let Some(latency) = &slot.peer.data().latency {
            let slow = usize::from(slot.peer.data().slow.is_some());
            state.retired_data_latency[slow].merge(latency);
        }
        if let Some(latency) = &slot.peer.data().track_received.latency {
            state.retired_data_track_latency.merge(latency);
        }
        for socket in &mut slot.sockets {
            self.shared.io.deregister(&mut state, socket.token, &mut socket.socket);
            state.owners.remove(&socket.token);
        }
        Some(summary)
    }

    pub fn summary(&self, id: u32) -> Option<PeerSummary> {
        self.shared.lock().slots.get(&id).map(|slot| summarize(&slot.peer))
    }

    /// Running totals over every peer this hub has had (cheap enough to call every second).
    pub fn totals(&self) -> HubTotals {
        let state = self.shared.lock();
        let mut totals = state.retired;
        totals.peers = state.slots.len() as u64;
        totals.wakeups = state.wakeups;
        totals.timeouts = state.timeouts;
        totals.io = self.shared.choice.backend;
        totals.syscalls = state.syscalls;
        totals.subscribers_connected = 0;
        for slot in state.slots.values() {
            totals.add_peer(&slot.peer);
            totals.subscribers_connected += u64::from(slot.peer.is_connected(Pc::Subscriber));
        }
        totals
    }

    /// How late the media thread served its peers' deadlines, over the hub's life.
    pub fn timer_lag(&self) -> LagHistogram {
        self.shared.lock().timer_lag.clone()
    }

    /// (deadlines served, those served later than `limit`), for a running saturation check.
    pub fn timer_lag_above(&self, limit: Duration) -> (u64, u64) {
        let state = self.shared.lock();
        let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        (state.timer_lag.count(), state.timer_lag.count_above_us(limit_us))
    }

    pub fn take_events(&self) -> Vec<HubEvent> {
        let mut state = self.shared.lock();
        self.shared.events_ready.clear(); // under the lock: a later push signals again
        std::mem::take(&mut state.events)
    }

    /// A descriptor that is readable while events wait for `take_events` (see `hub/ready.rs`).
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        self.shared.events_ready.fd()
    }

    pub fn peer_count(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// The I/O backend the worker runs, and why not io_uring if it was refused.
    pub fn io(&self) -> IoChoice {
        self.shared.choice.clone()
    }

    /// CPU seconds the media thread has used (all of them after `close`); None where the system
    /// gave no thread clock.
    pub fn thread_cpu_s(&self) -> Option<f64> {
        self.shared.cpu.seconds()
    }

    pub fn send_errors(&self) -> u64 {
        self.shared.lock().send_errors
    }

    /// Stops the worker and drops every peer (closing their sockets).
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.io.wake();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
        let mut state = self.shared.lock();
        state.slots.clear();
        state.owners.clear();
        state.heap.clear();
        state.connecting = 0;
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.close();
    }
}

struct PcSocket {
    socket: UdpSocket,
    token: Token,
    local: SocketAddr,
}

fn register(
    io: &IoHandle,
    state: &mut State,
    id: u32,
    index: usize,
    mut socket: UdpSocket,
    local: SocketAddr,
) -> Result<PcSocket, String> {
    let token = Token(state.next_token);
    state.next_token += 1;
    if enable_receive_timestamps(socket.as_raw_fd()).is_err() {
        state.untimestamped = true;
    }
    state.owners.insert(token, Owner { peer: id, index, local });
    if let Err(error) = io.register(state, token, &mut socket) {
        state.owners.remove(&token);
        return Err(error);
    }
    Ok(PcSocket { socket, token, local })
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| "panic in the media tier".to_string())
}

fn summarize(peer: &MediaPeer) -> PeerSummary {
    PeerSummary {
        counters: peer.counters.clone(),
        tracks: peer.rx_tracks().cloned().collect(),
        subscriber_connected: peer.is_connected(Pc::Subscriber),
        publisher_connected: peer.is_connected(Pc::Publisher),
        failed: peer.is_failed(),
        single_pc: peer.is_single(),
        data: peer.data().summary(),
        srtp_own_off: peer.own_srtp_off_reason(),
        str0m_rtp_drops: peer.str0m_rtp_drops(),
    }
}
