//! HTTP routes of the revenue domain: the Stripe webhook receiver and the sync status/trigger.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::RevenueError;
use super::events::{self, Outcome};
use super::history::Rates;
use super::metrics::{self, Interval, RevenueReport};
use super::records::{self, SyncProgress};
use super::service::Health;
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
        .routes(routes!(stripe_webhook))
        .routes(routes!(sync_status, start_sync))
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
#[utoipa::path(get, path = "/api/v1/metrics/revenue", tag = "metrics", security(("api_key" = [])),
    params(RevenueQuery),
    responses((status = 200, body = RevenueReport), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn get_revenue(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<RevenueQuery>,
) -> Result<Json<RevenueReport>> {
    p.require(Scope::Read)?;
    let to = match &q.to {
        Some(t) => crate::usage::api::parse_time("to", t)?,
        None => now_ms(),
    };
    let from = match &q.from {
        Some(t) => crate::usage::api::parse_time("from", t)?,
        None => to - 30 * 86_400_000,
    };
    let interval = Interval::parse(q.interval.as_deref().unwrap_or("day"))?;
    let currency = state.revenue.reporting_currency();
    let rates = Rates::load(&state.store, currency).await?;
    // Provider cost is kept in USD; margin needs it in the reporting currency.
    let cost = |nano: i64, at: i64| {
        rates
            .convert(crate::money::nano_to_cents(nano), "usd", at)
            .unwrap_or(0)
    };
    let span = to - from;
    let (now_cost, before_cost) = tokio::try_join!(
        crate::costs::report::total(&state.store, from, to),
        crate::costs::report::total(&state.store, from - span, from),
    )?;
    let costs = (cost(now_cost, to), cost(before_cost, from));
    Ok(Json(
        metrics::report(&state.store, &rates, currency, from, to, interval, costs).await?,
    ))
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
/// a 400 and nothing is stored. Events are idempotent by id.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "revenue",
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = WebhookReply), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReply>> {
    let revenue = &state.revenue;
    if revenue.webhook_secret.is_empty() {
        return Err(ApiError::Unavailable(
            "Stripe webhooks are not configured: set stripe.webhook_secret".into(),
        ));
    }
    let header = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    signature::verify(
        &body,
        header,
        &revenue.webhook_secret,
        now_ms() / 1000,
        DEFAULT_TOLERANCE_SECS,
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "refused a Stripe webhook");
        ApiError::BadRequest(e.to_string())
    })?;
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

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatus {
    /// Whether a Stripe key is configured.
    pub connected: bool,
    pub health: Health,
    /// Progress of the last sync, per resource.
    pub resources: Vec<SyncProgress>,
}

/// The Stripe connection's state and the last sync's progress.
#[utoipa::path(get, path = "/api/v1/stripe/sync", tag = "revenue", security(("api_key" = [])),
    responses((status = 200, body = SyncStatus), (status = 403, body = ErrorBody)))]
async fn sync_status(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<SyncStatus>> {
    p.require(Scope::Read)?;
    Ok(Json(SyncStatus {
        connected: state.revenue.client.is_some(),
        health: state.revenue.health(),
        resources: records::progress(&state.store).await?,
    }))
}

/// Starts a sync in the background (a full backfill when none has run yet, else the events
/// since the last one); progress shows on `GET /api/v1/stripe/sync`.
#[utoipa::path(post, path = "/api/v1/stripe/sync", tag = "revenue", security(("api_key" = [])),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn start_sync(State(state): State<AppState>, Auth(p): Auth) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    if state.revenue.client.is_none() {
        return Err(RevenueError::NotConfigured.into());
    }
    let s = state.clone();
    tokio::spawn(async move {
        if let Err(e) = s.revenue.sync(&s.store, false, &|_| {}).await {
            tracing::warn!(error = %e, "Stripe sync failed");
        }
    });
    Ok(StatusCode::ACCEPTED)
}
