//! `bench pipeline`: what users feel — a monolith write until shipping's projection has it.
//! Outbox rows (`CustomerCreated`, one new customer each) are written at a steady rate; capture
//! puts them into the local endpoint's Kinesis, the relay reads them back (within a real
//! stream's read limits, or with `--fan-out`) and puts them on its EventBridge, which delivers
//! each one to shipping's queue as a rule would; shipping applies them to DynamoDB. The endpoint
//! answers SQS and DynamoDB after an injected service latency (10 ms per call, as AWS does)
//! and times every event at each hop: the stage breakdown.
//!
//! Not modelled: EventBridge's own delivery time to SQS (immediate here), network time to AWS.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use harness::endpoint;
use harness::moto::{aws_env, Moto};
use harness::process::{self, Proc};
use serde::Serialize;

use crate::latency::{exact_quantiles, Quantiles};
use crate::{drain, procstat};

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Events written per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    rows_per_tx: u64,
    /// How long to write.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Service latency of every SQS and DynamoDB call, milliseconds.
    #[arg(long, default_value_t = 10)]
    latency_ms: u64,
    /// The relay reads with enhanced fan-out instead of polling.
    #[arg(long)]
    fan_out: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/pipeline.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Results {
    relay_mode: &'static str,
    target_rate: u64,
    achieved_rate: f64,
    latency_ms: u64,
    events: u64,
    applied: u64,
    /// From `occurred_at` (the monolith's transaction) to each hop, per event.
    write_to_projection: Quantiles,
    capture: Quantiles,
    relay: Quantiles,
    eventbridge_to_queue: Quantiles,
    consumer: Quantiles,
    shipping_cpu_seconds_per_million: f64,
    shipping_peak_rss_mib: f64,
    complete: bool,
}

const QUEUE: &str = "shipping-events";

pub async fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let (_pg, client, db_env) = drain::migrated_postgres().await?;
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('bench_pipeline', 'pgoutput')",
            &[],
        )
        .await?;
    let endpoint = endpoint::start(endpoint::Options {
        keep_shards: Some(4),
        kinesis_read_limits: true,
        service_latency: Some(Duration::from_millis(args.latency_ms)),
        rule_queue: Some(QUEUE),
        trace_stages: true,
        ..endpoint::Options::default()
    })
    .await?;
    // The relay's leases and checkpoints, its dead letters and claim checks: moto (their
    // conditional writes are more than the endpoint's DynamoDB models).
    let moto = Moto::start().await?;
    let (code, out, err) = process::run("bridge", &["setup", "--stream", "bench"], &moto.env()).await?;
    anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");

    let mut capture_env = db_env.clone();
    capture_env.extend(aws_env(&endpoint.url));
    let mut relay_env = aws_env(&endpoint.url);
    for service in ["DYNAMODB", "SQS", "S3"] {
        relay_env.push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint.clone()));
    }
    let cport = harness::free_port()?;
    let clisten = format!("127.0.0.1:{cport}");
    let mut capture = Proc::spawn(
        "bridge",
        &[
            "capture",
            "--slot",
            "bench_pipeline",
            "--stream",
            "bench",
            "--metrics-listen",
            &clisten,
        ],
        &capture_env,
    )?;
    let rlisten = format!("127.0.0.1:{}", harness::free_port()?);
    let mut relay_args = vec!["relay", "--stream", "bench", "--metrics-listen", &rlisten];
    if args.fan_out {
        relay_args.extend(["--consumer-name", "bench-pipeline"]);
    }
    let mut relay = Proc::spawn("bridge", &relay_args, &relay_env)?;
    let slisten = format!("127.0.0.1:{}", harness::free_port()?);
    let mut shipping = Proc::spawn(
        "shipping",
        &["run", "--metrics-listen", &slisten, "--wait-seconds", "20"],
        &aws_env(&endpoint.url),
    )?;
    let sampler = shipping.pid().map(procstat::Sampler::start);
    // Start-up done: the slot streams, and an event written now goes all the way.
    harness::wait::until("capture to stream", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        relay.ensure_running()?;
        shipping.ensure_running()?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bench_pipeline' AND active",
                &[],
            )
            .await?;
        Ok(row.map(|_| ()))
    })
    .await?;
    let insert = format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
         SELECT u, 'Customer', u::text, 'CustomerCreated', \
                jsonb_build_object('customer_id', u::text, 'name', 'Customer ' || u::text, \
                                   'credit_limit', 1000, 'credit_reserved', 0, 'version', 1), 1 \
         FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, {})) AS s",
        args.rows_per_tx
    );
    let warm = client.prepare(&insert).await?;
    client.execute(&warm, &[]).await?;
    harness::wait::until(
        "a first event to reach the projection",
        Duration::from_secs(60),
        || async {
            Ok((endpoint.counts.transactions.load(Ordering::Relaxed) >= args.rows_per_tx).then_some(()))
        },
    )
    .await?;
    let before = endpoint.counts.transactions.load(Ordering::Relaxed);
    let cutoff = endpoint::now_seconds();

    eprintln!(
        "writing {} events/s for {} s: monolith → capture → Kinesis → relay → EventBridge → SQS → shipping → DynamoDB ({} ms per SQS/DynamoDB call)…",
        args.rate, args.seconds, args.latency_ms
    );
    let (written, achieved_rate) =
        drain::write_steadily(&client, &warm, args.rate, args.rows_per_tx, args.seconds).await?;
    let applied = harness::wait::until(
        "every event in the projection",
        Duration::from_secs(300),
        || async {
            shipping.ensure_running()?;
            let n = endpoint.counts.transactions.load(Ordering::Relaxed) - before;
            Ok((n >= written).then_some(n))
        },
    )
    .await
    .unwrap_or_else(|_| endpoint.counts.transactions.load(Ordering::Relaxed) - before);
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    shipping.terminate(Duration::from_secs(30)).await?;
    relay.terminate(Duration::from_secs(30)).await?;
    capture.terminate(Duration::from_secs(30)).await?;

    // The warm-up's events are left out: only events written during the run, all hops seen.
    let mut stages: Vec<_> = endpoint
        .stages()
        .into_iter()
        .filter(|s| s.applied > 0.0 && s.occurred_at >= cutoff && s.put_records > 0.0)
        .collect();
    stages.sort_by(|a, b| a.occurred_at.total_cmp(&b.occurred_at));
    let q = |f: &dyn Fn(&endpoint::consumer::Stages) -> f64| {
        let mut v: Vec<f64> = stages.iter().map(f).collect();
        exact_quantiles(&mut v)
    };
    let results = Results {
        relay_mode: if args.fan_out {
            "enhanced fan-out"
        } else {
            "polling"
        },
        target_rate: args.rate,
        achieved_rate,
        latency_ms: args.latency_ms,
        events: written,
        applied,
        write_to_projection: q(&|s| s.applied - s.occurred_at),
        capture: q(&|s| s.put_records - s.occurred_at),
        relay: q(&|s| s.put_events - s.put_records),
        eventbridge_to_queue: q(&|s| s.received - s.put_events),
        consumer: q(&|s| s.applied - s.received),
        shipping_cpu_seconds_per_million: usage.cpu_seconds * 1e6 / written.max(1) as f64,
        shipping_peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
        complete: applied >= written,
    };
    println!(
        "\n### pipeline, relay {}: write → projection at {:.0} events/s (target {}), SQS and DynamoDB answering in {} ms, {} events\n",
        results.relay_mode, results.achieved_rate, results.target_rate, results.latency_ms, results.events
    );
    println!("| stage | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, q) in [
        (
            "write → Kinesis (capture: commit, decode, batch, PutRecords)",
            &results.capture,
        ),
        (
            "Kinesis → EventBridge (relay: read, envelope, PutEvents)",
            &results.relay,
        ),
        (
            "EventBridge → shipping's receive (queue wait, long poll)",
            &results.eventbridge_to_queue,
        ),
        (
            "receive → projection (shipping: parse, decide, TransactWriteItems)",
            &results.consumer,
        ),
        ("**write → projection**", &results.write_to_projection),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            q.p50_ms, q.p99_ms, q.p999_ms, q.max_ms
        );
    }
    println!(
        "\nshipping: {:.1} CPU s per million events, peak RSS {:.1} MiB; every event applied: {}",
        results.shipping_cpu_seconds_per_million,
        results.shipping_peak_rss_mib,
        if results.complete { "yes" } else { "NO" }
    );
    drain::write_json(&args.out, &results)?;
    anyhow::ensure!(results.complete, "not every event reached the projection");
    Ok(())
}
