//! What every scenario shares: a migrated throwaway Postgres, a server-side backlog writer,
//! and the two ways a backlog is drained and measured (pg_recvlogical, `bridge capture`).

use std::time::{Duration, Instant};

use anyhow::Context;
use harness::postgres::TestPostgres;
use harness::process::{self, Proc};
use serde::Serialize;

use crate::procstat;

#[derive(Debug, Serialize)]
pub struct Row {
    /// The PostgreSQL major drained, where a scenario runs on several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<u32>,
    pub drained_by: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub ratio_to_pg_recvlogical: f64,
    pub cpu_seconds_per_million: f64,
    /// The walsender's CPU for the same drain (sampled from /proc while it streamed), where
    /// the scenario measured it: who waits for whom shows in the two figures side by side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walsender_cpu_seconds_per_million: Option<f64>,
    pub peak_rss_mib: f64,
    /// How completeness was checked, and whether it held.
    pub verified: String,
    pub complete: bool,
}

/// A throwaway Postgres with the monolith's schema (and its publication).
pub async fn migrated_postgres(
) -> anyhow::Result<(TestPostgres, tokio_postgres::Client, Vec<(String, String)>)> {
    migrated(TestPostgres::start()?).await
}

/// [`migrated_postgres`] of PostgreSQL `major`.
pub async fn migrated_postgres_of(
    major: u32,
) -> anyhow::Result<(TestPostgres, tokio_postgres::Client, Vec<(String, String)>)> {
    migrated(TestPostgres::start_in(harness::postgres::bindir_of_major(
        major,
    )?)?)
    .await
}

async fn migrated(
    pg: TestPostgres,
) -> anyhow::Result<(TestPostgres, tokio_postgres::Client, Vec<(String, String)>)> {
    eprintln!("a throwaway Postgres is up on port {}; migrating…", pg.port);
    let db_env = vec![("DATABASE_URL".to_owned(), pg.url())];
    let (code, out, err) = process::run("legacy-sim", &["migrate"], &db_env).await?;
    anyhow::ensure!(code == Some(0), "legacy-sim migrate failed: {out}{err}");
    let client = pg.client().await?;
    Ok((pg, client, db_env))
}

/// Writes `rows` outbox rows (rounded up to whole transactions of `per_tx`) server-side;
/// returns the row count and the WAL position after the last commit.
pub async fn write_backlog(
    client: &tokio_postgres::Client,
    rows: u64,
    per_tx: u64,
    payload_bytes: u64,
) -> anyhow::Result<(u64, String)> {
    let txs = rows.div_ceil(per_tx);
    let total = txs * per_tx;
    eprintln!("writing the backlog: {total} outbox rows in {txs} transactions…");
    let started = Instant::now();
    // A DO block may COMMIT between statements: one transaction per batch, written server-side.
    let pad = payload_bytes.saturating_sub(60);
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR b IN 0..{last} LOOP
               INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
               SELECT gen_random_uuid(), 'Order', (i % 1000)::text, 'OrderPlaced',
                      jsonb_build_object('order_id', i, 'pad', repeat('x', {pad})), 1
               FROM generate_series(b * {per}, b * {per} + {per} - 1) AS i;
               COMMIT;
             END LOOP; END $$;",
            last = txs - 1,
            per = per_tx,
        ))
        .await?;
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    eprintln!(
        "backlog written in {:.1}s; end LSN {end}",
        started.elapsed().as_secs_f64()
    );

    Ok((total, end))
}

pub fn row(
    name: &str,
    events: u64,
    seconds: f64,
    usage: procstat::Usage,
    verified: String,
    complete: bool,
) -> Row {
    Row {
        postgres: None,
        drained_by: name.into(),
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        ratio_to_pg_recvlogical: 0.0,
        cpu_seconds_per_million: usage.cpu_seconds * 1e6 / events.max(1) as f64,
        walsender_cpu_seconds_per_million: None,
        peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
        verified,
        complete,
    }
}

/// pg_recvlogical with pgoutput from its own slot to the backlog's end, output discarded.
pub async fn recvlogical(
    pg: &TestPostgres,
    slot: &str,
    end: &str,
    rows: u64,
    name: &str,
) -> anyhow::Result<Row> {
    eprintln!("draining with pg_recvlogical…");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(pg.bin("pg_recvlogical"))
        .args([
            "-d",
            &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pg.port),
            "--slot",
            slot,
            "--start",
            "--endpos",
            end,
            "--no-loop",
            // The options capture asks for (proto_version 2, logical messages), so both
            // make the walsender do the same work.
            "-o",
            "proto_version=2",
            "-o",
            "messages=true",
            "-o",
            "publication_names=outbox_bridge",
            "-f",
            "/dev/null",
        ])
        .env("PGPASSWORD", harness::postgres::SUPERUSER_PASSWORD)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run pg_recvlogical")?;
    let sampler = child.id().map(procstat::Sampler::start);
    let client = pg.client().await?;
    let mut walsender = Walsender::default();
    let waited = tokio::time::timeout(Duration::from_secs(3600), async {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                () = tokio::time::sleep(Duration::from_millis(20)) => walsender.look(&client, slot).await,
            }
        }
    });
    let status = waited.await??;
    let seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    let mut r = row(
        name,
        rows,
        seconds,
        usage,
        format!("exited {status} at --endpos"),
        status.success(),
    );
    r.walsender_cpu_seconds_per_million = walsender.per_million(rows);
    Ok(r)
}

/// `bridge capture` from `slot` until the slot's confirmed position reaches `end`.
pub async fn capture(
    client: &tokio_postgres::Client,
    env: &[(String, String)],
    slot: &str,
    extra: &[&str],
    end: &str,
    rows: u64,
    name: &str,
) -> anyhow::Result<Row> {
    eprintln!("draining with {name}…");
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["capture", "--slot", slot, "--metrics-listen", &listen];
    args.extend_from_slice(extra);
    let end_lsn = harness::lsn::parse(end).context("end LSN")? as f64;
    let started = Instant::now();
    let mut proc = Proc::spawn("bridge", &args, env)?;
    let sampler = proc.pid().map(procstat::Sampler::start);
    let mut walsender = Walsender::default();
    let deadline = Duration::from_secs(3600);
    // Done when capture itself has the backlog durable (its acknowledged LSN, from /metrics):
    // the slot's confirmed position trails it by up to one status interval.
    loop {
        proc.ensure_running()?;
        walsender.look(client, slot).await;
        let flushed = harness::metrics::scrape(port, "bridge_slot_flushed_lsn")
            .await
            .unwrap_or(0.0);
        if flushed >= end_lsn {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{name} did not drain within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    proc.terminate(Duration::from_secs(30)).await?;
    // And the slot agrees once capture has stopped: its last status update is read by the
    // walsender on its own time, after capture has already exited, so give it a moment.
    let confirmed = harness::wait::until("the slot to confirm the end", Duration::from_secs(60), || async {
        let ok: bool = client
            .query_one(
                "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &end],
            )
            .await?
            .get(0);
        Ok(ok.then_some(()))
    })
    .await
    .is_ok();
    let mut r = row(
        name,
        rows,
        seconds,
        usage,
        format!("acknowledged up to the backlog's end: {confirmed}"),
        confirmed,
    );
    r.walsender_cpu_seconds_per_million = walsender.per_million(rows);
    Ok(r)
}

/// Until the capture serving /metrics on `port` has acknowledged everything written so far
/// (its acknowledged LSN reaches the server's current WAL position).
/// Runs `statement` (it writes `per_tx` rows) at `rate` rows/s for `seconds`; returns the rows
/// written and the rate achieved. Missed ticks are made up at once, so the rate holds on average.
pub async fn write_steadily(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    rate: u64,
    per_tx: u64,
    seconds: u64,
) -> anyhow::Result<(u64, f64)> {
    let period = std::time::Duration::from_secs_f64(per_tx as f64 / rate as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = std::time::Instant::now();
    let mut written = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(seconds) {
        ticks.tick().await;
        client.execute(statement, &[]).await?;
        written += per_tx;
    }
    Ok((written, written as f64 / started.elapsed().as_secs_f64()))
}

pub async fn wait_caught_up(
    client: &tokio_postgres::Client,
    capture: &Proc,
    port: u16,
) -> anyhow::Result<()> {
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let end_lsn = harness::lsn::parse(&end).unwrap_or(u64::MAX) as f64;
    harness::wait::until("capture to drain", Duration::from_secs(300), || async {
        capture.ensure_running()?;
        let flushed = harness::metrics::scrape(port, "bridge_slot_flushed_lsn").await?;
        Ok((flushed >= end_lsn).then_some(()))
    })
    .await
}

/// Writes a scenario's results as pretty JSON, creating the directory.
pub fn write_json(path: &std::path::Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

/// The walsender serving a slot, sampled from /proc: found by the slot's `active_pid` once the
/// drainer has connected, then read every 50 ms until it exits with its client.
#[derive(Default)]
pub struct Walsender {
    sampler: Option<procstat::Sampler>,
}

impl Walsender {
    /// Starts sampling once the slot has a walsender (call it until it has).
    pub async fn look(&mut self, client: &tokio_postgres::Client, slot: &str) {
        if self.sampler.is_some() {
            return;
        }
        let pid = client
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .ok()
            .flatten()
            .and_then(|row| row.get::<_, Option<i32>>(0))
            .and_then(|pid| u32::try_from(pid).ok());
        self.sampler = pid.map(procstat::Sampler::start);
    }

    /// Its CPU seconds per million events, if it was found.
    pub fn per_million(&self, events: u64) -> Option<f64> {
        let usage = self.sampler.as_ref()?.usage();
        Some(usage.cpu_seconds * 1e6 / events.max(1) as f64)
    }
}
