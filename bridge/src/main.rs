//! The `bridge` binary: parses the command line and hands over to the library.

mod backfill_cmd;
mod cli;
mod commands;
mod full_load;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    // Renamed flags' old environment variables still work (`eventing::old_names`).
    eventing::process_start::start(&cli::Cli::command(), &["routing", "contracts"], run)
}

async fn run() -> ExitCode {
    let cli = cli::Cli::parse();
    // The file's `[routing]` is checked at start by every command, as its flags are.
    if let Some(file) = &eventing::config_file::applied().file {
        let mut problems = bridge::relay::routing::check_file(file);
        if let Err(more) = eventing::contracts::from_file(file) {
            problems.extend(more);
        }
        if !problems.is_empty() {
            return eventing::process_start::refuse(&problems);
        }
    }
    eventing::logging::init(cli.log_format);
    // Each long-running process is its own service in a trace.
    let service = match &cli.command {
        cli::Command::Capture(_) => "bridge-capture",
        cli::Command::Relay(_) => "bridge-relay",
        _ => "bridge",
    };
    let _telemetry = match telemetry::init(service, cli.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match commands::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, cause = %eventing::error_chain::source_chain(err.as_ref()), "bridge stopped");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
