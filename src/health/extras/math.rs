//! The arithmetic of provider extras, kept apart from HTTP so each piece is tested with numbers
//! that would catch an off-by-one or a unit error: decimal money read exactly (providers send
//! prices as strings, Twilio's negative), CPU utilisation from cumulative per-mode seconds,
//! durations between RFC 3339 / RFC 2822 times, nearest-rank percentiles and success rates.
//! Nothing here does I/O.

use std::collections::BTreeMap;

/// Money in millionths of a currency unit: enough for Twilio's five-decimal prices, exact
/// under addition (a float sum of thousands of prices is not).
pub type Micros = i64;

/// Parses a decimal such as `"-0.00750"`, `"12"`, `"0.0333"` or `"1e-3"`-free JSON number text
/// into millionths, rounding past the sixth decimal half away from zero. `None` when it is
/// not a plain decimal.
pub fn parse_micros(text: &str) -> Option<Micros> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut micros = whole.checked_mul(1_000_000)?;
    let mut scale = 100_000;
    for (i, b) in fraction.bytes().enumerate() {
        let d = i64::from(b - b'0');
        if i < 6 {
            micros = micros.checked_add(d * scale)?;
            scale /= 10;
        } else {
            if d >= 5 {
                micros = micros.checked_add(1)?;
            }
            break;
        }
    }
    Some(if negative { -micros } else { micros })
}

/// Millionths from a JSON value that is a number or a numeric string.
pub fn micros_of(v: &serde_json::Value) -> Option<Micros> {
    match v {
        serde_json::Value::Number(n) => parse_micros(&n.to_string()),
        serde_json::Value::String(s) => parse_micros(s),
        _ => None,
    }
}

/// Millionths as a decimal string with trailing zeros dropped: 7_500 → "0.0075", 42_170_000 →
/// "42.17", -1_000_000 → "-1".
pub fn decimal(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, fraction) = (abs / 1_000_000, abs % 1_000_000);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = format!("{fraction:06}");
    format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
}

/// Millionths as a float of currency units, for a reading.
pub fn units(micros: Micros) -> f64 {
    micros as f64 / 1_000_000.0
}

/// `part / whole`, or `None` when there is nothing to divide by.
pub fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// CPU utilisation in percent from DigitalOcean's `cpu` metric: for each mode (idle, user,
/// system, iowait, …) a series of cumulative CPU-seconds. Utilisation over the window is
/// 1 − Δidle / Δtotal, where each Δ is the mode's last value minus its first. A mode whose
/// counter went backwards (a reboot reset it) spoils the window, so `None`; so does a window
/// without time passing or without an idle series.
pub fn cpu_percent(modes: &BTreeMap<String, Vec<(i64, f64)>>) -> Option<f64> {
    let mut total = 0.0;
    let mut idle = None;
    for (mode, series) in modes {
        let (first, last) = (series.first()?, series.last()?);
        let delta = last.1 - first.1;
        if delta < 0.0 {
            return None;
        }
        total += delta;
        if mode == "idle" {
            idle = Some(delta);
        }
    }
    let idle = idle?;
    if total <= 0.0 {
        return None;
    }
    Some((1.0 - idle / total) * 100.0)
}

/// Share of `used` in `size` as a percentage; `None` for a zero or negative size.
pub fn percent_used(used: f64, size: f64) -> Option<f64> {
    (size > 0.0).then(|| used / size * 100.0)
}

/// Milliseconds between two RFC 3339 times (`stop − start`); `None` when either does not parse
/// or the stop is before the start (a clock step, or a bad record).
pub fn rfc3339_span_ms(start: &str, stop: &str) -> Option<i64> {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let d = parse(stop)? - parse(start)?;
    let ms = i64::try_from(d.whole_milliseconds()).ok()?;
    (ms >= 0).then_some(ms)
}

/// An RFC 3339 time as UTC ms.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// An RFC 2822 time (Twilio's `date_sent`, `date_updated`) as UTC ms.
pub fn rfc2822_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Nearest-rank percentile (`q` in 0..=1) of `values`, which it sorts: the smallest value with
/// at least `q` of the values at or below it. `None` when empty.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil().max(1.0) as usize;
    values.get(rank.min(values.len()) - 1).copied()
}

/// The arithmetic mean, `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Whole minutes a call is billed for when a provider rounds every call up to the minute
/// (Twilio): 1 s → 1, 60 s → 1, 61 s → 2, 0 s → 0.
pub fn billed_minutes(duration_s: u64) -> u64 {
    duration_s.div_ceil(60)
}

/// A provider id made safe for a reading name: letters, digits, `-` and `_` kept, anything
/// else `_`, at most 64 characters.
pub fn name_part(id: &str) -> String {
    id.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_exactly_including_negative_and_string_prices() {
        assert_eq!(parse_micros("-0.00750"), Some(-7_500));
        assert_eq!(parse_micros("0.0333"), Some(33_300));
        assert_eq!(parse_micros("12"), Some(12_000_000));
        assert_eq!(parse_micros(" 18.5 "), Some(18_500_000));
        assert_eq!(parse_micros(".5"), Some(500_000));
        assert_eq!(
            parse_micros("0.0000005"),
            Some(1),
            "rounds the seventh decimal"
        );
        assert_eq!(parse_micros("0.0000004"), Some(0));
        for bad in ["", "-", ".", "1.2.3", "abc", "1e-3", "0x10", "--1"] {
            assert_eq!(parse_micros(bad), None, "{bad:?}");
        }
        // Summed exactly: a float sum of 0.1 ten times is not 1.
        let total: Micros = (0..10).map(|_| parse_micros("0.1").unwrap_or(0)).sum();
        assert_eq!(total, 1_000_000);
        assert_eq!(micros_of(&serde_json::json!(0.0075)), Some(7_500));
        assert_eq!(micros_of(&serde_json::json!("-0.0079")), Some(-7_900));
        assert_eq!(micros_of(&serde_json::json!(null)), None);
    }

    #[test]
    fn decimals_print_without_trailing_zeros() {
        assert_eq!(decimal(7_500), "0.0075");
        assert_eq!(decimal(42_170_000), "42.17");
        assert_eq!(decimal(-1_000_000), "-1");
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(-5), "-0.000005");
        assert_eq!(units(1_250_000), 1.25);
    }

    #[test]
    fn cpu_is_one_minus_idle_share_of_the_deltas() {
        // Two vCPUs over 60 s = 120 CPU-seconds: 90 idle, 20 user, 10 system → 25 % busy.
        // The counters start far from zero, so using absolute values instead of deltas
        // would give a very different figure.
        let modes: BTreeMap<String, Vec<(i64, f64)>> = [
            ("idle", 100_000.0, 100_090.0),
            ("user", 5_000.0, 5_020.0),
            ("system", 2_000.0, 2_010.0),
        ]
        .into_iter()
        .map(|(m, a, b)| (m.to_string(), vec![(0, a), (30, (a + b) / 2.0), (60, b)]))
        .collect();
        let cpu = cpu_percent(&modes).expect("a figure");
        assert!((cpu - 25.0).abs() < 1e-9, "{cpu}");
        // A counter reset (reboot) spoils the window rather than giving a negative share.
        let mut reset = modes.clone();
        reset.insert("user".into(), vec![(0, 5_000.0), (60, 3.0)]);
        assert_eq!(cpu_percent(&reset), None);
        // No time passed, or no idle series: no figure.
        let flat: BTreeMap<String, Vec<(i64, f64)>> =
            [("idle".to_string(), vec![(0, 5.0), (60, 5.0)])].into();
        assert_eq!(cpu_percent(&flat), None);
        let no_idle: BTreeMap<String, Vec<(i64, f64)>> =
            [("user".to_string(), vec![(0, 5.0), (60, 9.0)])].into();
        assert_eq!(cpu_percent(&no_idle), None);
        // Fully idle is 0 %, fully busy 100 %.
        let idle: BTreeMap<String, Vec<(i64, f64)>> = [
            ("idle".to_string(), vec![(0, 0.0), (60, 60.0)]),
            ("user".to_string(), vec![(0, 7.0), (60, 7.0)]),
        ]
        .into();
        assert_eq!(cpu_percent(&idle), Some(0.0));
    }

    #[test]
    fn spans_are_stop_minus_start_in_ms() {
        assert_eq!(
            rfc3339_span_ms("2026-11-20T10:00:00.000Z", "2026-11-20T10:00:01.250Z"),
            Some(1_250)
        );
        // Across an offset: 10:00+01:00 is 09:00Z.
        assert_eq!(
            rfc3339_span_ms("2026-11-20T09:00:00Z", "2026-11-20T10:00:30+01:00"),
            Some(30_000)
        );
        assert_eq!(
            rfc3339_span_ms("2026-11-20T10:00:01Z", "2026-11-20T10:00:00Z"),
            None
        );
        assert_eq!(rfc3339_span_ms("x", "2026-11-20T10:00:00Z"), None);
        assert_eq!(
            rfc2822_ms("Fri, 20 Nov 2026 12:00:00 +0000"),
            rfc3339_ms("2026-11-20T12:00:00Z")
        );
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile(&mut v, 0.95), Some(95.0));
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut v, 1.0), Some(100.0));
        assert_eq!(percentile(&mut v, 0.0), Some(1.0));
        let mut few = vec![300.0, 100.0, 200.0];
        assert_eq!(percentile(&mut few, 0.5), Some(200.0));
        assert_eq!(percentile(&mut few, 0.9), Some(300.0));
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn rates_minutes_and_names() {
        assert_eq!(rate(3, 4), Some(0.75));
        assert_eq!(rate(0, 0), None);
        assert_eq!(billed_minutes(0), 0);
        assert_eq!(billed_minutes(1), 1);
        assert_eq!(billed_minutes(60), 1);
        assert_eq!(billed_minutes(61), 2);
        assert_eq!(percent_used(25.0, 100.0), Some(25.0));
        assert_eq!(percent_used(1.0, 0.0), None);
        assert_eq!(name_part("wf.1/../x y"), "wf_1____x_y");
        assert_eq!(name_part(&"a".repeat(100)).len(), 64);
    }
}
