//! kill -9 of capture in the middle of a load, then a restart: every outbox row reaches
//! Kinesis (duplicates allowed, none lost).

use std::collections::HashSet;
use std::time::Duration;

use tests::stack::{outbox_id, Stack};
use tests::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbox_row_arrives_after_capture_is_killed_mid_run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut capture = stack.spawn_capture(&["--batch-linger-ms", "5"]).await?;
    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "100",
            "--orders",
            "3000",
            "--concurrency",
            "4",
            "--rate",
            "1500",
            "--progress",
            "never",
        ],
    )?;

    for round in 0..2 {
        // Kill while records are flowing: some batches are in flight, some acknowledged.
        let before = stack.records().await?.len();
        wait::until("records to flow", Duration::from_secs(60), || async {
            capture.ensure_running()?;
            Ok((stack.records().await?.len() > before + 300).then_some(()))
        })
        .await?;
        capture.kill9().await?;
        println!(
            "round {round}: killed capture after {} records",
            stack.records().await?.len()
        );
        capture = stack.spawn_capture(&["--batch-linger-ms", "5"]).await?;
    }

    assert_eq!(
        load.wait(Duration::from_secs(180)).await?,
        Some(0),
        "{}",
        load.output()
    );
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    let records = wait::until(
        "every outbox row in kinesis",
        Duration::from_secs(120),
        || async {
            capture.ensure_running()?;
            let records = stack.records().await?;
            let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
            Ok(ids.iter().all(|id| seen.contains(id.as_str())).then_some(records))
        },
    )
    .await?;
    let unique: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    println!(
        "{} outbox rows, {} records, {} duplicates absorbed downstream",
        ids.len(),
        records.len(),
        records.len() - unique.len()
    );
    assert_eq!(unique.len(), ids.len(), "no record that is not an outbox row");
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}
