//! Command-line flags, each with an environment fallback (DESIGN §6 lists the contract).

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use bridge::partition::PartitionKey;
use bridge::replication::slot::FailoverSlot;
use bridge::table::TableName;
use std::time::Duration;

use eventing::duration::{Bare, Flag};
use eventing::emf::CloudWatchMetrics;
use eventing::logging::LogFormat;

// Every duration flag takes `250ms`, `30s`, `5m`, `1h`, `7d`; a bare number is read in the unit
// of the flag's old spelling (`--stall-timeout-secs 120`), which stays an alias.
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const DAY: u64 = 86_400;
/// The upper bound of a flag that had none: a century (before, any u64 was taken).
const NO_BOUND: Duration = secs(36_500 * DAY);
const STALL_TIMEOUT: Flag = Flag::new(Bare::Seconds, secs(1), NO_BOUND);
const BATCH_LINGER: Flag = Flag::new(Bare::Millis, Duration::ZERO, NO_BOUND);
const SHUTDOWN_TIMEOUT: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND);
const RETAINED_WAL_WARN_AGE: Flag = Flag::new(Bare::Seconds, secs(1), NO_BOUND);
const HEARTBEAT_INTERVAL: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND);
const REPLICATION_TIMEOUT: Flag = Flag::new(Bare::Seconds, secs(3), secs(3600));
const LEASE_DURATION: Flag = Flag::new(Bare::Seconds, secs(2), secs(3600));
const POLL_INTERVAL: Flag = Flag::new(Bare::Millis, Duration::ZERO, NO_BOUND);
const ARCHIVE_RETENTION: Flag = Flag::new(Bare::Days, Duration::ZERO, secs(36_500 * DAY)).whole(Bare::Days);
const PRUNE_WAIT: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND);
/// Durations that never had a unit in their name: a bare number is seconds.
const PLAIN: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND);
const CLAIM_CHECK_RETENTION: Flag = Flag::new(Bare::Days, secs(DAY), secs(36_500 * DAY)).whole(Bare::Days);

#[derive(Parser, Debug)]
#[command(
    name = "bridge",
    version,
    about = "outbox-bridge: Postgres outbox → Kinesis (capture) → EventBridge (relay)"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Export traces (OTLP over HTTP/protobuf) to this collector, e.g. `http://127.0.0.1:4318`;
    /// none without it. The standard OpenTelemetry variable is the fallback.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create what the pipeline needs (idempotent): stream, bus, checkpoint table, claim-check
    /// bucket, dead-letter queue; with a database URL also the publication and the slot.
    Setup(SetupArgs),
    /// Stream committed changes from the replication slot to Kinesis.
    Capture(CaptureArgs),
    /// Publish the stream's outbox inserts to EventBridge as domain events.
    Relay(RelayArgs),
    /// Capture and relay in one process (small deployments, the demo).
    Run(Box<RunArgs>),
    /// Slot, publication, stream, relay checkpoints and leases, DLQ depth; exits 1 when
    /// something needs attention.
    Status(StatusArgs),
    /// List or redrive the records parked in the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Replay archived events to one rule only (a consumer that joined late or lost its state),
    /// following the EventBridge replay to the end.
    Replay(ReplayArgs),
    /// Re-send a table's rows (or a slice) as DMS `load` records while capture streams; capture
    /// runs it (watermarks keep each row's newest state last) and it resumes after a restart.
    Backfill(BackfillArgs),
    /// Exit 0 if the process serving --metrics-listen is alive (`/livez`; with --ready, ready:
    /// `/readyz`), else 1 with its reasons: the container health check (the image has no curl).
    Healthcheck(HealthcheckArgs),
    /// The outbox table as the recovery log: its retention.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
}

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
pub struct StreamArgs {
    /// Kinesis stream the changes are written to and read from.
    #[arg(long, env = "BRIDGE_STREAM", default_value = "legacy-cdc")]
    pub stream: String,
}

#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// The outbox table: only its inserts are captured, and they become the events.
    #[arg(long, env = "BRIDGE_OUTBOX_TABLE", default_value = "public.outbox")]
    pub outbox_table: TableName,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Where /metrics and /healthz are served.
    #[arg(long, env = "BRIDGE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// How long a loop may go without progress before `/readyz` answers 503 with the
    /// reason: capture without a message from Postgres or with changes Kinesis has not
    /// acknowledged, a relay lease round or shard worker that does not get through.
    /// (Old spelling: --stall-timeout-secs, a number of seconds.)
    #[arg(long, alias = "stall-timeout-secs", env = "BRIDGE_STALL_TIMEOUT", default_value = "2m", value_parser = STALL_TIMEOUT.parser())]
    pub stall_timeout: Duration,
    /// Also publish the figures CloudWatch alarms need (replication lag, WAL retained, events
    /// parked) as CloudWatch embedded metric format lines on stdout, once a minute.
    #[arg(long, env = "BRIDGE_CLOUDWATCH_METRICS", value_enum, default_value_t = CloudWatchMetrics::Off)]
    pub cloudwatch_metrics: CloudWatchMetrics,
}

/// Where changes come from.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Postgres URL (postgres://user:password@host:port/db?sslmode=...); the password may also come from PGPASSWORD.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The primary, when --database-url is a hot standby (PostgreSQL 16+): capture writes its
    /// heartbeat there and setup the publication. Default: --database-url's hosts with
    /// target_session_attrs=primary when it says target_session_attrs=standby, else --database-url.
    #[arg(long, env = "BRIDGE_HEARTBEAT_DATABASE_URL", hide_env_values = true)]
    pub heartbeat_database_url: Option<String>,
    /// Tables to capture, comma-separated (schema.table).
    #[arg(
        long,
        env = "BRIDGE_TABLES",
        value_delimiter = ',',
        default_value = "public.outbox"
    )]
    pub tables: Vec<TableName>,
    /// The publication to read through (created when absent and the role may).
    #[arg(long, env = "BRIDGE_PUBLICATION", default_value = "outbox_bridge")]
    pub publication: String,
    /// The logical replication slot (created by setup or on first start when absent).
    #[arg(long, env = "BRIDGE_SLOT", default_value = "outbox_bridge", value_parser = parse_slot_name)]
    pub slot: String,
    /// Make the slot a failover slot (PostgreSQL 17+: a standby with sync_replication_slots keeps it, so a promoted standby streams on without a resync): auto = where the server supports it.
    #[arg(long, env = "BRIDGE_FAILOVER_SLOT", value_enum, default_value_t = FailoverSlot::Auto)]
    pub failover_slot: FailoverSlot,
    /// Partition key per table, as DMS names them: TABLE=attribute-name:COLUMN|primary-key|schema-table|transaction-id (comma-separated).
    #[arg(long = "partition-key", env = "BRIDGE_PARTITION_KEYS", value_delimiter = ',', value_parser = parse_partition_override)]
    pub partition_keys: Vec<(TableName, PartitionKey)>,
}

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

/// The relay's AWS resources (also created by setup).
#[derive(Args, Debug)]
pub struct RelayResourceArgs {
    /// EventBridge bus the domain events go to.
    #[arg(long, env = "BRIDGE_EVENT_BUS", default_value = "legacy-monolith")]
    pub event_bus: String,
    /// DynamoDB table of per-shard checkpoints and leases.
    #[arg(long, env = "BRIDGE_CHECKPOINT_TABLE", default_value = "bridge-checkpoints")]
    pub checkpoint_table: String,
    /// S3 bucket for events too large for EventBridge (claim checks).
    #[arg(
        long,
        env = "BRIDGE_CLAIM_CHECK_BUCKET",
        default_value = "bridge-claim-checks"
    )]
    pub claim_check_bucket: String,
    /// SQS queue where records that cannot become events are parked with their reason.
    #[arg(long, env = "BRIDGE_DEAD_LETTER_QUEUE", default_value = "bridge-dlq")]
    pub dead_letter_queue: String,
}

#[derive(Args, Debug)]
pub struct RelayTuningArgs {
    /// The events' `source`.
    #[arg(long, env = "BRIDGE_EVENT_SOURCE", default_value = "legacy.monolith")]
    pub event_source: String,
    /// The largest entry EventBridge accepts, in bytes: 1 MB since 2026-01-29 (256 KiB before; set 262144 where a bus or target still has the old limit). Larger events travel as claim checks.
    #[arg(long, env = "BRIDGE_MAX_EVENT_BYTES", default_value_t = eventing::eventbridge::MAX_ENTRY_BYTES, value_parser = clap::value_parser!(u64).range(1024..=10_485_760))]
    pub max_event_bytes: u64,
    /// Also publish changes of other tables, as raw change events (detail-type schema.table.operation).
    #[arg(long, env = "BRIDGE_PUBLISH_RAW_CHANGES")]
    pub publish_raw_changes: bool,
    /// Outbox event types to publish, comma-separated; a row of any other type is parked in the
    /// dead-letter queue as an unknown event type. Empty (the default): every type is published.
    #[arg(long, env = "BRIDGE_EVENT_TYPES", value_delimiter = ',')]
    pub event_types: Vec<String>,
    /// How long a shard lease lasts without renewal before another relay may take the shard.
    /// (Old spelling: --lease-duration-secs, a number of seconds.)
    #[arg(long, alias = "lease-duration-secs", env = "BRIDGE_LEASE_DURATION", default_value = "10s", value_parser = LEASE_DURATION.parser())]
    pub lease_duration: Duration,
    /// At a shard's tip (the last page neither full nor behind), the time from one
    /// GetRecords' start to the next; behind the tip, reads follow each other as fast as
    /// `--max-reads-per-second` allows. (Old spelling: --poll-interval-ms, milliseconds.)
    #[arg(long, alias = "poll-interval-ms", env = "BRIDGE_POLL_INTERVAL", default_value = "200ms", value_parser = POLL_INTERVAL.parser())]
    pub poll_interval: Duration,
    /// GetRecords calls per second and shard, at most: Kinesis allows 5 per shard, shared by
    /// every polling consumer of the stream (two relays' groups on one stream: 2.5 each). Whole
    /// calls are spread over a second plus 100 ms, so a call that reaches Kinesis late is not
    /// refused; above 1, a fraction counts down (2.5 makes 2 calls a second: Kinesis counts whole
    /// calls in any second, and two relays at 2.5 evenly spaced would make 6 in some).
    #[arg(long, env = "BRIDGE_MAX_READS_PER_SECOND", default_value_t = 5.0, value_parser = positive_rate)]
    pub max_reads_per_second: f64,
    /// PutEvents calls in flight at once per shard (ten events each): at AWS' ~20 ms a call,
    /// one at a time caps a shard near 500 events/s, below what Kinesis reads from it.
    #[arg(long, env = "BRIDGE_PUT_EVENTS_CONCURRENCY", default_value_t = eventing::eventbridge::DEFAULT_CALLS_AT_ONCE, value_parser = clap::value_parser!(u64).range(1..=64).map(|n| n as usize))]
    pub put_events_concurrency: usize,
    /// Enhanced fan-out: register this consumer on the stream (once; relays sharing the name
    /// share it) and have Kinesis push each shard's records over SubscribeToShard, with its own
    /// 2 MB/s per shard, instead of polling GetRecords. Empty: polling.
    #[arg(long, env = "BRIDGE_CONSUMER_NAME", value_parser = parse_consumer_name)]
    pub consumer_name: Option<String>,
    /// This relay's name in the lease table (default: host and process id).
    #[arg(long, env = "BRIDGE_WORKER_ID")]
    pub worker_id: Option<String>,
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

#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(flatten)]
    pub outbox: OutboxArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub resources: RelayResourceArgs,
    #[command(flatten)]
    pub tuning: RelayTuningArgs,
    /// How long shutdown waits for shard workers to finish their page. (Old spelling:
    /// --shutdown-timeout-secs, a number of seconds.)
    #[arg(long, alias = "shutdown-timeout-secs", env = "BRIDGE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = SHUTDOWN_TIMEOUT.parser())]
    pub shutdown_timeout: Duration,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub outbox: OutboxArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub capture: CaptureTuningArgs,
    #[command(flatten)]
    pub resources: RelayResourceArgs,
    #[command(flatten)]
    pub relay: RelayTuningArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

fn parse_consumer_name(s: &str) -> Result<String, String> {
    // Empty is "not set" (a deployment template passes its empty parameter through).
    let ok = s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("consumer names are 1-128 characters of a-z, A-Z, 0-9, _ . -".into())
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("expected a number above 0, e.g. 5 or 2.5".into()),
    }
}

fn parse_slot_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("slot names are 1-63 characters of a-z, 0-9 and _".into())
    }
}

fn parse_partition_override(s: &str) -> Result<(TableName, PartitionKey), String> {
    let (table, key) = s
        .split_once('=')
        .ok_or("expected TABLE=KEY, e.g. public.orders=primary-key")?;
    Ok((
        table.parse().map_err(|e| format!("{e}"))?,
        key.parse().map_err(|e| format!("{e}"))?,
    ))
}

#[cfg(test)]
mod env_fallback_tests {
    use clap::CommandFactory;

    /// Every flag of the long-running commands, and every connection or resource-name flag of
    /// any command, can come from the environment (the docs promise it; containers are
    /// configured that way). One-shot arguments of a single run need none.
    #[test]
    fn every_flag_a_deployment_sets_has_an_environment_fallback() {
        let long_running = ["capture", "relay", "run", "setup"];
        let resource = |id: &str| {
            id.contains("url")
                || id.contains("stream")
                || id.contains("slot")
                || id.contains("publication")
                || id.contains("table")
                || id.contains("bucket")
                || id.contains("queue")
                || id.contains("bus")
                || id.contains("listen")
        };
        // A one-shot operation's own arguments, named in the docs as having no variable.
        let one_shot = ["table", "where", "since", "until", "rule", "older_than", "batch"];
        let mut missing = Vec::new();
        for sub in super::Cli::command().get_subcommands() {
            let mut commands: Vec<&clap::Command> = vec![sub];
            commands.extend(sub.get_subcommands());
            for command in commands {
                for arg in command.get_arguments() {
                    let id = arg.get_id().as_str();
                    if arg.is_positional() || ["help", "version"].contains(&id) || arg.get_env().is_some() {
                        continue;
                    }
                    let needs =
                        long_running.contains(&sub.get_name()) || (resource(id) && !one_shot.contains(&id));
                    if needs {
                        missing.push(format!("{} --{}", command.get_name(), id.replace('_', "-")));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "flags without an environment variable: {missing:?}"
        );
    }
}

#[cfg(test)]
mod duration_flag_tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    /// Units live in the value (`30s`, `250ms`, `7d`), not in a flag's name: a name with a unit
    /// is only an old spelling's alias.
    #[test]
    fn no_flag_is_named_for_its_unit() {
        let named = eventing::old_names::flags_named_for_their_unit(&Cli::command());
        assert!(named.is_empty(), "flags named for their unit: {named:?}");
    }

    #[test]
    fn old_spellings_mean_what_they_meant() -> Result<(), clap::Error> {
        let capture = |args: &[&str]| -> Result<_, clap::Error> {
            let cli = Cli::try_parse_from(["bridge", "capture"].iter().chain(args))?;
            match cli.command {
                Command::Capture(c) => Ok(c),
                _ => unreachable!("parsed as capture"),
            }
        };
        let old = capture(&[
            "--stall-timeout-secs",
            "5",
            "--batch-linger-ms",
            "20",
            "--shutdown-timeout-secs",
            "3",
            "--retained-wal-warn-secs",
            "90",
            "--heartbeat-secs",
            "0",
            "--replication-timeout-secs",
            "7",
        ])?;
        let new = capture(&[
            "--stall-timeout",
            "5s",
            "--batch-linger",
            "20ms",
            "--shutdown-timeout",
            "3s",
            "--retained-wal-warn-age",
            "90s",
            "--heartbeat-interval",
            "0s",
            "--replication-timeout",
            "7s",
        ])?;
        for c in [&old, &new] {
            assert_eq!(c.metrics.stall_timeout, Duration::from_secs(5));
            assert_eq!(c.tuning.batch_linger, Duration::from_millis(20));
            assert_eq!(c.tuning.shutdown_timeout, Duration::from_secs(3));
            assert_eq!(c.tuning.retained_wal_warn_age, Duration::from_secs(90));
            assert_eq!(c.tuning.heartbeat_interval, Duration::ZERO);
            assert_eq!(c.tuning.replication_timeout, Duration::from_secs(7));
        }
        let defaults = capture(&[])?;
        assert_eq!(defaults.metrics.stall_timeout, Duration::from_secs(120));
        assert_eq!(defaults.tuning.heartbeat_interval, Duration::from_secs(60));
        let setup = |args: &[&str]| -> Result<_, clap::Error> {
            match Cli::try_parse_from(["bridge", "setup"].iter().chain(args))?.command {
                Command::Setup(s) => Ok(s),
                _ => unreachable!("parsed as setup"),
            }
        };
        let old = setup(&[
            "--archive-retention-days",
            "0",
            "--claim-check-retention-days",
            "60",
        ])?;
        let new = setup(&["--archive-retention", "0d", "--claim-check-retention", "60d"])?;
        for s in [&old, &new] {
            assert_eq!(s.archive_retention, Duration::ZERO);
            assert_eq!(s.claim_check_retention, Duration::from_secs(60 * 86_400));
        }
        let relay = |args: &[&str]| -> Result<_, clap::Error> {
            match Cli::try_parse_from(["bridge", "relay"].iter().chain(args))?.command {
                Command::Relay(r) => Ok(r),
                _ => unreachable!("parsed as relay"),
            }
        };
        let old = relay(&["--lease-duration-secs", "4", "--poll-interval-ms", "50"])?;
        let new = relay(&["--lease-duration", "4s", "--poll-interval", "50ms"])?;
        for r in [&old, &new] {
            assert_eq!(r.tuning.lease_duration, Duration::from_secs(4));
            assert_eq!(r.tuning.poll_interval, Duration::from_millis(50));
        }
        Ok(())
    }

    /// Each old spelling's environment variable is handed to the new one (`eventing::old_names`).
    #[test]
    fn old_variables_are_named_after_the_old_spellings() {
        let pairs = eventing::old_names::renamed_variables(&Cli::command());
        for (old, new) in [
            ("BRIDGE_STALL_TIMEOUT_SECS", "BRIDGE_STALL_TIMEOUT"),
            ("BRIDGE_BATCH_LINGER_MS", "BRIDGE_BATCH_LINGER"),
            ("BRIDGE_SHUTDOWN_TIMEOUT_SECS", "BRIDGE_SHUTDOWN_TIMEOUT"),
            ("BRIDGE_RETAINED_WAL_WARN_SECS", "BRIDGE_RETAINED_WAL_WARN_AGE"),
            ("BRIDGE_HEARTBEAT_SECS", "BRIDGE_HEARTBEAT_INTERVAL"),
            ("BRIDGE_REPLICATION_TIMEOUT_SECS", "BRIDGE_REPLICATION_TIMEOUT"),
            ("BRIDGE_LEASE_DURATION_SECS", "BRIDGE_LEASE_DURATION"),
            ("BRIDGE_POLL_INTERVAL_MS", "BRIDGE_POLL_INTERVAL"),
            ("BRIDGE_ARCHIVE_RETENTION_DAYS", "BRIDGE_ARCHIVE_RETENTION"),
            (
                "BRIDGE_CLAIM_CHECK_RETENTION_DAYS",
                "BRIDGE_CLAIM_CHECK_RETENTION",
            ),
        ] {
            assert!(
                pairs.contains(&(old.to_owned(), new.to_owned())),
                "{old} → {new} missing from {pairs:?}"
            );
        }
    }
}

#[cfg(test)]
mod reference_page {
    use clap::CommandFactory;

    /// docs/src/reference/cli-bridge.md is what the clap definitions say (UPDATE_DOCS=1 rewrites it).
    #[test]
    fn reference_page_of_the_command_line_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let page = reference_docs::cli_reference(super::Cli::command());
        if let Err(stale) = reference_docs::check_page(&root, "docs/src/reference/cli-bridge.md", &page) {
            panic!("{stale}");
        }
    }
}
