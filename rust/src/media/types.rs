//! Plain values shared by the peer (`peer`) and the publisher's media (`publish`), so neither
//! module depends on the other: which PeerConnection, a datagram to send, and the peer's counters.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

/// Which PeerConnection of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pc {
    Subscriber = 0,
    Publisher = 1,
}

impl Pc {
    pub fn name(self) -> &'static str {
        match self {
            Pc::Subscriber => "subscriber",
            Pc::Publisher => "publisher",
        }
    }
}

/// What one received datagram asks of its caller (the hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Nothing to send, no event, the same deadline: the hub need not service the peer.
    Quiet,
    /// Output, events or a moved deadline may be waiting: service the peer (`MediaPeer::poll`).
    Service,
}

/// A datagram for the caller to send from `source` (a local address of this peer).
#[derive(Debug, Clone)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// A peer's running figures; the publisher's media adds to the frame counts.
#[derive(Debug, Clone, Default)]
pub struct PeerCounters {
    pub datagrams_received: u64,
    pub foreign_datagrams: u64,
    /// Datagrams longer than the receive buffer (`recv::RECV_BUFFER_BYTES`): only a prefix was read, so
    /// they are dropped here, never fed to the peer (where they would read as authentication failures).
    pub datagrams_truncated: u64,
    pub input_errors: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    /// Frames a publisher never sent because the media thread fell more than `publish::MAX_LATE` behind
    /// their schedule (one per simulcast layer): the generator, not the server, lost them.
    pub frames_skipped: u64,
    /// Frames of tracks the server muted (an admin's MutePublishedTrack), due but not sent (one per
    /// simulcast layer).
    pub frames_muted: u64,
    pub keyframe_requests: u64,
    /// ICE restarts begun on the primary PeerConnection (after signal resumes).
    pub ice_restarts: u64,
    /// RTP packets of SSRCs first seen after the peer already accounted `peer::io::MAX_RX_STREAMS`
    /// streams (a server that keeps changing SSRCs): counted here, in no track's figures.
    pub rtp_past_stream_cap: u64,
    /// RTP packets received on the own SRTP path (`peer/own_srtp.rs`), and the packets it
    /// dropped: replays (or duplicates str0m's register already had), packets older than the replay
    /// window, failed authentication, and late packets older than their stream's first (str0m's
    /// register refuses them too).
    pub srtp_own_packets: u64,
    pub srtp_own_replayed: u64,
    pub srtp_own_too_old: u64,
    pub srtp_own_auth_failed: u64,
    pub srtp_own_before_first: u64,
    /// Own-path packets whose receipt str0m refused (its stream went away meanwhile): counted
    /// by us, missing from str0m's receiver reports.
    pub srtp_receipts_refused: u64,
}

/// Peer ids and socket tokens (small sequential integers) and a peer's SSRCs (a handful, chosen by
/// the server under test): a multiplicative hash (rustc's FxHash scheme) spreads them well enough
/// for `HashMap`, at a fraction of the cost of SipHash, which the media thread paid for lookups on
/// every received datagram.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
