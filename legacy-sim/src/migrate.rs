//! Schema migrations: the SQL files in `migrations/` at the workspace root, embedded at build time
//! and applied by refinery over one tokio-postgres connection. Applying them twice is a no-op.

use thiserror::Error;
use tokio_postgres::NoTls;

refinery::embed_migrations!("../migrations");

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("cannot connect to the database")]
    Connect(#[source] tokio_postgres::Error),
    #[error("a migration failed")]
    Migration(#[source] refinery::Error),
}

/// Applies the pending migrations and returns their names (`V1__monolith`, ...), in order.
pub async fn run(database_url: &str) -> Result<Vec<String>, MigrateError> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(MigrateError::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection ended with an error");
        }
    });
    let report = migrations::runner().run_async(&mut client).await;
    drop(client);
    // The driver ends once the client is dropped; a join error only means it panicked.
    if let Err(err) = driver.await {
        tracing::warn!(error = %err, "migration connection task failed");
    }
    let report = report.map_err(MigrateError::Migration)?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(applied = applied.len(), "migrations done");
    Ok(applied)
}
