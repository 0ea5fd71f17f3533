//! Postgres going away (a fast and an immediate restart) costs capture a reconnect, not an
//! event: every committed outbox row still reaches Kinesis. So does a silent network partition
//! (packets dropped, sockets left open): capture notices the silence within
//! `--replication-timeout-secs`, not TCP's quarter of an hour, and reconnects; a SIGTERM while
//! it cannot reach Postgres still ends it cleanly.

use std::collections::HashSet;
use std::time::Duration;

use harness::postgres::StopMode;
use harness::stack::Stack;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      SELECT gen_random_uuid(), 'Customer', 'c-' || i, 'CustomerCreated', '{}', 1 FROM generate_series(1, $1::int) i";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_across_fast_and_immediate_postgres_restarts() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let capture = stack.spawn_capture(&[]).await?;
    for mode in [StopMode::Fast, StopMode::Immediate] {
        stack.pg.client().await?.execute(INSERT, &[&50i32]).await?;
        stack.pg.restart(mode)?;
        stack.pg.client().await?.execute(INSERT, &[&50i32]).await?;
        stack.wait_slot_active("outbox_bridge", &capture).await?;
    }
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    assert_eq!(ids.len(), 200);
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(90))
        .await?;
    assert!(capture.output().contains("reconnecting"), "{}", capture.output());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_noticed_and_capture_reconnects() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let proxy = harness::proxy::Proxy::start(&format!("127.0.0.1:{}", stack.pg.port)).await?;
    let through_proxy = stack.pg.url().replace(
        &format!("127.0.0.1:{}", stack.pg.port),
        proxy.endpoint.trim_start_matches("http://"),
    );
    let mut env = stack.env();
    env.retain(|(k, _)| k != "DATABASE_URL" && k != "BRIDGE_METRICS_LISTEN");
    env.push(("DATABASE_URL".into(), through_proxy));
    let port = harness::free_port()?;
    env.push(("BRIDGE_METRICS_LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut capture = harness::process::Proc::spawn(
        "bridge",
        &[
            "capture",
            "--replication-timeout-secs",
            "4",
            "--stall-timeout-secs",
            "3",
        ],
        &env,
    )?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    stack.pg.client().await?.execute(INSERT, &[&10i32]).await?;
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;

    // The path to Postgres goes silent; rows committed meanwhile must still arrive.
    proxy.set_partitioned(true);
    stack.pg.client().await?.execute(INSERT, &[&10i32]).await?;
    harness::wait::until(
        "capture to notice the silence",
        Duration::from_secs(30),
        || async {
            capture.ensure_running()?;
            Ok(capture
                .output()
                .contains("no message from postgres")
                .then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    // While Postgres cannot be reached, /healthz says so.
    harness::metrics::wait_health(port, 503, "no message from postgres", Duration::from_secs(30)).await?;
    proxy.set_partitioned(false);
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    assert_eq!(stack.outbox_ids().await?.len(), 20);
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;

    // Partitioned again, then stopped while it cannot get through: shutdown wins, exit 0.
    proxy.set_partitioned(true);
    // Stopped only once capture has noticed: otherwise this would test a plain SIGTERM.
    harness::metrics::wait_health(port, 503, "no message from postgres", Duration::from_secs(30)).await?;
    assert_eq!(
        capture.terminate(Duration::from_secs(30)).await?,
        Some(0),
        "{}",
        capture.output()
    );
    Ok(())
}

/// A capture that cannot start (Postgres is down) is watched from its first moment: `/healthz`
/// says so once the stall bound passes, instead of 200 while nothing streams; once Postgres is
/// back it starts, and health and rows follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_capture_stuck_starting() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.pg.stop(StopMode::Fast)?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let capture = stack.spawn(
        "bridge",
        &[
            "capture",
            "--metrics-listen",
            &listen,
            "--stall-timeout-secs",
            "2",
        ],
    )?;
    let body = harness::metrics::wait_health(port, 503, "not started", Duration::from_secs(30)).await?;
    capture.ensure_running()?;
    println!("while postgres is down: {body}");
    stack.pg.start_again()?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    stack.pg.client().await?.execute(INSERT, &[&5i32]).await?;
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await?;
    Ok(())
}

/// A refusal at start — Kinesis denying the stream's tags (AccessDeniedException) — is the
/// configuration's, not an outage: capture stops with the reason instead of retrying it forever
/// behind a healthy-looking `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_start_stops_capture_with_the_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    proxy.plan.set_deny(Some("Kinesis_20131202.ListTagsForStream"));
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let mut capture = harness::process::Proc::spawn("bridge", &["capture"], &env)?;
    let code = capture.wait(Duration::from_secs(60)).await?;
    let out = capture.output();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("AccessDeniedException"), "{out}");
    Ok(())
}
