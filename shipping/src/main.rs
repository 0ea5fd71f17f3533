//! The `shipping` binary: parses the command line and hands over to the library.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    // Renamed flags' old environment variables (SHIPPING_MAX_ENTRY_BYTES,
    // SHIPPING_STALL_TIMEOUT_SECS, …) still work (`eventing::old_names`).
    eventing::process_start::start(&cli::Cli::command(), &["contracts"], run)
}

async fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    // The file's `[contracts]` (its schemas compiled) is checked at start, as its flags are.
    if let Some(file) = &eventing::config_file::applied().file {
        if let Err(problems) = eventing::contracts::from_file(file) {
            return eventing::process_start::refuse(&problems);
        }
    }
    eventing::logging::init(cli.log_format);
    let _telemetry = match telemetry::init("shipping", cli.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "shipping stopped");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
