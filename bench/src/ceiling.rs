//! `bench ceiling`: one backlog of outbox rows, drained by `pg_recvlogical` (the walsender's
//! limit) and by `bridge capture` into a null sink, into a local endpoint that acknowledges
//! every PutRecords, and into moto — each from its own slot, so each drains the same WAL.

use std::path::PathBuf;

use clap::Args;
use tests::moto::{aws_env, Moto};
use tests::process;

use crate::drain::{self, capture, recvlogical, Row};
use crate::endpoint;

#[derive(Args, Debug)]
pub struct CeilingArgs {
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

const SLOTS: [&str; 4] = ["bench_recvlogical", "bench_null", "bench_endpoint", "bench_moto"];

pub async fn run(args: CeilingArgs) -> anyhow::Result<()> {
    eprintln!("starting a throwaway Postgres…");
    let (pg, client, db_env) = drain::migrated_postgres().await?;
    for slot in SLOTS {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
    }
    let (rows, end) = drain::write_backlog(&client, args.rows, args.rows_per_tx, args.payload_bytes).await?;

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

    let endpoint = endpoint::start(endpoint::Options::default()).await?;
    let (url, counts) = (endpoint.url.clone(), endpoint.counts.clone());
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
