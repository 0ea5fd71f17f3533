//! The HTTP endpoint every process serves on its `--metrics-listen`:
//! - `/metrics`: OpenMetrics text (what prometheus-client writes), with its Content-Type;
//! - `/livez`: liveness, for container health checks: 200 while the process answers and its
//!   runtime is not wedged (a pulse task beats every half second). It stays 200 through an AWS
//!   or Postgres outage, which the process waits out: an orchestrator that restarted it then
//!   would only restart it into the same outage, again and again;
//! - `/readyz`: readiness, for load balancers, alarms and `bridge status`: 200 while every watched
//!   loop makes progress and no dependency problem is set, else 503 with the reasons;
//! - `/healthz`: the same as `/readyz`, kept for compatibility.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Health;

/// The Content-Type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How stale the pulse may be before `/livez` says the runtime is wedged.
const PULSE_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `/metrics` (whatever `render` returns, OpenMetrics text), `/livez`, `/readyz` and
/// `/healthz`.
pub async fn serve<F>(listen: &str, render: F, health: Arc<Health>) -> std::io::Result<SocketAddr>
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let pulse = health.pulse();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            pulse.beat();
        }
    });
    let ready = {
        let health = health.clone();
        move || {
            let answer = match health.check() {
                Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                Err(reasons) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("unhealthy:\n- {}\n", reasons.join("\n- ")),
                ),
            };
            async move { answer }
        }
    };
    let live = move || {
        let answer = match health.alive(PULSE_BOUND) {
            Ok(()) => (StatusCode::OK, "alive\n".to_owned()),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not alive: {reason}\n")),
        };
        async move { answer }
    };
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = render();
                async move { ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response() }
            }),
        )
        .route("/livez", get(live))
        .route("/readyz", get(ready.clone()))
        .route("/healthz", get(ready));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "metrics server stopped");
        }
    });
    Ok(addr)
}

pub use telemetry::probe::{probe, ProbeError};
