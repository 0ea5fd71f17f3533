//! The batch being filled: it closes at Kinesis' per-call limits or when its linger time is up.

use std::time::Instant;

use crate::dms::{Record, MAX_RECORD_BYTES};
use crate::sink::kinesis::{MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL};
use crate::sink::Batch;

#[derive(Default)]
pub struct OpenBatch {
    records: Vec<Record>,
    bytes: usize,
    /// Commit time (seconds since the Unix epoch) of the oldest change in the batch.
    pub oldest_commit: Option<f64>,
    pub opened: Option<Instant>,
    /// The latest in-flight batch holding a partition key this batch also holds: it must
    /// complete first, so one key's records never race each other in two requests.
    pub waits_for: Option<u64>,
}

impl OpenBatch {
    pub fn push(&mut self, record: Record, commit_time: f64) {
        self.bytes += record.size();
        self.records.push(record);
        self.oldest_commit.get_or_insert(commit_time);
        self.opened.get_or_insert_with(Instant::now);
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Full when one more record might not fit in the same PutRecords call.
    pub fn is_full(&self) -> bool {
        self.records.len() >= MAX_RECORDS_PER_CALL || self.bytes + MAX_RECORD_BYTES > MAX_BYTES_PER_CALL
    }

    /// Takes the records out, leaving an empty batch behind.
    pub fn take(&mut self, seq: u64) -> (Batch, Option<f64>) {
        let batch = Batch {
            seq,
            records: std::mem::take(&mut self.records),
        };
        self.bytes = 0;
        self.opened = None;
        self.waits_for = None;
        (batch, self.oldest_commit.take())
    }
}
