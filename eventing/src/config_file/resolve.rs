//! Matching the file's keys to the command's flags and checking each value with the flag's own
//! parser.

use clap::{ArgAction, Command};

use super::{ConfigFile, Entry, Problem, Value, CONFIG_ARG};

/// A key of the file bound to one flag of one command.
#[derive(Debug, Clone)]
struct Binding {
    /// The command path the flag belongs to (empty: the binary's global flags).
    path: Vec<String>,
    long: String,
    variable: String,
    /// The value as the variable carries it.
    value: String,
    entry: usize,
}

/// A file checked against a command: every key named a flag and every value passed its parser.
#[derive(Debug, Clone)]
pub struct Resolved {
    file: ConfigFile,
    bindings: Vec<Binding>,
}

impl Resolved {
    /// (variable, value, entry) for the command at `running` (`["capture"]`): its own table
    /// wins over the top level; global flags come from either.
    pub fn for_command(&self, running: &[String]) -> Vec<(String, String, &Entry)> {
        let top = running.first();
        let applies = |b: &Binding| {
            b.path.is_empty() || (b.path.len() <= running.len() && running[..b.path.len()] == b.path[..])
        };
        let mut chosen: Vec<&Binding> = Vec::new();
        for binding in self.bindings.iter().filter(|b| applies(b)) {
            let entry = &self.file.entries[binding.entry];
            let in_section = entry.section.is_some() && entry.section.as_ref() == top;
            if entry.section.is_some() && !in_section {
                continue;
            }
            match chosen.iter().position(|c| c.variable == binding.variable) {
                Some(i) if in_section => chosen[i] = binding,
                Some(_) => {}
                None => chosen.push(binding),
            }
        }
        chosen
            .into_iter()
            .map(|b| (b.variable.clone(), b.value.clone(), &self.file.entries[b.entry]))
            .collect()
    }

    /// The entry that sets `long` for the command at `running`, if any.
    pub fn entry_for(&self, running: &[String], long: &str) -> Option<(&Entry, String)> {
        let top = running.first();
        let mut found = None;
        for binding in self.bindings.iter().filter(|b| b.long == long) {
            let entry = &self.file.entries[binding.entry];
            let applies = binding.path.is_empty()
                || (binding.path.len() <= running.len() && running[..binding.path.len()] == binding.path[..]);
            if !applies {
                continue;
            }
            match &entry.section {
                Some(section) if Some(section) == top => return Some((entry, binding.value.clone())),
                Some(_) => {}
                None => found = Some((entry, binding.value.clone())),
            }
        }
        found
    }

    pub fn file(&self) -> &ConfigFile {
        &self.file
    }
}

/// Every command path of `root` with its own flags (globals under the empty path).
fn commands(root: &Command) -> Vec<(Vec<String>, &Command)> {
    let mut out = vec![(Vec::new(), root)];
    let mut i = 0;
    while i < out.len() {
        let (path, command) = (out[i].0.clone(), out[i].1);
        for sub in command.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            out.push((p, sub));
        }
        i += 1;
    }
    out
}

fn names(arg: &clap::Arg) -> Vec<String> {
    let mut names: Vec<String> = arg.get_long().into_iter().map(str::to_owned).collect();
    names.extend(arg.get_all_aliases().into_iter().flatten().map(str::to_owned));
    names.into_iter().map(|n| n.replace('-', "_")).collect()
}

/// Checks every key of `file` against `root`'s flags; all problems at once, in line order.
pub fn resolve(root: &Command, file: &ConfigFile) -> Result<Resolved, Vec<Problem>> {
    let mut root = root.clone();
    root.build();
    let all = commands(&root);
    let sections: Vec<&str> = root
        .get_subcommands()
        .map(Command::get_name)
        .filter(|name| *name != "help")
        .collect();
    let mut bindings = Vec::new();
    let mut problems = Vec::new();
    let mut seen: Vec<(Option<String>, String, usize)> = Vec::new();
    for (index, entry) in file.entries.iter().enumerate() {
        let key = entry.key.replace('-', "_");
        let problem = |message: String| Problem::at(&file.path, entry, message);
        if let Some(section) = &entry.section {
            if !sections.contains(&section.as_str()) {
                problems.push(problem(format!(
                    "`[{section}]` is not a command of `{}` (its commands: {})",
                    root.get_name(),
                    sections.join(", ")
                )));
                continue;
            }
        }
        if let Some((_, _, line)) = seen.iter().find(|(s, k, _)| *s == entry.section && *k == key) {
            problems.push(problem(format!("set twice (also on line {line})")));
            continue;
        }
        seen.push((entry.section.clone(), key.clone(), entry.line));
        if key == CONFIG_ARG {
            problems.push(problem("a configuration file cannot name another one".into()));
            continue;
        }
        // The flags this key can mean: in its command's table, that command's (and its
        // subcommands'); at the top level, any command's.
        let candidates: Vec<(&Vec<String>, &clap::Arg)> = all
            .iter()
            .filter(|(path, _)| match &entry.section {
                Some(section) => path.is_empty() || path.first() == Some(section),
                None => true,
            })
            .flat_map(|(path, command)| command.get_arguments().map(move |arg| (path, arg)))
            .filter(|(path, arg)| {
                // Globals are copied into every subcommand when built: count them once.
                (path.is_empty() || !arg.is_global_set()) && names(arg).contains(&key)
            })
            .collect();
        if candidates.is_empty() {
            let scope = match &entry.section {
                Some(section) => format!("`{} {section}`", root.get_name()),
                None => format!("`{}`", root.get_name()),
            };
            problems.push(problem(format!(
                "unknown key: no flag --{} in {scope} (keys are flag names, `-` or `_`)",
                key.replace('_', "-")
            )));
            continue;
        }
        for (path, arg) in candidates {
            match bind(&root, path, arg, entry) {
                Ok((variable, value)) => bindings.push(Binding {
                    path: path.clone(),
                    long: arg.get_long().unwrap_or_default().to_owned(),
                    variable,
                    value,
                    entry: index,
                }),
                Err(message) => {
                    problems.push(problem(message));
                    break;
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Resolved {
            file: file.clone(),
            bindings,
        })
    } else {
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }
}

/// The flag's variable and the value it takes, once the flag's parser accepted the value.
fn bind(root: &Command, path: &[String], arg: &clap::Arg, entry: &Entry) -> Result<(String, String), String> {
    let long = arg.get_long().unwrap_or_default();
    let command_line = |path: &[String]| {
        let mut s = root.get_name().to_owned();
        for p in path {
            s.push(' ');
            s.push_str(p);
        }
        s
    };
    let Some(variable) = arg.get_env().and_then(|v| v.to_str()) else {
        return Err(format!(
            "--{long} is a one-shot argument of `{}`: give it on the command line",
            command_line(path)
        ));
    };
    let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
    let repeatable = matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    let values: Vec<String> = match (&entry.value, switch) {
        (Value::Bool(b), true) => return Ok((variable.to_owned(), b.to_string())),
        (_, true) => return Err(format!("--{long} is a switch: write true or false")),
        (Value::Bool(b), false) => vec![b.to_string()],
        (Value::Text(text), false) => vec![text.clone()],
        (Value::List(items), false) if repeatable => items.clone(),
        (Value::List(_), false) => return Err(format!("--{long} takes one value, not a list")),
    };
    let joined = if values.len() > 1 {
        let Some(delimiter) = arg.get_value_delimiter() else {
            return Err(format!(
                "--{long} takes one value per flag, and a file cannot repeat a key"
            ));
        };
        if let Some(v) = values.iter().find(|v| v.contains(delimiter)) {
            return Err(format!("`{v}`: a list's items cannot contain `{delimiter}`"));
        }
        values.join(&delimiter.to_string())
    } else {
        values.concat()
    };
    for value in &values {
        check_value(root, path, arg, value)?;
    }
    Ok((variable.to_owned(), joined))
}

/// Runs the flag's own parser on `value` by parsing `root path… --long=value`; only an error
/// about this flag counts (others, such as a required flag missing, are not the file's).
fn check_value(root: &Command, path: &[String], arg: &clap::Arg, value: &str) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_default();
    let mut argv = vec![root.get_name().to_owned()];
    argv.extend(path.iter().cloned());
    argv.push(format!("--{long}={value}"));
    let Err(err) = root.clone().try_get_matches_from(argv) else {
        return Ok(());
    };
    use clap::error::{ContextKind, ErrorKind};
    let about_this = err
        .get(ContextKind::InvalidArg)
        .is_some_and(|a| a.to_string().starts_with(&format!("--{long}")));
    let value_error = matches!(
        err.kind(),
        ErrorKind::InvalidValue
            | ErrorKind::ValueValidation
            | ErrorKind::InvalidUtf8
            | ErrorKind::WrongNumberOfValues
    );
    if about_this && value_error {
        let text = err.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        Err(first.trim_start_matches("error: ").to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{Arg, ArgAction, Command};

    use super::*;

    fn command() -> Command {
        let timeout = |s: &str| s.parse::<u64>().map_err(|_| "expected whole seconds".to_owned());
        Command::new("bridge")
            .arg(
                Arg::new("config")
                    .long("config")
                    .global(true)
                    .env("BRIDGE_CONFIG"),
            )
            .arg(
                Arg::new("log_format")
                    .long("log-format")
                    .global(true)
                    .env("BRIDGE_LOG_FORMAT"),
            )
            .subcommand_required(true)
            .subcommand(
                Command::new("capture")
                    .arg(Arg::new("slot").long("slot").env("BRIDGE_SLOT").required(true))
                    .arg(
                        Arg::new("stall_timeout")
                            .long("stall-timeout")
                            .alias("stall-timeout-secs")
                            .env("BRIDGE_STALL_TIMEOUT")
                            .value_parser(timeout),
                    )
                    .arg(Arg::new("event_bus").long("event-bus").env("BRIDGE_EVENT_BUS")),
            )
            .subcommand(
                Command::new("relay")
                    .arg(Arg::new("event_bus").long("event-bus").env("BRIDGE_EVENT_BUS"))
                    .arg(
                        Arg::new("event_types")
                            .long("event-types")
                            .env("BRIDGE_EVENT_TYPES")
                            .action(ArgAction::Append)
                            .value_delimiter(','),
                    )
                    .arg(
                        Arg::new("full_load")
                            .long("full-load")
                            .env("BRIDGE_FULL_LOAD")
                            .action(ArgAction::SetTrue),
                    ),
            )
            .subcommand(Command::new("replay").arg(Arg::new("since").long("since").required(true)))
    }

    fn resolved(text: &str) -> Result<Resolved, Vec<Problem>> {
        let file = ConfigFile::parse(Path::new("f.toml"), text)?;
        resolve(&command(), &file)
    }

    fn messages(text: &str) -> Vec<String> {
        match resolved(text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn vars(r: &Resolved, running: &[&str]) -> Vec<(String, String)> {
        let running: Vec<String> = running.iter().map(|s| (*s).to_owned()).collect();
        let mut v: Vec<_> = r
            .for_command(&running)
            .into_iter()
            .map(|(var, value, _)| (var, value))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_command_table_wins_over_the_top_level_for_that_command_only() -> Result<(), Vec<Problem>> {
        let r = resolved(
            "event_bus = \"shared\"\nlog_format = \"json\"\n[relay]\nevent_bus = \"relay-bus\"\nevent_types = [\"A\", \"B\"]\nfull_load = true\n[capture]\nslot = \"s\"\nstall_timeout_secs = 30\n",
        )?;
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            vars(&r, &["relay"]),
            vec![
                s("BRIDGE_EVENT_BUS", "relay-bus"),
                s("BRIDGE_EVENT_TYPES", "A,B"),
                s("BRIDGE_FULL_LOAD", "true"),
                s("BRIDGE_LOG_FORMAT", "json"),
            ]
        );
        assert_eq!(
            vars(&r, &["capture"]),
            vec![
                s("BRIDGE_EVENT_BUS", "shared"),
                s("BRIDGE_LOG_FORMAT", "json"),
                s("BRIDGE_SLOT", "s"),
                s("BRIDGE_STALL_TIMEOUT", "30"),
            ]
        );
        assert_eq!(vars(&r, &["replay"]), vec![s("BRIDGE_LOG_FORMAT", "json")]);
        Ok(())
    }

    #[test]
    fn every_bad_key_is_reported_with_its_line() {
        let got = messages(
            "evnt_bus = \"x\"\n[capture]\nstall_timeout = \"soon\"\nfull_load = true\n[relay]\nfull_load = \"yes\"\nevent_bus = [\"a\", \"b\"]\n[replay]\nsince = \"1h\"\n[nope]\nx = 1\n",
        );
        let expected = [
            "f.toml:1: `evnt_bus`: unknown key: no flag --evnt-bus in `bridge`",
            "f.toml:3: `capture.stall_timeout`: invalid value 'soon' for '--stall-timeout",
            "f.toml:4: `capture.full_load`: unknown key: no flag --full-load in `bridge capture`",
            "f.toml:6: `relay.full_load`: --full-load is a switch: write true or false",
            "f.toml:7: `relay.event_bus`: --event-bus takes one value, not a list",
            "f.toml:9: `replay.since`: --since is a one-shot argument of `bridge replay`",
            "f.toml:11: `nope.x`: `[nope]` is not a command of `bridge`",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (got, want) in got.iter().zip(expected) {
            assert!(got.starts_with(want), "{got}\n  does not start with\n{want}");
        }
    }

    #[test]
    fn a_key_set_twice_in_one_table_is_refused_in_either_spelling() {
        let got = messages("[relay]\nevent_bus = \"a\"\nevent-bus = \"b\"\n");
        assert_eq!(
            got,
            vec!["f.toml:3: `relay.event-bus`: set twice (also on line 2)".to_owned()]
        );
    }
}
