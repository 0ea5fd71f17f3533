//! The oldest record the relay has not published yet, per shard — the one loss the pipeline cannot
//! undo by itself: Kinesis trims a record once it is older than the stream's retention (24 h by
//! default), read or not. A relay stopped or stuck for that long loses what it had not
//! published (the outbox still holds it, for as long as `bridge outbox prune` keeps it), so
//! `bridge status` measures how close each shard is, from the stream itself rather than from a
//! relay that may not be running.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use serde::Serialize;

use crate::relay::lease::SHARD_END;

/// A shard's oldest record after its checkpoint.
#[derive(Debug, Serialize)]
pub struct Unpublished {
    pub shard_id: String,
    /// How long ago Kinesis took it (its approximate arrival time).
    pub age_ms: i64,
}

/// Reads at most this many pages per shard looking for the first record: GetRecords may answer
/// empty pages before data further on; each read counts against the shard's 5 reads a second.
const MAX_READS: usize = 5;

/// The oldest unpublished record of every shard that has one. `checkpoints` maps a shard to what
/// the relay published up to (`SHARD_END` once a closed shard is drained); a shard without one
/// is read from its trim horizon, as the relay would.
pub async fn oldest(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    checkpoints: &HashMap<String, Option<String>>,
) -> Result<Vec<Unpublished>, aws_sdk_kinesis::Error> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match token.take() {
            Some(t) => kinesis.list_shards().next_token(t),
            None => kinesis.list_shards().stream_name(stream),
        };
        let out = request.send().await?;
        shards.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut found = Vec::new();
    for shard in shards {
        let checkpoint = checkpoints.get(&shard).cloned().flatten();
        if checkpoint.as_deref() == Some(SHARD_END) {
            continue;
        }
        let request = kinesis.get_shard_iterator().stream_name(stream).shard_id(&shard);
        let request = match &checkpoint {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let mut iterator = request.send().await?.shard_iterator().map(str::to_owned);
        for _ in 0..MAX_READS {
            let Some(it) = iterator.take() else { break };
            let page = kinesis.get_records().shard_iterator(it).limit(1).send().await?;
            if let Some(record) = page.records().first() {
                if let Some(arrived) = record.approximate_arrival_timestamp() {
                    let arrived = arrived.to_millis().unwrap_or(now);
                    found.push(Unpublished {
                        shard_id: shard.clone(),
                        age_ms: (now - arrived).max(0),
                    });
                }
                break;
            }
            if page.millis_behind_latest().unwrap_or(0) == 0 {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    Ok(found)
}

/// Above this age a record is close enough to being trimmed to need attention: half the
/// retention unless the operator chose a threshold.
pub fn threshold(chosen: Option<Duration>, retention_hours: Option<i32>) -> Duration {
    chosen.unwrap_or_else(|| {
        let hours = u64::try_from(retention_hours.unwrap_or(24)).unwrap_or(24);
        Duration::from_secs(hours * 3600 / 2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_retention_unless_chosen() {
        assert_eq!(threshold(None, Some(24)), Duration::from_secs(12 * 3600));
        assert_eq!(threshold(None, Some(168)), Duration::from_secs(84 * 3600));
        assert_eq!(threshold(None, None), Duration::from_secs(12 * 3600));
        assert_eq!(
            threshold(Some(Duration::from_secs(5)), Some(24)),
            Duration::from_secs(5)
        );
    }
}
