//! Cost figures read from the usage rollups (costs were fixed at ingest, so a later price never
//! changes them): per provider, sku, customer and day, unpriced usage, each against the
//! previous period of the same length. Serves `GET /api/v1/metrics/costs`, the Costs page and
//! the overview's `provider_cost`.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::CostsError;
use crate::args;
use crate::money::{self, Money, NANO};
use crate::store::Store;

type Result<T, E = CostsError> = std::result::Result<T, E>;

/// An amount of cost: rounded to the cent as money, and exact.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Cost {
    pub cost: Money,
    /// Exact USD decimal string (nano-dollar precision).
    pub cost_usd: String,
}

impl Cost {
    pub fn from_nano(nano: i64) -> Self {
        Self {
            cost: Money {
                amount: money::nano_to_cents(nano),
                currency: "usd".into(),
            },
            cost_usd: money::format_scaled(nano, NANO, 2),
        }
    }
}

/// Percent change from `previous` to `value`; null when there was nothing before.
pub fn change_pct(value: i64, previous: i64) -> Option<f64> {
    (previous != 0).then(|| ((value - previous) as f64 / previous as f64 * 1000.0).round() / 10.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ByProvider {
    pub provider: String,
    #[serde(flatten)]
    pub cost: Cost,
    pub previous: Cost,
    pub change_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BySku {
    pub provider: String,
    pub sku: String,
    pub unit: String,
    pub quantity: f64,
    pub events: i64,
    #[serde(flatten)]
    pub cost: Cost,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ByCustomer {
    pub customer: String,
    #[serde(flatten)]
    pub cost: Cost,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Day {
    /// Day start, UTC milliseconds.
    pub day: i64,
    /// Cost per provider that day, exact USD decimal strings.
    pub providers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub total: Cost,
}

/// Usage no price covered (unknown provider/sku, or a unit the price is not in).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Unpriced {
    pub provider: String,
    pub sku: String,
    pub unit: String,
    pub events: i64,
    /// Quantity of the unpriced events; null when priced and unpriced events of the same sku
    /// share the period (the rollups keep one sum per sku).
    pub quantity: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Costs {
    /// [from, to) UTC milliseconds, and the previous period of the same length.
    pub from: i64,
    pub to: i64,
    pub previous_from: i64,
    #[serde(flatten)]
    pub total: Cost,
    pub previous: Cost,
    pub change_pct: Option<f64>,
    pub unpriced_events: i64,
    pub by_provider: Vec<ByProvider>,
    pub by_sku: Vec<BySku>,
    /// The 50 costliest customers this calendar month.
    pub by_customer: Vec<ByCustomer>,
    pub by_day: Vec<Day>,
    pub unpriced: Vec<Unpriced>,
}

/// Total cost (nano-USD) in [from, to), from the day rollups.
pub async fn total(store: &Store, from: i64, to: i64) -> Result<i64> {
    store.settle().await;
    let (nano,): (i64,) = store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) FROM usage_rollups \
             WHERE granularity = 'day_total' AND subject = '' AND bucket >= $1 AND bucket < $2 AND type = 'provider.usage'",
            args![from, to],
        )
        .await?;
    Ok(nano)
}

/// Customers the costs report lists (the costliest this month).
pub const COSTLIEST: i64 = 50;

/// Customers by provider cost this calendar month, costliest first, `limit` from `offset`, with
/// how many there are: from the per-customer month totals (index walks, not scans).
pub async fn customers_this_month(
    store: &Store,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ByCustomer>, i64)> {
    store.settle().await;
    let month = crate::usage::quota::month_of(crate::store::now_ms()).0;
    let (customers, (total,)) = tokio::try_join!(
        store.fetch_all::<(String, i64)>(
            "SELECT subject, cost_nano FROM usage_months WHERE month = $1 AND cost_nano > 0 \
             ORDER BY cost_nano DESC, subject DESC LIMIT $2 OFFSET $3",
            args![month, limit, offset],
        ),
        costed_count(store, month),
    )?;
    let rows = customers
        .into_iter()
        .map(|(customer, c)| ByCustomer {
            customer,
            cost: Cost::from_nano(c),
        })
        .collect();
    Ok((rows, total))
}

/// Customers with a provider cost in `month`, as the ingest writer keeps it (migration 0039).
pub async fn costed_count(store: &Store, month: i64) -> crate::store::Result<(i64,)> {
    store.settle().await;
    store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM usage_month_counts \
             WHERE month = $1 AND kind = 'costed'",
            args![month],
        )
        .await
}

/// Folds PostgreSQL's appended +1 / -1 rows of the costed counts (housekeeping).
pub async fn fold_counts(store: &Store) -> Result<()> {
    Ok(store
        .fold_counts("usage_month_counts", "month, kind")
        .await?)
}

/// Cost figures for the days holding [from, to) against the period of the same length before.
pub async fn costs(store: &Store, from: i64, to: i64) -> Result<Costs> {
    Ok(costs_paged(store, from, to, 0).await?.0)
}

/// [`costs`] with the costliest customers this month listed from `customers_from`, and how
/// many customers have a cost this month (the Costs page's pager).
pub async fn costs_paged(
    store: &Store,
    from: i64,
    to: i64,
    customers_from: i64,
) -> Result<(Costs, i64)> {
    store.settle().await;
    let day = 86_400_000;
    let from = from - from.rem_euclid(day);
    let previous_from = from - (to - from);

    // The four reads side by side: each is a short index range, and on two cores they overlap.
    const BY_PROVIDER: &str = "SELECT provider, \
         CAST(COALESCE(SUM(CASE WHEN bucket >= $2 THEN cost_nano ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN bucket < $2 THEN cost_nano ELSE 0 END), 0) AS BIGINT) \
         FROM usage_rollups WHERE granularity = 'day_total' AND subject = '' \
         AND bucket >= $1 AND bucket < $3 AND type = 'provider.usage' GROUP BY provider";
    const BY_SKU: &str = "SELECT provider, sku, unit, \
         CAST(SUM(quantity) AS DOUBLE PRECISION), CAST(SUM(events) AS BIGINT), \
         CAST(SUM(cost_nano) AS BIGINT), CAST(SUM(unpriced) AS BIGINT) \
         FROM usage_rollups WHERE granularity = 'day_total' AND subject = '' \
         AND bucket >= $1 AND bucket < $2 AND type = 'provider.usage' GROUP BY provider, sku, unit";
    const BY_DAY: &str = "SELECT bucket, provider, CAST(SUM(cost_nano) AS BIGINT) \
         FROM usage_rollups WHERE granularity = 'day_total' AND subject = '' \
         AND bucket >= $1 AND bucket < $2 AND type = 'provider.usage' \
         GROUP BY bucket, provider ORDER BY bucket";
    type Skus = Vec<(String, String, String, f64, i64, i64, i64)>;
    let (per_provider, skus, (by_customer, customers_total), days) = tokio::try_join!(
        async {
            let rows: Vec<(String, i64, i64)> = store
                .fetch_all(BY_PROVIDER, args![previous_from, from, to])
                .await?;
            Ok(rows)
        },
        async {
            let rows: Skus = store.fetch_all(BY_SKU, args![from, to]).await?;
            Ok(rows)
        },
        customers_this_month(store, COSTLIEST, customers_from),
        async {
            let rows: Vec<(i64, String, i64)> = store.fetch_all(BY_DAY, args![from, to]).await?;
            Ok(rows)
        },
    )?;
    let (now_total, prev_total) = per_provider.iter().fold((0i64, 0i64), |(a, b), r| {
        (a.saturating_add(r.1), b.saturating_add(r.2))
    });
    let mut by_provider: Vec<ByProvider> = per_provider
        .into_iter()
        .map(|(provider, now, prev)| ByProvider {
            provider,
            cost: Cost::from_nano(now),
            previous: Cost::from_nano(prev),
            change_pct: change_pct(now, prev),
        })
        .collect();
    by_provider.sort_by(|a, b| {
        b.cost
            .cost
            .amount
            .cmp(&a.cost.cost.amount)
            .then(a.provider.cmp(&b.provider))
    });

    let mut by_sku = Vec::new();
    let mut unpriced = Vec::new();
    let mut unpriced_events = 0;
    for (provider, sku, unit, quantity, events, cost, unpriced_n) in skus {
        if unpriced_n > 0 {
            unpriced_events += unpriced_n;
            unpriced.push(Unpriced {
                provider: provider.clone(),
                sku: sku.clone(),
                unit: unit.clone(),
                events: unpriced_n,
                quantity: (unpriced_n == events).then_some(quantity),
            });
        }
        by_sku.push(BySku {
            provider,
            sku,
            unit,
            quantity,
            events,
            cost: Cost::from_nano(cost),
        });
    }
    by_sku.sort_by(|a, b| {
        b.cost
            .cost
            .amount
            .cmp(&a.cost.cost.amount)
            .then((&a.provider, &a.sku).cmp(&(&b.provider, &b.sku)))
    });

    let mut by_day: Vec<Day> = Vec::new();
    let mut day_totals: Vec<i64> = Vec::new();
    for (bucket, provider, nano) in days {
        if by_day.last().is_none_or(|d| d.day != bucket) {
            by_day.push(Day {
                day: bucket,
                providers: BTreeMap::new(),
                total: Cost::from_nano(0),
            });
            day_totals.push(0);
        }
        if let (Some(d), Some(t)) = (by_day.last_mut(), day_totals.last_mut()) {
            d.providers
                .insert(provider, money::format_scaled(nano, NANO, 2));
            *t = t.saturating_add(nano);
            d.total = Cost::from_nano(*t);
        }
    }

    let costs = Costs {
        from,
        to,
        previous_from,
        total: Cost::from_nano(now_total),
        previous: Cost::from_nano(prev_total),
        change_pct: change_pct(now_total, prev_total),
        unpriced_events,
        by_provider,
        by_sku,
        by_customer,
        by_day,
        unpriced,
    };
    Ok((costs, customers_total))
}
