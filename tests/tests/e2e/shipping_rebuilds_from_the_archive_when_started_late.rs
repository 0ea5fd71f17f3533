//! A microservice that joins late: the monolith's history is on the bus's archive only (the
//! shipping service had no rule or queue while it happened). `shipping rebuild --since 1h` sets
//! the service up and replays that history to its own rule; `shipping run` then converges to
//! the monolith (the consistency report is exact) — even with an archive that lags, as
//! EventBridge's does, so that the last events before the rebuild are not in it yet.

use std::collections::HashSet;
use std::time::Duration;

use harness::stack::Stack;
use harness::{bus, shipping};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_late_converges_to_the_monolith() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut observer = bus::monolith_events(&sdk, "history-observer").await?;
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
                "2",
                "--cancel-ratio",
                "0.2",
                "--seed",
                "5",
                "--progress",
                "never",
            ],
        )
        .await?;
    // The history is on the bus (and so in its archive) before the service exists.
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    observer
        .until_all(&ids, Duration::from_secs(120), || bridge.output())
        .await?;

    // The emulator's archive has no lag here: the second pass need not wait ten minutes.
    let out = stack
        .run_ok("shipping", &["rebuild", "--since", "1h", "--archive-lag", "2s"])
        .await?;
    assert!(out.contains("completed"), "{out}");
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "2"])?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(240)).await?;
    println!("{report}");
    assert!(report.exact(), "{report}");
    assert!(report.customers >= 5 && report.approved_orders > 0, "{report}");
    Ok(())
}

/// EventBridge writes to the archive with a delay (AWS advises waiting before a replay): the
/// events that reached the bus just before `shipping rebuild` created the service's rule are
/// neither delivered by the rule nor, yet, in the archive when the replay reads it. The rebuild
/// replays that tail again once the archive has caught up (`--archive-lag`, here through its
/// environment variable), so the service converges all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_just_before_the_rule_existed_arrive_once_the_archive_caught_up() -> anyhow::Result<()> {
    // Each event is replayable 8 s after it reached the archive.
    let stack = Stack::start_with_archive_lag(Duration::from_secs(8)).await?;
    let sdk = stack.moto.sdk_config().await;
    let mut observer = bus::monolith_events(&sdk, "tail-observer").await?;
    let bridge = stack.spawn("bridge", &["run", "--lease-duration-secs", "3"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let load = |seed: &'static str, orders: &'static str| {
        let stack = &stack;
        async move {
            stack
                .run_ok(
                    "legacy-sim",
                    &[
                        "load",
                        "--customers",
                        "2",
                        "--orders",
                        orders,
                        "--concurrency",
                        "2",
                        "--seed",
                        seed,
                        "--progress",
                        "never",
                    ],
                )
                .await
        }
    };
    load("7", "10").await?;
    // The last of the history reaches the bus right before the rebuild: seconds, not minutes.
    load("8", "4").await?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    observer
        .until_all(&ids, Duration::from_secs(120), || bridge.output())
        .await?;

    let env = stack.env_with(&[("SHIPPING_ARCHIVE_LAG", "10s")]);
    let (code, out, err) = harness::process::run("shipping", &["rebuild", "--since", "1h"], &env).await?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("completed"), "{out}{err}");
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "1"])?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(120))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nrebuild:\n{out}{err}"))?;
    assert!(report.exact(), "{report}");
    Ok(())
}
