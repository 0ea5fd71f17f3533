//! The Kinesis sink: PutRecords with retries of exactly the entries that failed.
//!
//! Each failed entry is matched to its record by position in *that* request's own list, and
//! only those are sent again, with backoff and jitter. Kinesis does not keep order across a
//! partial failure, which is why every record carries `(commit-lsn, transaction-record-id)`.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::oneshot;

use super::{Batch, Completion, Sink, SinkError};
use crate::dms::Record;
use crate::metrics::Metrics;
use crate::retry::{transient_cause, Backoff};

/// Most records one PutRecords call takes.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data plus partition keys) one PutRecords call takes.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: Arc<str>,
    metrics: Arc<Metrics>,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            stream: stream.into(),
            metrics,
        }
    }
}

impl Sink for KinesisSink {
    fn submit(&self, batch: Batch) -> Completion {
        let (tx, rx) = oneshot::channel();
        let (client, stream, metrics) = (self.client.clone(), self.stream.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let result = put_all(&client, &stream, batch.records, &metrics).await;
            let _ = tx.send(result);
        });
        rx
    }
}

/// How one PutRecords attempt ended.
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
    mut pending: Vec<Record>,
    metrics: &Metrics,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
    if output.failed_record_count().unwrap_or(0) == 0 {
        metrics.records_published.inc_by(pending.len() as u64);
        return Ok(Attempt::Done);
    }
    let results = output.records();
    if results.len() != pending.len() {
        // Without one result per entry, positions mean nothing: resend the whole request.
        return Ok(Attempt::Retry {
            records: pending,
            cause: "malformed_response",
        });
    }
    let mut failed = Vec::new();
    let mut throttled = false;
    let resend = pending.clone();
    for (record, result) in pending.into_iter().zip(results) {
        match result.error_code() {
            Some(code) => {
                throttled |= code == "ProvisionedThroughputExceededException";
                failed.push(record);
            }
            None => {
                metrics.records_published.inc();
            }
        }
    }
    if failed.is_empty() {
        // A failure count without a failed entry: trust neither, resend the request.
        return Ok(Attempt::Retry {
            records: resend,
            cause: "malformed_response",
        });
    }
    let cause = if throttled { "throttled" } else { "partial_failure" };
    Ok(Attempt::Retry {
        records: failed,
        cause,
    })
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
