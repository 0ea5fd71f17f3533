//! What the run checks after quiescence: order in Kinesis, the projection against the
//! monolith (phantoms excused), and queue depths.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use harness::process::Proc;
use harness::shipping::{Consistency, SUBSCRIBED_TYPES};
use harness::stack::{outbox_id, Stack};

/// Aggregates whose records, first copies of events in `ids` only, are not in commit order in
/// their shard. A phantom has no place in that order: its commit is on a timeline the failover
/// abandoned, whose positions the new primary reuses.
pub(crate) fn aggregates_out_of_order(
    records: &[harness::kinesis::StreamRecord],
    ids: &HashSet<String>,
) -> usize {
    let mut seen = HashSet::new();
    let mut last: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    let mut broken = HashSet::new();
    for record in records {
        let Some(id) = outbox_id(record) else { continue };
        if !ids.contains(id) || !seen.insert(id) {
            continue;
        }
        let m = &record.json["metadata"];
        let position = (
            harness::lsn::parse(m["commit-lsn"].as_str().unwrap_or_default()).unwrap_or_default(),
            m["transaction-record-id"].as_u64().unwrap_or_default(),
        );
        if last
            .insert(&record.partition_key, position)
            .is_some_and(|before| before > position)
        {
            broken.insert(record.partition_key.clone());
        }
    }
    broken.len()
}

/// Waits until the shipping service holds the monolith's state ([`harness::shipping::wait_consistent_but`]),
/// leaving out the aggregates in `excused` (touched by a phantom: the projection applied an
/// event the monolith no longer has). Returns the comparison and how many differences it left
/// out.
pub(crate) async fn wait_consistent(
    stack: &Stack,
    procs: &[&Proc],
    timeout: Duration,
    parked: usize,
    excused: &HashSet<String>,
) -> anyhow::Result<(Consistency, usize)> {
    if excused.is_empty() {
        let consistency = harness::shipping::wait_consistent_but(stack, procs, timeout, parked).await?;
        return Ok((consistency, 0));
    }
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.moto.sdk_config().await);
    let pg = stack.pg.client().await?;
    let types: Vec<String> = SUBSCRIBED_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let routed: i64 = pg
        .query_one("SELECT count(*) FROM outbox WHERE type = ANY($1)", &[&types])
        .await?
        .get(0);
    let expected = routed - parked as i64;
    let last = std::sync::Mutex::new(String::new());
    let outcome = harness::wait::until("the shipping service to converge", timeout, || {
        let (dynamo, pg, last) = (&dynamo, &pg, &last);
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            for p in procs {
                p.ensure_running()?;
            }
            // Phantoms are in the inbox too: the count only says when to compare. A failed
            // read of the emulator is read again next time.
            let Ok(inbox) = harness::shipping::count(dynamo, "shipping-inbox").await else {
                return Ok(None);
            };
            if inbox < expected {
                if let Ok(mut l) = last.lock() {
                    *l = format!("inbox {inbox}/{expected}");
                }
                return Ok(None);
            }
            let Ok(report) =
                harness::shipping::check(pg, dynamo, "shipping-customers", "shipping-shipments").await
            else {
                return Ok(None);
            };
            let (report, left_out) = excuse(report, excused);
            if let Ok(mut l) = last.lock() {
                *l = format!("{report}; {left_out} left out; inbox {inbox}/{expected}");
            }
            Ok(report.exact().then_some((report, left_out)))
        }
    })
    .await;
    outcome.map_err(|e| {
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        anyhow::anyhow!("{e}\nlast: {last}")
    })
}

/// The comparison without the differences on aggregates in `excused`, and how many those were.
pub(crate) fn excuse(mut report: Consistency, excused: &HashSet<String>) -> (Consistency, usize) {
    let mut left_out = 0;
    for ids in [
        &mut report.customer_mismatches,
        &mut report.unknown_customers,
        &mut report.missing_shipments,
        &mut report.extra_shipments,
    ] {
        let before = ids.len();
        ids.retain(|id| !excused.contains(id));
        left_out += before - ids.len();
    }
    (report, left_out)
}

/// Committed outbox rows; an error while Postgres restarts (the caller tries again later).
pub(crate) async fn outbox_rows(url: &str) -> anyhow::Result<u64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let rows: i64 = client.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    drop(client);
    let _ = connection.await;
    Ok(rows as u64)
}

/// Messages waiting in each dead-letter queue.
pub(crate) async fn dlq_depths(sdk: &aws_config::SdkConfig) -> anyhow::Result<BTreeMap<String, u64>> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut out = BTreeMap::new();
    for queue in ["bridge-dlq", "shipping-events-dlq"] {
        out.insert(queue.to_owned(), queue_depth(&sqs, queue).await.unwrap_or(0));
    }
    Ok(out)
}

/// Messages waiting in `queue` (SQS's approximate count).
pub(crate) async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> anyhow::Result<u64> {
    let url = harness::dlq::queue_url(sqs, queue).await?;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    Ok(attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn excuse_leaves_out_only_the_aggregates_a_phantom_touched() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let report = Consistency {
            customers: 3,
            customer_mismatches: ids(&["c1", "c2"]),
            unknown_customers: ids(&["c9"]),
            approved_orders: 2,
            missing_shipments: ids(&["o1"]),
            extra_shipments: ids(&["o2", "o3"]),
        };
        let excused: HashSet<String> = ["c1", "c9", "o3"].iter().map(|s| (*s).to_owned()).collect();
        let (report, left_out) = excuse(report, &excused);
        assert_eq!(left_out, 3);
        assert_eq!(report.customer_mismatches, ids(&["c2"]));
        assert!(report.unknown_customers.is_empty());
        assert_eq!(report.missing_shipments, ids(&["o1"]));
        assert_eq!(report.extra_shipments, ids(&["o2"]));
        assert!(!report.exact());
    }
}
