//! Pre-encoded media that publishers loop: Opus frames and VP8 or H.264 simulcast layers.
//!
//! The frames are encoded once (by Python, with PyAV) and shared by every
//! publisher through `Arc`, so a thousand publishers cost one copy of the clip.
//! A cursor per track walks the clip; a keyframe request rewinds the layer to
//! its first frame, which is always a keyframe, so the answer to a PLI is the
//! very next frame instead of the next scheduled keyframe.

use std::sync::Arc;
use std::time::Duration;

use str0m::format::Codec;

/// One encoded frame (a whole VP8 frame, an H.264 access unit in Annex B, or one 20 ms Opus packet).
#[derive(Debug, Clone)]
pub struct ClipFrame {
    pub data: Arc<[u8]>,
    pub keyframe: bool,
}

/// A loop of frames with a fixed frame interval.
#[derive(Debug, Clone)]
pub struct Clip {
    pub frames: Vec<ClipFrame>,
    pub frame_interval: Duration,
    /// RTP clock ticks per frame (960 for 20 ms Opus, 3000 for 30 fps video).
    pub ticks_per_frame: u64,
}

impl Clip {
    pub fn new(frames: Vec<ClipFrame>, frame_interval: Duration, clock_rate: u32) -> Result<Self, String> {
        if frames.is_empty() {
            return Err("a clip needs at least one frame".into());
        }
        if frame_interval.is_zero() {
            return Err("the frame interval must be positive".into());
        }
        let ticks_per_frame = (frame_interval.as_secs_f64() * f64::from(clock_rate)).round() as u64;
        Ok(Clip { frames, frame_interval, ticks_per_frame })
    }

    pub fn starts_with_keyframe(&self) -> bool {
        self.frames[0].keyframe
    }
}

/// Video layer names and sizes, lowest first, as LiveKit SDKs announce them.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// The codec of the video clips, so the one the publisher offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VideoCodec {
    #[default]
    Vp8,
    /// Constrained baseline in Annex B, sent with packetization-mode 1 (FU-A, STAP-A).
    H264,
}

impl VideoCodec {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "vp8" => Some(VideoCodec::Vp8),
            "h264" => Some(VideoCodec::H264),
            _ => None,
        }
    }

    /// str0m's name for it, to find the negotiated payload type.
    pub fn codec(self) -> Codec {
        match self {
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::H264 => Codec::H264,
        }
    }
}

/// Everything publishers may send. Cheap to clone (all `Arc`s inside).
#[derive(Debug, Clone, Default)]
pub struct MediaLibrary {
    pub audio: Option<Arc<Clip>>,
    /// One clip per simulcast layer, lowest first; a single entry means no simulcast.
    pub video: Vec<Arc<Clip>>,
    pub video_codec: VideoCodec,
}

/// Opus "silence" frame (TOC for 20 ms CELT FB mono, no payload), sent during DTX pauses.
pub const OPUS_SILENCE_FRAME: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Talk-spurt model after ITU-T P.59: exponential talk and pause durations.
#[derive(Debug, Clone)]
pub struct TalkSpurts {
    state: u64,
    talking: bool,
    remaining_frames: u32,
    mean_talk_frames: f64,
    mean_pause_frames: f64,
}

impl TalkSpurts {
    /// P.59's means: talk spurts of 1.004 s, pauses of 1.587 s, in 20 ms frames.
    pub fn p59(seed: u64) -> Self {
        let mut spurts = TalkSpurts {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            talking: true,
            remaining_frames: 0,
            mean_talk_frames: 1.004 / 0.02,
            mean_pause_frames: 1.587 / 0.02,
        };
        spurts.remaining_frames = spurts.draw(spurts.mean_talk_frames);
        spurts
    }

    fn next_unit(&mut self) -> f64 {
        // xorshift64*: deterministic per participant, no dependency.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn draw(&mut self, mean_frames: f64) -> u32 {
        (-mean_frames * self.next_unit().ln()).ceil().max(1.0) as u32
    }

    /// Advances one 20 ms frame; true while talking.
    pub fn step(&mut self) -> bool {
        if self.remaining_frames == 0 {
            self.talking = !self.talking;
            let mean = if self.talking { self.mean_talk_frames } else { self.mean_pause_frames };
            self.remaining_frames = self.draw(mean);
        }
        self.remaining_frames -= 1;
        self.talking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_ticks_follow_the_clock() {
        let frame = ClipFrame { data: Arc::from(&b"x"[..]), keyframe: true };
        let clip = Clip::new(vec![frame], Duration::from_millis(20), 48_000).unwrap();
        assert_eq!(clip.ticks_per_frame, 960);
        assert!(Clip::new(vec![], Duration::from_millis(20), 48_000).is_err());
    }

    #[test]
    fn talk_spurts_match_p59_activity() {
        let mut spurts = TalkSpurts::p59(7);
        let frames = 200_000;
        let talking = (0..frames).filter(|_| spurts.step()).count();
        let activity = talking as f64 / frames as f64;
        // 1.004 / (1.004 + 1.587) ≈ 0.387
        assert!((activity - 0.387).abs() < 0.03, "activity {activity}");
    }
}
