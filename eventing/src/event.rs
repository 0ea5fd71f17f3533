//! A domain event as every service publishes it: the envelope
//! `{"metadata": {...}, "data": <payload>}`, with the payload kept as the JSON text it arrived as
//! ([`RawValue`]), so a number such as `12345678901234567.89` keeps every digit.

use serde_json::value::RawValue;
use serde_json::Value;

/// A domain event, ready for EventBridge.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: String,
    pub detail_type: String,
    /// The envelope's `metadata` object.
    pub metadata: Value,
    /// The envelope's `data` (the outbox payload), exactly as the record carried it.
    pub data: Box<RawValue>,
}

/// The envelope as it is written: `data` goes out verbatim.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    metadata: &'a Value,
    data: &'a RawValue,
}

impl Event {
    pub fn detail(&self) -> String {
        let envelope = Envelope {
            metadata: &self.metadata,
            data: &self.data,
        };
        // Serialising a `Value` and a validated `RawValue` cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.event_id == other.event_id
            && self.detail_type == other.detail_type
            && self.metadata == other.metadata
            && self.data.get() == other.data.get()
    }
}

/// The JSON `null`, for an event without payload.
pub fn null_data() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}
