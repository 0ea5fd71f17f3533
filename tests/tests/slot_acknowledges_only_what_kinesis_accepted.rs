//! The slot's confirmed_flush_lsn advances after publishing and never passes a commit that
//! Kinesis has not accepted: while Kinesis is unreachable it stays behind, afterwards it moves on.

use std::time::{Duration, Instant};

use anyhow::Context;

use tests::lsn;
use tests::proxy::Proxy;
use tests::stack::{outbox_id, Stack};
use tests::{process::Proc, wait};

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', $1, 'CustomerCreated', '{}', 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_flush_waits_for_kinesis_and_then_advances() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let proxy = Proxy::start(stack.moto.endpoint.trim_start_matches("http://")).await?;
    let mut env = stack.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone()));
    let mut capture = Proc::spawn("bridge", &["capture"], &env)?;
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
