//! One transaction of 1,000,000 outbox rows goes through capture whole: every row reaches the
//! Kinesis endpoint and the slot confirms the transaction's end, and the backlog written after
//! it drains as well. It runs through `bench memory` (capture into its local PutRecords
//! endpoint, so the test measures capture, not the emulator); the peak RSS it prints is the
//! benchmark's figure — here only delivery is asserted.

use harness::process;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_is_delivered_whole_and_the_slot_moves_past_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("memory.json");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "memory",
        "--rows",
        "1000000",
        "--backlog-rows",
        "2000",
        "--payload-bytes",
        "100",
        "--out",
        &out_arg,
    ];
    let (code, stdout, stderr) = process::run("bench", &args, &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let verified = |r: &Value| r["verified"].as_str().unwrap_or("").to_owned();
    assert_eq!(rows[0]["complete"], true, "{}", rows[0]);
    assert_eq!(rows[0]["events"], 1_000_000, "{}", rows[0]);
    assert!(
        verified(&rows[0]).contains("endpoint received 1000000 records"),
        "{}",
        rows[0]
    );
    assert_eq!(rows[1]["complete"], true, "{}", rows[1]);
    assert!(
        verified(&rows[1]).contains("endpoint received 2000 records"),
        "{}",
        rows[1]
    );
    Ok(())
}
