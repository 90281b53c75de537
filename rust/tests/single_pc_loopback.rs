//! A single-PC (`/rtc/v1`) media peer against a str0m answerer playing the server, wired back to
//! back in memory (no sockets): our peer offers, the answerer answers, they connect, and the
//! answerer depacketizes what the peer publishes (frame mode), while it sends Opus back on one of
//! the peer's receive sections.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, answerer, OpusSender};
use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig, PeerEvent};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::Pc;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid, Rid};
use str0m::Rtc;

/// VP8 frames whose payload header says keyframe (P bit 0) for the first and interframe for the
/// rest; each layer's frames are tagged with the layer so the answerer can tell them apart. The
/// keyframe takes three packets.
fn library() -> MediaLibrary {
    let video_layer = |layer: u8| {
        // 10 s of frames: a keyframe seen within the tests' few seconds is one asked for.
        let frames = (0..300u16)
            .map(|i| {
                let (first, len) = if i == 0 { (0x10, 3_000) } else { (0x11, 600) };
                let mut data = vec![first, layer, (i % 256) as u8];
                data.extend((0..len).map(|n| (n % 251) as u8));
                ClipFrame { data: data.into(), keyframe: i == 0 }
            })
            .collect();
        Arc::new(Clip::new(frames, Duration::from_millis(33), 90_000).unwrap())
    };
    let audio = (0..50u8).map(|i| ClipFrame { data: Arc::from(&[0xf8, i, 1, 2, 3][..]), keyframe: true }).collect();
    let audio = Arc::new(Clip::new(audio, Duration::from_millis(20), 48_000).unwrap());
    MediaLibrary { audio: Some(audio), video: (0..3).map(video_layer).collect(), ..MediaLibrary::default() }
}

struct Loopback {
    peer: MediaPeer,
    server: Rtc,
    server_addr: SocketAddr,
    now: Instant,
    /// The answerer: its send section (one of the peer's recvonly audio sections) and what it got.
    side: OpusSender,
}

impl Loopback {
    fn new() -> (Loopback, String) {
        let now = Instant::now();
        let config = PeerConfig { single_pc: true, ..PeerConfig::default() };
        let mut peer = MediaPeer::new(&shared_certificate().unwrap(), addr(30_001), library(), config, now).unwrap();
        let server_addr = addr(30_002);
        let mut server = answerer(server_addr, now);
        let (offer, id) = peer.create_join_offer(Some("cid-audio"), Some("cid-video"), now).unwrap();
        assert_eq!(id, 1);
        let answer = server.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
        let answer = answer.to_sdp_string();
        (Loopback { peer, server, server_addr, now, side: OpusSender::default() }, answer)
    }

    /// Advances time in 1 ms steps, delivering every datagram both ways.
    fn run(&mut self, steps: u32) {
        common::run(&mut self.peer, &mut self.server, self.server_addr, &mut self.now, steps, &mut self.side);
    }

    fn frames(&self, mid: Mid, rid: Option<&str>) -> Vec<&MediaData> {
        self.side.received.iter().filter(|d| d.mid == mid && d.rid == rid.map(Rid::from)).collect()
    }
}

/// The mid of the `index`th m-section of `sdp`.
fn mid_of(sdp: &str, index: usize) -> Mid {
    let mids: Vec<&str> = sdp.lines().filter_map(|l| l.trim_end().strip_prefix("a=mid:")).collect();
    Mid::from(mids[index])
}

#[test]
fn a_single_pc_peer_publishes_simulcast_vp8_and_opus_and_receives_on_a_recvonly_section() {
    let (mut looper, answer) = Loopback::new();
    // Sections: our audio, our video, 3 recvonly audio, 3 recvonly video, the data channels.
    let (audio_mid, video_mid, recv_audio_mid) = (mid_of(&answer, 0), mid_of(&answer, 1), mid_of(&answer, 2));
    let map = HashMap::from([(recv_audio_mid.to_string(), "TR_server_audio".to_string())]);
    assert_eq!(looper.peer.accept_single_answer(&answer, Some(&map)).unwrap(), None);
    looper.side.audio = Some((recv_audio_mid, 0));
    looper.run(3_000);

    assert!(looper.peer.is_connected(Pc::Publisher) && looper.peer.is_connected(Pc::Subscriber));
    let events = looper.peer.take_events();
    let connected: Vec<_> = events.iter().filter(|(_, e)| matches!(e, PeerEvent::Connected { .. })).collect();
    assert_eq!(connected.len(), 1, "{events:?}");
    assert_eq!(connected[0].1, PeerEvent::Connected { pc: Pc::Publisher, primary: true });

    // What we published arrives depacketized: Opus, and every simulcast layer from a keyframe on.
    let audio = looper.frames(audio_mid, None);
    assert!(audio.len() > 100, "{} Opus frames", audio.len());
    assert!(audio.iter().all(|d| d.params.spec().codec == Codec::Opus));
    for (layer, rid) in ["q", "h", "f"].into_iter().enumerate() {
        let video = looper.frames(video_mid, Some(rid));
        assert!(video.len() > 50, "{rid}: {} VP8 frames", video.len());
        let first = video[0];
        assert!(first.is_keyframe(), "{rid}: the first frame is the clip's keyframe");
        assert_eq!(first.data.len(), 3_003, "{rid}: the keyframe was reassembled from its packets");
        assert_eq!(&first.data[..3], &[0x10, layer as u8, 0]);
        assert!(video.iter().all(|d| d.contiguous && d.params.spec().codec == Codec::Vp8));
        assert!(video.iter().all(|d| d.data[1] == layer as u8), "{rid}: every frame is from its own layer");
        assert_eq!(video.iter().filter(|d| d.is_keyframe()).count(), 1, "{rid}: no keyframe was asked for");
    }
    assert!(looper.peer.counters.frames_sent > 400, "{:?}", looper.peer.counters);
    assert_eq!(looper.peer.counters.input_errors, 0);

    // And what the answerer sent on our recvonly section is counted under the server's track id.
    let tracks: Vec<_> = looper.peer.rx_tracks().collect();
    assert_eq!(tracks.len(), 1);
    assert_eq!((tracks[0].track_id.as_str(), tracks[0].kind), ("TR_server_audio", "audio"));
    assert!(tracks[0].stats.packets > 100, "{} packets", tracks[0].stats.packets);
    assert!(events.iter().any(
        |(_, e)| matches!(e, PeerEvent::FirstPacket { track_id, kind: "audio" } if track_id == "TR_server_audio")
    ));
}

#[test]
fn a_keyframe_request_on_the_single_pc_rewinds_that_layer() {
    let (mut looper, answer) = Loopback::new();
    let video_mid = mid_of(&answer, 1);
    looper.peer.accept_single_answer(&answer, None).unwrap();
    looper.run(2_000);
    let (before, before_q) = (looper.frames(video_mid, Some("h")).len(), looper.frames(video_mid, Some("q")).len());
    looper.server.writer(video_mid).unwrap().request_keyframe(Some(Rid::from("h")), KeyframeRequestKind::Pli).unwrap();
    looper.run(500);
    assert!(looper.peer.counters.keyframe_requests >= 1);
    let layer = looper.frames(video_mid, Some("h"));
    let first_keyframe = layer[before..].iter().position(|d| d.is_keyframe());
    assert!(first_keyframe.is_some_and(|at| at < 5), "a keyframe soon followed the request: {first_keyframe:?}");
    let other = looper.frames(video_mid, Some("q"));
    assert!(!other[before_q..].iter().any(|d| d.is_keyframe()), "only the layer asked for is rewound");
}

#[test]
fn re_offers_are_answered_and_media_goes_on() {
    let (mut looper, answer) = Loopback::new();
    let (audio_mid, recv_audio_mid) = (mid_of(&answer, 0), mid_of(&answer, 2));
    looper.peer.accept_single_answer(&answer, None).unwrap();
    looper.side.audio = Some((recv_audio_mid, 0));
    looper.run(1_000);
    let sent_before = looper.frames(audio_mid, None).len();
    for (audios, videos) in [(1, 1), (0, 0)] {
        let (offer, _) = looper.peer.reoffer(audios, videos).unwrap().expect("no offer was pending");
        let answer = looper.server.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
        assert_eq!(looper.peer.accept_single_answer(&answer.to_sdp_string(), None).unwrap(), None);
        looper.run(300);
    }
    assert!(looper.frames(audio_mid, None).len() > sent_before + 25, "our audio went on");
    let track = looper.peer.rx_tracks().next().expect("the answerer's audio");
    assert!(track.stats.packets > 70 && track.stats.lost() == 0, "{} packets", track.stats.packets);
    assert!(!looper.peer.is_failed());
}
