//! A payload above the EventBridge limit arrives as a claim check whose S3 object is the
//! payload; a malformed record lands in the dead-letter queue with its reason, and the events
//! after it still arrive.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use serde_json::{json, Value};
use tests::bus;
use tests::stack::Stack;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Document', 'doc-1', $2, $3::text::jsonb, 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_become_claim_checks_and_bad_records_are_parked_with_a_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "docs",
        &json!({"source": ["legacy.monolith"]}),
    )
    .await?;
    let capture = stack.spawn_capture(&[]).await?;
    let relay = stack.spawn("bridge", &["relay", "--max-event-bytes", "65536"])?;
    let pg = stack.pg.client().await?;

    // Garbage and a DMS-shaped outbox insert without a usable type, straight into the stream.
    for data in [b"this is not json".to_vec(), json!({"data": {"id": "e-null", "type": null, "payload": {}},
        "metadata": {"record-type": "data", "operation": "insert", "schema-name": "public", "table-name": "outbox"}}).to_string().into_bytes()] {
        stack.kinesis.put_record().stream_name(&stack.stream).partition_key("bad").data(Blob::new(data)).send().await?;
    }
    let big = json!({"text": "x".repeat(100_000), "n": 7});
    let (big_id, small_id) = (
        "00000000-0000-0000-0000-0000000000b1",
        "00000000-0000-0000-0000-0000000000a1",
    );
    pg.execute(INSERT, &[&big_id, &"DocumentStored", &big.to_string()])
        .await?;
    pg.execute(INSERT, &[&small_id, &"DocumentTagged", &r#"{"tag": "t"}"#])
        .await?;

    events
        .until("both events", Duration::from_secs(90), |s| {
            s.by_event_id().len() >= 2
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;
    let got = events.by_event_id();
    let (_, small) = &got[small_id];
    assert_eq!(small["detail"]["data"]["tag"], "t");
    let (_, large) = &got[big_id];
    let claim = &large["detail"]["metadata"]["claim_check"];
    assert!(
        large["detail"]["data"].is_null(),
        "the payload travels by claim check"
    );
    let object = aws_sdk_s3::Client::new(&sdk)
        .get_object()
        .bucket(claim["bucket"].as_str().unwrap_or_default())
        .key(claim["key"].as_str().unwrap_or_default())
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&object)?,
        big,
        "the S3 object is the original payload"
    );
    assert_eq!(claim["size"].as_u64(), Some(object.len() as u64));
    assert_eq!(claim["sha256"].as_str().map(str::len), Some(64));

    // The dead-letter queue holds both bad records, each with its reason and the original.
    let parked = tests::dlq::receive(&sdk, "bridge-dlq", 2).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("not JSON")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("no usable type")),
        "{reasons:?}"
    );
    assert!(
        parked.iter().any(|p| p["record"] == "this is not json"),
        "the original record is kept"
    );
    let metrics = relay.output();
    assert!(metrics.contains("parked in the dead-letter queue"), "{metrics}");
    Ok(())
}
