//! The Usage and Costs pages and Settings → Plans / Pricing tables: server-rendered from the
//! same domain queries the JSON API uses, with SVG charts and CSV-exportable tables.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::chart::{self, Series};
use super::csv::{Csv, stream_download};
use super::format;
use super::paging::Pager;
use super::revenue::Names;
use super::settings::{PageResult, require_admin};
use super::{Chrome, render};
use crate::access::sessions::SessionUser;
use crate::app::AppState;
use crate::costs::report::{self as cost_report, Costs};
use crate::costs::routes::NewPrice;
use crate::costs::{CostsError, prices};
use crate::http::ApiError;
use crate::http::auth::{AdminPage, CsrfForm, NoFields, PageUser};
use crate::overview::parse_period;
use crate::revenue::history::Rates;
use crate::revenue::margin::{GroupBy, MarginReport};
use crate::store::now_ms;
use crate::usage::UsageError;
use crate::usage::plans::{self, PlanInput};
use crate::usage::quota::{self, AtRisk};
use crate::usage::report::{self, RecentEvent, RecentFilter, Usage};

const DAY: i64 = 86_400_000;

/// "MM-DD" labels for every day of [from, to), and the index of each day start.
fn day_labels(from: i64, to: i64) -> (Vec<String>, Vec<i64>) {
    let fmt = time::macros::format_description!("[month]-[day]");
    let mut labels = Vec::new();
    let mut days = Vec::new();
    let mut d = from - from.rem_euclid(DAY);
    while d < to && days.len() < 2000 {
        let label = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(d) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&fmt).ok())
            .unwrap_or_default();
        labels.push(label);
        days.push(d);
        d += DAY;
    }
    (labels, days)
}

fn count(v: f64) -> String {
    format::count(v)
}

fn usd(v: f64) -> String {
    format::money_major(v, "usd")
}

/// Optional text from a form or query: blank means absent.
pub(super) fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[derive(Deserialize)]
pub struct UsageParams {
    period: Option<String>,
    customer: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    /// Events older than this sequence number (the event log's next page).
    before: Option<i64>,
    /// Where the list of customers at risk starts (its pager).
    risk_from: Option<i64>,
}

/// Events the Usage page's log shows at a time.
const EVENTS_SHOWN: i64 = 100;

/// Customers at risk the Usage page lists at a time; the card counts them all.
const AT_RISK_SHOWN: i64 = 25;

impl UsageParams {
    /// The recent-events filter the page and its CSV export share.
    fn events(&self) -> RecentFilter {
        RecentFilter {
            customer: given(&self.customer),
            kind: given(&self.kind),
            source: given(&self.source),
            before_seq: self.before,
        }
    }
}

#[derive(askama::Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    period: String,
    customer: String,
    kind: String,
    source: String,
    usage: Usage,
    chart: String,
    at_risk: Vec<AtRisk>,
    at_risk_pager: Pager,
    top_by_quota: Vec<AtRisk>,
    recent: Vec<RecentEvent>,
    /// The last event shown, for the link to older ones.
    older: Option<i64>,
    names: Names,
}

pub async fn usage(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<UsageParams>,
) -> PageResult {
    let period = given(&q.period).unwrap_or_else(|| "30d".into());
    let secs = parse_period(&period).map_err(ApiError::Invalid)?;
    let to = now_ms();
    let customer = given(&q.customer);
    let query = report::Query::new(customer.clone(), to - secs * 1000, to, "day")?;
    let filter = q.events();
    let store = &state.store;
    let all = customer.is_none();
    // Independent reads, run at once on separate pool connections.
    let risk_from = q.risk_from.unwrap_or(0).max(0);
    let (usage, at_risk, at_risk_total, top_by_quota, recent) = tokio::try_join!(
        report::usage(store, &query),
        quota::at_risk_page(store, AT_RISK_SHOWN, risk_from),
        quota::at_risk_count(store),
        async {
            Ok(if all {
                quota::by_percent(store, 20).await?
            } else {
                Vec::new()
            })
        },
        report::recent(store, &filter, EVENTS_SHOWN),
    )?;
    let older = (recent.len() as i64 == EVENTS_SHOWN)
        .then(|| recent.last().map(|(seq, _)| *seq))
        .flatten();
    let recent: Vec<RecentEvent> = recent.into_iter().map(|(_, e)| e).collect();
    let names = Names::load(
        store,
        usage
            .top_customers
            .iter()
            .map(|t| &t.customer)
            .chain(at_risk.iter().map(|r| &r.customer))
            .chain(top_by_quota.iter().map(|r| &r.customer))
            .chain(recent.iter().filter_map(|e| e.subject.as_ref()))
            .chain(customer.iter()),
    )
    .await?;
    let customer = customer.unwrap_or_default();
    let kind = given(&q.kind).unwrap_or_default();
    let source = given(&q.source).unwrap_or_default();
    // The pager leaves out the filters that are empty.
    let at_risk_pager = Pager {
        offset: risk_from,
        limit: AT_RISK_SHOWN,
        total: at_risk_total,
        shown: at_risk.len(),
        path: "/usage",
        offset_name: "risk_from",
        params: vec![
            ("period", period.clone()),
            ("customer", customer.clone()),
            ("type", kind.clone()),
            ("source", source.clone()),
        ],
    };
    let (labels, days) = day_labels(query.from, query.to);
    let mut ok = vec![0.0; days.len()];
    let mut errors = vec![0.0; days.len()];
    for p in &usage.series {
        if let Ok(i) = days.binary_search(&p.bucket) {
            ok[i] = (p.calls - p.errors) as f64;
            errors[i] = p.errors as f64;
        }
    }
    let chart = chart::bars(
        &labels,
        &[
            Series {
                name: "Calls".into(),
                values: ok,
            },
            Series {
                name: "5xx errors".into(),
                values: errors,
            },
        ],
        &count,
        "API calls per day",
    );
    Ok(render(
        StatusCode::OK,
        &UsagePage {
            chrome: Chrome::new(&user, "/usage"),
            period,
            customer,
            kind,
            source,
            usage,
            chart,
            at_risk,
            at_risk_pager,
            top_by_quota,
            recent,
            older,
            names,
        },
    ))
}

/// Events read per query while streaming the CSV export: big enough that the queries cost
/// little next to the transfer, small enough that one page is a few hundred kilobytes.
const CSV_PAGE: i64 = 2_000;

/// `GET /usage/events.csv`: every event matching the page's customer, type and app filters,
/// newest first, as CSV (the on-page table's export holds only the 100 rows shown). The body is
/// streamed a page at a time down the `seq` cursor, so the export is whole at any store size;
/// events stored after the download starts are not in it.
pub async fn events_csv(
    State(state): State<AppState>,
    PageUser(_user): PageUser,
    Query(q): Query<UsageParams>,
) -> PageResult {
    let mut filter = q.events();
    filter.before_seq = None;
    // The header goes out with the first page; `take` leaves the builder empty for the next.
    let csv = Csv::new(&["time", "type", "customer", "app", "id", "data", "cost_usd"]);
    let store = state.store.clone();
    let pages = futures_util::stream::unfold(Some((filter, csv)), move |cursor| {
        let store = store.clone();
        async move {
            let (mut filter, mut csv) = cursor?;
            let events = match report::recent(&store, &filter, CSV_PAGE).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "usage events export ended early");
                    return Some((Err(e), None));
                }
            };
            let more = events.len() as i64 == CSV_PAGE;
            filter.before_seq = events.last().map(|(seq, _)| *seq);
            for (_, e) in events {
                csv.row([
                    format::iso(e.time),
                    e.kind,
                    e.subject.unwrap_or_default(),
                    e.source,
                    e.id,
                    e.data.to_string(),
                    e.cost_usd.unwrap_or_default(),
                ]);
            }
            let chunk = csv.take();
            Some((Ok(chunk), more.then_some((filter, csv))))
        }
    });
    Ok(stream_download("usage-events.csv", pages))
}

#[derive(Deserialize)]
pub struct CostsParams {
    period: Option<String>,
    /// Offset of the costliest customers list.
    customers_from: Option<i64>,
}

#[derive(askama::Template)]
#[template(path = "costs.html")]
struct CostsPage {
    chrome: Chrome,
    period: String,
    costs: Costs,
    chart: String,
    margin: Margin,
    names: Names,
    customers_pager: Pager,
}

/// The margin part of the Costs & Margin page: shown once there is revenue to set costs
/// against, else why not.
enum Margin {
    Unavailable(String),
    Shown {
        by_customer: Box<MarginReport>,
        by_plan: Box<MarginReport>,
        by_provider: Box<MarginReport>,
    },
}

async fn margin(state: &AppState, from: i64, to: i64) -> Result<Margin, ApiError> {
    use crate::revenue::RevenueError;
    let store = &state.store;
    let rates = Rates::load(store, state.revenue.reporting_currency()).await?;
    let groups = [GroupBy::Customer, GroupBy::Plan, GroupBy::Provider];
    let reports = match state
        .revenue
        .margin
        .reports(store, &rates, &groups, from, to, 10)
        .await
    {
        Ok(r) => r,
        Err(RevenueError::Invalid(m)) => return Ok(Margin::Unavailable(m)),
        Err(e) => return Err(e.into()),
    };
    let [by_customer, by_plan, by_provider]: [MarginReport; 3] = reports
        .try_into()
        .map_err(|_| ApiError::Internal("margin: one report per grouping".into()))?;
    if state.revenue.client.is_none() && by_customer.totals.revenue.amount == 0 {
        return Ok(Margin::Unavailable(
            "No revenue to set costs against: connect Stripe (stripe.secret_key).".into(),
        ));
    }
    Ok(Margin::Shown {
        by_customer: Box::new(by_customer),
        by_plan: Box::new(by_plan),
        by_provider: Box::new(by_provider),
    })
}

pub async fn costs(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<CostsParams>,
) -> PageResult {
    let period = given(&q.period).unwrap_or_else(|| "30d".into());
    let secs = parse_period(&period).map_err(ApiError::Invalid)?;
    let to = now_ms();
    let customers_from = q.customers_from.unwrap_or(0).max(0);
    // Side by side: each is a handful of index reads, and the page waits for both.
    let ((costs, customers_total), margin) = tokio::try_join!(
        async {
            Ok::<_, ApiError>(
                cost_report::costs_paged(&state.store, to - secs * 1000, to, customers_from)
                    .await?,
            )
        },
        margin(&state, to - secs * 1000, to),
    )?;
    let customers_pager = Pager {
        offset: customers_from,
        limit: cost_report::COSTLIEST,
        total: customers_total,
        shown: costs.by_customer.len(),
        path: "/costs",
        offset_name: "customers_from",
        params: vec![("period", period.clone())],
    };
    let (labels, days) = day_labels(costs.from, costs.to);
    let series: Vec<Series> = costs
        .by_provider
        .iter()
        .map(|p| Series {
            name: p.provider.clone(),
            values: days
                .iter()
                .map(|d| {
                    costs
                        .by_day
                        .iter()
                        .find(|x| x.day == *d)
                        .and_then(|x| x.providers.get(&p.provider))
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                })
                .collect(),
        })
        .collect();
    let chart = chart::bars(&labels, &series, &usd, "Provider cost per day");
    let mut ids: Vec<&String> = costs.by_customer.iter().map(|c| &c.customer).collect();
    if let Margin::Shown { by_customer, .. } = &margin {
        ids.extend(by_customer.rows.iter().map(|r| &r.key));
        ids.extend(by_customer.least_profitable.iter().map(|r| &r.key));
    }
    let names = Names::load(&state.store, ids).await?;
    Ok(render(
        StatusCode::OK,
        &CostsPage {
            chrome: Chrome::new(&user, "/costs"),
            period,
            costs,
            chart,
            margin,
            names,
            customers_pager,
        },
    ))
}

/// `GET /costs/customers.csv`: every customer's provider cost this month, not only the
/// costliest the page lists.
pub async fn customer_costs_csv(
    State(state): State<AppState>,
    PageUser(_u): PageUser,
) -> PageResult {
    let (rows, _) = cost_report::customers_this_month(&state.store, i64::MAX, 0).await?;
    let names = Names::load(&state.store, rows.iter().map(|r| &r.customer)).await?;
    let mut csv = Csv::new(&["customer", "name", "cost_usd"]);
    for r in rows {
        csv.row([
            r.customer.clone(),
            names.of(&r.customer).to_string(),
            r.cost.cost_usd,
        ]);
    }
    Ok(csv.download("costs-customers.csv"))
}

/// Maps a domain refusal to a status and message shown on the form's page; anything else is
/// an error page.
fn usage_problem(e: UsageError) -> Result<(StatusCode, String), ApiError> {
    match e {
        UsageError::Invalid(m) => Ok((StatusCode::UNPROCESSABLE_ENTITY, m)),
        UsageError::Conflict(m) => Ok((StatusCode::CONFLICT, m)),
        e @ UsageError::NotFound(_) => Ok((StatusCode::NOT_FOUND, e.to_string())),
        other => Err(other.into()),
    }
}

#[derive(askama::Template)]
#[template(path = "settings_plans.html")]
struct PlansPage {
    chrome: Chrome,
    plans: Vec<plans::Plan>,
    assignments: Vec<plans::Assignment>,
    pager: Pager,
    error: Option<String>,
}

/// Assignments shown per page of Settings → Plans.
const ASSIGNMENTS: i64 = 200;

async fn plans_page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    error: Option<String>,
    offset: i64,
) -> PageResult {
    let (assignments, total) = plans::assignments_page(&state.store, ASSIGNMENTS, offset).await?;
    let pager = Pager {
        offset,
        limit: ASSIGNMENTS,
        total,
        shown: assignments.len(),
        path: "/settings/plans",
        offset_name: "offset",
        params: Vec::new(),
    };
    Ok(render(
        status,
        &PlansPage {
            chrome: Chrome::new(user, "/settings"),
            plans: plans::list(&state.store).await?,
            assignments,
            pager,
            error,
        },
    ))
}

#[derive(Deserialize)]
pub struct OffsetParams {
    offset: Option<i64>,
}

pub async fn plans(
    State(state): State<AppState>,
    AdminPage(user): AdminPage,
    Query(q): Query<OffsetParams>,
) -> PageResult {
    plans_page(
        &state,
        &user,
        StatusCode::OK,
        None,
        q.offset.unwrap_or(0).max(0),
    )
    .await
}

/// `GET /settings/plans/assignments.csv`: every customer's plan, not only the page shown.
pub async fn assignments_csv(
    State(state): State<AppState>,
    AdminPage(_u): AdminPage,
) -> PageResult {
    let (rows, _) = plans::assignments_page(&state.store, i64::MAX, 0).await?;
    let mut csv = Csv::new(&["customer", "plan", "set_by", "since"]);
    for a in rows {
        csv.row([
            a.customer_id,
            a.plan_id,
            a.source,
            format::iso(a.assigned_at),
        ]);
    }
    Ok(csv.download("customer-plans.csv"))
}

#[derive(Deserialize)]
pub struct PlanForm {
    id: String,
    name: String,
    price: String,
    currency: Option<String>,
    api_calls: Option<String>,
    provider_credits: Option<String>,
    overage_per_1k_calls: Option<String>,
    hard_limit_percent: Option<String>,
}

fn form_int(field: &str, v: &Option<String>, default: i64) -> Result<i64, UsageError> {
    match given(v) {
        None => Ok(default),
        Some(t) => t
            .parse()
            .map_err(|_| UsageError::Invalid(format!("{field}: {t:?} is not a whole number"))),
    }
}

impl PlanForm {
    fn input(&self) -> Result<PlanInput, UsageError> {
        Ok(PlanInput {
            id: self.id.trim().to_string(),
            name: self.name.clone(),
            price: self.price.trim().to_string(),
            currency: given(&self.currency).unwrap_or_else(|| "usd".into()),
            api_calls: form_int("api_calls", &self.api_calls, 0)?,
            provider_credits: form_int("provider_credits", &self.provider_credits, 0)?,
            overage_per_1k_calls: given(&self.overage_per_1k_calls).unwrap_or_else(|| "0".into()),
            hard_limit_percent: form_int("hard_limit_percent", &self.hard_limit_percent, 120)?,
        })
    }
}

/// Back to the plans page after a change: redirected when it worked, else re-rendered with the
/// reason and its status.
async fn after_plan_change(
    state: &AppState,
    user: &SessionUser,
    result: Result<(), UsageError>,
) -> PageResult {
    match result {
        Ok(()) => Ok(Redirect::to("/settings/plans").into_response()),
        Err(e) => {
            let (status, msg) = usage_problem(e)?;
            plans_page(state, user, status, Some(msg), 0).await
        }
    }
}

pub async fn create_plan(State(state): State<AppState>, form: CsrfForm<PlanForm>) -> PageResult {
    require_admin(&form.user)?;
    let result = match form.form.input() {
        Ok(input) => plans::create(&state.store, &input, &form.actor())
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    after_plan_change(&state, &form.user, result).await
}

pub async fn update_plan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<PlanForm>,
) -> PageResult {
    require_admin(&form.user)?;
    let result = match form.form.input() {
        Ok(input) => plans::update(&state.store, &id, &input, &form.actor())
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if result.is_ok() {
        // As through the API: the customers on the plan are re-evaluated against its quotas.
        state.quota_watch.touch_plan(&state.store, &id).await?;
    }
    after_plan_change(&state, &form.user, result).await
}

pub async fn delete_plan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    require_admin(&form.user)?;
    let result = plans::delete(&state.store, &id, &form.actor()).await;
    after_plan_change(&state, &form.user, result).await
}

#[derive(Deserialize)]
pub struct AssignForm {
    customer: String,
    /// Empty takes the customer off their plan.
    plan: String,
}

pub async fn assign_plan(State(state): State<AppState>, form: CsrfForm<AssignForm>) -> PageResult {
    require_admin(&form.user)?;
    let customer = form.form.customer.trim().to_string();
    let result = if form.form.plan.trim().is_empty() {
        plans::unassign(&state.store, &customer, &form.actor()).await
    } else {
        plans::assign(
            &state.store,
            &customer,
            form.form.plan.trim(),
            "manual",
            &form.actor(),
        )
        .await
        .map(|_| ())
    };
    if result.is_ok() {
        state.quota_watch.touch(&customer);
    }
    after_plan_change(&state, &form.user, result).await
}

#[derive(askama::Template)]
#[template(path = "settings_pricing.html")]
struct PricingPage {
    chrome: Chrome,
    prices: Vec<prices::Price>,
    error: Option<String>,
}

async fn pricing_page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    Ok(render(
        status,
        &PricingPage {
            chrome: Chrome::new(user, "/settings"),
            prices: prices::list(&state.store).await?,
            error,
        },
    ))
}

pub async fn pricing(State(state): State<AppState>, AdminPage(user): AdminPage) -> PageResult {
    pricing_page(&state, &user, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct PriceForm {
    provider: String,
    sku: String,
    unit: String,
    price_usd: String,
    effective_from: String,
}

pub async fn add_price(State(state): State<AppState>, form: CsrfForm<PriceForm>) -> PageResult {
    require_admin(&form.user)?;
    let f = &form.form;
    let new = NewPrice {
        provider: f.provider.clone(),
        sku: f.sku.clone(),
        unit: f.unit.clone(),
        price_usd: f.price_usd.clone(),
        effective_from: f.effective_from.clone(),
    };
    let result = match new.to_row() {
        Ok(row) => prices::add(&state.store, &row, &form.actor()).await,
        Err(ApiError::Invalid(m)) => Err(CostsError::Invalid(m)),
        Err(other) => return Err(other),
    };
    match result {
        Ok(()) => {
            state.prices.reload(&state.store).await?;
            Ok(Redirect::to("/settings/pricing").into_response())
        }
        Err(CostsError::Invalid(m)) => {
            pricing_page(
                &state,
                &form.user,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(m),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn delete_price(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    require_admin(&form.user)?;
    prices::delete(&state.store, id, &form.actor()).await?;
    state.prices.reload(&state.store).await?;
    Ok(Redirect::to("/settings/pricing").into_response())
}
