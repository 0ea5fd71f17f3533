//! Arguments several commands share: where changes come from, the stream, the outbox, metrics.

use super::*;

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
