//! ICE restart after a signal resume (docs/single-pc-design.md §4), in memory: a media peer and a
//! str0m peer playing the server, wired back to back (no sockets). The server sends Opus to the
//! peer; after the restart the peer must say `MediaResumed` once ICE is back and audio flows again.
//! Single-PC: the peer offers the restart and the server answers with new credentials. Dual-PC: the
//! server offers the restart on the subscriber PeerConnection and the peer answers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, answerer, OpusSender};
use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig, PeerEvent};
use lkswarm_core::media::shared_certificate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;

fn library() -> MediaLibrary {
    let audio = (0..50u8).map(|i| ClipFrame { data: Arc::from(&[0xf8, i, 1, 2, 3][..]), keyframe: true }).collect();
    let audio = Arc::new(Clip::new(audio, Duration::from_millis(20), 48_000).unwrap());
    MediaLibrary { audio: Some(audio), ..MediaLibrary::default() }
}

fn ufrag(sdp: &str) -> (String, String) {
    let find = |key: &str| sdp.lines().find_map(|l| l.trim_end().strip_prefix(key)).unwrap().to_string();
    (find("a=ice-ufrag:"), find("a=ice-pwd:"))
}

struct Loopback {
    peer: MediaPeer,
    server: Rtc,
    server_addr: SocketAddr,
    now: Instant,
    /// The server's audio section and frames written; it sends from its DTLS connection on.
    side: OpusSender,
    join_answer_creds: (String, String),
}

impl Loopback {
    fn new(single_pc: bool, port: u16) -> Loopback {
        let now = Instant::now();
        let config = PeerConfig { single_pc, connect_timeout: Duration::from_secs(5), ..PeerConfig::default() };
        let peer = MediaPeer::new(&shared_certificate().unwrap(), addr(port), library(), config, now).unwrap();
        let server_addr = addr(port + 1);
        let server = answerer(server_addr, now);
        Loopback { peer, server, server_addr, now, side: OpusSender::default(), join_answer_creds: Default::default() }
    }

    /// A single-PC peer's join, the server sending audio on its first receive section.
    fn single() -> Loopback {
        let mut looper = Loopback::new(true, 31_001);
        let (offer, _) = looper.peer.create_join_offer(Some("cid-audio"), None, looper.now).unwrap();
        let answer = looper.server_answer(&offer);
        let recv_mid = answer.lines().filter_map(|l| l.trim_end().strip_prefix("a=mid:")).nth(1).unwrap();
        looper.side.audio = Some((Mid::from(recv_mid), 0));
        assert_eq!(looper.peer.accept_single_answer(&answer, None).unwrap(), None);
        looper.join_answer_creds = ufrag(&answer);
        looper
    }

    /// A dual-PC subscriber: the server offers one audio section.
    fn dual() -> Loopback {
        let mut looper = Loopback::new(false, 31_011);
        let mut api = looper.server.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("s".into()), Some("TR_a".into()), None);
        let (offer, pending) = api.apply().unwrap();
        let answer = looper.peer.accept_offer(&offer.to_sdp_string()).unwrap();
        looper.server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        looper.side.audio = Some((mid, 0));
        looper
    }

    fn server_answer(&mut self, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).unwrap();
        self.server.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
    }

    /// Advances time in 1 ms steps, delivering every datagram both ways.
    fn run(&mut self, steps: u32) {
        common::run(&mut self.peer, &mut self.server, self.server_addr, &mut self.now, steps, &mut self.side);
    }

    fn packets(&self) -> u64 {
        self.peer.rx_tracks().map(|t| t.stats.packets).sum()
    }
}

/// Runs the loopback until media resumes after the restart; checks what the peer said on the way.
fn assert_media_resumes(looper: &mut Loopback) {
    assert!(looper.peer.is_restarting());
    let before = looper.packets();
    looper.run(3_000);
    let events = looper.peer.take_events();
    assert!(!events.iter().any(|(_, e)| matches!(e, PeerEvent::Failed { .. })), "{events:?}");
    let position = |wanted: &dyn Fn(&PeerEvent) -> bool| events.iter().position(|(_, e)| wanted(e));
    let checking = position(&|e| matches!(e, PeerEvent::IceState { state: "checking", .. })).expect("ICE restarted");
    let connected = position(&|e| matches!(e, PeerEvent::IceState { state: "connected" | "completed", .. }))
        .expect("ICE reconnected");
    let resumed = position(&|e| *e == PeerEvent::MediaResumed).expect("MediaResumed");
    assert!(checking < connected && connected < resumed, "{events:?}");
    assert_eq!(events.iter().filter(|(_, e)| *e == PeerEvent::MediaResumed).count(), 1, "once per restart");
    assert!(events[resumed].0 > events[connected].0, "at the first packet after ICE reconnected");
    assert!(!looper.peer.is_restarting());
    assert!(looper.packets() > before + 50, "audio flows again: {} -> {}", before, looper.packets());
    assert_eq!(looper.peer.counters.ice_restarts, 1);
    assert!(!looper.peer.is_failed());
}

#[test]
fn a_single_pc_ice_restart_reconnects_and_media_resumes() {
    let mut looper = Loopback::single();
    looper.run(1_500);
    assert!(looper.packets() > 30, "audio flows before the restart: {}", looper.packets());
    looper.peer.take_events();

    let (offer, id) = looper.peer.ice_restart(looper.now).unwrap();
    assert_eq!(id, 2);
    let answer = looper.server_answer(&offer);
    assert_ne!(ufrag(&answer), looper.join_answer_creds, "the server answers with new credentials");
    assert_eq!(looper.peer.accept_single_answer(&answer, None).unwrap(), None);
    assert_media_resumes(&mut looper);
}

#[test]
fn a_dual_pc_restart_offered_by_the_server_is_detected_and_media_resumes() {
    let mut looper = Loopback::dual();
    looper.run(1_500);
    assert!(looper.packets() > 30, "audio flows before the restart: {}", looper.packets());
    assert!(!looper.peer.is_restarting());
    looper.peer.take_events();

    let mut api = looper.server.sdp_api();
    api.ice_restart(true);
    let (offer, pending) = api.apply().unwrap();
    let answer = looper.peer.accept_offer(&offer.to_sdp_string()).unwrap();
    looper.server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    assert_media_resumes(&mut looper);
}

#[test]
fn when_the_tracks_received_are_gone_media_resumes_with_ice() {
    let mut looper = Loopback::dual();
    looper.run(1_500);
    assert!(looper.packets() > 30);
    looper.peer.take_events();
    // The publisher left during the outage: the restart offer also turns its section inactive.
    let (mid, _) = looper.side.audio.take().unwrap();
    let mut api = looper.server.sdp_api();
    api.set_direction(mid, Direction::Inactive);
    api.ice_restart(true);
    let (offer, pending) = api.apply().unwrap();
    let answer = looper.peer.accept_offer(&offer.to_sdp_string()).unwrap();
    looper.server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    looper.run(2_000);
    let events = looper.peer.take_events();
    let connected =
        events.iter().find(|(_, e)| matches!(e, PeerEvent::IceState { state: "connected" | "completed", .. }));
    let resumed = events.iter().find(|(_, e)| *e == PeerEvent::MediaResumed);
    assert_eq!(resumed.map(|r| r.0), connected.map(|c| c.0), "{events:?}");
    assert!(resumed.is_some() && !looper.peer.is_failed() && !looper.peer.is_restarting());
}
