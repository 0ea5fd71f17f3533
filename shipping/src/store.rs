//! The service's DynamoDB tables: reads of the current projection state, and the one
//! `TransactWriteItems` per event — inbox item + projection or shipment + outbox item.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use eventing::retry::transient_cause;
use serde_json::{Number, Value};

use crate::domain::{CustomerState, Decimal, Shipment, ShipmentStatus};
use crate::Tables;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dynamodb {op} on `{table}` failed ({cause}); retrying")]
    Transient {
        op: &'static str,
        table: String,
        cause: &'static str,
    },
    #[error("dynamodb {op} on `{table}` refused ({code}); has `shipping setup` run?")]
    Fatal {
        op: &'static str,
        table: String,
        code: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// DynamoDB cannot store what the event carries (a key over 2,048 bytes, a number out of
    /// its range, an item over 400 KB): definite for this event, harmless for the next one.
    #[error("dynamodb {op} on `{table}` cannot store the event's content: {message}")]
    Content {
        op: &'static str,
        table: String,
        message: String,
    },
    #[error("item `{key}` in `{table}` is malformed: {reason}")]
    Corrupt {
        table: String,
        key: String,
        reason: String,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The event cannot be applied, for its own content (what DynamoDB refused) or for an item
    /// it touches that the service cannot read (corrupt: written by hand, or by another
    /// version): park the event with the reason, keep the service. Stopping would only meet the
    /// same item again after the restart; parked, the event is redriven once the item is fixed.
    pub fn parks_the_event(&self) -> bool {
        matches!(self, Self::Content { .. } | Self::Corrupt { .. })
    }
}

impl eventing::retry::Transient for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

/// A `ValidationException` about the values sent, not about the request we built: DynamoDB
/// words its complaints about our expressions as "Invalid …Expression", which stay fatal (a
/// bug to fix, not an event to park).
fn content_refusal(code: Option<&str>, message: Option<&str>) -> Option<String> {
    let message = message.unwrap_or("");
    let about_values = matches!(code, Some("ValidationException" | "ValidationError"))
        && !message.contains("Expression")
        && !message.is_empty();
    about_values.then(|| message.to_owned())
}

/// Transient or fatal, by the project's one AWS error classifier.
fn classify<E>(op: &'static str, table: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(cause) = transient_cause(&err) {
        return StoreError::Transient {
            op,
            table: table.into(),
            cause,
        };
    }
    match content_refusal(err.code(), err.message()) {
        Some(message) => StoreError::Content {
            op,
            table: table.into(),
            message,
        },
        None => StoreError::Fatal {
            op,
            table: table.into(),
            code: err.code().unwrap_or("unknown").to_owned(),
            source: Box::new(err),
        },
    }
}

/// A new item in the service's outbox table: the event a shipment change raises.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub event_id: String,
    pub detail_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_version: i64,
    pub occurred_at: String,
    pub traceparent: Option<String>,
    /// The monolith event that caused it.
    pub causation_id: String,
    /// The payload, raw JSON (numbers as they came).
    pub data: Box<serde_json::value::RawValue>,
}

/// The state change an event makes, with the condition that keeps it safe.
#[derive(Debug, Clone)]
pub enum StateWrite {
    /// Stored only if no version or an older one is stored (DESIGN §4's guard).
    Customer(CustomerState),
    /// Stored only if the shipment is still as it was read (`expected_order_version`), so a
    /// transition is decided on the state it replaces.
    Shipment {
        shipment: Shipment,
        expected_order_version: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// The inbox already holds this event id: it was applied before.
    Duplicate,
    /// Another writer changed the state in between (or a conflicting transaction ran):
    /// re-read and decide again.
    Conflict,
}

#[derive(Clone)]
pub struct Store {
    client: aws_sdk_dynamodb::Client,
    pub tables: Tables,
    inbox_ttl: Duration,
    outbox_ttl: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn epoch_after(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        tables: Tables,
        inbox_ttl: Duration,
        outbox_ttl: Duration,
    ) -> Self {
        Self {
            client,
            tables,
            inbox_ttl,
            outbox_ttl,
        }
    }

    async fn get(&self, table: &str, key: &str, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", table, e))?;
        Ok(out.item)
    }

    /// The version of the projected customer, if any.
    pub async fn customer_version(&self, customer_id: &str) -> Result<Option<i64>, StoreError> {
        let table = &self.tables.customers;
        let Some(item) = self.get(table, "customer_id", customer_id).await? else {
            return Ok(None);
        };
        number_i64(&item, "aggregate_version")
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                table: table.clone(),
                key: customer_id.into(),
                reason: "no numeric aggregate_version".into(),
            })
    }

    pub async fn shipment(&self, order_id: &str) -> Result<Option<Shipment>, StoreError> {
        let table = &self.tables.shipments;
        let Some(item) = self.get(table, "order_id", order_id).await? else {
            return Ok(None);
        };
        shipment_from_item(&item)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                table: table.clone(),
                key: order_id.into(),
                reason: "missing state, customer_id, order_total, order_version or version".into(),
            })
    }

    /// One item of any of the service's tables, as JSON (for `shipping show`).
    pub async fn item_json(&self, table: &str, key: &str, id: &str) -> Result<Option<Value>, StoreError> {
        Ok(self.get(table, key, id).await?.map(|item| item_to_json(&item)))
    }

    /// Applies an event atomically: the inbox item, the state change and the outbox item
    /// commit together or not at all.
    pub async fn commit(
        &self,
        event_id: &str,
        detail_type: &str,
        state: Option<StateWrite>,
        outbox: Option<OutboxItem>,
    ) -> Result<CommitOutcome, StoreError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Fatal {
            op: "TransactWriteItems",
            table: self.tables.inbox.clone(),
            code: "InvalidRequest".into(),
            source: Box::new(e),
        };
        let inbox = Put::builder()
            .table_name(&self.tables.inbox)
            .item("event_id", s(event_id))
            .item("detail_type", s(detail_type))
            .item("processed_at", s(now_rfc3339()))
            .item("expires_at", n(epoch_after(self.inbox_ttl)))
            .condition_expression("attribute_not_exists(event_id)")
            .build()
            .map_err(build)?;
        let mut items = vec![TransactWriteItem::builder().put(inbox).build()];
        if let Some(state) = state {
            items.push(
                TransactWriteItem::builder()
                    .put(self.state_put(state).map_err(build)?)
                    .build(),
            );
        }
        if let Some(outbox) = outbox {
            items.push(
                TransactWriteItem::builder()
                    .put(self.outbox_put(outbox).map_err(build)?)
                    .build(),
            );
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(CommitOutcome::Committed),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                    err.as_service_error()
                {
                    let codes: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    if codes.first() == Some(&"ConditionalCheckFailed") {
                        return Ok(CommitOutcome::Duplicate);
                    }
                    if codes.is_empty()
                        || codes
                            .iter()
                            .any(|c| matches!(*c, "ConditionalCheckFailed" | "TransactionConflict"))
                    {
                        return Ok(CommitOutcome::Conflict);
                    }
                    if let Some(message) = cancel
                        .cancellation_reasons()
                        .iter()
                        .find_map(|r| content_refusal(r.code(), r.message()))
                    {
                        return Err(StoreError::Content {
                            op: "TransactWriteItems",
                            table: self.tables.inbox.clone(),
                            message,
                        });
                    }
                    if codes
                        .iter()
                        .any(|c| c.contains("Throttl") || c.contains("ThroughputExceeded"))
                    {
                        return Err(StoreError::Transient {
                            op: "TransactWriteItems",
                            table: self.tables.inbox.clone(),
                            cause: "throttled",
                        });
                    }
                }
                if err.code() == Some("TransactionConflictException") {
                    return Ok(CommitOutcome::Conflict);
                }
                Err(classify("TransactWriteItems", &self.tables.inbox, err))
            }
        }
    }

    fn state_put(&self, state: StateWrite) -> Result<Put, aws_sdk_dynamodb::error::BuildError> {
        let updated_at = s(now_rfc3339());
        match state {
            StateWrite::Customer(c) => Put::builder()
                .table_name(&self.tables.customers)
                .item("customer_id", s(c.customer_id))
                .item("name", s(c.name))
                .item("credit_limit", n(c.credit_limit))
                .item("credit_reserved", n(c.credit_reserved))
                .item("aggregate_version", n(c.version))
                .item("updated_at", updated_at)
                .condition_expression("attribute_not_exists(customer_id) OR aggregate_version < :v")
                .expression_attribute_values(":v", n(c.version))
                .build(),
            StateWrite::Shipment {
                shipment,
                expected_order_version,
            } => {
                let put = Put::builder()
                    .table_name(&self.tables.shipments)
                    .item("order_id", s(shipment.order_id))
                    .item("customer_id", s(shipment.customer_id))
                    .item("order_total", n(shipment.order_total))
                    .item("state", s(shipment.status.as_str()))
                    .item("order_version", n(shipment.order_version))
                    .item("version", n(shipment.version))
                    .item("updated_at", updated_at);
                match expected_order_version {
                    None => put.condition_expression("attribute_not_exists(order_id)"),
                    Some(v) => put
                        .condition_expression("order_version = :read")
                        .expression_attribute_values(":read", n(v)),
                }
                .build()
            }
        }
    }

    fn outbox_put(&self, o: OutboxItem) -> Result<Put, aws_sdk_dynamodb::error::BuildError> {
        let mut put = Put::builder()
            .table_name(&self.tables.outbox)
            .item("event_id", s(o.event_id))
            .item("detail_type", s(o.detail_type))
            .item("aggregate_type", s(o.aggregate_type))
            .item("aggregate_id", s(o.aggregate_id))
            .item("aggregate_version", n(o.aggregate_version))
            .item("occurred_at", s(o.occurred_at))
            .item("causation_id", s(o.causation_id))
            .item("data", s(o.data.to_string()))
            .item("expires_at", n(epoch_after(self.outbox_ttl)))
            // A deterministic event id: a retried transaction must not raise a second event.
            .condition_expression("attribute_not_exists(event_id)");
        if let Some(tp) = o.traceparent {
            put = put.item("traceparent", s(tp));
        }
        put.build()
    }

    /// Marks an outbox item as published (a missing item — expired by TTL — is fine).
    pub async fn mark_dispatched(&self, event_id: &str) -> Result<(), StoreError> {
        let table = &self.tables.outbox;
        match self
            .client
            .update_item()
            .table_name(table)
            .key("event_id", s(event_id))
            .update_expression("SET dispatched_at = :now")
            .condition_expression("attribute_exists(event_id)")
            .expression_attribute_values(":now", s(now_rfc3339()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(err) => Err(classify("UpdateItem", table, err)),
        }
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}

fn number_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn shipment_from_item(item: &Item) -> Option<Shipment> {
    let text = |name: &str| item.get(name)?.as_s().ok().cloned();
    Some(Shipment {
        order_id: text("order_id")?,
        customer_id: text("customer_id")?,
        order_total: Decimal::parse(item.get("order_total")?.as_n().ok()?)?,
        status: ShipmentStatus::parse(&text("state")?)?,
        order_version: number_i64(item, "order_version")?,
        version: number_i64(item, "version")?,
    })
}

/// A DynamoDB item as plain JSON (strings, numbers, booleans, lists, maps).
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), attr_to_json(v))).collect())
}

fn attr_to_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => n
            .parse::<Number>()
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(n.clone())),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::L(l) => Value::Array(l.iter().map(attr_to_json).collect()),
        AttributeValue::M(m) => item_to_json(m),
        AttributeValue::Null(_) => Value::Null,
        other => Value::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::content_refusal;

    #[test]
    fn values_dynamodb_cannot_store_are_content_our_expressions_are_not() {
        let key = "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of 2048 bytes";
        assert!(content_refusal(Some("ValidationException"), Some(key)).is_some());
        assert!(content_refusal(
            Some("ValidationException"),
            Some("Item size has exceeded the maximum allowed size")
        )
        .is_some());
        assert!(content_refusal(
            Some("ValidationError"),
            Some("Number overflow. Attempting to store a number with magnitude larger than supported range")
        )
        .is_some());
        assert!(content_refusal(
            Some("ValidationException"),
            Some("Invalid ConditionExpression: Syntax error")
        )
        .is_none());
        assert!(content_refusal(
            Some("ResourceNotFoundException"),
            Some("Requested resource not found")
        )
        .is_none());
        assert!(content_refusal(Some("AccessDeniedException"), Some("not authorized")).is_none());
        assert!(content_refusal(Some("ValidationException"), None).is_none());
    }
}
