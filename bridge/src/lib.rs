//! outbox-bridge: Postgres logical replication → Kinesis in AWS DMS's record format (capture),
//! with the slot acknowledged only once Kinesis durably holds every change up to that LSN;
//! and Kinesis → EventBridge domain events (relay), checkpointed only once EventBridge took them.

pub mod capture;
pub mod dms;
pub mod metrics;
pub mod outbox_horizon;
pub mod partition;
pub mod prune;
pub mod redrive;
pub mod relay;
pub mod run;
pub mod setup;
pub mod sink;
pub mod status;
pub mod unpublished;

pub use eventing::aws_config;
// The replication client lives in its own crate; these paths are the bridge's names for it.
pub use pg_replication as replication;
pub use pg_replication::{lsn, sql, table};
