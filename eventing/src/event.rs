//! A domain event as every service publishes it: the envelope
//! `{"metadata": {...}, "data": <payload>}`, with the payload kept as the JSON text it arrived as
//! ([`RawValue`]), so a number such as `12345678901234567.89` keeps every digit.

use serde_json::value::RawValue;

const HEAD: &str = "{\"metadata\":";
const MIDDLE: &str = ",\"data\":";
/// Room for a metadata object without growing the buffer (the relay's are ~250 bytes).
const METADATA_ROOM: usize = 384;

/// A domain event, ready for EventBridge.
///
/// The envelope is written once, where the event is made, into one buffer: the relay makes one
/// event per record, and writing the metadata, copying the payload and then joining both into a
/// detail cost three allocations and two copies per event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: String,
    pub detail_type: String,
    /// `{"metadata":…,"data":…}`.
    detail: String,
    /// Where the metadata object ends in `detail`.
    metadata_end: usize,
    /// `metadata.traceparent`, for the X-Ray header and the publish span.
    pub traceparent: Option<String>,
    /// Where a route sends it; `None` is the publisher's own bus and source.
    pub destination: Option<std::sync::Arc<Destination>>,
}

/// A route's bus (a name, or another account's bus by ARN) and `Source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub bus: Option<String>,
    pub source: Option<String>,
}

impl Event {
    /// An event whose envelope holds `metadata` (a typed struct, or any value) and `data`
    /// verbatim.
    pub fn new(
        event_id: String,
        detail_type: String,
        metadata: &impl serde::Serialize,
        data: &RawValue,
        traceparent: Option<String>,
    ) -> Self {
        let data = data.get();
        let mut detail = Vec::with_capacity(HEAD.len() + METADATA_ROOM + MIDDLE.len() + data.len() + 1);
        detail.extend_from_slice(HEAD.as_bytes());
        // Plain structs of strings, numbers and JSON values cannot fail to serialise.
        if serde_json::to_writer(&mut detail, metadata).is_err() {
            detail.truncate(HEAD.len());
            detail.extend_from_slice(b"{}");
        }
        let metadata_end = detail.len();
        detail.extend_from_slice(MIDDLE.as_bytes());
        detail.extend_from_slice(data.as_bytes());
        detail.push(b'}');
        // serde_json writes UTF-8, and the rest was text already.
        let detail =
            String::from_utf8(detail).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Self {
            event_id,
            detail_type,
            detail,
            metadata_end,
            traceparent,
            destination: None,
        }
    }

    /// The same event, sent where `destination` says.
    #[must_use]
    pub fn to(mut self, destination: Option<std::sync::Arc<Destination>>) -> Self {
        self.destination = destination;
        self
    }

    /// The bus it goes to: its route's, else `default`.
    pub fn bus<'a>(&'a self, default: &'a str) -> &'a str {
        self.destination
            .as_ref()
            .and_then(|d| d.bus.as_deref())
            .unwrap_or(default)
    }

    /// Its `Source`: its route's, else `default`.
    pub fn source<'a>(&'a self, default: &'a str) -> &'a str {
        self.destination
            .as_ref()
            .and_then(|d| d.source.as_deref())
            .unwrap_or(default)
    }

    /// The envelope `{"metadata": …, "data": …}`: `data` goes out verbatim.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The envelope's `metadata` object, as JSON text.
    pub fn metadata(&self) -> &str {
        &self.detail[HEAD.len()..self.metadata_end]
    }

    /// The envelope's `data` (the outbox payload), exactly as the record carried it.
    pub fn data(&self) -> &str {
        &self.detail[self.metadata_end + MIDDLE.len()..self.detail.len() - 1]
    }

    /// The metadata as a value (for the rare paths that change it, and for tests).
    pub fn metadata_value(&self) -> serde_json::Value {
        serde_json::from_str(self.metadata()).unwrap_or_default()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.event_id == other.event_id
            && self.detail_type == other.detail_type
            && self.detail == other.detail
            && self.destination == other.destination
    }
}

/// The JSON `null`, for an event without payload.
pub fn null_data() -> &'static RawValue {
    RawValue::NULL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_holds_the_metadata_and_the_payload_verbatim() {
        let payload = r#"{"total": 12345678901234567.89, "name": "\u00e9"}"#;
        let data = serde_json::from_str::<&RawValue>(payload).unwrap();
        let metadata = serde_json::json!({"event_id": "e1", "note": "a \"quoted\" } brace"});
        let event = Event::new("e1".into(), "T".into(), &metadata, data, None);
        assert_eq!(event.data(), payload);
        assert_eq!(event.metadata_value(), metadata);
        assert_eq!(
            event.detail(),
            format!(r#"{{"metadata":{},"data":{payload}}}"#, event.metadata())
        );
        let parsed: serde_json::Value = serde_json::from_str(event.detail()).unwrap();
        assert_eq!(parsed["metadata"]["note"], "a \"quoted\" } brace");
        // A metadata object larger than the room set aside grows the buffer.
        let long = serde_json::json!({"event_id": "x".repeat(1000)});
        let event = Event::new("e2".into(), "T".into(), &long, null_data(), None);
        assert_eq!(event.metadata_value(), long);
        assert_eq!(event.data(), "null");
    }
}
