//! Reads a whole Kinesis stream back, every shard from the start, with the AWS SDK.

use aws_sdk_kinesis::types::ShardIteratorType;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard: String,
    pub sequence: String,
    pub partition_key: String,
    pub json: Value,
}

/// Every record currently in `stream`, shard by shard, each shard in its stored order.
pub async fn read_all(client: &aws_sdk_kinesis::Client, stream: &str) -> anyhow::Result<Vec<StreamRecord>> {
    let shards = client.list_shards().stream_name(stream).send().await?;
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await?;
            for r in page.records() {
                out.push(StreamRecord {
                    shard: shard.shard_id().to_owned(),
                    sequence: r.sequence_number().to_owned(),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    json: serde_json::from_slice(r.data().as_ref())?,
                });
            }
            let caught_up = page.millis_behind_latest().unwrap_or(0) == 0 && page.records().is_empty();
            iterator = if caught_up {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok(out)
}

/// Changes `stream`'s open shard count (UpdateShardCount, uniform scaling): splits or merges.
pub async fn reshard(client: &aws_sdk_kinesis::Client, stream: &str, shards: i32) -> anyhow::Result<()> {
    client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(shards)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await?;
    Ok(())
}
