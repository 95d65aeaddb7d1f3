//! The Overview's first answers: is anything broken, and who is at risk. The status line comes
//! from the health grid in memory; open alerts by severity, customers near or over quota and
//! customers with failed payments each come from one small indexed read of the module that
//! owns the table. Also the Overview's period: a length ending now (`30d`) or a custom range of
//! whole UTC days (`from`/`to`), parsed once for the page and the JSON route.
//!
//! Nothing here computes a headline figure (that is `overview()`), and nothing here writes.

use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, Time};

use crate::alerts::summary::{self, OpenAlerts};
use crate::app::AppState;
use crate::health::grid::Summary;
use crate::http::ApiError;
use crate::revenue::drill::{self, FailedCustomer};
use crate::usage::quota::{self, AtRisk};

/// Longest custom range, as for `period`.
const MAX_DAYS: i64 = 1095;
/// How many of each list the Overview shows; each list says how many there are in all.
pub const LISTED: i64 = 5;

/// The period the Overview covers: `secs` ending at `end`, as `overview()` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub end: OffsetDateTime,
    pub secs: i64,
    /// The custom range as given, when there is one.
    pub range: Option<(Date, Date)>,
}

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// A date as the range fields show it: `2026-12-06`.
pub fn show_date(d: &Date) -> String {
    d.format(DAY_FORMAT).unwrap_or_default()
}

fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// Why a custom range was refused; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange(pub String);

/// Reads `from` and `to` (`YYYY-MM-DD`, both days included, UTC) into a window. `Ok(None)`
/// when neither is given. A range ending today runs until `now`, so today counts so far.
pub fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    now: OffsetDateTime,
) -> Result<Option<Window>, BadRange> {
    let (from, to) = match (given(from), given(to)) {
        (None, None) => return Ok(None),
        (Some(f), Some(t)) => (f, t),
        _ => {
            return Err(BadRange(
                "from and to go together: give both days as YYYY-MM-DD".into(),
            ));
        }
    };
    let day = |name: &str, text: &str| {
        Date::parse(text, DAY_FORMAT)
            .map_err(|_| BadRange(format!("{name}: {text:?} is not a day as YYYY-MM-DD")))
    };
    let (first, last) = (day("from", from)?, day("to", to)?);
    let today = now.date();
    if last < first {
        return Err(BadRange(format!(
            "to: {} is before from ({})",
            show_date(&last),
            show_date(&first)
        )));
    }
    if last > today {
        return Err(BadRange(format!(
            "to: {} is in the future (today is {} UTC)",
            show_date(&last),
            show_date(&today)
        )));
    }
    let days = (last - first).whole_days() + 1;
    if days > MAX_DAYS {
        return Err(BadRange(format!(
            "from, to: {days} days is longer than {MAX_DAYS}"
        )));
    }
    let start = first.with_time(Time::MIDNIGHT).assume_utc();
    let end = if last == today {
        now
    } else {
        (last + Duration::days(1))
            .with_time(Time::MIDNIGHT)
            .assume_utc()
    };
    Ok(Some(Window {
        end,
        secs: (end - start).whole_seconds().max(1),
        range: Some((first, last)),
    }))
}

/// The period of the Overview page or `GET /api/v1/metrics/overview`: `from`/`to` when given
/// (then `period` must be absent or `custom`), else `period` (default 30 days) ending now.
pub fn window(
    period: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now: OffsetDateTime,
) -> Result<Window, ApiError> {
    let period = given(period);
    if let Some(w) = parse_range(from, to, now).map_err(|e| ApiError::BadRequest(e.0))? {
        if period.is_some_and(|p| p != "custom") {
            return Err(ApiError::BadRequest(
                "period: give either period or from and to, not both".into(),
            ));
        }
        return Ok(w);
    }
    let period = match period {
        None => "30d",
        Some("custom") => {
            return Err(ApiError::BadRequest(
                "from, to: a custom period needs both days as YYYY-MM-DD".into(),
            ));
        }
        Some(p) => p,
    };
    let secs = super::parse_period(period).map_err(ApiError::Invalid)?;
    Ok(Window {
        end: now,
        secs,
        range: None,
    })
}

/// What the Overview shows before any figure.
#[derive(Debug, Clone, Default)]
pub struct Triage {
    pub status: Summary,
    pub alerts: OpenAlerts,
    /// Customers in warning or worse this month, worst first, and how many in all.
    pub quota: Vec<AtRisk>,
    pub quota_total: i64,
    /// Customers with failed payments in the period, latest first, and how many in all.
    pub failed: Vec<FailedCustomer>,
    pub failed_total: i64,
}

/// Reads the triage for the period `[from, to)` (UTC ms; failed payments only).
pub async fn triage(state: &AppState, from: i64, to: i64) -> Result<Triage, ApiError> {
    let store = &state.store;
    let (status, alerts, quota, quota_total, (failed, failed_total)) = tokio::try_join!(
        async { Ok::<_, ApiError>(state.health.summary(store).await?) },
        async { Ok(summary::open(store, LISTED).await?) },
        async { Ok(quota::at_risk(store, LISTED).await?) },
        async { Ok(quota::at_risk_count(store).await?) },
        async { Ok(drill::failed_customers(store, from, to, LISTED).await?) },
    )?;
    Ok(Triage {
        status,
        alerts,
        quota,
        quota_total,
        failed,
        failed_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 07:30 UTC);

    #[test]
    fn ranges_cover_whole_days_and_today_so_far() {
        let w = parse_range(Some("2026-11-01"), Some("2026-11-30"), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(w.end, datetime!(2026-12-01 0:00 UTC));
        assert_eq!(w.secs, 30 * 86_400);
        let w = parse_range(Some("2026-12-01"), Some(" 2026-12-06 "), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(w.end, NOW);
        assert_eq!(w.secs, 5 * 86_400 + 7 * 3_600 + 30 * 60);
        // One day.
        let w = parse_range(Some("2026-12-05"), Some("2026-12-05"), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(w.secs, 86_400);
        assert_eq!(parse_range(None, Some(""), NOW), Ok(None));
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        for (from, to, says) in [
            (Some("2026-11-01"), None, "go together"),
            (None, Some("2026-11-01"), "go together"),
            (Some("yesterday"), Some("2026-11-01"), "from:"),
            (Some("2026-11-01"), Some("2026-13-01"), "to:"),
            (Some("2026-11-02"), Some("2026-11-01"), "before from"),
            (Some("2026-11-01"), Some("2026-12-07"), "future"),
            (Some("2020-01-01"), Some("2026-12-01"), "longer than"),
        ] {
            let e = parse_range(from, to, NOW).unwrap_err();
            assert!(e.0.contains(says), "{from:?} {to:?}: {}", e.0);
        }
    }

    #[test]
    fn period_or_range_not_both() {
        let w = window(None, None, None, NOW).unwrap();
        assert_eq!((w.end, w.secs), (NOW, 30 * 86_400));
        let w = window(Some("7d"), Some(""), Some(""), NOW).unwrap();
        assert_eq!(w.secs, 7 * 86_400);
        let custom = window(Some("custom"), Some("2026-11-01"), Some("2026-11-02"), NOW).unwrap();
        assert_eq!(custom.secs, 2 * 86_400);
        assert!(matches!(
            window(Some("7d"), Some("2026-11-01"), Some("2026-11-02"), NOW),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            window(Some("custom"), None, None, NOW),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            window(Some("7x"), None, None, NOW),
            Err(ApiError::Invalid(_))
        ));
    }
}
