//! The publisher's packetizer for a PeerConnection in RTP mode (the single PeerConnection of
//! `/rtc/v1`): str0m's frame writer panics there, so frames are cut into RTP packets here and
//! written through str0m's direct API.
//!
//! Theory of operation
//! -------------------
//! The single PeerConnection must stay in RTP mode, because it also receives the room's tracks and
//! those are counted per packet, never depacketized (docs/single-pc-design.md §3). RTP mode is a
//! property of the whole `Rtc`, so its publisher does what str0m's frame path (`Payloader`) would:
//! per send stream (mid, rid) it keeps the codec's packetizer and the next sequence number, cuts
//! each frame into payloads of the frame path's size, sets the codec's marker (the last packet of a
//! video frame; none for Opus, as the frame path), attaches the audio level extension, and makes
//! video packets nackable (answered from str0m's RTX cache, as in frame mode).
//!
//! The send streams themselves (SSRC, RTX, mid and rid header extensions) are str0m's: it declares
//! one per negotiated rid when the answer is applied (`ensure_stream_tx`), so a frame written
//! before that finds no stream and is dropped like a frame without a writer.

use std::collections::HashMap;
use std::time::Instant;

use str0m::format::Codec;
use str0m::media::{MediaTime, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo};
use str0m::unversioned::{H264Packetizer, OpusPacketizer, Packetizer, Vp8Packetizer};

/// Payload bytes per packet, as str0m's frame path cuts them: its MTU target (1150 bytes) less the
/// SRTP tag (16), aligned down to the 16-byte SRTP block (`Media::do_payload`). The RTP header and
/// extensions come on top, as they do in frame mode.
pub(super) const PAYLOAD_MTU: usize = {
    let rtp_size = str0m::DATAGRAM_MTU_TARGET - 16;
    rtp_size - rtp_size % 16
};

/// A codec's packetizer. An enum, not a trait object: the peer lives behind the hub's lock and
/// moves between threads, and the packetizers are plain state.
#[derive(Debug)]
enum CodecPacketizer {
    Vp8(Vp8Packetizer),
    H264(H264Packetizer),
    Opus(OpusPacketizer),
}

impl CodecPacketizer {
    fn for_codec(codec: Codec) -> Result<Self, String> {
        match codec {
            Codec::Vp8 => Ok(CodecPacketizer::Vp8(Vp8Packetizer::default())),
            Codec::H264 => Ok(CodecPacketizer::H264(H264Packetizer::default())),
            Codec::Opus => Ok(CodecPacketizer::Opus(OpusPacketizer)),
            other => Err(format!("no packetizer for {other}")),
        }
    }

    fn packetizer(&mut self) -> &mut dyn Packetizer {
        match self {
            CodecPacketizer::Vp8(p) => p,
            CodecPacketizer::H264(p) => p,
            CodecPacketizer::Opus(p) => p,
        }
    }
}

/// One send stream's packetizing state: the packetizer (H.264 keeps SPS/PPS for STAP-A) and the
/// next sequence number.
#[derive(Debug)]
struct StreamOut {
    packetizer: CodecPacketizer,
    next_seq: SeqNo,
}

/// One RTP packet ready for `StreamTx::write_rtp`.
#[derive(Debug, Clone)]
pub(super) struct RtpOut {
    pub(super) seq_no: SeqNo,
    pub(super) marker: bool,
    pub(super) nackable: bool,
    pub(super) ext_vals: ExtensionValues,
    pub(super) payload: Vec<u8>,
}

/// One frame of one track (one simulcast layer of a video frame).
#[derive(Debug, Clone)]
pub(super) struct FrameOut {
    pub(super) mid: Mid,
    pub(super) pt: Pt,
    pub(super) rid: Option<Rid>,
    /// RFC 6464 level and voice activity, for audio.
    pub(super) audio_level: Option<(i8, bool)>,
    pub(super) wallclock: Instant,
    pub(super) rtp_time: MediaTime,
    pub(super) data: std::sync::Arc<[u8]>,
}

/// The packetizing state of every send stream of one publisher, keyed by (mid, rid).
#[derive(Debug, Default)]
pub(super) struct RtpSink {
    streams: HashMap<(Mid, Option<Rid>), StreamOut>,
}

impl RtpSink {
    /// Cuts `frame` into packets for its stream, whose codec is `codec`. `first_seq` seeds the
    /// stream's sequence numbers the first time it is seen (str0m's SSRC gives a per-stream start).
    pub(super) fn packetize(&mut self, frame: &FrameOut, codec: Codec, first_seq: u16) -> Result<Vec<RtpOut>, String> {
        let stream = match self.streams.entry((frame.mid, frame.rid)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(StreamOut {
                packetizer: CodecPacketizer::for_codec(codec)?,
                // Below 2^15 so the first packets never carry a rollover counter the receiver cannot know.
                next_seq: SeqNo::from(u64::from(first_seq & 0x7fff)),
            }),
        };
        let packetizer = stream.packetizer.packetizer();
        let payloads = packetizer.packetize(PAYLOAD_MTU, &frame.data).map_err(|e| format!("packetize: {e}"))?;
        let nackable = packetizer.nackable();
        let mut ext_vals = ExtensionValues::default();
        if let Some((level_dbov, voice_activity)) = frame.audio_level {
            ext_vals.audio_level = Some(level_dbov);
            ext_vals.voice_activity = Some(voice_activity);
        }
        let count = payloads.len();
        let mut packets: Vec<RtpOut> = Vec::with_capacity(count);
        for (index, payload) in payloads.into_iter().enumerate() {
            let previous = packets.last().map(|p| p.payload.as_slice());
            let marker = packetizer.is_marker(&payload, previous, index + 1 == count);
            let seq_no = stream.next_seq.inc();
            packets.push(RtpOut { seq_no, marker, nackable, ext_vals: ext_vals.clone(), payload });
        }
        Ok(packets)
    }
}

/// Builds str0m's write command for one packet of `frame`.
pub(super) fn rtp_write(frame: &FrameOut, packet: RtpOut) -> RtpWrite {
    // The frame's media time is already in the codec's clock (48 kHz Opus, 90 kHz video).
    let rtp_time = frame.rtp_time.numer() as u32;
    RtpWrite::new(frame.pt, packet.seq_no, rtp_time, frame.wallclock, packet.payload)
        .marker(packet.marker)
        .ext_vals(packet.ext_vals)
        .nackable(packet.nackable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use str0m::media::Frequency;

    fn frame(mid: &str, rid: Option<&str>, len: usize, audio_level: Option<(i8, bool)>) -> FrameOut {
        FrameOut {
            mid: Mid::from(mid),
            pt: Pt::from(96),
            rid: rid.map(Rid::from),
            audio_level,
            wallclock: Instant::now(),
            rtp_time: MediaTime::new(3_000, Frequency::NINETY_KHZ),
            data: Arc::from(vec![0x10u8; len]),
        }
    }

    #[test]
    fn a_video_frame_has_one_marker_on_its_last_packet_and_fits_the_mtu() {
        let mut sink = RtpSink::default();
        let packets = sink.packetize(&frame("1", Some("f"), 3_000, None), Codec::Vp8, 100).unwrap();
        assert_eq!(packets.len(), 3);
        let markers: Vec<bool> = packets.iter().map(|p| p.marker).collect();
        assert_eq!(markers, vec![false, false, true]);
        assert!(packets.iter().all(|p| p.nackable && p.payload.len() <= PAYLOAD_MTU));
        assert_eq!(packets[0].payload[0] & 0x10, 0x10, "the first packet starts the VP8 partition");
        assert!(packets.iter().all(|p| p.ext_vals.audio_level.is_none()));
        let small = sink.packetize(&frame("1", Some("f"), 10, None), Codec::Vp8, 100).unwrap();
        assert_eq!(small.len(), 1);
        assert!(small[0].marker, "a one-packet frame is its own last packet");
    }

    #[test]
    fn sequence_numbers_are_continuous_per_mid_and_rid() {
        let mut sink = RtpSink::default();
        let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
        for _ in 0..3 {
            for rid in ["q", "h", "f"] {
                let packets = sink.packetize(&frame("1", Some(rid), 2_500, None), Codec::Vp8, 7).unwrap();
                seqs.entry(rid).or_default().extend(packets.iter().map(|p| *p.seq_no));
            }
        }
        for (rid, seqs) in seqs {
            assert_eq!(seqs.len(), 9, "{rid}");
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{rid}: {seqs:?}");
            assert_eq!(seqs[0], 7);
        }
    }

    #[test]
    fn opus_carries_the_audio_level_and_no_marker() {
        let mut sink = RtpSink::default();
        let packets = sink.packetize(&frame("0", None, 80, Some((-30, true))), Codec::Opus, 0xffff).unwrap();
        assert_eq!(packets.len(), 1);
        let packet = &packets[0];
        assert_eq!((packet.ext_vals.audio_level, packet.ext_vals.voice_activity), (Some(-30), Some(true)));
        assert!(!packet.marker && !packet.nackable);
        assert!(*packet.seq_no < 0x8000, "the first sequence number leaves room before a rollover");
        let write = rtp_write(&frame("0", None, 80, None), packet.clone());
        assert!(format!("{write:?}").contains("marker: false"));
    }

    #[test]
    fn h264_frames_are_fragmented_with_a_marker_at_the_end() {
        let mut data = vec![0, 0, 0, 1, 0x65];
        data.extend((0..3_000).map(|i| (i % 251) as u8 | 1));
        let frame = FrameOut { data: Arc::from(data), ..frame("1", None, 1, None) };
        let packets = RtpSink::default().packetize(&frame, Codec::H264, 1).unwrap();
        assert!(packets.len() >= 3);
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        assert!(packets.last().unwrap().marker);
    }
}
