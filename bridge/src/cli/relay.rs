//! The relay's arguments, its AWS resources and tuning, and `run` (capture and relay in one process).

use super::*;

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
