//! A sink that accepts everything at once: for benchmarks of the capture path alone.

use tokio::sync::oneshot;

use super::{Batch, Completion, Limits, Sink};

#[derive(Default)]
pub struct NullSink;

impl Sink for NullSink {
    /// Kinesis' own, so a benchmark of the capture path batches as it would for real.
    fn limits(&self) -> Limits {
        super::kinesis::LIMITS
    }

    fn submit(&self, _batch: Batch) -> Completion {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}
