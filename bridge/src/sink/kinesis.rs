//! The Kinesis sink: PutRecords with retries of exactly the entries that failed.
//!
//! Each failed entry is matched to its record by position in *that* request's own list, and
//! only those are sent again, with backoff and jitter. Kinesis does not keep order across a
//! partial failure, which is why every record carries `(commit-lsn, transaction-record-id)`.

use std::sync::Arc;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError;
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::oneshot;

use super::{Batch, Completion, Limits, Sink, SinkError};
use crate::dms::Record;
use crate::metrics::Metrics;
use eventing::claim_check::ClaimCheckStore;
use eventing::retry::{transient_cause, Backoff};

/// Kinesis' limits for a stream of the default record size: 500 records and 5 MiB per
/// PutRecords call, 1 MiB per record (data plus partition key).
pub const LIMITS: Limits = Limits {
    records_per_batch: 500,
    bytes_per_batch: 5 * 1024 * 1024,
    bytes_per_record: 1024 * 1024,
};

/// The limits of a stream whose `MaxRecordSizeInKiB` is `kib` (1024 to 10240; `None`: a stream
/// that does not say, which is one of the default size). A stream with larger records takes up to
/// 10 MiB per PutRecords call; one of the default size keeps the 5 MiB it always had.
pub fn limits_for(kib: Option<i32>) -> Limits {
    let record = kib.map_or(LIMITS.bytes_per_record, |k| k.clamp(1024, 10_240) as usize * 1024);
    Limits {
        bytes_per_record: record,
        bytes_per_batch: if record > LIMITS.bytes_per_record {
            10 * 1024 * 1024
        } else {
            LIMITS.bytes_per_batch
        },
        ..LIMITS
    }
}

/// Reads the stream's record limit (`DescribeStreamSummary`'s `MaxRecordSizeInKiB`): capture
/// claim-checks only what is above it. Read once at start; a limit changed later is taken up
/// by the next start (lowered under a running capture, Kinesis refuses the larger records and
/// capture stops with Kinesis' reason, to be started again).
pub async fn stream_limits(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Limits, SdkError<DescribeStreamSummaryError>> {
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await?;
    let kib = summary
        .stream_description_summary()
        .and_then(|s| s.max_record_size_in_kib());
    Ok(limits_for(kib))
}

pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: Arc<str>,
    metrics: Arc<Metrics>,
    /// Where records above the limit are stored whole (`super::claims`); without it they go
    /// out slim only, and the relay parks them.
    claims: Option<ClaimCheckStore>,
    /// The stream's own limits ([`stream_limits`]); [`LIMITS`] unless told otherwise.
    limits: Limits,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            stream: stream.into(),
            metrics,
            claims: None,
            limits: LIMITS,
        }
    }

    /// Sends by these limits (the stream's, read by [`stream_limits`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Stores records above Kinesis' limit whole in this bucket, with a claim check in the stream.
    pub fn with_claim_checks(mut self, store: ClaimCheckStore) -> Self {
        self.claims = Some(store);
        self
    }
}

impl Sink for KinesisSink {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn submit(&self, batch: Batch) -> Completion {
        let (tx, rx) = oneshot::channel();
        let (client, stream, metrics) = (self.client.clone(), self.stream.clone(), self.metrics.clone());
        let (claims, limits) = (self.claims.clone(), self.limits);
        tokio::spawn(async move {
            let mut records = batch.records;
            let result = match &claims {
                Some(store) => super::claims::attach(store, &mut records).await,
                None => Ok(()),
            };
            let result = match result {
                Ok(()) => put_all(&client, &stream, records, limits, &metrics).await,
                Err(err) => Err(err),
            };
            let _ = tx.send(result);
        });
        rx
    }
}

/// How one PutRecords attempt ended.
#[derive(Debug)]
enum Attempt {
    /// These records (a subset of the request, in order) must be sent again.
    Retry {
        records: Vec<Record>,
        cause: &'static str,
    },
    Done,
}

async fn put_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<Record>,
    limits: Limits,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    for round in rounds(records) {
        for request in requests(round, limits) {
            put_round(client, stream, request, metrics).await?;
        }
    }
    Ok(())
}

/// Splits a round into PutRecords requests within the call's limits, in order. A batch closes
/// with room for a record of ordinary size, not of the largest one the stream takes (with
/// 10 MiB records that would make every batch one record), so a batch may hold more than one
/// call: it goes as several, one after the other. A round holds one record per key, so the
/// split keeps each key's order.
fn requests(round: Vec<Record>, limits: Limits) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut bytes = 0;
    for record in round {
        let size = record.size();
        match out.last_mut() {
            Some(last) if last.len() < limits.records_per_batch && bytes + size <= limits.bytes_per_batch => {
                last.push(record);
                bytes += size;
            }
            _ => {
                out.push(vec![record]);
                bytes = size;
            }
        }
    }
    out
}

/// Splits a batch into rounds: round *n* holds the *n*-th record of each partition key, in batch
/// order. PutRecords does not keep order inside one request (a failed entry does not stop the
/// later ones), so two records of one key never share a request: a round is sent, and its failed
/// entries retried, until every record in it landed, and only then the next round goes. One
/// aggregate's records therefore reach Kinesis in commit order, partial failures included.
fn rounds(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut rounds: Vec<Vec<Record>> = Vec::new();
    for record in records {
        let n = seen.entry(record.partition_key.clone()).or_insert(0);
        if rounds.len() == *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(record);
        *n += 1;
    }
    rounds
}

async fn put_round(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    mut pending: Vec<Record>,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::data_path();
    loop {
        match put_once(client, stream, pending, metrics).await? {
            Attempt::Done => return Ok(()),
            Attempt::Retry { records, cause } => {
                metrics
                    .put_retries
                    .get_or_create(&vec![("cause".to_owned(), cause.to_owned())])
                    .inc();
                let delay = backoff.next_delay();
                tracing::warn!(
                    stream,
                    cause,
                    records = records.len(),
                    attempt = backoff.attempts(),
                    delay_ms = delay.as_millis() as u64,
                    "putrecords retry"
                );
                tokio::time::sleep(delay).await;
                pending = records;
            }
        }
    }
}

async fn put_once(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    pending: Vec<Record>,
    metrics: &Metrics,
) -> Result<Attempt, SinkError> {
    let entries: Vec<PutRecordsRequestEntry> = pending
        .iter()
        .map(|r| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(r.data.to_vec()))
                .partition_key(r.partition_key.clone())
                .build()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| SinkError::Rejected {
            code: "InvalidRecord".into(),
            source: Box::new(e),
        })?;
    let response = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await;
    let output = match response {
        Ok(output) => output,
        Err(err) => {
            return match classify(&err) {
                Some(cause) => Ok(Attempt::Retry {
                    records: pending,
                    cause,
                }),
                None if is_missing_stream(&err) => Err(SinkError::StreamMissing {
                    stream: stream.into(),
                }),
                None => Err(SinkError::Rejected {
                    code: err.code().unwrap_or("unknown").to_owned(),
                    source: Box::new(err),
                }),
            };
        }
    };
    metrics.put_calls.inc();
    let results: Vec<EntryResult> = output
        .records()
        .iter()
        .map(|r| EntryResult {
            error_code: r.error_code().map(str::to_owned),
            stored: r.sequence_number().is_some_and(|s| !s.is_empty()),
        })
        .collect();
    let (attempt, accepted) = settle(pending, output.failed_record_count(), &results);
    metrics.records_published.inc_by(accepted as u64);
    Ok(attempt)
}

/// One entry of a PutRecords answer.
#[derive(Debug, Clone)]
struct EntryResult {
    error_code: Option<String>,
    /// Kinesis gave the entry a sequence number: it is in the stream.
    stored: bool,
}

/// What a PutRecords answer means for the records sent, and how many landed. A record counts
/// as stored only when its own entry says so (a sequence number, no error code): the
/// `FailedRecordCount` alone is never trusted, in either direction.
fn settle(pending: Vec<Record>, failed_count: Option<i32>, results: &[EntryResult]) -> (Attempt, usize) {
    if results.len() != pending.len() {
        // Without one result per entry, positions mean nothing: resend the whole request.
        return (
            Attempt::Retry {
                records: pending,
                cause: "malformed_response",
            },
            0,
        );
    }
    let mut failed = Vec::new();
    let mut throttled = false;
    for (record, result) in pending.iter().zip(results) {
        if result.error_code.is_some() || !result.stored {
            throttled |= result.error_code.as_deref() == Some("ProvisionedThroughputExceededException");
            failed.push(record.clone());
        }
    }
    let accepted = pending.len() - failed.len();
    if failed.is_empty() {
        if failed_count.unwrap_or(0) > 0 {
            // A failure count without a failed entry: trust neither, resend the request.
            return (
                Attempt::Retry {
                    records: pending,
                    cause: "malformed_response",
                },
                0,
            );
        }
        return (Attempt::Done, accepted);
    }
    let cause = if throttled { "throttled" } else { "partial_failure" };
    (
        Attempt::Retry {
            records: failed,
            cause,
        },
        accepted,
    )
}

/// Returns the retry cause for transient failures, `None` for errors retrying cannot fix.
fn classify(err: &SdkError<PutRecordsError>) -> Option<&'static str> {
    match err.as_service_error() {
        Some(
            PutRecordsError::ProvisionedThroughputExceededException(_)
            | PutRecordsError::KmsThrottlingException(_),
        ) => Some("throttled"),
        _ => transient_cause(err),
    }
}

fn is_missing_stream(err: &SdkError<PutRecordsError>) -> bool {
    matches!(
        err.as_service_error(),
        Some(PutRecordsError::ResourceNotFoundException(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, n: u8) -> Record {
        Record {
            claim: None,
            partition_key: key.into(),
            data: bytes::Bytes::from(vec![n]),
        }
    }

    fn ok() -> EntryResult {
        EntryResult {
            error_code: None,
            stored: true,
        }
    }

    fn failed(code: &str) -> EntryResult {
        EntryResult {
            error_code: Some(code.into()),
            stored: false,
        }
    }

    fn sent(attempt: &Attempt) -> Vec<u8> {
        match attempt {
            Attempt::Retry { records, .. } => records.iter().map(|r| r.data[0]).collect(),
            Attempt::Done => Vec::new(),
        }
    }

    #[test]
    fn a_failed_entry_is_retried_even_when_the_count_says_none_failed() {
        let batch = vec![record("a", 1), record("b", 2), record("c", 3)];
        let results = [ok(), failed("InternalFailure"), ok()];
        for count in [None, Some(0)] {
            let (attempt, accepted) = settle(batch.clone(), count, &results);
            assert_eq!(sent(&attempt), [2], "count {count:?}");
            assert_eq!(accepted, 2);
        }
    }

    #[test]
    fn an_entry_without_a_sequence_number_is_not_stored() {
        let batch = vec![record("a", 1), record("b", 2)];
        let silent = EntryResult {
            error_code: None,
            stored: false,
        };
        let (attempt, accepted) = settle(batch, Some(0), &[ok(), silent]);
        assert_eq!(sent(&attempt), [2]);
        assert_eq!(accepted, 1);
    }

    #[test]
    fn a_count_without_failed_entries_or_a_short_answer_resends_everything() {
        let batch = vec![record("a", 1), record("b", 2)];
        let (attempt, _) = settle(batch.clone(), Some(1), &[ok(), ok()]);
        assert_eq!(sent(&attempt), [1, 2]);
        let (attempt, accepted) = settle(batch.clone(), Some(0), &[ok()]);
        assert_eq!((sent(&attempt), accepted), (vec![1, 2], 0));
        let (attempt, accepted) = settle(batch, Some(0), &[ok(), ok()]);
        assert!(matches!(attempt, Attempt::Done));
        assert_eq!(accepted, 2);
    }

    #[test]
    fn throttling_is_named_as_the_cause() {
        let batch = vec![record("a", 1), record("b", 2)];
        let (attempt, _) = settle(
            batch,
            Some(1),
            &[ok(), failed("ProvisionedThroughputExceededException")],
        );
        assert!(matches!(
            attempt,
            Attempt::Retry {
                cause: "throttled",
                ..
            }
        ));
    }

    #[test]
    fn two_records_of_one_key_never_share_a_request() {
        let batch = vec![
            record("a", 1),
            record("b", 2),
            record("a", 3),
            record("c", 4),
            record("a", 5),
            record("b", 6),
        ];
        let rounds: Vec<Vec<u8>> = rounds(batch)
            .iter()
            .map(|r| r.iter().map(|r| r.data[0]).collect())
            .collect();
        assert_eq!(rounds, [vec![1, 2, 4], vec![3, 6], vec![5]]);
        // Distinct keys: one request, as before.
        let distinct = vec![record("a", 1), record("b", 2), record("c", 3)];
        assert_eq!(super::rounds(distinct).len(), 1);
    }

    fn sized(key: &str, bytes: usize) -> Record {
        Record {
            claim: None,
            partition_key: key.into(),
            data: bytes::Bytes::from(vec![b'x'; bytes - key.len()]),
        }
    }

    #[test]
    fn a_stream_with_larger_records_takes_larger_calls() {
        assert_eq!(limits_for(None), LIMITS);
        assert_eq!(limits_for(Some(1024)), LIMITS);
        let large = limits_for(Some(4096));
        assert_eq!(large.bytes_per_record, 4 * 1024 * 1024);
        assert_eq!(large.bytes_per_batch, 10 * 1024 * 1024);
        assert_eq!(large.records_per_batch, 500);
        assert_eq!(limits_for(Some(10_240)).bytes_per_record, 10 * 1024 * 1024);
    }

    #[test]
    fn a_round_above_one_call_goes_as_several_in_order() {
        const MIB: usize = 1024 * 1024;
        let limits = limits_for(Some(10_240));
        // 9 MiB of ordinary records, then three of 4 MiB: 9 + 4 > 10, 4 + 4, then 4.
        let mut round: Vec<Record> = (0..9).map(|i| sized(&format!("k{i}"), MIB)).collect();
        round.extend(["a", "b", "c"].map(|k| sized(k, 4 * MIB)));
        let calls = requests(round, limits);
        let keys: Vec<Vec<&str>> = calls
            .iter()
            .map(|c| c.iter().map(|r| r.partition_key.as_str()).collect())
            .collect();
        assert_eq!(
            keys,
            vec![
                vec!["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"],
                vec!["a", "b"],
                vec!["c"]
            ]
        );
        for call in &calls {
            assert!(call.iter().map(Record::size).sum::<usize>() <= limits.bytes_per_batch);
        }
        // 501 small records: two calls, the second with one.
        let many: Vec<Record> = (0..501).map(|i| sized(&format!("k{i}"), 100)).collect();
        let calls = requests(many, LIMITS);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![500, 1]);
    }
}
