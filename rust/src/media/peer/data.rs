//! The peer's side of data-channel load (`media::data`): channel events from str0m, the
//! schedule's writes on the media thread, and the API the hub calls.
//!
//! Sending uses the channels on the PeerConnection that carries our published media
//! (`media_pc`: the dual-PC publisher PeerConnection, or the single one); channels the server
//! opens on the subscriber PeerConnection are only read. Every PeerConnection's channels are
//! accounted on receive, under their label.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::channel::{ChannelData, ChannelId};
use str0m::Rtc;

use super::MediaPeer;
use crate::media::data::packet::Kind;
use crate::media::data::sender::{ChannelWriter, DataPublish};
use crate::media::data::slow_reader::SlowReader;
use crate::media::data::track::DATA_TRACK_LABEL;
use crate::media::data::{kind_of_label, unix_now_us, DataState, RpcWait, LOSSY_LABEL, RELIABLE_LABEL};
use crate::media::types::{Datagram, Pc};

/// One channel of an `Rtc`, lent to the sender for a burst of writes.
struct RtcChannel<'a> {
    rtc: &'a mut Rtc,
    id: ChannelId,
}

impl ChannelWriter for RtcChannel<'_> {
    fn write(&mut self, message: &[u8]) -> Result<bool, String> {
        let mut channel = self.rtc.channel(self.id).ok_or("channel closed")?;
        channel.write(true, message).map_err(|e| e.to_string())
    }
}

impl RtcChannel<'_> {
    /// Bytes written on this channel that SCTP has not yet had acknowledged.
    fn buffered(&mut self) -> Result<usize, String> {
        Ok(self.rtc.channel(self.id).ok_or("channel closed")?.buffered_amount())
    }
}

/// How soon a peer with answers waiting is serviced again.
const RPC_RETRY: Duration = Duration::from_millis(10);
/// What our reliable channel may hold buffered when an RPC answer is written: half of str0m's
/// 128 KiB send buffer, which every channel of the PeerConnection shares.
const RPC_BUFFERED_BYTES: usize = 64 * 1024;

fn label_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Reliable => RELIABLE_LABEL,
        Kind::Lossy => LOSSY_LABEL,
    }
}

impl MediaPeer {
    pub fn data(&self) -> &DataState {
        &self.data
    }

    /// Starts (or replaces) the probe schedule of one channel; see `data::sender`.
    pub fn data_publish(&mut self, spec: DataPublish, now: Instant) -> Result<(), String> {
        let open = self.data.channel(self.media_pc(), label_of(spec.kind)).is_some();
        self.data.sender.publish(spec, open.then_some(now))
    }

    pub fn data_stop(&mut self) {
        self.data.sender.stop();
    }

    /// After a signal resume: writes again the reliable messages past the server's
    /// `last_message_seq` (`data::sender`), at the channel's next write.
    pub fn data_resend_after(&mut self, last_sequence: u32, now: Instant) {
        self.data.sender.resend_after(last_sequence, now);
    }

    /// Makes this peer a slow data reader (`data::slow_reader`): it stops draining its data
    /// channels for `pause` every `every`, the first time after `first_after`.
    pub fn data_slow_reader(
        &mut self,
        pause: Duration,
        every: Duration,
        first_after: Duration,
        now: Instant,
    ) -> Result<(), String> {
        self.data.slow = Some(SlowReader::new(pause, every, now + first_after)?);
        Ok(())
    }

    /// Holds a datagram for a paused slow reader: DTLS on the PeerConnection the server sends
    /// data on (the primary one). True if taken.
    pub(super) fn hold_for_slow_reader(
        &mut self,
        pc: Pc,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        match &mut self.data.slow {
            Some(slow) if pc == Pc::Subscriber => slow.hold(now, source, destination, datagram),
            _ => false,
        }
    }

    /// Feeds what a slow reader held, once its pause is over (read now, so arrived now).
    pub(super) fn release_slow_reader(&mut self, now: Instant) {
        let Some(slow) = &mut self.data.slow else { return };
        let held = slow.release(now);
        for (source, destination, datagram) in held {
            if self.failed {
                return;
            }
            self.last_arrival = Some(now);
            self.feed_datagram(Pc::Subscriber, now, source, destination, &datagram);
        }
    }

    pub(super) fn on_channel_open(&mut self, pc: Pc, now: Instant, id: ChannelId, label: String) {
        let data_track = label == DATA_TRACK_LABEL;
        if pc == self.media_pc() {
            if let Some(kind) = kind_of_label(&label) {
                self.data.sender.on_open(kind, now);
            }
        }
        self.data.on_open(pc, id, label);
        if data_track {
            self.on_data_track_channel(pc, now, true);
        }
    }

    pub(super) fn on_channel_close(&mut self, pc: Pc, id: ChannelId) {
        let Some(label) = self.data.on_close(pc, id) else { return };
        if label == DATA_TRACK_LABEL {
            self.on_data_track_channel(pc, Instant::now(), false);
        }
        if pc == self.media_pc() {
            if let Some(kind) = kind_of_label(&label) {
                if self.data.channel(pc, &label).is_none() {
                    self.data.sender.on_close(kind);
                }
            }
        }
    }

    pub(super) fn on_channel_data(&mut self, pc: Pc, data: &ChannelData) {
        // The arrival on the wall clock: now, less how long ago the kernel queued the datagram.
        let behind = self.last_arrival.map_or(Duration::ZERO, |at| Instant::now().saturating_duration_since(at));
        let arrived_at_us = unix_now_us().saturating_sub(u64::try_from(behind.as_micros()).unwrap_or(u64::MAX));
        self.data.on_message(pc, data.id, &data.data, arrived_at_us);
    }

    /// Writes the due probe messages of both channels, draining the sending transport after each
    /// channel's burst (str0m queues them in SCTP until polled).
    pub(super) fn write_due_data(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        let pc = self.media_pc();
        for kind in [Kind::Reliable, Kind::Lossy] {
            if !self.data.sender.is_due(kind, now) {
                continue;
            }
            let transport = match pc {
                Pc::Publisher => self.publisher.as_mut(),
                Pc::Subscriber => Some(&mut self.primary),
            };
            let (Some(id), Some(transport)) = (self.data.channel(pc, label_of(kind)), transport) else {
                // Not open after all: wait for `ChannelOpen` rather than wake at once forever.
                self.data.sender.on_close(kind);
                continue;
            };
            transport.undrained = true;
            let mut channel = RtcChannel { rtc: &mut transport.rtc, id };
            if kind == Kind::Reliable {
                self.data.sender.write_resend(&mut channel);
            }
            self.data.sender.write_due(kind, now, &mut channel);
            self.drain(pc, now, out);
            if self.failed {
                return;
            }
        }
    }

    /// Writes the RPC answers waiting (`DataState::rpc_queue`, two per request) on our reliable
    /// channel, where the SDKs send theirs. Without one, they wait for it (our PeerConnection may still
    /// be connecting, its channels opening) up to `RPC_WAIT`, and are then counted `no_channel`;
    /// those the channel's buffer has no room for wait as long for room, then count `refused`.
    pub(super) fn write_rpc_answers(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        if !self.data.has_rpc_answers() {
            return;
        }
        let pc = self.media_pc();
        // Not `transport_mut`: the channel lent below borrows the transport while `self.data` is written.
        let transport = match pc {
            Pc::Publisher => self.publisher.as_mut(),
            Pc::Subscriber => Some(&mut self.primary),
        };
        let (Some(id), Some(transport)) = (self.data.channel(pc, RELIABLE_LABEL), transport) else {
            if self.data.rpc_waited_out(RpcWait::ForChannel, now) {
                self.data.rpc.no_channel += self.data.rpc_queue.clear();
            }
            return;
        };
        transport.undrained = true;
        let mut channel = RtcChannel { rtc: &mut transport.rtc, id };
        // Answers leave half of str0m's send buffer (shared by every channel) to the probe messages and
        // data-track frames, so a backlog of large echoes does not count their writes as blocked.
        let written = self.data.rpc_queue.write(|message| {
            if channel.buffered()? + message.len() > RPC_BUFFERED_BYTES {
                return Ok(false);
            }
            channel.write(message)
        });
        self.data.rpc.answered += written.answered;
        self.data.rpc.refused += written.refused;
        if written.messages > 0 {
            self.data.rpc_wait = None; // progress: a wait for room starts again
        }
        // The channel's buffer is full (large echoes): the rest goes as SACKs make room, within the wait.
        if !self.data.rpc_queue.is_empty() && self.data.rpc_waited_out(RpcWait::ForRoom, now) {
            self.data.rpc.refused += self.data.rpc_queue.clear();
        }
        self.drain(pc, now, out);
    }

    /// When answers still wait (for a channel, or queued by requests the last drain read): soon.
    pub(super) fn rpc_next_due(&self, now: Instant) -> Option<Instant> {
        self.data.has_rpc_answers().then(|| now + RPC_RETRY)
    }

    /// When the schedule next wants a write.
    pub(super) fn data_next_due(&self) -> Option<Instant> {
        let due = self.data.sender.next_due();
        match (due, self.data.slow.as_ref().map(SlowReader::next_wake)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
