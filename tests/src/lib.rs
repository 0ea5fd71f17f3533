//! The embedded default stack and the tools tests use on it: a throwaway Postgres built from
//! the local PostgreSQL binaries, `moto_server` on a loopback port, the project's binaries as
//! real processes, a Kinesis reader, and a TCP proxy that can take an endpoint away.
//!
//! Nothing here is mocked: every test talks to real servers it started and stops.

pub mod binaries;
pub mod bus;
pub mod cloudformation;
pub mod dlq;
pub mod endpoint;
pub mod faults;
pub mod forward;
pub mod kinesis;
pub mod lsn;
pub mod metrics;
pub mod moto;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod s3;
pub mod shipping;
pub mod sigv4;
pub mod stack;
pub mod tls;
pub mod wait;

use std::net::TcpListener;

/// A free TCP port on loopback (bound and released; good enough for a test's lifetime).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A name unique to this test run, for streams, slots and tables.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}
