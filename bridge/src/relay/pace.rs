//! When a shard worker may call GetRecords next.
//!
//! Kinesis allows 5 GetRecords calls and 2 MB per second per shard, shared by every consumer of
//! the stream that polls; a call over either limit is refused (`ProvisionedThroughputExceeded`)
//! and costs a backoff. So reads are spaced by `1 / --max-reads-per-second`, counted from one
//! call's start to the next (a slow call does not earn a quicker next one), and by the time the
//! last page's bytes take at this relay's share of the 2 MB/s (`--max-reads-per-second` / 5 of
//! it: the same share as of the calls). Behind the tip (a full page,
//! or Kinesis says more is there) the next read goes out as soon as that spacing allows; at the
//! tip the worker waits `--poll-interval-ms` from the last read's start, so a quiet shard costs
//! few calls while an event written meanwhile waits at most that long.

use std::time::{Duration, Instant};

/// Kinesis' per-shard read limits.
const SHARD_READS_PER_SECOND: f64 = 5.0;
const SHARD_READ_BYTES_PER_SECOND: f64 = 2.0 * 1024.0 * 1024.0;
/// How much later than its start a call may reach Kinesis, relative to the call `rate` after it,
/// without the two landing in one metered second.
const JITTER_ALLOWANCE: Duration = Duration::from_millis(100);

/// One shard's read schedule.
#[derive(Debug)]
pub struct ReadPace {
    /// The least time from one read's start to the next one's.
    spacing: Duration,
    /// From a read that found the tip to the next one.
    tip_pause: Duration,
    /// This relay's share of the shard's 2 MB/s.
    bytes_per_second: f64,
    last: Option<Instant>,
    last_bytes: usize,
}

impl ReadPace {
    pub fn new(max_reads_per_second: f64, poll_interval: Duration) -> Self {
        let spacing = if max_reads_per_second.is_finite() && max_reads_per_second > 0.0 {
            // Kinesis counts whole calls in any second: 2.5 a second, evenly spaced, is three
            // calls in some seconds, and two relays at 2.5 would make six. Above one call a
            // second, the fraction counts down.
            let calls = if max_reads_per_second >= 1.0 {
                max_reads_per_second.floor()
            } else {
                max_reads_per_second
            };
            (Duration::from_secs(1) + JITTER_ALLOWANCE).div_f64(calls)
        } else {
            Duration::ZERO
        };
        let share = (max_reads_per_second / SHARD_READS_PER_SECOND).max(0.0);
        // The bytes too: a second's worth spread over a second plus the allowance.
        let stretch = 1.0 + JITTER_ALLOWANCE.as_secs_f64();
        Self {
            spacing,
            tip_pause: poll_interval.max(spacing),
            bytes_per_second: SHARD_READ_BYTES_PER_SECOND * share / stretch,
            last: None,
            last_bytes: 0,
        }
    }

    /// Records that a read goes out at `at`.
    pub fn started(&mut self, at: Instant) {
        self.last = Some(at);
        self.last_bytes = 0;
    }

    /// Records the data bytes the read returned.
    pub fn returned(&mut self, bytes: usize) {
        self.last_bytes = bytes;
    }

    /// The earliest the next read may start, given whether the last page reached the tip.
    pub fn next_read(&self, at_tip: bool) -> Option<Instant> {
        let gap = if at_tip { self.tip_pause } else { self.spacing };
        let drain = if self.bytes_per_second > 0.0 && self.last_bytes > 0 {
            Duration::from_secs_f64(self.last_bytes as f64 / self.bytes_per_second)
        } else {
            Duration::ZERO
        };
        self.last.map(|last| last + gap.max(drain))
    }
}

/// Whether a page left the reader at the shard's tip: it was not full, and Kinesis did not say
/// records are waiting (`MillisBehindLatest` above 0; without the figure, an empty page is the tip).
pub fn at_tip(records: usize, limit: usize, millis_behind_latest: Option<i64>) -> bool {
    if records >= limit {
        return false;
    }
    match millis_behind_latest {
        Some(behind) => behind <= 0,
        None => records == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The most calls that arrive within one rolling second, as Kinesis counts them.
    fn most_in_one_second(mut arrivals: Vec<Instant>) -> usize {
        arrivals.sort();
        (0..arrivals.len())
            .map(|i| {
                arrivals[i..]
                    .iter()
                    .take_while(|a| a.duration_since(arrivals[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_backlog_is_read_at_the_allowed_rate_and_no_faster() {
        let mut pace = ReadPace::new(5.0, ms(200));
        let t0 = Instant::now();
        assert_eq!(pace.next_read(false), None, "the first read goes out at once");
        pace.started(t0);
        // Five calls span a second and the allowance for their trip to Kinesis.
        assert_eq!(pace.next_read(false), Some(t0 + ms(220)));
        // Spacing counts from the start of a read, however long it took.
        pace.started(t0 + ms(220));
        assert_eq!(pace.next_read(false), Some(t0 + ms(440)));
    }

    #[test]
    fn calls_that_reach_kinesis_late_or_early_never_put_six_in_one_metered_second() {
        // A backlog read as fast as the pace allows; each call reaches Kinesis up to 90 ms after
        // its start, unevenly (a loaded host). Kinesis counts arrivals in any rolling second.
        let mut pace = ReadPace::new(5.0, ms(200));
        let t0 = Instant::now();
        let mut arrivals = Vec::new();
        for i in 0..40u64 {
            let start = pace.next_read(false).unwrap_or(t0);
            pace.started(start);
            arrivals.push(start + ms([90, 0, 45, 0, 10, 70][(i % 6) as usize]));
        }
        let most = most_in_one_second(arrivals);
        assert!(most <= 5, "{most} calls arrived within one second");
    }

    #[test]
    fn a_shard_shared_with_another_consumer_is_read_at_its_share() {
        let mut pace = ReadPace::new(2.5, ms(100));
        let t0 = Instant::now();
        pace.started(t0);
        // Two whole calls in a second plus the allowance: the half call counts down.
        assert_eq!(pace.next_read(false), Some(t0 + ms(550)));
        // The poll interval never makes the reads faster than the share allows.
        assert_eq!(pace.next_read(true), Some(t0 + ms(550)));
        // Below one call a second, the rate as it is.
        let mut slow = ReadPace::new(0.5, ms(100));
        slow.started(t0);
        assert_eq!(slow.next_read(false), Some(t0 + ms(2200)));
    }

    #[test]
    fn two_relays_at_half_the_rate_never_make_six_calls_in_one_second() {
        // Two relays reading one shard at `--max-reads-per-second 2.5` each, out of step by any
        // amount, as fast as their pace allows.
        for offset in (0..550).step_by(25) {
            let t0 = Instant::now();
            let mut arrivals = Vec::new();
            for start in [t0, t0 + ms(offset)] {
                let mut pace = ReadPace::new(2.5, ms(100));
                let mut at = start;
                for _ in 0..20 {
                    pace.started(at);
                    arrivals.push(at);
                    at = pace.next_read(false).unwrap_or(at);
                }
            }
            let most = most_in_one_second(arrivals);
            assert!(most <= 5, "offset {offset} ms: {most} calls within one second");
        }
    }

    #[test]
    fn at_the_tip_the_worker_waits_the_poll_interval() {
        let mut pace = ReadPace::new(5.0, ms(500));
        let t0 = Instant::now();
        pace.started(t0);
        assert_eq!(pace.next_read(true), Some(t0 + ms(500)));
        assert_eq!(pace.next_read(false), Some(t0 + ms(220)));
    }

    #[test]
    fn a_large_page_waits_for_its_bytes_at_the_relays_share_of_2_mb_per_second() {
        let mut pace = ReadPace::new(5.0, ms(200));
        let t0 = Instant::now();
        pace.started(t0);
        pace.returned(1024 * 1024);
        // Half of 2 MB/s, spread as the calls are: 0.5 s and the allowance's share of it.
        assert_eq!(pace.next_read(false), Some(t0 + ms(550)));
        // Half the calls, half the bytes: the same page takes twice as long.
        let mut shared = ReadPace::new(2.5, ms(200));
        shared.started(t0);
        shared.returned(1024 * 1024);
        assert_eq!(shared.next_read(false), Some(t0 + ms(1100)));
        // A small page: the call spacing binds.
        pace.started(t0);
        pace.returned(10_000);
        assert_eq!(pace.next_read(false), Some(t0 + ms(220)));
    }

    #[test]
    fn full_or_behind_pages_are_not_the_tip() {
        assert!(!at_tip(1000, 1000, Some(0)), "a full page: more may be there");
        assert!(!at_tip(3, 1000, Some(1500)), "Kinesis says records wait");
        assert!(!at_tip(0, 1000, Some(20)), "an empty page behind the tip");
        assert!(at_tip(3, 1000, Some(0)));
        assert!(at_tip(0, 1000, None));
        assert!(
            !at_tip(3, 1000, None),
            "without the figure, only an empty page is the tip"
        );
    }
}
