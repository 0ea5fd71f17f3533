//! An outbox row → a domain event, by its table's column names and the first route it matches.

use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{null_data, text, Decision, DmsMetadata, EnvelopeConfig, Event, Row};
use crate::relay::routing::{Action, Chosen, Field, OutboxTable, Publish, Routing, Unmatched};

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
    /// The route's additional columns, under their own names.
    #[serde(flatten, skip_serializing_if = "Extra::is_empty")]
    extra: Extra<'a>,
}

/// A route's `metadata_columns` and their values (`null` where the row has none).
struct Extra<'a>(Vec<(&'a str, Option<&'a RawValue>)>);

impl Extra<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Extra<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// `aggregate_version`: a JSON number as written, or a number written as text, parsed.
#[derive(Serialize)]
#[serde(untagged)]
enum Version<'a> {
    Number(&'a RawValue),
    Parsed(i64),
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

/// A column's value as a route compares it: a string's text, any other value's JSON.
fn value<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let raw = raw?;
    if raw.get() == "null" {
        return None;
    }
    text(Some(raw)).or(Some(Cow::Borrowed(raw.get())))
}

pub(super) fn decide(
    meta: &DmsMetadata<'_>,
    row: &Row<'_>,
    outbox: &OutboxTable,
    replayed: bool,
    cfg: &EnvelopeConfig,
) -> Decision {
    let columns = &outbox.columns;
    let id = text(row.get(&columns.id)).filter(|s| !s.is_empty());
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
        return Decision::DeadLetter(format!("outbox row has no id (column `{}`)", columns.id));
    };
    let event_type = text(row.get(&columns.event_type));
    let Some(event_type) = event_type.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has no usable type (column `{}`: null, empty or not text)",
            columns.event_type
        ));
    };
    if !cfg.event_types.is_empty() && !cfg.event_types.contains(event_type) {
        return Decision::DeadLetter(format!(
            "outbox row {event_id} has an unknown event type `{event_type}` (not in --event-types / BRIDGE_EVENT_TYPES)"
        ));
    }
    let aggregate_type = row.get(&columns.aggregate_type);
    let chosen = cfg.routing.choose(|field| match field {
        Field::AggregateType => text(aggregate_type),
        Field::EventType => Some(Cow::Borrowed(event_type)),
        Field::Column(column) => value(row.get(column)),
    });
    let publish = match chosen {
        Chosen::Route(route) => match &route.action {
            Action::Publish(publish) => publish,
            Action::Skip => return Decision::Dropped(route.name.clone()),
            Action::Park => {
                return Decision::DeadLetter(format!(
                    "outbox row {event_id} (type `{event_type}`) is parked by route `{}`",
                    route.name
                ))
            }
        },
        Chosen::Unmatched(Unmatched::Default) => Routing::default_publish(),
        Chosen::Unmatched(Unmatched::Skip) => return Decision::Dropped("unmatched".into()),
        Chosen::Unmatched(Unmatched::Park) => {
            return Decision::DeadLetter(format!(
                "outbox row {event_id} (type `{event_type}`, aggregate type `{}`) matches no route \
                 (routing.unmatched = \"park\")",
                text(aggregate_type).as_deref().unwrap_or("")
            ))
        }
    };
    event(meta, row, columns, &event_id, event_type, replayed, publish)
}

fn event(
    meta: &DmsMetadata<'_>,
    row: &Row<'_>,
    columns: &crate::relay::routing::Columns,
    event_id: &str,
    event_type: &str,
    replayed: bool,
    publish: &Publish,
) -> Decision {
    let detail_type = match &publish.detail_type {
        None => event_type.to_owned(),
        Some(template) => match template.render(|column| value(row.get(column)).map(Cow::into_owned)) {
            Ok(detail_type) => detail_type,
            Err(err) => return Decision::DeadLetter(format!("outbox row {event_id}: {err}")),
        },
    };
    // A text payload column, or DMS's escaped JSON: it must parse as JSON, and is kept as that text.
    let payload_raw = row.get(&columns.payload);
    let payload_text = text(payload_raw);
    let payload = match (&payload_text, payload_raw) {
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
    let trace = row.get(&columns.trace);
    let metadata = OutboxMetadata {
        event_id,
        aggregate_type: row.get(&columns.aggregate_type),
        aggregate_id: row.get(&columns.aggregate_id),
        aggregate_version: version(row.get(&columns.version)),
        occurred_at: row.get(&columns.occurred_at),
        commit_lsn: meta.commit_lsn,
        traceparent: trace,
        replayed,
        extra: Extra(
            publish
                .metadata_columns
                .iter()
                .map(|c| (c.as_str(), row.get(c)))
                .collect(),
        ),
    };
    Decision::Publish(
        Event::new(
            event_id.to_owned(),
            detail_type,
            &metadata,
            payload,
            text(trace).map(Cow::into_owned),
        )
        .to(publish.destination.clone()),
    )
}
