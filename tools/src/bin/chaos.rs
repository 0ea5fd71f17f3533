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
//! DynamoDB's limit, a number beyond its range), which must be parked. After the load:
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
use harness::postgres::{StopMode, TestPostgres};
use harness::process::Proc;
use harness::proxy::Proxy;
use harness::shipping::{Consistency, SUBSCRIBED_TYPES};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillCapture,
    KillRelay,
    KillShipping,
    PostgresFastRestart,
    PostgresImmediateRestart,
    Failover,
    TerminateWalsender,
    AwsOutage,
    AwsLatency,
    Aws5xx,
    ThrottlePutRecords,
    PartialPutRecords,
    ThrottlePutEvents,
    PartialPutEvents,
    CancelTransactWrites,
    BrownoutDynamoDb,
    BrownoutSqs,
    BrownoutEventBridge,
    BrownoutKinesis,
    BrownoutS3,
    PartitionPostgres,
    PartitionAws,
    ExactNumbers,
    Unstorable,
}

const KINDS: [Fault; 24] = [
    Fault::KillCapture,
    Fault::KillRelay,
    Fault::KillShipping,
    Fault::PostgresFastRestart,
    Fault::PostgresImmediateRestart,
    Fault::Failover,
    Fault::TerminateWalsender,
    Fault::AwsOutage,
    Fault::AwsLatency,
    Fault::Aws5xx,
    Fault::ThrottlePutRecords,
    Fault::PartialPutRecords,
    Fault::ThrottlePutEvents,
    Fault::PartialPutEvents,
    Fault::CancelTransactWrites,
    Fault::BrownoutDynamoDb,
    Fault::BrownoutSqs,
    Fault::BrownoutEventBridge,
    Fault::BrownoutKinesis,
    Fault::BrownoutS3,
    Fault::PartitionPostgres,
    Fault::PartitionAws,
    Fault::ExactNumbers,
    Fault::Unstorable,
];

/// The pipeline's long-running processes, restartable.
struct Pipeline {
    env: Vec<(String, String)>,
    /// Capture's, whose DATABASE_URL goes through the Postgres proxy.
    capture_env: Vec<(String, String)>,
    capture: Proc,
    relay: Proc,
    shipping: Proc,
}

impl Pipeline {
    fn spawn_capture(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn(
            "bridge",
            &[
                "capture",
                "--metrics-listen",
                "127.0.0.1:0",
                "--replication-timeout-secs",
                "5",
            ],
            env,
        )
    }
    fn spawn_relay(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn("bridge", &["relay", "--metrics-listen", "127.0.0.1:0"], env)
    }
    fn spawn_shipping(env: &[(String, String)]) -> anyhow::Result<Proc> {
        Proc::spawn(
            "shipping",
            &[
                "run",
                "--wait-seconds",
                "2",
                "--retry-delay",
                "1",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            env,
        )
    }

    fn ensure_running(&self) -> anyhow::Result<()> {
        self.capture.ensure_running()?;
        self.relay.ensure_running()?;
        self.shipping.ensure_running()
    }
}

/// The streaming standby's `application_name`, the same for each one the run clones.
const STANDBY: &str = "chaos_standby";

/// The monolith's database besides its primary (`stack.pg`): a streaming standby a failover
/// promotes, and the proxies the processes reach the primary through.
struct Database {
    /// `None` only between a failover and the new standby's start.
    standby: Option<TestPostgres>,
    /// Capture's path; a silent partition cuts this one alone.
    capture_path: Proxy,
    /// Everyone else's: the load, and the relay and shipping should they ever need it.
    shared_path: Proxy,
}

impl Database {
    /// Clones the primary into a standby and puts the proxies in front of the primary.
    async fn start(stack: &Stack) -> anyhow::Result<Self> {
        let primary = format!("127.0.0.1:{}", stack.pg.port);
        Ok(Self {
            standby: Some(stack.pg.start_standby(STANDBY)?),
            capture_path: Proxy::start(&primary).await?,
            shared_path: Proxy::start(&primary).await?,
        })
    }

    /// The superuser's URL through `proxy`.
    fn url_via(stack: &Stack, proxy: &Proxy) -> String {
        stack.pg.url().replace(
            &format!("127.0.0.1:{}", stack.pg.port),
            proxy.endpoint.trim_start_matches("http://"),
        )
    }

    /// The primary dies at once (`-m immediate`) and the standby is promoted in its place,
    /// without waiting for it to catch up: what it had not received is lost, as in a real
    /// failover. The promoted server becomes `stack.pg`; the old primary's files go with it.
    fn fail_over(&mut self, stack: &mut Stack) -> anyhow::Result<()> {
        let standby = self
            .standby
            .take()
            .ok_or_else(|| anyhow::anyhow!("no standby to promote"))?;
        stack.pg.stop(StopMode::Immediate)?;
        standby.promote()?;
        drop(std::mem::replace(&mut stack.pg, standby));
        let primary = format!("127.0.0.1:{}", stack.pg.port);
        self.capture_path.set_upstream(&primary);
        self.shared_path.set_upstream(&primary);
        Ok(())
    }

    /// A new standby of the current primary, so that the next failover has one to promote.
    fn replace_standby(&mut self, stack: &Stack) -> anyhow::Result<()> {
        if self.standby.is_none() {
            self.standby = Some(stack.pg.start_standby(STANDBY)?);
        }
        Ok(())
    }
}

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
            db.replace_standby(&stack)?;
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
    let (consistency, phantom_mismatches) = wait_consistent(
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

/// Aggregates whose records, first copies of events in `ids` only, are not in commit order in
/// their shard. A phantom has no place in that order: its commit is on a timeline the failover
/// abandoned, whose positions the new primary reuses.
fn aggregates_out_of_order(records: &[harness::kinesis::StreamRecord], ids: &HashSet<String>) -> usize {
    let mut seen = HashSet::new();
    let mut last: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    let mut broken = HashSet::new();
    for record in records {
        let Some(id) = outbox_id(record) else { continue };
        if !ids.contains(id) || !seen.insert(id) {
            continue;
        }
        let m = &record.json["metadata"];
        let position = (
            harness::lsn::parse(m["commit-lsn"].as_str().unwrap_or_default()).unwrap_or_default(),
            m["transaction-record-id"].as_u64().unwrap_or_default(),
        );
        if last
            .insert(&record.partition_key, position)
            .is_some_and(|before| before > position)
        {
            broken.insert(record.partition_key.clone());
        }
    }
    broken.len()
}

/// Waits until the shipping service holds the monolith's state ([`harness::shipping::wait_consistent_but`]),
/// leaving out the aggregates in `excused` (touched by a phantom: the projection applied an
/// event the monolith no longer has). Returns the comparison and how many differences it left
/// out.
async fn wait_consistent(
    stack: &Stack,
    procs: &[&Proc],
    timeout: Duration,
    parked: usize,
    excused: &HashSet<String>,
) -> anyhow::Result<(Consistency, usize)> {
    if excused.is_empty() {
        let consistency = harness::shipping::wait_consistent_but(stack, procs, timeout, parked).await?;
        return Ok((consistency, 0));
    }
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let pg = stack.pg.client().await?;
    let types: Vec<String> = SUBSCRIBED_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let routed: i64 = pg
        .query_one("SELECT count(*) FROM outbox WHERE type = ANY($1)", &[&types])
        .await?
        .get(0);
    let expected = routed - parked as i64;
    let last = std::sync::Mutex::new(String::new());
    let outcome = harness::wait::until("the shipping service to converge", timeout, || {
        let (dynamo, pg, last) = (&dynamo, &pg, &last);
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            for p in procs {
                p.ensure_running()?;
            }
            // Phantoms are in the inbox too: the count only says when to compare. A failed
            // read of the emulator is read again next time.
            let Ok(inbox) = harness::shipping::count(dynamo, "shipping-inbox").await else {
                return Ok(None);
            };
            if inbox < expected {
                if let Ok(mut l) = last.lock() {
                    *l = format!("inbox {inbox}/{expected}");
                }
                return Ok(None);
            }
            let Ok(report) =
                harness::shipping::check(pg, dynamo, "shipping-customers", "shipping-shipments").await
            else {
                return Ok(None);
            };
            let (report, left_out) = excuse(report, excused);
            if let Ok(mut l) = last.lock() {
                *l = format!("{report}; {left_out} left out; inbox {inbox}/{expected}");
            }
            Ok(report.exact().then_some((report, left_out)))
        }
    })
    .await;
    outcome.map_err(|e| {
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        anyhow::anyhow!("{e}\nlast: {last}")
    })
}

/// The comparison without the differences on aggregates in `excused`, and how many those were.
fn excuse(mut report: Consistency, excused: &HashSet<String>) -> (Consistency, usize) {
    let mut left_out = 0;
    for ids in [
        &mut report.customer_mismatches,
        &mut report.unknown_customers,
        &mut report.missing_shipments,
        &mut report.extra_shipments,
    ] {
        let before = ids.len();
        ids.retain(|id| !excused.contains(id));
        left_out += before - ids.len();
    }
    (report, left_out)
}

/// Committed outbox rows; an error while Postgres restarts (the caller tries again later).
async fn outbox_rows(url: &str) -> anyhow::Result<u64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let rows: i64 = client.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    drop(client);
    let _ = connection.await;
    Ok(rows as u64)
}

/// Capture's slot on the current primary, as far as the recovery wait needs it.
#[derive(Default)]
struct SlotState {
    active: bool,
    confirmed: u64,
}

/// Capture's slot on the current primary; an error while the primary restarts or fails over
/// (the caller asks again).
async fn capture_slot(stack: &Stack) -> anyhow::Result<SlotState> {
    let pg = stack.pg.client().await?;
    let row = pg
        .query_opt(
            "SELECT active, (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots \
             WHERE slot_name = 'outbox_bridge'",
            &[],
        )
        .await?;
    Ok(row.map_or_else(SlotState::default, |r| SlotState {
        active: r.get(0),
        confirmed: r.get::<_, Option<i64>>(1).unwrap_or(0) as u64,
    }))
}

async fn current_wal(stack: &Stack) -> anyhow::Result<u64> {
    let pg = stack.pg.client().await?;
    let lsn: String = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    harness::lsn::parse(&lsn).ok_or_else(|| anyhow::anyhow!("bad LSN {lsn}"))
}

/// The paths a fault can be injected on.
struct Paths<'a> {
    faults: &'a FaultProxy,
    outage: &'a Proxy,
    brownout: Duration,
    partition: Duration,
}

/// Injects one fault; returns the ids of events it wrote that no stage can store.
async fn inject(
    fault: Fault,
    stack: &mut Stack,
    p: &mut Pipeline,
    paths: &Paths<'_>,
    db: &mut Database,
) -> anyhow::Result<Vec<String>> {
    let plan = &paths.faults.plan;
    let outage = paths.outage;
    let brownout = |prefix: &'static str| async move {
        plan.set_brownout(Some(prefix));
        tokio::time::sleep(paths.brownout).await;
        plan.set_brownout(None);
    };
    match fault {
        Fault::KillCapture => {
            p.capture.kill9().await?;
            p.capture = Pipeline::spawn_capture(&p.capture_env)?;
        }
        Fault::KillRelay => {
            p.relay.kill9().await?;
            p.relay = Pipeline::spawn_relay(&p.env)?;
        }
        Fault::KillShipping => {
            p.shipping.kill9().await?;
            p.shipping = Pipeline::spawn_shipping(&p.env)?;
        }
        Fault::PostgresFastRestart => stack.pg.restart(StopMode::Fast)?,
        Fault::PostgresImmediateRestart => stack.pg.restart(StopMode::Immediate)?,
        Fault::Failover => db.fail_over(stack)?,
        Fault::TerminateWalsender => {
            let pg = stack.pg.client().await?;
            pg.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE slot_name = 'outbox_bridge' AND active_pid IS NOT NULL",
                &[],
            )
            .await?;
        }
        Fault::AwsOutage => {
            outage.set_up(false);
            tokio::time::sleep(Duration::from_secs(3)).await;
            outage.set_up(true);
        }
        Fault::AwsLatency => {
            plan.latency_ms.store(400, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
            plan.latency_ms.store(0, Ordering::SeqCst);
        }
        Fault::Aws5xx => plan.fail_5xx.store(5, Ordering::SeqCst),
        Fault::ThrottlePutRecords => plan.throttle_put_records.store(3, Ordering::SeqCst),
        Fault::PartialPutRecords => plan.partial_put_records.store(2, Ordering::SeqCst),
        Fault::ThrottlePutEvents => plan.throttle_put_events.store(3, Ordering::SeqCst),
        Fault::PartialPutEvents => plan.partial_put_events.store(2, Ordering::SeqCst),
        Fault::CancelTransactWrites => plan.cancel_transact_writes.store(3, Ordering::SeqCst),
        Fault::BrownoutDynamoDb => brownout("DynamoDB_20120810.").await,
        Fault::BrownoutSqs => brownout("AmazonSQS.").await,
        Fault::BrownoutEventBridge => brownout("AWSEvents.").await,
        Fault::BrownoutKinesis => brownout("Kinesis_20131202.").await,
        Fault::BrownoutS3 => {
            // A payload above EventBridge's entry limit: its claim check needs S3 both ways.
            let big = json!({"text": "s".repeat(300_000)}).to_string();
            insert_event(stack, "Document", "DocumentStored", &big).await?;
            brownout(harness::faults::S3).await;
        }
        Fault::PartitionPostgres => {
            db.capture_path.set_partitioned(true);
            tokio::time::sleep(paths.partition).await;
            db.capture_path.set_partitioned(false);
        }
        Fault::PartitionAws => {
            outage.set_partitioned(true);
            tokio::time::sleep(paths.partition).await;
            outage.set_partitioned(false);
        }
        Fault::ExactNumbers => {
            let exact = r#"{"deep": [[[{"x": [1.50, -0.0]}]]], "name": "été 🚀 \u00e9", "total": 12345678901234567.89, "units": 123456789012345678901234567890}"#;
            insert_event(stack, "Invoice", "InvoiceIssued", exact).await?;
        }
        Fault::Unstorable => {
            let long_key = json!({"customer_id": "k".repeat(3000), "name": "n", "credit_limit": 1, "credit_reserved": 0});
            let overflow = r#"{"customer_id": "chaos-overflow", "name": "n", "credit_limit": 1e200, "credit_reserved": 0}"#;
            return Ok(vec![
                insert_event(stack, "Customer", "CustomerCreated", &long_key.to_string()).await?,
                insert_event(stack, "Customer", "CustomerCreated", overflow).await?,
            ]);
        }
    }
    Ok(Vec::new())
}

/// Writes one outbox row as the monolith would; returns its id.
async fn insert_event(
    stack: &Stack,
    aggregate: &str,
    event_type: &str,
    payload: &str,
) -> anyhow::Result<String> {
    let pg = stack.pg.client().await?;
    let row = pg
        .query_one(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             VALUES (gen_random_uuid(), $1, 'chaos-' || gen_random_uuid(), $2, $3::text::jsonb, 1) RETURNING id::text",
            &[&aggregate, &event_type, &payload],
        )
        .await?;
    Ok(row.get(0))
}

/// Messages waiting in each dead-letter queue.
async fn dlq_depths(sdk: &aws_config::SdkConfig) -> anyhow::Result<BTreeMap<String, u64>> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = BTreeMap::new();
    for queue in ["bridge-dlq", "shipping-events-dlq"] {
        out.insert(queue.to_owned(), queue_depth(&sqs, queue).await.unwrap_or(0));
    }
    Ok(out)
}

/// Messages waiting in `queue` (SQS's approximate count).
async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> anyhow::Result<u64> {
    let url = harness::dlq::queue_url(sqs, queue).await?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    Ok(attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The process's peak resident memory (VmHWM), in MiB; 0 where /proc cannot tell.
fn peak_rss_mib(proc: &Proc) -> f64 {
    proc.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn print_table(r: &serde_json::Value, recoveries: &[(Fault, f64)]) {
    println!("\n### chaos run, seed {}\n", r["seed"]);
    println!("| measure | value |\n|---|---:|");
    for key in [
        "events_written",
        "in_kinesis",
        "kinesis_duplicates",
        "on_eventbridge",
        "eventbridge_duplicates",
        "lost_before_kinesis",
        "lost_before_eventbridge",
        "phantoms",
        "phantom_mismatches",
        "projection_mismatches",
        "shipment_mismatches",
        "healthy_dead_lettered",
        "unstorable_events",
        "unstorable_parked",
        "aggregates_out_of_order_in_kinesis",
    ] {
        println!("| {} | {} |", key.replace('_', " "), r[key]);
    }
    if let Some(dlq) = r["dlq"].as_object() {
        for (queue, depth) in dlq {
            println!("| DLQ {queue} | {depth} |");
        }
    }
    println!(
        "| shipping queue backlog, deepest | {} |",
        r["shipping_peak_backlog"]
    );
    if let Some(rss) = r["peak_rss_mib"].as_object() {
        for (process, mib) in rss {
            println!(
                "| peak RSS of the last {process} process (MiB) | {:.1} |",
                mib.as_f64().unwrap_or(0.0)
            );
        }
    }
    println!("\n| fault | injected | capture past it, worst (s) |\n|---|---:|---:|");
    if let Some(faults) = r["faults"].as_object() {
        for (kind, n) in faults {
            let worst = recoveries
                .iter()
                .filter(|(f, _)| format!("{f:?}") == *kind)
                .map(|(_, s)| *s)
                .fold(0.0, f64::max);
            println!("| {kind} | {n} | {worst:.1} |");
        }
    }
    println!("\n{:.0} s in all", r["seconds"].as_f64().unwrap_or(0.0));
}

// Not `tests`: that is the harness crate's name.
#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn excuse_leaves_out_only_the_aggregates_a_phantom_touched() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let report = Consistency {
            customers: 3,
            customer_mismatches: ids(&["c1", "c2"]),
            unknown_customers: ids(&["c9"]),
            approved_orders: 2,
            missing_shipments: ids(&["o1"]),
            extra_shipments: ids(&["o2", "o3"]),
        };
        let excused: HashSet<String> = ["c1", "c9", "o3"].iter().map(|s| (*s).to_owned()).collect();
        let (report, left_out) = excuse(report, &excused);
        assert_eq!(left_out, 3);
        assert_eq!(report.customer_mismatches, ids(&["c2"]));
        assert!(report.unknown_customers.is_empty());
        assert_eq!(report.missing_shipments, ids(&["o1"]));
        assert_eq!(report.extra_shipments, ids(&["o2"]));
        assert!(!report.exact());
    }
}
