//! The one way a figure is written on a page: money, percentages, counts, quantities with their
//! unit, durations, changes between periods and times. Every template and every page handler
//! formats through these functions, and `assets/app.js` carries a `fmt` object with the same
//! rules for the live refresh, so a figure reads the same before and after an update.
//!
//! Rules, in short: `$1,833.10` (money in its currency's minor unit, the symbol for USD, EUR
//! and GBP, the code otherwise), `98.6 %` (one decimal unless asked), `192,358`,
//! `1,405.8 credits` (at most one decimal), `850 ms` / `3.75 s`, `+252.6 %` for a relative
//! change and `+1.4 pp` for a change of a rate, `2026-12-06 07:17 UTC`, and `—` for anything
//! absent. Rounding is half away from zero on the value scaled to the shown decimals, computed
//! the same way in the script, so server and browser never disagree on a last digit.
//! Nothing here reads data or knows a domain; callers pick the kind of figure.

use std::borrow::Borrow;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::money::Money;
use crate::revenue::history::minor_exponent;

/// What an absent value is shown as.
pub const ABSENT: &str = "—";

/// Anything counted or measured, as a float for formatting.
pub trait Numeric {
    fn to_f64(&self) -> f64;
}

macro_rules! numeric {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            fn to_f64(&self) -> f64 {
                *self as f64
            }
        }
    )*};
}
numeric!(i8, i16, i32, i64, u8, u16, u32, u64, usize, f32, f64);

impl<T: Numeric + ?Sized> Numeric for &T {
    fn to_f64(&self) -> f64 {
        (**self).to_f64()
    }
}

/// Inserts thousands separators into a run of digits: `1833` → `1,833`.
fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `v` with exactly `decimals` decimals and thousands separators, rounded half away from zero:
/// `fixed(1405.816, 1)` is `1,405.8`. `None` for NaN, infinities and values too large to round.
fn fixed(v: f64, decimals: usize) -> Option<String> {
    let scale = 10f64.powi(decimals as i32);
    let scaled = (v.abs() * scale).round();
    if !scaled.is_finite() || scaled >= 9e15 {
        return None;
    }
    let scaled = scaled as u64;
    let unit = 10u64.pow(decimals as u32);
    let sign = if v < 0.0 && scaled != 0 { "-" } else { "" };
    let int = group(&(scaled / unit).to_string());
    Some(if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{:0decimals$}", scaled % unit)
    })
}

/// [`fixed`] with trailing zero decimals dropped: `trimmed(12.0, 1)` is `12`.
fn trimmed(v: f64, max_decimals: usize) -> Option<String> {
    let text = fixed(v, max_decimals)?;
    Some(if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    })
}

/// A number with at most `max_decimals` decimals (none shown when they are zero) and
/// thousands separators: `number(1405.8161, 1)` is `1,405.8`.
pub fn number(v: impl Numeric, max_decimals: usize) -> String {
    trimmed(v.to_f64(), max_decimals).unwrap_or_else(|| ABSENT.into())
}

/// A count: `192,358`.
pub fn count(n: impl Numeric) -> String {
    fixed(n.to_f64(), 0).unwrap_or_else(|| ABSENT.into())
}

/// A quantity with its unit, at most one decimal: `1,405.8 credits`.
pub fn quantity(v: impl Numeric, unit: &str) -> String {
    let n = number(v, 1);
    if unit.is_empty() {
        n
    } else {
        format!("{n} {unit}")
    }
}

/// A percentage given on the 0–100 scale, one decimal: `98.6 %`.
pub fn percent(v: impl Numeric) -> String {
    percent_with(v, 1)
}

/// A percentage on the 0–100 scale with `decimals` decimals (uptime takes two: `99.95 %`).
pub fn percent_with(v: impl Numeric, decimals: usize) -> String {
    match fixed(v.to_f64(), decimals) {
        Some(t) => format!("{t} %"),
        None => ABSENT.into(),
    }
}

/// A ratio 0–1 as a percentage with `decimals` decimals: `ratio(0.9995, 2)` is `99.95 %`.
pub fn ratio(v: impl Numeric, decimals: usize) -> String {
    percent_with(v.to_f64() * 100.0, decimals)
}

/// A multiple, two decimals at most: `1.36×`.
pub fn times(v: impl Numeric) -> String {
    format!("{}×", number(v, 2))
}

/// A relative change between periods, in percent: `+252.6 %`, `-3.0 %`.
pub fn change(pct: impl Numeric) -> String {
    signed(pct.to_f64(), " %")
}

/// A change of a rate between periods, in percentage points: `+1.4 pp`.
pub fn change_pp(points: impl Numeric) -> String {
    signed(points.to_f64(), " pp")
}

fn signed(v: f64, suffix: &str) -> String {
    match fixed(v, 1) {
        Some(t) if t.starts_with('-') => format!("{t}{suffix}"),
        Some(t) => format!("+{t}{suffix}"),
        None => ABSENT.into(),
    }
}

/// How a currency's amounts start: `$` for USD, `€`, `£`, else the code and a space.
fn symbol(currency: &str) -> String {
    match currency.to_ascii_lowercase().as_str() {
        "usd" => "$".into(),
        "eur" => "€".into(),
        "gbp" => "£".into(),
        other => format!("{} ", other.to_uppercase()),
    }
}

/// Money in its currency's minor units: `$1,833.10`, `-€12.00`, `JPY 1,200`.
pub fn money(m: impl Borrow<Money>) -> String {
    let m = m.borrow();
    let exponent = minor_exponent(&m.currency);
    let text = crate::money::format_scaled(m.amount.abs(), exponent, exponent as usize);
    let sign = if m.amount < 0 { "-" } else { "" };
    format!("{sign}{}{}", symbol(&m.currency), group_decimal(&text))
}

/// Optional money, `—` when absent.
pub fn money_opt(m: &Option<Money>) -> String {
    m.as_ref().map_or_else(|| ABSENT.into(), money)
}

/// A nano-dollar cost rounded to cents, as every page shows a total cost: `$1,833.10`.
pub fn nano_usd(nano: impl Borrow<i64>) -> String {
    money(Money {
        amount: crate::money::nano_to_cents(*nano.borrow()),
        currency: "usd".into(),
    })
}

/// A non-negative decimal amount written as text, e.g. a unit price `"0.0045"` or a per-event
/// cost, kept exact (never rounded to cents) with at least the currency's decimals:
/// `$0.0045`, `$8.00`, `$1,200.50`. Text that is not a decimal is shown as given.
pub fn exact_money(text: &str, currency: &str) -> String {
    let t = text.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{t} {}", currency.to_uppercase());
    }
    let min = minor_exponent(&currency.to_ascii_lowercase()) as usize;
    let mut frac = frac.trim_end_matches('0').to_string();
    while frac.len() < min {
        frac.push('0');
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        group(int)
    } else {
        format!("{}.{frac}", group(int))
    };
    format!("{sign}{}{body}", symbol(currency))
}

/// An amount of US cents written as a decimal text (`"1234.5"`), exact, in dollars: `$12.345`.
pub fn cents_usd(text: &str) -> String {
    let t = text.trim();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", t),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let padded = format!("{int:0>3}");
    let (dollars, cents) = padded.split_at(padded.len() - 2);
    exact_money(&format!("{sign}{dollars}.{cents}{frac}"), "usd")
}

/// [`exact_money`] of an optional amount, `—` when absent.
pub fn exact_money_opt(text: &Option<String>, currency: &str) -> String {
    text.as_deref()
        .map_or_else(|| ABSENT.into(), |t| exact_money(t, currency))
}

/// A money amount in major units (a chart's tick or bar value) in `currency`: whole amounts
/// without decimals (`$2,000`), others to the minor unit (`$12.50`).
pub fn money_major(v: f64, currency: &str) -> String {
    let exponent = minor_exponent(&currency.to_ascii_lowercase());
    let minor = (v.abs() * 10f64.powi(exponent as i32)).round();
    if !minor.is_finite() || minor >= 9e15 {
        return ABSENT.into();
    }
    let whole = minor % 10f64.powi(exponent as i32) == 0.0;
    let decimals = if whole { 0 } else { exponent as usize };
    let text = fixed(v.abs(), decimals).unwrap_or_default();
    let sign = if v < 0.0 && minor != 0.0 { "-" } else { "" };
    format!("{sign}{}{text}", symbol(currency))
}

/// Thousands separators in the integer part of an unsigned decimal text.
fn group_decimal(text: &str) -> String {
    match text.split_once('.') {
        Some((int, frac)) => format!("{}.{frac}", group(int)),
        None => group(text),
    }
}

/// A duration in milliseconds: `3.4 ms`, `850 ms`, `3.75 s`, `12.5 s`, `4 min`, `3 h`, `2 d`.
pub fn duration_ms(ms: impl Numeric) -> String {
    let ms = ms.to_f64();
    let abs = ms.abs();
    let text = if abs < 10.0 {
        trimmed(ms, 1).map(|t| format!("{t} ms"))
    } else if abs < 1_000.0 {
        fixed(ms, 0).map(|t| format!("{t} ms"))
    } else if abs < 10_000.0 {
        fixed(ms / 1000.0, 2).map(|t| format!("{t} s"))
    } else if abs < 90_000.0 {
        fixed(ms / 1000.0, 1).map(|t| format!("{t} s"))
    } else {
        Some(age((ms / 1000.0) as i64))
    };
    text.unwrap_or_else(|| ABSENT.into())
}

/// An optional duration in milliseconds, `—` when absent.
pub fn duration_opt(ms: &Option<f64>) -> String {
    ms.map_or_else(|| ABSENT.into(), duration_ms)
}

/// A span of whole seconds as people say it: `42 s`, `10 min`, `2 h`, `3 d`.
pub fn age(secs: impl Borrow<i64>) -> String {
    match *secs.borrow() {
        s if s < 90 => format!("{s} s"),
        s if s < 5_400 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// A configured interval, exact: `30 s`, `5 min`, `24 h`.
pub fn interval_secs(secs: impl Numeric) -> String {
    let secs = secs.to_f64();
    let s = secs.round() as i64;
    if s > 0 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{} s", number(secs, 3))
    }
}

fn at(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// The one time format, UTC: `2026-12-06 07:17 UTC`.
pub fn time(ms: impl Borrow<i64>) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at(*ms.borrow())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ABSENT.into())
}

/// An optional time, `—` when absent.
pub fn time_opt(ms: &Option<i64>) -> String {
    ms.map_or_else(|| ABSENT.into(), time)
}

/// A UTC day: `2026-12-06`.
pub fn day(ms: impl Borrow<i64>) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    at(*ms.borrow())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ABSENT.into())
}

/// The instant for a `<time datetime>` or a CSV cell: `2026-12-06T07:17:03.250Z`.
pub fn iso(ms: impl Borrow<i64>) -> String {
    at(*ms.borrow())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into UTC milliseconds.
pub fn parse_iso(iso: &str) -> Option<i64> {
    OffsetDateTime::parse(iso, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// An RFC 3339 time in the one time format; `—` when it does not parse.
pub fn time_of_iso(iso: &str) -> String {
    parse_iso(iso).map_or_else(|| ABSENT.into(), time)
}

/// How long ago `ms` was, relative to `now` (both UTC ms): `4 min ago`. Shown inside a
/// `<time datetime title>` carrying the absolute time.
pub fn ago(now: i64, ms: i64) -> String {
    format!("{} ago", age(((now - ms) / 1000).max(0)))
}

/// A figure's value by kind, as cards and figure tables show it: `money` (value in minor
/// units), `percent` (0–100), `times`, else a count.
pub fn figure(kind: &str, v: &crate::overview::FigureValue) -> String {
    use crate::overview::FigureValue;
    match (v, kind) {
        (FigureValue::Money(m), _) => money(m),
        (FigureValue::Number(n), "percent") => percent(*n),
        (FigureValue::Number(n), "times") => times(*n),
        (FigureValue::Number(n), _) => count(*n),
    }
}

/// The change badge of a figure: percentage points for a percent figure (from the two
/// values), relative change otherwise. Returns the text and its sign, or `None` without one.
pub fn figure_change(
    kind: &str,
    value: Option<&crate::overview::FigureValue>,
    previous: Option<&crate::overview::FigureValue>,
    change_pct: Option<f64>,
) -> Option<(String, f64)> {
    use crate::overview::FigureValue;
    if kind == "percent" {
        return match (value, previous) {
            (Some(FigureValue::Number(v)), Some(FigureValue::Number(p))) => {
                let d = v - p;
                Some((change_pp(d), rounded_sign(d)))
            }
            _ => None,
        };
    }
    change_pct.map(|c| (change(c), rounded_sign(c)))
}

/// The badge direction for a change's sign: `up`, `down` or empty.
pub fn direction(sign: Option<f64>) -> &'static str {
    match sign {
        Some(s) if s > 0.0 => "up",
        Some(s) if s < 0.0 => "down",
        _ => "",
    }
}

/// The badge direction of a change as shown with one decimal (`+0.0 %` is no change).
pub fn trend(change: impl Numeric) -> &'static str {
    direction(Some(rounded_sign(change.to_f64())))
}

/// The sign of `v` as shown with one decimal: a change that reads `+0.0` is no change.
fn rounded_sign(v: f64) -> f64 {
    let shown = (v.abs() * 10.0).round();
    if shown == 0.0 { 0.0 } else { v.signum() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount: i64) -> Money {
        Money {
            amount,
            currency: "usd".into(),
        }
    }

    #[test]
    fn money_reads_naturally() {
        let m = |amount, currency: &str| Money {
            amount,
            currency: currency.into(),
        };
        assert_eq!(money(usd(183_310)), "$1,833.10");
        assert_eq!(money(m(123_456_789, "usd")), "$1,234,567.89");
        assert_eq!(money(m(-1_200, "eur")), "-€12.00");
        assert_eq!(money(usd(5)), "$0.05");
        assert_eq!(money(m(1_200, "jpy")), "JPY 1,200");
        assert_eq!(money(m(100, "chf")), "CHF 1.00");
        assert_eq!(money_opt(&None), "—");
    }

    #[test]
    fn costs_round_to_cents_and_unit_prices_stay_exact() {
        // $1833.0989 of cost is shown as every other total: rounded to cents.
        assert_eq!(nano_usd(1_833_098_900_000), "$1,833.10");
        assert_eq!(exact_money("0.0045", "usd"), "$0.0045");
        assert_eq!(exact_money("8", "usd"), "$8.00");
        assert_eq!(exact_money("8.00", "USD"), "$8.00");
        assert_eq!(exact_money("1200.50", "eur"), "€1,200.50");
        assert_eq!(exact_money("0.0000045000", "usd"), "$0.0000045");
        assert_eq!(exact_money("n/a", "usd"), "n/a USD");
        assert_eq!(cents_usd("1234.5"), "$12.345");
        assert_eq!(cents_usd("7"), "$0.07");
        assert_eq!(exact_money_opt(&None, "usd"), "—");
        assert_eq!(money_major(2000.0, "usd"), "$2,000");
        assert_eq!(money_major(12.5, "usd"), "$12.50");
        assert_eq!(money_major(-3.0, "eur"), "-€3");
    }

    #[test]
    fn numbers_percentages_and_quantities() {
        assert_eq!(count(192_358), "192,358");
        assert_eq!(count(0), "0");
        assert_eq!(count(-1_234_567i64), "-1,234,567");
        assert_eq!(count(12.6), "13");
        assert_eq!(percent(98.63), "98.6 %");
        assert_eq!(percent(-1818.5), "-1,818.5 %");
        assert_eq!(percent_with(99.951, 2), "99.95 %");
        assert_eq!(ratio(0.75, 1), "75.0 %");
        assert_eq!(percent(f64::NAN), "—");
        assert_eq!(
            quantity(1_405.816_144_566_307_7, "credits"),
            "1,405.8 credits"
        );
        assert_eq!(quantity(12.0, "calls"), "12 calls");
        assert_eq!(number(0.04, 1), "0");
        assert_eq!(times(1.36), "1.36×");
    }

    #[test]
    fn ties_round_away_from_zero_as_the_script_does() {
        assert_eq!(percent(0.25), "0.3 %");
        assert_eq!(percent(-0.25), "-0.3 %");
        assert_eq!(percent(-0.04), "0.0 %");
        assert_eq!(count(2.5), "3");
    }

    #[test]
    fn changes_are_signed() {
        assert_eq!(change(252.6), "+252.6 %");
        assert_eq!(change(-3.0), "-3.0 %");
        assert_eq!(change(0.0), "+0.0 %");
        assert_eq!(change_pp(1.44), "+1.4 pp");
        assert_eq!(change_pp(-0.5), "-0.5 pp");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration_ms(3.44), "3.4 ms");
        assert_eq!(duration_ms(850.0), "850 ms");
        assert_eq!(duration_ms(3_750.0), "3.75 s");
        assert_eq!(duration_ms(12_500.0), "12.5 s");
        assert_eq!(duration_ms(240_000.0), "4 min");
        assert_eq!(duration_opt(&None), "—");
        assert_eq!(age(42), "42 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(7_200), "2 h");
        assert_eq!(age(3 * 86_400), "3 d");
        assert_eq!(interval_secs(30.0), "30 s");
        assert_eq!(interval_secs(300.0), "5 min");
        assert_eq!(interval_secs(86_400.0), "24 h");
        assert_eq!(interval_secs(0.5), "0.5 s");
    }

    #[test]
    fn one_time_format_with_the_zone() {
        let ms = 1_796_541_423_250; // 2026-12-06T07:17:03.250Z
        assert_eq!(time(ms), "2026-12-06 07:17 UTC");
        assert_eq!(day(ms), "2026-12-06");
        assert_eq!(iso(ms), "2026-12-06T07:17:03.25Z");
        assert_eq!(time_of_iso("2026-12-06T07:17:03Z"), "2026-12-06 07:17 UTC");
        assert_eq!(time_of_iso("yesterday"), "—");
        assert_eq!(time_opt(&None), "—");
        assert_eq!(ago(ms + 240_000, ms), "4 min ago");
    }

    #[test]
    fn figures_by_kind_with_points_for_rates() {
        use crate::overview::FigureValue::{Money as M, Number as N};
        assert_eq!(figure("money", &M(usd(789_417))), "$7,894.17");
        assert_eq!(figure("percent", &N(98.63)), "98.6 %");
        assert_eq!(figure("count", &N(192_358.0)), "192,358");
        let (text, sign) =
            figure_change("percent", Some(&N(2.01)), Some(&N(0.57)), Some(252.6)).unwrap();
        assert_eq!((text.as_str(), sign), ("+1.4 pp", 1.0));
        let (text, sign) = figure_change("money", None, None, Some(-3.04)).unwrap();
        assert_eq!((text.as_str(), sign), ("-3.0 %", -1.0));
        assert_eq!(
            figure_change("count", None, None, Some(0.01)).unwrap().1,
            0.0
        );
        assert!(figure_change("percent", Some(&N(1.0)), None, None).is_none());
    }
}
