//! A sink that accepts everything at once: for benchmarks of the capture path alone.

use tokio::sync::oneshot;

use super::{Batch, Completion, Sink};

#[derive(Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn submit(&self, _batch: Batch) -> Completion {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}
