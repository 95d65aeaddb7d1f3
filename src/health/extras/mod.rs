//! Provider extras: the slower, deeper collection a provider monitor makes besides its cheap
//! health read — n8n workflows and their execution success, Twilio/Vonage delivery and call
//! rates with latency and unit costs, Retell call success, latency percentiles, cost and
//! disconnection reasons, DigitalOcean droplets with CPU/memory/disk/bandwidth and the
//! balance, Supabase service health, API counts, disk and `pg_stat_*` figures; Twilio's
//! WhatsApp traffic per sender; Google Cloud Monitoring time series (the latest value of each
//! series of a few metric types).
//!
//! A collection runs per monitor on its own cadence (`extras_interval`, default 15 min, `off`
//! to disable), bounded in pages per list, in time per request and in time overall. Its
//! figures become readings (`provider_readings`, names `<provider>.<subject>.<figure>`, see
//! [`naming`]) and its non-numeric parts a compact JSON [`Snapshot`] (`provider_extras`). A
//! provider answering garbage fails that collection alone, with an error naming what was
//! read and what was wrong; the key never appears in a reading name, a snapshot or an error.
//! The health scheduler is not involved: the `provider-extras` job in `jobs.rs` calls
//! [`run_due`]. Nothing here renders HTML or answers HTTP.

pub mod digitalocean;
pub mod gcp;
pub mod math;
pub mod messaging;
pub mod n8n;
pub mod retell;
pub mod store;
pub mod supabase;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::providers::Provider;

/// The naming scheme of extras readings, for the README and reviewers:
///
/// `<provider>.<subject>.<figure>` with provider `n8n`, `twilio`, `vonage`, `retell`, `do`
/// (DigitalOcean), `supabase` or `gcp` (`gcp.<resource type>.<id>.<metric>`); `<subject>` may
/// carry a provider id made name-safe (`n8n.workflow.<id>.success_rate`,
/// `do.droplet.<id>.cpu_percent`, `twilio.whatsapp.<E.164 digits>.read_rate`). Units by suffix:
/// `_rate` is a fraction 0–1, `_percent` 0–100, `_ms` milliseconds, `_bytes`, `_mbps`,
/// `_cents`, `_usd`; money without a suffix (`twilio.sms.cost_per_message`) is in the
/// account's currency, which the snapshot names. Counts have no suffix.
pub mod naming {}

/// The provider kinds that have extras.
pub fn has_extras(p: Provider) -> bool {
    matches!(
        p,
        Provider::N8n
            | Provider::Twilio
            | Provider::Vonage
            | Provider::Retell
            | Provider::DigitalOcean
            | Provider::Supabase
            | Provider::Gcp
    )
}

/// How often extras are collected when a monitor does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// How far one collection may go.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Items asked for per page of a list.
    pub page_size: u32,
    /// Pages read of any one list; past it the collection says it is truncated.
    pub max_pages: u32,
    /// One request, body included (a slowloris answer fails here).
    pub request_timeout: Duration,
    /// The whole collection.
    pub deadline: Duration,
    /// How far back traffic is counted (messages, calls, executions).
    pub window_ms: i64,
    /// Droplets whose metrics are read (each costs seven requests of DigitalOcean's 250 a
    /// minute); the others are listed without figures.
    pub max_droplets: usize,
    /// Failed n8n executions kept with their error, each read whole once.
    pub max_failures: usize,
}

impl Limits {
    /// The production limits for a monitor whose single requests may take `timeout`.
    pub fn for_timeout(timeout: Duration) -> Self {
        Limits {
            page_size: 250,
            max_pages: 8,
            request_timeout: timeout,
            deadline: Duration::from_secs(120),
            window_ms: 24 * 3_600_000,
            max_droplets: 10,
            max_failures: 5,
        }
    }
}

/// Where and as whom a collection reads, and how far it may go.
pub struct Ctx<'a> {
    pub client: &'a reqwest::Client,
    pub provider: Provider,
    /// The API base without a trailing slash.
    pub base: String,
    pub account: String,
    pub key: String,
    /// gcp: the metric types read (empty for other providers).
    pub metric_types: Vec<String>,
    pub limits: Limits,
    /// UTC ms at the start of the collection.
    pub now: i64,
    /// Twilio: the monitor's `whatsapp_senders`, shown even without traffic.
    pub whatsapp_senders: Vec<String>,
}

/// A failed request: the HTTP status where there was one (404 picks fallbacks), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: Option<u16>,
    pub why: String,
}

impl Failure {
    pub fn new(why: impl Into<String>) -> Self {
        Failure {
            status: None,
            why: why.into(),
        }
    }
}

/// A JSON answer.
pub struct Page {
    pub headers: Vec<(String, String)>,
    pub json: Value,
}

impl Ctx<'_> {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A next-page link (absolute or relative) as a URL on this monitor's base: only its path
    /// and query are kept, so credentials are never sent to a host the provider's answer
    /// names.
    pub fn rebase(&self, link: &str) -> Option<String> {
        let path = if link.starts_with('/') {
            link.to_string()
        } else {
            let url = reqwest::Url::parse(link).ok()?;
            match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            }
        };
        Some(self.url(&path))
    }

    /// Sends `req` and reads a JSON answer within the request timeout. `what` names what is
    /// read ("n8n executions") so the error says where it went wrong.
    pub async fn fetch(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Page, Failure> {
        let timeout = self.limits.request_timeout;
        let attempt = async {
            super::providers::get_json(req)
                .await
                .map(|a| Page {
                    headers: a.headers,
                    json: a.json,
                })
                .map_err(|f| Failure {
                    status: f.status,
                    why: f.why,
                })
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        };
        outcome.map_err(|f| Failure {
            status: f.status,
            why: self.scrub(&format!("{what}: {}", f.why)),
        })
    }

    /// `text` with the key replaced, should a provider ever echo it back.
    pub fn scrub(&self, text: &str) -> String {
        if self.key.len() >= 4 && text.contains(&self.key) {
            text.replace(&self.key, "***")
        } else {
            text.to_string()
        }
    }
}

/// A wrong shape, as an error naming what was read.
pub fn shape(what: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(format!("{what}: unexpected answer: {why}"))
}

/// The array at `pointer` (`""` for the whole answer), or a shape error.
pub fn list<'v>(what: &str, v: &'v Value, pointer: &str) -> Result<&'v Vec<Value>, Failure> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .ok_or_else(|| shape(what, format!("no list at {pointer:?}")))
}

/// A string field, empty when absent.
pub fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A number sent as a number or a string.
pub fn num_of(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What one collection produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub readings: Vec<(String, f64)>,
    pub snapshot: Snapshot,
}

/// The non-numeric parts of a collection, per provider, stored as JSON and rendered as the
/// monitor page's tables. Money is a decimal string in the currency named beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum Snapshot {
    N8n(n8n::Snapshot),
    Twilio(messaging::Snapshot),
    Vonage(messaging::Snapshot),
    Retell(retell::Snapshot),
    #[serde(rename = "digitalocean")]
    DigitalOcean(digitalocean::Snapshot),
    Supabase(supabase::Snapshot),
    Gcp(gcp::Snapshot),
}

/// Runs one collection for `ctx.provider`, within the overall deadline.
pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let work = async {
        match ctx.provider {
            Provider::N8n => n8n::collect(ctx).await,
            Provider::Twilio => messaging::twilio(ctx).await,
            Provider::Vonage => messaging::vonage(ctx).await,
            Provider::Retell => retell::collect(ctx).await,
            Provider::DigitalOcean => digitalocean::collect(ctx).await,
            Provider::Supabase => supabase::collect(ctx).await,
            Provider::Gcp => gcp::collect(ctx).await,
            other => Err(Failure::new(format!("{} has no extras", other.as_str()))),
        }
    };
    match tokio::time::timeout(ctx.limits.deadline, work).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(format!(
            "the collection took over {} s",
            ctx.limits.deadline.as_secs()
        ))),
    }
}

pub use store::run_due;

#[cfg(test)]
mod tests;
