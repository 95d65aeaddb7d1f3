//! JSON routes for provider cost: the cost figures and the pricing tables.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::PriceRow;
use super::prices::{self, Price};
use super::report::{self, Costs};
use crate::access::Scope;
use crate::app::AppState;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::money::{self, PICO};
use crate::overview::parse_period;
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_costs))
        .routes(routes!(list_prices, add_price))
        .routes(routes!(delete_price))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CostsQuery {
    /// Length of the period ending now, e.g. `30d` (default) or `24h`.
    period: Option<String>,
}

/// Provider cost for the period (days, UTC) per provider, sku, customer and day, with the
/// previous period of the same length and unpriced usage.
#[utoipa::path(get, path = "/api/v1/metrics/costs", tag = "metrics", security(("api_key" = ["read"])),
    params(CostsQuery),
    responses((status = 200, body = Costs), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_costs(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<CostsQuery>,
) -> Result<Json<Costs>> {
    p.require(Scope::Read)?;
    let secs = parse_period(q.period.as_deref().unwrap_or("30d")).map_err(ApiError::Invalid)?;
    let to = now_ms();
    Ok(Json(
        report::costs(&state.store, to - secs * 1000, to).await?,
    ))
}

/// Every dated price; `current` marks the one in force now for each provider and sku.
#[utoipa::path(get, path = "/api/v1/prices", tag = "costs", security(("api_key" = ["read"])),
    responses((status = 200, body = [Price]), (status = 403, body = ErrorBody)))]
async fn list_prices(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<Price>>> {
    p.require(Scope::Read)?;
    Ok(Json(prices::list(&state.store).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    pub provider: String,
    pub sku: String,
    /// credit, image, character, second, token, request, call or minute.
    pub unit: String,
    /// USD per unit as an exact decimal string, e.g. "0.0045".
    pub price_usd: String,
    /// Date or RFC 3339 time from which it applies; events before keep their earlier price.
    pub effective_from: String,
}

impl NewPrice {
    pub fn to_row(&self) -> Result<PriceRow> {
        let price_pico = money::parse_scaled(&self.price_usd, PICO)
            .map_err(|e| ApiError::Invalid(format!("price_usd: {e}")))?;
        let from = super::import::parse_effective_from(&self.effective_from)
            .map_err(|e| ApiError::Invalid(format!("effective_from: {e}")))?;
        Ok(PriceRow {
            provider: self.provider.trim().to_string(),
            sku: self.sku.trim().to_string(),
            unit: self.unit.trim().to_string(),
            price_pico,
            effective_from: Some(from),
        })
    }
}

/// Adds a dated price (replacing one for the same provider, sku and date).
#[utoipa::path(post, path = "/api/v1/prices", tag = "costs", security(("api_key" = ["admin"])), request_body = NewPrice,
    responses((status = 201), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_price(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(body): Json<NewPrice>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    let row = body.to_row()?;
    prices::add(&state.store, &row, &client.actor(&p)).await?;
    state.prices.reload(&state.store).await?;
    Ok(StatusCode::CREATED)
}

/// Deletes one dated price.
#[utoipa::path(delete, path = "/api/v1/prices/{id}", tag = "costs", security(("api_key" = ["admin"])),
    params(("id" = i64, Path, description = "Price id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_price(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    prices::delete(&state.store, id, &client.actor(&p)).await?;
    state.prices.reload(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}
