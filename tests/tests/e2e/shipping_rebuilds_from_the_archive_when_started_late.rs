//! A microservice that joins late: the monolith's history is on the bus's archive only (the
//! shipping service had no rule or queue while it happened). `shipping rebuild --since 1h` sets
//! the service up and replays that history to its own rule; `shipping run` then converges to
//! the monolith (the consistency report is exact).

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

    let out = stack.run_ok("shipping", &["rebuild", "--since", "1h"]).await?;
    assert!(out.contains("completed"), "{out}");
    let service = stack.spawn("shipping", &["run", "--wait-seconds", "2"])?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(240)).await?;
    println!("{report}");
    assert!(report.exact(), "{report}");
    assert!(report.customers >= 5 && report.approved_orders > 0, "{report}");
    Ok(())
}
