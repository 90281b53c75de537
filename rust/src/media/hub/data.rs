//! The hub's data-channel API (`media::data`): a peer's probe messages, its resend after a resume,
//! a slow reader, and the latency of every probe message received; and a server's mute of a
//! peer's track, which like its data is the publisher's to act on.

use std::time::Duration;

use super::{Error, Hub};
use crate::media::data::sender::DataPublish;
use crate::media::lag::LagHistogram;

impl Hub {
    /// Starts or replaces a peer's probe messages on one channel (`media::data::sender`).
    pub fn data_publish(&self, id: u32, spec: DataPublish) -> crate::Result<()> {
        self.with_peer(id, |peer, now| peer.data_publish(spec, now)).map_err(Error::media)
    }

    /// Stops a peer's probe messages on both channels.
    pub fn data_stop(&self, id: u32) -> crate::Result<()> {
        self.with_peer(id, |peer, _| {
            peer.data_stop();
            Ok(())
        })
        .map_err(Error::media)
    }

    /// After a signal resume: re-sends the reliable messages past the server's `last_message_seq`.
    pub fn data_resend_after(&self, id: u32, last_sequence: u32) -> crate::Result<()> {
        self.with_peer(id, |peer, now| {
            peer.data_resend_after(last_sequence, now);
            Ok(())
        })
        .map_err(Error::media)
    }

    /// The server muted or unmuted a peer's audio or `video` track (`MediaPeer::set_track_muted`).
    pub fn set_track_muted(&self, id: u32, video: bool, muted: bool) -> crate::Result<()> {
        self.with_peer(id, |peer, _| peer.set_track_muted(video, muted)).map_err(Error::media)
    }

    /// Makes a peer a slow data reader (`data::slow_reader`).
    pub fn data_slow_reader(
        &self,
        id: u32,
        pause: Duration,
        every: Duration,
        first_after: Duration,
    ) -> crate::Result<()> {
        self.with_peer(id, |peer, now| peer.data_slow_reader(pause, every, first_after, now)).map_err(Error::media)
    }

    /// One-way latency of every probe message received, by all peers the hub has had: the slow
    /// readers' with `slow_readers`, else everyone else's.
    pub fn data_latency(&self, slow_readers: bool) -> LagHistogram {
        let state = self.shared.lock();
        let mut merged = state.retired_data_latency[usize::from(slow_readers)].clone();
        for slot in state.slots.values() {
            let data = slot.peer.data();
            if data.slow.is_some() != slow_readers {
                continue;
            }
            if let Some(latency) = &data.latency {
                merged.merge(latency);
            }
        }
        merged
    }
}
