//! Old spellings of flags keep working, environment variables included.
//!
//! A renamed flag keeps its old name as a clap alias (`--stall-timeout-secs` for
//! `--stall-timeout`); clap gives an argument one environment variable, so the old variable
//! (`BRIDGE_STALL_TIMEOUT_SECS`) is derived here from the alias the same way the new one is
//! from the flag — the binary's prefix and the name in upper snake case — and its value handed
//! to the new variable when that one is unset. A flag beats a variable and a new variable beats
//! an old one, as before.

/// The (old, new) environment variable names of every renamed flag of `command`.
pub fn renamed_variables(command: &clap::Command) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    collect(command, &mut pairs);
    pairs.sort();
    pairs.dedup();
    pairs
}

fn collect(command: &clap::Command, pairs: &mut Vec<(String, String)>) {
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env().and_then(|e| e.to_str()), arg.get_long()) else {
            continue;
        };
        let Some(prefix) = env.strip_suffix(&snake(long)) else {
            continue;
        };
        for alias in arg.get_all_aliases().into_iter().flatten() {
            pairs.push((format!("{prefix}{}", snake(alias)), env.to_owned()));
        }
    }
    for sub in command.get_subcommands() {
        collect(sub, pairs);
    }
}

/// Flags whose name carries a unit (`--x-secs`, `--x-ms`, `--x-days`, `--x-seconds`): units
/// belong in the value (`30s`), and such a name only as an old spelling's alias.
pub fn flags_named_for_their_unit(command: &clap::Command) -> Vec<String> {
    let mut named = Vec::new();
    let mut commands = vec![command.clone()];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            let long = arg.get_long().unwrap_or_default();
            if ["-secs", "-ms", "-days", "-seconds"]
                .iter()
                .any(|u| long.ends_with(u))
            {
                named.push(format!("{} --{long}", command.get_name()));
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    named
}

fn snake(flag: &str) -> String {
    flag.replace('-', "_").to_ascii_uppercase()
}

/// Hands each old variable's value to its new name where only the old one is set. Call it
/// first thing in `main`, before any other thread exists: changing the environment while
/// another thread reads it is unsound.
pub fn adopt_old_variables(command: &clap::Command) {
    for (old, new) in renamed_variables(command) {
        if std::env::var_os(&new).is_none() {
            if let Some(value) = std::env::var_os(&old) {
                std::env::set_var(&new, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_names_the_old_variable_the_way_the_flag_names_the_new_one() {
        let command = clap::Command::new("bridge").subcommand(
            clap::Command::new("capture")
                .arg(
                    clap::Arg::new("stall_timeout")
                        .long("stall-timeout")
                        .alias("stall-timeout-secs")
                        .env("BRIDGE_STALL_TIMEOUT"),
                )
                .arg(clap::Arg::new("slot").long("slot").env("BRIDGE_SLOT")),
        );
        assert_eq!(
            renamed_variables(&command),
            vec![(
                "BRIDGE_STALL_TIMEOUT_SECS".to_owned(),
                "BRIDGE_STALL_TIMEOUT".to_owned()
            )]
        );
    }
}
