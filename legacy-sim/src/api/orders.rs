//! `POST /orders`, `GET /orders/{id}` and `POST /orders/{id}/cancel`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Trace};
use crate::domain::money::{self, Amount};
use crate::domain::orders::{self, Order, OrderState};

#[derive(Debug, Deserialize)]
pub struct PlaceOrder {
    customer_id: Uuid,
    #[serde(with = "money::json")]
    order_total: Decimal,
}

#[derive(Debug, Serialize)]
pub struct OrderPlaced {
    order_id: Uuid,
    state: OrderState,
}

pub async fn place(
    State(pool): State<PgPool>,
    Trace(trace): Trace,
    ApiJson(body): ApiJson<PlaceOrder>,
) -> Result<(StatusCode, Json<OrderPlaced>), ApiError> {
    let total = Amount::positive(body.order_total)?;
    let order = orders::place(&pool, body.customer_id, total, &trace).await?.value;
    tracing::info!(order_id = %order.id, state = %order.state, "order placed");
    Ok((
        StatusCode::CREATED,
        Json(OrderPlaced {
            order_id: order.id,
            state: order.state,
        }),
    ))
}

pub async fn get(State(pool): State<PgPool>, ApiPath(id): ApiPath<Uuid>) -> Result<Json<Order>, ApiError> {
    Ok(Json(orders::find(&pool, id).await?))
}

pub async fn cancel(
    State(pool): State<PgPool>,
    Trace(trace): Trace,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Order>, ApiError> {
    let order = orders::cancel(&pool, id, &trace).await?.value;
    tracing::info!(order_id = %order.id, "order cancelled");
    Ok(Json(order))
}
