//! The batch being filled: it closes at Kinesis' per-call limits or when its linger time is up.

use std::time::Instant;

use crate::dms::Record;
use crate::sink::{Batch, Limits};

pub struct OpenBatch {
    /// The sink's limits: a batch is one call's worth.
    limits: Limits,
    records: Vec<Record>,
    bytes: usize,
    /// Commit time (seconds since the Unix epoch) of the oldest change in the batch.
    pub oldest_commit: Option<f64>,
    pub opened: Option<Instant>,
    /// The latest in-flight batch holding a partition key this batch also holds: it must
    /// complete first, so one key's records never race each other in two requests.
    pub waits_for: Option<u64>,
    /// With `--synchronous-standby`: the WAL position the standbys must have flushed before
    /// this batch may go (the commits of its records).
    pub needs: crate::lsn::Lsn,
}

impl OpenBatch {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            records: Vec::new(),
            bytes: 0,
            oldest_commit: None,
            opened: None,
            waits_for: None,
            needs: crate::lsn::Lsn::default(),
        }
    }

    pub fn push(&mut self, record: Record, commit_time: f64) {
        // A whole record bound for S3 is held until the batch goes: it counts too, so a bulk
        // update of large rows is sent a few at a time rather than held by the hundred.
        self.bytes += record.size() + record.claim.as_ref().map_or(0, |c| c.len());
        self.records.push(record);
        self.oldest_commit.get_or_insert(commit_time);
        self.opened.get_or_insert_with(Instant::now);
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Full when one more record of ordinary size (up to 1 MiB) might not fit in the same
    /// PutRecords call. A larger one, on a stream that takes them, may still join: the sink
    /// splits a batch into calls (`sink::kinesis`), and waiting for room for a 10 MiB record
    /// would send every batch with one record.
    pub fn is_full(&self) -> bool {
        let room = self
            .limits
            .bytes_per_record
            .min(crate::sink::kinesis::LIMITS.bytes_per_record);
        self.records.len() >= self.limits.records_per_batch || self.bytes + room > self.limits.bytes_per_batch
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
        self.needs = crate::lsn::Lsn::default();
        (batch, self.oldest_commit.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> Record {
        Record {
            claim: None,
            partition_key: "k".into(),
            data: bytes::Bytes::from(vec![b'x'; bytes]),
        }
    }

    #[test]
    fn a_batch_on_a_stream_of_large_records_is_not_full_after_one() {
        const MIB: usize = 1024 * 1024;
        let mut open = OpenBatch::new(crate::sink::kinesis::limits_for(Some(10_240)));
        open.push(record(MIB / 2), 0.0);
        assert!(!open.is_full(), "room for ordinary records after half a MiB");
        for _ in 0..16 {
            open.push(record(MIB / 2), 0.0);
        }
        assert!(!open.is_full(), "8.5 MiB: another MiB fits in 10");
        open.push(record(MIB / 2), 0.0);
        assert!(open.is_full(), "9 MiB and a little: another MiB might not fit");
        // The default stream keeps closing at 4 MiB as before.
        let mut open = OpenBatch::new(crate::sink::kinesis::LIMITS);
        for _ in 0..7 {
            open.push(record(MIB / 2), 0.0);
        }
        assert!(!open.is_full(), "3.5 MiB: another MiB fits in 5");
        open.push(record(MIB / 2), 0.0);
        assert!(open.is_full(), "4 MiB and a little: another MiB might not fit");
    }
}
