//! SIGTERM during an SQS outage: shipping stops at once, instead of first sleeping out the
//! retry delay it had just chosen (which grows to 20 s in a long outage).

use std::time::{Duration, Instant};

use harness::faults::FaultProxy;
use harness::process::Proc;
use harness::stack::Stack;

/// The longest retry delay the consumer has announced so far (its JSON log), in ms.
fn longest_receive_retry(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "receive failed, retrying")
        .filter_map(|l| l["fields"]["delay_ms"].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_does_not_wait_out_the_backoff() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.run_ok("shipping", &["setup"]).await?;
    let proxy = FaultProxy::start(&stack.moto.endpoint).await?;
    let env = stack.env_with(&[
        ("AWS_ENDPOINT_URL", &proxy.endpoint),
        ("SHIPPING_LOG_FORMAT", "json"),
    ]);
    let mut service = Proc::spawn("shipping", &["run", "--wait-seconds", "1"], &env)?;
    // The consumer is in its receive loop once it has asked SQS for messages; only then does
    // the brownout reach the retry this test is about (start-up calls wait outages out too).
    harness::wait::until("the consumer receiving", Duration::from_secs(60), || async {
        service.ensure_running()?;
        let counts = proxy.plan.call_counts();
        Ok((counts.get("ReceiveMessage").map_or(0, |c| c.calls) >= 1).then_some(()))
    })
    .await?;

    // SQS answers 503 to everything: the consumer retries with a growing delay.
    proxy.plan.set_brownout(Some("AmazonSQS."));
    harness::wait::until(
        "a retry delay of 10 s or more",
        Duration::from_secs(120),
        || async {
            service.ensure_running()?;
            Ok((longest_receive_retry(&service.output()) >= 10_000).then_some(()))
        },
    )
    .await?;
    // That delay has just begun: stopping well inside it (half, leaving the rest to a loaded
    // machine's process exit) shows the sleep was cut short.
    let asked = Instant::now();
    let code = service.terminate(Duration::from_secs(30)).await?;
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{}", service.output());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop during the outage:\n{}",
        service.output()
    );
    Ok(())
}
