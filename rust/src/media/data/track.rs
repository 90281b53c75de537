//! LiveKit data-track packets (v0) and a publisher's frame schedule (issue #21, data tracks).
//!
//! Theory of operation
//! -------------------
//! A data track is a named stream of application frames that travels over the `_data_track` SCTP
//! channel (unordered, no retransmission), one binary message per packet. A packet is a 12-byte
//! base header, optional extensions, then the payload (livekit-server v1.13.5
//! `pkg/rtc/datatrack/packet.go`, which parses and re-marshals every packet it forwards):
//!
//! ```text
//! byte 0: V(3 bits) S F X (S: first packet of a frame, F: last, X: extensions follow)
//! byte 1: reserved (0)
//! bytes 2-3 handle (u16, non-zero) | 4-5 sequence (u16, per packet) | 6-7 frame number (u16)
//! bytes 8-11: timestamp (u32, 90 kHz)
//! if X: u16 L, then (L+1)*4 - 2 bytes of {id u8, length u8, data} extensions, zero-padded
//!       (an id of 0 starts the padding)
//! ```
//!
//! lkswarm sends one packet per frame (S and F set) with one extension, id 2 = the user timestamp
//! (8 bytes: the send time in µs since the epoch), so every lkswarm packet has a 24-byte header
//! (12 + 2 + 1 + 1 + 8) and the payload is filler of exactly the requested size. Receivers read
//! the handle (the server rewrites it to the subscriber's own handle), the sequence (loss and
//! reordering, `track_stats`) and the user timestamp (latency).
//!
//! `TrackSender` is the publisher's schedule: no due time until its channel is open, then one
//! frame every `interval`; after a stall of more than `MAX_LATE` what is overdue is skipped, not
//! burst. A frame the channel refuses is counted `blocked` and dropped; the sequence advances only
//! for sent packets, so receivers see no gap the generator made.

use std::time::{Duration, Instant};

use super::sender::{unix_now_us, ChannelWriter};

/// The label of the channel data-track packets travel on.
pub const DATA_TRACK_LABEL: &str = "_data_track";
pub const BASE_HEADER_BYTES: usize = 12;
/// The user-timestamp extension's id (the SDKs' numbering; livekit-server passes it through).
pub const USER_TIMESTAMP_EXT_ID: u8 = 2;
/// Base header + extension block holding the user timestamp (2 + 1 + 1 + 8, word aligned).
pub const PROBE_HEADER_BYTES: usize = BASE_HEADER_BYTES + 12;
/// The largest frame lkswarm sends as one packet (the JS SDK packetizes at a 16,000 B MTU).
pub const MAX_FRAME_BYTES: usize = 15_000;
/// Catch-up limit after a stall, as for media and data messages.
const MAX_LATE: Duration = Duration::from_millis(100);

const FLAG_START: u8 = 1 << 4;
const FLAG_FINAL: u8 = 1 << 3;
const FLAG_EXTENSIONS: u8 = 1 << 2;

/// The header fields of one packet lkswarm writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFields {
    pub handle: u16,
    pub sequence: u16,
    pub frame_number: u16,
    pub timestamp_90khz: u32,
    pub user_timestamp_us: u64,
}

/// Writes one single-packet frame into `out` (cleared first): header, user timestamp, then
/// `payload_bytes` of filler.
pub fn encode_probe(out: &mut Vec<u8>, fields: &ProbeFields, payload_bytes: usize) {
    out.clear();
    out.reserve(PROBE_HEADER_BYTES + payload_bytes);
    out.push(FLAG_START | FLAG_FINAL | FLAG_EXTENSIONS); // version 0
    out.push(0);
    out.extend_from_slice(&fields.handle.to_be_bytes());
    out.extend_from_slice(&fields.sequence.to_be_bytes());
    out.extend_from_slice(&fields.frame_number.to_be_bytes());
    out.extend_from_slice(&fields.timestamp_90khz.to_be_bytes());
    // The block is 12 bytes with its length field: (L + 1) * 4 = 12, so L = 2; no padding.
    out.extend_from_slice(&2u16.to_be_bytes());
    out.push(USER_TIMESTAMP_EXT_ID);
    out.push(8);
    out.extend_from_slice(&fields.user_timestamp_us.to_be_bytes());
    out.resize(PROBE_HEADER_BYTES + payload_bytes, 0xa5);
}

/// What a receiver reads of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketView<'a> {
    pub start: bool,
    pub final_packet: bool,
    pub handle: u16,
    pub sequence: u16,
    pub frame_number: u16,
    pub timestamp_90khz: u32,
    /// The user-timestamp extension (id 2, 8 bytes), if present.
    pub user_timestamp_us: Option<u64>,
    pub payload: &'a [u8],
}

fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Reads a packet; errors name what is wrong and never panic, whatever the input.
pub fn parse_packet(buf: &[u8]) -> Result<PacketView<'_>, String> {
    if buf.len() < BASE_HEADER_BYTES {
        return Err(format!("{} B is shorter than the 12-byte header", buf.len()));
    }
    let version = buf[0] >> 5;
    if version != 0 {
        return Err(format!("unsupported version {version}"));
    }
    let handle = be16(buf, 2);
    if handle == 0 {
        return Err("handle 0".into());
    }
    let mut view = PacketView {
        start: buf[0] & FLAG_START != 0,
        final_packet: buf[0] & FLAG_FINAL != 0,
        handle,
        sequence: be16(buf, 4),
        frame_number: be16(buf, 6),
        timestamp_90khz: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        user_timestamp_us: None,
        payload: &buf[BASE_HEADER_BYTES..],
    };
    if buf[0] & FLAG_EXTENSIONS == 0 {
        return Ok(view);
    }
    if buf.len() < BASE_HEADER_BYTES + 2 {
        return Err("extension flag set but no extension length".into());
    }
    let block_bytes = (usize::from(be16(buf, BASE_HEADER_BYTES)) + 1) * 4;
    let end = BASE_HEADER_BYTES + block_bytes;
    if end > buf.len() {
        return Err(format!("extensions of {block_bytes} B run past the {} B packet", buf.len()));
    }
    let mut at = BASE_HEADER_BYTES + 2;
    while at < end {
        let id = buf[at];
        if id == 0 {
            break; // padding to the end of the block
        }
        if at + 2 > end {
            return Err(format!("extension {id} has no length"));
        }
        let length = usize::from(buf[at + 1]);
        let data = at + 2;
        if data + length > end {
            return Err(format!("extension {id} of {length} B runs past its block"));
        }
        if id == USER_TIMESTAMP_EXT_ID {
            let Ok(bytes) = <[u8; 8]>::try_from(&buf[data..data + length]) else {
                return Err(format!("user timestamp of {length} B, not 8"));
            };
            view.user_timestamp_us = Some(u64::from_be_bytes(bytes));
        }
        at = data + length;
    }
    view.payload = &buf[end..];
    Ok(view)
}

/// What `data_track_publish` asks for.
#[derive(Debug, Clone, Copy)]
pub struct TrackPublish {
    pub handle: u16,
    pub rate_hz: f64,
    pub payload_bytes: usize,
}

/// A publisher's send figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackSendCounts {
    pub frames_sent: u64,
    /// Payload bytes of sent frames (as receivers count them).
    pub bytes_sent: u64,
    /// Refused by the channel (over its buffered amount, or a write error): not sent.
    pub blocked: u64,
    /// Never written because the media thread fell more than `MAX_LATE` behind.
    pub skipped: u64,
}

#[derive(Debug)]
struct TrackSchedule {
    spec: TrackPublish,
    interval: Duration,
    /// None until the channel is open.
    next_due: Option<Instant>,
}

/// A peer's data-track publisher (one track per participant); see the module doc.
#[derive(Debug, Default)]
pub struct TrackSender {
    schedule: Option<TrackSchedule>,
    pub counts: TrackSendCounts,
    sequence: u16,
    frame_number: u16,
    buf: Vec<u8>,
}

impl TrackSender {
    /// Checks `spec` and replaces the schedule; sending starts at `open_now` if the channel is
    /// open already, else when it opens.
    pub fn publish(&mut self, spec: TrackPublish, open_now: Option<Instant>) -> Result<(), String> {
        if !(spec.rate_hz.is_finite() && spec.rate_hz > 0.0 && spec.rate_hz <= 10_000.0) {
            return Err(format!("rate_hz must be in (0, 10000], got {}", spec.rate_hz));
        }
        if spec.payload_bytes > MAX_FRAME_BYTES {
            return Err(format!("a {} B frame is over the {MAX_FRAME_BYTES} B one-packet limit", spec.payload_bytes));
        }
        if spec.handle == 0 {
            return Err("the handle must not be 0".into());
        }
        let interval = Duration::from_secs_f64(1.0 / spec.rate_hz).max(Duration::from_micros(1));
        self.schedule = Some(TrackSchedule { spec, interval, next_due: open_now });
        Ok(())
    }

    pub fn stop(&mut self) {
        self.schedule = None;
    }

    pub fn on_open(&mut self, now: Instant) {
        if let Some(schedule) = &mut self.schedule {
            schedule.next_due.get_or_insert(now);
        }
    }

    pub fn on_close(&mut self) {
        if let Some(schedule) = &mut self.schedule {
            schedule.next_due = None;
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.schedule.as_ref().and_then(|s| s.next_due)
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.next_due().is_some_and(|due| due <= now)
    }

    /// Writes every frame due by `now`; returns how many it offered.
    pub fn write_due(&mut self, now: Instant, channel: &mut dyn ChannelWriter) -> u64 {
        let mut offered = 0;
        loop {
            let Some(schedule) = &mut self.schedule else { return offered };
            let Some(due) = schedule.next_due.filter(|&due| due <= now) else { return offered };
            let mut next = due + schedule.interval;
            if now.saturating_duration_since(next) > MAX_LATE {
                let overdue = now.duration_since(next).as_nanos() / schedule.interval.as_nanos().max(1);
                self.counts.skipped += u64::try_from(overdue).unwrap_or(u64::MAX);
                next = now + schedule.interval;
            }
            schedule.next_due = Some(next);
            offered += 1;
            let spec = schedule.spec;
            let sent_at_us = unix_now_us();
            let fields = ProbeFields {
                handle: spec.handle,
                sequence: self.sequence,
                frame_number: self.frame_number,
                timestamp_90khz: (sent_at_us.wrapping_mul(9) / 100) as u32,
                user_timestamp_us: sent_at_us,
            };
            encode_probe(&mut self.buf, &fields, spec.payload_bytes);
            if let Ok(true) = channel.write(&self.buf) {
                self.counts.frames_sent += 1;
                self.counts.bytes_sent += spec.payload_bytes as u64;
                self.sequence = self.sequence.wrapping_add(1);
                self.frame_number = self.frame_number.wrapping_add(1);
            } else {
                self.counts.blocked += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ProbeFields {
        ProbeFields {
            handle: 0x8811,
            sequence: 0x4422,
            frame_number: 0x4411,
            timestamp_90khz: 0x4422_1188,
            user_timestamp_us: 0x4411_2211_1111_8811,
        }
    }

    #[test]
    fn header_bits_and_extension_layout() {
        let mut out = Vec::new();
        encode_probe(&mut out, &fields(), 5);
        assert_eq!(out.len(), PROBE_HEADER_BYTES + 5);
        assert_eq!(out[0], 0x1c, "version 0, S, F, X");
        assert_eq!(&out[1..12], &[0, 0x88, 0x11, 0x44, 0x22, 0x44, 0x11, 0x44, 0x22, 0x11, 0x88]);
        assert_eq!(&out[12..16], &[0, 2, 2, 8], "L = 2 (12-byte block), id 2, 8 bytes");
        let view = parse_packet(&out).unwrap();
        assert!(view.start && view.final_packet);
        assert_eq!((view.handle, view.sequence, view.frame_number), (0x8811, 0x4422, 0x4411));
        assert_eq!(view.timestamp_90khz, 0x4422_1188);
        assert_eq!(view.user_timestamp_us, Some(0x4411_2211_1111_8811));
        assert_eq!(view.payload.len(), 5);
    }

    #[test]
    fn reads_padding_other_extensions_and_no_extensions() {
        // An E2EE-like extension (id 1, 13 B) then the timestamp: 2 + 15 + 10 = 27, padded to 28.
        let mut buf = vec![0x18 | 0x04, 0, 0, 7, 0, 1, 0, 1, 0, 0, 0, 9];
        buf.extend_from_slice(&6u16.to_be_bytes()); // (6 + 1) * 4 = 28
        buf.extend_from_slice(&[1, 13]);
        buf.extend_from_slice(&[0xee; 13]);
        buf.extend_from_slice(&[2, 8]);
        buf.extend_from_slice(&42u64.to_be_bytes());
        buf.push(0); // padding
        buf.extend_from_slice(b"xyz");
        let view = parse_packet(&buf).unwrap();
        assert_eq!((view.handle, view.user_timestamp_us, view.payload), (7, Some(42), &b"xyz"[..]));
        let plain = [0x18, 0, 0, 3, 0, 9, 0, 0, 0, 0, 0, 0, b'p'];
        let view = parse_packet(&plain).unwrap();
        assert_eq!((view.handle, view.sequence, view.user_timestamp_us, view.payload), (3, 9, None, &b"p"[..]));
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let mut good = Vec::new();
        encode_probe(&mut good, &fields(), 3);
        for cut in 0..good.len() {
            let _ = parse_packet(&good[..cut]); // any result, no panic
        }
        assert!(parse_packet(&good[..11]).is_err());
        assert!(parse_packet(&good[..20]).is_err(), "extension block past the end");
        let mut zero_handle = good.clone();
        zero_handle[2..4].copy_from_slice(&[0, 0]);
        assert!(parse_packet(&zero_handle).is_err());
        let mut v1 = good.clone();
        v1[0] |= 0x20;
        assert!(parse_packet(&v1).is_err());
        let mut long_ext = good.clone();
        long_ext[15] = 200;
        assert!(parse_packet(&long_ext).is_err());
        let mut short_ts = good.clone();
        short_ts[15] = 4;
        assert!(parse_packet(&short_ts).is_err());
        // Every byte value in every position of a short packet.
        for at in 0..16 {
            for value in 0..=255u8 {
                let mut b = good.clone();
                b[at] = value;
                let _ = parse_packet(&b);
            }
        }
    }

    struct Sink {
        accept: bool,
        packets: Vec<Vec<u8>>,
    }

    impl ChannelWriter for Sink {
        fn write(&mut self, message: &[u8]) -> Result<bool, String> {
            if self.accept {
                self.packets.push(message.to_vec());
            }
            Ok(self.accept)
        }
    }

    #[test]
    fn schedule_sequences_wrap_and_blocked_frames_use_no_sequence() {
        let t0 = Instant::now();
        let mut sender = TrackSender::default();
        sender.publish(TrackPublish { handle: 3, rate_hz: 1000.0, payload_bytes: 64 }, None).unwrap();
        assert_eq!(sender.next_due(), None, "nothing before the channel opens");
        sender.on_open(t0);
        sender.sequence = u16::MAX - 1;
        let mut sink = Sink { accept: false, packets: vec![] };
        assert_eq!(sender.write_due(t0, &mut sink), 1);
        assert_eq!((sender.counts.frames_sent, sender.counts.blocked), (0, 1));
        sink.accept = true;
        assert_eq!(sender.write_due(t0 + Duration::from_millis(3), &mut sink), 3);
        let seqs: Vec<u16> = sink.packets.iter().map(|p| parse_packet(p).unwrap().sequence).collect();
        assert_eq!(seqs, [u16::MAX - 1, u16::MAX, 0]);
        assert!(sink.packets.iter().all(|p| p.len() == PROBE_HEADER_BYTES + 64));
        assert_eq!(sender.counts.bytes_sent, 192);
        let written = sender.write_due(t0 + Duration::from_secs(1), &mut sink);
        assert!(written < 5 && sender.counts.skipped > 800, "{written} {}", sender.counts.skipped);
    }

    #[test]
    fn rejects_bad_specs() {
        let mut sender = TrackSender::default();
        let ok = TrackPublish { handle: 1, rate_hz: 30.0, payload_bytes: MAX_FRAME_BYTES };
        assert!(sender.publish(ok, None).is_ok());
        assert!(sender.publish(TrackPublish { handle: 0, ..ok }, None).is_err());
        assert!(sender.publish(TrackPublish { rate_hz: 0.0, ..ok }, None).is_err());
        assert!(sender.publish(TrackPublish { payload_bytes: MAX_FRAME_BYTES + 1, ..ok }, None).is_err());
    }
}
