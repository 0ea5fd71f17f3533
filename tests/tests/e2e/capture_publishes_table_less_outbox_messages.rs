//! The table-less outbox: `pg_logical_emit_message(true, 'outbox', json)` in the monolith's
//! transaction becomes an outbox insert record; a rolled-back one becomes nothing.

use std::time::Duration;

use harness::stack::{outbox_id, Stack};
use harness::wait;

const EMIT: &str = "SELECT pg_logical_emit_message(true, 'outbox', $1::text)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_outbox_messages_become_records_and_rolled_back_ones_do_not() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let capture = stack.spawn_capture(&[]).await?;
    let mut client = stack.pg.client().await?;
    let event = |id: &str| {
        format!(
            r#"{{"id":"{id}","aggregatetype":"Customer","aggregateid":"c-9","type":"CustomerTouched","payload":{{"n":1}},"aggregate_version":4}}"#
        )
    };
    let tx = client.transaction().await?;
    tx.query(EMIT, &[&event("rolled-back")]).await?;
    tx.rollback().await?;
    let tx = client.transaction().await?;
    tx.query(EMIT, &[&event("kept")]).await?;
    tx.commit().await?;

    let records = wait::until("the emitted event", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        Ok(records
            .iter()
            .any(|r| outbox_id(r) == Some("kept"))
            .then_some(records))
    })
    .await?;
    assert_eq!(records.len(), 1, "only the committed message: {records:?}");
    let r = &records[0];
    assert_eq!(r.partition_key, "c-9");
    assert_eq!(r.json["data"]["type"], "CustomerTouched");
    assert_eq!(r.json["data"]["payload"]["n"], 1);
    assert_eq!(r.json["metadata"]["message-prefix"], "outbox");
    Ok(())
}
