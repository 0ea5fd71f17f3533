//! PutEvents throttling and partial failures (injected by an HTTP proxy in front of the
//! emulator) delay events but lose none.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tests::bus;
use tests::faults::FaultProxy;
use tests::process::Proc;
use tests::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_partially_failed_put_events_are_retried_until_every_event_lands() -> anyhow::Result<()>
{
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "all",
        &json!({"source": ["legacy.monolith"]}),
    )
    .await?;
    let capture = stack.spawn_capture(&[]).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    proxy.plan.throttle_put_events.store(3, Ordering::SeqCst);
    proxy.plan.partial_put_events.store(6, Ordering::SeqCst);
    let mut env = stack.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone()));
    let relay = Proc::spawn("bridge", &["relay"], &env)?;

    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "20",
            "--orders",
            "60",
            "--concurrency",
            "2",
            "--progress",
            "never",
        ],
    )?;
    assert_eq!(
        load.wait(Duration::from_secs(120)).await?,
        Some(0),
        "{}",
        load.output()
    );
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    events
        .until_all(&ids, Duration::from_secs(120), || {
            format!("relay:\n{}\ncapture:\n{}", relay.output(), capture.output())
        })
        .await?;
    assert_eq!(
        proxy.plan.throttled.load(Ordering::SeqCst),
        3,
        "every throttle was injected"
    );
    assert_eq!(
        proxy.plan.partial.load(Ordering::SeqCst),
        6,
        "every partial failure was injected"
    );
    assert!(relay.output().contains("putevents retry"), "{}", relay.output());
    // Partial failures never deliver a failed entry, so retries add no duplicates here.
    assert_eq!(
        events.received.len(),
        events.by_event_id().len(),
        "no duplicates from entry-level retries"
    );
    relay.ensure_running()?;
    Ok(())
}
