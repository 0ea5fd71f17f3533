//! `bench consumer`: shipping's own throughput. A backlog of monolith events waits in its queue
//! on the local endpoint, which answers SQS and DynamoDB after an injected service latency
//! (10 ms per call by default, as AWS answers; moto takes far longer and was the bound of
//! `bench backlog`). `shipping run` drains it, once with the old default concurrency and once
//! with the current one, side by side: events/s, CPU per event, peak RSS, calls per event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use harness::endpoint;
use harness::moto::aws_env;
use harness::process::Proc;
use serde::Serialize;
use serde_json::json;

use crate::{drain, procstat};

#[derive(Args, Debug)]
pub struct ConsumerArgs {
    /// Events in the queue before shipping starts (one new customer each).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Service latency of every SQS and DynamoDB call, milliseconds.
    #[arg(long, default_value_t = 10)]
    latency_ms: u64,
    /// `--concurrency` values to run, side by side (8: the default before this round; 128 now).
    #[arg(long, value_delimiter = ',', default_value = "8,64,128")]
    concurrency: Vec<u32>,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/consumer.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    concurrency: u32,
    latency_ms: u64,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
    calls_per_event: BTreeMap<String, f64>,
    /// The most calls of each operation the endpoint answered at once.
    peak_concurrent_calls: BTreeMap<String, u64>,
    complete: bool,
}

const QUEUE: &str = "shipping-events";

pub async fn run(args: ConsumerArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        let endpoint = endpoint::start(endpoint::Options {
            service_latency: Some(Duration::from_millis(args.latency_ms)),
            ..endpoint::Options::default()
        })
        .await?;
        for i in 0..args.events {
            endpoint.enqueue(QUEUE, event(i));
        }
        eprintln!(
            "shipping drains {} events, {} ms per SQS/DynamoDB call, --concurrency {concurrency}…",
            args.events, args.latency_ms
        );
        let listen = format!("127.0.0.1:{}", harness::free_port()?);
        let concurrency_arg = concurrency.to_string();
        let started = Instant::now();
        let mut shipping = Proc::spawn(
            "shipping",
            &[
                "run",
                "--metrics-listen",
                &listen,
                "--wait-seconds",
                "1",
                "--concurrency",
                &concurrency_arg,
            ],
            &aws_env(&endpoint.url),
        )?;
        let sampler = shipping.pid().map(procstat::Sampler::start);
        let drained = harness::wait::until("the queue to drain", Duration::from_secs(1800), || async {
            shipping.ensure_running()?;
            let applied = endpoint.counts.transactions.load(Ordering::Relaxed);
            Ok((applied >= args.events && endpoint.queue_depth(QUEUE) == 0).then_some(()))
        })
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let usage = sampler.map(|s| s.usage()).unwrap_or_default();
        shipping.terminate(Duration::from_secs(30)).await?;
        if let Err(err) = drained {
            anyhow::bail!("{err}\nshipping:\n{}", shipping.output());
        }
        let applied = endpoint.counts.transactions.load(Ordering::Relaxed);
        rows.push(Row {
            concurrency,
            latency_ms: args.latency_ms,
            events: applied,
            seconds,
            events_per_second: args.events as f64 / seconds.max(1e-9),
            cpu_seconds_per_million: usage.cpu_seconds * 1e6 / args.events as f64,
            peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
            calls_per_event: endpoint
                .calls()
                .into_iter()
                .map(|(op, n)| (op, n as f64 / args.events as f64))
                .collect(),
            peak_concurrent_calls: endpoint.peak_concurrent_calls(),
            complete: applied == args.events,
        });
    }
    println!(
        "\n### consumer: shipping drains {} events, SQS and DynamoDB answering in {} ms (local endpoint)\n",
        args.events, args.latency_ms
    );
    println!("| --concurrency | events/s | CPU s / M events | peak RSS | calls per event | DeleteMessageBatch at once (peak) | complete |");
    println!("|---:|---:|---:|---:|---|---:|---|");
    for r in &rows {
        let calls: Vec<String> = r
            .calls_per_event
            .iter()
            .filter(|(_, n)| **n >= 0.01)
            .map(|(op, n)| format!("{op} {n:.2}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.1} | {:.1} MiB | {} | {} | {} |",
            r.concurrency,
            r.events_per_second,
            r.cpu_seconds_per_million,
            r.peak_rss_mib,
            calls.join(", "),
            r.peak_concurrent_calls
                .get("DeleteMessageBatch")
                .copied()
                .unwrap_or(0),
            if r.complete { "yes" } else { "NO" }
        );
    }
    drain::write_json(&args.out, &rows)?;
    anyhow::ensure!(
        rows.iter().all(|r| r.complete),
        "an event was not applied exactly once"
    );
    Ok(())
}

/// A `CustomerCreated` for customer `i`, as EventBridge delivers it to SQS.
fn event(i: u64) -> String {
    let customer = format!("bench-c{i}");
    json!({
        "version": "0", "id": format!("bench-eb-{i}"), "detail-type": "CustomerCreated",
        "source": "legacy.monolith", "account": "123456789012", "time": "2026-11-29T12:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {
            "metadata": {"event_id": format!("00000000-0000-4000-9000-{i:012}"), "aggregate_type": "Customer",
                         "aggregate_id": customer, "aggregate_version": 1,
                         "occurred_at": "2026-11-29T12:00:00Z"},
            "data": {"customer_id": customer, "name": format!("Customer {i}"), "credit_limit": 1000,
                     "credit_reserved": 0, "version": 1}
        }
    })
    .to_string()
}
