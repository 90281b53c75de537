//! The publisher's synthetic media: due Opus and VP8 simulcast frames from the looped clips,
//! written through str0m's frame API on the media clock, with catch-up limits after a stall.

use std::time::{Duration, Instant};

use str0m::media::{Frequency, MediaTime, Mid, Pt, Rid};

use super::clip::{Clip, TalkSpurts, OPUS_SILENCE_FRAME};
use super::peer::{Datagram, MediaPeer, Pc};

/// The publisher's audio track: the next frame of the looped clip and when it is due.
pub(super) struct AudioOut {
    pub(super) mid: Mid,
    pub(super) pt: Pt,
    pub(super) frame: usize,
    pub(super) rtp_time: u64,
    pub(super) next_due: Instant,
    pub(super) spurts: Option<TalkSpurts>,
}

/// The publisher's simulcast video track: one clip cursor per layer, one RTP clock for all.
pub(super) struct VideoOut {
    pub(super) mid: Mid,
    pub(super) pt: Pt,
    pub(super) rids: Vec<Option<Rid>>,
    pub(super) cursors: Vec<usize>,
    pub(super) rtp_time: u64,
    pub(super) next_due: Instant,
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

/// Speech level of a publisher, -25 to -40 dBov by seed, so the SFU's speaker ranking has an order.
fn speech_level_dbov(seed: u64) -> i8 {
    -25 - (seed % 16) as i8
}

impl MediaPeer {
    pub(super) fn write_due_media(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        if let Some(audio_clip) = self.library.audio.clone() {
            self.write_due_audio(&audio_clip, now, out);
        }
        if !self.failed {
            self.write_due_video(now, out);
        }
    }

    fn write_due_audio(&mut self, audio_clip: &Clip, now: Instant, out: &mut Vec<Datagram>) {
        let speech_level = speech_level_dbov(self.config.seed);
        while let Some(audio) = &mut self.audio_out {
            if audio.next_due > now {
                break;
            }
            let frame = &audio_clip.frames[audio.frame % audio_clip.frames.len()];
            let talking = audio.spurts.as_mut().is_none_or(TalkSpurts::step);
            let data: std::sync::Arc<[u8]> =
                if talking { frame.data.clone() } else { std::sync::Arc::from(&OPUS_SILENCE_FRAME[..]) };
            let (mid, pt, rtp_time, wallclock) = (audio.mid, audio.pt, audio.rtp_time, audio.next_due);
            audio.frame += 1;
            audio.rtp_time += audio_clip.ticks_per_frame;
            audio.next_due += audio_clip.frame_interval;
            if now.duration_since(audio.next_due) > MAX_LATE {
                // A stall: skip what is overdue rather than burst it, and say how much was skipped.
                self.counters.frames_skipped += frames_overdue(audio.next_due, now, audio_clip.frame_interval);
                audio.next_due = now + audio_clip.frame_interval;
            }
            // The SFU ranks active speakers by this header extension, so it follows the talk spurts.
            let level = if talking { Some((speech_level, true)) } else { Some((SILENCE_DBOV, false)) };
            self.write_frame(
                mid,
                pt,
                None,
                level,
                wallclock,
                MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ),
                data,
                now,
                out,
            );
            if self.failed {
                return;
            }
        }
    }

    fn write_due_video(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        let library = self.library.video.clone();
        while let Some(video) = &mut self.video_out {
            if video.next_due > now || library.is_empty() {
                break;
            }
            let wallclock = video.next_due;
            let rtp_time = MediaTime::new(video.rtp_time, Frequency::NINETY_KHZ);
            let interval = library[0].frame_interval;
            video.rtp_time += library[0].ticks_per_frame;
            video.next_due += interval;
            if now.duration_since(video.next_due) > MAX_LATE {
                let layers = video.rids.len().max(1) as u64;
                self.counters.frames_skipped += frames_overdue(video.next_due, now, interval) * layers;
                video.next_due = now + interval;
            }
            let (mid, pt) = (video.mid, video.pt);
            let mut writes = Vec::with_capacity(video.rids.len());
            for (layer, (rid, cursor)) in video.rids.iter().zip(video.cursors.iter_mut()).enumerate() {
                let clip = &library[layer.min(library.len() - 1)];
                writes.push((*rid, clip.frames[*cursor % clip.frames.len()].data.clone()));
                *cursor = (*cursor + 1) % clip.frames.len();
            }
            for (rid, data) in writes {
                self.write_frame(mid, pt, rid, None, wallclock, rtp_time, data, now, out);
                if self.failed {
                    return;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_frame(
        &mut self,
        mid: Mid,
        pt: Pt,
        rid: Option<Rid>,
        audio_level: Option<(i8, bool)>,
        wallclock: Instant,
        rtp_time: MediaTime,
        data: std::sync::Arc<[u8]>,
        now: Instant,
        out: &mut Vec<Datagram>,
    ) {
        let Some(publisher) = self.publisher.as_mut() else { return };
        let Some(mut writer) = publisher.rtc.writer(mid) else { return };
        if let Some(rid) = rid {
            writer = writer.rid(rid);
        }
        if let Some((level_dbov, voice_activity)) = audio_level {
            writer = writer.audio_level(level_dbov, voice_activity);
        }
        match writer.write(pt, wallclock, rtp_time, data) {
            Ok(()) => self.counters.frames_sent += 1,
            Err(_) => self.counters.input_errors += 1,
        }
        publisher.undrained = true;
        self.drain(Pc::Publisher, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn speech_levels_are_quieter_than_minus_25_dbov_and_louder_than_silence() {
        for seed in 0..64 {
            let level = speech_level_dbov(seed);
            assert!((-40..=-25).contains(&level), "seed {seed}: {level}");
            assert!(level > SILENCE_DBOV);
        }
    }
}
