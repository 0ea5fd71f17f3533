//! The Order aggregate: approved when the customer's available credit covers the total, which is
//! then reserved; rejected otherwise; an approved order may be cancelled, releasing the credit.
//!
//! Events: `OrderPlaced`, `OrderRejected`, `OrderCancelled` (see [`super::outbox`]). Locks are
//! always taken customer first when placing (the order row is new) and order then customer when
//! cancelling; placing never locks an existing order, so the two cannot deadlock.

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::customers;
use super::money::{self, Amount};
use super::outbox::{self, EventType};
use super::traceparent::TraceParent;
use super::{Committed, DomainError};

const COLUMNS: &str = "id, customer_id, order_total, state, version";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderState {
    Approved,
    Rejected,
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown order state")]
pub struct UnknownOrderState;

impl TryFrom<String> for OrderState {
    type Error = UnknownOrderState;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "APPROVED" => Ok(Self::Approved),
            "REJECTED" => Ok(Self::Rejected),
            "CANCELLED" => Ok(Self::Cancelled),
            _ => Err(UnknownOrderState),
        }
    }
}

/// An order's full state; serialised as the API's view and as the Order events' payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Order {
    #[serde(rename = "order_id")]
    pub id: Uuid,
    pub customer_id: Uuid,
    #[serde(with = "money::json")]
    pub order_total: Decimal,
    #[sqlx(try_from = "String")]
    pub state: OrderState,
    pub version: i64,
}

/// Payload of `OrderRejected`: the order's state plus why.
#[derive(Debug, Serialize)]
struct Rejection<'a> {
    #[serde(flatten)]
    order: &'a Order,
    reason: &'static str,
}

/// The credit decision: approve when the available credit covers the whole total.
pub fn decide(available_credit: Decimal, order_total: Decimal) -> OrderState {
    if available_credit >= order_total {
        OrderState::Approved
    } else {
        OrderState::Rejected
    }
}

/// Places an order: `OrderPlaced` + `CreditReserved` when approved, `OrderRejected` otherwise.
pub async fn place(
    pool: &PgPool,
    customer_id: Uuid,
    order_total: Amount,
    trace: &TraceParent,
) -> Result<Committed<Order>, DomainError> {
    let total = order_total.value();
    let mut tx = pool.begin().await?;
    let customer = customers::lock(&mut tx, customer_id).await?;
    let state = decide(customer.available_credit(), total);
    let order: Order = sqlx::query_as(&format!(
        "INSERT INTO orders (id, customer_id, order_total, state, version) \
         VALUES ($1, $2, $3, $4, 1) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(customer_id)
    .bind(total)
    .bind(state.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let event_ids = if state == OrderState::Approved {
        let placed = outbox::append(
            &mut tx,
            EventType::OrderPlaced,
            order.id,
            order.version,
            &order,
            trace,
        )
        .await?;
        let (_, reserved) = customers::reserve_credit(&mut tx, customer_id, order.id, total, trace).await?;
        vec![placed, reserved]
    } else {
        let payload = Rejection {
            order: &order,
            reason: "insufficient_credit",
        };
        vec![
            outbox::append(
                &mut tx,
                EventType::OrderRejected,
                order.id,
                order.version,
                &payload,
                trace,
            )
            .await?,
        ]
    };
    tx.commit().await?;
    Ok(Committed {
        value: order,
        event_ids,
    })
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Order, DomainError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(DomainError::OrderNotFound)
}

/// Cancels an approved order: `OrderCancelled` + `CreditReleased`.
pub async fn cancel(pool: &PgPool, id: Uuid, trace: &TraceParent) -> Result<Committed<Order>, DomainError> {
    let mut tx = pool.begin().await?;
    let order: Order = sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DomainError::OrderNotFound)?;
    if order.state != OrderState::Approved {
        return Err(DomainError::NotCancellable { state: order.state });
    }
    customers::lock(&mut tx, order.customer_id).await?;
    let order: Order = sqlx::query_as(&format!(
        "UPDATE orders SET state = $2, version = version + 1 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(OrderState::Cancelled.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let cancelled = outbox::append(
        &mut tx,
        EventType::OrderCancelled,
        order.id,
        order.version,
        &order,
        trace,
    )
    .await?;
    let (_, released) =
        customers::release_credit(&mut tx, order.customer_id, order.id, order.order_total, trace).await?;
    tx.commit().await?;
    Ok(Committed {
        value: order,
        event_ids: vec![cancelled, released],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn approves_when_the_available_credit_covers_the_total() {
        assert_eq!(
            decide(Decimal::new(10_000, 2), Decimal::new(10_000, 2)),
            OrderState::Approved
        );
        assert_eq!(
            decide(Decimal::new(10_000, 2), Decimal::new(1, 2)),
            OrderState::Approved
        );
    }

    #[test]
    fn rejects_when_one_cent_is_missing() {
        assert_eq!(
            decide(Decimal::new(9_999, 2), Decimal::new(10_000, 2)),
            OrderState::Rejected
        );
        assert_eq!(decide(Decimal::ZERO, Decimal::new(1, 2)), OrderState::Rejected);
    }

    #[test]
    fn states_round_trip_through_their_column_text() {
        for state in [OrderState::Approved, OrderState::Rejected, OrderState::Cancelled] {
            assert_eq!(OrderState::try_from(state.as_str().to_owned()).unwrap(), state);
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert!(OrderState::try_from("SHIPPED".to_owned()).is_err());
    }

    #[test]
    fn rejections_carry_the_full_order_state_and_a_reason() {
        let order = Order {
            id: Uuid::nil(),
            customer_id: Uuid::nil(),
            order_total: Decimal::new(12_345, 2),
            state: OrderState::Rejected,
            version: 1,
        };
        let payload = serde_json::to_value(Rejection {
            order: &order,
            reason: "insufficient_credit",
        })
        .unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "order_id": Uuid::nil(), "customer_id": Uuid::nil(), "order_total": 123.45,
                "state": "REJECTED", "version": 1, "reason": "insufficient_credit"
            })
        );
    }
}
