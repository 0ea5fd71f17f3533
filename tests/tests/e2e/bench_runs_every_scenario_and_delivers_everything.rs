//! The benchmark keeps working: every scenario, run small, delivers everything it wrote —
//! `ceiling` in every configuration (pg_recvlogical, null sink, local endpoint, moto) on the
//! default major and on 15,
//! `latency`, `memory`, `relay` (also at EventBridge's latency), `backlog`, `backfill`, `consumer`, `pipeline` and `cost`. Speed is read from the benchmark's own output, never
//! asserted here.

use harness::process;
use serde_json::Value;

/// Runs `bench` with `args`, its JSON going to `name` in `dir`; that JSON, once it exited 0.
async fn run_bench(dir: &std::path::Path, name: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = dir.join(name).to_string_lossy().into_owned();
    let args: Vec<&str> = args.iter().copied().chain(["--out", &out]).collect();
    let (code, stdout, stderr) = process::run("bench", &args, &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    Ok(serde_json::from_str(&std::fs::read_to_string(&out)?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_drains_the_whole_backlog_every_way() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("ceiling.json");
    let out_arg = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        process::run("bench", &["ceiling", "--rows", "2000", "--out", &out_arg], &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| drained by |"),
        "prints a markdown table: {stdout}"
    );
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    // On the default major every way, moto included; on 15 every way but moto.
    assert_eq!(rows.len(), 7, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["events"], 2000, "{r}");
    }
    // The walsender's CPU is measured beside every drain.
    for r in &rows {
        assert!(
            r["walsender_cpu_seconds_per_million"].as_f64().is_some(),
            "no walsender figure: {r}"
        );
    }
    let majors: Vec<u64> = rows.iter().filter_map(|r| r["postgres"].as_u64()).collect();
    assert_eq!(majors, [17, 17, 17, 17, 15, 15, 15], "{rows:?}");
    assert!(
        stdout.contains("| 17 | pg_recvlogical") && stdout.contains("| 15 | pg_recvlogical"),
        "both majors side by side in one table: {stdout}"
    );
    assert!(
        rows[2]["verified"]
            .as_str()
            .unwrap_or("")
            .contains("endpoint received 2000 records"),
        "{}",
        rows[2]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delivers_every_event_to_kinesis_and_eventbridge() -> anyhow::Result<()> {
    // Polling, with a synchronous standby, and with enhanced fan-out: every event arrives.
    for (standby, fan_out) in [(false, false), (true, false), (false, true)] {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("latency.json");
        let out_arg = out.to_string_lossy().into_owned();
        let mut args = vec![
            "latency",
            "--rate",
            "500",
            "--rows-per-tx",
            "10",
            "--seconds",
            "3",
            "--out",
            &out_arg,
        ];
        if standby {
            args.push("--synchronous-standby");
        }
        if fan_out {
            args.push("--fan-out");
        }
        let (code, stdout, stderr) = process::run("bench", &args, &[]).await?;
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["synchronous_standby"], standby, "{r}");
        assert_eq!(r["throttled_reads"], 0, "{r}");
        if fan_out {
            assert_eq!(r["relay_mode"], "enhanced fan-out", "{r}");
            assert_eq!(r["get_records_calls"], 0, "{r}");
            assert!(r["subscriptions"].as_u64().unwrap_or(0) >= 4, "{r}");
        } else {
            assert_eq!(r["relay_mode"], "polling", "{r}");
            assert_eq!(r["subscriptions"], 0, "{r}");
        }
        let events = r["events"].as_u64().unwrap_or(0);
        assert!(events >= 10, "{r}");
        assert_eq!(r["events_published"].as_u64(), Some(events), "{r}");
        // Every event was timed on arrival, and capture observed its batches.
        assert_eq!(r["write_to_eventbridge"]["samples"].as_u64(), Some(events), "{r}");
        assert!(
            r["commit_to_kinesis_ack"]["samples"].as_u64().unwrap_or(0) >= 1,
            "{r}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_drains_one_big_transaction_and_a_backlog() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("memory.json");
    let out_arg = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        process::run("bench", &["memory", "--rows", "3000", "--out", &out_arg], &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert!(
            r["verified"]
                .as_str()
                .unwrap_or("")
                .contains("endpoint received 3000 records"),
            "{r}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_every_event_with_one_two_and_four_shards() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("relay.json");
    let out_arg = out.to_string_lossy().into_owned();
    // Enough for a backlog of several pages per shard: a relay that re-reads at once after a
    // full page overdraws a shard's 5 reads and 2 MB per second and is throttled.
    let (code, stdout, stderr) =
        process::run("bench", &["relay", "--events", "12000", "--out", &out_arg], &[]).await?;
    let rows: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    for r in &rows {
        assert_eq!(r["throttled_reads"], 0, "{r}");
        assert!(r["get_records_calls"].as_u64().unwrap_or(0) > 0, "{r}");
    }
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let shards: Vec<u64> = rows.iter().filter_map(|r| r["shards"].as_u64()).collect();
    // With Kinesis' per-shard read limits, then without; then without, routed (ten routes, two
    // buses, a contract on every event: every event still published, none parked).
    assert_eq!(shards, [1, 2, 4, 1, 2, 4, 1, 2, 4], "{rows:?}");
    let routed = rows
        .iter()
        .filter(|r| r["configuration"] == "10 routes, 2 buses, contracts")
        .count();
    assert_eq!(routed, 3, "{rows:?}");
    let limited = rows
        .iter()
        .filter(|r| r["read_limits"] == "Kinesis per-shard limits")
        .count();
    assert_eq!(limited, 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["events"], 12000, "{r}");
    }

    // With EventBridge answering in 20 ms, as AWS does, one PutEvents at a time would cap a
    // shard near 500 events/s: a page's calls go out together.
    let rows = run_bench(
        dir.path(),
        "relay-put-latency.json",
        &[
            "relay",
            "--events",
            "2000",
            "--shards",
            "1",
            "--put-events-latency-ms",
            "20",
            "--routed",
            "false",
        ],
    )
    .await?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["events"], 2000, "{r}");
        assert!(r["put_events_at_once_peak"].as_u64().unwrap_or(0) >= 2, "{r}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_is_applied_exactly_once_with_memory_sampled_along_the_way() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("backlog.json");
    let out_arg = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        process::run("bench", &["backlog", "--events", "300", "--out", &out_arg], &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["inbox_items"], 300, "{r}");
    assert_eq!(r["customers"], 150, "{r}");
    assert_eq!(r["customers_wrong"], 0, "{r}");
    let tenths = r["peak_rss_mib_by_tenth"].as_array().map_or(0, Vec::len);
    assert_eq!(tenths, 10, "one RSS sample per tenth drained: {r}");
    // What shipping called per event (the cost table prices it): deletes go in batches, and
    // a customer's conditional put needs no read first — only the stale half of these events
    // (each customer's older event comes second) reads, to tell stale from a conflict.
    let calls = |op: &str| r["calls_per_event"][op].as_f64().unwrap_or(0.0);
    // (moto answers slowly and how slowly depends on the machine's load: receipts trickle in,
    // and how many deletes go alone with it. The consumer scenario, at a fixed 10 ms a call,
    // checks how wide the batches are.)
    let deletes = calls("DeleteMessage") + calls("DeleteMessageBatch");
    assert!(
        deletes <= 1.0 && calls("DeleteMessageBatch") > 0.0,
        "deletes are batched, and no message is deleted twice: {r}"
    );
    assert!(calls("GetItem") <= 0.75, "no read before a guarded write: {r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_drains_its_queue_at_aws_latency_and_the_pipeline_reaches_the_projection(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = run_bench(
        dir.path(),
        "consumer.json",
        &["consumer", "--events", "500", "--concurrency", "8,64"],
    )
    .await?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["events"], 500, "each event applied once: {r}");
        assert_eq!(
            r["calls_per_event"]["GetItem"].as_f64().unwrap_or(0.0),
            0.0,
            "{r}"
        );
    }
    // Deletes do not queue behind each other: with 64 in flight, applied messages come in
    // bursts of tens, and one DeleteMessageBatch at a time (10 ms each) capped the consumer
    // near 700 messages/s whatever its concurrency.
    let wide = &rows[1];
    assert_eq!(wide["concurrency"], 64, "{wide}");
    assert!(
        wide["peak_concurrent_calls"]["DeleteMessageBatch"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{wide}"
    );

    let r = run_bench(
        dir.path(),
        "pipeline.json",
        &["pipeline", "--rate", "200", "--seconds", "3"],
    )
    .await?;
    assert_eq!(r["complete"], true, "{r}");
    let events = r["events"].as_u64().unwrap_or(0);
    assert!(events >= 200, "{r}");
    // Every event written during the run was timed at every hop.
    assert_eq!(r["write_to_projection"]["samples"].as_u64(), Some(events), "{r}");
    for stage in ["capture", "relay", "eventbridge_to_queue", "consumer"] {
        assert!(r[stage]["p50_ms"].as_f64().unwrap_or(-1.0) >= 0.0, "{stage}: {r}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_prices_what_the_other_scenarios_counted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (latency, fan_out, backlog, cost) = (
        path("latency.json"),
        path("latency-fan-out.json"),
        path("backlog.json"),
        path("cost.json"),
    );
    let small = ["--rate", "300", "--rows-per-tx", "10", "--seconds", "2"];
    for args in [
        [&["latency"][..], &small[..], &["--out", &latency][..]].concat(),
        [
            &["latency", "--fan-out"][..],
            &small[..],
            &["--out", &fan_out][..],
        ]
        .concat(),
        vec!["backlog", "--events", "100", "--out", &backlog],
        vec![
            "cost",
            "--latency",
            &latency,
            "--fan-out",
            &fan_out,
            "--backlog",
            &backlog,
            "--out",
            &cost,
        ],
    ] {
        let (code, stdout, stderr) = process::run("bench", &args, &[]).await?;
        assert_eq!(code, Some(0), "{args:?}\n{stdout}\n{stderr}");
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&cost)?)?;
    let lines = r["lines"].as_array().cloned().unwrap_or_default();
    let line = |item: &str| {
        lines
            .iter()
            .find(|l| l["item"] == item)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // One EventBridge entry and one PUT payload unit per event, whatever the design.
    assert!(
        (line("EventBridge PutEvents")["bridge_polling"]
            .as_f64()
            .unwrap_or(0.0)
            - 1.0)
            .abs()
            < 0.01,
        "{r}"
    );
    assert!(
        line("Kinesis PUT payload units")["bridge_polling"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{r}"
    );
    // Fan-out is billed per consumer-shard hour; polling is not.
    assert_eq!(
        line("Enhanced fan-out")["bridge_polling"].as_f64(),
        Some(0.0),
        "{r}"
    );
    assert!(
        line("Enhanced fan-out")["bridge_fan_out"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    let totals = r["totals_with_consumer"].as_array().cloned().unwrap_or_default();
    assert_eq!(totals.len(), 3, "{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_sends_every_row_while_live_changes_flow() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("backfill.json");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "backfill",
        "--rows",
        "3000",
        "--live-rate",
        "200",
        "--baseline-seconds",
        "1",
        "--out",
        &out_arg,
    ];
    let (code, stdout, stderr) = process::run("bench", &args, &[]).await?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| run | rows/s |"),
        "prints a markdown table: {stdout}"
    );
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    assert_eq!(results["capture_streaming"]["complete"], true, "{results}");
    let phases = results["phases"].as_array().cloned().unwrap_or_default();
    assert_eq!(phases.len(), 3, "baseline and two backfills: {results}");
    for p in &phases[1..] {
        assert_eq!(p["complete"], true, "{p}");
        assert_eq!(p["rows"], 3000, "{p}");
        // Every row read went out, or was superseded by a live change in its window.
        let sent = p["load_records"].as_u64().unwrap_or(0) + p["superseded"].as_u64().unwrap_or(0);
        assert_eq!(sent, 3000, "{p}");
    }
    Ok(())
}
