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
pub mod python;
pub mod s3;
pub mod shipping;
pub mod sigv4;
pub mod stack;
pub mod tls;
pub mod wait;

use std::net::TcpListener;

/// A free TCP port on loopback for a server a test is about to start.
///
/// A port bound at `:0` and released comes from the kernel's ephemeral range, which every
/// outgoing connection on the machine also draws from: between the release and the server's
/// own bind, a client's local port can take it. So ports come from below that range, each
/// handed out at most once per process (tests run in parallel in one binary), and only after
/// a bind shows nobody holds it now.
pub fn free_port() -> anyhow::Result<u16> {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let (low, high) = port_range();
    if high <= low {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let span = u32::from(high - low);
    let next = NEXT.get_or_init(|| {
        // Another process using the harness at the same time (a benchmark, the chaos run)
        // most likely starts elsewhere in the range.
        let seed = std::process::id().wrapping_mul(7919) ^ uuid::Uuid::new_v4().as_u128() as u32;
        std::sync::atomic::AtomicU32::new(seed % span)
    });
    for _ in 0..span {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = low + n as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {low}..{high}")
}

/// Ports below the kernel's ephemeral range (Linux: 32768 by default) and above the
/// well-known ones; an empty range where the ephemeral range starts too low to leave room.
fn port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u16>().ok()))
        .unwrap_or(32768);
    (15000, ephemeral_low.saturating_sub(1))
}

/// A name unique to this test run, for streams, slots and tables.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}
