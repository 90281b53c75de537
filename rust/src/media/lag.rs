//! How late the media thread serves the deadlines its peers asked for.
//!
//! Every media deadline (a publisher's next frame, str0m's retransmission, RTCP and
//! ICE timers) is served by one thread. When that thread falls behind, frames leave
//! late, receivers stamp arrivals late, and the jitter a subscriber reports is the
//! generator's, not the server's. The Python event loop has its own lag monitor; this
//! is the media thread's, so a report can say which of the two was saturated.
//!
//! The histogram is log-linear, like HdrHistogram at two significant digits: exact
//! below `SUB_BUCKETS` µs, then `SUB_BUCKETS` buckets per power of two, so a value is
//! off by less than 1/`SUB_BUCKETS` (about 3 %). Fixed memory, O(1) record, no
//! allocation on the hot path.

use std::time::Duration;

/// Buckets per power of two above the exact range (and the size of the exact range, in µs).
const SUB_BUCKETS: u64 = 32;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Octaves above the exact range: enough for 2^40 µs (12 days), more than any run.
const OCTAVES: usize = 40 - SUB_BITS as usize;
const BUCKETS: usize = SUB_BUCKETS as usize * (OCTAVES + 1);

/// Lateness in microseconds, bucketed; see the module doc.
#[derive(Clone)]
pub struct LagHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_us: u64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram { counts: Box::new([0; BUCKETS]), total: 0, max_us: 0 }
    }
}

impl std::fmt::Debug for LagHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagHistogram").field("total", &self.total).field("max_us", &self.max_us).finish()
    }
}

fn bucket_of(value_us: u64) -> usize {
    if value_us < SUB_BUCKETS {
        return value_us as usize;
    }
    let msb = 63 - value_us.leading_zeros(); // >= SUB_BITS
    let octave = (msb - SUB_BITS + 1) as usize;
    let sub = (value_us >> (msb - SUB_BITS)) - SUB_BUCKETS; // 0..SUB_BUCKETS
    (octave * SUB_BUCKETS as usize + sub as usize).min(BUCKETS - 1)
}

/// The largest value that lands in `bucket`: what a percentile reports, so it never flatters.
fn highest_in(bucket: usize) -> u64 {
    let (octave, sub) = (bucket as u64 / SUB_BUCKETS, bucket as u64 % SUB_BUCKETS);
    if octave == 0 {
        return sub;
    }
    let shift = octave - 1;
    ((SUB_BUCKETS + sub + 1) << shift) - 1
}

impl LagHistogram {
    pub fn record(&mut self, lag: Duration) {
        let value_us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(value_us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(value_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds every value of `other` (histograms of several peers into one hub-wide view).
    pub fn merge(&mut self, other: &LagHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// What `bucket` stands for: its highest value, never above the exact maximum; the last
    /// bucket also holds everything beyond the range, so it stands for the maximum itself.
    fn reported(&self, bucket: usize) -> u64 {
        if bucket == BUCKETS - 1 {
            self.max_us
        } else {
            highest_in(bucket).min(self.max_us)
        }
    }

    /// (value in µs, count) of every non-empty bucket, ascending; the value is the bucket's
    /// highest (capped at the exact maximum), for replaying into an HdrHistogram.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(bucket, &n)| (self.reported(bucket), n)).collect()
    }

    /// How many values lie in buckets reported above `limit_us`: the quantile `q` exceeds the limit
    /// exactly when this is more than `(1 - q)` of `count()`, so a caller can watch a p99 in O(buckets).
    pub fn count_above_us(&self, limit_us: u64) -> u64 {
        self.counts.iter().enumerate().filter(|&(bucket, _)| self.reported(bucket) > limit_us).map(|(_, &n)| n).sum()
    }

    /// The value at quantile `q` (0..=1) in µs, as the bucket's highest value; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return self.reported(bucket);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_the_sub_bucket_count_and_within_three_percent_above() {
        for value in 0..SUB_BUCKETS {
            assert_eq!(highest_in(bucket_of(value)), value);
        }
        for value in [32, 33, 63, 64, 65, 100, 1_000, 19_999, 20_000, 1_234_567, 86_400_000_000] {
            let bucket = bucket_of(value);
            let high = highest_in(bucket);
            assert!(high >= value, "{value} -> bucket {bucket} tops at {high}");
            assert!((high - value) as f64 <= value as f64 / SUB_BUCKETS as f64, "{value} vs {high}");
            assert!(bucket == 0 || highest_in(bucket - 1) < value, "{value} belongs to an earlier bucket");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_ascending() {
        for bucket in 1..BUCKETS - 1 {
            assert_eq!(highest_in(bucket - 1) + 1, {
                // the lowest value of `bucket`
                let mut low = highest_in(bucket);
                while low > 0 && bucket_of(low - 1) == bucket {
                    low -= 1;
                }
                low
            });
            if bucket > 200 {
                break; // the pattern repeats per octave; the first few prove it
            }
        }
    }

    #[test]
    fn quantiles_count_and_max_follow_the_recorded_values() {
        let mut lag = LagHistogram::default();
        assert_eq!((lag.count(), lag.quantile_us(0.99), lag.buckets().len()), (0, 0, 0));
        for _ in 0..98 {
            lag.record(Duration::from_micros(500));
        }
        lag.record(Duration::from_millis(30));
        lag.record(Duration::from_millis(45));
        assert_eq!(lag.count(), 100);
        assert_eq!(lag.max_us(), 45_000);
        let p50 = lag.quantile_us(0.5);
        assert!((500..=516).contains(&p50), "p50 {p50}");
        let p99 = lag.quantile_us(0.99);
        assert!((30_000..=30_720).contains(&p99), "p99 {p99}");
        assert_eq!(lag.quantile_us(1.0), 45_000, "the top is the exact maximum");
        assert_eq!(lag.count_above_us(20_000), 2);
        assert_eq!(lag.count_above_us(p99), 1, "consistent with the quantiles: p99 is not above itself");
        assert_eq!(lag.count_above_us(0), 100);
        let buckets = lag.buckets();
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 100);
        assert_eq!(buckets.last(), Some(&(45_000, 1)));
    }

    #[test]
    fn absurd_values_land_in_the_last_bucket_without_overflow() {
        let mut lag = LagHistogram::default();
        lag.record(Duration::from_secs(u64::MAX / 2));
        assert_eq!(lag.count(), 1);
        assert_eq!(lag.quantile_us(0.5), lag.max_us());
    }
}
