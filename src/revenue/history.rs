//! Runs the MRR engine over every stored subscription state and replaces the stored MRR
//! history (`revenue_days`, `revenue_movements`, which this module owns, with `fx_rates`).
//!
//! Each state holds from its moment until the next one of the same subscription; at one
//! moment a later source wins (`start` < `invoice` < `sync` < `event`). Within a state, the MRR
//! also changes where a discount starts or ends, and where a subscription past due for
//! `past_due_churn_days` counts as churned. Amounts are converted to the reporting currency
//! at the rate in force on the day the state began, so exchange-rate moves alone never show
//! up as expansion or contraction.

use std::collections::HashMap;

use super::RevenueError;
use super::mrr::{self, Change, DayTotals, Movement};
use super::stripe::objects;
use crate::args;
use crate::store::{Store, multi_row_insert};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

const DAY_MS: i64 = 86_400_000;

/// Rate scale in `fx_rates`.
pub const RATE_SCALE: i128 = 1_000_000_000;

/// Currencies whose amounts Stripe writes without minor units, and those with three decimals.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Decimal places of `currency`'s minor unit as Stripe counts amounts.
pub fn minor_exponent(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub reporting_currency: String,
    pub past_due_churn_days: u32,
}

/// Exchange rates: per currency, (day, reporting units per unit × 10^9) sorted by day.
#[derive(Debug, Default)]
pub struct Rates {
    reporting: String,
    by_currency: HashMap<String, Vec<(i64, i64)>>,
}

impl Rates {
    pub fn new(reporting: &str, rows: Vec<(String, i64, i64)>) -> Self {
        let mut by_currency: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for (currency, day, rate) in rows {
            by_currency.entry(currency).or_default().push((day, rate));
        }
        for list in by_currency.values_mut() {
            list.sort_unstable();
        }
        Self {
            reporting: reporting.to_string(),
            by_currency,
        }
    }

    /// The currency amounts are converted into.
    pub fn reporting(&self) -> &str {
        &self.reporting
    }

    /// Every stored rate.
    pub async fn load(store: &Store, reporting: &str) -> Result<Self> {
        let rows: Vec<(String, i64, i64)> = store
            .fetch_all("SELECT currency, day, rate FROM fx_rates", args![])
            .await?;
        Ok(Self::new(reporting, rows))
    }

    /// `amount` (any scale of `currency`'s minor unit) in the same scale of the reporting
    /// currency's minor unit, at the latest rate on or before `at` (else the earliest known);
    /// `None` without any rate.
    pub fn convert(&self, amount: i64, currency: &str, at: i64) -> Option<i64> {
        if currency == self.reporting {
            return Some(amount);
        }
        let list = self.by_currency.get(currency)?;
        let i = list.partition_point(|(day, _)| *day <= at);
        let rate = list.get(i.saturating_sub(1)).map(|r| r.1)?;
        let shift = minor_exponent(&self.reporting) as i32 - minor_exponent(currency) as i32;
        let mut value = i128::from(amount) * i128::from(rate);
        let mut divisor = RATE_SCALE;
        if shift >= 0 {
            value *= 10i128.pow(shift as u32);
        } else {
            divisor *= 10i128.pow(shift.unsigned_abs());
        }
        i64::try_from((value + divisor / 2).div_euclid(divisor)).ok()
    }
}

/// Replaces the rates declared in config (`[stripe] fx_rates`), stored from day 0.
pub async fn sync_config_rates(
    store: &Store,
    rates: &std::collections::BTreeMap<String, crate::config::DecimalText>,
) -> Result<()> {
    let mut tx = store.begin().await?;
    tx.execute("DELETE FROM fx_rates WHERE source = 'config'", args![])
        .await?;
    for (currency, rate) in rates {
        let scaled = crate::money::parse_scaled(&rate.0, 9).map_err(RevenueError::Invalid)?;
        tx.execute(
            "INSERT INTO fx_rates (currency, day, rate, source) VALUES ($1, 0, $2, 'config') \
             ON CONFLICT (currency, day) DO UPDATE SET rate = excluded.rate, source = excluded.source",
            args![currency.as_str(), scaled],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records the rates Stripe applied: a charge in another currency settled in the reporting
/// currency has a balance transaction whose `exchange_rate` converts the one into the other,
/// which becomes that currency's rate for the charge's day.
pub async fn derive_stripe_rates(store: &Store, reporting: &str) -> Result<usize> {
    let transactions: Vec<(String, String)> = store
        .fetch_all(
            "SELECT id, data FROM stripe_objects WHERE object_type = 'balance_transaction'",
            args![],
        )
        .await?;
    let mut by_id: HashMap<String, f64> = HashMap::new();
    for (id, data) in transactions {
        if let Ok(bt) = serde_json::from_str::<objects::BalanceTransaction>(&data)
            && bt.currency.eq_ignore_ascii_case(reporting)
            && let Some(rate) = bt.exchange_rate.filter(|r| r.is_finite() && *r > 0.0)
        {
            by_id.insert(id, rate);
        }
    }
    if by_id.is_empty() {
        return Ok(0);
    }
    let charges: Vec<(String,)> = store
        .fetch_all(
            "SELECT data FROM stripe_objects WHERE object_type = 'charge'",
            args![],
        )
        .await?;
    let mut tx = store.begin().await?;
    let mut written = 0;
    for (data,) in charges {
        let Ok(charge) = serde_json::from_str::<objects::Charge>(&data) else {
            continue;
        };
        let currency = charge.currency.to_ascii_lowercase();
        let Some(rate) = charge
            .balance_transaction
            .as_ref()
            .and_then(|bt| by_id.get(bt.id()))
            .filter(|_| currency != reporting)
        else {
            continue;
        };
        tx.execute(
            "INSERT INTO fx_rates (currency, day, rate, source) VALUES ($1, $2, $3, 'stripe') \
             ON CONFLICT (currency, day) DO UPDATE SET rate = excluded.rate, source = excluded.source",
            args![
                currency,
                mrr::day_of(charge.created * 1000),
                (rate * RATE_SCALE as f64).round() as i64
            ],
        )
        .await?;
        written += 1;
    }
    tx.commit().await?;
    Ok(written)
}

fn source_rank(source: &str) -> u8 {
    match source {
        "start" => 0,
        "invoice" => 1,
        "sync" => 2,
        _ => 3,
    }
}

/// One stored state: when it began, how it was learnt (rank: a later source wins at the same
/// moment), its status and currency, and the MRR from each of its valued moments.
pub struct State {
    pub at: i64,
    pub rank: u8,
    pub status: mrr::Status,
    pub currency: String,
    /// (moment, MRR in micro-minor units of `currency`), ascending.
    pub points: Vec<(i64, i64)>,
}

/// One subscription's changes, converted to the reporting currency. States must be sorted by
/// (at, rank); of several at one moment the last wins, and each holds until the next begins.
pub fn subscription_changes(
    customer: u32,
    subscription: u32,
    states: &[State],
    rates: &Rates,
    past_due_churn_days: u32,
    out: &mut Vec<Change>,
) -> usize {
    let mut unconverted = 0;
    let mut i = 0;
    while i < states.len() {
        while i + 1 < states.len() && states[i + 1].at == states[i].at {
            i += 1;
        }
        let state = &states[i];
        let until = states.get(i + 1).map_or(i64::MAX, |s| s.at);
        let churn_at = (state.status == mrr::Status::PastDue && past_due_churn_days > 0)
            .then(|| state.at + i64::from(past_due_churn_days) * DAY_MS)
            .filter(|t| *t < until);
        let live = state.status.is_live();
        for &(at, native) in &state.points {
            if at < state.at || at >= until || churn_at.is_some_and(|c| at >= c) {
                continue;
            }
            let Some(mrr) = rates.convert(native, &state.currency, at) else {
                unconverted += 1;
                continue;
            };
            out.push(Change {
                customer,
                subscription,
                at_ms: at,
                mrr,
                live,
            });
        }
        if let Some(at) = churn_at {
            out.push(Change {
                customer,
                subscription,
                at_ms: at,
                mrr: 0,
                live: false,
            });
        }
        i += 1;
    }
    unconverted
}

/// What a recompute did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recomputed {
    pub subscriptions: usize,
    pub states: usize,
    pub days: usize,
    pub movements: usize,
    /// States that could not be read (subscription id, problem).
    pub unreadable: Vec<(String, String)>,
    /// Changes left out for want of an exchange rate.
    pub unconverted: usize,
}

/// Recomputes the whole MRR history up to `now` and stores it in one transaction.
pub async fn recompute(store: &Store, settings: &Settings, now: i64) -> Result<Recomputed> {
    type Row = (String, String, i64, String, i64, String, String, i64);
    let rates = Rates::load(store, &settings.reporting_currency).await?;
    let rows: Vec<Row> = store
        .fetch_all(
            "SELECT subscription_id, customer_id, state_at, source, at, status, currency, mrr \
             FROM stripe_subscription_states ORDER BY subscription_id, state_at, source, at",
            args![],
        )
        .await?;
    let mut report = Recomputed::default();
    let mut customers: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut changes = Vec::with_capacity(rows.len());
    let mut states: Vec<State> = Vec::new();
    let mut idx = 0;
    while idx < rows.len() {
        let sub_id = &rows[idx].0;
        let customer_name = &rows[idx].1;
        states.clear();
        while idx < rows.len() && rows[idx].0 == *sub_id {
            let (_, _, state_at, source, at, status, currency, mrr) = &rows[idx];
            let same_state = states
                .last()
                .is_some_and(|s| s.at == *state_at && s.rank == source_rank(source));
            if same_state {
                if let Some(s) = states.last_mut() {
                    s.points.push((*at, *mrr));
                }
            } else {
                match mrr::Status::parse(status) {
                    Some(status) => states.push(State {
                        at: *state_at,
                        rank: source_rank(source),
                        status,
                        currency: currency.clone(),
                        points: vec![(*at, *mrr)],
                    }),
                    None => report
                        .unreadable
                        .push((sub_id.clone(), format!("unknown status {status:?}"))),
                }
            }
            report.states += 1;
            idx += 1;
        }
        states.sort_by_key(|s| (s.at, s.rank));
        let next = names.len() as u32;
        let customer = *customers.entry(customer_name.clone()).or_insert_with(|| {
            names.push(customer_name.clone());
            next
        });
        report.unconverted += subscription_changes(
            customer,
            report.subscriptions as u32,
            &states,
            &rates,
            settings.past_due_churn_days,
            &mut changes,
        );
        report.subscriptions += 1;
    }
    let (movements, days) = mrr::history(&mut changes, now);
    report.days = days.len();
    report.movements = movements.len();
    store_history(store, &days, &movements, &names).await?;
    Ok(report)
}

async fn store_history(
    store: &Store,
    days: &[DayTotals],
    movements: &[Movement],
    names: &[String],
) -> Result<()> {
    const CHUNK: usize = 400;
    let mut tx = store.begin().await?;
    tx.execute("DELETE FROM revenue_days", args![]).await?;
    tx.execute("DELETE FROM revenue_movements", args![]).await?;
    tx.execute("DELETE FROM revenue_customers", args![]).await?;
    for chunk in days.chunks(CHUNK) {
        let sql = multi_row_insert(
            "revenue_days (day, mrr, customers, subscriptions, new, expansion, contraction, \
             churn, reactivation, new_customers, churned_customers, reactivated_customers)",
            12,
            chunk.len(),
            "",
        );
        let mut values = Vec::with_capacity(chunk.len() * 12);
        for d in chunk {
            values.extend(args![
                d.day,
                d.mrr,
                d.customers,
                d.subscriptions,
                d.new,
                d.expansion,
                d.contraction,
                d.churn,
                d.reactivation,
                d.new_customers,
                d.churned_customers,
                d.reactivated_customers
            ]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    for chunk in movements.chunks(CHUNK) {
        let sql = multi_row_insert(
            "revenue_movements (day, customer_id, kind, amount)",
            4,
            chunk.len(),
            "",
        );
        let mut values = Vec::with_capacity(chunk.len() * 4);
        for m in chunk {
            let name = names.get(m.customer as usize).map_or("", String::as_str);
            values.extend(args![m.day, name, m.kind.as_str(), m.amount]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    // A customer's MRR now is the sum of their movements; with it, their first and latest
    // change.
    let mut by_customer: HashMap<u32, (i64, i64, i64)> = HashMap::new();
    for m in movements {
        let e = by_customer.entry(m.customer).or_insert((0, m.day, m.day));
        e.0 += m.amount;
        e.1 = e.1.min(m.day);
        e.2 = e.2.max(m.day);
    }
    let customers: Vec<(u32, (i64, i64, i64))> = by_customer.into_iter().collect();
    for chunk in customers.chunks(CHUNK) {
        let sql = multi_row_insert(
            "revenue_customers (customer_id, mrr, first_day, last_day)",
            4,
            chunk.len(),
            "",
        );
        let mut values = Vec::with_capacity(chunk.len() * 4);
        for (customer, (mrr, first, last)) in chunk {
            let name = names.get(*customer as usize).map_or("", String::as_str);
            values.extend(args![name, *mrr, *first, *last]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_respects_each_currencys_minor_unit() {
        let rates = Rates::new(
            "usd",
            vec![
                ("eur".into(), 0, 1_100_000_000),
                ("eur".into(), 10 * DAY_MS, 1_200_000_000),
                ("jpy".into(), 0, 6_700_000),
            ],
        );
        // €10.00 at 1.10 then 1.20.
        assert_eq!(rates.convert(1_000, "eur", DAY_MS), Some(1_100));
        assert_eq!(rates.convert(1_000, "eur", 10 * DAY_MS), Some(1_200));
        // ¥1,000 (no minor unit) at 0.0067 = $6.70 = 670 cents.
        assert_eq!(rates.convert(1_000, "jpy", DAY_MS), Some(670));
        assert_eq!(rates.convert(5, "usd", 0), Some(5));
        assert_eq!(rates.convert(5, "gbp", 0), None);
    }
}
