//! `config check`: the file has been checked at start (every process does it the same way);
//! this prints what each command would run with.

use clap::Command;

use super::{applied, effective, resolve};

#[derive(clap::Subcommand, Debug)]
pub enum ConfigAction {
    /// Check the configuration file (every key a flag, every value one its flag accepts: each
    /// problem with its line; exit 2 when there is one) and print the effective configuration,
    /// secrets redacted, each value with its source (flag > environment > file > default).
    /// Give `--config FILE` before the command line to show.
    Check {
        /// The command line to show (`relay --event-bus orders`); without one, every
        /// long-running command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// The report for `action`; `long_running` are the commands shown when none is named.
pub fn run(root: &Command, action: &ConfigAction, long_running: &[&str]) -> Result<String, String> {
    let ConfigAction::Check { command } = action;
    // After the command line to show, `--config` belongs to that line and would be ignored.
    if command
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="))
    {
        return Err(format!(
            "give --config before the command line to show: `{} --config FILE config check {}`",
            root.get_name(),
            command.first().map_or("", String::as_str)
        ));
    }
    let applied = applied();
    let resolved = match &applied.file {
        Some(file) => Some(resolve(root, file).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?),
        None => None,
    };
    let mut out = match &applied.file {
        Some(file) => format!(
            "# configuration file {}: valid ({} keys)\n",
            file.path.display(),
            file.entries.len()
        ),
        None => {
            let variable = root
                .get_arguments()
                .find(|a| a.get_id() == super::CONFIG_ARG)
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("# no configuration file (--config FILE or {variable})\n")
        }
    };
    let lines: Vec<Vec<String>> = if command.is_empty() {
        long_running.iter().map(|c| vec![(*c).to_owned()]).collect()
    } else {
        vec![command.clone()]
    };
    for argv in lines {
        out.push('\n');
        out.push_str(&effective(root, resolved.as_ref(), &argv)?);
    }
    Ok(out)
}
