//! A primary failover on PostgreSQL 15: a physical standby (`pg_basebackup -R`), capture on a
//! multi-host URL, a writer running; the primary dies (`-m immediate`), the standby is promoted
//! and the writer carries on there. The promoted server has no logical slot, so capture resyncs
//! from its outbox. Afterwards every outbox row of the new primary is in Kinesis. With
//! `--synchronous-standby` no record in Kinesis is absent from the new primary (no phantom);
//! without it phantoms are possible, and are counted. The synchronous rule names both servers
//! of the pair (`FIRST 1 (primary, standby1)`, each server's `cluster_name`): after the
//! failover capture waits — and says for whom — until the old primary's place is taken by a
//! standby of that name, and goes on unattended, without a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::metrics::scrape;
use harness::postgres::{StopMode, SUPERUSER_PASSWORD};
use harness::stack::{outbox_id, Stack};
use harness::wait;

/// What one failover run measured.
struct Figures {
    rows: usize,
    phantoms: usize,
    republished: f64,
    duplicates: usize,
    streaming_again: Duration,
}

/// Inserts an outbox row every few ms into whichever host is the writable primary, until told to
/// stop; counts the rows it saw committed.
fn spawn_writer(
    url: String,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut n = 0_u64;
        while !stop.load(Ordering::Relaxed) {
            if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
                client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        Some(c)
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
            }
            let Some(c) = &client else { continue };
            let inserted = c
                .execute(
                    "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                     VALUES (gen_random_uuid(), 'Order', $1, 'OrderPlaced', '{}', 1)",
                    &[&format!("o{}", n % 7)],
                )
                .await;
            match inserted {
                Ok(_) => {
                    n += 1;
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => client = None,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Waits until every outbox row of `primary` is in the stream; returns the ids and the records.
async fn all_rows_in_kinesis(
    stack: &Stack,
    primary: &tokio_postgres::Client,
    capture: &harness::process::Proc,
) -> anyhow::Result<(HashSet<String>, Vec<harness::kinesis::StreamRecord>)> {
    let ids: HashSet<String> = primary
        .query("SELECT id::text FROM outbox", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let records = wait::until(
        "every row of the new primary in kinesis",
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
    Ok((ids, records))
}

/// How the standby that takes over is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Asynchronous streaming, nothing else: the promoted server has no slot (a resync).
    Asynchronous,
    /// Capture publishes only what the other server of the pair flushed
    /// (`--synchronous-standby 'FIRST 1 (primary, standby1)'`).
    SynchronousStandby,
    /// 17+: the standby keeps a copy of capture's failover slot, and the primary sends capture
    /// only what the standby received (`synchronized_standby_slots`): no resync at all.
    FailoverSlot,
}

async fn failover(kept: Kept) -> anyhow::Result<Figures> {
    let synchronous = kept == Kept::SynchronousStandby;
    let stack = Stack::start().await?;
    if synchronous {
        // Each server goes by its cluster_name, as a cluster manager names them (the harness
        // names a standby after itself).
        let primary = stack.pg.client().await?;
        primary
            .batch_execute("ALTER SYSTEM SET cluster_name = 'primary'")
            .await?;
        drop(primary);
        stack.pg.restart(StopMode::Fast)?;
    }
    let standby = if kept == Kept::FailoverSlot {
        let standby = stack.pg.start_standby_syncing_slots("standby1").await?;
        let primary = stack.pg.client().await?;
        primary
            .batch_execute("ALTER SYSTEM SET synchronized_standby_slots = 'standby1'")
            .await?;
        primary.batch_execute("SELECT pg_reload_conf()").await?;
        standby
    } else {
        stack.pg.start_standby("standby1").await?
    };
    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        stack.pg.port, standby.port
    );
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "capture",
        "--metrics-listen",
        &listen,
        "--replication-timeout-secs",
        "5",
    ];
    if synchronous {
        args.extend(["--synchronous-standby", "FIRST 1 (primary, standby1)"]);
    }
    let env = stack.env_with(&[("DATABASE_URL", &url)]);
    let mut capture = harness::process::Proc::spawn("bridge", &args, &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;

    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writer = spawn_writer(url.clone(), stop.clone(), written.clone());
    wait::until("rows before the failover", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        Ok((written.load(Ordering::Relaxed) >= 300).then_some(()))
    })
    .await?;
    if kept == Kept::FailoverSlot {
        // The standby holds a synchronized copy of the slot, caught up with some of the load.
        let copy = standby.client().await?;
        wait::until(
            "the slot synchronized to the standby",
            Duration::from_secs(90),
            || async {
                capture.ensure_running()?;
                let row = copy
                    .query_opt(
                        "SELECT confirmed_flush_lsn > '0/0' FROM pg_replication_slots \
                     WHERE slot_name = 'outbox_bridge' AND synced AND NOT temporary",
                        &[],
                    )
                    .await?;
                Ok(row
                    .filter(|r| r.get::<_, Option<bool>>(0) == Some(true))
                    .map(|_| ()))
            },
        )
        .await?;
    }

    // The primary dies mid-write; the standby takes over.
    stack.pg.stop(StopMode::Immediate)?;
    standby.promote().await?;
    let promoted = Instant::now();
    let new_primary = standby.client().await?;
    // On the promoted server (`standby1`, left out of the rule) capture waits for `primary`,
    // and says so, until the old primary's place is taken by a standby of that name (as
    // Patroni rebuilds it); then it goes on by itself.
    let _new_standby = if synchronous {
        let held = harness::metrics::wait_health(
            port,
            503,
            "publishing held: waiting for standby `primary`",
            Duration::from_secs(90),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
        assert!(held.contains("`standby1` left out"), "{held}");
        let status_env = stack.env_with(&[("DATABASE_URL", &url)]);
        let (code, out, err) = harness::process::run(
            "bridge",
            &["status", "--synchronous-standby", "FIRST 1 (primary, standby1)"],
            &status_env,
        )
        .await?;
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(
            out.contains("synchronous standby FIRST 1 (primary, standby1) on standby1: publishing HELD")
                && out.contains("attention: capture's publishing is held: waiting for standby `primary`"),
            "{out}{err}"
        );
        Some(standby.start_standby("primary").await?)
    } else {
        None
    };
    wait::until(
        "capture to stream from the new primary",
        Duration::from_secs(90),
        || async {
            capture.ensure_running()?;
            let row = new_primary
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'outbox_bridge' AND active",
                    &[],
                )
                .await?;
            Ok(row.map(|_| ()))
        },
    )
    .await?;
    let streaming_again = promoted.elapsed();
    let after = written.load(Ordering::Relaxed);
    wait::until("rows after the failover", Duration::from_secs(60), || async {
        Ok((written.load(Ordering::Relaxed) >= after + 300).then_some(()))
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;

    // Every row of the new primary reaches Kinesis.
    let (ids, records) = all_rows_in_kinesis(&stack, &new_primary, &capture).await?;
    if synchronous {
        // The standby is back: nothing held any more.
        let ready = harness::metrics::wait_health(port, 200, "ok", Duration::from_secs(30)).await;
        ready.map_err(|e| anyhow::anyhow!("{e}\n{}", capture.output()))?;
    }
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    let phantoms = seen.iter().filter(|id| !ids.contains(**id)).count();
    let figures = Figures {
        rows: ids.len(),
        phantoms,
        republished: scrape(port, "bridge_slot_resync_rows_total").await?,
        duplicates: records.iter().filter_map(outbox_id).count() - seen.len(),
        streaming_again,
    };
    let resyncs = if kept == Kept::FailoverSlot { 0.0 } else { 1.0 };
    assert_eq!(scrape(port, "bridge_slot_resyncs_total").await?, resyncs);
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    println!(
        "failover ({}): {} rows on the new primary, all in kinesis; capture streaming again {:.1} s after \
         promotion; {} rows re-published, {} duplicates, {} phantoms",
        match kept {
            Kept::SynchronousStandby => "--synchronous-standby",
            Kept::Asynchronous => "asynchronous",
            Kept::FailoverSlot => "failover slot",
        },
        figures.rows,
        figures.streaming_again.as_secs_f64(),
        figures.republished,
        figures.duplicates,
        figures.phantoms
    );
    Ok(figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_synchronous_standby_nothing_is_lost_and_nothing_is_a_phantom() -> anyhow::Result<()> {
    let figures = failover(Kept::SynchronousStandby).await?;
    assert_eq!(
        figures.phantoms, 0,
        "an event the failover took back was published"
    );
    assert!(figures.rows >= 600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_one_nothing_is_lost_and_phantoms_are_counted() -> anyhow::Result<()> {
    let figures = failover(Kept::Asynchronous).await?;
    assert!(figures.rows >= 600);
    Ok(())
}

/// 17+: capture's slot is a failover slot (`--failover-slot auto`), the standby keeps a copy
/// and the primary names it in `synchronized_standby_slots`: the promoted standby streams on
/// from the copy — no resync, nothing lost, no phantom. Before 17 `auto` makes an ordinary
/// slot, and `bridge status` says so (the resync path above is what those majors keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_failover_slot_the_promoted_standby_streams_on_without_a_resync() -> anyhow::Result<()> {
    let major = {
        let stack = Stack::start().await?;
        let major = stack.pg.major().await?;
        if major < 17 {
            let status = stack
                .run_ok("bridge", &["status"])
                .await
                .unwrap_or_else(|e| e.to_string());
            assert!(status.contains("failover slot no"), "{status}");
            let (code, _, err) =
                harness::process::run("bridge", &["capture", "--failover-slot", "on"], &stack.env()).await?;
            assert_eq!(code, Some(1), "{err}");
            assert!(err.contains("PostgreSQL 17"), "{err}");
            println!("PostgreSQL {major}: no failover slots; `auto` made an ordinary one");
            return Ok(());
        }
        major
    };
    let figures = failover(Kept::FailoverSlot).await?;
    assert_eq!(
        figures.phantoms, 0,
        "an event the failover took back was published"
    );
    assert_eq!(
        figures.republished, 0.0,
        "nothing re-published: the slot was there"
    );
    assert!(figures.rows >= 600);
    println!("PostgreSQL {major}: the promoted standby's synchronized slot carried capture on");
    Ok(())
}

/// SIGTERM while the named synchronous standby is down and a row waits for it: `bridge
/// capture` and `bridge run` each stop within their shutdown timeout (the held batch is
/// replayed next time), instead of spinning at 100 % CPU forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_the_synchronous_standby_is_down_ends_in_time() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let standby = stack.pg.start_standby("standby1").await?;
    let pg = stack.pg.client().await?;
    for (n, command) in ["capture", "run"].into_iter().enumerate() {
        let args = [
            command,
            "--synchronous-standby",
            "standby1",
            "--shutdown-timeout-secs",
            "3",
        ];
        let mut process = stack.spawn("bridge", &args)?;
        stack.wait_slot_active("outbox_bridge", &process).await?;
        if n == 0 {
            standby.stop(StopMode::Fast)?;
        }
        let id = format!("00000000-0000-4000-8000-0000000000c{n}");
        stack
            .insert_outbox(&id, ("Order", "held"), "OrderPlaced", "{}")
            .await?;
        // The walsender has handed the row to capture, whose batch now waits for the standby.
        let written: String = pg
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        wait::until("the row sent to capture", Duration::from_secs(30), || async {
            process.ensure_running()?;
            let sent = pg
                .query_opt(
                    "SELECT sent_lsn >= $1::text::pg_lsn FROM pg_stat_replication \
                     WHERE application_name = 'outbox-bridge'",
                    &[&written],
                )
                .await?
                .and_then(|r| r.get::<_, Option<bool>>(0));
            Ok((sent == Some(true)).then_some(()))
        })
        .await?;
        let asked = Instant::now();
        let code = process.terminate(Duration::from_secs(30)).await?;
        assert_eq!(code, Some(0), "bridge {command}:\n{}", process.output());
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "bridge {command} took {:?} to stop",
            asked.elapsed()
        );
        let records = stack.records().await?;
        assert!(
            !records.iter().any(|r| outbox_id(r) == Some(id.as_str())),
            "published before the standby had it"
        );
    }
    Ok(())
}

/// 17+: the promoted server already holds capture's slot (a synchronized copy), but it is an
/// asynchronous standby that had received less WAL than capture acknowledged on the old
/// primary (no `synchronized_standby_slots`; its WAL receiver cut meanwhile). The new timeline
/// forks below what capture acknowledged, and its own commits land at those positions: capture
/// must stream from the new server's slot, not from its old acknowledgement, or it skips them.
/// What the old timeline delivered past the fork is counted (possible phantoms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_server_behind_what_capture_acknowledged_loses_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let major = stack.pg.major().await?;
    if major < 17 {
        // Before 17 no promoted server holds the slot, so the resync path covers this case
        // (`without_one_nothing_is_lost_and_phantoms_are_counted`).
        println!("PostgreSQL {major}: no synchronized slots; the resync covers a failover");
        return Ok(());
    }
    let link = harness::proxy::Proxy::start(&format!("127.0.0.1:{}", stack.pg.port)).await?;
    let link_port: u16 = link.endpoint.rsplit(':').next().unwrap_or_default().parse()?;
    let standby = stack
        .pg
        .start_standby_syncing_slots_via("standby1", link_port)
        .await?;
    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        stack.pg.port, standby.port
    );
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = stack.env_with(&[("DATABASE_URL", &url)]);
    let args = [
        "capture",
        "--metrics-listen",
        &listen,
        "--replication-timeout-secs",
        "5",
    ];
    let capture = harness::process::Proc::spawn("bridge", &args, &env)?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let primary = stack.pg.client().await?;
    let insert = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                  SELECT gen_random_uuid(), 'Order', 'o-' || i, 'OrderPlaced', '{}', 1 FROM generate_series(1, $1::int) i";
    primary.execute(insert, &[&20i32]).await?;
    stack.wait_drained("outbox_bridge", &capture).await?;
    let copy = standby.client().await?;
    wait::until(
        "the slot synchronized to the standby",
        Duration::from_secs(90),
        || async {
            let row = copy
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'outbox_bridge' AND synced \
                 AND confirmed_flush_lsn > '0/0'",
                    &[],
                )
                .await?;
            Ok(row.map(|_| ()))
        },
    )
    .await?;

    // The standby stops receiving; capture goes on acknowledging on the old timeline.
    link.set_up(false);
    primary.execute(insert, &[&200i32]).await?;
    stack.wait_drained("outbox_bridge", &capture).await?;
    stack.pg.stop(StopMode::Immediate)?;
    standby.promote().await?;
    // The new timeline's own commits, one row each, at the positions the old one had used.
    for _ in 0..400 {
        copy.execute(insert, &[&1i32]).await?;
    }
    let (ids, records) = all_rows_in_kinesis(&stack, &copy, &capture).await?;
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    let phantoms = seen.iter().filter(|id| !ids.contains(**id)).count();
    assert_eq!(phantoms, 200, "the rows only the old timeline had");
    assert!(scrape(port, "bridge_slot_timeline_phantom_wal_bytes_total").await? > 0.0);
    assert_eq!(scrape(port, "bridge_slot_resyncs_total").await?, 0.0);
    Ok(())
}
