//! `POST /customers` and `GET /customers/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Trace};
use crate::domain::customers::{self, Customer, CustomerName, NewCustomer};
use crate::domain::money::{self, Amount};

#[derive(Debug, Deserialize)]
pub struct CreateCustomer {
    name: String,
    #[serde(with = "money::json")]
    credit_limit: Decimal,
}

#[derive(Debug, Serialize)]
pub struct CustomerCreated {
    customer_id: Uuid,
}

pub async fn create(
    State(pool): State<PgPool>,
    Trace(trace): Trace,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> Result<(StatusCode, Json<CustomerCreated>), ApiError> {
    let new = NewCustomer {
        name: CustomerName::parse(body.name)?,
        credit_limit: Amount::non_negative(body.credit_limit)?,
    };
    let committed = customers::create(&pool, new, &trace).await?;
    tracing::info!(customer_id = %committed.value.id, "customer created");
    Ok((
        StatusCode::CREATED,
        Json(CustomerCreated {
            customer_id: committed.value.id,
        }),
    ))
}

pub async fn get(State(pool): State<PgPool>, ApiPath(id): ApiPath<Uuid>) -> Result<Json<Customer>, ApiError> {
    Ok(Json(customers::find(&pool, id).await?))
}
