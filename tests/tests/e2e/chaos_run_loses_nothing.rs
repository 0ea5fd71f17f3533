//! The short chaos run CI does: the whole pipeline (capture, relay, shipping) under every fault
//! kind once — kills, Postgres restarts, a terminated walsender, AWS outage, latency, 5xx,
//! throttling, partial batch failures, cancelled transactions, a brownout of each AWS service
//! longer than the shipping queue's redrive budget, silent partitions towards Postgres and AWS,
//! payloads beyond f64, events no stage can store, a primary failover to a physical standby, a
//! reshard of the stream (merge or split), a full load killed midway, capture killed during an
//! outbox resync, a SIGTERM while the synchronous standby is down —
//! at seeded moments, then nothing lost at any
//! stage, no healthy event dead-lettered, every unstorable event parked, every aggregate in
//! commit order in Kinesis, and the projection equal to the monolith (`chaos` checks and exits 1
//! otherwise; this reads its report too).

use harness::process;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_once_and_nothing_lost() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("chaos.json");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "--events", "300", "--faults", "28", "--seed", "7", "--out", &out_arg,
    ];
    let (code, stdout, stderr) = process::run("chaos", &args, &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert!(r["events_written"].as_u64().unwrap_or(0) >= 100, "{r}");
    for key in [
        "lost_before_kinesis",
        "lost_before_eventbridge",
        "projection_mismatches",
        "shipment_mismatches",
        "healthy_dead_lettered",
        "aggregates_out_of_order_in_kinesis",
    ] {
        assert_eq!(r[key], 0, "{key}: {r}");
    }
    assert_eq!(r["unstorable_events"], 2, "{r}");
    assert_eq!(r["unstorable_parked"], 2, "{r}");
    let kinds = r["faults"].as_object().map_or(0, |f| f.len());
    assert_eq!(kinds, 28, "every fault kind injected: {r}");
    assert!(stdout.contains("| lost before kinesis | 0 |"), "{stdout}");
    Ok(())
}
