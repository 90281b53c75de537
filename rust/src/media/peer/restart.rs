//! ICE restart after a signal resume (docs/single-pc-design.md §4): noticing or starting one, and
//! telling the owner when media is back (`PeerEvent::MediaResumed`).
//!
//! Theory of operation
//! -------------------
//! After a resume the server restarts ICE on a dual-PC peer's subscriber PeerConnection by offering
//! new ICE credentials; `accept_offer` answers it as any offer, and str0m makes new local
//! credentials, which is how the restart is noticed. On a single PeerConnection the server never
//! offers, so we restart ourselves: `ice_restart` (in `single`) offers new credentials, and str0m
//! applies the restart when the answer brings new remote ones. An answer that keeps the old
//! credentials leaves the old ICE session in place, which the server has dropped: the peer fails
//! with `ice_restart_rejected` rather than wait for nothing.
//!
//! Once applied, str0m drops its candidate pairs and goes back to ICE checking; DTLS and SRTP carry
//! on over the new pair. The restart ends when the primary PeerConnection's ICE is connected again
//! and media flows: at the next RTP packet, or at once if no media is expected: no section the peer
//! received RTP on is still receiving (it never received any, or the server has since removed
//! those tracks, which a publisher leaving during the outage does; waiting then would fail a live
//! peer).
//!
//! ```text
//! single: ice_restart --> Answer --answer with new credentials--> Checking
//! dual:   accept_offer with new credentials ---------------------> Checking
//! Checking --ICE connected--> Media --first RTP packet--> MediaResumed (no media expected: at once)
//! Answer --answer with the old credentials--> failed ice_restart_rejected
//! any phase --connect_timeout since the start--> failed ice_restart_timeout
//! ```
//!
//! A new restart (another resume) replaces one in progress. The deadline and the own-checks
//! backstop (`OWN_CHECKS_AFTER`) need the caller's clock, which `accept_offer` and
//! `accept_single_answer` do not take: they are armed at the next `poll`, which the hub runs at
//! once after every signaling call.

use std::time::Instant;

use str0m::media::Mid;
use str0m::IceCreds;

use super::{MediaPeer, PeerEvent, OWN_CHECKS_AFTER};

/// How far a restart has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Our restart offer is out; str0m applies the restart with the answer.
    Answer,
    /// str0m restarted ICE; waiting for it to connect again.
    Checking,
    /// ICE is connected again; waiting for the first RTP packet.
    Media,
}

#[derive(Debug)]
pub(super) struct Restart {
    phase: Phase,
    /// When the restart fails with `ice_restart_timeout`; None until the next `poll` arms it.
    deadline: Option<Instant>,
    /// The own-checks backstop is to be armed at the next `poll` (the restart was just applied).
    arm_checks: bool,
}

impl MediaPeer {
    /// Starts tracking a restart in `phase` (replacing one in progress), with its deadline counted
    /// from `now`, or from the next `poll` if None.
    pub(super) fn begin_restart(&mut self, phase: Phase, now: Option<Instant>) {
        let deadline = now.map(|now| now + self.config.connect_timeout);
        self.restart = Some(Restart { phase, deadline, arm_checks: false });
        self.counters.ice_restarts += 1;
        if phase == Phase::Checking {
            self.restart_applied();
        }
    }

    /// str0m has restarted ICE: our connectivity checks must be forced again if the server's do not
    /// arrive (see `OWN_CHECKS_AFTER`).
    fn restart_applied(&mut self) {
        if let Some(restart) = &mut self.restart {
            restart.phase = Phase::Checking;
            restart.arm_checks = true;
        }
        self.primary.heard_checks = false;
        self.primary.own_checks_at = None;
    }

    /// The local ICE credentials of the primary PeerConnection: str0m changes them exactly when it
    /// applies a restart.
    pub(super) fn local_ice_credentials(&mut self) -> IceCreds {
        self.primary.rtc.direct_api().local_ice_credentials()
    }

    /// After `accept_offer` (dual-PC): a change of our local credentials means the server restarted ICE.
    pub(super) fn after_remote_offer(&mut self, before: &IceCreds) {
        if self.local_ice_credentials() != *before {
            self.begin_restart(Phase::Checking, None);
        }
    }

    /// After the answer to our restart offer (single-PC): unless str0m applied the restart (new
    /// local credentials), the peer fails with `ice_restart_rejected`. Returns whether it lives.
    pub(super) fn after_restart_answer(&mut self, before: &IceCreds) -> bool {
        if !self.restart.as_ref().is_some_and(|r| r.phase == Phase::Answer) {
            return true;
        }
        if self.local_ice_credentials() != *before {
            self.restart_applied();
            return true;
        }
        let at = self.primary.last_input_at;
        let detail = format!(
            "{} PeerConnection: the answer to our ICE restart offer kept the old ICE credentials",
            self.pc_name(super::Pc::Subscriber)
        );
        self.fail(at, "ice_restart_rejected", detail);
        false
    }

    /// Arms what needs the caller's clock (see the module doc); returns the restart's deadline.
    pub(super) fn arm_restart(&mut self, now: Instant) -> Option<Instant> {
        let timeout = self.config.connect_timeout;
        let restart = self.restart.as_mut()?;
        if restart.arm_checks {
            restart.arm_checks = false;
            if !self.primary.heard_checks {
                self.primary.own_checks_at = Some(now + OWN_CHECKS_AFTER);
            }
        }
        Some(*restart.deadline.get_or_insert(now + timeout))
    }

    /// The primary PeerConnection's ICE is connected (or completed).
    pub(super) fn restart_on_ice_connected(&mut self, now: Instant) {
        if !self.restart.as_ref().is_some_and(|r| r.phase == Phase::Checking) {
            return;
        }
        if !self.expects_media() {
            self.resumed(now);
        } else if let Some(restart) = &mut self.restart {
            restart.phase = Phase::Media;
        }
    }

    /// An RTP packet arrived at `at` on the primary PeerConnection.
    pub(super) fn restart_on_rtp(&mut self, at: Instant) {
        if self.restart.as_ref().is_some_and(|r| r.phase == Phase::Media) {
            self.resumed(at);
        }
    }

    /// Whether RTP is to be awaited once ICE is back: a section the peer received RTP on still
    /// receives (a removed track's section turns inactive).
    fn expects_media(&self) -> bool {
        self.rx.values().any(|track| {
            let mid = Mid::from(track.mid.as_str());
            self.primary.rtc.media(mid).is_some_and(|m| m.direction().is_receiving())
        })
    }

    fn resumed(&mut self, at: Instant) {
        self.restart = None;
        self.events.push((at, PeerEvent::MediaResumed));
    }

    /// Fails the peer with `ice_restart_timeout` if its restart's deadline has passed.
    pub(super) fn check_restart_deadline(&mut self, now: Instant) {
        let Some(restart) = &self.restart else { return };
        if restart.deadline.is_none_or(|deadline| now < deadline) {
            return;
        }
        let what = match restart.phase {
            Phase::Answer => "got no answer",
            Phase::Checking => "did not reconnect ICE",
            Phase::Media => "reconnected ICE but no media arrived",
        };
        let t = &self.primary;
        let detail = format!(
            "{} PeerConnection: the ICE restart {what} within {:.0} s (ICE {}, remote candidates {})",
            self.pc_name(super::Pc::Subscriber),
            self.config.connect_timeout.as_secs_f64(),
            t.ice_state,
            t.remote_candidates.join(" ")
        );
        self.fail(now, "ice_restart_timeout", detail);
    }

    /// Whether an ICE restart is in progress.
    pub fn is_restarting(&self) -> bool {
        self.restart.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::media::{Direction, MediaKind};
    use str0m::{Candidate, Rtc};

    use super::*;
    use crate::media::clip::{Clip, ClipFrame, MediaLibrary};
    use crate::media::peer::PeerConfig;
    use crate::media::shared_certificate;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn peer(single_pc: bool) -> MediaPeer {
        let frames = (0..4u8).map(|i| ClipFrame { data: Arc::from(&[i, 1, 2][..]), keyframe: true }).collect();
        let audio = Arc::new(Clip::new(frames, Duration::from_millis(20), 48_000).unwrap());
        let library = MediaLibrary { audio: Some(audio), ..MediaLibrary::default() };
        let config = PeerConfig { single_pc, connect_timeout: TIMEOUT, ..PeerConfig::default() };
        let local = SocketAddr::from(([127, 0, 0, 1], 20_101));
        MediaPeer::new(&shared_certificate().unwrap(), local, library, config, Instant::now()).unwrap()
    }

    /// A str0m peer standing in for the server.
    fn server() -> Rtc {
        let mut rtc = Rtc::builder().clear_codecs().enable_opus(true, false).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(SocketAddr::from(([127, 0, 0, 1], 20_102)), "udp").unwrap());
        rtc
    }

    fn answer(server: &mut Rtc, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).unwrap();
        server.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
    }

    /// The distinct `a=ice-ufrag`/`a=ice-pwd` lines (each m-section repeats them).
    fn credentials(sdp: &str) -> Vec<&str> {
        let mut lines: Vec<&str> =
            sdp.lines().filter(|l| l.starts_with("a=ice-ufrag:") || l.starts_with("a=ice-pwd:")).collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }

    fn failures(peer: &mut MediaPeer) -> Vec<&'static str> {
        let events = peer.take_events();
        events
            .into_iter()
            .filter_map(|(_, e)| if let PeerEvent::Failed { reason, .. } = e { Some(reason) } else { None })
            .collect()
    }

    /// A single-PC peer whose join offer was answered: (peer, server, the join offer, its answer).
    fn joined() -> (MediaPeer, Rtc, String, String) {
        let (mut peer, mut server) = (peer(true), server());
        let (offer, _) = peer.create_join_offer(Some("cid-a"), None, Instant::now()).unwrap();
        let answer = answer(&mut server, &offer);
        peer.accept_single_answer(&answer, None).unwrap();
        (peer, server, offer, answer)
    }

    #[test]
    fn the_restart_offer_has_new_ice_credentials_and_the_answer_applies_them() {
        let (mut peer, mut server, join_offer, join_answer) = joined();
        let (offer, id) = peer.ice_restart(Instant::now()).unwrap();
        assert_eq!(id, 2);
        let (old, new) = (credentials(&join_offer), credentials(&offer));
        assert_eq!((old.len(), new.len()), (2, 2), "{offer}");
        assert!(old.iter().all(|line| !offer.contains(line)), "{old:?} -> {new:?}");
        assert!(peer.is_restarting() && peer.counters.ice_restarts == 1);
        let answer = answer(&mut server, &offer);
        assert!(credentials(&join_answer).iter().all(|line| !answer.contains(line)));
        assert_eq!(peer.accept_single_answer(&answer, None).unwrap(), None);
        assert_eq!(peer.restart.as_ref().map(|r| r.phase), Some(Phase::Checking));
        assert!(failures(&mut peer).is_empty() && !peer.is_failed());
    }

    #[test]
    fn an_answer_with_the_old_credentials_fails_the_peer() {
        let (mut peer, _server, _, join_answer) = joined();
        peer.ice_restart(Instant::now()).unwrap();
        // The join answer again: the same sections, the old credentials.
        assert_eq!(peer.accept_single_answer(&join_answer, None).unwrap(), None);
        assert!(peer.is_failed());
        assert_eq!(failures(&mut peer), vec!["ice_restart_rejected"]);
    }

    #[test]
    fn a_restart_not_done_by_the_deadline_fails_the_peer() {
        let (mut peer, mut server, _, _) = joined();
        let start = Instant::now();
        peer.primary.connected_at = Some(start); // as if it had connected before the resume
        let (offer, _) = peer.ice_restart(start).unwrap();
        peer.accept_single_answer(&answer(&mut server, &offer), None).unwrap();
        peer.handle_timeout(start + TIMEOUT - Duration::from_millis(1));
        assert!(!peer.is_failed());
        let wake = peer.poll(start + TIMEOUT - Duration::from_millis(1), &mut Vec::new());
        assert!(wake <= start + TIMEOUT, "the deadline wakes the peer");
        peer.handle_timeout(start + TIMEOUT);
        assert_eq!(failures(&mut peer), vec!["ice_restart_timeout"]);
    }

    #[test]
    fn a_pending_offer_is_dropped_and_its_sections_go_into_the_restart_offer() {
        let (mut peer, _server, join_offer, _) = joined();
        let (reoffer, _) = peer.reoffer(2, 1).unwrap().unwrap();
        assert_eq!(peer.reoffer(0, 1).unwrap(), None, "pending");
        let (offer, id) = peer.ice_restart(Instant::now()).unwrap();
        assert_eq!(id, 3);
        let m = |sdp: &str, kind: &str| sdp.lines().filter(|l| l.starts_with(kind)).count();
        assert_eq!(m(&offer, "m=audio"), m(&join_offer, "m=audio") + 2, "{reoffer}\n{offer}");
        assert_eq!(m(&offer, "m=video"), m(&join_offer, "m=video") + 2);
        assert_eq!(peer.single.as_ref().map(|s| s.recv_mids().len()), Some(6 + 4));
    }

    #[test]
    fn ice_restart_is_refused_on_a_dual_pc_peer_and_before_the_join_answer() {
        assert!(peer(false).ice_restart(Instant::now()).unwrap_err().contains("not a single-PC peer"));
        let mut single = peer(true);
        single.create_join_offer(None, None, Instant::now()).unwrap();
        assert!(single.ice_restart(Instant::now()).unwrap_err().contains("no answer"));
    }

    #[test]
    fn a_server_offer_with_new_credentials_is_a_restart_and_it_times_out() {
        let (mut peer, mut server) = (peer(false), server());
        let mut api = server.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let first = peer.accept_offer(&offer.to_sdp_string()).unwrap();
        server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&first).unwrap()).unwrap();
        assert!(!peer.is_restarting());
        // A renegotiation with the same credentials is no restart.
        let mut api = server.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let second = peer.accept_offer(&offer.to_sdp_string()).unwrap();
        server.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&second).unwrap()).unwrap();
        assert!(!peer.is_restarting());
        assert_eq!(credentials(&first), credentials(&second));

        let mut api = server.sdp_api();
        api.ice_restart(true);
        let (offer, _) = api.apply().unwrap();
        let third = peer.accept_offer(&offer.to_sdp_string()).unwrap();
        assert!(credentials(&first).iter().all(|line| !third.contains(line)), "we answer with new credentials");
        assert!(peer.is_restarting() && peer.counters.ice_restarts == 1);
        let start = Instant::now() + Duration::from_secs(1);
        peer.primary.connected_at = Some(start);
        peer.poll(start, &mut Vec::new()); // arms the deadline
        peer.handle_timeout(start + TIMEOUT);
        assert_eq!(failures(&mut peer), vec!["ice_restart_timeout"]);
    }

    #[test]
    fn with_no_rtp_ever_received_media_resumes_when_ice_reconnects() {
        let mut peer = peer(false);
        peer.begin_restart(Phase::Checking, None);
        let now = Instant::now();
        peer.restart_on_rtp(now);
        assert!(peer.is_restarting(), "RTP counts only once ICE is back");
        peer.restart_on_ice_connected(now);
        assert!(!peer.is_restarting());
        assert_eq!(peer.take_events(), vec![(now, PeerEvent::MediaResumed)]);
    }
}
