//! The product pages. Only Overview has live content so far; the rest state plainly which
//! capability will fill them, with no invented figures.

use axum::http::StatusCode;
use axum::response::Response;

use super::{Chrome, render};
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
}

struct Card {
    name: &'static str,
    label: &'static str,
    /// The figure as shown, when its capability supplies it.
    value: Option<String>,
    /// Previous period and change, or which capability will supply the figure.
    note: String,
}

fn show(v: &FigureValue) -> String {
    match v {
        FigureValue::Money(m) => format!(
            "{} {}",
            crate::money::format_scaled(m.amount, 2, 2),
            m.currency.to_uppercase()
        ),
        FigureValue::Number(n) => format!("{n}"),
    }
}

pub async fn overview(State(state): State<AppState>, PageUser(user): PageUser) -> Response {
    let figures = crate::overview::overview(&state, time::OffsetDateTime::now_utc(), 30 * 86_400)
        .await
        .map(|o| o.figures)
        .unwrap_or_default();
    let cards = FIGURES
        .iter()
        .map(
            |(name, label, source)| match figures.get(*name).and_then(|f| f.as_ref()) {
                Some(f) => Card {
                    name,
                    label,
                    value: f.value.as_ref().map(show),
                    note: format!(
                        "previous {}{}",
                        f.previous.as_ref().map(show).unwrap_or_else(|| "—".into()),
                        f.change_pct
                            .map(|c| format!(" ({c:+.1} %)"))
                            .unwrap_or_default()
                    ),
                },
                None => Card {
                    name,
                    label,
                    value: None,
                    note: format!("Not available yet: arrives with {source}."),
                },
            },
        )
        .collect();
    render(
        StatusCode::OK,
        &OverviewPage {
            chrome: Chrome::new(&user, "/"),
            cards,
        },
    )
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

pub async fn integrations(PageUser(u): PageUser) -> Response {
    placeholder(
        &u,
        "/integrations",
        "Integrations",
        "Health, latency and uptime of every provider you depend on, OAuth token expiry, quotas and webhook deliveries.",
        &["Overview", "Error Logs", "Token Status", "Webhooks"],
    )
}

pub async fn alerts(PageUser(u): PageUser) -> Response {
    placeholder(
        &u,
        "/alerts",
        "Alerts",
        "Alert rules, firing and resolved alerts, acknowledgements, silences and notifiers.",
        &[],
    )
}
