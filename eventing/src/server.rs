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
