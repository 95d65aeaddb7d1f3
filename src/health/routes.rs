//! HTTP routes of the health domain: the integrations grid, one integration, and its results.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::HealthError;
pub use super::grid::{Integration, Latency, Uptime};
use super::monitor::MonitorSpec;
use super::store;
use crate::access::Scope;
use crate::app::AppState;
use crate::args;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::usage::quota::rfc3339 as iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_integrations, create_integration))
        .routes(routes!(
            get_integration,
            update_integration,
            delete_integration
        ))
        .routes(routes!(get_definition))
        .routes(routes!(get_readings))
        .routes(routes!(get_rollups))
        .routes(routes!(get_extras))
        .routes(routes!(pause_integration))
        .routes(routes!(resume_integration))
        .routes(routes!(get_results))
        .routes(routes!(check_now))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<Integration>,
}

async fn integrations(state: &AppState, only: Option<i64>) -> Result<Vec<Integration>> {
    Ok(state.health.rows(&state.store, only).await?)
}

/// The status grid: every monitor's state, last check, uptime over 24 h / 7 d / 30 d and
/// latency percentiles over 24 h. Problems first: down monitors, then degraded ones, then the
/// rest, each group by name.
#[utoipa::path(get, path = "/api/v1/integrations", tag = "health", security(("api_key" = ["read"])),
    responses((status = 200, body = IntegrationList), (status = 403, body = ErrorBody)))]
async fn list_integrations(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    p.require(Scope::Read)?;
    let body = state.health.grid_json(&state.store).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// One monitor, as in the grid.
#[utoipa::path(get, path = "/api/v1/integrations/{id}", tag = "health", security(("api_key" = ["read"])),
    params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = Integration), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<Integration>> {
    p.require(Scope::Read)?;
    if id <= 0 {
        return Err(ApiError::NotFound(format!("no integration {id}")));
    }
    Ok(Json(one(&state, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ResultsQuery {
    /// Most results to return, newest first (1-1000, default 100).
    limit: Option<i64>,
    /// Only results before this time (RFC 3339), to page back.
    before: Option<String>,
}

/// One stored check.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultRow {
    #[serde(skip)]
    at: i64,
    /// `up`, `degraded` or `down`.
    pub verdict: String,
    pub latency_us: i64,
    pub status: Option<i64>,
    /// Why the check failed or is degraded. Administrators get it with what the peer sent (a
    /// body excerpt, the value a condition read, a provider's message); read keys and viewers
    /// get the status and a generic reason (`HTTP 500`, `condition failed: [BODY].status ==
    /// ok`).
    pub error: Option<String>,
    /// Rate-limit and quota headers as `[[name, value], …]` (JSON text).
    pub headers: Option<String>,
    #[serde(skip)]
    error_detail: Option<String>,
}
crate::from_row!(ResultRow {
    at,
    verdict,
    latency_us,
    status,
    error,
    headers,
    error_detail
});

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultItem {
    pub at: String,
    #[serde(flatten)]
    pub result: ResultRow,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultList {
    pub results: Vec<ResultItem>,
}

/// A monitor's raw check results, newest first.
#[utoipa::path(get, path = "/api/v1/integrations/{id}/results", tag = "health",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Monitor id"), ResultsQuery),
    responses((status = 200, body = ResultList), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_results(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<ResultsQuery>,
) -> Result<Json<ResultList>> {
    p.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid("limit: must be 1 to 1000".into()));
    }
    let before = match q.before.as_deref() {
        Some(t) => crate::usage::api::parse_time("before", t)?,
        None => i64::MAX,
    };
    let exists: Option<(i64,)> = state
        .store
        .fetch_optional("SELECT id FROM monitors WHERE id = $1", args![id])
        .await
        .map_err(HealthError::from)?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("no integration {id}")));
    }
    let rows: Vec<ResultRow> = state
        .store
        .fetch_all(
            "SELECT at, verdict, latency_us, status, error, headers, error_detail \
             FROM check_results WHERE monitor_id = $1 AND at < $2 ORDER BY at DESC LIMIT $3",
            args![id, before, limit],
        )
        .await
        .map_err(HealthError::from)?;
    let admin = p.require(Scope::Admin).is_ok();
    Ok(Json(ResultList {
        results: rows
            .into_iter()
            .map(|mut r| {
                if let Some(detail) = r.error_detail.take().filter(|_| admin) {
                    r.error = Some(detail);
                }
                ResultItem {
                    at: iso(r.at),
                    result: r,
                }
            })
            .collect(),
    }))
}

/// What a manual check found, and the monitor's state after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckNow {
    /// `up`, `degraded` or `down`.
    pub verdict: String,
    pub latency_ms: f64,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The monitor's state after this check (thresholds apply as to scheduled checks).
    pub state: String,
}

/// Runs one check of the monitor now and records it like a scheduled one.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/check", tag = "health",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = CheckNow), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn check_now(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<CheckNow>> {
    p.require(Scope::Admin)?;
    let (result, tracker) = state
        .health
        .check_now(&state.store, &state.master_key, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    Ok(Json(CheckNow {
        verdict: result.verdict.as_str().into(),
        latency_ms: result.latency_us as f64 / 1000.0,
        status: result.status,
        // Only administrators run a check: they see what the peer said.
        error: result.detail.or(result.error),
        state: tracker.state.as_str().into(),
    }))
}

async fn one(state: &AppState, id: i64) -> Result<Integration> {
    integrations(state, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))
}

/// Creates a monitor (checked at once by the scheduler, on its interval after). The definition
/// is validated as in the config file, with the field at fault named.
#[utoipa::path(post, path = "/api/v1/integrations", tag = "health", security(("api_key" = ["admin"])),
    request_body = MonitorSpec,
    responses((status = 201, body = Integration), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(spec): Json<MonitorSpec>,
) -> Result<(StatusCode, Json<Integration>)> {
    p.require(Scope::Admin)?;
    let id = store::create(&state.store, &state.master_key, &spec, &client.actor(&p)).await?;
    state.health.reload().await;
    Ok((StatusCode::CREATED, Json(one(&state, id).await?)))
}

/// Replaces a monitor's definition. Monitors from the config file are read-only (409).
/// Credentials sent back as the definition route masks them keep their stored values.
#[utoipa::path(put, path = "/api/v1/integrations/{id}", tag = "health", security(("api_key" = ["admin"])),
    params(("id" = i64, Path, description = "Monitor id")), request_body = MonitorSpec,
    responses((status = 200, body = Integration), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
    Json(spec): Json<MonitorSpec>,
) -> Result<Json<Integration>> {
    p.require(Scope::Admin)?;
    store::update(
        &state.store,
        &state.master_key,
        id,
        &spec,
        &client.actor(&p),
    )
    .await?;
    state.health.reload().await;
    Ok(Json(one(&state, id).await?))
}

/// Deletes a monitor with its history. Monitors from the config file are read-only (409).
#[utoipa::path(delete, path = "/api/v1/integrations/{id}", tag = "health",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn delete_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    state
        .health
        .delete(&state.store, id, &client.actor(&p))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A monitor's definition as stored, with likely credentials (URL passwords, key and token
/// query values, authorization and key headers) masked as `********`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Definition {
    pub id: i64,
    /// `config` (read-only) or `api`.
    pub source: String,
    pub paused: bool,
    pub definition: MonitorSpec,
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/definition", tag = "health",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = Definition), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_definition(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<Definition>> {
    p.require(Scope::Admin)?;
    let stored = store::get(&state.store, &state.master_key, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    Ok(Json(Definition {
        id,
        source: stored.source,
        paused: stored.paused,
        definition: super::definition::masked(&stored.spec),
    }))
}

async fn set_paused(
    state: &AppState,
    p: &crate::access::Principal,
    client: &ClientAddr,
    id: i64,
    paused: bool,
) -> Result<Json<Integration>> {
    p.require(Scope::Admin)?;
    store::set_paused(&state.store, id, paused, &client.actor(p)).await?;
    state.health.reload().await;
    Ok(Json(one(state, id).await?))
}

/// Stops checking a monitor (config ones too: pausing is an operator's switch, kept across
/// restarts); its history stays.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/pause", tag = "health",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = Integration), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn pause_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<Json<Integration>> {
    set_paused(&state, &p, &client, id, true).await
}

/// Checks a paused monitor again on its interval.
#[utoipa::path(post, path = "/api/v1/integrations/{id}/resume", tag = "health",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = Integration), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn resume_integration(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<Json<Integration>> {
    set_paused(&state, &p, &client, id, false).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RollupsQuery {
    /// `minute` (the last 1-24 hours), `hour` (1-30 days) or `day` (1-400 days); default `hour`.
    granularity: Option<String>,
    /// How far back: hours for `minute`, days for `hour` and `day` (default 1 hour, 1 day, 30
    /// days).
    span: Option<i64>,
}

/// One minute, hour or day of a monitor's checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollupPoint {
    /// Start of the bucket (RFC 3339).
    pub at: String,
    pub checks: i64,
    pub up: i64,
    pub degraded: i64,
    pub down: i64,
    /// Share of checks that passed (up or degraded), 0..1.
    pub uptime: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RollupSeries {
    pub granularity: String,
    pub points: Vec<RollupPoint>,
}

/// A monitor's uptime and latency percentiles per minute, hour or day, oldest first, from the
/// rollups written with each batch of results (never from the raw results).
#[utoipa::path(get, path = "/api/v1/integrations/{id}/rollups", tag = "health",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Monitor id"), RollupsQuery),
    responses((status = 200, body = RollupSeries), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_rollups(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<RollupsQuery>,
) -> Result<Json<RollupSeries>> {
    p.require(Scope::Read)?;
    let granularity = q.granularity.as_deref().unwrap_or("hour");
    let (unit_ms, default, most) = match granularity {
        "minute" => (3_600_000, 1, 24),
        "hour" => (86_400_000, 1, 30),
        "day" => (86_400_000, 30, 400),
        _ => {
            return Err(ApiError::Invalid(
                "granularity: must be minute, hour or day".into(),
            ));
        }
    };
    let span = q.span.unwrap_or(default);
    if !(1..=most).contains(&span) {
        return Err(ApiError::Invalid(format!(
            "span: must be 1 to {most} for {granularity}"
        )));
    }
    let known: Option<(i64,)> = state
        .store
        .fetch_optional("SELECT id FROM monitors WHERE id = $1", args![id])
        .await
        .map_err(HealthError::from)?;
    if known.is_none() {
        return Err(ApiError::NotFound(format!("no integration {id}")));
    }
    let from = crate::store::now_ms() - span * unit_ms;
    let rows = super::history::rollups(&state.store, id, granularity, from).await?;
    let quantile = |r: &super::history::Rollup, q| store::quantile(&r.histogram, q);
    Ok(Json(RollupSeries {
        granularity: granularity.to_string(),
        points: rows
            .iter()
            .map(|r| RollupPoint {
                at: iso(r.bucket),
                checks: r.checks,
                up: r.up,
                degraded: r.degraded,
                down: r.down,
                uptime: r.uptime(),
                mean_latency_ms: r.mean_latency_ms(),
                latency_ms: Latency {
                    p50: quantile(r, 0.5),
                    p95: quantile(r, 0.95),
                    p99: quantile(r, 0.99),
                },
            })
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadingsQuery {
    /// Days of history, 1-30 (default 7).
    days: Option<i64>,
}

/// The figures a provider monitor's checks read (credits, balances, quota use, rate-limit
/// headroom) over time, with each quota's forecast.
#[utoipa::path(get, path = "/api/v1/integrations/{id}/readings", tag = "health",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Monitor id"), ReadingsQuery),
    responses((status = 200, body = super::forecast::Readings), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_readings(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<ReadingsQuery>,
) -> Result<Json<super::forecast::Readings>> {
    p.require(Scope::Read)?;
    let days = q.days.unwrap_or(7);
    if !(1..=30).contains(&days) {
        return Err(ApiError::Invalid("days: must be 1 to 30".into()));
    }
    let kind: Option<(String,)> = state
        .store
        .fetch_optional("SELECT kind FROM monitors WHERE id = $1", args![id])
        .await
        .map_err(HealthError::from)?;
    let (kind,) = kind.ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    Ok(Json(
        super::forecast::readings(&state.store, id, &kind, days, crate::store::now_ms()).await?,
    ))
}

/// A provider monitor's extras: how the latest collection went, and the latest successful
/// one's tables (`snapshot`, tagged by `provider`) and figures (`readings`). Monitors of kinds
/// without extras answer with `interval_s: null` and nothing collected.
#[utoipa::path(get, path = "/api/v1/integrations/{id}/extras", tag = "health",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Monitor id")),
    responses((status = 200, body = super::extras::store::Latest), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_extras(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<super::extras::store::Latest>> {
    p.require(Scope::Read)?;
    let stored = store::get(&state.store, &state.master_key, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    Ok(Json(
        super::extras::store::latest(&state.store, id, stored.monitor.extras_interval).await?,
    ))
}
