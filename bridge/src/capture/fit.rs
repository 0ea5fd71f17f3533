//! Records that fit Kinesis' per-record limit: a row too large is sent without its large
//! values, and names them (`dropped-columns`), so nobody mistakes a dropped value for a null
//! one; the whole record rides along (`Record::claim`) for the sink to store in S3 and point
//! to (`sink::claims`). Streaming, backfills and the outbox resync all use it.

use crate::dms::{self, Change, EncodeOptions, Record, TxContext};
use crate::partition::PartitionKey;
use crate::replication::pgoutput::{Datum, Relation, Tuple};

/// Encodes the change within `limit` bytes; `true` when values had to be left out (the whole
/// record is then the slim one's `claim`).
pub fn encode_within(
    change: &Change<'_>,
    ctx: &TxContext,
    key: &PartitionKey,
    opts: EncodeOptions,
    limit: usize,
) -> (Record, bool) {
    let whole = dms::encode(change, ctx, key, opts);
    if whole.size() <= limit {
        return (whole, false);
    }
    let mut slim = slim_within(
        change,
        ctx,
        key,
        opts,
        limit.saturating_sub(dms::CLAIM_CHECK_ROOM),
    );
    slim.claim = Some(whole.data);
    (slim, true)
}

fn slim_within(
    change: &Change<'_>,
    ctx: &TxContext,
    key: &PartitionKey,
    opts: EncodeOptions,
    limit: usize,
) -> Record {
    let slim = slim_tuple(change.row, 1024);
    let dropped = dropped_names(change.relation, change.row, &slim);
    let slimmed = Change {
        row: &slim,
        before: None,
        dropped_columns: &dropped,
        ..*change
    };
    let record = dms::encode(&slimmed, ctx, key, opts);
    if record.size() <= limit {
        return record;
    }
    // Escaping or sheer width still overflows: keep only the key columns.
    let keys = key_only_tuple(change.row, change.key_columns);
    let dropped = dropped_names(change.relation, change.row, &keys);
    let keys_only = Change {
        row: &keys,
        before: None,
        dropped_columns: &dropped,
        ..*change
    };
    dms::encode(&keys_only, ctx, key, opts)
}

/// The row with every value above `limit` bytes replaced by null, for a record too large for Kinesis.
fn slim_tuple(row: &Tuple, limit: usize) -> Tuple {
    Tuple(
        row.0
            .iter()
            .map(|d| match d {
                Datum::Text(t) | Datum::Binary(t) if t.len() > limit => Datum::Null,
                other => other.clone(),
            })
            .collect(),
    )
}

/// Names of the columns that had a value in `full` and have none in `sent`.
fn dropped_names(relation: &Relation, full: &Tuple, sent: &Tuple) -> Vec<String> {
    relation
        .columns
        .iter()
        .zip(full.0.iter().zip(&sent.0))
        .filter(|(_, (f, s))| matches!(f, Datum::Text(_) | Datum::Binary(_)) && **s == Datum::Null)
        .map(|(c, _)| c.name.clone())
        .collect()
}

/// The row with only its primary-key values (each at most 1 KiB), the last resort for size.
fn key_only_tuple(row: &Tuple, key_columns: &[usize]) -> Tuple {
    let slim = slim_tuple(row, 1024);
    Tuple(
        slim.0
            .into_iter()
            .enumerate()
            .map(|(i, d)| if key_columns.contains(&i) { d } else { Datum::Null })
            .collect(),
    )
}
