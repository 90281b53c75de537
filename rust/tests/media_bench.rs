//! Receive-path cost of the media tier, without sockets: SRTP unprotect, RTP parse and
//! RFC 3550 accounting per packet, through the same `MediaPeer` the hub drives.
//! Run by `make bench` (bench/bench_media.py):
//! `cargo test --release --test media_bench -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{Datagram, MediaPeer, Pc, PeerConfig};
use lkswarm_core::media::shared_certificate;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn receive_cost_per_rtp_packet() {
    let packets_wanted: usize =
        std::env::var("LKSWARM_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    // 100-byte Opus-sized payloads, as in the aiortc baseline.
    let frames = (0..50u8).map(|i| ClipFrame { data: Arc::from(vec![i; 100].as_slice()), keyframe: true }).collect();
    let library = MediaLibrary {
        audio: Some(Arc::new(Clip::new(frames, Duration::from_millis(20), 48_000).unwrap())),
        video: Vec::new(),
    };
    let cert = shared_certificate().unwrap();
    let start = Instant::now();
    let mut now = start;
    let mut sender = MediaPeer::new(&cert, addr(20_001), library.clone(), PeerConfig::default(), now).unwrap();
    let mut receiver = MediaPeer::new(&cert, addr(20_003), library, PeerConfig::default(), now).unwrap();
    let offer = sender.create_publisher_offer(addr(20_002), &cert, Some("a"), None, now).unwrap();
    let answer = receiver.accept_offer(&offer, now).unwrap();
    sender.accept_answer(&answer, now).unwrap();
    let mut wire: Vec<Datagram> = Vec::new();
    let deliver = |wire: &mut Vec<Datagram>, sender: &mut MediaPeer, receiver: &mut MediaPeer, now: Instant| {
        for d in wire.drain(..) {
            if receiver.pc_for(d.destination).is_some() {
                receiver.handle_datagram(now, d.source, d.destination, &d.contents);
            } else {
                sender.handle_datagram(now, d.source, d.destination, &d.contents);
            }
        }
    };
    while !(sender.is_connected(Pc::Publisher) && receiver.is_connected(Pc::Subscriber)) {
        now += Duration::from_millis(1);
        sender.handle_timeout(now);
        receiver.handle_timeout(now);
        sender.poll(now, &mut wire);
        receiver.poll(now, &mut wire);
        deliver(&mut wire, &mut sender, &mut receiver, now);
        assert!(now - start < Duration::from_secs(10), "peers did not connect");
    }
    // Record the sender's SRTP packets (1 per 20 ms frame) without delivering them.
    let mut recorded: Vec<Datagram> = Vec::with_capacity(packets_wanted + 64);
    while recorded.len() < packets_wanted {
        now += Duration::from_millis(20);
        sender.handle_timeout(now);
        sender.poll(now, &mut wire);
        // RTP, not RTCP: version 2 and a payload type outside RTCP's 64..=95 (after the marker bit).
        recorded
            .extend(wire.drain(..).filter(|d| d.contents[0] >> 6 == 2 && !(64..=95).contains(&(d.contents[1] & 0x7f))));
    }
    let rtp = recorded;
    let before = receiver.rx_tracks().map(|t| t.stats.packets).sum::<u64>();
    let mut sink: Vec<Datagram> = Vec::new();
    let t0 = Instant::now();
    for d in &rtp {
        receiver.handle_datagram(now, d.source, d.destination, &d.contents);
        receiver.poll(now, &mut sink);
        sink.clear();
    }
    let elapsed = t0.elapsed();
    let after = receiver.rx_tracks().map(|t| t.stats.packets).sum::<u64>();
    let counted = after - before;
    assert!(counted as usize >= rtp.len() * 99 / 100, "counted {counted} of {}", rtp.len());
    let ns = elapsed.as_nanos() as f64 / rtp.len() as f64;
    eprintln!("media_bench: packets={} ns_per_packet={ns:.1}", rtp.len());
}
