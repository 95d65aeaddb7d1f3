//! The Alerts page: open alerts (firing first) with acknowledgement, recent history, the
//! rules, and current silences and maintenance windows with a form to add one. Reading is for
//! every signed-in user; acknowledging too (the on-call person is rarely an admin); silences
//! need an admin.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::settings::PageResult;
use super::{Chrome, render};
use crate::access::sessions::SessionUser;
use crate::alerts::engine::{self, ALERT_COLUMNS, AlertRow};
use crate::alerts::rules::{self, RuleRow};
use crate::alerts::silences::{self, Silence, SilenceSpec};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{CsrfForm, NoFields, PageUser};
use crate::store::now_ms;

#[derive(askama::Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    chrome: Chrome,
    metrics: &'static [(&'static str, &'static str, &'static str)],
    open: Vec<AlertRow>,
    history: Vec<AlertRow>,
    rules: Vec<RuleRow>,
    silences: Vec<Silence>,
    error: Option<String>,
}

fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn matchers(s: &Silence) -> String {
    labels(&s.matchers)
}

async fn alerts_of(state: &AppState, clause: &str) -> Result<Vec<AlertRow>, ApiError> {
    let rows: Vec<AlertRow> = state
        .store
        .fetch_all_assembled(
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE {clause} LIMIT 200"),
            Vec::new(),
        )
        .await?;
    Ok(rows.into_iter().map(AlertRow::fill).collect())
}

async fn page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let open = alerts_of(
        state,
        "state <> 'resolved' ORDER BY CASE state WHEN 'firing' THEN 0 ELSE 1 END, \
         CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, id DESC",
    )
    .await?;
    let history = alerts_of(state, "state = 'resolved' ORDER BY id DESC").await?;
    Ok(render(
        status,
        &AlertsPage {
            chrome: Chrome::new(user, "/alerts"),
            metrics: crate::alerts::metrics::CATALOGUE,
            open,
            history,
            rules: rules::list(&state.store).await?,
            silences: silences::current(&state.store, now_ms()).await?,
            error,
        },
    ))
}

/// The page again with a form's refusal (a 4xx naming the problem); a server error stays one.
async fn refused(
    state: &AppState,
    user: &SessionUser,
    e: crate::alerts::AlertsError,
) -> PageResult {
    let e = ApiError::from(e);
    let status = e.status();
    if status.is_server_error() {
        return Err(e);
    }
    page(state, user, status, Some(e.to_string())).await
}

pub async fn index(State(state): State<AppState>, PageUser(user): PageUser) -> PageResult {
    page(&state, &user, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct Ack {
    #[serde(default)]
    note: String,
}

pub async fn ack(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<Ack>,
) -> PageResult {
    let who = form.actor().name;
    match engine::acknowledge(
        &state.store,
        id,
        &who,
        form.form.note.trim(),
        now_ms(),
        &crate::alerts::settings(&state.config),
    )
    .await
    {
        Ok((_, event)) => {
            state.events.send(event);
            Ok(Redirect::to("/alerts").into_response())
        }
        Err(e) => refused(&state, &form.user, e).await,
    }
}

#[derive(Deserialize)]
pub struct AddSilence {
    kind: String,
    /// `label=value` pairs, comma-separated.
    matchers: String,
    /// Hours from now.
    hours: String,
    #[serde(default)]
    comment: String,
}

pub async fn add_silence(State(state): State<AppState>, form: CsrfForm<AddSilence>) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden(
            "adding a silence needs an admin".into(),
        ));
    }
    let f = &form.form;
    let now = now_ms();
    let mut m = BTreeMap::new();
    let mut problem = None;
    for pair in f
        .matchers
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                m.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => problem = Some(format!("matchers: {pair:?} is not label=value")),
        }
    }
    let hours: Option<f64> = f
        .hours
        .trim()
        .parse()
        .ok()
        .filter(|h: &f64| *h > 0.0 && *h <= 24.0 * 90.0);
    if hours.is_none() {
        problem.get_or_insert_with(|| "hours: a number of hours, at most 90 days".into());
    }
    if let Some(p) = problem {
        return page(
            &state,
            &form.user,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(p),
        )
        .await;
    }
    let spec = SilenceSpec {
        kind: Some(f.kind.clone()),
        matchers: m,
        starts_at: Some(now),
        ends_at: now + (hours.unwrap_or(1.0) * 3_600_000.0) as i64,
        comment: f.comment.clone(),
    };
    match silences::create(&state.store, &spec, &form.actor(), now).await {
        Ok(_) => Ok(Redirect::to("/alerts#silences").into_response()),
        Err(e) => refused(&state, &form.user, e).await,
    }
}

pub async fn expire_silence(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden(
            "ending a silence needs an admin".into(),
        ));
    }
    match silences::expire(&state.store, id, &form.actor(), now_ms()).await {
        Ok(()) => Ok(Redirect::to("/alerts#silences").into_response()),
        Err(e) => refused(&state, &form.user, e).await,
    }
}

#[derive(Deserialize)]
pub struct AddRule {
    name: String,
    metric: String,
    condition: String,
    #[serde(default)]
    window: String,
    #[serde(default, rename = "for")]
    for_: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    hysteresis: String,
    /// `label=value` pairs, comma-separated.
    #[serde(default)]
    filter: String,
    /// Comma-separated.
    #[serde(default)]
    group_by: String,
    /// Comma-separated notifier names.
    #[serde(default)]
    notifiers: String,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The rule a form describes, or the field at fault.
fn rule_spec(f: &AddRule) -> Result<rules::RuleSpec, String> {
    let given = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let mut filter = BTreeMap::new();
    for pair in list(&f.filter) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("filter: {pair:?} is not label=value"))?;
        filter.insert(k.trim().to_string(), v.trim().to_string());
    }
    let hysteresis = match given(&f.hysteresis) {
        None => None,
        Some(h) => Some(
            h.parse::<f64>()
                .map_err(|_| format!("hysteresis: {h:?} is not a number"))?,
        ),
    };
    Ok(rules::RuleSpec {
        name: f.name.clone(),
        metric: f.metric.trim().to_string(),
        condition: f.condition.clone(),
        window: given(&f.window),
        for_: given(&f.for_),
        severity: given(&f.severity),
        hysteresis,
        labels: BTreeMap::new(),
        filter,
        group_by: list(&f.group_by),
        notifiers: list(&f.notifiers),
        enabled: true,
    })
}

/// `POST /alerts/rules`: adds a rule from the page's form (admins), validated as the API does.
pub async fn add_rule(State(state): State<AppState>, form: CsrfForm<AddRule>) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden("adding a rule needs an admin".into()));
    }
    let spec = match rule_spec(&form.form) {
        Ok(s) => s,
        Err(p) => {
            return page(
                &state,
                &form.user,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(p),
            )
            .await;
        }
    };
    let (prometheus, notifiers) = crate::alerts::names(&state).await?;
    match rules::create(&state.store, &spec, &prometheus, &notifiers, &form.actor()).await {
        Ok(_) => Ok(Redirect::to("/alerts#rules").into_response()),
        Err(e) => refused(&state, &form.user, e).await,
    }
}

/// `POST /alerts/rules/{id}/delete`: deletes a rule added through the API or this page.
pub async fn delete_rule(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden("deleting a rule needs an admin".into()));
    }
    match rules::delete(&state.store, id, &form.actor()).await {
        Ok(()) => Ok(Redirect::to("/alerts#rules").into_response()),
        Err(e) => refused(&state, &form.user, e).await,
    }
}
