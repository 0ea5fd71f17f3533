//! `[routing]` in the configuration file, read with its lines.
//!
//! ```toml
//! [routing]
//! unmatched = "default"                 # default | skip | park
//!
//! [[routing.tables]]                    # several outbox tables, each with its column names
//! table = "sales.events"
//! columns = { id = "event_id", event_type = "kind" }
//!
//! [[routing.routes]]                    # tried in order; the first that matches is taken
//! name = "customers"
//! aggregate_type = "Customer"           # exact or glob; all conditions must hold
//! event_bus = "customers"               # a name, or another account's bus by ARN
//! source = "legacy.customers"
//! detail_type = "{aggregatetype}.{type}"
//! metadata_columns = ["tenant_id"]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{
    Action, Columns, Condition, Destination, Field, OutboxTable, Pattern, Publish, Route, Routing, Template,
    Unmatched,
};
use crate::table::TableName;

/// A problem in `[routing]`: the line and the key's path.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingProblem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Top {
    #[serde(default)]
    routing: Option<Spanned<RoutingFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingFile {
    #[serde(default)]
    unmatched: Option<Spanned<String>>,
    #[serde(default)]
    tables: Vec<Spanned<TableFile>>,
    #[serde(default)]
    routes: Vec<Spanned<RouteFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    table: Spanned<String>,
    #[serde(default)]
    columns: ColumnsFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ColumnsFile {
    id: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    event_type: Option<String>,
    payload: Option<String>,
    version: Option<String>,
    occurred_at: Option<String>,
    trace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: Option<String>,
    aggregate_type: Option<Spanned<String>>,
    event_type: Option<Spanned<String>>,
    /// Any column's value: `{ region = "eu-*" }`.
    #[serde(default)]
    columns: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    action: Option<Spanned<String>>,
    event_bus: Option<String>,
    source: Option<String>,
    detail_type: Option<Spanned<String>>,
    #[serde(default)]
    metadata_columns: Vec<String>,
}

/// The envelope's own metadata fields.
const RESERVED_METADATA: [&str; 9] = [
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "occurred_at",
    "commit_lsn",
    "traceparent",
    "replayed",
    "claim_check",
];

/// The problems found so far, each with its line.
struct Problems<'t> {
    text: &'t str,
    list: Vec<RoutingProblem>,
}

impl Problems<'_> {
    fn line_of(&self, offset: usize) -> usize {
        eventing::config_file::line_of(self.text, offset)
    }

    fn at(&mut self, span: std::ops::Range<usize>, key: String, message: String) {
        let line = Some(self.line_of(span.start));
        self.list.push(RoutingProblem { line, key, message });
    }
}

/// The routing the file's `[routing]` describes over `default_table` (the `--outbox-table`),
/// or today's single-table routing without one.
pub fn from_file(text: Option<&str>, default_table: &TableName) -> Result<Routing, Vec<RoutingProblem>> {
    let single = || Routing::single(default_table.clone());
    let Some(text) = text else {
        return Ok(single());
    };
    let mut problems = Problems {
        text,
        list: Vec::new(),
    };
    let top: Top = toml::from_str(text).map_err(|err| {
        vec![RoutingProblem {
            line: err.span().map(|s| problems.line_of(s.start)),
            key: "routing".into(),
            message: err.message().trim().to_owned(),
        }]
    })?;
    let Some(file) = top.routing else {
        return Ok(single());
    };
    let file = file.into_inner();
    let unmatched = unmatched(&file, &mut problems);
    let tables = tables(&file, default_table, &mut problems);
    let mut routes: Vec<Route> = Vec::new();
    for (i, spanned) in file.routes.iter().enumerate() {
        let route = route(i, spanned, &mut problems);
        if routes.iter().any(|o| o.name == route.name) {
            let message = format!("two routes are named `{}`", route.name);
            problems.at(spanned.span(), format!("routing.routes[{i}].name"), message);
        }
        routes.push(route);
    }
    if problems.list.is_empty() {
        Ok(Routing {
            tables,
            routes,
            unmatched,
        })
    } else {
        problems.list.sort_by_key(|p| p.line);
        Err(problems.list)
    }
}

fn unmatched(file: &RoutingFile, problems: &mut Problems<'_>) -> Unmatched {
    match file.unmatched.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
        None | Some(("default", _)) => Unmatched::Default,
        Some(("skip", _)) => Unmatched::Skip,
        Some(("park", _)) => Unmatched::Park,
        Some((other, span)) => {
            let message = format!("`{other}`: expected default, skip or park");
            problems.at(span, "routing.unmatched".into(), message);
            Unmatched::Default
        }
    }
}

/// The outbox tables the file lists, else `default_table` with the default columns.
fn tables(file: &RoutingFile, default_table: &TableName, problems: &mut Problems<'_>) -> Vec<OutboxTable> {
    let mut tables: Vec<OutboxTable> = Vec::new();
    for (i, t) in file.tables.iter().enumerate() {
        let key = format!("routing.tables[{i}].table");
        let t = t.get_ref();
        match t.table.get_ref().parse::<TableName>() {
            Ok(table) if tables.iter().any(|o| o.table == table) => {
                problems.at(t.table.span(), key, format!("{table} is listed twice"));
            }
            Ok(table) => tables.push(OutboxTable {
                table,
                columns: columns(&t.columns),
            }),
            Err(err) => problems.at(t.table.span(), key, err.to_string()),
        }
    }
    if tables.is_empty() {
        tables.push(OutboxTable {
            table: default_table.clone(),
            columns: Columns::default(),
        });
    }
    tables
}

fn route(i: usize, spanned: &Spanned<RouteFile>, problems: &mut Problems<'_>) -> Route {
    let r = spanned.get_ref();
    let key = |field: &str| format!("routing.routes[{i}].{field}");
    let mut when = Vec::new();
    let fields = [
        (
            Field::AggregateType,
            r.aggregate_type.as_ref(),
            "aggregate_type".to_owned(),
        ),
        (Field::EventType, r.event_type.as_ref(), "event_type".to_owned()),
    ];
    let column_fields = r
        .columns
        .iter()
        .map(|(c, p)| (Field::Column(c.clone()), Some(p), format!("columns.{c}")));
    for (field, pattern, path) in fields.into_iter().chain(column_fields) {
        let Some(pattern) = pattern else { continue };
        match Pattern::new(pattern.get_ref()) {
            Ok(p) => when.push(Condition { field, pattern: p }),
            Err(err) => problems.at(pattern.span(), key(&path), err),
        }
    }
    Route {
        name: r.name.clone().unwrap_or_else(|| format!("routes[{i}]")),
        when,
        action: action(r, spanned.span(), &key, problems),
    }
}

fn action(
    r: &RouteFile,
    span: std::ops::Range<usize>,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems<'_>,
) -> Action {
    match r.action.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("publish", _)) => {
            let detail_type = r
                .detail_type
                .as_ref()
                .and_then(|t| match Template::parse(t.get_ref()) {
                    Ok(t) => Some(t),
                    Err(err) => {
                        problems.at(t.span(), key("detail_type"), err);
                        None
                    }
                });
            for column in &r.metadata_columns {
                if RESERVED_METADATA.contains(&column.as_str()) {
                    let message = format!(
                        "`{column}` is a metadata field of every event: a column cannot take its place"
                    );
                    problems.at(span.clone(), key("metadata_columns"), message);
                }
            }
            let destination = (r.event_bus.is_some() || r.source.is_some()).then(|| {
                Arc::new(Destination {
                    bus: r.event_bus.clone(),
                    source: r.source.clone(),
                })
            });
            Action::Publish(Publish {
                destination,
                detail_type,
                metadata_columns: r.metadata_columns.clone(),
            })
        }
        Some((kind @ ("skip" | "park"), a_span)) => {
            let publishing = r.event_bus.is_some()
                || r.source.is_some()
                || r.detail_type.is_some()
                || !r.metadata_columns.is_empty();
            if publishing {
                let message = format!(
                    "a route that does `{kind}` publishes nothing: drop its event_bus, source, detail_type and metadata_columns"
                );
                problems.at(a_span, key("action"), message);
            }
            if kind == "skip" {
                Action::Skip
            } else {
                Action::Park
            }
        }
        Some((other, a_span)) => {
            problems.at(
                a_span,
                key("action"),
                format!("`{other}`: expected publish, skip or park"),
            );
            Action::Skip
        }
    }
}

/// The problems of a configuration file's `[routing]`, as the file's other problems are told.
pub fn check_file(file: &eventing::config_file::ConfigFile) -> Vec<eventing::config_file::Problem> {
    let default: TableName = TableName {
        schema: "public".into(),
        name: "outbox".into(),
    };
    match from_file(Some(&file.text), &default) {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .into_iter()
            .map(|p| eventing::config_file::Problem {
                file: file.path.clone(),
                line: p.line,
                key: Some(p.key),
                message: p.message,
            })
            .collect(),
    }
}

fn columns(file: &ColumnsFile) -> Columns {
    let d = Columns::default();
    let pick = |v: &Option<String>, default: String| v.clone().unwrap_or(default);
    Columns {
        id: pick(&file.id, d.id),
        aggregate_type: pick(&file.aggregate_type, d.aggregate_type),
        aggregate_id: pick(&file.aggregate_id, d.aggregate_id),
        event_type: pick(&file.event_type, d.event_type),
        payload: pick(&file.payload, d.payload),
        version: pick(&file.version, d.version),
        occurred_at: pick(&file.occurred_at, d.occurred_at),
        trace: pick(&file.trace, d.trace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> TableName {
        "public.outbox".parse().unwrap()
    }

    #[test]
    fn routes_tables_and_columns_are_read_in_order() {
        let text = r#"
stream = "x"
[routing]
unmatched = "park"
[[routing.tables]]
table = "sales.events"
columns = { id = "event_id", event_type = "kind" }
[[routing.routes]]
name = "customers"
aggregate_type = "Customer*"
event_bus = "arn:aws:events:eu-west-1:111122223333:event-bus/customers"
source = "legacy.customers"
detail_type = "{aggregatetype}.{kind}"
metadata_columns = ["tenant_id"]
[[routing.routes]]
event_type = "Internal*"
action = "skip"
"#;
        let routing = from_file(Some(text), &outbox()).unwrap();
        assert_eq!(routing.unmatched, Unmatched::Park);
        assert_eq!(routing.tables.len(), 1);
        assert_eq!(routing.tables[0].columns.id, "event_id");
        assert_eq!(routing.tables[0].columns.event_type, "kind");
        assert_eq!(routing.tables[0].columns.payload, "payload");
        assert_eq!(routing.routes.len(), 2);
        assert_eq!(routing.routes[1].name, "routes[1]");
        assert!(matches!(routing.routes[1].action, Action::Skip));
        let Action::Publish(p) = &routing.routes[0].action else {
            panic!("not publish")
        };
        assert_eq!(p.metadata_columns, vec!["tenant_id".to_owned()]);
        assert_eq!(
            p.destination.as_deref().and_then(|d| d.source.as_deref()),
            Some("legacy.customers")
        );
    }

    #[test]
    fn no_routing_table_is_todays_single_outbox() {
        let routing = from_file(Some("stream = \"x\"\n"), &outbox()).unwrap();
        assert!(routing.routes.is_empty());
        assert_eq!(routing.tables[0].table, outbox());
        assert_eq!(routing.unmatched, Unmatched::Default);
    }

    #[test]
    fn every_problem_names_its_line_and_key() {
        let text = "[routing]\nunmatched = \"drop\"\n[[routing.routes]]\nevent_type = \"[bad\"\ndetail_type = \"{type\"\n[[routing.routes]]\naction = \"skip\"\nevent_bus = \"b\"\n";
        let problems = from_file(Some(text), &outbox()).unwrap_err();
        let got: Vec<_> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(2), "routing.unmatched"),
                (Some(4), "routing.routes[0].event_type"),
                (Some(5), "routing.routes[0].detail_type"),
                (Some(7), "routing.routes[1].action"),
            ]
        );
        let unknown = from_file(Some("[routing]\nroutez = []\n"), &outbox()).unwrap_err();
        assert_eq!(unknown[0].line, Some(2), "{unknown:?}");
        assert!(unknown[0].message.contains("routez"), "{unknown:?}");
    }
}
