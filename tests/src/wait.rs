//! Waiting on a condition with a deadline, never a bare sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a read of the harness' own (the emulator's tables, the stream) again when it fails, up
/// to ten times two seconds apart: after a long run the emulator can answer one read with a
/// 500, and that must not end a run whose pipeline is fine.
pub async fn retrying<T, F, Fut>(what: &str, mut read: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < 10 => {
                eprintln!("{what} failed (attempt {attempt}), reading again: {err:#}");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(err) => return Err(err.context(format!("{what}, after {attempt} attempts"))),
        }
    }
}
