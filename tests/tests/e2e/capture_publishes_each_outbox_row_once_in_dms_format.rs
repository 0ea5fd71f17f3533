//! N orders through the HTTP API → one DMS-format record per outbox row, partitioned by
//! aggregate, in commit order per aggregate; entity tables stay out of the default publication.
//! The database speaks a legacy DateStyle in a far time zone: `occurred_at` is still RFC 3339 UTC.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use harness::stack::Stack;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_through_the_api_reach_kinesis_once_each_in_dms_format_and_aggregate_order(
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack
        .pg
        .client()
        .await?
        .batch_execute(
            "DO $$ BEGIN
               EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'America/Sao_Paulo');
               EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
             END $$",
        )
        .await?;
    let mut capture = stack.spawn_capture(&[]).await?;
    let (_sim, base) = stack.spawn_legacy_sim().await?;
    let http = reqwest::Client::new();

    let mut customers = Vec::new();
    for i in 0..5 {
        let r: Value = http
            .post(format!("{base}/customers"))
            .json(&json!({"name": format!("customer {i}"), "credit_limit": 500}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        customers.push(r["customer_id"].as_str().unwrap_or_default().to_owned());
    }
    for i in 0..40 {
        let r: Value = http
            .post(format!("{base}/orders"))
            .json(&json!({"customer_id": customers[i % customers.len()], "order_total": 20 + i * 3}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if r["state"] == "APPROVED" && i % 4 == 0 {
            let order = r["order_id"].as_str().unwrap_or_default();
            http.post(format!("{base}/orders/{order}/cancel"))
                .send()
                .await?
                .error_for_status()?;
        }
    }

    let ids: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    assert!(ids.len() >= 45, "the API wrote {} outbox rows", ids.len());
    let records = stack
        .wait_all_in_kinesis(&capture, Duration::from_secs(60))
        .await?;
    assert_eq!(
        capture.terminate(Duration::from_secs(30)).await?,
        Some(0),
        "{}",
        capture.output()
    );

    let occurred: HashMap<String, String> = stack
        .pg
        .client()
        .await?
        .query(
            "SELECT id::text, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM outbox",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for r in &records {
        let id = r.json["data"]["id"].as_str().unwrap_or_default();
        assert_eq!(
            r.json["data"]["occurred_at"].as_str(),
            occurred.get(id).map(String::as_str),
            "occurred_at is RFC 3339 UTC whatever the server's DateStyle and TimeZone"
        );
    }

    // Exactly one record per outbox row, and nothing from other tables.
    assert_eq!(records.len(), ids.len(), "no duplicates without faults");
    let mut per_aggregate: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    let mut positions = HashSet::new();
    for r in &records {
        let (data, m) = (&r.json["data"], &r.json["metadata"]);
        assert_eq!(m["table-name"], "outbox");
        assert_eq!(m["schema-name"], "public");
        assert_eq!(m["record-type"], "data");
        assert_eq!(m["operation"], "insert");
        assert_eq!(m["partition-key-type"], "attribute-name");
        for field in [
            "timestamp",
            "commit-timestamp",
            "stream-position",
            "commit-lsn",
            "lsn",
        ] {
            assert!(m[field].is_string(), "metadata.{field} missing in {}", r.json);
        }
        assert!(m["transaction-id"].is_u64() && m["transaction-record-id"].is_u64());
        assert!(positions.insert((
            m["commit-lsn"].to_string(),
            m["transaction-record-id"].to_string()
        )));
        assert!(data["payload"].is_object(), "jsonb arrives as JSON, not a string");
        assert!(data["aggregate_version"].is_i64());
        let aggregate = data["aggregateid"].as_str().unwrap_or_default();
        assert_eq!(r.partition_key, aggregate, "partitioned by aggregate");
        per_aggregate
            .entry(aggregate.to_owned())
            .or_default()
            .push((r.shard.clone(), data["aggregate_version"].as_i64().unwrap_or(-1)));
    }
    // Per aggregate: one shard, and in stored order the versions follow the commits.
    for (aggregate, events) in per_aggregate {
        let shards: HashSet<_> = events.iter().map(|(s, _)| s).collect();
        assert_eq!(shards.len(), 1, "aggregate {aggregate} spread over shards");
        let versions: Vec<i64> = events.iter().map(|(_, v)| *v).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(versions, sorted, "aggregate {aggregate} out of commit order");
    }
    Ok(())
}
