//! Command line of `shipping`: every flag has an environment fallback and a zero-config default.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use eventing::duration::{Bare, Flag};
use eventing::logging::LogFormat;

// Every duration flag takes `250ms`, `30s`, `5m`, `1h`, `7d`; a bare number is read in the unit
// of the flag's old spelling (`--inbox-ttl-days 14`), which stays an alias.
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const DAY: u64 = 86_400;
/// The upper bound of a flag that had none: a century (before, any u64 was taken).
const NO_BOUND: Duration = secs(36_500 * DAY);
/// SQS visibility timeouts: whole seconds, at most 12 hours.
const QUEUE_VISIBILITY: Flag = Flag::new(Bare::Seconds, secs(1), secs(43_200)).whole(Bare::Seconds);
const VISIBILITY: Flag = Flag::new(Bare::Seconds, secs(2), secs(43_200)).whole(Bare::Seconds);
const WAIT_TIME: Flag = Flag::new(Bare::Seconds, Duration::ZERO, secs(20)).whole(Bare::Seconds);
const RETRY_DELAY: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND).whole(Bare::Seconds);
const ITEM_TTL: Flag = Flag::new(Bare::Days, secs(DAY), NO_BOUND);
const POLL_INTERVAL: Flag = Flag::new(Bare::Millis, Duration::from_millis(50), NO_BOUND);
const STALL_TIMEOUT: Flag = Flag::new(Bare::Seconds, secs(1), NO_BOUND);
/// A lag has no old spelling; a bare number is seconds, as everywhere else without one.
const ARCHIVE_LAG: Flag = Flag::new(Bare::Seconds, Duration::ZERO, NO_BOUND);

#[derive(Parser, Debug)]
#[command(
    name = "shipping",
    version,
    about = "The shipping microservice: monolith events from SQS → DynamoDB projection and shipments, \
             shipment events from a DynamoDB outbox → EventBridge."
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "SHIPPING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Export traces (OTLP over HTTP/protobuf) to this collector, e.g. `http://127.0.0.1:4318`;
    /// none without it. The standard OpenTelemetry variable is the fallback.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// A TOML file of settings: keys are flag names (`queue = "shipping-events"`), at the top
    /// level for every command, in a command's table (`[run]`) for that one. Precedence: flag >
    /// environment > file > default. Checked at start; `shipping config check` prints the result.
    #[arg(long, env = "SHIPPING_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub names: Names,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Names {
    /// The queue the service consumes.
    #[arg(
        long,
        env = "SHIPPING_QUEUE",
        default_value = "shipping-events",
        global = true
    )]
    pub queue: String,
    /// Its dead-letter queue.
    #[arg(
        long,
        env = "SHIPPING_DEAD_LETTER_QUEUE",
        default_value = "shipping-events-dlq",
        global = true
    )]
    pub dead_letter_queue: String,
    /// The publisher's dead-letter queue: outbox items EventBridge refuses, or that are not
    /// events, parked with their reason before the stream checkpoint passes them.
    #[arg(
        long,
        env = "SHIPPING_OUTBOX_DEAD_LETTER_QUEUE",
        default_value = "shipping-outbox-dlq",
        global = true
    )]
    pub outbox_dead_letter_queue: String,
    /// The customer projection table (key `customer_id`).
    #[arg(
        long,
        env = "SHIPPING_CUSTOMERS_TABLE",
        default_value = "shipping-customers",
        global = true
    )]
    pub customers_table: String,
    /// The shipments table (key `order_id`).
    #[arg(
        long,
        env = "SHIPPING_SHIPMENTS_TABLE",
        default_value = "shipping-shipments",
        global = true
    )]
    pub shipments_table: String,
    /// The inbox table (key `event_id`).
    #[arg(
        long,
        env = "SHIPPING_INBOX_TABLE",
        default_value = "shipping-inbox",
        global = true
    )]
    pub inbox_table: String,
    /// The outbox table (key `event_id`, stream on).
    #[arg(
        long,
        env = "SHIPPING_OUTBOX_TABLE",
        default_value = "shipping-outbox",
        global = true
    )]
    pub outbox_table: String,
    /// The publisher's stream checkpoints (key `shard_id`).
    #[arg(
        long,
        env = "SHIPPING_CHECKPOINT_TABLE",
        default_value = "shipping-publisher-checkpoints",
        global = true
    )]
    pub checkpoint_table: String,
    /// The EventBridge bus the monolith's events arrive on and shipment events go to.
    #[arg(
        long,
        env = "SHIPPING_EVENT_BUS",
        default_value = "legacy-monolith",
        global = true
    )]
    pub event_bus: String,
    /// The `source` of the monolith's events (the bridge's `--event-source`).
    #[arg(
        long,
        env = "SHIPPING_MONOLITH_SOURCE",
        default_value = "legacy.monolith",
        global = true
    )]
    pub monolith_source: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the queue + DLQ with redrive, the rule feeding the queue, and the tables
    /// (idempotent).
    Setup(SetupArgs),
    /// Consume the queue and publish the outbox until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Rebuild the projection from history: set up (rule, queue, tables), then replay the
    /// monolith's archived events since --since to this service's rule only, and the last
    /// --archive-lag of them again once the archive has caught up; then `shipping run` applies
    /// them (the inbox absorbs what it had already).
    Rebuild(RebuildArgs),
    /// Exit 0 if the `shipping run` serving --metrics-listen is alive (`/livez`; with --ready,
    /// ready: `/readyz`), else 1 with its reasons: the container health check (the image has no curl).
    Healthcheck {
        /// Where `shipping run` serves /livez and /readyz (the same setting it was started with).
        #[arg(long, env = "SHIPPING_METRICS_LISTEN", default_value = "127.0.0.1:9465")]
        metrics_listen: String,
        /// Ask /readyz (dependencies answer, loops make progress) instead of /livez.
        #[arg(long)]
        ready: bool,
    },
    /// Print one projected customer or one shipment as JSON.
    Show {
        #[command(subcommand)]
        what: Show,
    },
    /// List the events parked in the DLQ with their reasons, or redrive them to the queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The configuration file (--config): check it and show what each command runs with.
    Config {
        #[command(subcommand)]
        action: eventing::config_file::ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum DlqAction {
    /// Show each parked event with its reason (they stay parked).
    List {
        /// At most this many messages.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max: u32,
        /// How long each message stays hidden from other readers while it is listed or redriven
        /// (whole seconds, SQS' unit); a redrive renews it until the message is sent and
        /// deleted. (Old spelling: --hold-secs, a number of seconds.)
        #[arg(long, alias = "hold-secs", default_value = "1m", value_parser = eventing::duration::DLQ_HOLD.parser())]
        hold: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send each parked event back to the queue (once the cause is fixed) and remove it from the DLQ.
    Redrive {
        /// At most this many messages.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max: u32,
        /// How long each message stays hidden from other readers while it is listed or redriven
        /// (whole seconds, SQS' unit); a redrive renews it until the message is sent and
        /// deleted. (Old spelling: --hold-secs, a number of seconds.)
        #[arg(long, alias = "hold-secs", default_value = "1m", value_parser = eventing::duration::DLQ_HOLD.parser())]
        hold: Duration,
    },
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// Receives before SQS moves a message to the DLQ.
    #[arg(long, env = "SHIPPING_MAX_RECEIVE_COUNT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_receive_count: u32,
    /// The queue's visibility timeout, whole seconds (the consumer extends it while working);
    /// a bare number is seconds.
    #[arg(long, env = "SHIPPING_VISIBILITY_TIMEOUT", default_value = "30s", value_parser = QUEUE_VISIBILITY.parser())]
    pub visibility_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Replay the monolith's events from this time: RFC 3339, or a duration ago (90m, 1h, 7d).
    /// Older than the bus's archive: `bridge backfill --table public.outbox --where …`.
    #[arg(long, value_parser = eventing::replay::parse_time)]
    pub since: chrono::DateTime<chrono::Utc>,
    /// Up to this time (default: now, once the rule exists).
    #[arg(long, value_parser = eventing::replay::parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// How far EventBridge's archive may lag behind the bus (AWS advises waiting ten minutes
    /// before a replay): events of this long before --until may not be archived yet, so they
    /// are replayed again once it has passed (the inbox absorbs the duplicates). 0s: no second
    /// replay.
    #[arg(long, env = "SHIPPING_ARCHIVE_LAG", default_value = "10m", value_parser = ARCHIVE_LAG.parser())]
    pub archive_lag: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// What this process runs: the queue consumer, the outbox publisher, or both (the default).
    /// Deployed apart, the consumer scales out while the publisher stays one task, since two
    /// publishers on one outbox stream would publish each event twice.
    #[arg(long, env = "SHIPPING_COMPONENTS", value_enum, default_value_t = Components::All)]
    pub components: Components,
    /// Messages applied at once, sized for AWS' ~10 ms per call: a message holds its slot for
    /// its share of a receive, its transaction and the hand-over to a batched delete (~30 ms),
    /// so 128 in flight allow ~4,000 events/s before the CPU is the limit; one receiver per ten.
    #[arg(long, env = "SHIPPING_CONCURRENCY", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Long-poll wait of a receive, whole seconds up to 20 (SQS' limit). (Old spelling:
    /// --wait-seconds, a number of seconds.)
    #[arg(long, alias = "wait-seconds", env = "SHIPPING_WAIT_TIME", default_value = "20s", value_parser = WAIT_TIME.parser())]
    pub wait_time: Duration,
    /// Visibility a message gets, and keeps getting while it is applied, whole seconds; a bare
    /// number is seconds.
    #[arg(long, env = "SHIPPING_VISIBILITY_TIMEOUT", default_value = "30s", value_parser = VISIBILITY.parser())]
    pub visibility_timeout: Duration,
    /// Base delay before a failed message returns, whole seconds (doubles with each failure,
    /// ≤ 60); a bare number is seconds.
    #[arg(long, env = "SHIPPING_RETRY_DELAY", default_value = "5s", value_parser = RETRY_DELAY.parser())]
    pub retry_delay: Duration,
    /// How long inbox items are kept: longer than any redelivery can arrive. (Old spelling:
    /// --inbox-ttl-days, a number of days.)
    #[arg(long, alias = "inbox-ttl-days", env = "SHIPPING_INBOX_TTL", default_value = "14d", value_parser = ITEM_TTL.parser())]
    pub inbox_ttl: Duration,
    /// How long outbox items are kept after being written. (Old spelling: --outbox-ttl-days,
    /// a number of days.)
    #[arg(long, alias = "outbox-ttl-days", env = "SHIPPING_OUTBOX_TTL", default_value = "7d", value_parser = ITEM_TTL.parser())]
    pub outbox_ttl: Duration,
    /// Pause after an empty read of the outbox stream. (Old spelling: --poll-interval-ms,
    /// milliseconds.)
    #[arg(long, alias = "poll-interval-ms", env = "SHIPPING_POLL_INTERVAL", default_value = "500ms", value_parser = POLL_INTERVAL.parser())]
    pub poll_interval: Duration,
    /// The `source` of the events the service publishes.
    #[arg(long, env = "SHIPPING_EVENT_SOURCE", default_value = "shipping")]
    pub event_source: String,
    /// Bucket for claim checks of events above the entry limit.
    #[arg(
        long,
        env = "SHIPPING_CLAIM_CHECK_BUCKET",
        default_value = "bridge-claim-checks"
    )]
    pub claim_check_bucket: String,
    /// The largest entry EventBridge accepts, in bytes: 1 MB since 2026-01-29 (the bridge's flag of the same name). Larger events travel as claim checks. `--max-entry-bytes` (env SHIPPING_MAX_ENTRY_BYTES) is the old name.
    #[arg(long, alias = "max-entry-bytes", env = "SHIPPING_MAX_EVENT_BYTES", default_value_t = eventing::eventbridge::MAX_ENTRY_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_event_bytes: u64,
    /// Where `/metrics` and `/healthz` listen.
    #[arg(long, env = "SHIPPING_METRICS_LISTEN", default_value = "127.0.0.1:9465")]
    pub metrics_listen: String,
    /// How long the consumer or the publisher may go without progress (a receive, a stream
    /// read that got through) before `/readyz` answers 503 with the reason. (Old spelling:
    /// --stall-timeout-secs, a number of seconds.)
    #[arg(long, alias = "stall-timeout-secs", env = "SHIPPING_STALL_TIMEOUT", default_value = "2m", value_parser = STALL_TIMEOUT.parser())]
    pub stall_timeout: Duration,
    /// Also publish the figures CloudWatch alarms need (events parked, the DLQ's depth) as
    /// CloudWatch embedded metric format lines on stdout, once a minute.
    #[arg(long, env = "SHIPPING_CLOUDWATCH_METRICS", value_enum, default_value_t = eventing::emf::CloudWatchMetrics::Off)]
    pub cloudwatch_metrics: eventing::emf::CloudWatchMetrics,
}

#[derive(Subcommand, Debug)]
pub enum Show {
    /// A projected customer by id.
    Customer { customer_id: String },
    /// A shipment by its order id.
    Shipment { order_id: String },
}

/// The halves of `shipping run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Components {
    All,
    Consumer,
    Publisher,
}

impl Components {
    pub fn consumer(self) -> bool {
        self != Self::Publisher
    }

    pub fn publisher(self) -> bool {
        self != Self::Consumer
    }
}

#[cfg(test)]
mod env_fallback_tests {
    use clap::CommandFactory;

    /// Every flag of `shipping run` and `setup`, and every resource-name flag of any command,
    /// can come from the environment. One-shot arguments (a replay's `--since`/`--until`, the
    /// health check's `--ready`) need none.
    #[test]
    fn every_flag_a_deployment_sets_has_an_environment_fallback() {
        let mut missing = Vec::new();
        let cli = super::Cli::command();
        let globals = cli.get_arguments().map(|a| (String::from("shipping"), a));
        let per_command = cli
            .get_subcommands()
            .flat_map(|c| c.get_arguments().map(move |a| (c.get_name().to_owned(), a)));
        for (command, arg) in globals.chain(per_command) {
            let id = arg.get_id().as_str();
            let exempt = arg.is_positional() || ["help", "version", "since", "until", "ready"].contains(&id);
            if !exempt && arg.get_env().is_none() && command != "show" && command != "dlq" {
                missing.push(format!("{command} --{id}"));
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

    #[test]
    fn no_flag_is_named_for_its_unit() {
        let named = eventing::old_names::flags_named_for_their_unit(&Cli::command());
        assert!(named.is_empty(), "flags named for their unit: {named:?}");
    }

    #[test]
    fn old_spellings_mean_what_they_meant() -> Result<(), clap::Error> {
        let run = |args: &[&str]| -> Result<_, clap::Error> {
            match Cli::try_parse_from(["shipping", "run"].iter().chain(args))?.command {
                Command::Run(r) => Ok(r),
                _ => unreachable!("parsed as run"),
            }
        };
        let old = run(&[
            "--wait-seconds",
            "3",
            "--visibility-timeout",
            "40",
            "--retry-delay",
            "1",
            "--inbox-ttl-days",
            "2",
            "--outbox-ttl-days",
            "3",
            "--poll-interval-ms",
            "100",
            "--stall-timeout-secs",
            "9",
        ])?;
        let new = run(&[
            "--wait-time",
            "3s",
            "--visibility-timeout",
            "40s",
            "--retry-delay",
            "1s",
            "--inbox-ttl",
            "2d",
            "--outbox-ttl",
            "3d",
            "--poll-interval",
            "100ms",
            "--stall-timeout",
            "9s",
        ])?;
        for r in [&old, &new] {
            assert_eq!(r.wait_time, Duration::from_secs(3));
            assert_eq!(r.visibility_timeout, Duration::from_secs(40));
            assert_eq!(r.retry_delay, Duration::from_secs(1));
            assert_eq!(r.inbox_ttl, Duration::from_secs(2 * 86_400));
            assert_eq!(r.outbox_ttl, Duration::from_secs(3 * 86_400));
            assert_eq!(r.poll_interval, Duration::from_millis(100));
            assert_eq!(r.stall_timeout, Duration::from_secs(9));
        }
        let pairs = eventing::old_names::renamed_variables(&Cli::command());
        for (old, new) in [
            ("SHIPPING_WAIT_SECONDS", "SHIPPING_WAIT_TIME"),
            ("SHIPPING_INBOX_TTL_DAYS", "SHIPPING_INBOX_TTL"),
            ("SHIPPING_OUTBOX_TTL_DAYS", "SHIPPING_OUTBOX_TTL"),
            ("SHIPPING_POLL_INTERVAL_MS", "SHIPPING_POLL_INTERVAL"),
            ("SHIPPING_STALL_TIMEOUT_SECS", "SHIPPING_STALL_TIMEOUT"),
            ("SHIPPING_MAX_ENTRY_BYTES", "SHIPPING_MAX_EVENT_BYTES"),
        ] {
            assert!(
                pairs.contains(&(old.to_owned(), new.to_owned())),
                "{old} → {new}: {pairs:?}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod reference_page {
    use clap::CommandFactory;

    /// docs/src/reference/cli-shipping.md is what the clap definitions say (UPDATE_DOCS=1 rewrites it).
    #[test]
    fn reference_page_of_the_command_line_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let page = reference_docs::cli_reference(super::Cli::command());
        if let Err(stale) = reference_docs::check_page(&root, "docs/src/reference/cli-shipping.md", &page) {
            panic!("{stale}");
        }
    }
}
