//! The server's clock, in pgoutput's unit: what a slot's creation is dated with.

use tokio_postgres::Client;

/// The server's clock, in µs since 2000-01-01.
pub async fn server_now(client: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT (extract(epoch FROM now() - timestamptz '2000-01-01 00:00:00+00') * 1000000)::int8",
            &[],
        )
        .await?
        .get(0))
}
