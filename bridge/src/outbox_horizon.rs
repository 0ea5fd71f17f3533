//! The outbox as the recovery log: how far `bridge outbox prune` has deleted, recorded next to
//! the outbox (`<schema>.outbox_bridge_pruned`, one row per outbox). Prune raises it before it
//! deletes; the resync after a lost slot reads it, and stops rather than re-publish from an
//! outbox that no longer holds the window. Below both, so neither reaches into the other.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::table::TableName;

/// The table where prune runs record their cut, next to the outbox.
pub fn table(outbox: &TableName) -> String {
    format!("{}.outbox_bridge_pruned", crate::sql::quote_ident(&outbox.schema))
}

/// Creates the horizon table if it is missing and raises `outbox`'s cut to `older_than` ago.
pub async fn record(
    client: &tokio_postgres::Client,
    outbox: &TableName,
    older_than: Duration,
) -> Result<(), tokio_postgres::Error> {
    let horizon = table(outbox);
    if !exists(client, &horizon).await? {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {horizon} (outbox text PRIMARY KEY, \
                 pruned_before timestamptz NOT NULL, pruned_at timestamptz NOT NULL)"
            ))
            .await?;
    }
    client
        .execute(
            &format!(
                "INSERT INTO {horizon} AS h (outbox, pruned_before, pruned_at) \
                 VALUES ($1, now() - make_interval(secs => $2), now()) \
                 ON CONFLICT (outbox) DO UPDATE SET \
                 pruned_before = greatest(h.pruned_before, excluded.pruned_before), pruned_at = now()"
            ),
            &[&outbox.to_string(), &older_than.as_secs_f64()],
        )
        .await?;
    Ok(())
}

/// The newest `occurred_at` bound prune has deleted below, if it ever ran on `outbox`.
pub async fn pruned_before(
    client: &tokio_postgres::Client,
    outbox: &TableName,
) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    let horizon = table(outbox);
    if !exists(client, &horizon).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT (extract(epoch FROM pruned_before) * 1000000)::int8 FROM {horizon} WHERE outbox = $1"
            ),
            &[&outbox.to_string()],
        )
        .await?;
    Ok(row.and_then(|r| DateTime::from_timestamp_micros(r.get(0))))
}

async fn exists(client: &tokio_postgres::Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let found: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await?
        .get(0);
    Ok(found.is_some())
}
