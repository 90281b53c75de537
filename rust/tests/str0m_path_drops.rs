//! What str0m's receive path consumes without delivering media is counted, not dropped silently
//! (rust/patches/str0m-0.25.0.diff, item 9): the packets the own SRTP path leaves to str0m (each
//! stream's first, RTX, every packet under `LKSWARM_SRTP_RX=str0m`) get the accounting the own
//! path gives its own (`srtp_own_replayed`, `srtp_own_auth_failed`).
//!
//! This binary runs with the own path off, so that every RTP packet goes through str0m.

mod common;

use std::time::{Duration, Instant};

use common::{addr, audio_library, is_rtp, run_rewiring, OpusSender};
use lkswarm_core::media::peer::{str0m_drops_by_reason, MediaPeer, PeerConfig};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::{Datagram, Pc};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::rtp::RtpReceiveDrops;
use str0m::{Candidate, Rtc};

/// Our subscriber receiving one audio section from a str0m sender, everything through str0m.
struct Loopback {
    now: Instant,
    peer: MediaPeer,
    server: Rtc,
    server_addr: std::net::SocketAddr,
    side: OpusSender,
}

impl Loopback {
    fn new(port: u16) -> Loopback {
        // Read once per process, before the first peer (own_srtp.rs): this binary is all str0m's path.
        std::env::set_var("LKSWARM_SRTP_RX", "str0m");
        let now = Instant::now();
        let config = PeerConfig { connect_timeout: Duration::from_secs(5), ..PeerConfig::default() };
        let mut peer =
            MediaPeer::new(&shared_certificate().unwrap(), addr(port), audio_library(), config, now).unwrap();
        let server_addr = addr(port + 1);
        let mut server = Rtc::builder().enable_opus(true, false).build(now);
        server.add_local_candidate(Candidate::host(server_addr, "udp").unwrap());
        let mut api = server.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("s".into()), Some("TR_s".into()), None);
        let (offer, pending) = api.apply().unwrap();
        let answer = peer.accept_offer(&offer.to_sdp_string()).unwrap();
        server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        let side = OpusSender { audio: Some((mid, 0)), ..OpusSender::default() };
        Loopback { now, peer, server, server_addr, side }
    }

    /// Runs `ms` of audio, the peer receiving what `rewire` makes of each datagram (`run_rewiring`).
    fn run(&mut self, ms: u32, rewire: &mut dyn FnMut(&Datagram) -> Vec<Datagram>) {
        let Loopback { now, peer, server, server_addr, side } = self;
        run_rewiring(peer, server, *server_addr, now, ms, side, rewire);
    }
}

#[test]
fn duplicates_and_forgeries_on_str0ms_path_are_counted_by_reason() {
    let mut lo = Loopback::new(32_101);
    lo.run(1_000, &mut |datagram| vec![datagram.clone()]);
    assert!(lo.peer.is_connected(Pc::Subscriber));
    assert_eq!(lo.peer.own_srtp_off_reason(), Some("disabled by LKSWARM_SRTP_RX=str0m"));
    assert_eq!(
        lo.peer.str0m_rtp_drops(),
        str0m_drops_by_reason(&RtpReceiveDrops::default()),
        "a clean wire drops nothing"
    );
    let received_before = lo.peer.rx_tracks().next().expect("the audio track").stats.packets;
    assert!(received_before > 30, "{received_before} packets");

    // Every RTP datagram arrives twice, the copy right behind the original.
    let mut duplicated = 0;
    lo.run(400, &mut |datagram| {
        let copies = if is_rtp(datagram) { 2 } else { 1 };
        duplicated += copies - 1;
        vec![datagram.clone(); copies as usize]
    });
    // One RTP datagram is replaced by a forgery: its authentication tag's last octet flipped.
    let mut forged = false;
    lo.run(100, &mut |datagram| {
        if forged || !is_rtp(datagram) {
            return vec![datagram.clone()];
        }
        forged = true;
        let mut forgery = datagram.clone();
        *forgery.contents.last_mut().unwrap() ^= 0x01;
        vec![forgery]
    });

    let drops = lo.peer.str0m_rtp_drops();
    assert!(duplicated > 15 && forged, "{duplicated} duplicated");
    let expected = RtpReceiveDrops { duplicates: duplicated, auth_failed: 1, ..RtpReceiveDrops::default() };
    assert_eq!(drops, str0m_drops_by_reason(&expected));
    let track = lo.peer.rx_tracks().next().unwrap();
    assert_eq!(track.stats.lost(), 1, "the forged packet is lost (audio has no NACK), the duplicates add nothing");
    assert_eq!(lo.peer.counters.srtp_own_packets, 0);
}
