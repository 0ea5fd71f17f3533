//! `bridge setup --full-load`: AWS DMS's full-load-and-cdc. The slot is created with
//! `USE_SNAPSHOT`; every row of the published tables is read from that snapshot and sent as a
//! `load` record; capture then streams from the slot's consistent point. The snapshot holds
//! exactly what committed before that point and the slot exactly what commits after it: every
//! row arrives once as `load`, then every later change.
//!
//! A load cut short (killed, or failed midway) leaves a slot whose snapshot died with its
//! connection: the rows it had not sent are in neither the stream nor the slot. The stream's
//! `full-load` tag says `running` from before the slot exists until the last row is in Kinesis,
//! so capture refuses such a slot (naming this command), and running this command again drops
//! it and loads everything from a new snapshot (rows sent the first time go again: duplicates,
//! which consumers absorb).

use std::sync::Arc;

use anyhow::Context;
use bridge::capture::catalog;
use bridge::capture::delivery::{Delivered, DeliveryLog};
use bridge::capture::snapshot_load::{snapshot_load, TableRead};
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
        .await?
        .is_some();
    let unfinished = slot_marker::full_load_unfinished(&kinesis, stream, &cfg.slot).await?;
    if exists && unfinished {
        // The slot of a load cut short: nothing ever streamed from it (capture refuses it).
        eprintln!(
            "full load: the last full load into slot {} did not finish; its slot is dropped and the load starts again",
            cfg.slot
        );
        drop_unfinished_slot(&client, &cfg.slot).await?;
    } else {
        anyhow::ensure!(
            !exists,
            "the slot `{}` exists already: --full-load creates it with its snapshot. To re-send tables while \
             capture streams, use `bridge backfill --all`",
            cfg.slot
        );
    }
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
            cursor: None,
        });
    }
    // Server time before the slot exists: whatever the snapshot lacks commits after it.
    let before = catalog::server_now(&client).await?;
    drop(client);
    let limits = eventing::retry::while_transient(
        "read the stream's record limit",
        eventing::retry::Backoff::call(),
        || bridge::sink::kinesis::stream_limits(&kinesis, stream),
    )
    .await
    .with_context(|| format!("read kinesis stream `{stream}`'s record limit"))?;
    // Marked before the slot exists: whatever happens from here, a slot without its rows is known.
    let started = chrono::Utc::now().timestamp_micros();
    slot_marker::mark_full_load(
        &kinesis,
        stream,
        &cfg.slot,
        &format!("state=running started={started}"),
    )
    .await?;
    let sink = Arc::new(
        KinesisSink::new(kinesis.clone(), stream, Metrics::new())
            .with_claim_checks(claims)
            .with_limits(limits),
    );
    let (lsn, identity, rows) = snapshot_load(cfg, sink.as_ref(), &reads)
        .await
        .context("full load")?;
    slot_marker::mark_created(&kinesis, stream, &cfg.slot, &lsn.to_string()).await?;
    DeliveryLog::new(kinesis.clone(), stream, &cfg.slot)
        .write(&Delivered {
            lsn,
            commit_time: before,
            identity,
        })
        .await?;
    slot_marker::mark_full_load(
        &kinesis,
        stream,
        &cfg.slot,
        &format!("state=done started={started} rows={rows} lsn={lsn}"),
    )
    .await?;
    println!(
        "full load: {rows} row(s) of {} table(s) sent as load records; replication slot {} created at {lsn} — \
         capture streams every change after it",
        reads.len(),
        cfg.slot
    );
    Ok(())
}

/// Drops the slot a cut-short load left, once no walsender holds it (a capture started against
/// it refuses and lets go, but its walsender may still be exiting).
async fn drop_unfinished_slot(client: &tokio_postgres::Client, slot: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let dropped = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match dropped {
            Ok(_) => return Ok(()),
            Err(err)
                if err.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                "cannot drop the slot `{slot}` of the unfinished full load (is a capture streaming from it?)"
            )))
            }
        }
    }
}
