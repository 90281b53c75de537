//! One simulated participant's WebRTC side, sans-I/O: a subscriber PeerConnection
//! (answers the server's offers) and, for publishers, a publisher PeerConnection
//! (offers synthetic audio and simulcast video); or, in single-PC mode (`/rtc/v1`),
//! one PeerConnection for both directions.
//!
//! Theory of operation
//! -------------------
//! Each PeerConnection is one str0m `Rtc` bound to its own local UDP address:
//! livekit's single UDP port routes by the client's address first, so two
//! PeerConnections must never share one (see docs/media-tier-research.md §0.1).
//!
//! The caller owns sockets and clocks. It feeds datagrams (`handle_datagram`)
//! and wake-ups (`handle_timeout`) with the current `Instant`, then calls
//! `poll` to collect datagrams to send; `poll` also returns when the peer next
//! wants to be woken. Signaling goes through plain methods (`accept_offer`,
//! `create_publisher_offer`, `accept_answer`, `add_remote_candidate`) whose
//! SDP strings the caller carries over the SignalSession.
//!
//! Lifecycle of each PeerConnection:
//!
//! ```text
//! new --ICE checking--> ice connected --DTLS--> connected (SRTP keys; ACTIVE for the primary)
//!  \__________________ no connection by the deadline / DTLS error __________> failed
//! connected (primary) --ICE restart--> restarting --ICE back, media flows--> connected (MediaResumed)
//!                                       \__ not by the deadline / old credentials __> failed
//! ```
//!
//! A peer fails once (first reason wins) and then ignores all input. The
//! subscriber PeerConnection is the primary one (livekit's subscriber_primary),
//! so its `Connected` is what makes the participant ACTIVE.
//!
//! The subscriber runs str0m in RTP mode: every new packet arrives as one event
//! and is accounted in `RxStats` without depacketizing. The publisher runs in
//! frame mode so str0m packetizes VP8 (payload descriptor, picture id), H.264
//! (STAP-A, FU-A) and Opus; what it sends, and when, is the `publish::Publisher`'s,
//! which the peer lends the publisher's transport to write each due frame, then
//! drains it. Each `Rtc` with its bookkeeping is a `transport::Transport`.
//!
//! Single-PC mode (`PeerConfig::single_pc`, docs/single-pc-design.md §3) has one PeerConnection,
//! held in the primary slot: we offer it (`create_join_offer`: the send sections, 3+3 recvonly
//! sections and the data channels), the server answers, and the server's later needs arrive as
//! re-offer requests (`reoffer`); the `single` submodule serialises those offers. It runs in RTP
//! mode, since it also receives, so its publisher packetizes itself (`rtp_sink`). The server
//! calls it its publisher PeerConnection, so events name it `Pc::Publisher`; its `Connected` is
//! the primary one, and the published media starts on it. Trickled candidates for either target
//! land on it.
//!
//! Data channels (`data` submodule, `media::data`): every PeerConnection's channel events are
//! handled, so what the server sends on `_reliable` / `_lossy` is accounted per sender; probe
//! messages are written on the channels of the media PeerConnection (the dual-PC publisher one,
//! whose offer adds them with `data`, or the single one), on the same `poll` as media frames.
//!
//! After a signal resume ICE restarts on the primary PeerConnection: the server offers new
//! credentials (dual-PC) or we offer them (`ice_restart`, single-PC). The `restart` submodule
//! tracks it until ICE is connected again and media flows (`PeerEvent::MediaResumed`), or fails
//! the peer (`ice_restart_timeout`, `ice_restart_rejected`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::rtp::Ssrc;

use super::clip::{MediaLibrary, SIMULCAST_RIDS};
use super::data::rpc::Answer as RpcAnswer;
use super::data::{add_livekit_channels, DataState};
use super::publish::Publisher;
use super::rxstats::RxStats;
use super::sdp::{candidate_from_init, msid_tracks_by_mid};
use super::transport::Transport;
use super::types::IdMap;

mod data;
mod data_track;
mod io;
mod own_srtp;
mod restart;
mod single;

/// The values the peer's API speaks, defined apart so `publish` needs nothing of this module.
pub use super::types::{Datagram, Pc, PeerCounters, Received};
pub use own_srtp::{str0m_drop_reasons, str0m_drops_by_reason, Str0mDrops};

/// Something the owner of the peer must hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    IceState {
        pc: Pc,
        state: &'static str,
    },
    /// `pc` is as the server names the PeerConnection: the single PeerConnection is its publisher
    /// PeerConnection. `primary`: this connection makes the participant ACTIVE (the dual subscriber
    /// PeerConnection, or the single one).
    Connected {
        pc: Pc,
        primary: bool,
    },
    /// The first RTP packet of a subscribed track.
    FirstPacket {
        track_id: String,
        kind: &'static str,
    },
    /// After an ICE restart (a signal resume), the primary PeerConnection's ICE is connected again
    /// and media flows: the first RTP packet since, or ICE itself if no media is expected (no
    /// section the peer received RTP on is still receiving).
    MediaResumed,
    /// The peer is dead; `reason` is a short code, `detail` a sentence.
    Failed {
        reason: &'static str,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// ICE + DTLS of each PeerConnection must complete within this, or the peer fails.
    pub connect_timeout: Duration,
    /// Simulate talk spurts (ITU-T P.59) on audio instead of continuous speech.
    pub talk_spurts: bool,
    pub seed: u64,
    /// One PeerConnection for both directions (`/rtc/v1`, docs/single-pc-design.md §3) instead of
    /// a subscriber PeerConnection plus, for publishers, a publisher PeerConnection.
    pub single_pc: bool,
    /// How the participant answers RPC calls (`--rpc-echo`).
    pub rpc_answer: RpcAnswer,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            connect_timeout: Duration::from_secs(30),
            talk_spurts: false,
            seed: 0,
            single_pc: false,
            rpc_answer: RpcAnswer::Unsupported,
        }
    }
}

/// Per-track receive accounting, keyed by SSRC.
#[derive(Debug, Clone)]
pub struct RxTrack {
    pub track_id: String,
    pub kind: &'static str,
    /// As in WebRTC stats' `mimeType`: `audio/opus`, `video/VP8`, `video/H264` (what the SFU sent).
    pub codec: String,
    pub mid: String,
    pub stats: RxStats,
}

/// Adds the publisher's send sections to an offer: one audio m-line (if `audio_cid`) and one video
/// m-line with the library's simulcast layers (if `video_cid`), each track named by its cid.
fn add_send_sections(
    api: &mut SdpApi,
    library: &MediaLibrary,
    audio_cid: Option<&str>,
    video_cid: Option<&str>,
) -> (Option<Mid>, Option<Mid>) {
    let stream_id = "lkswarm".to_string();
    let audio_mid = audio_cid.map(|cid| {
        api.add_media(MediaKind::Audio, Direction::SendOnly, Some(stream_id.clone()), Some(cid.into()), None)
    });
    let layers = library.video.len();
    let video_mid = video_cid.map(|cid| {
        let simulcast = (layers > 1).then(|| {
            let mut simulcast = Simulcast::new();
            for rid in SIMULCAST_RIDS.iter().take(layers) {
                simulcast.add_send_layer(SimulcastLayer::new(rid));
            }
            simulcast
        });
        api.add_media(MediaKind::Video, Direction::SendOnly, Some(stream_id.clone()), Some(cid.into()), simulcast)
    });
    (audio_mid, video_mid)
}

/// A backstop for our own connectivity checks. str0m's ICE agent acts only on `Input::Timeout`;
/// the hub runs those when str0m asks, and under CPU load a subscriber was seen that had its offer
/// and candidates yet had sent nothing 30 s later ("ICE new, 0 datagrams sent"). Forcing a timeout
/// inside the signaling call instead sends checks before our answer has left on the WebSocket: the
/// server drops them and `latency_ms.active` grows by str0m's 250 ms retransmission (p50 7 -> 210 ms).
/// So checks are forced only if no STUN from the server has arrived by this delay (counted again
/// after an ICE restart).
const OWN_CHECKS_AFTER: Duration = Duration::from_millis(500);
pub struct MediaPeer {
    /// The PeerConnection that makes the participant ACTIVE: the subscriber PeerConnection in
    /// dual-PC mode, the one PeerConnection in single-PC mode. Internally it is always `Pc::Subscriber`.
    primary: Transport,
    /// The dual-PC publisher PeerConnection, once offered; always None in single-PC mode.
    publisher: Option<Transport>,
    /// Single-PC (`/rtc/v1`) state: offers, re-offers and receive sections (`single`); None in
    /// dual-PC mode.
    single: Option<single::SingleState>,
    pending_offer: Option<SdpPendingOffer>,
    /// An ICE restart in progress on the primary PeerConnection (`restart`).
    restart: Option<restart::Restart>,
    /// The publisher's synthetic media, from its offer on (the tracks it offered).
    publishing: Option<Publisher>,
    /// The clips a publisher offer may use; the `Publisher` takes its own handle.
    library: MediaLibrary,
    /// By SSRC: looked up for every received packet.
    rx: IdMap<Ssrc, RxTrack>,
    /// Receive accounting of tracks whose section now carries another track (kept for the summary).
    retired_rx: Vec<RxTrack>,
    /// The latest datagram's arrival (the kernel's time): a received data message's arrival. Kept as
    /// an `Instant` and put on the wall clock only when a data message needs it, not per datagram.
    last_arrival: Option<Instant>,
    tracks_by_mid: HashMap<String, String>,
    events: Vec<(Instant, PeerEvent)>,
    /// Datagrams produced while handling input, until `poll` hands them out. str0m
    /// must be drained after every input (in RTP mode it holds one received packet).
    outbox: Vec<Datagram>,
    failed: bool,
    config: PeerConfig,
    pub counters: PeerCounters,
    /// Data-channel load: open channels, the probe schedule, receive accounting (`data`).
    data: DataState,
    /// The subscriber's own SRTP receive path for steady streams (`own_srtp`).
    own_srtp: own_srtp::OwnSrtp,
}

impl MediaPeer {
    /// A peer whose primary PeerConnection listens on `primary_addr`: the subscriber PeerConnection,
    /// or with `config.single_pc` the one PeerConnection of `/rtc/v1`.
    pub fn new(
        cert: &DtlsCert,
        primary_addr: SocketAddr,
        library: MediaLibrary,
        config: PeerConfig,
        now: Instant,
    ) -> Result<Self, String> {
        let primary = if config.single_pc {
            Transport::single(cert, primary_addr, now)?
        } else {
            Transport::subscriber(cert, primary_addr, now)?
        };
        let mut data = DataState::default();
        data.rpc_answer = config.rpc_answer;
        Ok(MediaPeer {
            primary,
            publisher: None,
            single: config.single_pc.then(single::SingleState::default),
            pending_offer: None,
            restart: None,
            publishing: None,
            library,
            rx: IdMap::default(),
            retired_rx: Vec::new(),
            last_arrival: None,
            tracks_by_mid: HashMap::new(),
            events: Vec::new(),
            outbox: Vec::new(),
            failed: false,
            config,
            counters: PeerCounters::default(),
            data,
            own_srtp: own_srtp::OwnSrtp::default(),
        })
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn local_addrs(&self) -> Vec<(Pc, SocketAddr)> {
        let mut addrs = vec![(self.signal_pc(Pc::Subscriber), self.primary.local)];
        if let Some(publisher) = &self.publisher {
            addrs.push((Pc::Publisher, publisher.local));
        }
        addrs
    }

    /// Whether the PeerConnection `pc` is connected; in single-PC mode both name the one.
    pub fn is_connected(&self, pc: Pc) -> bool {
        self.transport(self.own_pc(pc)).is_some_and(|t| t.connected_at.is_some())
    }

    /// Whether this peer has one PeerConnection for both directions (`/rtc/v1`).
    pub fn is_single(&self) -> bool {
        self.single.is_some()
    }

    /// Our slot for the PeerConnection the server names `pc`: in single-PC mode always the primary.
    fn own_pc(&self, pc: Pc) -> Pc {
        if self.single.is_some() {
            Pc::Subscriber
        } else {
            pc
        }
    }

    /// The server's name for our slot `pc`: it treats the single PeerConnection as its publisher one.
    fn signal_pc(&self, pc: Pc) -> Pc {
        if self.single.is_some() {
            Pc::Publisher
        } else {
            pc
        }
    }

    /// How a failure's detail names our slot `pc`.
    fn pc_name(&self, pc: Pc) -> &'static str {
        if self.single.is_some() {
            "single"
        } else {
            pc.name()
        }
    }

    /// The slot whose transport carries the published media.
    fn media_pc(&self) -> Pc {
        self.own_pc(Pc::Publisher)
    }

    /// Whether a PeerConnection of this live peer is still in its ICE/DTLS handshake, or restarting ICE.
    pub fn is_connecting(&self) -> bool {
        !self.failed
            && (self.restart.is_some()
                || [Pc::Subscriber, Pc::Publisher]
                    .into_iter()
                    .any(|pc| self.transport(pc).is_some_and(|t| t.connected_at.is_none())))
    }

    pub fn take_events(&mut self) -> Vec<(Instant, PeerEvent)> {
        std::mem::take(&mut self.events)
    }

    pub fn rx_tracks(&self) -> impl Iterator<Item = &RxTrack> {
        self.rx.values().chain(self.retired_rx.iter())
    }

    /// Records which track each section (mid) carries now. livekit-server reuses a free section for
    /// a new track (`ReplaceTrack` on its sender), and pion keeps the sender's SSRC, so the new
    /// track's packets arrive under the old track's SSRC: the section's receive accounting is
    /// retired, and its next packet starts the new track's (with its `FirstPacket`).
    fn map_tracks(&mut self, mapping: impl IntoIterator<Item = (String, String)>) {
        for (mid, track_id) in mapping {
            match self.tracks_by_mid.get(&mid) {
                Some(current) if *current == track_id => continue,
                Some(_) => {
                    let moved: Vec<Ssrc> =
                        self.rx.iter().filter(|(_, track)| track.mid == mid).map(|(ssrc, _)| *ssrc).collect();
                    for ssrc in moved {
                        if let Some(track) = self.rx.remove(&ssrc) {
                            self.retired_rx.push(track);
                        }
                        self.forget_own_srtp(ssrc);
                    }
                }
                None => {}
            }
            self.tracks_by_mid.insert(mid, track_id);
        }
    }

    fn transport(&self, pc: Pc) -> Option<&Transport> {
        match pc {
            Pc::Subscriber => Some(&self.primary),
            Pc::Publisher => self.publisher.as_ref(),
        }
    }

    fn transport_mut(&mut self, pc: Pc) -> Option<&mut Transport> {
        match pc {
            Pc::Subscriber => Some(&mut self.primary),
            Pc::Publisher => self.publisher.as_mut(),
        }
    }

    /// Marks the peer failed (first reason wins) and closes both PeerConnections.
    pub fn fail(&mut self, now: Instant, reason: &'static str, detail: String) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.primary.rtc.disconnect();
        if let Some(publisher) = &mut self.publisher {
            publisher.rtc.disconnect();
        }
        self.events.push((now, PeerEvent::Failed { reason, detail }));
    }

    // -- signaling ------------------------------------------------------------------------

    /// Answers an offer from the server on the subscriber PeerConnection. An offer with new ICE
    /// credentials restarts ICE (the server does so after a resume): see `restart`.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        if self.single.is_some() {
            return Err("server offered on a single-PC session".into());
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("unparsable subscriber offer: {e}"))?;
        self.flush_receipts(); // an offer may retire receive streams: account theirs first
        self.map_tracks(msid_tracks_by_mid(sdp));
        let credentials = self.local_ice_credentials();
        let answer =
            self.primary.rtc.sdp_api().accept_offer(offer).map_err(|e| format!("subscriber offer rejected: {e}"))?;
        self.primary.undrained = true;
        self.after_remote_offer(&credentials);
        Ok(answer.to_sdp_string())
    }

    /// Creates the publisher PeerConnection and its first offer: one audio m-line
    /// (if `audio_cid`), one video m-line with the library's layers (if `video_cid`), and with
    /// `data` the `_reliable` and `_lossy` channels we send data on (then no track is needed).
    pub fn create_publisher_offer(
        &mut self,
        publisher_addr: SocketAddr,
        cert: &DtlsCert,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        data: bool,
        now: Instant,
    ) -> Result<String, String> {
        if self.single.is_some() {
            return Err("single-PC peer: use join_offer".into());
        }
        if self.publisher.is_some() {
            return Err("the publisher PeerConnection already exists".into());
        }
        self.check_clips(audio_cid, video_cid)?;
        let mut transport = Transport::publisher(cert, publisher_addr, now, self.library.video_codec)?;
        let mut api = transport.rtc.sdp_api();
        let (audio_mid, video_mid) = add_send_sections(&mut api, &self.library, audio_cid, video_cid);
        if data {
            add_livekit_channels(&mut api);
        }
        let (offer, pending) = api.apply().ok_or("nothing to offer")?;
        self.pending_offer = Some(pending);
        let (talk_spurts, seed) = (self.config.talk_spurts, self.config.seed);
        self.publishing = Some(Publisher::new(self.library.clone(), audio_mid, video_mid, talk_spurts, seed, now));
        self.publisher = Some(transport);
        Ok(crate::media::sdp::offer_sdp_string(&offer))
    }

    /// Refuses to offer a track whose clips are not loaded.
    fn check_clips(&self, audio_cid: Option<&str>, video_cid: Option<&str>) -> Result<(), String> {
        if audio_cid.is_some() && self.library.audio.is_none() {
            return Err("no audio clip loaded".into());
        }
        if video_cid.is_some() && self.library.video.is_empty() {
            return Err("no video clip loaded".into());
        }
        Ok(())
    }

    /// Applies the server's answer to our (dual-PC) publisher offer; single-PC answers go to
    /// `accept_single_answer`.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        if self.single.is_some() {
            return self.accept_single_answer(sdp, None).map(|_| ());
        }
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("unparsable publisher answer: {e}"))?;
        let pending = self.pending_offer.take().ok_or("an answer arrived with no offer pending")?;
        let publisher = self.publisher.as_mut().ok_or("no publisher PeerConnection")?;
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("publisher answer rejected: {e}"))?;
        publisher.undrained = true;
        match &mut self.publishing {
            Some(publishing) => publishing.choose_payload_types(&mut publisher.rtc),
            None => Ok(()),
        }
    }

    /// The server muted or unmuted our audio or `video` track (`Publisher::set_muted`); an error
    /// when this peer publishes no such track.
    pub fn set_track_muted(&mut self, video: bool, muted: bool) -> Result<(), String> {
        let kind = if video { "video" } else { "audio" };
        let found = self.publishing.as_mut().is_some_and(|publishing| publishing.set_muted(video, muted));
        found.then_some(()).ok_or_else(|| format!("this peer publishes no {kind} track"))
    }

    /// Adds a trickled server candidate (`candidateInit` JSON) to the PeerConnection `target`.
    pub fn add_remote_candidate(&mut self, pc: Pc, candidate_init: &str, now: Instant) -> Result<(), String> {
        let candidate = candidate_from_init(candidate_init)?;
        let Some(candidate) = candidate else {
            return Ok(()); // end-of-candidates
        };
        let pc = self.own_pc(pc);
        let transport = self.transport_mut(pc).ok_or("no such PeerConnection yet")?;
        transport.remote_candidates.push(candidate.addr().to_string());
        transport.rtc.add_remote_candidate(candidate);
        transport.undrained = true;
        if !transport.heard_checks && transport.own_checks_at.is_none() {
            transport.own_checks_at = Some(now + OWN_CHECKS_AFTER);
        }
        Ok(())
    }
}
