//! `bench ceiling`: one backlog of outbox rows, drained by `pg_recvlogical` (the walsender's
//! limit) and by `bridge capture` into a null sink, into a local endpoint that acknowledges
//! every PutRecords, and into moto — each from its own slot, so each drains the same WAL. It
//! runs on several PostgreSQL majors in turn (the default one and the distribution's 15), one
//! table, so a regression of the walsender or of capture on a newer major shows side by side.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;
use harness::moto::{aws_env, Moto};
use harness::process;

use crate::drain::{self, capture, recvlogical, Row};
use harness::endpoint;

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
    /// Drains per configuration (interleaved); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    repeat: u64,
    /// Leave out the moto run (emulator-bound, and slow for big backlogs; it runs on the first
    /// major only).
    #[arg(long)]
    skip_moto: bool,
    /// The PostgreSQL majors to run on, in turn (comma-separated): the test suite's default
    /// major and the distribution's 15.
    #[arg(long, value_delimiter = ',', default_value = "17,15", value_parser = clap::value_parser!(u32).range(14..=18))]
    majors: Vec<u32>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/ceiling.json")]
    out: PathBuf,
}

pub async fn run(args: CeilingArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for (n, major) in args.majors.iter().copied().enumerate() {
        eprintln!("PostgreSQL {major}");
        let moto = n == 0 && !args.skip_moto;
        let mut rows = on_major(&args, major, moto).await?;
        let base_rate = rows.first().map_or(0.0, |r| r.events_per_second);
        for r in &mut rows {
            r.postgres = Some(major);
            r.ratio_to_pg_recvlogical = if base_rate > 0.0 {
                r.events_per_second / base_rate
            } else {
                0.0
            };
        }
        results.extend(rows);
    }
    let rows = results.first().map_or(args.rows, |r| r.events);
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

/// Every drain of one backlog on PostgreSQL `major`; pg_recvlogical's row first.
async fn on_major(args: &CeilingArgs, major: u32, with_moto: bool) -> anyhow::Result<Vec<Row>> {
    let (pg, client, db_env) = drain::migrated_postgres_of(major).await?;
    // One slot per drain, all made before the backlog so each drains the same WAL.
    let mut slots = Vec::new();
    for round in 0..args.repeat {
        for kind in ["recvlogical", "null", "endpoint"] {
            slots.push(format!("bench_{kind}_{round}"));
        }
    }
    if with_moto {
        slots.push("bench_moto".into());
    }
    for slot in &slots {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await?;
    }
    let (rows, end) = drain::write_backlog(&client, args.rows, args.rows_per_tx, args.payload_bytes).await?;

    let mut env = db_env.clone();
    env.push(("BRIDGE_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
    let endpoint = endpoint::start(endpoint::Options::default()).await?;
    let mut http_env = env.clone();
    http_env.extend(aws_env(&endpoint.url));

    // Rounds interleave the three so page-cache warmth and background noise fall on each alike;
    // each figure is the median of its rounds.
    let (mut base, mut null, mut http) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.repeat {
        eprintln!("round {} of {}", round + 1, args.repeat);
        let slot = format!("bench_recvlogical_{round}");
        base.push(
            recvlogical(
                &pg,
                &slot,
                &end,
                rows,
                "pg_recvlogical (pgoutput, the walsender's limit)",
            )
            .await?,
        );
        let slot = format!("bench_null_{round}");
        null.push(
            capture(
                &client,
                &env,
                &slot,
                &["--sink", "null"],
                &end,
                rows,
                "capture → null sink",
            )
            .await?,
        );
        let before = endpoint.counts.records.load(Ordering::Relaxed);
        let slot = format!("bench_endpoint_{round}");
        let name = "capture → local PutRecords endpoint";
        let mut r = capture(
            &client,
            &http_env,
            &slot,
            &["--stream", "bench"],
            &end,
            rows,
            name,
        )
        .await?;
        let received = endpoint.counts.records.load(Ordering::Relaxed) - before;
        r.complete &= received >= rows;
        r.verified = format!("{}; endpoint received {received} records", r.verified);
        http.push(r);
    }
    let mut results = vec![median(base), median(null), median(http)];

    if with_moto {
        let moto = Moto::start().await?;
        let mut moto_env = env.clone();
        moto_env.extend(moto.env());
        let (code, out, err) = process::run(
            "bridge",
            &["setup", "--stream", "bench", "--shards", "4"],
            &moto.env(),
        )
        .await?;
        anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");
        let name = "capture → moto Kinesis (emulator-bound, one run)";
        results.push(
            capture(
                &client,
                &moto_env,
                "bench_moto",
                &["--stream", "bench"],
                &end,
                rows,
                name,
            )
            .await?,
        );
    }
    Ok(results)
}

fn print_table(results: &[Row], rows: u64, per_tx: u64, payload: u64) {
    println!(
        "\n### ceiling vs capture: {rows} outbox rows, {per_tx} per transaction, ~{payload}-byte payloads\n"
    );
    println!(
        "| PostgreSQL | drained by | events/s | vs pg_recvlogical | CPU s / M events | walsender CPU s / M events | peak RSS | seconds | complete |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        println!(
            "| {} | {} | {:.0} | {:.0} % | {:.1} | {} | {:.1} MiB | {:.2} | {} |",
            r.postgres.map_or_else(|| "-".to_owned(), |m| m.to_string()),
            r.drained_by,
            r.events_per_second,
            r.ratio_to_pg_recvlogical * 100.0,
            r.cpu_seconds_per_million,
            r.walsender_cpu_seconds_per_million
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            r.peak_rss_mib,
            r.seconds,
            if r.complete { "yes" } else { "NO" }
        );
    }
    println!(
        "\n(Medians of interleaved rounds; each major against its own pg_recvlogical (the distribution's client where a server build has none). CPU and RSS are the draining process's own; the walsender's CPU, for the same drain, is beside it. Every contender asks pgoutput for the same options: proto_version 2, logical messages.)"
    );
}

/// The run with the median rate; `verified` lists every run, `complete` needs them all.
fn median(mut runs: Vec<Row>) -> Row {
    let rates: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.0}", r.events_per_second))
        .collect();
    let all_complete = runs.iter().all(|r| r.complete);
    runs.sort_by(|a, b| a.events_per_second.total_cmp(&b.events_per_second));
    let mid = runs.len() / 2;
    let mut r = runs.swap_remove(mid);
    r.complete = all_complete;
    r.verified = format!("{}; events/s of each run: {}", r.verified, rates.join(", "));
    r
}
