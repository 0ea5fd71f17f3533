//! kill -9 of capture in the middle of a load, then a restart: every outbox row reaches
//! Kinesis (duplicates allowed, none lost).

use std::collections::HashSet;
use std::time::Duration;

use harness::metrics::scrape;
use harness::stack::{outbox_id, Stack};
use harness::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbox_row_arrives_after_capture_is_killed_mid_run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let args = ["--batch-linger-ms", "5", "--metrics-listen", listen.as_str()];
    let mut capture = stack.spawn_capture(&args).await?;
    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "100",
            "--orders",
            "6000",
            "--concurrency",
            "4",
            // ~10 s of writes: both kills land while the load still writes, on a loaded
            // machine too.
            "--rate",
            "600",
            "--progress",
            "never",
        ],
    )?;

    for round in 0..2 {
        // Kill once this process has published some records: batches are then in flight
        // and acknowledged alike, and the load is still writing.
        wait::until("records to flow", Duration::from_secs(60), || async {
            capture.ensure_running()?;
            load.ensure_running()?;
            let published = scrape(port, "bridge_kinesis_records_published_total")
                .await
                .unwrap_or(0.0);
            Ok((published >= 300.0).then_some(()))
        })
        .await?;
        capture.kill9().await?;
        println!("round {round}: killed capture mid-load");
        capture = stack.spawn_capture(&args).await?;
    }

    assert_eq!(
        load.wait(Duration::from_secs(180)).await?,
        Some(0),
        "{}",
        load.output()
    );
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(120))
        .await?;
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
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
