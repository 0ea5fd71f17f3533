//! Extractors whose rejections are [`ApiError`]s (JSON bodies), and the request's trace context.

use std::convert::Infallible;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::domain::traceparent::TraceParent;

/// `axum::Json` with JSON rejections.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` with JSON rejections (`invalid_id`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The request's own span when traces are exported; else the incoming `traceparent` header when
/// valid, else a fresh one.
#[derive(Debug)]
pub struct Trace(pub TraceParent);

impl<S: Send + Sync> FromRequestParts<S> for Trace {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(own) = parts
            .extensions
            .get::<super::span::RequestSpan>()
            .and_then(|s| TraceParent::parse(&s.0))
        {
            return Ok(Self(own));
        }
        let header = parts
            .headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok());
        Ok(Self(TraceParent::from_header_or_generate(header)))
    }
}
