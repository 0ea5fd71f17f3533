//! The Postgres side of capture: a replication-mode client, pgoutput decoding, and the
//! publication and slot the stream is read through.

pub mod auth_policy;
pub mod connection;
mod connection_io;
pub mod error;
pub mod pgoutput;
pub mod pgpass;
pub mod session_attrs;
pub mod slot;
pub mod target;
pub mod tls;

pub use connection::{ReplicationConnection, StreamMessage};
pub use error::ReplicationError;
pub use target::PgTarget;
