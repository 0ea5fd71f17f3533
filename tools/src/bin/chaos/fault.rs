//! The fault kinds, and how each is injected.

use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::faults::FaultProxy;
use harness::postgres::StopMode;
use harness::proxy::Proxy;
use harness::stack::Stack;
use serde_json::json;

use crate::pipeline::{Database, Pipeline};

/// A kind of fault the run injects (docs/src/guarantees/chaos-run.md lists what each does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
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
    Reshard,
    FullLoadKilled,
    RestartDuringResync,
    SigtermStandbyDown,
}

pub(crate) const KINDS: [Fault; 28] = [
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
    Fault::Reshard,
    Fault::FullLoadKilled,
    Fault::RestartDuringResync,
    Fault::SigtermStandbyDown,
];

/// The paths a fault can be injected on.
pub(crate) struct Paths<'a> {
    pub(crate) faults: &'a FaultProxy,
    pub(crate) outage: &'a Proxy,
    pub(crate) brownout: Duration,
    pub(crate) partition: Duration,
}

/// Injects one fault; returns the ids of events it wrote that no stage can store.
pub(crate) async fn inject(
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
        Fault::Failover => db.fail_over(stack).await?,
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
            // A payload above EventBridge's entry limit (1 MB) and Kinesis' record limit: its
            // claim checks need S3 at both ends.
            let big = json!({"text": "s".repeat(1_100_000)}).to_string();
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
        Fault::Reshard => {
            // Halves or doubles the open shards (4 → 2 → 4 …): merged or split parents close
            // mid-load, with records the relay has not read yet, and their children take the
            // same aggregates' next records.
            let summary = stack
                .kinesis
                .describe_stream_summary()
                .stream_name(&stack.stream)
                .send()
                .await?;
            let open = summary
                .stream_description_summary()
                .map_or(1, |d| d.open_shard_count());
            let target = if open >= 4 { open / 2 } else { open * 2 };
            harness::kinesis::reshard(&stack.kinesis, &stack.stream, target).await?;
        }
        Fault::FullLoadKilled => super::lifecycle::full_load_killed(stack, p).await?,
        Fault::RestartDuringResync => super::lifecycle::restart_during_resync(stack, p, paths).await?,
        Fault::SigtermStandbyDown => super::lifecycle::sigterm_standby_down(stack, p, db).await?,
    }
    Ok(Vec::new())
}

/// Writes one outbox row as the monolith would; returns its id.
pub(crate) async fn insert_event(
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
