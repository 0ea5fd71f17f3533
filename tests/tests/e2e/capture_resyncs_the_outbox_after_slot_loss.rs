//! The outbox is the recovery log: when the slot is gone (dropped here; invalidated in
//! `capture_refuses_an_invalidated_slot`), capture re-publishes every outbox row since the last
//! delivered commit minus `--resync-margin` from a new slot's snapshot and streams on from it —
//! nothing lost, duplicates allowed. Where it cannot prove that (rows of the window pruned, other
//! tables published) it stops with the reason and the way out.

use std::collections::HashSet;
use std::time::Duration;

use harness::metrics::scrape;
use harness::postgres::{drop_slot, SlotReader};
use harness::stack::{outbox_id, Stack};

async fn insert_rows(stack: &Stack, prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let id = uuid_for(prefix, i);
        stack
            .insert_outbox(
                &id,
                ("Order", &format!("{prefix}-{}", i % 3)),
                "OrderPlaced",
                "{}",
            )
            .await?;
    }
    Ok(())
}

/// A deterministic uuid per (prefix, n), so a failure names the rows.
fn uuid_for(prefix: &str, n: usize) -> String {
    let tag = match prefix {
        "before" => 1,
        "gap" => 2,
        _ => 3,
    };
    format!("00000000-0000-4000-8000-{tag:04}{n:08}")
}

/// Capture streams `before` from `slot`, stops cleanly (its delivery record is written), and is gone.
async fn deliver_then_stop(stack: &Stack, slot: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut capture = stack.spawn_capture(args).await?;
    insert_rows(stack, "before", 20).await?;
    stack
        .wait_drained_within(slot, &capture, Duration::from_secs(60))
        .await?;
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_replaced_and_the_gap_republished() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    deliver_then_stop(&stack, "outbox_bridge", &[]).await?;
    let pg = stack.pg.client().await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Stopped).await?;
    // Written while there is no slot: no WAL of theirs will ever be decoded.
    insert_rows(&stack, "gap", 30).await?;

    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut capture = stack.spawn_capture(&["--metrics-listen", &listen]).await?;
    insert_rows(&stack, "after", 10).await?;
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(90))
        .await?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    assert_eq!(ids.len(), 60);
    assert_eq!(
        seen.len(),
        60,
        "every row, including the 30 written without a slot"
    );
    let reloaded: HashSet<&str> = records
        .iter()
        .filter(|r| r.json["metadata"]["operation"] == "load")
        .filter_map(outbox_id)
        .collect();
    for n in 0..30 {
        assert!(
            reloaded.contains(uuid_for("gap", n).as_str()),
            "gap row {n} re-published"
        );
    }
    assert_eq!(scrape(port, "bridge_slot_resyncs_total").await?, 1.0);
    assert!(scrape(port, "bridge_slot_resync_rows_total").await? >= 30.0);

    let status = stack
        .run_ok("bridge", &["status"])
        .await
        .unwrap_or_else(|e| e.to_string());
    assert!(status.contains("last outbox resync (missing)"), "{status}");
    assert!(status.contains("delivered up to"), "{status}");
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_rows_in_the_window_stop_the_resync_with_the_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    insert_rows(&stack, "before", 5).await?;
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Delivered rows older than a second go, and the cut is recorded.
    let out = stack
        .run_ok(
            "bridge",
            &["outbox", "prune", "--older-than", "1s", "--wait-secs", "30"],
        )
        .await?;
    assert!(out.contains("pruned 5 row(s)"), "{out}");
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    let pg = stack.pg.client().await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Stopped).await?;

    let (code, out) = stack.capture_refusal().await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("cannot prove it would lose nothing") && out.contains("bridge outbox prune"),
        "{out}"
    );
    let slot = pg
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
            &[],
        )
        .await?;
    assert!(slot.is_none(), "no slot was made that would skip the gap");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_entity_tables_stop_the_resync_with_the_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let args = [
        "--slot",
        "with_tables",
        "--publication",
        "with_tables",
        "--tables",
        "public.outbox,public.customers",
    ];
    deliver_then_stop(&stack, "with_tables", &args).await?;
    let pg = stack.pg.client().await?;
    drop_slot(&pg, "with_tables", SlotReader::Stopped).await?;
    let (code, out) = stack.capture_refusal_with(&args).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("public.customers") && out.contains("cannot be re-derived"),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_stops_the_resync_with_the_reason() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    deliver_then_stop(&stack, "outbox_bridge", &[]).await?;
    let pg = stack.pg.client().await?;
    // The operator publishes the customers too, behind capture's configuration (--tables).
    pg.batch_execute("ALTER PUBLICATION outbox_bridge ADD TABLE customers")
        .await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Stopped).await?;
    let (code, out) = stack.capture_refusal().await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("public.customers") && out.contains("cannot be re-derived"),
        "{out}"
    );
    Ok(())
}

/// A resync of many rows behind a slow Kinesis: `/healthz` stays 200 while the rows flow (a
/// resync is progress; a 503 would make the orchestrator kill it and start over, forever), and
/// a capture killed midway resumes where the first stood instead of re-sending everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_resync_stays_healthy_and_resumes_after_a_kill() -> anyhow::Result<()> {
    const ROWS: usize = 20_000;
    let stack = Stack::start().await?;
    // Delivered first (the delivery record): twenty rows of twenty aggregates.
    let mut capture = stack.spawn_capture(&[]).await?;
    for n in 0..20 {
        let id = uuid_for("before", n);
        stack
            .insert_outbox(&id, ("Order", &format!("before-{n}")), "OrderPlaced", "{}")
            .await?;
    }
    stack.wait_drained("outbox_bridge", &capture).await?;
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    let pg = stack.pg.client().await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Stopped).await?;
    // One transaction per hundred rows: each its own `occurred_at`, as a monolith writes them.
    // Every row its own aggregate, so each batch is one PutRecords call (one key is never twice
    // in a call), and each call takes the proxy's second.
    for _ in 0..ROWS / 100 {
        pg.execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
             SELECT gen_random_uuid(), 'Order', gen_random_uuid()::text, 'OrderPlaced', '{}', 1 FROM generate_series(1, 100)",
            &[],
        )
        .await?;
    }

    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    if let Ok(mut delay) = proxy.plan.delay_holding.lock() {
        *delay = Some(("Kinesis_20131202.PutRecords".into(), "Records".into(), 1000));
    }
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let args = [
        "capture",
        "--metrics-listen",
        &listen,
        "--stall-timeout-secs",
        "5",
    ];
    capture = harness::process::Proc::spawn("bridge", &args, &env)?;
    let puts = || proxy.plan.call_counts().get("PutRecords").map_or(0, |c| c.calls);
    // Past twice the stall bound, and about a third of the rows: every probe meanwhile is 200.
    let probes = std::sync::atomic::AtomicUsize::new(0);
    harness::wait::until("a third of the resync sent", Duration::from_secs(120), || async {
        capture.ensure_running()?;
        if let Ok((code, body)) = harness::metrics::health(port).await {
            anyhow::ensure!(
                code == 200,
                "/healthz {code} during the resync: {body}\n{}",
                capture.output()
            );
            probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((puts() >= 14).then_some(()))
    })
    .await?;
    let probes = probes.into_inner();
    assert!(probes > 20, "/healthz was probed throughout ({probes} probes)");
    assert!(
        capture.output().contains("outbox resync progress"),
        "{}",
        capture.output()
    );
    capture.kill9().await?;
    let sent_before_kill = puts();

    // Restarted (Kinesis at full speed now): it resumes, then streams.
    if let Ok(mut delay) = proxy.plan.delay_holding.lock() {
        *delay = None;
    }
    let capture = stack.spawn_capture(&["--metrics-listen", &listen]).await?;
    assert!(
        capture
            .output()
            .contains("resuming the outbox resync a restart cut short"),
        "{}",
        capture.output()
    );
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(120))
        .await?;
    let loads = records
        .iter()
        .filter(|r| r.json["metadata"]["operation"] == "load")
        .count();
    // Everything the first run had sent was sent once, bar the batches of its last couple of
    // seconds (progress is recorded every 2 s): starting over would re-send all of it.
    let resent = loads.saturating_sub(ROWS + 20);
    println!(
        "resync: {loads} load records for {} rows; the killed run had made {sent_before_kill} PutRecords calls; {resent} re-sent",
        ROWS + 20
    );
    assert!(
        resent < 3 * 500,
        "{resent} rows re-sent after the restart (the first run sent ~{} before the kill)",
        sent_before_kill * 500
    );
    assert_eq!(
        scrape(port, "bridge_slot_resyncs_total").await?,
        0.0,
        "a resumed resync is not a new one"
    );
    Ok(())
}
