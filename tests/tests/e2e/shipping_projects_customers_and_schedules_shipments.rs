//! The whole chain: legacy-sim → Postgres → capture → Kinesis → relay → EventBridge → SQS →
//! shipping. The projection ends equal to the monolith's customers, there is exactly one live
//! shipment per approved order, and every shipment event reaches a queue subscribed to the bus.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use harness::stack::Stack;
use harness::{bus, shipping};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_and_shipments_match_the_monolith() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    // The rule's target gets the event as AWS sends it, with no transformer: AWS documents
    // `<aws.events.event.json>` only as a JSON field's value, not as a whole template.
    let targets = aws_sdk_eventbridge::Client::new(&sdk)
        .list_targets_by_rule()
        .rule("shipping-events-from-legacy-monolith")
        .event_bus_name("legacy-monolith")
        .send()
        .await?;
    assert!(!targets.targets().is_empty());
    for target in targets.targets() {
        assert!(target.input_transformer().is_none(), "{target:?}");
        assert!(
            target.input().is_none() && target.input_path().is_none(),
            "{target:?}"
        );
    }
    let mut shipment_events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "shipment-events",
        &json!({"source": ["shipping"]}),
    )
    .await?;
    // Entries above 1 KiB travel as claim checks through S3; shipping resolves them.
    let bridge = stack.spawn(
        "bridge",
        &["run", "--lease-duration-secs", "3", "--max-event-bytes", "1024"],
    )?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "2"])?;

    // Small credit limits make some orders REJECTED; cancellations release credit.
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "6",
                "--orders",
                "36",
                "--concurrency",
                "3",
                "--cancel-ratio",
                "0.3",
                "--seed",
                "11",
                "--progress",
                "never",
            ],
        )
        .await?;
    let mut pg = stack.pg.client().await?;
    // A customer whose event is too large for an entry, written as the monolith writes: the
    // row and its outbox event in one transaction.
    let tx = pg.transaction().await?;
    let big: String = tx
        .query_one(
            "INSERT INTO customers (id, name, credit_limit, credit_reserved, version)
             VALUES (gen_random_uuid(), 'Big Notes Ltd', 50, 0, 1) RETURNING id::text",
            &[],
        )
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
         VALUES (gen_random_uuid(), 'Customer', $1, 'CustomerCreated',
                 jsonb_build_object('customer_id', $1::text, 'name', 'Big Notes Ltd', 'credit_limit', 50,
                                    'credit_reserved', 0, 'version', 1, 'notes', repeat('n', 4000)), 1)",
        &[&big],
    )
    .await?;
    tx.commit().await?;
    let states: HashMap<String, String> = pg
        .query("SELECT id::text, state FROM orders", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let count = |s: &str| states.values().filter(|v| *v == s).count();
    assert!(
        count("APPROVED") > 0 && count("REJECTED") > 0 && count("CANCELLED") > 0,
        "the load should approve, reject and cancel orders: {} approved, {} rejected, {} cancelled",
        count("APPROVED"),
        count("REJECTED"),
        count("CANCELLED")
    );

    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(240)).await?;
    assert!(report.exact(), "{report}");
    assert_eq!(report.approved_orders, count("APPROVED"));

    // The shipment events: an approved order raised ShipmentScheduled once; a cancelled one
    // ShipmentScheduled then ShipmentCancelled — or nothing, when the consumer saw the
    // cancellation first (delivery order is not guaranteed); a rejected one nothing.
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let outbox = shipping::scan(&dynamo, "shipping-outbox").await?;
    let mut raised: HashMap<String, Vec<String>> = HashMap::new();
    for item in &outbox {
        raised
            .entry(shipping::text(item, "aggregate_id"))
            .or_default()
            .push(shipping::text(item, "detail_type"));
    }
    for (order, state) in &states {
        let mut kinds = raised.remove(order).unwrap_or_default();
        kinds.sort();
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        match state.as_str() {
            "APPROVED" => assert_eq!(kinds, ["ShipmentScheduled"], "order {order}"),
            "CANCELLED" => assert!(
                kinds.is_empty() || kinds == ["ShipmentCancelled", "ShipmentScheduled"],
                "order {order}: {kinds:?}"
            ),
            _ => assert!(kinds.is_empty(), "rejected order {order}: {kinds:?}"),
        }
    }
    assert!(raised.is_empty(), "events for unknown orders: {raised:?}");
    let want: HashSet<String> = outbox.iter().map(|i| shipping::text(i, "event_id")).collect();
    shipment_events
        .until_all(&want, Duration::from_secs(120), || service.output())
        .await?;
    let distinct = shipment_events.by_event_id();
    assert_eq!(distinct.len(), want.len(), "only the outbox's events");
    for (_, event) in distinct.values() {
        assert_eq!(event["source"], "shipping");
        let meta = &event["detail"]["metadata"];
        assert_eq!(meta["aggregate_type"], "Shipment");
        assert!(meta["causation_id"].is_string(), "{event}");
        assert!(event["detail"]["data"]["customer_id"].is_string(), "{event}");
    }

    let s3 = harness::s3::client(&sdk);
    let claims = s3.list_objects_v2().bucket("bridge-claim-checks").send().await?;
    assert!(
        claims.key_count().unwrap_or(0) >= 1,
        "the big event went through S3"
    );
    let shown = stack.run_ok("shipping", &["show", "customer", &big]).await?;
    assert!(shown.contains("Big Notes Ltd"), "{shown}");

    // The read side answers for a shipment and a customer.
    let (order, _) = states
        .iter()
        .find(|(_, s)| *s == "APPROVED")
        .expect("an approved order");
    let shown = stack.run_ok("shipping", &["show", "shipment", order]).await?;
    let shown: serde_json::Value = serde_json::from_str(&shown)?;
    assert_eq!(shown["state"], "SCHEDULED");
    Ok(())
}

/// Numbers beyond f64 (a credit limit and an order total with 19 significant digits) reach the
/// projection, the shipment and shipping's own outbox event digit for digit. The events go
/// straight to the queue: moto's EventBridge (Python) would round them on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_keep_every_digit_into_the_projection_and_shipping_events() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = harness::dlq::queue_url(&sqs, "shipping-events").await?;
    let event = |id: &str, detail_type: &str, data: &str| {
        format!(
            r#"{{"id":"eb-{id}","detail-type":"{detail_type}","source":"legacy.monolith","detail":{{"metadata":{{"event_id":"{id}","aggregate_version":1}},"data":{data}}}}}"#
        )
    };
    let bodies = [
        event(
            "00000000-0000-0000-0000-0000000d0001",
            "CustomerCreated",
            r#"{"customer_id":"c-exact","name":"Exact","credit_limit":12345678901234567.89,"credit_reserved":0.000000000000000001}"#,
        ),
        event(
            "00000000-0000-0000-0000-0000000d0002",
            "OrderPlaced",
            r#"{"order_id":"o-exact","customer_id":"c-exact","order_total":98765432109876543.21,"state":"APPROVED"}"#,
        ),
    ];
    for body in &bodies {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "1"])?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let (customer, shipment, outbox) =
        harness::wait::until("both events applied", Duration::from_secs(60), || async {
            service.ensure_running()?;
            let customers = shipping::scan(&dynamo, "shipping-customers").await?;
            let shipments = shipping::scan(&dynamo, "shipping-shipments").await?;
            let outbox = shipping::scan(&dynamo, "shipping-outbox").await?;
            Ok(match (customers.first(), shipments.first(), outbox.first()) {
                (Some(c), Some(s), Some(o)) => Some((c.clone(), s.clone(), o.clone())),
                _ => None,
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nshipping:\n{}", service.output()))?;
    let number = |item: &harness::shipping::Item, name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(number(&customer, "credit_limit"), "12345678901234567.89");
    assert_eq!(number(&customer, "credit_reserved"), "0.000000000000000001");
    assert_eq!(number(&shipment, "order_total"), "98765432109876543.21");
    let data = shipping::text(&outbox, "data");
    assert!(data.contains(r#""order_total":98765432109876543.21"#), "{data}");
    Ok(())
}
