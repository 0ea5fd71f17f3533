//! With `--on-slot-loss stop`, a slot dropped while the bridge was down is not recreated (that
//! would hide a gap): capture stops with an error saying so and how to recover; `bridge setup
//! --recreate-slot` is the operator's explicit way back. (The default, `resync-outbox`, is
//! `capture_resyncs_the_outbox_after_slot_loss`.)

use harness::postgres::{drop_slot, SlotReader};
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_stops_with_a_recovery_hint_when_its_slot_was_dropped() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Stopped).await?;

    let (code, out) = stack.capture_refusal_with(&["--on-slot-loss", "stop"]).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("was dropped") && out.contains("Failover and recovery"),
        "{out}"
    );
    let slot = pg
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
            &[],
        )
        .await?;
    assert!(slot.is_none(), "capture did not recreate the slot");

    // Setup refuses too, unless told the gap was dealt with.
    let (code, _, err) = harness::process::run("bridge", &["setup"], &stack.env()).await?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("was dropped"), "{err}");
    stack.run_ok("bridge", &["setup", "--recreate-slot"]).await?;
    let capture = stack.spawn_capture(&[]).await?;
    capture.ensure_running()?;
    Ok(())
}

/// The harness drops a slot as an operator must: a walsender still holding it (capture is
/// stopping, or its backend has not yet noticed the client left) makes a plain
/// `pg_drop_replication_slot` fail, which made the slot-loss tests flaky under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_dropped_only_once_its_reader_let_go() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    // The hazard is real: while the walsender holds the slot, the plain drop is refused.
    let err = pg
        .execute("SELECT pg_drop_replication_slot('outbox_bridge')", &[])
        .await
        .err()
        .and_then(|e| e.as_db_error().map(|db| db.message().to_owned()))
        .unwrap_or_default();
    assert!(err.contains("is active for PID"), "{err:?}");

    let drop = drop_slot(&pg, "outbox_bridge", SlotReader::Stopped);
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        capture.terminate(std::time::Duration::from_secs(30)).await
    };
    let (dropped, stopped) = tokio::join!(drop, stop);
    assert_eq!(stopped?, Some(0));
    dropped?;

    // A slot taken away under a live reader (its walsender terminated first): capture
    // reconnects, finds it gone and, told to stop on slot loss, stops with the reason.
    stack.run_ok("bridge", &["setup", "--recreate-slot"]).await?;
    let mut capture = stack.spawn_capture(&["--on-slot-loss", "stop"]).await?;
    drop_slot(&pg, "outbox_bridge", SlotReader::Terminate).await?;
    let code = capture.wait(std::time::Duration::from_secs(60)).await?;
    let out = capture.output();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("was dropped"), "{out}");
    Ok(())
}
