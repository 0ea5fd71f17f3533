//! `bridge setup --full-load` (DMS's full-load-and-cdc) on a database with rows, while a writer
//! inserts and updates: every row that existed at the snapshot arrives once as `load`, every
//! later row as `insert` (never both), and each row's last record is its current state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::process::Proc;
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_once_as_load_then_every_change() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(
        "INSERT INTO customers (id, name, credit_limit, version) \
         SELECT gen_random_uuid(), 'c' || i, i, 1 FROM generate_series(1, 3000) AS i",
    )
    .await?;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let writing = writing.clone();
        let client = stack.pg.client().await?;
        async move {
            while writing.load(Ordering::Relaxed) {
                client
                    .batch_execute(
                        "INSERT INTO customers (id, name, credit_limit, version) VALUES (gen_random_uuid(), 'new', 1, 1);
                         UPDATE customers SET credit_limit = credit_limit + 1, version = version + 1
                          WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT 3);",
                    )
                    .await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(())
        }
    });
    let args = [
        "--slot",
        "fl",
        "--publication",
        "fl",
        "--tables",
        "public.outbox,public.customers",
    ];
    let mut setup = vec!["setup", "--full-load"];
    setup.extend(args);
    let out = stack.run_ok("bridge", &setup).await?;
    assert!(out.contains("full load:"), "{out}");
    let capture = stack.spawn_capture(&args).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    writing.store(false, Ordering::Relaxed);
    writer.await??;
    stack
        .wait_drained_within("fl", &capture, Duration::from_secs(60))
        .await?;

    // Per customer, in stream order: its operations and its last version.
    let mut seen: HashMap<String, (Vec<String>, i64)> = HashMap::new();
    for r in stack.records().await? {
        let m = &r.json["metadata"];
        if m["table-name"] != "customers" {
            continue;
        }
        let (Some(id), Some(op)) = (r.json["data"]["id"].as_str(), m["operation"].as_str()) else {
            continue;
        };
        let entry = seen.entry(id.to_owned()).or_default();
        entry.0.push(op.to_owned());
        entry.1 = r.json["data"]["version"].as_i64().unwrap_or(-1);
    }
    let rows = pg.query("SELECT id::text, version FROM customers", &[]).await?;
    let mut problems = Vec::new();
    for row in &rows {
        let (id, version): (String, i64) = (row.get(0), row.get(1));
        let Some((ops, last)) = seen.get(&id) else {
            problems.push(format!("{id}: nothing in the stream"));
            continue;
        };
        let loads = ops.iter().filter(|o| *o == "load").count();
        let inserts = ops.iter().filter(|o| *o == "insert").count();
        if loads + inserts != 1 {
            problems.push(format!("{id}: {loads} load and {inserts} insert records"));
        }
        if loads == 1 && ops[0] != "load" {
            problems.push(format!("{id}: a change before its load record: {ops:?}"));
        }
        if *last != version {
            problems.push(format!("{id}: last record version {last}, the row {version}"));
        }
    }
    let loaded = seen
        .values()
        .filter(|(ops, _)| ops.first().map(String::as_str) == Some("load"))
        .count();
    println!("{} customers, {loaded} loaded from the snapshot", rows.len());
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert!(loaded >= 3000, "the rows that existed came as load ({loaded})");
    assert!(
        rows.len() > loaded,
        "rows written after the snapshot came as inserts"
    );
    Ok(())
}

/// A full load killed after its first PutRecords leaves a slot whose snapshot died with it:
/// capture refuses that slot (it would skip the rows not yet sent) and names the remedy; the
/// load run again finishes, and every row of the table is in Kinesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_killed_midway_is_refused_then_finished_when_run_again() -> anyhow::Result<()> {
    const ROWS: usize = 50_000;
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(&format!(
        "INSERT INTO customers (id, name, credit_limit, version) \
         SELECT gen_random_uuid(), 'c' || i, i, 1 FROM generate_series(1, {ROWS}) AS i"
    ))
    .await?;
    let args = [
        "--slot",
        "flk",
        "--publication",
        "flk",
        "--tables",
        "public.outbox,public.customers",
    ];
    let mut setup_args = vec!["setup", "--full-load"];
    setup_args.extend(args);

    let proxy = harness::faults::FaultProxy::start(&stack.moto.endpoint).await?;
    let env = stack.env_with(&[("AWS_ENDPOINT_URL", &proxy.endpoint)]);
    let mut setup = Proc::spawn("bridge", &setup_args, &env)?;
    harness::wait::until("the load's first PutRecords", Duration::from_secs(60), || async {
        setup.ensure_running()?;
        let puts = proxy.plan.call_counts().get("PutRecords").map_or(0, |c| c.calls);
        Ok((puts >= 1).then_some(()))
    })
    .await?;
    setup.kill9().await?;
    assert!(!setup.output().contains("full load:"), "{}", setup.output());

    let (code, out) = stack.capture_refusal_with(&args).await?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("did not finish") && out.contains("bridge setup --full-load"),
        "{out}"
    );
    // `bridge setup` without the load refuses the same slot too.
    let (code, _, err) =
        harness::process::run("bridge", &[&["setup"][..], &args].concat(), &stack.env()).await?;
    assert_eq!(code, Some(1), "{err}");

    let out = stack.run_ok("bridge", &setup_args).await?;
    assert!(out.contains(&format!("{ROWS} row(s)")), "{out}");
    let capture = stack.spawn_capture(&args).await?;
    stack
        .wait_drained_within("flk", &capture, Duration::from_secs(60))
        .await?;
    let loaded: std::collections::HashSet<String> = stack
        .records()
        .await?
        .iter()
        .filter(|r| {
            r.json["metadata"]["table-name"] == "customers" && r.json["metadata"]["operation"] == "load"
        })
        .filter_map(|r| r.json["data"]["id"].as_str().map(str::to_owned))
        .collect();
    let ids: std::collections::HashSet<String> = pg
        .query("SELECT id::text FROM customers", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), ROWS);
    let missing = ids.difference(&loaded).count();
    assert_eq!(missing, 0, "{missing} rows never reached kinesis");
    Ok(())
}
