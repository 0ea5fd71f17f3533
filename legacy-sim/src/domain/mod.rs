//! The monolith's domain: customers with a credit limit, orders that reserve credit, and the outbox.
//!
//! The rule this layer keeps: every mutation writes the entity rows AND one outbox row per domain
//! event in ONE SQL transaction, with `aggregate_version` equal to the entity's `version` after the
//! change. Inputs arrive as validated types ([`money::Amount`], [`customers::CustomerName`]), so
//! nothing invalid reaches the database.

pub mod customers;
pub mod money;
pub mod orders;
pub mod outbox;
pub mod traceparent;

use thiserror::Error;
use uuid::Uuid;

use self::orders::OrderState;

/// Input that breaks a domain rule; `code` is a stable machine-readable name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum DomainError {
    #[error("customer not found")]
    CustomerNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("the order is {state}; only approved orders can be cancelled")]
    NotCancellable { state: OrderState },
    #[error("cannot encode an event payload")]
    Payload(#[source] serde_json::Error),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The value a committed transaction produced, with the ids of the outbox events it wrote.
#[derive(Debug, Clone)]
pub struct Committed<T> {
    pub value: T,
    pub event_ids: Vec<Uuid>,
}
