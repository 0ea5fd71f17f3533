//! `config check`: the effective configuration of a command line, each value with where it
//! came from, secrets redacted.

use std::fmt::Write as _;

use clap::parser::ValueSource;
use clap::{ArgAction, Command};

use super::{applied, Resolved};

/// The effective configuration of `argv` (`["relay", "--event-bus", "x"]`) as TOML, each line
/// commented with its source: flag, environment (the variable), file (the line) or default.
pub fn effective(root: &Command, resolved: Option<&Resolved>, argv: &[String]) -> Result<String, String> {
    let mut full = vec![root.get_name().to_owned()];
    full.extend(argv.iter().cloned());
    let matches = root
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&full)
        .map_err(|e| e.render().to_string())?;
    let mut root = root.clone();
    root.build();
    let mut path = Vec::new();
    let mut command = &root;
    let mut current = &matches;
    while let Some((name, sub)) = current.subcommand() {
        path.push(name.to_owned());
        command = command
            .find_subcommand(name)
            .ok_or_else(|| format!("no command `{name}`"))?;
        current = sub;
    }
    if path.is_empty() {
        return Err(format!("name a command of `{}` to check", root.get_name()));
    }
    let from_file: Vec<&String> = applied().variables.iter().map(|(v, _)| v).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# `{} {}`: effective configuration (flag > environment > file > default)",
        root.get_name(),
        path.join(" ")
    );
    let _ = writeln!(out, "[{}]", path.join("."));
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if ["help", "version", super::CONFIG_ARG].contains(&id) || arg.is_hide_set() {
            continue;
        }
        let key = long.replace('-', "_");
        let variable = arg.get_env().and_then(|v| v.to_str());
        let flag: Option<Vec<String>> =
            (current.value_source(id) == Some(ValueSource::CommandLine)).then(|| raw(current, id));
        let (values, source) = if let Some(values) = flag {
            (values, "flag".to_owned())
        } else if let Some((variable, value)) = variable
            .filter(|v| !from_file.contains(&&(*v).to_owned()))
            .and_then(|v| std::env::var(v).ok().map(|value| (v, value)))
        {
            (vec![value], format!("environment {variable}"))
        } else if let Some((entry, value)) = resolved.and_then(|r| r.entry_for(&path, long)) {
            let file = resolved
                .map(|r| r.file().path.display().to_string())
                .unwrap_or_default();
            (
                vec![value],
                format!("file {file}:{} `{}`", entry.line, entry.path()),
            )
        } else if !arg.get_default_values().is_empty() {
            let values = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            (values, "default".to_owned())
        } else if matches!(arg.get_action(), ArgAction::SetTrue) {
            (vec!["false".to_owned()], "default".to_owned())
        } else {
            let _ = writeln!(out, "# {key}: not set");
            continue;
        };
        let shown = values.iter().map(|v| redact(&key, v)).collect::<Vec<_>>();
        let rendered = if matches!(arg.get_action(), ArgAction::SetTrue) {
            shown.concat()
        } else if shown.len() == 1 {
            quote(&shown[0])
        } else {
            format!(
                "[{}]",
                shown.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let _ = writeln!(out, "{key} = {rendered}  # {source}");
    }
    Ok(out)
}

fn raw(matches: &clap::ArgMatches, id: &str) -> Vec<String> {
    match matches.try_get_raw(id) {
        Ok(Some(values)) => values.map(|v| v.to_string_lossy().into_owned()).collect(),
        // A switch given on the command line has no raw value.
        _ => vec!["true".to_owned()],
    }
}

fn quote(s: &str) -> String {
    // A number reads as one; TOML's basic strings escape like JSON's for the rest.
    let number = !s.is_empty()
        && s.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && s.parse::<f64>().is_ok();
    if number {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Hides what a value must not show: a URL's password, a conninfo's `password=`, and the whole
/// value of a key named for a secret.
pub fn redact(key: &str, value: &str) -> String {
    let key = key.to_ascii_lowercase();
    if ["password", "secret", "token"].iter().any(|s| key.contains(s)) {
        return "***".to_owned();
    }
    let mut out = redact_url_passwords(value);
    // Conninfo: `host=… password=xyz …` (quoted or not).
    while let Some(at) = out.find("password=") {
        let start = at + "password=".len();
        let rest = &out[start..];
        if rest.starts_with("***") {
            break;
        }
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.find('\'').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.replace_range(start..start + end, "***");
    }
    out
}

fn redact_url_passwords(value: &str) -> String {
    // Each `scheme://user:password@` in the value (a multi-host URL has one).
    let mut out = String::new();
    let mut rest = value;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_wherever_a_value_carries_them() {
        assert_eq!(
            redact(
                "database_url",
                "postgres://bridge:s3cret@db:5432/app?sslmode=require"
            ),
            "postgres://bridge:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("database_url", "host=db user=bridge password=s3cret dbname=app"),
            "host=db user=bridge password=*** dbname=app"
        );
        assert_eq!(
            redact("database_url", "host=db password='s3 cret' dbname=app"),
            "host=db password=*** dbname=app"
        );
        assert_eq!(redact("database_url", "postgres://db/app"), "postgres://db/app");
        assert_eq!(redact("api_token", "abc"), "***");
    }
}
