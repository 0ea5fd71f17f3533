//! `bench cost`: what a million events cost to run on AWS, priced from what the other
//! scenarios counted (their JSON in target/bench): PutRecords records (PUT payload units),
//! GetRecords calls, PutEvents entries, the relay's lease-table calls (latency, polling and
//! fan-out), shipping's SQS and DynamoDB calls per event (backlog) — next to the blog's design
//! (AWS DMS into the same stream, a Lambda per batch of records) for the same load.
//!
//! Prices are flags, defaulting to the on-demand list prices for us-east-1 as published when
//! this was written; check them against the AWS pricing pages before relying on a figure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::drain;

#[derive(Args, Debug)]
pub struct CostArgs {
    /// `bench latency`'s results (polling).
    #[arg(long, default_value = "target/bench/latency.json")]
    latency: PathBuf,
    /// `bench latency --fan-out`'s results.
    #[arg(long, default_value = "target/bench/latency-fan-out.json")]
    fan_out: PathBuf,
    /// `bench backlog`'s results (shipping's calls per event).
    #[arg(long, default_value = "target/bench/backlog.json")]
    backlog: PathBuf,
    /// Events per second the stack runs at (fixed hourly costs are spread over them).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Shards of the stream.
    #[arg(long, default_value_t = 4.0)]
    shards: f64,
    /// USD per shard-hour (provisioned mode).
    #[arg(long, default_value_t = 0.015)]
    shard_hour: f64,
    /// USD per million PUT payload units (a record, per 25 KB).
    #[arg(long, default_value_t = 0.014)]
    put_payload_units_per_million: f64,
    /// USD per enhanced fan-out consumer-shard hour.
    #[arg(long, default_value_t = 0.015)]
    consumer_shard_hour: f64,
    /// USD per GB pushed by enhanced fan-out.
    #[arg(long, default_value_t = 0.013)]
    fan_out_gb: f64,
    /// USD per million custom events put on EventBridge (per 64 KB).
    #[arg(long, default_value_t = 1.0)]
    eventbridge_per_million: f64,
    /// USD per million SQS requests (standard queue, per 64 KB).
    #[arg(long, default_value_t = 0.40)]
    sqs_per_million: f64,
    /// USD per million DynamoDB on-demand write request units.
    #[arg(long, default_value_t = 0.625)]
    dynamodb_wru_per_million: f64,
    /// USD per million DynamoDB on-demand read request units.
    #[arg(long, default_value_t = 0.125)]
    dynamodb_rru_per_million: f64,
    /// USD per Fargate vCPU-hour and GB-hour (Linux/x86).
    #[arg(long, default_value_t = 0.04048)]
    fargate_vcpu_hour: f64,
    #[arg(long, default_value_t = 0.004445)]
    fargate_gb_hour: f64,
    /// USD per hour of the blog's DMS replication instance (dms.t3.medium, single-AZ).
    #[arg(long, default_value_t = 0.082)]
    dms_instance_hour: f64,
    /// USD per million Lambda requests and per GB-second (x86).
    #[arg(long, default_value_t = 0.20)]
    lambda_per_million: f64,
    #[arg(long, default_value_t = 0.000_016_666_7)]
    lambda_gb_second: f64,
    /// The blog's Lambda: records per invocation (the event source mapping's batch size),
    /// memory (GB) and seconds per invocation (one PutEvents per record, ~10 ms each).
    #[arg(long, default_value_t = 100.0)]
    lambda_batch: f64,
    #[arg(long, default_value_t = 0.128)]
    lambda_gb: f64,
    #[arg(long, default_value_t = 1.0)]
    lambda_seconds: f64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/cost.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Line {
    item: String,
    /// What the benchmark counted per event (or the fixed resource), as the table prints it.
    basis: String,
    bridge_polling: f64,
    bridge_fan_out: f64,
    dms_lambda: f64,
}

fn read(path: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run that scenario first)", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

pub fn run(args: CostArgs) -> anyhow::Result<()> {
    let polling = read(&args.latency)?;
    let fan_out = read(&args.fan_out)?;
    let backlog = read(&args.backlog)?;
    let million = 1e6;
    // Hours one million events take at the rate: fixed hourly costs are spread over them.
    let hours = million / args.rate / 3600.0;
    let mut lines: Vec<Line> = Vec::new();
    let mut line = |item: &str, basis: String, p: f64, f: f64, d: f64| {
        lines.push(Line {
            item: item.to_owned(),
            basis,
            bridge_polling: p,
            bridge_fan_out: f,
            dms_lambda: d,
        })
    };

    let units = num(&polling, "put_records_records_per_event");
    let put = units * million * args.put_payload_units_per_million / million;
    line(
        "Kinesis PUT payload units",
        format!("{units:.2} per event (one per record ≤ 25 KB; PutRecords batching does not change it)"),
        put,
        put,
        put,
    );
    let shards = args.shards * args.shard_hour * hours;
    line(
        "Kinesis shard-hours",
        format!("{} shards", args.shards),
        shards,
        shards,
        shards,
    );
    let relay_hours = hours;
    let bytes = num(&fan_out, "record_bytes_per_event");
    let efo = args.shards * args.consumer_shard_hour * relay_hours + bytes * million / 1e9 * args.fan_out_gb;
    line(
        "Enhanced fan-out",
        format!(
            "{} consumer-shards, {bytes:.0} bytes per event pushed",
            args.shards
        ),
        0.0,
        efo,
        0.0,
    );
    let gets = num(&polling, "get_records_calls_per_event");
    line(
        "GetRecords",
        format!("{gets:.4} calls per event (included in shard-hours)"),
        0.0,
        0.0,
        0.0,
    );
    let entries = num(&polling, "put_events_entries_per_event");
    let eb = entries * args.eventbridge_per_million;
    line(
        "EventBridge PutEvents",
        format!(
            "{entries:.2} entries per event in {:.3} calls (priced per entry: batching does not change it)",
            num(&polling, "put_events_calls_per_event")
        ),
        eb,
        eb,
        eb,
    );
    let lease_writes = |v: &Value| {
        v["lease_table_calls_per_event"]
            .as_object()
            .map(|ops| {
                ops.iter()
                    .filter(|(op, _)| matches!(op.as_str(), "UpdateItem" | "PutItem" | "DeleteItem"))
                    .filter_map(|(_, n)| n.as_f64())
                    .sum::<f64>()
            })
            .unwrap_or(0.0)
    };
    let (lp, lf) = (lease_writes(&polling), lease_writes(&fan_out));
    line(
        "Relay checkpoints and leases (DynamoDB)",
        format!(
            "{lp:.4} / {lf:.4} writes per event (polling / fan-out); the blog: Lambda checkpoints for free"
        ),
        lp * args.dynamodb_wru_per_million,
        lf * args.dynamodb_wru_per_million,
        0.0,
    );
    // The processes: capture (0.5 vCPU, 1 GB) and two relays (0.25 vCPU, 0.5 GB) as the
    // template runs them; the blog: a DMS instance and the Lambda.
    let fargate = |vcpu: f64, gb: f64| (vcpu * args.fargate_vcpu_hour + gb * args.fargate_gb_hour) * hours;
    let tasks = fargate(0.5, 1.0) + 2.0 * fargate(0.25, 0.5);
    let invocations = million / args.lambda_batch;
    let lambda = invocations * args.lambda_per_million / million
        + invocations * args.lambda_gb * args.lambda_seconds * args.lambda_gb_second;
    line(
        "Compute",
        format!(
            "bridge: capture + 2 relays on Fargate; blog: dms.t3.medium + Lambda ({} records per invocation, {} GB, {} s)",
            args.lambda_batch, args.lambda_gb, args.lambda_seconds
        ),
        tasks,
        tasks,
        args.dms_instance_hour * hours + lambda,
    );
    let bridge_total: (f64, f64, f64) = lines.iter().fold((0.0, 0.0, 0.0), |t, l| {
        (t.0 + l.bridge_polling, t.1 + l.bridge_fan_out, t.2 + l.dms_lambda)
    });

    // The consumer: shipping's calls per event, the same in both designs.
    let calls = per_operation(&backlog["calls_per_event"]);
    let entries_of = per_operation(&backlog["entries_per_event"]);
    const SQS: [&str; 6] = [
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "SendMessage",
        "GetQueueUrl",
    ];
    let sqs: f64 = calls
        .iter()
        .filter(|(op, _)| SQS.contains(&op.as_str()))
        .map(|(_, n)| n)
        .sum();
    let get = |op: &str| calls.get(op).copied().unwrap_or(0.0);
    // A transactional write costs 2 WRU per item (≤ 1 KB), a plain one 1; a strongly
    // consistent read 1 RRU (≤ 4 KB).
    let wru = 2.0 * entries_of.get("TransactWriteItems").copied().unwrap_or(0.0)
        + get("PutItem")
        + get("UpdateItem")
        + get("DeleteItem")
        + entries_of.get("BatchWriteItem").copied().unwrap_or(0.0);
    let rru = get("GetItem") + get("Query") + get("GetRecords");
    let consumer = [
        (
            "shipping: SQS requests",
            format!("{sqs:.3} per event ({})", ops_text(&calls, &SQS)),
            sqs * args.sqs_per_million,
        ),
        (
            "shipping: DynamoDB writes",
            format!("{wru:.2} WRU per event (a transaction item is 2)"),
            wru * args.dynamodb_wru_per_million,
        ),
        (
            "shipping: DynamoDB reads",
            format!("{rru:.2} RRU per event (GetItem, Query, Streams)"),
            rru * args.dynamodb_rru_per_million,
        ),
    ];
    let consumer_total: f64 = consumer.iter().map(|c| c.2).sum();

    println!(
        "\n### cost: USD per million events at {:.0} events/s, on-demand list prices (us-east-1; flags of `bench cost`)\n",
        args.rate
    );
    println!("| item | what was counted | bridge, polling | bridge, fan-out | DMS + Lambda (blog) |");
    println!("|---|---|---:|---:|---:|");
    for l in &lines {
        println!(
            "| {} | {} | ${:.3} | ${:.3} | ${:.3} |",
            l.item, l.basis, l.bridge_polling, l.bridge_fan_out, l.dms_lambda
        );
    }
    println!(
        "| **monolith → EventBridge** | | **${:.3}** | **${:.3}** | **${:.3}** |",
        bridge_total.0, bridge_total.1, bridge_total.2
    );
    for (item, basis, usd) in &consumer {
        println!("| {item} | {basis} | ${usd:.3} | ${usd:.3} | ${usd:.3} |");
    }
    println!(
        "| **with the shipping consumer** | | **${:.3}** | **${:.3}** | **${:.3}** |",
        bridge_total.0 + consumer_total,
        bridge_total.1 + consumer_total,
        bridge_total.2 + consumer_total
    );
    #[derive(Serialize)]
    struct Out<'a> {
        rate: f64,
        lines: &'a [Line],
        consumer: Vec<(&'a str, &'a str, f64)>,
        totals: [f64; 3],
        totals_with_consumer: [f64; 3],
    }
    drain::write_json(
        &args.out,
        &Out {
            rate: args.rate,
            lines: &lines,
            consumer: consumer.iter().map(|c| (c.0, c.1.as_str(), c.2)).collect(),
            totals: [bridge_total.0, bridge_total.1, bridge_total.2],
            totals_with_consumer: [
                bridge_total.0 + consumer_total,
                bridge_total.1 + consumer_total,
                bridge_total.2 + consumer_total,
            ],
        },
    )?;
    Ok(())
}

/// A `{operation: number}` object of a scenario's JSON.
fn per_operation(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default()
}

fn ops_text(calls: &BTreeMap<String, f64>, ops: &[&str]) -> String {
    ops.iter()
        .filter_map(|op| calls.get(*op).map(|n| format!("{op} {n:.3}")))
        .collect::<Vec<_>>()
        .join(", ")
}
