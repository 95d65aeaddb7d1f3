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
            let change = f.and_then(|f| f.change_pct);
            Shown {
                link: drill_link(name),
                name,
                label,
                value: value.map_or_else(|| "n/a".into(), |v| show_value(v, unit)),
                previous: f
                    .and_then(|f| f.previous.as_ref())
                    .map_or_else(|| "n/a".into(), |v| show_value(v, unit)),
                change: change.map_or_else(String::new, |c| format!("{c:+.1} %")),
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
pub(super) fn interval_for(secs: i64) -> Interval {
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
    charts_marked(series, currency, interval, false)
}

/// [`charts`], with each day's point and bars linked to that day's movements, and with the last
/// bucket marked as still running when `running` (a period that ends now).
pub fn charts_marked(
    series: &[metrics::Point],
    currency: &str,
    interval: Interval,
    running: bool,
) -> (String, String) {
    let links: Vec<String> = series
        .iter()
        .map(|p| match interval {
            Interval::Day => format!("/revenue?day={}#movements", iso_day(p.bucket)),
            _ => format!(
                "/revenue?from={}&to={}#movements",
                iso_day(p.bucket),
                iso_day(next_bucket(p.bucket, interval) - DAY)
            ),
        })
        .collect();
    let marks = chart::Marks {
        partial_last: running,
        links: Some(&links),
    };
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
    let mrr = chart::lines_with(
        &labels,
        &[Series {
            name: "MRR".into(),
            values: series.iter().map(|p| major(&p.mrr)).collect(),
        }],
        &fmt,
        "MRR",
        marks,
    );
    let of = |name: &str, pick: fn(&metrics::Point) -> &Money| Series {
        name: name.into(),
        values: series.iter().map(|p| major(pick(p))).collect(),
    };
    let movements = chart::diverging_bars_with(
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
        marks,
    );
    (mrr, movements)
}

/// `2026-12-06` for a UTC ms day.
fn iso_day(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Start of the bucket after the one starting at `ms`.
fn next_bucket(ms: i64, interval: Interval) -> i64 {
    match interval {
        Interval::Day => ms + DAY,
        Interval::Week => ms + 7 * DAY,
        Interval::Month => {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    let (y, m) = match t.month() {
                        time::Month::December => (t.year() + 1, time::Month::January),
                        m => (t.year(), m.next()),
                    };
                    time::Date::from_calendar_date(y, m, 1).ok()
                })
                .map_or(ms + 31 * DAY, |d| {
                    d.midnight().assume_utc().unix_timestamp() * 1000
                })
        }
    }
}

#[derive(Deserialize)]
pub struct RevenueParams {
    period: Option<String>,
    kind: Option<String>,
    /// Movements of this day only (`YYYY-MM-DD`), e.g. from a click on an MRR chart.
    day: Option<String>,
    /// Movements of these days only (`YYYY-MM-DD`, both included), e.g. a week's bar.
    from: Option<String>,
    to: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "revenue.html")]
struct RevenuePage {
    chrome: Chrome,
    has_data: bool,
    period: String,
    kind: String,
    status: SyncStatus,
    from: String,
    to: String,
    cards: Vec<Shown>,
    retention: Vec<Shown>,
    payments: Vec<Shown>,
    mrr_chart: String,
    movements_chart: String,
    top: Vec<CustomerMrr>,
    movements: Vec<MovementRow>,
    /// The days the movements are narrowed to, as given and in words.
    days: Option<(String, String, String)>,
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
    // A day (or range of days) narrows the movements; the figures keep the period.
    let (day_from, day_to) = match (given(&q.day), given(&q.from), given(&q.to)) {
        (Some(d), _, _) => (Some(d.clone()), Some(d)),
        (None, f, t) => (f, t),
    };
    let range = crate::overview::triage::parse_range(
        day_from.as_deref(),
        day_to.as_deref(),
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError::Invalid(e.0))?
    .and_then(|w| w.range);
    let midnight = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    let (moves_from, moves_to) = match range {
        Some((first, last)) => (midnight(first), midnight(last) + DAY),
        None => (from, to),
    };
    let days = range.map(|(first, last)| {
        let words = if first == last {
            format!("on {}", show_day(midnight(first)))
        } else {
            format!(
                "from {} to {}",
                show_day(midnight(first)),
                show_day(midnight(last))
            )
        };
        (
            crate::overview::triage::show_date(&first),
            crate::overview::triage::show_date(&last),
            words,
        )
    });
    let store = &state.store;
    let currency = state.revenue.reporting_currency();
    let rates = Rates::load(store, currency).await?;
    let costs = metrics::provider_costs(store, &rates, from, to).await?;
    let (report, status, top, movements) = tokio::try_join!(
        metrics::report(store, &rates, currency, from, to, interval, costs),
        state.revenue.status(store, now),
        drill::top_customers(store, currency, 20),
        drill::movements(
            store,
            currency,
            moves_from,
            moves_to,
            (!kind.is_empty()).then_some(kind.as_str()),
            100
        ),
    )?;
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
            mrr_chart,
            movements_chart,
            top,
            movements,
            days,
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
    let detail = drill::customer(&state.store, state.revenue.reporting_currency(), &id)
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
