//! Two peers of one `Hub` over real loopback sockets, once per I/O backend: A publishes audio,
//! B's subscriber PeerConnection answers A's offer. Every packet A sends must reach B, through
//! the worker's receive path (epoll + recvmmsg, or io_uring multishot recvmsg) and send path.

use std::net::IpAddr;
use std::time::{Duration, Instant};

mod common;

use common::audio_library as library;
use lkswarm_core::media::hub::{Hub, MediaIo};
use lkswarm_core::media::peer::{PeerConfig, PeerEvent};

fn loopback(io: MediaIo) {
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let hub = match Hub::start_with(localhost, Some(io)) {
        Ok(hub) => hub,
        Err(error) if io == MediaIo::IoUring => {
            // A kernel or seccomp profile without io_uring (Docker's default): the epoll test still runs.
            eprintln!("skipped, io_uring refused here: {error}");
            return;
        }
        Err(error) => panic!("{error}"),
    };
    assert_eq!(hub.io().backend, io);
    assert_eq!(hub.io().fallback, None);
    hub.set_library(library());
    let config = PeerConfig { connect_timeout: Duration::from_secs(10), seed: 1, ..PeerConfig::default() };
    let (a, _) = hub.add_peer(config.clone()).unwrap();
    let (b, _) = hub.add_peer(config).unwrap();
    let offer = hub.publisher_offer(a, Some("cid-audio"), None, false).unwrap();
    let answer = hub.accept_offer(b, &offer).unwrap();
    assert!(hub.accept_answer(a, &answer, None).unwrap().is_none());

    let started = Instant::now();
    let (mut connected, mut first_packet) = (false, false);
    while started.elapsed() < Duration::from_secs(10) && !(connected && first_packet) {
        for event in hub.take_events() {
            match event.event {
                PeerEvent::Connected { primary: true, .. } if event.peer == b => connected = true,
                PeerEvent::FirstPacket { kind: "audio", .. } if event.peer == b => first_packet = true,
                PeerEvent::Failed { detail, .. } => panic!("peer {} failed: {detail}", event.peer),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(connected && first_packet, "connected {connected}, first packet {first_packet}");
    // At least 25 packets (half a second of audio), waited for rather than slept for: on a loaded
    // machine the publisher skips the frames a stall made overdue, so a fixed sleep may see fewer.
    let receiving = Instant::now();
    let track = loop {
        let track = hub.summary(b).unwrap().tracks.into_iter().next().expect("B receives A's track");
        if track.stats.packets >= 25 || receiving.elapsed() > Duration::from_secs(10) {
            break track;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(track.stats.packets >= 25, "{} packets in 10 s", track.stats.packets);
    assert_eq!(track.stats.lost(), 0);
    let totals = hub.totals();
    assert_eq!(totals.io, io);
    assert!(totals.datagrams_received >= track.stats.packets);
    assert!(totals.syscalls > 0 && totals.wakeups > 0);
    assert_eq!(hub.send_errors(), 0);
    // Removing a peer mid-stream cancels its sockets' receives; the other peer goes on.
    hub.remove_peer(b).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(hub.summary(a).is_some_and(|a| !a.failed));
    hub.close();
}

#[test]
fn audio_flows_between_two_hub_peers_with_epoll() {
    loopback(MediaIo::Epoll);
}

#[test]
fn audio_flows_between_two_hub_peers_with_io_uring() {
    loopback(MediaIo::IoUring);
}
