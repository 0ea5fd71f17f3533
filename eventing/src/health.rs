//! `/healthz`: 200 while the process makes progress, 503 with the reasons while it does not.
//!
//! A loop that must keep moving holds a [`Beacon`] and beats it whenever it makes progress (a
//! cheap atomic store, fit for a hot path); a beacon not beaten within its bound is a reason.
//! A condition the process can see directly (a relay owning no shard while shards are unleased)
//! is set as a [`Health::problem`]. An orchestrator (ECS, Kubernetes) restarts a process whose
//! health check keeps failing, which is what a stuck loop needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The stall bound when none is configured (`--stall-timeout-secs`).
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

pub struct Health {
    origin: Instant,
    /// How long a watched loop may go without progress, in ms (one bound for the process).
    stall_ms: AtomicU64,
    beacons: Mutex<Vec<Weak<Beacon>>>,
    problems: Mutex<BTreeMap<String, String>>,
    /// Beaten by the server's pulse task (see `server`): the runtime still runs tasks.
    pulse: Arc<Beacon>,
}

/// One loop's sign of life. Dropping it stops the watch (a worker that ended is not stuck).
pub struct Beacon {
    what: String,
    /// Milliseconds since the process's health clock started, at the last beat.
    last_ms: AtomicU64,
    origin: Instant,
}

impl Beacon {
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Health {
    pub fn new() -> Arc<Self> {
        let origin = Instant::now();
        let pulse = Arc::new(Beacon {
            what: "pulse".into(),
            last_ms: AtomicU64::new(0),
            origin,
        });
        let health = Self {
            origin,
            stall_ms: AtomicU64::new(0),
            beacons: Mutex::default(),
            problems: Mutex::default(),
            pulse,
        };
        health.set_stall_bound(DEFAULT_STALL);
        Arc::new(health)
    }

    /// How long a watched loop may go without progress before the process is unhealthy.
    pub fn set_stall_bound(&self, bound: Duration) {
        let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        self.stall_ms.store(ms, Ordering::Relaxed);
    }

    /// Watches a loop: unless it beats at least every stall bound, the process is unhealthy
    /// with the reason "`what` for N s". The beacon starts as beaten now.
    pub fn beacon(&self, what: impl Into<String>) -> Arc<Beacon> {
        let beacon = Arc::new(Beacon {
            what: what.into(),
            last_ms: AtomicU64::new(0),
            origin: self.origin,
        });
        beacon.beat();
        if let Ok(mut beacons) = self.beacons.lock() {
            beacons.retain(|b| b.strong_count() > 0);
            beacons.push(Arc::downgrade(&beacon));
        }
        beacon
    }

    /// The liveness pulse, for the one task that beats it.
    pub fn pulse(&self) -> Arc<Beacon> {
        self.pulse.clone()
    }

    /// Liveness: `Ok` while the pulse beat within `bound` (the runtime runs tasks). Stalled
    /// loops and dependency problems are readiness ([`Health::check`]), not liveness.
    pub fn alive(&self, bound: Duration) -> Result<(), String> {
        let silent = self.pulse.silent_for();
        if silent > bound {
            return Err(format!("the runtime ran no task for {} s", silent.as_secs()));
        }
        Ok(())
    }

    /// Sets (`Some`) or clears (`None`) a named condition that makes the process unhealthy.
    pub fn problem(&self, name: &str, reason: Option<String>) {
        if let Ok(mut problems) = self.problems.lock() {
            match reason {
                Some(reason) => problems.insert(name.to_owned(), reason),
                None => problems.remove(name),
            };
        }
    }

    /// `Ok` while every watched loop moves and no condition is set; otherwise every reason.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = self
            .problems
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        let bound = Duration::from_millis(self.stall_ms.load(Ordering::Relaxed));
        if let Ok(beacons) = self.beacons.lock() {
            for beacon in beacons.iter().filter_map(Weak::upgrade) {
                let silent = beacon.silent_for();
                if silent > bound {
                    reasons.push(format!("{} for {} s", beacon.what, silent.as_secs()));
                }
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_beacon_and_a_problem_are_reasons_until_they_clear() {
        let health = Health::new();
        health.set_stall_bound(Duration::from_millis(50));
        let moving = health.beacon("no progress");
        let stuck = health.beacon("no message from postgres");
        assert_eq!(health.check(), Ok(()), "fresh beacons count as beaten");
        std::thread::sleep(Duration::from_millis(80));
        moving.beat();
        let reasons = health.check().unwrap_err();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with("no message from postgres for"),
            "{reasons:?}"
        );
        drop(stuck);
        assert_eq!(health.check(), Ok(()), "a dropped beacon is no longer watched");
        health.problem(
            "shards",
            Some("owns no shard while 2 shard(s) are unleased".into()),
        );
        assert_eq!(
            health.check(),
            Err(vec!["owns no shard while 2 shard(s) are unleased".to_owned()])
        );
        health.problem("shards", None);
        assert_eq!(health.check(), Ok(()));
    }
}
