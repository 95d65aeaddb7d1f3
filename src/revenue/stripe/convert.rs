//! Stripe objects → the MRR engine's terms: prices (per unit, tiered, packaged; one-time prices
//! are not recurring and give `None`), coupons as dated discounts, and a subscription as the
//! snapshot the engine values. Only expanded discounts can be read; the sync asks for them.

use super::objects;
use crate::money::parse_scaled_wide;
use crate::revenue::mrr;

const MS: i64 = 1000;

/// A decimal amount of minor units (`unit_amount_decimal`, up to 12 places) in pico-minor units.
fn pico(decimal: Option<&str>, integer: Option<i64>) -> Result<i128, String> {
    match (decimal, integer) {
        (Some(text), _) => parse_scaled_wide(text, 12, i128::MAX / 1_000_000),
        (None, Some(minor)) if minor >= 0 => Ok(i128::from(minor) * mrr::PICO),
        (None, Some(minor)) => Err(format!("negative amount {minor}")),
        (None, None) => Ok(0),
    }
}

/// The recurring terms of `p`, or `None` for a one-time price (credit packs and the like).
pub fn price(p: &objects::Price) -> Result<Option<mrr::Price>, String> {
    let Some(recurring) = &p.recurring else {
        return Ok(None);
    };
    let interval = mrr::Interval::parse(&recurring.interval)
        .ok_or_else(|| format!("price {}: unknown interval {:?}", p.id, recurring.interval))?;
    let scheme = match p.billing_scheme.as_deref() {
        Some("tiered") => {
            let mode = match p.tiers_mode.as_deref() {
                Some("graduated") => mrr::TiersMode::Graduated,
                Some("volume") => mrr::TiersMode::Volume,
                other => return Err(format!("price {}: unknown tiers_mode {other:?}", p.id)),
            };
            let tiers = p
                .tiers
                .as_ref()
                .ok_or_else(|| format!("price {}: tiered without tiers (expand[]=tiers)", p.id))?
                .iter()
                .map(|t| {
                    Ok(mrr::Tier {
                        up_to: t.up_to,
                        unit_pico: pico(t.unit_amount_decimal.as_deref(), t.unit_amount)?,
                        flat_pico: pico(t.flat_amount_decimal.as_deref(), t.flat_amount)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| format!("price {}: {e}", p.id))?;
            mrr::Scheme::Tiered { mode, tiers }
        }
        _ => mrr::Scheme::PerUnit {
            unit_pico: pico(p.unit_amount_decimal.as_deref(), p.unit_amount)
                .map_err(|e| format!("price {}: {e}", p.id))?,
        },
    };
    Ok(Some(mrr::Price {
        currency: p.currency.to_ascii_lowercase(),
        interval,
        interval_count: recurring.interval_count,
        metered: recurring.usage_type.as_deref() == Some("metered"),
        scheme,
        transform: p
            .transform_quantity
            .as_ref()
            .map(|t| (t.divide_by, t.round == "up")),
    }))
}

/// `ms` plus `months` calendar months (the day clamped to the month's length), UTC.
pub fn add_months(ms: i64, months: u32) -> i64 {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms;
    };
    let total = at.month() as i32 - 1 + months as i32;
    let year = at.year() + total.div_euclid(12);
    let Ok(month) = time::Month::try_from((total.rem_euclid(12) + 1) as u8) else {
        return ms;
    };
    let day = at.day().min(month.length(year));
    time::Date::from_calendar_date(year, month, day)
        .map(|d| (d.with_time(at.time()).assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(ms)
}

/// A discount as the engine applies it; `None` when its coupon is not readable.
pub fn discount(d: &objects::Discount) -> Option<mrr::Discount> {
    let coupon = d.coupon()?;
    let duration = mrr::Duration::parse(&coupon.duration)?;
    let start_ms = d.start * MS;
    let end_ms = d.end.map(|e| e * MS).or_else(|| {
        (duration == mrr::Duration::Repeating)
            .then(|| add_months(start_ms, coupon.duration_in_months.unwrap_or(0)))
    });
    Some(mrr::Discount {
        percent_off_milli: coupon.percent_off.map(|p| (p * 1000.0).round() as i64),
        amount_off: coupon.amount_off,
        duration,
        start_ms,
        end_ms,
    })
}

fn discounts(list: &[objects::Expandable<objects::Discount>]) -> Vec<mrr::Discount> {
    list.iter()
        .filter_map(|d| d.object())
        .filter_map(discount)
        .collect()
}

/// The subscription as the engine values it. Collection paused (`pause_collection`) counts as
/// paused: no MRR, but not churned.
pub fn snapshot(sub: &objects::Subscription) -> Result<mrr::Snapshot, String> {
    let mut status = mrr::Status::parse(&sub.status)
        .ok_or_else(|| format!("subscription {}: unknown status {:?}", sub.id, sub.status))?;
    if sub.pause_collection.is_some() && status.counts() {
        status = mrr::Status::Paused;
    }
    let mut items = Vec::with_capacity(sub.items.data.len());
    for item in &sub.items.data {
        if let Some(p) = price(&item.price)? {
            items.push(mrr::Item {
                price: p,
                quantity: item.quantity.unwrap_or(1),
                discounts: discounts(&item.discounts),
            });
        }
    }
    Ok(mrr::Snapshot {
        status,
        items,
        discounts: discounts(&sub.discounts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).expect("fixture parses")
    }

    #[test]
    fn months_are_calendar_months() {
        // 2026-01-31 + 1 month → 2026-02-28; + 13 → 2027-02-28.
        let jan31 = 1_769_817_600_000;
        assert_eq!(add_months(jan31, 1), 1_772_236_800_000);
        assert_eq!(add_months(jan31, 13), 1_803_772_800_000);
        assert_eq!(add_months(jan31, 0), jan31);
    }

    #[test]
    fn a_basil_subscription_becomes_a_snapshot() {
        // Shaped like Stripe's fixture for API 2025-03-31: periods on the items, discounts
        // expanded, a tiered seat price beside a flat plan.
        let sub: objects::Subscription = parse(
            r#"{
              "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
              "currency": "usd", "created": 1767225600, "start_date": 1767225600,
              "discounts": [{"id": "di_1", "object": "discount", "start": 1767225600, "end": null,
                "coupon": {"id": "TEN", "object": "coupon", "percent_off": 10.0, "duration": "forever",
                  "amount_off": null, "currency": null, "duration_in_months": null}}],
              "items": {"object": "list", "has_more": false, "data": [
                {"id": "si_1", "object": "subscription_item", "quantity": 1,
                 "current_period_start": 1767225600, "current_period_end": 1769904000,
                 "price": {"id": "price_growth", "object": "price", "currency": "usd",
                   "unit_amount": 2600, "unit_amount_decimal": "2600", "billing_scheme": "per_unit",
                   "type": "recurring", "recurring": {"interval": "month", "interval_count": 1,
                   "usage_type": "licensed"}}},
                {"id": "si_2", "object": "subscription_item", "quantity": 7, "discounts": [],
                 "price": {"id": "price_seats", "object": "price", "currency": "usd",
                   "unit_amount": null, "unit_amount_decimal": null, "billing_scheme": "tiered",
                   "tiers_mode": "volume", "type": "recurring",
                   "tiers": [{"up_to": 5, "unit_amount": 500, "unit_amount_decimal": "500",
                              "flat_amount": null, "flat_amount_decimal": null},
                             {"up_to": null, "unit_amount": 400, "unit_amount_decimal": "400",
                              "flat_amount": 0, "flat_amount_decimal": "0"}],
                   "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}}}
              ]}
            }"#,
        );
        assert_eq!(sub.current_period_end(), Some(1_769_904_000));
        let snap = snapshot(&sub).expect("converts");
        // (26.00 + 7 × 4.00) × 0.9 = 48.60.
        assert_eq!(snap.mrr_at(1_767_225_600_000), 4_860 * mrr::MICRO);
    }

    #[test]
    fn newer_discounts_carry_the_coupon_under_source_and_repeating_ones_end() {
        let d: objects::Discount = parse(
            r#"{"id": "di_2", "object": "discount", "start": 1767225600, "end": null,
                "source": {"type": "coupon", "coupon": {"id": "Q1", "object": "coupon",
                  "percent_off": 25.5, "duration": "repeating", "duration_in_months": 3}}}"#,
        );
        let d = discount(&d).expect("readable");
        assert_eq!(d.percent_off_milli, Some(25_500));
        assert_eq!(d.end_ms, Some(add_months(1_767_225_600_000, 3)));
    }

    #[test]
    fn one_time_prices_are_not_recurring_and_pauses_are_paused() {
        let pack: objects::Price = parse(
            r#"{"id": "price_pack", "currency": "usd", "unit_amount": 1800, "type": "one_time",
                "recurring": null}"#,
        );
        assert_eq!(price(&pack), Ok(None));
        let sub: objects::Subscription = parse(
            r#"{"id": "sub_2", "customer": {"id": "cus_2", "object": "customer"},
                "status": "active", "pause_collection": {"behavior": "void", "resumes_at": null},
                "items": {"data": []}}"#,
        );
        assert_eq!(sub.customer.id(), "cus_2");
        assert_eq!(snapshot(&sub).map(|s| s.status), Ok(mrr::Status::Paused));
        let bad: objects::Subscription =
            parse(r#"{"id": "sub_3", "customer": "cus_3", "status": "frozen"}"#);
        assert!(snapshot(&bad).unwrap_err().contains("frozen"));
    }
}
