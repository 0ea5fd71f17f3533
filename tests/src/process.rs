//! The project's binaries as real child processes, with their output in a log file.
//!
//! A watcher task owns each child and publishes its exit, so a test can check a process
//! through a shared reference while it polls for a condition.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

pub struct Proc {
    pub name: String,
    pid: Option<u32>,
    exit: watch::Receiver<Option<ExitStatus>>,
    log: PathBuf,
    started_at: std::time::SystemTime,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `bin args…` with `env` added to this process's environment.
    pub fn spawn(bin: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("outbox-proc-").tempdir()?;
        let log = dir.path().join(format!("{bin}.log"));
        let out = std::fs::File::create(&log)?;
        let started_at = std::time::SystemTime::now();
        let mut child = tokio::process::Command::new(crate::binaries::path(bin)?)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let pid = child.id();
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(status.ok());
        });
        Ok(Self {
            name: bin.to_owned(),
            pid,
            exit,
            log,
            started_at,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// When the process was started (before its first instruction ran).
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        if let (Some(pid), None) = (self.pid, *self.exit.borrow()) {
            std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()?;
        }
        Ok(())
    }

    /// SIGKILL: no chance to flush or acknowledge anything.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal("-KILL")?;
        self.wait(Duration::from_secs(10)).await?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        self.signal("-TERM")?;
        self.wait(timeout).await
    }

    /// Waits for the process to exit on its own; returns the exit code.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let mut exit = self.exit.clone();
        let status = tokio::time::timeout(timeout, exit.wait_for(Option::is_some))
            .await
            .with_context(|| {
                format!(
                    "{} still running after {timeout:?}:\n{}",
                    self.name,
                    self.output()
                )
            })?
            .map_err(|_| anyhow::anyhow!("{}: lost track of the process", self.name))?;
        Ok(status.and_then(|s| s.code()))
    }

    /// Fails with the process's output if it has exited.
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        if let Some(status) = *self.exit.borrow() {
            anyhow::bail!("{} exited ({status}):\n{}", self.name, self.output());
        }
        Ok(())
    }

    /// Waits until the output holds every one of `needles` on one line, the process running
    /// meanwhile (its exit fails the wait with its output).
    pub async fn wait_output(&self, what: &str, needles: &[&str], timeout: Duration) -> anyhow::Result<()> {
        crate::wait::until(what, timeout, || async {
            self.ensure_running()?;
            let found = self
                .output()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)));
            Ok(found.then_some(()))
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.signal("-KILL");
    }
}

/// Runs a binary to completion and returns (exit code, stdout, stderr).
pub async fn run(
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::process::Command::new(crate::binaries::path(bin)?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {bin}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
