//! Asking each system: Postgres (slot, publication, standbys), DynamoDB (checkpoints and
//! leases), SQS (the dead-letter queue's depth).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{ShardStatus, SlotStatus, StandbyStatus, StatusConfig};
use crate::capture::standby::{read_rows, STANDBYS_QUERY};
use crate::capture::standby_rule::Verdict;
use crate::replication::slot::query_client;
use crate::replication::PgTarget;

pub(super) async fn postgres_status(
    target: &PgTarget,
    cfg: &StatusConfig,
) -> Result<(SlotStatus, Vec<String>, Option<StandbyStatus>), Box<dyn std::error::Error + Send + Sync>> {
    let client = query_client(target).await?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let newer = if version >= 170_000 {
        "invalidation_reason, failover, current_setting('synchronized_standby_slots')"
    } else {
        "NULL::text, false, NULL::text"
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT active, confirmed_flush_lsn::text, (pg_current_wal_lsn() - restart_lsn)::bigint,
                        (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, wal_status, {newer}
                 FROM pg_replication_slots WHERE slot_name = $1"
            ),
            &[&cfg.slot],
        )
        .await?;
    let slot = match row {
        None => SlotStatus::default(),
        Some(r) => SlotStatus {
            exists: true,
            active: r.get(0),
            confirmed_flush_lsn: r.get(1),
            retained_wal_bytes: r.get(2),
            unacknowledged_bytes: r.get(3),
            wal_status: r.get(4),
            invalidation_reason: r.get(5),
            failover: r.get(6),
            synchronized_standby_slots: r.get(7),
        },
    };
    let tables = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
            &[&cfg.publication],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let standby = match &cfg.synchronous_standby {
        None => None,
        Some(rule) => {
            let (this, connected) = read_rows(&client.query(STANDBYS_QUERY, &[]).await?);
            let held = match rule.judge(this.as_deref(), &connected) {
                Verdict::Held(why) => Some(why),
                Verdict::Release(_) => None,
            };
            Some(StandbyStatus {
                rule: rule.to_string(),
                this_server: this.filter(|t| !t.is_empty()),
                connected: connected
                    .iter()
                    .map(|(n, l)| (n.clone(), l.to_string()))
                    .collect(),
                held,
            })
        }
    };
    Ok((slot, tables, standby))
}

pub(super) async fn checkpoints(
    aws: &aws_config::SdkConfig,
    cfg: &StatusConfig,
) -> Result<Vec<ShardStatus>, aws_sdk_dynamodb::Error> {
    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let now = chrono::Utc::now().timestamp_millis();
    let mut shards = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let out = dynamo
            .scan()
            .table_name(&cfg.checkpoint_table)
            .filter_expression("lease_stream = :s AND lease_kind = :k")
            .expression_attribute_values(":s", AttributeValue::S(cfg.stream.clone()))
            .expression_attribute_values(":k", AttributeValue::S("shard".into()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        for item in out.items() {
            let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            let expires = item
                .get("lease_expires_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok());
            shards.push(ShardStatus {
                shard_id: s("lease_shard_id").unwrap_or_default(),
                owner: s("lease_owner"),
                lease_expires_in_ms: expires.map(|e| e - now),
                checkpoint: s("lease_checkpoint"),
            });
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    Ok(shards)
}

pub(super) async fn dlq_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<i64, aws_sdk_sqs::Error> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?
        .queue_url
        .unwrap_or_default();
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(aws_sdk_sqs::Error::from)?;
    let n = |a: A| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible))
}
