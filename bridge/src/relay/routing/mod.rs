//! Which outbox rows become which events on which bus: Debezium's outbox event router, as
//! configuration (`[routing]` in the configuration file, `routing/file.rs`).
//!
//! Several outbox tables, each with its own column names; routes tried in order on the
//! aggregate type, the event type or any column's value (exact or glob), each publishing to a
//! bus with a `Source` and a `DetailType` of its own and extra columns in the metadata, or
//! skipping (counted, never parked) or parking what it matches. What no route matches follows
//! `unmatched`: the default route (the flags' bus and source, the type as `DetailType`), skip,
//! or park.

mod file;

use std::sync::Arc;

pub use eventing::event::Destination;
pub use file::{check_file, from_file, RoutingProblem};

use crate::table::TableName;

/// An outbox table's column names (Debezium's `table.field.event.*`); defaults are the
/// monolith's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub version: String,
    pub occurred_at: String,
    pub trace: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            aggregate_type: "aggregatetype".into(),
            aggregate_id: "aggregateid".into(),
            event_type: "type".into(),
            payload: "payload".into(),
            version: "aggregate_version".into(),
            occurred_at: "occurred_at".into(),
            trace: "tracingspancontext".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxTable {
    pub table: TableName,
    pub columns: Columns,
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    AggregateType,
    EventType,
    Column(String),
}

/// A value, exactly or by glob (`Customer*`, `Order?laced`, `[AB]*`).
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    Glob(glob::Pattern),
}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        if text.contains(['*', '?', '[']) {
            glob::Pattern::new(text)
                .map(Pattern::Glob)
                .map_err(|e| format!("`{text}` is not a glob: {e}"))
        } else {
            Ok(Pattern::Exact(text.to_owned()))
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == value,
            Pattern::Glob(glob) => glob.matches(value),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Condition {
    pub field: Field,
    pub pattern: Pattern,
}

/// A `DetailType` made of text and `{column}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `{{` without its `}}`"))?;
            let column = after[..close].trim();
            if column.is_empty() {
                return Err(format!("`{text}`: `{{}}` names no column"));
            }
            parts.push(Part::Column(column.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts))
    }

    /// The text with each column's value; a column missing (or null) is an error naming it.
    pub fn render(&self, value_of: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Column(column) => match value_of(column) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(format!(
                            "column `{column}` of the detail type's template is missing or null"
                        ))
                    }
                },
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Debug)]
pub enum Action {
    Publish(Publish),
    /// Dropped: counted in `bridge_relay_records_skipped_total`, never parked.
    Skip,
    /// Parked in the dead-letter queue with the route's name as the reason.
    Park,
}

#[derive(Clone, Debug, Default)]
pub struct Publish {
    /// `None`: the flags' bus and source.
    pub destination: Option<Arc<Destination>>,
    /// `None`: the event type.
    pub detail_type: Option<Template>,
    /// Columns copied into `metadata` under their own names (Debezium's additional placement).
    pub metadata_columns: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Route {
    /// How problems and parked records name it (`routes[2]` when unnamed).
    pub name: String,
    /// All must hold; none: every row.
    pub when: Vec<Condition>,
    pub action: Action,
}

/// What happens to an event no route matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unmatched {
    /// The default route: the flags' bus and source, the type as detail type.
    #[default]
    Default,
    Skip,
    Park,
}

#[derive(Clone, Debug)]
pub struct Routing {
    pub tables: Vec<OutboxTable>,
    pub routes: Vec<Route>,
    pub unmatched: Unmatched,
}

/// The route an event takes.
pub enum Chosen<'a> {
    Route(&'a Route),
    /// No route matched: `unmatched` decides.
    Unmatched(Unmatched),
}

static DEFAULT_PUBLISH: std::sync::LazyLock<Publish> = std::sync::LazyLock::new(Publish::default);

impl Routing {
    /// Today's behaviour: one outbox table with the default column names, no routes.
    pub fn single(table: TableName) -> Self {
        Self {
            tables: vec![OutboxTable {
                table,
                columns: Columns::default(),
            }],
            routes: Vec::new(),
            unmatched: Unmatched::Default,
        }
    }

    /// The outbox table `schema.name`, if it is one.
    pub fn table(&self, schema: &str, name: &str) -> Option<&OutboxTable> {
        self.tables
            .iter()
            .find(|t| t.table.schema == schema && t.table.name == name)
    }

    /// The first route whose conditions all hold; `value_of` reads a field of the row.
    pub fn choose<'v>(&self, value_of: impl Fn(&Field) -> Option<std::borrow::Cow<'v, str>>) -> Chosen<'_> {
        for route in &self.routes {
            let holds = route
                .when
                .iter()
                .all(|c| value_of(&c.field).is_some_and(|v| c.pattern.matches(&v)));
            if holds {
                return Chosen::Route(route);
            }
        }
        Chosen::Unmatched(self.unmatched)
    }

    /// The publish action of the default route.
    pub fn default_publish() -> &'static Publish {
        &DEFAULT_PUBLISH
    }
}

impl std::fmt::Display for Routing {
    /// What `config check` prints: the tables with the columns that differ from the defaults,
    /// the routes in order, and what happens to the rest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = Columns::default();
        for t in &self.tables {
            let c = &t.columns;
            let renamed: Vec<String> = [
                ("id", &c.id, &d.id),
                ("aggregate_type", &c.aggregate_type, &d.aggregate_type),
                ("aggregate_id", &c.aggregate_id, &d.aggregate_id),
                ("event_type", &c.event_type, &d.event_type),
                ("payload", &c.payload, &d.payload),
                ("version", &c.version, &d.version),
                ("occurred_at", &c.occurred_at, &d.occurred_at),
                ("trace", &c.trace, &d.trace),
            ]
            .iter()
            .filter(|(_, got, default)| got != default)
            .map(|(name, got, _)| format!("{name} = {got}"))
            .collect();
            let columns = if renamed.is_empty() {
                "the default column names".to_owned()
            } else {
                renamed.join(", ")
            };
            writeln!(f, "# outbox table {}: {columns}", t.table)?;
        }
        for (i, r) in self.routes.iter().enumerate() {
            let when: Vec<String> = r
                .when
                .iter()
                .map(|c| {
                    let field = match &c.field {
                        Field::AggregateType => "aggregate_type".to_owned(),
                        Field::EventType => "event_type".to_owned(),
                        Field::Column(name) => format!("column {name}"),
                    };
                    let pattern = match &c.pattern {
                        Pattern::Exact(e) => e.clone(),
                        Pattern::Glob(g) => g.as_str().to_owned(),
                    };
                    format!("{field} ~ {pattern}")
                })
                .collect();
            let when = if when.is_empty() {
                "every event".to_owned()
            } else {
                when.join(" and ")
            };
            let action = match &r.action {
                Action::Skip => "skip (counted, not parked)".to_owned(),
                Action::Park => "park".to_owned(),
                Action::Publish(p) => {
                    let bus = p
                        .destination
                        .as_ref()
                        .and_then(|d| d.bus.clone())
                        .unwrap_or_else(|| "the default bus".into());
                    let source = p
                        .destination
                        .as_ref()
                        .and_then(|d| d.source.clone())
                        .unwrap_or_else(|| "the default source".into());
                    let detail = if p.detail_type.is_some() {
                        "its template"
                    } else {
                        "the type"
                    };
                    let extra = if p.metadata_columns.is_empty() {
                        String::new()
                    } else {
                        format!(", metadata + {}", p.metadata_columns.join(", "))
                    };
                    format!("publish to {bus} as {source}, detail type {detail}{extra}")
                }
            };
            writeln!(f, "# route {} `{}`: {when} → {action}", i + 1, r.name)?;
        }
        let rest = match self.unmatched {
            Unmatched::Default => "the default route (the flags' bus and source)",
            Unmatched::Skip => "skipped",
            Unmatched::Park => "parked",
        };
        writeln!(f, "# events no route matches: {rest}")
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn route(name: &str, when: Vec<(Field, &str)>, action: Action) -> Route {
        Route {
            name: name.into(),
            when: when
                .into_iter()
                .map(|(field, p)| Condition {
                    field,
                    pattern: Pattern::new(p).unwrap_or(Pattern::Exact(p.into())),
                })
                .collect(),
            action,
        }
    }

    #[test]
    fn the_first_route_whose_conditions_all_hold_is_taken() {
        let mut routing = Routing::single("public.outbox".parse().unwrap());
        routing.routes = vec![
            route(
                "eu-customers",
                vec![
                    (Field::AggregateType, "Customer"),
                    (Field::Column("region".into()), "eu-*"),
                ],
                Action::Skip,
            ),
            route("customers", vec![(Field::EventType, "Customer*")], Action::Park),
        ];
        let row = |aggregate: &'static str, kind: &'static str, region: Option<&'static str>| {
            move |f: &Field| -> Option<Cow<'static, str>> {
                match f {
                    Field::AggregateType => Some(Cow::Borrowed(aggregate)),
                    Field::EventType => Some(Cow::Borrowed(kind)),
                    Field::Column(c) if c == "region" => region.map(Cow::Borrowed),
                    Field::Column(_) => None,
                }
            }
        };
        let name = |chosen: Chosen<'_>| match chosen {
            Chosen::Route(r) => r.name.clone(),
            Chosen::Unmatched(u) => format!("{u:?}"),
        };
        assert_eq!(
            name(routing.choose(row("Customer", "CustomerCreated", Some("eu-west")))),
            "eu-customers"
        );
        assert_eq!(
            name(routing.choose(row("Customer", "CustomerCreated", Some("us-east")))),
            "customers"
        );
        // A missing column never matches.
        assert_eq!(
            name(routing.choose(row("Customer", "CustomerCreated", None))),
            "customers"
        );
        assert_eq!(name(routing.choose(row("Order", "OrderPlaced", None))), "Default");
    }

    #[test]
    fn a_template_fills_in_columns_and_names_a_missing_one() {
        let t = Template::parse("{aggregatetype}.{type}.v1").unwrap();
        let value = |c: &str| match c {
            "aggregatetype" => Some("Order".to_owned()),
            "type" => Some("OrderPlaced".to_owned()),
            _ => None,
        };
        assert_eq!(t.render(value), Ok("Order.OrderPlaced.v1".to_owned()));
        let missing = Template::parse("{tenant}-{type}").unwrap().render(value);
        assert!(missing.is_err_and(|e| e.contains("`tenant`")));
        for bad in ["{type", "type}", "{}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
