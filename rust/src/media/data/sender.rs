//! A peer's data-message schedule: probe messages at a fixed rate on `_reliable` and/or `_lossy`.
//!
//! Theory of operation
//! -------------------
//! Each channel has at most one `Schedule` (a new `data_publish` replaces it). It has no due time
//! until its channel is open; from then, one message is due every `interval`. `write_due` writes
//! every message due by `now`, and after a stall of more than `MAX_LATE` skips what is overdue
//! (counted in `skipped`) rather than bursting it, as the media publisher does (`publish`).
//!
//! A message the channel refuses (str0m's SCTP send budget is spent, or the write errors) is
//! counted `blocked` and dropped: it is neither sent nor retried, so a slow path shows as blocked
//! messages instead of a growing queue. The probe counter and the reliable `sequence` advance only
//! for sent messages, so receivers see no gap that the generator made; both survive a replaced
//! schedule, since the server drops reliable sequences at or below the last one it saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::packet::{encode_user_packet, fill_probe, Kind, UserFields, MAX_PACKET_BYTES, PROBE_HEADER_BYTES};

/// Catch-up limit after a stall, as for media (`publish::MAX_LATE`).
const MAX_LATE: Duration = Duration::from_millis(100);

/// What `data_publish` asks for.
#[derive(Debug, Clone)]
pub struct DataPublish {
    pub kind: Kind,
    pub rate_hz: f64,
    pub size_bytes: usize,
    pub topic: String,
    pub destinations: Vec<String>,
    pub identity: String,
}

#[derive(Debug)]
struct Schedule {
    spec: DataPublish,
    interval: Duration,
    /// None until the channel is open.
    next_due: Option<Instant>,
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
        let fields = self.fields(&spec, u32::MAX, &[0; 16]);
        encode_user_packet(&mut self.buf, &fields, spec.size_bytes, |_| {});
        if self.buf.len() > MAX_PACKET_BYTES {
            return Err(format!("a {} B message is over the {MAX_PACKET_BYTES} B limit", self.buf.len()));
        }
        let interval = Duration::from_secs_f64(1.0 / spec.rate_hz).max(Duration::from_micros(1));
        let slot = spec.kind as usize;
        self.schedules[slot] = Some(Schedule { spec, interval, next_due: open_now });
        Ok(())
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
            schedule.next_due.get_or_insert(now);
        }
    }

    /// The channel closed: nothing is due until it opens again.
    pub fn on_close(&mut self, kind: Kind) {
        if let Some(schedule) = &mut self.schedules[kind as usize] {
            schedule.next_due = None;
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.schedules.iter().flatten().filter_map(|s| s.next_due).min()
    }

    pub fn is_due(&self, kind: Kind, now: Instant) -> bool {
        self.schedules[kind as usize].as_ref().and_then(|s| s.next_due).is_some_and(|due| due <= now)
    }

    /// Writes every message of `kind` due by `now` to `channel`; returns how many it offered.
    pub fn write_due(&mut self, kind: Kind, now: Instant, channel: &mut dyn ChannelWriter) -> u64 {
        let slot = kind as usize;
        let mut offered = 0;
        loop {
            let Some(schedule) = &mut self.schedules[slot] else { return offered };
            let Some(due) = schedule.next_due.filter(|&due| due <= now) else { return offered };
            let mut next = due + schedule.interval;
            if now.saturating_duration_since(next) > MAX_LATE {
                let overdue = now.duration_since(next).as_nanos() / schedule.interval.as_nanos().max(1);
                self.counts[slot].skipped += u64::try_from(overdue).unwrap_or(u64::MAX);
                next = now + schedule.interval;
            }
            schedule.next_due = Some(next);
            offered += 1;
            let (counter, sequence) = (self.counters[slot], self.reliable_sequence.wrapping_add(1));
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&self.nonce_salt.to_be_bytes());
            nonce[8..].copy_from_slice(&(counter | (slot as u64) << 63).to_be_bytes());
            let spec = &self.schedules[slot].as_ref().expect("checked above").spec;
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
            let counts = &mut self.counts[slot];
            if let Ok(true) = channel.write(&self.buf) {
                counts.sent += 1;
                counts.payload_bytes += size as u64;
                self.counters[slot] += 1;
                if kind == Kind::Reliable {
                    self.reliable_sequence = sequence;
                }
            } else {
                counts.blocked += 1;
            }
        }
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
        DataPublish { kind, rate_hz, size_bytes: 64, topic: "t".into(), destinations: vec![], identity: "me".into() }
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
        assert!(sender.publish(DataPublish { size_bytes: 63_900, ..spec(Kind::Lossy, 1.0) }, None).is_ok());
    }
}
