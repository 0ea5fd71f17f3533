//! 16+: capture reads from a hot standby, so a platform team that may not add load to the
//! primary still gets the stream. One multi-host URL names both servers with
//! `target_session_attrs=standby`: the slot and the walsender are on the standby, the heartbeat
//! is written on the primary (the same hosts, `primary`). kill -9 twice mid-load, and every
//! outbox row of the primary reaches Kinesis. Before 16 capture refuses a standby and says why.

use std::collections::HashSet;
use std::time::Duration;

use harness::metrics::scrape;
use harness::postgres::SUPERUSER_PASSWORD;
use harness::stack::{outbox_id, Stack};
use harness::wait;

const SLOT: &str = "outbox_standby";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_through_the_standby_after_kill_9() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let major = stack.pg.major().await?;
    let standby = stack.pg.start_standby_for_decoding("standby1").await?;
    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=standby",
        stack.pg.port, standby.port
    );
    let env = stack.env_with(&[("DATABASE_URL", &url), ("BRIDGE_SLOT", SLOT)]);
    if major < 16 {
        let (code, out, err) = harness::process::run("bridge", &["capture"], &env).await?;
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(err.contains("needs PostgreSQL 16 or later"), "{err}");
        println!("PostgreSQL {major}: capture refuses a standby and says why");
        return Ok(());
    }
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "capture",
        "--batch-linger-ms",
        "5",
        "--metrics-listen",
        &listen,
        "--heartbeat-interval",
        "1s",
    ];
    let on_standby = standby.client().await?;
    let slot_active = || async {
        let row = on_standby
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&SLOT],
            )
            .await?;
        Ok(row.map(|_| ()))
    };
    let mut capture = harness::process::Proc::spawn("bridge", &args, &env)?;
    wait::until(
        "capture streaming from the standby's slot",
        Duration::from_secs(90),
        || async {
            capture.ensure_running()?;
            slot_active().await
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    let primary = stack.pg.client().await?;
    let on_primary = primary
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await?;
    assert!(on_primary.is_none(), "the slot was created on the primary");

    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            "100",
            "--orders",
            "4000",
            "--concurrency",
            "4",
            "--rate",
            "500",
            "--progress",
            "never",
        ],
    )?;
    for round in 0..2 {
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
        capture = harness::process::Proc::spawn("bridge", &args, &env)?;
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
            let complete = ids.iter().all(|id| seen.contains(id.as_str()));
            drop(seen);
            Ok(complete.then_some(records))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    let unique: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    assert_eq!(unique.len(), ids.len(), "no record that is not an outbox row");
    // The heartbeat, written on the primary, came back through the standby's slot.
    wait::until(
        "a heartbeat through the standby",
        Duration::from_secs(30),
        || async {
            let received = scrape(port, "bridge_capture_heartbeats_received_total").await?;
            Ok((received >= 1.0).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    // The primary serves no walsender to capture.
    let walsenders = primary
        .query(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = 'outbox-bridge'",
            &[],
        )
        .await?;
    assert!(walsenders.is_empty(), "capture streams from the primary");
    println!(
        "PostgreSQL {major}: {} outbox rows through the standby, {} duplicates after two kill -9",
        ids.len(),
        records.len() - unique.len()
    );
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}
