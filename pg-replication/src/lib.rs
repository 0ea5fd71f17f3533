//! A PostgreSQL replication-mode client, the Postgres side of capture: the connection (TLS,
//! SCRAM, `require_auth`, multi-host URLs), pgoutput decoding, the publication and slot the
//! stream is read through, and the values they speak in (LSNs, table names, quoted SQL).
//! Nothing in here knows about Kinesis or the outbox.

pub mod auth_policy;
pub mod clock;
pub mod connection;
mod connection_io;
pub mod error;
pub mod lsn;
pub mod pgoutput;
pub mod pgpass;
pub mod session_attrs;
pub mod slot;
pub mod sql;
pub mod table;
pub mod target;
pub mod tls;

pub use connection::{ReplicationConnection, StreamMessage};

/// The session settings every connection that reads values as text pins (the replication
/// connection at start-up, query connections right after they open): pgoutput and `SELECT`
/// both write values in the session's text form, and a load record must be byte for byte the
/// record streaming makes of the same row, whatever a database's or role's defaults say.
pub const TEXT_SETTINGS: [(&str, &str); 4] = [
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
];
pub use error::ReplicationError;
pub use target::PgTarget;
