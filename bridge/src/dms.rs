//! Changes as AWS DMS writes them to Kinesis, so consumers written for DMS work unchanged:
//! `{"data": {...}, "before-image": {...}, "metadata": {...}}`.
//!
//! Two deliberate differences, both additions: `json`/`jsonb` columns arrive as JSON values (DMS
//! sends escaped strings; `strict_dms` restores that), and `metadata` also carries `commit-lsn`
//! and `lsn`, so `(commit-lsn, transaction-record-id)` orders every change totally.
//!
//! Values are written straight from pgoutput's text form: numbers and JSON are already valid
//! JSON text there, so nothing is parsed on the way through.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::lsn::Lsn;
use crate::partition::PartitionKey;
use crate::replication::pgoutput::{Datum, Relation, Tuple};

/// Kinesis partition keys are at most 256 characters.
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    /// A row read from a snapshot rather than a change (DMS's full load; our outbox resync).
    Load,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Load => "load",
        }
    }
}

/// The transaction a change belongs to.
#[derive(Clone, Copy, Debug)]
pub struct TxContext {
    pub xid: u32,
    pub commit_lsn: Lsn,
    /// Microseconds since 2000-01-01, as pgoutput sends it.
    pub commit_time: i64,
}

/// One change of one row.
pub struct Change<'a> {
    pub relation: &'a Relation,
    /// Positions of the primary-key columns, for the `primary-key` partition key.
    pub key_columns: &'a [usize],
    pub operation: Operation,
    /// The row after the change (for a delete: the old key or row).
    pub row: &'a Tuple,
    pub before: Option<&'a Tuple>,
    pub lsn: Lsn,
    /// 1-based position of the change in its transaction.
    pub record_id: u64,
    /// Columns whose values were left out to fit Kinesis' record limit (`dropped-columns`).
    pub dropped_columns: &'a [String],
}

/// An encoded record, ready for PutRecords.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition_key: String,
    pub data: Bytes,
    /// For a record above Kinesis' limit: the whole record, which the sink stores in S3 before
    /// it sends `data` (the record without its large values) with a claim check to it.
    pub claim: Option<Bytes>,
}

/// Room a record with a `claim` keeps for the claim check the sink adds to its metadata.
pub const CLAIM_CHECK_ROOM: usize = 1024;

impl Record {
    /// What the record counts against Kinesis' per-request and per-record limits (with the
    /// claim check it will carry, if any).
    pub fn size(&self) -> usize {
        let room = if self.claim.is_some() { CLAIM_CHECK_ROOM } else { 0 };
        self.data.len() + self.partition_key.len() + room
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeOptions {
    /// Send `json`/`jsonb` as escaped strings, exactly as DMS does.
    pub strict_dms: bool,
}

/// Encodes one change as a DMS record, with its partition key.
pub fn encode(change: &Change<'_>, tx: &TxContext, key: &PartitionKey, opts: EncodeOptions) -> Record {
    let mut out = Vec::with_capacity(256 + change.row.0.len() * 32);
    out.extend_from_slice(b"{\"data\":");
    write_row(&mut out, change.relation, change.row, opts);
    if let Some(before) = change.before {
        out.extend_from_slice(b",\"before-image\":");
        write_row(&mut out, change.relation, before, opts);
    }
    out.extend_from_slice(b",\"metadata\":{\"timestamp\":");
    write_str(&mut out, &iso_time(Utc::now()));
    out.extend_from_slice(b",\"record-type\":\"data\",\"operation\":\"");
    out.extend_from_slice(change.operation.as_str().as_bytes());
    out.extend_from_slice(b"\",\"partition-key-type\":\"");
    out.extend_from_slice(key.kind_name().as_bytes());
    out.extend_from_slice(b"\",\"schema-name\":");
    write_str(&mut out, &change.relation.namespace);
    out.extend_from_slice(b",\"table-name\":");
    write_str(&mut out, &change.relation.name);
    if !change.dropped_columns.is_empty() {
        // An addition to DMS's format: says the record is not the whole row, so nobody
        // mistakes a dropped value for a null one.
        out.extend_from_slice(b",\"dropped-columns\":[");
        for (i, name) in change.dropped_columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, name);
        }
        out.push(b']');
    }
    let mut tail = String::with_capacity(192);
    if change.operation == Operation::Load {
        // DMS's load records carry no transaction; `commit-lsn` is the snapshot's position.
        let _ = write!(
            tail,
            ",\"stream-position\":\"{}\",\"transaction-record-id\":{},\"commit-lsn\":\"{}\",\"lsn\":\"{}\"}}}}",
            change.lsn, change.record_id, tx.commit_lsn, change.lsn
        );
    } else {
        let _ = write!(
            tail,
            ",\"transaction-id\":{},\"commit-timestamp\":\"{}\",\"stream-position\":\"{}\",\
             \"transaction-record-id\":{},\"commit-lsn\":\"{}\",\"lsn\":\"{}\"}}}}",
            tx.xid,
            iso_time(pg_time(tx.commit_time)),
            change.lsn,
            change.record_id,
            tx.commit_lsn,
            change.lsn
        );
    }
    out.extend_from_slice(tail.as_bytes());
    Record {
        partition_key: partition_key(change, tx, key),
        data: Bytes::from(out),
        claim: None,
    }
}

/// Encodes a transactional `pg_logical_emit_message` (the table-less outbox) as an insert into
/// the outbox table, so consumers cannot tell the two apart. Content that is not a JSON object
/// travels as `{"raw": text}` (the relay then parks it with its reason).
pub fn encode_message(content: &[u8], msg: &MessageContext<'_>, tx: &TxContext) -> Record {
    encode_message_data(message_data(content), &[], msg, tx)
}

/// Where a logical message came from: its prefix, the outbox table it stands for, its position.
pub struct MessageContext<'a> {
    pub prefix: &'a str,
    pub outbox: &'a crate::table::TableName,
    pub lsn: Lsn,
    pub record_id: u64,
}

/// A message's fields, each kept as the JSON text the monolith wrote (numbers digit for digit).
pub type MessageData = std::collections::BTreeMap<String, Box<RawValue>>;

/// A message's content as the record's `data`: the JSON object, or `{"raw": text}`.
pub fn message_data(content: &[u8]) -> MessageData {
    serde_json::from_slice(content).unwrap_or_else(|_| {
        let text = serde_json::to_string(&String::from_utf8_lossy(content)).unwrap_or_default();
        RawValue::from_string(text)
            .map(|raw| MessageData::from([("raw".to_owned(), raw)]))
            .unwrap_or_default()
    })
}

/// `data` without the fields whose JSON is above `limit` bytes, and their names — for a message
/// too large for Kinesis. With `keep_only`, every field not named there goes too.
pub fn slim_message_data(
    data: &MessageData,
    limit: usize,
    keep_only: Option<&[&str]>,
) -> (MessageData, Vec<String>) {
    let mut slim = MessageData::new();
    let mut dropped = Vec::new();
    for (name, value) in data {
        let kept = keep_only.is_none_or(|keep| keep.contains(&name.as_str()));
        if kept && value.get().len() <= limit {
            slim.insert(name.clone(), value.clone());
        } else {
            dropped.push(name.clone());
        }
    }
    (slim, dropped)
}

/// A message record as written: `data`'s fields go out verbatim.
#[derive(serde::Serialize)]
struct MessageRecord<'a> {
    data: &'a MessageData,
    metadata: serde_json::Value,
}

/// Encodes message `data` (see `message_data`), naming in `dropped-columns` the fields left out.
pub fn encode_message_data(
    data: MessageData,
    dropped: &[String],
    msg: &MessageContext<'_>,
    tx: &TxContext,
) -> Record {
    let partition_key = data
        .get("aggregateid")
        .and_then(|k| serde_json::from_str::<String>(k.get()).ok())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| tx.xid.to_string());
    let mut metadata = serde_json::json!({
        "timestamp": iso_time(Utc::now()),
        "record-type": "data",
        "operation": "insert",
        "partition-key-type": "attribute-name",
        "schema-name": msg.outbox.schema,
        "table-name": msg.outbox.name,
        "transaction-id": tx.xid,
        "commit-timestamp": iso_time(pg_time(tx.commit_time)),
        "stream-position": msg.lsn.to_string(),
        "transaction-record-id": msg.record_id,
        "commit-lsn": tx.commit_lsn.to_string(),
        "lsn": msg.lsn.to_string(),
        "message-prefix": msg.prefix,
    });
    if !dropped.is_empty() {
        metadata["dropped-columns"] = serde_json::json!(dropped);
    }
    // Serialising a map of validated raw values and a `Value` cannot fail.
    let record = serde_json::to_vec(&MessageRecord {
        data: &data,
        metadata,
    })
    .unwrap_or_default();
    let partition_key: String = partition_key.chars().take(MAX_PARTITION_KEY_CHARS).collect();
    Record {
        partition_key,
        data: Bytes::from(record),
        claim: None,
    }
}

fn write_row(out: &mut Vec<u8>, relation: &Relation, row: &Tuple, opts: EncodeOptions) {
    out.push(b'{');
    let mut first = true;
    for (column, datum) in relation.columns.iter().zip(&row.0) {
        // An unchanged TOASTed value is not resent by Postgres: leave it out rather than guess.
        if *datum == Datum::UnchangedToast {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, &column.name);
        out.push(b':');
        write_value(out, column.type_oid, datum, opts);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, type_oid: u32, datum: &Datum, opts: EncodeOptions) {
    let text = match datum {
        Datum::Null | Datum::UnchangedToast => return out.extend_from_slice(b"null"),
        Datum::Text(t) | Datum::Binary(t) => t,
    };
    match type_oid {
        // bool
        16 => out.extend_from_slice(if text.as_ref() == b"t" { b"true" } else { b"false" }),
        // int8, int2, int4, oid: Postgres' text form is a JSON integer.
        20 | 21 | 23 | 26 => out.extend_from_slice(text),
        // float4, float8: JSON numbers unless NaN or infinite.
        700 | 701 if is_json_number(text) => out.extend_from_slice(text),
        // numeric: a JSON number while a double holds it exactly (15 digits), else a string,
        // so no consumer silently rounds money or overflows.
        1700 if is_json_number(text) && text.iter().filter(|b| b.is_ascii_digit()).count() <= 15 => {
            out.extend_from_slice(text)
        }
        // json, jsonb: already JSON text, validated by Postgres on input.
        114 | 3802 if !opts.strict_dms => out.extend_from_slice(text),
        // timestamptz: RFC 3339 in UTC (the connection pins DateStyle ISO and TimeZone UTC).
        1184 => match rfc3339_utc(text) {
            Some(rfc3339) => write_str(out, &rfc3339),
            None => write_str(out, &String::from_utf8_lossy(text)),
        },
        _ => write_str(out, &String::from_utf8_lossy(text)),
    }
}

/// `2026-11-28 20:06:30.5+00` (ISO DateStyle) as `2026-11-28T20:06:30.500000Z`; `None` for what
/// is not such a time (`infinity`, years BC), which then travels as Postgres wrote it.
fn rfc3339_utc(text: &[u8]) -> Option<String> {
    if let Some(fast) = utc_iso_rewritten(text) {
        return Some(fast);
    }
    let text = std::str::from_utf8(text).ok()?;
    let time = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").ok()?;
    Some(
        time.with_timezone(&Utc)
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
    )
}

/// The common case of [`rfc3339_utc`] without parsing: the session pins TimeZone UTC, so a
/// four-digit year's value is `YYYY-MM-DD HH:MM:SS[.f{1,6}]+00`, and its RFC 3339 form is the
/// same digits rearranged. A format string is parsed again for every value: on an outbox's
/// `occurred_at`, for every record. `None` for any other shape (the general path takes it).
fn utc_iso_rewritten(text: &[u8]) -> Option<String> {
    let digits =
        |range: std::ops::Range<usize>| text.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let layout = text.len() >= 22
        && digits(0..4)
        && text[4] == b'-'
        && digits(5..7)
        && text[7] == b'-'
        && digits(8..10)
        && text[10] == b' '
        && digits(11..13)
        && text[13] == b':'
        && digits(14..16)
        && text[16] == b':'
        && digits(17..19)
        && text.ends_with(b"+00");
    if !layout {
        return None;
    }
    let fraction = match &text[19..text.len() - 3] {
        [] => &[][..],
        [b'.', rest @ ..] if (1..=6).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit) => rest,
        _ => return None,
    };
    let mut out = String::with_capacity(27);
    // ASCII digits and separators only (checked above).
    out.push_str(std::str::from_utf8(&text[..10]).ok()?);
    out.push('T');
    out.push_str(std::str::from_utf8(&text[11..19]).ok()?);
    out.push('.');
    out.push_str(std::str::from_utf8(fraction).ok()?);
    for _ in fraction.len()..6 {
        out.push('0');
    }
    out.push('Z');
    Some(out)
}

fn is_json_number(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && text.iter().any(u8::is_ascii_digit)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn partition_key(change: &Change<'_>, tx: &TxContext, key: &PartitionKey) -> String {
    let rel = change.relation;
    let mut pk = match key {
        PartitionKey::SchemaTable => format!("{}.{}", rel.namespace, rel.name),
        PartitionKey::TransactionId => tx.xid.to_string(),
        PartitionKey::Attribute(column) => rel
            .columns
            .iter()
            .position(|c| &c.name == column)
            .and_then(|i| datum_text(change.row.0.get(i)?))
            .unwrap_or_else(|| format!("{}.{}", rel.namespace, rel.name)),
        PartitionKey::PrimaryKey => {
            let parts: Vec<String> = change
                .key_columns
                .iter()
                .filter_map(|&i| datum_text(change.row.0.get(i)?))
                .collect();
            if parts.is_empty() {
                format!("{}.{}", rel.namespace, rel.name)
            } else {
                parts.join(":")
            }
        }
    };
    if pk.is_empty() {
        pk.push('-');
    }
    if pk.chars().count() > MAX_PARTITION_KEY_CHARS {
        pk = pk.chars().take(MAX_PARTITION_KEY_CHARS).collect();
    }
    pk
}

fn datum_text(datum: &Datum) -> Option<String> {
    match datum {
        Datum::Text(t) | Datum::Binary(t) => Some(String::from_utf8_lossy(t).into_owned()),
        Datum::Null | Datum::UnchangedToast => None,
    }
}

fn pg_time(pg_micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(pg_micros.saturating_add(PG_EPOCH_MICROS)).unwrap_or_default()
}

/// Seconds since the Unix epoch of a pgoutput timestamp.
pub fn pg_time_seconds(pg_micros: i64) -> f64 {
    (pg_micros.saturating_add(PG_EPOCH_MICROS)) as f64 / 1e6
}

/// `2000-01-01T00:00:00.000000Z`. chrono's RFC 3339 writer, not a format string: a format
/// string is parsed again for every record, on capture's hottest path.
fn iso_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::pgoutput::Column;

    /// The rewrite agrees with chrono's parse-and-format for every shape Postgres writes a UTC
    /// timestamptz in (fractions of 0 to 6 digits, trailing zeros trimmed), and leaves the
    /// others (years past 9999, BC, offsets that are not UTC, garbage) to it.
    #[test]
    fn utc_timestamps_are_rewritten_as_chrono_would_format_them() {
        let slow = |text: &str| {
            DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
                .ok()
                .map(|t| t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        };
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for n in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let micros = (seed % 253_402_300_799_000_000) as i64; // 0001-01-01 .. 9999-12-31
            let Some(time) = DateTime::from_timestamp_micros(micros - 62_135_596_800_000_000) else {
                continue;
            };
            // Postgres trims the fraction's trailing zeros, and writes none for whole seconds.
            let mut fraction = format!("{:06}", time.timestamp_subsec_micros());
            while fraction.ends_with('0') {
                fraction.pop();
            }
            if n % 7 == 0 {
                fraction.clear();
            }
            let dot = if fraction.is_empty() { "" } else { "." };
            let text = format!("{}{dot}{fraction}+00", time.format("%Y-%m-%d %H:%M:%S"));
            assert_eq!(utc_iso_rewritten(text.as_bytes()), slow(&text), "{text}");
        }
        for other in [
            "12026-11-28 20:06:30.5+00",
            "2026-11-28 20:06:30.5+00 BC",
            "2026-11-28 20:06:30.5+01",
            "2026-11-28 20:06:30.1234567+00",
            "2026-11-28 20:06:30.+00",
            "2026-11-28T20:06:30.5+00",
            "infinity",
            "2026-11-28 20:06:3x.5+00",
        ] {
            assert_eq!(utc_iso_rewritten(other.as_bytes()), None, "{other}");
        }
        assert_eq!(
            rfc3339_utc(b"2026-11-28 20:06:30.5+01").as_deref(),
            Some("2026-11-28T19:06:30.500000Z"),
            "the general path still takes other offsets"
        );
    }

    fn outbox() -> Relation {
        let col = |name: &str, type_oid, is_key| Column {
            name: name.into(),
            type_oid,
            is_key,
        };
        Relation {
            id: 1,
            namespace: "public".into(),
            name: "outbox".into(),
            columns: vec![
                col("id", 2950, true),
                col("aggregateid", 25, false),
                col("payload", 3802, false),
                col("aggregate_version", 20, false),
                col("ok", 16, false),
                col("amount", 1700, false),
                col("note", 25, false),
            ],
        }
    }

    fn text(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn encodes_an_insert_in_dms_shape_with_typed_values() {
        let rel = outbox();
        let row = Tuple(vec![
            text("6f1c"),
            text("cust-1"),
            text(r#"{"a": [1, "x"]}"#),
            text("3"),
            text("t"),
            text("12.50"),
            Datum::Null,
        ]);
        let change = Change {
            relation: &rel,
            key_columns: &[0],
            operation: Operation::Insert,
            row: &row,
            before: None,
            lsn: Lsn(0x20),
            record_id: 1,
            dropped_columns: &[],
        };
        let tx = TxContext {
            xid: 42,
            commit_lsn: Lsn(0x100),
            commit_time: 0,
        };
        let rec = encode(
            &change,
            &tx,
            &PartitionKey::Attribute("aggregateid".into()),
            EncodeOptions::default(),
        );
        assert_eq!(rec.partition_key, "cust-1");
        let v: serde_json::Value = serde_json::from_slice(&rec.data).unwrap();
        assert_eq!(v["data"]["payload"]["a"][1], "x");
        assert_eq!(v["data"]["aggregate_version"], 3);
        assert_eq!(v["data"]["ok"], true);
        assert_eq!(v["data"]["amount"], 12.5);
        assert!(v["data"]["note"].is_null());
        let m = &v["metadata"];
        assert_eq!(m["operation"], "insert");
        assert_eq!(m["record-type"], "data");
        assert_eq!(m["partition-key-type"], "attribute-name");
        assert_eq!(m["schema-name"], "public");
        assert_eq!(m["table-name"], "outbox");
        assert_eq!(m["transaction-id"], 42);
        assert_eq!(m["transaction-record-id"], 1);
        assert_eq!(m["commit-lsn"], "0/100");
        assert_eq!(m["commit-timestamp"], "2000-01-01T00:00:00.000000Z");
        assert!(v.get("before-image").is_none());
    }

    #[test]
    fn a_logical_message_becomes_an_outbox_insert() {
        let tx = TxContext {
            xid: 9,
            commit_lsn: Lsn(0x30),
            commit_time: 0,
        };
        let outbox = "public.outbox".parse().unwrap();
        let msg = |record_id| MessageContext {
            prefix: "outbox",
            outbox: &outbox,
            lsn: Lsn(0x20),
            record_id,
        };
        let rec = encode_message(
            br#"{"id":"e1","aggregateid":"a1","type":"T","payload":{}}"#,
            &msg(1),
            &tx,
        );
        assert_eq!(rec.partition_key, "a1");
        let v: serde_json::Value = serde_json::from_slice(&rec.data).unwrap();
        assert_eq!(v["metadata"]["table-name"], "outbox");
        assert_eq!(v["metadata"]["operation"], "insert");
        assert_eq!(v["data"]["type"], "T");
        // Numbers beyond f64 keep every digit.
        let exact = br#"{"id":"e2","aggregateid":"a1","type":"T","payload":{"total":12345678901234567.89}}"#;
        let rec = encode_message(exact, &msg(3), &tx);
        let text = String::from_utf8(rec.data.to_vec()).unwrap();
        assert!(
            text.contains(r#""payload":{"total":12345678901234567.89}"#),
            "{text}"
        );
        let rec = encode_message(b"not json", &msg(2), &tx);
        let v: serde_json::Value = serde_json::from_slice(&rec.data).unwrap();
        assert_eq!(v["data"]["raw"], "not json");
        assert_eq!(rec.partition_key, "9");
        assert!(v["metadata"].get("dropped-columns").is_none());
    }

    #[test]
    fn an_oversized_message_keeps_its_small_fields_and_names_the_rest() {
        let big = "x".repeat(2000);
        let data = message_data(
            format!(r#"{{"id":"e1","aggregateid":"a1","type":"T","payload":{{"blob":"{big}"}}}}"#).as_bytes(),
        );
        let (slim, dropped) = slim_message_data(&data, 1024, None);
        assert_eq!(dropped, ["payload"]);
        assert_eq!(slim["id"].get(), r#""e1""#);
        assert_eq!(slim["type"].get(), r#""T""#);
        let (slim, dropped) = slim_message_data(&data, 1024, Some(&["id"]));
        assert_eq!(slim.keys().collect::<Vec<_>>(), ["id"]);
        assert_eq!(dropped.len(), 3);
        let (slim, dropped) = slim_message_data(&message_data(big.as_bytes()), 1024, None);
        assert!(slim.is_empty());
        assert_eq!(dropped, vec!["raw".to_owned()]);
    }

    #[test]
    fn timestamps_with_a_zone_are_rfc3339_in_utc() {
        assert_eq!(
            rfc3339_utc(b"2026-11-28 20:06:30.5+00").as_deref(),
            Some("2026-11-28T20:06:30.500000Z")
        );
        assert_eq!(
            rfc3339_utc(b"2026-11-28 17:06:30-03").as_deref(),
            Some("2026-11-28T20:06:30.000000Z")
        );
        assert_eq!(
            rfc3339_utc(b"2026-11-28 20:06:30.123456+05:30").as_deref(),
            Some("2026-11-28T14:36:30.123456Z")
        );
        assert_eq!(rfc3339_utc(b"infinity"), None);
    }

    #[test]
    fn strict_dms_sends_json_as_strings_and_escapes_text() {
        let rel = outbox();
        let row = Tuple(vec![
            text("1"),
            text("a\"b\n"),
            text("{}"),
            text("1"),
            text("f"),
            text("NaN"),
            Datum::UnchangedToast,
        ]);
        let change = Change {
            relation: &rel,
            key_columns: &[0],
            operation: Operation::Update,
            row: &row,
            before: Some(&row),
            lsn: Lsn(1),
            record_id: 2,
            dropped_columns: &[],
        };
        let tx = TxContext {
            xid: 1,
            commit_lsn: Lsn(2),
            commit_time: 0,
        };
        let rec = encode(
            &change,
            &tx,
            &PartitionKey::PrimaryKey,
            EncodeOptions { strict_dms: true },
        );
        let v: serde_json::Value = serde_json::from_slice(&rec.data).unwrap();
        assert_eq!(v["data"]["payload"], "{}");
        assert_eq!(v["data"]["aggregateid"], "a\"b\n");
        assert_eq!(v["data"]["amount"], "NaN");
        assert!(
            v["data"].get("note").is_none(),
            "unchanged TOAST values are left out"
        );
        assert_eq!(v["before-image"]["id"], "1");
        assert_eq!(rec.partition_key, "1");
    }
}
