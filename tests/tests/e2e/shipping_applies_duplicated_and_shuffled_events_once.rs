//! At-least-once delivery in any order: every monolith event sent to the shipping queue twice,
//! shuffled, still leaves the projection and the shipments exactly right, with one inbox item
//! per event and at most one shipment event per order and kind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use harness::shipping::{self, scan, text};
use harness::stack::Stack;

/// A deterministic shuffle (the test must be repeatable): sort by a hash of (seed, position).
fn shuffled<T>(items: Vec<T>, seed: u64) -> Vec<T> {
    let mut keyed: Vec<(u64, T)> = items
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            (x, t)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, t)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_delivery_changes_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    stack.run_ok("shipping", &["setup"]).await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "5",
                "--orders",
                "24",
                "--concurrency",
                "3",
                "--cancel-ratio",
                "0.4",
                "--seed",
                "5",
                "--progress",
                "never",
            ],
        )
        .await?;
    let pg = stack.pg.client().await?;
    let expected: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);

    // Take every event off the queue before the service runs.
    let queue_url = harness::dlq::queue_url(&sqs, "shipping-events").await?;
    let mut bodies: HashMap<String, String> = HashMap::new();
    let started = std::time::Instant::now();
    while (bodies.len() as i64) < expected {
        bridge.ensure_running()?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "only {} of {expected} events reached the shipping queue",
            bodies.len()
        );
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .wait_time_seconds(1)
            .send()
            .await?;
        for m in out.messages() {
            let body = m.body().unwrap_or_default().to_owned();
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let id = v["detail"]["metadata"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            bodies.insert(id, body);
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
    assert_eq!(bodies.len() as i64, expected, "one message per outbox row");

    // Twice each, shuffled, back onto the queue.
    let twice: Vec<String> = bodies.values().flat_map(|b| [b.clone(), b.clone()]).collect();
    let twice = shuffled(twice, 42);
    for (n, chunk) in twice.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{n}-{i}"))
                    .message_body(body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        sqs.send_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }

    let service = stack.spawn("shipping", &["run", "--wait-seconds", "1", "--concurrency", "6"])?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(180)).await?;
    assert!(report.exact(), "{report}");
    harness::wait::until("the queue to drain", Duration::from_secs(60), || {
        let (sqs, queue_url) = (&sqs, &queue_url);
        async move {
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(queue_url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await?;
            let n = |a: QueueAttributeName| {
                attrs
                    .attributes()
                    .and_then(|m| m.get(&a))
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(-1)
            };
            Ok((n(QueueAttributeName::ApproximateNumberOfMessages) == 0
                && n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0)
                .then_some(()))
        }
    })
    .await?;

    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    assert_eq!(
        scan(&dynamo, "shipping-inbox").await?.len() as i64,
        expected,
        "one inbox item per event"
    );
    // The shipping outbox: at most one event per (order, kind); a cancellation only after a
    // scheduling; every live shipment was announced.
    let outbox = scan(&dynamo, "shipping-outbox").await?;
    let mut seen = HashSet::new();
    for item in &outbox {
        let key = (text(item, "aggregate_id"), text(item, "detail_type"));
        assert!(seen.insert(key.clone()), "two {key:?} events");
    }
    for (order, kind) in &seen {
        if kind == "ShipmentCancelled" {
            assert!(
                seen.contains(&(order.clone(), "ShipmentScheduled".into())),
                "{order} cancelled, never scheduled"
            );
        }
    }
    for item in scan(&dynamo, "shipping-shipments").await? {
        if text(&item, "state") == "SCHEDULED" {
            assert!(seen.contains(&(text(&item, "order_id"), "ShipmentScheduled".into())));
        }
    }
    Ok(())
}
