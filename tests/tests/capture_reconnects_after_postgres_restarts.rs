//! Postgres going away (a fast and an immediate restart) costs capture a reconnect, not an
//! event: every committed outbox row still reaches Kinesis.

use std::collections::HashSet;
use std::time::Duration;

use tests::postgres::StopMode;
use tests::stack::Stack;

const INSERT: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version) \
                      SELECT gen_random_uuid(), 'Customer', 'c-' || i, 'CustomerCreated', '{}', 1 FROM generate_series(1, $1::int) i";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_across_fast_and_immediate_postgres_restarts() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let capture = stack.spawn_capture(&[]).await?;
    for mode in [StopMode::Fast, StopMode::Immediate] {
        stack.pg.client().await?.execute(INSERT, &[&50i32]).await?;
        stack.pg.restart(mode)?;
        stack.pg.client().await?.execute(INSERT, &[&50i32]).await?;
        stack.wait_slot_active("outbox_bridge", &capture).await?;
    }
    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    assert_eq!(ids.len(), 200);
    stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(90))
        .await?;
    assert!(capture.output().contains("reconnecting"), "{}", capture.output());
    Ok(())
}
