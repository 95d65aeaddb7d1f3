//! The MRR engine. What one subscription is worth per month at a moment (every item's price ×
//! quantity × interval factor, tiers, recurring discounts for their duration, only `active` and
//! `past_due` counted), and the daily movements per customer (new, expansion, contraction,
//! churn, reactivation) swept from every subscription's timeline. Pure: the sync layer feeds
//! it values read from Stripe, the metrics read what it returns.
//!
//! Amounts are integers. Unit prices are pico-minor units (Stripe's `unit_amount_decimal` keeps
//! up to 12 decimal places of a cent); MRR is micro-minor units, so a yearly or weekly price
//! divided into months stays exact far below a cent until a figure is shown.

use std::collections::BTreeMap;

/// Pico-minor units per minor unit.
pub const PICO: i128 = 1_000_000_000_000;
/// Micro-minor units (MRR) per minor unit.
pub const MICRO: i64 = 1_000_000;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    /// Months per `count` intervals as (numerator, denominator): month 1/n, year 1/(12n), week
    /// 52/(12n), day 365/(12n).
    pub fn monthly_factor(self, count: u32) -> (i128, i128) {
        let n = i128::from(count.max(1));
        match self {
            Self::Month => (1, n),
            Self::Year => (1, 12 * n),
            Self::Week => (52, 12 * n),
            Self::Day => (365, 12 * n),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiersMode {
    /// Each unit is priced by the tier it falls in.
    Graduated,
    /// Every unit is priced by the tier the total quantity falls in.
    Volume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Inclusive upper bound; `None` is Stripe's `"inf"`.
    pub up_to: Option<u64>,
    pub unit_pico: i128,
    pub flat_pico: i128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    PerUnit { unit_pico: i128 },
    Tiered { mode: TiersMode, tiers: Vec<Tier> },
}

/// A recurring price's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub currency: String,
    pub interval: Interval,
    pub interval_count: u32,
    /// `recurring.usage_type = metered`: billed in arrears from usage, so not MRR.
    pub metered: bool,
    pub scheme: Scheme,
    /// `transform_quantity`: (divide_by, round up).
    pub transform: Option<(u64, bool)>,
}

impl Price {
    /// One billing period's amount for `quantity`, pico-minor units.
    pub fn period_amount(&self, quantity: u64) -> i128 {
        let q = match self.transform {
            Some((divide_by, up)) if divide_by > 0 => {
                if up {
                    quantity.div_ceil(divide_by)
                } else {
                    quantity / divide_by
                }
            }
            _ => quantity,
        };
        if q == 0 {
            return 0;
        }
        let q128 = i128::from(q);
        match &self.scheme {
            Scheme::PerUnit { unit_pico } => unit_pico * q128,
            Scheme::Tiered {
                mode: TiersMode::Volume,
                tiers,
            } => tiers
                .iter()
                .find(|t| t.up_to.is_none_or(|up| q <= up))
                .map_or(0, |t| t.unit_pico * q128 + t.flat_pico),
            Scheme::Tiered {
                mode: TiersMode::Graduated,
                tiers,
            } => {
                let mut total = 0;
                let mut below = 0u64;
                for t in tiers {
                    let upper = t.up_to.unwrap_or(u64::MAX);
                    if q > below {
                        total += i128::from(q.min(upper) - below) * t.unit_pico + t.flat_pico;
                    }
                    if q <= upper {
                        break;
                    }
                    below = upper;
                }
                total
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    /// Reduces one invoice: a one-time discount, never MRR.
    Once,
    /// Reduces MRR from `start` until `end`.
    Repeating,
    Forever,
}

impl Duration {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "once" => Some(Self::Once),
            "repeating" => Some(Self::Repeating),
            "forever" => Some(Self::Forever),
            _ => None,
        }
    }
}

/// A coupon applied to a subscription or one of its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discount {
    /// Percent off in thousandths of a percent (25.5 % → 25 500).
    pub percent_off_milli: Option<i64>,
    /// Amount off each invoice, minor units of the subscription's currency.
    pub amount_off: Option<i64>,
    pub duration: Duration,
    pub start_ms: i64,
    /// When the discount stops applying (`repeating` coupons; a removed discount).
    pub end_ms: Option<i64>,
}

impl Discount {
    pub fn applies_at(&self, t: i64) -> bool {
        self.duration != Duration::Once
            && self.start_ms <= t
            && self.end_ms.is_none_or(|end| t < end)
    }

    /// `monthly` (pico-minor, per month) after this discount, for a subscription billed every
    /// `factor` months.
    fn apply(&self, monthly: i128, factor: (i128, i128)) -> i128 {
        let mut out = monthly;
        if let Some(p) = self.percent_off_milli {
            out -= monthly * i128::from(p) / 100_000;
        }
        if let Some(a) = self.amount_off {
            out -= i128::from(a) * PICO * factor.0 / factor.1;
        }
        out.max(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Trialing,
    Active,
    PastDue,
    Unpaid,
    Paused,
    Incomplete,
    IncompleteExpired,
    Canceled,
}

impl Status {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// Whether the subscription's MRR counts (Stripe's rule: active and past due only).
    pub fn counts(self) -> bool {
        matches!(self, Self::Active | Self::PastDue)
    }

    /// Whether the subscription has not ended: a customer is churned only when none is live.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Canceled | Self::IncompleteExpired)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub price: Price,
    pub quantity: u64,
    pub discounts: Vec<Discount>,
}

/// A subscription as it stood from some moment on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub status: Status,
    pub items: Vec<Item>,
    pub discounts: Vec<Discount>,
}

impl Snapshot {
    /// MRR at `t` in micro-minor units of the subscription's currency, rounded half up.
    pub fn mrr_at(&self, t: i64) -> i64 {
        if !self.status.counts() {
            return 0;
        }
        let mut factor = (1, 1);
        let mut monthly: i128 = 0;
        for item in self.items.iter().filter(|i| !i.price.metered) {
            let f = item
                .price
                .interval
                .monthly_factor(item.price.interval_count);
            factor = f;
            let mut m = item.price.period_amount(item.quantity) * f.0 / f.1;
            for d in item.discounts.iter().filter(|d| d.applies_at(t)) {
                m = d.apply(m, f);
            }
            monthly += m;
        }
        for d in self.discounts.iter().filter(|d| d.applies_at(t)) {
            monthly = d.apply(monthly, factor);
        }
        let micro = (monthly + PICO / i128::from(MICRO) / 2) / (PICO / i128::from(MICRO));
        i64::try_from(micro).unwrap_or(i64::MAX)
    }

    /// Metered items: reported as usage revenue, never MRR.
    pub fn has_metered(&self) -> bool {
        self.items.iter().any(|i| i.price.metered)
    }
}

/// One subscription's MRR (reporting currency, micro-minor units) from `at_ms` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub customer: u32,
    pub subscription: u32,
    pub at_ms: i64,
    pub mrr: i64,
    /// The subscription has not ended.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    New,
    Expansion,
    Contraction,
    Churn,
    Reactivation,
}

impl Kind {
    /// The kind [`Self::as_str`] names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::New,
            Self::Expansion,
            Self::Contraction,
            Self::Churn,
            Self::Reactivation,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Expansion => "expansion",
            Self::Contraction => "contraction",
            Self::Churn => "churn",
            Self::Reactivation => "reactivation",
        }
    }
}

/// One customer's MRR change over one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// Day start, UTC milliseconds.
    pub day: i64,
    pub customer: u32,
    pub kind: Kind,
    /// MRR after minus before, micro-minor units (negative for contraction and churn).
    pub amount: i64,
}

/// Totals at the end of one UTC day and the movements during it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTotals {
    pub day: i64,
    pub mrr: i64,
    /// Customers with MRR above zero.
    pub customers: i64,
    /// Subscriptions with MRR above zero.
    pub subscriptions: i64,
    pub new: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub reactivation: i64,
    pub new_customers: i64,
    pub churned_customers: i64,
    pub reactivated_customers: i64,
}

impl DayTotals {
    /// The fields in `revenue_days` column order.
    pub fn columns(&self) -> [i64; 12] {
        [
            self.day,
            self.mrr,
            self.customers,
            self.subscriptions,
            self.new,
            self.expansion,
            self.contraction,
            self.churn,
            self.reactivation,
            self.new_customers,
            self.churned_customers,
            self.reactivated_customers,
        ]
    }

    fn add(&mut self, m: &Movement) {
        self.mrr += m.amount;
        match m.kind {
            Kind::New => {
                self.new += m.amount;
                self.new_customers += 1;
            }
            Kind::Expansion => self.expansion += m.amount,
            Kind::Contraction => self.contraction += m.amount,
            Kind::Churn => {
                self.churn += m.amount;
                self.churned_customers += 1;
            }
            Kind::Reactivation => {
                self.reactivation += m.amount;
                self.reactivated_customers += 1;
            }
        }
    }
}

pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// One customer-day where something changed: the movement (if the MRR moved) and the change in
/// paying customers and paying subscriptions it brought.
struct Step {
    day: i64,
    movement: Option<Movement>,
    paying: i64,
    subscriptions: i64,
}

/// Sweeps every subscription's changes into per-customer daily movements and a dense daily
/// series from the first change's day to `until_ms`'s day. Within a day only the end-of-day
/// state counts, so a same-day upgrade and downgrade cancel out. Sorts `changes` in place.
pub fn history(changes: &mut [Change], until_ms: i64) -> (Vec<Movement>, Vec<DayTotals>) {
    changes.sort_unstable_by_key(|c| (c.customer, c.at_ms, c.subscription));
    let mut steps = Vec::new();
    let mut i = 0;
    while i < changes.len() {
        let customer = changes[i].customer;
        let mut subs: Vec<(u32, i64, bool)> = Vec::new();
        let mut mrr = 0i64;
        let mut paying_subs = 0i64;
        let mut paid_before = false;
        let mut churned = false;
        while i < changes.len() && changes[i].customer == customer {
            let day = day_of(changes[i].at_ms);
            while i < changes.len()
                && changes[i].customer == customer
                && day_of(changes[i].at_ms) == day
            {
                let c = changes[i];
                match subs.iter_mut().find(|s| s.0 == c.subscription) {
                    Some(s) => {
                        s.1 = c.mrr;
                        s.2 = c.live;
                    }
                    None => subs.push((c.subscription, c.mrr, c.live)),
                }
                i += 1;
            }
            let after: i64 = subs.iter().map(|s| s.1).sum();
            let live = subs.iter().any(|s| s.2);
            let after_subs = subs.iter().filter(|s| s.1 > 0).count() as i64;
            let kind = if mrr == 0 && after > 0 {
                // Back from a pause is expansion: the customer never left.
                Some(if churned {
                    Kind::Reactivation
                } else if paid_before {
                    Kind::Expansion
                } else {
                    Kind::New
                })
            } else if mrr > 0 && after == 0 && !live {
                Some(Kind::Churn)
            } else if after > mrr {
                Some(Kind::Expansion)
            } else if after < mrr {
                Some(Kind::Contraction)
            } else {
                None
            };
            if after > 0 {
                paid_before = true;
                churned = false;
            } else if !live && paid_before {
                churned = true;
            }
            if kind.is_some() || after_subs != paying_subs {
                steps.push(Step {
                    day,
                    movement: kind.map(|kind| Movement {
                        day,
                        customer,
                        kind,
                        amount: after - mrr,
                    }),
                    paying: i64::from(after > 0) - i64::from(mrr > 0),
                    subscriptions: after_subs - paying_subs,
                });
            }
            mrr = after;
            paying_subs = after_subs;
        }
    }
    let first = changes.iter().map(|c| day_of(c.at_ms)).min();
    let days = daily(&steps, first, until_ms);
    (steps.into_iter().filter_map(|s| s.movement).collect(), days)
}

fn daily(steps: &[Step], first: Option<i64>, until_ms: i64) -> Vec<DayTotals> {
    let mut by_day: BTreeMap<i64, DayTotals> = BTreeMap::new();
    for step in steps {
        let totals = by_day.entry(step.day).or_default();
        totals.customers += step.paying;
        totals.subscriptions += step.subscriptions;
        if let Some(m) = &step.movement {
            totals.add(m);
        }
    }
    let Some(first) = first else {
        return Vec::new();
    };
    let last = by_day
        .keys()
        .last()
        .map_or(first, |l| *l)
        .max(day_of(until_ms));
    let mut out = Vec::with_capacity(((last - first) / DAY_MS + 1) as usize);
    let mut running = DayTotals::default();
    let mut day = first;
    while day <= last {
        let moved = by_day.remove(&day).unwrap_or_default();
        running = DayTotals {
            day,
            mrr: running.mrr + moved.mrr,
            customers: running.customers + moved.customers,
            subscriptions: running.subscriptions + moved.subscriptions,
            ..moved
        };
        out.push(running.clone());
        day += DAY_MS;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn price(cents: i64, interval: Interval, count: u32) -> Price {
        Price {
            currency: "usd".into(),
            interval,
            interval_count: count,
            metered: false,
            scheme: Scheme::PerUnit {
                unit_pico: i128::from(cents) * PICO,
            },
            transform: None,
        }
    }

    fn item(price: Price, quantity: u64) -> Item {
        Item {
            price,
            quantity,
            discounts: Vec::new(),
        }
    }

    fn active(items: Vec<Item>) -> Snapshot {
        Snapshot {
            status: Status::Active,
            items,
            discounts: Vec::new(),
        }
    }

    #[test]
    fn interval_factors_normalise_to_a_month() {
        // $2,400 every two years is $100 a month.
        let s = active(vec![item(price(240_000, Interval::Year, 2), 1)]);
        assert_eq!(s.mrr_at(T0), 10_000 * MICRO);
        // $10 a week: 1000 × 52 / 12 = 4333.333… cents.
        let s = active(vec![item(price(1_000, Interval::Week, 1), 1)]);
        assert_eq!(s.mrr_at(T0), 4_333_333_333);
        // $30 every three months is $10.
        let s = active(vec![item(price(3_000, Interval::Month, 3), 1)]);
        assert_eq!(s.mrr_at(T0), 1_000 * MICRO);
        // $1 a day: 100 × 365 / 12 = 3041.666… cents.
        let s = active(vec![item(price(100, Interval::Day, 1), 1)]);
        assert_eq!(s.mrr_at(T0), 3_041_666_667);
    }

    #[test]
    fn quantity_and_every_item_count_and_metered_items_do_not() {
        let s = active(vec![item(price(2_600, Interval::Month, 1), 7)]);
        assert_eq!(s.mrr_at(T0), 18_200 * MICRO);
        let mut metered = price(1, Interval::Month, 1);
        metered.metered = true;
        let s = active(vec![
            item(price(2_600, Interval::Month, 1), 1),
            item(price(500, Interval::Month, 1), 2),
            item(metered, 10_000),
        ]);
        assert_eq!(s.mrr_at(T0), 3_600 * MICRO);
        assert!(s.has_metered());
    }

    #[test]
    fn tiers_graduated_volume_and_packages() {
        let tiers = vec![
            Tier {
                up_to: Some(5),
                unit_pico: 1_000 * PICO,
                flat_pico: 0,
            },
            Tier {
                up_to: Some(10),
                unit_pico: 800 * PICO,
                flat_pico: 500 * PICO,
            },
            Tier {
                up_to: None,
                unit_pico: 500 * PICO,
                flat_pico: 0,
            },
        ];
        let mut p = price(0, Interval::Month, 1);
        p.scheme = Scheme::Tiered {
            mode: TiersMode::Graduated,
            tiers: tiers.clone(),
        };
        // 5 × 10.00 + (5 × 8.00 + 5.00 flat) + 2 × 5.00 = 50 + 45 + 10.
        assert_eq!(p.period_amount(12), 10_500 * PICO);
        assert_eq!(p.period_amount(5), 5_000 * PICO);
        p.scheme = Scheme::Tiered {
            mode: TiersMode::Volume,
            tiers,
        };
        // All 7 at the second tier's 8.00, plus its flat 5.00.
        assert_eq!(p.period_amount(7), 6_100 * PICO);
        assert_eq!(p.period_amount(12), 6_000 * PICO);
        assert_eq!(p.period_amount(0), 0);
        // Sold in packs of 10, rounded up: 23 seats are 3 packs.
        let mut pack = price(2_000, Interval::Month, 1);
        pack.transform = Some((10, true));
        assert_eq!(pack.period_amount(23), 6_000 * PICO);
        pack.transform = Some((10, false));
        assert_eq!(pack.period_amount(23), 4_000 * PICO);
    }

    #[test]
    fn recurring_discounts_count_for_their_duration_and_once_never() {
        let three_months = Discount {
            percent_off_milli: Some(25_000),
            amount_off: None,
            duration: Duration::Repeating,
            start_ms: T0,
            end_ms: Some(T0 + 90 * DAY_MS),
        };
        let mut s = active(vec![item(price(6_800, Interval::Month, 1), 1)]);
        s.discounts.push(three_months);
        assert_eq!(s.mrr_at(T0 + DAY_MS), 5_100 * MICRO);
        assert_eq!(s.mrr_at(T0 + 90 * DAY_MS), 6_800 * MICRO);
        assert_eq!(s.mrr_at(T0 - 1), 6_800 * MICRO);
        // A one-time coupon is an invoice discount, not a smaller MRR.
        s.discounts[0].duration = Duration::Once;
        assert_eq!(s.mrr_at(T0 + DAY_MS), 6_800 * MICRO);
        // $120 off each yearly invoice of $1,200 forever: $90 a month.
        let mut yearly = active(vec![item(price(120_000, Interval::Year, 1), 1)]);
        yearly.discounts.push(Discount {
            percent_off_milli: None,
            amount_off: Some(12_000),
            duration: Duration::Forever,
            start_ms: T0,
            end_ms: None,
        });
        assert_eq!(yearly.mrr_at(T0), 9_000 * MICRO);
        // An item-level discount larger than the item leaves zero, not a negative.
        let mut seat = item(price(500, Interval::Month, 1), 1);
        seat.discounts.push(Discount {
            percent_off_milli: None,
            amount_off: Some(900),
            duration: Duration::Forever,
            start_ms: T0,
            end_ms: None,
        });
        let s = active(vec![item(price(2_600, Interval::Month, 1), 1), seat]);
        assert_eq!(s.mrr_at(T0), 2_600 * MICRO);
    }

    #[test]
    fn only_active_and_past_due_count() {
        let mut s = active(vec![item(price(2_600, Interval::Month, 1), 1)]);
        for (status, counts, live) in [
            (Status::Active, true, true),
            (Status::PastDue, true, true),
            (Status::Trialing, false, true),
            (Status::Paused, false, true),
            (Status::Unpaid, false, true),
            (Status::Incomplete, false, true),
            (Status::IncompleteExpired, false, false),
            (Status::Canceled, false, false),
        ] {
            s.status = status;
            assert_eq!(s.mrr_at(T0) > 0, counts, "{status:?}");
            assert_eq!(status.is_live(), live, "{status:?}");
        }
    }

    fn change(customer: u32, subscription: u32, day: i64, mrr_cents: i64, live: bool) -> Change {
        Change {
            customer,
            subscription,
            at_ms: T0 + day * DAY_MS + 3_600_000,
            mrr: mrr_cents * MICRO,
            live,
        }
    }

    fn kinds(movements: &[Movement]) -> Vec<(i64, Kind, i64)> {
        movements
            .iter()
            .map(|m| ((m.day - T0) / DAY_MS, m.kind, m.amount / MICRO))
            .collect()
    }

    #[test]
    fn movements_follow_the_customer_not_the_subscription() {
        let mut changes = vec![
            // Customer 1: trial, converts on day 14, upgrades $8 → $26 on day 40, adds a
            // second subscription on day 50, cancels one on day 60 (contraction, not churn),
            // the other on day 70 (churn), comes back on day 100 (reactivation).
            change(1, 10, 0, 0, true),
            change(1, 10, 14, 800, true),
            change(1, 10, 40, 2_600, true),
            change(1, 11, 50, 6_800, true),
            change(1, 11, 60, 0, false),
            change(1, 10, 70, 0, false),
            change(1, 12, 100, 800, true),
            // Customer 2: past due keeps counting, then canceled → churn.
            change(2, 20, 5, 2_600, true),
            change(2, 20, 20, 2_600, true),
            change(2, 20, 35, 0, false),
            // Customer 3: paused is not churn; resuming is expansion, not reactivation.
            change(3, 30, 1, 6_800, true),
            change(3, 30, 30, 0, true),
            change(3, 30, 45, 6_800, true),
            // Customer 4: an upgrade and a downgrade on the same day cancel out.
            change(4, 40, 2, 800, true),
            change(4, 40, 9, 6_800, true),
            Change {
                at_ms: T0 + 9 * DAY_MS + 7_200_000,
                ..change(4, 40, 9, 800, true)
            },
        ];
        let (movements, days) = history(&mut changes, T0 + 120 * DAY_MS);
        let of = |c: u32| {
            kinds(
                &movements
                    .iter()
                    .copied()
                    .filter(|m| m.customer == c)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            of(1),
            vec![
                (14, Kind::New, 800),
                (40, Kind::Expansion, 1_800),
                (50, Kind::Expansion, 6_800),
                (60, Kind::Contraction, -6_800),
                (70, Kind::Churn, -2_600),
                (100, Kind::Reactivation, 800),
            ]
        );
        assert_eq!(
            of(2),
            vec![(5, Kind::New, 2_600), (35, Kind::Churn, -2_600)]
        );
        assert_eq!(
            of(3),
            vec![
                (1, Kind::New, 6_800),
                (30, Kind::Contraction, -6_800),
                (45, Kind::Expansion, 6_800),
            ]
        );
        assert_eq!(of(4), vec![(2, Kind::New, 800)]);

        let on = |d: i64| &days[d as usize];
        assert_eq!(days[0].day, T0);
        assert_eq!(days.len(), 121);
        // Day 50: customers 1 (8+26→ 26+68), 2, 3 and 4 pay.
        assert_eq!(on(50).mrr, (2_600 + 6_800 + 6_800 + 800) * MICRO);
        assert_eq!(on(50).customers, 3);
        assert_eq!(on(50).subscriptions, 4);
        assert_eq!(on(30).customers, 3);
        assert_eq!(on(35).churned_customers, 1);
        assert_eq!(on(100).reactivated_customers, 1);
        assert_eq!(on(120).mrr, (800 + 6_800 + 800) * MICRO);
    }

    proptest! {
        /// Whatever the changes, each day's movements sum to that day's MRR change, and the
        /// MRR equals the sum of every subscription's latest value.
        #[test]
        fn movements_sum_to_the_mrr_change(
            raw in prop::collection::vec((0u32..6, 0u32..3, 0i64..60, 0i64..5, any::<bool>()), 0..80)
        ) {
            let mut changes: Vec<Change> = raw
                .iter()
                .enumerate()
                .map(|(n, &(customer, sub, day, price, live))| Change {
                    customer,
                    subscription: customer * 10 + sub,
                    at_ms: T0 + day * DAY_MS + n as i64,
                    mrr: if live { price * 1_000 * MICRO } else { 0 },
                    live,
                })
                .collect();
            let (movements, days) = history(&mut changes.clone(), T0 + 60 * DAY_MS);
            let mut previous = 0;
            for d in &days {
                let moved: i64 = movements.iter().filter(|m| m.day == d.day).map(|m| m.amount).sum();
                prop_assert_eq!(d.mrr - previous, moved);
                prop_assert_eq!(
                    d.new + d.expansion + d.contraction + d.churn + d.reactivation,
                    moved
                );
                previous = d.mrr;
                // Direct: the latest change of each subscription up to the end of the day.
                changes.sort_by_key(|c| c.at_ms);
                let mut latest = std::collections::HashMap::new();
                for c in changes.iter().filter(|c| c.at_ms < d.day + DAY_MS) {
                    latest.insert(c.subscription, c.mrr);
                }
                prop_assert_eq!(d.mrr, latest.values().sum::<i64>());
                prop_assert_eq!(d.subscriptions, latest.values().filter(|v| **v > 0).count() as i64);
            }
        }
    }
}
