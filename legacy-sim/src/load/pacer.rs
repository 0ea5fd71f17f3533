//! The `--rate` cap: writers report the events they wrote and sleep until the schedule of
//! `rate` events per second since the start has caught up with the total written so far.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Events per second; 0 means unlimited.
    rate: f64,
    written: AtomicU64,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Self {
            start: Instant::now(),
            rate,
            written: AtomicU64::new(0),
        }
    }

    /// Records `events` more written events and waits until they are within the cap.
    pub async fn pace(&self, events: u64) {
        let total = self.written.fetch_add(events, Ordering::Relaxed) + events;
        if let Some(offset) = due_after(total, self.rate) {
            tokio::time::sleep_until(self.start + offset).await;
        }
    }
}

/// When, after the start, the `total`-th event is due at `rate` events/s (`None`: no cap).
fn due_after(total: u64, rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(total as f64 / rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_never_waits() {
        assert_eq!(due_after(1_000_000, 0.0), None);
    }

    #[test]
    fn events_are_spread_evenly() {
        assert_eq!(due_after(50, 100.0), Some(Duration::from_millis(500)));
        assert_eq!(due_after(300, 100.0), Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn pace_sleeps_until_the_schedule_catches_up() {
        let pacer = Pacer::new(1_000.0);
        pacer.pace(50).await;
        assert!(pacer.start.elapsed() >= Duration::from_millis(50));
    }
}
