//! Headline figures for the Overview page and `GET /api/v1/metrics/overview`.
//!
//! Each figure belongs to a capability (revenue, costs, usage, analytics). Until that capability
//! exists the figure is `null`: the contract's shape is fixed now so clients can be built against
//! it, and nothing here ever invents a number.

pub mod triage;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::Scope;
use crate::app::AppState;
use crate::http::Result;
use crate::http::auth::Auth;
use crate::http::error::ErrorBody;
use crate::money::Money;

/// Every headline figure, in display order, with the capability that will supply it.
pub const FIGURES: &[(&str, &str, &str)] = &[
    ("mrr", "MRR", "revenue"),
    ("arr", "ARR", "revenue"),
    ("paying_customers", "Paying customers", "revenue"),
    ("new_mrr", "New MRR", "revenue"),
    ("churned_mrr", "Churned MRR", "revenue"),
    ("customer_churn_rate", "Customer churn", "revenue"),
    ("nrr", "Net revenue retention", "revenue"),
    ("arpa", "ARPA", "revenue"),
    ("ltv", "LTV", "revenue"),
    ("payment_success_rate", "Payment success", "revenue"),
    ("dispute_rate", "Dispute rate", "revenue"),
    ("net_revenue", "Net revenue", "revenue"),
    ("provider_cost", "Provider cost", "costs"),
    ("gross_margin", "Gross margin", "revenue"),
    ("api_calls", "API calls", "usage"),
    ("active_users", "Active users", "analytics"),
];

/// Figures that are percentages. Compared across periods they change by percentage points
/// (`change_pp`): a refund rate going from 0.57 % to 2.01 % is +1.44 pp, where the relative
/// change (+252.6 %) says little.
pub const RATE_FIGURES: &[&str] = &[
    "customer_churn_rate",
    "gross_mrr_churn_rate",
    "net_mrr_churn_rate",
    "trailing_customer_churn_rate",
    "nrr",
    "payment_success_rate",
    "dispute_rate",
    "dispute_activity",
    "refund_rate",
    "subscription_growth_rate",
    "gross_margin",
];

/// Whether figure `name` is a percentage (see [`RATE_FIGURES`]).
pub fn is_rate(name: &str) -> bool {
    RATE_FIGURES.contains(&name)
}

/// A figure's value: a count or ratio, or money.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FigureValue {
    Number(f64),
    Money(Money),
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Figure {
    pub value: Option<FigureValue>,
    pub previous: Option<FigureValue>,
    /// Relative change from `previous`, percent; null when `previous` is zero or absent.
    pub change_pct: Option<f64>,
    /// Rate figures only (percentages: churn, success, dispute and refund rates, NRR, gross
    /// margin): `value − previous` in percentage points, the change to show for a rate.
    /// Absent on other figures; null when either value is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, nullable)]
    pub change_pp: Option<Option<f64>>,
    /// `true` while the figure's source has not finished its first sync: `value`, `previous`
    /// and the changes are then null, never zero. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// A source whose first sync has not finished: its figures are pending, not zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Pending {
    /// The capability (`revenue`: the first Stripe sync).
    pub source: String,
    /// Objects fetched so far.
    pub objects: i64,
}

impl Pending {
    /// How the pages say it.
    pub fn describe(&self) -> String {
        match self.source.as_str() {
            "revenue" => format!(
                "pending — first Stripe sync in progress ({} objects so far)",
                self.objects
            ),
            other => format!("pending — first {other} sync in progress"),
        }
    }
}

impl Figure {
    /// A figure whose source is still on its first sync.
    pub fn pending() -> Self {
        Self {
            pending: true,
            ..Self::default()
        }
    }

    /// Sets `change_pp` when `name` is a rate figure.
    pub fn with_points(mut self, name: &str) -> Self {
        if is_rate(name) {
            let number = |v: &Option<FigureValue>| match v {
                Some(FigureValue::Number(n)) => Some(*n),
                _ => None,
            };
            self.change_pp = Some(
                number(&self.value)
                    .zip(number(&self.previous))
                    .map(|(a, b)| ((a - b) * 100.0).round() / 100.0),
            );
        }
        self
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Period {
    /// RFC 3339, UTC, inclusive.
    pub from: String,
    /// RFC 3339, UTC, exclusive.
    pub to: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    pub period: Period,
    /// Figure name → figure, or `null` while the capability behind it is not available.
    #[schema(value_type = std::collections::HashMap<String, Figure>)]
    pub figures: BTreeMap<String, Option<Figure>>,
    /// Sources whose first sync is still running; their figures are marked `pending`.
    /// Empty once every connected source has synced.
    pub pending: Vec<Pending>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Length of the period ending now: `<n>d` or `<n>h`, e.g. `30d` (default), `7d`, `24h`.
    /// Not with `from`/`to` (except as `custom`).
    pub period: Option<String>,
    /// First day of a custom period, `YYYY-MM-DD` (UTC, included); needs `to`.
    pub from: Option<String>,
    /// Last day of a custom period, `YYYY-MM-DD` (UTC, included, not after today; today counts
    /// until now); needs `from`. At most 1095 days.
    pub to: Option<String>,
}

/// Parses `30d` / `24h` into seconds; 1 hour to 3 years.
pub fn parse_period(s: &str) -> Result<i64, String> {
    let bad = || format!("period {s:?} must look like 30d or 24h (1h to 1095d)");
    let (digits, unit_secs) = if let Some(d) = s.strip_suffix('d') {
        (d, 86_400)
    } else if let Some(h) = s.strip_suffix('h') {
        (h, 3_600)
    } else {
        return Err(bad());
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    if !(3_600..=1095 * 86_400).contains(&secs) {
        return Err(bad());
    }
    Ok(secs)
}

/// Computes the overview for the period of `period_secs` ending at `now`.
/// The headline figures for the `period_secs` before `now`. Usage and cost figures come from
/// the day rollups, so the period is counted in whole UTC days (the reported `from` says so);
/// figures of capabilities not built yet stay null.
pub async fn overview(
    state: &AppState,
    now: OffsetDateTime,
    period_secs: i64,
) -> Result<Overview, crate::revenue::RevenueError> {
    const DAY: i64 = 86_400_000;
    let to = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let from = to - period_secs * 1000;
    let from = from - from.rem_euclid(DAY);
    let previous_from = from - (to - from);
    state.store.settle().await;
    let (calls, calls_before, cost, cost_before): (i64, i64, i64, i64) = state
        .store
        .fetch_one(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN type = 'api.request' AND bucket >= $2 THEN events ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN type = 'api.request' AND bucket < $2 THEN events ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN bucket >= $2 THEN cost_nano ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN bucket < $2 THEN cost_nano ELSE 0 END), 0) AS BIGINT) \
             FROM usage_rollups WHERE granularity = 'day_total' AND subject = '' AND bucket >= $1 AND bucket < $3",
            crate::args![previous_from, from, to],
        )
        .await?;
    let change = crate::costs::report::change_pct;
    let cents = |nano| FigureValue::Money(crate::costs::report::Cost::from_nano(nano).cost);
    let mut figures: BTreeMap<String, Option<Figure>> = FIGURES
        .iter()
        .map(|(name, _, _)| (name.to_string(), None))
        .collect();
    figures.insert(
        "api_calls".into(),
        Some(Figure {
            value: Some(FigureValue::Number(calls as f64)),
            previous: Some(FigureValue::Number(calls_before as f64)),
            change_pct: change(calls, calls_before),
            ..Figure::default()
        }),
    );
    figures.insert(
        "provider_cost".into(),
        Some(Figure {
            value: Some(cents(cost)),
            previous: Some(cents(cost_before)),
            change_pct: change(cost, cost_before),
            ..Figure::default()
        }),
    );
    let pending = revenue_figures(state, from, to, (cost, cost_before), &mut figures).await?;
    let fmt = |ms: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    };
    Ok(Overview {
        period: Period {
            from: fmt(from),
            to: fmt(to),
        },
        figures,
        pending: pending.into_iter().collect(),
    })
}

/// Fills the revenue figures (and gross margin) once there is revenue to speak of: Stripe
/// connected, or a history already stored. Without either they stay null rather than $0;
/// while the first Stripe sync runs they are pending, which is returned.
async fn revenue_figures(
    state: &AppState,
    from: i64,
    to: i64,
    cost_nano: (i64, i64),
    figures: &mut BTreeMap<String, Option<Figure>>,
) -> Result<Option<Pending>, crate::revenue::RevenueError> {
    use crate::revenue::{history::Rates, metrics};
    if let Some(pending) = state.revenue.first_sync_pending(&state.store).await? {
        for (name, _, capability) in FIGURES {
            if *capability == "revenue" {
                figures.insert(name.to_string(), Some(Figure::pending()));
            }
        }
        return Ok(Some(pending));
    }
    if state.revenue.client.is_none() && !metrics::has_history(&state.store).await? {
        return Ok(None);
    }
    let currency = state.revenue.reporting_currency();
    let rates = Rates::load(&state.store, currency).await?;
    let (from, to) = metrics::whole_days(from, to);
    let costs = (
        metrics::cost_in(&rates, cost_nano.0, to),
        metrics::cost_in(&rates, cost_nano.1, from),
    );
    let mut revenue = metrics::figures(&state.store, &rates, currency, from, to, costs).await?;
    for (name, _, capability) in FIGURES {
        if *capability == "revenue" {
            figures.insert(name.to_string(), revenue.remove(*name));
        }
    }
    Ok(None)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_overview))
}

/// Every headline figure for the period, with the previous period and percent change.
#[utoipa::path(get, path = "/api/v1/metrics/overview", tag = "metrics", security(("api_key" = ["read"])),
    params(OverviewQuery),
    responses((status = 200, body = Overview),
              (status = 400, body = ErrorBody, description = "A bad `from`/`to`: not a day, only one of them, `to` before `from` or in the future, longer than 1095 days, or beside `period`"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "A bad `period`")))]
async fn get_overview(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<OverviewQuery>,
) -> Result<Json<Overview>> {
    p.require(Scope::Read)?;
    let w = triage::window(
        q.period.as_deref(),
        q.from.as_deref(),
        q.to.as_deref(),
        OffsetDateTime::now_utc(),
    )?;
    Ok(Json(overview(&state, w.end, w.secs).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_within_bounds() {
        assert_eq!(parse_period("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_period("24h").unwrap(), 86_400);
        for bad in [
            "", "d", "30", "0d", "-1d", "30w", "99999d", "1.5d", "é", "3é",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn periods_never_panic_and_stay_in_bounds(s in "\\PC{0,12}|[0-9]{1,6}[dhw]") {
            if let Ok(secs) = parse_period(&s) {
                proptest::prop_assert!((3_600..=1095 * 86_400).contains(&secs));
            }
        }
    }
}
