//! A peer's data-message schedule: probe messages at a fixed rate on `_reliable` and/or `_lossy`.
//!
//! Theory of operation
//! -------------------
//! Each channel has at most one `Schedule` (a new `data_publish` replaces it). It has no due time
//! until its channel is open; from then, one message is due every `interval`. `write_due` writes
//! every message due by `now`, and after a stall of more than `MAX_LATE` skips what is overdue
//! (counted in `skipped`) rather than bursting it, as the media publisher does (`publish`).
//!
//! A `Burst` adds `count` messages back to back every `every`, from the channel's opening plus
//! `every`, on top of the rate (a chat room's paste, an agent's stream); a burst the media thread
//! was too late for is skipped and counted like overdue messages.
//!
//! A message the channel refuses (str0m's SCTP send budget is spent, or the write errors) is
//! counted `blocked` and dropped: it is neither sent nor retried, so a slow path shows as blocked
//! messages instead of a growing queue. The probe counter and the reliable `sequence` advance only
//! for sent messages, so receivers see no gap that the generator made; both survive a replaced
//! schedule, since the server drops reliable sequences at or below the last one it saw.
//!
//! Resume (the protocol's sync state, as the SDKs do it): the sent reliable messages are kept, the
//! newest `RESEND_BUFFER_BYTES` of them, and after a signal resume the server's
//! `ReconnectResponse.last_message_seq` says the last sequence it received from us;
//! `resend_after` writes again every kept message past it, unchanged (its send time too, so the
//! latency it shows is the real one). Ones past it that the buffer no longer holds are counted
//! `resend_unavailable`; the server drops any resent message it had already (sequence ≤ its last).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::packet::{encode_user_packet, fill_probe, Kind, UserFields, MAX_PACKET_BYTES, PROBE_HEADER_BYTES};

/// Catch-up limit after a stall, as for media (`publish::MAX_LATE`).
const MAX_LATE: Duration = Duration::from_millis(100);

/// The reliable messages kept for a resend after a resume: the newest this many bytes (at least
/// the last message). 64 KiB is a second of a 64 KB/s publisher, bounded per peer.
pub const RESEND_BUFFER_BYTES: usize = 64 * 1024;

/// Extra messages back to back, every `every`; `count` 0 is none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Burst {
    pub count: u32,
    pub every: Duration,
}

/// What `data_publish` asks for.
#[derive(Debug, Clone)]
pub struct DataPublish {
    pub kind: Kind,
    pub rate_hz: f64,
    pub size_bytes: usize,
    pub topic: String,
    pub destinations: Vec<String>,
    pub identity: String,
    pub burst: Burst,
}

#[derive(Debug)]
struct Schedule {
    spec: DataPublish,
    interval: Duration,
    /// None until the channel is open.
    next_due: Option<Instant>,
    /// The next burst; None without bursts or until the channel is open.
    next_burst: Option<Instant>,
}

impl Schedule {
    fn start(&mut self, now: Instant) {
        self.next_due.get_or_insert(now);
        if self.spec.burst.count > 0 {
            self.next_burst.get_or_insert(now + self.spec.burst.every);
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        match (self.next_due, self.next_burst) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Per-channel send figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCounts {
    pub sent: u64,
    /// Payload bytes of sent messages (as receivers count them).
    pub payload_bytes: u64,
    /// Refused by the channel (over its buffered amount, or a write error): not sent.
    pub blocked: u64,
    /// Never written because the media thread fell more than `MAX_LATE` behind.
    pub skipped: u64,
    /// Burst messages among `sent`.
    pub burst: u64,
}

/// What `resend_after` did, over the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResendCounts {
    /// Resumes that asked for a resend.
    pub resumes: u64,
    /// Messages written again (sent or blocked).
    pub resent: u64,
    /// Past the server's last sequence but no longer kept.
    pub unavailable: u64,
}

/// The writing side of a channel, lent by the peer for one `write_due`.
pub trait ChannelWriter {
    /// Ok(true) if the message was accepted.
    fn write(&mut self, message: &[u8]) -> Result<bool, String>;
}

#[derive(Debug)]
pub struct DataSender {
    schedules: [Option<Schedule>; 2],
    pub counts: [SendCounts; 2],
    /// Probe counter per channel, from 0.
    counters: [u64; 2],
    /// The last reliable `sequence` written (the next is +1).
    reliable_sequence: u32,
    nonce_salt: u64,
    buf: Vec<u8>,
    /// Sent reliable messages, oldest first, by sequence; see the module doc.
    kept: VecDeque<(u32, Vec<u8>)>,
    kept_bytes: usize,
    /// A resend asked for (the server's last sequence), done at the reliable channel's next write.
    pending_resend: Option<(u32, Instant)>,
    pub resend: ResendCounts,
}

impl Default for DataSender {
    fn default() -> Self {
        DataSender {
            schedules: [None, None],
            counts: [SendCounts::default(); 2],
            counters: [0; 2],
            reliable_sequence: 0,
            nonce_salt: nonce_salt(),
            buf: Vec::new(),
            kept: VecDeque::new(),
            kept_bytes: 0,
            pending_resend: None,
            resend: ResendCounts::default(),
        }
    }
}

/// Unique per sender in this process (a counter) and across processes (the clock), mixed.
fn nonce_salt() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(40);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn unix_now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl DataSender {
    /// Checks `spec` and replaces its channel's schedule; sending starts at `open_now` if the
    /// channel is already open, else when it opens.
    pub fn publish(&mut self, spec: DataPublish, open_now: Option<Instant>) -> Result<(), String> {
        if !(spec.rate_hz.is_finite() && spec.rate_hz > 0.0 && spec.rate_hz <= 1_000_000.0) {
            return Err(format!("rate_hz must be in (0, 1e6], got {}", spec.rate_hz));
        }
        if spec.size_bytes < PROBE_HEADER_BYTES {
            return Err(format!("size_bytes must be at least {PROBE_HEADER_BYTES}, got {}", spec.size_bytes));
        }
        // Before the encoding below sizes its buffer to it: a huge size would abort the process on the
        // allocation. The packet's framing adds to the payload, so this check is not the whole one.
        if spec.size_bytes > MAX_PACKET_BYTES {
            return Err(format!("a {} B payload is over the {MAX_PACKET_BYTES} B message limit", spec.size_bytes));
        }
        let fields = self.fields(&spec, u32::MAX, &[0; 16]);
        encode_user_packet(&mut self.buf, &fields, spec.size_bytes, |_| {});
        if self.buf.len() > MAX_PACKET_BYTES {
            return Err(format!("a {} B message is over the {MAX_PACKET_BYTES} B limit", self.buf.len()));
        }
        if spec.burst.count > 0 && spec.burst.every < Duration::from_millis(1) {
            return Err(format!("a burst needs an interval of at least 1 ms, got {:?}", spec.burst.every));
        }
        if spec.burst.count > 10_000 {
            return Err(format!("a burst is at most 10000 messages, got {}", spec.burst.count));
        }
        let interval = Duration::from_secs_f64(1.0 / spec.rate_hz).max(Duration::from_micros(1));
        let slot = spec.kind as usize;
        let mut schedule = Schedule { spec, interval, next_due: None, next_burst: None };
        if let Some(old) = self.schedules[slot].take() {
            // A replacement (destinations filled in as the room fills) keeps the clock: no early message.
            (schedule.next_due, schedule.next_burst) = (old.next_due, old.next_burst);
        }
        if let Some(now) = open_now {
            schedule.start(now);
        }
        self.schedules[slot] = Some(schedule);
        Ok(())
    }

    /// After a resume: writes again, at the reliable channel's next write, the kept messages past
    /// `last_sequence` (the server's `last_message_seq`); see the module doc.
    pub fn resend_after(&mut self, last_sequence: u32, now: Instant) {
        self.resend.resumes += 1;
        self.pending_resend = Some((last_sequence, now));
    }

    /// Whether a resend waits for the reliable channel.
    pub fn resend_pending(&self) -> bool {
        self.pending_resend.is_some()
    }

    /// Does the pending resend on `channel` (the reliable one); returns how many it offered.
    pub fn write_resend(&mut self, channel: &mut dyn ChannelWriter) -> u64 {
        let Some((last, _)) = self.pending_resend.take() else { return 0 };
        let past = |sequence: u32| (sequence.wrapping_sub(last) as i32) > 0;
        // What the server lacks and we sent: (last, our last]; whatever of it is not kept is lost.
        let wanted = if past(self.reliable_sequence) { self.reliable_sequence.wrapping_sub(last) } else { 0 };
        let mut offered = 0u64;
        for (_, message) in self.kept.iter().filter(|(sequence, _)| past(*sequence)) {
            offered += 1;
            self.resend.resent += 1;
            if !matches!(channel.write(message), Ok(true)) {
                self.counts[Kind::Reliable as usize].blocked += 1;
            }
        }
        self.resend.unavailable += u64::from(wanted).saturating_sub(offered);
        offered
    }

    fn keep(&mut self, sequence: u32, message: &[u8]) {
        self.kept.push_back((sequence, message.to_vec()));
        self.kept_bytes += message.len();
        while self.kept_bytes > RESEND_BUFFER_BYTES && self.kept.len() > 1 {
            let (_, old) = self.kept.pop_front().expect("len > 1");
            self.kept_bytes -= old.len();
        }
    }

    fn fields<'a>(&self, spec: &'a DataPublish, sequence: u32, nonce: &'a [u8; 16]) -> UserFields<'a> {
        UserFields {
            kind: spec.kind,
            identity: &spec.identity,
            topic: &spec.topic,
            destinations: &spec.destinations,
            sequence: if spec.kind == Kind::Reliable { sequence } else { 0 },
            nonce,
        }
    }

    pub fn stop(&mut self) {
        self.schedules = [None, None];
    }

    /// The channel of `kind` opened (again): its schedule, if any, starts at `now`.
    pub fn on_open(&mut self, kind: Kind, now: Instant) {
        if let Some(schedule) = &mut self.schedules[kind as usize] {
            schedule.start(now);
        }
    }

    /// The channel closed: nothing is due until it opens again.
    pub fn on_close(&mut self, kind: Kind) {
        if let Some(schedule) = &mut self.schedules[kind as usize] {
            schedule.next_due = None;
            schedule.next_burst = None;
        }
    }

    /// When a write is next wanted (a pending resend wants one from when it was asked for).
    pub fn next_due(&self) -> Option<Instant> {
        let scheduled = self.schedules.iter().flatten().filter_map(Schedule::next_wake).min();
        match (scheduled, self.pending_resend.map(|(_, at)| at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn is_due(&self, kind: Kind, now: Instant) -> bool {
        (kind == Kind::Reliable && self.pending_resend.is_some())
            || self.schedules[kind as usize].as_ref().and_then(Schedule::next_wake).is_some_and(|due| due <= now)
    }

    /// Writes every message of `kind` due by `now` to `channel`, and a due burst; returns how
    /// many it offered.
    pub fn write_due(&mut self, kind: Kind, now: Instant, channel: &mut dyn ChannelWriter) -> u64 {
        let slot = kind as usize;
        let mut offered = 0;
        loop {
            let Some(schedule) = &mut self.schedules[slot] else { return offered };
            let Some(due) = schedule.next_due.filter(|&due| due <= now) else { break };
            let mut next = due + schedule.interval;
            if now.saturating_duration_since(next) > MAX_LATE {
                let overdue = now.duration_since(next).as_nanos() / schedule.interval.as_nanos().max(1);
                self.counts[slot].skipped += u64::try_from(overdue).unwrap_or(u64::MAX);
                next = now + schedule.interval;
            }
            schedule.next_due = Some(next);
            offered += 1;
            self.write_one(kind, channel);
        }
        let Some(schedule) = &mut self.schedules[slot] else { return offered };
        let Some(due) = schedule.next_burst.filter(|&due| due <= now) else { return offered };
        let burst = schedule.spec.burst;
        let mut next = due + burst.every;
        if now.saturating_duration_since(due) > MAX_LATE {
            // Too late for this one: skip it (counted) rather than pile it onto the catch-up.
            self.counts[slot].skipped += u64::from(burst.count);
            next = now + burst.every;
            schedule.next_burst = Some(next);
            return offered;
        }
        schedule.next_burst = Some(next);
        for _ in 0..burst.count {
            offered += 1;
            if self.write_one(kind, channel) {
                self.counts[slot].burst += 1;
            }
        }
        offered
    }

    /// Encodes and writes the next message of `kind`; true if the channel took it.
    fn write_one(&mut self, kind: Kind, channel: &mut dyn ChannelWriter) -> bool {
        let slot = kind as usize;
        let Some(schedule) = &self.schedules[slot] else { return false };
        let (counter, sequence) = (self.counters[slot], self.reliable_sequence.wrapping_add(1));
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.nonce_salt.to_be_bytes());
        nonce[8..].copy_from_slice(&(counter | (slot as u64) << 63).to_be_bytes());
        let spec = &schedule.spec;
        let size = spec.size_bytes;
        let fields = UserFields {
            kind,
            identity: &spec.identity,
            topic: &spec.topic,
            destinations: &spec.destinations,
            sequence: if kind == Kind::Reliable { sequence } else { 0 },
            nonce: &nonce,
        };
        encode_user_packet(&mut self.buf, &fields, size, |p| fill_probe(p, unix_now_us(), counter));
        let accepted = matches!(channel.write(&self.buf), Ok(true));
        let counts = &mut self.counts[slot];
        if !accepted {
            counts.blocked += 1;
            return false;
        }
        counts.sent += 1;
        counts.payload_bytes += size as u64;
        self.counters[slot] += 1;
        if kind == Kind::Reliable {
            self.reliable_sequence = sequence;
            let message = std::mem::take(&mut self.buf);
            self.keep(sequence, &message);
            self.buf = message;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{parse_data_packet, read_probe};
    use super::*;

    #[derive(Default)]
    struct Sink {
        accept: bool,
        messages: Vec<Vec<u8>>,
    }

    impl ChannelWriter for Sink {
        fn write(&mut self, message: &[u8]) -> Result<bool, String> {
            if self.accept {
                self.messages.push(message.to_vec());
            }
            Ok(self.accept)
        }
    }

    fn spec(kind: Kind, rate_hz: f64) -> DataPublish {
        DataPublish {
            kind,
            rate_hz,
            size_bytes: 64,
            topic: "t".into(),
            destinations: vec![],
            identity: "me".into(),
            burst: Burst::default(),
        }
    }

    #[test]
    fn sends_on_schedule_from_open_with_sequences_and_counters() {
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        sender.publish(spec(Kind::Reliable, 100.0), None).unwrap();
        assert_eq!(sender.next_due(), None, "nothing before the channel opens");
        sender.on_open(Kind::Reliable, t0);
        let mut sink = Sink { accept: true, ..Sink::default() };
        assert_eq!(sender.write_due(Kind::Reliable, t0 + Duration::from_millis(45), &mut sink), 5);
        let views: Vec<_> = sink.messages.iter().map(|m| parse_data_packet(m).unwrap()).collect();
        assert_eq!(views.iter().map(|v| v.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let counters: Vec<_> = views.iter().map(|v| read_probe(v.user_payload.unwrap()).unwrap().1).collect();
        assert_eq!(counters, [0, 1, 2, 3, 4]);
        assert!(views.iter().all(|v| v.user_payload.unwrap().len() == 64 && v.identity == "me"));
        assert_eq!(sender.counts[0].sent, 5);
        assert_eq!(sender.counts[0].payload_bytes, 320);
    }

    #[test]
    fn a_replaced_schedule_keeps_its_clock_and_counters() {
        // `--data-to N` fills in destinations as the room fills: each replacement must not send early.
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        sender.publish(spec(Kind::Lossy, 100.0), Some(t0)).unwrap();
        let mut sink = Sink { accept: true, ..Sink::default() };
        assert_eq!(sender.write_due(Kind::Lossy, t0 + Duration::from_millis(45), &mut sink), 5);
        let more = DataPublish { destinations: vec!["a".into(), "b".into()], ..spec(Kind::Lossy, 100.0) };
        sender.publish(more, Some(t0 + Duration::from_millis(47))).unwrap();
        assert_eq!(sender.next_due(), Some(t0 + Duration::from_millis(50)), "not at the replacement");
        assert_eq!(sender.write_due(Kind::Lossy, t0 + Duration::from_millis(55), &mut sink), 1);
        let last = parse_data_packet(sink.messages.last().unwrap()).unwrap();
        assert_eq!(read_probe(last.user_payload.unwrap()).unwrap().1, 5, "the counter goes on");
        assert_eq!(sender.schedules[1].as_ref().unwrap().spec.destinations, ["a", "b"]);
    }

    #[test]
    fn blocked_writes_are_counted_not_sent_and_stalls_skip() {
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        sender.publish(spec(Kind::Lossy, 1000.0), Some(t0)).unwrap();
        let mut sink = Sink::default();
        assert_eq!(sender.write_due(Kind::Lossy, t0 + Duration::from_millis(1), &mut sink), 2);
        assert_eq!((sender.counts[1].sent, sender.counts[1].blocked), (0, 2));
        sink.accept = true;
        // A 1 s stall: about 100 ms worth is not caught up on.
        let written = sender.write_due(Kind::Lossy, t0 + Duration::from_secs(1), &mut sink);
        assert!(written < 5, "{written}");
        assert!(sender.counts[1].skipped > 800);
        let view = parse_data_packet(&sink.messages[0]).unwrap();
        assert_eq!((view.kind, view.sequence), (1, 0));
        assert_eq!(read_probe(view.user_payload.unwrap()).unwrap().1, 0, "blocked messages use no counter");
    }

    #[test]
    fn rejects_bad_specs() {
        let mut sender = DataSender::default();
        assert!(sender.publish(spec(Kind::Lossy, 0.0), None).is_err());
        assert!(sender.publish(DataPublish { size_bytes: 19, ..spec(Kind::Lossy, 1.0) }, None).is_err());
        assert!(sender.publish(DataPublish { size_bytes: 64_000, ..spec(Kind::Lossy, 1.0) }, None).is_err());
        // Refused before the encoding sizes a buffer to it (the allocation would abort the process).
        let huge = DataPublish { size_bytes: 1 << 45, ..spec(Kind::Lossy, 1.0) };
        assert!(sender.publish(huge, None).unwrap_err().contains("over the 64000 B message limit"));
        assert!(sender.publish(DataPublish { size_bytes: 63_900, ..spec(Kind::Lossy, 1.0) }, None).is_ok());
    }

    #[test]
    fn bursts_add_messages_back_to_back_and_late_ones_are_skipped() {
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        let burst = Burst { count: 10, every: Duration::from_secs(1) };
        sender.publish(DataPublish { burst, ..spec(Kind::Reliable, 1.0) }, Some(t0)).unwrap();
        let mut sink = Sink { accept: true, ..Sink::default() };
        assert_eq!(sender.write_due(Kind::Reliable, t0, &mut sink), 1, "the rate's first message; no burst yet");
        assert_eq!(sender.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(sender.write_due(Kind::Reliable, t0 + Duration::from_secs(1), &mut sink), 11);
        assert_eq!((sender.counts[0].sent, sender.counts[0].burst), (12, 10));
        let sequences: Vec<_> = sink.messages.iter().map(|m| parse_data_packet(m).unwrap().sequence).collect();
        assert_eq!(sequences, (1..=12).collect::<Vec<_>>());
        // The media thread wakes 3 s late: the rate's catch-up is bounded, the burst skipped.
        let offered = sender.write_due(Kind::Reliable, t0 + Duration::from_secs(5), &mut sink);
        assert!(offered <= 2, "{offered}");
        assert_eq!(sender.counts[0].burst, 10);
        assert!(sender.counts[0].skipped >= 10);
        assert!(sender
            .publish(DataPublish { burst: Burst { count: 1, every: Duration::ZERO }, ..spec(Kind::Lossy, 1.0) }, None)
            .is_err());
    }

    #[test]
    fn resend_after_a_resume_writes_what_the_server_lacks_once() {
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        sender.publish(spec(Kind::Reliable, 1000.0), Some(t0)).unwrap();
        let mut sink = Sink { accept: true, ..Sink::default() };
        sender.write_due(Kind::Reliable, t0 + Duration::from_millis(9), &mut sink); // sequences 1..=10
        assert_eq!(sink.messages.len(), 10);
        sender.resend_after(7, t0);
        assert!(sender.is_due(Kind::Reliable, t0) && sender.next_due() == Some(t0));
        let mut resink = Sink { accept: true, ..Sink::default() };
        assert_eq!(sender.write_resend(&mut resink), 3);
        assert_eq!(resink.messages, sink.messages[7..].to_vec(), "the same bytes, send time included");
        assert_eq!(sender.write_resend(&mut resink), 0, "once");
        assert_eq!((sender.resend.resumes, sender.resend.resent, sender.resend.unavailable), (1, 3, 0));
        // The server has everything: nothing to do.
        sender.resend_after(10, t0);
        assert_eq!(sender.write_resend(&mut resink), 0);
    }

    #[test]
    fn the_resend_buffer_is_bounded_and_what_fell_out_is_counted() {
        let t0 = Instant::now();
        let mut sender = DataSender::default();
        let big = DataPublish { size_bytes: 16_000, ..spec(Kind::Reliable, 1000.0) };
        sender.publish(big, Some(t0)).unwrap();
        let mut sink = Sink { accept: true, ..Sink::default() };
        sender.write_due(Kind::Reliable, t0 + Duration::from_millis(19), &mut sink); // 20 messages, 320 KB
        assert!(sender.kept_bytes <= RESEND_BUFFER_BYTES && !sender.kept.is_empty());
        let kept = sender.kept.len() as u64;
        sender.resend_after(0, t0);
        assert_eq!(sender.write_resend(&mut sink), kept);
        assert_eq!(sender.resend.unavailable, 20 - kept);
    }
}
