//! The Overview page, and placeholders for pages whose capability is not built yet (Analytics,
//! Alerts): they state plainly which capability will fill them, with no invented figures.

use axum::http::StatusCode;
use axum::response::Response;

use super::{Chrome, format, render};
use crate::access::sessions::SessionUser;
use crate::app::AppState;
use crate::http::auth::PageUser;
use crate::overview::{FIGURES, FigureValue};
use axum::extract::State;

#[derive(askama::Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    cards: Vec<Card>,
    /// The MRR line and movements of the period, once there is a revenue history.
    revenue: Option<(String, String)>,
}

struct Card {
    name: &'static str,
    label: &'static str,
    /// The formatter's kind (`money`, `percent`, `count`), for the live refresh.
    kind: &'static str,
    /// The figure as shown, when its capability supplies it.
    value: Option<String>,
    /// Previous period, or which capability will supply the figure.
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

pub async fn overview(State(state): State<AppState>, PageUser(user): PageUser) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let figures = crate::overview::overview(&state, now, 30 * 86_400)
        .await
        .map(|o| o.figures)
        .unwrap_or_default();
    let revenue = revenue_charts(&state).await.ok().flatten();
    let cards = FIGURES
        .iter()
        .map(
            |(name, label, source)| match figures.get(*name).and_then(|f| f.as_ref()) {
                Some(f) => {
                    let kind = kind(name, f.value.as_ref());
                    let change = format::figure_change(
                        kind,
                        f.value.as_ref(),
                        f.previous.as_ref(),
                        f.change_pct,
                    );
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
                        good: !RISE_IS_BAD.contains(name),
                    }
                }
                None => Card {
                    name,
                    label,
                    kind: kind(name, None),
                    value: None,
                    note: format!("Not available yet: arrives with {source}."),
                    change: String::new(),
                    direction: "",
                    good: true,
                },
            },
        )
        .collect();
    render(
        StatusCode::OK,
        &OverviewPage {
            chrome: Chrome::new(&user, "/"),
            cards,
            revenue,
        },
    )
}

/// The Revenue page's two charts over the last 30 days, when a history exists.
async fn revenue_charts(
    state: &AppState,
) -> Result<Option<(String, String)>, crate::revenue::RevenueError> {
    use crate::revenue::metrics::{self, Interval};
    if !metrics::has_history(&state.store).await? {
        return Ok(None);
    }
    let now = crate::store::now_ms();
    let (from, to) = metrics::whole_days(now - 30 * 86_400_000, now);
    let currency = state.revenue.reporting_currency();
    // Only the series: the cards already carry the figures.
    let series = metrics::series(&state.store, currency, from, to, Interval::Day).await?;
    Ok(Some(super::revenue::charts(
        &series,
        currency,
        Interval::Day,
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
