//! Every failure the API reports, as `{"error": "<machine code>", "message": "<human text>"}`.
//!
//! All axum rejections are mapped here too, so a client never sees a plain-text error. A server
//! error is logged with its cause chain and answered with a generic message: no SQL, no internals.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use thiserror::Error;

use crate::domain::{DomainError, ValidationError};

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("expected a request body with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body could not be read")]
    UnreadableBody,
    #[error("the id in the path is not a valid uuid")]
    InvalidId,
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error(transparent)]
    Domain(#[from] DomainError),
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body"),
            Self::InvalidId => (StatusCode::BAD_REQUEST, "invalid_id"),
            Self::Validation(err) => (StatusCode::UNPROCESSABLE_ENTITY, err.code),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Domain(DomainError::CustomerNotFound) => (StatusCode::NOT_FOUND, "customer_not_found"),
            Self::Domain(DomainError::OrderNotFound) => (StatusCode::NOT_FOUND, "order_not_found"),
            Self::Domain(DomainError::NotCancellable { .. }) => {
                (StatusCode::CONFLICT, "order_not_cancellable")
            }
            Self::Domain(DomainError::Payload(_) | DomainError::Database(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            tracing::error!(error = %cause_chain(&self), "request failed");
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        (status, Json(ErrorBody { error: code, message })).into_response()
    }
}

/// `err: cause: cause ...` with each error's `Display` only (a `Debug` of a database error may hold
/// row values).
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their source's message in their own.
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    chain
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(err) => Self::MalformedJson(err.body_text()),
            JsonRejection::JsonDataError(err) => Self::InvalidBody(err.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: super::BODY_LIMIT_BYTES,
            },
            _ => Self::UnreadableBody,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::InvalidId
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn render(err: ApiError) -> (StatusCode, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn client_errors_carry_a_code_and_a_message() {
        let (status, body) = render(ApiError::Domain(DomainError::CustomerNotFound)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            serde_json::json!({"error": "customer_not_found", "message": "customer not found"})
        );
    }

    #[tokio::test]
    async fn server_errors_hide_their_cause() {
        let err = ApiError::Domain(DomainError::Database(sqlx::Error::Protocol(
            "secret detail".to_owned(),
        )));
        let (status, body) = render(err).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            serde_json::json!({"error": "internal", "message": "internal error"})
        );
    }
}
