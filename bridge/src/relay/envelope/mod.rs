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

use super::routing::Routing;

pub use eventing::event::{null_data, Event};

#[derive(Debug, PartialEq)]
pub enum Decision {
    Publish(Event),
    Skip,
    /// Dropped by the named route (`action = "skip"`, or `unmatched = "skip"`): counted by
    /// route, never parked.
    Dropped(String),
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
    /// The outbox tables with their columns, and the routes (`[routing]`; one table, no routes
    /// without it).
    pub routing: std::sync::Arc<Routing>,
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
    data: Option<Lenient<Row<'a>>>,
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

/// A row's columns as the record carries them, borrowed: nothing is copied until the event is
/// written. Which column means what is the outbox table's mapping (`routing::Columns`).
#[derive(Default)]
struct Row<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Row<'a> {
    /// The column's raw JSON, if the row has it.
    fn get(&self, column: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(name, _)| name == column).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Row<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Columns<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Columns<'a> {
            type Value = Row<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of columns")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(10));
                while let Some(name) = map.next_key::<ColumnName<'a>>()? {
                    let value: &'a RawValue = map.next_value()?;
                    columns.push((name.0, value));
                }
                Ok(Row(columns))
            }
        }
        deserializer.deserialize_map(Columns(std::marker::PhantomData))
    }
}

/// A column's name: borrowed from the record unless it had to be unescaped.
struct ColumnName<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for ColumnName<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Name<'a> {
            type Value = ColumnName<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ColumnName(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ColumnName(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Name(std::marker::PhantomData))
    }
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
    let outbox = cfg.routing.table(&schema, &table);
    let wanted = match outbox {
        Some(_) => operation == "insert" || operation == "load",
        None => cfg.publish_raw_changes,
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
    let Some(outbox) = outbox else {
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
    };
    let row = match record.data {
        None => Row::default(),
        Some(Lenient::Object(row)) => row,
        Some(Lenient::Not(what)) => {
            return Decision::DeadLetter(format!(
                "outbox record's data is not an object of columns: it is {what}"
            ))
        }
    };
    outbox::decide(&meta, &row, outbox, operation == "load", cfg)
}

mod outbox;

#[cfg(test)]
mod tests;
