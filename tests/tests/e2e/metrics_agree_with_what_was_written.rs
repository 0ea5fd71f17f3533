//! After a clean run, the Prometheus metrics of `bridge run` and `shipping run` agree with the
//! ground truth: records and events equal the outbox rows written, nothing parked, every shard
//! owned, no lag; shipping applied each event once and published each shipment event.

use std::time::Duration;

use harness::metrics::{scrape, scrape_sum};
use harness::process::Proc;
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_ground_truth() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.run_ok("shipping", &["setup"]).await?;
    let (bport, sport) = (harness::free_port()?, harness::free_port()?);
    let (blisten, slisten) = (format!("127.0.0.1:{bport}"), format!("127.0.0.1:{sport}"));
    let bridge = Proc::spawn(
        "bridge",
        &[
            "run",
            "--metrics-listen",
            &blisten,
            "--lease-duration-secs",
            "10",
            // Any retained WAL is "a lot": the watcher's warning must show up at its first check.
            "--retained-wal-warn-bytes",
            "1",
        ],
        &stack.env(),
    )?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let shipping = Proc::spawn(
        "shipping",
        &["run", "--metrics-listen", &slisten, "--wait-seconds", "1"],
        &stack.env(),
    )?;
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "4",
                "--orders",
                "20",
                "--cancel-ratio",
                "0.3",
                "--progress",
                "never",
            ],
        )
        .await?;
    let pg = stack.pg.client().await?;
    let written: i64 = pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    let written = written as f64;
    harness::shipping::wait_consistent(&stack, &[&bridge, &shipping], Duration::from_secs(180)).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let raised = harness::shipping::scan(&dynamo, "shipping-outbox").await?.len() as f64;
    harness::wait::until(
        "the shipment events to be published",
        Duration::from_secs(60),
        || async {
            Ok((scrape(sport, "shipping_outbox_events_published_total").await? >= raised).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e} ({raised} raised)\n{}", shipping.output()))?;

    assert_eq!(
        scrape(bport, "bridge_kinesis_records_published_total").await?,
        written
    );
    assert!(scrape(bport, "bridge_capture_transactions_total").await? >= 1.0);
    assert_eq!(
        scrape(bport, "bridge_eventbridge_events_published_total").await?,
        written
    );
    assert_eq!(scrape_sum(bport, "bridge_dead_letters_total").await?, 0.0);
    assert_eq!(scrape(bport, "bridge_relay_shards_owned").await?, 4.0);
    // The slot's lag in bytes, as of capture's last status exchange (a keepalive's own time).
    harness::wait::until("the slot's lag under 64 KiB", Duration::from_secs(30), || async {
        Ok((scrape(bport, "bridge_slot_lag_bytes").await? < 64.0 * 1024.0).then_some(()))
    })
    .await?;
    // Drained: nothing committed is waiting, so the slot's lag in time falls to 0 by the next
    // status tick; and the relay reports how far behind each of the 4 shards it reads is.
    harness::wait::until(
        "the slot's lag in seconds to be 0",
        Duration::from_secs(30),
        || async { Ok((scrape(bport, "bridge_slot_confirmed_lag_seconds").await? == 0.0).then_some(())) },
    )
    .await?;
    let text = reqwest::get(format!("http://127.0.0.1:{bport}/metrics"))
        .await?
        .text()
        .await?;
    let shards_reported = text
        .lines()
        .filter(|l| l.starts_with("bridge_relay_checkpoint_lag_milliseconds{"))
        .count();
    assert_eq!(shards_reported, 4, "{text}");
    // The slot's retained WAL is exposed in bytes and in age, from the watcher's first check.
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let retained = gauge("bridge_slot_retained_wal_bytes");
    assert!(
        retained.is_some_and(|b| (0.0..256.0 * 1024.0 * 1024.0).contains(&b)),
        "{retained:?}\n{text}"
    );
    let age = gauge("bridge_slot_retained_wal_age_seconds");
    assert!(age.is_some_and(|s| (0.0..600.0).contains(&s)), "{age:?}\n{text}");
    let log = bridge.output();
    assert!(
        log.contains("the slot retains a lot of WAL"),
        "no retained-WAL warning above a 1-byte threshold:\n{log}"
    );

    let applied = scrape_sum(sport, "shipping_events_applied_total").await?;
    let duplicates = scrape(sport, "shipping_events_applied_total{outcome=\"duplicate\"}").await?;
    assert_eq!(applied - duplicates, written, "each event applied once");
    assert_eq!(
        scrape(sport, "shipping_outbox_events_published_total").await?,
        raised
    );
    assert_eq!(scrape(sport, "shipping_events_dead_lettered_total").await?, 0.0);
    assert_eq!(scrape(sport, "shipping_outbox_events_parked_total").await?, 0.0);
    // The publisher's PutEvents retries are served by the process that makes them (declared;
    // their count is whatever the emulator's own 5xx answers under load caused).
    scrape_sum(sport, "bridge_eventbridge_put_events_retries_total").await?;
    Ok(())
}
