//! `bench relay`: Kinesis → EventBridge throughput of `bridge relay` with 1, 2 and 4 shards.
//! The local endpoint serves a pre-filled stream (DMS records of outbox inserts) and accepts
//! every PutEvents; leases and checkpoints live in moto's DynamoDB, one write per page.
//!
//! Two rounds side by side: with Kinesis' per-shard read limits enforced (5 GetRecords/s,
//! 2 MB/s — what a real stream imposes, so adding shards is how a stream scales), and
//! without any (the relay's CPU on this machine is then the bound). Without limits, a second
//! configuration beside the plain one: ten routes (nine that never match, tried first), two
//! buses, a detail-type template, a metadata column and a JSON Schema contract on every event
//! type — the cost per event of routing and contracts.

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
pub struct RelayArgs {
    /// Events in the stream, for each shard count.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(10..))]
    events: u64,
    /// Shard counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    shards: Vec<usize>,
    /// EventBridge's time per PutEvents call, milliseconds (0: answered at once, so the relay's
    /// CPU is what is measured; ~20 at AWS, where calls in flight at once are what count).
    #[arg(long, default_value_t = 0)]
    put_events_latency_ms: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/relay.json")]
    out: PathBuf,
    /// Measure the routed configuration too (ten routes, two buses, contracts).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    routed: bool,
}

/// Ten routes, the first nine never matching the bench's events (so each event is tried
/// against all of them), the tenth sending about half (aggregate ids starting 0-4) to a second
/// bus with its own detail type and a metadata column; a contract for both detail types.
const ROUTED: &str = r#"
[routing]
[[routing.routes]]
aggregate_type = "Customer"
event_bus = "bench-customers"
[[routing.routes]]
aggregate_type = "Invoice*"
action = "skip"
[[routing.routes]]
event_type = "CustomerCreated"
event_bus = "bench-customers"
[[routing.routes]]
event_type = "Credit*"
event_bus = "bench-customers"
[[routing.routes]]
columns = { aggregatetype = "Shipment" }
action = "park"
[[routing.routes]]
aggregate_type = "Order"
event_type = "OrderCancelled"
event_bus = "bench-cancellations"
[[routing.routes]]
aggregate_type = "Order"
event_type = "OrderRejected"
event_bus = "bench-cancellations"
[[routing.routes]]
event_type = "Internal*"
action = "skip"
[[routing.routes]]
columns = { aggregateid = "test-*" }
action = "park"
[[routing.routes]]
name = "second-bus"
aggregate_type = "Order"
columns = { aggregateid = "[0-4]*" }
event_bus = "bench-orders-b"
detail_type = "{aggregatetype}.{type}"
metadata_columns = ["aggregateid"]

[contracts]
schemas = "schemas"
require_schema = true
"#;

const CONTRACT: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["order_id", "pad"],
  "properties": {"order_id": {"type": "integer", "minimum": 0}, "pad": {"type": "string", "maxLength": 1000}}
}"#;

/// The routed configuration's file and schemas, in `dir`; returns the file's path.
fn routed_config(dir: &std::path::Path) -> anyhow::Result<String> {
    let schemas = dir.join("schemas/legacy.monolith");
    std::fs::create_dir_all(&schemas)?;
    for detail_type in ["OrderPlaced", "Order.OrderPlaced"] {
        std::fs::write(schemas.join(format!("{detail_type}.json")), CONTRACT)?;
    }
    let path = dir.join("routed.toml");
    std::fs::write(&path, ROUTED)?;
    Ok(path.to_string_lossy().into_owned())
}

const PLAIN: &str = "one bus, no routes";
const ROUTED_NAME: &str = "10 routes, 2 buses, contracts";

#[derive(Debug, Serialize)]
struct RelayRow {
    read_limits: &'static str,
    configuration: &'static str,
    shards: usize,
    events: u64,
    seconds: f64,
    events_per_second: f64,
    /// From the first PutEvents to the last: without start-up (leases, first reads).
    steady_events_per_second: f64,
    ratio_to_one_shard: f64,
    cpu_seconds_per_million: f64,
    peak_rss_mib: f64,
    /// GetRecords calls answered, and refused by the read limits (the relay paces itself
    /// within them: none should be).
    get_records_calls: u64,
    throttled_reads: u64,
    put_events_latency_ms: u64,
    /// The most PutEvents calls the endpoint answered at once (with a latency only).
    put_events_at_once_peak: u64,
    complete: bool,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let routed = routed_config(dir.path())?;
    let mut rounds = vec![
        ("Kinesis per-shard limits", true, PLAIN),
        ("none (CPU-bound)", false, PLAIN),
    ];
    if args.routed {
        rounds.push(("none (CPU-bound)", false, ROUTED_NAME));
    }
    let mut results: Vec<RelayRow> = Vec::new();
    for (read_limits, limited, configuration) in rounds {
        let first = results.len();
        for &shards in &args.shards {
            let stream = format!(
                "bench-relay-{shards}-{}-{}",
                if limited { "limited" } else { "free" },
                if configuration == PLAIN { "plain" } else { "routed" }
            );
            let (code, out, err) =
                process::run("bridge", &["setup", "--stream", &stream], &moto.env()).await?;
            anyhow::ensure!(code == Some(0), "bridge setup failed: {out}{err}");
            let endpoint = endpoint::start(endpoint::Options {
                keep_shards: Some(shards.max(1)),
                kinesis_read_limits: limited,
                time_events: false,
                record_ids: false,
                put_events_latency: (args.put_events_latency_ms > 0)
                    .then(|| Duration::from_millis(args.put_events_latency_ms)),
                ..endpoint::Options::default()
            })
            .await?;
            endpoint.preload((0..args.events).map(endpoint::outbox_record));
            let mut env = aws_env(&endpoint.url);
            for service in ["DYNAMODB", "SQS", "S3"] {
                env.push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint.clone()));
            }
            eprintln!(
                "relaying {} events from {shards} shard(s), read limits: {read_limits}…",
                args.events
            );
            let listen = format!("127.0.0.1:{}", harness::free_port()?);
            let started = Instant::now();
            let mut relay_args = vec!["relay", "--stream", &stream, "--metrics-listen", &listen];
            if !limited {
                // Without limits, the relay need not keep within them either.
                relay_args.extend(["--max-reads-per-second", "1000"]);
            }
            if configuration == ROUTED_NAME {
                relay_args.extend(["--config", &routed]);
            }
            let mut relay = Proc::spawn("bridge", &relay_args, &env)?;
            let sampler = relay.pid().map(procstat::Sampler::start);
            let arrived =
                harness::wait::until("every event on the bus", Duration::from_secs(1800), || async {
                    relay.ensure_running()?;
                    let n = endpoint.counts.events.load(Ordering::Relaxed);
                    Ok((n >= args.events).then_some(n))
                })
                .await;
            let seconds = started.elapsed().as_secs_f64();
            let usage = sampler.map(|s| s.usage()).unwrap_or_default();
            relay.terminate(Duration::from_secs(30)).await?;
            let published = arrived.unwrap_or_else(|_| endpoint.counts.events.load(Ordering::Relaxed));
            let window = endpoint
                .counts
                .events_window
                .lock()
                .ok()
                .and_then(|w| *w)
                .map_or(seconds, |(first, last)| (last - first).as_secs_f64());
            results.push(RelayRow {
                read_limits,
                configuration,
                shards,
                events: published,
                seconds,
                events_per_second: published as f64 / seconds.max(1e-9),
                steady_events_per_second: published as f64 / window.max(1e-9),
                ratio_to_one_shard: 0.0,
                cpu_seconds_per_million: usage.cpu_seconds * 1e6 / published.max(1) as f64,
                peak_rss_mib: usage.peak_rss_bytes as f64 / 1_048_576.0,
                get_records_calls: endpoint.counts.reads.load(Ordering::Relaxed),
                throttled_reads: endpoint.counts.throttled_reads.load(Ordering::Relaxed),
                put_events_latency_ms: args.put_events_latency_ms,
                put_events_at_once_peak: endpoint
                    .peak_concurrent_calls()
                    .get("PutEvents")
                    .copied()
                    .unwrap_or(0),
                complete: published >= args.events,
            });
        }
        let base = results.get(first).map_or(0.0, |r| r.steady_events_per_second);
        for r in results.iter_mut().skip(first) {
            r.ratio_to_one_shard = if base > 0.0 {
                r.steady_events_per_second / base
            } else {
                0.0
            };
        }
    }
    println!(
        "\n### relay: Kinesis → EventBridge, local endpoint, {} events, PutEvents answered in {} ms\n",
        args.events, args.put_events_latency_ms
    );
    println!("| read limits | configuration | shards | events/s (steady) | vs 1 shard | events/s (incl. start-up) | CPU s / M events | peak RSS | GetRecords (throttled) | PutEvents at once (peak) | complete |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} | {:.2}× | {:.0} | {:.1} | {:.1} MiB | {} ({}) | {} | {} |",
            r.read_limits,
            r.configuration,
            r.shards,
            r.steady_events_per_second,
            r.ratio_to_one_shard,
            r.events_per_second,
            r.cpu_seconds_per_million,
            r.peak_rss_mib,
            r.get_records_calls,
            r.throttled_reads,
            r.put_events_at_once_peak,
            if r.complete { "yes" } else { "NO" }
        );
    }
    // Routing and contracts' cost per event: the routed rows' CPU beside the plain CPU-bound
    // rows of the same shard count (one run, the same machine).
    for routed in results.iter().filter(|r| r.configuration == ROUTED_NAME) {
        if let Some(plain) = results.iter().find(|p| {
            p.configuration == PLAIN && !p.read_limits.starts_with("Kinesis") && p.shards == routed.shards
        }) {
            println!(
                "\nroutes and contracts, {} shard(s): {:+.2} µs CPU per event ({:.1} → {:.1} CPU s / M events)",
                routed.shards,
                routed.cpu_seconds_per_million - plain.cpu_seconds_per_million,
                plain.cpu_seconds_per_million,
                routed.cpu_seconds_per_million
            );
        }
    }
    drain::write_json(&args.out, &results)?;
    anyhow::ensure!(
        results.iter().all(|r| r.complete),
        "a run did not publish everything"
    );
    // Behaviour, not speed: a relay that keeps to --max-reads-per-second and its share of the
    // bytes is never refused.
    anyhow::ensure!(
        results.iter().all(|r| r.throttled_reads == 0),
        "the relay was throttled: it read faster than a shard allows"
    );
    Ok(())
}
