//! HTTP routes of outgoing webhooks: endpoints (list with their 24 h success rate, create —
//! answering the generated secret once —, delete, enable again) and deliveries (list by state
//! and endpoint with their attempts, retry one, retry every failed one, replay a time range).
//! Every endpoint has a kind (`webhook` or a notifier such as `slack`), and a "send test" that
//! queues a `notifier.test` message to it alone. Reads need the read scope, changes the admin
//! scope.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::endpoints::{self, Endpoint, EndpointSpec};
use super::queue::{self, AttemptRow, DeliveryRow};
use crate::access::Scope;
use crate::app::AppState;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(delete_endpoint))
        .routes(routes!(enable_endpoint))
        .routes(routes!(test_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(delivery_attempts))
        .routes(routes!(retry_delivery))
        .routes(routes!(retry_failed))
        .routes(routes!(replay))
}

/// An endpoint with its deliveries of the last 24 hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub succeeded_24h: i64,
    pub failed_24h: i64,
    pub pending_24h: i64,
    /// Succeeded ÷ (succeeded + failed) over 24 h; `null` without finished deliveries.
    pub success_rate_24h: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// Every webhook endpoint (never its secret), with its success rate over 24 hours. URLs are
/// shown masked to every caller, admins included: user info, token-like path segments and
/// credential query values (`token`, `key`, `secret`, `signature`, …) read `********`.
#[utoipa::path(get, path = "/api/v1/webhooks/endpoints", tag = "webhooks",
    security(("api_key" = ["read"])),
    responses((status = 200, body = EndpointList), (status = 403, body = ErrorBody)))]
async fn list_endpoints(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<EndpointList>> {
    p.require(Scope::Read)?;
    let stats = queue::stats(&state.store, now_ms() - 86_400_000).await?;
    let endpoints = endpoints::list(&state.store)
        .await?
        .into_iter()
        .map(|endpoint| {
            let (s, f, pending) = stats
                .iter()
                .find(|(id, ..)| *id == endpoint.id)
                .map(|(_, s, f, p)| (*s, *f, *p))
                .unwrap_or_default();
            EndpointView {
                endpoint,
                succeeded_24h: s,
                failed_24h: f,
                pending_24h: pending,
                success_rate_24h: (s + f > 0).then(|| s as f64 / (s + f) as f64),
            }
        })
        .collect();
    Ok(Json(EndpointList { endpoints }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    pub id: i64,
    /// A webhook's signing secret (`whsec_…`): shown this once. `null` for notifier kinds,
    /// whose secret was given and is never shown again.
    pub secret: Option<String>,
}

/// Registers an endpoint or notifier (`kind` and the kind's fields; `event_types`: types,
/// `prefix.*` or `*`). A webhook's signing secret is generated unless given, and answered
/// once; other kinds' secrets are never answered.
#[utoipa::path(post, path = "/api/v1/webhooks/endpoints", tag = "webhooks",
    security(("api_key" = ["admin"])), request_body = EndpointSpec,
    responses((status = 201, body = CreatedEndpoint), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(spec): Json<EndpointSpec>,
) -> Result<(StatusCode, Json<CreatedEndpoint>)> {
    p.require(Scope::Admin)?;
    let (id, secret) = endpoints::create(
        &state.store,
        &state.master_key,
        &spec,
        &client.actor(&p),
        now_ms(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint {
            id,
            secret: secret.map(|s| s.expose()),
        }),
    ))
}

/// Deletes an endpoint with its deliveries and their attempts.
#[utoipa::path(delete, path = "/api/v1/webhooks/endpoints/{id}", tag = "webhooks",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Endpoint id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The endpoint is declared in the configuration file.")))]
async fn delete_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    endpoints::delete(&state.store, id, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turns a disabled endpoint on again (its failed deliveries can then be retried).
#[utoipa::path(post, path = "/api/v1/webhooks/endpoints/{id}/enable", tag = "webhooks",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Endpoint id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn enable_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    endpoints::enable(&state.store, id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    /// The `notifier.test` message; its delivery shows in the deliveries view.
    pub message_id: String,
}

/// "Send test": queues a `notifier.test` message to this endpoint alone; the attempt then
/// shows in the deliveries view like any other.
#[utoipa::path(post, path = "/api/v1/webhooks/endpoints/{id}/test", tag = "webhooks",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Endpoint id")),
    responses((status = 202, body = TestQueued), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn test_endpoint(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<TestQueued>)> {
    p.require(Scope::Admin)?;
    let message_id = queue_test(&state, id, &client.actor(&p).name).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { message_id })))
}

/// Queues a `notifier.test` message to endpoint `id` alone (the API's and the page's "send
/// test"); returns its message id.
pub(crate) async fn queue_test(state: &AppState, id: i64, requested_by: &str) -> Result<String> {
    let endpoint = endpoints::get(&state.store, id).await?;
    let data = serde_json::json!({
        "summary": format!("Test notification from opsdeck to {}", endpoint.name),
        "severity": "info",
        "endpoint": endpoint.name,
        "requested_by": requested_by,
        "url": state.config.server.public_url,
    });
    let mut tx = state.store.begin().await?;
    let message_id = queue::enqueue_to(&mut tx, "notifier.test", &data, now_ms(), &[id]).await?;
    tx.commit().await?;
    Ok(message_id)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `pending`, `succeeded` or `failed`.
    status: Option<String>,
    endpoint: Option<i64>,
    /// The last id of the previous page.
    before: Option<i64>,
    /// 1-500, default 100.
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRow>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<i64>,
}

/// Deliveries newest first, by state and endpoint.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks",
    security(("api_key" = ["read"])), params(DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryList>> {
    p.require(Scope::Read)?;
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "pending" | "succeeded" | "failed")
    {
        return Err(ApiError::Invalid(
            "status: must be pending, succeeded or failed".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid("limit: must be 1 to 500".into()));
    }
    let rows = queue::deliveries(
        &state.store,
        q.status.as_deref(),
        q.endpoint,
        q.before,
        limit,
    )
    .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(DeliveryList {
        deliveries: rows,
        next_before,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptRow>,
}

/// Every attempt of one delivery: status, latency, the start of the answer, the error.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries/{id}/attempts", tag = "webhooks",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Delivery id")),
    responses((status = 200, body = AttemptList), (status = 403, body = ErrorBody)))]
async fn delivery_attempts(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<AttemptList>> {
    p.require(Scope::Read)?;
    Ok(Json(AttemptList {
        attempts: queue::attempts(&state.store, id).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// Deliveries made due again.
    pub retried: u64,
}

/// Retries one failed delivery now, with a fresh retry schedule.
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/{id}/retry", tag = "webhooks",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Delivery id")),
    responses((status = 200, body = Retried), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn retry_delivery(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<Retried>> {
    p.require(Scope::Admin)?;
    let retried = queue::retry_failed(&state.store, Some(id), None, now_ms()).await?;
    if retried == 0 {
        return Err(ApiError::Conflict(format!(
            "delivery {id} is not a failed delivery to an enabled endpoint"
        )));
    }
    Ok(Json(Retried { retried }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RetryQuery {
    /// Only this endpoint's failed deliveries.
    endpoint: Option<i64>,
}

/// Retries every failed delivery to an enabled endpoint now, with a fresh retry schedule.
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/retry-failed", tag = "webhooks",
    security(("api_key" = ["admin"])), params(RetryQuery),
    responses((status = 200, body = Retried), (status = 403, body = ErrorBody)))]
async fn retry_failed(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<RetryQuery>,
) -> Result<Json<Retried>> {
    p.require(Scope::Admin)?;
    let retried = queue::retry_failed(&state.store, None, q.endpoint, now_ms()).await?;
    Ok(Json(Retried { retried }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub endpoint: i64,
    /// RFC 3339; messages created at or after.
    pub from: String,
    /// RFC 3339; messages created before.
    pub to: String,
}

/// Sends the messages of a time range again to an endpoint (those of the types it takes).
#[utoipa::path(post, path = "/api/v1/webhooks/replay", tag = "webhooks",
    security(("api_key" = ["admin"])), request_body = ReplayRequest,
    responses((status = 200, body = Retried), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn replay(
    State(state): State<AppState>,
    Auth(p): Auth,
    Json(r): Json<ReplayRequest>,
) -> Result<Json<Retried>> {
    p.require(Scope::Admin)?;
    let parse = |field: &str, text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|_| ApiError::Invalid(format!("{field}: not an RFC 3339 time")))
    };
    let (from, to) = (parse("from", &r.from)?, parse("to", &r.to)?);
    if to <= from || to - from > 31 * 86_400_000 {
        return Err(ApiError::Invalid(
            "to: must be after from, at most 31 days later".into(),
        ));
    }
    let retried = queue::replay(&state.store, r.endpoint, from, to, now_ms()).await?;
    Ok(Json(Retried { retried }))
}
