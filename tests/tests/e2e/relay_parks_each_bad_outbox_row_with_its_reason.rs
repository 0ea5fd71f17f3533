//! Bad outbox rows written by the monolith itself (a legacy outbox with a `text` payload and a
//! nullable `type`): a payload that is not JSON, a null type, a type outside the relay's
//! `--event-types` each land in the dead-letter queue with a reason naming the row, and the good
//! row written after them still becomes an event. Nothing is published half-empty.
//!
//! Above Kinesis' 1 MiB record limit, an outbox row and a table-less outbox message
//! (`pg_logical_emit_message`, whose payload exists nowhere but the WAL) travel whole by claim
//! check (capture stores the record in S3, the relay reads it back) and become their events,
//! payload intact. One whose claim check is gone by the time the relay reads it is parked with
//! that reason, the rest still flows. An S3 brownout at either end holds the record, parks nothing.
//! A stream whose record limit was raised carries records up to it whole.

use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::bus;
use harness::faults::FaultProxy;
use harness::process::Proc;
use harness::stack::Stack;
use serde_json::{json, Value};

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
    let s3 = harness::s3::client(&sdk);
    let mut events = bus::monolith_events(&sdk, "bad-rows").await?;
    let mut capture = stack.spawn_capture(&[]).await?;

    let not_json = "00000000-0000-0000-0000-0000000000c1";
    let null_type = "00000000-0000-0000-0000-0000000000c2";
    let oversized = "00000000-0000-0000-0000-0000000000c3";
    let unknown_type = "00000000-0000-0000-0000-0000000000c5";
    let oversized_message = "00000000-0000-0000-0000-0000000000c6";
    let claim_gone = "00000000-0000-0000-0000-0000000000c7";
    let good = "00000000-0000-0000-0000-0000000000c4";
    pg.execute(
        INSERT,
        &[&not_json, &Some("DocumentStored"), &"{\"unterminated\": "],
    )
    .await?;
    pg.execute(INSERT, &[&null_type, &None::<&str>, &"{}"]).await?;
    // Written as text: a number no f64 holds, which must arrive digit for digit.
    let huge_text = format!(
        r#"{{"blob": "{}", "amount": 12345678901234567.89}}"#,
        "y".repeat(1_200_000)
    );
    let huge: Value = serde_json::from_str(&huge_text)?;
    pg.execute(INSERT, &[&oversized, &Some("DocumentStored"), &huge_text])
        .await?;
    pg.execute(INSERT, &[&unknown_type, &Some("DocumentShreded"), &"{}"])
        .await?;
    let message_payload = json!({"blob": "z".repeat(1_200_000)});
    for id in [oversized_message, claim_gone] {
        let message = json!({"id": id, "aggregatetype": "Document", "aggregateid": "doc-1",
            "type": "DocumentStored", "payload": message_payload})
        .to_string();
        pg.execute(
            "SELECT pg_logical_emit_message(true, 'outbox', $1::text)",
            &[&message],
        )
        .await?;
    }
    pg.execute(INSERT, &[&good, &Some("DocumentTagged"), &"{\"tag\": \"t\"}"])
        .await?;

    // Before the relay reads them: the stream holds the big ones slim, each with a claim check
    // to the whole record. One of those objects is then lost (expired, deleted by hand).
    let records = harness::wait::until("every record in the stream", Duration::from_secs(60), || async {
        let records = stack.records().await?;
        let has = |id: &str| records.iter().any(|r| r.json["data"]["id"] == id);
        Ok(has(good).then_some(records))
    })
    .await?;
    let claim_of = |id: &str| -> anyhow::Result<Value> {
        let record = records
            .iter()
            .find(|r| r.json["data"]["id"] == id)
            .ok_or_else(|| anyhow::anyhow!("no record of {id}"))?;
        anyhow::ensure!(
            record.json.to_string().len() < 1024 * 1024,
            "{id}'s record is within Kinesis' limit"
        );
        Ok(record.json["metadata"]["claim-check"].clone())
    };
    for id in [oversized, oversized_message, claim_gone] {
        let claim = claim_of(id)?;
        anyhow::ensure!(claim["key"].is_string(), "{id} has no claim check: {claim}");
    }
    let gone = claim_of(claim_gone)?;
    // The two messages are alike but for their id: each whole record has its own object.
    anyhow::ensure!(gone["key"] != claim_of(oversized_message)?["key"]);
    s3.delete_object()
        .bucket(gone["bucket"].as_str().unwrap_or_default())
        .key(gone["key"].as_str().unwrap_or_default())
        .send()
        .await?;

    let mut relay = stack.spawn(
        "bridge",
        &["relay", "--event-types", "DocumentStored,DocumentTagged"],
    )?;
    events
        .until(
            "the good event and the two large ones",
            Duration::from_secs(90),
            |s| {
                let got = s.by_event_id();
                [good, oversized, oversized_message]
                    .iter()
                    .all(|id| got.contains_key(*id))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;

    // The large events' payloads, whole (through EventBridge by the relay's own claim check).
    let got = events.by_event_id();
    for (id, payload) in [(oversized, &huge), (oversized_message, &message_payload)] {
        let (_, event) = &got[id];
        let claim = &event["detail"]["metadata"]["claim_check"];
        let text = String::from_utf8(harness::s3::claimed_object(&sdk, claim).await?)?;
        assert_eq!(
            serde_json::from_str::<Value>(&text)?,
            *payload,
            "{id}: the event's payload is the one written"
        );
        if id == oversized {
            assert!(text.contains("12345678901234567.89"), "digit for digit");
        }
    }

    let parked = harness::dlq::receive(&sdk, "bridge-dlq", 4).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    let reason_for = |id: &str| reasons.iter().find(|r| r.contains(id)).copied().unwrap_or("");
    assert!(
        reason_for(not_json).contains("payload is not valid JSON"),
        "{reasons:?}"
    );
    assert!(reason_for(null_type).contains("no usable type"), "{reasons:?}");
    assert!(
        reason_for(unknown_type).contains("unknown event type `DocumentShreded`"),
        "{reasons:?}"
    );
    let gone_key = gone["key"].as_str().unwrap_or_default();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(gone_key) && r.contains("cannot be read") && r.contains("NoSuchKey")),
        "{reasons:?}"
    );

    // None of the bad ones reached the bus, not even as an empty event.
    let got = events.by_event_id();
    for id in [not_json, null_type, unknown_type, claim_gone] {
        assert!(!got.contains_key(id), "{id} was published: {:?}", got.get(id));
    }
    capture.ensure_running()?;
    relay.ensure_running()?;
    capture.terminate(Duration::from_secs(30)).await?;
    relay.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

/// A table-less outbox message `big` of `aggregate` (version 1) carrying `payload`, then an
/// outbox row `after` of the same aggregate (version 2): one shard, in that order.
async fn large_message_then_row(
    pg: &tokio_postgres::Client,
    big: &str,
    after: &str,
    aggregate: &str,
    payload: &Value,
) -> anyhow::Result<()> {
    let message = json!({"id": big, "aggregatetype": "Document", "aggregateid": aggregate,
        "type": "DocumentStored", "payload": payload})
    .to_string();
    pg.execute(
        "SELECT pg_logical_emit_message(true, 'outbox', $1::text)",
        &[&message],
    )
    .await?;
    pg.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
         VALUES ($1::text::uuid, 'Document', $2, 'DocumentTagged', '{}', 2)",
        &[&after, &aggregate],
    )
    .await?;
    Ok(())
}

/// A record above the limit that S3 will not take (here: no such bucket) stops capture with the
/// reason instead of going out without its payload, and the slot keeps it: capture started
/// again with the bucket sends it whole, and the relay publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_s3_refuses_stops_capture_and_goes_out_once_it_can() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "no-bucket").await?;
    let mut capture = stack
        .spawn_capture(&["--claim-check-bucket", "no-such-bucket"])
        .await?;
    let big = "00000000-0000-0000-0000-0000000000d1";
    let good = "00000000-0000-0000-0000-0000000000d2";
    let payload = json!({"blob": "w".repeat(1_200_000)});
    large_message_then_row(&pg, big, good, "doc-2", &payload).await?;
    let code = capture.wait(Duration::from_secs(60)).await?;
    let output = capture.output();
    assert!(code.is_some_and(|c| c != 0), "{code:?}\n{output}");
    assert!(
        output.contains("cannot be stored in S3")
            && output.contains("no-such-bucket")
            && output.contains("NoSuchBucket"),
        "{output}"
    );
    let records = stack.records().await?;
    assert!(
        !records.iter().any(|r| r.json["data"]["id"] == big),
        "sent without its payload"
    );

    let mut capture = stack.spawn_capture(&[]).await?;
    let mut relay = stack.spawn("bridge", &["relay"])?;
    events
        .until("both events", Duration::from_secs(90), |s| {
            let got = s.by_event_id();
            got.contains_key(big) && got.contains_key(good)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;
    capture.terminate(Duration::from_secs(30)).await?;
    relay.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

/// S3 browned out (503 `SlowDown` to every call) while a record above the limit goes out, and
/// again while the relay reads it back: capture holds the record (and what follows it) until
/// S3 takes the whole one, the relay holds its page until S3 gives it back, and nothing is
/// sent without its payload or parked: a transient failure never parks a healthy event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_brownout_holds_a_large_record_at_both_ends_and_parks_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "s3-brownout").await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    // S3 through the proxy, every other service straight to the emulator.
    let env = stack.env_with(&[("AWS_ENDPOINT_URL_S3", &proxy.endpoint)]);
    let injected = || proxy.plan.injected.load(Ordering::SeqCst);
    let retried = |since: u32, proc: &Proc| {
        let proc_ok = proc.ensure_running();
        async move {
            proc_ok?;
            Ok((injected() >= since + 6).then_some(()))
        }
    };

    proxy.plan.set_brownout(Some(harness::faults::S3));
    let capture = Proc::spawn("bridge", &["capture"], &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let big = "00000000-0000-0000-0000-0000000000e1";
    let after = "00000000-0000-0000-0000-0000000000e2";
    let payload = json!({"blob": "v".repeat(1_200_000)});
    large_message_then_row(&pg, big, after, "doc-3", &payload).await?;
    let before = injected();
    harness::wait::until("capture retrying s3", Duration::from_secs(60), || {
        retried(before, &capture)
    })
    .await?;
    let records = stack.records().await?;
    let sent = |id: &str| records.iter().any(|r| r.json["data"]["id"] == id);
    assert!(!sent(big) && !sent(after), "sent during the brownout");

    proxy.plan.set_brownout(None);
    let records = harness::wait::until("both records in the stream", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        let has = |id: &str| records.iter().any(|r| r.json["data"]["id"] == id);
        Ok((has(big) && has(after)).then_some(records))
    })
    .await?;
    let record_of = |id: &str| records.iter().find(|r| r.json["data"]["id"] == id);
    let (Some(big_record), Some(after_record)) = (record_of(big), record_of(after)) else {
        anyhow::bail!("records went missing");
    };
    assert!(
        big_record.json["metadata"]["claim-check"]["key"].is_string(),
        "{}",
        big_record.json["metadata"]
    );
    // One aggregate, one shard: the relay cannot publish the later record past the held one.
    assert_eq!(big_record.shard, after_record.shard);

    proxy.plan.set_brownout(Some(harness::faults::S3));
    let before = injected();
    let relay = Proc::spawn("bridge", &["relay"], &env)?;
    harness::wait::until("the relay retrying s3", Duration::from_secs(60), || {
        retried(before, &relay)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.ensure_running()?;
    events.poll().await?;
    assert!(events.by_event_id().is_empty(), "published during the brownout");

    proxy.plan.set_brownout(None);
    events
        .until("both events", Duration::from_secs(90), |s| {
            let got = s.by_event_id();
            got.contains_key(big) && got.contains_key(after)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    let got = events.by_event_id();
    let claim = &got[big].1["detail"]["metadata"]["claim_check"];
    let text = String::from_utf8(harness::s3::claimed_object(&sdk, claim).await?)?;
    assert_eq!(serde_json::from_str::<Value>(&text)?, payload);

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = harness::dlq::queue_url(&sqs, "bridge-dlq").await?;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    let parked = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(parked.as_deref(), Some("0"), "{}", relay.output());
    capture.ensure_running()?;
    relay.ensure_running()?;
    Ok(())
}

/// Messages in the bridge's dead-letter queue, visible or not.
async fn parked_count(sdk: &aws_config::SdkConfig) -> anyhow::Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let dlq = harness::dlq::queue_url(&sqs, "bridge-dlq").await?;
    let names = [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ];
    let out = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await?;
    let mut total = 0;
    for name in &names {
        let value = out
            .attributes()
            .and_then(|a| a.get(name))
            .ok_or_else(|| anyhow::anyhow!("bridge-dlq: no {name:?}"))?;
        total += value.parse::<u64>()?;
    }
    Ok(total)
}

/// A record whose claim check is gone, read by a relay whose role may not list the bucket: S3
/// then answers the missing key 403 AccessDenied, as it answers a refusal of the relay itself.
/// The relay cannot tell them apart, so it holds the page — keeps running, parks nothing, and
/// `/healthz` says why — where it used to stop (and ECS restarted it onto the same record, for
/// ever). With `s3:ListBucket` granted (the deployed roles have it) S3 answers 404 NoSuchKey:
/// the record is parked with that reason, and the record after it on its shard is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_claim_check_is_held_while_s3_answers_403_and_parked_once_it_answers_404() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "gone-claim").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let (big, after) = (
        "00000000-0000-0000-0000-0000000000f1",
        "00000000-0000-0000-0000-0000000000f2",
    );
    let payload = json!({"blob": "u".repeat(1_200_000)});
    large_message_then_row(&pg, big, after, "doc-5", &payload).await?;
    let records = harness::wait::until("both records in the stream", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        let has = |id: &str| records.iter().any(|r| r.json["data"]["id"] == id);
        Ok((has(big) && has(after)).then_some(records))
    })
    .await?;
    let gone = records
        .iter()
        .find(|r| r.json["data"]["id"] == big)
        .map(|r| r.json["metadata"]["claim-check"].clone())
        .unwrap_or_default();
    let gone_key = gone["key"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(!gone_key.is_empty(), "no claim check: {gone}");
    harness::s3::client(&sdk)
        .delete_object()
        .bucket(gone["bucket"].as_str().unwrap_or_default())
        .key(&gone_key)
        .send()
        .await?;

    // S3 as AWS answers a role without s3:ListBucket on the bucket.
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    proxy.plan.missing_key_as_denied.store(true, Ordering::SeqCst);
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[("AWS_ENDPOINT_URL_S3", &proxy.endpoint)]);
    let relay = Proc::spawn(
        "bridge",
        &["relay", "--lease-duration-secs", "3", "--metrics-listen", &listen],
        &env,
    )?;
    let refusals = || proxy.plan.injected.load(Ordering::SeqCst);
    harness::wait::until(
        "the relay to hold the page through refusals",
        Duration::from_secs(90),
        || {
            let running = relay.ensure_running();
            let (sdk, n) = (&sdk, refusals());
            async move {
                running?;
                anyhow::ensure!(parked_count(sdk).await? == 0, "parked while S3 answered 403");
                Ok((n >= 4).then_some(()))
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    let body = harness::metrics::wait_health(port, 503, "AccessDenied", Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    assert!(body.contains(&gone_key), "{body}");
    events.poll().await?;
    assert!(
        !events.by_event_id().contains_key(after),
        "published past the held record"
    );
    relay.ensure_running()?;

    // s3:ListBucket granted: the missing key is a 404, the record's own fault.
    proxy.plan.missing_key_as_denied.store(false, Ordering::SeqCst);
    events
        .until("the record after the gone one", Duration::from_secs(90), |s| {
            s.by_event_id().contains_key(after)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    let parked = harness::dlq::receive(&sdk, "bridge-dlq", 1).await?;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let reason = parked[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&gone_key) && reason.contains("NoSuchKey"),
        "{reason}"
    );
    assert!(!events.by_event_id().contains_key(big));
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    relay.ensure_running()?;
    Ok(())
}

/// A stream whose records may be larger (`bridge setup --max-record-size-kib`, Kinesis'
/// `UpdateMaxRecordSize`) carries records up to its limit whole: capture reads the limit and
/// claim-checks only what is above it, and the relay publishes each (by its own claim check,
/// above EventBridge's limit) with the payload written. The emulator models the rule: a record
/// above the stream's limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_a_larger_record_limit_carries_large_records_whole() -> anyhow::Result<()> {
    const MIB: usize = 1024 * 1024;
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let sdk = stack.moto.sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let limit_of = || async {
        let out = kinesis
            .describe_stream_summary()
            .stream_name(&stack.stream)
            .send()
            .await?;
        anyhow::Ok(
            out.stream_description_summary()
                .and_then(|s| s.max_record_size_in_kib()),
        )
    };
    assert_eq!(limit_of().await?, Some(1024), "a new stream's default");
    let refused = kinesis
        .put_record()
        .stream_name(&stack.stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new(vec![b'x'; 3 * MIB / 2]))
        .send()
        .await;
    assert!(refused.is_err(), "a 1.5 MiB record is above the default limit");

    let out = stack
        .run_ok("bridge", &["setup", "--max-record-size-kib", "3072"])
        .await?;
    assert!(out.contains("max record size 3072 KiB (set)"), "{out}");
    let out = stack
        .run_ok("bridge", &["setup", "--max-record-size-kib", "3072"])
        .await?;
    assert!(out.contains("max record size 3072 KiB (unchanged)"), "{out}");
    assert_eq!(limit_of().await?, Some(3072));

    let mut events = bus::monolith_events(&sdk, "large-records").await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let row = "00000000-0000-0000-0000-0000000000f1";
    let message = "00000000-0000-0000-0000-0000000000f2";
    let above = "00000000-0000-0000-0000-0000000000f3";
    let small = "00000000-0000-0000-0000-0000000000f4";
    let row_payload = json!({"blob": "r".repeat(2 * MIB)});
    let message_payload = json!({"blob": "m".repeat(2 * MIB)});
    let above_payload = json!({"blob": "a".repeat(7 * MIB / 2)});
    let insert = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                  VALUES ($1::text::uuid, 'Document', $2, $3, $4::text::jsonb, 1)";
    for (id, payload) in [(row, &row_payload), (above, &above_payload)] {
        pg.execute(insert, &[&id, &id, &"DocumentStored", &payload.to_string()])
            .await?;
    }
    large_message_then_row(&pg, message, small, "doc-4", &message_payload).await?;

    let records = harness::wait::until("every record in the stream", Duration::from_secs(90), || async {
        capture.ensure_running()?;
        let records = stack.records().await?;
        let has = |id: &str| records.iter().any(|r| r.json["data"]["id"] == id);
        Ok(has(small).then_some(records))
    })
    .await?;
    let record_of = |id: &str| {
        records
            .iter()
            .find(|r| r.json["data"]["id"] == id)
            .ok_or_else(|| anyhow::anyhow!("no record of {id}"))
    };
    for id in [row, message] {
        let record = record_of(id)?;
        assert!(
            record.json["metadata"]["claim-check"].is_null(),
            "{id} is within the stream's limit and travels whole: {}",
            record.json["metadata"]
        );
        assert!(
            record.json.to_string().len() > 2 * MIB,
            "{id} carries its payload"
        );
    }
    let record = record_of(above)?;
    assert!(
        record.json["metadata"]["claim-check"]["key"].is_string(),
        "above 3 MiB: a claim check: {}",
        record.json["metadata"]
    );

    let mut relay = stack.spawn("bridge", &["relay"])?;
    events
        .until("all four events", Duration::from_secs(120), |s| {
            let got = s.by_event_id();
            [row, message, above, small]
                .iter()
                .all(|id| got.contains_key(*id))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;
    let got = events.by_event_id();
    for (id, payload) in [
        (row, &row_payload),
        (message, &message_payload),
        (above, &above_payload),
    ] {
        let claim = &got[id].1["detail"]["metadata"]["claim_check"];
        let text = String::from_utf8(harness::s3::claimed_object(&sdk, claim).await?)?;
        assert_eq!(serde_json::from_str::<Value>(&text)?, *payload, "{id}'s payload");
    }
    assert_eq!(parked_count(&sdk).await?, 0, "{}", relay.output());
    capture.terminate(Duration::from_secs(30)).await?;

    // A role that may not read the limit (written before capture read it): capture warns and
    // keeps the default 1 MiB limit, so a 2 MiB row goes by claim check — it does not stop.
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    proxy
        .plan
        .set_deny(Some("Kinesis_20131202.DescribeStreamSummary"));
    let env = stack.env_with(&[("AWS_ENDPOINT_URL_KINESIS", &proxy.endpoint)]);
    let mut denied = Proc::spawn("bridge", &["capture"], &env)?;
    stack.wait_slot_active("outbox_bridge", &denied).await?;
    let later = "00000000-0000-0000-0000-0000000000f5";
    pg.execute(
        insert,
        &[&later, &later, &"DocumentStored", &row_payload.to_string()],
    )
    .await?;
    let record = harness::wait::until("the later row in the stream", Duration::from_secs(90), || async {
        denied.ensure_running()?;
        let records = stack.records().await?;
        Ok(records.into_iter().find(|r| r.json["data"]["id"] == later))
    })
    .await?;
    assert!(
        record.json["metadata"]["claim-check"]["key"].is_string(),
        "the default limit: {}",
        record.json["metadata"]
    );
    assert!(
        denied
            .output()
            .contains("kinesis:DescribeStreamSummary is denied"),
        "{}",
        denied.output()
    );
    events
        .until("the later event", Duration::from_secs(90), |s| {
            s.by_event_id().contains_key(later)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    denied.terminate(Duration::from_secs(30)).await?;
    relay.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
