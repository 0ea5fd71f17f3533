//! Capture's arguments and tuning.

use super::*;

/// Only the capture tuning flags: parsed from no arguments, they are the defaults (and the
/// `BRIDGE_*` environment), so a command without those flags (`setup`) uses the same values
/// without a second copy of them.
#[derive(Parser, Debug)]
pub struct CaptureTuningOnly {
    #[command(flatten)]
    pub tuning: CaptureTuningArgs,
}

impl CaptureTuningArgs {
    pub fn defaults() -> Result<Self, clap::Error> {
        CaptureTuningOnly::try_parse_from(["bridge"]).map(|only| only.tuning)
    }
}

#[derive(Args, Debug)]
pub struct CaptureTuningArgs {
    /// Prefix of `pg_logical_emit_message(true, prefix, json)` calls that are outbox events (the table-less outbox).
    #[arg(long, env = "BRIDGE_MESSAGE_PREFIX", default_value = "outbox")]
    pub message_prefix: String,
    /// Send json/jsonb columns as escaped strings, exactly as AWS DMS does.
    #[arg(long, env = "BRIDGE_STRICT_DMS")]
    pub strict_dms: bool,
    /// PutRecords batches in flight at once.
    #[arg(long, env = "BRIDGE_MAX_INFLIGHT_BATCHES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_inflight_batches: u16,
    /// How long a batch waits for more records before it is sent. (Old spelling:
    /// --batch-linger-ms, a number of milliseconds.)
    #[arg(long, alias = "batch-linger-ms", env = "BRIDGE_BATCH_LINGER", default_value = "10ms", value_parser = BATCH_LINGER.parser())]
    pub batch_linger: Duration,
    /// How long shutdown waits for in-flight work before giving up (it is replayed on restart).
    /// (Old spelling: --shutdown-timeout-secs, a number of seconds.)
    #[arg(long, alias = "shutdown-timeout-secs", env = "BRIDGE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = SHUTDOWN_TIMEOUT.parser())]
    pub shutdown_timeout: Duration,
    /// Retained WAL (bytes) above which capture logs a warning every check (every 10 s); the
    /// figure is always on /metrics as bridge_slot_retained_wal_bytes.
    #[arg(long, env = "BRIDGE_RETAINED_WAL_WARN_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(i64).range(0..))]
    pub retained_wal_warn_bytes: i64,
    /// Age of the oldest retained WAL above which capture logs a warning every check; the
    /// figure is always on /metrics as bridge_slot_retained_wal_age_seconds. (Old spelling:
    /// --retained-wal-warn-secs, a number of seconds.)
    #[arg(long, alias = "retained-wal-warn-secs", env = "BRIDGE_RETAINED_WAL_WARN_AGE", default_value = "1h", value_parser = RETAINED_WAL_WARN_AGE.parser())]
    pub retained_wal_warn_age: Duration,
    /// Time between heartbeats (a non-transactional pg_logical_emit_message that capture
    /// reads back, so the slot moves and the stream is dated even where the database is quiet);
    /// 0s turns them off. (Old spelling: --heartbeat-secs, a number of seconds.)
    #[arg(long, alias = "heartbeat-secs", env = "BRIDGE_HEARTBEAT_INTERVAL", default_value = "1m", value_parser = HEARTBEAT_INTERVAL.parser())]
    pub heartbeat_interval: Duration,
    /// How long Postgres may stay silent before the connection counts as dead and capture
    /// reconnects: a network that drops packets without closing the socket is noticed within
    /// this bound, not after TCP's ~15 minutes. Capture asks the server for a reply when a third
    /// of it has passed, so a healthy idle server is never mistaken for a dead one.
    /// (Old spelling: --replication-timeout-secs, a number of seconds.)
    #[arg(long, alias = "replication-timeout-secs", env = "BRIDGE_REPLICATION_TIMEOUT", default_value = "30s", value_parser = REPLICATION_TIMEOUT.parser())]
    pub replication_timeout: Duration,
    /// What capture does when its slot is gone (dropped, invalidated, or absent after a
    /// failover): re-publish the outbox rows that may have been missed and stream from a new
    /// slot, or stop with the reason.
    #[arg(
        long,
        env = "BRIDGE_ON_SLOT_LOSS",
        value_enum,
        default_value = "resync-outbox"
    )]
    pub on_slot_loss: bridge::capture::OnSlotLoss,
    /// How far before the last delivered commit the resync starts re-publishing (`occurred_at`):
    /// at least the longest transaction the monolith runs. Keep the outbox (`bridge outbox
    /// prune --older-than`) longer than this plus the longest outage to recover automatically.
    #[arg(long, env = "BRIDGE_RESYNC_MARGIN", default_value = "1h", value_parser = PLAIN.parser())]
    pub resync_margin: std::time::Duration,
    /// Physical standbys (application_name) that must have flushed a transaction before
    /// capture publishes it, so a failover never takes back an event consumers saw (what
    /// PostgreSQL 17's synchronized_standby_slots does): `a,b` (every one), `FIRST n (a, b)` or
    /// `ANY n (a, b)`. Too few connected hold publishing back (/readyz names them); the server
    /// capture reads from (its cluster_name) is left out, so one rule can name both of a pair.
    #[arg(long, env = "BRIDGE_SYNCHRONOUS_STANDBY")]
    pub synchronous_standby: Option<bridge::capture::standby_rule::StandbyRule>,
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub outbox: OutboxArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub tuning: CaptureTuningArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// S3 bucket where records above the stream's record limit (1 MiB unless raised) are stored whole; the stream carries
    /// a claim check to them (the relay's claim-check bucket).
    #[arg(
        long,
        env = "BRIDGE_CLAIM_CHECK_BUCKET",
        default_value = "bridge-claim-checks"
    )]
    pub claim_check_bucket: String,
    /// Where records go: `kinesis`, or `null` (accepted and discarded at once: measures the
    /// capture path alone, for benchmarks; the slot is acknowledged as if Kinesis took them).
    #[arg(long, env = "BRIDGE_SINK", value_enum, default_value_t = SinkKind::Kinesis)]
    pub sink: SinkKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Kinesis,
    Null,
}
