//! The `shipping` binary: parses the command line and hands over to the library.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The old environment name of --max-event-bytes still works, for a release at least. Set
    // before any other thread exists: changing the environment while threads read it is unsound.
    if std::env::var_os("SHIPPING_MAX_EVENT_BYTES").is_none() {
        if let Some(old) = std::env::var_os("SHIPPING_MAX_ENTRY_BYTES") {
            std::env::set_var("SHIPPING_MAX_EVENT_BYTES", old);
        }
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
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
