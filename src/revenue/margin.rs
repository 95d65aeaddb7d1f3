//! Margin: net revenue (successful charges less refunds and lost disputes, from Stripe) minus
//! provider cost (priced at ingest by the metering path) over a period, per customer, per plan
//! or per provider, beside the previous period of the same length. Serves
//! `GET /api/v1/metrics/margin` and the Costs & Margin page.
//!
//! Customers are matched by id: a usage event's `subject` is the Stripe customer id where one
//! exists. Provider cost is kept in USD; it is converted into the reporting currency per day
//! with the stored rates, and refused (rather than guessed) when no USD rate exists.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::RevenueError;
use super::history::Rates;
use crate::args;
use crate::money::Money;
use crate::store::Store;

type Result<T, E = RevenueError> = std::result::Result<T, E>;

const DAY_MS: i64 = 86_400_000;
/// Nano-USD per USD cent: costs are summed exactly and rounded once per group.
const NANO_PER_CENT: i64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Customer,
    Plan,
    Provider,
}

impl GroupBy {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "customer" => Ok(Self::Customer),
            "plan" => Ok(Self::Plan),
            "provider" => Ok(Self::Provider),
            other => Err(RevenueError::Invalid(format!(
                "group_by must be customer, plan or provider, not {other:?}"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Plan => "plan",
            Self::Provider => "provider",
        }
    }
}

/// The group's key when it has none: customers without a plan, usage without a customer.
pub const NONE: &str = "(none)";

/// One customer, plan or provider.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MarginRow {
    /// Customer id, plan id or provider id; `(none)` for customers without a plan.
    pub key: String,
    /// Net revenue; null when grouping by provider (revenue is not earned per provider).
    pub revenue: Option<Money>,
    pub cost: Money,
    /// Revenue − cost; null when grouping by provider.
    pub margin: Option<Money>,
    /// Margin as a percentage of revenue; null without revenue.
    pub margin_pct: Option<f64>,
    /// This group's cost as a percentage of the period's whole net revenue.
    pub cost_of_revenue_pct: Option<f64>,
    /// Customers in the group with revenue or cost in the period.
    pub customers: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MarginTotals {
    pub revenue: Money,
    pub cost: Money,
    pub margin: Money,
    pub margin_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MarginReport {
    /// [from, to) UTC milliseconds (whole days) and the previous period of the same length.
    pub from: i64,
    pub to: i64,
    pub previous_from: i64,
    pub group_by: String,
    pub currency: String,
    #[serde(flatten)]
    pub totals: MarginTotals,
    pub previous: MarginTotals,
    /// Percent change of the margin from the previous period; null when it was zero.
    pub change_pct: Option<f64>,
    /// How many groups there are in all.
    pub groups: usize,
    /// The most profitable groups first (by margin, or by cost for providers), at most `limit`.
    pub rows: Vec<MarginRow>,
    /// The least profitable groups first, at most `limit`: for customers, those costing more
    /// than they pay.
    pub least_profitable: Vec<MarginRow>,
}

/// Revenue and cost (minor units of the reporting currency) of one group.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    revenue: i64,
    cost: i64,
    customers: i64,
}

/// Net revenue per customer (minor units of the reporting currency) in `[from, to)`.
async fn revenue_by_customer(
    store: &Store,
    rates: &Rates,
    from: i64,
    to: i64,
) -> Result<HashMap<String, i64>> {
    let rows: Vec<(Option<String>, String, i64, i64)> = store
        .fetch_all_assembled(
            format!(
                "SELECT customer_id, currency, (created / {DAY_MS}) * {DAY_MS} AS day, \
                 CAST(SUM(CASE WHEN kind = 'charge' THEN amount ELSE -amount END) AS BIGINT) \
                 FROM revenue_payments WHERE created >= $1 AND created < $2 AND ( \
                 (kind = 'charge' AND status = 'succeeded') \
                 OR (kind = 'refund' AND status <> 'failed' AND status <> 'canceled') \
                 OR (kind = 'dispute' AND status = 'lost')) \
                 GROUP BY customer_id, currency, (created / {DAY_MS}) * {DAY_MS}"
            ),
            args![from, to],
        )
        .await?;
    let mut by_customer: HashMap<String, i64> = HashMap::new();
    for (customer, currency, day, amount) in rows {
        let converted = rates.convert(amount, &currency, day).ok_or_else(|| {
            RevenueError::Invalid(format!(
                "no exchange rate from {currency} to {} is stored: add it under [stripe] fx_rates",
                rates.reporting()
            ))
        })?;
        *by_customer
            .entry(customer.unwrap_or_else(|| NONE.into()))
            .or_default() += converted;
    }
    Ok(by_customer)
}

/// Provider cost per (customer, provider) in `[from, to)`, in nano-units of the reporting
/// currency's minor unit ÷ 100 (i.e. converted nano-USD), summed per day before converting.
async fn cost_by_customer_provider(
    store: &Store,
    rates: &Rates,
    from: i64,
    to: i64,
) -> Result<HashMap<(String, String), i64>> {
    store.settle().await;
    let rows: Vec<(String, String, i64, i64)> = store
        .fetch_all(
            "SELECT subject, provider, bucket, CAST(SUM(cost_nano) AS BIGINT) FROM usage_rollups \
             WHERE granularity = 'day' AND bucket >= $1 AND bucket < $2 \
             AND type = 'provider.usage' GROUP BY subject, provider, bucket",
            args![from, to],
        )
        .await?;
    let mut out: HashMap<(String, String), i64> = HashMap::new();
    for (subject, provider, day, nano) in rows {
        let converted = rates.convert(nano, "usd", day).ok_or_else(|| {
            RevenueError::Invalid(format!(
                "provider cost is in USD and no exchange rate from usd to {} is stored: \
                 add it under [stripe] fx_rates",
                rates.reporting()
            ))
        })?;
        let subject = if subject.is_empty() {
            NONE.to_string()
        } else {
            subject
        };
        *out.entry((subject, provider)).or_default() += converted;
    }
    Ok(out)
}

/// Nano-USD-scaled cost (converted) to minor units, half away from zero.
fn cost_minor(nano: i64) -> i64 {
    let half = NANO_PER_CENT / 2;
    if nano >= 0 {
        (nano + half) / NANO_PER_CENT
    } else {
        (nano - half) / NANO_PER_CENT
    }
}

fn percent(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 100.0)
}

/// The whole period's net revenue and provider cost, for the period before the one reported,
/// whose groups are never shown. Amounts in the reporting currency need no conversion, so
/// they are summed by the database over all customers (a row a day instead of one per
/// customer and day); the others are still converted row by row, as [`PeriodData`] does, so
/// the totals are exactly those of [`PeriodData::totals`].
async fn period_totals(store: &Store, rates: &Rates, from: i64, to: i64) -> Result<Sums> {
    store.settle().await;
    let reporting = rates.reporting();
    // (currency, day, amount) and (day, cost in nano-USD).
    type Revenue = Vec<(String, i64, i64)>;
    type Cost = Vec<(i64, i64)>;
    let (revenue_rows, cost_rows): (Revenue, Cost) = tokio::try_join!(
        async {
            store
                .fetch_all_assembled(
                    format!(
                        "SELECT currency, (created / {DAY_MS}) * {DAY_MS} AS day, \
                         CAST(SUM(CASE WHEN kind = 'charge' THEN amount ELSE -amount END) AS BIGINT) \
                         FROM revenue_payments WHERE created >= $1 AND created < $2 AND ( \
                         (kind = 'charge' AND status = 'succeeded') \
                         OR (kind = 'refund' AND status <> 'failed' AND status <> 'canceled') \
                         OR (kind = 'dispute' AND status = 'lost')) \
                         GROUP BY CASE WHEN currency = $3 THEN NULL ELSE customer_id END, \
                         currency, (created / {DAY_MS}) * {DAY_MS}"
                    ),
                    args![from, to, reporting],
                )
                .await
                .map_err(RevenueError::from)
        },
        async {
            store
                .fetch_all(
                    "SELECT bucket, CAST(SUM(cost_nano) AS BIGINT) FROM usage_rollups \
                     WHERE granularity = 'day' AND bucket >= $1 AND bucket < $2 \
                     AND type = 'provider.usage' \
                     GROUP BY CASE WHEN $3 = 'usd' THEN '' ELSE subject END, \
                     CASE WHEN $3 = 'usd' THEN '' ELSE provider END, bucket",
                    args![from, to, reporting],
                )
                .await
                .map_err(RevenueError::from)
        }
    )?;
    let mut sums = Sums::default();
    for (currency, day, amount) in revenue_rows {
        sums.revenue += rates.convert(amount, &currency, day).ok_or_else(|| {
            RevenueError::Invalid(format!(
                "no exchange rate from {currency} to {reporting} is stored: add it under [stripe] fx_rates"
            ))
        })?;
    }
    let mut nano = 0i64;
    for (day, amount) in cost_rows {
        nano += rates.convert(amount, "usd", day).ok_or_else(|| {
            RevenueError::Invalid(format!(
                "provider cost is in USD and no exchange rate from usd to {reporting} is stored: \
                 add it under [stripe] fx_rates"
            ))
        })?;
    }
    sums.cost = cost_minor(nano);
    Ok(sums)
}

/// What one period's margin is made of: net revenue per customer and provider cost per
/// (customer, provider), both in the reporting currency (cost still exact, as converted nano).
struct PeriodData {
    revenue: HashMap<String, i64>,
    costs: HashMap<(String, String), i64>,
}

impl PeriodData {
    async fn read(store: &Store, rates: &Rates, from: i64, to: i64) -> Result<Self> {
        let (revenue, costs) = tokio::try_join!(
            revenue_by_customer(store, rates, from, to),
            cost_by_customer_provider(store, rates, from, to)
        )?;
        Ok(Self { revenue, costs })
    }

    /// The whole period's revenue and cost.
    fn totals(&self) -> Sums {
        Sums {
            revenue: self.revenue.values().sum(),
            cost: cost_minor(self.costs.values().sum()),
            customers: 0,
        }
    }

    /// Sums per group.
    fn groups(&self, group_by: GroupBy, plans: &HashMap<String, String>) -> HashMap<String, Sums> {
        // Costs stay exact (converted nano) per group until the end.
        let mut exact: HashMap<String, (i64, i64)> = HashMap::new();
        let mut members: HashMap<String, std::collections::HashSet<&str>> = HashMap::new();
        let key_of = |customer: &str, provider: Option<&str>| -> String {
            match group_by {
                GroupBy::Customer => customer.to_string(),
                GroupBy::Plan => plans.get(customer).cloned().unwrap_or_else(|| NONE.into()),
                GroupBy::Provider => provider.unwrap_or(NONE).to_string(),
            }
        };
        if group_by != GroupBy::Provider {
            for (customer, amount) in &self.revenue {
                let key = key_of(customer, None);
                exact.entry(key.clone()).or_default().0 += amount;
                members.entry(key).or_default().insert(customer);
            }
        }
        for ((customer, provider), nano) in &self.costs {
            let key = key_of(customer, Some(provider));
            exact.entry(key.clone()).or_default().1 += nano;
            members.entry(key).or_default().insert(customer);
        }
        exact
            .into_iter()
            .map(|(key, (revenue, nano))| {
                let customers = members.get(&key).map_or(0, |m| m.len() as i64);
                let sums = Sums {
                    revenue,
                    cost: cost_minor(nano),
                    customers,
                };
                (key, sums)
            })
            .collect()
    }
}

fn totals(sums: Sums, currency: &str) -> MarginTotals {
    let money = |amount| Money {
        amount,
        currency: currency.to_string(),
    };
    MarginTotals {
        revenue: money(sums.revenue),
        cost: money(sums.cost),
        margin: money(sums.revenue - sums.cost),
        margin_pct: percent(sums.revenue - sums.cost, sums.revenue),
    }
}

/// The margin report for the whole days `[from, to)`, grouped by `group_by`, with the most and
/// least profitable `limit` groups.
pub async fn report(
    store: &Store,
    rates: &Rates,
    group_by: GroupBy,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<MarginReport> {
    let mut reports = reports(store, rates, &[group_by], from, to, limit).await?;
    reports
        .pop()
        .ok_or_else(|| RevenueError::Invalid("no grouping asked for".into()))
}

/// [`report`] for each of `group_bys`, reading each period's revenue and cost once.
pub async fn reports(
    store: &Store,
    rates: &Rates,
    group_bys: &[GroupBy],
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<MarginReport>> {
    let (from, to) = super::metrics::whole_days(from, to);
    let previous_from = from - (to - from);
    let plans: HashMap<String, String> = if group_bys.contains(&GroupBy::Plan) {
        store
            .fetch_all::<(String, String)>(
                "SELECT customer_id, plan_id FROM customer_plans",
                args![],
            )
            .await?
            .into_iter()
            .collect()
    } else {
        HashMap::new()
    };
    let (now, before) = tokio::try_join!(
        PeriodData::read(store, rates, from, to),
        period_totals(store, rates, previous_from, from)
    )?;
    let total = now.totals();
    let currency = rates.reporting();
    let money = |amount| Money {
        amount,
        currency: currency.to_string(),
    };
    let (now_totals, before_totals) = (totals(total, currency), totals(before, currency));
    let change_pct =
        crate::costs::report::change_pct(now_totals.margin.amount, before_totals.margin.amount);
    let mut out = Vec::with_capacity(group_bys.len());
    for &group_by in group_bys {
        let by_provider = group_by == GroupBy::Provider;
        let mut rows: Vec<MarginRow> = now
            .groups(group_by, &plans)
            .into_iter()
            .map(|(key, s)| MarginRow {
                key,
                revenue: (!by_provider).then(|| money(s.revenue)),
                cost: money(s.cost),
                margin: (!by_provider).then(|| money(s.revenue - s.cost)),
                margin_pct: if by_provider {
                    None
                } else {
                    percent(s.revenue - s.cost, s.revenue)
                },
                cost_of_revenue_pct: percent(s.cost, total.revenue),
                customers: s.customers,
            })
            .collect();
        // Providers rank by what they cost (the least profitable is the costliest).
        let rank = |r: &MarginRow| match &r.margin {
            Some(m) => m.amount,
            None => -r.cost.amount,
        };
        rows.sort_by(|a, b| rank(b).cmp(&rank(a)).then_with(|| a.key.cmp(&b.key)));
        let groups = rows.len();
        let least_profitable = rows.iter().rev().take(limit).cloned().collect();
        rows.truncate(limit);
        out.push(MarginReport {
            from,
            to,
            previous_from,
            group_by: group_by.as_str().into(),
            currency: currency.to_string(),
            totals: now_totals.clone(),
            previous: before_totals.clone(),
            change_pct,
            groups,
            rows,
            least_profitable,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_names_the_allowed_values() {
        assert_eq!(GroupBy::parse("plan").unwrap(), GroupBy::Plan);
        let e = GroupBy::parse("sku").unwrap_err().to_string();
        assert!(
            e.contains("customer, plan or provider") && e.contains("sku"),
            "{e}"
        );
    }

    #[test]
    fn costs_round_once_half_away_from_zero() {
        assert_eq!(cost_minor(4_999_999), 0);
        assert_eq!(cost_minor(5_000_000), 1);
        assert_eq!(cost_minor(-5_000_000), -1);
        // 0.0045 USD × 1,000 credits = 4.5 USD = 450 cents, exact.
        assert_eq!(cost_minor(4_500_000_000), 450);
    }
}
