//! The pipeline's processes and the monolith's database (primary, standby, proxies).

use harness::postgres::{StopMode, TestPostgres};
use harness::process::Proc;
use harness::proxy::Proxy;
use harness::stack::Stack;

/// The pipeline's long-running processes, restartable.
pub(crate) struct Pipeline {
    pub(crate) env: Vec<(String, String)>,
    /// Capture's, whose DATABASE_URL goes through the Postgres proxy.
    pub(crate) capture_env: Vec<(String, String)>,
    pub(crate) capture: Proc,
    pub(crate) relay: Proc,
    pub(crate) shipping: Proc,
}

impl Pipeline {
    pub(crate) fn spawn_capture(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn(
            "bridge",
            &[
                "capture",
                "--metrics-listen",
                "127.0.0.1:0",
                "--replication-timeout-secs",
                "5",
            ],
            env,
        )
    }
    pub(crate) fn spawn_relay(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn("bridge", &["relay", "--metrics-listen", "127.0.0.1:0"], env)
    }
    pub(crate) fn spawn_shipping(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn(
            "shipping",
            &[
                "run",
                "--wait-seconds",
                "2",
                "--retry-delay",
                "1",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            env,
        )
    }

    pub(crate) fn ensure_running(&self) -> anyhow::Result<()> {
        self.capture.ensure_running()?;
        self.relay.ensure_running()?;
        self.shipping.ensure_running()
    }
}

/// The streaming standby's `application_name`, the same for each one the run clones.
pub(crate) const STANDBY: &str = "chaos_standby";

/// The monolith's database besides its primary (`stack.pg`): a streaming standby a failover
/// promotes, and the proxies the processes reach the primary through.
pub(crate) struct Database {
    /// `None` only between a failover and the new standby's start.
    pub(crate) standby: Option<TestPostgres>,
    /// Capture's path; a silent partition cuts this one alone.
    pub(crate) capture_path: Proxy,
    /// Everyone else's: the load, and the relay and shipping should they ever need it.
    pub(crate) shared_path: Proxy,
}

impl Database {
    /// Clones the primary into a standby and puts the proxies in front of the primary.
    pub(crate) async fn start(stack: &Stack) -> anyhow::Result<Self> {
        let primary = format!("127.0.0.1:{}", stack.pg.port);
        Ok(Self {
            standby: Some(stack.pg.start_standby(STANDBY).await?),
            capture_path: Proxy::start(&primary).await?,
            shared_path: Proxy::start(&primary).await?,
        })
    }

    /// The superuser's URL through `proxy`.
    pub(crate) fn url_via(stack: &Stack, proxy: &Proxy) -> String {
        stack.pg.url().replace(
            &format!("127.0.0.1:{}", stack.pg.port),
            proxy.endpoint.trim_start_matches("http://"),
        )
    }

    /// The primary dies at once (`-m immediate`) and the standby is promoted in its place,
    /// without waiting for it to catch up: what it had not received is lost, as in a real
    /// failover. The promoted server becomes `stack.pg`; the old primary's files go with it.
    pub(crate) async fn fail_over(&mut self, stack: &mut Stack) -> anyhow::Result<()> {
        let standby = self
            .standby
            .take()
            .ok_or_else(|| anyhow::anyhow!("no standby to promote"))?;
        stack.pg.stop(StopMode::Immediate)?;
        standby.promote().await?;
        drop(std::mem::replace(&mut stack.pg, standby));
        let primary = format!("127.0.0.1:{}", stack.pg.port);
        self.capture_path.set_upstream(&primary);
        self.shared_path.set_upstream(&primary);
        Ok(())
    }

    /// A new standby of the current primary, so that the next failover has one to promote.
    pub(crate) async fn replace_standby(&mut self, stack: &Stack) -> anyhow::Result<()> {
        if self.standby.is_none() {
            self.standby = Some(stack.pg.start_standby(STANDBY).await?);
        }
        Ok(())
    }
}

/// Capture's slot on the current primary, as far as the recovery wait needs it.
#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) active: bool,
    pub(crate) confirmed: u64,
}

/// Capture's slot on the current primary; an error while the primary restarts or fails over
/// (the caller asks again).
pub(crate) async fn capture_slot(stack: &Stack) -> anyhow::Result<SlotState> {
    let pg = stack.pg.client().await?;
    let row = pg
        .query_opt(
            "SELECT active, (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots \
             WHERE slot_name = 'outbox_bridge'",
            &[],
        )
        .await?;
    Ok(row.map_or_else(SlotState::default, |r| SlotState {
        active: r.get(0),
        confirmed: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
    }))
}

pub(crate) async fn current_wal(stack: &Stack) -> anyhow::Result<u64> {
    let pg = stack.pg.client().await?;
    let lsn: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    harness::lsn::parse(&lsn).ok_or_else(|| anyhow::anyhow!("bad LSN {lsn}"))
}
