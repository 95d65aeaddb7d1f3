//! Money: integer minor units plus an ISO 4217 currency code, and exact fixed-point decimals for
//! sub-cent unit prices (pico-dollars) and accumulated costs (nano-dollars). Never a float.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    /// Lower-case ISO 4217 code, as Stripe writes it: `usd`, `eur`.
    pub currency: String,
}

impl Money {
    pub fn new(amount: i64, currency: &str) -> Result<Self, String> {
        let currency = currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!("{currency:?} is not a three-letter currency code"));
        }
        Ok(Self { amount, currency })
    }
}

/// Decimal places of a pico-dollar amount (unit prices).
pub const PICO: u32 = 12;
/// Decimal places of a nano-dollar amount (costs).
pub const NANO: u32 = 9;

/// Parses a non-negative decimal such as `"0.0045"`, `"8"` or `"1.5e-7"` into an integer count
/// of 10^-`scale` units, exactly; refuses more precision than `scale` keeps, signs, and values that
/// do not fit.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i64, String> {
    let value = parse_scaled_wide(text, scale, i128::from(i64::MAX))?;
    i64::try_from(value).map_err(|_| format!("{text:?} is too large"))
}

/// [`parse_scaled`] into an `i128` no larger than `max`, for amounts that need more room (Stripe
/// prices: up to 12 decimal places of a minor unit).
pub fn parse_scaled_wide(text: &str, scale: u32, max: i128) -> Result<i128, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a non-negative decimal number");
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || exp.abs() > 40
    {
        return Err(bad());
    }
    // digits × 10^(exp − frac.len()) expressed in 10^-scale units.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let shift = i64::from(exp) - frac.len() as i64 + i64::from(scale);
    let too_big = || format!("{text:?} is too large");
    let mut value: i128 = 0;
    let (kept, dropped) = if shift >= 0 {
        (digits, "")
    } else {
        let cut = digits.len().saturating_sub(shift.unsigned_abs() as usize);
        digits.split_at(cut)
    };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!(
            "{text:?} has more precision than {scale} decimal places"
        ));
    }
    for b in kept.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .filter(|v| *v <= max)
            .ok_or_else(too_big)?;
    }
    for _ in 0..shift.max(0) {
        value = value
            .checked_mul(10)
            .filter(|v| *v <= max)
            .ok_or_else(too_big)?;
        if value == 0 {
            break;
        }
    }
    Ok(value)
}

/// Writes an amount of 10^-`scale` units as a decimal with at least `min_decimals` places and no
/// trailing zeros beyond them: `format_scaled(4_500_000_000, 12, 2)` is `"0.0045"`.
pub fn format_scaled(value: i64, scale: u32, min_decimals: usize) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let v = value.unsigned_abs();
    let unit = 10u64.pow(scale);
    let mut frac = format!("{:0width$}", v % unit, width = scale as usize);
    while frac.len() > min_decimals && frac.ends_with('0') {
        frac.pop();
    }
    if frac.is_empty() {
        format!("{sign}{}", v / unit)
    } else {
        format!("{sign}{}.{frac}", v / unit)
    }
}

/// `quantity` units at `price_pico` per unit, in nano-dollars, rounded half up. Whole quantities
/// (the common case) are computed exactly; fractional ones (seconds, minutes) in floating point.
pub fn cost_nano(quantity: f64, price_pico: i64) -> i64 {
    let exact = if quantity.fract() == 0.0 && quantity.abs() < 9e15 {
        (quantity as i128 * i128::from(price_pico) + 500) / 1000
    } else {
        (quantity * price_pico as f64 / 1000.0).round() as i128
    };
    exact.clamp(0, i128::from(i64::MAX)) as i64
}

/// Nano-dollars to USD cents, rounded half up.
pub fn nano_to_cents(nano: i64) -> i64 {
    (i128::from(nano) + 5_000_000).div_euclid(10_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_scaled("0.0045", PICO), Ok(4_500_000_000));
        assert_eq!(parse_scaled("8", 2), Ok(800));
        assert_eq!(parse_scaled("26.00", 2), Ok(2600));
        assert_eq!(parse_scaled("1.5e-7", PICO), Ok(150_000));
        assert_eq!(parse_scaled("2E-3", PICO), Ok(2_000_000_000));
        assert_eq!(parse_scaled(".5", 2), Ok(50));
        assert_eq!(parse_scaled("0", PICO), Ok(0));
        assert_eq!(parse_scaled("1.250", 2), Ok(125));
        assert!(parse_scaled("1.255", 2).unwrap_err().contains("precision"));
        assert!(parse_scaled("-1", 2).is_err());
        assert!(parse_scaled("", 2).is_err());
        assert!(parse_scaled(".", 2).is_err());
        assert!(parse_scaled("1e", 2).is_err());
        assert!(parse_scaled("NaN", 2).is_err());
        assert!(
            parse_scaled("1e30", PICO)
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_scaled("99999999999999999999", 0).is_err());
    }

    #[test]
    fn decimals_format_back() {
        assert_eq!(format_scaled(4_500_000_000, PICO, 2), "0.0045");
        assert_eq!(format_scaled(800, 2, 2), "8.00");
        assert_eq!(format_scaled(1_000_000_000_000, PICO, 0), "1");
        assert_eq!(format_scaled(150_000, PICO, 2), "0.00000015");
        assert_eq!(format_scaled(-5, 2, 2), "-0.05");
    }

    #[test]
    fn costs_are_exact_for_whole_quantities() {
        // 1,000,003 credits at $0.0045: 4500.0135 USD exactly.
        assert_eq!(cost_nano(1_000_003.0, 4_500_000_000), 4_500_013_500_000);
        assert_eq!(cost_nano(1.5, 1_000_000_000_000), 1_500_000_000);
        assert_eq!(nano_to_cents(4_500_013_500_000), 450_001);
        assert_eq!(nano_to_cents(4_999_999), 0);
        assert_eq!(nano_to_cents(5_000_000), 1);
    }

    proptest::proptest! {
        #[test]
        fn parse_inverts_format(v in 0i64..i64::MAX / 2, min in 0usize..4) {
            proptest::prop_assert_eq!(parse_scaled(&format_scaled(v, PICO, min), PICO), Ok(v));
        }
    }

    #[test]
    fn currency_codes_are_checked_and_lowercased() {
        assert_eq!(
            Money::new(1234, "USD").unwrap(),
            Money {
                amount: 1234,
                currency: "usd".into()
            }
        );
        assert!(Money::new(1, "dollars").is_err());
        assert_eq!(
            serde_json::to_value(Money::new(5, "eur").unwrap()).unwrap(),
            serde_json::json!({"amount": 5, "currency": "eur"})
        );
    }
}
