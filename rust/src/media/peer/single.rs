//! Single-PC signalling (`/rtc/v1`, docs/single-pc-design.md §3): the join offer, the server's
//! answers and the re-offers it asks for, on the peer's one PeerConnection.
//!
//! Theory of operation
//! -------------------
//! The server never offers on a single PeerConnection; it sends down tracks on transceivers we
//! offered. So we offer what the JS SDK offers at join: our send sections, 3 recvonly audio and 3
//! recvonly video sections and the `_reliable` and `_lossy` data channels. When it needs more
//! receive sections, or any renegotiation, it sends `media_sections_requirement`, and we re-offer
//! (`reoffer`). Offers are serialised as in the JS SDK: while one is pending, requests accumulate
//! and the follow-up offer comes back from `accept_single_answer`. Offer ids start at 1.
//!
//! `{0, 0}` asks for a plain re-offer, which str0m cannot make (`SdpApi::apply` returns None
//! when nothing changed). A direction change is a change that needs negotiation, so a free
//! recvonly section (no track mapped to it) is set inactive and back to recvonly on the same
//! `SdpApi`: the session ends as it was, the offer's m-lines are the same, and only that free
//! section's receive buffers are reset. With no free section, one recvonly video section is added.
//!
//! After a signal resume `ice_restart` offers new ICE credentials (the `restart` module tracks the
//! rest). An offer still pending then is dropped, since its answer died with the old WebSocket, and
//! the restart offer carries its receive sections and the requests accumulated meanwhile.
//!
//! ```text
//! create_join_offer --> pending --accept_single_answer--> idle --reoffer--> pending ...
//!                        \--reoffer: accumulate, None--/ (then the answer returns the follow-up)
//! idle or pending --ice_restart--> pending (the restart offer; a pending offer is dropped)
//! ```

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};

use super::{add_send_sections, MediaPeer};
use crate::media::data::add_livekit_channels;
use crate::media::publish::Publisher;
use crate::media::sdp::{msid_tracks_by_mid, offer_sdp_string};

/// Receive sections of each kind in the join offer, as the JS SDK makes them (RTCEngine.ts:113-114).
const JOIN_RECV_SECTIONS: usize = 3;

/// Receive sections a single-PC peer holds at most. Each of a room's tracks needs one; the server's
/// request is a uint32 off the wire, and each section is built (and its SDP written) under the hub's
/// lock, so a request past this is refused rather than stalling every peer of the process.
pub const MAX_RECEIVE_SECTIONS: usize = 4096;

/// What a single-PC peer tracks of its offers.
#[derive(Debug, Default)]
pub(in crate::media) struct SingleState {
    /// Offers made so far: the id of the latest.
    offers: u32,
    /// Answers accepted so far; payload types are chosen on the first.
    answers: u32,
    /// Receive sections asked for while an offer was pending: (audio, video).
    wanted: (u32, u32),
    /// A re-offer was asked for while an offer was pending.
    renegotiate: bool,
    /// Our recvonly sections, oldest first (including those of a pending offer).
    recv_mids: Vec<Mid>,
    /// Receive sections the pending offer adds: (audio, video).
    in_flight: (u32, u32),
    /// The sections the latest answer's `mid_to_track_id` names (None before an answer with a map):
    /// the others carry no track now, whatever they carried before.
    mapped_now: Option<std::collections::HashSet<String>>,
}

/// Our receive sections that an answer turned inactive (the server removed their track). A browser
/// keeps a transceiver's own direction, recvonly, whatever an answer said, and offers it again; str0m
/// takes the answer's, so each offer restores them, or the server could never reuse the section.
fn lapsed_receive_sections(rtc: &str0m::Rtc, recv_mids: &[Mid]) -> Vec<Mid> {
    recv_mids
        .iter()
        .copied()
        .filter(|mid| rtc.media(*mid).is_some_and(|m| !m.disabled() && m.direction() == Direction::Inactive))
        .collect()
}

#[cfg(test)]
impl SingleState {
    pub(in crate::media::peer) fn recv_mids(&self) -> &[Mid] {
        &self.recv_mids
    }
}

/// An offer for the caller to send, with its id.
pub type Offer = (String, u32);

impl MediaPeer {
    /// The join offer of a single-PC peer: the send sections for `audio_cid` and `video_cid` (as
    /// `create_publisher_offer` makes them), 3 recvonly audio and 3 recvonly video sections, and the
    /// data channels. Media starts when the PeerConnection connects.
    pub fn create_join_offer(
        &mut self,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        now: Instant,
    ) -> Result<Offer, String> {
        self.check_clips(audio_cid, video_cid)?;
        let Some(single) = &mut self.single else { return Err("not a single-PC peer: use publisher_offer".into()) };
        if single.offers > 0 {
            return Err("the join offer was already made".into());
        }
        let mut api = self.primary.rtc.sdp_api();
        let (audio_mid, video_mid) = add_send_sections(&mut api, &self.library, audio_cid, video_cid);
        for kind in [MediaKind::Audio, MediaKind::Video] {
            for _ in 0..JOIN_RECV_SECTIONS {
                single.recv_mids.push(api.add_media(kind, Direction::RecvOnly, None, None, None));
            }
        }
        // The server counts the PeerConnection established only once both channels are open.
        add_livekit_channels(&mut api);
        let (offer, pending) = api.apply().ok_or("nothing to offer")?;
        self.pending_offer = Some(pending);
        single.offers += 1;
        let id = single.offers;
        if audio_mid.is_some() || video_mid.is_some() {
            let (talk_spurts, seed) = (self.config.talk_spurts, self.config.seed);
            self.publishing = Some(Publisher::new(self.library.clone(), audio_mid, video_mid, talk_spurts, seed, now));
        }
        Ok((offer_sdp_string(&offer), id))
    }

    /// Applies the server's answer to our pending offer. Each mid's track is the answer's `a=msid`
    /// overlaid by the server's `mid_to_track_id` (which wins); mids keep their tracks across
    /// answers until one maps them anew. Returns the follow-up offer if a re-offer was asked for
    /// while this one was pending.
    pub fn accept_single_answer(
        &mut self,
        sdp: &str,
        mid_to_track_id: Option<&HashMap<String, String>>,
    ) -> Result<Option<Offer>, String> {
        self.flush_receipts(); // an answer may retire receive streams: account theirs first
        let Some(single) = &mut self.single else { return Err("not a single-PC peer".into()) };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("unparsable answer: {e}"))?;
        let pending = self.pending_offer.take().ok_or("an answer arrived with no offer pending")?;
        let credentials = self.primary.rtc.direct_api().local_ice_credentials();
        self.primary.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("answer rejected: {e}"))?;
        self.primary.undrained = true;
        single.in_flight = (0, 0);
        single.answers += 1;
        let (first_answer, follow_up) = (single.answers == 1, single.renegotiate);
        let mut mapping: HashMap<String, String> = msid_tracks_by_mid(sdp).into_iter().collect();
        if let Some(map) = mid_to_track_id {
            // The server's map wins over a=msid, and says which sections carry a track now.
            mapping.extend(map.iter().map(|(mid, track)| (mid.clone(), track.clone())));
            single.mapped_now = Some(map.keys().cloned().collect());
        }
        self.map_tracks(mapping);
        if first_answer {
            if let Some(publishing) = &mut self.publishing {
                publishing.choose_payload_types(&mut self.primary.rtc)?;
            }
        }
        if !self.after_restart_answer(&credentials) {
            return Ok(None); // failed: ice_restart_rejected
        }
        if follow_up {
            return self.offer_receive_sections(0, 0).map(Some);
        }
        Ok(None)
    }

    /// Restarts ICE after a signal resume: an offer (sdp, id) with new ICE credentials, plus the
    /// receive sections of a pending offer that was never sent (a follow-up the caller drops; an offer
    /// in flight at the resume is sent again first, and the restart follows its answer: the server may
    /// answer it on the new WebSocket) and of the requests accumulated meanwhile. The restart must end by `connect_timeout` from `now`.
    pub fn ice_restart(&mut self, now: Instant) -> Result<Offer, String> {
        if self.failed {
            return Err("the peer has failed".into());
        }
        self.flush_receipts();
        let Some(single) = &mut self.single else {
            return Err("not a single-PC peer: the server restarts ICE on the subscriber PeerConnection".into());
        };
        if single.answers == 0 {
            return Err("no answer was accepted yet: nothing to restart (rejoin instead)".into());
        }
        if self.pending_offer.take().is_some() {
            single.wanted.0 += single.in_flight.0;
            single.wanted.1 += single.in_flight.1;
            let rtc = &self.primary.rtc;
            single.recv_mids.retain(|mid| rtc.media(*mid).is_some()); // the dropped offer's never came to be
        }
        let (audios, videos) = single.wanted;
        let lapsed = lapsed_receive_sections(&self.primary.rtc, &single.recv_mids);
        let mut api = self.primary.rtc.sdp_api();
        api.ice_restart(true);
        for mid in lapsed {
            api.set_direction(mid, Direction::RecvOnly);
        }
        for _ in 0..audios {
            single.recv_mids.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        for _ in 0..videos {
            single.recv_mids.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        }
        let (offer, pending) = api.apply().ok_or("str0m made no ICE restart offer")?;
        self.pending_offer = Some(pending);
        single.in_flight = (audios, videos);
        single.wanted = (0, 0);
        single.renegotiate = false;
        single.offers += 1;
        let id = single.offers;
        self.begin_restart(super::restart::Phase::Answer, Some(now));
        Ok((offer_sdp_string(&offer), id))
    }

    /// The server's `media_sections_requirement`: `audios` and `videos` more recvonly sections, or
    /// with both 0 a plain re-offer. Returns the offer, or None while an offer is pending (the
    /// follow-up, for every request since, comes back from `accept_single_answer`).
    pub fn reoffer(&mut self, audios: u32, videos: u32) -> Result<Option<Offer>, String> {
        let Some(single) = &mut self.single else { return Err("not a single-PC peer".into()) };
        if single.offers == 0 {
            return Err("no join offer was made".into());
        }
        let held = single.recv_mids.len() as u64 + u64::from(single.wanted.0) + u64::from(single.wanted.1);
        if held + u64::from(audios) + u64::from(videos) > MAX_RECEIVE_SECTIONS as u64 {
            return Err(format!(
                "the server asked for {audios} audio and {videos} video receive sections more than the {held} \
                 held; a peer holds at most {MAX_RECEIVE_SECTIONS}"
            ));
        }
        if self.pending_offer.is_some() {
            single.wanted.0 += audios;
            single.wanted.1 += videos;
            single.renegotiate = true;
            return Ok(None);
        }
        self.offer_receive_sections(audios, videos).map(Some)
    }

    /// Offers `audios` and `videos` more recvonly sections plus those asked for while an offer was
    /// pending; with none at all, a plain re-offer (see the module doc).
    fn offer_receive_sections(&mut self, audios: u32, videos: u32) -> Result<Offer, String> {
        self.flush_receipts();
        let Some(single) = &mut self.single else { return Err("not a single-PC peer".into()) };
        let (audios, videos) = (audios + single.wanted.0, videos + single.wanted.1);
        let free = single.recv_mids.iter().copied().find(|mid| {
            let mid_text = mid.to_string();
            let mapped = match &single.mapped_now {
                Some(now) => now.contains(&mid_text),
                None => self.tracks_by_mid.contains_key(&mid_text),
            };
            !mapped && self.primary.rtc.media(*mid).is_some_and(|m| m.direction() == Direction::RecvOnly)
        });
        let lapsed = lapsed_receive_sections(&self.primary.rtc, &single.recv_mids);
        let restores = !lapsed.is_empty();
        let mut api = self.primary.rtc.sdp_api();
        for mid in lapsed {
            api.set_direction(mid, Direction::RecvOnly);
        }
        for _ in 0..audios {
            single.recv_mids.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        for _ in 0..videos {
            single.recv_mids.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        }
        if audios == 0 && videos == 0 && !restores {
            match free {
                Some(mid) => {
                    api.set_direction(mid, Direction::Inactive);
                    api.set_direction(mid, Direction::RecvOnly);
                }
                None => single.recv_mids.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None)),
            }
        }
        let (offer, pending) = api.apply().ok_or("str0m made no re-offer")?;
        self.pending_offer = Some(pending);
        single.in_flight = (audios, videos);
        single.wanted = (0, 0);
        single.renegotiate = false;
        single.offers += 1;
        Ok((offer_sdp_string(&offer), single.offers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use str0m::change::SdpOffer;
    use str0m::{Candidate, Rtc};

    use crate::media::clip::{Clip, ClipFrame, MediaLibrary};
    use crate::media::peer::{PeerConfig, RxTrack};
    use crate::media::rxstats::RxStats;
    use crate::media::shared_certificate;
    use str0m::rtp::Ssrc;

    fn library() -> MediaLibrary {
        let clip = |interval_ms, rate| {
            let frames = (0..4u8).map(|i| ClipFrame { data: Arc::from(&[i, 1, 2][..]), keyframe: i == 0 }).collect();
            Arc::new(Clip::new(frames, Duration::from_millis(interval_ms), rate).unwrap())
        };
        MediaLibrary { audio: Some(clip(20, 48_000)), video: vec![clip(33, 90_000); 3], ..MediaLibrary::default() }
    }

    fn single_peer() -> MediaPeer {
        let config = PeerConfig { single_pc: true, ..PeerConfig::default() };
        let local = SocketAddr::from(([127, 0, 0, 1], 20_001));
        MediaPeer::new(&shared_certificate().unwrap(), local, library(), config, Instant::now()).unwrap()
    }

    /// A str0m answerer standing in for the server.
    fn server() -> Rtc {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_rtp_mode(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(SocketAddr::from(([127, 0, 0, 1], 20_002)), "udp").unwrap());
        rtc
    }

    /// The server's answer, without str0m's `a=msid` lines: pion names no track on a section it
    /// does not send on, and str0m would name a random one on every section.
    fn answer(server: &mut Rtc, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).unwrap();
        let answer = server.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
        answer.split_inclusive("\r\n").filter(|line| !line.starts_with("a=msid:")).collect()
    }

    fn m_lines(sdp: &str) -> Vec<String> {
        let mut sections: Vec<String> = Vec::new();
        for line in sdp.lines() {
            if line.starts_with("m=") {
                sections.push(String::new());
            }
            if let Some(section) = sections.last_mut() {
                if !line.starts_with("a=ssrc") && !line.starts_with("a=msid") {
                    section.push_str(line);
                    section.push('\n');
                }
            }
        }
        sections
    }

    fn count(sdp: &str, needle: &str) -> usize {
        sdp.lines().filter(|l| l.starts_with(needle)).count()
    }

    #[test]
    fn the_join_offer_has_send_and_receive_sections_and_the_data_channels() {
        let mut peer = single_peer();
        let (offer, id) = peer.create_join_offer(Some("cid-a"), Some("cid-v"), Instant::now()).unwrap();
        assert_eq!(id, 1);
        assert_eq!(count(&offer, "m=audio"), 4, "{offer}");
        assert_eq!(count(&offer, "m=video"), 4, "{offer}");
        assert_eq!(count(&offer, "m=application"), 1, "{offer}");
        assert_eq!(count(&offer, "a=sendonly"), 2, "{offer}");
        assert_eq!(count(&offer, "a=recvonly"), 6, "{offer}");
        assert_eq!(count(&offer, "a=rid:"), 3, "{offer}");
        assert!(offer.contains("a=simulcast:send q;h;f"), "{offer}");
        assert!(offer.contains("cid-a") && offer.contains("cid-v"), "{offer}");
        assert!(offer.contains("VP8/90000") && offer.contains("H264/90000"), "receives any room codec: {offer}");
        assert!(peer.create_join_offer(None, None, Instant::now()).is_err(), "one join offer");
        assert!(peer
            .create_publisher_offer(
                SocketAddr::from(([127, 0, 0, 1], 1)),
                &shared_certificate().unwrap(),
                None,
                None,
                false,
                Instant::now()
            )
            .unwrap_err()
            .contains("use join_offer"));
        assert!(peer.accept_offer(&offer).unwrap_err().contains("server offered on a single-PC session"));
    }

    #[test]
    fn the_answer_maps_mids_to_tracks_and_the_servers_map_wins() {
        let mut peer = single_peer();
        let (offer, _) = peer.create_join_offer(Some("cid-a"), None, Instant::now()).unwrap();
        let mut answer = answer(&mut server(), &offer);
        // As pion would, name the tracks of two receive sections in a=msid.
        let recv_mids = peer.single.as_ref().unwrap().recv_mids.clone();
        let (one, two) = (recv_mids[0].to_string(), recv_mids[1].to_string());
        for (mid, track) in [(&one, "TR_msid1"), (&two, "TR_msid2")] {
            let at = answer.find(&format!("a=mid:{mid}\r\n")).unwrap();
            answer.insert_str(at, &format!("a=msid:PA_x|{track} {track}\r\n"));
        }
        let map = HashMap::from([(two.clone(), "TR_map2".to_string())]);
        assert_eq!(peer.accept_single_answer(&answer, Some(&map)).unwrap(), None);
        assert_eq!(peer.tracks_by_mid.get(&one).map(String::as_str), Some("TR_msid1"));
        assert_eq!(peer.tracks_by_mid.get(&two).map(String::as_str), Some("TR_map2"));
        assert_eq!(peer.tracks_by_mid.len(), 2);
        assert!(peer.publishing.as_ref().is_some());
        assert!(peer.accept_single_answer(&answer, None).unwrap_err().contains("no offer pending"));
    }

    #[test]
    fn a_section_reused_for_another_track_starts_that_tracks_accounting() {
        // livekit-server reuses a free section with ReplaceTrack; pion keeps the sender's SSRC.
        let mut peer = single_peer();
        let ssrc = Ssrc::from(1234);
        let mut stats = RxStats::new(48_000);
        stats.record(1, 960, 0.02, 100);
        let old =
            RxTrack { track_id: "TR_old".into(), kind: "audio", codec: "audio/opus".into(), mid: "a1".into(), stats };
        peer.rx.insert(ssrc, old);
        peer.map_tracks([("a1".to_string(), "TR_old".to_string())]);
        assert!(peer.rx.contains_key(&ssrc), "the same track: its accounting goes on");
        peer.map_tracks([("a1".to_string(), "TR_new".to_string()), ("v1".to_string(), "TR_v".to_string())]);
        assert!(!peer.rx.contains_key(&ssrc), "the next packet of that SSRC starts TR_new's accounting");
        let tracks: Vec<&str> = peer.rx_tracks().map(|t| t.track_id.as_str()).collect();
        assert_eq!(tracks, ["TR_old"], "the old track's packets stay in the summary");
        assert_eq!(peer.tracks_by_mid.get("a1").map(String::as_str), Some("TR_new"));
    }

    #[test]
    fn a_receive_section_an_answer_turned_inactive_is_offered_recvonly_again() {
        // The server answers a removed track's section inactive; it reuses the section only if our
        // next offer says recvonly again, as a browser's transceiver does.
        let mut peer = single_peer();
        let (offer, _) = peer.create_join_offer(Some("cid-a"), None, Instant::now()).unwrap();
        let mut server = server();
        let first = answer(&mut server, &offer);
        peer.accept_single_answer(&first, None).unwrap();
        let mid = peer.single.as_ref().unwrap().recv_mids[0];
        let (reoffer, _) = peer.reoffer(0, 0).unwrap().unwrap();
        let mut lapsed = answer(&mut server, &reoffer);
        let section = lapsed.find(&format!("a=mid:{mid}\r\n")).unwrap();
        let end = lapsed[section..].find("\r\nm=").map_or(lapsed.len(), |at| at + section);
        let direction = lapsed[section..end].find("a=sendonly\r\n").expect("the server sends on it") + section;
        lapsed.replace_range(direction..direction + "a=sendonly".len(), "a=inactive");
        peer.accept_single_answer(&lapsed, Some(&HashMap::new())).unwrap();
        assert_eq!(peer.primary.rtc.media(mid).map(|m| m.direction()), Some(Direction::Inactive));
        let (again, _) = peer.reoffer(0, 0).unwrap().unwrap();
        let sections = skeleton(&again);
        let restored = sections.iter().find(|s| s.contains(&format!("a=mid:{mid} "))).unwrap();
        assert!(restored.ends_with("a=recvonly"), "{restored}");
        assert_eq!(sections.len(), skeleton(&reoffer).len(), "restoring it is the re-offer: no section added");
    }

    /// Each section's kind, mid and direction.
    fn skeleton(sdp: &str) -> Vec<String> {
        let keep = |l: &&str| {
            l.starts_with("m=")
                || l.starts_with("a=mid:")
                || ["a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv"].contains(l)
        };
        m_lines(sdp)
            .iter()
            .map(|section| {
                section.lines().filter(keep).map(|l| l.split(' ').next().unwrap_or(l)).collect::<Vec<_>>().join(" ")
            })
            .collect()
    }

    fn assert_same_sections(before: &str, after: &str) {
        let (before, after) = (m_lines(before), m_lines(after));
        assert_eq!(before.len(), after.len());
        for (before, after) in before.iter().zip(&after) {
            let changed: Vec<_> = before.lines().zip(after.lines()).filter(|(b, a)| b != a).collect();
            assert!(changed.is_empty() && before.lines().count() == after.lines().count(), "{changed:?}");
        }
    }

    #[test]
    fn a_plain_reoffer_repeats_the_m_lines() {
        let (mut peer, mut server) = (single_peer(), server());
        let (offer, _) = peer.create_join_offer(Some("cid-a"), Some("cid-v"), Instant::now()).unwrap();
        peer.accept_single_answer(&answer(&mut server, &offer), None).unwrap();
        let (first, id) = peer.reoffer(0, 0).unwrap().expect("an offer");
        assert_eq!(id, 2);
        // The same sections; only the codecs narrow to those the answer accepted, as in any re-offer.
        assert_eq!(skeleton(&first), skeleton(&offer));
        assert_eq!(count(&first, "a=recvonly"), 6, "the toggled section is back to recvonly: {first}");
        peer.accept_single_answer(&answer(&mut server, &first), None).unwrap();
        let (second, id) = peer.reoffer(0, 0).unwrap().expect("an offer");
        assert_eq!(id, 3);
        assert_same_sections(&first, &second);
        peer.accept_single_answer(&answer(&mut server, &second), None).unwrap();
        // With every receive section mapped, a plain re-offer adds one video section instead.
        let recv_mids = &peer.single.as_ref().unwrap().recv_mids;
        let map: HashMap<String, String> = recv_mids.iter().map(|m| (m.to_string(), format!("TR_{m}"))).collect();
        peer.tracks_by_mid.extend(map);
        let (third, id) = peer.reoffer(0, 0).unwrap().unwrap();
        assert_eq!((id, count(&third, "m=video"), count(&third, "m=audio")), (4, 5, 4), "{third}");
    }

    #[test]
    fn a_reoffer_adds_the_sections_asked_for() {
        let (mut peer, mut server) = (single_peer(), server());
        let (offer, _) = peer.create_join_offer(None, None, Instant::now()).unwrap();
        peer.accept_single_answer(&answer(&mut server, &offer), None).unwrap();
        let (reoffer, _) = peer.reoffer(2, 1).unwrap().unwrap();
        assert_eq!(count(&reoffer, "m=audio"), count(&offer, "m=audio") + 2);
        assert_eq!(count(&reoffer, "m=video"), count(&offer, "m=video") + 1);
        assert_eq!(count(&reoffer, "a=recvonly"), count(&offer, "a=recvonly") + 3);
    }

    #[test]
    fn a_request_past_the_sections_a_peer_holds_is_refused_whole() {
        let (mut peer, mut server) = (single_peer(), server());
        let (offer, _) = peer.create_join_offer(None, None, Instant::now()).unwrap();
        // Pending: a request accumulates, and one that would pass the cap is refused before it does.
        let error = peer.reoffer(u32::MAX, u32::MAX).unwrap_err();
        assert!(error.contains("a peer holds at most 4096"), "{error}");
        peer.accept_single_answer(&answer(&mut server, &offer), None).unwrap();
        let held = peer.single.as_ref().unwrap().recv_mids.len();
        let error = peer.reoffer(u32::try_from(MAX_RECEIVE_SECTIONS - held).unwrap(), 1).unwrap_err();
        assert!(error.contains(&format!("more than the {held} held")), "{error}");
        // Nothing of a refused request is kept: the next plain re-offer has the same sections.
        let (reoffer, _) = peer.reoffer(1, 0).unwrap().unwrap();
        assert_eq!(count(&reoffer, "m=audio"), count(&offer, "m=audio") + 1);
    }

    #[test]
    fn reoffers_while_pending_are_summed_into_the_follow_up() {
        let (mut peer, mut server) = (single_peer(), server());
        let (offer, _) = peer.create_join_offer(Some("cid-a"), None, Instant::now()).unwrap();
        assert_eq!(peer.reoffer(1, 0).unwrap(), None);
        assert_eq!(peer.reoffer(1, 2).unwrap(), None);
        assert_eq!(peer.reoffer(0, 0).unwrap(), None);
        let (follow_up, id) =
            peer.accept_single_answer(&answer(&mut server, &offer), None).unwrap().expect("follow-up");
        assert_eq!(id, 2);
        assert_eq!(count(&follow_up, "m=audio"), count(&offer, "m=audio") + 2);
        assert_eq!(count(&follow_up, "m=video"), count(&offer, "m=video") + 2);
        assert_eq!(
            peer.accept_single_answer(&answer(&mut server, &follow_up), None).unwrap(),
            None,
            "nothing more asked"
        );
    }
}
