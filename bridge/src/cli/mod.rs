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

mod capture;
mod operator;
mod relay;
mod shared;

pub use capture::*;
pub use operator::*;
pub use relay::*;
pub use shared::*;

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
    /// A TOML file of settings: keys are flag names (`event_bus = "orders"`), at the top level
    /// for every command, in a command's table (`[relay]`) for that one. Precedence: flag >
    /// environment > file > default. Checked at start; `bridge config check` prints the result.
    #[arg(long, env = "BRIDGE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
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
    /// The contracts (`[contracts]` in the configuration file): export them.
    Schemas {
        #[command(subcommand)]
        action: SchemasAction,
    },
    /// The configuration file (--config): check it and show what each command runs with.
    Config {
        #[command(subcommand)]
        action: eventing::config_file::ConfigAction,
    },
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

#[cfg(test)]
mod config_file_tests {
    use std::path::Path;

    use clap::CommandFactory;
    use eventing::config_file::{resolve, ConfigFile, Problem};

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../outbox-bridge.example.toml");

    /// The flags, the routes and the contracts, as a process checks them at start.
    fn check(text: &str) -> Result<(), Vec<Problem>> {
        let file = ConfigFile::parse_with(Path::new(EXAMPLE), text, &["routing", "contracts"])?;
        resolve(&super::Cli::command(), &file)?;
        let routing = bridge::relay::routing::check_file(&file);
        if !routing.is_empty() {
            return Err(routing);
        }
        eventing::contracts::from_file(&file).map(|_| ())
    }

    /// The example as shipped, and with every commented key switched on, is a valid file.
    #[test]
    fn the_example_file_is_valid_with_and_without_its_commented_keys() -> anyhow::Result<()> {
        let text = std::fs::read_to_string(EXAMPLE)?;
        check(&text).map_err(|p| anyhow::anyhow!("{p:#?}"))?;
        let all_on: String = text
            .lines()
            .map(|line| match commented_key(line) {
                Some(_) => line.trim_start_matches('#').trim_start(),
                // A commented table header (`# [routing]`) is switched on with its keys.
                None if line.starts_with("# [") => &line[2..],
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        check(&all_on).map_err(|p| anyhow::anyhow!("{p:#?}"))?;
        anyhow::ensure!(all_on.contains("\n[[routing.routes]]\n") && all_on.contains("\n[contracts]\n"));
        Ok(())
    }

    /// Every setting a deployment gives `setup`, `capture`, `relay` or `run` appears in the
    /// example (set or commented), so it cannot fall behind the flags.
    #[test]
    fn the_example_file_shows_every_setting_of_the_long_running_commands() -> anyhow::Result<()> {
        let text = std::fs::read_to_string(EXAMPLE)?;
        let keys: Vec<String> = text
            .lines()
            .filter_map(|line| commented_key(line).or_else(|| key(line)))
            .collect();
        let mut command = super::Cli::command();
        command.build();
        let mut missing = Vec::new();
        for name in ["setup", "capture", "relay", "run"] {
            let Some(sub) = command.find_subcommand(name) else {
                anyhow::bail!("no command {name}");
            };
            for arg in sub.get_arguments() {
                let (Some(long), Some(_)) = (arg.get_long(), arg.get_env()) else {
                    continue;
                };
                let k = long.replace('-', "_");
                if k != "config" && !keys.contains(&k) && !missing.contains(&k) {
                    missing.push(k);
                }
            }
        }
        assert!(missing.is_empty(), "keys missing from the example: {missing:?}");
        Ok(())
    }

    fn key(line: &str) -> Option<String> {
        let (k, _) = line.split_once('=')?;
        let k = k.trim();
        (!k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then(|| k.to_owned())
    }

    fn commented_key(line: &str) -> Option<String> {
        key(line.trim_start().strip_prefix('#')?.trim_start())
    }
}
