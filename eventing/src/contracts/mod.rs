//! Event contracts: a JSON Schema (draft 2020-12) per `(Source, DetailType)`, checked against an
//! event's `data` before it is published.
//!
//! Schemas live in a directory as `<Source>/<DetailType>.json` (`legacy.monolith/OrderPlaced.json`),
//! named by `[contracts] schemas = "DIR"` in the configuration file (relative to the file). Each is
//! compiled once at start; a schema that is not JSON or not a valid schema stops the process
//! there, naming the file. An event without a schema passes, unless `require_schema = true`.

pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The compiled schemas, by `(Source, DetailType)`.
pub struct Contracts {
    dir: PathBuf,
    require: bool,
    /// By source, then detail type: looked up with the event's own strings, no copy per event.
    schemas: BTreeMap<String, BTreeMap<String, Schema>>,
}

struct Schema {
    file: PathBuf,
    document: serde_json::Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contracts")
            .field("dir", &self.dir)
            .field("require", &self.require)
            .field(
                "schemas",
                &self.schemas().map(|(s, d, _)| (s, d)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Display for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} schemas in {}, {}",
            self.len(),
            self.dir.display(),
            if self.require {
                "an event without one is parked (require_schema = true)"
            } else {
                "an event without one passes"
            }
        )
    }
}

/// At most this many of an event's violations are told in its reason.
const VIOLATIONS_TOLD: usize = 3;

impl Contracts {
    /// Compiles every `*.json` under `dir/<Source>/`; every bad file is reported.
    pub fn load(dir: &Path, require: bool) -> Result<Self, Vec<String>> {
        let mut schemas: BTreeMap<String, BTreeMap<String, Schema>> = BTreeMap::new();
        let mut problems = Vec::new();
        let sources = std::fs::read_dir(dir).map_err(|e| {
            vec![format!(
                "{}: cannot read the schema directory: {e}",
                dir.display()
            )]
        })?;
        let mut files = Vec::new();
        for source in sources.flatten() {
            let path = source.path();
            if !path.is_dir() {
                continue;
            }
            match std::fs::read_dir(&path) {
                Ok(entries) => files.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "json")),
                ),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        files.sort();
        for file in files {
            let (Some(source), Some(detail_type)) = (
                file.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()),
                file.file_stem().and_then(|s| s.to_str()),
            ) else {
                problems.push(format!(
                    "{}: not named <Source>/<DetailType>.json",
                    file.display()
                ));
                continue;
            };
            let document = match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(&t).map_err(|e| format!("not JSON: {e}"))
                }) {
                Ok(document) => document,
                Err(e) => {
                    problems.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            match jsonschema::draft202012::new(&document) {
                Ok(validator) => {
                    schemas.entry(source.to_owned()).or_default().insert(
                        detail_type.to_owned(),
                        Schema {
                            file: file.clone(),
                            document,
                            validator,
                        },
                    );
                }
                Err(e) => problems.push(format!(
                    "{}: not a valid JSON Schema (draft 2020-12): {e}",
                    file.display()
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                dir: dir.to_owned(),
                require,
                schemas,
            })
        } else {
            Err(problems)
        }
    }

    /// Why `data` (an event's payload, JSON text) breaks its contract, if it does.
    pub fn violation(&self, source: &str, detail_type: &str, data: &str) -> Option<String> {
        let Some(schema) = self
            .schemas
            .get(source)
            .and_then(|by_type| by_type.get(detail_type))
        else {
            return self.require.then(|| {
                format!(
                    "no contract for source `{source}`, detail type `{detail_type}` (require_schema = true; \
                     add {}/{source}/{detail_type}.json)",
                    self.dir.display()
                )
            });
        };
        let instance: serde_json::Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => return Some(format!("data is not JSON: {e}")),
        };
        let errors: Vec<String> = schema
            .validator
            .iter_errors(&instance)
            .take(VIOLATIONS_TOLD + 1)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("at `{}`: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if errors.is_empty() {
            return None;
        }
        let more = if errors.len() > VIOLATIONS_TOLD {
            "; …"
        } else {
            ""
        };
        Some(format!(
            "data breaks its contract {}: {}{more}",
            schema.file.display(),
            errors
                .iter()
                .take(VIOLATIONS_TOLD)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }

    /// Every schema: (source, detail type, document).
    pub fn schemas(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        self.schemas.iter().flat_map(|(s, by_type)| {
            by_type
                .iter()
                .map(move |(d, schema)| (s.as_str(), d.as_str(), &schema.document))
        })
    }

    pub fn len(&self) -> usize {
        self.schemas.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }
}

/// `[contracts]` of a configuration file.
#[derive(Deserialize)]
struct Top {
    #[serde(default)]
    contracts: Option<ContractsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractsFile {
    schemas: Spanned<String>,
    #[serde(default)]
    require_schema: bool,
}

/// The contracts a configuration file names (`None` without `[contracts]`); each problem with
/// its line when it has one.
pub fn from_file(
    file: &crate::config_file::ConfigFile,
) -> Result<Option<Contracts>, Vec<crate::config_file::Problem>> {
    let text = &file.text;
    let line_of = |offset: usize| crate::config_file::line_of(text, offset);
    let problem = |line: Option<usize>, message: String| crate::config_file::Problem {
        file: file.path.clone(),
        line,
        key: Some("contracts".into()),
        message,
    };
    let top: Top = toml::from_str(text).map_err(|e| {
        vec![problem(
            e.span().map(|s| line_of(s.start)),
            e.message().trim().to_owned(),
        )]
    })?;
    let Some(contracts) = top.contracts else {
        return Ok(None);
    };
    let dir = Path::new(contracts.schemas.get_ref());
    let dir = match file.path.parent() {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir.to_owned(),
    };
    let line = Some(line_of(contracts.schemas.span().start));
    Contracts::load(&dir, contracts.require_schema)
        .map(Some)
        .map_err(|problems| problems.into_iter().map(|p| problem(line, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    #[test]
    fn an_event_is_checked_against_its_source_and_detail_types_schema() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "legacy.monolith/OrderPlaced.json",
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "required": ["order_id", "order_total"],
                "properties": {"order_id": {"type": "string"}, "order_total": {"type": "number", "minimum": 0}}}"#,
        );
        let contracts = Contracts::load(dir.path(), false).unwrap();
        assert_eq!(contracts.len(), 1);
        assert_eq!(
            contracts.violation(
                "legacy.monolith",
                "OrderPlaced",
                r#"{"order_id": "o1", "order_total": 3}"#
            ),
            None
        );
        let why = contracts
            .violation(
                "legacy.monolith",
                "OrderPlaced",
                r#"{"order_id": 7, "order_total": -1}"#,
            )
            .unwrap();
        assert!(
            why.contains("OrderPlaced.json")
                && why.contains("at `/order_id`")
                && why.contains("at `/order_total`"),
            "{why}"
        );
        // No schema: passes, unless one is required.
        assert_eq!(contracts.violation("legacy.monolith", "Other", "{}"), None);
        let strict = Contracts::load(dir.path(), true).unwrap();
        assert!(strict
            .violation("legacy.monolith", "Other", "{}")
            .is_some_and(|w| w.contains("no contract")));
    }

    #[test]
    fn a_bad_schema_is_refused_at_load_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "s/A.json", r#"{"type": "no-such-type"}"#);
        write(dir.path(), "s/B.json", "{not json");
        let problems = Contracts::load(dir.path(), false).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("A.json") && problems[1].contains("B.json"),
            "{problems:?}"
        );
    }
}
