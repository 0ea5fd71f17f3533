//! A payload above the EventBridge limit arrives as a claim check whose S3 object is the
//! payload; a malformed record lands in the dead-letter queue with its reason, and the events
//! after it still arrive. Events EventBridge can never take (a detail type over 128 characters,
//! metadata too large even after the claim check) are parked before PutEvents, so they cannot
//! fail a whole request — EventBridge's request validation is emulated by a proxy. An event that
//! makes EventBridge refuse its whole call for a limit the relay does not know of is found by
//! splitting the call, and parked alone; but a refusal of every call from the start (maybe the
//! configuration, not an event) parks nothing: the worker holds its page, `/healthz` says so,
//! and the page goes through once the refusals end — and a lone refused event right after a
//! restart is parked as soon as another event is accepted.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use harness::bus;
use harness::stack::Stack;
use serde_json::{json, Value};

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      VALUES ($1::text::uuid, 'Document', 'doc-1', $2, $3::text::jsonb, 1)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_become_claim_checks_and_bad_records_are_parked_with_a_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "docs").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    proxy
        .plan
        .put_events_entry_limit
        .store(65536, std::sync::atomic::Ordering::SeqCst);
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let relay_args = [
        "relay",
        "--max-event-bytes",
        "65536",
        "--lease-duration-secs",
        "3",
        "--stall-timeout-secs",
        "2",
        "--metrics-listen",
        &listen,
    ];
    let pg = stack.pg.client().await?;

    // Every call refused as a whole before anything was accepted (a bus EventBridge cannot take,
    // or one bad event — nothing tells them apart yet): the relay keeps running, parks nothing,
    // and /healthz names the shard that makes no progress.
    set_refusal(&proxy, Some("\"Entries\""));
    let first = "00000000-0000-0000-0000-0000000000c1";
    pg.execute(INSERT, &[&first, &"DocumentTagged", &r#"{"tag": "first"}"#])
        .await?;
    // A record the relay skips (a DMS control record), on the shard of `first`: it is read with
    // the held page on every try, and counted once, when the page settles.
    let control = json!({"metadata": {"record-type": "control", "operation": "create-table",
        "schema-name": "public", "table-name": "outbox"}});
    stack
        .kinesis
        .put_record()
        .stream_name(&stack.stream)
        .partition_key("doc-1")
        .data(Blob::new(control.to_string().into_bytes()))
        .send()
        .await?;
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    let mut relay = harness::process::Proc::spawn("bridge", &relay_args, &env)?;
    relay
        .wait_output(
            "the relay to hold the refused page",
            &["holding the page", first],
            Duration::from_secs(90),
        )
        .await?;
    let body = harness::metrics::wait_health(port, 503, "made no progress", Duration::from_secs(60)).await?;
    assert!(body.contains("shard"), "{body}");
    harness::wait::until(
        "the page to be held a second time",
        Duration::from_secs(30),
        || {
            let holds = relay.output().matches("holding the page").count();
            async move { Ok((holds >= 2).then_some(())) }
        },
    )
    .await?;
    relay.ensure_running()?;
    let output = relay.output();
    assert!(!output.contains("parked in the dead-letter queue"), "{output}");

    // From here on only calls holding this text are refused: one event EventBridge cannot take.
    // The held page goes through on its next try (`first` is among the good events below).
    let marker = "refused-as-a-whole-call";
    set_refusal(&proxy, Some(marker));

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
    // Two events EventBridge can never take, each in its own transaction before the good ones.
    let long_type = "00000000-0000-0000-0000-0000000000d1";
    pg.execute(INSERT, &[&long_type, &"D".repeat(200), &"{}"]).await?;
    let huge_metadata = "00000000-0000-0000-0000-0000000000d2";
    pg.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
         VALUES ($1::text::uuid, 'Document', repeat('a', 70000), 'DocumentStored', '{}', 1)",
        &[&huge_metadata],
    )
    .await?;
    pg.execute(INSERT, &[&small_id, &"DocumentTagged", &r#"{"tag": "t"}"#])
        .await?;
    // The event whose call EventBridge refuses, in one transaction with three good ones (one page).
    let whole_call = "00000000-0000-0000-0000-0000000000d3";
    let neighbours = [
        "00000000-0000-0000-0000-0000000000e1",
        "00000000-0000-0000-0000-0000000000e2",
        "00000000-0000-0000-0000-0000000000e3",
    ];
    let row = |id: &str, payload: &str| {
        format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             VALUES ('{id}', 'Document', 'doc-2', 'DocumentTagged', '{payload}', 1);"
        )
    };
    let mut batch = format!("BEGIN; {}", row(neighbours[0], r#"{"tag": "n"}"#));
    batch.push_str(&row(whole_call, &format!(r#"{{"tag": "{marker}"}}"#)));
    for id in &neighbours[1..] {
        batch.push_str(&row(id, r#"{"tag": "n"}"#));
    }
    batch.push_str("COMMIT;");
    pg.batch_execute(&batch).await?;

    let expected: Vec<&str> = [big_id, small_id, first].into_iter().chain(neighbours).collect();
    events
        .until("every good event", Duration::from_secs(90), |s| {
            let got = s.by_event_id();
            expected.iter().all(|id| got.contains_key(*id))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;
    assert_eq!(
        harness::metrics::scrape(port, "bridge_relay_records_skipped_total").await?,
        1.0,
        "a held page counts its skipped record once, when it settles"
    );
    let got = events.by_event_id();
    let (_, small) = &got[small_id];
    assert_eq!(small["detail"]["data"]["tag"], "t");
    let (_, large) = &got[big_id];
    let claim = &large["detail"]["metadata"]["claim_check"];
    assert!(
        large["detail"]["data"].is_null(),
        "the payload travels by claim check"
    );
    let object = harness::s3::claimed_object(&sdk, claim).await?;
    assert_eq!(
        serde_json::from_slice::<Value>(&object)?,
        big,
        "the S3 object is the original payload"
    );
    assert_eq!(claim["size"].as_u64(), Some(object.len() as u64));
    assert_eq!(claim["sha256"].as_str().map(str::len), Some(64));

    // The dead-letter queue holds the five bad records, each with its reason and the original.
    let parked = harness::dlq::receive(&sdk, "bridge-dlq", 5).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains(whole_call)
            && r.contains("refused a PutEvents call holding only event")
            && r.contains("ValidationException")),
        "{reasons:?}"
    );
    assert!(!events.by_event_id().contains_key(whole_call));
    // It shared a call with good events at first (so the call was split to find it).
    let shared = proxy.plan.put_events_requests().iter().any(|body| {
        body.contains(marker)
            && serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|b| b["Entries"].as_array().map(Vec::len))
                .is_some_and(|n| n > 1)
    });
    assert!(shared, "the refused event was first sent along with others");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(long_type) && r.contains("detail type of 200 characters")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(huge_metadata) && r.contains("even without its payload")),
        "{reasons:?}"
    );
    // What is parked for them is the original stream record, so a redrive can replay it.
    for p in parked
        .iter()
        .filter(|p| p["reason"].as_str().is_some_and(|r| r.contains("-0000000000d")))
    {
        let record: Value = serde_json::from_str(p["record"].as_str().unwrap_or_default())?;
        assert_eq!(record["metadata"]["table-name"], "outbox", "{p}");
        // Its own record, not a neighbour's from the same page.
        let id = record["data"]["id"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && p["reason"].as_str().is_some_and(|r| r.contains(id)),
            "{p}"
        );
    }
    assert!(
        !events.by_event_id().contains_key(long_type) && !events.by_event_id().contains_key(huge_metadata)
    );
    relay.ensure_running()?;
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
    harness::metrics::wait_health(port, 200, "", Duration::from_secs(60)).await?;

    // Right after a restart (nothing accepted yet), an event EventBridge refuses, alone at the
    // shard's tip: held, not parked, the relay running. The next event of its aggregate (same
    // shard) is read with it, accepted, and then the refused one is parked.
    assert_eq!(relay.terminate(Duration::from_secs(30)).await?, Some(0));
    let relay = harness::process::Proc::spawn("bridge", &relay_args, &env)?;
    let (lone, after) = (
        "00000000-0000-0000-0000-0000000000d4",
        "00000000-0000-0000-0000-0000000000e4",
    );
    let doc3 = |id: &str, tag: &str| {
        format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             VALUES ('{id}', 'Document', 'doc-3', 'DocumentTagged', '{{\"tag\": \"{tag}\"}}', 1)"
        )
    };
    pg.batch_execute(&doc3(lone, marker)).await?;
    relay
        .wait_output(
            "the relay to hold the lone refused event",
            &["holding the page", lone],
            Duration::from_secs(90),
        )
        .await?;
    assert!(
        !relay.output().contains("parked in the dead-letter queue"),
        "{}",
        relay.output()
    );
    pg.batch_execute(&doc3(after, "after")).await?;
    events
        .until("the event after the refused one", Duration::from_secs(90), |s| {
            s.by_event_id().contains_key(after)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    relay
        .wait_output(
            "the lone refused event to be parked",
            &["parked in the dead-letter queue", lone],
            Duration::from_secs(60),
        )
        .await?;
    assert!(!events.by_event_id().contains_key(lone));
    relay.ensure_running()?;
    Ok(())
}

fn set_refusal(proxy: &harness::faults::FaultProxy, holding: Option<&str>) {
    if let Ok(mut marker) = proxy.plan.refuse_put_events_holding.lock() {
        *marker = holding.map(str::to_owned);
    }
}
