//! One PeerConnection's str0m `Rtc` and what the peer tracks beside it: its local address, its
//! connect deadline, and str0m's input clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::{Candidate, Rtc, RtcConfig};

use super::clip::VideoCodec;

/// How often a receiver sends TWCC feedback: libwebrtc's starting interval (see `config`).
const TWCC_FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

pub(super) struct Transport {
    pub(super) rtc: Rtc,
    pub(super) local: SocketAddr,
    pub(super) created_at: Instant,
    pub(super) connected_at: Option<Instant>,
    pub(super) next_timeout: Instant,
    /// Why a connection failed, in the failure's detail: how far ICE got and what arrived.
    pub(super) ice_state: &'static str,
    pub(super) remote_candidates: Vec<String>,
    pub(super) datagrams_received: u64,
    pub(super) datagrams_sent: u64,
    /// When to start our own connectivity checks if the server's have not arrived (see
    /// `peer::OWN_CHECKS_AFTER`); cleared once they start.
    pub(super) own_checks_at: Option<Instant>,
    /// The server's STUN has arrived (since the last ICE restart): no own checks need forcing.
    pub(super) heard_checks: bool,
    /// str0m has had input since it last answered `Output::Timeout`. Without new input it would
    /// only answer the same timeout again, so `drain` skips a clean transport: after a received
    /// packet, `poll` then costs no second round of str0m's poll_output (timers of every part).
    pub(super) undrained: bool,
    /// The time of str0m's latest input. Datagrams are fed at their kernel arrival time, which can
    /// precede a timeout already fed at the hub's wakeup time; str0m's clock must not go back.
    pub(super) last_input_at: Instant,
    /// str0m runs in RTP mode: received packets are not depacketized, and a publisher on this
    /// transport must packetize itself (`Rtc::writer` panics in RTP mode; see `rtp_sink`).
    pub(super) rtp_mode: bool,
}

impl Transport {
    /// The time to give str0m for an input at `at`: never earlier than the last one.
    pub(super) fn advance_clock(&mut self, at: Instant) -> Instant {
        self.last_input_at = self.last_input_at.max(at);
        self.last_input_at
    }

    /// The subscriber PeerConnection: RTP mode (packets are counted, not depacketized), and every
    /// video codec a publisher of the room may use, since the server offers the publisher's: an
    /// SDK or browser in the room may publish VP9, AV1 or H.265, and a receiver that refused them
    /// would get `SE_CODEC_UNSUPPORTED` and none of that load.
    pub(super) fn subscriber(cert: &DtlsCert, local: SocketAddr, now: Instant) -> Result<Self, String> {
        Self::new(Self::receiving_every_video_codec(cert), local, now)
    }

    /// The single PeerConnection of `/rtc/v1` (docs/single-pc-design.md §3): it receives like the
    /// subscriber (RTP mode, every video codec a publisher of the room may use) and sends like the
    /// publisher (the same send buffer), so its publisher packetizes itself.
    pub(super) fn single(cert: &DtlsCert, local: SocketAddr, now: Instant) -> Result<Self, String> {
        let config = Self::receiving_every_video_codec(cert);
        Self::new(config.set_send_buffer_video(300), local, now)
    }

    /// RTP mode with every video codec livekit-server forwards: in RTP mode nothing depacketizes,
    /// so a codec costs only its lines in the SDP.
    fn receiving_every_video_codec(cert: &DtlsCert) -> RtcConfig {
        Self::config(cert)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .enable_h265(true)
            .set_rtp_mode(true)
    }

    /// The publisher PeerConnection: frame mode (str0m packetizes), offering only the clips' codec.
    pub(super) fn publisher(
        cert: &DtlsCert,
        local: SocketAddr,
        now: Instant,
        video_codec: VideoCodec,
    ) -> Result<Self, String> {
        let config = match video_codec {
            VideoCodec::Vp8 => Self::config(cert).enable_vp8(true),
            VideoCodec::H264 => Self::config(cert).enable_h264(true),
        };
        Self::new(config.set_send_buffer_video(300), local, now)
    }

    fn config(cert: &DtlsCert) -> RtcConfig {
        RtcConfig::new()
            .set_crypto_provider(super::dtls::crypto_provider())
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .enable_opus(true, false)
            // libwebrtc's receiver starts at 100 ms (and adapts between 50 and 250 ms by bitrate);
            // str0m's own 50 ms doubles the feedback, and with it this receiver's timer wakes.
            .set_twcc_feedback_interval(TWCC_FEEDBACK_INTERVAL)
    }

    fn new(config: RtcConfig, local: SocketAddr, now: Instant) -> Result<Self, String> {
        let rtp_mode = config.rtp_mode();
        let mut rtc = config.build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("local candidate {local}: {e}"))?;
        rtc.add_local_candidate(candidate);
        Ok(Transport {
            rtc,
            local,
            created_at: now,
            connected_at: None,
            next_timeout: now,
            ice_state: "new",
            remote_candidates: Vec::new(),
            datagrams_received: 0,
            datagrams_sent: 0,
            own_checks_at: None,
            heard_checks: false,
            undrained: true,
            last_input_at: now,
            rtp_mode,
        })
    }
}
