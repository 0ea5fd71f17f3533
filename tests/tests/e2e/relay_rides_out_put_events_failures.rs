//! PutEvents throttling and partial failures (injected by an HTTP proxy in front of the
//! emulator), and calls that never answer, delay events but lose none; and what the relay asks EventBridge to store carries the
//! outbox payload digit for digit (numbers beyond f64, unicode, deep nesting).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::bus;
use harness::faults::FaultProxy;
use harness::process::Proc;
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_partially_failed_put_events_are_retried_until_every_event_lands() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "all").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    proxy.plan.throttle_put_events.store(3, Ordering::SeqCst);
    proxy.plan.partial_put_events.store(6, Ordering::SeqCst);
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint),
        ("BRIDGE_METRICS_LISTEN", &listen),
    ]);
    let relay = Proc::spawn(
        "bridge",
        // A stall bound above the longest retry pause (10 s): /healthz must see a worker that
        // only retries as stalled, not merely one that sleeps long.
        &[
            "relay",
            "--lease-duration-secs",
            "10",
            "--stall-timeout-secs",
            "20",
        ],
        &env,
    )?;

    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "20",
            "--orders",
            "60",
            "--concurrency",
            "2",
            "--progress",
            "never",
        ],
    )?;
    assert_eq!(
        load.wait(Duration::from_secs(120)).await?,
        Some(0),
        "{}",
        load.output()
    );
    // A payload an f64 cannot hold, written as the monolith would (jsonb keeps numerics exact).
    let exact = r#"{"deep": [[[{"x": [1.50]}]]], "name": "été 🚀", "total": 12345678901234567.89, "units": 123456789012345678901234567890}"#;
    stack
        .insert_outbox(
            "00000000-0000-0000-0000-00000000b161",
            ("Invoice", "inv-1"),
            "InvoiceIssued",
            exact,
        )
        .await?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(120), || {
            format!("relay:\n{}\ncapture:\n{}", relay.output(), capture.output())
        })
        .await?;
    assert_eq!(
        proxy.plan.throttled.load(Ordering::SeqCst),
        3,
        "every throttle was injected"
    );
    assert_eq!(
        proxy.plan.partial.load(Ordering::SeqCst),
        6,
        "every partial failure was injected"
    );
    assert!(relay.output().contains("putevents retry"), "{}", relay.output());
    // Partial failures never deliver a failed entry, so retries add no duplicates here.
    assert_eq!(
        events.received.len(),
        events.by_event_id().len(),
        "no duplicates from entry-level retries"
    );
    // EventBridge (and moto's Python behind the proxy) may re-encode numbers; what the relay sent may not.
    let sent = proxy.plan.put_events_requests();
    let detail = sent
        .iter()
        .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .flat_map(|body| body["Entries"].as_array().cloned().unwrap_or_default())
        .filter_map(|entry| entry["Detail"].as_str().map(str::to_owned))
        .find(|d| d.contains("00000000-0000-0000-0000-00000000b161"))
        .ok_or_else(|| anyhow::anyhow!("no PutEvents entry for the exact-numbers row"))?;
    let stored: String = stack
        .pg
        .client()
        .await?
        .query_one(
            "SELECT payload::text FROM outbox WHERE aggregateid = 'inv-1'",
            &[],
        )
        .await?
        .get(0);
    assert!(
        detail.ends_with(&format!(r#""data":{stored}}}"#)),
        "the event's data is the outbox payload as stored, byte for byte:\n{detail}\nvs\n{stored}"
    );
    assert!(stored.contains("12345678901234567.89") && stored.contains("123456789012345678901234567890"));

    // EventBridge browned out: the worker cannot get its page through, /healthz says so; once
    // it is back the event lands and the relay is healthy again.
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    proxy.plan.set_brownout(Some("AWSEvents."));
    let late = "00000000-0000-0000-0000-00000000b162";
    stack
        .insert_outbox(late, ("Invoice", "inv-2"), "InvoiceIssued", "{}")
        .await?;
    let body =
        harness::metrics::wait_health(port, 503, "worker made no progress", Duration::from_secs(60)).await?;
    assert!(body.contains("relay: shard"), "{body}");
    proxy.plan.set_brownout(None);
    events
        .until(
            "the event written during the brownout",
            Duration::from_secs(60),
            |s| s.by_event_id().contains_key(late),
        )
        .await?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;

    // Kinesis' GetRecords browned out: no page can be read, and /healthz says so too (a worker
    // that only retries its read is making no progress); back, and the next event lands.
    proxy.plan.set_brownout(Some("Kinesis_20131202.GetRecords"));
    let body =
        harness::metrics::wait_health(port, 503, "worker made no progress", Duration::from_secs(60)).await?;
    assert!(body.contains("relay: shard"), "{body}");
    proxy.plan.set_brownout(None);
    let after = "00000000-0000-0000-0000-00000000b163";
    stack
        .insert_outbox(after, ("Invoice", "inv-3"), "InvoiceIssued", "{}")
        .await?;
    events
        .until(
            "the event written after the read outage",
            Duration::from_secs(60),
            |s| s.by_event_id().contains_key(after),
        )
        .await?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    relay.ensure_running()?;
    Ok(())
}

/// A permission taken away while a page's calls are in flight (AccessDeniedException: fatal,
/// and not the event's fault): the relay stops with the code, parks nothing and does not move
/// its checkpoint past the page; started again once the permission is back, it delivers every
/// event of the page — the ones accepted before the denial again (at-least-once), none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_events_call_denied_mid_page_stops_the_relay_before_its_checkpoint() -> anyhow::Result<()> {
    let first = "00000000-0000-0000-0000-00000000d001";
    let Rig {
        stack,
        sdk,
        mut events,
        capture,
        proxy,
        env,
        mut relay,
    } = Rig::running("denied", first).await?;

    // One transaction of 200 events of one aggregate: one page, twenty PutEvents calls, eight
    // at a time. The call holding the 150th event is denied; calls before it were accepted.
    let marker = "denied-mid-page";
    *proxy
        .plan
        .deny_put_events_holding
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))? = Some(marker.to_owned());
    let mut batch = String::from("BEGIN;");
    for i in 0..200 {
        let tag = if i == 149 { marker } else { "ok" };
        batch.push_str(&format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             VALUES (gen_random_uuid(), 'Document', 'doc-1', 'DocumentTagged', '{{\"tag\": \"{tag}\", \"i\": {i}}}', {});",
            i + 1
        ));
    }
    batch.push_str("COMMIT;");
    stack.pg.client().await?.batch_execute(&batch).await?;
    let code = relay.wait(Duration::from_secs(90)).await?;
    let output = relay.output();
    assert!(
        code.is_some_and(|c| c != 0),
        "the relay stops: {code:?}\n{output}"
    );
    assert!(output.contains("AccessDeniedException"), "{output}");
    assert!(!output.contains("parked in the dead-letter queue"), "{output}");
    let page: HashSet<String> = stack
        .outbox_ids()
        .await?
        .into_iter()
        .filter(|id| id != first)
        .collect();
    events
        .until(
            "the calls accepted before the denial",
            Duration::from_secs(30),
            |s| {
                let got = s.by_event_id();
                page.iter().any(|id| got.contains_key(id))
            },
        )
        .await?;
    let before = page
        .iter()
        .filter(|id| events.by_event_id().contains_key(*id))
        .count();
    assert!(before < page.len(), "the denied call's events were not delivered");

    // The permission is back: a new relay (its lease taken over once the old one expires)
    // reads the page again from the checkpoint before it.
    *proxy
        .plan
        .deny_put_events_holding
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))? = None;
    let relay = Proc::spawn("bridge", &RELAY_ARGS, &env)?;
    events
        .until_all(&page, Duration::from_secs(120), || {
            format!("relay:\n{}\ncapture:\n{}", relay.output(), capture.output())
        })
        .await?;
    relay.ensure_running()?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let depth_name = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(harness::dlq::queue_url(&sqs, "bridge-dlq").await?)
        .attribute_names(depth_name.clone())
        .send()
        .await?;
    let depth = attributes.attributes().and_then(|a| a.get(&depth_name)).cloned();
    assert_eq!(depth.as_deref(), Some("0"), "nothing parked for a denied call");
    println!(
        "denied mid-page: {before} of {} events accepted before the denial, all {} delivered after the restart",
        page.len(),
        page.len()
    );
    Ok(())
}

/// A call that never answers (a connection the network dropped silently, an overloaded front
/// end) is abandoned after the relay's 30 s attempt timeout and tried again, for both calls
/// the relay sends itself: the shard goes on reading, and the held event is published. Each
/// call is held for five minutes, so without the timeout neither event could arrive in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_records_or_put_events_that_never_answers_is_abandoned_and_tried_again() -> anyhow::Result<()> {
    const HELD_MS: u64 = 300_000;
    let Rig {
        stack,
        mut events,
        capture,
        proxy,
        relay,
        ..
    } = Rig::running("hung", "00000000-0000-0000-0000-00000000a001").await?;

    for (target, text, id, tag) in [
        (
            "Kinesis_20131202.GetRecords",
            "ShardIterator",
            "00000000-0000-0000-0000-00000000a002",
            "after-a-hung-read",
        ),
        (
            "AWSEvents.PutEvents",
            "hung-publish",
            "00000000-0000-0000-0000-00000000a003",
            "hung-publish",
        ),
    ] {
        let held_before = proxy.plan.injected.load(Ordering::SeqCst);
        set_delay(&proxy, Some((target, text, HELD_MS)))?;
        if target.starts_with("Kinesis") {
            // Wait for a read to be held before the event is written: it comes after that read.
            held(&proxy, held_before, "a GetRecords held").await?;
            set_delay(&proxy, None)?;
        }
        stack
            .insert_outbox(
                id,
                ("Document", "doc-1"),
                "DocumentTagged",
                &format!(r#"{{"tag": "{tag}"}}"#),
            )
            .await?;
        if !target.starts_with("Kinesis") {
            held(&proxy, held_before, "a PutEvents held").await?;
            set_delay(&proxy, None)?;
        }
        // Well within the five minutes the held call would take to answer.
        events
            .until(id, Duration::from_secs(90), |s| s.by_event_id().contains_key(id))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{target}: {e}\nrelay:\n{}\ncapture:\n{}",
                    relay.output(),
                    capture.output()
                )
            })?;
    }
    let output = relay.output();
    let logged = |what: &str, cause: &str| output.lines().any(|l| l.contains(what) && l.contains(cause));
    assert!(
        logged("getrecords failed, retrying", "no answer within 30s"),
        "{output}"
    );
    assert!(logged("putevents retry", "timeout"), "{output}");
    relay.ensure_running()?;
    Ok(())
}

const RELAY_ARGS: [&str; 3] = ["relay", "--lease-duration-secs", "10"];

/// Capture, and a relay reading and publishing through a fault proxy, with a first event
/// (`first`) already through: the faults that follow meet a relay at work, not one starting.
struct Rig {
    stack: Stack,
    sdk: aws_config::SdkConfig,
    events: bus::Subscription,
    capture: Proc,
    proxy: FaultProxy,
    env: Vec<(String, String)>,
    relay: Proc,
}

impl Rig {
    async fn running(queue: &str, first: &str) -> anyhow::Result<Self> {
        let stack = Stack::start().await?;
        let sdk = stack.moto.sdk_config().await;
        let mut events = bus::monolith_events(&sdk, queue).await?;
        let capture = stack.spawn_capture(&[]).await?;
        let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
        let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
        let relay = Proc::spawn("bridge", &RELAY_ARGS, &env)?;
        stack
            .insert_outbox(first, ("Document", "doc-0"), "DocumentTagged", "{}")
            .await?;
        events
            .until("the first event", Duration::from_secs(60), |s| {
                s.by_event_id().contains_key(first)
            })
            .await?;
        Ok(Self {
            stack,
            sdk,
            events,
            capture,
            proxy,
            env,
            relay,
        })
    }
}

/// Waits until the proxy has held a call since `before` faults were counted.
async fn held(proxy: &FaultProxy, before: u32, what: &str) -> anyhow::Result<()> {
    harness::wait::until(what, Duration::from_secs(30), || async {
        Ok((proxy.plan.injected.load(Ordering::SeqCst) > before).then_some(()))
    })
    .await
}

fn set_delay(proxy: &FaultProxy, delay: Option<(&str, &str, u64)>) -> anyhow::Result<()> {
    *proxy
        .plan
        .delay_holding
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))? =
        delay.map(|(target, text, ms)| (target.to_owned(), text.to_owned(), ms));
    Ok(())
}
