//! An event the service cannot apply (an OrderPlaced without an order) is retried up to the
//! queue's maxReceiveCount, then lands in the DLQ with its reason, while every other event is
//! applied. Events DynamoDB cannot store (a key over 2,048 bytes, a number beyond its range) are
//! parked the same way and never stop the service; and a DynamoDB brownout that outlasts the
//! queue's whole redrive budget dead-letters no healthy event. Events EventBridge cannot deliver
//! to the queue at all (it was deleted) wait in the same DLQ, with EventBridge's reason, until a
//! redrive once the queue is back: none is dropped between the bus and the service. An item of
//! the service's own tables it cannot read parks only the events that touch it; and S3 refusing
//! the service's reads of a claim check (its permissions, not the event) parks nothing.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use harness::shipping;
use harness::stack::Stack;

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
    let dlq = harness::dlq::queue_url(&sqs, "shipping-events-dlq").await?;
    let parked = harness::wait::until("the poison event in the DLQ", Duration::from_secs(180), || {
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
    harness::wait::until(
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
    let report = harness::wait::until("the good events to be applied", Duration::from_secs(180), || {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_brownout_parks_nothing_and_unstorable_events_are_parked_alone() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    // Two receives allowed: a brownout of many retry rounds outlasts that budget many times over.
    stack
        .run_ok("shipping", &["setup", "--max-receive-count", "2"])
        .await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    let metrics_port = harness::free_port()?;
    let listen = format!("127.0.0.1:{metrics_port}");
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint),
        ("SHIPPING_METRICS_LISTEN", &listen),
    ]);
    let service = harness::process::Proc::spawn(
        "shipping",
        &[
            "run",
            "--wait-seconds",
            "1",
            "--retry-delay",
            "1",
            "--stall-timeout-secs",
            "4",
        ],
        &env,
    )?;

    // Content DynamoDB refuses, behind a type shipping applies.
    let pg = stack.pg.client().await?;
    let long_key: String = pg
        .query_one(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
             VALUES (gen_random_uuid(), 'Customer', 'long-key', 'CustomerCreated',
                     jsonb_build_object('customer_id', repeat('k', 3000), 'name', 'n',
                                        'credit_limit', 1, 'credit_reserved', 0), 1)
             RETURNING id::text",
            &[],
        )
        .await?
        .get(0);
    let overflow: String = pg
        .query_one(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
             VALUES (gen_random_uuid(), 'Customer', 'overflow', 'CustomerCreated',
                     '{\"customer_id\": \"overflow\", \"name\": \"n\", \"credit_limit\": 1e200, \"credit_reserved\": 0}', 1)
             RETURNING id::text",
            &[],
        )
        .await?
        .get(0);

    // DynamoDB answers 503 to everything the consumer sends while the monolith writes.
    proxy.plan.set_brownout(Some("DynamoDB_20120810."));
    let browned = Instant::now();
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "3",
                "--orders",
                "9",
                "--concurrency",
                "2",
                "--seed",
                "5",
                "--progress",
                "never",
            ],
        )
        .await?;
    harness::wait::until(
        "the consumer to fail through several retry rounds",
        Duration::from_secs(120),
        || async {
            service.ensure_running()?;
            // Not serving yet reads as not there yet; the assertions below read strictly.
            let transient =
                harness::metrics::scrape(metrics_port, "shipping_events_failed_total{kind=\"transient\"}")
                    .await
                    .unwrap_or(0.0);
            Ok((transient >= 30.0 && browned.elapsed() > Duration::from_secs(20)).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    proxy.plan.set_brownout(None);

    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let expected: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    let report = harness::wait::until("every healthy event applied", Duration::from_secs(240), || {
        let (pg, dynamo, service) = (&pg, &dynamo, &service);
        async move {
            service.ensure_running()?;
            let report = shipping::check(pg, dynamo, "shipping-customers", "shipping-shipments").await?;
            let inbox = shipping::scan(dynamo, "shipping-inbox").await?.len() as i64;
            Ok((report.exact() && inbox == expected - 2).then_some(report))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    assert!(report.exact(), "{report}");

    // SQS, then DynamoDB Streams, browned out: the consumer, then the publisher, cannot get
    // through, and /healthz says which; each time it is healthy again once the service is back.
    harness::metrics::wait_health(metrics_port, 200, "ok", Duration::from_secs(30)).await?;
    for (target, reason) in [
        ("AmazonSQS.", "the consumer received nothing"),
        ("DynamoDBStreams_20120810.", "the publisher made no progress"),
    ] {
        proxy.plan.set_brownout(Some(target));
        let body = harness::metrics::wait_health(metrics_port, 503, reason, Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
        assert!(body.starts_with("unhealthy:"), "{body}");
        proxy.plan.set_brownout(None);
        harness::metrics::wait_health(metrics_port, 200, "ok", Duration::from_secs(60)).await?;
    }

    // The publisher through a DynamoDB brownout longer than any retry budget: shipment events
    // are held back by an EventBridge brownout, then published while DynamoDB answers 503 to
    // their "dispatched" marks for 40 s. The service waits it out (it used to give up after ten
    // attempts, ~20 s, and stop) and marks them once DynamoDB is back.
    let outbox_before = shipping::scan(&dynamo, "shipping-outbox").await?.len();
    proxy.plan.set_brownout(Some("AWSEvents."));
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "2",
                "--orders",
                "6",
                "--concurrency",
                "1",
                "--seed",
                "9",
                "--progress",
                "never",
            ],
        )
        .await?;
    harness::wait::until(
        "new shipment events in the outbox",
        Duration::from_secs(120),
        || async {
            service.ensure_running()?;
            let now = shipping::scan(&dynamo, "shipping-outbox").await?.len();
            Ok((now > outbox_before).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    proxy.plan.set_brownout(Some("DynamoDB_20120810."));
    let browned = Instant::now();
    while browned.elapsed() < Duration::from_secs(40) {
        service
            .ensure_running()
            .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    proxy.plan.set_brownout(None);
    harness::wait::until(
        "every outbox item marked dispatched",
        Duration::from_secs(120),
        || async {
            service.ensure_running()?;
            let items = shipping::scan(&dynamo, "shipping-outbox").await?;
            Ok(items
                .iter()
                .all(|i| i.contains_key("dispatched_at"))
                .then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;

    // The DLQ holds the two unstorable events, each with DynamoDB's reason, and nothing healthy.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = harness::dlq::queue_url(&sqs, "shipping-events-dlq").await?;
    let parked = std::sync::Mutex::new(Vec::new());
    harness::wait::until(
        "both unstorable events in the DLQ",
        Duration::from_secs(120),
        || {
            let (sqs, dlq) = (&sqs, &dlq);
            let parked = &parked;
            async move {
                let out = sqs
                    .receive_message()
                    .queue_url(dlq)
                    .max_number_of_messages(10)
                    .message_attribute_names("All")
                    .wait_time_seconds(1)
                    .visibility_timeout(600)
                    .send()
                    .await?;
                let mut parked = parked.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
                parked.extend(out.messages.unwrap_or_default());
                Ok((parked.len() >= 2).then_some(()))
            }
        },
    )
    .await?;
    let parked = parked.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reasons = std::collections::HashMap::new();
    for m in &parked {
        let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default())?;
        let reason = m
            .message_attributes()
            .and_then(|a| a.get("reason"))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned();
        reasons.insert(
            body["detail"]["metadata"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            reason,
        );
    }
    assert_eq!(
        reasons.len(),
        2,
        "only the unstorable events are parked: {reasons:?}"
    );
    for id in [&long_key, &overflow] {
        let reason = reasons
            .get(id.as_str())
            .ok_or_else(|| anyhow::anyhow!("{id} not parked: {reasons:?}"))?;
        assert!(reason.contains("cannot store the event's content"), "{reason}");
    }
    // The counter follows SendMessage's answer, which can reach shipping after the message is
    // already visible in the DLQ: wait for it, then check it went no further.
    harness::wait::until(
        "the dead-letter counter at 2",
        Duration::from_secs(60),
        || async {
            let n = harness::metrics::scrape(metrics_port, "shipping_events_dead_lettered_total").await?;
            Ok((n >= 2.0).then_some(()))
        },
    )
    .await?;
    assert_eq!(
        harness::metrics::scrape(metrics_port, "shipping_events_dead_lettered_total").await?,
        2.0
    );
    assert!(proxy.plan.injected.load(std::sync::atomic::Ordering::SeqCst) > 0);
    service.ensure_running()?;
    Ok(())
}

/// An item in the service's own outbox that is not an event is parked in the publisher's
/// dead-letter queue with its reason; the good item after it is still published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_parks_outbox_items_it_cannot_publish() -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let mut events = harness::bus::subscribe(
        &sdk,
        "legacy-monolith",
        "shipping-events-seen",
        &serde_json::json!({"source": ["shipping"]}),
    )
    .await?;
    // EventBridge refuses as a whole every call holding this text (a limit nothing checks
    // before the call), from the start: nothing has been accepted yet.
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    let marker = "refused-as-a-whole-call";
    if let Ok(mut holding) = proxy.plan.refuse_put_events_holding.lock() {
        *holding = Some(marker.to_owned());
    }
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let service = harness::process::Proc::spawn(
        "shipping",
        &[
            "run",
            "--wait-seconds",
            "1",
            "--poll-interval-ms",
            "100",
            "--stall-timeout-secs",
            "2",
            "--metrics-listen",
            &listen,
        ],
        &stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]),
    )?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let put = |id: &str, data: &str, with_type: bool| {
        let mut item = dynamo
            .put_item()
            .table_name("shipping-outbox")
            .item("event_id", Av::S(id.into()))
            .item("aggregate_type", Av::S("Shipment".into()))
            .item("aggregate_id", Av::S("o-1".into()))
            .item("aggregate_version", Av::N("1".into()))
            .item("data", Av::S(data.into()));
        if with_type {
            item = item.item("detail_type", Av::S("ShipmentScheduled".into()));
        }
        item.send()
    };
    // Alone and refused before anything was accepted: held (the service runs on, parks
    // nothing, /healthz names the shard) — stopping would stop it again after each restart.
    put("refused", &format!("{{\"state\": \"{marker}\"}}"), true).await?;
    service
        .wait_output(
            "the publisher to hold the refused item",
            &["holding the page", "has accepted no event since start"],
            Duration::from_secs(60),
        )
        .await?;
    let body =
        harness::metrics::wait_health(port, 503, "publisher made no progress", Duration::from_secs(60))
            .await?;
    assert!(body.contains("shard"), "{body}");
    assert!(
        !service.output().contains("outbox item parked"),
        "{}",
        service.output()
    );
    // Written after it, read with it: once the good one is accepted, the refused one is parked.
    put("not-json", "{\"state\": ", true).await?;
    put("no-type", "{}", false).await?;
    put(
        "good",
        "{\"state\": \"SCHEDULED\", \"fee\": 12345678901234567.89}",
        true,
    )
    .await?;

    events
        .until("the good item on the bus", Duration::from_secs(60), |s| {
            s.by_event_id().contains_key("good")
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = harness::dlq::queue_url(&sqs, "shipping-outbox-dlq").await?;
    let parked = std::sync::Mutex::new(Vec::new());
    harness::wait::until("the three bad items parked", Duration::from_secs(60), || {
        let (sqs, dlq) = (&sqs, &dlq);
        let parked = &parked;
        async move {
            let out = sqs
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(600)
                .send()
                .await?;
            let mut parked = parked.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
            for m in out.messages.unwrap_or_default() {
                parked.push(serde_json::from_str::<serde_json::Value>(
                    m.body().unwrap_or_default(),
                )?);
            }
            Ok((parked.len() >= 3).then_some(()))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    let parked = parked.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 3, "{parked:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("refused a PutEvents call holding only event refused")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not-json: data is not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no-type: no detail_type")),
        "{reasons:?}"
    );
    assert!(parked
        .iter()
        .all(|p| p["sequence_number"].as_str().is_some_and(|s| !s.is_empty())));
    assert_eq!(events.by_event_id().len(), 1, "only the good item was published");
    harness::metrics::wait_health(port, 200, "", Duration::from_secs(60)).await?;
    service.ensure_running()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_rule_cannot_deliver_wait_in_the_dlq_until_redriven() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    // The queue is deleted (a cleanup gone wrong, a stack update): every delivery of the rule fails.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = harness::dlq::queue_url(&sqs, "shipping-events").await?;
    sqs.delete_queue().queue_url(&queue).send().await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "3",
                "--orders",
                "6",
                "--concurrency",
                "2",
                "--seed",
                "5",
                "--progress",
                "never",
            ],
        )
        .await?;
    let pg = stack.pg.client().await?;
    let subscribed: Vec<String> = shipping::SUBSCRIBED_TYPES.map(str::to_owned).to_vec();
    let expected: i64 = pg
        .query_one("SELECT count(*) FROM outbox WHERE type = ANY($1)", &[&subscribed])
        .await?
        .get(0);
    assert!(expected > 0);

    let parked = harness::wait::until(
        "every undeliverable event in the DLQ",
        Duration::from_secs(120),
        || async {
            bridge.ensure_running()?;
            let listed: serde_json::Value = serde_json::from_str(
                &stack
                    .run_ok(
                        "shipping",
                        &["dlq", "list", "--json", "--max", "1000", "--hold-secs", "1"],
                    )
                    .await?,
            )?;
            let n = listed.as_array().map(Vec::len).unwrap_or(0) as i64;
            Ok((n >= expected).then_some(listed))
        },
    )
    .await?;
    let parked = parked.as_array().cloned().unwrap_or_default();
    assert_eq!(parked.len() as i64, expected, "each event once");
    for p in &parked {
        let reason = p["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("eventbridge could not deliver it to") && reason.contains("shipping-events"),
            "{p}"
        );
    }

    // The queue is back. The service's /metrics shows what EventBridge parked (no process of
    // ours counted it); the redrive hands each event to the queue, and the service applies them all.
    stack.run_ok("shipping", &["setup"]).await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let service = stack.spawn(
        "shipping",
        &["run", "--wait-seconds", "1", "--metrics-listen", &listen],
    )?;
    let depth = |want: f64| {
        let service = &service;
        async move {
            harness::wait::until(
                "the dead-letter queue's depth on /metrics",
                Duration::from_secs(60),
                || async {
                    service.ensure_running()?;
                    let n = harness::metrics::scrape(port, "shipping_dead_letter_queue_messages")
                        .await
                        .unwrap_or(-1.0);
                    Ok((n == want).then_some(()))
                },
            )
            .await
        }
    };
    depth(expected as f64).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the listing's hold
    let out = stack
        .run_ok("shipping", &["dlq", "redrive", "--max", "1000"])
        .await?;
    assert!(out.contains(&format!("redriven {expected} event(s)")), "{out}");
    shipping::wait_consistent(&stack, &[&service, &bridge], Duration::from_secs(180)).await?;
    depth(0.0).await?;
    Ok(())
}

/// Messages in `queue`, visible or being received.
async fn depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> anyhow::Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = harness::dlq::queue_url(sqs, queue).await?;
    let names = [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ];
    let out = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await?;
    let mut total = 0;
    for name in &names {
        let value = out
            .attributes()
            .and_then(|a| a.get(name))
            .ok_or_else(|| anyhow::anyhow!("{queue}: no {name:?}"))?;
        total += value.parse::<u64>()?;
    }
    Ok(total)
}

/// Publishes a CustomerCreated whose payload travels by claim check, as the relay sends an event
/// too large for EventBridge: the payload in the claim-check bucket, its reference on the bus.
async fn publish_claim_checked_customer(
    sdk: &aws_config::SdkConfig,
    event_id: &str,
    customer_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let payload = serde_json::json!({"customer_id": customer_id, "name": name,
        "credit_limit": 100, "credit_reserved": 0, "notes": "n".repeat(2000)})
    .to_string();
    let key = format!("claim-checks/{event_id}.json");
    harness::s3::client(sdk)
        .put_object()
        .bucket("bridge-claim-checks")
        .key(&key)
        .body(payload.clone().into_bytes().into())
        .send()
        .await?;
    let detail = serde_json::json!({"metadata": {"event_id": event_id, "aggregate_type": "Customer",
        "aggregate_id": customer_id, "aggregate_version": 1,
        "claim_check": {"bucket": "bridge-claim-checks", "key": key, "size": payload.len(),
                        "sha256": format!("{:x}", sha2::Sha256::digest(payload.as_bytes()))}},
        "data": null});
    put_monolith_event(sdk, "CustomerCreated", &detail).await
}

/// Puts one event on the monolith's bus as the relay does (source, detail type, envelope).
async fn put_monolith_event(
    sdk: &aws_config::SdkConfig,
    detail_type: &str,
    detail: &serde_json::Value,
) -> anyhow::Result<()> {
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name("legacy-monolith")
        .source("legacy.monolith")
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build();
    let out = aws_sdk_eventbridge::Client::new(sdk)
        .put_events()
        .entries(entry)
        .send()
        .await?;
    anyhow::ensure!(out.failed_entry_count() == 0, "{out:?}");
    Ok(())
}

/// S3 refuses shipping's reads of a claim check (AccessDenied: a role or key policy changed
/// under the running service) far longer than the queue's redrive budget allows failures: the
/// refusal is about the service, not the event, so the event is held — retried, never parked —
/// and `/healthz` says why. Once S3 answers again the event is applied; the DLQ stayed empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_refusal_holds_a_claim_checked_event_and_parks_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    // Two receives allowed: the refusal below outlasts that budget many times over.
    stack
        .run_ok("shipping", &["setup", "--max-receive-count", "2"])
        .await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    proxy.plan.set_deny(Some(harness::faults::S3));
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    // Only S3 goes through the proxy.
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL_S3", &proxy.endpoint),
        ("SHIPPING_METRICS_LISTEN", &listen),
    ]);
    let service = harness::process::Proc::spawn(
        "shipping",
        &["run", "--wait-seconds", "1", "--retry-delay", "0"],
        &env,
    )?;
    publish_claim_checked_customer(&sdk, "held-event", "c-held", "Held Ltd").await?;

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let denied = || proxy.plan.denied.load(std::sync::atomic::Ordering::SeqCst);
    let refused_since = Instant::now();
    harness::wait::until(
        "ten refused reads of the claim check over ten seconds",
        Duration::from_secs(120),
        || async {
            service.ensure_running()?;
            let parked = depth(&sqs, "shipping-events-dlq").await?;
            anyhow::ensure!(
                parked == 0,
                "the held event was parked after {} refusals",
                denied()
            );
            Ok((denied() >= 10 && refused_since.elapsed() > Duration::from_secs(10)).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    let body = harness::metrics::wait_health(port, 503, "AccessDenied", Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    assert!(body.contains("claim check"), "{body}");

    proxy.plan.set_deny(None);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    harness::wait::until("the held event applied", Duration::from_secs(60), || async {
        service.ensure_running()?;
        let customers = shipping::scan(&dynamo, "shipping-customers").await?;
        Ok(customers
            .iter()
            .any(|c| shipping::text(c, "customer_id") == "c-held" && shipping::text(c, "name") == "Held Ltd")
            .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    assert_eq!(depth(&sqs, "shipping-events-dlq").await?, 0, "nothing parked");
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    service.ensure_running()?;
    Ok(())
}

/// An item in the service's own tables that it cannot read (an attribute of the wrong type,
/// written by hand or by an older version): the events that touch it are parked with the
/// reason, every other event is applied, and the service keeps running — it used to stop, and
/// met the same item again after every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_item_parks_the_events_that_touch_it_and_the_rest_flow() -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    use serde_json::json;
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack
        .run_ok("shipping", &["setup", "--max-receive-count", "2"])
        .await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    // A shipment whose state is a number, a customer whose version is text.
    dynamo
        .put_item()
        .table_name("shipping-shipments")
        .item("order_id", Av::S("o-corrupt".into()))
        .item("customer_id", Av::S("c-good".into()))
        .item("order_total", Av::N("10".into()))
        .item("state", Av::N("7".into()))
        .item("order_version", Av::N("1".into()))
        .item("version", Av::N("1".into()))
        .send()
        .await?;
    dynamo
        .put_item()
        .table_name("shipping-customers")
        .item("customer_id", Av::S("c-corrupt".into()))
        .item("name", Av::S("Corrupt Ltd".into()))
        .item("credit_limit", Av::N("10".into()))
        .item("credit_reserved", Av::N("0".into()))
        .item("aggregate_version", Av::S("three".into()))
        .send()
        .await?;
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "1", "--retry-delay", "0"])?;
    let customer = |event_id: &str, id: &str, version: i64| {
        json!({"metadata": {"event_id": event_id, "aggregate_type": "Customer", "aggregate_id": id,
            "aggregate_version": version},
            "data": {"customer_id": id, "name": "n", "credit_limit": 100, "credit_reserved": 0}})
    };
    let order = |event_id: &str, id: &str, version: i64| {
        json!({"metadata": {"event_id": event_id, "aggregate_type": "Order", "aggregate_id": id,
            "aggregate_version": version},
            "data": {"order_id": id, "customer_id": "c-good", "order_total": 25, "state": "APPROVED"}})
    };
    put_monolith_event(&sdk, "OrderPlaced", &order("e-order-corrupt", "o-corrupt", 2)).await?;
    put_monolith_event(
        &sdk,
        "CreditReserved",
        &customer("e-customer-corrupt", "c-corrupt", 4),
    )
    .await?;
    put_monolith_event(&sdk, "CustomerCreated", &customer("e-customer-good", "c-good", 1)).await?;
    put_monolith_event(&sdk, "OrderPlaced", &order("e-order-good", "o-good", 1)).await?;

    harness::wait::until("the healthy events applied", Duration::from_secs(90), || async {
        service.ensure_running()?;
        let inbox = shipping::scan(&dynamo, "shipping-inbox").await?;
        let applied = |id: &str| inbox.iter().any(|i| shipping::text(i, "event_id") == id);
        Ok((applied("e-customer-good") && applied("e-order-good")).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = harness::dlq::queue_url(&sqs, "shipping-events-dlq").await?;
    let parked = std::sync::Mutex::new(std::collections::HashMap::new());
    harness::wait::until(
        "both events on corrupt items parked",
        Duration::from_secs(90),
        || {
            let (sqs, dlq, parked, service) = (&sqs, &dlq, &parked, &service);
            async move {
                service.ensure_running()?;
                let out = sqs
                    .receive_message()
                    .queue_url(dlq)
                    .max_number_of_messages(10)
                    .message_attribute_names("All")
                    .wait_time_seconds(1)
                    .visibility_timeout(600)
                    .send()
                    .await?;
                let mut parked = parked.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
                for m in out.messages.unwrap_or_default() {
                    let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default())?;
                    let reason = m
                        .message_attributes()
                        .and_then(|a| a.get("reason"))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned();
                    let id = body["detail"]["metadata"]["event_id"]
                        .as_str()
                        .unwrap_or_default();
                    parked.insert(id.to_owned(), reason);
                }
                Ok((parked.len() >= 2).then_some(()))
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    let parked = parked.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(parked.len(), 2, "{parked:?}");
    for (event, key, table) in [
        ("e-order-corrupt", "o-corrupt", "shipping-shipments"),
        ("e-customer-corrupt", "c-corrupt", "shipping-customers"),
    ] {
        let reason = parked.get(event).map(String::as_str).unwrap_or_default();
        assert!(
            reason.contains(&format!("item `{key}` in `{table}` is malformed")),
            "{event}: {reason}"
        );
    }
    // The good ones took effect; the corrupt items were left as they were for the operator.
    let shipments = shipping::scan(&dynamo, "shipping-shipments").await?;
    let state_of = |id: &str| {
        shipments
            .iter()
            .find(|s| shipping::text(s, "order_id") == id)
            .map(|s| shipping::text(s, "state"))
    };
    assert_eq!(state_of("o-good").as_deref(), Some("SCHEDULED"));
    assert_eq!(state_of("o-corrupt").as_deref(), Some("7"));
    service.ensure_running()?;
    Ok(())
}
