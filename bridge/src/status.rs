//! `bridge status`: how far behind the bridge is and whether anything needs attention — the
//! slot, the publication, the stream, the relay's checkpoints and leases, the DLQ — gathered
//! from the systems themselves, not from a running bridge.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use serde::Serialize;

use crate::capture::standby::{read_rows, STANDBYS_QUERY};
use crate::capture::standby_rule::{StandbyRule, Verdict};
use crate::replication::slot::query_client;
use crate::replication::PgTarget;

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

/// The attention rules, from the gathered facts.
fn judge(status: &mut Status, cfg: &StatusConfig) {
    let mut notes = Vec::new();
    if status.last_resync.as_ref().is_some_and(|r| r.running) {
        notes.push(format!(
            "an outbox resync of slot `{}` has not finished: capture redoes it when it starts",
            cfg.slot
        ));
    }
    if let Some(slot) = &status.slot {
        if !slot.exists {
            notes.push(format!(
                "slot `{}` does not exist: capture recreates it and re-publishes the outbox when it starts (--on-slot-loss resync-outbox), or run `bridge setup`",
                cfg.slot
            ));
        } else {
            if !slot.active {
                notes.push(format!("slot `{}` is not active: is capture running?", cfg.slot));
            }
            if matches!(slot.wal_status.as_deref(), Some("lost" | "unreserved")) {
                notes.push(format!(
                    "slot `{}` wal_status is {}: changes are being or have been lost (docs: Failover and recovery)",
                    cfg.slot,
                    slot.wal_status.as_deref().unwrap_or("")
                ));
            }
            if let Some(bytes) = slot
                .retained_wal_bytes
                .filter(|b| *b > cfg.retained_wal_threshold)
            {
                notes.push(format!(
                    "slot `{}` retains {bytes} bytes of WAL (threshold {})",
                    cfg.slot, cfg.retained_wal_threshold
                ));
            }
        }
    }
    if let Some(why) = status.synchronous_standby.as_ref().and_then(|s| s.held.as_ref()) {
        notes.push(format!(
            "capture's publishing is held: {why}; attach the standby, or restart capture with another --synchronous-standby"
        ));
    }
    if let Some(tables) = &status.publication_tables {
        if tables.is_empty() {
            notes.push(format!(
                "publication `{}` is missing or publishes no table",
                cfg.publication
            ));
        }
    }
    if let Some(s) = status.stream_status.as_deref().filter(|s| *s != "ACTIVE") {
        notes.push(format!("kinesis stream `{}` is {s}", cfg.stream));
    }
    // A lease that expired, or an open shard no relay has ever leased: nobody reads it.
    let expired = status
        .shards
        .iter()
        .filter(|s| s.lease_expires_in_ms.is_none_or(|ms| ms < 0))
        .count();
    let never_leased = status.open_shards.map_or(0, |open| {
        usize::try_from(open)
            .unwrap_or(0)
            .saturating_sub(status.shards.len())
    });
    if expired + never_leased > 0 {
        notes.push(format!(
            "{} shard(s) without a live lease: is a relay running?",
            expired + never_leased
        ));
    }
    let limit = crate::unpublished::threshold(cfg.unpublished_age_threshold, status.retention_hours);
    for u in &status.oldest_unpublished {
        let age = std::time::Duration::from_millis(u64::try_from(u.age_ms).unwrap_or(0));
        if age > limit {
            notes.push(format!(
                "shard {}: its oldest unpublished record arrived {} ago (threshold {}); the stream keeps \
                 records {} h, then trims them read or not — lost to EventBridge unless republished \
                 from the outbox: is a relay running and keeping up?",
                u.shard_id,
                human(age),
                human(limit),
                status
                    .retention_hours
                    .map_or_else(|| "?".into(), |h| h.to_string()),
            ));
        }
    }
    if let Some(n) = status.dead_letters.filter(|n| *n > 0) {
        notes.push(format!(
            "{n} record(s) parked in `{}`: `bridge dlq list` shows why",
            cfg.dead_letter_queue
        ));
    }
    status.attention.extend(notes);
}

async fn postgres_status(
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

/// A duration as a status line says it: the largest whole unit.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

async fn checkpoints(
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

async fn dlq_depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<i64, aws_sdk_sqs::Error> {
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

/// The status as a human reads it.
pub fn render(status: &Status, cfg: &StatusConfig) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<i64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    if let Some(slot) = &status.slot {
        let _ = writeln!(
            out,
            "slot {:<20} exists {} active {} confirmed_flush {} retained WAL {} B unacknowledged {} B wal_status {}",
            cfg.slot,
            slot.exists,
            slot.active,
            or(&slot.confirmed_flush_lsn),
            num(slot.retained_wal_bytes),
            num(slot.unacknowledged_bytes),
            or(&slot.wal_status)
        );
        if let Some(reason) = &slot.invalidation_reason {
            let _ = writeln!(out, "slot {:<20} invalidated: {reason}", cfg.slot);
        }
        let standbys = slot
            .synchronized_standby_slots
            .as_deref()
            .filter(|s| !s.is_empty());
        let _ = writeln!(
            out,
            "slot {:<20} failover slot {}; synchronized_standby_slots {}",
            cfg.slot,
            if slot.failover { "yes" } else { "no" },
            standbys.map_or_else(
                || "(none: a promoted standby's copy may lag what capture was sent)".to_owned(),
                ToOwned::to_owned
            )
        );
    }
    if let Some(s) = &status.synchronous_standby {
        let connected: Vec<String> = s
            .connected
            .iter()
            .map(|(n, l)| format!("{n} flushed {l}"))
            .collect();
        let _ = writeln!(
            out,
            "synchronous standby {} on {}: {}; connected: {}",
            s.rule,
            s.this_server.as_deref().unwrap_or("this server"),
            s.held
                .as_deref()
                .map_or("publishing flows", |_| "publishing HELD"),
            if connected.is_empty() {
                "none".to_owned()
            } else {
                connected.join(", ")
            }
        );
    }
    if let Some(tables) = &status.publication_tables {
        let _ = writeln!(
            out,
            "publication {:<13} tables {}",
            cfg.publication,
            tables.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "stream {:<18} status {} open shards {}",
        cfg.stream,
        or(&status.stream_status),
        status.open_shards.map_or_else(|| "-".into(), |n| n.to_string())
    );
    if let Some(d) = &status.delivered {
        let _ = writeln!(
            out,
            "delivered up to {} (committed {}, system {} timeline {})",
            d.lsn, d.committed_at, d.system_identifier, d.timeline
        );
    }
    if let Some(r) = &status.last_resync {
        let _ = writeln!(
            out,
            "last outbox resync ({}) {} {}: {} rows from {}, new slot at {}",
            r.reason,
            if r.running { "RUNNING since" } else { "started" },
            r.started_at,
            r.rows,
            r.window_from,
            r.lsn.as_deref().unwrap_or("-")
        );
    }
    if let Some(b) = &status.backfill {
        let _ = writeln!(
            out,
            "backfill {}: {}, {} rows sent{}",
            b.id,
            b.state,
            b.rows,
            b.reason
                .as_deref()
                .map_or_else(String::new, |r| format!(" ({r})"))
        );
    }
    for s in &status.shards {
        let _ = writeln!(
            out,
            "  shard {:<24} owner {:<40} lease {} checkpoint {}",
            s.shard_id,
            or(&s.owner),
            s.lease_expires_in_ms.map_or_else(
                || "-".into(),
                |ms| if ms >= 0 {
                    format!("{ms} ms left")
                } else {
                    "expired".into()
                }
            ),
            or(&s.checkpoint)
        );
    }
    for u in &status.oldest_unpublished {
        let _ = writeln!(
            out,
            "  shard {:<24} oldest unpublished record arrived {} ago",
            u.shard_id,
            human(std::time::Duration::from_millis(
                u64::try_from(u.age_ms).unwrap_or(0)
            ))
        );
    }
    let _ = writeln!(
        out,
        "dead letters {:<12} {}",
        cfg.dead_letter_queue,
        num(status.dead_letters)
    );
    if status.attention.is_empty() {
        out.push_str("ok: nothing needs attention\n");
    } else {
        for a in &status.attention {
            let _ = writeln!(out, "attention: {a}");
        }
    }
    out
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
