//! `bridge status` says what needs attention (an idle slot, unleased shards, parked records)
//! and exits 1 until all is well; `bridge dlq list` shows parked records with their reasons and
//! `bridge dlq redrive` puts them back on the stream.

use std::time::Duration;

use harness::process;
use harness::stack::Stack;
use serde_json::Value;

async fn status(stack: &Stack) -> anyhow::Result<(Option<i32>, Value)> {
    let (code, out, err) = process::run("bridge", &["status", "--json"], &stack.env()).await?;
    let json =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("status is not JSON ({e}): {out}\n{err}"))?;
    Ok((code, json))
}

fn attention(v: &Value) -> String {
    v["attention"]
        .as_array()
        .map(|a| format!("{a:?}"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flags_what_needs_attention_and_dead_letters_can_be_redriven() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    // Set up but nothing running: the slot is idle and no shard is leased.
    let (code, idle) = status(&stack).await?;
    assert_eq!(code, Some(1), "{idle}");
    assert!(attention(&idle).contains("is not active"), "{idle}");
    assert_eq!(idle["slot"]["exists"], true);
    assert_eq!(idle["publication_tables"][0], "public.outbox");

    // A record no relay has read: status says how old it is, and past the threshold (half the
    // stream's retention by default) that it is on its way to being trimmed unread.
    let sdk = stack.moto.sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let waiting = kinesis
        .put_record()
        .stream_name(&stack.stream)
        .partition_key("quiet")
        .data(aws_sdk_kinesis::primitives::Blob::new(
            serde_json::json!({"data": {"id": 1}, "metadata": {"record-type": "data", "operation": "insert",
                "schema-name": "public", "table-name": "customers"}})
            .to_string()
            .into_bytes(),
        ))
        .send()
        .await?
        .shard_id()
        .to_owned();
    assert_eq!(idle["retention_hours"], 24);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, out, err) = process::run(
        "bridge",
        &["status", "--json", "--unpublished-age-threshold", "1s"],
        &stack.env(),
    )
    .await?;
    assert_eq!(code, Some(1), "{out}{err}");
    let late: Value = serde_json::from_str(&out)?;
    let unpublished = late["oldest_unpublished"].as_array().cloned().unwrap_or_default();
    assert_eq!(unpublished.len(), 1, "{late}");
    assert_eq!(unpublished[0]["shard_id"], waiting.as_str());
    assert!(
        unpublished[0]["age_ms"].as_i64().is_some_and(|ms| ms >= 1000),
        "{late}"
    );
    let trim_warning = format!("shard {waiting}: its oldest unpublished record arrived");
    assert!(
        attention(&late).contains(&trim_warning) && attention(&late).contains("keeps records 24 h"),
        "{late}"
    );
    let (_, fresh) = status(&stack).await?;
    assert!(
        !attention(&fresh).contains(&trim_warning),
        "12 h by default: {fresh}"
    );

    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let healthy = harness::wait::until("status to be all well", Duration::from_secs(60), || async {
        bridge.ensure_running()?;
        let (code, v) = status(&stack).await?;
        Ok((code == Some(0)).then_some(v))
    })
    .await?;
    assert_eq!(healthy["slot"]["active"], true);
    assert_eq!(healthy["open_shards"], 4);
    assert_eq!(healthy["shards"].as_array().map(Vec::len), Some(4), "{healthy}");
    assert!(healthy["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| s["owner"].is_string()));
    assert_eq!(healthy["dead_letters"], 0);
    // Once the relay read past it, nothing is left unpublished.
    let caught_up = harness::wait::until("the relay past the record", Duration::from_secs(30), || async {
        let (_, v) = status(&stack).await?;
        Ok((v["oldest_unpublished"].as_array().is_some_and(Vec::is_empty)).then_some(v))
    })
    .await?;
    assert!(!attention(&caught_up).contains("unpublished"), "{caught_up}");

    // A record that is not JSON: the relay parks it; status and the DLQ tools show it.
    kinesis
        .put_record()
        .stream_name(&stack.stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new(
            b"definitely not json".to_vec(),
        ))
        .send()
        .await?;
    let parked = harness::wait::until("the bad record to be parked", Duration::from_secs(60), || async {
        let (code, v) = status(&stack).await?;
        Ok((code == Some(1) && v["dead_letters"] == 1).then_some(v))
    })
    .await?;
    assert!(attention(&parked).contains("bridge dlq list"), "{parked}");
    let listed = stack.run_ok("bridge", &["dlq", "list", "--json"]).await?;
    let listed: Value = serde_json::from_str(&listed)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(
        listed[0]["reason"].as_str().unwrap_or("").contains("not JSON"),
        "{listed}"
    );
    // Listing leaves it parked; a text listing names the reason too.
    let text = stack.run_ok("bridge", &["dlq", "list"]).await?;
    assert!(
        text.contains("1 message(s) in bridge-dlq") && text.contains("not JSON"),
        "{text}"
    );

    // Redrive puts it back on the stream; still not JSON, so the relay parks it again.
    let out = stack.run_ok("bridge", &["dlq", "redrive"]).await?;
    assert!(out.contains("redriven 1 record(s)"), "{out}");
    let first: Value = serde_json::from_str(listed[0]["body"].as_str().unwrap_or("{}"))?;
    let again = harness::wait::until(
        "the redriven record to be parked again",
        Duration::from_secs(60),
        || async {
            let listed: Value =
                serde_json::from_str(&stack.run_ok("bridge", &["dlq", "list", "--json"]).await?)?;
            Ok((listed.as_array().map(Vec::len) == Some(1)).then_some(listed))
        },
    )
    .await?;
    let second: Value = serde_json::from_str(again[0]["body"].as_str().unwrap_or("{}"))?;
    assert_eq!(second["record"], "definitely not json");
    let place = |v: &Value| (v["shard_id"].clone(), v["sequence_number"].clone());
    assert_ne!(
        place(&second),
        place(&first),
        "parked again from its new place in the stream"
    );
    Ok(())
}

/// An event EventBridge refused for its content is parked as its original stream record, so
/// `bridge dlq redrive` replays it through the relay and, refused no more, it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_redriven_is_published() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = harness::bus::monolith_events(&sdk, "redriven").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    proxy
        .plan
        .refuse_put_events
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let relay = process::Proc::spawn("bridge", &["relay", "--lease-duration-secs", "3"], &env)?;
    let id = "00000000-0000-0000-0000-00000000f001";
    stack
        .insert_outbox(
            id,
            ("Order", "o-redrive"),
            "OrderPlaced",
            r#"{"n": 12345678901234567.89}"#,
        )
        .await?;
    let listed = harness::wait::until(
        "the refused event to be parked",
        Duration::from_secs(60),
        || async {
            relay.ensure_running()?;
            let listed: Value =
                serde_json::from_str(&stack.run_ok("bridge", &["dlq", "list", "--json"]).await?)?;
            Ok((listed.as_array().map(Vec::len) == Some(1)).then_some(listed))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}\ncapture:\n{}", relay.output(), capture.output()))?;
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("InvalidArgument"),
        "{listed}"
    );
    let out = stack.run_ok("bridge", &["dlq", "redrive"]).await?;
    assert!(out.contains("redriven 1 record(s)"), "{out}");
    events
        .until("the redriven event on the bus", Duration::from_secs(60), |s| {
            s.by_event_id().contains_key(id)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrelay:\n{}", relay.output()))?;
    let left: Value = serde_json::from_str(&stack.run_ok("bridge", &["dlq", "list", "--json"]).await?)?;
    assert_eq!(
        left.as_array().map(Vec::len),
        Some(0),
        "nothing parked again: {left}"
    );
    // Back on its aggregate's partition key, so on its aggregate's shard.
    let records = stack.records().await?;
    let copies: Vec<_> = records
        .iter()
        .filter(|r| harness::stack::outbox_id(r) == Some(id))
        .collect();
    assert_eq!(copies.len(), 2, "the original and its redriven copy");
    assert!(copies.iter().all(|r| r.partition_key == "o-redrive"));
    relay.ensure_running()?;
    Ok(())
}

/// Two redrives of one queue, each slower than the hold (every call slowed, `--hold-secs 6`),
/// the second starting once the first's hold ran out: each parked record goes back exactly once
/// and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrives_longer_than_the_hold_send_each_record_once() -> anyhow::Result<()> {
    // ~300 ms a record (two calls slowed to 150 ms): each redrive outlasts its hold several
    // times, with seconds of margin for a loaded machine between a hold's extensions.
    const PARKED: u64 = 60;
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = harness::dlq::queue_url(&sqs, "bridge-dlq").await?;
    for n in 0..PARKED {
        let body = serde_json::json!({
            "reason": "parked by the test",
            "stream": stack.stream,
            "record": serde_json::json!({"redrive": n}).to_string(),
            "partition_key": format!("k{n}"),
        });
        sqs.send_message()
            .queue_url(&url)
            .message_body(body.to_string())
            .send()
            .await?;
    }
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    proxy
        .plan
        .latency_ms
        .store(150, std::sync::atomic::Ordering::SeqCst);
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let args = ["dlq", "redrive", "--hold-secs", "6", "--max", "1000"];
    let first = process::run("bridge", &args, &env);
    let second = async {
        tokio::time::sleep(Duration::from_secs(7)).await;
        process::run("bridge", &args, &env).await
    };
    let (first, second) = tokio::join!(first, second);
    for (code, out, err) in [first?, second?] {
        assert_eq!(code, Some(0), "{out}\n{err}");
    }
    proxy
        .plan
        .latency_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);

    let mut sent = std::collections::BTreeMap::<u64, usize>::new();
    for r in stack.records().await? {
        if let Some(n) = r.json["redrive"].as_u64() {
            *sent.entry(n).or_default() += 1;
        }
    }
    let twice: Vec<_> = sent.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(sent.len() as u64, PARKED, "{sent:?}");
    let left: Value = serde_json::from_str(&stack.run_ok("bridge", &["dlq", "list", "--json"]).await?)?;
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
    Ok(())
}
