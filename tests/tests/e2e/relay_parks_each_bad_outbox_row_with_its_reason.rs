//! Bad outbox rows written by the monolith itself (a legacy outbox with a `text` payload and a
//! nullable `type`): a payload that is not JSON, a null type, a row above Kinesis' 1 MiB record
//! limit, a type outside the relay's `--event-types`, and a table-less outbox message
//! (`pg_logical_emit_message`) above that limit each land in the dead-letter queue with a reason
//! naming the row (or the message and its LSN), and the good row written after them still
//! becomes an event. Nothing is published half-empty.

use std::time::Duration;

use harness::bus;
use harness::stack::Stack;
use serde_json::json;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Document', 'doc-1', $2, $3, 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_json_null_type_and_oversized_rows_are_parked_and_the_rest_flows() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    // A legacy outbox: text payload, nullable type.
    pg.batch_execute(
        "ALTER TABLE outbox ALTER COLUMN payload TYPE text USING payload::text, \
                            ALTER COLUMN type DROP NOT NULL",
    )
    .await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "bad-rows").await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let mut relay = stack.spawn(
        "bridge",
        &["relay", "--event-types", "DocumentStored,DocumentTagged"],
    )?;

    let not_json = "00000000-0000-0000-0000-0000000000c1";
    let null_type = "00000000-0000-0000-0000-0000000000c2";
    let oversized = "00000000-0000-0000-0000-0000000000c3";
    let unknown_type = "00000000-0000-0000-0000-0000000000c5";
    let oversized_message = "00000000-0000-0000-0000-0000000000c6";
    let good = "00000000-0000-0000-0000-0000000000c4";
    pg.execute(
        INSERT,
        &[&not_json, &Some("DocumentStored"), &"{\"unterminated\": "],
    )
    .await?;
    pg.execute(INSERT, &[&null_type, &None::<&str>, &"{}"]).await?;
    let huge = json!({"blob": "y".repeat(1_200_000)}).to_string();
    pg.execute(INSERT, &[&oversized, &Some("DocumentStored"), &huge])
        .await?;
    pg.execute(INSERT, &[&unknown_type, &Some("DocumentShreded"), &"{}"])
        .await?;
    let message = json!({"id": oversized_message, "aggregatetype": "Document", "aggregateid": "doc-1",
        "type": "DocumentStored", "payload": {"blob": "z".repeat(1_200_000)}})
    .to_string();
    pg.execute(
        "SELECT pg_logical_emit_message(true, 'outbox', $1::text)",
        &[&message],
    )
    .await?;
    pg.execute(INSERT, &[&good, &Some("DocumentTagged"), &"{\"tag\": \"t\"}"])
        .await?;

    events
        .until("the good event", Duration::from_secs(90), |s| {
            s.by_event_id().contains_key(good)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;

    let parked = harness::dlq::receive(&sdk, "bridge-dlq", 5).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    let reason_for = |id: &str| reasons.iter().find(|r| r.contains(id)).copied().unwrap_or("");
    assert!(
        reason_for(not_json).contains("payload is not valid JSON"),
        "{reasons:?}"
    );
    assert!(reason_for(null_type).contains("no usable type"), "{reasons:?}");
    assert!(
        reason_for(oversized).contains("above Kinesis' 1 MiB record limit")
            && reason_for(oversized).contains("without payload"),
        "{reasons:?}"
    );

    assert!(
        reason_for(unknown_type).contains("unknown event type `DocumentShreded`"),
        "{reasons:?}"
    );
    let message_reason = reason_for(oversized_message);
    assert!(
        message_reason.contains("pg_logical_emit_message with prefix `outbox` at LSN")
            && message_reason.contains("above Kinesis' 1 MiB record limit")
            && message_reason.contains("without payload")
            && message_reason.contains("no table row"),
        "{reasons:?}"
    );

    // None of the four reached the bus, not even as an empty event.
    let got = events.by_event_id();
    for id in [not_json, null_type, oversized, unknown_type, oversized_message] {
        assert!(!got.contains_key(id), "{id} was published: {:?}", got.get(id));
    }
    capture.ensure_running()?;
    relay.ensure_running()?;
    capture.terminate(Duration::from_secs(30)).await?;
    relay.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
