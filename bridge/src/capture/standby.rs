//! `--synchronous-standby NAME[,…]`: no phantom events after a failover.
//!
//! A transaction the primary committed but no standby received is taken back by a failover;
//! if capture had published it, consumers saw an event that never happened. PostgreSQL 17's
//! `synchronized_standby_slots` makes the walsender wait for the standbys; on 15 and 16
//! capture waits itself: a batch goes to Kinesis only once every named standby has flushed
//! the commits of its records (`pg_stat_replication.flush_lsn`, polled here).
//!
//! A named standby that is not connected holds publishing back (and `/healthz` then turns
//! stale), exactly as a synchronous standby holds commits back: after a failover, attach a new
//! standby under that name or restart capture without it.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lsn::Lsn;
use crate::replication::slot;
use crate::replication::PgTarget;

/// How often the standbys' positions are read.
const POLL: Duration = Duration::from_millis(5);

/// Publishes the lowest flush position of the named standbys (0/0 while one is missing)
/// until shutdown. Connection failures are retried; meanwhile the last value stands.
pub async fn watch_standbys(
    target: PgTarget,
    names: Vec<String>,
    released: watch::Sender<Lsn>,
    shutdown: CancellationToken,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut missing_said: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            client = slot::query_client(&target).await.ok();
        }
        let Some(c) = &client else { continue };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&names];
        let query = c.query(
            "SELECT application_name::text, flush_lsn::text FROM pg_stat_replication \
             WHERE application_name = ANY($1) AND flush_lsn IS NOT NULL",
            &params,
        );
        let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_secs(5), query).await else {
            client = None;
            continue;
        };
        let flushed: Vec<(String, Lsn)> = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, String>(1).parse().ok()?)))
            .collect();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !flushed.iter().any(|(name, _)| name == *n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if missing_said.as_ref() != Some(&missing) {
                tracing::warn!(standbys = ?missing, "a --synchronous-standby is not connected: publishing waits for it");
                missing_said = Some(missing);
            }
            continue;
        }
        if missing_said.take().is_some() {
            tracing::info!("every --synchronous-standby is connected again");
        }
        // Several entries under one name (a standby reconnecting): the furthest counts.
        let lowest = names
            .iter()
            .filter_map(|n| {
                flushed
                    .iter()
                    .filter(|(name, _)| name == n)
                    .map(|(_, lsn)| *lsn)
                    .max()
            })
            .min()
            .unwrap_or_default();
        released.send_if_modified(|current| {
            let moved = lowest > *current;
            if moved {
                *current = lowest;
            }
            moved
        });
    }
}
