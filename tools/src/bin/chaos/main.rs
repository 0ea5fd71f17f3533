//! `chaos`: the whole pipeline on the embedded stack under faults injected at seeded random
//! moments, then a check of every guarantee against the monolith's database.
//!
//! Load: `legacy-sim load` in small seeded chunks (a chunk cut short by a Postgres restart is
//! simply followed by the next; what committed is the ground truth). Faults, each kind in turn
//! in a seeded order: kill -9 of capture, relay and shipping (consumer + publisher); Postgres
//! fast and immediate restarts; a failover (the primary stopped with `-m immediate`, its
//! streaming standby promoted without waiting for it to catch up, a new standby cloned from the
//! new primary); `pg_terminate_backend` of the walsender; an AWS outage (the TCP
//! proxy in front of the emulator refuses connections), added latency, 5xx answers, throttled
//! and partially failed PutRecords and PutEvents, and cancelled TransactWriteItems (the fault
//! proxy behind it); a long brownout (503 to every call) of each AWS service in turn — DynamoDB,
//! SQS, EventBridge, Kinesis, S3 — longer than the shipping queue's whole redrive budget; a
//! silent partition (no bytes, sockets left open) towards Postgres and towards AWS; payloads
//! with numbers beyond f64, unicode and deep nesting; and events no stage can store (a key over
//! DynamoDB's limit, a number beyond its range), which must be parked; and the one-off paths: a
//! `bridge setup --full-load` killed midway (capture must refuse its slot, the load run again
//! must hold every row), capture killed in the middle of an outbox resync (the slot taken away
//! under it), and a SIGTERM while the synchronous standby it waits for is down. After the load:
//! quiescence, then one table — events written, faults by kind, delivered to each stage,
//! duplicates, lost, phantoms, projection mismatches, healthy events dead-lettered (must be 0),
//! aggregates out of commit order in Kinesis (must be 0), DLQ entries, and the time capture took
//! to get past each fault.
//!
//! Every database user goes through a TCP proxy whose upstream follows the primary: capture
//! through its own (silent partitions cut capture's path alone), the load through another. The
//! harness's own queries go to `stack.pg`, which a failover replaces with the promoted server,
//! so the ground truth is always the current primary's outbox. A failover takes back what the
//! standby had not received: records of those rows in Kinesis are *phantoms* — counted, not
//! failures — and the aggregates they touched are left out of the projection comparison.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use harness::faults::FaultProxy;
use harness::moto::aws_env;
use harness::proxy::Proxy;
use harness::stack::{outbox_id, Stack};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "The pipeline under seeded faults; reports what was lost (nothing)"
)]
struct Args {
    /// Outbox events to write: the load runs until the outbox holds at least this many rows.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..))]
    events: u64,
    /// Faults to inject (every kind at least once when this is at least the number of kinds).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..))]
    faults: u64,
    /// Seed for the load and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events per second the load generator aims at.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/chaos/report.json")]
    out: std::path::PathBuf,
    /// How long each brownout lasts (s). The shipping service runs with `--retry-delay 1` and a
    /// redrive budget of 3 receives, spent after 1 + 2 + 4 s of failures: 20 s outlasts it.
    #[arg(long, default_value_t = 20)]
    brownout_secs: u64,
    /// How long each silent partition lasts (s); capture runs with `--replication-timeout-secs 5`.
    #[arg(long, default_value_t = 10)]
    partition_secs: u64,
}

/// The shipping queue's redrive budget in the chaos run: small, so a brownout outlasts it.
const MAX_RECEIVE_COUNT: &str = "3";

mod fault;
mod lifecycle;
mod pipeline;
mod report;
mod verify;

use fault::*;
use pipeline::*;
use report::*;
use verify::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    eprintln!(
        "chaos: {} events, {} faults, seed {}",
        args.events, args.faults, args.seed
    );
    let mut stack = Stack::start_split().await?;
    let mut db = Database::start(&stack).await?;
    let sdk = stack.moto.sdk_config().await;
    stack
        .run_ok("shipping", &["setup", "--max-receive-count", MAX_RECEIVE_COUNT])
        .await?;
    // Every event the relay publishes, as a subscriber receives it.
    let bus = harness::bus::subscribe(
        &sdk,
        "legacy-monolith",
        "chaos-observer",
        &json!({"source": ["legacy.monolith"]}),
    )
    .await?;

    // Processes → TCP proxy (outages) → fault proxy (errors, latency) → moto.
    let faults = FaultProxy::start(&stack.moto.endpoint).await?;
    let outage = Proxy::start(faults.endpoint.trim_start_matches("http://")).await?;
    // Every process → a TCP proxy that follows the primary → Postgres.
    let shared_url = Database::url_via(&stack, &db.shared_path);
    let mut env = stack.env_with(&[("DATABASE_URL", &shared_url)]);
    env.retain(|(k, _)| !k.starts_with("AWS_"));
    env.extend(aws_env(&outage.endpoint));
    // Capture → its own such proxy (silent partitions) → Postgres.
    let mut capture_env = env.clone();
    capture_env.retain(|(k, _)| k != "DATABASE_URL");
    capture_env.push(("DATABASE_URL".into(), Database::url_via(&stack, &db.capture_path)));
    let mut pipeline = Pipeline {
        capture: Pipeline::spawn_capture(&capture_env)?,
        capture_env,
        relay: Pipeline::spawn_relay(&env)?,
        shipping: Pipeline::spawn_shipping(&env)?,
        env,
    };
    stack.wait_slot_active("outbox_bridge", &pipeline.capture).await?;
    // The observer drains its queue throughout, as a live subscriber does: a queue left to grow
    // to the whole run would make every delivery to it slower (moto scans its messages).
    let observing = Arc::new(AtomicBool::new(true));
    // The deepest backlog the shipping service's queue reached: the consumer is the slowest
    // stage here, so under load it drains a backlog while the producer keeps writing.
    let peak_backlog = Arc::new(AtomicU64::new(0));
    let observer = tokio::spawn({
        let observing = observing.clone();
        let peak_backlog = peak_backlog.clone();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let mut bus = bus;
        async move {
            let mut sampled = Instant::now();
            while observing.load(Ordering::SeqCst) {
                if let Err(err) = bus.poll().await {
                    eprintln!("observer: {err:#}");
                }
                if sampled.elapsed() > Duration::from_secs(10) {
                    sampled = Instant::now();
                    if let Ok(depth) = queue_depth(&sqs, "shipping-events").await {
                        peak_backlog.fetch_max(depth, Ordering::SeqCst);
                        eprintln!(
                            "[{:>6.1}s] observed {} events; shipping queue backlog {depth}",
                            started.elapsed().as_secs_f64(),
                            bus.received.len()
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            bus
        }
    });

    // The schedule: kinds in a seeded order, at seeded moments over the load's expected span.
    let span = (args.events as f64 / args.rate as f64).max(5.0);
    let mut kinds = KINDS.to_vec();
    kinds.shuffle(&mut rng);
    let mut schedule: Vec<(f64, Fault)> = (0..args.faults)
        .map(|i| {
            let at = rng.random_range(1.0..span);
            (at, kinds[(i as usize) % kinds.len()])
        })
        .collect();
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));

    // The load, in chunks of ~30 events, each chunk its own seeded plan, until the outbox holds
    // --events rows (counted in the database: chunks cut short by a restart write fewer). It
    // reaches whichever server is the primary through the shared proxy.
    let load_env = stack.env_with(&[("DATABASE_URL", &shared_url)]);
    let load_url = shared_url.clone();
    let load_seed = rng.random::<u32>();
    let load = tokio::spawn(async move {
        let mut chunk = 0u64;
        let mut written = 0u64;
        while written < args.events {
            let seed = (u64::from(load_seed) << 16) + chunk;
            let (customers, orders) = ("3".to_owned(), "20".to_owned());
            let rate = args.rate.to_string();
            let seed = seed.to_string();
            let result = harness::process::run(
                "legacy-sim",
                &[
                    "load",
                    "--customers",
                    &customers,
                    "--orders",
                    &orders,
                    "--rate",
                    &rate,
                    "--concurrency",
                    "2",
                    "--seed",
                    &seed,
                    "--progress",
                    "never",
                ],
                &load_env,
            )
            .await;
            if !matches!(result, Ok((Some(0), _, _))) {
                // A restart cut it short: what committed counts, the next chunk goes on.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            chunk += 1;
            if let Ok(n) = outbox_rows(&load_url).await {
                written = n;
            }
        }
    });

    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let paths = Paths {
        faults: &faults,
        outage: &outage,
        brownout: Duration::from_secs(args.brownout_secs),
        partition: Duration::from_secs(args.partition_secs),
    };
    // Events no stage can store: their ids, expected in shipping's DLQ and nowhere else.
    let mut unstorable: HashSet<String> = HashSet::new();
    let mut recoveries: Vec<(Fault, f64)> = Vec::new();
    let load_started = Instant::now();
    for (at, fault) in schedule {
        let wait = Duration::from_secs_f64(at).saturating_sub(load_started.elapsed());
        tokio::time::sleep(wait).await;
        pipeline.ensure_running()?;
        let mut wal_at_fault = current_wal(&stack).await?;
        eprintln!("[{:>6.1}s] fault: {fault:?}", started.elapsed().as_secs_f64());
        unstorable.extend(inject(fault, &mut stack, &mut pipeline, &paths, &mut db).await?);
        *injected.entry(fault).or_default() += 1;
        // After a failover the old primary's positions mean nothing (the new timeline forks
        // where the standby stopped): what capture must get past is what the new primary held
        // when it took over, from a slot it streams from — on a new slot, capture streams only
        // once its resync of the outbox is in Kinesis.
        let failed_over = fault == Fault::Failover;
        if failed_over {
            wal_at_fault = current_wal(&stack).await?;
        }
        // Recovered: capture has acknowledged everything written before the fault.
        let recovery = Instant::now();
        harness::wait::until(
            "capture to get past the fault",
            Duration::from_secs(180),
            || async {
                pipeline.ensure_running()?;
                let slot = capture_slot(&stack).await.unwrap_or_default();
                Ok((slot.confirmed >= wal_at_fault && (slot.active || !failed_over)).then_some(()))
            },
        )
        .await?;
        recoveries.push((fault, recovery.elapsed().as_secs_f64()));
        if failed_over {
            db.replace_standby(&stack).await?;
        }
    }
    load.await?;

    // Quiescence and the checks, against the database.
    eprintln!(
        "[{:>6.1}s] load done; waiting for quiescence",
        started.elapsed().as_secs_f64()
    );
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    stack
        .wait_drained_within("outbox_bridge", &pipeline.capture, Duration::from_secs(600))
        .await?;
    observing.store(false, Ordering::SeqCst);
    let mut bus = observer.await?;
    let records = harness::wait::retrying("reading the stream", || stack.records()).await?;
    let in_kinesis: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    let kinesis_lost = ids.iter().filter(|id| !in_kinesis.contains(id.as_str())).count();
    // Rows a failover took back (the standby never had them) that capture had already sent:
    // events that never happened, as consumers saw them. Counted; the aggregates they touched
    // may differ in the projection, so those are left out of its comparison.
    let phantoms = in_kinesis.iter().filter(|id| !ids.contains(**id)).count();
    let phantom_aggregates: HashSet<String> = records
        .iter()
        .filter(|r| outbox_id(r).is_some_and(|id| !ids.contains(id)))
        .filter_map(|r| r.json["data"]["aggregateid"].as_str().map(str::to_owned))
        .collect();
    // An event no stage can store that a failover took back before capture sent it never
    // happened: nothing is expected of it.
    unstorable.retain(|id| ids.contains(id) || in_kinesis.contains(id.as_str()));
    // Generous ceilings that grow with the run: the shipping service may still be draining a
    // backlog of tens of thousands of events when the load ends.
    let ceiling = Duration::from_secs(900 + args.events / 5);
    let bus_wait = bus.until_all(&ids, ceiling, || pipeline.relay.output()).await;
    let on_bus = bus.by_event_id();
    let bus_lost = ids.iter().filter(|id| !on_bus.contains_key(id.as_str())).count();
    let bus_duplicates: usize = on_bus.values().map(|(n, _)| n - 1).sum();
    let (consistency, phantom_mismatches) = harness::shipping::wait_consistent_excusing(
        &stack,
        &[&pipeline.capture, &pipeline.relay, &pipeline.shipping],
        ceiling,
        unstorable.iter().filter(|id| ids.contains(*id)).count(),
        &phantom_aggregates,
    )
    .await?;
    // Shipping's DLQ must hold the events no stage can store and nothing else; the bridge's
    // nothing. An unstorable event is parked on its third poison failure, and transient failures
    // met on the way (a brownout) put it further back, so it may still be on its way: read the
    // DLQ (holding what was read) until every one of them was seen and nothing is left. A
    // duplicate delivery of one is parked twice, so the queue's depth alone says nothing.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq_url = harness::wait::retrying("the DLQ's url", || {
        harness::dlq::queue_url(&sqs, "shipping-events-dlq")
    })
    .await?;
    let dlq = harness::wait::retrying("the DLQ depths", || dlq_depths(&sdk)).await?;
    let mut parked: HashSet<String> = HashSet::new();
    let reading = Instant::now();
    loop {
        let all_seen = unstorable.iter().all(|id| parked.contains(id));
        if !all_seen && reading.elapsed() > ceiling {
            break;
        }
        let out = harness::wait::retrying("reading the shipping DLQ", || async {
            Ok(sqs
                .receive_message()
                .queue_url(&dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(3600)
                .wait_time_seconds(2)
                .send()
                .await?)
        })
        .await?;
        // Once every unstorable event was seen, read on until the queue is empty: whatever
        // else is there is a healthy event dead-lettered.
        if all_seen && out.messages().is_empty() {
            break;
        }
        for m in out.messages() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or("null"))?;
            if let Some(id) = body["detail"]["metadata"]["event_id"].as_str() {
                parked.insert(id.to_owned());
            }
        }
    }
    let healthy_dead_lettered = parked.iter().filter(|id| !unstorable.contains(*id)).count() as u64
        + dlq.get("bridge-dlq").copied().unwrap_or(0);
    let unstorable_parked = unstorable.iter().filter(|id| parked.contains(*id)).count();
    let out_of_order = aggregates_out_of_order(&records, &ids);
    let peak_rss_mib = json!({
        "capture": peak_rss_mib(&pipeline.capture),
        "relay": peak_rss_mib(&pipeline.relay),
        "shipping": peak_rss_mib(&pipeline.shipping),
    });

    let report = json!({
        "seed": args.seed,
        "events_written": ids.len(),
        "faults": injected.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
        "in_kinesis": in_kinesis.len(),
        "kinesis_duplicates": records.len() - in_kinesis.len(),
        "on_eventbridge": on_bus.len(),
        "eventbridge_duplicates": bus_duplicates,
        "lost_before_kinesis": kinesis_lost,
        "lost_before_eventbridge": bus_lost,
        "phantoms": phantoms,
        "phantom_mismatches": phantom_mismatches,
        "projection_mismatches": consistency.customer_mismatches.len() + consistency.unknown_customers.len(),
        "shipment_mismatches": consistency.missing_shipments.len() + consistency.extra_shipments.len(),
        "dlq": dlq,
        "healthy_dead_lettered": healthy_dead_lettered,
        "unstorable_events": unstorable.len(),
        "unstorable_parked": unstorable_parked,
        "aggregates_out_of_order_in_kinesis": out_of_order,
        "shipping_peak_backlog": peak_backlog.load(Ordering::SeqCst),
        "peak_rss_mib": peak_rss_mib,
        "recovery_seconds": recoveries.iter().map(|(f, s)| json!({"fault": format!("{f:?}"), "seconds": s})).collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    print_table(&report, &recoveries);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    bus_wait?;
    anyhow::ensure!(kinesis_lost == 0 && bus_lost == 0, "events were lost: {report}");
    anyhow::ensure!(
        healthy_dead_lettered == 0,
        "healthy events were dead-lettered: {report}"
    );
    anyhow::ensure!(
        unstorable_parked == unstorable.len(),
        "an event no stage can store was not parked: {report}"
    );
    anyhow::ensure!(
        out_of_order == 0,
        "aggregates out of commit order in kinesis: {report}"
    );
    anyhow::ensure!(
        consistency.exact(),
        "the projection differs from the monolith: {consistency}"
    );
    anyhow::ensure!(
        injected.values().sum::<u32>() as u64 == args.faults,
        "not every fault was injected"
    );
    Ok(())
}
