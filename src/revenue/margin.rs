//! Margin: net revenue (successful charges less refunds and lost disputes, from Stripe) minus
//! provider cost (priced at ingest by the metering path) over a period, per customer, per plan
//! or per provider, beside the previous period of the same length. Serves
//! `GET /api/v1/metrics/margin` and the Costs & Margin page.
//!
//! Customers are matched by id: a usage event's `subject` is the Stripe customer id where one
//! exists. Provider cost is kept in USD; it is converted into the reporting currency per day
//! with the stored rates, and refused (rather than guessed) when no USD rate exists.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Position in [`Computed::ranked`].
    fn index(self) -> usize {
        match self {
            Self::Customer => 0,
            Self::Plan => 1,
            Self::Provider => 2,
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

/// The largest `limit` a report may ask for (the API's bound): a computed margin keeps this
/// many of the most and of the least profitable groups of each grouping.
pub const MAX_LIMIT: usize = 1000;
/// How many periods' margins are kept.
const KEPT: usize = 8;
/// A kept margin is recomputed after this long even when its [`Stamp`] still matches, which
/// catches the changes the stamp cannot see (a payment moved to another customer).
const MAX_AGE: Duration = Duration::from_secs(600);

/// What a margin is computed from, in a few rows: the period's provider cost totals (events
/// and cost of the all-customer day rollups), its payments' daily sums, the plan assignments
/// and the exchange rates. While it matches, the margin computed with it is still the margin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    rates: u64,
    cost: (i64, i64),
    revenue: Vec<(i64, String, i64, i64, i64, i64, i64)>,
    plans: (i64, i64),
}

impl Stamp {
    /// Reads the stamp of `[from, to)` (both periods of a report).
    async fn read(store: &Store, rates: &Rates, from: i64, to: i64) -> Result<Self> {
        store.settle().await;
        let (cost, revenue, plans) = tokio::try_join!(
            store.fetch_one::<(i64, i64)>(
                "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) FROM usage_rollups \
                 WHERE granularity = 'day_total' AND subject = '' AND bucket >= $1 AND bucket < $2 \
                 AND type = 'provider.usage'",
                args![from, to],
            ),
            store.fetch_all::<(i64, String, i64, i64, i64, i64, i64)>(
                "SELECT day, currency, charges, charged, refunds, refunded, disputes_lost \
                 FROM revenue_payment_days WHERE day >= $1 AND day < $2 ORDER BY day, currency",
                args![from, to],
            ),
            // The count kept by migration 0043's triggers, and the newest assignment (from
            // the `(assigned_at DESC, …)` index).
            store.fetch_one::<(i64, i64)>(
                "SELECT (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM customer_plan_counts), \
                 (SELECT CAST(COALESCE(MAX(assigned_at), 0) AS BIGINT) FROM customer_plans)",
                args![],
            ),
        )?;
        Ok(Self {
            rates: rates.digest(),
            cost,
            revenue,
            plans,
        })
    }
}

/// One grouping's groups, ranked, as far as any report can show them.
#[derive(Debug, Clone)]
struct Ranked {
    groups: usize,
    best: Vec<MarginRow>,
    worst: Vec<MarginRow>,
}

/// One period's margin, in every grouping.
struct Computed {
    from: i64,
    to: i64,
    stamp: Stamp,
    at: Instant,
    now: MarginTotals,
    previous: MarginTotals,
    change_pct: Option<f64>,
    /// Indexed by [`GroupBy::index`].
    ranked: [Ranked; 3],
}

impl Computed {
    fn report(&self, group_by: GroupBy, currency: &str, limit: usize) -> MarginReport {
        let ranked = &self.ranked[group_by.index()];
        MarginReport {
            from: self.from,
            to: self.to,
            previous_from: self.from - (self.to - self.from),
            group_by: group_by.as_str().into(),
            currency: currency.to_string(),
            totals: self.now.clone(),
            previous: self.previous.clone(),
            change_pct: self.change_pct,
            groups: ranked.groups,
            rows: ranked.best.iter().take(limit).cloned().collect(),
            least_profitable: ranked.worst.iter().take(limit).cloned().collect(),
        }
    }
}

/// Computed margins, kept while what they are computed from is unchanged.
///
/// With 50k customers a period's margin sums hundreds of thousands of daily cost rows and
/// tens of thousands of payments, about a third of a second; the dashboard asks for it on
/// every view of the Costs page. Each request first reads the period's [`Stamp`] (a few
/// small index reads) and is answered from the kept margin when the stamp matches, so what
/// it answers is exactly what a recomputation would give. Ingest that adds no provider cost
/// to the period (most of it: `api.request` and analytics events) leaves the margin kept.
/// One computation runs at a time; requests for the same period wait for it and use it.
#[derive(Default)]
pub struct Cache {
    kept: std::sync::Mutex<VecDeque<Arc<Computed>>>,
    computing: tokio::sync::Mutex<()>,
}

impl Cache {
    fn find(&self, from: i64, to: i64, stamp: &Stamp) -> Option<Arc<Computed>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .find(|c| c.from == from && c.to == to && &c.stamp == stamp && c.at.elapsed() < MAX_AGE)
            .cloned()
    }

    fn keep(&self, computed: Arc<Computed>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|c| !(c.from == computed.from && c.to == computed.to));
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(computed);
    }

    /// The margin report for the whole days `[from, to)`, grouped by `group_by`, with the
    /// most and least profitable `limit` groups (at most [`MAX_LIMIT`]).
    pub async fn report(
        &self,
        store: &Store,
        rates: &Rates,
        group_by: GroupBy,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<MarginReport> {
        let mut reports = self
            .reports(store, rates, &[group_by], from, to, limit)
            .await?;
        reports
            .pop()
            .ok_or_else(|| RevenueError::Invalid("no grouping asked for".into()))
    }

    /// [`Cache::report`] for each of `group_bys`.
    pub async fn reports(
        &self,
        store: &Store,
        rates: &Rates,
        group_bys: &[GroupBy],
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<MarginReport>> {
        let (from, to) = super::metrics::whole_days(from, to);
        let previous_from = from - (to - from);
        let limit = limit.min(MAX_LIMIT);
        let mut stamp = Stamp::read(store, rates, previous_from, to).await?;
        let computed = match self.find(from, to, &stamp) {
            Some(c) => c,
            None => {
                let _one = match self.computing.try_lock() {
                    Ok(one) => one,
                    Err(_) => {
                        // Whoever holds it may be computing this very margin: wait, then
                        // look again with a fresh stamp.
                        let one = self.computing.lock().await;
                        stamp = Stamp::read(store, rates, previous_from, to).await?;
                        one
                    }
                };
                match self.find(from, to, &stamp) {
                    Some(c) => c,
                    None => {
                        let c = Arc::new(compute(store, rates, stamp, from, to).await?);
                        self.keep(c.clone());
                        c
                    }
                }
            }
        };
        Ok(group_bys
            .iter()
            .map(|g| computed.report(*g, rates.reporting(), limit))
            .collect())
    }
}

/// Computes the margin of `[from, to)` in every grouping. The stamp is read before the data,
/// so a change landing in between makes the kept margin's stamp stale, never the reverse.
async fn compute(
    store: &Store,
    rates: &Rates,
    stamp: Stamp,
    from: i64,
    to: i64,
) -> Result<Computed> {
    let at = Instant::now();
    let previous_from = from - (to - from);
    let (plans, now, before) = tokio::try_join!(
        async {
            store
                .fetch_all::<(String, String)>(
                    "SELECT customer_id, plan_id FROM customer_plans",
                    args![],
                )
                .await
                .map_err(RevenueError::from)
        },
        PeriodData::read(store, rates, from, to),
        period_totals(store, rates, previous_from, from)
    )?;
    let plans: HashMap<String, String> = plans.into_iter().collect();
    let total = now.totals();
    let currency = rates.reporting();
    let money = |amount| Money {
        amount,
        currency: currency.to_string(),
    };
    let (now_totals, before_totals) = (totals(total, currency), totals(before, currency));
    let change_pct =
        crate::costs::report::change_pct(now_totals.margin.amount, before_totals.margin.amount);
    let rank_all = |group_by: GroupBy| {
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
        Ranked {
            groups: rows.len(),
            worst: rows.iter().rev().take(MAX_LIMIT).cloned().collect(),
            best: {
                rows.truncate(MAX_LIMIT);
                rows
            },
        }
    };
    Ok(Computed {
        from,
        to,
        stamp,
        at,
        now: now_totals,
        previous: before_totals,
        change_pct,
        ranked: [
            rank_all(GroupBy::Customer),
            rank_all(GroupBy::Plan),
            rank_all(GroupBy::Provider),
        ],
    })
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
