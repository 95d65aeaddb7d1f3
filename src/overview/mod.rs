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

/// A figure's value: a count or ratio, or money.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FigureValue {
    Number(f64),
    Money(Money),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Figure {
    pub value: Option<FigureValue>,
    pub previous: Option<FigureValue>,
    pub change_pct: Option<f64>,
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
        }),
    );
    figures.insert(
        "provider_cost".into(),
        Some(Figure {
            value: Some(cents(cost)),
            previous: Some(cents(cost_before)),
            change_pct: change(cost, cost_before),
        }),
    );
    revenue_figures(state, from, to, (cost, cost_before), &mut figures).await?;
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
    })
}

/// Fills the revenue figures (and gross margin) once there is revenue to speak of: Stripe
/// connected, or a history already stored. Without either they stay null rather than $0.
async fn revenue_figures(
    state: &AppState,
    from: i64,
    to: i64,
    cost_nano: (i64, i64),
    figures: &mut BTreeMap<String, Option<Figure>>,
) -> Result<(), crate::revenue::RevenueError> {
    use crate::revenue::{history::Rates, metrics};
    if state.revenue.client.is_none() && !metrics::has_history(&state.store).await? {
        return Ok(());
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
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_overview))
}

/// Every headline figure for the period, with the previous period and percent change.
#[utoipa::path(get, path = "/api/v1/metrics/overview", tag = "metrics", security(("api_key" = [])),
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
