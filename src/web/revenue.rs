//! The Revenue pages: MRR and its movements, churn and retention, payment health, the top
//! customers and the Stripe sync's state; and the drill-down from there to one customer and
//! to any stored Stripe object. Read through the revenue domain, as the JSON API is.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::chart::{self, Series};
use super::csv::Csv;
use super::format;
use super::metering::given;
use super::paging::Pager;
use super::settings::{PageResult, require_admin};
use super::{Chrome, render};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{CsrfForm, NoFields, PageUser};
use crate::money::Money;
use crate::overview::{Figure, FigureValue, parse_period};
use crate::revenue::customers::{self, CustomerName};
use crate::revenue::drill::{self, CustomerDetail, CustomerMrr, MovementRow, ObjectSummary};
use crate::revenue::history::Rates;
use crate::revenue::metrics::{self, Interval};
use crate::revenue::service::SyncStatus;
use crate::store::now_ms;

const DAY: i64 = 86_400_000;

/// Money as people read it: "$1,234.56", "-€12.00", "JPY 1,200".
pub fn show_money(m: impl Borrow<Money>) -> String {
    format::money(m)
}

/// A figure's value as shown, by unit ("" for money or a count, "%" or "×").
pub fn show_value(v: &FigureValue, unit: &str) -> String {
    format::figure(kind_of(unit), v)
}

/// The formatter's kind of figure for a unit.
fn kind_of(unit: &str) -> &'static str {
    match unit {
        "%" => "percent",
        "×" => "times",
        _ => "count",
    }
}

/// A UTC day: "2026-01-12".
pub fn show_day(ms: impl Borrow<i64>) -> String {
    format::day(ms)
}

/// "2026-01-12 14:03 UTC" for a UTC ms time.
pub fn show_time(ms: impl Borrow<i64>) -> String {
    format::time(ms)
}

/// "4 min", "3 h", "2 d".
pub fn show_age(secs: impl Borrow<i64>) -> String {
    format::age(secs)
}

/// One figure row: label, value, previous value, change badge.
pub struct Shown {
    /// Where the objects behind the figure are listed, if anywhere.
    pub link: Option<(&'static str, bool)>,
    pub name: &'static str,
    pub label: &'static str,
    /// The formatter's kind of figure (`money`, `percent`, `times`, `count`).
    pub kind: &'static str,
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
            let previous = f.and_then(|f| f.previous.as_ref());
            let kind = match value {
                Some(FigureValue::Money(_)) => "money",
                _ => kind_of(unit),
            };
            let change = format::figure_change(kind, value, previous, f.and_then(|f| f.change_pct));
            Shown {
                link: drill_link(name),
                name,
                label,
                kind,
                value: match (value, f) {
                    (_, Some(f)) if f.pending => "pending".into(),
                    (Some(v), _) => format::figure(kind, v),
                    (None, _) => format::ABSENT.into(),
                },
                previous: previous
                    .map_or_else(|| format::ABSENT.into(), |v| format::figure(kind, v)),
                direction: format::direction(change.as_ref().map(|c| c.1)),
                change: change.map(|c| c.0).unwrap_or_default(),
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
    let fmt = move |v: f64| format::money_major(v, &currency);
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
    /// Offsets of the customers and movements lists.
    customers_from: Option<i64>,
    movements_from: Option<i64>,
}

/// Customers shown per page on the Revenue page, and movements.
const TOP_CUSTOMERS: i64 = 20;
const MOVEMENTS: i64 = 100;

/// Customer names and emails by id, for the pages that list customers by id.
pub struct Names(HashMap<String, CustomerName>);

impl Names {
    pub async fn load<'a>(
        store: &crate::store::Store,
        ids: impl IntoIterator<Item = &'a String>,
    ) -> Result<Self, ApiError> {
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        Ok(Self(customers::names(store, &ids).await?))
    }

    /// The name Stripe has for a customer (else its email), or nothing.
    pub fn of(&self, id: &str) -> &str {
        self.0
            .get(id)
            .and_then(|c| c.name.as_deref().or(c.email.as_deref()))
            .unwrap_or("")
    }
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
    top_pager: Pager,
    movements: Vec<MovementRow>,
    /// The days the movements are narrowed to, as given and in words.
    days: Option<(String, String, String)>,
    movements_pager: Pager,
    names: Names,
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
    let top_from = q.customers_from.unwrap_or(0).max(0);
    let movements_from = q.movements_from.unwrap_or(0).max(0);
    let (report, status, (top, top_total), (movements, movements_total)) = tokio::try_join!(
        metrics::report(store, &rates, currency, from, to, interval, costs),
        state.revenue.status(store, now),
        customers::by_mrr(store, currency, TOP_CUSTOMERS, top_from, now),
        customers::movements(
            store,
            currency,
            (moves_from, moves_to),
            (!kind.is_empty()).then_some(kind.as_str()),
            MOVEMENTS,
            movements_from,
        ),
    )?;
    let mut report = report;
    let pending = state.revenue.first_sync_pending(store).await?;
    if let Some(p) = &pending {
        report.set_pending(p.clone());
    }
    let names = Names::load(
        store,
        top.iter()
            .map(|t| &t.customer)
            .chain(movements.iter().map(|m| &m.customer)),
    )
    .await?;
    let params = vec![("period", period.clone()), ("kind", kind.clone())];
    let top_pager = Pager {
        offset: top_from,
        limit: TOP_CUSTOMERS,
        total: top_total,
        shown: top.len(),
        path: "/revenue",
        offset_name: "customers_from",
        params: params.clone(),
    };
    let movements_pager = Pager {
        offset: movements_from,
        limit: MOVEMENTS,
        total: movements_total,
        shown: movements.len(),
        path: "/revenue",
        offset_name: "movements_from",
        params: {
            // Pages of a day's movements stay on that day.
            let mut params = params;
            if let Some((first, last, _)) = &days {
                params.push(("from", first.clone()));
                params.push(("to", last.clone()));
            }
            params
        },
    };
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
            top_pager,
            movements,
            days,
            movements_pager,
            names,
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
    offset: Option<i64>,
}

/// What the payments list and its CSV select: the period's text, the kind, failed only, and
/// the period as whole UTC days ending today.
struct PaymentsQuery {
    period: String,
    kind: String,
    failed: bool,
    days: (i64, i64),
}

impl PaymentsParams {
    fn query(&self) -> Result<PaymentsQuery, ApiError> {
        let period = given(&self.period).unwrap_or_else(|| "30d".into());
        let secs = parse_period(&period).map_err(ApiError::Invalid)?;
        let now = now_ms();
        Ok(PaymentsQuery {
            kind: self.kind.clone().unwrap_or_else(|| "charge".into()),
            failed: self.failed.as_deref() == Some("1"),
            days: metrics::whole_days(now - secs * 1000, now),
            period,
        })
    }
}

#[derive(askama::Template)]
#[template(path = "revenue_payments.html")]
struct PaymentsPage {
    chrome: Chrome,
    period: String,
    kind: String,
    failed: bool,
    rows: Vec<drill::PaymentRow>,
    names: Names,
    pager: Pager,
}

/// The payment objects behind the payment figures: failed payment intents, refunds,
/// disputes, charges or invoices of a period.
pub async fn payments(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<PaymentsParams>,
) -> PageResult {
    let PaymentsQuery {
        period,
        kind,
        failed,
        days: (from, to),
    } = q.query()?;
    let offset = q.offset.unwrap_or(0).max(0);
    let (rows, total) = drill::payments(
        &state.store,
        &kind,
        failed,
        (from, to),
        PAYMENTS_SHOWN,
        offset,
    )
    .await?;
    let names = Names::load(
        &state.store,
        rows.iter().filter_map(|r| r.customer.as_ref()),
    )
    .await?;
    let pager = Pager {
        offset,
        limit: PAYMENTS_SHOWN,
        total,
        shown: rows.len(),
        path: "/revenue/payments",
        offset_name: "offset",
        params: vec![
            ("kind", kind.clone()),
            ("period", period.clone()),
            ("failed", if failed { "1".into() } else { String::new() }),
        ],
    };
    Ok(render(
        StatusCode::OK,
        &PaymentsPage {
            chrome: Chrome::new(&user, "/revenue"),
            period,
            kind,
            failed,
            rows,
            names,
            pager,
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

/// Payment objects per page of the payments list; its CSV export has them all.
const PAYMENTS_SHOWN: i64 = 100;

/// `GET /revenue/customers.csv`: every paying customer by MRR, with name and email.
pub async fn customers_csv(State(state): State<AppState>, PageUser(_u): PageUser) -> PageResult {
    let store = &state.store;
    let currency = state.revenue.reporting_currency();
    let (rows, _) = customers::by_mrr(store, currency, i64::MAX, 0, now_ms()).await?;
    let names = customers::names(
        store,
        &rows.iter().map(|r| r.customer.clone()).collect::<Vec<_>>(),
    )
    .await?;
    let mut csv = Csv::new(&[
        "customer",
        "name",
        "email",
        "mrr",
        "currency",
        "customer_since",
        "last_change",
    ]);
    for r in rows {
        let who = names.get(&r.customer);
        csv.row([
            r.customer.clone(),
            who.and_then(|c| c.name.clone()).unwrap_or_default(),
            who.and_then(|c| c.email.clone()).unwrap_or_default(),
            decimal(&r.mrr),
            r.mrr.currency.clone(),
            format::day(r.first_day),
            format::day(r.last_day),
        ]);
    }
    Ok(csv.download("revenue-customers.csv"))
}

/// An amount as a plain decimal in major units, for CSV cells a spreadsheet reads as numbers.
fn decimal(m: &Money) -> String {
    let exponent = crate::revenue::history::minor_exponent(&m.currency);
    let text = crate::money::format_scaled(m.amount.abs(), exponent, exponent as usize);
    if m.amount < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// `GET /revenue/movements.csv`: every movement of the period (and kind) the page shows.
pub async fn movements_csv(
    State(state): State<AppState>,
    PageUser(_u): PageUser,
    Query(q): Query<RevenueParams>,
) -> PageResult {
    let period = given(&q.period).unwrap_or_else(|| "30d".into());
    let secs = parse_period(&period).map_err(ApiError::Invalid)?;
    let kind = given(&q.kind);
    let now = now_ms();
    let range = metrics::whole_days(now - secs * 1000, now);
    let store = &state.store;
    let currency = state.revenue.reporting_currency();
    let (rows, _) =
        customers::movements(store, currency, range, kind.as_deref(), i64::MAX, 0).await?;
    let names = Names::load(store, rows.iter().map(|m| &m.customer)).await?;
    let mut csv = Csv::new(&["day", "customer", "name", "kind", "mrr_change", "currency"]);
    for m in rows {
        csv.row([
            format::day(m.day),
            m.customer.clone(),
            names.of(&m.customer).to_string(),
            m.kind.clone(),
            decimal(&m.amount),
            m.amount.currency.clone(),
        ]);
    }
    Ok(csv.download("revenue-movements.csv"))
}

/// `GET /revenue/payments.csv`: the payments list's objects without its limit.
pub async fn payments_csv(
    State(state): State<AppState>,
    PageUser(_u): PageUser,
    Query(q): Query<PaymentsParams>,
) -> PageResult {
    let PaymentsQuery {
        kind,
        failed,
        days: (from, to),
        ..
    } = q.query()?;
    let (rows, _) = drill::payments(&state.store, &kind, failed, (from, to), i64::MAX, 0).await?;
    let names = Names::load(
        &state.store,
        rows.iter().filter_map(|r| r.customer.as_ref()),
    )
    .await?;
    let mut csv = Csv::new(&[
        "created", "kind", "id", "customer", "name", "status", "failed", "amount", "currency",
    ]);
    for r in rows {
        let customer = r.customer.clone().unwrap_or_default();
        let name = names.of(&customer).to_string();
        csv.row([
            format::iso(r.created),
            r.kind.clone(),
            r.id.clone(),
            customer,
            name,
            r.status.clone(),
            r.failed.to_string(),
            decimal(&r.amount),
            r.amount.currency.clone(),
        ]);
    }
    Ok(csv.download("revenue-payments.csv"))
}

#[derive(Deserialize)]
pub struct SearchParams {
    q: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "revenue_search.html")]
struct SearchPage {
    chrome: Chrome,
    query: String,
    found: Vec<CustomerName>,
}

/// What a customer id keeps unescaped in a path: letters, digits and `-._~`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Most customers a search lists.
const SEARCH_RESULTS: usize = 50;

/// `GET /customers?q=`: customers by id, name or email; one exact id goes straight to its page.
pub async fn search(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<SearchParams>,
) -> PageResult {
    let query = given(&q.q).unwrap_or_default();
    let found = customers::search(&state.store, &query, SEARCH_RESULTS).await?;
    if let [only] = found.as_slice() {
        return Ok(Redirect::to(&format!(
            "/revenue/customers/{}",
            percent_encoding::utf8_percent_encode(&only.id, PATH_SEGMENT)
        ))
        .into_response());
    }
    Ok(render(
        StatusCode::OK,
        &SearchPage {
            chrome: Chrome::new(&user, "/revenue"),
            query,
            found,
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
