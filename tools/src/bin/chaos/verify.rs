//! What the run checks after quiescence: order in Kinesis (the projection against the monolith,
//! phantoms excused, is `harness::shipping::wait_consistent_excusing`), and queue depths.

use std::collections::{BTreeMap, HashSet};

use harness::stack::outbox_id;

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
