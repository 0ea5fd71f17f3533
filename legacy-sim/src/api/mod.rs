//! The monolith's HTTP API (JSON in and out).
//!
//! | route                        | success                                       |
//! |------------------------------|-----------------------------------------------|
//! | `POST /customers`            | 201 `{"customer_id"}`                         |
//! | `GET /customers/{id}`        | 200 the customer                              |
//! | `POST /orders`               | 201 `{"order_id", "state"}`                   |
//! | `GET /orders/{id}`           | 200 the order                                 |
//! | `POST /orders/{id}/cancel`   | 200 the cancelled order                       |
//! | `GET /healthz`               | 200 `{"status": "ok"}`                        |
//!
//! Every failure is a JSON [`ApiError`]; bad input writes nothing. Bodies are limited to
//! [`BODY_LIMIT_BYTES`].

mod customers;
pub mod error;
mod extract;
mod orders;
mod span;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::PgPool;
use thiserror::Error;
use tower_http::trace::TraceLayer;

pub use self::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the http server failed")]
    Server(#[source] std::io::Error),
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/customers", post(customers::create))
        .route("/customers/{id}", get(customers::get))
        .route("/orders", post(orders::place))
        .route("/orders/{id}", get(orders::get))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn(span::request_span))
        .layer(TraceLayer::new_for_http())
        .with_state(pool)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight.
///
/// Prints `legacy-sim listening on http://ADDR` on stdout once bound (with the real port when
/// `listen` asks for port 0).
pub async fn serve(pool: PgPool, listen: SocketAddr) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind { addr: listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: listen, source })?;
    println!("legacy-sim listening on http://{addr}");
    tracing::info!(%addr, "listening");
    axum::serve(listener, router(pool))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Server)?;
    tracing::info!("stopped");
    Ok(())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for sigint");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("sigterm received, shutting down"),
        () = interrupt => tracing::info!("sigint received, shutting down"),
    }
}
