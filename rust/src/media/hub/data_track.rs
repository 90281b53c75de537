//! The hub's data-track API (`media::data::track`, `track_stats`): a publisher's frames, a
//! subscriber's handle map, and the latency of every data-track packet received.

use super::{Error, Hub};
use crate::media::data::track::TrackPublish;
use crate::media::data::track_stats::HandleTarget;
use crate::media::lag::LagHistogram;

impl Hub {
    /// Starts or replaces a peer's data-track frames (`media::data::track::TrackSender`).
    pub fn data_track_publish(&self, id: u32, spec: TrackPublish) -> crate::Result<()> {
        self.with_peer(id, |peer, now| peer.data_track_publish(spec, now)).map_err(Error::media)
    }

    /// Stops a peer's data-track frames.
    pub fn data_track_stop(&self, id: u32) -> crate::Result<()> {
        self.with_peer(id, |peer, _| {
            peer.data_track_stop();
            Ok(())
        })
        .map_err(Error::media)
    }

    /// Replaces a peer's subscriber-handle map (called once per map the server sends).
    pub fn data_track_handles(&self, id: u32, handles: Vec<(u16, HandleTarget)>) -> crate::Result<()> {
        self.with_peer(id, |peer, _| {
            peer.data_track_handles(handles);
            Ok(())
        })
        .map_err(Error::media)
    }

    /// One-way latency of every timestamped data-track packet received, by all peers the hub has had.
    pub fn data_track_latency(&self) -> LagHistogram {
        let state = self.shared.lock();
        let mut merged = state.retired_data_track_latency.clone();
        for slot in state.slots.values() {
            if let Some(latency) = &slot.peer.data().track_received.latency {
                merged.merge(latency);
            }
        }
        merged
    }
}
