//! The in-memory wire the loopback tests share: our `MediaPeer` and a str0m `Rtc` playing the
//! server, back to back, no sockets; time advances in 1 ms steps.

#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::MediaPeer;
use lkswarm_core::media::types::Datagram;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaData, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A library of one looped audio clip: 50 frames of 20 ms, each a 10-byte Opus-like payload.
pub fn audio_library() -> MediaLibrary {
    let frames = (0..50u8)
        .map(|i| ClipFrame { data: Arc::from(vec![0xf8, i, 1, 2, 3, 4, 5, 6, 7, 8].as_slice()), keyframe: true })
        .collect();
    let audio = Clip::new(frames, Duration::from_millis(20), 48_000).unwrap();
    MediaLibrary { audio: Some(Arc::new(audio)), ..MediaLibrary::default() }
}

/// A str0m answerer with Opus and VP8, reachable at `at`.
pub fn answerer(at: SocketAddr, now: Instant) -> Rtc {
    let mut server = Rtc::builder().enable_opus(true, false).enable_vp8(true).build(now);
    server.add_local_candidate(Candidate::host(at, "udp").unwrap());
    server
}

/// The server's side of one step: what it writes before the exchange, and what its events mean.
pub trait ServerSide {
    /// Called once per step after the server's timers, before datagrams are exchanged.
    fn before_exchange(&mut self, _server: &mut Rtc, _now: Instant) {}
    fn on_event(&mut self, _event: Event, _now: Instant) {}
}

/// Nothing to write, no event of interest.
pub struct Quiet;
impl ServerSide for Quiet {}

/// Advances `now` by `steps` ms, one step at a time: the peer's timeout and poll, the server's
/// timeout and `side`'s writes, then every datagram delivered both ways.
pub fn run(
    peer: &mut MediaPeer,
    server: &mut Rtc,
    server_addr: SocketAddr,
    now: &mut Instant,
    steps: u32,
    side: &mut dyn ServerSide,
) {
    run_losing(peer, server, server_addr, now, steps, side, &mut |_| false);
}

/// As `run`, but the wire loses every datagram to the peer for which `lose` says so.
pub fn run_losing(
    peer: &mut MediaPeer,
    server: &mut Rtc,
    server_addr: SocketAddr,
    now: &mut Instant,
    steps: u32,
    side: &mut dyn ServerSide,
    lose: &mut dyn FnMut(&Datagram) -> bool,
) {
    let mut rewire = |datagram: &Datagram| if lose(datagram) { Vec::new() } else { vec![datagram.clone()] };
    run_rewiring(peer, server, server_addr, now, steps, side, &mut rewire);
}

/// As `run`, but the peer receives, in place of each datagram sent to it, what `rewire` makes of
/// it: nothing (lost), the datagram, several copies, or something else (forged).
pub fn run_rewiring(
    peer: &mut MediaPeer,
    server: &mut Rtc,
    server_addr: SocketAddr,
    now: &mut Instant,
    steps: u32,
    side: &mut dyn ServerSide,
    rewire: &mut dyn FnMut(&Datagram) -> Vec<Datagram>,
) {
    let mut wire: Vec<Datagram> = Vec::new();
    for _ in 0..steps {
        *now += Duration::from_millis(1);
        let at = *now;
        peer.handle_timeout(at);
        peer.poll(at, &mut wire);
        server.handle_input(Input::Timeout(at)).unwrap();
        side.before_exchange(server, at);
        drain_server(server, &mut wire, side, at);
        for datagram in wire.drain(..) {
            if datagram.destination == server_addr {
                let receive =
                    Receive::new(Protocol::Udp, datagram.source, datagram.destination, &datagram.contents).unwrap();
                server.handle_input(Input::Receive(at, receive)).unwrap();
            } else {
                for delivered in rewire(&datagram) {
                    peer.handle_datagram(at, delivered.source, delivered.destination, &delivered.contents);
                }
            }
        }
        drain_server(server, &mut wire, side, at);
    }
}

/// An SRTP datagram (RFC 7983: first byte 128-191) that is RTP, not RTCP (payload types 72-76
/// with the marker bit are RTCP's 200-204).
pub fn is_rtp(datagram: &Datagram) -> bool {
    let bytes = &datagram.contents;
    bytes.len() > 12 && (128..192).contains(&bytes[0]) && !(72..=76).contains(&(bytes[1] & 0x7f))
}

fn drain_server(server: &mut Rtc, wire: &mut Vec<Datagram>, side: &mut dyn ServerSide, now: Instant) {
    loop {
        match server.poll_output().unwrap() {
            Output::Timeout(_) => return,
            Output::Transmit(t) => {
                wire.push(Datagram { source: t.source, destination: t.destination, contents: t.contents.into() })
            }
            Output::Event(event) => side.on_event(event, now),
        }
    }
}

/// A server that sends one 20 ms Opus frame every 20 ms on `audio` (a section and frames written)
/// from its DTLS connection on, and keeps what media it receives (frame mode).
#[derive(Default)]
pub struct OpusSender {
    pub audio: Option<(Mid, u64)>,
    pub connected_at: Option<Instant>,
    pub received: Vec<MediaData>,
}

impl ServerSide for OpusSender {
    fn before_exchange(&mut self, server: &mut Rtc, now: Instant) {
        let (Some((mid, frames)), Some(connected_at)) = (self.audio, self.connected_at) else { return };
        if now.duration_since(connected_at) < Duration::from_millis(20 * frames) {
            return;
        }
        let Some(writer) = server.writer(mid) else { return };
        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).unwrap().pt();
        let rtp_time = MediaTime::new(960 * frames, Frequency::FORTY_EIGHT_KHZ);
        // Errors while ICE restarts (no pair yet) are expected: the frame is lost, as on a network.
        let _ = writer.write(pt, now, rtp_time, vec![0xf8, 0xff, 0xfe]);
        self.audio = Some((mid, frames + 1));
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::MediaData(data) => self.received.push(data),
            Event::Connected => self.connected_at = Some(now),
            _ => {}
        }
    }
}
