//! The peer's side of data tracks (`media::data::track`, `track_stats`): the publisher's frames
//! written on the media thread, and the handle map the hub passes in.
//!
//! Which channel: a publisher writes on the `_data_track` channel of the PeerConnection that carries
//! our published media (`media_pc`: the dual-PC publisher PeerConnection, whose offer adds the
//! channel, or the single one). A subscriber receives on whichever PeerConnection the server
//! writes to (its primary: the dual-PC subscriber PeerConnection, on the `_data_track` the server
//! opened there; on a single PC, the channel we opened), which `DataState::on_message` routes by
//! label whatever the PeerConnection.

use std::time::Instant;

use str0m::channel::ChannelId;
use str0m::Rtc;

use super::MediaPeer;
use crate::media::data::sender::ChannelWriter;
use crate::media::data::track::{TrackPublish, DATA_TRACK_LABEL};
use crate::media::data::track_stats::HandleTarget;
use crate::media::types::{Datagram, Pc};

/// The `_data_track` channel of an `Rtc`, lent to the sender for a burst of writes.
struct TrackChannel<'a> {
    rtc: &'a mut Rtc,
    id: ChannelId,
}

impl ChannelWriter for TrackChannel<'_> {
    fn write(&mut self, message: &[u8]) -> Result<bool, String> {
        let mut channel = self.rtc.channel(self.id).ok_or("channel closed")?;
        channel.write(true, message).map_err(|e| e.to_string())
    }
}

impl MediaPeer {
    /// Starts (or replaces) this peer's data-track frames; they flow from the channel's opening.
    pub fn data_track_publish(&mut self, spec: TrackPublish, now: Instant) -> Result<(), String> {
        let open = self.data.channel(self.media_pc(), DATA_TRACK_LABEL).is_some();
        self.data.track_sender.publish(spec, open.then_some(now))
    }

    pub fn data_track_stop(&mut self) {
        self.data.track_sender.stop();
    }

    /// Replaces the subscriber-handle map (the server's full map).
    pub fn data_track_handles(&mut self, handles: Vec<(u16, HandleTarget)>) {
        self.data.track_received.set_handles(handles);
    }

    /// The `_data_track` channel of the media PeerConnection opened (`pc`) or closed.
    pub(super) fn on_data_track_channel(&mut self, pc: Pc, now: Instant, open: bool) {
        if pc != self.media_pc() {
            return;
        }
        if open {
            self.data.track_sender.on_open(now);
        } else if self.data.channel(pc, DATA_TRACK_LABEL).is_none() {
            self.data.track_sender.on_close();
        }
    }

    /// Writes the due frames, then drains the sending transport.
    pub(super) fn write_due_data_track(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        if !self.data.track_sender.is_due(now) {
            return;
        }
        let pc = self.media_pc();
        let transport = match pc {
            Pc::Publisher => self.publisher.as_mut(),
            Pc::Subscriber => Some(&mut self.primary),
        };
        let (Some(id), Some(transport)) = (self.data.channel(pc, DATA_TRACK_LABEL), transport) else {
            self.data.track_sender.on_close(); // not open after all: wait for `ChannelOpen`
            return;
        };
        transport.undrained = true;
        self.data.track_sender.write_due(now, &mut TrackChannel { rtc: &mut transport.rtc, id });
        self.drain(pc, now, out);
    }
}
