//! `[routing]` in the configuration file: events of two aggregate types reach two buses, each
//! with its own `Source` and `DetailType`; an additional column lands in the metadata; a route
//! that skips drops its events (counted, never parked); the rest take the default route.

use std::collections::HashSet;
use std::time::Duration;

use harness::bus;
use harness::stack::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aggregate_types_reach_two_buses_with_their_own_source_and_detail_type() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    events.create_event_bus().name("customers-bus").send().await?;
    let mut customers = bus::subscribe(
        &sdk,
        "customers-bus",
        "customer-events",
        &json!({"source": ["legacy.customers"]}),
    )
    .await?;
    let mut monolith = bus::monolith_events(&sdk, "monolith-events").await?;
    // A column the monolith added for the event router: its value travels in the metadata.
    let pg = stack.pg.client().await?;
    pg.batch_execute("ALTER TABLE outbox ADD COLUMN tenant text NOT NULL DEFAULT 'acme'")
        .await?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        r#"
[routing]
[[routing.routes]]
name = "customers"
aggregate_type = "Customer"
event_bus = "customers-bus"
source = "legacy.customers"
detail_type = "{aggregatetype}.{type}"
metadata_columns = ["tenant"]

[[routing.routes]]
name = "no-cancellations"
event_type = "Order*Cancelled"
action = "skip"
"#,
    )?;
    let config = config.to_str().unwrap_or_default();
    let capture = stack.spawn_capture(&[]).await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let relay = stack.spawn(
        "bridge",
        &[
            "relay",
            "--config",
            config,
            "--lease-duration",
            "3s",
            "--metrics-listen",
            &listen,
        ],
    )?;

    let insert = |id: &str, aggregate: &str, kind: &str| {
        let (id, aggregate, kind) = (id.to_owned(), aggregate.to_owned(), kind.to_owned());
        let stack = &stack;
        async move {
            stack
                .insert_outbox(&id, (&aggregate, "agg-1"), &kind, "{\"n\": 1}")
                .await
        }
    };
    let id = |n: u32| format!("7a1c7a4e-0000-4000-8000-{n:012}");
    let mut customer_ids = HashSet::new();
    let mut order_ids = HashSet::new();
    let mut cancelled_ids = HashSet::new();
    for n in 0..6 {
        insert(&id(n), "Customer", "CustomerCreated").await?;
        customer_ids.insert(id(n));
        insert(&id(100 + n), "Order", "OrderPlaced").await?;
        order_ids.insert(id(100 + n));
        insert(&id(200 + n), "Order", "OrderCancelled").await?;
        cancelled_ids.insert(id(200 + n));
    }

    let context = || format!("{}\n{}", relay.output(), capture.output());
    customers
        .until_all(&customer_ids, Duration::from_secs(90), context)
        .await?;
    monolith
        .until_all(&order_ids, Duration::from_secs(90), context)
        .await?;
    // The skipped events are counted once their page settles (after the orders around them).
    harness::wait::until(
        "the skipped cancellations counted",
        Duration::from_secs(30),
        || async {
            let dropped = harness::metrics::scrape(
                port,
                "bridge_relay_events_dropped_total{route=\"no-cancellations\"}",
            )
            .await?;
            Ok((dropped >= 6.0).then_some(()))
        },
    )
    .await?;

    for (_, event) in customers.by_event_id().values() {
        anyhow::ensure!(event["source"] == "legacy.customers", "{event}");
        anyhow::ensure!(event["detail-type"] == "Customer.CustomerCreated", "{event}");
        anyhow::ensure!(event["detail"]["metadata"]["tenant"] == "acme", "{event}");
        anyhow::ensure!(event["detail"]["data"] == json!({"n": 1}), "{event}");
    }
    let on_default = monolith.by_event_id();
    for (id, (_, event)) in &on_default {
        anyhow::ensure!(order_ids.contains(id), "{id} reached the default bus: {event}");
        anyhow::ensure!(event["source"] == "legacy.monolith", "{event}");
        anyhow::ensure!(event["detail-type"] == "OrderPlaced", "{event}");
        anyhow::ensure!(event["detail"]["metadata"].get("tenant").is_none(), "{event}");
    }
    anyhow::ensure!(
        customers.by_event_id().keys().all(|id| customer_ids.contains(id)),
        "the customers bus received another aggregate's events"
    );
    // Skipped means dropped: nothing parked.
    let parked = harness::metrics::scrape_sum(port, "bridge_dead_letters_total").await?;
    anyhow::ensure!(parked == 0.0, "{parked} records parked:\n{}", relay.output());
    Ok(())
}

/// An outbox table of another name, whose columns are named otherwise: capture publishes it
/// (keyed by its aggregate id column) and the relay reads it by the file's mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_outbox_table_with_renamed_columns_works_end_to_end() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut monolith = bus::monolith_events(&sdk, "sales-events").await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(
        "CREATE SCHEMA sales;
         CREATE TABLE sales.domain_events (
             event_id uuid PRIMARY KEY, stream_type text NOT NULL, stream_id text NOT NULL,
             kind text NOT NULL, body jsonb NOT NULL, seq bigint NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now(), trace text)",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        r#"
tables = "sales.domain_events"

[routing]
[[routing.tables]]
table = "sales.domain_events"
columns = { id = "event_id", aggregate_type = "stream_type", aggregate_id = "stream_id", event_type = "kind", payload = "body", version = "seq", occurred_at = "recorded_at", trace = "trace" }
"#,
    )?;
    let config = config.to_str().unwrap_or_default();
    // A publication and slot of its own: setup made the default ones for public.outbox.
    let capture = stack
        .spawn_capture(&["--config", config, "--publication", "sales", "--slot", "sales"])
        .await?;
    let relay = stack.spawn("bridge", &["relay", "--config", config, "--lease-duration", "3s"])?;

    let mut ids = HashSet::new();
    for n in 0..8u32 {
        let id = format!("8b2c7a4e-0000-4000-8000-{n:012}");
        pg.execute(
            "INSERT INTO sales.domain_events (event_id, stream_type, stream_id, kind, body, seq)
             VALUES ($1::text::uuid, 'Invoice', $2, 'InvoiceIssued', $3::text::jsonb, $4)",
            &[
                &id,
                &format!("inv-{}", n % 3),
                &format!("{{\"total\": {n}}}"),
                &i64::from(n + 1),
            ],
        )
        .await?;
        ids.insert(id);
    }
    let context = || format!("{}\n{}", relay.output(), capture.output());
    monolith.until_all(&ids, Duration::from_secs(90), context).await?;
    for (id, (_, event)) in monolith.by_event_id() {
        let m = &event["detail"]["metadata"];
        anyhow::ensure!(event["detail-type"] == "InvoiceIssued", "{event}");
        anyhow::ensure!(m["aggregate_type"] == "Invoice", "{event}");
        anyhow::ensure!(
            m["aggregate_id"].as_str().is_some_and(|a| a.starts_with("inv-")),
            "{event}"
        );
        anyhow::ensure!(m["aggregate_version"].as_i64().is_some_and(|v| v >= 1), "{event}");
        anyhow::ensure!(m["occurred_at"].is_string(), "{event}");
        anyhow::ensure!(event["detail"]["data"]["total"].is_number(), "{id}: {event}");
    }
    // Capture keyed the records by the aggregate id column: one partition key per aggregate.
    let records = stack.records().await?;
    let keys: HashSet<&str> = records
        .iter()
        .filter(|r| r.json["metadata"]["table-name"] == "domain_events")
        .map(|r| r.partition_key.as_str())
        .collect();
    anyhow::ensure!(
        keys == HashSet::from(["inv-0", "inv-1", "inv-2"]),
        "partition keys: {keys:?}"
    );
    Ok(())
}

/// A route whose bus does not exist yet holds its shard's page — that route's events and the
/// others' on the same shard — without parking anything or stopping the relay; `/readyz` names
/// the bus. Once the bus exists, everything flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_missing_bus_holds_its_shard_and_parks_nothing() -> anyhow::Result<()> {
    let stack = Stack::start_with_shards(1).await?;
    let sdk = stack.moto.sdk_config().await;
    let mut monolith = bus::monolith_events(&sdk, "held-monolith-events").await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        "[routing]\n[[routing.routes]]\nname = \"customers\"\naggregate_type = \"Customer\"\nevent_bus = \"later-bus\"\n",
    )?;
    let config = config.to_str().unwrap_or_default();
    let capture = stack.spawn_capture(&[]).await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let relay = stack.spawn(
        "bridge",
        &[
            "relay",
            "--config",
            config,
            "--lease-duration",
            "3s",
            "--metrics-listen",
            &listen,
        ],
    )?;
    let id = |n: u32| format!("5e1c7a4e-0000-4000-8000-{n:012}");
    let mut pg = stack.pg.client().await?;
    let tx = pg.transaction().await?;
    for (n, aggregate, kind) in [
        (1, "Order", "OrderPlaced"),
        (2, "Customer", "CustomerCreated"),
        (3, "Order", "OrderPlaced"),
    ] {
        tx.execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
             VALUES ($1::text::uuid, $2, 'a1', $3, '{}', 1)",
            &[&id(n), &aggregate, &kind],
        )
        .await?;
    }
    tx.commit().await?;

    // Held: /readyz names the bus, the relay keeps running, nothing is parked.
    harness::metrics::wait_health(port, 503, "later-bus", Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", relay.output(), capture.output()))?;
    relay.ensure_running()?;
    // What stood before the held event may have gone (an earlier page); what stands after it
    // on the shard waits with it.
    monolith.poll().await?;
    anyhow::ensure!(
        !monolith.by_event_id().contains_key(&id(3)),
        "an event behind the held one went out: {:?}",
        monolith.received
    );
    anyhow::ensure!(harness::metrics::scrape_sum(port, "bridge_dead_letters_total").await? == 0.0);

    // The bus appears: the page goes out whole, and /readyz is 200 again.
    aws_sdk_eventbridge::Client::new(&sdk)
        .create_event_bus()
        .name("later-bus")
        .send()
        .await?;
    let mut customers = bus::subscribe(
        &sdk,
        "later-bus",
        "later-customers",
        &json!({"source": ["legacy.monolith"]}),
    )
    .await?;
    let orders: HashSet<String> = [id(1), id(3)].into_iter().collect();
    monolith
        .until_all(&orders, Duration::from_secs(90), || relay.output())
        .await?;
    customers
        .until_all(&HashSet::from([id(2)]), Duration::from_secs(90), || {
            relay.output()
        })
        .await?;
    harness::metrics::wait_health(port, 200, "", Duration::from_secs(60)).await?;
    relay.ensure_running()?;
    anyhow::ensure!(harness::metrics::scrape_sum(port, "bridge_dead_letters_total").await? == 0.0);
    Ok(())
}
