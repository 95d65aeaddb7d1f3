//! JSON routes for plans, customer plan assignments, quotas and usage figures. Thin: each
//! handler checks the caller's scope and hands over to plans, quota or report.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::plans::{self, Assignment, Plan, PlanInput};
use super::quota::{self, Change, Quota};
use super::report::{self, RecentEvent, RecentFilter, Usage};
use crate::access::{Principal, Scope};
use crate::app::AppState;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(update_plan, delete_plan))
        .routes(routes!(set_customer_plan, remove_customer_plan))
        .routes(routes!(get_quota))
        .routes(routes!(list_quota_changes))
        .routes(routes!(get_usage))
        .routes(routes!(list_events))
}

/// All plans, with how many customers are on each.
#[utoipa::path(get, path = "/api/v1/plans", tag = "usage", security(("api_key" = ["read"])),
    responses((status = 200, body = [Plan]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_plans(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<Plan>>> {
    p.require(Scope::Read)?;
    Ok(Json(plans::list(&state.store).await?))
}

/// Creates a plan (plans declared in the config file are managed there).
#[utoipa::path(post, path = "/api/v1/plans", tag = "usage", security(("api_key" = ["admin"])), request_body = PlanInput,
    responses((status = 201, body = Plan), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_plan(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(body): Json<PlanInput>,
) -> Result<(StatusCode, Json<Plan>)> {
    p.require(Scope::Admin)?;
    let plan = plans::create(&state.store, &body, &client.actor(&p)).await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// Edits a plan created here; the customers on it are re-evaluated against the new quotas.
#[utoipa::path(put, path = "/api/v1/plans/{id}", tag = "usage", security(("api_key" = ["admin"])), request_body = PlanInput,
    params(("id" = String, Path, description = "Plan id")),
    responses((status = 200, body = Plan), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_plan(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<String>,
    Json(body): Json<PlanInput>,
) -> Result<Json<Plan>> {
    p.require(Scope::Admin)?;
    let plan = plans::update(&state.store, &id, &body, &client.actor(&p)).await?;
    state.quota_watch.touch_plan(&state.store, &id).await?;
    Ok(Json(plan))
}

/// Deletes a plan created here that no customer is on.
#[utoipa::path(delete, path = "/api/v1/plans/{id}", tag = "usage", security(("api_key" = ["admin"])),
    params(("id" = String, Path, description = "Plan id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_plan(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    plans::delete(&state.store, &id, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlanChoice {
    /// Plan id.
    plan: String,
}

/// Puts a customer on a plan (until Stripe sync maps customers from their subscriptions).
#[utoipa::path(put, path = "/api/v1/customers/{id}/plan", tag = "usage", security(("api_key" = ["admin"])),
    request_body = PlanChoice, params(("id" = String, Path, description = "Customer id (the events' subject)")),
    responses((status = 200, body = Assignment), (status = 422, body = ErrorBody)))]
async fn set_customer_plan(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<String>,
    Json(body): Json<PlanChoice>,
) -> Result<Json<Assignment>> {
    p.require(Scope::Admin)?;
    let a = plans::assign(&state.store, &id, &body.plan, "manual", &client.actor(&p)).await?;
    state.quota_watch.touch(&id);
    Ok(Json(a))
}

/// Takes a customer off their plan.
#[utoipa::path(delete, path = "/api/v1/customers/{id}/plan", tag = "usage", security(("api_key" = ["admin"])),
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_customer_plan(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    plans::unassign(&state.store, &id, &client.actor(&p)).await?;
    state.quota_watch.touch(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Read access to one customer's figures: `read`, the app's own `ingest` key (it enforces the
/// quota), or that customer's tenant key.
fn require_customer(p: &Principal, customer: &str) -> Result<()> {
    let scopes = p.scopes();
    if scopes.allows(&Scope::Read)
        || scopes.allows(&Scope::Ingest)
        || scopes.allows(&Scope::Tenant(customer.to_string()))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this credential needs the read or ingest scope, or this customer's tenant scope"
                .into(),
        ))
    }
}

/// A customer's use of their plan this month and its state (`ok`, `warning` ≥ 80 %,
/// `critical` ≥ 90 %, `over` ≥ 100 %, `suspended` at the plan's hard limit). Cheap enough to
/// call before serving each request.
#[utoipa::path(get, path = "/api/v1/customers/{id}/quota", tag = "usage", security(("api_key" = ["read"]), ("api_key" = ["ingest"]), ("api_key" = ["tenant:<customer-id>"])),
    params(("id" = String, Path, description = "Customer id (the events' subject)")),
    responses((status = 200, body = Quota), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_quota(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Quota>> {
    require_customer(&p, &id)?;
    let usage = &state.config.usage;
    Ok(Json(
        quota::quota(
            &state.store,
            &id,
            &usage.default_plan,
            f64::from(usage.quota_hysteresis_percent),
        )
        .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangesQuery {
    /// Only changes with a larger id (for polling consumers).
    after_id: Option<i64>,
    customer: Option<String>,
    /// At most 1000; default 100.
    limit: Option<i64>,
}

/// Recorded quota state changes, oldest first.
#[utoipa::path(get, path = "/api/v1/quota/changes", tag = "usage", security(("api_key" = ["read"])),
    params(ChangesQuery),
    responses((status = 200, body = [Change]), (status = 403, body = ErrorBody)))]
async fn list_quota_changes(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Vec<Change>>> {
    p.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        quota::changes(
            &state.store,
            q.customer.as_deref(),
            q.after_id.unwrap_or(0),
            limit,
        )
        .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Only this customer.
    customer: Option<String>,
    /// RFC 3339 time or date; default 30 days before `to`.
    from: Option<String>,
    /// RFC 3339 time or date; default now.
    to: Option<String>,
    /// `minute`, `hour` or `day` (default).
    interval: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct UsageReply {
    #[serde(flatten)]
    usage: Usage,
    /// Customers in warning or worse this month, worst first.
    at_risk: Vec<quota::AtRisk>,
    /// Customers by percent of their quota this month, highest first (an `ok` customer's
    /// percent may trail by up to a point until the next evaluation).
    top_by_quota: Vec<quota::AtRisk>,
    /// The newest events in the range's customer filter.
    recent: Vec<RecentEvent>,
}

pub(crate) fn parse_time(field: &str, text: &str) -> Result<i64> {
    crate::costs::import::parse_effective_from(text)
        .map_err(|e| ApiError::Invalid(format!("{field}: {e}")))
}

/// Calls per interval, per endpoint category, status classes and latency percentiles, each
/// headline total beside the previous period's, top customers by use and by percent of quota,
/// customers at risk and the recent event log.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("api_key" = ["read"])),
    params(UsageQuery),
    responses((status = 200, body = UsageReply), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_usage(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageReply>> {
    p.require(Scope::Read)?;
    let to = match &q.to {
        Some(t) => parse_time("to", t)?,
        None => now_ms(),
    };
    let from = match &q.from {
        Some(t) => parse_time("from", t)?,
        None => to - 30 * 86_400_000,
    };
    let query = report::Query::new(
        q.customer.clone(),
        from,
        to,
        q.interval.as_deref().unwrap_or("day"),
    )?;
    let all = q.customer.is_none();
    let filter = RecentFilter {
        customer: q.customer,
        ..Default::default()
    };
    let store = &state.store;
    // Independent reads, run at once on separate pool connections.
    let (usage, at_risk, top_by_quota, recent) = tokio::try_join!(
        report::usage(store, &query),
        async {
            Ok(if all {
                quota::at_risk(store, 50).await?
            } else {
                Vec::new()
            })
        },
        async {
            Ok(if all {
                quota::by_percent(store, 20).await?
            } else {
                Vec::new()
            })
        },
        report::recent(store, &filter, 50),
    )?;
    let recent = recent.into_iter().map(|(_, e)| e).collect();
    Ok(Json(UsageReply {
        usage,
        at_risk,
        top_by_quota,
        recent,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    customer: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    /// Page backwards: the `next_before` of the previous page.
    before: Option<i64>,
    /// At most 500; default 50.
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct EventsPage {
    events: Vec<RecentEvent>,
    /// Pass as `before` for the next (older) page; null at the end.
    next_before: Option<i64>,
}

/// The raw event log, newest first, with filters.
#[utoipa::path(get, path = "/api/v1/events", tag = "usage", security(("api_key" = ["read"])),
    params(EventsQuery),
    responses((status = 200, body = EventsPage), (status = 403, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>> {
    p.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = RecentFilter {
        customer: q.customer,
        kind: q.kind,
        source: q.source,
        before_seq: q.before,
    };
    let rows = report::recent(&state.store, &filter, limit).await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(seq, _)| *seq))
        .flatten();
    Ok(Json(EventsPage {
        events: rows.into_iter().map(|(_, e)| e).collect(),
        next_before,
    }))
}
