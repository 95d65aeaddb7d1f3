//! HTTP routes of the health domain: the integrations grid, one integration, and its results.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::HealthError;
use super::monitor::MonitorSpec;
use super::store::{self, BUCKETS};
use crate::access::Scope;
use crate::app::AppState;
use crate::args;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::{Store, now_ms};
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
        .routes(routes!(pause_integration))
        .routes(routes!(resume_integration))
        .routes(routes!(get_results))
        .routes(routes!(check_now))
}

/// Share of checks that passed (up or degraded), 0..1; `null` without checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uptime {
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    #[serde(rename = "30d")]
    pub month: Option<f64>,
}

/// Check latency percentiles over the last 24 hours, in milliseconds (the upper bound of the
/// histogram bucket each falls in).
#[derive(Debug, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// One row of the status grid.
#[derive(Debug, Serialize, ToSchema)]
pub struct Integration {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// `config` (read-only) or `api`.
    pub source: String,
    /// `up`, `degraded`, `down`, `unknown` or `paused`.
    pub state: String,
    /// When the state began (RFC 3339).
    pub since: Option<String>,
    pub last_check: Option<String>,
    pub last_latency_ms: Option<f64>,
    pub last_error: Option<String>,
    /// How often it is checked, in seconds; 0 when the scheduler does not run it.
    pub interval_secs: f64,
    pub uptime: Uptime,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<Integration>,
}

const DAY_MS: i64 = 86_400_000;

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    name: String,
    kind: String,
    source: String,
    paused: i64,
    state: Option<String>,
    since: Option<i64>,
    last_check_at: Option<i64>,
    last_latency_us: Option<i64>,
    last_error: Option<String>,
}

/// Uptime and 24-hour histogram per monitor, from the hour and day rollups.
async fn summaries(
    store: &Store,
    now: i64,
    only: Option<i64>,
) -> Result<std::collections::HashMap<i64, (Uptime, Latency)>> {
    let hour_from = now - DAY_MS;
    let day_from = |days: i64| (now / DAY_MS - days + 1) * DAY_MS;
    let histogram: String = (0..BUCKETS)
        .map(|i| {
            format!(", CAST(SUM(CASE WHEN granularity = 'hour' THEN b{i} ELSE 0 END) AS BIGINT)")
        })
        .collect();
    let sql = format!(
        "SELECT monitor_id, \
         CAST(SUM(CASE WHEN granularity = 'hour' THEN checks ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN granularity = 'hour' THEN checks - down ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN granularity = 'day' AND bucket >= $3 THEN checks ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN granularity = 'day' AND bucket >= $3 THEN checks - down ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN granularity = 'day' THEN checks ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN granularity = 'day' THEN checks - down ELSE 0 END) AS BIGINT){histogram} \
         FROM check_rollups WHERE ((granularity = 'hour' AND bucket >= $1) \
         OR (granularity = 'day' AND bucket >= $2)) AND ($4 = 0 OR monitor_id = $4) \
         GROUP BY monitor_id"
    );
    let rows: Vec<SummaryRow> = store
        .fetch_all_assembled(
            sql,
            args![hour_from, day_from(30), day_from(7), only.unwrap_or(0)],
        )
        .await
        .map_err(HealthError::from)?;
    let share = |checks: i64, passed: i64| (checks > 0).then(|| passed as f64 / checks as f64);
    Ok(rows
        .into_iter()
        .map(|r| {
            let uptime = Uptime {
                day: share(r.counts[0], r.counts[1]),
                week: share(r.counts[2], r.counts[3]),
                month: share(r.counts[4], r.counts[5]),
            };
            let latency = Latency {
                p50: store::quantile(&r.histogram, 0.50),
                p95: store::quantile(&r.histogram, 0.95),
                p99: store::quantile(&r.histogram, 0.99),
            };
            (r.monitor_id, (uptime, latency))
        })
        .collect())
}

/// A summary row: the monitor, six counts and the histogram.
struct SummaryRow {
    monitor_id: i64,
    counts: [i64; 6],
    histogram: [i64; BUCKETS],
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for SummaryRow
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> std::result::Result<Self, sqlx::Error> {
        let mut counts = [0; 6];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = row.try_get(1 + i)?;
        }
        let mut histogram = [0; BUCKETS];
        for (i, h) in histogram.iter_mut().enumerate() {
            *h = row.try_get(7 + i)?;
        }
        Ok(Self {
            monitor_id: row.try_get(0)?,
            counts,
            histogram,
        })
    }
}

async fn integrations(state: &AppState, only: Option<i64>) -> Result<Vec<Integration>> {
    let rows: Vec<Row> = state
        .store
        .fetch_all(
            "SELECT m.id, m.name, m.kind, m.source, m.paused, s.state, s.since, s.last_check_at, \
             s.last_latency_us, s.last_error FROM monitors m \
             LEFT JOIN monitor_states s ON s.monitor_id = m.id \
             WHERE ($1 = 0 OR m.id = $1) ORDER BY m.name",
            args![only.unwrap_or(0)],
        )
        .await
        .map_err(HealthError::from)?;
    let mut summaries = summaries(&state.store, now_ms(), only).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let (uptime, latency_ms) = summaries.remove(&r.id).unwrap_or((
                Uptime {
                    day: None,
                    week: None,
                    month: None,
                },
                Latency {
                    p50: None,
                    p95: None,
                    p99: None,
                },
            ));
            Integration {
                interval_secs: state.health.interval(r.id).map_or(0.0, |d| d.as_secs_f64()),
                id: r.id,
                name: r.name,
                kind: r.kind,
                source: r.source,
                state: if r.paused != 0 {
                    "paused".into()
                } else {
                    r.state.unwrap_or_else(|| "unknown".into())
                },
                since: r.since.map(iso),
                last_check: r.last_check_at.map(iso),
                last_latency_ms: r.last_latency_us.map(|us| us as f64 / 1000.0),
                last_error: r.last_error,
                uptime,
                latency_ms,
            }
        })
        .collect())
}

/// The status grid: every monitor's state, last check, uptime over 24 h / 7 d / 30 d and
/// latency percentiles over 24 h.
#[utoipa::path(get, path = "/api/v1/integrations", tag = "health", security(("api_key" = [])),
    responses((status = 200, body = IntegrationList), (status = 403, body = ErrorBody)))]
async fn list_integrations(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<IntegrationList>> {
    p.require(Scope::Read)?;
    Ok(Json(IntegrationList {
        integrations: integrations(&state, None).await?,
    }))
}

/// One monitor, as in the grid.
#[utoipa::path(get, path = "/api/v1/integrations/{id}", tag = "health", security(("api_key" = [])),
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
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ResultRow {
    #[serde(skip)]
    at: i64,
    /// `up`, `degraded` or `down`.
    pub verdict: String,
    pub latency_us: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    /// Rate-limit and quota headers as `[[name, value], …]` (JSON text).
    pub headers: Option<String>,
}

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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id"), ResultsQuery),
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
            "SELECT at, verdict, latency_us, status, error, headers FROM check_results \
             WHERE monitor_id = $1 AND at < $2 ORDER BY at DESC LIMIT $3",
            args![id, before, limit],
        )
        .await
        .map_err(HealthError::from)?;
    Ok(Json(ResultList {
        results: rows
            .into_iter()
            .map(|r| ResultItem {
                at: iso(r.at),
                result: r,
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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id")),
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
        error: result.error,
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
#[utoipa::path(post, path = "/api/v1/integrations", tag = "health", security(("api_key" = [])),
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
#[utoipa::path(put, path = "/api/v1/integrations/{id}", tag = "health", security(("api_key" = [])),
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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id")),
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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id")),
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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id")),
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
    security(("api_key" = [])), params(("id" = i64, Path, description = "Monitor id")),
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
