//! CloudWatch metrics in the embedded metric format (EMF): once a minute, one JSON line on
//! stdout that CloudWatch Logs turns into metrics (namespace `OutboxBridge`, dimension
//! `Service`), for the alarms the templates set on what only the processes measure
//! (replication lag, WAL retained, events parked).
//!
//! Why EMF rather than OTLP metrics: the awslogs driver the tasks already use carries it, so
//! there is no collector to run, no endpoint to reach and no permission to grant; the same line
//! works unchanged from a Lambda function. The figures come from the process's own `/metrics`
//! text, so the two can never disagree.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// Whether the processes write EMF (`--cloudwatch-metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudWatchMetrics {
    /// Nothing (the default: locally, /metrics is what is scraped).
    #[default]
    Off,
    /// One EMF line on stdout a minute.
    Emf,
}

/// How a metric family of the exposition becomes one CloudWatch figure.
#[derive(Clone, Copy, Debug)]
pub enum Take {
    /// The sum over its series (a gauge such as retained WAL).
    Sum,
    /// The largest of its series (the shard furthest behind).
    Max,
    /// How much the sum of a counter grew since the last line (events parked this minute).
    Increase,
}

/// One figure: the exposition's family (`bridge_slot_lag_bytes`, a counter's `…_total`), its
/// CloudWatch name and unit, and how its series are combined.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub family: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub take: Take,
}

pub const NAMESPACE: &str = "OutboxBridge";

/// Writes the figures of `render()` once a minute until `shutdown`.
pub fn spawn<F>(service: String, figures: Vec<Figure>, render: F, shutdown: CancellationToken)
where
    F: Fn() -> String + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = chrono::Utc::now().timestamp_millis();
            if let Some(line) = line(&service, &figures, &render(), &mut last, now) {
                println!("{line}");
            }
        }
    });
}

/// The EMF line for `exposition` (`None` when no figure is there), remembering counters' sums
/// in `last` for the next line's increases.
pub fn line(
    service: &str,
    figures: &[Figure],
    exposition: &str,
    last: &mut HashMap<&'static str, f64>,
    timestamp_ms: i64,
) -> Option<String> {
    let mut doc = Map::new();
    let mut declared = Vec::new();
    for figure in figures {
        let values = series(exposition, figure.family);
        if values.is_empty() {
            continue;
        }
        let value = match figure.take {
            Take::Sum => values.iter().sum(),
            Take::Max => values.iter().copied().fold(f64::MIN, f64::max),
            Take::Increase => {
                let sum: f64 = values.iter().sum();
                let before = last.insert(figure.family, sum).unwrap_or(sum);
                (sum - before).max(0.0)
            }
        };
        doc.insert(figure.name.to_owned(), json!(value));
        declared.push(json!({"Name": figure.name, "Unit": figure.unit}));
    }
    if declared.is_empty() {
        return None;
    }
    doc.insert("Service".to_owned(), json!(service));
    doc.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service"]],
                "Metrics": declared,
            }],
        }),
    );
    Some(Value::Object(doc).to_string())
}

/// The values of every series of `family` in an OpenMetrics text.
fn series(exposition: &str, family: &str) -> Vec<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIGURES: [Figure; 3] = [
        Figure {
            family: "bridge_slot_lag_bytes",
            name: "ReplicationLagBytes",
            unit: "Bytes",
            take: Take::Sum,
        },
        Figure {
            family: "bridge_relay_behind_latest_milliseconds",
            name: "RelayBehindLatest",
            unit: "Milliseconds",
            take: Take::Max,
        },
        Figure {
            family: "bridge_dead_letters_total",
            name: "EventsParked",
            unit: "Count",
            take: Take::Increase,
        },
    ];

    #[test]
    fn a_line_carries_each_figure_and_counters_as_increases() {
        let text = |parked_a: u32, parked_b: u32| {
            format!(
                "# TYPE bridge_slot_lag_bytes gauge\nbridge_slot_lag_bytes 4096\n\
                 bridge_slot_lag_bytes_other 9\n\
                 bridge_relay_behind_latest_milliseconds{{shard=\"a\"}} 10\n\
                 bridge_relay_behind_latest_milliseconds{{shard=\"b\"}} 250\n\
                 bridge_dead_letters_total{{kind=\"malformed\"}} {parked_a}\n\
                 bridge_dead_letters_total{{kind=\"refused\"}} {parked_b}\n# EOF\n"
            )
        };
        let mut last = HashMap::new();
        let first = line("relay", &FIGURES, &text(2, 1), &mut last, 1_000).expect("a line");
        let doc: Value = serde_json::from_str(&first).expect("json");
        assert_eq!(doc["ReplicationLagBytes"], 4096.0);
        assert_eq!(doc["RelayBehindLatest"], 250.0);
        assert_eq!(doc["EventsParked"], 0.0, "nothing counted before the first line");
        assert_eq!(doc["Service"], "relay");
        assert_eq!(doc["_aws"]["Timestamp"], 1_000);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        let second = line("relay", &FIGURES, &text(5, 1), &mut last, 2_000).expect("a line");
        let doc: Value = serde_json::from_str(&second).expect("json");
        assert_eq!(doc["EventsParked"], 3.0);
        assert!(line("relay", &FIGURES, "# EOF\n", &mut last, 3_000).is_none());
    }
}
