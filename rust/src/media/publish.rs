//! The publisher's synthetic media: due Opus and VP8 simulcast frames from the looped clips,
//! written on the media clock, with catch-up limits after a stall: through str0m's frame API on a
//! frame-mode transport (the dual-PC publisher PeerConnection), packetized by `rtp_sink` on an
//! RTP-mode one (the single PeerConnection of `/rtc/v1`).
//!
//! Theory of operation
//! -------------------
//! A `Publisher` owns what publishing needs and nothing else: its clip library handle, one
//! output per track (clip cursor, RTP clock, next due time) and the participant's speech level.
//! It does not own the publisher PeerConnection: the peer lends its `Transport` and counters to
//! each call, so this module knows nothing of the peer.
//!
//! str0m must be drained after every input, and draining is the peer's (it turns str0m's events
//! into peer events and failures). So a frame is written one at a time: `write_next_audio` and
//! `write_next_video` each write at most one due frame, and the peer drains the transport after
//! each and stops on failure. A keyframe request drained between two frames therefore rewinds the
//! cursors before the next one. The simulcast layers of one video frame are taken from the clips
//! together, when the frame falls due, and then written one layer per call.
//!
//! `write_frame` picks the path by `Transport::rtp_mode`. In RTP mode `Rtc::writer` panics, so
//! the frame goes to the publisher's `RtpSink` (one packetizer and sequence number per mid and
//! rid) and each packet to str0m's send stream of that mid and rid; either way one call writes one
//! frame of one layer, and a keyframe request rewinds the same cursors.
//!
//! ```text
//! new (nothing due) --start(connected_at)--> frames due every interval
//!     write_next_*: Written (drain) | NoWriter | NoneDue (until `next_due`)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{Frequency, MediaTime, Mid, Pt, Rid};
use str0m::Rtc;

use super::clip::{MediaLibrary, TalkSpurts, OPUS_SILENCE_FRAME, SIMULCAST_RIDS};
use super::rtp_sink::{rtp_write, FrameOut, RtpSink};
use super::transport::Transport;
use super::types::PeerCounters;

/// The publisher's audio track: the next frame of the looped clip and when it is due.
struct AudioOut {
    mid: Mid,
    pt: Pt,
    frame: usize,
    rtp_time: u64,
    next_due: Instant,
    spurts: Option<TalkSpurts>,
    /// Muted by the server (`Publisher::set_muted`): its frames fall due but are not sent.
    muted: bool,
    /// When the first frame was written: a mute applies `MUTED_TRACK_LEAD` after it (`set_muted`).
    first_frame_at: Option<Instant>,
}

/// The publisher's simulcast video track: one clip cursor per layer, one RTP clock for all.
struct VideoOut {
    mid: Mid,
    pt: Pt,
    rids: Vec<Option<Rid>>,
    cursors: Vec<usize>,
    rtp_time: u64,
    next_due: Instant,
    /// The layers of the frame being written, taken from the clips when it fell due.
    frame: Option<VideoFrame>,
    /// Muted by the server (`Publisher::set_muted`): its frames fall due but are not sent.
    muted: bool,
    /// When the first frame was written: a mute applies `MUTED_TRACK_LEAD` after it (`set_muted`).
    first_frame_at: Option<Instant>,
}

/// One video frame in flight: its times and the layers still to write, lowest first.
struct VideoFrame {
    wallclock: Instant,
    rtp_time: MediaTime,
    layers: VecDeque<(Option<Rid>, Arc<[u8]>)>,
}

/// What one `write_next_*` call did, so the peer knows whether to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// No frame of the track is due: nothing to do before `next_due`.
    NoneDue,
    /// A due frame went to str0m (or str0m refused it, counted in `input_errors`): drain now.
    Written,
    /// A due frame was dropped because str0m has no writer (frame mode) or no send stream (RTP
    /// mode) for the track's mid; nothing to drain.
    NoWriter,
}

/// Media catch-up limit: after a stall, skip frames instead of bursting them.
const MAX_LATE: Duration = Duration::from_millis(100);

/// Frames due at `next_due`, `next_due + interval`, ... up to `now`: the ones a stall skips.
fn frames_overdue(next_due: Instant, now: Instant, interval: Duration) -> u64 {
    let behind_ns = now.saturating_duration_since(next_due).as_nanos();
    u64::try_from(behind_ns / interval.as_nanos().max(1)).unwrap_or(u64::MAX).saturating_add(1)
}

/// RFC 6464 level of a silence frame: the lowest the extension can say.
const SILENCE_DBOV: i8 = -127;

/// How long a track sends before a server mute silences it (`Publisher::set_muted`).
const MUTED_TRACK_LEAD: Duration = Duration::from_secs(1);

/// Whether a muted track's frames are held back at `now`: once it has sent for `MUTED_TRACK_LEAD`.
fn mute_applies(first_frame_at: Option<Instant>, now: Instant) -> bool {
    first_frame_at.is_some_and(|first| now.saturating_duration_since(first) >= MUTED_TRACK_LEAD)
}

/// Speech level of a publisher, -18 to -29 dBov by seed, so the SFU's speaker ranking has an order.
/// Every level is well above livekit-server's `active_level` (-35 dBov), which its smoothing
/// (an EMA of 0.5 s windows, weighted by how much of each was speech) only approaches: with
/// -25 to -40, a third of the publishers (-35 and below) were never an active speaker.
fn speech_level_dbov(seed: u64) -> i8 {
    -18 - (seed % 12) as i8
}

/// The synthetic media of one publisher PeerConnection.
pub(super) struct Publisher {
    library: MediaLibrary,
    audio: Option<AudioOut>,
    video: Option<VideoOut>,
    speech_level_dbov: i8,
    /// Packetizing state for an RTP-mode transport; empty (never used) in frame mode.
    rtp: RtpSink,
}

impl Publisher {
    /// Outputs for the offered tracks (`audio_mid`, `video_mid`), one video layer per clip of
    /// `library`; their payload types come with the answer (`choose_payload_types`).
    pub(super) fn new(
        library: MediaLibrary,
        audio_mid: Option<Mid>,
        video_mid: Option<Mid>,
        talk_spurts: bool,
        seed: u64,
        now: Instant,
    ) -> Self {
        let audio = audio_mid.map(|mid| AudioOut {
            mid,
            pt: Pt::from(0),
            frame: 0,
            rtp_time: 0,
            next_due: now,
            spurts: talk_spurts.then(|| TalkSpurts::p59(seed)),
            muted: false,
            first_frame_at: None,
        });
        let layers = library.video.len();
        let video = video_mid.map(|mid| {
            let rids: Vec<Option<Rid>> = if layers > 1 {
                SIMULCAST_RIDS.iter().take(layers).map(|r| Some(Rid::from(*r))).collect()
            } else {
                vec![None]
            };
            VideoOut {
                mid,
                pt: Pt::from(0),
                cursors: vec![0; rids.len()],
                rids,
                rtp_time: 0,
                next_due: now,
                frame: None,
                muted: false,
                first_frame_at: None,
            }
        });
        Publisher { library, audio, video, speech_level_dbov: speech_level_dbov(seed), rtp: RtpSink::default() }
    }

    /// Picks each track's payload type among those the answer accepted (applied to `rtc`). Reads
    /// the media's remote payload types, not `Rtc::writer`, which panics in RTP mode.
    pub(super) fn choose_payload_types(&mut self, rtc: &mut Rtc) -> Result<(), String> {
        // H.264 frames are larger than one packet, so only packetization-mode 1 (FU-A) can carry them.
        let sendable = |params: &PayloadParams, codec: Codec| {
            params.spec().codec == codec && (codec != Codec::H264 || params.spec().format.packetization_mode == Some(1))
        };
        let writer_pt = |rtc: &mut Rtc, mid: Mid, codec: Codec| -> Option<Pt> {
            let remote_pts = rtc.media(mid)?.remote_pts().to_vec();
            let params = rtc.codec_config().params();
            params.iter().find(|p| remote_pts.contains(&p.pt()) && sendable(p, codec)).map(|p| p.pt())
        };
        if let Some(audio) = &mut self.audio {
            audio.pt = writer_pt(rtc, audio.mid, Codec::Opus).ok_or("the server refused Opus")?;
        }
        if let Some(video) = &mut self.video {
            let codec = self.library.video_codec.codec();
            video.pt = writer_pt(rtc, video.mid, codec).ok_or_else(|| format!("the server refused {codec}"))?;
        }
        Ok(())
    }

    /// The publisher PeerConnection connected at `connected_at`: the first frames are due then.
    pub(super) fn start(&mut self, connected_at: Instant) {
        if let Some(audio) = &mut self.audio {
            audio.next_due = connected_at;
        }
        if let Some(video) = &mut self.video {
            video.next_due = connected_at;
        }
    }

    /// When the next frame of any track is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let audio = self.audio.as_ref().map(|a| a.next_due);
        let video = self.video.as_ref().map(|v| v.next_due);
        audio.into_iter().chain(video).min()
    }

    /// The server muted (or unmuted) our audio or `video` track, as an admin's MutePublishedTrack
    /// does; false when this publisher has no such track. A muted track's frames keep falling due on
    /// its clock but are not sent (counted in `frames_muted`), as a client whose app muted the track
    /// sends none; on unmute the next frame goes out on time, and video restarts on a keyframe, which
    /// subscribers need to decode again. A track muted before it has sent for `MUTED_TRACK_LEAD` (a
    /// fresh join republishing a track the server had muted, muted as an SDK republishes it) sends
    /// until then: livekit-server publishes a track on its first packets, and an SDK's muted track
    /// sends some (libwebrtc's silence and black frames), so one that sent none would never be
    /// listed, nor could it be unmuted; a second of frames makes the loss of all of them unlikely.
    pub(super) fn set_muted(&mut self, video: bool, muted: bool) -> bool {
        if !video {
            return self.audio.as_mut().map(|audio| audio.muted = muted).is_some();
        }
        let Some(out) = &mut self.video else { return false };
        if muted {
            out.frame = None; // the layers of a frame in flight are not sent either
        } else if out.muted {
            out.cursors.iter_mut().for_each(|cursor| *cursor = 0);
        }
        out.muted = muted;
        true
    }

    /// Rewinds the layers a keyframe request names (all of them when `rid` is None) to their
    /// first frame, which is a keyframe, so the answer to a PLI is the very next frame.
    pub(super) fn on_keyframe_request(&mut self, mid: Mid, rid: Option<Rid>) {
        let Some(video) = &mut self.video else { return };
        if video.mid != mid {
            return;
        }
        for (layer_rid, cursor) in video.rids.iter().zip(video.cursors.iter_mut()) {
            if rid.is_none() || *layer_rid == rid {
                *cursor = 0;
            }
        }
    }

    /// Writes the next audio frame if one is due at `now` into `tx`.
    pub(super) fn write_next_audio(&mut self, now: Instant, tx: &mut Transport, counters: &mut PeerCounters) -> Write {
        let (Some(audio), Some(audio_clip)) = (&mut self.audio, &self.library.audio) else { return Write::NoneDue };
        if audio.next_due > now {
            return Write::NoneDue;
        }
        if audio.muted && mute_applies(audio.first_frame_at, now) {
            // On its clock, not sent: the frames due up to now pass at once.
            let due = frames_overdue(audio.next_due, now, audio_clip.frame_interval);
            counters.frames_muted += due;
            audio.frame += due as usize;
            audio.rtp_time += audio_clip.ticks_per_frame * due;
            audio.next_due += audio_clip.frame_interval * u32::try_from(due).unwrap_or(u32::MAX);
            return Write::NoneDue;
        }
        let frame = &audio_clip.frames[audio.frame % audio_clip.frames.len()];
        let talking = audio.spurts.as_mut().is_none_or(TalkSpurts::step);
        let data: Arc<[u8]> = if talking { frame.data.clone() } else { Arc::from(&OPUS_SILENCE_FRAME[..]) };
        let (mid, pt, rtp_time, wallclock) = (audio.mid, audio.pt, audio.rtp_time, audio.next_due);
        audio.first_frame_at.get_or_insert(now); // when written: frames fall due from the offer, before connect
        audio.frame += 1;
        audio.rtp_time += audio_clip.ticks_per_frame;
        audio.next_due += audio_clip.frame_interval;
        if now.duration_since(audio.next_due) > MAX_LATE {
            // A stall: skip what is overdue rather than burst it, and say how much was skipped.
            counters.frames_skipped += frames_overdue(audio.next_due, now, audio_clip.frame_interval);
            audio.next_due = now + audio_clip.frame_interval;
        }
        // The SFU ranks active speakers by this header extension, so it follows the talk spurts.
        let level = if talking { (self.speech_level_dbov, true) } else { (SILENCE_DBOV, false) };
        let rtp_time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        let frame = FrameOut { mid, pt, rid: None, audio_level: Some(level), wallclock, rtp_time, data };
        write_frame(tx, counters, &mut self.rtp, frame)
    }

    /// Writes the next layer of the video frame due at `now` into `tx`.
    pub(super) fn write_next_video(&mut self, now: Instant, tx: &mut Transport, counters: &mut PeerCounters) -> Write {
        let Some(video) = &mut self.video else { return Write::NoneDue };
        if video.frame.is_none() {
            let library = &self.library.video;
            if video.next_due > now || library.is_empty() {
                return Write::NoneDue;
            }
            if video.muted && mute_applies(video.first_frame_at, now) {
                let interval = library[0].frame_interval;
                let due = frames_overdue(video.next_due, now, interval);
                counters.frames_muted += due * video.rids.len().max(1) as u64;
                video.rtp_time += library[0].ticks_per_frame * due;
                video.next_due += interval * u32::try_from(due).unwrap_or(u32::MAX);
                return Write::NoneDue;
            }
            video.first_frame_at.get_or_insert(now);
            let wallclock = video.next_due;
            let rtp_time = MediaTime::new(video.rtp_time, Frequency::NINETY_KHZ);
            let interval = library[0].frame_interval;
            video.rtp_time += library[0].ticks_per_frame;
            video.next_due += interval;
            if now.duration_since(video.next_due) > MAX_LATE {
                let layers = video.rids.len().max(1) as u64;
                counters.frames_skipped += frames_overdue(video.next_due, now, interval) * layers;
                video.next_due = now + interval;
            }
            // Every layer's data is taken now: a keyframe request drained between two layers
            // rewinds the cursors for the next frame, not for the rest of this one.
            let mut layers = VecDeque::with_capacity(video.rids.len());
            for (layer, (rid, cursor)) in video.rids.iter().zip(video.cursors.iter_mut()).enumerate() {
                let clip = &library[layer.min(library.len() - 1)];
                layers.push_back((*rid, clip.frames[*cursor % clip.frames.len()].data.clone()));
                *cursor = (*cursor + 1) % clip.frames.len();
            }
            video.frame = Some(VideoFrame { wallclock, rtp_time, layers });
        }
        let (mid, pt) = (video.mid, video.pt);
        let Some(frame) = &mut video.frame else { return Write::NoneDue };
        let Some((rid, data)) = frame.layers.pop_front() else {
            video.frame = None; // a frame with no layers (never built): nothing to write
            return Write::NoneDue;
        };
        let (wallclock, rtp_time) = (frame.wallclock, frame.rtp_time);
        if frame.layers.is_empty() {
            video.frame = None;
        }
        let frame = FrameOut { mid, pt, rid, audio_level: None, wallclock, rtp_time, data };
        write_frame(tx, counters, &mut self.rtp, frame)
    }
}

/// Writes one frame (of one simulcast layer): to str0m's frame API, which packetizes it, or in
/// RTP mode through `sink` to the stream's `StreamTx`.
fn write_frame(tx: &mut Transport, counters: &mut PeerCounters, sink: &mut RtpSink, frame: FrameOut) -> Write {
    if tx.rtp_mode {
        return write_frame_rtp(tx, counters, sink, frame);
    }
    let Some(mut writer) = tx.rtc.writer(frame.mid) else { return Write::NoWriter };
    if let Some(rid) = frame.rid {
        writer = writer.rid(rid);
    }
    if let Some((level_dbov, voice_activity)) = frame.audio_level {
        writer = writer.audio_level(level_dbov, voice_activity);
    }
    match writer.write(frame.pt, frame.wallclock, frame.rtp_time, frame.data) {
        Ok(()) => counters.frames_sent += 1,
        Err(_) => counters.input_errors += 1,
    }
    tx.undrained = true;
    Write::Written
}

/// RTP mode: packetizes the frame and writes each packet to the send stream of its mid and rid,
/// which str0m declared when it applied the answer.
fn write_frame_rtp(tx: &mut Transport, counters: &mut PeerCounters, sink: &mut RtpSink, frame: FrameOut) -> Write {
    let codec = tx.rtc.codec_config().find(|p| p.pt() == frame.pt).map(|p| p.spec().codec);
    let mut api = tx.rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(frame.mid, frame.rid) else { return Write::NoWriter };
    let first_seq = *stream.ssrc() as u16; // a per-stream start, as str0m's own streams have
    let packets =
        codec.ok_or_else(|| format!("no codec for {}", frame.pt)).and_then(|c| sink.packetize(&frame, c, first_seq));
    match packets {
        Ok(packets) => {
            for packet in packets {
                stream.write_rtp(rtp_write(&frame, packet));
            }
            counters.frames_sent += 1;
        }
        Err(_) => counters.input_errors += 1,
    }
    tx.undrained = true;
    Write::Written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::clip::{Clip, ClipFrame};

    #[test]
    fn a_stall_skips_every_frame_due_up_to_now() {
        let due = Instant::now();
        let frame = Duration::from_millis(20);
        assert_eq!(frames_overdue(due, due, frame), 1);
        assert_eq!(frames_overdue(due, due + Duration::from_millis(19), frame), 1);
        assert_eq!(frames_overdue(due, due + Duration::from_millis(150), frame), 8);
        // A clock that has not reached `next_due` still counts the frame being replaced.
        assert_eq!(frames_overdue(due + frame, due, frame), 1);
    }

    #[test]
    fn speech_levels_are_all_active_for_the_sfu_and_ranked() {
        // livekit-server's default active_level is -35 dBov, approached only through its smoothing:
        // each level keeps 6 dB of margin, and a room's consecutive seeds get distinct levels.
        for seed in 0..64 {
            let level = speech_level_dbov(seed);
            assert!((-29..=-18).contains(&level), "seed {seed}: {level}");
            assert!(level > SILENCE_DBOV);
        }
        let room: std::collections::HashSet<i8> = (100..112).map(speech_level_dbov).collect();
        assert_eq!(room.len(), 12);
    }

    fn video_library(layers: usize) -> MediaLibrary {
        let frames = (0..4u8).map(|i| ClipFrame { data: Arc::from(&[i][..]), keyframe: i == 0 }).collect();
        let clip = Arc::new(Clip::new(frames, Duration::from_millis(33), 90_000).unwrap());
        MediaLibrary { video: vec![clip; layers], ..MediaLibrary::default() }
    }

    #[test]
    fn tracks_fall_due_when_the_publisher_connects() {
        let created_at = Instant::now();
        let mut publisher =
            Publisher::new(video_library(1), Some(Mid::from("0")), Some(Mid::from("1")), false, 3, created_at);
        assert_eq!(publisher.next_due(), Some(created_at));
        let connected_at = created_at + Duration::from_millis(40);
        publisher.start(connected_at);
        assert_eq!(publisher.next_due(), Some(connected_at));
        assert_eq!(publisher.speech_level_dbov, speech_level_dbov(3));
        assert!(Publisher::new(video_library(1), None, None, false, 0, created_at).next_due().is_none());
    }

    fn audio_library() -> MediaLibrary {
        let frames = (0..4u8).map(|i| ClipFrame { data: Arc::from(&[i][..]), keyframe: true }).collect();
        let clip = Arc::new(Clip::new(frames, Duration::from_millis(20), 48_000).unwrap());
        MediaLibrary { audio: Some(clip), ..video_library(3) }
    }

    fn publisher_transport(now: Instant) -> Transport {
        let cert = crate::media::shared_certificate().unwrap();
        let local = "127.0.0.1:9".parse().unwrap();
        Transport::publisher(&cert, local, now, crate::media::clip::VideoCodec::Vp8).unwrap()
    }

    #[test]
    fn a_muted_track_sends_nothing_while_its_clock_runs_and_video_resumes_on_a_keyframe() {
        let start = Instant::now();
        let (audio_mid, video_mid) = (Mid::from("0"), Mid::from("1"));
        let mut publisher = Publisher::new(audio_library(), Some(audio_mid), Some(video_mid), false, 0, start);
        let mut tx = publisher_transport(start);
        tx.undrained = false; // as after the peer's drain
        let mut counters = PeerCounters::default();
        // Both have sent for long enough: see the next test for a track muted before that.
        publisher.audio.as_mut().unwrap().first_frame_at = Some(start - MUTED_TRACK_LEAD);
        publisher.video.as_mut().unwrap().first_frame_at = Some(start - MUTED_TRACK_LEAD);
        assert!(publisher.set_muted(false, true) && publisher.set_muted(true, true));
        publisher.video.as_mut().unwrap().cursors = vec![3, 3, 3];
        // 100 ms of both tracks' frames fall due: none is written, each is counted (video: 3 layers).
        let later = start + Duration::from_millis(99);
        assert_eq!(publisher.write_next_audio(later, &mut tx, &mut counters), Write::NoneDue);
        assert_eq!(publisher.write_next_video(later, &mut tx, &mut counters), Write::NoneDue);
        assert_eq!((counters.frames_sent, counters.input_errors, counters.frames_skipped), (0, 0, 0));
        assert_eq!(counters.frames_muted, 5 + 4 * 3);
        assert!(!tx.undrained, "nothing reached the transport");
        // The clocks ran on: the next frames are due on the grid after `later`, not in a burst.
        let audio = publisher.audio.as_ref().unwrap();
        assert_eq!((audio.next_due, audio.frame, audio.rtp_time), (start + Duration::from_millis(100), 5, 4_800));
        let video = publisher.video.as_ref().unwrap();
        assert_eq!((video.next_due, video.rtp_time), (start + Duration::from_millis(132), 4 * 2_970));
        assert!(publisher.set_muted(true, false));
        assert_eq!(publisher.video.as_ref().unwrap().cursors, vec![0, 0, 0], "unmuted video starts on a keyframe");
        assert!(publisher.set_muted(false, false));
        let due = start + Duration::from_millis(132);
        // Due and unmuted, the frame goes to the transport (which, never negotiated, has no writer for it).
        assert_eq!(publisher.write_next_video(due, &mut tx, &mut counters), Write::NoWriter);
        assert_eq!(counters.frames_muted, 17, "unmuted: counted as sent, or refused, never as muted");
        // A publisher of audio alone has no video track to mute.
        let mut audio_only = Publisher::new(audio_library(), Some(audio_mid), None, false, 0, start);
        assert!(!audio_only.set_muted(true, true) && audio_only.set_muted(false, true));
    }

    #[test]
    fn a_track_muted_before_it_has_sent_for_a_second_sends_until_then() {
        let start = Instant::now();
        let (audio_mid, video_mid) = (Mid::from("0"), Mid::from("1"));
        let mut publisher = Publisher::new(audio_library(), Some(audio_mid), Some(video_mid), false, 0, start);
        let mut tx = publisher_transport(start);
        let mut counters = PeerCounters::default();
        assert!(publisher.set_muted(false, true) && publisher.set_muted(true, true));
        // Every 20 ms for 1.2 s: the frames due in the first second go (to a transport that, never
        // negotiated, has no writer for them), the ones after are held back and counted as muted.
        let (mut audio_written, mut video_written) = (0, 0);
        for step in 0..60 {
            let now = start + Duration::from_millis(20 * step);
            audio_written += (publisher.write_next_audio(now, &mut tx, &mut counters) == Write::NoWriter) as u32;
            video_written += (publisher.write_next_video(now, &mut tx, &mut counters) == Write::NoWriter) as u32;
            publisher.video.as_mut().unwrap().frame = None; // as if its other layers were written
        }
        assert_eq!(audio_written, 50, "1 s of 20 ms frames");
        assert_eq!(video_written, 30, "the frames due at 0 to 957 ms, 33 ms apart, written by 980 ms");
        // Held back from 1 s of sending: 10 audio frames; 6 video frames of 3 layers (due at 990 to 1155 ms).
        assert_eq!(counters.frames_muted, 10 + 6 * 3);
        // Made with the offer, written from a connect 3 s later: the second runs from the first write.
        let mut late = Publisher::new(audio_library(), Some(audio_mid), None, false, 0, start);
        assert!(late.set_muted(false, true));
        let connected = start + Duration::from_secs(3);
        let written = (0..60)
            .filter(|step| {
                let now = connected + Duration::from_millis(20 * step);
                late.write_next_audio(now, &mut tx, &mut counters) == Write::NoWriter
            })
            .count();
        assert_eq!(written, 50);
    }

    #[test]
    fn a_keyframe_request_rewinds_only_the_layer_it_names() {
        let mid = Mid::from("1");
        let mut publisher = Publisher::new(video_library(3), None, Some(mid), false, 0, Instant::now());
        let video = publisher.video.as_mut().unwrap();
        assert_eq!(video.rids, vec![Some(Rid::from("q")), Some(Rid::from("h")), Some(Rid::from("f"))]);
        video.cursors = vec![2, 2, 2];
        publisher.on_keyframe_request(Mid::from("7"), None);
        assert_eq!(publisher.video.as_ref().unwrap().cursors, vec![2, 2, 2], "another track's request");
        publisher.on_keyframe_request(mid, Some(Rid::from("h")));
        assert_eq!(publisher.video.as_ref().unwrap().cursors, vec![2, 0, 2]);
        publisher.on_keyframe_request(mid, None);
        assert_eq!(publisher.video.as_ref().unwrap().cursors, vec![0, 0, 0]);
    }
}
