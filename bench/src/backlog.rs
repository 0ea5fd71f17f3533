//! `bench backlog`: a consumer slower than its producer. N monolith events wait in shipping's
//! queue — as EventBridge delivers them — before `shipping run` starts, and it drains them into
//! its DynamoDB projection (moto, split by service). Reported: the drain rate, the consumer's
//! peak RSS after each tenth of the backlog (flat when memory is bounded by the consumer's
//! concurrency rather than by the backlog), and that every event was applied exactly once.
//!
//! The events: `CreditReserved` (version 2) and `CustomerCreated` (version 1) for N/2 customers,
//! queued newest first, so half of them arrive stale and must be recorded without undoing the
//! newer state.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use clap::Args;
use harness::moto::Moto;
use harness::process::{self, Proc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{drain, procstat};

#[derive(Args, Debug)]
pub struct BacklogArgs {
    /// Events waiting in the queue before the consumer starts (even: two per customer).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(2..))]
    events: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/backlog.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct BacklogRow {
    events: u64,
    fill_seconds: f64,
    drain_seconds: f64,
    events_per_second: f64,
    /// Peak RSS (VmHWM) of `shipping run` when 10 %, 20 %, … 100 % of the backlog was applied.
    peak_rss_mib_by_tenth: Vec<f64>,
    peak_rss_mib: f64,
    cpu_seconds_per_million: f64,
    /// shipping's AWS calls per event applied, by operation, as it made them (counted by a
    /// proxy in front of moto): what the cost table prices.
    calls_per_event: std::collections::BTreeMap<String, f64>,
    /// Their entries per event (items of a TransactWriteItems, messages of a batch).
    entries_per_event: std::collections::BTreeMap<String, f64>,
    inbox_items: i64,
    customers: i64,
    customers_wrong: u64,
    complete: bool,
}

const QUEUE: &str = "shipping-events";

pub async fn run(args: BacklogArgs) -> anyhow::Result<()> {
    let events = args.events - args.events % 2;
    let moto = Moto::start_split().await?;
    let env = moto.env();
    let (code, out, err) = process::run("shipping", &["setup"], &env).await?;
    anyhow::ensure!(code == Some(0), "shipping setup failed: {out}{err}");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);

    eprintln!("queueing {events} events for shipping…");
    let started = Instant::now();
    fill(&sqs, events).await?;
    let fill_seconds = started.elapsed().as_secs_f64();

    eprintln!("draining them with shipping run…");
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let started = Instant::now();
    // Each service behind a counting proxy: the calls shipping makes per event.
    let mut proxies = Vec::new();
    let mut run_env = env.clone();
    for (key, value) in run_env.iter_mut() {
        if key.starts_with("AWS_ENDPOINT_URL") {
            let proxy = harness::faults::FaultProxy::start(value).await?;
            *value = proxy.endpoint.clone();
            proxies.push(proxy);
        }
    }
    let mut shipping = Proc::spawn(
        "shipping",
        &["run", "--metrics-listen", &listen, "--wait-seconds", "1"],
        &run_env,
    )?;
    let sampler = shipping.pid().map(procstat::Sampler::start);
    let mut by_tenth = Vec::new();
    let mut last_report = Instant::now();
    let deadline = started + Duration::from_secs(6 * 3600);
    let drained: anyhow::Result<()> = loop {
        if let Err(e) = shipping.ensure_running() {
            break Err(e);
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!("the backlog was not applied within 6 h"));
        }
        let applied = harness::metrics::scrape_sum(port, "shipping_events_applied_total")
            .await
            .unwrap_or(0.0) as u64;
        let rss = sampler.as_ref().map_or(0.0, |s| mib(s.usage().peak_rss_bytes));
        while by_tenth.len() < 10 && applied * 10 >= events * (by_tenth.len() as u64 + 1) {
            by_tenth.push(rss);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "[{:>6.1}s] applied {applied} of {events}; peak RSS {rss:.1} MiB",
                started.elapsed().as_secs_f64()
            );
        }
        if applied >= events {
            break Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The metric counts attempts: a redelivered message would count twice. The inbox is the
    // truth — wait (briefly) until it holds every event before stopping the clock.
    let mut inbox_items = harness::shipping::count(&dynamo, "shipping-inbox").await?;
    let settle = Instant::now() + Duration::from_secs(120);
    while drained.is_ok() && inbox_items < events as i64 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_secs(2)).await;
        inbox_items = harness::shipping::count(&dynamo, "shipping-inbox").await?;
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(|s| s.usage()).unwrap_or_default();
    shipping.terminate(Duration::from_secs(30)).await?;
    drained.map_err(|e| anyhow::anyhow!("{e}\nshipping:\n{}", shipping.output()))?;

    let customers = harness::shipping::scan(&dynamo, "shipping-customers").await?;
    let customers_wrong = customers
        .iter()
        .filter(|c| {
            harness::shipping::text(c, "aggregate_version") != "2"
                || harness::shipping::text(c, "credit_reserved").parse::<f64>().ok() != Some(25.0)
        })
        .count() as u64;
    let mut calls = std::collections::BTreeMap::new();
    let mut entries = std::collections::BTreeMap::new();
    for proxy in &proxies {
        for (op, count) in proxy.plan.call_counts() {
            *calls.entry(op.clone()).or_insert(0.0) += count.calls as f64 / events as f64;
            *entries.entry(op).or_insert(0.0) += count.entries as f64 / events as f64;
        }
    }
    let row = BacklogRow {
        calls_per_event: calls,
        entries_per_event: entries,
        events,
        fill_seconds,
        drain_seconds,
        events_per_second: events as f64 / drain_seconds.max(1e-9),
        peak_rss_mib: mib(usage.peak_rss_bytes),
        peak_rss_mib_by_tenth: by_tenth,
        cpu_seconds_per_million: usage.cpu_seconds * 1e6 / events as f64,
        inbox_items,
        customers: customers.len() as i64,
        customers_wrong,
        complete: inbox_items == events as i64
            && customers.len() as u64 == events / 2
            && customers_wrong == 0,
    };

    println!("\n### backlog: shipping drains {events} queued events (moto)\n");
    println!("| events | events/s | peak RSS at 10 % … 100 % drained | CPU s / M events | inbox | customers (wrong) | complete |");
    println!("|---:|---:|---|---:|---:|---:|---|");
    let tenths: Vec<String> = row
        .peak_rss_mib_by_tenth
        .iter()
        .map(|m| format!("{m:.1}"))
        .collect();
    println!(
        "| {} | {:.0} | {} MiB | {:.1} | {} | {} ({}) | {} |",
        row.events,
        row.events_per_second,
        tenths.join(" / "),
        row.cpu_seconds_per_million,
        row.inbox_items,
        row.customers,
        row.customers_wrong,
        if row.complete { "yes" } else { "NO" }
    );
    let per_event: Vec<String> = row
        .calls_per_event
        .iter()
        .map(|(op, n)| format!("{op} {n:.3}"))
        .collect();
    println!("\nshipping's calls per event: {}", per_event.join(", "));
    drain::write_json(&args.out, &row)?;
    anyhow::ensure!(row.complete, "the backlog was not applied exactly once: {row:?}");
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// Queues two events per customer, newest first, ten per SendMessageBatch, eight calls at once.
async fn fill(sqs: &aws_sdk_sqs::Client, events: u64) -> anyhow::Result<()> {
    let url = harness::dlq::queue_url(sqs, QUEUE).await?;
    let mut calls = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while next < events || !calls.is_empty() {
        while next < events && calls.len() < 8 {
            let mut batch = sqs.send_message_batch().queue_url(&url);
            for i in next..(next + 10).min(events) {
                batch = batch.entries(
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("m{}", i - next))
                        .message_body(event(i).to_string())
                        .build()?,
                );
            }
            next = (next + 10).min(events);
            calls.spawn(batch.send());
        }
        if let Some(done) = calls.join_next().await {
            let out = done??;
            anyhow::ensure!(
                out.failed().is_empty(),
                "SendMessageBatch failed: {:?}",
                out.failed()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("queued {next} of {events}");
        }
    }
    Ok(())
}

/// Event `i` as EventBridge delivers it to SQS: even `i` is customer i/2's `CreditReserved`
/// (version 2), odd `i` the same customer's `CustomerCreated` (version 1), queued after it.
fn event(i: u64) -> Value {
    let customer = format!("bench-c{}", i / 2);
    let newer = i.is_multiple_of(2);
    let (detail_type, version, reserved) = if newer {
        ("CreditReserved", 2, 25)
    } else {
        ("CustomerCreated", 1, 0)
    };
    json!({
        "version": "0",
        "id": format!("bench-eb-{i}"),
        "detail-type": detail_type,
        "source": "legacy.monolith",
        "account": "123456789012",
        "time": "2026-11-28T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "metadata": {
                "event_id": format!("00000000-0000-4000-9000-{i:012}"),
                "aggregate_type": "Customer",
                "aggregate_id": customer,
                "aggregate_version": version,
                "occurred_at": "2026-11-28T12:00:00Z",
            },
            "data": {"customer_id": customer, "name": format!("Customer {}", i / 2),
                     "credit_limit": 1000, "credit_reserved": reserved, "version": version},
        }
    })
}
