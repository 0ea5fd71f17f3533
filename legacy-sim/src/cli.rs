//! The command line: every flag has an environment fallback, all listed by `--help`.

use std::net::SocketAddr;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::load::{LoadOptions, ProgressMode};
use crate::logging::LogFormat;

/// A simulated monolith: customers and orders, each write with its outbox rows in one transaction.
#[derive(Debug, Parser)]
#[command(name = "legacy-sim", version)]
pub struct Cli {
    /// Postgres URL of the monolith's database (required).
    // Global arguments cannot be required in clap, so the check is `database_url()`'s; the value is
    // hidden from `--help` because it usually holds a password.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log format on stderr.
    #[arg(long, env = "LEGACY_SIM_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces (OTLP over HTTP/protobuf) to this collector, e.g. `http://127.0.0.1:4318`;
    /// none without it. The standard OpenTelemetry variable is the fallback.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The database URL, or exit with a usage error (status 2) like any missing required flag.
    pub fn database_url(&self) -> &str {
        match &self.database_url {
            Some(url) => url,
            None => Self::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "the database URL is required: pass --database-url or set DATABASE_URL",
                )
                .exit(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the schema migrations (idempotent) and print those applied.
    Migrate,
    /// Serve the HTTP API until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Generate load through the domain layer and print a summary.
    Load(LoadArgs),
    /// Exit 0 if the `legacy-sim serve` on --listen answers its /healthz, else 1 with the
    /// reason: its container's health check (the image has no curl).
    Healthcheck {
        /// Where `legacy-sim serve` listens (the same setting it was started with).
        #[arg(long, env = "LEGACY_SIM_LISTEN", default_value = "127.0.0.1:9701")]
        listen: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stdout).
    #[arg(long, env = "LEGACY_SIM_LISTEN", default_value = "127.0.0.1:9701")]
    pub listen: SocketAddr,

    /// Size of the database connection pool.
    #[arg(long, env = "LEGACY_SIM_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Customers to create.
    #[arg(long, env = "LEGACY_SIM_CUSTOMERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub customers: u32,

    /// Orders to place (each one approved or rejected).
    #[arg(long, env = "LEGACY_SIM_ORDERS", default_value_t = 1000)]
    pub orders: u32,

    /// Concurrent writers (one database connection each).
    #[arg(long, env = "LEGACY_SIM_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,

    /// Fraction of approved orders cancelled later, in [0, 1].
    #[arg(long, env = "LEGACY_SIM_CANCEL_RATIO", default_value_t = 0.1, value_parser = parse_ratio)]
    pub cancel_ratio: f64,

    /// Seed of the random plan; the same seed gives the same customers and orders (and, with
    /// `--concurrency 1`, the same outcome). Random when absent; the summary prints it.
    #[arg(long, env = "LEGACY_SIM_SEED")]
    pub seed: Option<u64>,

    /// Cap on outbox events written per second (0 = unlimited).
    #[arg(long, env = "LEGACY_SIM_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Progress bar on stderr: `auto` shows it only on a terminal.
    #[arg(long, env = "LEGACY_SIM_PROGRESS", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Print the summary as one JSON line instead of text.
    #[arg(long, env = "LEGACY_SIM_SUMMARY_JSON")]
    pub summary_json: bool,
}

impl LoadArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            customers: self.customers,
            orders: self.orders,
            concurrency: self.concurrency,
            cancel_ratio: self.cancel_ratio,
            seed: self.seed,
            rate: self.rate,
            progress: self.progress,
        }
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    let ratio: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err("must be between 0 and 1".to_owned())
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err("must be a finite number >= 0".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every flag can come from the environment (containers are configured that way).
    #[test]
    fn every_flag_has_an_environment_fallback() {
        let cli = Cli::command();
        let missing: Vec<String> = cli
            .get_arguments()
            .chain(cli.get_subcommands().flat_map(|c| c.get_arguments()))
            .filter(|a| !a.is_positional() && a.get_env().is_none())
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "help" && id != "version")
            .collect();
        assert!(
            missing.is_empty(),
            "flags without an environment variable: {missing:?}"
        );
    }

    #[test]
    fn ratio_must_lie_between_zero_and_one() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("NaN").is_err());
    }

    #[test]
    fn rate_must_be_finite_and_not_negative() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
    }
}

#[cfg(test)]
mod reference_page {
    use clap::CommandFactory;

    /// docs/src/reference/cli-legacy-sim.md is what the clap definitions say (UPDATE_DOCS=1 rewrites it).
    #[test]
    fn reference_page_of_the_command_line_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let page = reference_docs::cli_reference(super::Cli::command());
        if let Err(stale) = reference_docs::check_page(&root, "docs/src/reference/cli-legacy-sim.md", &page) {
            panic!("{stale}");
        }
    }
}
