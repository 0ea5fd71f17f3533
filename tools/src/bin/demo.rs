//! The main job on the embedded default stack: a throwaway Postgres and moto, the monolith's
//! schema, `bridge setup`, `bridge run` (capture + relay), the load generator writing, and live
//! progress (events written, in Kinesis, on EventBridge, applied by the shipping service, slot
//! lag) until every outbox row has gone the whole way; then a consistency report: the monolith
//! against the shipping service's projection and shipments, and its events on the bus.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use harness::bus;
use harness::stack::{outbox_id, Stack};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "demo",
    about = "Run the whole pipeline on the embedded stack with live progress"
)]
struct Args {
    /// Customers the load generator creates.
    #[arg(long, default_value_t = 50)]
    customers: u32,
    /// Orders the load generator places (each raises one to four events). moto, not the
    /// bridge, sets the pace of the microservice side: about 15 events/s applied by shipping.
    #[arg(long, default_value_t = 500)]
    orders: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Events per second the load generator aims at (0 = as fast as it can).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Keep the stack running after the load, until Ctrl-C, to poke at it.
    #[arg(long)]
    keep_running: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    println!(
        "outbox-bridge demo: monolith → Postgres outbox → logical replication → bridge capture → Kinesis\n"
    );
    print!("starting the embedded stack (throwaway Postgres + moto_server)… ");
    std::io::stdout().flush()?;
    let stack = Stack::start()
        .await
        .context("cannot start the embedded stack (scripts/bootstrap installs it)")?;
    println!(
        "ok\n  postgres  {}\n  aws       {} (moto)\n  stream    {}",
        redact(&stack.pg.url()),
        stack.moto.endpoint,
        stack.stream
    );

    let metrics_port = harness::free_port()?;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let listen = format!("127.0.0.1:{metrics_port}");
    // The microservice side: shipping (its queue fed by a rule, DynamoDB tables with an outbox
    // stream), and a downstream queue that receives what shipping publishes.
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let pattern = json!({"source": ["shipping"]});
    let mut downstream = bus::subscribe(&sdk, "legacy-monolith", "shipment-events", &pattern).await?;
    let capture = stack.spawn("bridge", &["run", "--metrics-listen", &listen])?;
    stack.wait_slot_active("outbox_bridge", &capture).await?;
    let shipping_port = harness::free_port()?;
    let shipping_metrics = format!("http://127.0.0.1:{shipping_port}/metrics");
    let shipping_listen = format!("127.0.0.1:{shipping_port}");
    let service = stack.spawn(
        "shipping",
        &["run", "--wait-seconds", "2", "--metrics-listen", &shipping_listen],
    )?;
    let (_sim, api) = stack.spawn_legacy_sim().await?;
    println!("  bridge    run (capture + relay), metrics at {metrics_url}\n  monolith  {api} (POST /customers, POST /orders, …)\n  shipping  run (queue shipping-events ← rule on bus legacy-monolith; DynamoDB projection, shipments, inbox, outbox → stream → bus), metrics at {shipping_metrics}\n  downstream queue shipment-events ← rule source=shipping\n");
    let mut capture = capture;

    let (customers, orders, concurrency, rate) = (
        args.customers.to_string(),
        args.orders.to_string(),
        args.concurrency.to_string(),
        args.rate.to_string(),
    );
    let mut load = stack.spawn(
        "legacy-sim",
        &[
            "load",
            "--customers",
            &customers,
            "--orders",
            &orders,
            "--concurrency",
            &concurrency,
            "--rate",
            &rate,
            "--progress",
            "never",
            "--summary-json",
        ],
    )?;
    println!(
        "load generator: {} customers, {} orders, concurrency {}",
        args.customers, args.orders, args.concurrency
    );

    let http = reqwest::Client::new();
    let pg = stack.pg.client().await?;
    let live = std::io::stdout().is_terminal();
    let mut load_done = false;
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        capture.ensure_running()?;
        if !load_done && load.wait(Duration::from_millis(1)).await.is_ok() {
            load_done = true;
        }
        let written: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
        let lag: i64 = pg
            .query_one(
                "SELECT coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0) FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
                &[],
            )
            .await?
            .get(0);
        let metrics = http.get(&metrics_url).send().await?.text().await?;
        let captured = metric(&metrics, "bridge_kinesis_records_published_total");
        let published = metric(&metrics, "bridge_eventbridge_events_published_total");
        let age = metric(&metrics, "bridge_oldest_unpublished_event_age_seconds");
        service.ensure_running()?;
        let shipping_text = http.get(&shipping_metrics).send().await?.text().await?;
        let applied = harness::metrics::sum_in(&shipping_text, "shipping_events_applied_total")?;
        let line = format!(
            "[{:>6.1}s] written {:>6} | in kinesis {:>6} | on eventbridge {:>6} | applied by shipping {:>6} | slot lag {:>9} | oldest unpublished {:>5.2}s | load {}",
            started.elapsed().as_secs_f64(),
            written,
            captured as i64,
            published as i64,
            applied as i64,
            bytes(lag),
            age,
            if load_done { "done" } else { "running" }
        );
        if live {
            print!("\r{line}");
            std::io::stdout().flush()?;
        } else if last_line.elapsed() >= Duration::from_secs(2) {
            println!("{line}");
            last_line = Instant::now();
        }
        if load_done
            && captured as i64 >= written
            && published as i64 >= written
            && applied as i64 >= written
            && lag < 64 * 1024
        {
            println!("{}", if live { "\n" } else { "" });
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = load.output();
    let summary = summary.lines().rev().find(|l| l.starts_with('{')).unwrap_or("{}");

    // Check at the source of truth: every outbox row is a record in the stream.
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    let records = stack.records().await?;
    let seen: HashSet<&str> = records.iter().filter_map(outbox_id).collect();
    let missing = ids.iter().filter(|id| !seen.contains(id.as_str())).count();
    println!("load summary: {summary}");
    println!(
        "outbox rows {}, kinesis records {}, duplicates {}, missing {missing}",
        ids.len(),
        records.len(),
        records.len() - seen.len()
    );
    if let Some(sample) = records.first() {
        println!(
            "a record as consumers see it (AWS DMS format):\n{}",
            serde_json::to_string_pretty(&sample.json)?
        );
    }

    // The microservice's view: its state against the monolith's.
    print!("consistency report (monolith vs shipping)… ");
    std::io::stdout().flush()?;
    let report =
        harness::shipping::wait_consistent(&stack, &[&capture, &service], Duration::from_secs(300)).await?;
    println!("{report}");
    println!(
        "  customers: {} in the monolith, {} projected differently, {} unknown to it",
        report.customers,
        report.customer_mismatches.len(),
        report.unknown_customers.len()
    );
    println!(
        "  shipments: {} approved orders, {} without a live shipment, {} live shipments too many",
        report.approved_orders,
        report.missing_shipments.len(),
        report.extra_shipments.len()
    );
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let shipment_events: HashSet<String> = harness::shipping::scan(&dynamo, "shipping-outbox")
        .await?
        .iter()
        .map(|i| harness::shipping::text(i, "event_id"))
        .collect();
    print!(
        "waiting for the {} shipment events on the downstream queue (moto delivers ~50/s)… ",
        shipment_events.len()
    );
    std::io::stdout().flush()?;
    downstream
        .until_all(&shipment_events, Duration::from_secs(600), || service.output())
        .await?;
    println!("{} delivered", downstream.by_event_id().len());
    if let Some(event) = downstream.received.first() {
        println!(
            "an event shipping published, as a downstream consumer receives it:\n{}",
            serde_json::to_string_pretty(event)?
        );
    }

    if args.keep_running {
        println!("\nthe stack keeps running; Ctrl-C stops it. Try:\n  curl -s -XPOST {api}/customers -H 'content-type: application/json' -d '{{\"name\":\"Ada\",\"credit_limit\":100}}'\n  curl -s {metrics_url}");
        tokio::signal::ctrl_c().await?;
    }
    let mut service = service;
    let shipping_code = service.terminate(Duration::from_secs(30)).await?;
    println!("shipping stopped (exit {shipping_code:?})");
    let code = capture.terminate(Duration::from_secs(30)).await?;
    let flushed = stack.confirmed_flush("outbox_bridge").await?.unwrap_or(0);
    println!(
        "bridge stopped (exit {code:?}); the slot is acknowledged up to {:X}/{:X}",
        flushed >> 32,
        flushed & 0xFFFF_FFFF
    );
    anyhow::ensure!(missing == 0, "{missing} outbox rows never reached kinesis");
    anyhow::ensure!(
        report.exact(),
        "the shipping service does not match the monolith: {report}"
    );
    println!(
        "\nall {} outbox events reached kinesis, eventbridge and the shipping service, which matches the monolith exactly ({:.1}s)",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn bytes(n: i64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / 1048576.0)
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}
