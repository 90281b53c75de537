//! The feedback an SFU needs from a receiver, checked from the sender's side: a str0m `Rtc`
//! playing the server sends audio to our dual-PC subscriber and reads what our receiver reports.
//!
//! Why: lkswarm's str0m is patched (rust/patches/str0m-0.25.0.diff) so that an RTP packet on a
//! steady receive stream runs no timer and walks no poll tree. Receiver reports and TWCC feedback
//! are timer-driven, so a mistake there would not show as loss on our side but as a subscriber the
//! SFU cannot see: no RTT, no loss figure, no congestion-control input. This test is that view.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr, is_rtp, run, run_losing, OpusSender, ServerSide};
use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::{Datagram, Pc};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::stats::{MediaEgressStats, PeerStats};
use str0m::{Candidate, Event, Rtc};

fn library() -> MediaLibrary {
    let audio = (0..50u8).map(|i| ClipFrame { data: Arc::from(&[0xf8, i, 1, 2, 3][..]), keyframe: true }).collect();
    let audio = Arc::new(Clip::new(audio, Duration::from_millis(20), 48_000).unwrap());
    MediaLibrary { audio: Some(audio), ..MediaLibrary::default() }
}

/// The audio sender, keeping the stats str0m derives from our feedback.
#[derive(Default)]
struct FeedbackReader {
    sender: OpusSender,
    egress: Vec<MediaEgressStats>,
    peer: Vec<PeerStats>,
}

impl ServerSide for FeedbackReader {
    fn before_exchange(&mut self, server: &mut Rtc, now: Instant) {
        self.sender.before_exchange(server, now);
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::MediaEgressStats(stats) => self.egress.push(stats),
            Event::PeerStats(stats) => self.peer.push(stats),
            other => self.sender.on_event(other, now),
        }
    }
}

/// Our dual-PC subscriber and a str0m server (built from `server`, with stats every 500 ms) that
/// sends it one `kind` section, negotiated but not yet connected.
struct Wired {
    now: Instant,
    peer: MediaPeer,
    server: Rtc,
    server_addr: std::net::SocketAddr,
    mid: str0m::media::Mid,
}

/// Wires up a `Wired` on `port` (ours) and `port + 1` (the server's).
fn wire_up(server: str0m::RtcConfig, kind: MediaKind, port: u16) -> Wired {
    let now = Instant::now();
    let config = PeerConfig { connect_timeout: Duration::from_secs(5), ..PeerConfig::default() };
    let mut peer = MediaPeer::new(&shared_certificate().unwrap(), addr(port), library(), config, now).unwrap();
    let server_addr = addr(port + 1);
    let mut server = server.set_stats_interval(Some(Duration::from_millis(500))).build(now);
    server.add_local_candidate(Candidate::host(server_addr, "udp").unwrap());
    let mut api = server.sdp_api();
    let mid = api.add_media(kind, Direction::SendOnly, Some("s".into()), Some("TR_s".into()), None);
    let (offer, pending) = api.apply().unwrap();
    let answer = peer.accept_offer(&offer.to_sdp_string()).unwrap();
    server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    Wired { now, peer, server, server_addr, mid }
}

/// Runs `ms` of audio from a str0m sender built by `server` to our subscriber; returns the peer
/// (its counters and receive stats), the sender's feedback and the audio section's mid.
fn run_audio(server: str0m::RtcConfig, ms: u32) -> (MediaPeer, FeedbackReader, str0m::media::Mid) {
    let Wired { mut now, mut peer, mut server, server_addr, mid } =
        wire_up(server.enable_opus(true, false), MediaKind::Audio, 32_001);
    let mut side = FeedbackReader::default();
    side.sender.audio = Some((mid, 0));

    run(&mut peer, &mut server, server_addr, &mut now, ms, &mut side);

    assert!(peer.is_connected(Pc::Subscriber));
    let track = peer.rx_tracks().next().expect("the subscriber received the audio track");
    assert!(track.stats.packets > 300, "{} packets", track.stats.packets);
    assert_eq!(track.stats.lost(), 0);
    // After its first packet the stream is received on the own SRTP path (peer/own_srtp.rs), so
    // the feedback checked by the callers is what str0m derives from `handle_external_rtp` receipts.
    let own = peer.counters.srtp_own_packets;
    assert!(own + 1 >= track.stats.packets, "{own} of {} packets on the own SRTP path", track.stats.packets);
    let dropped = (peer.counters.srtp_own_replayed, peer.counters.srtp_own_auth_failed);
    assert_eq!((dropped, peer.counters.srtp_receipts_refused), ((0, 0), 0));
    (peer, side, mid)
}

/// The receiver-report figures the sender received, in order: (max sequence number, lost).
fn receiver_reports(side: &FeedbackReader, mid: str0m::media::Mid) -> Vec<(u64, u64)> {
    let remote = side.egress.iter().filter(|s| s.mid == mid).filter_map(|s| s.remote.as_ref());
    remote.map(|r| (*r.maximum_sequence_number, r.packets_lost)).collect()
}

#[test]
fn a_receiving_peer_sends_the_receiver_reports_and_twcc_feedback_a_sender_needs() {
    let (_peer, side, mid) = run_audio(Rtc::builder(), 8_000);

    // Receiver reports: the sender learns a loss fraction and how far the receiver got. (The round
    // trip from LSR/DLSR needs the wall clock to move with `now`, which this 1 ms-step loop does not;
    // tests/media/test_server_health_integration.py checks the RTT livekit-server derives from them.)
    let reports = receiver_reports(&side, mid);
    assert!(reports.len() >= 2, "{} egress stats with receiver-report figures in 8 s", reports.len());
    assert_eq!(reports.last().unwrap().1, 0);

    // TWCC feedback: the sender's transport-wide loss is known (and nil) only if feedback came.
    let with_twcc = side.peer.iter().filter(|s| s.egress_loss_fraction.is_some()).count();
    assert!(with_twcc >= 10, "{with_twcc} of {} peer stats had TWCC feedback", side.peer.len());
    assert!(side.peer.iter().rev().take(5).all(|s| s.egress_loss_fraction == Some(0.0)));
    // The transport-wide round trip the sender derives from that feedback.
    assert!(side.peer.last().unwrap().rtt.is_some());
}

/// livekit-server's audio carries no transport-wide sequence number, so the own path defers its
/// receipts and hands them to str0m in runs, before str0m's timers (peer/own_srtp.rs). The
/// receiver reports must still be current: each counts every packet that arrived before it.
#[test]
fn deferred_receipts_of_audio_without_twcc_still_give_current_receiver_reports() {
    // Audio reports go every 5 s (str0m's interval, as libwebrtc's): 21 s hold four.
    let (_peer, side, mid) = run_audio(Rtc::builder().clear_extension_map(), 21_000);
    assert!(side.peer.iter().all(|s| s.egress_loss_fraction.is_none()), "no TWCC was negotiated");

    let mut reports = receiver_reports(&side, mid);
    reports.dedup(); // the sender's stats repeat the last report every 500 ms
    assert!(reports.len() >= 4, "{reports:?}: too few receiver reports in 21 s");
    assert!(reports.iter().all(|&(_, lost)| lost == 0), "{reports:?}");
    // 5 s of 20 ms packets between reports: a report one deferred run (32 packets) stale would
    // show as a step off by as much.
    let steps: Vec<u64> = reports.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(steps.iter().all(|&step| (248..=252).contains(&step)), "{steps:?}");
}

/// A str0m server sending VP8 (NACK and RTX negotiated, as livekit-server's video): a 3,000-byte
/// frame of three packets every 33 ms from its DTLS connection on, keeping the stats our feedback
/// gives it.
#[derive(Default)]
struct VideoSender {
    video: Option<(str0m::media::Mid, u64)>,
    connected_at: Option<Instant>,
    egress: Vec<MediaEgressStats>,
}

impl ServerSide for VideoSender {
    fn before_exchange(&mut self, server: &mut Rtc, now: Instant) {
        let (Some((mid, frames)), Some(connected_at)) = (self.video, self.connected_at) else { return };
        if now.duration_since(connected_at) < Duration::from_millis(33 * frames) {
            return;
        }
        let Some(writer) = server.writer(mid) else { return };
        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).unwrap().pt();
        let rtp_time = MediaTime::new(3_000 * frames, Frequency::NINETY_KHZ);
        let mut frame = vec![0u8; 3_000];
        frame[0] = if frames % 30 == 0 { 0x10 } else { 0x11 }; // VP8 key frame bit, now and then
        let _ = writer.write(pt, now, rtp_time, frame);
        self.video = Some((mid, frames + 1));
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::MediaEgressStats(stats) => self.egress.push(stats),
            Event::Connected => self.connected_at = Some(now),
            _ => {}
        }
    }
}

/// Runs `ms` of VP8 from a str0m sender to our subscriber, losing the datagrams to the peer that
/// `lose` picks; returns the peer and the sender's stats.
fn run_video(ms: u32, lose: &mut dyn FnMut(&Datagram) -> bool) -> (MediaPeer, VideoSender) {
    let Wired { mut now, mut peer, mut server, server_addr, mid } =
        wire_up(Rtc::builder().clear_codecs().enable_vp8(true), MediaKind::Video, 32_011);
    let mut side = VideoSender { video: Some((mid, 0)), ..VideoSender::default() };
    run_losing(&mut peer, &mut server, server_addr, &mut now, ms, &mut side, lose);
    assert!(peer.is_connected(Pc::Subscriber));
    (peer, side)
}

/// str0m's NACK timer runs only while a packet is missing (patch item 7), and video receipts on
/// the own path may wait for str0m's next timer unless a gap shows (own_srtp.rs). A lost video
/// packet must still be NACKed and repaired: the sender counts our NACKs, and our receive
/// statistics end with nothing lost. Without loss, the sender counts no NACK at all. (When the
/// NACK goes is not timed here: the sender's stats come every 500 ms.)
#[test]
fn a_lost_video_packet_is_nacked_and_repaired_and_none_is_nacked_without_loss() {
    let (peer, side) = run_video(6_000, &mut |_| false);
    let track = peer.rx_tracks().next().expect("the subscriber received the video track");
    assert!(track.stats.packets > 400, "{} packets", track.stats.packets);
    assert_eq!(track.stats.lost(), 0);
    assert!(peer.counters.srtp_own_packets > 400, "{} own-path packets", peer.counters.srtp_own_packets);
    assert_eq!(side.egress.last().map(|s| s.nacks), Some(0), "NACKs without loss");

    let mut rtp_seen = 0;
    let mut lost = Vec::new();
    let mut lose = |datagram: &Datagram| {
        if !is_rtp(datagram) {
            return false;
        }
        rtp_seen += 1;
        // Two single losses well inside the stream, after its first packets went through str0m.
        let lose = rtp_seen == 200 || rtp_seen == 350;
        if lose {
            lost.push(rtp_seen);
        }
        lose
    };
    let (peer, side) = run_video(6_000, &mut lose);
    assert_eq!(lost, vec![200, 350]);
    let nacks = side.egress.last().map_or(0, |s| s.nacks);
    assert!(nacks >= 2, "the sender counted {nacks} NACKs for 2 lost packets");
    let track = peer.rx_tracks().next().unwrap();
    assert_eq!(track.stats.lost(), 0, "the lost packets were repaired (RTX)");
}

/// livekit-server can send a downtrack's first packets out of order, so a packet from just before
/// the one str0m received first may arrive after it. str0m's receive register starts at its
/// stream's first packet and refuses anything older, so the own path refuses it too: counted as
/// `srtp_own_before_first`, not as received, and never handed to str0m as a receipt (its register
/// would call it a duplicate; CI once saw that counted as a replay).
#[test]
fn a_packet_from_before_the_streams_first_arriving_late_is_refused_and_counted_as_such() {
    let Wired { mut now, mut peer, mut server, server_addr, mid } =
        wire_up(Rtc::builder().clear_codecs().enable_vp8(true), MediaKind::Video, 32_021);
    let mut side = VideoSender { video: Some((mid, 0)), ..VideoSender::default() };
    let mut held: Option<Datagram> = None;
    let mut hold_the_first = |datagram: &Datagram| {
        let hold = held.is_none() && is_rtp(datagram);
        if hold {
            held = Some(datagram.clone());
        }
        hold
    };
    // Long enough for the stream's second packet to go through str0m and the own path to take
    // the ones after it; short enough that the first is still inside the 128-packet window.
    run_losing(&mut peer, &mut server, server_addr, &mut now, 400, &mut side, &mut hold_the_first);
    let late = held.expect("the stream's first RTP datagram");
    let own_packets = peer.counters.srtp_own_packets;
    assert!((1..100).contains(&own_packets), "{own_packets} own-path packets: tracked, the first within the window");

    peer.handle_datagram(now, late.source, late.destination, &late.contents);
    assert_eq!(peer.counters.srtp_own_before_first, 1);
    assert_eq!(peer.counters.srtp_own_packets, own_packets, "not counted as received");
    run(&mut peer, &mut server, server_addr, &mut now, 1_000, &mut side);
    assert_eq!(peer.counters.srtp_own_replayed, 0, "no receipt that str0m's register refused");
    let track = peer.rx_tracks().next().expect("the subscriber received the video track");
    assert_eq!(track.stats.packets, peer.counters.srtp_own_packets + 1, "str0m's first, then the own path's");
    assert_eq!(track.stats.lost(), 0, "the stream starts at its first received packet");
}
