//! `bridge backfill`: re-send a table (or a slice of it) while capture keeps streaming, so a
//! consumer that applies the stream in order ends with each row's current state.
//!
//! The DBLog / Debezium incremental-snapshot algorithm, run by capture itself (only capture
//! knows the order records reach Kinesis in). For each chunk of a table, in primary-key order:
//!
//! 1. a low watermark goes into the WAL (`pg_logical_emit_message(false, …)`, decoded at its
//!    position), then the chunk is SELECTed, then a high watermark;
//! 2. while the streaming loop is between the two watermarks, it notes the key of every change
//!    of that table: such a row's newer change is (or will be) in the stream, so its chunk copy
//!    could be stale;
//! 3. at the high watermark the chunk's other rows go out as DMS `load` records, in stream
//!    position. A change committed before the low watermark is older than the chunk copy; one
//!    after the high watermark follows it. Nothing stale lands after something newer.
//!
//! Step 3 has one exception DBLog does not cover: a transaction whose commit record is in the
//! WAL (so it streams before the low watermark) but which is not yet visible to queries — it
//! waits for a synchronous standby, or for its WAL flush. The chunk copy is then older than a
//! change already in the stream. So each chunk is read in a repeatable-read transaction whose
//! snapshot (`pg_current_snapshot()`) travels with it, the streaming loop remembers decoded
//! transactions until a snapshot shows them (`Unseen`), and at the high watermark:
//! - rows a transaction the snapshot does not show changed are left out, like rows changed in
//!   the window (their newer state is in the stream);
//! - if such a transaction's keys are unknown (decoded before the job began, or — under
//!   synchronous replication — running when capture started, so an earlier capture may have
//!   streamed it), the chunk is not sent and is read again once that transaction is visible.
//!
//! The job lives in a tag on the stream (`outbox-bridge.backfill.<slot>`): `bridge backfill`
//! writes the request, capture runs it and records how far it got — a chunk counts once
//! Kinesis holds everything up to its high watermark (capture's acknowledged position passed
//! it). A capture that dies resumes after the last such chunk; a chunk replayed after a
//! reconnect before that is sent again. A chunk's share of time is paced to `--rows-per-second`.
//!
//! `job`: the request and its record on the stream; `coordinator`: what the streaming loop and
//! the runner share, and the decisions at each watermark; `runner`: the task that reads the
//! chunks and writes the watermarks.

mod coordinator;
mod job;
mod runner;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::slot_marker::{self, MarkerError};
use super::snapshot::Snapshot;
use super::unseen::Unseen;
use super::CaptureConfig;
use crate::dms::{Change, EncodeOptions, Operation, Record, TxContext};
use crate::lsn::Lsn;
use crate::partition::PartitionKey;
use crate::replication::pgoutput::{Datum, Relation, Tuple};
use crate::replication::slot::{self, SlotError};
use crate::sql::quote_ident;
use crate::table::TableName;

/// Prefix of the watermark messages (never published).
pub const WATERMARK_PREFIX: &str = "outbox-bridge.watermark";

/// How often capture looks for a new request.
const POLL: Duration = Duration::from_secs(3);

/// Tag values allow letters, digits, spaces and `_ . / = + - % @`: free text is
/// percent-encoded, and `+` separates list items.
const TAG_TEXT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

fn enc(text: &str) -> String {
    utf8_percent_encode(text, TAG_TEXT).to_string()
}

fn dec(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The key a change or a chunk row is known by: its primary-key values, as text.
pub fn key_text<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> String {
    let mut key = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            key.push('\u{1}');
        }
        key.push_str(&v.map(String::from_utf8_lossy).unwrap_or_default());
    }
    key
}

/// The key of a pgoutput row (`None` when a key column is missing from it).
pub fn tuple_key(row: &Tuple, key_columns: &[usize]) -> Option<String> {
    let values: Option<Vec<Option<&[u8]>>> = key_columns
        .iter()
        .map(|&i| match row.0.get(i)? {
            Datum::Text(b) | Datum::Binary(b) => Some(Some(&b[..])),
            Datum::Null => Some(None),
            Datum::UnchangedToast => None,
        })
        .collect();
    values.map(|v| key_text(v.into_iter()))
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Postgres(#[from] SlotError),
    #[error(transparent)]
    Tag(#[from] MarkerError),
    /// The request cannot be carried out as asked: the job fails with this reason.
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for BackfillError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Postgres(SlotError::Postgres(err))
    }
}

pub use coordinator::{ChunkSent, Coordinator};
pub use job::{BackfillLog, Job, JobState};
pub use runner::run_jobs;
