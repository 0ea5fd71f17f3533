//! One span per request when traces are exported: its `traceparent` is what the request's
//! outbox rows carry, so capture, the relay and the consumers continue this very span.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use telemetry::{Attribute, Kind};

/// The request's own span, for the outbox rows it writes.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub String);

pub async fn request_span(mut request: Request, next: Next) -> Response {
    if !telemetry::enabled() {
        return next.run(request).await;
    }
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = telemetry::start(
        format!("{method} {route}"),
        Kind::Server,
        incoming.as_deref(),
        vec![
            Attribute::new("http.request.method", method),
            Attribute::new("http.route", route),
        ],
    );
    if let Some(span) = &span {
        request
            .extensions_mut()
            .insert(RequestSpan(span.traceparent().to_owned()));
    }
    let response = next.run(request).await;
    if let Some(mut span) = span {
        let status = response.status();
        span.set_attribute(Attribute::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.fail(status.to_string());
        }
        span.end();
    }
    response
}
