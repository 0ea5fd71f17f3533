//! OpenTelemetry, end to end: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, one order placed over
//! HTTP is one trace holding spans from all four processes — the monolith's request, capture's
//! write to Kinesis, the relay's PutEvents, shipping's transaction and its own PutEvents of the
//! shipment event — each parented on a span of the same trace, the request's at the root. The
//! outbox row carries the request span's `traceparent`.

use std::collections::HashSet;
use std::time::Duration;

use harness::otlp::Receiver;
use harness::process::Proc;
use harness::stack::Stack;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_the_four_processes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.run_ok("shipping", &["setup"]).await?;
    let receiver = Receiver::start().await?;
    let mut env = stack.env();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.url.clone()));
    // Export within a fraction of a second rather than the SDK's default 5 s.
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let (monolith, base) = stack.spawn_legacy_sim_with(&env).await?;
    let capture = Proc::spawn("bridge", &["capture"], &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let relay = Proc::spawn("bridge", &["relay", "--lease-duration-secs", "3"], &env)?;
    let shipping = Proc::spawn("shipping", &["run", "--wait-seconds", "1"], &env)?;

    let http = reqwest::Client::new();
    let customer: Value = http
        .post(format!("{base}/customers"))
        .json(&json!({"name": "Ada", "credit_limit": 1000}))
        .send()
        .await?
        .json()
        .await?;
    let order: Value = http
        .post(format!("{base}/orders"))
        .json(&json!({"customer_id": customer["customer_id"], "order_total": 25}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(order["state"], "APPROVED", "{order}");
    let order_id = order["order_id"].as_str().unwrap_or_default().to_owned();
    let traceparent: String = stack
        .pg
        .client()
        .await?
        .query_one(
            "SELECT tracingspancontext FROM outbox WHERE aggregatetype = 'Order' AND aggregateid = $1",
            &[&order_id],
        )
        .await?
        .get(0);
    let mut parts = traceparent.split('-');
    let (trace_id, request_span) = (
        parts.nth(1).unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );

    let spans = harness::wait::until(
        "the order's trace from all four processes",
        Duration::from_secs(120),
        || async {
            for p in [&monolith, &capture, &relay, &shipping] {
                p.ensure_running()?;
            }
            let spans = receiver.trace(&trace_id);
            let shipped = spans
                .iter()
                .any(|s| s.service == "shipping" && s.name == "eventbridge put_events");
            let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            let all = ["legacy-sim", "bridge-capture", "bridge-relay", "shipping"]
                .iter()
                .all(|s| services.contains(s));
            Ok((all && shipped).then_some(spans))
        },
    )
    .await?;

    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    assert_eq!(roots[0].service, "legacy-sim", "{spans:#?}");
    assert_eq!(roots[0].name, "POST /orders", "{spans:#?}");
    assert_eq!(
        roots[0].span_id, request_span,
        "the outbox row names the request's span"
    );
    for s in spans.iter().filter(|s| !s.parent.is_empty()) {
        assert!(
            ids.contains(s.parent.as_str()),
            "{s:?}'s parent is not in the trace: {spans:#?}"
        );
    }
    let by_id = |id: &str| spans.iter().find(|s| s.span_id == id);
    for (service, name, parent_service) in [
        ("bridge-capture", "capture kinesis.put_records", "legacy-sim"),
        ("bridge-relay", "eventbridge put_events", "legacy-sim"),
        ("shipping", "shipping apply", "legacy-sim"),
        ("shipping", "eventbridge put_events", "shipping"),
    ] {
        let span = spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span from {service}: {spans:#?}"));
        let parent = by_id(&span.parent).map(|p| p.service.as_str());
        assert_eq!(parent, Some(parent_service), "{span:?}: {spans:#?}");
    }
    Ok(())
}

/// One configuration: its variables, the service name the spans must carry, whether any export.
type Run<'a> = (&'a [(&'a str, String)], &'a str, bool);

/// OpenTelemetry's own variables work as users of its other SDKs expect: the traces URL itself
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), a service name of theirs (`OTEL_SERVICE_NAME`), gRPC
/// (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`), and a sampler (`OTEL_TRACES_SAMPLER=always_off`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_variables_work_as_users_expect() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let receiver = Receiver::start().await?;
    let url = receiver.url.clone();
    let runs: [Run; 3] = [
        (
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{url}/v1/traces")),
                ("OTEL_SERVICE_NAME", "orders-cdc".into()),
            ],
            "orders-cdc",
            true,
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", url.clone()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
                ("OTEL_SERVICE_NAME", "orders-cdc-grpc".into()),
            ],
            "orders-cdc-grpc",
            true,
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", url.clone()),
                ("OTEL_SERVICE_NAME", "orders-cdc-unsampled".into()),
                ("OTEL_TRACES_SAMPLER", "always_off".into()),
            ],
            "orders-cdc-unsampled",
            false,
        ),
    ];
    let pg = stack.pg.client().await?;
    for (n, (vars, service, exported)) in runs.into_iter().enumerate() {
        let mut env = stack.env();
        env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
        env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut capture = Proc::spawn("bridge", &["capture"], &env)?;
        stack.wait_slot_active("outbox_bridge", &capture).await?;
        let traceparent = format!("00-{:032x}-{:016x}-01", 0xabc0 + n, 0xdef0 + n);
        pg.execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version, tracingspancontext) \
             VALUES (gen_random_uuid(), 'Order', 'o-traced', 'OrderPlaced', '{}', 1, $1)",
            &[&traceparent],
        )
        .await?;
        stack.wait_drained("outbox_bridge", &capture).await?;
        let from_service = || {
            receiver
                .spans()
                .into_iter()
                .filter(|s| s.service == service)
                .count()
        };
        if exported {
            harness::wait::until(
                &format!("spans of {service}"),
                Duration::from_secs(30),
                || async {
                    capture.ensure_running()?;
                    Ok((from_service() > 0).then_some(()))
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
        } else {
            // Ten export rounds later, still nothing: the sampler said no.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(
                from_service(),
                0,
                "spans exported with OTEL_TRACES_SAMPLER=always_off"
            );
        }
        assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    }
    Ok(())
}
