//! The envelope's decisions, record by record.

use super::*;
use serde_json::{json, Value};

use crate::relay::routing::Routing;

fn cfg() -> EnvelopeConfig {
    EnvelopeConfig {
        routing: std::sync::Arc::new(Routing::single("public.outbox".parse().unwrap())),
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
    assert!(reason(&record("outbox", "insert", json!({"id": "e", "type": null}))).contains("no usable type"));
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

fn routed(toml: &str) -> EnvelopeConfig {
    let routing = crate::relay::routing::from_file(Some(toml), &"public.outbox".parse().unwrap())
        .unwrap_or_else(|p| panic!("{p:?}"));
    EnvelopeConfig {
        routing: std::sync::Arc::new(routing),
        ..cfg()
    }
}

fn record_of(schema: &str, table: &str, data: Value) -> Vec<u8> {
    json!({"data": data, "metadata": {"record-type": "data", "operation": "insert", "schema-name": schema,
        "table-name": table, "commit-lsn": "0/10"}})
    .to_string()
    .into_bytes()
}

#[test]
fn routes_send_each_aggregate_to_its_bus_with_its_source_detail_type_and_metadata() {
    let cfg = routed(
        r#"
[routing]
[[routing.routes]]
name = "customers"
aggregate_type = "Customer"
event_bus = "customers-bus"
source = "legacy.customers"
detail_type = "{aggregatetype}.{type}"
metadata_columns = ["tenant_id", "absent"]
[[routing.routes]]
name = "internal"
event_type = "Internal*"
action = "skip"
[[routing.routes]]
name = "quarantine"
columns = { tenant_id = "t-9*" }
action = "park"
"#,
    );
    let row = |id: &str, aggregate: &str, kind: &str, tenant: &str| {
        record_of(
            "public",
            "outbox",
            json!({"id": id, "aggregatetype": aggregate, "aggregateid": "a1", "type": kind,
                "payload": {"n": 1}, "tenant_id": tenant}),
        )
    };
    let Decision::Publish(event) = decide(&row("e1", "Customer", "CustomerCreated", "t-1"), &cfg) else {
        panic!("not published")
    };
    assert_eq!(event.detail_type, "Customer.CustomerCreated");
    assert_eq!(event.bus("default-bus"), "customers-bus");
    assert_eq!(event.source("default.source"), "legacy.customers");
    let metadata = event.metadata_value();
    assert_eq!(metadata["tenant_id"], "t-1");
    assert_eq!(metadata["absent"], Value::Null);
    assert_eq!(metadata["event_id"], "e1");
    assert_eq!(event.data(), r#"{"n":1}"#);
    // No route: the default route (the flags' bus and source, the type as detail type).
    let Decision::Publish(order) = decide(&row("e2", "Order", "OrderPlaced", "t-1"), &cfg) else {
        panic!("not published")
    };
    assert_eq!(
        (order.detail_type.as_str(), order.bus("d"), order.source("s")),
        ("OrderPlaced", "d", "s")
    );
    assert!(order.metadata_value().get("tenant_id").is_none());
    assert_eq!(
        decide(&row("e3", "Order", "InternalAudit", "t-1"), &cfg),
        Decision::Dropped("internal".into())
    );
    match decide(&row("e4", "Order", "OrderPlaced", "t-99"), &cfg) {
        Decision::DeadLetter(reason) => assert!(reason.contains("parked by route `quarantine`"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_renamed_outbox_table_is_read_by_its_columns_and_unmatched_can_park_or_skip() {
    let toml = |unmatched: &str| {
        format!(
            r#"
[routing]
unmatched = "{unmatched}"
[[routing.tables]]
table = "sales.domain_events"
columns = {{ id = "event_id", aggregate_type = "stream_type", aggregate_id = "stream_id", event_type = "kind", payload = "body", version = "seq", occurred_at = "at", trace = "traceparent" }}
[[routing.routes]]
aggregate_type = "Invoice"
"#
        )
    };
    let row = |kind: &str, stream_type: &str| {
        record_of(
            "sales",
            "domain_events",
            json!({"event_id": "e1", "stream_type": stream_type, "stream_id": "i-7", "kind": kind,
                "body": "{\"total\": 12345678901234567.89}", "seq": 3, "at": "2026-12-07T00:00:00Z",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        )
    };
    let cfg = routed(&toml("park"));
    let Decision::Publish(event) = decide(&row("InvoiceIssued", "Invoice"), &cfg) else {
        panic!("not published")
    };
    assert_eq!(event.event_id, "e1");
    assert_eq!(event.detail_type, "InvoiceIssued");
    assert_eq!(event.data(), r#"{"total": 12345678901234567.89}"#);
    let m = event.metadata_value();
    assert_eq!(
        (
            &m["aggregate_type"],
            &m["aggregate_id"],
            &m["aggregate_version"],
            &m["occurred_at"]
        ),
        (
            &json!("Invoice"),
            &json!("i-7"),
            &json!(3),
            &json!("2026-12-07T00:00:00Z")
        )
    );
    assert!(event.traceparent.is_some());
    // The table the flags name is not an outbox table once the file lists its own.
    assert_eq!(
        decide(&record("outbox", "insert", json!({"id": "x", "type": "T"})), &cfg),
        Decision::Skip
    );
    match decide(&row("Shipped", "Parcel"), &cfg) {
        Decision::DeadLetter(reason) => assert!(reason.contains("matches no route"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decide(&row("Shipped", "Parcel"), &routed(&toml("skip"))),
        Decision::Dropped("unmatched".into())
    );
}
