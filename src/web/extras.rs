//! The "Provider extras" tables of a monitor page: the latest successful extras collection's
//! snapshot, split by provider so the template shows each provider's own tables, with how
//! the last run went. Read through `health::extras::store`; nothing here collects anything.

use super::format::{self, ABSENT};
use crate::app::AppState;
use crate::health::extras::store::{self as extras, Run};
use crate::health::extras::{Snapshot, digitalocean, gcp, messaging, n8n, retell, supabase};
use crate::health::store::StoredMonitor;
use crate::http::ApiError;

/// What the page shows of a monitor's extras.
pub struct ExtrasView {
    /// "every 15 min", or "off".
    pub cadence: String,
    pub last_run: Option<Run>,
    pub collected_at: Option<String>,
    pub n8n: Option<n8n::Snapshot>,
    /// ("Twilio" or "Vonage", the snapshot).
    pub messaging: Option<(&'static str, messaging::Snapshot)>,
    pub retell: Option<retell::Snapshot>,
    pub digitalocean: Option<digitalocean::Snapshot>,
    pub supabase: Option<supabase::Snapshot>,
    pub gcp: Option<gcp::Snapshot>,
}

impl ExtrasView {
    /// The view for a stored provider monitor with extras; `None` for every other kind.
    pub async fn load(state: &AppState, m: &StoredMonitor) -> Result<Option<Self>, ApiError> {
        let has = m
            .monitor
            .kind
            .provider()
            .is_some_and(crate::health::extras::has_extras);
        if !has {
            return Ok(None);
        }
        let interval = m.monitor.extras_interval;
        let latest = extras::latest(&state.store, m.id, interval).await?;
        let mut view = ExtrasView {
            cadence: interval
                .map(|d| format!("every {}", format::interval_secs(d.as_secs_f64())))
                .unwrap_or_else(|| "off".into()),
            last_run: latest.last_run,
            collected_at: latest.collected_at,
            n8n: None,
            messaging: None,
            retell: None,
            digitalocean: None,
            supabase: None,
            gcp: None,
        };
        match latest.snapshot {
            Some(Snapshot::N8n(s)) => view.n8n = Some(s),
            Some(Snapshot::Twilio(s)) => view.messaging = Some(("Twilio", s)),
            Some(Snapshot::Vonage(s)) => view.messaging = Some(("Vonage", s)),
            Some(Snapshot::Retell(s)) => view.retell = Some(s),
            Some(Snapshot::DigitalOcean(s)) => view.digitalocean = Some(s),
            Some(Snapshot::Supabase(s)) => view.supabase = Some(s),
            Some(Snapshot::Gcp(s)) => view.gcp = Some(s),
            None => {}
        }
        Ok(Some(view))
    }
}

/// A fraction 0–1 as "75.0 %", or "—".
pub fn rate(v: &Option<f64>) -> String {
    v.map_or_else(|| ABSENT.into(), |v| format::ratio(v, 1))
}

/// A Cloud Monitoring value: a `…/utilization` fraction as a percentage, anything else as a
/// number with up to four decimals; "—" without one.
pub fn gcp_value(metric: &str, v: &Option<f64>) -> String {
    match v {
        None => ABSENT.into(),
        Some(v) if metric.ends_with("utilization") => format::ratio(*v, 1),
        Some(v) => format::number(*v, 4),
    }
}

/// A percentage 0–100 as "25.0 %", or "—".
pub fn percent(v: &Option<f64>) -> String {
    v.map_or_else(|| ABSENT.into(), format::percent)
}

/// Milliseconds, as seconds past a second: "850 ms", "3.75 s".
pub fn duration(v: &Option<f64>) -> String {
    format::duration_opt(v)
}

/// A decimal string in its currency, exact (provider balances and unit prices), or "—".
pub fn money(v: &Option<String>, currency: &str) -> String {
    format::exact_money_opt(v, currency)
}

/// Bytes in GB (10⁹), one decimal at most.
pub fn gb(bytes: &u64) -> String {
    format::quantity(*bytes as f64 / 1e9, "GB")
}

/// Mbps, two decimals at most, or "—".
pub fn mbps(v: &Option<f64>) -> String {
    v.map_or_else(
        || ABSENT.into(),
        |v| format!("{} Mbps", format::number(v, 2)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_formatted_with_their_units() {
        assert_eq!(rate(&Some(0.75)), "75.0 %");
        assert_eq!(percent(&Some(25.0)), "25.0 %");
        assert_eq!(rate(&None), "—");
        assert_eq!(duration(&Some(3_750.0)), "3.75 s");
        assert_eq!(duration(&Some(850.0)), "850 ms");
        assert_eq!(duration(&Some(12_500.0)), "12.5 s");
        assert_eq!(money(&Some("0.0075".into()), "USD"), "$0.0075");
        assert_eq!(gb(&8_000_000_000), "8 GB");
        assert_eq!(mbps(&Some(1.5)), "1.5 Mbps");
    }
}
