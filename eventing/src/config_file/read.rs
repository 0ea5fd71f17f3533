//! Reading the TOML file into flat entries that remember their line.
//!
//! The file holds what the flags hold: top-level keys apply to every command that has the flag,
//! a table named for a command (`[capture]`) applies to that command only and wins over the
//! top level. Values keep their TOML type only as far as the flags need it (a flag takes text,
//! a switch takes a boolean, a repeatable flag takes an array).

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::Problem;

/// One key of the file, with the line it is on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The command table it sits in (`capture`), none at the top level.
    pub section: Option<String>,
    /// As written (`event_bus`); `-` and `_` mean the same.
    pub key: String,
    pub line: usize,
    pub value: Value,
}

impl Entry {
    /// `capture.event_bus` or `event_bus`: how problems and the report name it.
    pub fn path(&self) -> String {
        match &self.section {
            Some(section) => format!("{section}.{}", self.key),
            None => self.key.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string or a number, as a flag would be given it.
    Text(String),
    Bool(bool),
    List(Vec<String>),
}

/// A configuration file, read and flattened.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// The whole text: the binary reads its reserved tables (`[routing]`) from it.
    pub text: String,
}

impl ConfigFile {
    /// Reads the file; the top-level tables named in `reserved` are not flags and are left to
    /// the binary (`[routing]`).
    pub fn read(path: &Path, reserved: &[&str]) -> Result<Self, Vec<Problem>> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| vec![Problem::file(path, None, None, format!("cannot read it: {err}"))])?;
        Self::parse_with(path, &text, reserved)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, Vec<Problem>> {
        Self::parse_with(path, text, &[])
    }

    pub fn parse_with(path: &Path, text: &str, reserved: &[&str]) -> Result<Self, Vec<Problem>> {
        let line_of = |offset: usize| super::line_of(text, offset);
        let root = DeTable::parse(text).map_err(|err| {
            let line = err.span().map(|span| line_of(span.start));
            vec![Problem::file(path, line, None, err.message().trim().to_owned())]
        })?;
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in root.get_ref().iter() {
            let line = line_of(key.span().start);
            let name = key.get_ref().to_string();
            if reserved.contains(&name.as_str()) {
                continue;
            }
            match value.get_ref() {
                DeValue::Table(table) => {
                    for (inner, value) in table.iter() {
                        let entry = Entry {
                            section: Some(name.clone()),
                            key: inner.get_ref().to_string(),
                            line: line_of(inner.span().start),
                            value: Value::Text(String::new()),
                        };
                        match scalar_or_list(value.get_ref()) {
                            Ok(value) => entries.push(Entry { value, ..entry }),
                            Err(why) => problems.push(Problem::at(path, &entry, why)),
                        }
                    }
                }
                other => {
                    let entry = Entry {
                        section: None,
                        key: name,
                        line,
                        value: Value::Text(String::new()),
                    };
                    match scalar_or_list(other) {
                        Ok(value) => entries.push(Entry { value, ..entry }),
                        Err(why) => problems.push(Problem::at(path, &entry, why)),
                    }
                }
            }
        }
        entries.sort_by_key(|e| e.line);
        if problems.is_empty() {
            Ok(Self {
                path: path.to_owned(),
                entries,
                text: text.to_owned(),
            })
        } else {
            problems.sort_by_key(|p| p.line);
            Err(problems)
        }
    }
}

fn scalar_or_list(value: &DeValue<'_>) -> Result<Value, String> {
    match value {
        DeValue::Boolean(b) => Ok(Value::Bool(*b)),
        DeValue::Array(items) => items
            .iter()
            .map(|item| match scalar(item.get_ref()) {
                Some(text) => Ok(text),
                None => Err(format!(
                    "a list holds strings or numbers, not a {}",
                    item.get_ref().type_str()
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        DeValue::Table(_) => Err("a table inside a command's table means nothing here: \
                                 keys are flags (`[capture]` then `slot = \"…\"`)"
            .into()),
        other => scalar(other)
            .map(Value::Text)
            .ok_or_else(|| format!("a {} is not a flag's value", other.type_str())),
    }
}

fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        // A flag reads decimal; TOML's 0x/0o/0b and `1_000` are turned into it.
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .ok()
            .map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().replace('_', "")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, Vec<Problem>> {
        ConfigFile::parse(Path::new("x.toml"), text)
    }

    #[test]
    fn keys_keep_their_section_and_line() -> Result<(), Vec<Problem>> {
        let file = parse(
            "# comment\nevent_bus = \"orders\"\nshards = 0x10\n\n[capture]\nslot = \"s1\"\nfull_load = true\nevent_types = [\"A\", 2]\n",
        )?;
        let got: Vec<_> = file
            .entries
            .iter()
            .map(|e| (e.path(), e.line, e.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("event_bus".into(), 2, Value::Text("orders".into())),
                ("shards".into(), 3, Value::Text("16".into())),
                ("capture.slot".into(), 6, Value::Text("s1".into())),
                ("capture.full_load".into(), 7, Value::Bool(true)),
                (
                    "capture.event_types".into(),
                    8,
                    Value::List(vec!["A".into(), "2".into()])
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let problems = parse("a = 1\nb = \n").err().unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
    }

    #[test]
    fn nested_tables_and_dates_are_refused_with_their_key() {
        let problems = parse("[capture]\nx = { y = 1 }\nwhen = 1979-05-27\n")
            .err()
            .unwrap_or_default();
        let keys: Vec<_> = problems.iter().map(|p| (p.key.clone(), p.line)).collect();
        assert_eq!(
            keys,
            vec![
                (Some("capture.x".into()), Some(2)),
                (Some("capture.when".into()), Some(3))
            ]
        );
    }
}
