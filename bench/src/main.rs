//! `bench`: measures the bridge against the physical limit in the same run, on the embedded
//! stack (a throwaway Postgres; moto where an emulator is measured), and prints a markdown
//! table (also written as JSON).
//!
//! `bench ceiling`: one backlog of outbox rows, drained by `pg_recvlogical` (the walsender's
//! limit) and by `bridge capture` into a null sink, into a local endpoint that acknowledges
//! every PutRecords, and into moto — each from its own slot, so each drains the same WAL.

mod endpoint;
mod procstat;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tests::moto::{aws_env, Moto};
use tests::postgres::TestPostgres;
use tests::process::{self, Proc};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Benchmarks of outbox-bridge, side by side with the physical limit"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Drain one backlog with pg_recvlogical and with bridge capture into three sinks.
    Ceiling(CeilingArgs),
}

#[derive(Args, Debug)]
struct CeilingArgs {
    /// Outbox rows in the backlog.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(100..))]
    rows: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    rows_per_tx: u64,
    /// Approximate payload size (bytes of jsonb).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(20..))]
    payload_bytes: u64,
    /// Leave out the moto run (emulator-bound, and slow for big backlogs).
    #[arg(long)]
    skip_moto: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/ceiling.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    drained_by: String,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    ratio_to_pg_recvlogical: f64,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
    /// How completeness was checked, and whether it held.
    verified: String,
    complete: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Ceiling(args) => ceiling(args).await,
    }
}

const SLOTS: [&str; 4] = ["bench_recvlogical", "bench_null", "bench_endpoint", "bench_moto"];

async fn ceiling(args: CeilingArgs) -> anyhow::Result<()> {
    eprintln!("starting a throwaway Postgres…");
    let pg = TestPostgres::start()?;
    let db_env = vec![("DATABASE_URL".to_owned(), pg.url())];
    let (code, out, err) = process::run("legacy-sim", &["migrate"], &db_env).await?;
    anyhow::ensure!(code == Some(0), "legacy-sim migrate failed: {out}{err}");
    let client = pg.client().await?;
    for slot in SLOTS {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
    }
    let txs = args.rows.div_ceil(args.rows_per_tx);
    let rows = txs * args.rows_per_tx;
    eprintln!("writing the backlog: {rows} outbox rows in {txs} transactions…");
    let started = Instant::now();
    // A DO block may COMMIT between statements: one transaction per batch, written server-side.
    let pad = args.payload_bytes.saturating_sub(60);
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
            per = args.rows_per_tx,
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

    let mut results = Vec::new();
    let base = recvlogical(&pg, &end, rows).await?;
    let base_rate = base.events_per_second;
    results.push(base);

    let mut env = db_env.clone();
    env.push(("BRIDGE_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
    let r = capture(
        &client,
        &env,
        "bench_null",
        &["--sink", "null"],
        &end,
        rows,
        "capture → null sink",
    )
    .await?;
    results.push(r);

    let (url, counts) = endpoint::start().await?;
    let mut http_env = env.clone();
    http_env.extend(aws_env(&url));
    let mut r = capture(
        &client,
        &http_env,
        "bench_endpoint",
        &["--stream", "bench"],
        &end,
        rows,
        "capture → local PutRecords endpoint",
    )
    .await?;
    let received = counts.records.load(std::sync::atomic::Ordering::Relaxed);
    r.complete &= received >= rows;
    r.verified = format!("{}; endpoint received {received} records", r.verified);
    results.push(r);

    if !args.skip_moto {
        let moto = Moto::start().await?;
        let mut moto_env = env.clone();
        moto_env.extend(moto.env());
        let setup_env: Vec<(String, String)> = moto.env();
        let (code, out, err) = process::run(
            "bridge",
            &["setup", "--stream", "bench", "--shards", "4"],
            &setup_env,
        )
        .await?;
        anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");
        let r = capture(
            &client,
            &moto_env,
            "bench_moto",
            &["--stream", "bench"],
            &end,
            rows,
            "capture → moto Kinesis (emulator-bound)",
        )
        .await?;
        results.push(r);
    }
    for r in &mut results {
        r.ratio_to_pg_recvlogical = if base_rate > 0.0 {
            r.events_per_second / base_rate
        } else {
            0.0
        };
    }
    print_table(&results, rows, args.rows_per_tx, args.payload_bytes);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results written to {}", args.out.display());
    anyhow::ensure!(
        results.iter().all(|r| r.complete),
        "a run did not drain the whole backlog"
    );
    Ok(())
}

fn row(
    name: &str,
    events: u64,
    seconds: f64,
    usage: procstat::Usage,
    verified: String,
    complete: bool,
) -> Row {
    Row {
        drained_by: name.into(),
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        ratio_to_pg_recvlogical: 0.0,
        cpu_seconds_per_million: usage.cpu_seconds * 1e6 / events.max(1) as f64,
        peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
        verified,
        complete,
    }
}

/// pg_recvlogical with pgoutput from its own slot to the backlog's end, output discarded.
async fn recvlogical(pg: &TestPostgres, end: &str, rows: u64) -> anyhow::Result<Row> {
    eprintln!("draining with pg_recvlogical…");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(pg.bin("pg_recvlogical"))
        .args([
            "-d",
            &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pg.port),
            "--slot",
            "bench_recvlogical",
            "--start",
            "--endpos",
            end,
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=outbox_bridge",
            "-f",
            "/dev/null",
        ])
        .env("PGPASSWORD", tests::postgres::SUPERUSER_PASSWORD)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run pg_recvlogical")?;
    let sampler = child.id().map(procstat::Sampler::start);
    let status = tokio::time::timeout(Duration::from_secs(3600), child.wait()).await??;
    let seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    Ok(row(
        "pg_recvlogical (pgoutput, the walsender's limit)",
        rows,
        seconds,
        usage,
        format!("exited {status} at --endpos"),
        status.success(),
    ))
}

/// `bridge capture` from `slot` until the slot's confirmed position reaches `end`.
async fn capture(
    client: &tokio_postgres::Client,
    env: &[(String, String)],
    slot: &str,
    extra: &[&str],
    end: &str,
    rows: u64,
    name: &str,
) -> anyhow::Result<Row> {
    eprintln!("draining with {name}…");
    let port = tests::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["capture", "--slot", slot, "--metrics-listen", &listen];
    args.extend_from_slice(extra);
    let end_lsn = tests::lsn::parse(end).context("end LSN")? as f64;
    let started = Instant::now();
    let mut proc = Proc::spawn("bridge", &args, env)?;
    let sampler = proc.pid().map(procstat::Sampler::start);
    let deadline = Duration::from_secs(3600);
    // Done when capture itself has the backlog durable (its acknowledged LSN, from /metrics):
    // the slot's confirmed position trails it by up to one status interval.
    loop {
        proc.ensure_running()?;
        let flushed = tests::metrics::scrape(port, "bridge_slot_flushed_lsn")
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
    // And the slot agrees once capture has stopped (its last status update).
    let confirmed: bool = client
        .query_one(
            "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &end],
        )
        .await?
        .get(0);
    Ok(row(
        name,
        rows,
        seconds,
        usage,
        format!("acknowledged up to the backlog's end: {confirmed}"),
        confirmed,
    ))
}

fn print_table(results: &[Row], rows: u64, per_tx: u64, payload: u64) {
    println!(
        "\n### ceiling vs capture: {rows} outbox rows, {per_tx} per transaction, ~{payload}-byte payloads\n"
    );
    println!(
        "| drained by | events/s | vs pg_recvlogical | CPU s / M events | peak RSS | seconds | complete |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in results {
        println!(
            "| {} | {:.0} | {:.0} % | {:.1} | {:.1} MiB | {:.2} | {} |",
            r.drained_by,
            r.events_per_second,
            r.ratio_to_pg_recvlogical * 100.0,
            r.cpu_seconds_per_million,
            r.peak_rss_mib,
            r.seconds,
            if r.complete { "yes" } else { "NO" }
        );
    }
    println!(
        "\n(CPU and RSS are the draining process's own; the walsender's share is not counted for any row.)"
    );
}
