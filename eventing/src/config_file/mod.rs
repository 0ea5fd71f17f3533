//! `--config FILE`: a TOML file beneath the flags and the environment.
//!
//! Precedence is flag > environment > file > default. clap already gives the first, second and
//! last; the file slots in beneath the environment by becoming it: at start, while the process
//! has one thread, each key of the file sets its flag's environment variable where that is
//! unset, and clap parses as always. Every value is checked first by the flag's own parser, so
//! a bad value is reported with the file's line, not as a variable the user never set.
//!
//! Why not figment or config-rs: the flags are clap's, with their parsers, defaults and
//! variables; a layered-config crate would need every flag declared a second time as a serde
//! struct, and neither reports the line of a bad key. The file is read by the `toml` crate
//! (with spans); what is ours is the mapping of keys to flags.

mod check;
mod read;
mod report;
mod resolve;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use check::{run as check, ConfigAction};
pub use read::{ConfigFile, Entry, Value};
pub use report::{effective, redact};
pub use resolve::{resolve, Resolved};

/// Something wrong with the file, located as precisely as it can be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// `capture.slot` or `event_bus`.
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub(crate) fn file(file: &Path, line: Option<usize>, key: Option<String>, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line,
            key,
            message,
        }
    }

    pub(crate) fn at(file: &Path, entry: &Entry, message: String) -> Self {
        Self::file(file, Some(entry.line), Some(entry.path()), message)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The 1-based line of byte `offset` in `text` (a TOML span's start): how every problem of a
/// configuration file is located.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// What the file set at start: (variable, file, entry), for the report's sources.
static APPLIED: OnceLock<Applied> = OnceLock::new();

#[derive(Debug, Default)]
pub struct Applied {
    pub file: Option<ConfigFile>,
    /// The variables the file set, each with the entry it came from.
    pub variables: Vec<(String, Entry)>,
}

/// What the file set when this process started (empty without a file).
pub fn applied() -> &'static Applied {
    APPLIED.get_or_init(Applied::default)
}

/// The id of the global flag that names the file.
pub const CONFIG_ARG: &str = "config";

/// Reads the file `--config` (or its variable) names, checks every key against `command`'s
/// flags, and sets the variables of the command being run that are unset. Call it first thing
/// in `main`, before any other thread exists: changing the environment while another thread
/// reads it is unsound.
/// `reserved` names the top-level tables that are not flags (the binary reads them itself).
pub fn apply_at_start(command: &clap::Command, reserved: &[&str]) -> Result<(), Vec<Problem>> {
    let (path, running) = config_path_and_command(command);
    let Some(path) = path else {
        let _ = APPLIED.set(Applied::default());
        return Ok(());
    };
    let file = ConfigFile::read(&path, reserved)?;
    let resolved = resolve(command, &file)?;
    let mut variables = Vec::new();
    for (variable, value, entry) in resolved.for_command(&running) {
        if std::env::var_os(&variable).is_none() {
            std::env::set_var(&variable, value);
            variables.push((variable, entry.clone()));
        }
    }
    let _ = APPLIED.set(Applied {
        file: Some(file),
        variables,
    });
    Ok(())
}

/// The file's path and the command path being run (`["outbox", "prune"]`), from a lenient
/// parse: a flag the file will supply may still be missing here.
fn config_path_and_command(command: &clap::Command) -> (Option<PathBuf>, Vec<String>) {
    let Ok(matches) = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(std::env::args_os())
    else {
        return (None, Vec::new());
    };
    let path = matches
        .try_get_raw(CONFIG_ARG)
        .ok()
        .flatten()
        .and_then(|mut values| values.next())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let mut running = Vec::new();
    let mut current = &matches;
    while let Some((name, sub)) = current.subcommand() {
        running.push(name.to_owned());
        current = sub;
    }
    (path, running)
}
