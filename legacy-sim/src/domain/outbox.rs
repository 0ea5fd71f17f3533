//! The outbox: one row per domain event, written in the transaction of the change it describes.
//!
//! Columns follow Debezium's defaults (`id`, `aggregatetype`, `aggregateid`, `type`, `payload`,
//! `tracingspancontext`) plus `aggregate_version` and `occurred_at` (DESIGN §1).
//!
//! # Event catalogue
//!
//! Every payload carries the aggregate's FULL state after the change, so a projection converges by
//! keeping the state with the highest `aggregate_version`, whatever the delivery order. Money is a
//! JSON number (two decimal places at most).
//!
//! | aggregate | `type`            | when                                  | payload                                                          |
//! |-----------|-------------------|---------------------------------------|------------------------------------------------------------------|
//! | Customer  | `CustomerCreated` | `POST /customers`                     | `customer_id, name, credit_limit, credit_reserved, version`      |
//! | Customer  | `CreditReserved`  | an order is approved                  | customer state + `order_id, amount`                              |
//! | Customer  | `CreditReleased`  | an approved order is cancelled        | customer state + `order_id, amount`                              |
//! | Order     | `OrderPlaced`     | an order is approved                  | `order_id, customer_id, order_total, state, version`             |
//! | Order     | `OrderRejected`   | an order exceeds the available credit | order state + `reason` (`"insufficient_credit"`)                 |
//! | Order     | `OrderCancelled`  | `POST /orders/{id}/cancel`            | order state                                                      |
//!
//! `aggregatetype` is `Customer` or `Order`, `aggregateid` the entity's uuid as text, and
//! `aggregate_version` the entity's `version` after the change (1 on creation, +1 per change).
//! Placing an approved order writes `OrderPlaced` then `CreditReserved`; cancelling writes
//! `OrderCancelled` then `CreditReleased`; a rejection writes `OrderRejected` only.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::traceparent::TraceParent;
use super::DomainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateType {
    Customer,
    Order,
}

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "Customer",
            Self::Order => "Order",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    CustomerCreated,
    CreditReserved,
    CreditReleased,
    OrderPlaced,
    OrderRejected,
    OrderCancelled,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CustomerCreated => "CustomerCreated",
            Self::CreditReserved => "CreditReserved",
            Self::CreditReleased => "CreditReleased",
            Self::OrderPlaced => "OrderPlaced",
            Self::OrderRejected => "OrderRejected",
            Self::OrderCancelled => "OrderCancelled",
        }
    }

    pub fn aggregate_type(self) -> AggregateType {
        match self {
            Self::CustomerCreated | Self::CreditReserved | Self::CreditReleased => AggregateType::Customer,
            Self::OrderPlaced | Self::OrderRejected | Self::OrderCancelled => AggregateType::Order,
        }
    }
}

/// Appends one event inside the caller's transaction and returns its id.
pub async fn append<P: Serialize>(
    tx: &mut PgConnection,
    event_type: EventType,
    aggregate_id: Uuid,
    aggregate_version: i64,
    payload: &P,
    trace: &TraceParent,
) -> Result<Uuid, DomainError> {
    let payload = serde_json::to_value(payload).map_err(DomainError::Payload)?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version, \
         tracingspancontext) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(event_type.aggregate_type().as_str())
    .bind(aggregate_id.to_string())
    .bind(event_type.as_str())
    .bind(payload)
    .bind(aggregate_version)
    .bind(trace.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_belong_to_their_aggregate() {
        assert_eq!(EventType::CreditReserved.aggregate_type().as_str(), "Customer");
        assert_eq!(EventType::OrderRejected.aggregate_type().as_str(), "Order");
        assert_eq!(EventType::OrderCancelled.as_str(), "OrderCancelled");
    }
}
