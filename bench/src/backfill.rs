//! `bench backfill`: `bridge backfill` of a table while its rows keep changing, next to capture
//! streaming a backlog of the same size, into the local PutRecords endpoint. Reports rows/s of
//! the backfill (throttled as by default, and unthrottled), what the live changes' commit →
//! Kinesis ack latency was meanwhile (against a phase of live changes alone), and capture's
//! peak RSS after each phase — flat when a backfill holds no more than a chunk at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use harness::moto::aws_env;
use harness::process::{self, Proc};
use serde::Serialize;

use crate::latency::{bucket_delta, bucket_quantiles, histogram_buckets, reqwest_text, Quantiles};
use crate::{drain, procstat};
use harness::endpoint;

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// Rows in the backfilled table (`customers`), and in the backlog capture streams for comparison.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1000..))]
    rows: u64,
    /// Live changes per second while the backfills run: customer updates, each with its outbox row.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    live_rate: u64,
    /// Rows per backfill chunk (`bridge backfill --chunk-rows`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chunk_rows: u64,
    /// Seconds of live changes alone before the backfills: the latency baseline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    baseline_seconds: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/backfill.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    /// Rows the backfill read (0 for the baseline).
    rows: u64,
    /// Of those, sent as load records, and left out because a live change in the chunk's
    /// window superseded them (capture's `bridge_backfill_*` counters).
    load_records: u64,
    superseded: u64,
    /// The whole phase: for a backfill, the `bridge backfill` command, request pick-up included.
    seconds: f64,
    /// Rows per second from the first chunk seen to the last.
    rows_per_second: f64,
    /// Live changes written per second during the phase (target: --live-rate).
    live_changes_per_second: f64,
    /// Commit → Kinesis ack of what capture sent during the phase (per batch).
    commit_to_kinesis_ack: Quantiles,
    capture_cpu_seconds: f64,
    /// Capture's peak RSS since it started, read at the end of the phase.
    capture_peak_rss_mib: f64,
    complete: bool,
}

#[derive(Debug, Serialize)]
struct Results {
    table_rows: u64,
    live_rate: u64,
    chunk_rows: u64,
    /// Capture draining a backlog of `table_rows` outbox rows: its streaming rate.
    capture_streaming: drain::Row,
    phases: Vec<Phase>,
}

const LOAD_RECORDS: &str = "bridge_backfill_records_total";
const SUPERSEDED: &str = "bridge_backfill_rows_superseded_total";
const SLOT: &str = "bench_backfill";
const TAG: &str = "outbox-bridge.backfill.bench_backfill";
/// Customers changed per live transaction (each with its outbox row: twice as many changes).
const PER_TX: usize = 5;

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let (pg, client, db_env) = drain::migrated_postgres().await?;
    let endpoint = endpoint::start(endpoint::Options::default()).await?;
    let mut env = db_env.clone();
    env.extend(aws_env(&endpoint.url));

    eprintln!("writing {} customers…", args.rows);
    client
        .batch_execute(&format!(
            "INSERT INTO customers (id, name, credit_limit, version) \
             SELECT gen_random_uuid(), 'customer ' || i || ' ' || repeat('x', 200), i, 1 \
             FROM generate_series(1, {}) AS i; ANALYZE customers",
            args.rows
        ))
        .await?;

    // Capture's own rate, streaming as many rows as changes: the figure a backfill sits next to.
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_stream', 'pgoutput')",
            &[],
        )
        .await?;
    let (rows, end) = drain::write_backlog(&client, args.rows, 100, 300).await?;
    let mut metrics_env = env.clone();
    metrics_env.push(("BRIDGE_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
    let name = format!("capture streaming a backlog of {rows} outbox rows (100 per transaction)");
    let streaming = drain::capture(
        &client,
        &metrics_env,
        "bench_stream",
        &["--stream", "bench"],
        &end,
        rows,
        &name,
    )
    .await?;
    // The capture above has exited, but its walsender lets go of the slot a moment later.
    harness::postgres::drop_slot(&client, "bench_stream", harness::postgres::SlotReader::Stopped).await?;

    // Customers' changes are streamed too, so the backfill races live changes of its own rows.
    client
        .execute(
            &format!("SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')"),
            &[],
        )
        .await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let capture_args = [
        "capture",
        "--slot",
        SLOT,
        "--publication",
        "bench_backfill",
        "--tables",
        "public.outbox,public.customers",
        "--stream",
        "bench",
        "--metrics-listen",
        &listen,
    ];
    let mut capture = Proc::spawn("bridge", &capture_args, &env)?;
    let pid = capture
        .pid()
        .ok_or_else(|| anyhow::anyhow!("capture has no pid"))?;
    harness::wait::until("capture to stream", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&SLOT],
            )
            .await?;
        Ok(row.map(|_| ()))
    })
    .await?;

    let ids: Vec<String> = client
        .query("SELECT id::text FROM customers", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let live = LiveWriter::start(pg.client().await?, ids, args.live_rate);
    let mut phases = Vec::new();

    eprintln!("live changes alone for {} s…", args.baseline_seconds);
    let mark = Mark::take(port, pid, &live).await?;
    tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
    capture.ensure_running()?;
    phases.push(
        mark.phase(port, pid, &live, "live changes only (baseline)", 0, true)
            .await?,
    );

    for (label, rps) in [
        ("backfill, --rows-per-second 5000 (the default)", "5000"),
        ("backfill, --rows-per-second 0 (unthrottled)", "0"),
    ] {
        eprintln!("{label}…");
        let mark = Mark::take(port, pid, &live).await?;
        let chunk = args.chunk_rows.to_string();
        let backfill_args = [
            "backfill",
            "--table",
            "public.customers",
            "--slot",
            SLOT,
            "--stream",
            "bench",
            "--chunk-rows",
            &chunk,
            "--rows-per-second",
            rps,
        ];
        let run = process::run("bridge", &backfill_args, &env);
        let (result, rate) = while_sampling_rate(port, run).await;
        let (code, out, err) = result?;
        capture.ensure_running()?;
        anyhow::ensure!(code == Some(0), "bridge backfill failed: {out}{err}");
        // The job's own count, from the stream tag capture keeps it in.
        let tag = endpoint.tag(TAG).unwrap_or_default();
        let field = |name: &str| {
            tag.split(' ')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_default()
                .to_owned()
        };
        let sent: u64 = field("rows").parse().unwrap_or(0);
        let complete = field("state") == "done" && sent == args.rows;
        let mut phase = mark.phase(port, pid, &live, label, sent, complete).await?;
        phase.rows_per_second = rate;
        phases.push(phase);
    }
    let written = live.stop().await?;
    // Everything written has been delivered before the figures are trusted.
    drain::wait_caught_up(&client, &capture, port).await?;
    capture.terminate(Duration::from_secs(30)).await?;
    let loads: u64 = phases.iter().map(|p| p.load_records).sum();
    let received = endpoint.counts.records.load(Ordering::Relaxed);
    // The backlog, every live change (a customer update and an outbox row each) and every load record.
    let expected = rows + written + loads;
    let all_arrived = received >= expected;
    for p in &mut phases {
        p.complete &= all_arrived;
    }
    let results = Results {
        table_rows: args.rows,
        live_rate: args.live_rate,
        chunk_rows: args.chunk_rows,
        capture_streaming: streaming,
        phases,
    };
    print_table(&results, received, expected);
    drain::write_json(&args.out, &results)?;
    anyhow::ensure!(
        results.capture_streaming.complete && results.phases.iter().all(|p| p.complete),
        "a run did not deliver everything"
    );
    Ok(())
}

/// What capture and the live writer had counted when a phase began.
struct Mark {
    at: Instant,
    buckets: Vec<(f64, f64)>,
    cpu_seconds: f64,
    live: u64,
    load_records: f64,
    superseded: f64,
}

impl Mark {
    async fn take(port: u16, pid: u32, live: &LiveWriter) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            buckets: commit_to_ack(port).await?,
            cpu_seconds: procstat::read(pid).unwrap_or_default().cpu_seconds,
            live: live.written.load(Ordering::Relaxed),
            load_records: harness::metrics::scrape(port, LOAD_RECORDS).await?,
            superseded: harness::metrics::scrape(port, SUPERSEDED).await?,
        })
    }

    async fn phase(
        self,
        port: u16,
        pid: u32,
        live: &LiveWriter,
        name: &str,
        rows: u64,
        complete: bool,
    ) -> anyhow::Result<Phase> {
        let seconds = self.at.elapsed().as_secs_f64();
        let usage = procstat::read(pid).unwrap_or_default();
        let changes = live.written.load(Ordering::Relaxed) - self.live;
        let load_records = (harness::metrics::scrape(port, LOAD_RECORDS).await? - self.load_records) as u64;
        let superseded = (harness::metrics::scrape(port, SUPERSEDED).await? - self.superseded) as u64;
        Ok(Phase {
            name: name.to_owned(),
            rows,
            load_records,
            superseded,
            seconds,
            rows_per_second: rows as f64 / seconds.max(1e-9),
            live_changes_per_second: changes as f64 / seconds.max(1e-9),
            commit_to_kinesis_ack: bucket_quantiles(&bucket_delta(
                &commit_to_ack(port).await?,
                &self.buckets,
            )),
            capture_cpu_seconds: usage.cpu_seconds - self.cpu_seconds,
            capture_peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
            complete: complete && load_records + superseded == rows,
        })
    }
}

/// Runs `work` while sampling capture's backfill counters every 100 ms: the rate at which
/// rows went out, from the first chunk seen to the last (the request's pick-up, up to one
/// poll of the stream tag, and the wait for the last chunk's acknowledgement are left out).
async fn while_sampling_rate<T>(port: u16, work: impl std::future::Future<Output = T>) -> (T, f64) {
    let rows = || async {
        let sent = harness::metrics::scrape(port, LOAD_RECORDS).await.unwrap_or(0.0);
        let superseded = harness::metrics::scrape(port, SUPERSEDED).await.unwrap_or(0.0);
        sent + superseded
    };
    tokio::pin!(work);
    let base = rows().await;
    // (when, rows so far) at the first and the latest sample that saw rows go out.
    let mut first: Option<(Instant, f64)> = None;
    let mut last: Option<(Instant, f64)> = None;
    let result = loop {
        tokio::select! {
            out = &mut work => break out,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let n = rows().await;
                if n > last.map_or(base, |l| l.1) {
                    first.get_or_insert((Instant::now(), n));
                    last = Some((Instant::now(), n));
                }
            }
        }
    };
    let rate = match (first, last) {
        (Some(f), Some(l)) if l.0 > f.0 => (l.1 - f.1) / l.0.duration_since(f.0).as_secs_f64(),
        _ => 0.0,
    };
    (result, rate)
}

async fn commit_to_ack(port: u16) -> anyhow::Result<Vec<(f64, f64)>> {
    Ok(histogram_buckets(
        &reqwest_text(port).await?,
        "bridge_capture_commit_to_ack_seconds",
    ))
}

/// Updates random customers at a steady rate, each update with its outbox row in the same
/// transaction (as the monolith writes); counts the changes (rows changed) it committed.
struct LiveWriter {
    running: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LiveWriter {
    fn start(client: tokio_postgres::Client, ids: Vec<String>, rate: u64) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let written = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (running, written) = (running.clone(), written.clone());
            async move {
                let statement = client
                    .prepare(
                        "WITH u AS (UPDATE customers SET credit_limit = credit_limit + 1, version = version + 1 \
                                    WHERE id = ANY($1::text[]::uuid[]) RETURNING id, version) \
                         INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                         SELECT gen_random_uuid(), 'Customer', u.id::text, 'CustomerCreditChanged', \
                                jsonb_build_object('customer_id', u.id, 'pad', repeat('x', 200)), u.version \
                         FROM u",
                    )
                    .await?;
                let changes_per_tx = (2 * PER_TX) as u64;
                let period = Duration::from_secs_f64(changes_per_tx as f64 / rate as f64);
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
                while running.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let mut pick: Vec<&str> = Vec::with_capacity(PER_TX);
                    while pick.len() < PER_TX {
                        // xorshift64: any spread over the table will do.
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let id = ids[(seed % ids.len() as u64) as usize].as_str();
                        if !pick.contains(&id) {
                            pick.push(id);
                        }
                    }
                    let inserted = client.execute(&statement, &[&pick]).await?;
                    written.fetch_add(2 * inserted, Ordering::Relaxed);
                }
                Ok(())
            }
        });
        Self {
            running,
            written,
            task,
        }
    }

    /// Stops writing; the changes committed in all.
    async fn stop(self) -> anyhow::Result<u64> {
        self.running.store(false, Ordering::Relaxed);
        self.task.await??;
        Ok(self.written.load(Ordering::Relaxed))
    }
}

fn print_table(r: &Results, received: u64, expected: u64) {
    println!(
        "\n### backfill: {} customers re-sent as `load` records while {} changes/s stream, {}-row chunks\n",
        r.table_rows, r.live_rate, r.chunk_rows
    );
    println!("| run | rows/s | seconds | superseded | live changes/s | commit → Kinesis ack p50 / p99 | capture CPU s | capture peak RSS | complete |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let s = &r.capture_streaming;
    println!(
        "| {} | {:.0} | {:.2} | – | – | – | {:.1} | {:.1} MiB | {} |",
        s.drained_by,
        s.events_per_second,
        s.seconds,
        s.cpu_seconds_per_million * s.events as f64 / 1e6,
        s.peak_rss_mib,
        if s.complete { "yes" } else { "NO" }
    );
    for p in &r.phases {
        println!(
            "| {} | {} | {:.2} | {} | {:.0} | {:.1} / {:.1} ms | {:.1} | {:.1} MiB | {} |",
            p.name,
            if p.rows == 0 {
                "–".to_owned()
            } else {
                format!("{:.0}", p.rows_per_second)
            },
            p.seconds,
            p.superseded,
            p.live_changes_per_second,
            p.commit_to_kinesis_ack.p50_ms,
            p.commit_to_kinesis_ack.p99_ms,
            p.capture_cpu_seconds,
            p.capture_peak_rss_mib,
            if p.complete { "yes" } else { "NO" }
        );
    }
    println!(
        "\n(The streaming row is its own capture process; the other rows are one capture, in order, its peak RSS read after each. \
         The endpoint received {received} records of the {expected} expected: backlog, live changes and load records.)"
    );
}
