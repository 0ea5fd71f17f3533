//! The `bridge` binary: parses the command line and hands over to the library.

mod backfill_cmd;
mod cli;
mod commands;
mod full_load;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    eventing::logging::init(cli.log_format);
    match commands::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, cause = %eventing::error_chain::source_chain(err.as_ref()), "bridge stopped");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
