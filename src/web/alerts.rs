//! The Alerts page: alerts filtered (state, severity, rule, words — a plain GET form) and
//! grouped by rule, operational rules first and the gravest, newest alerts first within
//! each, with acknowledgement one by one or of the ticked ones at once; where notifications
//! go; the rules; current silences and maintenance windows with a form to add one. Reading
//! is for every signed-in user; acknowledging too (the on-call person is rarely an admin);
//! rules and silences need an admin.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::settings::PageResult;
use super::{Chrome, render};
use crate::access::sessions::SessionUser;
use crate::alerts::AlertsError;
use crate::alerts::engine::{self, AlertRow};
use crate::alerts::list::{self, AlertFilter};
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
    filter: Shown,
    /// Open alerts: critical, warning, info.
    open_counts: [i64; 3],
    groups: Vec<Group>,
    /// The filter matched more alerts than one page holds.
    cut: bool,
    rules: Vec<RuleRow>,
    silences: Vec<Silence>,
    /// Where the built-in rules notify (`[alerts] default_notifiers`), with each kind.
    routes: Vec<(String, String)>,
    error: Option<String>,
}

impl AlertsPage {
    fn any_ackable(&self) -> bool {
        self.groups.iter().any(Group::ackable)
    }
}

/// The filter as the form shows it back.
#[derive(Default)]
struct Shown {
    state: String,
    severity: String,
    rule: Option<i64>,
    q: String,
    /// Anything besides the default (open alerts).
    narrowed: bool,
}

/// The alerts of one rule on the page.
struct Group {
    rule_id: i64,
    name: String,
    /// Per-customer alerts (quota), shown after the operational ones.
    customers: bool,
    /// By severity: critical, warning, info.
    counts: [usize; 3],
    alerts: Vec<AlertRow>,
    /// Alerts of the group left out (the page shows at most `PER_GROUP` of a group).
    hidden: usize,
}

impl Shown {
    fn is_rule(&self, id: &i64) -> bool {
        self.rule == Some(*id)
    }
}

impl Group {
    /// Whether the group has alerts of severity `rank` (0 critical, 1 warning, 2 info).
    fn has(&self, rank: usize) -> bool {
        self.counts[rank] > 0
    }

    fn worst(&self) -> &'static str {
        match self.counts {
            [c, _, _] if c > 0 => "critical",
            [_, w, _] if w > 0 => "warning",
            _ => "info",
        }
    }

    fn total(&self) -> usize {
        self.alerts.len() + self.hidden
    }

    fn ackable(&self) -> bool {
        self.alerts.iter().any(ackable)
    }
}

/// At most this many alerts of a group are listed unless the page is filtered to its rule.
const PER_GROUP: usize = 50;
/// The most alerts one page reads.
const PAGE: i64 = 500;

fn ackable(a: &AlertRow) -> bool {
    a.state == "firing" && a.acked_at.is_none()
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// When an alert last changed state: resolved, fired or became pending.
fn since(a: &AlertRow) -> i64 {
    a.resolved_at.or(a.started_at).unwrap_or(a.pending_since)
}

fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The labels an alert's summary does not already name (a quota alert names its customer
/// and plan), so a row does not say them twice.
fn other_labels(a: &AlertRow) -> String {
    a.labels
        .iter()
        .filter(|(_, v)| !a.summary.contains(v.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn matchers(s: &Silence) -> String {
    labels(&s.matchers)
}

/// Groups alerts by rule: operational rules first, then per-customer ones; within each,
/// the gravest and most recent first — so problems come first.
fn group(alerts: Vec<AlertRow>, rules: &[RuleRow], one_rule: bool) -> Vec<Group> {
    let mut by_rule: BTreeMap<i64, Group> = BTreeMap::new();
    for a in alerts {
        let g = by_rule.entry(a.rule_id).or_insert_with(|| Group {
            rule_id: a.rule_id,
            name: a.rule.clone(),
            customers: rules
                .iter()
                .find(|r| r.id == a.rule_id)
                .is_some_and(|r| r.spec.metric == "quota.percent"),
            counts: [0; 3],
            alerts: Vec::new(),
            hidden: 0,
        });
        g.counts[usize::from(rank(&a.severity))] += 1;
        g.alerts.push(a);
    }
    let mut groups: Vec<Group> = by_rule.into_values().collect();
    for g in &mut groups {
        g.alerts.sort_by(|a, b| {
            rank(&a.severity)
                .cmp(&rank(&b.severity))
                .then(since(b).cmp(&since(a)))
                .then(b.id.cmp(&a.id))
        });
        if !one_rule && g.alerts.len() > PER_GROUP {
            g.hidden = g.alerts.len() - PER_GROUP;
            g.alerts.truncate(PER_GROUP);
        }
    }
    let latest = |g: &Group| g.alerts.iter().map(since).max().unwrap_or(0);
    groups.sort_by(|a, b| {
        a.customers
            .cmp(&b.customers)
            .then(rank(a.worst()).cmp(&rank(b.worst())))
            .then(latest(b).cmp(&latest(a)))
    });
    groups
}

/// The page's filter as submitted (a GET form: blank fields are absent).
#[derive(Debug, Default, Deserialize)]
pub struct PageFilter {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

impl PageFilter {
    /// The domain filter (open alerts unless a state is chosen), or the field at fault.
    fn to_filter(&self) -> Result<(AlertFilter, Shown), String> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_string();
        let rule = match text(&self.rule).as_str() {
            "" => None,
            r => Some(
                r.parse::<i64>()
                    .map_err(|_| format!("rule: {r:?} is not a rule id"))?,
            ),
        };
        let state = match text(&self.state).as_str() {
            "" => "open".to_string(),
            s => s.to_string(),
        };
        let shown = Shown {
            narrowed: state != "open"
                || rule.is_some()
                || !text(&self.severity).is_empty()
                || !text(&self.q).is_empty(),
            state: state.clone(),
            severity: text(&self.severity),
            rule,
            q: text(&self.q),
        };
        let filter = AlertFilter {
            state: Some(state),
            rule_id: rule,
            severity: self.severity.clone(),
            q: self.q.clone(),
            before: None,
            limit: Some(PAGE),
        };
        Ok((filter, shown))
    }
}

async fn page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    filter: &PageFilter,
    error: Option<String>,
) -> PageResult {
    let rules = rules::list(&state.store).await?;
    let (mut status, mut error) = (status, error);
    let (found, shown) = match filter.to_filter() {
        Ok((f, shown)) => match list::find(&state.store, &f).await {
            Ok(found) => (found, shown),
            Err(AlertsError::Invalid { field, message }) => {
                status = StatusCode::BAD_REQUEST;
                error = Some(format!("{field}: {message}"));
                (Vec::new(), shown)
            }
            Err(e) => return Err(e.into()),
        },
        Err(problem) => {
            status = StatusCode::BAD_REQUEST;
            error = Some(problem);
            (Vec::new(), Shown::default())
        }
    };
    let cut = found.len() as i64 >= PAGE;
    let groups = group(found, &rules, shown.rule.is_some());
    let kinds: Vec<(String, String)> = state
        .store
        .fetch_all("SELECT name, kind FROM webhook_endpoints", crate::args![])
        .await?;
    let routes = state
        .config
        .alerts
        .default_notifiers
        .iter()
        .map(|n| {
            let kind = kinds
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, k)| k.clone())
                .unwrap_or_default();
            (n.clone(), kind)
        })
        .collect();
    Ok(render(
        status,
        &AlertsPage {
            chrome: Chrome::new(user, "/alerts"),
            metrics: crate::alerts::metrics::CATALOGUE,
            filter: shown,
            open_counts: crate::alerts::summary::counts(&state.store).await?,
            groups,
            cut,
            rules,
            silences: silences::current(&state.store, now_ms()).await?,
            routes,
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
    page(
        state,
        user,
        status,
        &PageFilter::default(),
        Some(e.to_string()),
    )
    .await
}

/// `GET /alerts`: the alerts the filter selects (open ones by default), grouped by rule.
pub async fn index(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(filter): Query<PageFilter>,
) -> PageResult {
    page(&state, &user, StatusCode::OK, &filter, None).await
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
    match engine::acknowledge(
        &state.store,
        id,
        &form.actor(),
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

/// `POST /alerts/ack`: acknowledges the alerts ticked on the page (checkboxes named
/// `ack_<id>`, since a form posts each as its own field), all or none.
pub async fn ack_selected(
    State(state): State<AppState>,
    form: CsrfForm<BTreeMap<String, String>>,
) -> PageResult {
    let mut ids = Vec::new();
    for key in form.form.keys() {
        if let Some(id) = key.strip_prefix("ack_") {
            match id.parse::<i64>() {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return page(
                        &state,
                        &form.user,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &PageFilter::default(),
                        Some(format!("{key}: not an alert id")),
                    )
                    .await;
                }
            }
        }
    }
    let note = form.form.get("note").map(|n| n.trim()).unwrap_or("");
    match engine::acknowledge_many(
        &state.store,
        &ids,
        &form.actor(),
        note,
        now_ms(),
        &crate::alerts::settings(&state.config),
    )
    .await
    {
        Ok((_, events)) => {
            for e in events {
                state.events.send(e);
            }
            let back = form
                .form
                .get("back")
                .map(|b| crate::http::auth::safe_next(Some(b)))
                .filter(|b| b.starts_with("/alerts"))
                .unwrap_or_else(|| "/alerts".into());
            Ok(Redirect::to(&back).into_response())
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
            &PageFilter::default(),
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
        steps: Vec::new(),
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
                &PageFilter::default(),
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
