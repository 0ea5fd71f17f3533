//! Capture's part of the end-to-end trace: a span per outbox row, child of the `traceparent`
//! the monolith stored in the row, from when capture read the row to when Kinesis acknowledged
//! its batch. Kept per batch beside the in-flight queue; nothing at all when traces are off.

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::replication::pgoutput::{Datum, Relation, Tuple};

/// The outbox column the monolith writes its W3C `traceparent` into.
pub const TRACE_COLUMN: &str = "tracingspancontext";

/// The rows of the open batch and of each batch in flight, oldest first.
#[derive(Default)]
pub struct BatchTraces {
    open: Vec<(String, SystemTime)>,
    inflight: VecDeque<Vec<(String, SystemTime)>>,
}

impl BatchTraces {
    /// An outbox row went into the open batch: note its trace, if it has one.
    pub fn row(&mut self, relation: &Relation, row: &Tuple) {
        if !telemetry::enabled() {
            return;
        }
        let Some(i) = relation.columns.iter().position(|c| c.name == TRACE_COLUMN) else {
            return;
        };
        if let Some(Datum::Text(text)) = row.0.get(i) {
            if let Ok(traceparent) = std::str::from_utf8(text) {
                self.open.push((traceparent.to_owned(), SystemTime::now()));
            }
        }
    }

    /// The open batch was handed to the sink.
    pub fn submitted(&mut self) {
        if telemetry::enabled() {
            self.inflight.push_back(std::mem::take(&mut self.open));
        }
    }

    /// The oldest batch in flight completed: one span per row it carried.
    pub fn completed(&mut self, slot: &str, ok: bool) {
        let Some(rows) = self.inflight.pop_front() else {
            return;
        };
        if !ok {
            return;
        }
        let now = SystemTime::now();
        for (traceparent, read) in rows {
            telemetry::record(
                "capture kinesis.put_records",
                telemetry::Kind::Producer,
                &traceparent,
                read,
                now,
                vec![
                    telemetry::Attribute::new("messaging.system", "aws_kinesis"),
                    telemetry::Attribute::new("outbox_bridge.slot", slot.to_owned()),
                ],
            );
        }
    }
}
