//! The SaaS metrics read from the stored MRR history and payments, for a period and the
//! previous period of the same length: MRR and ARR, movements, customer churn (of the customers
//! paying when the period began), gross and net MRR churn, NRR, quick ratio, ARPA, LTV, payment
//! success, dispute and refund rates, subscription growth, and net / recurring / non-recurring
//! revenue. Definitions follow ChartMogul's where vendors differ (see the README's Revenue
//! section); every amount is in the reporting currency.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::RevenueError;
use super::history::Rates;
use super::mrr::{MICRO, day_of};
use super::records::{PAYMENT_SUM_IS_MONEY, PAYMENT_SUMS};
use crate::args;
use crate::costs::report::change_pct;
use crate::money::Money;
use crate::overview::{Figure, FigureValue};
use crate::store::Store;

type Result<T, E = RevenueError> = std::result::Result<T, E>;

const DAY_MS: i64 = 86_400_000;

/// Series bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    /// Calendar months.
    Month,
}

impl Interval {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(RevenueError::Invalid(format!(
                "interval {other:?} is not one of day, week, month"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// Start of the bucket holding day `day` (UTC ms).
    fn bucket(self, day: i64) -> i64 {
        match self {
            Self::Day => day,
            // 1970-01-01 was a Thursday: shift so weeks start on Monday.
            Self::Week => day - (day / DAY_MS + 3).rem_euclid(7) * DAY_MS,
            Self::Month => month_start(day),
        }
    }
}

/// The first day of `day`'s calendar month, UTC ms.
pub fn month_start(day: i64) -> i64 {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(day.div_euclid(1000)) else {
        return day;
    };
    day - i64::from(t.day() - 1) * DAY_MS - day.rem_euclid(DAY_MS)
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// Bucket start, UTC ms.
    pub bucket: i64,
    /// MRR at the end of the bucket (or of the period, for the last one).
    pub mrr: Money,
    pub arr: Money,
    /// Paying customers at the end of the bucket.
    pub customers: i64,
    pub new: Money,
    pub expansion: Money,
    /// Negative.
    pub contraction: Money,
    /// Negative.
    pub churn: Money,
    pub reactivation: Money,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevenueReport {
    /// Reporting currency.
    pub currency: String,
    pub from: i64,
    pub to: i64,
    pub previous_from: i64,
    pub interval: String,
    pub series: Vec<Point>,
    /// Figure name → value, previous value and percent change; a figure that cannot be
    /// computed (no data, or a zero denominator such as LTV at zero churn) is null.
    #[schema(value_type = std::collections::HashMap<String, Figure>)]
    pub figures: BTreeMap<String, Figure>,
    /// Non-empty while the first Stripe sync runs: every figure is then `pending` (null, not
    /// zero) and the series is empty.
    pub pending: Vec<crate::overview::Pending>,
}

impl RevenueReport {
    /// Marks the report pending: figures null and flagged, no series.
    pub fn set_pending(&mut self, pending: crate::overview::Pending) {
        for figure in self.figures.values_mut() {
            *figure = Figure::pending();
        }
        self.series.clear();
        self.pending = vec![pending];
    }
}

/// One day row of `revenue_days`.
#[derive(Debug, Clone, Default)]
struct DayRow {
    day: i64,
    mrr: i64,
    customers: i64,
    new: i64,
    expansion: i64,
    contraction: i64,
    churn: i64,
    reactivation: i64,
}
crate::from_row!(DayRow {
    day,
    mrr,
    customers,
    new,
    expansion,
    contraction,
    churn,
    reactivation
});

/// Raw figures of one period, before presentation. The MRR figures decode by name from
/// [`PERIOD_SQL`]; the payment figures come from `revenue_payment_days` after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Period {
    pub mrr_start: i64,
    pub mrr_end: i64,
    pub customers_start: i64,
    pub customers_end: i64,
    pub subscriptions_start: i64,
    pub subscriptions_end: i64,
    pub new: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub reactivation: i64,
    /// Customers paying at the start who churned during the period.
    pub churned_customers: i64,
    pub payments_succeeded: i64,
    pub payments_failed: i64,
    /// Successful charges: count and amount (minor units).
    pub charges: i64,
    pub charged: i64,
    pub refunded: i64,
    /// Refunds: count.
    pub refunds: i64,
    /// Disputes opened in the period (dispute activity).
    pub disputes_opened: i64,
    /// Disputes on charges made in the period (dispute rate).
    pub disputes_on_charges: i64,
    pub disputes_lost: i64,
    /// Paid invoices of subscriptions.
    pub recurring_revenue: i64,
}
crate::from_row!(Period {
    mrr_start,
    mrr_end,
    customers_start,
    customers_end,
    subscriptions_start,
    subscriptions_end,
    new,
    expansion,
    contraction,
    churn,
    reactivation,
    churned_customers,
    payments_succeeded: default,
    payments_failed: default,
    charges: default,
    charged: default,
    refunded: default,
    refunds: default,
    disputes_opened: default,
    disputes_on_charges: default,
    disputes_lost: default,
    recurring_revenue: default
});

async fn state_before(store: &Store, at: i64) -> Result<DayRow> {
    Ok(store
        .fetch_optional::<DayRow>(
            "SELECT day, mrr, customers, new, expansion, contraction, churn, reactivation \
             FROM revenue_days WHERE day < $1 ORDER BY day DESC LIMIT 1",
            args![at],
        )
        .await?
        .unwrap_or_default())
}

/// The payment figures of the whole days `[from, to)` from their daily sums (see
/// `records::PAYMENT_SUMS` for the order), money converted per day into the reporting currency.
async fn payment_sums(
    store: &Store,
    rates: &Rates,
    from: i64,
    to: i64,
) -> Result<[i64; PAYMENT_SUMS]> {
    type Row = (
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let rows: Vec<Row> = store
        .fetch_all(
            "SELECT currency, day, intents_succeeded, intents_failed, charges, charged, refunds, \
             refunded, disputes_opened, disputes_lost, recurring, disputes_on_charges \
             FROM revenue_payment_days WHERE day >= $1 AND day < $2",
            args![from, to],
        )
        .await?;
    let mut out = [0i64; PAYMENT_SUMS];
    for (currency, day, a, b, c, d, e, f, g, h, i, j) in rows {
        for (k, v) in [a, b, c, d, e, f, g, h, i, j].into_iter().enumerate() {
            out[k] += if PAYMENT_SUM_IS_MONEY[k] {
                rates.convert(v, &currency, day).unwrap_or(0)
            } else {
                v
            };
        }
    }
    Ok(out)
}

/// Whole UTC days covering [from, to): from `from`'s day through the day holding `to`'s last
/// moment, so a period's start state, its movements and its end state always line up.
pub fn whole_days(from: i64, to: i64) -> (i64, i64) {
    (day_of(from), day_of(to - 1) + DAY_MS)
}

/// The MRR figures of a period in one statement (each query a round trip on PostgreSQL, where
/// the dashboard's routes spent most of their time waiting on sequential ones): the states
/// before its start and before its end, its movement sums, and how many customers paying
/// before it began churned during it.
const PERIOD_SQL: &str = "SELECT \
     COALESCE(s.mrr, 0) AS mrr_start, COALESCE(s.customers, 0) AS customers_start, \
     COALESCE(s.subscriptions, 0) AS subscriptions_start, \
     COALESCE(e.mrr, 0) AS mrr_end, COALESCE(e.customers, 0) AS customers_end, \
     COALESCE(e.subscriptions, 0) AS subscriptions_end, \
     t.new, t.expansion, t.contraction, t.churn, t.reactivation, c.n AS churned_customers \
     FROM (SELECT CAST(COALESCE(SUM(new), 0) AS BIGINT) AS new, \
           CAST(COALESCE(SUM(expansion), 0) AS BIGINT) AS expansion, \
           CAST(COALESCE(SUM(contraction), 0) AS BIGINT) AS contraction, \
           CAST(COALESCE(SUM(churn), 0) AS BIGINT) AS churn, \
           CAST(COALESCE(SUM(reactivation), 0) AS BIGINT) AS reactivation \
           FROM revenue_days WHERE day >= $1 AND day < $2) t \
     CROSS JOIN (SELECT COUNT(*) AS n FROM revenue_movements WHERE kind = 'churn' \
           AND day >= $1 AND day < $2 AND since < $1) c \
     LEFT JOIN (SELECT mrr, customers, subscriptions FROM revenue_days WHERE day < $1 \
           ORDER BY day DESC LIMIT 1) s ON 1 = 1 \
     LEFT JOIN (SELECT mrr, customers, subscriptions FROM revenue_days WHERE day < $2 \
           ORDER BY day DESC LIMIT 1) e ON 1 = 1";

/// The raw figures of the whole days `[from, to)` (see [`whole_days`]).
pub async fn period(store: &Store, rates: &Rates, from: i64, to: i64) -> Result<Period> {
    let (mut p, sums) = tokio::try_join!(
        async { Ok::<Period, RevenueError>(store.fetch_one(PERIOD_SQL, args![from, to]).await?) },
        payment_sums(store, rates, from, to)
    )?;
    [
        p.payments_succeeded,
        p.payments_failed,
        p.charges,
        p.charged,
        p.refunds,
        p.refunded,
        p.disputes_opened,
        p.disputes_lost,
        p.recurring_revenue,
        p.disputes_on_charges,
    ] = sums;
    Ok(p)
}

/// `part / whole` as a percentage with two decimals; `None` when `whole` is zero.
fn percent(part: i64, whole: i64) -> Option<f64> {
    (whole != 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 100.0)
}

/// Micro-minor units to whole minor units, half away from zero.
pub fn micro_to_minor(micro: i64) -> i64 {
    let half = MICRO / 2;
    if micro >= 0 {
        (micro + half) / MICRO
    } else {
        (micro - half) / MICRO
    }
}

impl Period {
    /// Net revenue: successful charges less refunds and lost disputes.
    pub fn net_revenue(&self) -> i64 {
        self.charged - self.refunded - self.disputes_lost
    }

    pub fn customer_churn_rate(&self) -> Option<f64> {
        percent(self.churned_customers, self.customers_start)
    }

    /// (churn + contraction) ÷ starting MRR; movements are negative, the rate positive.
    pub fn gross_mrr_churn_rate(&self) -> Option<f64> {
        percent(-(self.churn + self.contraction), self.mrr_start)
    }

    /// (churn + contraction − expansion − reactivation) ÷ starting MRR; negative when
    /// expansion outgrows losses.
    pub fn net_mrr_churn_rate(&self) -> Option<f64> {
        percent(
            -(self.churn + self.contraction) - self.expansion - self.reactivation,
            self.mrr_start,
        )
    }

    /// (new + expansion) ÷ (contraction + churn).
    pub fn quick_ratio(&self) -> Option<f64> {
        let lost = -(self.contraction + self.churn);
        (lost != 0)
            .then(|| ((self.new + self.expansion) as f64 / lost as f64 * 100.0).round() / 100.0)
    }

    pub fn arpa_micro(&self) -> Option<i64> {
        (self.customers_end > 0).then(|| self.mrr_end / self.customers_end)
    }
}

fn money(minor: i64, currency: &str) -> FigureValue {
    FigureValue::Money(Money {
        amount: minor,
        currency: currency.to_string(),
    })
}

fn figure_money(now: i64, before: i64, currency: &str) -> Figure {
    Figure {
        value: Some(money(now, currency)),
        previous: Some(money(before, currency)),
        change_pct: change_pct(now, before),
        ..Figure::default()
    }
}

fn figure_number(now: Option<f64>, before: Option<f64>) -> Figure {
    Figure {
        change_pct: match (now, before) {
            (Some(n), Some(b)) if b != 0.0 => Some(((n - b) / b.abs() * 1000.0).round() / 10.0),
            _ => None,
        },
        value: now.map(FigureValue::Number),
        previous: before.map(FigureValue::Number),
        ..Figure::default()
    }
}

/// For six consecutive months bounded by `$1`…`$7`: the paying customers before each month
/// began, then how many of those churned during it — one statement rather than twelve.
const TRAILING_CHURN_SQL: &str = "SELECT \
     (SELECT customers FROM revenue_days WHERE day < $1 ORDER BY day DESC LIMIT 1), \
     (SELECT customers FROM revenue_days WHERE day < $2 ORDER BY day DESC LIMIT 1), \
     (SELECT customers FROM revenue_days WHERE day < $3 ORDER BY day DESC LIMIT 1), \
     (SELECT customers FROM revenue_days WHERE day < $4 ORDER BY day DESC LIMIT 1), \
     (SELECT customers FROM revenue_days WHERE day < $5 ORDER BY day DESC LIMIT 1), \
     (SELECT customers FROM revenue_days WHERE day < $6 ORDER BY day DESC LIMIT 1), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $1 AND day < $2 \
      AND since < $1), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $2 AND day < $3 \
      AND since < $2), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $3 AND day < $4 \
      AND since < $3), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $4 AND day < $5 \
      AND since < $4), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $5 AND day < $6 \
      AND since < $5), \
     (SELECT COUNT(*) FROM revenue_movements WHERE kind = 'churn' AND day >= $6 AND day < $7 \
      AND since < $6)";

/// Average monthly customer churn over the six calendar months before `to`'s month, as a
/// fraction; `None` without any paying customers in those months.
pub async fn trailing_churn(store: &Store, to: i64) -> Result<Option<f64>> {
    let mut bounds = [0i64; 7];
    bounds[6] = month_start(day_of(to));
    for i in (0..6).rev() {
        bounds[i] = month_start(bounds[i + 1] - DAY_MS);
    }
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let r: Row = store
        .fetch_one(
            TRAILING_CHURN_SQL,
            bounds.iter().map(|b| (*b).into()).collect(),
        )
        .await?;
    let customers = [r.0, r.1, r.2, r.3, r.4, r.5];
    let churned = [r.6, r.7, r.8, r.9, r.10, r.11];
    let rates: Vec<f64> = customers
        .iter()
        .zip(churned)
        .filter_map(|(c, n)| c.filter(|c| *c > 0).map(|c| n as f64 / c as f64))
        .collect();
    Ok((!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64))
}

/// LTV in minor units: ARPA × gross margin ÷ monthly churn; `None` at zero churn.
pub fn ltv(arpa_micro: Option<i64>, margin: Option<f64>, churn: Option<f64>) -> Option<i64> {
    let churn = churn.filter(|c| *c > 0.0)?;
    let arpa = arpa_micro? as f64 / MICRO as f64;
    Some((arpa * margin.unwrap_or(1.0) / churn).round() as i64)
}

/// Provider cost (kept in nano-USD) in minor units of the reporting currency, at the rate of
/// `at`; zero when no USD rate is stored (the figures then show margin as if cost-free rather
/// than fail, and the margin route says so).
pub fn cost_in(rates: &Rates, nano: i64, at: i64) -> i64 {
    rates
        .convert(crate::money::nano_to_cents(nano), "usd", at)
        .unwrap_or(0)
}

/// Provider cost of `[from, to)` and of the period of the same length before it, in minor
/// units of the reporting currency (for gross margin and LTV).
pub async fn provider_costs(
    store: &Store,
    rates: &Rates,
    from: i64,
    to: i64,
) -> Result<(i64, i64)> {
    let span = to - from;
    let (now, before) = tokio::try_join!(
        crate::costs::report::total(store, from, to),
        crate::costs::report::total(store, from - span, from),
    )?;
    Ok((cost_in(rates, now, to), cost_in(rates, before, from)))
}

/// Whole figures and series for [from, to) against the previous period of the same length.
/// `provider_cost` gives the cost (minor units of the reporting currency) of a period, for
/// gross margin and LTV.
pub async fn report(
    store: &Store,
    rates: &Rates,
    currency: &str,
    from: i64,
    to: i64,
    interval: Interval,
    provider_cost: (i64, i64),
) -> Result<RevenueReport> {
    if to <= from {
        return Err(RevenueError::Invalid("from must be before to".into()));
    }
    let (from, to) = whole_days(from, to);
    let span = to - from;
    if interval == Interval::Day && span > 3 * 366 * DAY_MS {
        return Err(RevenueError::Invalid(
            "more than three years of daily points; use interval=week or month".into(),
        ));
    }
    let (figures, series) = tokio::try_join!(
        figures(store, rates, currency, from, to, provider_cost),
        series(store, currency, from, to, interval)
    )?;
    Ok(RevenueReport {
        currency: currency.to_string(),
        from,
        to,
        previous_from: from - span,
        interval: interval.as_str().into(),
        series,
        figures,
        pending: Vec::new(),
    })
}

/// Every figure of the whole days `[from, to)` (already aligned) beside the previous period of
/// the same length.
pub async fn figures(
    store: &Store,
    rates: &Rates,
    currency: &str,
    from: i64,
    to: i64,
    provider_cost: (i64, i64),
) -> Result<BTreeMap<String, Figure>> {
    let previous_from = from - (to - from);
    let (now, before) = tokio::try_join!(
        period(store, rates, from, to),
        period(store, rates, previous_from, from)
    )?;
    let (churn, churn_before) =
        tokio::try_join!(trailing_churn(store, to), trailing_churn(store, from))?;

    let minor = micro_to_minor;
    let mut figures = BTreeMap::new();
    let mut put_money = |name: &str, a: i64, b: i64| {
        figures.insert(name.to_string(), figure_money(a, b, currency));
    };
    put_money("mrr", minor(now.mrr_end), minor(before.mrr_end));
    put_money("arr", minor(now.mrr_end * 12), minor(before.mrr_end * 12));
    put_money("new_mrr", minor(now.new), minor(before.new));
    put_money(
        "expansion_mrr",
        minor(now.expansion),
        minor(before.expansion),
    );
    put_money(
        "contraction_mrr",
        minor(-now.contraction),
        minor(-before.contraction),
    );
    put_money("churned_mrr", minor(-now.churn), minor(-before.churn));
    put_money(
        "reactivation_mrr",
        minor(now.reactivation),
        minor(before.reactivation),
    );
    put_money(
        "net_new_mrr",
        minor(now.mrr_end - now.mrr_start),
        minor(before.mrr_end - before.mrr_start),
    );
    put_money("net_revenue", now.net_revenue(), before.net_revenue());
    put_money(
        "recurring_revenue",
        now.recurring_revenue,
        before.recurring_revenue,
    );
    put_money(
        "non_recurring_revenue",
        (now.charged - now.recurring_revenue).max(0),
        (before.charged - before.recurring_revenue).max(0),
    );
    put_money("refunded", now.refunded, before.refunded);
    let arpa = |p: &Period| p.arpa_micro().map(minor);
    let margin = |p: &Period, cost: i64| {
        let net = p.net_revenue();
        (net > 0).then(|| (net - cost) as f64 / net as f64)
    };
    let (m_now, m_before) = (
        margin(&now, provider_cost.0),
        margin(&before, provider_cost.1),
    );
    let numbers: [(&str, Option<f64>, Option<f64>); 15] = [
        (
            "paying_customers",
            Some(now.customers_end as f64),
            Some(before.customers_end as f64),
        ),
        (
            "subscriptions",
            Some(now.subscriptions_end as f64),
            Some(before.subscriptions_end as f64),
        ),
        (
            "customer_churn_rate",
            now.customer_churn_rate(),
            before.customer_churn_rate(),
        ),
        (
            "gross_mrr_churn_rate",
            now.gross_mrr_churn_rate(),
            before.gross_mrr_churn_rate(),
        ),
        (
            "net_mrr_churn_rate",
            now.net_mrr_churn_rate(),
            before.net_mrr_churn_rate(),
        ),
        (
            "nrr",
            now.net_mrr_churn_rate()
                .map(|c| ((100.0 - c) * 100.0).round() / 100.0),
            before
                .net_mrr_churn_rate()
                .map(|c| ((100.0 - c) * 100.0).round() / 100.0),
        ),
        ("quick_ratio", now.quick_ratio(), before.quick_ratio()),
        (
            "payment_success_rate",
            percent(
                now.payments_succeeded,
                now.payments_succeeded + now.payments_failed,
            ),
            percent(
                before.payments_succeeded,
                before.payments_succeeded + before.payments_failed,
            ),
        ),
        (
            "dispute_rate",
            percent(now.disputes_on_charges, now.charges),
            percent(before.disputes_on_charges, before.charges),
        ),
        (
            "dispute_activity",
            percent(now.disputes_opened, now.charges),
            percent(before.disputes_opened, before.charges),
        ),
        (
            "refund_rate",
            percent(now.refunded, now.charged),
            percent(before.refunded, before.charged),
        ),
        (
            "subscription_growth_rate",
            percent(
                now.subscriptions_end - now.subscriptions_start,
                now.subscriptions_start,
            ),
            percent(
                before.subscriptions_end - before.subscriptions_start,
                before.subscriptions_start,
            ),
        ),
        (
            "gross_margin",
            m_now.map(|m| (m * 10_000.0).round() / 100.0),
            m_before.map(|m| (m * 10_000.0).round() / 100.0),
        ),
        (
            "trailing_customer_churn_rate",
            churn.map(|c| (c * 10_000.0).round() / 100.0),
            churn_before.map(|c| (c * 10_000.0).round() / 100.0),
        ),
        (
            "refunds",
            Some(now.refunds as f64),
            Some(before.refunds as f64),
        ),
    ];
    for (name, a, b) in numbers {
        figures.insert(name.to_string(), figure_number(a, b).with_points(name));
    }
    for (name, a, b) in [
        ("arpa", arpa(&now), arpa(&before)),
        (
            "ltv",
            ltv(now.arpa_micro(), m_now, churn),
            ltv(before.arpa_micro(), m_before, churn_before),
        ),
    ] {
        figures.insert(
            name.to_string(),
            Figure {
                value: a.map(|v| money(v, currency)),
                previous: b.map(|v| money(v, currency)),
                change_pct: a.zip(b).and_then(|(a, b)| change_pct(a, b)),
                ..Figure::default()
            },
        );
    }

    Ok(figures)
}

/// Whether any MRR history is stored: before there is, revenue figures would be invented
/// zeros.
pub async fn has_history(store: &Store) -> Result<bool> {
    Ok(store
        .fetch_optional::<(i64,)>("SELECT day FROM revenue_days LIMIT 1", args![])
        .await?
        .is_some())
}

/// MRR at the end of each bucket of `[from, to)` with the movements during it.
pub async fn series(
    store: &Store,
    currency: &str,
    from: i64,
    to: i64,
    interval: Interval,
) -> Result<Vec<Point>> {
    let (rows, mut carried) = tokio::try_join!(
        async {
            Ok::<Vec<DayRow>, RevenueError>(
                store
                    .fetch_all(
                        "SELECT day, mrr, customers, new, expansion, contraction, churn, \
                         reactivation FROM revenue_days WHERE day >= $1 AND day < $2 ORDER BY day",
                        args![day_of(from), to],
                    )
                    .await?,
            )
        },
        state_before(store, day_of(from))
    )?;
    let money = |micro: i64| Money {
        amount: micro_to_minor(micro),
        currency: currency.to_string(),
    };
    let mut points: Vec<Point> = Vec::new();
    let mut sums = DayRow::default();
    let flush = |bucket: i64, end: &DayRow, sums: &DayRow, points: &mut Vec<Point>| {
        points.push(Point {
            bucket,
            mrr: money(end.mrr),
            arr: money(end.mrr * 12),
            customers: end.customers,
            new: money(sums.new),
            expansion: money(sums.expansion),
            contraction: money(sums.contraction),
            churn: money(sums.churn),
            reactivation: money(sums.reactivation),
        });
    };
    // Days without a row (before the first subscription) carry the state before them.
    let mut day = day_of(from);
    let mut rows = rows.into_iter().peekable();
    let mut bucket = interval.bucket(day);
    while day < to {
        if interval.bucket(day) != bucket {
            flush(bucket, &carried, &sums, &mut points);
            sums = DayRow::default();
            bucket = interval.bucket(day);
        }
        if let Some(r) = rows.next_if(|r| r.day == day) {
            sums.new += r.new;
            sums.expansion += r.expansion;
            sums.contraction += r.contraction;
            sums.churn += r.churn;
            sums.reactivation += r.reactivation;
            carried = r;
        }
        day += DAY_MS;
    }
    flush(bucket, &carried, &sums, &mut points);
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_monday_and_the_first_of_the_month() {
        // 2026-01-01 was a Thursday; its week began Monday 2025-12-29.
        let jan1 = 1_767_225_600_000;
        assert_eq!(Interval::Week.bucket(jan1), jan1 - 3 * DAY_MS);
        assert_eq!(Interval::Week.bucket(jan1 + 4 * DAY_MS), jan1 + 4 * DAY_MS);
        assert_eq!(Interval::Month.bucket(jan1 + 30 * DAY_MS), jan1);
        assert_eq!(
            Interval::Month.bucket(jan1 + 31 * DAY_MS),
            jan1 + 31 * DAY_MS
        );
        assert_eq!(month_start(jan1 + 31 * DAY_MS + 5_000), jan1 + 31 * DAY_MS);
    }

    #[test]
    fn ratios_follow_their_definitions() {
        let p = Period {
            mrr_start: 10_000 * MICRO,
            mrr_end: 10_600 * MICRO,
            customers_start: 40,
            customers_end: 42,
            new: 1_000 * MICRO,
            expansion: 500 * MICRO,
            contraction: -300 * MICRO,
            churn: -800 * MICRO,
            reactivation: 200 * MICRO,
            churned_customers: 2,
            ..Period::default()
        };
        assert_eq!(p.customer_churn_rate(), Some(5.0));
        assert_eq!(p.gross_mrr_churn_rate(), Some(11.0));
        // (800 + 300 − 500 − 200) ÷ 10,000.
        assert_eq!(p.net_mrr_churn_rate(), Some(4.0));
        // (1,000 + 500) ÷ (300 + 800).
        assert_eq!(p.quick_ratio(), Some(1.36));
        assert_eq!(p.arpa_micro(), Some(10_600 * MICRO / 42));
        assert_eq!(Period::default().quick_ratio(), None);
        // ARPA $50, 80 % margin, 2 % monthly churn: $2,000.
        assert_eq!(
            ltv(Some(5_000 * MICRO), Some(0.8), Some(0.02)),
            Some(200_000)
        );
        assert_eq!(ltv(Some(5_000 * MICRO), Some(0.8), Some(0.0)), None);
        assert_eq!(micro_to_minor(-1_500_000), -2);
        assert_eq!(micro_to_minor(4_333_333_333), 4_333);
    }
}
