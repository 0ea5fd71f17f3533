//! A binary's `main`, before its runtime: old variable names, then the configuration file.

use std::process::ExitCode;

/// Adopts the old variables of `command`'s renamed flags and applies `--config FILE`, while
/// the process has one thread (both set variables), then runs `run` on a multi-threaded
/// runtime. A bad configuration file stops here with every problem listed, exit code 2 (a
/// usage error, as clap's). `reserved` names the file's tables that are not flags, which the
/// binary reads itself (`[routing]`).
pub fn start<F>(command: &clap::Command, reserved: &[&str], run: impl FnOnce() -> F) -> ExitCode
where
    F: std::future::Future<Output = ExitCode>,
{
    crate::old_names::adopt_old_variables(command);
    if let Err(problems) = crate::config_file::apply_at_start(command, reserved) {
        return refuse(&problems);
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem of the configuration file; exit code 2.
pub fn refuse(problems: &[crate::config_file::Problem]) -> ExitCode {
    for problem in problems {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "error: the configuration file is not valid ({} problem{})",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(2)
}
