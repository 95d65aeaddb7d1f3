//! Provider quotas and when they run out. A quota is what is left of something a provider
//! meters — credits, a balance, a resource pack, a monthly character allowance — read from a
//! provider check's readings. The forecast fits a straight line (least squares) through the
//! remaining amount over a recent window and extends it to zero: "at the current rate, this
//! runs out on …". A flat or rising series has no date, and a refill (remaining jumps up) starts
//! the fit again from there, since consumption before a top-up says little about after it.

use serde::Serialize;
use utoipa::ToSchema;

use super::providers::Provider;
use crate::args;
use crate::store::Store;
use crate::usage::quota::rfc3339 as iso;

/// How a quota's remaining amount is read from a check's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDef {
    pub name: &'static str,
    /// The reading that holds what is left, or (with `used`) the limit.
    pub reading: &'static str,
    /// When set, remaining = `reading` − `used` (an allowance and its use).
    pub used: Option<&'static str>,
    /// A reading with the total, for a percentage.
    pub total: Option<&'static str>,
    pub unit: &'static str,
}

const fn left(name: &'static str, reading: &'static str, unit: &'static str) -> QuotaDef {
    QuotaDef {
        name,
        reading,
        used: None,
        total: None,
        unit,
    }
}

/// The quotas each provider's check reads.
pub fn quotas(provider: Provider) -> &'static [QuotaDef] {
    match provider {
        Provider::Luma | Provider::Bfl | Provider::PiApi => {
            const Q: &[QuotaDef] = &[left("credits", "credits", "credits")];
            Q
        }
        Provider::Twilio => {
            const Q: &[QuotaDef] = &[left("balance", "balance", "USD")];
            Q
        }
        Provider::Vonage => {
            const Q: &[QuotaDef] = &[left("balance", "balance_eur", "EUR")];
            Q
        }
        Provider::Kling => {
            const Q: &[QuotaDef] = &[QuotaDef {
                name: "resource packs",
                reading: "pack_remaining",
                used: None,
                total: Some("pack_total"),
                unit: "units",
            }];
            Q
        }
        Provider::ElevenLabs => {
            const Q: &[QuotaDef] = &[QuotaDef {
                name: "characters",
                reading: "characters_limit",
                used: Some("characters_used"),
                total: Some("characters_limit"),
                unit: "characters",
            }];
            Q
        }
        Provider::DigitalOcean => {
            const Q: &[QuotaDef] = &[QuotaDef {
                name: "API requests this hour",
                reading: "ratelimit_remaining",
                used: None,
                total: Some("ratelimit_limit"),
                unit: "requests",
            }];
            Q
        }
        Provider::Stripe
        | Provider::N8n
        | Provider::Retell
        | Provider::Supabase
        | Provider::OpenAi
        | Provider::Gcp => &[],
    }
}

impl QuotaDef {
    /// (remaining, total) from one check's readings; `None` when a reading is missing.
    pub fn read(&self, readings: &[(String, f64)]) -> Option<(f64, Option<f64>)> {
        let get = |name: &str| readings.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let base = get(self.reading)?;
        let remaining = match self.used {
            Some(used) => base - get(used)?,
            None => base,
        };
        Some((remaining, self.total.and_then(get)))
    }
}

/// A quota now and where it is heading.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaForecast {
    pub name: String,
    pub unit: String,
    pub remaining: f64,
    pub total: Option<f64>,
    /// Share used, 0–100, where a total is known.
    pub used_percent: Option<f64>,
    /// Consumption per day at the current rate (positive while it is being used up).
    pub per_day: Option<f64>,
    /// When it reaches zero at the current rate (RFC 3339); `null` when not falling.
    pub runs_out: Option<String>,
}

const DAY_MS: f64 = 86_400_000.0;

/// When a series of (UTC ms, remaining) points reaches zero at its current rate: the least-
/// squares line through the points since the last refill. Returns (per-day consumption, the
/// time in UTC ms), or `None` with fewer than two points, a flat or rising line, or a span
/// shorter than a minute (too little to extrapolate from).
pub fn runs_out(points: &[(i64, f64)]) -> Option<(f64, i64)> {
    // Since the last refill: the last point after which the remaining amount rose by more
    // than 5 % (a top-up), so a refund of a few cents does not throw the history away.
    let start = points
        .windows(2)
        .rposition(|w| w[1].1 - w[0].1 > 0.05 * w[0].1.abs().max(1.0))
        .map_or(0, |i| i + 1);
    let points = &points[start..];
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 2 || last.0 - first.0 < 60_000 {
        return None;
    }
    let n = points.len() as f64;
    // Centred on the first point, in days, to keep the sums well conditioned.
    let xs: Vec<f64> = points
        .iter()
        .map(|(t, _)| (t - first.0) as f64 / DAY_MS)
        .collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, (_, y)) in xs.iter().zip(points) {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    if slope >= 0.0 {
        return None;
    }
    let intercept = mean_y - slope * mean_x;
    let zero_days = -intercept / slope;
    let at = first.0 as f64 + zero_days * DAY_MS;
    // Beyond ten years a date says nothing useful (and past year 9999 cannot be written).
    let horizon = last.0 as f64 + 3650.0 * DAY_MS;
    if !at.is_finite() || !slope.is_finite() || at > horizon {
        return None;
    }
    Some((-slope, at.max(last.0 as f64) as i64))
}

/// One figure's history: `[time (RFC 3339), value]` pairs, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadingSeries {
    pub name: String,
    #[schema(value_type = Vec<(String, f64)>)]
    pub points: Vec<(String, f64)>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readings {
    pub series: Vec<ReadingSeries>,
    /// Each quota the provider meters: what is left now, the rate it is used at, and when it
    /// runs out at that rate.
    pub quotas: Vec<QuotaForecast>,
}

/// Most points a series of [`readings`] holds, whatever the window: a monitor checked every
/// minute has 43,200 readings of each figure in 30 days, more than a chart can show or a
/// forecast needs.
pub const MAX_POINTS: i64 = 720;

/// A monitor's readings over the last `days` days, grouped by name, with each of its kind's
/// quotas forecast from them. Each series holds at most [`MAX_POINTS`]: the last reading in each
/// equal slice of the window (the database picks them, so a long window is never read whole).
pub async fn readings(
    store: &Store,
    id: i64,
    kind: &str,
    days: i64,
    now: i64,
) -> Result<Readings, super::HealthError> {
    let slice = (days * 86_400_000 / MAX_POINTS).max(1);
    // The window starts on a slice's edge, so the slice holding `now` is the last of at most
    // MAX_POINTS rather than one more.
    let from = ((now - days * 86_400_000).div_euclid(slice) + 1) * slice;
    // A check writes all its figures at its own time, so the last reading of each slice of
    // every figure comes from the same check, and a quota made of two figures (an allowance
    // and its use) still finds both at one time.
    let rows: Vec<(String, i64, f64)> = store
        .fetch_all(
            "SELECT r.name, r.at, r.value FROM provider_readings r \
             JOIN (SELECT name, MAX(at) AS at FROM provider_readings \
             WHERE monitor_id = $1 AND at >= $2 GROUP BY name, at / $3) last \
             ON r.name = last.name AND r.at = last.at \
             WHERE r.monitor_id = $1 ORDER BY r.name, r.at",
            args![id, from, slice],
        )
        .await?;
    let mut series: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
    for (name, at, value) in rows {
        match series.last_mut() {
            Some((last, points)) if *last == name => points.push((at, value)),
            _ => series.push((name, vec![(at, value)])),
        }
    }
    let quotas = Provider::parse(kind)
        .map(quotas)
        .unwrap_or_default()
        .iter()
        .filter_map(|def| forecast_of(def, &series))
        .collect();
    Ok(Readings {
        series: series
            .into_iter()
            .map(|(name, points)| ReadingSeries {
                name,
                points: points.into_iter().map(|(at, v)| (iso(at), v)).collect(),
            })
            .collect(),
        quotas,
    })
}

/// A quota's forecast from the readings' series: its remaining amount at each check where all
/// its readings were taken.
fn forecast_of(def: &QuotaDef, series: &[(String, Vec<(i64, f64)>)]) -> Option<QuotaForecast> {
    let find = |name: &str| series.iter().find(|(n, _)| n == name).map(|(_, p)| p);
    let base = find(def.reading)?;
    let used = def.used.and_then(find);
    let total = def.total.and_then(find);
    let value_at = |points: &Vec<(i64, f64)>, at: i64| {
        points
            .binary_search_by_key(&at, |(t, _)| *t)
            .ok()
            .map(|i| points[i].1)
    };
    let remaining: Vec<(i64, f64)> = base
        .iter()
        .filter_map(|(at, v)| match (def.used, used) {
            (Some(_), Some(used)) => value_at(used, *at).map(|u| (*at, v - u)),
            (Some(_), None) => None,
            (None, _) => Some((*at, *v)),
        })
        .collect();
    let &(last_at, now_left) = remaining.last()?;
    let total_now = total.and_then(|t| value_at(t, last_at));
    let outlook = runs_out(&remaining);
    Some(QuotaForecast {
        name: def.name.to_string(),
        unit: def.unit.to_string(),
        remaining: now_left,
        total: total_now,
        used_percent: total_now
            .filter(|t| *t > 0.0)
            .map(|t| ((t - now_left) / t * 1000.0).round() / 10.0),
        per_day: outlook.map(|(rate, _)| rate),
        runs_out: outlook.map(|(_, at)| iso(at)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_steady_burn_runs_out_where_the_line_meets_zero() {
        // 1,000 credits, 100 a day, sampled every 6 hours for 3 days: 700 left, 7 days to go.
        let t0 = 1_000 * DAY;
        let points: Vec<(i64, f64)> = (0..=12)
            .map(|i| (t0 + i * DAY / 4, 1000.0 - 25.0 * i as f64))
            .collect();
        let (per_day, at) = runs_out(&points).expect("falling");
        assert!((per_day - 100.0).abs() < 1e-9, "{per_day}");
        assert!((at - (t0 + 10 * DAY)).abs() <= 1, "{}", at - t0);
    }

    #[test]
    fn refills_restart_the_fit_and_flat_or_short_series_have_no_date() {
        let t0 = 2_000 * DAY;
        // Burnt 50 a day, topped up on day 2, then 200 a day from 1,000.
        let points = vec![
            (t0, 300.0),
            (t0 + DAY, 250.0),
            (t0 + 2 * DAY, 1000.0),
            (t0 + 3 * DAY, 800.0),
            (t0 + 4 * DAY, 600.0),
        ];
        let (per_day, at) = runs_out(&points).expect("falling");
        assert!((per_day - 200.0).abs() < 1e-9);
        assert!((at - (t0 + 7 * DAY)).abs() <= 1, "{}", at - t0);
        assert_eq!(runs_out(&[(t0, 5.0), (t0 + DAY, 5.0)]), None, "flat");
        // A small uptick (a refund) is not a top-up: the fit keeps the whole burn.
        let (per_day, _) = runs_out(&[
            (t0, 1000.0),
            (t0 + DAY, 900.0),
            (t0 + 2 * DAY, 905.0),
            (t0 + 3 * DAY, 700.0),
        ])
        .expect("falling");
        assert!(
            (per_day - 89.5).abs() < 1e-9,
            "the line through all four, not 205 from the last two: {per_day}"
        );
        assert_eq!(runs_out(&[(t0, 5.0)]), None, "one point");
        assert_eq!(
            runs_out(&[(t0, 5.0), (t0 + 1000, 4.0)]),
            None,
            "a second apart"
        );
        // Already at zero: now, not in the past.
        let (_, at) =
            runs_out(&[(t0, 10.0), (t0 + DAY, 0.0), (t0 + 2 * DAY, 0.0)]).expect("falling");
        assert_eq!(at, t0 + 2 * DAY);
    }

    #[test]
    fn quotas_read_what_is_left_and_the_total() {
        let eleven = quotas(Provider::ElevenLabs)[0];
        let r = vec![
            ("characters_used".to_string(), 61_000.0),
            ("characters_limit".to_string(), 100_000.0),
        ];
        assert_eq!(eleven.read(&r), Some((39_000.0, Some(100_000.0))));
        assert_eq!(eleven.read(&r[..1]), None);
        let luma = quotas(Provider::Luma)[0];
        assert_eq!(luma.read(&[("credits".into(), 12.5)]), Some((12.5, None)));
    }
}
