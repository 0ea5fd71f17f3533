//! CPU time and peak memory of a process, sampled from /proc while it runs (the last sample
//! before it exits is what is reported: at most one interval of CPU time is missed).

use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// Linux's USER_HZ: /proc reports CPU time in these ticks on every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn read(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Usage {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        peak_rss_bytes: hwm_kib * 1024,
    })
}

/// Samples `pid` every 50 ms until it disappears or the sampler is dropped.
pub struct Sampler {
    latest: watch::Receiver<Usage>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Self {
        let (tx, latest) = watch::channel(Usage::default());
        let task = tokio::spawn(async move {
            while let Some(u) = read(pid) {
                let _ = tx.send(u);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { latest, task }
    }

    /// The last sample taken.
    pub fn usage(&self) -> Usage {
        *self.latest.borrow()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
