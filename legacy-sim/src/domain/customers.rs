//! The Customer aggregate: a credit limit and the credit reserved by approved orders.
//!
//! Events: `CustomerCreated`, `CreditReserved`, `CreditReleased` (see [`super::outbox`]). Credit
//! changes happen only on a row locked by the caller's transaction (`SELECT ... FOR UPDATE`), so
//! concurrent orders cannot overdraw.

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::money::{self, Amount};
use super::outbox::{self, EventType};
use super::traceparent::TraceParent;
use super::{Committed, DomainError, ValidationError};

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

const COLUMNS: &str = "id, name, credit_limit, credit_reserved, version";

/// A customer's full state; serialised as the API's view and as the Customer events' payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Customer {
    #[serde(rename = "customer_id")]
    pub id: Uuid,
    pub name: String,
    #[serde(with = "money::json")]
    pub credit_limit: Decimal,
    #[serde(with = "money::json")]
    pub credit_reserved: Decimal,
    pub version: i64,
}

impl Customer {
    pub fn available_credit(&self) -> Decimal {
        self.credit_limit - self.credit_reserved
    }
}

/// A name that is not blank, has no control characters and at most [`MAX_NAME_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerName(String);

impl CustomerName {
    pub fn parse(name: String) -> Result<Self, ValidationError> {
        if name.trim().is_empty() {
            return Err(ValidationError::new("invalid_name", "name must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::new(
                "invalid_name",
                format!("name must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        // Postgres text and jsonb cannot hold NUL; other control characters are refused with it.
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "invalid_name",
                "name must not contain control characters",
            ));
        }
        Ok(Self(name))
    }
}

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub name: CustomerName,
    pub credit_limit: Amount,
}

/// Payload of `CreditReserved` and `CreditReleased`: the customer's state plus the order and amount.
#[derive(Debug, Serialize)]
struct CreditChange<'a> {
    #[serde(flatten)]
    customer: &'a Customer,
    order_id: Uuid,
    #[serde(with = "money::json")]
    amount: Decimal,
}

/// Creates a customer (version 1) and its `CustomerCreated` event.
pub async fn create(
    pool: &PgPool,
    new: NewCustomer,
    trace: &TraceParent,
) -> Result<Committed<Customer>, DomainError> {
    let mut tx = pool.begin().await?;
    let customer: Customer = sqlx::query_as(&format!(
        "INSERT INTO customers (id, name, credit_limit, credit_reserved, version) \
         VALUES ($1, $2, $3, 0, 1) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(new.name.0)
    .bind(new.credit_limit.value())
    .fetch_one(&mut *tx)
    .await?;
    let event_id = outbox::append(
        &mut tx,
        EventType::CustomerCreated,
        customer.id,
        customer.version,
        &customer,
        trace,
    )
    .await?;
    tx.commit().await?;
    Ok(Committed {
        value: customer,
        event_ids: vec![event_id],
    })
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Customer, DomainError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(DomainError::CustomerNotFound)
}

/// Locks the customer's row until the end of the caller's transaction.
pub(crate) async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<Customer, DomainError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customers WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::CustomerNotFound)
}

/// Reserves `amount` for `order_id` and writes `CreditReserved`; the row must be locked.
pub(crate) async fn reserve_credit(
    tx: &mut PgConnection,
    customer_id: Uuid,
    order_id: Uuid,
    amount: Decimal,
    trace: &TraceParent,
) -> Result<(Customer, Uuid), DomainError> {
    change_credit(
        tx,
        EventType::CreditReserved,
        customer_id,
        order_id,
        amount,
        trace,
    )
    .await
}

/// Releases `amount` reserved for `order_id` and writes `CreditReleased`; the row must be locked.
pub(crate) async fn release_credit(
    tx: &mut PgConnection,
    customer_id: Uuid,
    order_id: Uuid,
    amount: Decimal,
    trace: &TraceParent,
) -> Result<(Customer, Uuid), DomainError> {
    change_credit(
        tx,
        EventType::CreditReleased,
        customer_id,
        order_id,
        amount,
        trace,
    )
    .await
}

async fn change_credit(
    tx: &mut PgConnection,
    event_type: EventType,
    customer_id: Uuid,
    order_id: Uuid,
    amount: Decimal,
    trace: &TraceParent,
) -> Result<(Customer, Uuid), DomainError> {
    let delta = if event_type == EventType::CreditReleased {
        -amount
    } else {
        amount
    };
    let customer: Customer = sqlx::query_as(&format!(
        "UPDATE customers SET credit_reserved = credit_reserved + $2, version = version + 1 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(customer_id)
    .bind(delta)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DomainError::CustomerNotFound)?;
    let payload = CreditChange {
        customer: &customer,
        order_id,
        amount,
    };
    let event_id = outbox::append(tx, event_type, customer.id, customer.version, &payload, trace).await?;
    Ok((customer, event_id))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_must_not_be_blank() {
        assert_eq!(
            CustomerName::parse(String::new()).unwrap_err().code,
            "invalid_name"
        );
        assert!(CustomerName::parse("   ".to_owned()).is_err());
    }

    #[test]
    fn names_are_limited_to_200_characters() {
        assert!(CustomerName::parse("é".repeat(200)).is_ok());
        assert!(CustomerName::parse("a".repeat(201)).is_err());
    }

    #[test]
    fn names_must_not_contain_control_characters() {
        assert!(CustomerName::parse("Ada\u{0}".to_owned()).is_err());
        assert!(CustomerName::parse("Ada\nLovelace".to_owned()).is_err());
        assert!(CustomerName::parse("Ada Lovelace".to_owned()).is_ok());
    }

    #[test]
    fn credit_events_carry_the_full_customer_state() {
        let customer = Customer {
            id: Uuid::nil(),
            name: "Ada".to_owned(),
            credit_limit: Decimal::new(10_000, 2),
            credit_reserved: Decimal::new(2_550, 2),
            version: 2,
        };
        let payload = serde_json::to_value(CreditChange {
            customer: &customer,
            order_id: Uuid::nil(),
            amount: Decimal::new(2_550, 2),
        })
        .unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "customer_id": Uuid::nil(), "name": "Ada", "credit_limit": 100.0,
                "credit_reserved": 25.5, "version": 2, "order_id": Uuid::nil(), "amount": 25.5
            })
        );
    }
}
