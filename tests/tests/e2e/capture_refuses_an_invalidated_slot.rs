//! A slot Postgres invalidated (`max_slot_wal_keep_size` exceeded while the bridge was down:
//! `wal_status = lost`) has lost changes. With `--on-slot-loss stop` capture stops with an error
//! that says so and how to recover, and neither streams from it nor replaces it; by default
//! (`resync-outbox`) it replaces it and re-publishes the outbox rows the lost WAL held. On 18 a
//! slot idle past `idle_replication_slot_timeout` is invalidated too (`idle_timeout`): the same
//! loss, named as such.

use std::collections::HashSet;
use std::time::Duration;

use harness::stack::{outbox_id, Stack};
use harness::wait;

async fn wal_status(pg: &tokio_postgres::Client) -> anyhow::Result<Option<String>> {
    Ok(pg
        .query_one(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_stops_with_a_recovery_hint_when_its_slot_was_invalidated() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    // Written after `bridge setup` made the slot, while capture has never run: only the slot
    // holds them, and the invalidation below loses that.
    for n in 0..25 {
        let id = format!("00000000-0000-4000-8000-{n:012}");
        stack
            .insert_outbox(&id, ("Order", &format!("o{}", n % 4)), "OrderPlaced", "{}")
            .await?;
    }
    // The bridge is down; the server keeps at most 1 MB of WAL for slots.
    // (ALTER SYSTEM refuses to run in the implicit transaction of a multi-statement query.)
    pg.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .await?;
    pg.batch_execute("SELECT pg_reload_conf(); CREATE TABLE wal_noise (id bigserial PRIMARY KEY, pad text);")
        .await?;
    wait::until("the slot to be invalidated", Duration::from_secs(120), || async {
        // Each round: ~8 MB of WAL, a segment switch and a checkpoint, which is when Postgres
        // invalidates slots that hold back more than max_slot_wal_keep_size.
        pg.batch_execute(
            "INSERT INTO wal_noise (pad) SELECT repeat('w', 1000) FROM generate_series(1, 8000);
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await?;
        Ok((wal_status(&pg).await?.as_deref() == Some("lost")).then_some(()))
    })
    .await?;

    let (code, out) = stack.capture_refusal_with(&["--on-slot-loss", "stop"]).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("was invalidated (wal_removed)") && out.contains("Failover and recovery"),
        "{out}"
    );
    // Still the same, lost slot: nothing recreated it at the current position.
    assert_eq!(wal_status(&pg).await?.as_deref(), Some("lost"));

    // The default: the lost slot is replaced and its rows come from the outbox instead.
    let capture = stack.spawn_capture(&[]).await?;
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(90))
        .await?;
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    assert_eq!(seen.len(), 25, "every row the lost WAL held");
    assert!(matches!(
        wal_status(&pg).await?.as_deref(),
        Some("reserved" | "extended")
    ));
    Ok(())
}

/// PostgreSQL 18 invalidates a slot idle longer than `idle_replication_slot_timeout`: capture
/// names the reason (`idle_timeout`), stops with `--on-slot-loss stop`, and by default resyncs
/// the outbox like after any other loss. Before 18 the setting does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_invalidated_by_18s_timeout_is_a_loss_like_any_other() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let major = stack.pg.major().await?;
    if major < 18 {
        let setting = pg
            .query_opt(
                "SELECT 1 FROM pg_settings WHERE name = 'idle_replication_slot_timeout'",
                &[],
            )
            .await?;
        assert!(setting.is_none(), "PostgreSQL {major} has no idle slot timeout");
        println!("PostgreSQL {major}: slots are not invalidated for being idle");
        return Ok(());
    }
    // Delivered, then capture stops cleanly (the delivery record), and rows come meanwhile.
    let mut capture = stack.spawn_capture(&[]).await?;
    stack
        .insert_outbox(
            "00000000-0000-4000-8000-0000000000d1",
            ("Order", "o1"),
            "OrderPlaced",
            "{}",
        )
        .await?;
    stack.wait_drained("outbox_bridge", &capture).await?;
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    let gap = "00000000-0000-4000-8000-0000000000d2";
    stack
        .insert_outbox(gap, ("Order", "o2"), "OrderPlaced", "{}")
        .await?;
    pg.batch_execute("ALTER SYSTEM SET idle_replication_slot_timeout = '1s'")
        .await?;
    pg.batch_execute("SELECT pg_reload_conf()").await?;
    let reason = wait::until("the idle slot invalidated", Duration::from_secs(60), || async {
        // Slots are checked at checkpoints.
        pg.batch_execute("CHECKPOINT").await?;
        let row = pg
            .query_one(
                "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
                &[],
            )
            .await?;
        Ok(row.get::<_, Option<String>>(0))
    })
    .await?;
    assert_eq!(reason, "idle_timeout");
    // Later slots must not be invalidated while this test reads them.
    pg.batch_execute("ALTER SYSTEM RESET idle_replication_slot_timeout")
        .await?;
    pg.batch_execute("SELECT pg_reload_conf()").await?;

    let status = stack
        .run_ok("bridge", &["status"])
        .await
        .unwrap_or_else(|e| e.to_string());
    assert!(status.contains("invalidated: idle_timeout"), "{status}");
    let (code, out) = stack.capture_refusal_with(&["--on-slot-loss", "stop"]).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("idle_timeout") && out.contains("idle_replication_slot_timeout"),
        "{out}"
    );
    let capture = stack.spawn_capture(&[]).await?;
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    assert!(
        seen.contains(gap),
        "the row only the invalidated slot held, re-published"
    );
    Ok(())
}
