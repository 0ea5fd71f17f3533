//! The HTTP endpoint every process serves on its `--metrics-listen`: `/metrics` (Prometheus'
//! text format) and `/healthz` (200 `ok`, or 503 with the reasons).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Health;

/// Serves `/metrics` (whatever `render` returns, in Prometheus' text format) and `/healthz`.
pub async fn serve<F>(listen: &str, render: F, health: Arc<Health>) -> std::io::Result<SocketAddr>
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response() }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let answer = match health.check() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(reasons) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy:\n- {}\n", reasons.join("\n- ")),
                    ),
                };
                async move { answer }
            }),
        );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "metrics server stopped");
        }
    });
    Ok(addr)
}

/// Why `/healthz` did not answer 200.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing answers on {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("unhealthy ({status}): {body}")]
    Unhealthy { status: String, body: String },
}

/// Asks the `/healthz` of a server listening on `listen` (a wildcard address is asked on
/// loopback). For container health checks: the images carry no curl, and a request this small
/// needs no HTTP client library linked into every service.
pub async fn probe(listen: &str, timeout: std::time::Duration) -> Result<(), ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "", port)) => format!("127.0.0.1:{port}"),
        _ => listen.to_owned(),
    };
    let ask = async {
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.clone(),
            secs: timeout.as_secs(),
        })?
        .map_err(|source| ProbeError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    Err(ProbeError::Unhealthy { status, body })
}
