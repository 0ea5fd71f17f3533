//! DMS records → domain events: the blog's Lambda, as a pure function.
//!
//! An outbox insert becomes an event with the envelope
//! `{"metadata": {event_id, aggregate_type, aggregate_id, aggregate_version, occurred_at,
//! commit_lsn, traceparent}, "data": <payload>}`; other changes are skipped (or, when
//! configured, published raw); a record that cannot be understood is a dead letter with its reason.
//!
//! The payload is never re-encoded: it travels as the JSON text it arrived as
//! ([`RawValue`]), so a number such as `12345678901234567.89` keeps every digit.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::table::TableName;

pub use eventing::event::{null_data, Event};

#[derive(Debug, PartialEq)]
pub enum Decision {
    Publish(Event),
    Skip,
    DeadLetter(String),
    /// The record stands for a larger one stored in S3 (capture's claim check): decide on that.
    Claimed(ClaimRef),
}

/// `metadata.claim-check` of a record capture sent without its large values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ClaimRef {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Clone, Debug)]
pub struct EnvelopeConfig {
    pub outbox: TableName,
    /// Publish changes of other tables as raw change events instead of skipping them.
    pub publish_raw_changes: bool,
    /// The outbox types to publish; empty means every type. A schema gate: a type nobody
    /// declared is a bug upstream (a typo, a release out of order), parked rather than sent.
    pub event_types: std::collections::BTreeSet<String>,
}

/// A DMS record, borrowed from the Kinesis record's bytes: nothing is copied or re-encoded
/// until the event is written (one allocation for its metadata, one for its payload).
///
/// Read in one pass: the metadata and the row's columns are picked out as the record is
/// parsed, rather than read as raw text first and parsed again.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    metadata: Option<Lenient<DmsMetadata<'a>>>,
    /// Read as outbox columns whatever the table: borrowed, so a row of another table costs
    /// no more than skipping it.
    #[serde(borrow, default)]
    data: Option<Lenient<OutboxRow<'a>>>,
}

/// A JSON object read as `T`, or — for any other JSON value — what kind of value stood there:
/// the record is still read, and the caller says what it missed.
enum Lenient<T> {
    Object(T),
    Not(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}

struct LenientVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Lenient::Object)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Lenient::Not("an array"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Lenient::Not("a string"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient::Not("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient::Not("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient::Not("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient::Not("a number"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Not("null"))
    }
}

/// The DMS metadata fields the envelope reads, each as raw JSON (a field of an unexpected
/// type reads as absent, as it did when the metadata was a `Value`).
#[derive(Deserialize, Default)]
struct DmsMetadata<'a> {
    #[serde(borrow, default, rename = "schema-name")]
    schema: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "table-name")]
    table: Option<&'a RawValue>,
    #[serde(borrow, default)]
    operation: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "record-type")]
    record_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "commit-lsn")]
    commit_lsn: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "transaction-record-id")]
    transaction_record_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "dropped-columns")]
    dropped_columns: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "message-prefix")]
    message_prefix: Option<&'a RawValue>,
    #[serde(borrow, default)]
    lsn: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "claim-check")]
    claim_check: Option<&'a RawValue>,
}

/// The outbox columns the envelope needs, raw; `payload` stays raw into the event.
#[derive(Deserialize, Default)]
struct OutboxRow<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    aggregatetype: Option<&'a RawValue>,
    #[serde(borrow, default)]
    aggregateid: Option<&'a RawValue>,
    #[serde(borrow, default)]
    aggregate_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    occurred_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tracingspancontext: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// The outbox event's metadata, written once. A column absent from the record is `null`.
#[derive(Serialize)]
struct OutboxMetadata<'a> {
    event_id: &'a str,
    aggregate_type: Option<&'a RawValue>,
    aggregate_id: Option<&'a RawValue>,
    aggregate_version: Option<Version<'a>>,
    occurred_at: Option<&'a RawValue>,
    commit_lsn: Option<&'a RawValue>,
    traceparent: Option<&'a RawValue>,
    /// Read again from the table (a resync or a backfill), not a new change: a rule can
    /// include or exclude such events, and inboxes absorb repeats.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

/// `aggregate_version`: a JSON number as written, or a number written as text, parsed.
#[derive(Serialize)]
#[serde(untagged)]
enum Version<'a> {
    Number(&'a RawValue),
    Parsed(i64),
}

/// A raw change event's metadata.
#[derive(Serialize)]
struct ChangeMetadata<'a> {
    commit_lsn: Option<&'a RawValue>,
    operation: &'a str,
    table: String,
}

/// A JSON string's text (`None` for absent, null, or anything but a string).
fn text<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let raw = raw?.get();
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    // Without an escape the text is what stands between the quotes (most fields: ids, names,
    // LSNs); only an escaped one is decoded.
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<'a, str>>(raw).ok()
}

fn version(raw: Option<&RawValue>) -> Option<Version<'_>> {
    let raw = raw?;
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text)
            .ok()?
            .parse::<i64>()
            .ok()
            .map(Version::Parsed);
    }
    // A number (not null, a bool, an array or an object).
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')).then_some(Version::Number(raw))
}

/// Decides what one Kinesis record becomes.
pub fn decide(raw: &[u8], cfg: &EnvelopeConfig) -> Decision {
    let record: Record = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(err) if err.is_data() => {
            return Decision::DeadLetter(format!("record is not a JSON object: {err}"))
        }
        Err(err) => return Decision::DeadLetter(format!("record is not JSON: {err}")),
    };
    let meta = match record.metadata {
        Some(Lenient::Object(meta)) => meta,
        _ => DmsMetadata::default(),
    };
    let (Some(schema), Some(table), Some(operation)) =
        (text(meta.schema), text(meta.table), text(meta.operation))
    else {
        return Decision::DeadLetter(
            "record has no metadata.schema-name/table-name/operation (not a DMS record)".into(),
        );
    };
    if text(meta.record_type).is_some_and(|t| t != "data") {
        return Decision::Skip;
    }
    let is_outbox = schema == cfg.outbox.schema && table == cfg.outbox.name;
    let wanted = if is_outbox {
        operation == "insert" || operation == "load"
    } else {
        cfg.publish_raw_changes
    };
    if !wanted {
        return Decision::Skip;
    }
    if let Some(check) = meta.claim_check {
        return match serde_json::from_str::<ClaimRef>(check.get()) {
            Ok(check) => Decision::Claimed(check),
            Err(err) => Decision::DeadLetter(format!("record has an unreadable metadata.claim-check: {err}")),
        };
    }
    if !is_outbox {
        if !cfg.publish_raw_changes {
            return Decision::Skip;
        }
        let id = format!(
            "{}:{}",
            text(meta.commit_lsn).as_deref().unwrap_or("?"),
            meta.transaction_record_id
                .and_then(|r| r.get().parse::<u64>().ok())
                .unwrap_or(0)
        );
        // The whole record is the event's data, as it came.
        let Ok(data) = serde_json::from_slice::<&RawValue>(raw) else {
            return Decision::DeadLetter("record is not UTF-8 JSON".into());
        };
        let metadata = ChangeMetadata {
            commit_lsn: meta.commit_lsn,
            operation: &operation,
            table: format!("{schema}.{table}"),
        };
        return Decision::Publish(Event::new(
            id,
            format!("{schema}.{table}.{operation}"),
            &metadata,
            data,
            None,
        ));
    }
    if operation != "insert" && operation != "load" {
        return Decision::Skip;
    }
    let row = match record.data {
        None => OutboxRow::default(),
        Some(Lenient::Object(row)) => row,
        Some(Lenient::Not(what)) => {
            return Decision::DeadLetter(format!(
                "outbox record's data is not an object of columns: it is {what}"
            ))
        }
    };
    let id = text(row.id).filter(|s| !s.is_empty());
    let dropped: Vec<Cow<str>> = meta
        .dropped_columns
        .and_then(|d| serde_json::from_str::<Vec<Value>>(d.get()).ok())
        .map(|d| {
            d.into_iter()
                .filter_map(|v| v.as_str().map(|s| Cow::Owned(s.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if !dropped.is_empty() {
        let names = dropped.join(", ");
        // A table-less outbox event has no row to read back: say where it was and what to do.
        if let Some(prefix) = text(meta.message_prefix) {
            let lsn = text(meta.lsn);
            return Decision::DeadLetter(format!(
                "outbox message {} (pg_logical_emit_message with prefix `{prefix}` at LSN {}) was above \
                 the Kinesis stream's record limit and arrived without {names}; it has no table row, so emit it \
                 again below the limit",
                id.as_deref().unwrap_or("without an id"),
                lsn.as_deref().unwrap_or("?"),
            ));
        }
        return Decision::DeadLetter(format!(
            "outbox row {} was above the Kinesis stream's record limit and arrived without {names}; \
             the whole row is still in the outbox table",
            id.as_deref().unwrap_or("without an id"),
        ));
    }
    let Some(event_id) = id else {
        return Decision::DeadLetter("outbox row has no id".into());
    };
    let event_type = text(row.event_type);
    let Some(event_type) = event_type.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has no usable type (null, empty or not text)"
        ));
    };
    if !cfg.event_types.is_empty() && !cfg.event_types.contains(event_type) {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has an unknown event type `{event_type}` (not in --event-types / BRIDGE_EVENT_TYPES)"
        ));
    }
    // A text payload column, or DMS's escaped JSON: it must parse as JSON, and is kept as that text.
    let payload_text = text(row.payload);
    let payload = match (&payload_text, row.payload) {
        (Some(text), _) => match serde_json::from_str::<&RawValue>(text) {
            Ok(v) => v,
            Err(err) => {
                return Decision::DeadLetter(format!(
                    "outbox row {event_id}: payload is not valid JSON: {err}"
                ))
            }
        },
        (None, Some(raw)) => raw,
        (None, None) => null_data(),
    };
    let metadata = OutboxMetadata {
        event_id: &event_id,
        aggregate_type: row.aggregatetype,
        aggregate_id: row.aggregateid,
        aggregate_version: version(row.aggregate_version),
        occurred_at: row.occurred_at,
        commit_lsn: meta.commit_lsn,
        traceparent: row.tracingspancontext,
        replayed: operation == "load",
    };
    Decision::Publish(Event::new(
        (*event_id).to_owned(),
        event_type.to_owned(),
        &metadata,
        payload,
        text(row.tracingspancontext).map(Cow::into_owned),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> EnvelopeConfig {
        EnvelopeConfig {
            outbox: "public.outbox".parse().unwrap(),
            publish_raw_changes: false,
            event_types: Default::default(),
        }
    }

    fn record(table: &str, op: &str, data: Value) -> Vec<u8> {
        json!({"data": data, "metadata": {"record-type": "data", "operation": op, "schema-name": "public",
            "table-name": table, "commit-lsn": "0/10", "transaction-record-id": 1}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_oversized_message_is_a_dead_letter_that_says_it_has_no_row() {
        let raw = json!({"data": {}, "metadata": {"record-type": "data", "operation": "insert",
            "schema-name": "public", "table-name": "outbox", "message-prefix": "outbox", "lsn": "0/AB",
            "dropped-columns": ["raw"]}})
        .to_string();
        match decide(raw.as_bytes(), &cfg()) {
            Decision::DeadLetter(reason) => assert!(
                reason.contains("outbox message without an id")
                    && reason.contains("at LSN 0/AB")
                    && reason.contains("without raw")
                    && reason.contains("no table row"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_record_sent_by_claim_check_is_decided_on_the_whole_record() {
        let check = json!({"bucket": "b", "key": "claim-checks/records/ab.json", "size": 9, "sha256": "ab"});
        let slim = |table: &str, op: &str, check: Value| {
            json!({"data": {"id": "e1"}, "metadata": {"record-type": "data", "operation": op,
                "schema-name": "public", "table-name": table, "dropped-columns": ["payload"],
                "claim-check": check}})
            .to_string()
        };
        assert_eq!(
            decide(slim("outbox", "insert", check.clone()).as_bytes(), &cfg()),
            Decision::Claimed(ClaimRef {
                bucket: "b".into(),
                key: "claim-checks/records/ab.json".into(),
                sha256: Some("ab".into()),
            })
        );
        // What is skipped anyway is not fetched.
        assert_eq!(
            decide(slim("customers", "insert", check.clone()).as_bytes(), &cfg()),
            Decision::Skip
        );
        assert_eq!(
            decide(slim("outbox", "delete", check).as_bytes(), &cfg()),
            Decision::Skip
        );
        match decide(slim("outbox", "insert", json!("s3://b/k")).as_bytes(), &cfg()) {
            Decision::DeadLetter(reason) => {
                assert!(reason.contains("unreadable metadata.claim-check"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_sent_without_its_large_values_is_a_dead_letter_not_an_empty_event() {
        let raw = json!({"data": {"id": "e1", "type": "DocumentStored", "payload": null},
            "metadata": {"record-type": "data", "operation": "insert", "schema-name": "public",
                "table-name": "outbox", "dropped-columns": ["payload"]}})
        .to_string();
        match decide(raw.as_bytes(), &cfg()) {
            Decision::DeadLetter(reason) => {
                assert!(
                    reason.contains("outbox row e1") && reason.contains("without payload"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_outbox_insert_becomes_an_event_with_the_envelope() {
        let raw = record(
            "outbox",
            "insert",
            json!({"id": "e1", "aggregatetype": "Order", "aggregateid": "o1",
            "type": "OrderPlaced", "payload": {"total": 3}, "aggregate_version": 2, "occurred_at": "t",
            "tracingspancontext": "00-abc-def-01"}),
        );
        let Decision::Publish(event) = decide(&raw, &cfg()) else {
            panic!("not published")
        };
        assert_eq!(event.detail_type, "OrderPlaced");
        let detail: Value = serde_json::from_str(event.detail()).unwrap();
        assert_eq!(detail["data"]["total"], 3);
        assert_eq!(detail["metadata"]["event_id"], "e1");
        assert_eq!(detail["metadata"]["aggregate_version"], 2);
        assert_eq!(detail["metadata"]["commit_lsn"], "0/10");
        assert_eq!(detail["metadata"]["traceparent"], "00-abc-def-01");
    }

    #[test]
    fn a_reloaded_outbox_row_is_published_flagged_as_replayed() {
        let row = json!({"id": "e1", "type": "OrderPlaced", "payload": {}});
        let Decision::Publish(event) = decide(&record("outbox", "load", row.clone()), &cfg()) else {
            panic!("not published")
        };
        let detail: Value = serde_json::from_str(event.detail()).unwrap();
        assert_eq!(detail["metadata"]["replayed"], true);
        let Decision::Publish(event) = decide(&record("outbox", "insert", row), &cfg()) else {
            panic!("not published")
        };
        let detail: Value = serde_json::from_str(event.detail()).unwrap();
        assert!(
            detail["metadata"].get("replayed").is_none(),
            "a change is not a replay"
        );
    }

    #[test]
    fn the_payload_reaches_the_event_digit_for_digit() {
        // Beyond f64: re-encoding through `Value` would publish 1.2345678901234568e16.
        let payload = r#"{"total": 12345678901234567.89, "big": 123456789012345678901234567890, "tiny": 1e-400, "name": "\u00e9t\u00e9 \ud83d\ude80", "deep": [[[{"a": [1.50]}]]]}"#;
        let raw = format!(
            r#"{{"data": {{"id": "e1", "type": "T", "payload": {payload}}}, "metadata": {{"record-type": "data",
            "operation": "insert", "schema-name": "public", "table-name": "outbox", "commit-lsn": "0/1"}}}}"#
        );
        let Decision::Publish(event) = decide(raw.as_bytes(), &cfg()) else {
            panic!("not published")
        };
        assert_eq!(event.data(), payload);
        assert!(
            event.detail().ends_with(&format!(r#""data":{payload}}}"#)),
            "{}",
            event.detail()
        );
        // A payload in a text column (DMS's escaped JSON) is the text itself.
        let escaped = serde_json::to_string(payload).unwrap();
        let raw = raw.replace(
            &format!("\"payload\": {payload}"),
            &format!("\"payload\": {escaped}"),
        );
        let Decision::Publish(event) = decide(raw.as_bytes(), &cfg()) else {
            panic!("not published")
        };
        assert_eq!(event.data(), payload);
    }

    #[test]
    fn escaped_texts_are_decoded_plain_ones_read_as_they_stand() {
        let raw = record(
            "outbox",
            "insert",
            json!({"id": "e\"1é", "type": "Order\\Placed", "aggregateid": "o\n1", "payload": {}}),
        );
        let Decision::Publish(event) = decide(&raw, &cfg()) else {
            panic!("not published")
        };
        assert_eq!(event.event_id, "e\"1\u{e9}");
        assert_eq!(event.detail_type, "Order\\Placed");
        assert_eq!(event.metadata_value()["aggregate_id"], "o\n1");
        assert_eq!(
            text(Some(&RawValue::from_string("\"a/b\"".into()).unwrap())).as_deref(),
            Some("a/b")
        );
        assert_eq!(
            text(Some(&RawValue::from_string("\"a\\/b\"".into()).unwrap())).as_deref(),
            Some("a/b")
        );
        assert_eq!(text(Some(&RawValue::from_string("7".into()).unwrap())), None);
    }

    #[test]
    fn other_tables_and_other_operations_are_skipped() {
        assert_eq!(
            decide(&record("customers", "insert", json!({"id": 1})), &cfg()),
            Decision::Skip
        );
        assert_eq!(
            decide(&record("outbox", "delete", json!({"id": "e"})), &cfg()),
            Decision::Skip
        );
        let raw_cfg = EnvelopeConfig {
            publish_raw_changes: true,
            ..cfg()
        };
        let Decision::Publish(e) = decide(&record("customers", "update", json!({"id": 1})), &raw_cfg) else {
            panic!("raw change not published")
        };
        assert_eq!(e.detail_type, "public.customers.update");
    }

    #[test]
    fn bad_records_are_dead_letters_with_a_reason() {
        let reason = |raw: &[u8]| match decide(raw, &cfg()) {
            Decision::DeadLetter(r) => r,
            other => panic!("expected a dead letter, got {other:?}"),
        };
        assert!(reason(b"garbage").contains("not JSON"));
        assert!(reason(br#""text""#).contains("not a JSON object"));
        assert!(reason(b"[1, 2]").contains("not a DMS record"));
        assert!(reason(b"{}").contains("not a DMS record"));
        assert!(
            reason(&record("outbox", "insert", json!({"id": "e", "type": null}))).contains("no usable type")
        );
        assert!(reason(&record(
            "outbox",
            "insert",
            json!({"id": "e", "type": "T", "payload": "{bad"})
        ))
        .contains("not valid JSON"));
        assert!(reason(&record("outbox", "insert", json!({"type": "T"}))).contains("no id"));
        assert!(reason(&record("outbox", "insert", json!("e1")))
            .contains("data is not an object of columns: it is a string"));
        assert!(reason(&record("outbox", "insert", json!([{"id": "e1"}]))).contains("it is an array"));
        // Metadata that is not an object is no metadata; the rest of the record is still read.
        assert!(
            reason(br#"{"metadata": [{"operation": "insert"}], "data": {"id": "e"}}"#)
                .contains("not a DMS record")
        );
        // Another table's data is not read for an event: whatever it is, the change is skipped.
        assert_eq!(
            decide(&record("customers", "insert", json!(7)), &cfg()),
            Decision::Skip
        );
        let gated = EnvelopeConfig {
            event_types: ["OrderPlaced".to_owned()].into(),
            ..cfg()
        };
        let unknown = record(
            "outbox",
            "insert",
            json!({"id": "e", "type": "OrderPlacd", "payload": {}}),
        );
        match decide(&unknown, &gated) {
            Decision::DeadLetter(reason) => assert!(
                reason.contains("outbox row e") && reason.contains("unknown event type `OrderPlacd`"),
                "{reason}"
            ),
            other => panic!("expected a dead letter, got {other:?}"),
        }
        let known = record(
            "outbox",
            "insert",
            json!({"id": "e", "type": "OrderPlaced", "payload": {}}),
        );
        assert!(matches!(decide(&known, &gated), Decision::Publish(_)));
        assert!(matches!(decide(&unknown, &cfg()), Decision::Publish(_)));
    }
}
