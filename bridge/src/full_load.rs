//! `bridge setup --full-load`: AWS DMS's full-load-and-cdc. The slot is created with
//! `USE_SNAPSHOT`; every row of the published tables is read from that snapshot and sent as a
//! `load` record; capture then streams from the slot's consistent point. The snapshot holds
//! exactly what committed before that point and the slot exactly what commits after it: every
//! row arrives once as `load`, then every later change.

use std::sync::Arc;

use anyhow::Context;
use bridge::capture::catalog;
use bridge::capture::delivery::{Delivered, DeliveryLog};
use bridge::capture::resync::{snapshot_load, TableRead};
use bridge::capture::{slot_marker, CaptureConfig};
use bridge::metrics::Metrics;
use bridge::replication::slot;
use bridge::sink::kinesis::KinesisSink;

pub async fn run(
    cfg: &CaptureConfig,
    kinesis: aws_sdk_kinesis::Client,
    claims: eventing::claim_check::ClaimCheckStore,
    stream: &str,
) -> anyhow::Result<()> {
    let client = slot::query_client(&cfg.target).await?;
    let inserts_only = cfg.tables.iter().all(|t| cfg.routes.is_outbox(t));
    slot::ensure_publication(&client, &cfg.publication, &cfg.tables, inserts_only).await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot],
        )
        .await?;
    anyhow::ensure!(
        exists.is_none(),
        "the slot `{}` exists already: --full-load creates it with its snapshot. To re-send tables while \
         capture streams, use `bridge backfill --all`",
        cfg.slot
    );
    let mut reads = Vec::with_capacity(cfg.tables.len());
    for table in &cfg.tables {
        let relation = catalog::table_relation(&client, table).await?;
        anyhow::ensure!(!relation.columns.is_empty(), "{table} does not exist");
        let key_columns = catalog::primary_key_columns(&client, table, &relation).await?;
        reads.push(TableRead {
            table: table.clone(),
            relation,
            key_columns,
            tail: String::new(),
        });
    }
    // Server time before the slot exists: whatever the snapshot lacks commits after it.
    let before = catalog::server_now(&client).await?;
    drop(client);
    let sink = Arc::new(KinesisSink::new(kinesis.clone(), stream, Metrics::new()).with_claim_checks(claims));
    let (lsn, identity, rows) = snapshot_load(cfg, sink.as_ref(), &reads)
        .await
        .context("full load")?;
    slot_marker::mark_created(&kinesis, stream, &cfg.slot, &lsn.to_string()).await?;
    DeliveryLog::new(kinesis, stream, &cfg.slot)
        .write(&Delivered {
            lsn,
            commit_time: before,
            identity,
        })
        .await?;
    println!(
        "full load: {rows} row(s) of {} table(s) sent as load records; replication slot {} created at {lsn} — \
         capture streams every change after it",
        reads.len(),
        cfg.slot
    );
    Ok(())
}
