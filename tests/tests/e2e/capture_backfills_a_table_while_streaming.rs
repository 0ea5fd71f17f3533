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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_ends_in_its_current_state_and_a_killed_capture_resumes() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    pg.batch_execute(&format!(
        "INSERT INTO customers (id, name, credit_limit, version) \
         SELECT gen_random_uuid(), 'c' || i, i, 1 FROM generate_series(1, {CUSTOMERS}) AS i"
    ))
    .await?;
    // Customers' changes are streamed too, so the backfill has something to race against.
    let args = [
        "--slot",
        "bf",
        "--publication",
        "bf",
        "--tables",
        "public.outbox,public.customers",
    ];
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
