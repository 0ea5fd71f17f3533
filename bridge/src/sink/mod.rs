//! Where captured records go. A sink takes a batch and returns at once; the batch's completion
//! comes back separately, once every record in it was durably accepted. A partial failure is
//! never a completion: the sink retries the failed records until they land or a fatal error ends it.

pub mod claims;
pub mod kinesis;
pub mod null;

use tokio::sync::oneshot;

use crate::dms::Record;

/// Records to publish together (one PutRecords call when they fit in one).
#[derive(Debug, Default)]
pub struct Batch {
    pub seq: u64,
    pub records: Vec<Record>,
}

/// Why a batch could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kinesis stream `{stream}` does not exist; run `bridge setup` first")]
    StreamMissing { stream: String },
    #[error("kinesis refused the request and retrying cannot help ({code})")]
    Rejected {
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the sink stopped before the batch completed")]
    Gone,
    /// A record above Kinesis' limit could not be stored whole (see `claims`).
    #[error(
        "a record above the Kinesis stream's record limit cannot be stored in S3 (--claim-check-bucket)"
    )]
    ClaimCheck(#[source] eventing::claim_check::ClaimCheckError),
}

/// The completion of one batch: `Ok` once every record is durable.
pub type Completion = oneshot::Receiver<Result<(), SinkError>>;

/// What one batch, and one record, may hold: the sink's own limits, which capture batches by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub records_per_batch: usize,
    /// Data plus partition keys.
    pub bytes_per_batch: usize,
    /// One record's data plus partition key; a larger one is sent without its large values.
    pub bytes_per_record: usize,
}

pub trait Sink: Send + Sync + 'static {
    /// Hands a batch over and returns at once; the completion resolves later.
    fn submit(&self, batch: Batch) -> Completion;

    fn limits(&self) -> Limits;
}
