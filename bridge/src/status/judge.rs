//! The attention rules: what in the gathered facts an operator must look at.

use super::{Status, StatusConfig};

/// The attention rules, from the gathered facts.
pub(super) fn judge(status: &mut Status, cfg: &StatusConfig) {
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

/// A duration as a status line says it: the largest whole unit.
pub(super) fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}
