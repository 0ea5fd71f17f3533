//! An event the service cannot apply (an OrderPlaced without an order) is retried up to the
//! queue's maxReceiveCount, then lands in the DLQ with its reason, while every other event is
//! applied.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use tests::shipping;
use tests::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_ends_in_the_dlq_with_its_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack
        .run_ok("shipping", &["setup", "--max-receive-count", "3"])
        .await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "1", "--retry-delay", "0"])?;

    // The monolith's outbox accepts any JSON payload; this one is no order.
    let pg = stack.pg.client().await?;
    let poison: String = pg
        .query_one(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
             VALUES (gen_random_uuid(), 'Order', 'not-an-order', 'OrderPlaced', '{\"oops\": true}', 1)
             RETURNING id::text",
            &[],
        )
        .await?
        .get(0);
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "4",
                "--orders",
                "16",
                "--concurrency",
                "2",
                "--cancel-ratio",
                "0.25",
                "--seed",
                "3",
                "--progress",
                "never",
            ],
        )
        .await?;

    // Everything else converges (the inbox holds every event but the poison one).
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = tests::dlq::queue_url(&sqs, "shipping-events-dlq").await?;
    let parked = tests::wait::until("the poison event in the DLQ", Duration::from_secs(180), || {
        let (sqs, dlq, service) = (&sqs, &dlq, &service);
        async move {
            service.ensure_running()?;
            let out = sqs
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .wait_time_seconds(1)
                .send()
                .await?;
            Ok(out.messages.filter(|m| !m.is_empty()))
        }
    })
    .await?;
    assert_eq!(parked.len(), 1, "only the poison event is parked");
    let body: serde_json::Value = serde_json::from_str(parked[0].body().unwrap_or_default())?;
    assert_eq!(body["detail"]["metadata"]["event_id"], poison.as_str());
    let attr = |name: &str| {
        parked[0]
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        attr("reason").contains("data.state"),
        "reason: {}",
        attr("reason")
    );
    assert_eq!(attr("receive_count"), "3", "parked on its last allowed receive");

    // What the operator sees (the test's receive above hid the message for 30 s: release it).
    sqs.change_message_visibility()
        .queue_url(&dlq)
        .receipt_handle(parked[0].receipt_handle().unwrap_or_default())
        .visibility_timeout(0)
        .send()
        .await?;
    let listed: serde_json::Value =
        serde_json::from_str(&stack.run_ok("shipping", &["dlq", "list", "--json"]).await?)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(
        listed[0]["reason"].as_str().unwrap_or("").contains("data.state"),
        "{listed}"
    );
    // Redriven (as after a fix), it is applied — here it fails again and is parked again.
    let out = stack.run_ok("shipping", &["dlq", "redrive"]).await?;
    assert!(out.contains("redriven 1 event(s)"), "{out}");
    tests::wait::until(
        "the redriven event to be parked again",
        Duration::from_secs(60),
        || async {
            let listed: serde_json::Value =
                serde_json::from_str(&stack.run_ok("shipping", &["dlq", "list", "--json"]).await?)?;
            Ok(
                (listed.as_array().map(Vec::len) == Some(1) && listed[0]["receive_count"] == "3")
                    .then_some(()),
            )
        },
    )
    .await?;

    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let expected: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    let report = tests::wait::until("the good events to be applied", Duration::from_secs(180), || {
        let (pg, dynamo) = (&pg, &dynamo);
        async move {
            let report = shipping::check(pg, dynamo, "shipping-customers", "shipping-shipments").await?;
            let inbox = shipping::scan(dynamo, "shipping-inbox").await?.len() as i64;
            Ok((report.exact() && inbox == expected - 1).then_some(report))
        }
    })
    .await?;
    assert!(report.exact(), "{report}");
    Ok(())
}
