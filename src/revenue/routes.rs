//! HTTP routes of the revenue domain: the Stripe webhook receiver and the sync status/trigger.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RevenueError;
use super::drill::{self, CustomerDetail};
use super::events::{self, Outcome};
use super::history::Rates;
use super::margin::{GroupBy, MarginReport};
use super::metrics::{self, Interval, RevenueReport};
use super::service::SyncStatus;
use super::stripe::objects::Event;
use super::stripe::signature::{self, DEFAULT_TOLERANCE_SECS};
use crate::access::Scope;
use crate::app::AppState;
use crate::http::auth::Auth;
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_revenue))
        .routes(routes!(get_margin))
        .routes(routes!(get_customer))
        .routes(routes!(stripe_webhook))
        .routes(routes!(sync_status, start_sync))
}

/// `[from, to)` from the query: `to` defaults to now, `from` to `period` (default 30 days)
/// before it.
fn range(from: Option<&str>, to: Option<&str>, period: Option<&str>) -> Result<(i64, i64)> {
    let to = match to {
        Some(t) => crate::usage::api::parse_time("to", t)?,
        None => now_ms(),
    };
    let from = match from {
        Some(t) => crate::usage::api::parse_time("from", t)?,
        None => {
            let secs = crate::overview::parse_period(period.unwrap_or("30d"))
                .map_err(ApiError::Invalid)?;
            to - secs * 1000
        }
    };
    Ok((from, to))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RevenueQuery {
    /// Start (RFC 3339 time or date, UTC); default 30 days before `to`.
    from: Option<String>,
    /// End, exclusive; default now.
    to: Option<String>,
    /// `day` (default), `week` or `month`.
    interval: Option<String>,
}

/// MRR and ARR series with movements, and every revenue figure for the range beside the
/// previous range of the same length: churn and retention, NRR, quick ratio, ARPA, LTV,
/// payment success, dispute and refund rates, subscription growth, net, recurring and
/// non-recurring revenue. Amounts in the reporting currency.
#[utoipa::path(get, path = "/api/v1/metrics/revenue", tag = "metrics", security(("api_key" = ["read"])),
    params(RevenueQuery),
    responses((status = 200, body = RevenueReport), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn get_revenue(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<RevenueQuery>,
) -> Result<Json<RevenueReport>> {
    p.require(Scope::Read)?;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), None)?;
    let interval = Interval::parse(q.interval.as_deref().unwrap_or("day"))?;
    let currency = state.revenue.reporting_currency();
    let rates = Rates::load(&state.store, currency).await?;
    let (from_day, to_day) = metrics::whole_days(from, to.max(from + 1));
    let costs = metrics::provider_costs(&state.store, &rates, from_day, to_day).await?;
    let mut report =
        metrics::report(&state.store, &rates, currency, from, to, interval, costs).await?;
    if let Some(pending) = state.revenue.first_sync_pending(&state.store).await? {
        report.set_pending(pending);
    }
    Ok(Json(report))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MarginQuery {
    /// Length of the period ending now, e.g. `30d` (default); ignored when `from` is given.
    period: Option<String>,
    /// Start (RFC 3339 time or date, UTC).
    from: Option<String>,
    /// End, exclusive; default now.
    to: Option<String>,
    /// `customer` (default), `plan` or `provider`.
    group_by: Option<String>,
    /// How many of the most and of the least profitable groups to list (1–1000, default 50).
    limit: Option<usize>,
}

/// Net revenue (charges less refunds and lost disputes) minus provider cost, per customer, plan
/// or provider, over whole UTC days, beside the previous period of the same length. Amounts in
/// the reporting currency.
#[utoipa::path(get, path = "/api/v1/metrics/margin", tag = "metrics", security(("api_key" = ["read"])),
    params(MarginQuery),
    responses((status = 200, body = MarginReport), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn get_margin(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<MarginQuery>,
) -> Result<Json<MarginReport>> {
    p.require(Scope::Read)?;
    let (from, to) = range(q.from.as_deref(), q.to.as_deref(), q.period.as_deref())?;
    if from >= to {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    let group_by = GroupBy::parse(q.group_by.as_deref().unwrap_or("customer"))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and 1000, not {limit}"
        )));
    }
    let rates = Rates::load(&state.store, state.revenue.reporting_currency()).await?;
    Ok(Json(
        state
            .revenue
            .margin
            .report(&state.store, &rates, group_by, from, to, limit)
            .await?,
    ))
}

/// One customer as revenue sees them: MRR now, plan, every stored Stripe object (with the
/// refunds and disputes of their charges) and their MRR movements: what is behind each figure.
#[utoipa::path(get, path = "/api/v1/revenue/customers/{id}", tag = "revenue", security(("api_key" = ["read"])),
    params(("id" = String, Path, description = "Stripe customer id (the events' subject)")),
    responses((status = 200, body = CustomerDetail), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_customer(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<CustomerDetail>> {
    p.require(Scope::Read)?;
    drill::customer(
        &state.store,
        state.revenue.reporting_currency(),
        &id,
        now_ms(),
    )
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::NotFound(format!("no revenue data for customer {id:?}")))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReply {
    pub received: bool,
    /// `applied`, `duplicate`, `stale` (older than what is stored), `ignored` (a type opsdeck
    /// does not use) or `failed` (the object did not parse; logged with the event id).
    pub outcome: &'static str,
}

/// Receives Stripe events. The `Stripe-Signature` header must carry a `v1` HMAC of the raw
/// body under the endpoint's signing secret, made within the last 5 minutes; anything else is
/// a 400, logged as `rejected` with the reason (at most a few a second) and nothing else is
/// stored. Events are idempotent by id. Without `stripe.webhook_secret` the receiver answers
/// 404 `not_configured`.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "revenue",
    request_body(content = String, content_type = "application/json",
        description = "The Stripe event exactly as sent: the signature covers these bytes."),
    responses((status = 200, body = WebhookReply),
              (status = 400, body = ErrorBody, description = "The Stripe-Signature header is \
                  missing, malformed, stale or does not match, or the body is not a Stripe event."),
              (status = 404, body = ErrorBody, description = "Stripe webhooks are not configured \
                  on this instance (code not_configured): set stripe.webhook_secret."),
              (status = 413, body = ErrorBody, description = "The body exceeds server.max_body_bytes.")))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReply>> {
    let revenue = &state.revenue;
    if revenue.webhook_secret.is_empty() {
        // Not a 503: nothing here will pass by itself; an operator has to set the secret.
        return Err(ApiError::NotConfigured(
            "Stripe webhooks are not configured on this instance: set stripe.webhook_secret \
             to the endpoint's signing secret"
                .into(),
        ));
    }
    let header = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    let verified = signature::verify(
        &body,
        header,
        &revenue.webhook_secret,
        now_ms() / 1000,
        DEFAULT_TOLERANCE_SECS,
    );
    if let Err(e) = verified {
        tracing::warn!(error = %e, "refused a Stripe webhook");
        if revenue.rejected_log.check().is_ok() {
            super::records::log_rejected(&state.store, &e.to_string(), now_ms()).await?;
        }
        return Err(ApiError::BadRequest(e.to_string()));
    }
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not a Stripe event: {e}")))?;
    let outcome = match events::apply(&state.store, &event, "webhook").await {
        Ok(o) => o,
        // Logged with the event id by `apply`; Stripe retrying would not fix the object.
        Err(RevenueError::Malformed(_)) => {
            return Ok(Json(WebhookReply {
                received: true,
                outcome: "failed",
            }));
        }
        Err(e) => return Err(e.into()),
    };
    if outcome.changes_mrr() {
        revenue.mark_dirty();
    }
    Ok(Json(WebhookReply {
        received: true,
        outcome: match outcome {
            Outcome::Applied { .. } => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale { .. } => "stale",
            Outcome::Ignored => "ignored",
        },
    }))
}

/// The Stripe connection's state: whether the figures are stale (with their age), the last
/// error, and the last sync's progress per resource.
#[utoipa::path(get, path = "/api/v1/stripe/sync", tag = "revenue", security(("api_key" = ["read"])),
    responses((status = 200, body = SyncStatus), (status = 403, body = ErrorBody)))]
async fn sync_status(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<SyncStatus>> {
    p.require(Scope::Read)?;
    Ok(Json(state.revenue.status(&state.store, now_ms()).await?))
}

/// Starts a sync in the background (a full backfill when none has run yet, else the events
/// since the last one); progress shows on `GET /api/v1/stripe/sync`.
#[utoipa::path(post, path = "/api/v1/stripe/sync", tag = "revenue", security(("api_key" = ["admin"])),
    responses((status = 202),
        (status = 409, body = ErrorBody, description = "A sync is already running."),
        (status = 503, body = ErrorBody, description = "Stripe is not connected (no stripe.secret_key), \
            or the request took longer than server.request_timeout.")))]
async fn start_sync(State(state): State<AppState>, Auth(p): Auth) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    state.revenue.sync_in_background(&state.store)?;
    Ok(StatusCode::ACCEPTED)
}
