//! Plain values shared by the peer (`peer`) and the publisher's media (`publish`), so neither
//! module depends on the other: which PeerConnection, a datagram to send, and the peer's counters.

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
    pub input_errors: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    /// Frames a publisher never sent because the media thread fell more than `publish::MAX_LATE` behind
    /// their schedule (one per simulcast layer): the generator, not the server, lost them.
    pub frames_skipped: u64,
    pub keyframe_requests: u64,
    /// ICE restarts begun on the primary PeerConnection (after signal resumes).
    pub ice_restarts: u64,
}
