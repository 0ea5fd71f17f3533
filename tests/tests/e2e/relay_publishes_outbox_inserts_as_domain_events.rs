//! Every outbox row written by legacy-sim arrives on an SQS queue subscribed to the bus by a
//! rule on source + detail-type, with the envelope filled from the row; other tables' changes
//! do not.

use std::collections::HashMap;
use std::time::Duration;

use harness::bus;
use harness::stack::Stack;
use serde_json::{json, Value};

/// The six monolith event types (the ones the shipping service's rule routes).
const TYPES: [&str; 6] = harness::shipping::SUBSCRIBED_TYPES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_arrive_on_a_subscribed_queue_with_the_envelope() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "domain-events",
        &json!({"source": ["legacy.monolith"], "detail-type": TYPES}),
    )
    .await?;
    let mut everything = bus::monolith_events(&sdk, "everything").await?;
    let capture = stack
        .spawn_capture(&[
            "--tables",
            "public.outbox,public.customers",
            "--publication",
            "wide",
            "--slot",
            "wide",
        ])
        .await?;
    let relay = stack.spawn("bridge", &["relay", "--lease-duration-secs", "3"])?;
    let (_sim, base) = stack.spawn_legacy_sim().await?;

    let http = reqwest::Client::new();
    let mut customers = Vec::new();
    for i in 0..4 {
        let r: Value = http
            .post(format!("{base}/customers"))
            .json(&json!({"name": format!("c{i}"), "credit_limit": 100}))
            .send()
            .await?
            .json()
            .await?;
        customers.push(r["customer_id"].as_str().unwrap_or_default().to_owned());
    }
    for i in 0..12 {
        let r: Value = http
            .post(format!("{base}/orders"))
            .json(&json!({"customer_id": customers[i % 4], "order_total": 30 + i}))
            .send()
            .await?
            .json()
            .await?;
        if r["state"] == "APPROVED" && i % 3 == 0 {
            http.post(format!(
                "{base}/orders/{}/cancel",
                r["order_id"].as_str().unwrap_or_default()
            ))
            .send()
            .await?;
        }
    }

    let pg = stack.pg.client().await?;
    let rows = pg
        .query("SELECT id::text, aggregatetype, aggregateid, type, payload::text, aggregate_version, tracingspancontext FROM outbox", &[])
        .await?;
    let expected: HashMap<String, _> = rows.iter().map(|r| (r.get::<_, String>(0), r)).collect();
    events
        .until("every outbox row as an event", Duration::from_secs(90), |s| {
            let got = s.by_event_id();
            expected.keys().all(|id| got.contains_key(id))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\ncapture:\n{}\nrelay:\n{}", capture.output(), relay.output()))?;
    relay.ensure_running()?;

    for (id, (_, event)) in events.by_event_id() {
        let row = expected
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("event {id} is not an outbox row"))?;
        let (meta, data) = (&event["detail"]["metadata"], &event["detail"]["data"]);
        assert_eq!(event["source"], "legacy.monolith");
        assert_eq!(event["detail-type"], row.get::<_, String>(3));
        assert_eq!(meta["aggregate_type"], row.get::<_, String>(1));
        assert_eq!(meta["aggregate_id"], row.get::<_, String>(2));
        assert_eq!(meta["aggregate_version"], row.get::<_, i64>(5));
        assert_eq!(
            meta["traceparent"],
            row.get::<_, Option<String>>(6).map_or(Value::Null, Value::from)
        );
        assert!(meta["commit_lsn"].is_string() && meta["occurred_at"].is_string());
        let payload: Value = serde_json::from_str(&row.get::<_, String>(4))?;
        assert_eq!(data, &payload, "data is the outbox payload");
    }
    // The catch-all rule saw the same events and nothing from the customers table.
    everything
        .until("the catch-all queue", Duration::from_secs(30), |s| {
            s.by_event_id().len() >= expected.len()
        })
        .await?;
    assert!(
        everything
            .received
            .iter()
            .all(|e| TYPES.contains(&e["detail-type"].as_str().unwrap_or(""))),
        "only outbox events are published"
    );
    Ok(())
}

/// EventBridge and SQS take 1 MB since 2026-01-29: an event of 600 KB is published whole by
/// default (no claim check) and a subscribed queue receives it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_under_a_megabyte_is_published_whole() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "large-events").await?;
    let capture = stack.spawn_capture(&[]).await?;
    let relay = stack.spawn("bridge", &["relay", "--lease-duration-secs", "3"])?;
    let id = "00000000-0000-4000-8000-00000000e600";
    let payload = json!({"text": "t".repeat(600_000), "n": 1.50}).to_string();
    stack
        .insert_outbox(id, ("Document", "d-600"), "DocumentStored", &payload)
        .await?;
    events
        .until("the 600 KB event", Duration::from_secs(60), |s| {
            s.by_event_id().contains_key(id)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", relay.output(), capture.output()))?;
    let (_, event) = events
        .by_event_id()
        .remove(id)
        .ok_or_else(|| anyhow::anyhow!("no event {id}"))?;
    assert!(
        event["detail"]["metadata"]["claim_check"].is_null(),
        "claim-checked: {}",
        event["detail"]["metadata"]
    );
    assert_eq!(
        event["detail"]["data"]["text"].as_str().map(str::len),
        Some(600_000)
    );
    Ok(())
}
