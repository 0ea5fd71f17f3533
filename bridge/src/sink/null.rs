//! A sink that accepts everything at once: for benchmarks of the capture path alone.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::{Batch, Completion, Sink};

#[derive(Default)]
pub struct NullSink {
    pub records: AtomicU64,
}

impl Sink for NullSink {
    fn submit(&self, batch: Batch) -> Completion {
        self.records
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}
