//! kill -9 of the shipping service (consumer and publisher) mid-run, twice: after restarts
//! nothing is lost and nothing is applied twice — the projection and shipments are exact, the
//! inbox holds each event once, the outbox one event per shipment change, and every one of
//! those reaches the bus.

use std::collections::HashSet;
use std::time::Duration;

use harness::bus;
use harness::shipping::{self, scan, text};
use harness::stack::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_applies_nothing_twice() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack
        .run_ok("shipping", &["setup", "--visibility-timeout", "3"])
        .await?;
    let mut shipment_events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "shipment-events",
        &json!({"source": ["shipping"]}),
    )
    .await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let args = [
        "run",
        "--wait-seconds",
        "1",
        "--visibility-timeout",
        "3",
        "--poll-interval-ms",
        "100",
    ];
    let mut service = stack.spawn("shipping", &args)?;
    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "6",
            "--orders",
            "40",
            "--concurrency",
            "2",
            "--cancel-ratio",
            "0.3",
            "--seed",
            "9",
            "--rate",
            "8",
            "--progress",
            "never",
        ],
    )?;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    for round in 0..2 {
        // Kill while it is working: once the inbox has grown since the last restart.
        let before = scan(&dynamo, "shipping-inbox").await?.len();
        harness::wait::until(
            "the service to apply more events",
            Duration::from_secs(90),
            || {
                let (dynamo, service) = (&dynamo, &service);
                async move {
                    service.ensure_running()?;
                    Ok((scan(dynamo, "shipping-inbox").await?.len() > before + 5).then_some(()))
                }
            },
        )
        .await?;
        service.kill9().await?;
        eprintln!("round {round}: killed shipping after {before}+ events");
        service = stack.spawn("shipping", &args)?;
    }
    let code = load.wait(Duration::from_secs(120)).await?;
    anyhow::ensure!(code == Some(0), "load failed: {}", load.output());

    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(240)).await?;
    assert!(report.exact(), "{report}");
    let pg = stack.pg.client().await?;
    let expected: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    assert_eq!(
        scan(&dynamo, "shipping-inbox").await?.len() as i64,
        expected,
        "each event applied once"
    );

    let outbox = scan(&dynamo, "shipping-outbox").await?;
    let mut changes = HashSet::new();
    for item in &outbox {
        let key = (text(item, "aggregate_id"), text(item, "detail_type"));
        assert!(changes.insert(key.clone()), "{key:?} raised twice");
    }
    let want: HashSet<String> = outbox.iter().map(|i| text(i, "event_id")).collect();
    shipment_events
        .until("every shipment event on the bus", Duration::from_secs(120), |s| {
            let got = s.by_event_id();
            want.iter().all(|id| got.contains_key(id))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", service.output()))?;
    Ok(())
}
