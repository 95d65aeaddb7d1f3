//! Server-rendered pages: sign-in, the layout and navigation, Overview, Revenue, Costs, Usage,
//! Integrations, Alerts, Settings (users, API keys, audit log, secrets) and an honest
//! placeholder for Analytics, not built yet. Pages read
//! through the same domain functions as the JSON API; templates are compiled into the binary
//! (askama) and the one stylesheet, script and icon are embedded.

mod alerts;
pub mod chart;
mod csv;
pub mod extras;
pub mod format;
pub mod integrations;
mod metering;
mod pages;
mod paging;
pub mod revenue;
mod settings;
mod signin;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::access::Role;
use crate::access::sessions::SessionUser;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signin", get(signin::show).post(signin::submit))
        .route("/signout", post(signin::signout))
        .route("/", get(pages::overview))
        .route("/revenue", get(revenue::page))
        .route("/revenue/sync", post(revenue::sync))
        .route("/revenue/customers.csv", get(revenue::customers_csv))
        .route("/revenue/movements.csv", get(revenue::movements_csv))
        .route("/revenue/customers/{id}", get(revenue::customer))
        .route("/revenue/payments", get(revenue::payments))
        .route("/revenue/payments.csv", get(revenue::payments_csv))
        .route("/customers", get(revenue::search))
        .route("/revenue/objects/{kind}/{id}", get(revenue::object))
        .route("/costs", get(metering::costs))
        .route("/costs/customers.csv", get(metering::customer_costs_csv))
        .route("/usage", get(metering::usage))
        .route("/usage/events.csv", get(metering::events_csv))
        .route("/analytics", get(pages::analytics))
        .route(
            "/integrations",
            get(integrations::grid).post(integrations::create),
        )
        .route("/integrations/errors", get(integrations::errors))
        .route("/integrations/tokens", get(integrations::tokens))
        .route(
            "/integrations/tokens/refresh",
            post(integrations::refresh_tokens),
        )
        .route("/integrations/webhooks", get(integrations::webhooks))
        .route(
            "/integrations/webhooks/endpoints",
            post(integrations::create_endpoint),
        )
        .route(
            "/integrations/webhooks/{what}/{id}",
            post(integrations::webhook_action),
        )
        .route(
            "/integrations/{id}",
            get(integrations::detail).post(integrations::update),
        )
        .route("/integrations/{id}/check", post(integrations::check_now))
        .route("/integrations/{id}/pause", post(integrations::pause))
        .route("/integrations/{id}/resume", post(integrations::resume))
        .route("/integrations/{id}/delete", post(integrations::delete))
        .route("/alerts", get(alerts::index))
        .route("/alerts/{id}/ack", post(alerts::ack))
        .route("/alerts/ack", post(alerts::ack_selected))
        .route("/alerts/silences", post(alerts::add_silence))
        .route("/alerts/rules", post(alerts::add_rule))
        .route("/alerts/rules/{id}/delete", post(alerts::delete_rule))
        .route("/alerts/silences/{id}/expire", post(alerts::expire_silence))
        .route("/settings", get(settings::index))
        .route(
            "/settings/users",
            get(settings::users).post(settings::add_user),
        )
        .route("/settings/users/{id}/delete", post(settings::delete_user))
        .route(
            "/settings/keys",
            get(settings::keys).post(settings::create_key),
        )
        .route("/settings/keys/{id}/revoke", post(settings::revoke_key))
        .route("/settings/audit", get(settings::audit))
        .route(
            "/settings/integrations",
            get(settings::secrets).post(settings::put_secret),
        )
        .route(
            "/settings/pricing",
            get(metering::pricing).post(metering::add_price),
        )
        .route(
            "/settings/pricing/{id}/delete",
            post(metering::delete_price),
        )
        .route(
            "/settings/plans",
            get(metering::plans).post(metering::create_plan),
        )
        .route("/settings/plans/assign", post(metering::assign_plan))
        .route(
            "/settings/plans/assignments.csv",
            get(metering::assignments_csv),
        )
        .route("/settings/plans/{id}", post(metering::update_plan))
        .route("/settings/plans/{id}/delete", post(metering::delete_plan))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .route("/static/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
}

/// What the layout needs on every signed-in page.
pub struct Chrome {
    pub email: String,
    pub is_admin: bool,
    pub csrf_token: String,
    /// Path of the navigation entry to highlight.
    pub active: &'static str,
}

impl Chrome {
    pub fn new(user: &SessionUser, active: &'static str) -> Self {
        Self {
            email: user.email.clone(),
            is_admin: user.role == Role::Admin,
            csrf_token: user.csrf_token.clone(),
            active,
        }
    }
}

/// Navigation entries: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/revenue", "Revenue"),
    ("/costs", "Costs & Margin"),
    ("/usage", "Usage"),
    ("/analytics", "Analytics"),
    ("/integrations", "Integrations"),
    ("/alerts", "Alerts"),
    ("/settings", "Settings"),
];

/// Renders a template, turning a (should-never-happen) template error into a 500.
pub fn render<T: askama::Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => crate::http::ApiError::Internal(format!("template: {e}")).into_response(),
    }
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    code: &'a str,
    detail: &'a str,
    request_id: &'a str,
}

/// The HTML error page used by the error-rendering middleware for non-API paths.
pub fn error_page(status: StatusCode, code: &str, detail: &str, request_id: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        code,
        detail,
        request_id,
    };
    render(status, &page)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/app.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/app.js"),
    )
}

/// The icon, an SVG, also at `/favicon.ico` for clients that ask there without reading the
/// page's `<link rel="icon">`.
async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/favicon.svg"),
    )
}

/// An optional timestamp in the one time format ("—" when absent).
pub fn fmt_opt_ms(ms: &Option<i64>) -> String {
    format::time_opt(ms)
}

/// A UTC millisecond timestamp in the one time format: `2026-11-23 10:57 UTC`.
pub fn fmt_ms(ms: &i64) -> String {
    format::time(ms)
}
