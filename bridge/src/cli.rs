//! Command-line flags, each with an environment fallback, and what each subcommand runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use bridge::capture::{self, CaptureConfig, TableRoutes};
use bridge::dms::EncodeOptions;
use bridge::metrics::{self, Metrics};
use bridge::partition::PartitionKey;
use bridge::replication::PgTarget;
use bridge::sink::kinesis::KinesisSink;
use bridge::table::TableName;

#[derive(Parser, Debug)]
#[command(
    name = "bridge",
    version,
    about = "Postgres outbox → Kinesis (capture), the DMS stand-in of outbox-bridge"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the AWS resources the pipeline needs (idempotent).
    Setup(SetupArgs),
    /// Stream committed changes from the replication slot to Kinesis.
    Capture(CaptureArgs),
}

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Kinesis stream the changes are written to.
    #[arg(long, env = "BRIDGE_STREAM", default_value = "legacy-cdc")]
    pub stream: String,
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Shards of the stream when it is created (more shards, more parallel consumers).
    #[arg(long, env = "BRIDGE_SHARDS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub shards: i32,
}

/// Where changes come from. `setup` needs it only to create the publication and slot early.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Postgres URL (postgres://user:password@host:port/db?sslmode=...); the password may also come from PGPASSWORD.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
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
    /// The logical replication slot (created on first start when absent).
    #[arg(long, env = "BRIDGE_SLOT", default_value = "outbox_bridge", value_parser = parse_slot_name)]
    pub slot: String,
    /// The outbox table: only its inserts are captured, partitioned by aggregate.
    #[arg(long, env = "BRIDGE_OUTBOX_TABLE", default_value = "public.outbox")]
    pub outbox_table: TableName,
    /// Partition key per table, as DMS names them: TABLE=attribute-name:COLUMN|primary-key|schema-table|transaction-id (comma-separated).
    #[arg(long = "partition-key", env = "BRIDGE_PARTITION_KEYS", value_delimiter = ',', value_parser = parse_partition_override)]
    pub partition_keys: Vec<(TableName, PartitionKey)>,
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Send json/jsonb columns as escaped strings, exactly as AWS DMS does.
    #[arg(long, env = "BRIDGE_STRICT_DMS")]
    pub strict_dms: bool,
    /// PutRecords batches in flight at once.
    #[arg(long, env = "BRIDGE_MAX_INFLIGHT_BATCHES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_inflight_batches: u16,
    /// How long (ms) a batch waits for more records before it is sent.
    #[arg(long, env = "BRIDGE_BATCH_LINGER_MS", default_value_t = 10)]
    pub batch_linger_ms: u64,
    /// How long (s) shutdown waits for in-flight batches before giving up (they are replayed on restart).
    #[arg(long, env = "BRIDGE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
    /// Where /metrics and /healthz are served.
    #[arg(long, env = "BRIDGE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
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

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Setup(args) => setup(args).await,
        Command::Capture(args) => capture(args).await,
    }
}

async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let aws = bridge::aws_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let created = bridge::setup::ensure_stream(&kinesis, &args.stream.stream, args.shards).await?;
    println!(
        "kinesis stream {}: {}",
        args.stream.stream,
        if created { "created" } else { "already present" }
    );
    if args.source.database_url.is_some() {
        let cfg = capture_config(args.source, &CaptureTuning::default())?;
        let slot = capture::prepare_source(&cfg, true).await?.slot;
        println!(
            "publication {}: ready; replication slot {}: {} at {}",
            cfg.publication,
            cfg.slot,
            if slot.created {
                "created"
            } else {
                "already present"
            },
            slot.confirmed_flush
        );
    } else {
        println!("no --database-url: the publication and slot are created when capture first starts");
    }
    Ok(())
}

/// Capture settings that do not name a source.
struct CaptureTuning {
    strict_dms: bool,
    window: usize,
    linger: Duration,
    shutdown_timeout: Duration,
}

impl Default for CaptureTuning {
    fn default() -> Self {
        Self {
            strict_dms: false,
            window: 4,
            linger: Duration::from_millis(10),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

fn capture_config(source: SourceArgs, tuning: &CaptureTuning) -> anyhow::Result<CaptureConfig> {
    let url = source
        .database_url
        .context("--database-url (or DATABASE_URL) is required")?;
    let target = PgTarget::from_url(&url, "outbox-bridge").context("--database-url")?;
    let routes = TableRoutes {
        outbox: source.outbox_table,
        overrides: source.partition_keys.into_iter().collect(),
        ..TableRoutes::default()
    };
    Ok(CaptureConfig {
        target,
        slot: source.slot,
        publication: source.publication,
        tables: source.tables,
        routes,
        encode: EncodeOptions {
            strict_dms: tuning.strict_dms,
        },
        window: tuning.window,
        linger: tuning.linger,
        status_interval: Duration::from_secs(1),
        shutdown_timeout: tuning.shutdown_timeout,
    })
}

async fn capture(args: CaptureArgs) -> anyhow::Result<()> {
    let tuning = CaptureTuning {
        strict_dms: args.strict_dms,
        window: usize::from(args.max_inflight_batches),
        linger: Duration::from_millis(args.batch_linger_ms),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
    };
    let cfg = capture_config(args.source, &tuning)?;
    let metrics = Metrics::new();
    let addr = metrics::serve(&args.metrics_listen, metrics.clone())
        .await
        .with_context(|| format!("--metrics-listen {}: cannot listen", args.metrics_listen))?;
    tracing::info!(%addr, "metrics at http://{addr}/metrics");
    let aws = bridge::aws_config().await;
    let sink = Arc::new(KinesisSink::new(
        aws_sdk_kinesis::Client::new(&aws),
        &args.stream.stream,
        metrics.clone(),
    ));
    let shutdown = bridge::shutdown::on_signal();
    capture::run(&cfg, sink, metrics, shutdown).await?;
    tracing::info!("capture stopped");
    Ok(())
}
