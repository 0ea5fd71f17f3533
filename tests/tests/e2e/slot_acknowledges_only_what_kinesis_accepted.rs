//! The slot's confirmed_flush_lsn advances after publishing and never passes a commit that
//! Kinesis has not accepted: while Kinesis is unreachable it stays behind, afterwards it moves on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use harness::lsn;
use harness::proxy::Proxy;
use harness::stack::{outbox_id, Stack};
use harness::{process::Proc, wait};

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', $1, 'CustomerCreated', '{}', 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_flush_waits_for_kinesis_and_then_advances() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let proxy = Proxy::start(stack.moto.endpoint.trim_start_matches("http://")).await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint),
        ("BRIDGE_METRICS_LISTEN", &listen),
    ]);
    let mut capture = Proc::spawn("bridge", &["capture", "--stall-timeout-secs", "2"], &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let client = stack.pg.client().await?;

    // Published: the record lands and the slot moves past its commit.
    let first = "00000000-0000-0000-0000-000000000001";
    client.execute(INSERT, &[&first]).await?;
    let commit = wait_for_commit_lsn(&stack, &capture, first).await?;
    wait::until(
        "the slot to pass the first commit",
        Duration::from_secs(30),
        || async {
            Ok(stack
                .confirmed_flush("outbox_bridge")
                .await?
                .filter(|&f| f > commit)
                .map(|_| ()))
        },
    )
    .await?;

    // Kinesis unreachable: the next commit is not acknowledged, however long we wait.
    proxy.set_up(false);
    let second = "00000000-0000-0000-0000-000000000002";
    client.execute(INSERT, &[&second]).await?;
    let mut highest_during_outage = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        capture.ensure_running()?;
        highest_during_outage =
            highest_during_outage.max(stack.confirmed_flush("outbox_bridge").await?.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Work waiting for Kinesis longer than the stall bound: /healthz says so (once capture has
    // had the commit that long; a loaded machine may hand it over late). Still not acknowledged.
    harness::metrics::wait_health(port, 503, "not acknowledged", Duration::from_secs(30)).await?;
    highest_during_outage =
        highest_during_outage.max(stack.confirmed_flush("outbox_bridge").await?.unwrap_or(0));

    // Back: the record lands, and only now does the slot pass its commit.
    proxy.set_up(true);
    let second_commit = wait_for_commit_lsn(&stack, &capture, second).await?;
    assert!(
        highest_during_outage <= second_commit,
        "slot acknowledged {highest_during_outage:#x} past the unpublished commit {second_commit:#x}"
    );
    wait::until(
        "the slot to pass the second commit",
        Duration::from_secs(30),
        || async {
            Ok(stack
                .confirmed_flush("outbox_bridge")
                .await?
                .filter(|&f| f > second_commit)
                .map(|_| ()))
        },
    )
    .await
    .with_context(|| capture.output())?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    assert!(
        capture.output().contains("putrecords retry"),
        "the outage was retried:\n{}",
        capture.output()
    );
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}

/// Waits for the outbox row's record and returns its commit LSN.
async fn wait_for_commit_lsn(stack: &Stack, capture: &Proc, id: &str) -> anyhow::Result<u64> {
    wait::until("the record in kinesis", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        let record = records.iter().find(|r| outbox_id(r) == Some(id));
        Ok(record.and_then(|r| lsn::parse(r.json["metadata"]["commit-lsn"].as_str()?)))
    })
    .await
}

/// PutRecords answers in which some entries failed — with and without `FailedRecordCount` (an
/// optional field) — lose no record, and each aggregate's records still reach Kinesis in commit
/// order: the first copy of every record of one key comes after the first copies of its earlier ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_put_records_failures_lose_nothing_and_keep_each_aggregate_in_order() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    let plan = proxy.plan.clone();
    plan.partial_put_records.store(3, Ordering::SeqCst);
    plan.uncounted_partial_put_records.store(3, Ordering::SeqCst);
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let mut capture = Proc::spawn("bridge", &["capture", "--batch-linger-ms", "300"], &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let client = stack.pg.client().await?;
    // Three aggregates, interleaved, several versions each, in a few transactions: one request
    // holds several records of one key, and every odd entry of a faulted request fails.
    for tx in 0..6 {
        client
            .execute(
                "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                 SELECT gen_random_uuid(), 'Order', 'agg-' || (i % 3), 'OrderPlaced', '{}', $1::int * 10 + i / 3 \
                 FROM generate_series(0, 11) AS i",
                &[&tx],
            )
            .await?;
    }
    let expected = stack.outbox_ids().await?;
    let records = wait::until("every outbox row in kinesis", Duration::from_secs(90), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        let got: std::collections::HashSet<&str> = records.iter().filter_map(outbox_id).collect();
        Ok(expected
            .iter()
            .all(|id| got.contains(id.as_str()))
            .then_some(records))
    })
    .await
    .with_context(|| capture.output())?;
    assert_eq!(
        plan.partial_put_records.load(Ordering::SeqCst),
        0,
        "every partial failure was injected"
    );
    assert_eq!(plan.uncounted_partial_put_records.load(Ordering::SeqCst), 0);

    let mut seen = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    for record in &records {
        let Some(id) = outbox_id(record) else { continue };
        if !seen.insert(id) {
            continue; // a retried copy: consumers keep the first
        }
        let m = &record.json["metadata"];
        let position = (
            lsn::parse(m["commit-lsn"].as_str().unwrap_or_default()).unwrap_or_default(),
            m["transaction-record-id"].as_u64().unwrap_or_default(),
        );
        if let Some(before) = last.insert(&record.partition_key, position) {
            assert!(
                before < position,
                "aggregate {} out of commit order in kinesis: {before:?} then {position:?}",
                record.partition_key
            );
        }
    }
    assert_eq!(last.len(), 3);
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}
