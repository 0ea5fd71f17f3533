//! A rolled-back transaction produces no record.

use std::time::Duration;

use harness::stack::{outbox_id, Stack};
use harness::wait;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', 'c-1', 'CustomerCreated', '{}', 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_outbox_insert_never_reaches_kinesis() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let mut client = stack.pg.client().await?;

    let rolled_back = "00000000-0000-0000-0000-00000000dead";
    let tx = client.transaction().await?;
    tx.execute(INSERT, &[&rolled_back]).await?;
    tx.rollback().await?;
    // A committed row after it: once it is in the stream, the rolled-back one had its chance.
    let committed = "00000000-0000-0000-0000-00000000beef";
    client.execute(INSERT, &[&committed]).await?;

    let records = wait::until("the committed row", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records
            .iter()
            .any(|r| outbox_id(r) == Some(committed))
            .then_some(records))
    })
    .await?;
    assert!(records.iter().all(|r| outbox_id(r) != Some(rolled_back)));
    assert_eq!(records.len(), 1);
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
