//! The Revenue pages: MRR and its movements, churn and retention, payment health, the top
//! customers and the Stripe sync's state; and the drill-down from there to one customer and
//! to any stored Stripe object. Read through the revenue domain, as the JSON API is.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::chart::{self, Series};
use super::metering::given;
use super::settings::{PageResult, require_admin};
use super::{Chrome, render};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{CsrfForm, NoFields, PageUser};
use crate::money::Money;
use crate::overview::{Figure, FigureValue, parse_period};
use crate::revenue::drill::{self, CustomerDetail, CustomerMrr, MovementRow, ObjectSummary};
use crate::revenue::history::Rates;
use crate::revenue::metrics::{self, Interval};
use crate::revenue::service::SyncStatus;
use crate::store::now_ms;

const DAY: i64 = 86_400_000;

/// Money as people read it: "$1,234.56", "€-12.00", "JPY 1,200".
pub fn show_money(m: impl Borrow<Money>) -> String {
    let m = m.borrow();
    let exponent = crate::revenue::history::minor_exponent(&m.currency);
    let text = crate::money::format_scaled(m.amount.abs(), exponent, exponent as usize);
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if m.amount < 0 { "-" } else { "" };
    let number = if frac.is_empty() {
        grouped
    } else {
        format!("{grouped}.{frac}")
    };
    match m.currency.as_str() {
        "usd" => format!("{sign}${number}"),
        "eur" => format!("{sign}€{number}"),
        "gbp" => format!("{sign}£{number}"),
        other => format!("{sign}{} {number}", other.to_uppercase()),
    }
}

/// A figure's value as shown.
pub fn show_value(v: &FigureValue, unit: &str) -> String {
    match v {
        FigureValue::Money(m) => show_money(m),
        FigureValue::Number(n) if unit == "%" => format!("{n} %"),
        FigureValue::Number(n) if unit == "×" => format!("{n}×"),
        FigureValue::Number(n) => format!("{n}"),
    }
}

/// "12 Jan 2026" for a UTC ms day.
pub fn show_day(ms: impl Borrow<i64>) -> String {
    let ms = *ms.borrow();
    let fmt = time::macros::format_description!("[day padding:none] [month repr:short] [year]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// "2026-01-12 14:03 UTC" for a UTC ms time.
pub fn show_time(ms: impl Borrow<i64>) -> String {
    let ms = *ms.borrow();
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// "4 min", "3 h", "2 d".
pub fn show_age(secs: impl Borrow<i64>) -> String {
    match *secs.borrow() {
        s if s < 90 => format!("{s} s"),
        s if s < 5_400 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// One figure row: label, value, previous value, change badge.
pub struct Shown {
    /// Where the objects behind the figure are listed, if anywhere.
    pub link: Option<(&'static str, bool)>,
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub previous: String,
    pub change: String,
    /// `up`, `down` or empty, for the badge's colour; `good` says whether up is good.
    pub direction: &'static str,
    pub good: bool,
}

/// Label, unit ("" / "%" / "×") and whether a rise is good, per revenue figure.
const CARDS: &[(&str, &str, &str, bool)] = &[
    ("mrr", "MRR", "", true),
    ("arr", "ARR", "", true),
    ("net_new_mrr", "Net new MRR", "", true),
    ("paying_customers", "Paying customers", "", true),
    ("arpa", "ARPA", "", true),
    ("ltv", "LTV", "", true),
    ("nrr", "Net revenue retention", "%", true),
    ("customer_churn_rate", "Customer churn", "%", false),
    ("quick_ratio", "Quick ratio", "×", true),
    ("net_revenue", "Net revenue", "", true),
    ("non_recurring_revenue", "Non-recurring revenue", "", true),
    ("payment_success_rate", "Payment success", "%", true),
];

const RETENTION: &[(&str, &str, &str, bool)] = &[
    ("customer_churn_rate", "Customer churn rate", "%", false),
    ("gross_mrr_churn_rate", "Gross MRR churn rate", "%", false),
    ("net_mrr_churn_rate", "Net MRR churn rate", "%", false),
    ("nrr", "Net revenue retention", "%", true),
    (
        "trailing_customer_churn_rate",
        "Customer churn, trailing 6 months (monthly)",
        "%",
        false,
    ),
    (
        "subscription_growth_rate",
        "Subscription growth rate",
        "%",
        true,
    ),
    ("new_mrr", "New MRR", "", true),
    ("expansion_mrr", "Expansion MRR", "", true),
    ("reactivation_mrr", "Reactivation MRR", "", true),
    ("contraction_mrr", "Contraction MRR", "", false),
    ("churned_mrr", "Churned MRR", "", false),
];

const PAYMENTS: &[(&str, &str, &str, bool)] = &[
    ("payment_success_rate", "Payment success rate", "%", true),
    ("refund_rate", "Refund rate", "%", false),
    ("refunds", "Refunds", "", false),
    ("refunded", "Refunded", "", false),
    ("dispute_rate", "Dispute rate", "%", false),
    ("dispute_activity", "Dispute activity", "%", false),
    ("net_revenue", "Net revenue", "", true),
    ("recurring_revenue", "Recurring revenue", "", true),
    ("non_recurring_revenue", "Non-recurring revenue", "", true),
    ("gross_margin", "Gross margin", "%", true),
];

pub fn shown(
    figures: &BTreeMap<String, Figure>,
    list: &[(&'static str, &'static str, &str, bool)],
) -> Vec<Shown> {
    list.iter()
        .map(|&(name, label, unit, good)| {
            let f = figures.get(name);
            let value = f.and_then(|f| f.value.as_ref());
            let (change, shown_change) = change_of(f);
            Shown {
                link: drill_link(name),
                name,
                label,
                value: match (value, f) {
                    (_, Some(f)) if f.pending => "pending".into(),
                    (Some(v), _) => show_value(v, unit),
                    (None, _) => "n/a".into(),
                },
                previous: f
                    .and_then(|f| f.previous.as_ref())
                    .map_or_else(|| "n/a".into(), |v| show_value(v, unit)),
                change: shown_change,
                direction: match change {
                    Some(c) if c > 0.0 => "up",
                    Some(c) if c < 0.0 => "down",
                    _ => "",
                },
                good,
            }
        })
        .collect()
}

/// A figure's change as a number (for the badge's direction) and as shown: percentage points
/// for a rate (`+1.4 pp`), else the relative change (`+12.5 %`).
pub fn change_of(f: Option<&Figure>) -> (Option<f64>, String) {
    match f {
        Some(Figure {
            change_pp: Some(pp),
            ..
        }) => (*pp, pp.map_or_else(String::new, points)),
        Some(f) => (
            f.change_pct,
            f.change_pct
                .map_or_else(String::new, |c| format!("{c:+.1} %")),
        ),
        None => (None, String::new()),
    }
}

/// A change in percentage points, signed, one decimal: `+1.4 pp`, `-0.3 pp`, `0.0 pp`.
pub fn points(pp: f64) -> String {
    let rounded = (pp * 10.0).round() / 10.0;
    if rounded == 0.0 {
        "0.0 pp".into()
    } else {
        format!("{rounded:+.1} pp")
    }
}

/// The payments list behind a payment figure: the kind of object, and whether only failed
/// ones.
fn drill_link(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "payment_success_rate" => ("payment_intent", true),
        "refund_rate" | "refunds" | "refunded" => ("refund", false),
        "dispute_rate" | "dispute_activity" => ("dispute", false),
        "net_revenue" | "non_recurring_revenue" => ("charge", false),
        "recurring_revenue" => ("invoice", false),
        _ => return None,
    })
}

/// The interval a period is charted in: days up to a month, weeks up to half a year.
fn interval_for(secs: i64) -> Interval {
    match secs {
        s if s <= 31 * 86_400 => Interval::Day,
        s if s <= 183 * 86_400 => Interval::Week,
        _ => Interval::Month,
    }
}

fn bucket_label(ms: i64, interval: Interval) -> String {
    let fmt: &[time::format_description::BorrowedFormatItem] = match interval {
        Interval::Month => time::macros::format_description!("[year]-[month]"),
        _ => time::macros::format_description!("[month]-[day]"),
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

/// The MRR line and the movements chart of a series in `currency`.
pub fn charts(series: &[metrics::Point], currency: &str, interval: Interval) -> (String, String) {
    let labels: Vec<String> = series
        .iter()
        .map(|p| bucket_label(p.bucket, interval))
        .collect();
    let major = |m: &Money| {
        m.amount as f64 / 10f64.powi(crate::revenue::history::minor_exponent(&m.currency) as i32)
    };
    let currency = currency.to_string();
    let fmt = move |v: f64| {
        let exponent = crate::revenue::history::minor_exponent(&currency);
        show_money(&Money {
            amount: (v * 10f64.powi(exponent as i32)).round() as i64,
            currency: currency.clone(),
        })
        .replace(".00", "")
    };
    let mrr = chart::lines(
        &labels,
        &[Series {
            name: "MRR".into(),
            values: series.iter().map(|p| major(&p.mrr)).collect(),
        }],
        &fmt,
        "MRR",
    );
    let of = |name: &str, pick: fn(&metrics::Point) -> &Money| Series {
        name: name.into(),
        values: series.iter().map(|p| major(pick(p))).collect(),
    };
    let movements = chart::diverging_bars(
        &labels,
        &[
            of("New", |p| &p.new),
            of("Expansion", |p| &p.expansion),
            of("Reactivation", |p| &p.reactivation),
            of("Contraction", |p| &p.contraction),
            of("Churn", |p| &p.churn),
        ],
        &fmt,
        "MRR movements",
    );
    (mrr, movements)
}

#[derive(Deserialize)]
pub struct RevenueParams {
    period: Option<String>,
    kind: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "revenue.html")]
struct RevenuePage {
    chrome: Chrome,
    has_data: bool,
    period: String,
    kind: String,
    status: SyncStatus,
    /// While the first Stripe sync runs, what to say instead of the figures.
    pending: Option<String>,
    from: String,
    to: String,
    cards: Vec<Shown>,
    retention: Vec<Shown>,
    payments: Vec<Shown>,
    mrr_chart: String,
    movements_chart: String,
    top: Vec<CustomerMrr>,
    movements: Vec<MovementRow>,
}

pub async fn page(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<RevenueParams>,
) -> PageResult {
    let period = given(&q.period).unwrap_or_else(|| "30d".into());
    let secs = parse_period(&period).map_err(ApiError::Invalid)?;
    let kind = q
        .kind
        .as_deref()
        .filter(|k| ["new", "expansion", "contraction", "churn", "reactivation"].contains(k))
        .unwrap_or("")
        .to_string();
    let now = now_ms();
    let (from, to) = metrics::whole_days(now - secs * 1000, now);
    let interval = interval_for(secs);
    let store = &state.store;
    let currency = state.revenue.reporting_currency();
    let rates = Rates::load(store, currency).await?;
    let costs = metrics::provider_costs(store, &rates, from, to).await?;
    let (report, status, top, movements) = tokio::try_join!(
        metrics::report(store, &rates, currency, from, to, interval, costs),
        state.revenue.status(store, now),
        drill::top_customers(store, currency, 20, now),
        drill::movements(
            store,
            currency,
            from,
            to,
            (!kind.is_empty()).then_some(kind.as_str()),
            100
        ),
    )?;
    let mut report = report;
    let pending = state.revenue.first_sync_pending(store).await?;
    if let Some(p) = &pending {
        report.set_pending(p.clone());
    }
    let (mrr_chart, movements_chart) = charts(&report.series, &report.currency, interval);
    // Without Stripe and without a stored history every figure would be an invented zero.
    let has_data = status.connected || metrics::has_history(store).await?;
    Ok(render(
        StatusCode::OK,
        &RevenuePage {
            chrome: Chrome::new(&user, "/revenue"),
            has_data,
            period,
            kind,
            from: show_day(from),
            to: show_day(to - DAY),
            cards: shown(&report.figures, CARDS),
            retention: shown(&report.figures, RETENTION),
            payments: shown(&report.figures, PAYMENTS),
            status,
            pending: pending.map(|p| p.describe()),
            mrr_chart,
            movements_chart,
            top,
            movements,
        },
    ))
}

/// Starts a sync in the background, as `POST /api/v1/stripe/sync` does.
pub async fn sync(State(state): State<AppState>, form: CsrfForm<NoFields>) -> PageResult {
    require_admin(&form.user)?;
    state.revenue.sync_in_background(&state.store)?;
    Ok(Redirect::to("/revenue").into_response())
}

#[derive(Deserialize)]
pub struct PaymentsParams {
    period: Option<String>,
    kind: Option<String>,
    failed: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "revenue_payments.html")]
struct PaymentsPage {
    chrome: Chrome,
    period: String,
    kind: String,
    failed: bool,
    rows: Vec<drill::PaymentRow>,
}

/// The payment objects behind the payment figures: failed payment intents, refunds,
/// disputes, charges or invoices of a period.
pub async fn payments(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<PaymentsParams>,
) -> PageResult {
    let period = given(&q.period).unwrap_or_else(|| "30d".into());
    let secs = parse_period(&period).map_err(ApiError::Invalid)?;
    let kind = q.kind.unwrap_or_else(|| "charge".into());
    let failed = q.failed.as_deref() == Some("1");
    let now = now_ms();
    let (from, to) = metrics::whole_days(now - secs * 1000, now);
    let rows = drill::payments(&state.store, &kind, failed, from, to, 500).await?;
    Ok(render(
        StatusCode::OK,
        &PaymentsPage {
            chrome: Chrome::new(&user, "/revenue"),
            period,
            kind,
            failed,
            rows,
        },
    ))
}

#[derive(askama::Template)]
#[template(path = "revenue_customer.html")]
struct CustomerPage {
    chrome: Chrome,
    detail: CustomerDetail,
}

pub async fn customer(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(id): Path<String>,
) -> PageResult {
    let detail = drill::customer(
        &state.store,
        state.revenue.reporting_currency(),
        &id,
        now_ms(),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no revenue data for customer {id:?}")))?;
    Ok(render(
        StatusCode::OK,
        &CustomerPage {
            chrome: Chrome::new(&user, "/revenue"),
            detail,
        },
    ))
}

#[derive(askama::Template)]
#[template(path = "revenue_object.html")]
struct ObjectPage {
    chrome: Chrome,
    object: ObjectSummary,
    customer: Option<String>,
    json: String,
}

pub async fn object(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path((object_type, id)): Path<(String, String)>,
) -> PageResult {
    if !drill::OBJECT_TYPES.contains(&object_type.as_str()) {
        return Err(ApiError::NotFound(format!(
            "opsdeck stores no Stripe objects of type {object_type:?}"
        )));
    }
    let (object, customer, json) = drill::object(&state.store, &object_type, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no stored {object_type} {id:?}")))?;
    Ok(render(
        StatusCode::OK,
        &ObjectPage {
            chrome: Chrome::new(&user, "/revenue"),
            object,
            customer,
            json,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_naturally() {
        let m = |amount, currency: &str| Money {
            amount,
            currency: currency.into(),
        };
        assert_eq!(show_money(m(123_456_789, "usd")), "$1,234,567.89");
        assert_eq!(show_money(m(-1_200, "eur")), "-€12.00");
        assert_eq!(show_money(m(5, "usd")), "$0.05");
        assert_eq!(show_money(m(1_200, "jpy")), "JPY 1,200");
        assert_eq!(show_money(m(100, "chf")), "CHF 1.00");
    }

    #[test]
    fn ages_pick_a_readable_unit() {
        assert_eq!(show_age(42), "42 s");
        assert_eq!(show_age(600), "10 min");
        assert_eq!(show_age(7_200), "2 h");
        assert_eq!(show_age(3 * 86_400), "3 d");
    }
}
