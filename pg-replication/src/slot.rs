//! The publication and the logical slot: created on first start where the role may, otherwise
//! only checked; a lost slot is an error, never silently recreated (that would hide a gap).

use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::target::PgTarget;
use crate::lsn::Lsn;
use crate::sql::quote_ident;
use crate::table::TableName;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("postgres query failed")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("TLS to postgres at {target} failed (sslmode={mode}): {reason}")]
    Tls {
        target: String,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "the publication `{publication}` does not exist and this role may not create it; as the owner of the \
         tables run: {sql}"
    )]
    PublicationMissing { publication: String, sql: String },
    #[error(
        "the publication `{publication}` does not cover {missing}; as the owner of the tables run: {sql}"
    )]
    PublicationIncomplete {
        publication: String,
        missing: String,
        sql: String,
    },
    #[error(
        "the replication slot `{slot}` was invalidated ({reason}): {}. With --on-slot-loss resync-outbox \
         capture re-publishes the outbox instead; see docs: Failover and recovery",
        invalidation_meaning(reason)
    )]
    SlotLost { slot: String, reason: String },
    #[error("the replication slot `{slot}` does not exist")]
    SlotMissing { slot: String },
    #[error(
        "--failover-slot on: failover slots need PostgreSQL 17 or later, and this server is {version}; \
         use --failover-slot auto (or off), and see docs: Failover and recovery for older majors"
    )]
    FailoverUnsupported { version: i32 },
    #[error(
        "--database-url is a standby of PostgreSQL {version}: logical decoding on a standby needs \
         PostgreSQL 16 or later; point capture at the primary (docs: Failover and recovery, Capture from a standby)"
    )]
    StandbyTooOld { version: i32 },
    #[error(
        "--failover-slot on: a slot on a standby cannot be a failover slot (PostgreSQL syncs only the \
         primary's); use --failover-slot auto (or off)"
    )]
    FailoverOnStandby,
    /// The probe before the query connection: refused by the authentication policy (final), or
    /// a connection problem (retryable, as the replication connection's own).
    #[error(transparent)]
    Probe(super::error::ReplicationError),
    #[error("the replication slot `{slot}` uses the plugin `{plugin}`, not pgoutput; use another --slot")]
    WrongPlugin { slot: String, plugin: String },
    #[error(
        "the role `{role}` may not create the replication slot `{slot}`: it needs the REPLICATION \
         attribute; as a superuser run: ALTER ROLE {role_sql} REPLICATION;"
    )]
    NoReplicationPrivilege {
        slot: String,
        role: String,
        role_sql: String,
    },
}

/// What an `invalidation_reason` (17+; `wal_removed` before) means for the changes the slot held.
fn invalidation_meaning(reason: &str) -> &'static str {
    match reason {
        "wal_removed" => "Postgres removed WAL it still needed (max_slot_wal_keep_size), so changes were lost",
        "idle_timeout" => {
            "it was idle longer than idle_replication_slot_timeout (PostgreSQL 18), and the WAL it held may be gone"
        }
        "rows_removed" => "rows it still needed were vacuumed away (a standby without hot_standby_feedback)",
        "wal_level_insufficient" => "the primary's wal_level is no longer logical",
        _ => "Postgres can no longer stream from it",
    }
}

/// The certificate or TLS policy failure under a connection error, if that is what it was: a
/// refused certificate is refused again on retry, so it must not look like a network blip.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // io::Error::source skips the error it wraps; look inside it directly.
        if let Some(inner) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls.to_string());
            }
        }
        if c.to_string() == "server does not support TLS" {
            return Some("the server does not accept TLS".into());
        }
        cause = c.source();
    }
    None
}

impl SlotError {
    pub fn is_retryable(&self) -> bool {
        match self {
            // A closed or refused connection, or a restarting server, is transient; a rejected
            // statement is not.
            Self::Postgres(err) => err
                .code()
                .is_none_or(|c| super::error::retryable_sqlstate(c.code())),
            Self::Probe(err) => err.is_retryable(),
            _ => false,
        }
    }
}

/// Whether the slot is a failover slot (PostgreSQL 17+: a standby with `sync_replication_slots`
/// keeps a copy of it, so a promoted standby streams on from it without a resync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailoverSlot {
    /// A failover slot where the server supports them (17+), an ordinary one elsewhere.
    #[default]
    Auto,
    /// A failover slot; a server before 17 is an error.
    On,
    /// An ordinary slot.
    Off,
}

impl FailoverSlot {
    /// Whether the slot should be a failover slot on a server of `version` (server_version_num).
    pub fn wanted(self, version: i32) -> Result<bool, SlotError> {
        match self {
            Self::Auto => Ok(version >= 170_000),
            Self::On if version < 170_000 => Err(SlotError::FailoverUnsupported { version }),
            Self::On => Ok(true),
            Self::Off => Ok(false),
        }
    }
}

/// The slot as Postgres reports it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub confirmed_flush: Lsn,
    pub created: bool,
    /// Whether it is a failover slot (always false before 17).
    pub failover: bool,
    /// When created here: the server's clock (µs since 2000-01-01) just before, a lower bound
    /// of the commit time of anything the slot will stream.
    pub created_after: Option<i64>,
}

/// Opens an ordinary query connection (`tokio-postgres`), driving it on a task of its own.
pub async fn query_client(target: &PgTarget) -> Result<Client, SlotError> {
    // tokio-postgres answers any authentication request; where the connection may end up
    // unencrypted (or require_auth is set), look at the request first and refuse as the
    // replication connection would.
    if target.auth.needs_probe(target.tls.mode.tls_required()) {
        super::ReplicationConnection::probe_auth(target)
            .await
            .map_err(SlotError::Probe)?;
    }
    let tls_error = |err: tokio_postgres::Error| match tls_failure(&err) {
        Some(reason) => SlotError::Tls {
            target: target.to_string(),
            mode: target.tls.mode.as_str(),
            reason,
        },
        None => SlotError::Postgres(err),
    };
    // Two arms because the connection's type names its TLS stream.
    let client = match target.tls.client_config() {
        Some(config) => {
            let tls = MakeRustlsConnect::new(std::sync::Arc::unwrap_or_clone(config));
            let (client, connection) = target.config.connect(tls).await.map_err(tls_error)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "query connection closed");
                }
            });
            client
        }
        None => {
            let (client, connection) = target.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "query connection closed");
                }
            });
            client
        }
    };
    // Backfill chunks are read as text here: the same text form as the replication stream's.
    let pin: String = super::TEXT_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = '{value}';"))
        .collect();
    client.batch_execute(&pin).await?;
    Ok(client)
}

/// Makes sure the publication exists and covers `tables`; creates it when absent and allowed.
///
/// When every table is an outbox the publication publishes inserts only, so deleting outbox rows
/// right after inserting them never becomes an event.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[TableName],
    inserts_only: bool,
) -> Result<(), SlotError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
        .await?;
    let table_list = tables
        .iter()
        .map(TableName::quoted)
        .collect::<Vec<_>>()
        .join(", ");
    if exists.is_none() {
        let publish = if inserts_only {
            "insert"
        } else {
            "insert, update, delete"
        };
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {table_list} WITH (publish = '{publish}');",
            quote_ident(publication)
        );
        return match client.batch_execute(&sql).await {
            Ok(()) => {
                tracing::info!(publication, tables = %table_list, "created publication");
                Ok(())
            }
            Err(err) if err.code().is_some() => {
                tracing::debug!(error = %err, "cannot create publication");
                Err(SlotError::PublicationMissing {
                    publication: publication.into(),
                    sql,
                })
            }
            Err(err) => Err(err.into()),
        };
    }
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await?;
    let covered: Vec<TableName> = rows
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect();
    let missing: Vec<&TableName> = tables.iter().filter(|t| !covered.contains(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let missing_list = missing.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    Err(SlotError::PublicationIncomplete {
        publication: publication.into(),
        missing: missing_list.clone(),
        sql: format!(
            "ALTER PUBLICATION {} ADD TABLE {missing_list};",
            quote_ident(publication)
        ),
    })
}

/// What the publication really publishes: whether it is `FOR ALL TABLES`, and its tables (an
/// operator may have added tables since capture was configured).
pub async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<(bool, Vec<TableName>), SlotError> {
    let all: bool = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some_and(|r| r.get(0));
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await?;
    let tables = rows
        .iter()
        .map(|r| TableName {
            schema: r.get(0),
            name: r.get(1),
        })
        .collect();
    Ok((all, tables))
}

/// Makes sure the logical slot exists and is usable; creates it when absent and `may_create`.
pub async fn ensure_slot(
    client: &Client,
    slot: &str,
    may_create: bool,
    failover: bool,
) -> Result<SlotState, SlotError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    // 17 names why a slot was invalidated (18: `idle_timeout` too) and whether it fails over.
    let columns = if version >= 170_000 {
        "coalesce(invalidation_reason, ''), failover"
    } else {
        "'', false"
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT plugin::text, coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, '0/0'), \
                 {columns} FROM pg_replication_slots WHERE slot_name = $1"
            ),
            &[&slot],
        )
        .await?;
    if let Some(row) = row {
        let plugin: Option<String> = row.get(0);
        let wal_status: String = row.get(1);
        let confirmed: String = row.get(2);
        let invalidated: String = row.get(3);
        if wal_status == "lost" || !invalidated.is_empty() {
            return Err(SlotError::SlotLost {
                slot: slot.into(),
                reason: if invalidated.is_empty() {
                    "wal_removed".into()
                } else {
                    invalidated
                },
            });
        }
        let plugin = plugin.unwrap_or_default();
        if plugin != "pgoutput" {
            return Err(SlotError::WrongPlugin {
                slot: slot.into(),
                plugin,
            });
        }
        return Ok(SlotState {
            confirmed_flush: confirmed.parse().unwrap_or_default(),
            created: false,
            failover: row.get(4),
            created_after: None,
        });
    }
    if !may_create {
        return Err(SlotError::SlotMissing { slot: slot.into() });
    }
    let before = crate::clock::server_now(client).await?;
    let created = if failover {
        client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)",
                &[&slot],
            )
            .await
    } else {
        client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
    };
    match created {
        Ok(row) => {
            let lsn: String = row.get(0);
            tracing::info!(slot, lsn = %lsn, failover, "created replication slot");
            Ok(SlotState {
                confirmed_flush: lsn.parse().unwrap_or_default(),
                created: true,
                failover,
                created_after: Some(before),
            })
        }
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            let role: String = client.query_one("SELECT current_user::text", &[]).await?.get(0);
            Err(SlotError::NoReplicationPrivilege {
                slot: slot.into(),
                role_sql: quote_ident(&role),
                role,
            })
        }
        Err(err) => Err(err.into()),
    }
}

/// Primary-key columns of every table in the publication, in key order. pgoutput's own key
/// flags describe the replica identity, which is every column under `REPLICA IDENTITY FULL`.
pub async fn primary_keys(
    client: &Client,
    publication: &str,
) -> Result<std::collections::HashMap<TableName, Vec<String>>, SlotError> {
    let rows = client
        .query(
            "SELECT pt.schemaname::text, pt.tablename::text, a.attname::text \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
             WHERE pt.pubname = $1 ORDER BY 1, 2, array_position(i.indkey::int2[], a.attnum)",
            &[&publication],
        )
        .await?;
    let mut keys: std::collections::HashMap<TableName, Vec<String>> = std::collections::HashMap::new();
    for row in rows {
        keys.entry(TableName {
            schema: row.get(0),
            name: row.get(1),
        })
        .or_default()
        .push(row.get(2));
    }
    Ok(keys)
}
