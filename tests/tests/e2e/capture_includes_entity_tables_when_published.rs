//! With entity tables in the publication their inserts, updates and deletes are captured too
//! (partitioned by primary key); outbox deletes never become records.

use std::time::Duration;

use harness::stack::{outbox_id, Stack};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_changes_are_captured_with_before_images_and_outbox_deletes_are_not() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let client = stack.pg.client().await?;
    client
        .batch_execute("ALTER TABLE customers REPLICA IDENTITY FULL")
        .await?;
    let mut capture = stack
        .spawn_capture(&[
            "--tables",
            "public.outbox,public.customers,public.orders",
            "--publication",
            "everything",
            "--slot",
            "everything",
        ])
        .await?;
    let (_sim, base) = stack.spawn_legacy_sim().await?;
    let http = reqwest::Client::new();
    let customer: Value = http
        .post(format!("{base}/customers"))
        .json(&json!({"name": "Ada", "credit_limit": 100}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let customer_id = customer["customer_id"].as_str().unwrap_or_default().to_owned();
    let order: Value = http
        .post(format!("{base}/orders"))
        .json(&json!({"customer_id": customer_id, "order_total": 40}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(order["state"], "APPROVED");
    // The insert+delete idiom: the outbox row goes at once, its insert is still an event.
    client.batch_execute("DELETE FROM outbox").await?;
    client.batch_execute("DELETE FROM orders").await?;

    // Different keys may land in any order: wait for the slot's acknowledgement, not a record.
    capture.ensure_running()?;
    stack.wait_drained("everything", &capture).await?;
    let records = stack.records().await?;
    let of = |table: &str, op: &str| {
        records
            .iter()
            .filter(|r| r.json["metadata"]["table-name"] == table && r.json["metadata"]["operation"] == op)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("customers", "insert").len(), 1);
    let updates = of("customers", "update");
    assert_eq!(updates.len(), 1, "the credit reservation updates the customer");
    let update = &updates[0].json;
    assert_eq!(update["data"]["credit_reserved"], 40.0);
    assert_eq!(
        update["before-image"]["credit_reserved"], 0.0,
        "REPLICA IDENTITY FULL gives a before-image"
    );
    assert_eq!(
        updates[0].partition_key, customer_id,
        "entity tables are keyed by primary key"
    );
    assert_eq!(updates[0].json["metadata"]["partition-key-type"], "primary-key");
    assert_eq!(of("orders", "insert").len(), 1);
    assert!(
        records
            .iter()
            .filter(|r| r.json["metadata"]["table-name"] == "outbox")
            .all(|r| outbox_id(r).is_some()),
        "outbox deletes are not records"
    );
    assert_eq!(
        of("outbox", "insert").len(),
        3,
        "CustomerCreated, OrderPlaced, CreditReserved"
    );
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
