//! `bench memory`: capture's peak RSS while it drains (a) one transaction of N outbox rows and
//! (b) a backlog of N rows in 100-row transactions, into the local endpoint; and that every
//! record arrived.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;
use harness::moto::aws_env;

use crate::drain::{self, capture, Row};
use harness::endpoint;

#[derive(Args, Debug)]
pub struct MemoryArgs {
    /// Rows in the one big transaction (and in the backlog, unless --backlog-rows says otherwise).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(100..))]
    rows: u64,
    /// Rows in the backlog of 100-row transactions (default: --rows).
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..))]
    backlog_rows: Option<u64>,
    /// Approximate payload size (bytes of jsonb).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(20..))]
    payload_bytes: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/memory.json")]
    out: PathBuf,
}

pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let (_pg, client, db_env) = drain::migrated_postgres().await?;
    let endpoint = endpoint::start(endpoint::Options::default()).await?;
    let mut env = db_env.clone();
    env.extend(aws_env(&endpoint.url));
    env.push(("BRIDGE_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
    let mut results = Vec::new();

    // (a) one transaction, then (b) a backlog of small ones, each from a slot made just before
    // it was written, so each drain reads only its own.
    let backlog_rows = args.backlog_rows.unwrap_or(args.rows);
    for (slot, rows, per_tx) in [
        ("bench_bigtx", args.rows, args.rows),
        ("bench_backlog", backlog_rows, 100),
    ] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
        let (rows, end) = drain::write_backlog(&client, rows, per_tx, args.payload_bytes).await?;
        let name = if per_tx >= rows {
            format!("one transaction of {rows} rows")
        } else {
            format!("backlog of {rows} rows, {per_tx} per transaction")
        };
        let before = endpoint.counts.records.load(Ordering::Relaxed);
        let mut r = capture(&client, &env, slot, &["--stream", "bench"], &end, rows, &name).await?;
        check_arrived(&mut r, &endpoint, before, rows);
        results.push(r);
    }

    println!(
        "\n### memory: capture → local PutRecords endpoint, ~{}-byte payloads\n",
        args.payload_bytes
    );
    println!("| drained | events/s | peak RSS | CPU s / M events | seconds | complete |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| {} | {:.0} | {:.1} MiB | {:.1} | {:.2} | {} |",
            r.drained_by,
            r.events_per_second,
            r.peak_rss_mib,
            r.cpu_seconds_per_million,
            r.seconds,
            if r.complete { "yes" } else { "NO" }
        );
    }
    drain::write_json(&args.out, &results)?;
    anyhow::ensure!(
        results.iter().all(|r| r.complete),
        "a run did not deliver everything"
    );
    Ok(())
}

fn check_arrived(r: &mut Row, endpoint: &endpoint::Endpoint, before: u64, rows: u64) {
    let received = endpoint.counts.records.load(Ordering::Relaxed) - before;
    r.complete &= received >= rows;
    r.verified = format!("{}; endpoint received {received} records", r.verified);
}
