//! A quiet outbox must not pin WAL: while nothing is published, writes to unpublished tables of
//! the same database, and to another database of the same cluster (the classic case that needs a
//! heartbeat), still let the slot's confirmed position and restart position move past them —
//! capture acknowledges the server's keepalives whenever nothing of its own is pending. And on a
//! database where nothing at all is written, capture's own heartbeat (`--heartbeat-secs`) comes
//! back through the slot, moves its confirmed position, and is never published.

use std::time::Duration;

use harness::lsn;
use harness::stack::Stack;
use harness::wait;

async fn wal_lsn(client: &tokio_postgres::Client) -> anyhow::Result<u64> {
    let end: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    lsn::parse(&end).ok_or_else(|| anyhow::anyhow!("bad LSN {end}"))
}

/// Writes about `mb` MiB of WAL through `client`; returns the WAL positions before and after.
async fn write_noise(client: &tokio_postgres::Client, table: &str, mb: usize) -> anyhow::Result<(u64, u64)> {
    let start = wal_lsn(client).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, pad text);
             INSERT INTO {table} (pad) SELECT repeat('n', 1000) FROM generate_series(1, {rows});
             -- A checkpoint logs the running transactions, which restart_lsn waits for
             -- (otherwise the next one comes within 15 s).
             CHECKPOINT;",
            rows = mb * 1000
        ))
        .await?;
    Ok((start, wal_lsn(client).await?))
}

/// Waits until the slot has confirmed everything up to `end` and released the WAL before `start`.
async fn wait_slot_past(stack: &Stack, (start, end): (u64, u64), what: &str) -> anyhow::Result<()> {
    let admin = stack.pg.client().await?;
    wait::until(what, Duration::from_secs(60), || async {
        let row = admin
            .query_one(
                "SELECT confirmed_flush_lsn::text, restart_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = 'outbox_bridge'",
                &[],
            )
            .await?;
        let confirmed = lsn::parse(&row.get::<_, String>(0)).unwrap_or(0);
        let restart = lsn::parse(&row.get::<_, String>(1)).unwrap_or(0);
        // restart_lsn moves to the last running-xacts record decoded and confirmed (the
        // checkpoint's, inside the noise), so past `start` is what releasing the WAL looks like.
        Ok((confirmed >= end && restart > start).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_writes_and_other_databases_do_not_pin_wal() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let admin = stack.pg.client().await?;

    let noise = write_noise(&admin, "unpublished_noise", 16).await?;
    wait_slot_past(&stack, noise, "the slot past writes to an unpublished table").await?;

    admin.batch_execute("CREATE DATABASE elsewhere").await?;
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}/elsewhere",
        harness::postgres::SUPERUSER_PASSWORD,
        stack.pg.port
    );
    let (other, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let noise = write_noise(&other, "noise", 16).await?;
    wait_slot_past(&stack, noise, "the slot past another database's writes").await?;

    capture.ensure_running()?;
    let records = stack.records().await?;
    assert!(records.is_empty(), "nothing was published: {}", records.len());
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_come_back_through_the_slot_and_are_never_published() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut capture = stack
        .spawn_capture(&["--heartbeat-secs", "1", "--metrics-listen", &listen])
        .await?;
    let admin = stack.pg.client().await?;
    let confirmed = || async {
        let row = admin
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'outbox_bridge'",
                &[],
            )
            .await?;
        anyhow::Ok(lsn::parse(&row.get::<_, String>(0)).unwrap_or(0))
    };
    let before = (confirmed().await?, wal_lsn(&admin).await?);

    // Nobody writes: only heartbeats move the WAL, and the slot follows them.
    wait::until("three heartbeats read back", Duration::from_secs(60), || async {
        capture.ensure_running()?;
        let seen = harness::metrics::scrape(port, "bridge_capture_heartbeats_received_total").await?;
        Ok((seen >= 3.0).then_some(()))
    })
    .await?;
    let wal_now = wal_lsn(&admin).await?;
    assert!(
        wal_now > before.1,
        "heartbeats write WAL: {wal_now} > {}",
        before.1
    );
    wait::until(
        "the slot past the heartbeats",
        Duration::from_secs(30),
        || async { Ok((confirmed().await? > before.0.max(before.1)).then_some(())) },
    )
    .await?;
    let lag = harness::metrics::scrape(port, "bridge_capture_heartbeat_lag_seconds").await?;
    assert!(lag < 30.0, "the heartbeat came back late: {lag} s");

    capture.ensure_running()?;
    let records = stack.records().await?;
    assert!(records.is_empty(), "heartbeats are not published: {records:?}");
    capture.terminate(Duration::from_secs(30)).await?;
    Ok(())
}
