//! The Overview page — problems first (the status line, open alerts, customers at risk), then
//! the headline figures grouped as money (revenue, cost, margin), usage and users, for a chosen
//! period — and the placeholder for a page whose capability is not built yet (Analytics): it
//! states plainly what will fill it, with no invented figures.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Chrome, format, render};
use crate::access::sessions::SessionUser;
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::PageUser;
use crate::overview::triage::{self, Triage};
use crate::overview::{FIGURES, FigureValue};

#[derive(askama::Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    /// The period as chosen: one of [`PERIODS`] (or another length given in the address), or
    /// `custom` with `from` and `to`.
    period: String,
    periods: Vec<(String, &'static str)>,
    from: String,
    to: String,
    /// What the figures cover, in words.
    covers: String,
    /// The period, short: "last 30 days", "1 Nov 2026 to 30 Nov 2026".
    period_words: String,
    /// Why the period asked for was refused (the page then shows the last 30 days).
    error: Option<String>,
    /// The query the live refresh asks `GET /api/v1/metrics/overview` with.
    query: String,
    triage: Triage,
    now: i64,
    groups: Vec<Group>,
    /// The MRR line and movements of the period, once there is a revenue history.
    revenue: Option<(String, String)>,
}

impl OverviewPage {
    /// "12 min" since `since` (UTC ms).
    fn for_how_long(&self, since: &i64) -> String {
        format::age((self.now - since).max(0) / 1000)
    }

    fn status_class(&self) -> &'static str {
        let s = &self.triage.status;
        if s.count("down") > 0 {
            "status-down"
        } else if s.count("degraded") > 0 {
            "status-degraded"
        } else if s.total == 0 {
            "status-none"
        } else {
            "status-ok"
        }
    }

    /// Monitors neither up nor a problem, in words: "2 unknown, 1 paused".
    fn others(&self) -> String {
        ["unknown", "paused"]
            .iter()
            .map(|s| (self.triage.status.count(s), s))
            .filter(|(n, _)| *n > 0)
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The period selector's choices.
const PERIODS: &[(&str, &str)] = &[
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("365d", "Last 365 days"),
    ("custom", "Custom range"),
];

/// A titled group of cards.
struct Group {
    id: &'static str,
    title: &'static str,
    /// Where the group's detail lives.
    link: &'static str,
    cards: Vec<Card>,
}

/// The card groups in reading order: money first (revenue, cost, margin), then usage and
/// users. Every figure of [`FIGURES`] is in exactly one group.
const GROUPS: &[(&str, &str, &str, &[&str])] = &[
    (
        "revenue",
        "Revenue",
        "/revenue",
        &[
            "mrr",
            "arr",
            "net_revenue",
            "new_mrr",
            "churned_mrr",
            "paying_customers",
            "arpa",
            "ltv",
            "nrr",
            "customer_churn_rate",
            "payment_success_rate",
            "dispute_rate",
        ],
    ),
    ("cost", "Cost", "/costs", &["provider_cost"]),
    ("margin", "Margin", "/costs", &["gross_margin"]),
    (
        "usage",
        "Usage and users",
        "/usage",
        &["api_calls", "active_users"],
    ),
];

struct Card {
    name: &'static str,
    label: &'static str,
    /// The formatter's kind (`money`, `percent`, `count`), for the live refresh.
    kind: &'static str,
    /// The figure as shown, when its capability supplies it.
    value: Option<String>,
    /// Previous period, or why there is no figure.
    note: String,
    /// Percent change as shown, with its direction for the badge.
    change: String,
    direction: &'static str,
    /// Whether a rise is good news (costs and churn are not).
    good: bool,
}

/// Figures whose rise is bad news.
const RISE_IS_BAD: &[&str] = &[
    "churned_mrr",
    "customer_churn_rate",
    "dispute_rate",
    "provider_cost",
];

/// The formatter's kind of an Overview figure: money, a percentage (rates, NRR, margin) or a
/// count. The card carries it as `data-kind` so the live refresh formats the same way.
fn kind(name: &str, v: Option<&FigureValue>) -> &'static str {
    if matches!(v, Some(FigureValue::Money(_))) || MONEY.contains(&name) {
        "money"
    } else if name.ends_with("_rate") || name == "nrr" || name == "gross_margin" {
        "percent"
    } else {
        "count"
    }
}

/// Figures that are money even before a value arrives.
const MONEY: &[&str] = &[
    "mrr",
    "arr",
    "new_mrr",
    "churned_mrr",
    "arpa",
    "ltv",
    "net_revenue",
    "provider_cost",
];

/// Why a figure has no value: what would supply it, said plainly.
fn missing(source: &str) -> String {
    match source {
        "revenue" => "No revenue data: connect Stripe (stripe.secret_key) to fill it.".into(),
        "analytics" => "Not measured: product analytics is not built yet.".into(),
        other => format!("No {other} data yet."),
    }
}

#[derive(serde::Deserialize, Default)]
pub struct OverviewParams {
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn overview(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<OverviewParams>,
) -> Result<Response, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    // The form sends the period select and both days: days filled in mean a custom range,
    // whatever the select says.
    let has_days = [&q.from, &q.to]
        .iter()
        .all(|d| d.as_deref().is_some_and(|d| !d.trim().is_empty()));
    let asked = if has_days {
        Some("custom")
    } else {
        q.period.as_deref()
    };
    let (window, error) = match triage::window(asked, q.from.as_deref(), q.to.as_deref(), now) {
        Ok(w) => (w, None),
        Err(e) => (
            triage::window(None, None, None, now)?,
            Some(match e {
                ApiError::BadRequest(m) | ApiError::Invalid(m) => m,
                other => return Err(other),
            }),
        ),
    };
    let custom = window.range.is_some();
    let period = if custom {
        "custom".to_string()
    } else if error.is_some() {
        "30d".to_string()
    } else {
        q.period
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .unwrap_or("30d")
            .to_string()
    };
    let end_ms = (window.end.unix_timestamp_nanos() / 1_000_000) as i64;
    // As `overview()` counts it: from the start of the UTC day the period begins in.
    let start_ms = (end_ms - window.secs * 1000).div_euclid(DAY) * DAY;
    let (figures, triage, revenue) = tokio::join!(
        crate::overview::overview(&state, window.end, window.secs),
        triage::triage(&state, start_ms, end_ms),
        revenue_charts(&state, start_ms, end_ms, !custom || window.end == now),
    );
    let (figures, pending) = figures.map(|o| (o.figures, o.pending)).unwrap_or_default();
    let groups = GROUPS
        .iter()
        .map(|(id, title, link, names)| Group {
            id,
            title,
            link,
            cards: names
                .iter()
                .filter_map(|n| FIGURES.iter().find(|(name, _, _)| name == n))
                .map(|(name, label, source)| card(name, label, source, &figures, &pending))
                .collect(),
        })
        .collect();
    let (from, to) = match window.range {
        Some((f, t)) => (triage::show_date(&f), triage::show_date(&t)),
        None => (String::new(), String::new()),
    };
    let query = if custom {
        format!("from={from}&to={to}")
    } else {
        format!("period={}", crate::http::auth::urlencode(&period))
    };
    let days = (end_ms - start_ms + DAY - 1) / DAY;
    let period_words = if custom {
        format!(
            "{} to {}",
            super::revenue::show_day(start_ms),
            super::revenue::show_day(end_ms - 1)
        )
    } else {
        PERIODS
            .iter()
            .find(|(p, _)| *p == period)
            .map_or_else(|| format!("last {period}"), |(_, l)| l.to_lowercase())
    };
    let covers = if custom {
        format!(
            "{} to {} (UTC), against the {days} days before.",
            super::revenue::show_day(start_ms),
            super::revenue::show_day(end_ms - 1)
        )
    } else {
        let label = PERIODS
            .iter()
            .find(|(p, _)| *p == period)
            .map_or_else(|| format!("The last {period}"), |(_, l)| (*l).to_string());
        format!("{label}, in whole UTC days, against the same length before.")
    };
    let mut periods: Vec<(String, &'static str)> =
        PERIODS.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    if !PERIODS.iter().any(|(p, _)| *p == period) {
        periods.insert(0, (period.clone(), "As given"));
    }
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            chrome: Chrome::new(&user, "/"),
            period,
            periods,
            from,
            to,
            covers,
            period_words,
            error,
            query,
            triage: triage.unwrap_or_default(),
            now: end_ms.max(crate::store::now_ms()),
            groups,
            revenue: revenue
                .inspect_err(|e| tracing::warn!(error = %e, "overview: revenue charts"))
                .ok()
                .flatten(),
        },
    ))
}

const DAY: i64 = 86_400_000;

fn card(
    name: &'static str,
    label: &'static str,
    source: &'static str,
    figures: &std::collections::BTreeMap<String, Option<crate::overview::Figure>>,
    pending: &[crate::overview::Pending],
) -> Card {
    match figures.get(name).and_then(|f| f.as_ref()) {
        // The source has not finished its first sync: neither zero nor "not connected".
        Some(f) if f.pending => Card {
            name,
            label,
            kind: kind(name, None),
            value: Some("pending".into()),
            note: pending
                .iter()
                .find(|p| p.source == source)
                .map_or_else(|| "pending".into(), crate::overview::Pending::describe),
            change: String::new(),
            direction: "",
            good: true,
        },
        Some(f) => {
            let kind = kind(name, f.value.as_ref());
            let change =
                format::figure_change(kind, f.value.as_ref(), f.previous.as_ref(), f.change_pct);
            Card {
                name,
                label,
                kind,
                value: f.value.as_ref().map(|v| format::figure(kind, v)),
                note: format!(
                    "previous {}",
                    f.previous
                        .as_ref()
                        .map_or_else(|| format::ABSENT.into(), |v| format::figure(kind, v))
                ),
                direction: format::direction(change.as_ref().map(|c| c.1)),
                change: change.map(|c| c.0).unwrap_or_default(),
                good: !RISE_IS_BAD.contains(&name),
            }
        }
        None => Card {
            name,
            label,
            kind: kind(name, None),
            value: None,
            note: missing(source),
            change: String::new(),
            direction: "",
            good: true,
        },
    }
}

/// The Revenue page's two charts over `[from, to)`, when a history exists: each day links to
/// its movements on the Revenue page, and a period running until now marks its last bucket.
async fn revenue_charts(
    state: &AppState,
    from: i64,
    to: i64,
    running: bool,
) -> Result<Option<(String, String)>, crate::revenue::RevenueError> {
    use crate::revenue::metrics;
    if !metrics::has_history(&state.store).await? {
        return Ok(None);
    }
    let (from, to) = metrics::whole_days(from, to);
    let currency = state.revenue.reporting_currency();
    let interval = super::revenue::interval_for((to - from) / 1000);
    // Only the series: the cards already carry the figures.
    let series = metrics::series(&state.store, currency, from, to, interval).await?;
    Ok(Some(super::revenue::charts_marked(
        &series, currency, interval, running,
    )))
}

#[derive(askama::Template)]
#[template(path = "placeholder.html")]
struct Placeholder {
    chrome: Chrome,
    title: &'static str,
    what: &'static str,
    tabs: &'static [&'static str],
}

/// A page whose capability is not built yet: its title, what it will show, and nothing invented.
pub(super) fn placeholder(
    user: &SessionUser,
    active: &'static str,
    title: &'static str,
    what: &'static str,
    tabs: &'static [&'static str],
) -> Response {
    render(
        StatusCode::OK,
        &Placeholder {
            chrome: Chrome::new(user, active),
            title,
            what,
            tabs,
        },
    )
}

pub async fn analytics(PageUser(u): PageUser) -> Response {
    placeholder(
        &u,
        "/analytics",
        "Analytics",
        "Page views, feature use, funnels, campaigns, retention cohorts and DAU/WAU/MAU.",
        &[],
    )
}
