//! The Integrations pages: the status grid (the Overview tab) with the admins' monitor forms,
//! the Error Logs, Token Status and Webhooks tabs, and one page per monitor with its history.
//! The grid is the health scheduler's in-memory rows, exactly what `GET /api/v1/integrations`
//! returns; history is read through `health::history` and webhook receipts through
//! `revenue::records`. Changes go through the health store's own create, update, pause and
//! delete, so the forms validate, refuse config monitors and audit exactly as the JSON API does.
//! Figures a capability does not collect (quota of a kind without one, token expiry of a
//! kind without a credential) show "—", never a guess.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::chart::{self, Series};
use super::metering::given;
use super::settings::PageResult;
use super::{Chrome, format, render};
use crate::access::Role;
use crate::access::sessions::SessionUser;
use crate::app::AppState;
use crate::health::HealthError;
use crate::health::definition;
use crate::health::grid::Integration;
use crate::health::history::{self, Check, Cursor, Failure, Incident, Run};
use crate::health::monitor::{Invalid, Kind, MonitorSpec};
use crate::health::store as monitors;
use crate::http::ApiError;
use crate::http::auth::{CsrfForm, PageUser, safe_next};
use crate::revenue::records::{self, Receipt};
use crate::store::now_ms;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Grid rows per page: 10,000 monitors with a sparkline each would make a page of megabytes.
const GRID_PAGE: usize = 200;
/// Rows per page of the error log, the webhook receipts and a monitor's results.
const LOG_PAGE: i64 = 50;
/// The grid's states, in the order the counts show them.
pub const STATES: [&str; 5] = ["down", "degraded", "up", "unknown", "paused"];
/// Longest error shown in a table cell; the whole text is in the cell's title.
const ERROR_CHARS: usize = 80;

/// The tabs: (path, label).
pub const TABS: &[(&str, &str)] = &[
    ("/integrations", "Overview"),
    ("/integrations/errors", "Error Logs"),
    ("/integrations/tokens", "Token Status"),
    ("/integrations/webhooks", "Webhooks"),
];

fn admin_only(user: &SessionUser) -> Result<(), ApiError> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only admins can manage monitors".into(),
        ))
    }
}

/// "99.95 %", or "—" without checks. The live script formats the same way.
pub fn pct(v: &Option<f64>) -> String {
    v.map_or_else(|| format::ABSENT.into(), |v| format::ratio(v, 2))
}

/// A percentile as the upper bound of its histogram bucket: "≤ 150 ms".
pub fn upto_ms(v: &Option<f64>) -> String {
    v.map_or_else(
        || format::ABSENT.into(),
        |v| format!("≤ {}", format::duration_ms(v)),
    )
}

/// A latency in ms.
pub fn ms(v: &Option<f64>) -> String {
    format::duration_opt(v)
}

/// A check interval as people write it: "30 s", "5 min", "24 h".
pub fn every(secs: &f64) -> String {
    format::interval_secs(secs)
}

pub fn us_as_ms(us: &i64) -> String {
    format::duration_ms(*us as f64 / 1000.0)
}

/// The first [`ERROR_CHARS`] characters of `text`, with an ellipsis when cut.
pub fn short(text: &str) -> String {
    if text.chars().count() <= ERROR_CHARS {
        text.to_string()
    } else {
        let cut: String = text.chars().take(ERROR_CHARS - 1).collect();
        format!("{cut}…")
    }
}

fn parse_iso(iso: &str) -> Option<i64> {
    format::parse_iso(iso)
}

/// "12 s ago" for an RFC 3339 time, relative to `now` (UTC ms).
fn ago(now: i64, iso: &str) -> String {
    parse_iso(iso).map_or_else(|| format::ABSENT.into(), |at| format::ago(now, at))
}

/// "in 5 h" (or "expired 2 h ago") for an RFC 3339 time: the grid's token expiry.
pub fn until(iso: &str) -> String {
    let now = now_ms();
    match parse_iso(iso) {
        Some(at) if at >= now => format!("in {}", format::age((at - now) / 1000)),
        Some(at) => format!("expired {}", format::ago(now, at)),
        None => format::ABSENT.into(),
    }
}

/// The exact time of an RFC 3339 time, as the tables show times.
fn exact(iso: &str) -> String {
    format::time_of_iso(iso)
}

/// A 24-hour latency sparkline as inline SVG: one point per hour, broken where an hour had no
/// checks, so a gap reads as "not checked" rather than as zero latency. Styled by class only
/// (`spark`), since the Content-Security-Policy drops `style` attributes. Holds no text from
/// outside, only numbers.
pub fn sparkline(points: &[Option<f64>]) -> String {
    const W: f64 = 100.0;
    const H: f64 = 24.0;
    let values: Vec<f64> = points.iter().flatten().copied().collect();
    if values.is_empty() {
        return format!(
            "<svg class=\"spark spark-empty\" viewBox=\"0 0 {W} {H}\" width=\"100\" height=\"24\" \
             role=\"img\" aria-label=\"No checks in the last 24 hours\"><line x1=\"0\" y1=\"{y}\" \
             x2=\"{W}\" y2=\"{y}\"/></svg>",
            y = H - 2.0
        );
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max).max(0.001);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let step = W / (points.len().max(2) - 1) as f64;
    let xy = |i: usize, v: f64| (i as f64 * step, H - 2.0 - (v / max) * (H - 4.0));
    let mut out = format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" width=\"100\" height=\"24\" role=\"img\" \
         aria-label=\"Mean latency per hour over 24 hours, {min:.1} to {max:.1} ms\">\
         <title>Mean latency per hour, last 24 h: {min:.1}–{max:.1} ms</title>"
    );
    let mut i = 0;
    while i < points.len() {
        let start = i;
        while i < points.len() && points[i].is_some() {
            i += 1;
        }
        let run: Vec<(usize, f64)> = (start..i)
            .filter_map(|j| points[j].map(|v| (j, v)))
            .collect();
        match run.as_slice() {
            [] => i += 1,
            [(j, v)] => {
                let (x, y) = xy(*j, *v);
                out.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.5\"/>"));
            }
            run => {
                let coords: Vec<String> = run
                    .iter()
                    .map(|(j, v)| {
                        let (x, y) = xy(*j, *v);
                        format!("{x:.1},{y:.1}")
                    })
                    .collect();
                out.push_str(&format!("<polyline points=\"{}\"/>", coords.join(" ")));
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// One grid row as the page shows it.
pub struct Row {
    pub i: Integration,
    pub sparkline: String,
    pub checked_ago: String,
    pub checked_at: String,
}

impl Row {
    fn of(i: Integration, now: i64) -> Self {
        let (checked_ago, checked_at) = match &i.last_check {
            Some(t) => (ago(now, t), exact(t)),
            None => ("never".into(), String::new()),
        };
        Row {
            sparkline: sparkline(&i.sparkline),
            checked_ago,
            checked_at,
            i,
        }
    }

    pub fn since(&self) -> String {
        self.i.since.as_deref().map(exact).unwrap_or_default()
    }
}

/// The monitor form's fields as typed: kept as text so a refused form comes back as the user
/// left it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MonitorForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub interval: String,
    #[serde(default)]
    pub timeout: String,
    #[serde(default)]
    pub method: String,
    /// `Name: value`, one per line.
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub body: String,
    /// One per line.
    #[serde(default)]
    pub conditions: String,
    /// One per line.
    #[serde(default)]
    pub degraded_when: String,
    #[serde(default)]
    pub failure_threshold: String,
    #[serde(default)]
    pub success_threshold: String,
    /// Provider kinds: the account where the provider needs one.
    #[serde(default)]
    pub account: String,
    /// Provider kinds: the API key; shown masked on edit, and a mask sent back keeps it.
    #[serde(default)]
    pub key: String,
}

fn invalid(field: &str, problem: String) -> Invalid {
    Invalid {
        field: field.into(),
        problem,
    }
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn blank_none(text: &str) -> Option<String> {
    given(&Some(text.to_string()))
}

impl MonitorForm {
    /// The form applied over `base` (empty for a new monitor, the stored definition as masked
    /// for an edit), so that fields the form does not show — maintenance windows, a kind's own
    /// options — survive an edit.
    fn spec(&self, base: MonitorSpec) -> Result<MonitorSpec, Invalid> {
        let mut headers = BTreeMap::new();
        for (n, line) in lines(&self.headers).enumerate() {
            let (name, value) = line.split_once(':').ok_or_else(|| {
                invalid(
                    "headers",
                    format!("line {}: write it as `Name: value`", n + 1),
                )
            })?;
            headers.insert(name.trim().to_string(), value.trim().to_string());
        }
        let threshold = |field: &str, text: &str| match blank_none(text) {
            None => Ok(None),
            Some(t) => t
                .parse::<u32>()
                .map(Some)
                .map_err(|_| invalid(field, format!("{t:?} is not a whole number"))),
        };
        // The body is sent as typed; only an all-blank one means "none".
        let body = (!self.body.trim().is_empty()).then(|| self.body.clone());
        Ok(MonitorSpec {
            name: self.name.trim().to_string(),
            kind: self.kind.trim().to_string(),
            target: self.target.trim().to_string(),
            interval: blank_none(&self.interval),
            timeout: blank_none(&self.timeout),
            method: blank_none(&self.method),
            headers,
            body,
            conditions: lines(&self.conditions).map(str::to_string).collect(),
            degraded_when: lines(&self.degraded_when).map(str::to_string).collect(),
            failure_threshold: threshold("failure_threshold", &self.failure_threshold)?,
            success_threshold: threshold("success_threshold", &self.success_threshold)?,
            account: blank_none(&self.account),
            key: blank_none(&self.key).map(crate::health::monitor::Secret),
            ..base
        })
    }

    /// A stored definition (already masked) as the edit form shows it.
    fn of(spec: &MonitorSpec) -> Self {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        MonitorForm {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            target: spec.target.clone(),
            interval: opt(&spec.interval),
            timeout: opt(&spec.timeout),
            method: opt(&spec.method),
            headers: spec
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect(),
            body: opt(&spec.body),
            conditions: spec.conditions.join("\n"),
            degraded_when: spec.degraded_when.join("\n"),
            failure_threshold: spec
                .failure_threshold
                .map(|n| n.to_string())
                .unwrap_or_default(),
            success_threshold: spec
                .success_threshold
                .map(|n| n.to_string())
                .unwrap_or_default(),
            account: opt(&spec.account),
            key: spec
                .key
                .as_ref()
                .map(|k| k.expose().to_string())
                .unwrap_or_default(),
        }
    }
}

/// A monitor form on a page: what it holds, and why it was refused if it was.
pub struct FormState {
    pub form: MonitorForm,
    pub error: Option<String>,
    /// The form field at fault (`conditions` for `conditions[2]`), to mark it invalid.
    pub field: String,
}

impl FormState {
    fn blank() -> Self {
        FormState {
            form: MonitorForm {
                kind: "http".into(),
                ..Default::default()
            },
            error: None,
            field: String::new(),
        }
    }

    pub fn invalid(&self, field: &str) -> bool {
        self.field == field
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        Kind::ALL.iter().map(|k| k.as_str()).collect()
    }
}

/// A refused change shown on the form's page: its status, message and field; anything that is
/// not the user's to fix is an error page.
fn refusal(e: HealthError) -> Result<(StatusCode, String, String), ApiError> {
    match e {
        HealthError::Invalid(i) => {
            let field = i
                .field
                .split(['[', '.'])
                .next()
                .unwrap_or_default()
                .to_string();
            Ok((StatusCode::UNPROCESSABLE_ENTITY, i.to_string(), field))
        }
        HealthError::Conflict(m) => Ok((StatusCode::CONFLICT, m, "name".into())),
        other => Err(other.into()),
    }
}

/// A fixed message for an action just done (`?done=`); the verdict of a manual check is shown
/// only when it is one of the three.
fn done_message(done: &Option<String>, verdict: &Option<String>) -> Option<String> {
    Some(match done.as_deref()? {
        "created" => "Monitor created: it is checked now and then on its interval.".into(),
        "saved" => "Changes saved.".into(),
        "paused" => "Paused: no checks run until it is resumed; its history is kept.".into(),
        "resumed" => "Resumed: checked again on its interval.".into(),
        "deleted" => "Monitor deleted with its history.".into(),
        "checked" => match verdict.as_deref() {
            Some(v @ ("up" | "degraded" | "down")) => format!("Checked now: {v}."),
            _ => "Checked now.".into(),
        },
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
pub struct GridParams {
    state: Option<String>,
    kind: Option<String>,
    page: Option<usize>,
    done: Option<String>,
    verdict: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "integrations.html")]
struct GridPage {
    chrome: Chrome,
    tab: &'static str,
    counts: Vec<(&'static str, usize)>,
    total: usize,
    kinds: Vec<String>,
    state: String,
    kind: String,
    rows: Vec<Row>,
    matching: usize,
    page: usize,
    pages: usize,
    /// This view's URL, where the row forms come back to.
    back: String,
    notice: Option<String>,
    add: FormState,
}

impl GridPage {
    /// Link to another page of the same filtered view.
    fn page_link(&self, page: usize) -> String {
        let mut q = vec![format!("page={page}")];
        if !self.state.is_empty() {
            q.push(format!(
                "state={}",
                crate::http::auth::urlencode(&self.state)
            ));
        }
        if !self.kind.is_empty() {
            q.push(format!("kind={}", crate::http::auth::urlencode(&self.kind)));
        }
        format!("/integrations?{}", q.join("&"))
    }
}

async fn grid_page(
    state: &AppState,
    user: &SessionUser,
    q: &GridParams,
    status: StatusCode,
    add: FormState,
) -> PageResult {
    let now = now_ms();
    let all = state.health.rows(&state.store, None).await?;
    let counts = STATES
        .iter()
        .map(|s| (*s, all.iter().filter(|r| r.state == *s).count()))
        .collect();
    let mut kinds: Vec<String> = Kind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    for r in &all {
        if !kinds.contains(&r.kind) {
            kinds.push(r.kind.clone());
        }
    }
    let want_state = given(&q.state).filter(|s| STATES.contains(&s.as_str()));
    let want_kind = given(&q.kind);
    let total = all.len();
    let matching: Vec<Integration> = all
        .into_iter()
        .filter(|r| want_state.as_ref().is_none_or(|s| r.state == *s))
        .filter(|r| want_kind.as_ref().is_none_or(|k| r.kind == *k))
        .collect();
    let pages = matching.len().div_ceil(GRID_PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let n = matching.len();
    let rows = matching
        .into_iter()
        .skip((page - 1) * GRID_PAGE)
        .take(GRID_PAGE)
        .map(|i| Row::of(i, now))
        .collect();
    let mut page_view = GridPage {
        chrome: Chrome::new(user, "/integrations"),
        tab: "/integrations",
        counts,
        total,
        kinds,
        state: want_state.unwrap_or_default(),
        kind: want_kind.unwrap_or_default(),
        rows,
        matching: n,
        page,
        pages,
        back: String::new(),
        notice: done_message(&q.done, &q.verdict),
        add,
    };
    page_view.back = page_view.page_link(page);
    Ok(render(status, &page_view))
}

/// `GET /integrations`: the status grid.
pub async fn grid(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<GridParams>,
) -> PageResult {
    grid_page(&state, &user, &q, StatusCode::OK, FormState::blank()).await
}

/// `POST /integrations`: creates a monitor, or shows the form again with the field at fault.
pub async fn create(State(state): State<AppState>, form: CsrfForm<MonitorForm>) -> PageResult {
    admin_only(&form.user)?;
    let result = match form.form.spec(MonitorSpec::default()) {
        Ok(spec) => monitors::create(&state.store, &state.master_key, &spec, &form.actor())
            .await
            .map(|_| ()),
        Err(e) => Err(HealthError::Invalid(e)),
    };
    match result {
        Ok(()) => {
            state.health.reload().await;
            Ok(Redirect::to("/integrations?done=created").into_response())
        }
        Err(e) => {
            let (status, error, field) = refusal(e)?;
            let add = FormState {
                form: form.form,
                error: Some(error),
                field,
            };
            grid_page(&state, &form.user, &GridParams::default(), status, add).await
        }
    }
}

/// What the row and page buttons send besides the CSRF token: where to come back to.
#[derive(Deserialize)]
pub struct Back {
    #[serde(default)]
    back: String,
}

/// Back to the page the button was on (a same-site path only), saying what was done.
fn back_to(back: &str, done: &str, extra: &str) -> axum::response::Response {
    let target = safe_next(Some(back));
    let sep = if target.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{target}{sep}done={done}{extra}")).into_response()
}

/// Strips a previous `done=`/`verdict=` notice from a back link, so notices do not pile up.
fn without_notice(back: &str) -> String {
    match back.split_once('?') {
        None => back.to_string(),
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("done=") && !p.starts_with("verdict="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

/// `POST /integrations/{id}/check`: runs one check now, recorded like a scheduled one.
pub async fn check_now(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<Back>,
) -> PageResult {
    admin_only(&form.user)?;
    let (result, _) = state
        .health
        .check_now(&state.store, &state.master_key, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    Ok(back_to(
        &without_notice(&form.form.back),
        "checked",
        &format!("&verdict={}", result.verdict.as_str()),
    ))
}

async fn set_paused(state: &AppState, id: i64, paused: bool, form: &CsrfForm<Back>) -> PageResult {
    admin_only(&form.user)?;
    monitors::set_paused(&state.store, id, paused, &form.actor()).await?;
    state.health.reload().await;
    let done = if paused { "paused" } else { "resumed" };
    Ok(back_to(&without_notice(&form.form.back), done, ""))
}

/// `POST /integrations/{id}/pause` (config monitors too: pausing is an operator's switch).
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<Back>,
) -> PageResult {
    set_paused(&state, id, true, &form).await
}

/// `POST /integrations/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<Back>,
) -> PageResult {
    set_paused(&state, id, false, &form).await
}

/// `POST /integrations/{id}/delete`: an API monitor with its history (config ones: 409).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<Back>,
) -> PageResult {
    admin_only(&form.user)?;
    state.health.delete(&state.store, id, &form.actor()).await?;
    // The monitor's own page is gone; the grid is where to land.
    let back = without_notice(&form.form.back);
    let back = if back.starts_with(&format!("/integrations/{id}")) {
        "/integrations".to_string()
    } else {
        back
    };
    Ok(back_to(&back, "deleted", ""))
}

#[derive(Deserialize, Default)]
pub struct DetailParams {
    before: Option<String>,
    done: Option<String>,
    verdict: Option<String>,
}

/// One day of the 30-day table.
pub struct Day {
    pub day: i64,
    pub checks: i64,
    pub down: i64,
    pub uptime: Option<f64>,
    pub mean: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(askama::Template)]
#[template(path = "integration.html")]
struct DetailPage {
    chrome: Chrome,
    row: Row,
    paused: bool,
    /// The masked definition as JSON, for admins.
    definition: Option<String>,
    /// The edit form, for admins on API monitors.
    edit: Option<FormState>,
    /// Why a change was refused, when there is no form to show it on.
    problem: Option<String>,
    hourly_checks: String,
    hourly_latency: String,
    daily_checks: String,
    daily_p95: String,
    days: Vec<Day>,
    runs: Vec<Run>,
    /// Stretches of degraded or down checks over the last [`INCIDENT_DAYS`], newest first.
    incidents: Vec<Incident>,
    /// Mean time to recovery over those that ended, in ms.
    mttr: Option<i64>,
    now: i64,
    /// How many checks the verdict history covers.
    run_span: usize,
    checks: Vec<Check>,
    /// Cursor for the next (older) page of results.
    older: Option<i64>,
    paged: bool,
    back: String,
    notice: Option<String>,
    /// Provider kinds: each quota with its forecast, and the latest value of every reading.
    quotas: Vec<crate::health::forecast::QuotaForecast>,
    latest: Vec<(String, f64, String)>,
    provider: bool,
    /// Provider kinds with extras: the latest collection's tables.
    extras: Option<super::extras::ExtrasView>,
}

/// Checks the verdict history is drawn from: enough to show recent flapping, bounded so the
/// page never reads a monitor's whole history.
const RUN_CHECKS: i64 = 500;
/// The incidents table covers this many days (as far as raw results are kept) ...
const INCIDENT_DAYS: i64 = 30;
/// ... read from at most this many degraded or down checks.
const INCIDENT_CHECKS: i64 = 5_000;

/// A duration in milliseconds, through the one formatter: "45 s", "12 min", "3 h".
pub fn span(ms: impl std::borrow::Borrow<i64>) -> String {
    super::format::duration_ms(*ms.borrow() as f64)
}

fn hour_label(ms: i64) -> String {
    let fmt = time::macros::format_description!("[month]-[day] [hour]:00");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

fn day_label(ms: i64) -> String {
    let fmt = time::macros::format_description!("[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

fn count(v: f64) -> String {
    format::count(v)
}

fn millis(v: f64) -> String {
    format::duration_ms(v)
}

/// Equal time slots a history chart is drawn over.
struct Slots {
    /// Start of the first slot, UTC ms.
    first: i64,
    step: i64,
    count: usize,
    label: fn(i64) -> String,
    /// "hour" or "day", for the charts' names.
    per: &'static str,
}

/// Passing and down checks per slot, stacked, and a latency figure per slot: an unchecked
/// slot draws no bar, so gaps show as gaps rather than as an outage or as zero latency.
fn history_charts(
    rollups: &[history::Rollup],
    slots: &Slots,
    latency: fn(&history::Rollup) -> Option<f64>,
    latency_name: &str,
) -> (String, String) {
    let n = slots.count;
    let labels: Vec<String> = (0..n)
        .map(|i| (slots.label)(slots.first + i as i64 * slots.step))
        .collect();
    let mut passing = vec![0.0; n];
    let mut down = vec![0.0; n];
    let mut lat = vec![0.0; n];
    for r in rollups {
        let Ok(i) = usize::try_from((r.bucket - slots.first) / slots.step) else {
            continue;
        };
        if i >= n {
            continue;
        }
        passing[i] = (r.checks - r.down) as f64;
        down[i] = r.down as f64;
        lat[i] = latency(r).unwrap_or(0.0);
    }
    let checks = chart::bars(
        &labels,
        &[
            Series {
                name: "Passing".into(),
                values: passing,
            },
            Series {
                name: "Down".into(),
                values: down,
            },
        ],
        &count,
        &format!("Checks per {}: passing and down", slots.per),
    );
    let latency = chart::bars(
        &labels,
        &[Series {
            name: latency_name.into(),
            values: lat,
        }],
        &millis,
        &format!("{latency_name} per {}", slots.per),
    );
    (checks, latency)
}

async fn detail_page(
    state: &AppState,
    user: &SessionUser,
    id: i64,
    q: &DetailParams,
    status: StatusCode,
    edit: Option<FormState>,
) -> PageResult {
    let not_found = || ApiError::NotFound(format!("no integration {id}"));
    let row = state
        .health
        .rows(&state.store, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    let stored = monitors::get(&state.store, &state.master_key, id).await?;
    let now = now_ms();
    let store = &state.store;
    let first_hour = (now.div_euclid(HOUR_MS) - 7 * 24 + 1) * HOUR_MS;
    let first_day = (now.div_euclid(DAY_MS) - 29) * DAY_MS;
    let before = match q.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| ApiError::Invalid("before: not a cursor from this page".into()))?,
        ),
    };
    let (hours, days, mut recent, mut page, readings, incidents) = tokio::try_join!(
        history::rollups(store, id, "hour", first_hour),
        history::rollups(store, id, "day", first_day),
        history::checks(store, id, i64::MAX, RUN_CHECKS),
        history::checks(store, id, before.unwrap_or(i64::MAX), LOG_PAGE),
        crate::health::forecast::readings(store, id, &row.kind, 7, now),
        history::monitor_incidents(store, id, now - INCIDENT_DAYS * DAY_MS, INCIDENT_CHECKS),
    )?;
    // What the peer said (a body excerpt, a value a condition read) is for administrators.
    if user.role == Role::Admin {
        recent
            .iter_mut()
            .chain(page.iter_mut())
            .for_each(Check::reveal);
    }
    let mttr = history::mttr(&incidents);
    let provider = crate::health::providers::Provider::parse(&row.kind).is_some();
    // Extras readings (dotted names) have their own tables below; this one is the check's.
    let latest = readings
        .series
        .iter()
        .filter(|s| !s.name.contains('.'))
        .filter_map(|s| {
            s.points
                .last()
                .map(|(at, v)| (s.name.clone(), *v, at.clone()))
        })
        .collect();
    let hourly = Slots {
        first: first_hour,
        step: HOUR_MS,
        count: 7 * 24,
        label: hour_label,
        per: "hour",
    };
    let (hourly_checks, hourly_latency) = history_charts(
        &hours,
        &hourly,
        history::Rollup::mean_latency_ms,
        "Mean latency",
    );
    let daily = Slots {
        first: first_day,
        step: DAY_MS,
        count: 30,
        label: day_label,
        per: "day",
    };
    let (daily_checks, daily_p95) =
        history_charts(&days, &daily, history::Rollup::p95_ms, "Latency p95");
    let days = days
        .iter()
        .rev()
        .map(|r| Day {
            day: r.bucket,
            checks: r.checks,
            down: r.down,
            uptime: r.uptime(),
            mean: r.mean_latency_ms(),
            p95: r.p95_ms(),
        })
        .collect();
    let is_admin = user.role == Role::Admin;
    let masked = stored.as_ref().map(|s| definition::masked(&s.spec));
    let definition = masked
        .as_ref()
        .filter(|_| is_admin)
        .and_then(|m| serde_json::to_string_pretty(m).ok());
    // A refusal for a monitor without an edit form (a config one) is shown on its own.
    let problem = edit.as_ref().and_then(|e| e.error.clone());
    let (edit, problem) = match (&stored, &masked) {
        (Some(s), Some(m)) if is_admin && s.source == "api" => (
            Some(edit.unwrap_or(FormState {
                form: MonitorForm::of(m),
                error: None,
                field: String::new(),
            })),
            None,
        ),
        _ => (None, problem),
    };
    let extras = match &stored {
        Some(s) => super::extras::ExtrasView::load(state, s).await?,
        None => None,
    };
    let older = (page.len() as i64 == LOG_PAGE)
        .then(|| page.last().map(|c| c.at))
        .flatten();
    let runs = history::runs(&recent);
    Ok(render(
        status,
        &DetailPage {
            chrome: Chrome::new(user, "/integrations"),
            paused: stored.as_ref().is_some_and(|s| s.paused),
            row: Row::of(row, now),
            definition,
            edit,
            problem,
            hourly_checks,
            hourly_latency,
            daily_checks,
            daily_p95,
            days,
            run_span: recent.len(),
            runs,
            incidents,
            mttr,
            now,
            checks: page,
            older,
            paged: before.is_some(),
            back: format!("/integrations/{id}"),
            notice: done_message(&q.done, &q.verdict),
            quotas: readings.quotas,
            latest,
            provider,
            extras,
        },
    ))
}

/// `GET /integrations/{id}`: one monitor with its history.
pub async fn detail(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(id): Path<i64>,
    Query(q): Query<DetailParams>,
) -> PageResult {
    detail_page(&state, &user, id, &q, StatusCode::OK, None).await
}

/// `POST /integrations/{id}`: saves an edited API monitor. Credentials left as the form shows
/// them (masked) keep their stored values; fields the form does not show are kept.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<MonitorForm>,
) -> PageResult {
    admin_only(&form.user)?;
    let stored = monitors::get(&state.store, &state.master_key, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no integration {id}")))?;
    let result = match form.form.spec(definition::masked(&stored.spec)) {
        Ok(spec) => {
            monitors::update(&state.store, &state.master_key, id, &spec, &form.actor()).await
        }
        Err(e) => Err(HealthError::Invalid(e)),
    };
    match result {
        Ok(()) => {
            state.health.reload().await;
            Ok(Redirect::to(&format!("/integrations/{id}?done=saved")).into_response())
        }
        Err(e) => {
            let (status, error, field) = refusal(e)?;
            let edit = FormState {
                form: form.form,
                error: Some(error),
                field,
            };
            detail_page(
                &state,
                &form.user,
                id,
                &DetailParams::default(),
                status,
                Some(edit),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct ErrorParams {
    monitor: Option<String>,
    before: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "integrations_errors.html")]
struct ErrorsPage {
    chrome: Chrome,
    tab: &'static str,
    monitors: Vec<(i64, String)>,
    monitor: Option<i64>,
    failures: Vec<Failure>,
    older: Option<String>,
    paged: bool,
}

impl ErrorsPage {
    fn selected(&self, id: &i64) -> bool {
        self.monitor == Some(*id)
    }

    fn older_link(&self, cursor: &str) -> String {
        match self.monitor {
            Some(m) => format!("/integrations/errors?monitor={m}&before={cursor}"),
            None => format!("/integrations/errors?before={cursor}"),
        }
    }
}

/// `GET /integrations/errors`: failed checks across every monitor (or one), newest first.
pub async fn errors(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<ErrorParams>,
) -> PageResult {
    let monitor = match given(&q.monitor) {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| ApiError::Invalid(format!("monitor: {t:?} is not a monitor id")))?,
        ),
    };
    let before = match given(&q.before) {
        None => None,
        Some(t) => Some(
            Cursor::parse(&t)
                .ok_or_else(|| ApiError::Invalid("before: not a cursor from this page".into()))?,
        ),
    };
    let mut failures = history::failures(&state.store, monitor, before, LOG_PAGE).await?;
    // What the peer said (a body excerpt, a value a condition read) is for administrators.
    if user.role == Role::Admin {
        failures.iter_mut().for_each(Failure::reveal);
    }
    let monitors = state
        .health
        .rows(&state.store, None)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let older = (failures.len() as i64 == LOG_PAGE)
        .then(|| failures.last().map(|f| Cursor::of(f).to_string()))
        .flatten();
    Ok(render(
        StatusCode::OK,
        &ErrorsPage {
            chrome: Chrome::new(&user, "/integrations"),
            tab: "/integrations/errors",
            monitors,
            monitor,
            failures,
            older,
            paged: before.is_some(),
        },
    ))
}

/// One credential's row on the Token Status tab, with its newest refresh attempts.
pub struct TokenRow {
    pub p: crate::tokens::store::Plain,
    pub state: crate::tokens::TokenState,
    pub log: Vec<crate::tokens::store::LogRow>,
}

impl TokenRow {
    /// "in 5 h" / "3 h ago" for a time, or "—".
    pub fn when(&self, at: &Option<i64>) -> String {
        let now = now_ms();
        match *at {
            None => "—".into(),
            Some(t) if t >= now => format!("in {}", super::revenue::show_age((t - now) / 1000)),
            Some(t) => format!("{} ago", super::revenue::show_age((now - t) / 1000)),
        }
    }
}

#[derive(askama::Template)]
#[template(path = "integrations_tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tab: &'static str,
    rows: Vec<TokenRow>,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub struct TokensParams {
    done: Option<String>,
    refreshed: Option<usize>,
    failed: Option<usize>,
}

/// `GET /integrations/tokens`: every OAuth credential with its state, expiries, last refresh
/// and recent refresh log; admins get "Refresh now" and "Refresh all".
pub async fn tokens(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<TokensParams>,
) -> PageResult {
    let now = now_ms();
    let mut rows = Vec::new();
    for p in crate::tokens::store::plain(&state.store).await? {
        let log = crate::tokens::store::log(&state.store, p.id, 5).await?;
        rows.push(TokenRow {
            state: p.state_at(now),
            p,
            log,
        });
    }
    let notice = (q.done.as_deref() == Some("refreshed")).then(|| {
        format!(
            "Refresh done: {} refreshed, {} failed or refused.",
            q.refreshed.unwrap_or(0),
            q.failed.unwrap_or(0)
        )
    });
    Ok(render(
        StatusCode::OK,
        &TokensPage {
            chrome: Chrome::new(&user, "/integrations"),
            tab: "/integrations/tokens",
            rows,
            notice,
        },
    ))
}

#[derive(Deserialize)]
pub struct RefreshForm {
    /// One credential; all when empty.
    #[serde(default)]
    name: String,
}

/// `POST /integrations/tokens/refresh`: "Refresh now" (one credential) or "Refresh all".
pub async fn refresh_tokens(
    State(state): State<AppState>,
    form: CsrfForm<RefreshForm>,
) -> PageResult {
    if form.user.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "only admins can refresh credentials".into(),
        ));
    }
    let only = (!form.form.name.is_empty()).then_some(form.form.name.as_str());
    let reports = crate::tokens::job::refresh_now(
        &state.store,
        &state.master_key,
        &state.tokens,
        only,
        &form.actor(),
        now_ms(),
    )
    .await?;
    let refreshed = reports.iter().filter(|r| r.outcome == "refreshed").count();
    let failed = reports
        .iter()
        .filter(|r| matches!(r.outcome.as_str(), "failed" | "invalid_grant"))
        .count();
    Ok(Redirect::to(&format!(
        "/integrations/tokens?done=refreshed&refreshed={refreshed}&failed={failed}"
    ))
    .into_response())
}

#[derive(Deserialize)]
pub struct WebhookParams {
    before: Option<String>,
}

/// Receipts counted by how they came and what became of them, over 24 h and 7 d.
pub struct Tally {
    pub via: String,
    pub outcome: String,
    pub day: i64,
    pub week: i64,
}

#[derive(askama::Template)]
#[template(path = "integrations_webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    tab: &'static str,
    configured: bool,
    tallies: Vec<Tally>,
    receipts: Vec<Receipt>,
    older: Option<String>,
    paged: bool,
    endpoints: Vec<OutgoingEndpoint>,
    failed: Vec<FailedDelivery>,
}

/// An outgoing endpoint or notifier with its last 24 hours.
pub struct OutgoingEndpoint {
    pub endpoint: crate::webhooks::endpoints::Endpoint,
    pub succeeded: i64,
    pub failed: i64,
    pub pending: i64,
    /// Percent, when anything finished.
    pub success_rate: Option<f64>,
}

/// A failed delivery with its attempts, newest first.
pub struct FailedDelivery {
    pub delivery: crate::webhooks::queue::DeliveryRow,
    pub attempts: Vec<crate::webhooks::queue::AttemptRow>,
}

/// Failed deliveries shown with their attempts.
const FAILED_SHOWN: i64 = 20;

/// The outgoing half of the tab: endpoints with their success rate, failed deliveries.
async fn outgoing(
    store: &crate::store::Store,
    now: i64,
) -> Result<(Vec<OutgoingEndpoint>, Vec<FailedDelivery>), ApiError> {
    use crate::webhooks::{endpoints, queue};
    let stats = queue::stats(store, now - DAY_MS).await?;
    let list = endpoints::list(store)
        .await?
        .into_iter()
        .map(|endpoint| {
            let (succeeded, failed, pending) = stats
                .iter()
                .find(|(id, ..)| *id == endpoint.id)
                .map(|(_, s, f, p)| (*s, *f, *p))
                .unwrap_or_default();
            OutgoingEndpoint {
                endpoint,
                succeeded,
                failed,
                pending,
                success_rate: (succeeded + failed > 0)
                    .then(|| succeeded as f64 * 100.0 / (succeeded + failed) as f64),
            }
        })
        .collect();
    let mut failed = Vec::new();
    for delivery in queue::deliveries(store, Some("failed"), None, None, FAILED_SHOWN).await? {
        let attempts = queue::attempts(store, delivery.id).await?;
        failed.push(FailedDelivery { delivery, attempts });
    }
    Ok((list, failed))
}

/// `POST /integrations/webhooks/deliveries/{id}/retry`, `…/retry-failed` (id 0: every failed
/// delivery) and `…/endpoints/{id}/test`: the tab's buttons, for admins.
pub async fn webhook_action(
    State(state): State<AppState>,
    Path((what, id)): Path<(String, i64)>,
    form: crate::http::auth::CsrfForm<crate::http::auth::NoFields>,
) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden(
            "only admins can retry or test deliveries".into(),
        ));
    }
    let now = now_ms();
    match what.as_str() {
        "retry" => {
            let only = (id != 0).then_some(id);
            crate::webhooks::queue::retry_failed(&state.store, only, None, now).await?;
        }
        "test" => {
            crate::webhooks::routes::queue_test(&state, id, &form.actor().name).await?;
        }
        _ => return Err(ApiError::NotFound(format!("no action {what:?}"))),
    }
    Ok(axum::response::Redirect::to("/integrations/webhooks#outgoing").into_response())
}

/// The "add an endpoint or notifier" form: every kind's fields, blank where unused.
#[derive(serde::Deserialize)]
pub struct EndpointForm {
    #[serde(flatten)]
    fields: std::collections::BTreeMap<String, String>,
}

/// Form fields read as lists (comma-separated) or numbers; the rest are text.
const LIST_FIELDS: &[&str] = &["event_types"];
const NUMBER_FIELDS: &[&str] = &["port", "rate_per_second"];

/// `POST /integrations/webhooks/endpoints`: adds an endpoint or notifier from the tab's form
/// (admins), with the same validation as the API; a webhook's generated secret is shown once.
pub async fn create_endpoint(
    State(state): State<AppState>,
    form: crate::http::auth::CsrfForm<EndpointForm>,
) -> PageResult {
    if form.user.role != crate::access::Role::Admin {
        return Err(ApiError::Forbidden("only admins can add endpoints".into()));
    }
    let mut spec = serde_json::Map::new();
    for (k, v) in &form.form.fields {
        let v = v.trim();
        if k == "csrf_token" || v.is_empty() {
            continue;
        }
        let value = if LIST_FIELDS.contains(&k.as_str()) || (k == "to" && v.contains(',')) {
            serde_json::json!(
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
            )
        } else if NUMBER_FIELDS.contains(&k.as_str()) {
            let n: u64 = v
                .parse()
                .map_err(|_| ApiError::Invalid(format!("{k}: {v:?} is not a whole number")))?;
            serde_json::json!(n)
        } else {
            serde_json::json!(v)
        };
        spec.insert(k.clone(), value);
    }
    let spec: crate::webhooks::endpoints::EndpointSpec =
        serde_json::from_value(serde_json::Value::Object(spec))
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let (_, secret) = crate::webhooks::endpoints::create(
        &state.store,
        &state.master_key,
        &spec,
        &form.actor(),
        now_ms(),
    )
    .await?;
    match secret {
        // Shown once, on a page of its own (never in a URL).
        Some(secret) => Ok(crate::web::render(
            axum::http::StatusCode::CREATED,
            &SecretShown {
                chrome: Chrome::new(&form.user, "/integrations"),
                name: spec.name.trim().to_string(),
                secret: secret.expose(),
            },
        )),
        None => Ok(axum::response::Redirect::to("/integrations/webhooks#outgoing").into_response()),
    }
}

#[derive(askama::Template)]
#[template(path = "integrations_secret.html")]
struct SecretShown {
    chrome: Chrome,
    name: String,
    secret: String,
}

/// `GET /integrations/webhooks`: inbound webhook receipts per provider (Stripe so far), and
/// outgoing deliveries per endpoint and notifier.
pub async fn webhooks(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<WebhookParams>,
) -> PageResult {
    let before = match given(&q.before) {
        None => None,
        Some(t) => {
            let (at, id) = t
                .split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| ApiError::Invalid("before: not a cursor from this page".into()))?;
            Some((at, id))
        }
    };
    let now = now_ms();
    let store = &state.store;
    let paged = before.is_some();
    let (endpoints, failed) = outgoing(store, now).await?;
    let (day, week, receipts) = tokio::try_join!(
        records::receipt_counts(store, now - DAY_MS),
        records::receipt_counts(store, now - 7 * DAY_MS),
        records::receipts(store, before, LOG_PAGE),
    )?;
    let tallies = week
        .into_iter()
        .map(|(via, outcome, n)| Tally {
            day: day
                .iter()
                .find(|(v, o, _)| *v == via && *o == outcome)
                .map_or(0, |(_, _, n)| *n),
            week: n,
            via,
            outcome,
        })
        .collect();
    let older = (receipts.len() as i64 == LOG_PAGE)
        .then(|| {
            receipts
                .last()
                .map(|r| format!("{}.{}", r.received_at, r.id))
        })
        .flatten();
    Ok(render(
        StatusCode::OK,
        &WebhooksPage {
            chrome: Chrome::new(&user, "/integrations"),
            tab: "/integrations/webhooks",
            configured: !state.revenue.webhook_secret.is_empty(),
            tallies,
            receipts,
            older,
            paged,
            endpoints,
            failed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_breaks_at_unchecked_hours() {
        let mut points = vec![None; 24];
        points[3] = Some(10.0);
        points[10] = Some(20.0);
        points[11] = Some(40.0);
        let svg = sparkline(&points);
        assert_eq!(svg.matches("<circle").count(), 1, "a lone hour is a dot");
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "two adjacent hours a line"
        );
        assert!(svg.contains("10.0–40.0 ms"), "{svg}");
        assert!(!svg.contains("style="), "CSP drops style attributes");
        assert!(sparkline(&[None; 24]).contains("No checks"));
    }

    #[test]
    fn the_form_reads_lines_and_names_its_bad_fields() {
        let form = MonitorForm {
            name: " web ".into(),
            kind: "http".into(),
            target: "https://example.com".into(),
            headers: "Accept: application/json\n\nX-Key: a:b\n".into(),
            conditions: "[STATUS] == 200\n  \n[RESPONSE_TIME] < 800".into(),
            failure_threshold: "3".into(),
            ..Default::default()
        };
        let spec = form.spec(MonitorSpec::default()).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.headers.get("X-Key").map(String::as_str), Some("a:b"));
        assert_eq!(spec.conditions.len(), 2);
        assert_eq!(spec.failure_threshold, Some(3));
        assert_eq!(spec.method, None, "blank means the kind's default");
        assert_eq!(
            MonitorForm::of(&spec).spec(MonitorSpec::default()),
            Ok(spec)
        );

        let bad = MonitorForm {
            headers: "no colon here".into(),
            ..form.clone()
        };
        assert_eq!(
            bad.spec(MonitorSpec::default()).unwrap_err().field,
            "headers"
        );
        let bad = MonitorForm {
            success_threshold: "two".into(),
            ..form
        };
        assert_eq!(
            bad.spec(MonitorSpec::default()).unwrap_err().field,
            "success_threshold"
        );
    }

    #[test]
    fn notices_are_fixed_texts() {
        assert_eq!(done_message(&Some("<b>".into()), &None), None);
        assert_eq!(
            done_message(&Some("checked".into()), &Some("<script>".into())).as_deref(),
            Some("Checked now.")
        );
        assert_eq!(
            without_notice("/integrations?state=down&done=paused"),
            "/integrations?state=down"
        );
        assert_eq!(
            without_notice("/integrations/4?done=checked&verdict=up"),
            "/integrations/4"
        );
    }
}
