//! A domain event as every service publishes it: the envelope
//! `{"metadata": {...}, "data": <payload>}`, with the payload kept as the JSON text it arrived as
//! ([`RawValue`]), so a number such as `12345678901234567.89` keeps every digit.

use serde_json::value::RawValue;

/// A domain event, ready for EventBridge.
///
/// `metadata` is serialised once, where the event is made (a typed struct, not a map built
/// key by key): the relay makes one per record, and the detail is two texts joined.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: String,
    pub detail_type: String,
    /// The envelope's `metadata` object, as JSON text.
    pub metadata: Box<RawValue>,
    /// The envelope's `data` (the outbox payload), exactly as the record carried it.
    pub data: Box<RawValue>,
    /// `metadata.traceparent`, for the X-Ray header and the publish span.
    pub traceparent: Option<String>,
}

impl Event {
    /// The envelope `{"metadata": …, "data": …}`: `data` goes out verbatim.
    pub fn detail(&self) -> String {
        let (metadata, data) = (self.metadata.get(), self.data.get());
        let mut detail = String::with_capacity(metadata.len() + data.len() + 24);
        detail.push_str("{\"metadata\":");
        detail.push_str(metadata);
        detail.push_str(",\"data\":");
        detail.push_str(data);
        detail.push('}');
        detail
    }

    /// The metadata as a value (for the rare paths that change it, and for tests).
    pub fn metadata_value(&self) -> serde_json::Value {
        serde_json::from_str(self.metadata.get()).unwrap_or_default()
    }
}

/// Serialises an event's metadata struct (or any value) as its JSON text.
pub fn metadata_json(metadata: &impl serde::Serialize) -> Box<RawValue> {
    // Plain structs of strings, numbers and JSON values cannot fail to serialise.
    serde_json::value::to_raw_value(metadata).unwrap_or_else(|_| empty_object())
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.event_id == other.event_id
            && self.detail_type == other.detail_type
            && self.metadata.get() == other.metadata.get()
            && self.data.get() == other.data.get()
    }
}

/// The JSON `null`, for an event without payload.
pub fn null_data() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}
