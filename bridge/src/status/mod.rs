//! `bridge status`: how far behind the bridge is and whether anything needs attention — the
//! slot, the publication, the stream, the relay's checkpoints and leases, the DLQ — gathered
//! from the systems themselves, not from a running bridge. `sources` asks each system,
//! `judge` turns the facts into attention lines, `render` writes them for a human.

mod judge;
mod render;
mod sources;

use std::collections::HashMap;

use aws_sdk_kinesis::error::ProvideErrorMetadata;
use serde::Serialize;

use crate::capture::standby_rule::StandbyRule;
use crate::replication::PgTarget;
use judge::judge;
pub use render::render;
use sources::{checkpoints, dlq_depth, postgres_status};

#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub target: Option<PgTarget>,
    pub slot: String,
    pub publication: String,
    pub stream: String,
    pub checkpoint_table: String,
    pub dead_letter_queue: String,
    /// Retained WAL above this many bytes needs attention.
    pub retained_wal_threshold: i64,
    /// An unpublished record older than this needs attention (None: half the stream's retention).
    pub unpublished_age_threshold: Option<std::time::Duration>,
    /// Capture's `--synchronous-standby`, judged against the server's standbys.
    pub synchronous_standby: Option<StandbyRule>,
}

/// Whether `--synchronous-standby` lets capture publish, judged as capture judges it.
#[derive(Debug, Serialize)]
pub struct StandbyStatus {
    pub rule: String,
    /// This server's `cluster_name` (left out of the rule), if it has one.
    pub this_server: Option<String>,
    /// The connected standbys (`application_name`) and how far each has flushed.
    pub connected: Vec<(String, String)>,
    /// Why publishing is held, naming the standbys it waits for; `None` while it flows.
    pub held: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct SlotStatus {
    pub exists: bool,
    pub active: bool,
    pub confirmed_flush_lsn: Option<String>,
    pub retained_wal_bytes: Option<i64>,
    pub unacknowledged_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// Why the slot was invalidated (17+), if it was.
    pub invalidation_reason: Option<String>,
    /// A failover slot (17+): a standby with `sync_replication_slots` keeps a copy.
    pub failover: bool,
    /// The primary's `synchronized_standby_slots` (17+): the physical slots of standbys that
    /// must have received WAL before a failover slot's reader gets it; empty when none.
    pub synchronized_standby_slots: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShardStatus {
    pub shard_id: String,
    pub owner: Option<String>,
    pub lease_expires_in_ms: Option<i64>,
    pub checkpoint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeliveredStatus {
    pub lsn: String,
    pub committed_at: String,
    pub system_identifier: String,
    pub timeline: u32,
}

#[derive(Debug, Serialize)]
pub struct ResyncStatus {
    pub running: bool,
    pub started_at: String,
    /// Outbox rows whose occurred_at is at or after this were re-published.
    pub window_from: String,
    pub rows: u64,
    pub lsn: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct BackfillStatus {
    pub id: String,
    pub state: String,
    pub rows: u64,
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub slot: Option<SlotStatus>,
    pub publication_tables: Option<Vec<String>>,
    pub stream_status: Option<String>,
    pub open_shards: Option<i32>,
    /// How long the stream keeps a record, read or not.
    pub retention_hours: Option<i32>,
    pub shards: Vec<ShardStatus>,
    /// Per shard with one, the oldest record the relay has not published.
    pub oldest_unpublished: Vec<crate::unpublished::Unpublished>,
    pub dead_letters: Option<i64>,
    /// How far delivery got, as capture last recorded it (for outbox recovery).
    pub delivered: Option<DeliveredStatus>,
    /// The last outbox resync after a lost slot, if there was one.
    pub last_resync: Option<ResyncStatus>,
    /// The last `bridge backfill`, if there was one.
    pub backfill: Option<BackfillStatus>,
    /// With `--synchronous-standby`: whether the standbys let capture publish.
    pub synchronous_standby: Option<StandbyStatus>,
    /// What needs attention, one sentence each; empty when all is well.
    pub attention: Vec<String>,
}

/// Gathers the status; a system that cannot be asked becomes an attention line, not an error.
pub async fn gather(aws: &aws_config::SdkConfig, cfg: &StatusConfig) -> Status {
    let mut status = Status::default();
    if let Some(target) = &cfg.target {
        match postgres_status(target, cfg).await {
            Ok((slot, tables, standby)) => {
                status.slot = Some(slot);
                status.publication_tables = Some(tables);
                status.synchronous_standby = standby;
            }
            Err(err) => status.attention.push(format!("cannot query Postgres: {err}")),
        }
    } else {
        status
            .attention
            .push("no --database-url: slot and publication not checked".into());
    }
    let kinesis = aws_sdk_kinesis::Client::new(aws);
    match kinesis
        .describe_stream_summary()
        .stream_name(&cfg.stream)
        .send()
        .await
    {
        Ok(out) => {
            if let Some(d) = out.stream_description_summary() {
                status.stream_status = Some(d.stream_status().as_str().to_owned());
                status.open_shards = Some(d.open_shard_count());
                status.retention_hours = Some(d.retention_period_hours());
            }
        }
        Err(err) => status.attention.push(format!(
            "kinesis stream `{}`: {}",
            cfg.stream,
            err.code().unwrap_or("unreachable")
        )),
    }
    let log = crate::capture::delivery::DeliveryLog::new(kinesis.clone(), &cfg.stream, &cfg.slot);
    if let Ok(Some(d)) = log.read().await {
        status.delivered = Some(DeliveredStatus {
            lsn: d.lsn.to_string(),
            committed_at: d.committed_at().to_rfc3339(),
            system_identifier: d.identity.system.clone(),
            timeline: d.identity.timeline,
        });
    }
    if let Ok(Some(r)) = log.read_resync().await {
        let at = |micros: i64| {
            chrono::DateTime::from_timestamp_micros(micros)
                .unwrap_or_default()
                .to_rfc3339()
        };
        status.last_resync = Some(ResyncStatus {
            running: r.running,
            started_at: at(r.started),
            window_from: at(r.window_from),
            rows: r.rows,
            lsn: r.lsn.map(|l| l.to_string()),
            reason: r.reason,
        });
    }
    let jobs = crate::capture::backfill::BackfillLog::new(kinesis.clone(), &cfg.stream, &cfg.slot);
    match jobs.read().await {
        Ok(Some(job)) => {
            status.backfill = Some(BackfillStatus {
                id: job.id.clone(),
                state: format!("{:?}", job.state).to_lowercase(),
                rows: job.rows,
                reason: job.reason.clone(),
            });
        }
        Ok(None) => {}
        Err(err) => status.attention.push(format!("backfill record: {err}")),
    }
    match checkpoints(aws, cfg).await {
        Ok(shards) => status.shards = shards,
        Err(err) => status.attention.push(format!(
            "checkpoint table `{}`: {}",
            cfg.checkpoint_table,
            code(&err)
        )),
    }
    let published: HashMap<String, Option<String>> = status
        .shards
        .iter()
        .map(|s| (s.shard_id.clone(), s.checkpoint.clone()))
        .collect();
    match crate::unpublished::oldest(&kinesis, &cfg.stream, &published).await {
        Ok(found) => status.oldest_unpublished = found,
        Err(err) => status.attention.push(format!(
            "cannot read kinesis stream `{}` after the checkpoints: {}",
            cfg.stream,
            code(&err)
        )),
    }
    let sqs = aws_sdk_sqs::Client::new(aws);
    match dlq_depth(&sqs, &cfg.dead_letter_queue).await {
        Ok(n) => status.dead_letters = Some(n),
        Err(err) => status.attention.push(format!(
            "dead-letter queue `{}`: {}",
            cfg.dead_letter_queue,
            code(&err)
        )),
    }
    judge(&mut status, cfg);
    status
}

/// What an AWS error says in a status line: its code, or that the service did not answer.
fn code(err: &dyn ProvideErrorMetadata) -> &str {
    err.code().unwrap_or("unreachable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StatusConfig {
        StatusConfig {
            target: None,
            slot: "s".into(),
            publication: "p".into(),
            stream: "k".into(),
            checkpoint_table: "c".into(),
            dead_letter_queue: "d".into(),
            retained_wal_threshold: 1 << 30,
            unpublished_age_threshold: None,
            synchronous_standby: None,
        }
    }

    fn leased(id: &str, expires_in_ms: i64) -> ShardStatus {
        ShardStatus {
            shard_id: id.into(),
            owner: Some("w".into()),
            lease_expires_in_ms: Some(expires_in_ms),
            checkpoint: None,
        }
    }

    #[test]
    fn an_open_shard_nobody_ever_leased_needs_attention() {
        let mut status = Status {
            stream_status: Some("ACTIVE".into()),
            open_shards: Some(4),
            shards: vec![leased("a", 1000), leased("b", 1000)],
            ..Status::default()
        };
        judge(&mut status, &cfg());
        assert_eq!(
            status.attention,
            ["2 shard(s) without a live lease: is a relay running?"]
        );

        let mut status = Status {
            stream_status: Some("ACTIVE".into()),
            open_shards: Some(2),
            shards: vec![leased("a", 1000), leased("b", -5)],
            ..Status::default()
        };
        judge(&mut status, &cfg());
        assert_eq!(
            status.attention,
            ["1 shard(s) without a live lease: is a relay running?"]
        );

        let mut status = Status {
            stream_status: Some("ACTIVE".into()),
            open_shards: Some(2),
            shards: vec![leased("a", 1000), leased("b", 1000)],
            ..Status::default()
        };
        judge(&mut status, &cfg());
        assert!(status.attention.is_empty(), "{:?}", status.attention);
    }
}
