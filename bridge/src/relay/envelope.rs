//! DMS records → domain events: the blog's Lambda, as a pure function.
//!
//! An outbox insert becomes an event with the envelope
//! `{"metadata": {event_id, aggregate_type, aggregate_id, aggregate_version, occurred_at,
//! commit_lsn, traceparent}, "data": <payload>}`; other changes are skipped (or, when
//! configured, published raw); a record that cannot be understood is a dead letter with its reason.
//!
//! The payload is never re-encoded: it travels as the JSON text it arrived as
//! ([`RawValue`]), so a number such as `12345678901234567.89` keeps every digit.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::table::TableName;

pub use eventing::event::{null_data, Event};

#[derive(Debug, PartialEq)]
pub enum Decision {
    Publish(Event),
    Skip,
    DeadLetter(String),
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

/// A DMS record: `metadata` is read as a value, `data` is kept as text until we know its table.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(default)]
    metadata: Value,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The outbox columns the envelope needs; `payload` stays raw.
#[derive(Deserialize, Default)]
struct OutboxRow<'a> {
    #[serde(default)]
    id: Value,
    #[serde(default, rename = "type")]
    event_type: Value,
    #[serde(default)]
    aggregatetype: Value,
    #[serde(default)]
    aggregateid: Value,
    #[serde(default)]
    aggregate_version: Value,
    #[serde(default)]
    occurred_at: Value,
    #[serde(default)]
    tracingspancontext: Value,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
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
    let meta = &record.metadata;
    let (Some(schema), Some(table), Some(operation)) = (
        meta["schema-name"].as_str(),
        meta["table-name"].as_str(),
        meta["operation"].as_str(),
    ) else {
        return Decision::DeadLetter(
            "record has no metadata.schema-name/table-name/operation (not a DMS record)".into(),
        );
    };
    if meta["record-type"].as_str().is_some_and(|t| t != "data") {
        return Decision::Skip;
    }
    let is_outbox = schema == cfg.outbox.schema && table == cfg.outbox.name;
    if !is_outbox {
        if !cfg.publish_raw_changes {
            return Decision::Skip;
        }
        let id = format!(
            "{}:{}",
            meta["commit-lsn"].as_str().unwrap_or("?"),
            meta["transaction-record-id"].as_u64().unwrap_or(0)
        );
        // The whole record is the event's data, as it came (already parsed once above).
        let data = match std::str::from_utf8(raw).map(|text| RawValue::from_string(text.to_owned())) {
            Ok(Ok(data)) => data,
            _ => return Decision::DeadLetter("record is not UTF-8 JSON".into()),
        };
        return Decision::Publish(Event {
            event_id: id,
            detail_type: format!("{schema}.{table}.{operation}"),
            metadata: json!({"commit_lsn": meta["commit-lsn"], "operation": operation, "table": format!("{schema}.{table}")}),
            data,
        });
    }
    if operation != "insert" && operation != "load" {
        return Decision::Skip;
    }
    let row: OutboxRow = match record.data.map(|d| serde_json::from_str(d.get())) {
        None => OutboxRow::default(),
        Some(Ok(row)) => row,
        Some(Err(err)) => {
            return Decision::DeadLetter(format!("outbox record's data is not an object of columns: {err}"))
        }
    };
    let id = row.id.as_str().filter(|s| !s.is_empty());
    if let Some(dropped) = meta["dropped-columns"].as_array().filter(|d| !d.is_empty()) {
        let names: Vec<&str> = dropped.iter().filter_map(Value::as_str).collect();
        let names = names.join(", ");
        // A table-less outbox event has no row to read back: say where it was and what to do.
        if let Some(prefix) = meta["message-prefix"].as_str() {
            let lsn = meta["lsn"].as_str().unwrap_or("?");
            return Decision::DeadLetter(format!(
                "outbox message {} (pg_logical_emit_message with prefix `{prefix}` at LSN {lsn}) was above \
                 Kinesis' 1 MiB record limit and arrived without {names}; it has no table row, so emit it \
                 again below the limit",
                id.unwrap_or("without an id"),
            ));
        }
        return Decision::DeadLetter(format!(
            "outbox row {} was above Kinesis' 1 MiB record limit and arrived without {names}; \
             the whole row is still in the outbox table",
            id.unwrap_or("without an id"),
        ));
    }
    let Some(event_id) = id else {
        return Decision::DeadLetter("outbox row has no id".into());
    };
    let Some(event_type) = row.event_type.as_str().map(str::trim).filter(|s| !s.is_empty()) else {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has no usable type (null, empty or not text)"
        ));
    };
    if !cfg.event_types.is_empty() && !cfg.event_types.contains(event_type) {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has an unknown event type `{event_type}` (not in --event-types / BRIDGE_EVENT_TYPES)"
        ));
    }
    let payload = match row.payload {
        None => null_data(),
        // A text payload column, or DMS's escaped JSON: it must parse as JSON, and is kept as that text.
        Some(raw) if raw.get().starts_with('"') => {
            let parsed = serde_json::from_str::<String>(raw.get())
                .map_err(|e| e.to_string())
                .and_then(|text| RawValue::from_string(text).map_err(|e| e.to_string()));
            match parsed {
                Ok(v) => v,
                Err(err) => {
                    return Decision::DeadLetter(format!(
                        "outbox row {event_id}: payload is not valid JSON: {err}"
                    ))
                }
            }
        }
        Some(raw) => raw.to_owned(),
    };
    let version = match &row.aggregate_version {
        Value::Number(n) => Value::Number(n.clone()),
        Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let mut metadata = json!({
        "event_id": event_id,
        "aggregate_type": row.aggregatetype,
        "aggregate_id": row.aggregateid,
        "aggregate_version": version,
        "occurred_at": row.occurred_at,
        "commit_lsn": meta["commit-lsn"],
        "traceparent": row.tracingspancontext,
    });
    if operation == "load" {
        // Read again from the table (a resync or a backfill), not a new change: a rule can
        // include or exclude such events (`metadata.replayed`), and inboxes absorb repeats.
        metadata["replayed"] = Value::Bool(true);
    }
    Decision::Publish(Event {
        event_id: event_id.to_owned(),
        detail_type: event_type.to_owned(),
        metadata,
        data: payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let detail: Value = serde_json::from_str(&event.detail()).unwrap();
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
        let detail: Value = serde_json::from_str(&event.detail()).unwrap();
        assert_eq!(detail["metadata"]["replayed"], true);
        let Decision::Publish(event) = decide(&record("outbox", "insert", row), &cfg()) else {
            panic!("not published")
        };
        let detail: Value = serde_json::from_str(&event.detail()).unwrap();
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
        assert_eq!(event.data.get(), payload);
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
        assert_eq!(event.data.get(), payload);
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
