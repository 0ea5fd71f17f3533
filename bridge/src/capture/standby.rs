//! `--synchronous-standby RULE`: no phantom events after a failover.
//!
//! A transaction the primary committed but no standby received is taken back by a failover;
//! if capture had published it, consumers saw an event that never happened. PostgreSQL 17's
//! `synchronized_standby_slots` makes the walsender wait for the standbys; on 14 to 16 capture
//! waits itself: a batch goes to Kinesis only once the standbys the rule asks for (see
//! `standby_rule`) have flushed the commits of its records (`pg_stat_replication.flush_lsn`,
//! polled here).
//!
//! Too few connected standbys hold publishing back, exactly as a synchronous standby holds
//! commits back; `/readyz` then names the ones missing. The server capture reads from is left
//! out of the rule, so after a failover a rule naming both servers of a pair waits for the old
//! primary to come back as a standby, or for any other standby the rule accepts.

use std::sync::Arc;
use std::time::Duration;

use eventing::health::Health;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::standby_rule::{StandbyRule, Verdict};
use crate::lsn::Lsn;
use crate::replication::slot;
use crate::replication::PgTarget;

/// How often the standbys' positions are read.
const POLL: Duration = Duration::from_millis(5);

/// The health condition set while publishing is held.
const HELD: &str = "synchronous-standby";

/// The query a verdict is made from: this server's `cluster_name` and its standbys' flush
/// positions (one row with nulls when none is connected).
pub const STANDBYS_QUERY: &str = "SELECT current_setting('cluster_name'), r.application_name::text, \
     r.flush_lsn::text FROM (SELECT 1) AS one LEFT JOIN pg_stat_replication AS r \
     ON r.flush_lsn IS NOT NULL";

/// This server's name and its standbys' flush positions, from `STANDBYS_QUERY`'s rows.
pub fn read_rows(rows: &[tokio_postgres::Row]) -> (Option<String>, Vec<(String, Lsn)>) {
    let this = rows.first().and_then(|r| r.get::<_, Option<String>>(0));
    let connected = rows
        .iter()
        .filter_map(|r| {
            let name = r.get::<_, Option<String>>(1)?;
            let lsn = r.get::<_, Option<String>>(2)?.parse().ok()?;
            Some((name, lsn))
        })
        .collect();
    (this, connected)
}

/// Publishes how far the rule lets capture publish (0/0 while it holds) until shutdown.
/// Connection failures are retried; meanwhile the last value stands.
pub async fn watch_standbys(
    target: PgTarget,
    rule: StandbyRule,
    released: watch::Sender<Lsn>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut held_said: Option<String> = None;
    // A capture restarted in the same process starts from a clean slate.
    health.problem(HELD, None);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            client = slot::query_client(&target).await.ok();
        }
        let Some(c) = &client else { continue };
        let query = c.query(STANDBYS_QUERY, &[]);
        let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_secs(5), query).await else {
            client = None;
            continue;
        };
        let (this, connected) = read_rows(&rows);
        match rule.judge(this.as_deref(), &connected) {
            Verdict::Held(why) => {
                if held_said.as_ref() != Some(&why) {
                    tracing::warn!(rule = %rule, "publishing held: {why}");
                    health.problem(HELD, Some(format!("publishing held: {why}")));
                    held_said = Some(why);
                }
            }
            Verdict::Release(lowest) => {
                if held_said.take().is_some() {
                    tracing::info!(rule = %rule, "the synchronous standbys are connected again: publishing goes on");
                    health.problem(HELD, None);
                }
                released.send_if_modified(|current| {
                    let moved = lowest > *current;
                    if moved {
                        *current = lowest;
                    }
                    moved
                });
            }
        }
    }
}
