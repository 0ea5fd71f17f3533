//! The connection pool shared by the HTTP API and the load generator.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

/// Connects eagerly, so a wrong URL or an unreachable server fails at start-up, not on the first
/// request.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
}
