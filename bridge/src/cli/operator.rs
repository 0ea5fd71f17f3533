//! The one-shot operator commands' arguments: setup, status, the DLQ, replay, backfill, prune, healthcheck.

use super::*;

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// Where the process to check serves /livez and /readyz (the same setting it was started with).
    #[arg(long, env = "BRIDGE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// Ask /readyz (dependencies answer, loops make progress) instead of /livez (the process is
    /// alive: what a container health check should ask, so an outage does not get it killed).
    #[arg(long)]
    pub ready: bool,
}

#[derive(Subcommand, Debug)]
pub enum OutboxAction {
    /// Delete outbox rows older than --older-than that the slot has confirmed delivered, in
    /// small batches (for cron; run with a role that may delete from the outbox). Never a row
    /// the slot has not confirmed, whatever its occurred_at says; exits 1 without deleting
    /// anything when the slot cannot confirm (capture stopped or behind).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub outbox: OutboxArgs,
    /// The retention: rows whose occurred_at is older than this go once delivered (90m, 36h, 7d, 2w).
    #[arg(long, value_parser = bridge::prune::parse_duration)]
    pub older_than: std::time::Duration,
    /// Rows per delete statement, each its own short transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch: i64,
    /// How long to wait for the slot to confirm the position the run starts at. (Old spelling:
    /// --wait-secs, a number of seconds.)
    #[arg(long, alias = "wait-secs", default_value = "1m", value_parser = PRUNE_WAIT.parser())]
    pub wait: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["table", "all"])))]
pub struct BackfillArgs {
    /// Table(s) to re-send (schema.table, comma-separated); each needs a primary key and must
    /// be in the publication.
    #[arg(long, value_delimiter = ',')]
    pub table: Vec<TableName>,
    /// Every table of the publication.
    #[arg(long)]
    pub all: bool,
    /// Only rows matching this SQL condition (e.g. "occurred_at >= '2026-11-01'").
    #[arg(long = "where")]
    pub where_sql: Option<String>,
    /// Rows per chunk (one SELECT between two watermarks).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub chunk_rows: u64,
    /// At most this many rows per second, so live changes are never starved (0: no limit).
    #[arg(long, default_value_t = 5000)]
    pub rows_per_second: u64,
    /// The slot of the capture that runs it.
    #[arg(long, env = "BRIDGE_SLOT", default_value = "outbox_bridge", value_parser = parse_slot_name)]
    pub slot: String,
    /// Postgres URL, only to count the rows for the progress bar.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Replace a backfill that is still running (it stops after its current chunk).
    #[arg(long)]
    pub restart: bool,
    /// Return once the request is recorded instead of following it to the end.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub resources: RelayResourceArgs,
    /// Retained WAL (bytes) above which the slot needs attention.
    #[arg(long, env = "BRIDGE_RETAINED_WAL_THRESHOLD", default_value_t = 1 << 30, value_parser = clap::value_parser!(i64).range(0..))]
    pub retained_wal_threshold: i64,
    /// A record the relay has not published, older than this, needs attention (90m, 6h, 2d):
    /// Kinesis trims records past the stream's retention, read or not. Default: half the retention.
    #[arg(long, env = "BRIDGE_UNPUBLISHED_AGE_THRESHOLD", value_parser = PLAIN.parser())]
    pub unpublished_age_threshold: Option<std::time::Duration>,
    /// Capture's --synchronous-standby rule (same variable): says whether the standbys let
    /// capture publish, and for which one it waits.
    #[arg(long, env = "BRIDGE_SYNCHRONOUS_STANDBY")]
    pub synchronous_standby: Option<bridge::capture::standby_rule::StandbyRule>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DlqAction {
    /// Show each parked record with its reason (they stay parked).
    List(DlqArgs),
    /// Put each parked record back on its Kinesis stream (once the cause is fixed) and remove
    /// it from the DLQ; a record that was truncated when parked stays.
    Redrive(DlqArgs),
}

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(flatten)]
    pub resources: RelayResourceArgs,
    /// At most this many messages.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max: u32,
    /// How long each message stays hidden from other readers while it is listed or redriven
    /// (whole seconds, SQS' unit); a redrive renews it until the message is sent and deleted.
    /// (Old spelling: --hold-secs, a number of seconds.)
    #[arg(long, alias = "hold-secs", default_value = "1m", value_parser = eventing::duration::DLQ_HOLD.parser())]
    pub hold: Duration,
    /// Print JSON instead of text (list).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub outbox: OutboxArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub resources: RelayResourceArgs,
    /// Shards of the stream when it is created (more shards, more parallel relays).
    #[arg(long, env = "BRIDGE_SHARDS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub shards: i32,
    /// The stream's maximum record size in KiB, 1024 (Kinesis' default) to 10240
    /// (`UpdateMaxRecordSize`), set on a new or an existing stream; unset: left as it is.
    /// Capture reads the stream's limit when it starts and claim-checks only records above it.
    #[arg(long, env = "BRIDGE_MAX_RECORD_SIZE_KIB", value_parser = clap::value_parser!(i32).range(1024..=10_240))]
    pub max_record_size_kib: Option<i32>,
    /// Create the slot again although one was created for this stream before and is gone:
    /// only after the changes made meanwhile were dealt with (docs: Failover and recovery).
    #[arg(long, env = "BRIDGE_RECREATE_SLOT")]
    pub recreate_slot: bool,
    /// AWS DMS's full-load-and-cdc: create the slot with a snapshot and send every row of the
    /// published tables from it as `load` records before capture streams what follows (no gap,
    /// no overlap). Needs a new slot (or the one a full load cut short left).
    #[arg(long, env = "BRIDGE_FULL_LOAD")]
    pub full_load: bool,
    /// How long the bus's archive (`<bus>-archive`, every event) keeps events for `bridge
    /// replay`, in whole days (EventBridge's unit); 0d: no archive. (Old spelling:
    /// --archive-retention-days, a number of days.)
    #[arg(long, alias = "archive-retention-days", env = "BRIDGE_ARCHIVE_RETENTION", default_value = "30d", value_parser = ARCHIVE_RETENTION.parser())]
    pub archive_retention: Duration,
    /// How long a claim-checked payload stays in the bucket (an S3 lifecycle rule on
    /// `claim-checks/`, whole days): longer than the archive keeps events, so a replayed event
    /// still finds its payload, and than a parked event may wait in a dead-letter queue (14
    /// days). (Old spelling: --claim-check-retention-days, a number of days.)
    #[arg(long, alias = "claim-check-retention-days", env = "BRIDGE_CLAIM_CHECK_RETENTION", default_value = "45d", value_parser = CLAIM_CHECK_RETENTION.parser())]
    pub claim_check_retention: Duration,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Replay events from this time: RFC 3339, or a duration ago (90m, 1h, 7d).
    #[arg(long, value_parser = eventing::replay::parse_time)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// Up to this time (default: now).
    #[arg(long, value_parser = eventing::replay::parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The one rule (of the bus) whose targets receive the replayed events; no other rule does.
    #[arg(long)]
    pub rule: String,
    /// EventBridge bus the rule and the archive belong to.
    #[arg(long, env = "BRIDGE_EVENT_BUS", default_value = "legacy-monolith")]
    pub event_bus: String,
}

#[derive(Subcommand, Debug)]
pub enum SchemasAction {
    /// Write each contract as an EventBridge Schema Registry document (`source@DetailType.json`):
    /// the whole event AWS delivers, the envelope in `detail`, the contract as `detail.data`.
    Export(SchemasExportArgs),
}

#[derive(Args, Debug)]
pub struct SchemasExportArgs {
    /// The registry the documents are for (the only one today).
    #[arg(long, value_enum, default_value_t = SchemaFormat::Eventbridge)]
    pub format: SchemaFormat,
    /// The registry's content type.
    #[arg(long, value_enum, default_value_t = eventing::contracts::registry::Content::OpenApi3)]
    pub content: eventing::contracts::registry::Content,
    /// The contracts' directory (`<Source>/<DetailType>.json`); default: `[contracts] schemas`
    /// of the configuration file.
    #[arg(long, value_name = "DIR")]
    pub schemas: Option<std::path::PathBuf>,
    /// Where the documents are written (created if missing).
    #[arg(long, value_name = "DIR", default_value = "eventbridge-schemas")]
    pub out: std::path::PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaFormat {
    /// EventBridge Schema Registry documents.
    Eventbridge,
}
