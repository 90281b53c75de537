//! Two sans-I/O media peers wired back to back in memory: no sockets, no server.
//! Peer A publishes audio; peer B's subscriber PeerConnection answers A's offer, as
//! livekit-server's subscriber offer would be answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::audio_library as library;
use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary, VideoCodec};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig, PeerEvent};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::{Datagram, Pc};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An H.264 loop in Annex B: SPS, PPS and an IDR slice first, then non-IDR slices larger than one
/// packet, so the publisher must fragment them (FU-A). The slice bytes are not decodable; the
/// subscriber counts packets and never depacketizes.
fn h264_library() -> MediaLibrary {
    let nal = |header: u8, len: usize| -> Vec<u8> {
        let mut unit = vec![0, 0, 0, 1, header];
        unit.extend((0..len).map(|i| (i % 251) as u8 | 0x01)); // never a start code inside
        unit
    };
    let mut frames = vec![[nal(0x67, 10), nal(0x68, 4), nal(0x65, 3_000)].concat()];
    frames.extend((1..30).map(|_| nal(0x41, 2_500)));
    let frames = frames.into_iter().enumerate().map(|(i, data)| ClipFrame { data: data.into(), keyframe: i == 0 });
    let video = Clip::new(frames.collect(), Duration::from_millis(33), 90_000).unwrap();
    MediaLibrary { video: vec![Arc::new(video)], video_codec: VideoCodec::H264, ..library() }
}

struct Pair {
    a: MediaPeer,
    b: MediaPeer,
    now: Instant,
}

impl Pair {
    fn new(config: PeerConfig) -> Pair {
        let cert = shared_certificate().unwrap();
        let now = Instant::now();
        let mut a = MediaPeer::new(&cert, addr(10_001), library(), config.clone(), now).unwrap();
        let mut b = MediaPeer::new(&cert, addr(10_003), library(), config, now).unwrap();
        let offer = a.create_publisher_offer(addr(10_002), &cert, Some("cid-audio"), None, false, now).unwrap();
        let answer = b.accept_offer(&offer).unwrap();
        a.accept_answer(&answer).unwrap();
        Pair { a, b, now }
    }

    /// Advances time in 1 ms steps, delivering every datagram unless `drop` says so.
    fn run(&mut self, steps: u32, mut drop: impl FnMut(&Datagram) -> bool) {
        let mut wire: Vec<Datagram> = Vec::new();
        for _ in 0..steps {
            self.now += Duration::from_millis(1);
            let now = self.now;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.a.poll(now, &mut wire);
            self.b.poll(now, &mut wire);
            for datagram in wire.drain(..) {
                if drop(&datagram) {
                    continue;
                }
                let target = if self.b.pc_for(datagram.destination).is_some() { &mut self.b } else { &mut self.a };
                target.handle_datagram(now, datagram.source, datagram.destination, &datagram.contents);
            }
        }
    }
}

#[test]
fn peers_connect_and_audio_flows_without_loss() {
    let mut pair = Pair::new(PeerConfig::default());
    pair.run(3_000, |_| false);
    assert!(pair.a.is_connected(Pc::Publisher));
    assert!(pair.b.is_connected(Pc::Subscriber));
    let tracks: Vec<_> = pair.b.rx_tracks().collect();
    assert_eq!(tracks.len(), 1);
    let track = tracks[0];
    assert_eq!(track.kind, "audio");
    assert_eq!(track.codec, "audio/opus");
    assert_eq!(track.track_id, "cid-audio");
    assert!(track.stats.packets > 100, "{} packets", track.stats.packets);
    assert_eq!(track.stats.lost(), 0);
    let events = pair.b.take_events();
    assert!(events.iter().any(|(_, e)| *e == PeerEvent::Connected { pc: Pc::Subscriber, primary: true }));
    assert!(events
        .iter()
        .any(|(_, e)| matches!(e, PeerEvent::FirstPacket { track_id, .. } if track_id == "cid-audio")));
}

#[test]
fn h264_video_is_offered_alone_fragmented_and_received_without_loss() {
    let cert = shared_certificate().unwrap();
    let now = Instant::now();
    let mut a = MediaPeer::new(&cert, addr(10_021), h264_library(), PeerConfig::default(), now).unwrap();
    // The subscriber has only audio clips: receiving takes H.264 whatever it would publish.
    let b = MediaPeer::new(&cert, addr(10_023), library(), PeerConfig::default(), now).unwrap();
    let offer = a.create_publisher_offer(addr(10_022), &cert, None, Some("cid-video"), false, now).unwrap();
    assert!(offer.contains("H264/90000") && offer.contains("packetization-mode=1"), "{offer}");
    assert!(!offer.contains("VP8"), "the publisher offers only its clips' codec: {offer}");
    let mut pair = Pair { a, b, now };
    let answer = pair.b.accept_offer(&offer).unwrap();
    pair.a.accept_answer(&answer).unwrap();
    pair.run(3_000, |_| false);
    assert!(pair.b.is_connected(Pc::Subscriber));
    let track = pair.b.rx_tracks().next().expect("a video track");
    assert_eq!((track.kind, track.track_id.as_str(), track.codec.as_str()), ("video", "cid-video", "video/H264"));
    // About 2.5 s of 30 fps video whose frames each take 3 or more packets.
    assert!(track.stats.packets > 150, "{} packets", track.stats.packets);
    assert!(pair.a.counters.frames_sent > 50, "{:?}", pair.a.counters);
    assert_eq!(track.stats.lost(), 0);
}

#[test]
fn a_stalled_publisher_skips_the_overdue_frames_and_counts_them() {
    let mut pair = Pair::new(PeerConfig::default());
    pair.run(2_000, |_| false);
    assert!(pair.a.is_connected(Pc::Publisher));
    assert_eq!(pair.a.counters.frames_skipped, 0, "no stall, nothing skipped");
    let sent_before = pair.a.counters.frames_sent;
    // The media thread was away for a second: 50 frames of 20 ms fell due meanwhile.
    pair.now += Duration::from_secs(1);
    pair.run(100, |_| false);
    let (sent, skipped) = (pair.a.counters.frames_sent - sent_before, pair.a.counters.frames_skipped);
    assert!((48..=52).contains(&skipped), "{skipped} frames skipped");
    assert!(sent <= 7, "{sent} frames sent in the 100 ms after the stall: the backlog was burst");
    let track = pair.b.rx_tracks().next().unwrap();
    assert_eq!(track.stats.lost(), 0, "skipped frames were never sent, so they are not network loss");
}

#[test]
fn garbage_datagrams_are_counted_not_fatal() {
    let mut pair = Pair::new(PeerConfig::default());
    pair.run(1_000, |_| false);
    let now = pair.now;
    for garbage in [&b"hello"[..], &[0u8; 40][..], &[0x80, 0x60, 1, 2][..], &[0x16, 0xfe, 0xfd, 0, 0][..]] {
        pair.b.handle_datagram(now, addr(9), addr(10_003), garbage);
    }
    pair.b.handle_datagram(now, addr(9), addr(44_444), b"not even our address");
    pair.run(500, |_| false);
    assert!(!pair.b.is_failed());
    assert!(pair.b.counters.foreign_datagrams >= 2, "{:?}", pair.b.counters);
    assert!(pair.b.is_connected(Pc::Subscriber));
}

#[test]
fn unanswered_ice_fails_at_the_deadline_with_a_reason() {
    let config = PeerConfig { connect_timeout: Duration::from_secs(2), ..PeerConfig::default() };
    let mut pair = Pair::new(config);
    pair.run(2_500, |_| true); // a black hole: nothing is ever delivered
    assert!(pair.b.is_failed());
    let events = pair.b.take_events();
    let failed = events.iter().find_map(|(_, e)| match e {
        PeerEvent::Failed { reason, detail } => Some((*reason, detail.clone())),
        _ => None,
    });
    let (reason, detail) = failed.expect("a Failed event");
    assert_eq!(reason, "ice_timeout");
    assert!(detail.contains("subscriber PeerConnection"), "{detail}");
}

#[test]
fn bad_sdp_is_an_error_not_a_panic() {
    let cert = shared_certificate().unwrap();
    let mut peer = MediaPeer::new(&cert, addr(10_005), library(), PeerConfig::default(), Instant::now()).unwrap();
    assert!(peer.accept_offer("v=0\r\nnonsense").is_err());
    assert!(peer.accept_answer("v=0").is_err());
    assert!(peer.add_remote_candidate(Pc::Subscriber, "{not json", Instant::now()).is_err());
    assert!(peer.add_remote_candidate(Pc::Subscriber, r#"{"candidate":""}"#, Instant::now()).is_ok());
}

/// Drives `peer` as the hub does: woken only at the times `poll` asks for. Returns when it first
/// sent something, and where to.
fn first_send(peer: &mut MediaPeer, start: Instant, limit: Duration) -> Option<(Duration, Datagram)> {
    let mut out = Vec::new();
    let mut wake = peer.poll(start, &mut out);
    while wake < start + limit {
        let now = wake;
        peer.handle_timeout(now);
        wake = peer.poll(now, &mut out).max(now + Duration::from_millis(1));
        if let Some(datagram) = out.pop() {
            return Some((now - start, datagram));
        }
    }
    None
}

#[test]
fn own_connectivity_checks_start_when_the_server_stays_silent() {
    // Whatever str0m's own timers do, a server that never sends us anything gets checks from us by
    // OWN_CHECKS_AFTER (500 ms) at the latest.
    let cert = shared_certificate().unwrap();
    let start = Instant::now();
    let mut server = MediaPeer::new(&cert, addr(10_011), library(), PeerConfig::default(), start).unwrap();
    let mut ours = MediaPeer::new(&cert, addr(10_013), library(), PeerConfig::default(), start).unwrap();
    let offer = server.create_publisher_offer(addr(10_012), &cert, Some("cid-audio"), None, false, start).unwrap();
    ours.poll(start, &mut Vec::new()); // as the hub's add_peer does
    ours.accept_offer(&offer).unwrap();
    let candidate = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 10012 typ host","sdpMid":"0"}"#;
    ours.add_remote_candidate(Pc::Subscriber, candidate, start).unwrap();
    let (after, datagram) = first_send(&mut ours, start, Duration::from_secs(3)).expect("no connectivity check sent");
    assert!(after <= Duration::from_millis(500), "{after:?}");
    assert_eq!(datagram.destination, addr(10_012));
    assert_eq!(&datagram.contents[..2], &[0x00, 0x01], "a STUN binding request");
}
