//! The `shipping` binary: parses the command line and hands over to the library.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // The old environment name of --max-event-bytes still works, for a release at least.
    if std::env::var_os("SHIPPING_MAX_EVENT_BYTES").is_none() {
        if let Some(old) = std::env::var_os("SHIPPING_MAX_ENTRY_BYTES") {
            std::env::set_var("SHIPPING_MAX_EVENT_BYTES", old);
        }
    }
    let cli = cli::Cli::parse();
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
