//! The status as a human reads it.

use super::judge::human;
use super::{Status, StatusConfig};

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
