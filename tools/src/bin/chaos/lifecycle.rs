//! The fault kinds that reach the one-off paths: a full load killed midway, capture killed in
//! the middle of an outbox resync, and a SIGTERM while the synchronous standby capture waits
//! for is down. Each checks its own promise on the spot; the run's final checks cover the rest
//! (nothing lost, nothing healthy parked).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use harness::postgres::{drop_slot, SlotReader, StopMode};
use harness::process::Proc;
use harness::stack::{outbox_id, Stack};

use crate::fault::Paths;
use crate::pipeline::{Database, Pipeline, STANDBY};

/// The full load's own slot, publication and stream: its `load` records stay out of the
/// pipeline's stream, so they can be counted against the outbox.
const FULL_LOAD: [&str; 6] = [
    "--slot",
    "chaos_full_load",
    "--publication",
    "chaos_full_load",
    "--stream",
    "chaos-full-load",
];

/// `bridge setup --full-load` killed moments after it started; capture must refuse its slot
/// (naming the unfinished load), and the load run again must put every outbox row in the stream.
pub(crate) async fn full_load_killed(stack: &Stack, p: &Pipeline) -> anyhow::Result<()> {
    let mut args = vec!["setup", "--full-load", "--shards", "1"];
    args.extend(FULL_LOAD);
    let mut setup = Proc::spawn("bridge", &args, &p.env)?;
    // Killed once the load has begun (its tag says so, just before its slot exists), a moment in.
    harness::wait::until("the full load under way", Duration::from_secs(60), || async {
        setup.ensure_running()?;
        let tag = full_load_tag(stack).await.unwrap_or_default();
        Ok(tag.contains("state=running").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    setup.kill9().await?;
    if setup.output().contains("full load:") {
        // It finished within the moment: nothing was cut short this time.
        eprintln!("chaos: the full load finished before the kill");
    } else {
        let mut capture_args = vec!["capture", "--metrics-listen", "127.0.0.1:0"];
        capture_args.extend(FULL_LOAD);
        let mut refused = Proc::spawn("bridge", &capture_args, &p.env)?;
        let code = refused.wait(Duration::from_secs(60)).await?;
        anyhow::ensure!(
            code == Some(1) && refused.output().contains("did not finish"),
            "capture did not refuse the slot of a full load cut short ({code:?}):\n{}",
            refused.output()
        );
        // Every row there now is in the new load's snapshot.
        let before: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
        let (code, out, err) = harness::process::run("bridge", &args, &p.env).await?;
        anyhow::ensure!(code == Some(0), "the full load run again failed:\n{out}\n{err}");
        let records = harness::kinesis::read_all(&stack.kinesis, "chaos-full-load").await?;
        let loaded: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
        let missing = before.iter().filter(|id| !loaded.contains(id.as_str())).count();
        anyhow::ensure!(missing == 0, "{missing} outbox rows missing from the full load");
    }
    // The load's slot is not streamed from here: it must not hold WAL for the rest of the run.
    drop_slot(&stack.pg.client().await?, "chaos_full_load", SlotReader::Stopped).await
}

/// The full load's tag on its stream (`state=running …` while it has not finished).
async fn full_load_tag(stack: &Stack) -> anyhow::Result<String> {
    let tags = stack
        .kinesis
        .list_tags_for_stream()
        .stream_name("chaos-full-load")
        .send()
        .await?;
    Ok(tags
        .tags()
        .iter()
        .find(|t| t.key() == "outbox-bridge.full-load.chaos_full_load")
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_owned())
}

/// The slot taken away under capture (its walsender terminated first), a slow Kinesis so the
/// outbox resync takes a while, and capture killed once the resync is under way: the next
/// capture resumes it.
pub(crate) async fn restart_during_resync(
    stack: &Stack,
    p: &mut Pipeline,
    paths: &Paths<'_>,
) -> anyhow::Result<()> {
    let plan = &paths.faults.plan;
    set_put_records_delay(plan, Some(300));
    let dropped = drop_slot(&stack.pg.client().await?, "outbox_bridge", SlotReader::Terminate).await;
    let under_way = p
        .capture
        .wait_output(
            "the outbox resync under way",
            &["re-publishing the outbox rows that may have been missed"],
            Duration::from_secs(60),
        )
        .await;
    let killed = p.capture.kill9().await;
    set_put_records_delay(plan, None);
    p.capture = Pipeline::spawn_capture(&p.capture_env)?;
    dropped?;
    under_way?;
    killed
}

fn set_put_records_delay(plan: &harness::faults::FaultPlan, ms: Option<u64>) {
    if let Ok(mut delay) = plan.delay_holding.lock() {
        *delay = ms.map(|ms| ("Kinesis_20131202.PutRecords".to_owned(), "Records".to_owned(), ms));
    }
}

/// Capture waiting for the synchronous standby, the standby stopped while rows keep coming,
/// then SIGTERM: capture must stop within its shutdown timeout (the held rows are replayed by
/// the next one). The standby and the pipeline's own capture come back after.
pub(crate) async fn sigterm_standby_down(
    stack: &Stack,
    p: &mut Pipeline,
    db: &Database,
) -> anyhow::Result<()> {
    let Some(standby) = db.standby.as_ref() else {
        anyhow::bail!("no standby to stop");
    };
    p.capture.terminate(Duration::from_secs(60)).await?;
    let mut waiting = Proc::spawn(
        "bridge",
        &[
            "capture",
            "--metrics-listen",
            "127.0.0.1:0",
            "--replication-timeout-secs",
            "5",
            "--synchronous-standby",
            STANDBY,
            "--shutdown-timeout-secs",
            "3",
        ],
        &p.capture_env,
    )?;
    let result = async {
        stack.wait_slot_active("outbox_bridge", &waiting).await?;
        standby.stop(StopMode::Fast)?;
        // The load goes on: rows reach capture and wait for the standby.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = Instant::now();
        let code = waiting.terminate(Duration::from_secs(60)).await?;
        anyhow::ensure!(
            code == Some(0) && asked.elapsed() < Duration::from_secs(20),
            "capture behind a down standby took {:?} to stop ({code:?}):\n{}",
            asked.elapsed(),
            waiting.output()
        );
        Ok(())
    }
    .await;
    standby.start_again()?;
    p.capture = Pipeline::spawn_capture(&p.capture_env)?;
    result
}
