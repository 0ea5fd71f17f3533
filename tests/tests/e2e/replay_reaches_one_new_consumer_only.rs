//! Replay for one consumer, the AWS-native way: `bridge setup` archives the bus; a consumer that
//! subscribes after the events were published gets the last hour through `bridge replay --rule`,
//! and the consumer that already had them receives none again.

use std::collections::HashSet;
use std::time::Duration;

use harness::bus;
use harness::stack::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_consumer_gets_the_last_hour_and_no_other_consumer_sees_it_again() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let pattern = json!({"source": ["legacy.monolith"]});
    let mut early = bus::subscribe(&sdk, "legacy-monolith", "early-consumer", &pattern).await?;
    let capture = stack.spawn_capture(&[]).await?;
    let relay = stack.spawn("bridge", &["relay", "--lease-duration-secs", "10"])?;
    let mut ids = HashSet::new();
    for n in 0..20 {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        stack
            .insert_outbox(&id, ("Order", &format!("o{n}")), "OrderPlaced", "{}")
            .await?;
        ids.insert(id);
    }
    early
        .until_all(&ids, Duration::from_secs(90), || {
            format!("{}\n{}", capture.output(), relay.output())
        })
        .await?;

    // Joins late: nothing of the past reaches it by itself.
    let mut late = bus::subscribe(&sdk, "legacy-monolith", "late-consumer", &pattern).await?;
    let out = stack
        .run_ok(
            "bridge",
            &["replay", "--since", "1h", "--rule", "late-consumer-rule"],
        )
        .await?;
    assert!(out.contains("completed"), "{out}");
    late.until_all(&ids, Duration::from_secs(60), || relay.output())
        .await?;
    assert!(
        late.received.iter().all(|e| e["replay-name"].is_string()),
        "replayed events say so"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    early.poll().await?;
    let counts = early.by_event_id();
    assert_eq!(counts.len(), 20);
    assert!(
        counts.values().all(|(n, _)| *n == 1),
        "the early consumer received events again: {:?}",
        counts.values().map(|(n, _)| n).collect::<Vec<_>>()
    );
    Ok(())
}
