//! Changes to the source while capture streams: a column added to the outbox, tables and
//! operations added to the publication, and an update that leaves a TOASTed value unchanged.
//! Capture keeps streaming through all of them, each record carries the row as it was then,
//! and an unchanged TOASTed value is left out of the update record rather than sent as null.

use std::time::Duration;

use harness::kinesis::StreamRecord;
use harness::stack::{outbox_id, Stack};
use serde_json::Value;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Customer', 'c-1', 'CustomerCreated', '{\"n\": 1}', 1)";
const BODY_BYTES: usize = 100_000;

fn table_records<'a>(records: &'a [StreamRecord], table: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r.json["metadata"]["table-name"] == table)
        .map(|r| &r.json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_tables_and_toast_changes_while_streaming() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let pg = stack.pg.client().await?;

    let before = "00000000-0000-0000-0000-0000000000b1";
    pg.execute(INSERT, &[&before]).await?;

    // A column added to the outbox mid-stream (pgoutput sends the new Relation first).
    pg.batch_execute("ALTER TABLE outbox ADD COLUMN tenant text")
        .await?;
    let with_tenant = "00000000-0000-0000-0000-0000000000b2";
    pg.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version, tenant) \
         VALUES ($1::text::uuid, 'Customer', 'c-2', 'CustomerCreated', '{}', 1, 'acme')",
        &[&with_tenant],
    )
    .await?;

    // The publication grows while capture streams: a new table, then updates as well.
    pg.batch_execute(
        "CREATE TABLE documents (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);
         ALTER TABLE documents ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER PUBLICATION outbox_bridge ADD TABLE documents;
         ALTER PUBLICATION outbox_bridge SET (publish = 'insert, update');",
    )
    .await?;
    let body = "x".repeat(BODY_BYTES);
    pg.execute(
        "INSERT INTO documents (id, title, body) VALUES (1, 'v1', $1)",
        &[&body],
    )
    .await?;
    // Only the title changes: the TOASTed body is not sent again by Postgres.
    pg.batch_execute("UPDATE documents SET title = 'v2' WHERE id = 1")
        .await?;
    // Outbox updates are never events, even now that the publication publishes updates.
    pg.execute(
        "UPDATE outbox SET type = 'Renamed' WHERE id = $1::text::uuid",
        &[&before],
    )
    .await?;
    let after = "00000000-0000-0000-0000-0000000000b3";
    pg.execute(INSERT, &[&after]).await?;

    // Batches complete out of order across shards: the last row in the stream does not mean
    // the earlier ones are; the slot's acknowledgement does.
    stack.wait_drained("outbox_bridge", &capture).await?;
    let records = stack.records().await?;
    assert!(records.iter().any(|r| outbox_id(r) == Some(after)));

    let outbox = table_records(&records, "outbox");
    assert_eq!(outbox.len(), 3, "three inserts, no update: {outbox:?}");
    let by_id = |id: &str| outbox.iter().find(|r| r["data"]["id"] == id).copied();
    let first = by_id(before).ok_or_else(|| anyhow::anyhow!("{before} missing"))?;
    assert!(first["data"].get("tenant").is_none(), "{first}");
    let second = by_id(with_tenant).ok_or_else(|| anyhow::anyhow!("{with_tenant} missing"))?;
    assert_eq!(second["data"]["tenant"], "acme", "{second}");
    let third = by_id(after).ok_or_else(|| anyhow::anyhow!("{after} missing"))?;
    assert_eq!(third["data"]["tenant"], Value::Null, "{third}");

    let documents = table_records(&records, "documents");
    assert_eq!(documents.len(), 2, "{documents:?}");
    let insert = documents[0];
    assert_eq!(insert["metadata"]["operation"], "insert");
    assert_eq!(insert["data"]["body"].as_str().map(str::len), Some(BODY_BYTES));
    let update = documents[1];
    assert_eq!(update["metadata"]["operation"], "update");
    assert_eq!(update["data"]["title"], "v2");
    assert_eq!(update["data"]["id"], 1);
    assert!(
        update["data"].get("body").is_none(),
        "an unchanged TOASTed value is left out, not sent as null: {update}"
    );

    capture.terminate(Duration::from_secs(30)).await?;
    let log = capture.output();
    assert!(!log.contains("ERROR"), "{log}");
    Ok(())
}
