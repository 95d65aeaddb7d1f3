//! HTTP routes of alerts: the alert list and history (by state, rule, severity, text), one
//! alert's timeline, acknowledgement; rules (list, create, delete); silences and maintenance
//! windows. Reads need the read scope, changes the admin scope — except acknowledging, which
//! every signed-in person may do, viewers included (the on-call person is rarely an admin),
//! and of API keys only admin keys: a read key is handed to dashboards and scripts to read,
//! and acknowledging stops reminders and tells the notifiers, which is not reading.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AlertsError;
use super::engine::{self, ALERT_COLUMNS, AlertRow};
use super::list::{self, AlertFilter};
use super::rules::{self, RuleRow, RuleSpec};
use super::silences::{self, Silence, SilenceSpec};
use crate::access::{Principal, Scope};
use crate::app::AppState;
use crate::args;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(ack_alert))
        .routes(routes!(ack_alerts))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(delete_rule))
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(expire_silence))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertRow>,
}

/// Alerts newest first: the open ones and the history, searchable.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertFilter),
    security(("api_key" = ["read"])),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody)))]
async fn list_alerts(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AlertFilter>,
) -> Result<Json<AlertList>> {
    p.require(Scope::Read)?;
    let alerts = list::find(&state.store, &q).await.map_err(|e| match e {
        AlertsError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
        other => other.into(),
    })?;
    Ok(Json(AlertList { alerts }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertEvent {
    pub at: i64,
    /// pending, firing, resolved, notified, silenced, reminder, acknowledged.
    pub kind: String,
    pub detail: Option<String>,
}
crate::from_row!(AlertEvent { at, kind, detail });

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDetail {
    pub alert: AlertRow,
    pub events: Vec<AlertEvent>,
}

/// One alert and its timeline.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts",
    security(("api_key" = ["read"])), params(("id" = i64, Path, description = "Alert id")),
    responses((status = 200, body = AlertDetail), (status = 404, body = ErrorBody)))]
async fn get_alert(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> Result<Json<AlertDetail>> {
    p.require(Scope::Read)?;
    let alert: Option<AlertRow> = state
        .store
        .fetch_all_assembled(
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
            args![id],
        )
        .await?
        .into_iter()
        .next();
    let alert = alert.ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    let events: Vec<AlertEvent> = state
        .store
        .fetch_all(
            "SELECT at, kind, detail FROM alert_events WHERE alert_id = $1 ORDER BY id",
            args![id],
        )
        .await?;
    Ok(Json(AlertDetail {
        alert: alert.fill(),
        events,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[serde(default)]
    pub note: String,
}

/// Who may acknowledge (see the module's header): any signed-in person, viewers included;
/// of API keys, admin keys only.
fn may_acknowledge(p: &Principal) -> Result<()> {
    match p {
        Principal::User(_) => p.require(Scope::Read)?,
        Principal::Key(_) => p.require(Scope::Admin)?,
    }
    Ok(())
}

/// Acknowledges a firing alert (who and when are recorded, with the note): reminders stop
/// and the rule's notifiers are told. Any signed-in user may acknowledge, viewers included
/// (the on-call person is rarely an admin); an API key needs the admin scope, since a read
/// key is for reading.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Alert id")),
    request_body = AckBody,
    responses((status = 200, body = AlertRow), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn ack_alert(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
    body: Option<Json<AckBody>>,
) -> Result<Json<AlertRow>> {
    may_acknowledge(&p)?;
    let note = body.map(|Json(b)| b.note).unwrap_or_default();
    let (alert, event) = engine::acknowledge(
        &state.store,
        id,
        &client.actor(&p),
        &note,
        now_ms(),
        &super::settings(&state.config),
    )
    .await?;
    state.events.send(event);
    Ok(Json(alert))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkAckBody {
    /// The alerts to acknowledge (1–500, each firing and not yet acknowledged).
    pub ids: Vec<i64>,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkAckResult {
    /// The alerts as acknowledged, in the order asked.
    pub alerts: Vec<AlertRow>,
}

/// Acknowledges several firing alerts at once, all or none: an id that does not exist is a
/// 404, one not firing or already acknowledged a 409, an empty, oversized or repeated list a
/// 422 — each naming the position at fault (`ids[2]: …`), with nothing acknowledged. Each
/// alert records who, when and the note; one audit entry records the request; the notifiers
/// hear once per alert group. Allowed as for one alert: signed-in users, viewers included,
/// and admin keys; a read key gets 403.
#[utoipa::path(post, path = "/api/v1/alerts/ack", tag = "alerts",
    security(("api_key" = ["admin"])), request_body = BulkAckBody,
    responses((status = 200, body = BulkAckResult), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn ack_alerts(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(body): Json<BulkAckBody>,
) -> Result<Json<BulkAckResult>> {
    may_acknowledge(&p)?;
    let (alerts, events) = engine::acknowledge_many(
        &state.store,
        &body.ids,
        &client.actor(&p),
        body.note.trim(),
        now_ms(),
        &super::settings(&state.config),
    )
    .await?;
    for e in events {
        state.events.send(e);
    }
    Ok(Json(BulkAckResult { alerts }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub rules: Vec<RuleRow>,
    /// The metrics rules can use: name, series labels, meaning.
    pub metrics: Vec<[String; 3]>,
}

/// Every rule (config, built-in defaults, API) and the metric catalogue.
#[utoipa::path(get, path = "/api/v1/alert-rules", tag = "alerts",
    security(("api_key" = ["read"])), responses((status = 200, body = RuleList)))]
async fn list_rules(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<RuleList>> {
    p.require(Scope::Read)?;
    Ok(Json(RuleList {
        rules: rules::list(&state.store).await?,
        metrics: super::metrics::CATALOGUE
            .iter()
            .map(|(a, b, c)| [a.to_string(), b.to_string(), c.to_string()])
            .collect(),
    }))
}

/// Creates a rule. Unknown metrics, unparseable conditions and notifiers that do not exist
/// are refused with the field named.
#[utoipa::path(post, path = "/api/v1/alert-rules", tag = "alerts",
    security(("api_key" = ["admin"])), request_body = RuleSpec,
    responses((status = 201, body = RuleRow), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_rule(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(spec): Json<RuleSpec>,
) -> Result<(StatusCode, Json<RuleRow>)> {
    p.require(Scope::Admin)?;
    let (prometheus, notifiers) = super::names(&state).await?;
    let row = rules::create(
        &state.store,
        &spec,
        &prometheus,
        &notifiers,
        &client.actor(&p),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Deletes a rule created through the API; its open alerts are resolved quietly.
#[utoipa::path(delete, path = "/api/v1/alert-rules/{id}", tag = "alerts",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Rule id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_rule(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    rules::delete(&state.store, id, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceList {
    pub silences: Vec<Silence>,
}

/// Silences and maintenance windows not yet over.
#[utoipa::path(get, path = "/api/v1/alerts/silences", tag = "alerts",
    security(("api_key" = ["read"])), responses((status = 200, body = SilenceList)))]
async fn list_silences(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<SilenceList>> {
    p.require(Scope::Read)?;
    Ok(Json(SilenceList {
        silences: silences::current(&state.store, now_ms()).await?,
    }))
}

/// Adds a silence (notifications held back) or a maintenance window (alerts not raised) for
/// the alerts matching every label matcher (`rule` and `severity` match those).
#[utoipa::path(post, path = "/api/v1/alerts/silences", tag = "alerts",
    security(("api_key" = ["admin"])), request_body = SilenceSpec,
    responses((status = 201, body = Silence), (status = 422, body = ErrorBody)))]
async fn create_silence(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(spec): Json<SilenceSpec>,
) -> Result<(StatusCode, Json<Silence>)> {
    p.require(Scope::Admin)?;
    let s = silences::create(&state.store, &spec, &client.actor(&p), now_ms()).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

/// Ends a silence or maintenance window now.
#[utoipa::path(delete, path = "/api/v1/alerts/silences/{id}", tag = "alerts",
    security(("api_key" = ["admin"])), params(("id" = i64, Path, description = "Silence id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn expire_silence(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    silences::expire(&state.store, id, &client.actor(&p), now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}
