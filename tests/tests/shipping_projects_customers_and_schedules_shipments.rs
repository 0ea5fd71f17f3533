//! The whole chain: legacy-sim → Postgres → capture → Kinesis → relay → EventBridge → SQS →
//! shipping. The projection ends equal to the monolith's customers, there is exactly one live
//! shipment per approved order, and every shipment event reaches a queue subscribed to the bus.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use tests::stack::Stack;
use tests::{bus, shipping};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_and_shipments_match_the_monolith() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let mut shipment_events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "shipment-events",
        &json!({"source": ["shipping"]}),
    )
    .await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
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
    let pg = stack.pg.client().await?;
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

    // Every order that was ever approved raised ShipmentScheduled once; cancelled ones also
    // ShipmentCancelled once. (Each monolith event is applied once: the inbox holds one item each.)
    let want: HashSet<(String, String)> = states
        .iter()
        .flat_map(|(id, state)| match state.as_str() {
            "APPROVED" => vec![(id.clone(), "ShipmentScheduled".to_owned())],
            "CANCELLED" => vec![
                (id.clone(), "ShipmentScheduled".to_owned()),
                (id.clone(), "ShipmentCancelled".to_owned()),
            ],
            _ => vec![],
        })
        .collect();
    shipment_events
        .until("every shipment event", Duration::from_secs(120), |s| {
            let got: HashSet<(String, String)> = s
                .by_event_id()
                .values()
                .map(|(_, e)| {
                    (
                        e["detail"]["metadata"]["aggregate_id"].as_str().unwrap_or("").to_owned(),
                        e["detail-type"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            want.iter().all(|w| got.contains(w))
        })
        .await?;
    let distinct = shipment_events.by_event_id();
    assert_eq!(distinct.len(), want.len(), "one event per shipment change, no more");
    for (_, event) in distinct.values() {
        assert_eq!(event["source"], "shipping");
        let meta = &event["detail"]["metadata"];
        assert_eq!(meta["aggregate_type"], "Shipment");
        assert!(meta["causation_id"].is_string(), "{event}");
        assert!(event["detail"]["data"]["customer_id"].is_string(), "{event}");
    }

    // The read side answers for a shipment and a customer.
    let (order, _) = states.iter().find(|(_, s)| *s == "APPROVED").expect("an approved order");
    let shown = stack.run_ok("shipping", &["show", "shipment", order]).await?;
    let shown: serde_json::Value = serde_json::from_str(&shown)?;
    assert_eq!(shown["state"], "SCHEDULED");
    Ok(())
}
