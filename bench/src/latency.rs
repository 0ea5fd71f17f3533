//! `bench latency`: outbox rows written at a steady rate, captured into the local endpoint and
//! relayed from it (the endpoint keeps what was put and serves it back as a Kinesis stream);
//! reports commit → Kinesis ack (capture's own histogram: from the pgoutput Commit time to
//! PutRecords returning, per batch for its oldest commit) and outbox write → EventBridge
//! (the endpoint times each PutEvents entry against the row's `occurred_at`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use harness::moto::{aws_env, Moto};
use harness::process::{self, Proc};
use serde::Serialize;

use crate::{drain, procstat};
use harness::endpoint;

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Events written per second.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Rows per transaction (transactions per second = rate / this).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    rows_per_tx: u64,
    /// How long to write.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Run a physical standby and publish only what it has flushed (capture's
    /// `--synchronous-standby`): what a phantom-free failover costs in latency.
    #[arg(long)]
    synchronous_standby: bool,
    /// The relay reads with enhanced fan-out (`--consumer-name`: the endpoint pushes records
    /// over SubscribeToShard) instead of polling GetRecords within Kinesis' read limits.
    #[arg(long)]
    fan_out: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/latency.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    synchronous_standby: bool,
    /// How the relay read the stream: "polling" or "enhanced fan-out".
    relay_mode: &'static str,
    /// GetRecords calls answered / refused by the per-shard read limits; subscriptions opened.
    get_records_calls: u64,
    throttled_reads: u64,
    subscriptions: u64,
    target_rate: u64,
    achieved_rate: f64,
    events: u64,
    commit_to_kinesis_ack: Quantiles,
    write_to_eventbridge: Quantiles,
    capture_cpu_seconds_per_million: f64,
    capture_peak_rss_mib: f64,
    events_published: u64,
    /// What was called per event, for the cost table: PutRecords calls and records (a record
    /// under 25 KB is one PUT payload unit), GetRecords calls, PutEvents calls and entries, and
    /// the relay's lease-table calls (checkpoints, lease renewals) by operation.
    put_records_calls_per_event: f64,
    put_records_records_per_event: f64,
    record_bytes_per_event: f64,
    get_records_calls_per_event: f64,
    put_events_calls_per_event: f64,
    put_events_entries_per_event: f64,
    lease_table_calls_per_event: std::collections::BTreeMap<String, f64>,
    /// How long the relay ran (its consumer-shard hours, with fan-out).
    relay_seconds: f64,
    complete: bool,
}

pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let (pg, client, db_env) = drain::migrated_postgres().await?;
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_latency', 'pgoutput')",
            &[],
        )
        .await?;
    let endpoint = endpoint::start(endpoint::Options {
        keep_shards: Some(4),
        // The relay polls within a real stream's read limits (the pause at the tip follows).
        kinesis_read_limits: true,
        time_events: true,
        record_ids: false,
        ..endpoint::Options::default()
    })
    .await?;
    let (url, counts) = (endpoint.url.clone(), endpoint.counts.clone());
    // The relay keeps its checkpoints and leases in DynamoDB: moto, far from the hot path.
    let moto = Moto::start().await?;
    let (code, out, err) = process::run("bridge", &["setup", "--stream", "bench"], &moto.env()).await?;
    anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");

    let mut env = db_env.clone();
    env.extend(aws_env(&url));
    // The relay's lease table behind a counting proxy (what its checkpoints cost).
    let leases = harness::faults::FaultProxy::start(&moto.endpoint).await?;
    env.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), leases.endpoint.clone()));
    for service in ["SQS", "S3"] {
        env.push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint.clone()));
    }
    let cport = harness::free_port()?;
    let clisten = format!("127.0.0.1:{cport}");
    let mut capture_args = vec![
        "capture",
        "--slot",
        "bench_latency",
        "--stream",
        "bench",
        "--metrics-listen",
        &clisten,
    ];
    let _standby = if args.synchronous_standby {
        eprintln!("starting a physical standby…");
        capture_args.extend(["--synchronous-standby", "bench_standby"]);
        Some(pg.start_standby("bench_standby").await?)
    } else {
        None
    };
    let mut capture = Proc::spawn("bridge", &capture_args, &env)?;
    let rlisten = format!("127.0.0.1:{}", harness::free_port()?);
    let mut relay_args = vec!["relay", "--stream", "bench", "--metrics-listen", &rlisten];
    if args.fan_out {
        relay_args.extend(["--consumer-name", "bench-latency"]);
    }
    let mut relay = Proc::spawn("bridge", &relay_args, &env)?;
    let relay_started = Instant::now();
    let sampler = capture.pid().map(procstat::Sampler::start);
    harness::wait::until("capture to stream", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        relay.ensure_running()?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bench_latency' AND active",
                &[],
            )
            .await?;
        Ok(row.map(|_| ()))
    })
    .await?;

    eprintln!(
        "writing {} events/s in {}-row transactions for {} s…",
        args.rate, args.rows_per_tx, args.seconds
    );
    let writer = pg.client().await?;
    let insert = format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
         SELECT gen_random_uuid(), 'Order', (i % 1000)::text, 'OrderPlaced', \
                jsonb_build_object('order_id', i, 'pad', repeat('x', 240)), 1 \
         FROM generate_series(1, {}) AS i",
        args.rows_per_tx
    );
    let statement = writer.prepare(&insert).await?;
    let (written, achieved_rate) =
        drain::write_steadily(&writer, &statement, args.rate, args.rows_per_tx, args.seconds).await?;
    drain::wait_caught_up(&client, &capture, cport).await?;
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    let text = reqwest_text(cport).await?;
    let kinesis = histogram_quantiles(&text, "bridge_capture_commit_to_ack_seconds");
    let published = harness::wait::until(
        "the relay to publish everything",
        Duration::from_secs(300),
        || async {
            relay.ensure_running()?;
            let n = counts.events.load(Ordering::Relaxed);
            Ok((n >= written).then_some(n))
        },
    )
    .await
    .unwrap_or_else(|_| counts.events.load(Ordering::Relaxed));
    let eventbridge = {
        let mut all = counts
            .event_latencies
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        exact_quantiles(&mut all)
    };
    relay.terminate(Duration::from_secs(30)).await?;
    let relay_seconds = relay_started.elapsed().as_secs_f64();
    capture.terminate(Duration::from_secs(30)).await?;
    let per_event = |n: u64| n as f64 / written.max(1) as f64;
    let results = Results {
        put_records_calls_per_event: per_event(counts.requests.load(Ordering::Relaxed)),
        put_records_records_per_event: per_event(counts.records.load(Ordering::Relaxed)),
        record_bytes_per_event: per_event(counts.record_bytes.load(Ordering::Relaxed)),
        get_records_calls_per_event: per_event(
            counts.reads.load(Ordering::Relaxed) + counts.throttled_reads.load(Ordering::Relaxed),
        ),
        put_events_calls_per_event: per_event(counts.put_events_calls.load(Ordering::Relaxed)),
        put_events_entries_per_event: per_event(counts.events.load(Ordering::Relaxed)),
        lease_table_calls_per_event: leases
            .plan
            .call_counts()
            .into_iter()
            .map(|(op, c)| (op, per_event(c.calls)))
            .collect(),
        relay_seconds,
        synchronous_standby: args.synchronous_standby,
        relay_mode: if args.fan_out {
            "enhanced fan-out"
        } else {
            "polling"
        },
        get_records_calls: counts.reads.load(Ordering::Relaxed),
        throttled_reads: counts.throttled_reads.load(Ordering::Relaxed),
        subscriptions: counts.subscriptions.load(Ordering::Relaxed),
        target_rate: args.rate,
        achieved_rate,
        events: written,
        commit_to_kinesis_ack: kinesis,
        write_to_eventbridge: eventbridge,
        capture_cpu_seconds_per_million: usage.cpu_seconds * 1e6 / written.max(1) as f64,
        capture_peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
        events_published: published,
        complete: published >= written && counts.records.load(Ordering::Relaxed) >= written,
    };
    print_table(&results, args.rows_per_tx);
    drain::write_json(&args.out, &results)?;
    anyhow::ensure!(results.complete, "not every event arrived");
    anyhow::ensure!(
        results.throttled_reads == 0,
        "the relay was throttled: it polled faster than a shard allows"
    );
    anyhow::ensure!(
        !args.fan_out || (results.subscriptions >= 4 && results.get_records_calls == 0),
        "with --fan-out the relay must subscribe to every shard and never poll"
    );
    Ok(())
}

pub async fn reqwest_text(port: u16) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?)
}

/// Quantiles from a Prometheus histogram's cumulative buckets.
fn histogram_quantiles(text: &str, name: &str) -> Quantiles {
    bucket_quantiles(&histogram_buckets(text, name))
}

/// A Prometheus histogram's cumulative buckets `(upper bound, count)`, in bound order.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// What a histogram counted between two scrapes (`before` may be empty).
pub fn bucket_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, cum)| {
            let earlier = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, cum - earlier)
        })
        .collect()
}

/// Quantiles of cumulative buckets, interpolated linearly inside the bucket (as
/// `histogram_quantile` does); buckets grow by 20 %, so that is the precision.
pub fn bucket_quantiles(buckets: &[(f64, f64)]) -> Quantiles {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let quantile = |q: f64| {
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return lower.0 * 1000.0;
                }
                let within = if cum > lower.1 {
                    (rank - lower.1) / (cum - lower.1)
                } else {
                    1.0
                };
                return (lower.0 + (le - lower.0) * within) * 1000.0;
            }
            lower = (le, cum);
        }
        0.0
    };
    let max = buckets
        .iter()
        .zip(std::iter::once(&(0.0, 0.0)).chain(buckets.iter()))
        .filter(|(b, prev)| b.1 > prev.1)
        .map(|(b, _)| b.0)
        .last()
        .unwrap_or(0.0);
    Quantiles {
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: max * 1000.0,
        samples: total as u64,
    }
}

pub fn exact_quantiles(samples: &mut [f64]) -> Quantiles {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i] * 1000.0
    };
    Quantiles {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
        samples: samples.len() as u64,
    }
}

fn print_table(r: &Results, per_tx: u64) {
    println!(
        "\n### latency, relay {}{}: {:.0} events/s achieved (target {}), {per_tx} rows per transaction, {} events\n",
        r.relay_mode,
        if r.synchronous_standby {
            " with --synchronous-standby (a physical standby must flush each commit first)"
        } else {
            ""
        },
        r.achieved_rate,
        r.target_rate,
        r.events
    );
    println!("| path | p50 | p99 | p99.9 | max | samples |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, q, unit) in [
        (
            "commit → Kinesis ack (capture, per batch)",
            &r.commit_to_kinesis_ack,
            "batches",
        ),
        (
            "outbox write → EventBridge (capture + relay, per event)",
            &r.write_to_eventbridge,
            "events",
        ),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} {unit} |",
            q.p50_ms, q.p99_ms, q.p999_ms, q.max_ms, q.samples
        );
    }
    println!(
        "\ncapture: {:.1} CPU s per million events, peak RSS {:.1} MiB; relay: {} GetRecords ({} throttled), {} subscriptions; everything arrived: {}",
        r.capture_cpu_seconds_per_million,
        r.capture_peak_rss_mib,
        r.get_records_calls,
        r.throttled_reads,
        r.subscriptions,
        if r.complete { "yes" } else { "NO" }
    );
}
