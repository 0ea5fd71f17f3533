//! shipping: the example microservice of the reference architecture. It projects the monolith's
//! customers, keeps its own Shipment aggregate from the monolith's order events, and raises its
//! own domain events through a DynamoDB outbox — each incoming event applied in one
//! `TransactWriteItems` (inbox + state + outbox), each outbox item published from the table's
//! stream.

pub mod apply;
pub mod consumer;
pub mod domain;
pub mod incoming;
pub mod metrics;
pub mod publisher;
pub mod setup;
pub mod store;

/// The service's DynamoDB tables.
#[derive(Clone, Debug)]
pub struct Tables {
    /// The customer projection, key `customer_id`.
    pub customers: String,
    /// The Shipment aggregate, key `order_id`.
    pub shipments: String,
    /// Applied event ids, key `event_id`.
    pub inbox: String,
    /// Events to publish, key `event_id`, stream on.
    pub outbox: String,
    /// The publisher's per-shard stream checkpoints, key `shard_id`.
    pub checkpoints: String,
}
