//! Capture from a hot standby (PostgreSQL 16+): a platform team that may not add load to the
//! primary points `DATABASE_URL` at a standby (`target_session_attrs=standby` picks it from a
//! multi-host URL). The slot and the walsender live on the standby; what must be written —
//! the heartbeat, the publication — goes to the primary (`CaptureConfig::primary`).
//!
//! A logical slot created on a standby waits for the primary's next `xl_running_xacts` record
//! (the primary logs one every 15 s, and only while it is busy); capture asks the primary for
//! one (`pg_log_standby_snapshot()`) while it waits, so creating the slot takes a moment.

use std::time::Duration;

use super::{CaptureConfig, CaptureError};
use crate::replication::slot::{self, SlotError};
use crate::replication::PgTarget;

/// How often the primary is asked for a standby snapshot while a slot is being created.
const NUDGE_EVERY: Duration = Duration::from_millis(500);

/// What capture needs to know about the server it reads from.
pub struct Server {
    /// `server_version_num`.
    pub version: i32,
    /// A standby (`pg_is_in_recovery()`).
    pub in_recovery: bool,
}

impl Server {
    pub async fn of(client: &tokio_postgres::Client) -> Result<Self, SlotError> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, pg_is_in_recovery()",
                &[],
            )
            .await?;
        Ok(Self {
            version: row.get(0),
            in_recovery: row.get(1),
        })
    }
}

/// Refuses what a standby cannot do, each with its remedy.
pub fn check(cfg: &CaptureConfig, server: &Server) -> Result<(), CaptureError> {
    if server.version < 160_000 {
        return Err(SlotError::StandbyTooOld {
            version: server.version / 10_000,
        }
        .into());
    }
    if cfg.failover_slot == slot::FailoverSlot::On {
        return Err(SlotError::FailoverOnStandby.into());
    }
    if cfg.heartbeat.is_some() && same_server(&cfg.primary, &cfg.target) {
        tracing::warn!(
            "capture reads from a standby, where the heartbeat cannot be written: name the primary \
             (--heartbeat-database-url, or target_session_attrs=standby on a URL that lists it)"
        );
    }
    Ok(())
}

fn same_server(a: &PgTarget, b: &PgTarget) -> bool {
    a.to_string() == b.to_string() && a.session_attrs == b.session_attrs
}

/// Runs `creating` (a slot created on the standby) while asking the primary, every
/// `NUDGE_EVERY`, to log the snapshot the standby waits for. A primary that cannot be asked
/// only makes the wait longer.
pub async fn while_nudging<T>(primary: &PgTarget, creating: impl std::future::Future<Output = T>) -> T {
    let primary = primary.clone();
    let _nudging = super::AbortOnDrop(tokio::spawn(async move {
        let mut said = false;
        loop {
            let asked = match slot::query_client(&primary).await {
                Ok(client) => client
                    .query_one("SELECT pg_log_standby_snapshot()::text", &[])
                    .await
                    .map(|_| ())
                    .map_err(SlotError::from),
                Err(error) => Err(error),
            };
            if let Err(error) = asked {
                if !said {
                    said = true;
                    tracing::info!(error = %eventing::error_chain::chain(&error), "cannot ask the primary for a standby snapshot: the slot waits for the primary's own (up to 15 s)");
                }
            }
            tokio::time::sleep(NUDGE_EVERY).await;
        }
    }));
    creating.await
}
