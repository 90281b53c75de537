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

use common::{addr, run, OpusSender, ServerSide};
use lkswarm_core::media::clip::{Clip, ClipFrame, MediaLibrary};
use lkswarm_core::media::peer::{MediaPeer, PeerConfig};
use lkswarm_core::media::shared_certificate;
use lkswarm_core::media::types::Pc;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
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

#[test]
fn a_receiving_peer_sends_the_receiver_reports_and_twcc_feedback_a_sender_needs() {
    let mut now = Instant::now();
    let config = PeerConfig { connect_timeout: Duration::from_secs(5), ..PeerConfig::default() };
    let mut peer = MediaPeer::new(&shared_certificate().unwrap(), addr(32_001), library(), config, now).unwrap();
    let server_addr = addr(32_002);
    let mut server =
        Rtc::builder().enable_opus(true, false).set_stats_interval(Some(Duration::from_millis(500))).build(now);
    server.add_local_candidate(Candidate::host(server_addr, "udp").unwrap());
    let mut api = server.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, Some("s".into()), Some("TR_a".into()), None);
    let (offer, pending) = api.apply().unwrap();
    let answer = peer.accept_offer(&offer.to_sdp_string()).unwrap();
    server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let mut side = FeedbackReader::default();
    side.sender.audio = Some((mid, 0));

    run(&mut peer, &mut server, server_addr, &mut now, 8_000, &mut side);

    assert!(peer.is_connected(Pc::Subscriber));
    let track = peer.rx_tracks().next().expect("the subscriber received the audio track");
    assert!(track.stats.packets > 300, "{} packets", track.stats.packets);
    assert_eq!(track.stats.lost(), 0);
    // After its first packet the stream is received on the own SRTP path (peer/own_srtp.rs), so
    // everything below is the feedback str0m derives from `handle_external_rtp` receipts.
    let own = peer.counters.srtp_own_packets;
    assert!(own + 1 >= track.stats.packets, "{own} of {} packets on the own SRTP path", track.stats.packets);
    assert_eq!((peer.counters.srtp_own_replayed, peer.counters.srtp_own_auth_failed), (0, 0));

    // Receiver reports: the sender learns a loss fraction and how far the receiver got. (The round
    // trip from LSR/DLSR needs the wall clock to move with `now`, which this 1 ms-step loop does not;
    // tests/media/test_server_health_integration.py checks the RTT livekit-server derives from them.)
    let reports = side.egress.iter().filter(|s| s.mid == mid && s.remote.is_some()).count();
    assert!(reports >= 2, "{reports} egress stats with receiver-report figures in 8 s");
    let last = side.egress.iter().rev().find(|s| s.mid == mid && s.remote.is_some()).unwrap();
    assert_eq!(last.remote.as_ref().unwrap().packets_lost, 0);

    // TWCC feedback: the sender's transport-wide loss is known (and nil) only if feedback came.
    let with_twcc = side.peer.iter().filter(|s| s.egress_loss_fraction.is_some()).count();
    assert!(with_twcc >= 10, "{with_twcc} of {} peer stats had TWCC feedback", side.peer.len());
    assert!(side.peer.iter().rev().take(5).all(|s| s.egress_loss_fraction == Some(0.0)));
    // The transport-wide round trip the sender derives from that feedback.
    assert!(side.peer.last().unwrap().rtt.is_some());
}
