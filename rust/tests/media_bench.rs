//! Receive-path cost of the media tier, without sockets: SRTP unprotect, RTP parse and
//! RFC 3550 accounting per packet, through the same `MediaPeer` the hub drives.
//! Run by `make bench` (bench/bench_media.py):
//! `cargo test --release --test media_bench -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::{Datagram, Pc};

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
        ..MediaLibrary::default()
    };
    let cert = shared_certificate().unwrap();
    let mut timed = Duration::ZERO;
    let mut timed_packets = 0usize;
    let mut round: u16 = 0;
    // A fresh pair per 1,000 packets (20 s of audio): the in-memory pair is only exercised for
    // the stretch a load test's steady state looks like, not for hours of simulated time.
    while timed_packets < packets_wanted {
        let base = 20_000 + 4 * round;
        round += 1;
        let (t, n) = measure_pair(&cert, &library, base, 1_000);
        timed += t;
        timed_packets += n;
    }
    let ns = timed.as_nanos() as f64 / timed_packets as f64;
    let rtp_len = timed_packets;
    eprintln!("media_bench: packets={rtp_len} ns_per_packet={ns:.1}");
}

/// Connects a sender/receiver pair and times the receiver's handling of `packets` RTP datagrams
/// (decrypt, parse, accounting and the drain str0m requires after each input). Two clock reads
/// per packet (~40 ns) are included, so the figure is slightly pessimistic.
fn measure_pair(
    cert: &str0m::config::DtlsCert,
    library: &MediaLibrary,
    base: u16,
    packets: usize,
) -> (Duration, usize) {
    let start = Instant::now();
    let mut now = start;
    let mut sender = MediaPeer::new(cert, addr(base), library.clone(), PeerConfig::default(), now).unwrap();
    let mut receiver = MediaPeer::new(cert, addr(base + 2), library.clone(), PeerConfig::default(), now).unwrap();
    let offer = sender.create_publisher_offer(addr(base + 1), cert, Some("a"), None, false, now).unwrap();
    let answer = receiver.accept_offer(&offer).unwrap();
    sender.accept_answer(&answer).unwrap();
    let mut wire: Vec<Datagram> = Vec::new();
    let mut sink: Vec<Datagram> = Vec::new();
    let mut timed = Duration::ZERO;
    let mut timed_packets = 0usize;
    let mut steps = 0u32;
    while timed_packets < packets {
        steps += 1;
        assert!(steps < 100_000, "the sender stopped producing RTP");
        now += Duration::from_millis(if sender.is_connected(Pc::Publisher) { 20 } else { 1 });
        sender.handle_timeout(now);
        receiver.handle_timeout(now);
        sender.poll(now, &mut wire);
        receiver.poll(now, &mut wire);
        for d in std::mem::take(&mut wire) {
            // RTP, not RTCP: version 2 and a payload type outside RTCP's 64..=95 (after the marker bit).
            let is_rtp = d.contents[0] >> 6 == 2 && !(64..=95).contains(&(d.contents[1] & 0x7f));
            if receiver.pc_for(d.destination).is_some() {
                let t0 = Instant::now();
                receiver.handle_datagram(now, d.source, d.destination, &d.contents);
                receiver.poll(now, &mut sink);
                if is_rtp && receiver.is_connected(Pc::Subscriber) {
                    timed += t0.elapsed();
                    timed_packets += 1;
                }
                wire.append(&mut sink);
            } else {
                sender.handle_datagram(now, d.source, d.destination, &d.contents);
            }
        }
    }
    let counted: u64 = receiver.rx_tracks().map(|t| t.stats.packets).sum();
    assert!(counted as usize >= timed_packets * 99 / 100, "counted {counted} of {timed_packets}");
    (timed, timed_packets)
}

/// The floor under any SRTP receive path on this machine: AES-256-GCM open of one 100-byte payload
/// (the cipher str0m and aiortc both negotiate with livekit-server), with the same library and key
/// setup str0m uses, and nothing else: no RTP parse, no replay window, no accounting. It says what
/// ratio to aiortc the decrypt alone would allow.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn srtp_decrypt_floor_per_packet() {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    const DISTINCT: u32 = 1_000;
    let rounds: usize =
        std::env::var("LKSWARM_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000).max(200_000);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let nonce_for = |i: u32| {
        let mut nonce = [0u8; 12];
        nonce[8..].copy_from_slice(&i.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    };
    let sealed: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|i| {
            let mut packet = vec![1u8; 100];
            key.seal_in_place_append_tag(nonce_for(i), Aad::from([0u8; 12]), &mut packet).unwrap();
            packet
        })
        .collect();
    let mut work = sealed.clone();
    let start = Instant::now();
    for round in 0..rounds {
        let i = round % DISTINCT as usize;
        work[i].copy_from_slice(&sealed[i]); // open is in place
        let plain = key.open_in_place(nonce_for(i as u32), Aad::from([0u8; 12]), &mut work[i]).unwrap();
        std::hint::black_box(plain);
    }
    let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
    eprintln!("media_bench_floor: packets={rounds} ns_per_packet={ns:.1}");
}
