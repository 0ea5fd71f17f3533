//! The heartbeat: a tiny non-transactional `pg_logical_emit_message` on a timer.
//!
//! Capture already acknowledges the server's keepalives while nothing of its own is pending, so
//! a quiet outbox does not pin WAL. The heartbeat covers what that cannot: it gives the
//! walsender something of *this* database to decode and send, so the slot moves (and stale
//! positions are noticed) even where the server goes quiet towards us, and it dates the stream
//! end to end — `bridge_capture_heartbeat_lag_seconds` is how long a write took to come back
//! through the slot, idle database or not.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::replication::slot;
use crate::replication::PgTarget;

/// Prefix of our heartbeat messages. It never matches an outbox prefix in practice, and capture
/// publishes nothing for it.
pub const PREFIX: &str = "outbox-bridge.heartbeat";

/// Emits a heartbeat every `every` until `shutdown`. Failures (a restart, a read-only standby, a
/// role without EXECUTE on the function) are logged and retried at the next tick: a missed
/// heartbeat costs nothing but a late acknowledgement.
pub async fn run(target: PgTarget, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client: Option<tokio_postgres::Client> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Bounded: on a silently dropped network a query never returns, and the next tick must
        // start from a new connection rather than wait on the dead one.
        let result = tokio::time::timeout(every.max(Duration::from_secs(5)), emit(&target, &mut client))
            .await
            .unwrap_or(Err(EmitError::NoAnswer));
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeat written again");
            }
            Ok(()) => {}
            // Once per failure streak: a heartbeat that cannot be written should not flood the log.
            Err(error) if !failing => {
                failing = true;
                client = None;
                tracing::warn!(error = %eventing::error_chain::chain(&error), "heartbeat (pg_logical_emit_message) failed; retrying every tick");
            }
            Err(_) => client = None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EmitError {
    #[error("connecting")]
    Connect(#[source] slot::SlotError),
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    #[error("no answer from postgres")]
    NoAnswer,
}

async fn emit(target: &PgTarget, client: &mut Option<tokio_postgres::Client>) -> Result<(), EmitError> {
    let c = match client.take() {
        Some(c) if !c.is_closed() => c,
        _ => slot::query_client(target).await.map_err(EmitError::Connect)?,
    };
    let sent_at = chrono::Utc::now().timestamp_micros().to_string();
    c.execute(
        "SELECT pg_logical_emit_message(false, $1, $2)",
        &[&PREFIX, &sent_at],
    )
    .await?;
    *client = Some(c);
    Ok(())
}

/// A heartbeat came back through the slot: record how long the trip took.
pub fn received(metrics: &Metrics, content: &[u8]) {
    metrics.heartbeats_received.inc();
    let sent: Option<i64> = std::str::from_utf8(content).ok().and_then(|s| s.parse().ok());
    if let Some(sent) = sent {
        let lag = (chrono::Utc::now().timestamp_micros() - sent).max(0) as f64 / 1e6;
        metrics.heartbeat_lag_seconds.set(lag);
    }
}
