//! Loading tables from the snapshot a new slot exports: the rows exactly as they were at the
//! slot's consistent point, sent as DMS `load` records ahead of the stream. The resync after
//! a lost slot and the full load both use it.

use super::batch::OpenBatch;
use super::delivery::{self, Identity};
use super::resync::identify;
use super::{CaptureConfig, CaptureError};
use crate::dms::{Change, Operation, TxContext};
use crate::lsn::Lsn;
use crate::replication::pgoutput::{Datum, Relation, Tuple};
use crate::replication::slot;
use crate::replication::{ReplicationConnection, ReplicationError};
use crate::sink::Sink;
use crate::sql::quote_ident;
use bytes::Bytes;
use chrono::Utc;

/// Rows fetched from the snapshot at a time.
const FETCH_ROWS: usize = 1000;

/// One table read from the new slot's snapshot: which rows, in which order.
pub struct TableRead {
    pub table: crate::table::TableName,
    pub relation: Relation,
    pub key_columns: Vec<usize>,
    /// SQL after `FROM table` (a `WHERE`, an `ORDER BY`), or empty.
    pub tail: String,
    /// The `timestamptz` column the rows are ordered by first (then `ctid`): each acknowledged
    /// batch reports its last row's place in that order, so a cut-short read can resume.
    pub cursor: Option<usize>,
}

/// Creates the slot and, in the same transaction on the same connection, reads `reads` from
/// the slot's own snapshot into the sink as `load` records. Returns the consistent point, the
/// server's identity and how many rows went out: the slot streams exactly what the snapshot
/// lacks, so together they hold every row once (no gap, no overlap).
pub async fn snapshot_load(
    cfg: &CaptureConfig,
    sink: &dyn Sink,
    reads: &[TableRead],
) -> Result<(Lsn, Identity, u64), CaptureError> {
    let mut conn = ReplicationConnection::connect(&cfg.target).await?;
    let identity = identify(&mut conn).await?;
    conn.simple_query("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let lsn = create_slot_with_snapshot(&mut conn, &cfg.slot, cfg.failover_slot).await?;
    let tx = TxContext {
        xid: 0,
        commit_lsn: lsn,
        commit_time: delivery::to_pg_time(Utc::now()),
    };
    let rows = load_reads(&mut conn, cfg, sink, reads, &tx, |_, _| async {}).await?;
    conn.simple_query("COMMIT").await?;
    conn.close().await?;
    Ok((lsn, identity, rows))
}

/// `CREATE_REPLICATION_SLOT … USE_SNAPSHOT` in the transaction open on `conn`: from here its
/// snapshot is the slot's. Returns the consistent point.
pub(super) async fn create_slot_with_snapshot(
    conn: &mut ReplicationConnection,
    slot: &str,
    failover_slot: slot::FailoverSlot,
) -> Result<Lsn, CaptureError> {
    let version: i32 = conn
        .simple_query("SHOW server_version_num")
        .await?
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The option list form (15+) is the one that can say FAILOVER (17+).
    let options = if failover_slot.wanted(version)? {
        " (SNAPSHOT 'use', FAILOVER true)"
    } else {
        " USE_SNAPSHOT"
    };
    let created = conn
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput{options}",
            quote_ident(slot)
        ))
        .await?;
    let lsn: Lsn = created
        .first()
        .and_then(|row| row.get(1).cloned().flatten())
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            ReplicationError::Protocol("CREATE_REPLICATION_SLOT returned no consistent point".into())
        })?;
    tracing::info!(slot = %slot, lsn = %lsn, "created replication slot with a snapshot");
    Ok(lsn)
}

/// Where a read stands after an acknowledged batch: its last row's cursor column (µs since the
/// Unix epoch) and `ctid`, when the read has a cursor.
type ReadPoint = Option<(i64, (u32, u16))>;

/// Reads `reads` in the transaction open on `conn` into the sink as `load` records of `tx`,
/// one batch at a time; after each batch Kinesis holds, calls `acked(rows so far, point)`.
pub(super) async fn load_reads<F, Fut>(
    conn: &mut ReplicationConnection,
    cfg: &CaptureConfig,
    sink: &dyn Sink,
    reads: &[TableRead],
    tx: &TxContext,
    mut acked: F,
) -> Result<u64, CaptureError>
where
    F: FnMut(u64, ReadPoint) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let lsn = tx.commit_lsn;
    let limit = sink.limits().bytes_per_record;
    let mut open = OpenBatch::new(sink.limits());
    let (mut rows, mut seq) = (0_u64, 0_u64);
    for read in reads {
        // Every column as its type's output function writes it — pgoutput's text form, so a
        // row read here is byte for byte the record streaming would have made.
        let mut columns = read
            .relation
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>();
        let width = columns.len();
        if let Some(at) = read.cursor.and_then(|i| read.relation.columns.get(i)) {
            // Exact µs (extract returns numeric on 14+), then the row's place in the heap.
            columns.push(format!(
                "(extract(epoch FROM {}) * 1000000)::int8::text",
                quote_ident(&at.name)
            ));
            columns.push("ctid::text".into());
        }
        conn.simple_query(&format!(
            "DECLARE snapshot_load NO SCROLL CURSOR FOR SELECT {} FROM {} {}",
            columns.join(", "),
            read.table.quoted(),
            read.tail
        ))
        .await?;
        let key = cfg.routes.key_for(&read.table);
        let mut point: ReadPoint = None;
        loop {
            let page = conn
                .simple_query(&format!("FETCH {FETCH_ROWS} FROM snapshot_load"))
                .await?;
            let last_page = page.len() < FETCH_ROWS;
            for mut values in page {
                rows += 1;
                let extra = values.split_off(width.min(values.len()));
                let tuple = Tuple(
                    values
                        .into_iter()
                        .map(|v| v.map_or(Datum::Null, |t| Datum::Text(Bytes::from(t))))
                        .collect(),
                );
                let change = Change {
                    relation: &read.relation,
                    key_columns: &read.key_columns,
                    operation: Operation::Load,
                    row: &tuple,
                    before: None,
                    lsn,
                    record_id: rows,
                    dropped_columns: &[],
                };
                let (record, oversized) = super::fit::encode_within(&change, tx, &key, cfg.encode, limit);
                if oversized {
                    tracing::warn!(lsn = %lsn, table = %read.table, "row above the stream's record limit: loaded by claim check");
                }
                open.push(record, 0.0);
                if let [Some(Some(at)), Some(Some(ctid))] = [extra.first(), extra.get(1)] {
                    point = at
                        .parse()
                        .ok()
                        .zip(super::delivery::ResyncCursor::parse_tid(ctid));
                }
                if open.is_full() {
                    send(sink, &mut open, &mut seq).await?;
                    acked(rows, point).await;
                }
            }
            if last_page {
                break;
            }
        }
        conn.simple_query("CLOSE snapshot_load").await?;
        send(sink, &mut open, &mut seq).await?;
        acked(rows, point).await;
    }
    Ok(rows)
}

/// Sends the open batch and waits until Kinesis holds it: one at a time, in order, so each
/// aggregate's rows land in the order they were read.
async fn send(sink: &dyn Sink, open: &mut OpenBatch, seq: &mut u64) -> Result<(), CaptureError> {
    if open.is_empty() {
        return Ok(());
    }
    let (batch, _) = open.take(*seq);
    *seq += 1;
    sink.submit(batch)
        .await
        .unwrap_or(Err(crate::sink::SinkError::Gone))?;
    Ok(())
}
