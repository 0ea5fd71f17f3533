//! Applying one incoming event: read the state it changes, decide with the pure domain
//! functions, commit in one transaction; re-decide when another writer got there first.

use serde::Serialize;
use uuid::Uuid;

use crate::domain::{self, Change, Decimal, ShipmentChange};
use crate::incoming::Incoming;
use crate::store::{CommitOutcome, OutboxItem, StateWrite, Store, StoreError};

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// State changed (and possibly a shipment event was raised).
    Changed,
    /// The event is older than the stored state: recorded in the inbox, nothing else.
    Stale,
    /// An event type shipping does not use: recorded in the inbox.
    Ignored,
    /// Applied before (the inbox holds its id): nothing written.
    Duplicate,
}

impl Applied {
    pub fn label(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied: poison, with the reason.
    #[error(transparent)]
    Unusable(#[from] domain::Unusable),
    /// A shipment whose event payload cannot be built (a value JSON cannot hold).
    #[error("shipment {order_id}: payload")]
    ShipmentPayload {
        order_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {event_id}: still conflicting after {attempts} attempts")]
    Contended { event_id: String, attempts: u32 },
}

/// Namespace of shipment event ids: an id derived from the causing event is the same on every
/// retry, so the outbox's `attribute_not_exists` condition keeps one event per cause.
const SHIPMENT_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_6a0e_93c4_4f1e_9a55_8f0b_5a3e_2c71);

const MAX_ATTEMPTS: u32 = 8;

pub async fn apply(store: &Store, event: &Incoming) -> Result<Applied, ApplyError> {
    let change = domain::interpret(&event.detail_type, event.aggregate_version, &event.data)?;
    for attempt in 0..MAX_ATTEMPTS {
        let (applied, state, outbox) = match &change {
            Change::Ignored => (Applied::Ignored, None, None),
            // The customer's put is conditional on an older (or no) stored version, so the first
            // attempt writes without reading: in order, the usual case, that is one call. A stale
            // event fails the condition (a conflict) and the next attempt reads to tell.
            Change::Customer(c) if attempt == 0 => {
                (Applied::Changed, Some(StateWrite::Customer(c.clone())), None)
            }
            Change::Customer(c) => match store.customer_version(&c.customer_id).await? {
                Some(stored) if stored >= c.version => (Applied::Stale, None, None),
                _ => (Applied::Changed, Some(StateWrite::Customer(c.clone())), None),
            },
            Change::Order(o) => {
                let current = store.shipment(&o.order_id).await?;
                match domain::plan_shipment(current.as_ref(), o) {
                    None => (Applied::Stale, None, None),
                    Some(ShipmentChange {
                        shipment,
                        event: raised,
                    }) => {
                        let outbox = raised
                            .map(|kind| -> Result<_, ApplyError> {
                                Ok(OutboxItem {
                                    event_id: Uuid::new_v5(
                                        &SHIPMENT_EVENT_NAMESPACE,
                                        format!("{}:{}", event.event_id, kind.detail_type()).as_bytes(),
                                    )
                                    .to_string(),
                                    detail_type: kind.detail_type().into(),
                                    aggregate_type: "Shipment".into(),
                                    aggregate_id: shipment.order_id.clone(),
                                    aggregate_version: shipment.version,
                                    occurred_at: chrono::Utc::now()
                                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                    traceparent: event.traceparent.clone(),
                                    causation_id: event.event_id.clone(),
                                    data: shipment_data(&shipment)?,
                                })
                            })
                            .transpose()?;
                        let state = StateWrite::Shipment {
                            expected_order_version: current.map(|s| s.order_version),
                            shipment,
                        };
                        (Applied::Changed, Some(state), outbox)
                    }
                }
            }
        };
        match store
            .commit(&event.event_id, &event.detail_type, state, outbox)
            .await?
        {
            CommitOutcome::Committed => return Ok(applied),
            CommitOutcome::Duplicate => return Ok(Applied::Duplicate),
            CommitOutcome::Conflict => {
                tracing::debug!(event_id = %event.event_id, "state changed underneath; deciding again");
            }
        }
    }
    Err(ApplyError::Contended {
        event_id: event.event_id.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

/// The payload of a shipment event, as raw JSON: `order_total` keeps the order's digits.
fn shipment_data(shipment: &domain::Shipment) -> Result<Box<serde_json::value::RawValue>, ApplyError> {
    #[derive(Serialize)]
    struct Data<'a> {
        order_id: &'a str,
        customer_id: &'a str,
        order_total: &'a Decimal,
        state: &'static str,
        version: i64,
    }
    serde_json::value::to_raw_value(&Data {
        order_id: &shipment.order_id,
        customer_id: &shipment.customer_id,
        order_total: &shipment.order_total,
        state: shipment.status.as_str(),
        version: shipment.version,
    })
    .map_err(|source| ApplyError::ShipmentPayload {
        order_id: shipment.order_id.clone(),
        source,
    })
}
