//! The shipping service's domain as pure functions: which monolith events it understands, and
//! what each one does to the customer projection and to the Shipment aggregate.
//!
//! Every monolith event carries its aggregate's full state and version, so applying an event
//! is "take this state if it is newer than what we hold": duplicates and reordering cannot
//! change the outcome, only the newest version wins.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON number exactly as the event wrote it: a payload is read as raw JSON and the number's
/// text kept, so digits beyond f64 (a money amount, a 19-digit id) reach the projection and
/// shipping's own events unchanged. Serializes as that number, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal(String);

impl Decimal {
    /// `text` if it is one JSON number (any size: range is the store's business).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            && serde_json::from_str::<&RawValue>(text).is_ok();
        number.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// What one monolith event means to shipping.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Customer(CustomerState),
    Order(OrderState),
    /// An event type shipping does not use: recorded in the inbox, nothing else.
    Ignored,
}

/// The customer projection: the monolith's customer as of `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerState {
    pub customer_id: String,
    pub name: String,
    pub credit_limit: Decimal,
    pub credit_reserved: Decimal,
    pub version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Approved,
    Rejected,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderState {
    pub order_id: String,
    pub customer_id: String,
    pub order_total: Decimal,
    pub status: OrderStatus,
    pub version: i64,
}

const CUSTOMER_EVENTS: [&str; 3] = ["CustomerCreated", "CreditReserved", "CreditReleased"];
const ORDER_EVENTS: [&str; 3] = ["OrderPlaced", "OrderRejected", "OrderCancelled"];

/// The monolith event types shipping subscribes to (its EventBridge rule's `detail-type`s).
pub fn subscribed_event_types() -> Vec<&'static str> {
    CUSTOMER_EVENTS
        .iter()
        .chain(ORDER_EVENTS.iter())
        .copied()
        .collect()
}

/// An event of a known type whose data cannot be applied: a poison message, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail_type}: {problem}")]
pub struct Unusable {
    pub detail_type: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("data is not a JSON object")]
    NotAnObject,
    #[error("no positive aggregate_version in metadata or data.version")]
    NoVersion,
    #[error("data.{0} is missing or not a non-empty string")]
    NotText(&'static str),
    #[error("data.{0} is missing or not a number")]
    NotANumber(&'static str),
    #[error("data.state {0:?} is not an order state")]
    NotAState(Option<String>),
}

/// Reads an event's meaning from its type, `metadata.aggregate_version` and `data`.
pub fn interpret(detail_type: &str, version: Option<i64>, data: &RawValue) -> Result<Change, Unusable> {
    let unusable = |problem| Unusable {
        detail_type: detail_type.to_owned(),
        problem,
    };
    let customer = CUSTOMER_EVENTS.contains(&detail_type);
    if !customer && !ORDER_EVENTS.contains(&detail_type) {
        return Ok(Change::Ignored);
    }
    // Each field as raw JSON: numbers keep their digits; the others are read from it.
    let fields: HashMap<&str, &RawValue> =
        serde_json::from_str(data.get()).map_err(|_| unusable(Problem::NotAnObject))?;
    let field = |name: &str| fields.get(name).map(|raw| raw.get());
    let version = version
        .or_else(|| field("version").and_then(|v| v.parse().ok()))
        .filter(|v| *v > 0)
        .ok_or_else(|| unusable(Problem::NoVersion))?;
    let string = |name: &str| field(name).and_then(|raw| serde_json::from_str::<String>(raw).ok());
    let text = |name: &'static str| {
        string(name)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unusable(Problem::NotText(name)))
    };
    let number = |name: &'static str| {
        field(name)
            .and_then(Decimal::parse)
            .ok_or_else(|| unusable(Problem::NotANumber(name)))
    };
    if customer {
        return Ok(Change::Customer(CustomerState {
            customer_id: text("customer_id")?,
            name: text("name")?,
            credit_limit: number("credit_limit")?,
            credit_reserved: number("credit_reserved")?,
            version,
        }));
    }
    let status = match string("state").as_deref() {
        Some("APPROVED") => OrderStatus::Approved,
        Some("REJECTED") => OrderStatus::Rejected,
        Some("CANCELLED") => OrderStatus::Cancelled,
        other => return Err(unusable(Problem::NotAState(other.map(str::to_owned)))),
    };
    Ok(Change::Order(OrderState {
        order_id: text("order_id")?,
        customer_id: text("customer_id")?,
        order_total: number("order_total")?,
        status,
        version,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    Scheduled,
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SCHEDULED" => Some(Self::Scheduled),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The Shipment aggregate, keyed by its order: `order_version` is the newest order version
/// applied (the reordering guard), `version` counts the shipment's own changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipment {
    pub order_id: String,
    pub customer_id: String,
    pub order_total: Decimal,
    pub status: ShipmentStatus,
    pub order_version: i64,
    pub version: i64,
}

/// The domain event a shipment change raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentEvent {
    Scheduled,
    Cancelled,
}

impl ShipmentEvent {
    pub fn detail_type(self) -> &'static str {
        match self {
            Self::Scheduled => "ShipmentScheduled",
            Self::Cancelled => "ShipmentCancelled",
        }
    }
}

/// What an order event does to its shipment: the new state to store, and the event it raises.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentChange {
    pub shipment: Shipment,
    pub event: Option<ShipmentEvent>,
}

/// Decides the shipment change for an order event, given the stored shipment. `None`: nothing to
/// store (the event is older than what was applied, or a rejected order that never had one).
///
/// A cancellation that arrives before its order's placement stores a cancelled shipment
/// without raising anything: nothing was scheduled, and the late placement is then stale.
pub fn plan_shipment(current: Option<&Shipment>, order: &OrderState) -> Option<ShipmentChange> {
    if current.is_some_and(|s| s.order_version >= order.version) {
        return None;
    }
    let wanted = match order.status {
        OrderStatus::Approved => ShipmentStatus::Scheduled,
        OrderStatus::Cancelled | OrderStatus::Rejected => ShipmentStatus::Cancelled,
    };
    let was = current.map(|s| s.status);
    if was.is_none() && order.status == OrderStatus::Rejected {
        return None;
    }
    let event = match (was, wanted) {
        (Some(ShipmentStatus::Scheduled), ShipmentStatus::Cancelled) => Some(ShipmentEvent::Cancelled),
        (None | Some(ShipmentStatus::Cancelled), ShipmentStatus::Scheduled) => Some(ShipmentEvent::Scheduled),
        _ => None,
    };
    let shipment = Shipment {
        order_id: order.order_id.clone(),
        customer_id: order.customer_id.clone(),
        order_total: order.order_total.clone(),
        status: wanted,
        order_version: order.version,
        version: current.map_or(1, |s| s.version + 1),
    };
    Some(ShipmentChange { shipment, event })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn raw(v: &Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn order(status: &str, version: i64) -> OrderState {
        let Ok(Change::Order(o)) = interpret(
            "OrderPlaced",
            Some(version),
            &raw(&json!({"order_id": "o1", "customer_id": "c1", "order_total": 12.5, "state": status})),
        ) else {
            panic!("not an order")
        };
        o
    }

    fn apply_all(events: &[OrderState]) -> (Option<Shipment>, Vec<ShipmentEvent>) {
        let mut current: Option<Shipment> = None;
        let mut raised = Vec::new();
        for e in events {
            if let Some(change) = plan_shipment(current.as_ref(), e) {
                raised.extend(change.event);
                current = Some(change.shipment);
            }
        }
        (current, raised)
    }

    #[test]
    fn placement_schedules_and_cancellation_cancels() {
        let (s, raised) = apply_all(&[order("APPROVED", 1), order("CANCELLED", 2)]);
        let s = s.unwrap();
        assert_eq!(s.status, ShipmentStatus::Cancelled);
        assert_eq!(s.version, 2);
        assert_eq!(raised, vec![ShipmentEvent::Scheduled, ShipmentEvent::Cancelled]);
    }

    #[test]
    fn reordered_and_repeated_events_end_in_the_same_state_without_extra_events() {
        let (s, raised) = apply_all(&[order("CANCELLED", 2), order("APPROVED", 1), order("CANCELLED", 2)]);
        assert_eq!(s.unwrap().status, ShipmentStatus::Cancelled);
        assert!(raised.is_empty(), "nothing was ever scheduled: {raised:?}");
        let (s, raised) = apply_all(&[order("APPROVED", 1), order("APPROVED", 1)]);
        assert_eq!(s.unwrap().version, 1);
        assert_eq!(raised, vec![ShipmentEvent::Scheduled]);
    }

    #[test]
    fn a_rejected_order_gets_no_shipment() {
        assert_eq!(apply_all(&[order("REJECTED", 1)]), (None, vec![]));
    }

    #[test]
    fn unknown_types_are_ignored_and_unusable_payloads_are_poison() {
        assert_eq!(
            interpret("SomethingElse", Some(1), &raw(&json!({}))),
            Ok(Change::Ignored)
        );
        let err = interpret("OrderPlaced", Some(1), &raw(&json!({"oops": true}))).unwrap_err();
        assert!(err.to_string().contains("data.state"), "{err}");
        let err = interpret("CustomerCreated", None, &raw(&json!({"customer_id": "c"}))).unwrap_err();
        assert!(err.to_string().contains("aggregate_version"), "{err}");
        let err = interpret(
            "CustomerCreated",
            Some(1),
            &raw(&json!({"customer_id": "c", "name": "A", "credit_limit": "x", "credit_reserved": 0})),
        )
        .unwrap_err();
        assert!(err.to_string().contains("credit_limit"), "{err}");
        let err = interpret("OrderPlaced", Some(1), &raw(&json!([1, 2]))).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn numbers_keep_every_digit_the_event_wrote() {
        let data = RawValue::from_string(
            r#"{"customer_id": "c", "name": "A", "credit_limit": 12345678901234567.89,
                "credit_reserved": -0.000000000000000000001, "version": 7}"#
                .into(),
        )
        .unwrap();
        let Ok(Change::Customer(c)) = interpret("CustomerCreated", None, &data) else {
            panic!("not a customer")
        };
        assert_eq!(c.credit_limit.as_str(), "12345678901234567.89");
        assert_eq!(c.credit_reserved.as_str(), "-0.000000000000000000001");
        assert_eq!(c.version, 7);
        // And they are written out as they came.
        assert_eq!(
            serde_json::to_string(&json!({"x": 1}).as_object().map(|_| &c.credit_limit)).unwrap(),
            "12345678901234567.89"
        );
        assert!(Decimal::parse("\"1\"").is_none() && Decimal::parse("1e400").is_some());
    }
}
