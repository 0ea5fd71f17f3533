//! The book (`docs/`): its generated reference pages (`docs/src/reference/`): every binary's command line,
//! from its clap definitions, and every process's metrics, from its registry. Each binary's
//! tests compare the checked-in page with what it generates now, so a flag or a metric cannot
//! change without its page (`UPDATE_DOCS=1 cargo test` rewrites them).
//!
//! Hand-written rather than clap-markdown: that crate leaves out the environment variables,
//! which are half of how these processes are configured.

pub mod links;

use std::fmt::Write;
use std::path::Path;

/// How wide help text is wrapped, whatever the terminal running the test.
const WIDTH: usize = 100;

/// The command line of `cmd` and each of its subcommands, as clap prints `--help`, one
/// section each. Environment values are hidden: the page must not depend on who generated it.
pub fn cli_reference(cmd: clap::Command) -> String {
    let name = cmd.get_name().to_owned();
    let mut out = format!(
        "# `{name}` command line\n\n<!-- Generated from the clap definitions by `UPDATE_DOCS=1 cargo test`; do not edit. -->\n\n\
         Every flag can also be set by the environment variable shown next to it; a flag wins over\n\
         its variable.\n"
    );
    section(&mut out, cmd.term_width(WIDTH).max_term_width(WIDTH), &name);
    out
}

fn section(out: &mut String, cmd: clap::Command, path: &str) {
    let mut cmd = cmd.mut_args(|a| a.hide_env_values(true));
    cmd.build();
    let help = cmd.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    let _ = write!(out, "\n## `{path}`\n\n```text\n{}\n```\n", help.join("\n").trim());
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    for sub in subs {
        let name = format!("{path} {}", sub.get_name());
        section(out, sub, &name);
    }
}

/// The metric families of an OpenMetrics exposition (`# TYPE` and `# HELP` lines), as a table.
pub fn metrics_reference(process: &str, exposition: &str) -> String {
    let mut families: Vec<(String, String, String)> = Vec::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let text = words.next().unwrap_or("").trim().to_owned();
        let entry = match families.iter_mut().find(|(n, _, _)| n == name) {
            Some(entry) => entry,
            None => {
                families.push((name.to_owned(), String::new(), String::new()));
                let last = families.len() - 1;
                &mut families[last]
            }
        };
        match kind {
            "TYPE" => entry.1 = text,
            "HELP" => entry.2 = text.trim_end_matches('.').to_owned(),
            _ => {}
        }
    }
    families.sort();
    let mut out = format!(
        "# `{process}` metrics\n\n<!-- Generated from the metrics registry by `UPDATE_DOCS=1 cargo test`; do not edit. -->\n\n\
         Served as OpenMetrics text on `/metrics` of `--metrics-listen`. A counter `x` is\n\
         exposed as `x_total`, a histogram `x` as `x_bucket`, `x_sum` and `x_count`.\n\n\
         | metric | type | what it counts |\n|---|---|---|\n"
    );
    for (name, kind, help) in families {
        let _ = writeln!(out, "| `{name}` | {kind} | {} |", help.replace('|', "\\|"));
    }
    out
}

/// Fails when the page at `path` (from the workspace root) differs from `generated`; with
/// `UPDATE_DOCS=1` writes it instead.
pub fn check_page(workspace_root: &Path, path: &str, generated: &str) -> Result<(), String> {
    let file = workspace_root.join(path);
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        return std::fs::write(&file, generated).map_err(|e| format!("{}: {e}", file.display()));
    }
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    if current == generated {
        Ok(())
    } else {
        Err(format!(
            "{path} is stale: what the code defines changed. Regenerate it with `UPDATE_DOCS=1 cargo test --workspace reference_page` and commit it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_becomes_one_row_per_family() {
        let text = "# HELP bridge_x Things seen.\n# TYPE bridge_x counter\nbridge_x_total 3\n\
                    # HELP a_y Bytes | held.\n# TYPE a_y gauge\na_y 1\n# EOF\n";
        let page = metrics_reference("bridge", text);
        assert!(
            page.contains("| `a_y` | gauge | Bytes \\| held |\n| `bridge_x` | counter | Things seen |"),
            "{page}"
        );
    }

    #[test]
    fn every_subcommand_gets_its_help_with_its_variables() {
        let cmd = clap::Command::new("tool").subcommand(
            clap::Command::new("run").arg(
                clap::Arg::new("speed")
                    .long("speed")
                    .env("TOOL_SPEED")
                    .help("How fast"),
            ),
        );
        let page = cli_reference(cmd);
        assert!(page.contains("## `tool run`"), "{page}");
        assert!(
            page.contains("--speed <speed>") && page.contains("[env: TOOL_SPEED]"),
            "{page}"
        );
    }
}
