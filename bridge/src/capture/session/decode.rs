//! What the session does with each decoded WAL message: relations, transactions, row changes
//! and logical messages become DMS records in the open batch, in per-key order.

use std::sync::Arc;

use bytes::Bytes;

use super::{CapturedRelation, OpenTx, Session};
use crate::capture::CaptureError;
use crate::dms::{self, Change, Operation, TxContext};
use crate::lsn::Lsn;
use crate::replication::pgoutput::{self, PgOutput, Tuple};
use crate::replication::ReplicationError;
use crate::table::TableName;

impl Session<'_> {
    pub(super) fn on_wal(&mut self, lsn: Lsn, data: Bytes) -> Result<(), CaptureError> {
        match pgoutput::decode(data)? {
            PgOutput::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.acks.begin();
                self.tx = Some(OpenTx {
                    ctx: TxContext {
                        xid,
                        commit_lsn: final_lsn,
                        commit_time,
                    },
                    commit_seconds: dms::pg_time_seconds(commit_time),
                    next_record_id: 1,
                    reported: false,
                });
            }
            PgOutput::Commit {
                end_lsn, commit_time, ..
            } => {
                self.tx = None;
                self.metrics.transactions_captured.inc();
                self.acks.commit(end_lsn, commit_time);
                if !self.open.is_empty() {
                    // The whole commit record, now that its end is known.
                    self.open.needs = self.open.needs.max(end_lsn);
                }
            }
            PgOutput::Relation(relation) => {
                let table = TableName {
                    schema: relation.namespace.clone(),
                    name: relation.name.clone(),
                };
                // The catalog's primary key where known (tables added later fall back to
                // pgoutput's replica-identity flags).
                let key_columns = match self.primary_keys.get(&table) {
                    Some(names) => names
                        .iter()
                        .filter_map(|n| relation.columns.iter().position(|c| &c.name == n))
                        .collect(),
                    None => relation
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.is_key)
                        .map(|(i, _)| i)
                        .collect(),
                };
                let captured = CapturedRelation {
                    key_columns,
                    key: self.cfg.routes.key_for(&table),
                    outbox: self.cfg.routes.is_outbox(&table),
                    relation,
                };
                self.relations.insert(captured.relation.id, Arc::new(captured));
            }
            PgOutput::Insert { relation, new } => {
                self.on_change(relation, Operation::Insert, &new, None, lsn)?
            }
            PgOutput::Update { relation, old, new } => {
                self.on_change(relation, Operation::Update, &new, old.as_ref(), lsn)?;
            }
            PgOutput::Delete { relation, old } => {
                self.on_change(relation, Operation::Delete, &old, None, lsn)?
            }
            PgOutput::Truncate { relations } => {
                tracing::warn!(%lsn, relations = relations.len(), "truncate is not published (DMS has no record for it)");
            }
            PgOutput::Message {
                transactional,
                prefix,
                content,
                ..
            } => {
                self.on_message(transactional, &prefix, &content, lsn);
            }
            PgOutput::Ignored => {}
        }
        Ok(())
    }

    /// A `pg_logical_emit_message` with the outbox prefix is an outbox event without a table.
    pub(super) fn on_message(&mut self, transactional: bool, prefix: &str, content: &[u8], lsn: Lsn) {
        if prefix == crate::capture::heartbeat::PREFIX && !transactional {
            crate::capture::heartbeat::received(self.metrics, content);
            // Read in source order with nothing of ours pending: everything before it is settled.
            // Its content is capture's own clock, not the server's: the time stays as it was.
            self.acks.idle_at(lsn, None);
            self.metrics.flushed_lsn.set(self.acks.flushed().0 as i64);
            return;
        }
        if prefix == crate::capture::backfill::WATERMARK_PREFIX && !transactional {
            let limit = self.open.limits().bytes_per_record;
            if let Some(sent) = self
                .beacons
                .backfill
                .watermark(content, lsn, self.cfg.encode, limit)
            {
                self.metrics.backfill_records.inc_by(sent.records);
                self.metrics.backfill_superseded.inc_by(sent.superseded);
                self.metrics.backfill_rereads.inc_by(sent.reread);
            }
            return;
        }
        if prefix != self.cfg.message_prefix {
            tracing::debug!(%lsn, prefix, "logical message with another prefix skipped");
            return;
        }
        let Some(tx) = self.tx.as_mut().filter(|_| transactional) else {
            // Outside a transaction it is not atomic with the monolith's change: not an outbox event.
            tracing::warn!(%lsn, prefix, "non-transactional outbox message skipped: emit it with transactional = true");
            return;
        };
        let record_id = tx.next_record_id;
        tx.next_record_id += 1;
        let (ctx, commit_seconds) = (tx.ctx, tx.commit_seconds);
        let msg = dms::MessageContext {
            prefix,
            outbox: &self.cfg.routes.outbox,
            lsn,
            record_id,
        };
        let mut record = dms::encode_message(content, &msg, &ctx);
        let limit = self.open.limits().bytes_per_record;
        if record.size() > limit {
            // Sent without its large fields, naming them, and whole through S3 (the sink stores
            // the `claim` and points to it); without a bucket the relay parks it with its reason.
            self.metrics.records_oversized.inc();
            tracing::warn!(%lsn, bytes = record.size(), "outbox message above the stream's record limit: sent by claim check");
            let whole = record.data;
            let room = limit.saturating_sub(dms::CLAIM_CHECK_ROOM);
            let data = dms::message_data(content);
            let (slim, dropped) = dms::slim_message_data(&data, 1024, None);
            record = dms::encode_message_data(slim, &dropped, &msg, &ctx);
            if record.size() > room {
                let keep = ["id", "type", "aggregatetype", "aggregateid"];
                let (slim, dropped) = dms::slim_message_data(&data, 1024, Some(&keep));
                record = dms::encode_message_data(slim, &dropped, &msg, &ctx);
            }
            record.claim = Some(whole);
        }
        self.metrics.changes_captured.inc();
        self.push(record, commit_seconds);
    }

    pub(super) fn on_change(
        &mut self,
        relation: u32,
        operation: Operation,
        row: &Tuple,
        before: Option<&Tuple>,
        lsn: Lsn,
    ) -> Result<(), CaptureError> {
        let rel = self
            .relations
            .get(&relation)
            .cloned()
            .ok_or_else(|| ReplicationError::Decode(format!("change for unknown relation {relation}")))?;
        // Outbox rows may be deleted (or tidied) right after insert: only inserts are events.
        if rel.outbox && operation != Operation::Insert {
            return Ok(());
        }
        let table = TableName {
            schema: rel.relation.namespace.clone(),
            name: rel.relation.name.clone(),
        };
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| ReplicationError::Protocol("row change outside a transaction".into()))?;
        let backfill = &self.beacons.backfill;
        if !tx.reported {
            // A backfill chunk read later may not see this transaction yet (see `backfill`).
            tx.reported = true;
            backfill.decoded(tx.ctx.xid);
        }
        if backfill.noting() {
            for tuple in std::iter::once(row).chain(before) {
                if let Some(key) = crate::capture::backfill::tuple_key(tuple, &rel.key_columns) {
                    backfill.changed(&table, key, tx.ctx.xid);
                }
            }
        }
        let record_id = tx.next_record_id;
        tx.next_record_id += 1;
        let (ctx, commit_seconds) = (tx.ctx, tx.commit_seconds);
        let change = Change {
            relation: &rel.relation,
            key_columns: &rel.key_columns,
            operation,
            row,
            before,
            lsn,
            record_id,
            dropped_columns: &[],
        };
        let limit = self.open.limits().bytes_per_record;
        let (record, oversized) =
            crate::capture::fit::encode_within(&change, &ctx, &rel.key, self.cfg.encode, limit);
        if oversized {
            self.metrics.records_oversized.inc();
            tracing::warn!(%lsn, table = %rel.relation.name, "record above the stream's record limit: sent by claim check");
        }
        self.metrics.changes_captured.inc();
        if rel.outbox {
            self.traces.row(&rel.relation, row);
        }
        self.push(record, commit_seconds);
        Ok(())
    }

    /// Adds a record to the open batch, noting the in-flight batch it must wait for (per-key order).
    pub(super) fn push(&mut self, record: dms::Record, commit_seconds: f64) {
        if let Some(seq) = self.key_order.waits_for(&record.partition_key) {
            self.open.waits_for = Some(self.open.waits_for.map_or(seq, |w| w.max(seq)));
        }
        if let Some(tx) = &self.tx {
            // Past the start of its commit record; raised to its end when the Commit is read
            // while the record is still in the open batch.
            self.open.needs = self.open.needs.max(Lsn(tx.ctx.commit_lsn.0 + 1));
        }
        self.open.push(record, commit_seconds);
        self.acks.record();
    }
}
