//! `bridge backfill`: a table re-sent as DMS `load` records while capture streams its changes
//! and a writer keeps updating it. Read in stream order, each row's last record is its current
//! state (no stale load record after a newer change); capture killed mid-backfill resumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::process::Proc;
use harness::stack::Stack;
use harness::wait;

const CUSTOMERS: i64 = 2000;

/// Capture on its own slot, with customers' changes streamed too: the backfill has something
/// to race against.
const CAPTURE: [&str; 6] = [
    "--slot",
    "bf",
    "--publication",
    "bf",
    "--tables",
    "public.outbox,public.customers",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_ends_in_its_current_state_and_a_killed_capture_resumes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(&format!(
        "INSERT INTO customers (id, name, credit_limit, version) \
         SELECT gen_random_uuid(), 'c' || i, i, 1 FROM generate_series(1, {CUSTOMERS}) AS i"
    ))
    .await?;
    let args = CAPTURE;
    let mut capture = stack.spawn_capture(&args).await?;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let writing = writing.clone();
        let client = stack.pg.client().await?;
        async move {
            let mut round = 0_i64;
            while writing.load(Ordering::Relaxed) {
                round += 1;
                // A handful of rows at a time, all over the key space.
                client
                    .execute(
                        "UPDATE customers SET credit_limit = credit_limit + 1, version = version + 1 \
                         WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT 5)",
                        &[],
                    )
                    .await?;
                if round % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            anyhow::Ok(round)
        }
    });

    let env = stack.env_with(&[("BRIDGE_SLOT", "bf")]);
    let mut backfill = Proc::spawn(
        "bridge",
        &[
            "backfill",
            "--table",
            "public.customers",
            "--chunk-rows",
            "100",
            // ~10 s for the 2,000 rows: capture is killed well inside them.
            "--rows-per-second",
            "200",
        ],
        &env,
    )?;
    // Kill capture once the backfill is under way; the new one resumes it.
    wait::until(
        "the backfill to be under way",
        Duration::from_secs(60),
        || async {
            backfill.ensure_running()?;
            let tag = tag_value(&stack, "outbox-bridge.backfill.bf").await?;
            let rows: u64 = tag
                .as_deref()
                .and_then(|t| t.split_whitespace().find_map(|kv| kv.strip_prefix("rows=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Ok((rows >= 300).then_some(()))
        },
    )
    .await?;
    capture.kill9().await?;
    capture = stack.spawn_capture(&args).await?;
    assert_eq!(
        backfill.wait(Duration::from_secs(120)).await?,
        Some(0),
        "{}",
        backfill.output()
    );
    assert!(backfill.output().contains("done"), "{}", backfill.output());
    writing.store(false, Ordering::Relaxed);
    let updates = writer.await??;
    stack
        .wait_drained_within("bf", &capture, Duration::from_secs(60))
        .await?;

    // The stream, in order per key (one key, one shard): the last record of each customer.
    let mut last: HashMap<String, serde_json::Value> = HashMap::new();
    let mut loads = 0;
    for r in stack.records().await? {
        let m = &r.json["metadata"];
        if m["table-name"] != "customers" {
            continue;
        }
        if m["operation"] == "load" {
            loads += 1;
        }
        if let Some(id) = r.json["data"]["id"].as_str() {
            last.insert(id.to_owned(), r.json["data"].clone());
        }
    }
    let rows = pg
        .query("SELECT id::text, credit_limit::text, version FROM customers", &[])
        .await?;
    assert_eq!(rows.len() as i64, CUSTOMERS);
    let mut stale = Vec::new();
    for row in &rows {
        let id: String = row.get(0);
        let version: i64 = row.get(2);
        match last.get(&id) {
            None => stale.push(format!("{id}: no record at all")),
            Some(data) if data["version"].as_i64() != Some(version) => stale.push(format!(
                "{id}: last record has version {} , the row {version}",
                data["version"]
            )),
            Some(_) => {}
        }
    }
    println!(
        "{updates} update rounds, {loads} load records, {} customers",
        rows.len()
    );
    assert!(
        stale.is_empty(),
        "{} stale rows, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    assert!(loads > 0, "the backfill sent rows");
    let status = stack
        .run_ok("bridge", &["status", "--slot", "bf"])
        .await
        .unwrap_or_else(|e| e.to_string());
    assert!(status.contains("backfill"), "{status}");
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    Ok(())
}

async fn tag_value(stack: &Stack, key: &str) -> anyhow::Result<Option<String>> {
    let tags = stack
        .kinesis
        .list_tags_for_stream()
        .stream_name(&stack.stream)
        .send()
        .await?;
    Ok(tags
        .tags()
        .iter()
        .find(|t| t.key() == key)
        .and_then(|t| t.value().map(str::to_owned)))
}

/// A transaction whose commit record is in the WAL, so it streams before a chunk's low
/// watermark, while queries cannot see it yet: it waits for a synchronous standby that never
/// answers. A chunk read meanwhile holds the row's older state; sent at its high watermark, it
/// would land after the newer change. Two such rows: one whose update streamed before the
/// backfill began (its chunk is read again once the update is visible), one whose update
/// streamed while it ran (its chunk copy is left out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_streamed_before_it_is_visible_is_not_overtaken_by_a_stale_chunk() -> anyhow::Result<()> {
    let rig = Held::start().await?;
    let capture = rig.capture().await?;
    let ids = rig.customers(20).await?;
    // The first row's chunk is read first, the last row's last.
    let (first, last) = (ids[0].clone(), ids[ids.len() - 1].clone());
    wait_for_version(&rig.stack, &last, 1).await?;

    rig.hold_commits(true).await?;
    let first_update = HungUpdate::start(&rig.stack, &first).await?;
    wait_for_version(&rig.stack, &first, 2).await?;
    let mut backfill = rig.backfill(&["--chunk-rows", "1", "--rows-per-second", "2"])?;
    wait::until("the backfill to run", Duration::from_secs(60), || async {
        backfill.ensure_running()?;
        let tag = tag_value(&rig.stack, "outbox-bridge.backfill.bf").await?;
        Ok(tag.is_some_and(|t| t.contains("state=running")).then_some(()))
    })
    .await?;
    let last_update = HungUpdate::start(&rig.stack, &last).await?;
    wait_for_version(&rig.stack, &last, 2).await?;
    // The first chunk cannot go out while the first row's update is invisible (on the code
    // before the fix it went out, and the backfill ran on).
    rig.until_reread(&backfill).await?;
    first_update.release(&rig.pg).await?;
    // The last row's chunk is read while its update is still invisible.
    rig.finish(&mut backfill).await?;
    last_update.release(&rig.pg).await?;
    rig.hold_commits(false).await?;
    rig.stack
        .wait_drained_within("bf", &capture, Duration::from_secs(60))
        .await?;

    let records = customer_records(&rig.stack).await?;
    let mut stale = Vec::new();
    for id in &ids {
        let (expected, which) = match id {
            id if *id == first => (2, " (updated before the backfill)"),
            id if *id == last => (2, " (updated during it)"),
            _ => (1, ""),
        };
        let versions = versions_of(&records, id);
        if !versions
            .last()
            .is_some_and(|l| l.ends_with(&format!(" {expected}")))
        {
            stale.push(format!(
                "customer {id}{which}: its records in stream order are {versions:?}, the row has version {expected}"
            ));
        }
    }
    assert!(stale.is_empty(), "{stale:#?}");
    assert!(
        records.iter().any(|(_, op, _)| op == "load"),
        "the backfill sent rows"
    );
    Ok(())
}

/// The same wait in its commit, but the capture that streamed the update stopped (and had the
/// slot acknowledge it) before the backfill: the capture that runs the backfill never decodes
/// that update, and must still not send the row's older copy after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_an_earlier_capture_streamed_before_it_was_visible_is_not_overtaken() -> anyhow::Result<()> {
    let rig = Held::start().await?;
    let mut capture = rig.capture().await?;
    let ids = rig.customers(5).await?;
    let row = ids[2].clone();
    wait_for_version(&rig.stack, &ids[4], 1).await?;
    rig.hold_commits(true).await?;
    let update = HungUpdate::start(&rig.stack, &row).await?;
    wait_for_version(&rig.stack, &row, 2).await?;
    // Stopped cleanly: everything Kinesis holds is acknowledged to the slot.
    assert_eq!(capture.terminate(Duration::from_secs(30)).await?, Some(0));
    let capture = rig.capture().await?;

    let mut backfill = rig.backfill(&["--chunk-rows", "10"])?;
    rig.until_reread(&backfill).await?;
    update.release(&rig.pg).await?;
    rig.finish(&mut backfill).await?;
    rig.hold_commits(false).await?;
    rig.stack
        .wait_drained_within("bf", &capture, Duration::from_secs(60))
        .await?;
    let versions = versions_of(&customer_records(&rig.stack).await?, &row);
    // Streamed once, by the first capture: the second never decoded it.
    assert_eq!(
        versions.iter().filter(|v| *v == "update 2").count(),
        1,
        "{versions:?}"
    );
    assert!(
        versions.last().is_some_and(|v| v.ends_with(" 2")),
        "its records in stream order: {versions:?}, the row has version 2"
    );
    Ok(())
}

/// What the synchronous-standby tests share: customers streamed by a capture whose metrics
/// they read, commits held at will, a backfill of the customers.
struct Held {
    stack: Stack,
    pg: tokio_postgres::Client,
    port: u16,
    listen: String,
}

impl Held {
    async fn start() -> anyhow::Result<Self> {
        let stack = Stack::start().await?;
        let pg = stack.pg.client().await?;
        let port = harness::free_port()?;
        Ok(Self {
            listen: format!("127.0.0.1:{port}"),
            stack,
            pg,
            port,
        })
    }

    async fn capture(&self) -> anyhow::Result<Proc> {
        let mut args = CAPTURE.to_vec();
        args.extend(["--metrics-listen", &self.listen]);
        self.stack.spawn_capture(&args).await
    }

    /// Writes `n` customers at version 1; all their ids in primary-key order (the order
    /// chunks read them in).
    async fn customers(&self, n: i64) -> anyhow::Result<Vec<String>> {
        self.pg
            .batch_execute(&format!(
                "INSERT INTO customers (id, name, credit_limit, version) \
                 SELECT gen_random_uuid(), 'c' || i, i, 1 FROM generate_series(1, {n}) AS i"
            ))
            .await?;
        Ok(self
            .pg
            .query("SELECT id::text FROM customers ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// On: every commit waits for a standby that does not exist.
    async fn hold_commits(&self, on: bool) -> anyhow::Result<()> {
        let sql = if on {
            "ALTER SYSTEM SET synchronous_standby_names = 'ghost'"
        } else {
            "ALTER SYSTEM RESET synchronous_standby_names"
        };
        self.pg.simple_query(sql).await?;
        self.pg.simple_query("SELECT pg_reload_conf()").await?;
        Ok(())
    }

    fn backfill(&self, args: &[&str]) -> anyhow::Result<Proc> {
        let mut all = vec!["backfill", "--table", "public.customers"];
        all.extend_from_slice(args);
        Proc::spawn("bridge", &all, &self.stack.env_with(&[("BRIDGE_SLOT", "bf")]))
    }

    /// Until capture reads a chunk again, or the backfill ends (as it did before the fix).
    async fn until_reread(&self, backfill: &Proc) -> anyhow::Result<()> {
        wait::until("a chunk to be read again", Duration::from_secs(60), || async {
            if backfill.ensure_running().is_err() {
                return Ok(Some(()));
            }
            let rereads = harness::metrics::scrape(self.port, "bridge_backfill_chunks_reread_total").await?;
            Ok((rereads >= 1.0).then_some(()))
        })
        .await
    }

    async fn finish(&self, backfill: &mut Proc) -> anyhow::Result<()> {
        let code = backfill.wait(Duration::from_secs(60)).await?;
        anyhow::ensure!(code == Some(0), "{code:?}: {}", backfill.output());
        Ok(())
    }
}

/// An UPDATE to version 2 from its own connection, stuck in its commit (synchronous replication).
struct HungUpdate {
    pid: i32,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl HungUpdate {
    async fn start(stack: &Stack, id: &str) -> anyhow::Result<Self> {
        let client = stack.pg.client().await?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        let sql = format!("UPDATE customers SET version = 2 WHERE id = '{id}'");
        let task = tokio::spawn(async move {
            // Cancelled while it waits for the standby: committed locally, with a warning.
            client.simple_query(&sql).await?;
            Ok(())
        });
        Ok(Self { pid, task })
    }

    /// Stops the wait: the update becomes visible.
    async fn release(self, pg: &tokio_postgres::Client) -> anyhow::Result<()> {
        pg.execute("SELECT pg_cancel_backend($1)", &[&self.pid]).await?;
        tokio::time::timeout(Duration::from_secs(30), self.task).await???;
        Ok(())
    }
}

/// Customers' records in stream order: id, operation, version.
async fn customer_records(stack: &Stack) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(stack
        .records()
        .await?
        .iter()
        .filter(|r| r.json["metadata"]["table-name"] == "customers")
        .filter_map(|r| {
            Some((
                r.json["data"]["id"].as_str()?.to_owned(),
                r.json["metadata"]["operation"].as_str()?.to_owned(),
                r.json["data"]["version"].to_string(),
            ))
        })
        .collect())
}

/// One customer's records, as `operation version`.
fn versions_of(records: &[(String, String, String)], id: &str) -> Vec<String> {
    records
        .iter()
        .filter(|(rid, _, _)| rid == id)
        .map(|(_, op, v)| format!("{op} {v}"))
        .collect()
}

/// Waits until a record of this customer at this version is in the stream.
async fn wait_for_version(stack: &Stack, id: &str, version: i64) -> anyhow::Result<()> {
    let want = version.to_string();
    wait::until(
        &format!("customer {id} at version {version} in the stream"),
        Duration::from_secs(60),
        || async {
            let records = customer_records(stack).await?;
            Ok(records
                .iter()
                .any(|(rid, _, v)| rid == id && *v == want)
                .then_some(()))
        },
    )
    .await
}

/// A database (and role) whose session defaults differ from every default that matters: a
/// backfill's load record of a row is byte for byte the insert record streaming made of it
/// (its query connection pins the same text settings as the replication connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_records_read_as_the_stream_wrote_them_whatever_the_database_settings() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(
        "ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
         ALTER DATABASE postgres SET TimeZone = 'America/New_York';
         ALTER DATABASE postgres SET IntervalStyle = 'postgres_verbose';
         ALTER DATABASE postgres SET extra_float_digits = 0;
         ALTER ROLE postgres SET TimeZone = 'Asia/Kolkata';",
    )
    .await?;
    let capture = stack.spawn_capture(&[]).await?;
    for i in 0..3 {
        stack
            .insert_outbox(
                &format!("00000000-0000-4000-8000-00000000000{i}"),
                ("Order", &format!("o-{i}")),
                "OrderPlaced",
                "{\"amount\": 1.25}",
            )
            .await?;
    }
    stack.wait_drained("outbox_bridge", &capture).await?;
    let out = stack
        .run_ok("bridge", &["backfill", "--table", "public.outbox"])
        .await?;
    assert!(out.contains("done"), "{out}");
    stack.wait_drained("outbox_bridge", &capture).await?;

    let mut inserted: HashMap<String, serde_json::Value> = HashMap::new();
    let mut loaded: HashMap<String, serde_json::Value> = HashMap::new();
    for r in stack.records().await? {
        let m = &r.json["metadata"];
        let Some(id) = r.json["data"]["id"].as_str() else {
            continue;
        };
        let into = match m["operation"].as_str() {
            Some("insert") => &mut inserted,
            Some("load") => &mut loaded,
            _ => continue,
        };
        into.insert(id.to_owned(), r.json["data"].clone());
    }
    assert_eq!(inserted.len(), 3, "{inserted:?}");
    for (id, data) in &inserted {
        assert_eq!(loaded.get(id), Some(data), "the load record of {id} differs");
    }
    Ok(())
}
