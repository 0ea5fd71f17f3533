//! With `--on-slot-loss stop`, a slot dropped while the bridge was down is not recreated (that
//! would hide a gap): capture stops with an error saying so and how to recover; `bridge setup
//! --recreate-slot` is the operator's explicit way back. (The default, `resync-outbox`, is
//! `capture_resyncs_the_outbox_after_slot_loss`.)

use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_stops_with_a_recovery_hint_when_its_slot_was_dropped() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.execute("SELECT pg_drop_replication_slot('outbox_bridge')", &[])
        .await?;

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
