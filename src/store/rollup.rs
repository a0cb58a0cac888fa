//! Usage rollups: the dashboard's totals, kept per minute, per hour and per hour and key
//! as usage records are written, so reading a month of them never scans the usage table.
//! What is counted, and how a batch of records is grouped before it is added to the
//! stored rows, is decided here once for every store backend.

use std::collections::BTreeMap;

use serde::Serialize;

use super::UsageRecord;

/// Upper bounds (inclusive, in ms) of a latency histogram's buckets, log-spaced 1-2-5 from
/// a cached answer's millisecond to a long generation's five minutes; the last bucket
/// (`BUCKETS - 1`) takes everything longer. They are part of the stored schema (one column
/// per bucket): changing them needs a migration that moves the counts.
pub const BOUNDS_MS: [u64; 17] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 120_000, 300_000,
];

/// Buckets per histogram: one per bound, and one above the last.
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// Durations counted in fixed buckets: histograms of any rows add up bucket by bucket,
/// so a window's quantiles come from summed rows, never from the records themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    pub counts: [u64; BUCKETS],
}

impl Histogram {
    /// Counts one duration of `ms`.
    pub fn record(&mut self, ms: u64) {
        self.counts[bucket(ms)] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The duration (ms) below which a share `q` (0 to 1) of the counted ones fall,
    /// interpolated linearly inside its bucket (exact when durations spread evenly
    /// there). In the last, unbounded bucket it is that bucket's lower bound: "at
    /// least". None when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the wanted duration, 1-based: q = 0 is the first, 1 the last (less
        // a hair, so 0.9 of 1000 is the 900th despite binary fractions).
        let rank = ((q.clamp(0.0, 1.0) * total as f64 - 1e-9).ceil() as u64).clamp(1, total);
        let mut below = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            if count == 0 || below + count < rank {
                below += count;
                continue;
            }
            let lower = if i == 0 { 0 } else { BOUNDS_MS[i - 1] };
            let Some(&upper) = BOUNDS_MS.get(i) else {
                return Some(lower);
            };
            let share = (rank - below) as f64 / count as f64;
            return Some(lower + ((upper - lower) as f64 * share).round() as u64);
        }
        None
    }
}

/// The bucket a duration of `ms` falls in.
fn bucket(ms: u64) -> usize {
    BOUNDS_MS.partition_point(|&bound| bound < ms)
}

/// The stored columns of the latency histogram (`l0`, `l1`, ...), then of the time to
/// first token (`t0`, ...), in bucket order: the only place their names are made.
pub fn histogram_columns() -> impl Iterator<Item = String> {
    ["l", "t"]
        .into_iter()
        .flat_map(|prefix| (0..BUCKETS).map(move |i| format!("{prefix}{i}")))
}

/// The counters of a rollup row besides its histograms, in stored column order.
pub const COUNTERS: [&str; 5] = ["requests", "errors", "prompt_tokens", "completion_tokens", "cache_hits"];

/// One step of a dashboard series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsagePoint {
    pub at_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_hits: u64,
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    pub ttft: Histogram,
}

impl UsagePoint {
    /// Counts one request. Tokens of an answer from the cache are left out, as in
    /// `daily_usage`: the sums say what upstreams did.
    pub fn add(&mut self, record: &UsageRecord) {
        self.requests += 1;
        self.errors += u64::from(record.status >= 400);
        self.cache_hits += u64::from(record.cache_hit);
        if !record.cache_hit {
            self.prompt_tokens += record.prompt_tokens;
            self.completion_tokens += record.completion_tokens;
        }
        self.latency.record(record.latency_ms);
        if let Some(ttft) = record.ttft_ms {
            self.ttft.record(ttft);
        }
    }

    /// Adds `other`'s counts to these (steps folded into a longer one, a window's totals).
    pub fn merge(&mut self, other: &UsagePoint) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cache_hits += other.cache_hits;
        self.latency.merge(&other.latency);
        self.ttft.merge(&other.ttft);
    }

    /// The counters then both histograms, in the order of `COUNTERS` and
    /// `histogram_columns`, as a database takes them (saturated to its signed integers).
    pub fn values(&self) -> impl Iterator<Item = i64> + '_ {
        [
            self.requests,
            self.errors,
            self.prompt_tokens,
            self.completion_tokens,
            self.cache_hits,
        ]
        .into_iter()
        .chain(self.latency.counts)
        .chain(self.ttft.counts)
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The point at `at_ms` with `values` in the order `values()` gives them.
    pub fn from_values(at_ms: i64, values: &[i64]) -> Self {
        let n = |i: usize| values.get(i).map_or(0, |&v| v.max(0) as u64);
        let histogram = |from: usize| Histogram {
            counts: std::array::from_fn(|i| n(from + i)),
        };
        Self {
            at_ms,
            requests: n(0),
            errors: n(1),
            prompt_tokens: n(2),
            completion_tokens: n(3),
            cache_hits: n(4),
            latency: histogram(COUNTERS.len()),
            ttft: histogram(COUNTERS.len() + BUCKETS),
        }
    }
}

/// The width of a series' steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    Hour,
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Per-minute rows are kept this long (for the short windows); the others for good.
pub const MINUTES_KEPT_MS: i64 = 48 * HOUR_MS;

/// The start of the step of `width_ms` that `at_ms` falls in (UTC, from the epoch).
pub fn floor(at_ms: i64, width_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(width_ms)
}

impl Step {
    pub fn ms(self) -> i64 {
        match self {
            Step::Minute => MINUTE_MS,
            Step::Hour => HOUR_MS,
        }
    }

    /// The start of the step `at_ms` falls in.
    pub fn floor(self, at_ms: i64) -> i64 {
        floor(at_ms, self.ms())
    }
}

/// What a "top" list ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Token,
    Model,
    Channel,
}

/// One entry of a "top" list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTop {
    /// The token's prefix (or "" without a token), the model, or the channel ("" for none).
    pub key: String,
    /// With `Dimension::Token`: the token's digest (to name it), else None.
    #[serde(skip)]
    pub token_digest: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The key of a per-key row for "top" lists (an hour's or a day's). Absent values are ""
/// rather than NULL, so they compare equal in the row's primary key (NULLs never do).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub at_ms: i64,
    pub token_digest: String,
    pub token_prefix: String,
    pub model: String,
    pub channel: String,
    pub frontend: String,
}

/// A batch of records grouped by rollup row, so a write adds to each stored row once.
#[derive(Debug, Default)]
pub struct Rollups {
    pub minutes: BTreeMap<i64, UsagePoint>,
    pub hours: BTreeMap<i64, UsagePoint>,
    pub hours_by_key: foldhash::HashMap<Key, UsagePoint>,
    /// The same per day: a month's "top" list sums 30 of these per key rather than 720
    /// hours (only the hours of a window's first, partial day come from `hours_by_key`).
    pub days_by_key: foldhash::HashMap<Key, UsagePoint>,
    /// The latest request per token digest.
    pub last_used: foldhash::HashMap<String, i64>,
}

impl Rollups {
    /// Counts `record`; into the per-minute totals only when it is not older than
    /// `minutes_from_ms` (those rows are pruned anyway).
    pub fn add(&mut self, record: &UsageRecord, minutes_from_ms: i64) {
        let empty = |at_ms: i64| {
            move || UsagePoint {
                at_ms,
                ..Default::default()
            }
        };
        if record.at_ms >= minutes_from_ms {
            let minute = floor(record.at_ms, MINUTE_MS);
            self.minutes.entry(minute).or_insert_with(empty(minute)).add(record);
        }
        let hour = floor(record.at_ms, HOUR_MS);
        self.hours.entry(hour).or_insert_with(empty(hour)).add(record);
        let key = Key {
            at_ms: hour,
            token_digest: record.token_digest.clone().unwrap_or_default(),
            token_prefix: record.token_prefix.clone().unwrap_or_default(),
            model: record.model.clone(),
            channel: record.channel.clone().unwrap_or_default(),
            frontend: record.frontend.to_owned(),
        };
        let day = floor(record.at_ms, DAY_MS);
        let day_key = Key {
            at_ms: day,
            ..key.clone()
        };
        self.hours_by_key.entry(key).or_insert_with(empty(hour)).add(record);
        self.days_by_key.entry(day_key).or_insert_with(empty(day)).add(record);
        if let Some(digest) = &record.token_digest {
            let last = self.last_used.entry(digest.clone()).or_insert(record.at_ms);
            *last = (*last).max(record.at_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise_and_buckets_take_their_upper_bound() {
        assert!(BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(300_000), BUCKETS - 2);
        assert_eq!(bucket(300_001), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(histogram_columns().count(), 2 * BUCKETS);
    }

    #[test]
    fn quantiles_of_evenly_spread_durations_are_exact() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for ms in 1..=1000 {
            histogram.record(ms);
        }
        assert_eq!(histogram.total(), 1000);
        assert_eq!(histogram.quantile(0.5), Some(500));
        assert_eq!(histogram.quantile(0.9), Some(900));
        assert_eq!(histogram.quantile(0.99), Some(990));
        assert_eq!(histogram.quantile(1.0), Some(1000));
        assert_eq!(histogram.quantile(0.0), Some(1), "the first");
        assert_eq!(histogram.quantile(7.0), Some(1000), "clamped");
    }

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let mut fast = Histogram::default();
        for _ in 0..90 {
            fast.record(40);
        }
        let mut slow = Histogram::default();
        for _ in 0..10 {
            slow.record(4_000);
        }
        fast.merge(&slow);
        assert_eq!(fast.total(), 100);
        // 90 of 100 in (20, 50]: the median is their 50th, interpolated: 20 + 30 × 50/90.
        assert_eq!(fast.quantile(0.5), Some(37));
        assert_eq!(fast.quantile(0.9), Some(50));
        // The slowest 10 in (2000, 5000].
        assert_eq!(fast.quantile(0.95), Some(2_000 + 3_000 / 2));
        assert_eq!(fast.quantile(1.0), Some(5_000));

        let mut endless = Histogram::default();
        endless.record(1_000_000);
        assert_eq!(endless.quantile(0.5), Some(300_000), "at least the last bound");
    }

    #[test]
    fn a_point_reads_back_from_its_values() {
        let mut point = UsagePoint {
            at_ms: 60_000,
            ..Default::default()
        };
        for (status, cache_hit, ttft) in [(200, false, Some(30)), (502, false, None), (200, true, Some(1))] {
            point.add(&UsageRecord {
                status,
                cache_hit,
                ttft_ms: ttft,
                latency_ms: 120,
                prompt_tokens: 10,
                completion_tokens: 5,
                ..Default::default()
            });
        }
        assert_eq!(
            (
                point.requests,
                point.errors,
                point.cache_hits,
                point.prompt_tokens,
                point.completion_tokens
            ),
            (3, 1, 1, 20, 10)
        );
        assert_eq!((point.latency.total(), point.ttft.total()), (3, 2));
        let values: Vec<i64> = point.values().collect();
        assert_eq!(values.len(), COUNTERS.len() + 2 * BUCKETS);
        assert_eq!(UsagePoint::from_values(60_000, &values), point);
    }

    #[test]
    fn steps_floor_to_their_start() {
        assert_eq!(Step::Hour.floor(HOUR_MS * 5 + 1234), HOUR_MS * 5);
        assert_eq!(Step::Minute.floor(MINUTE_MS * 7 + 59_999), MINUTE_MS * 7);
        assert_eq!(Step::Minute.floor(-1), -MINUTE_MS);
    }
}
