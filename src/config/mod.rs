//! Configuration: embedded commented defaults → optional TOML file → `${ENV}` interpolation →
//! `OPSDECK_<SECTION>__<KEY>` overrides → command-line flags → validation.
//!
//! Every error names where the bad value came from (file, environment variable or flag) and the
//! key it belongs to, so a person can fix it without reading code. Nothing here touches the
//! network or the database.

mod duration;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use duration::ConfigDuration;

/// The commented defaults, compiled into the binary; also shipped as `opsdeck.example.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../opsdeck.example.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {key}: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub access: AccessConfig,
    pub ingest: IngestConfig,
    pub usage: UsageConfig,
    pub retention: RetentionConfig,
    pub stripe: StripeConfig,
    pub health: HealthConfig,
    pub webhooks: WebhooksConfig,
    pub alerts: AlertsConfig,
    /// `[[plans]]`: plans declared in config (read-only in Settings).
    #[serde(default)]
    pub plans: Vec<PlanConfig>,
    /// `[[pricing]]`: provider prices declared in config, on top of the shipped defaults.
    #[serde(default)]
    pub pricing: Vec<PriceConfig>,
    /// `[[monitors]]`: health checks declared in config (read-only in the UI).
    #[serde(default)]
    pub monitors: Vec<crate::health::monitor::MonitorSpec>,
    /// `[[credentials]]`: OAuth credentials declared in config (read-only in the UI); the
    /// tokens they give are replaced in the store by refreshes.
    #[serde(default)]
    pub credentials: Vec<crate::tokens::CredentialSpec>,
    /// `[[alert_rules]]`: alert rules declared in config (read-only in the UI).
    #[serde(default)]
    pub alert_rules: Vec<crate::alerts::rules::RuleSpec>,
    /// `[[notifiers]]`: notifiers declared in config (read-only in the API), written to the
    /// store at start.
    #[serde(default)]
    pub notifiers: Vec<crate::webhooks::endpoints::EndpointSpec>,
    /// Not a configuration key: host names every destination guard answers without DNS, set
    /// by tests that need a name leading to a given address (a metadata address, to show it
    /// is refused after resolution). The addresses are checked like resolved ones.
    #[serde(skip)]
    pub pinned_hosts: Vec<(String, std::net::IpAddr)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// Empty: Stripe is not connected.
    pub secret_key: String,
    pub webhook_secret: String,
    pub api_base: String,
    /// Lowercase ISO 4217 code.
    pub reporting_currency: String,
    /// Days past due after which a subscription counts as churned; 0 = never.
    pub past_due_churn_days: u32,
    pub sync_interval: ConfigDuration,
    /// Reads per second a sync makes; 0 = 80 % of Stripe's limit for the key's mode.
    pub max_reads_per_second: u32,
    /// Stripe price or product id → plan id.
    pub plan_map: BTreeMap<String, String>,
    /// Currency → reporting-currency units per unit (decimal text), used where Stripe's
    /// balance transactions give no rate.
    pub fx_rates: BTreeMap<String, DecimalText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Most checks running at once, across every monitor.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The delay before each retry after a failed attempt; the first attempt goes at once.
    pub retry_schedule: Vec<ConfigDuration>,
    /// Each delay moves by up to this share (percent) either way.
    pub jitter_percent: u32,
    /// Time for one attempt.
    pub timeout: ConfigDuration,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: ConfigDuration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Private and loopback ranges (CIDR) endpoints may resolve to.
    pub allow_private: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often every rule is evaluated.
    pub evaluation_interval: ConfigDuration,
    /// Notifiers (by name) the built-in rules notify.
    pub default_notifiers: Vec<String>,
    /// Lets notifier and webhook URLs point at loopback and private addresses (every private
    /// range; `webhooks.allow_private` names some).
    pub allow_private_targets: bool,
    /// A firing alert not acknowledged is notified again this often; "0s" never.
    pub repeat_interval: ConfigDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Path prefix (optionally ending in `*`) → endpoint category for `api.request` events.
    pub endpoint_categories: BTreeMap<String, String>,
    /// Plan for customers that have none assigned; empty = none (the quota route answers 404).
    pub default_plan: String,
    /// A quota state is left downwards only once usage is this many percentage points below
    /// the threshold that raised it, so usage teetering at a threshold does not flap.
    pub quota_hysteresis_percent: u32,
    /// How often customers with new usage have their quota state re-evaluated.
    pub quota_check_interval: ConfigDuration,
}

/// A number or a string holding a decimal, kept as text so it can be parsed exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct DecimalText(pub String);

impl<'de> Deserialize<'de> for DecimalText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        Ok(DecimalText(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            // Rust prints the shortest text that reads back as the same float: 0.0045 → "0.0045".
            Raw::Float(f) => f.to_string(),
        }))
    }
}

fn default_currency() -> String {
    "usd".into()
}
fn zero_decimal() -> DecimalText {
    DecimalText("0".into())
}
fn default_hard_limit() -> u32 {
    120
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub id: String,
    pub name: String,
    /// Monthly price, e.g. "26.00".
    pub price: DecimalText,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Monthly quota of API calls (`api.request` events); 0 = none.
    #[serde(default)]
    pub api_calls: u64,
    /// Monthly quota of provider credits (`provider.usage` quantities in unit "credit"); 0 = none.
    #[serde(default)]
    pub provider_credits: u64,
    /// USD per 1,000 calls past the quota, e.g. "0.50".
    #[serde(default = "zero_decimal")]
    pub overage_per_1k_calls: DecimalText,
    #[serde(default = "default_hard_limit")]
    pub hard_limit_percent: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub provider: String,
    pub sku: String,
    pub unit: String,
    /// USD per unit, e.g. "0.0045".
    pub price: DecimalText,
    /// Date ("2026-01-01") or RFC 3339 time from which the price applies.
    pub effective_from: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub raw_days: u32,
    pub rollup_days: u32,
    /// Raw health check results, and their per-minute rollups, are kept this many days; hour
    /// and day rollups follow `rollup_days`.
    pub check_results_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_events: usize,
    /// Events per second each credential may send; counted per event, not per request.
    pub events_per_second: u32,
    pub max_body_bytes: usize,
    pub max_future_skew: ConfigDuration,
    /// On SQLite, how long after an event arrives a repeat of its (source, id) is still
    /// recognised as a duplicate (see `usage::dedup`).
    pub dedup_window: ConfigDuration,
    /// On SQLite, the most events the dedup window holds.
    pub dedup_max_events: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    pub public_url: String,
    pub redis_url: String,
    pub trusted_proxies: Vec<String>,
    pub max_body_bytes: usize,
    pub request_timeout: ConfigDuration,
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    pub session_ttl: ConfigDuration,
    pub login_max_failures: u32,
    pub login_window: ConfigDuration,
    pub api_requests_per_minute: u32,
    pub master_key_file: String,
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

impl Config {
    /// The built-in defaults alone, as used by tests and `opsdeck demo`.
    pub fn defaults() -> Self {
        Loader::new()
            .finish()
            .expect("embedded defaults are valid; the config unit tests check this")
    }

    /// Loads the layers: defaults, then `file` if given (a missing explicit file is an error),
    /// else `./opsdeck.toml` if present; then the environment; then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut loader = Loader::new();
        match file {
            Some(path) => loader.file(path)?,
            None if Path::new("opsdeck.toml").exists() => loader.file(Path::new("opsdeck.toml"))?,
            None => {}
        }
        loader.interpolate(env)?;
        loader.env_overrides(env)?;
        loader.overrides(overrides);
        loader.coerce()?;
        loader.finish()
    }

    /// The database URL to open: the configured one, or SQLite inside the data directory.
    pub fn database_url(&self) -> String {
        if self.server.database_url.is_empty() {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("opsdeck.db").display()
            )
        } else {
            self.server.database_url.clone()
        }
    }

    pub fn master_key_path(&self) -> PathBuf {
        if self.access.master_key_file.is_empty() {
            self.server.data_dir.join("master.key")
        } else {
            PathBuf::from(&self.access.master_key_file)
        }
    }

    /// Whether cookies must carry `Secure` (opsdeck is reached over TLS).
    pub fn behind_tls(&self) -> bool {
        self.server.public_url.starts_with("https://")
    }
}

/// Accumulates the layers as one TOML table plus, for each key, which layer set it last.
struct Loader {
    table: toml::Table,
    origins: BTreeMap<String, String>,
}

impl Loader {
    fn new() -> Self {
        let table: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
        Self {
            table,
            origins: BTreeMap::new(),
        }
    }

    fn file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        let file: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.clone(),
                message: e.to_string().trim_end().to_string(),
            })?;
        merge(&mut self.table, file, "", &origin, &mut self.origins);
        Ok(())
    }

    /// Replaces `${VAR}` inside every string value.
    fn interpolate(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut table = std::mem::take(&mut self.table);
        let result = interpolate_value(&mut table, "", &lookup).map_err(|(key, problem)| {
            ConfigError::Invalid {
                origin: self.origin_of(&key),
                key,
                problem,
            }
        });
        self.table = table;
        result
    }

    /// Applies `OPSDECK_<SECTION>__<KEY>` variables. Other `OPSDECK_*` variables (without `__`)
    /// are not configuration keys and are left alone.
    fn env_overrides(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("OPSDECK_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let path = format!("{section}.{key}");
            let origin = format!("environment variable {name}");
            let invalid = |problem: String| ConfigError::Invalid {
                origin: origin.clone(),
                key: path.clone(),
                problem,
            };
            let slot = self
                .table
                .get_mut(&section)
                .and_then(|s| s.as_table_mut())
                .and_then(|s| s.get_mut(&key))
                .ok_or_else(|| invalid("no such configuration key".into()))?;
            // Arrays are written as TOML; everything else is taken as text here and given the
            // default's type by `coerce`, which also serves `${VAR}` values from the file.
            *slot = match slot {
                toml::Value::Array(_) => {
                    raw.parse::<toml::Value>()
                        .ok()
                        .filter(|v| v.is_array())
                        .ok_or_else(|| invalid("expected a TOML array such as [\"a\"]".into()))?
                }
                _ => toml::Value::String(raw.clone()),
            };
            self.origins.insert(path, origin);
        }
        Ok(())
    }

    /// Gives text values the type their default has, so `"8"` (from `${VAR}` or an environment
    /// variable) becomes a number while `"0.0.0.0:80"` stays text.
    fn coerce(&mut self) -> Result<(), ConfigError> {
        let defaults: toml::Table = DEFAULT_TOML.parse().unwrap_or_default();
        for (section, default_section) in &defaults {
            let (Some(default_section), Some(current)) = (
                default_section.as_table(),
                self.table.get_mut(section).and_then(|s| s.as_table_mut()),
            ) else {
                continue;
            };
            for (key, default) in default_section {
                let Some(toml::Value::String(raw)) = current.get(key) else {
                    continue;
                };
                let path = format!("{section}.{key}");
                let (parsed, expected) = match default {
                    toml::Value::Integer(_) => (
                        raw.trim().parse().ok().map(toml::Value::Integer),
                        "an integer",
                    ),
                    toml::Value::Boolean(_) => (
                        raw.trim().parse().ok().map(toml::Value::Boolean),
                        "true or false",
                    ),
                    _ => continue,
                };
                let value = parsed.ok_or_else(|| ConfigError::Invalid {
                    origin: self
                        .origins
                        .get(&path)
                        .cloned()
                        .unwrap_or_else(|| "configuration".into()),
                    key: path.clone(),
                    problem: format!("expected {expected}, got {raw:?}"),
                })?;
                current.insert(key.clone(), value);
            }
        }
        Ok(())
    }

    fn overrides(&mut self, o: &Overrides) {
        let mut set = |key: &str, flag: &str, v: toml::Value| {
            if let Some(server) = self.table.get_mut("server").and_then(|s| s.as_table_mut()) {
                server.insert(key.into(), v);
                self.origins
                    .insert(format!("server.{key}"), format!("command-line flag {flag}"));
            }
        };
        if let Some(v) = &o.listen {
            set("listen", "--listen", toml::Value::String(v.clone()));
        }
        if let Some(v) = &o.data_dir {
            set(
                "data_dir",
                "--data-dir",
                toml::Value::String(v.display().to_string()),
            );
        }
        if let Some(v) = &o.database_url {
            set(
                "database_url",
                "--database-url",
                toml::Value::String(v.clone()),
            );
        }
    }

    /// Which layer set `key`, or the closest enclosing key (`server.trusted_proxies[0]` →
    /// `server.trusted_proxies` → `server`); a section is reported against whatever set any of
    /// its keys.
    fn origin_of(&self, key: &str) -> String {
        let mut k = key;
        while !k.is_empty() {
            if let Some(origin) = self.origins.get(k) {
                return origin.clone();
            }
            let prefix = format!("{k}.");
            if let Some((_, origin)) = self.origins.iter().find(|(o, _)| o.starts_with(&prefix)) {
                return origin.clone();
            }
            k = match k.rfind(['.', '[']) {
                Some(i) => &k[..i],
                None => "",
            };
        }
        "configuration".into()
    }

    fn finish(self) -> Result<Config, ConfigError> {
        let value = toml::Value::Table(self.table.clone());
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                origin: self.origin_of(&key),
                key,
                problem: e.into_inner().to_string(),
            }
        })?;
        self.validate(&config)?;
        Ok(config)
    }

    fn validate(&self, c: &Config) -> Result<(), ConfigError> {
        let check = |key: &str, ok: bool, problem: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    origin: self.origin_of(key),
                    key: key.into(),
                    problem: problem.into(),
                })
            }
        };
        check(
            "server.listen",
            c.server.listen.parse::<SocketAddr>().is_ok(),
            &format!(
                "{:?} is not an address; use host:port such as 127.0.0.1:8080",
                c.server.listen
            ),
        )?;
        let url = &c.server.database_url;
        check(
            "server.database_url",
            url.is_empty()
                || url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"),
            "must be empty (SQLite in data_dir), sqlite://PATH or postgres://…",
        )?;
        check(
            "server.db_max_connections",
            c.server.db_max_connections >= 1,
            "must be at least 1",
        )?;
        let public = &c.server.public_url;
        check(
            "server.public_url",
            public.is_empty() || public.starts_with("http://") || public.starts_with("https://"),
            "must be empty or start with http:// or https://",
        )?;
        let w = &c.webhooks;
        check(
            "webhooks.retry_schedule",
            w.retry_schedule.len() <= 50,
            "at most 50 retries",
        )?;
        check(
            "webhooks.jitter_percent",
            w.jitter_percent <= 50,
            "must be 0 to 50",
        )?;
        check(
            "webhooks.timeout",
            w.timeout.0 >= std::time::Duration::from_millis(100)
                && w.timeout.0 <= std::time::Duration::from_secs(300),
            "must be 100ms to 300s",
        )?;
        check(
            "webhooks.concurrency",
            (1..=10_000).contains(&w.concurrency),
            "must be 1 to 10000",
        )?;
        for (i, cidr) in w.allow_private.iter().enumerate() {
            if let Err(e) = cidr.parse::<crate::net::guard::Cidr>() {
                return Err(ConfigError::Invalid {
                    origin: self.origin_of("webhooks.allow_private"),
                    key: format!("webhooks.allow_private[{i}]"),
                    problem: e.to_string(),
                });
            }
        }
        let stripe = &c.stripe;
        check(
            "stripe.api_base",
            stripe.api_base.starts_with("http://") || stripe.api_base.starts_with("https://"),
            "must start with http:// or https://",
        )?;
        check(
            "stripe.reporting_currency",
            stripe.reporting_currency.len() == 3
                && stripe
                    .reporting_currency
                    .bytes()
                    .all(|b| b.is_ascii_lowercase()),
            "must be a lowercase three-letter currency code such as usd",
        )?;
        check(
            "stripe.secret_key",
            stripe.secret_key.is_empty()
                || ["sk_", "rk_"]
                    .iter()
                    .any(|p| stripe.secret_key.starts_with(p)),
            "must be empty or a Stripe secret (sk_…) or restricted (rk_…) key",
        )?;
        for (currency, rate) in &stripe.fx_rates {
            let key = format!("stripe.fx_rates.{currency}");
            check(
                &key,
                currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_lowercase()),
                "must be keyed by a lowercase three-letter currency code",
            )?;
            check(
                &key,
                crate::money::parse_scaled(&rate.0, 9).is_ok_and(|r| r > 0),
                "must be a positive decimal rate with at most 9 decimal places, e.g. \"1.08\"",
            )?;
        }
        check(
            "stripe.webhook_secret",
            stripe.webhook_secret.is_empty() || stripe.webhook_secret.starts_with("whsec_"),
            "must be empty or a webhook signing secret (whsec_…)",
        )?;
        let redis = &c.server.redis_url;
        check(
            "server.redis_url",
            redis.is_empty() || redis.starts_with("redis://") || redis.starts_with("rediss://"),
            "must be empty or start with redis:// or rediss://",
        )?;
        if let Some(bad) = c
            .server
            .trusted_proxies
            .iter()
            .find(|p| p.parse::<std::net::IpAddr>().is_err())
        {
            check(
                "server.trusted_proxies",
                false,
                &format!("{bad:?} is not an IP address"),
            )?;
        }
        check(
            "server.log_level",
            tracing_subscriber::EnvFilter::try_new(&c.server.log_level).is_ok(),
            &format!(
                "{:?} is not a log filter; use e.g. \"info\" or \"opsdeck=debug,info\"",
                c.server.log_level
            ),
        )?;
        check(
            "server.max_body_bytes",
            c.server.max_body_bytes >= 1024,
            "must be at least 1024",
        )?;
        check(
            "server.request_timeout",
            !c.server.request_timeout.is_zero(),
            "must be longer than zero",
        )?;
        check(
            "access.session_ttl",
            !c.access.session_ttl.is_zero(),
            "must be longer than zero",
        )?;
        check(
            "ingest.max_events",
            c.ingest.max_events >= 1,
            "must be at least 1",
        )?;
        check(
            "ingest.events_per_second",
            c.ingest.events_per_second as usize >= c.ingest.max_events,
            "must be at least ingest.max_events (a full batch must fit in one second's burst)",
        )?;
        check(
            "ingest.dedup_window",
            !c.ingest.dedup_window.is_zero(),
            "must be longer than zero",
        )?;
        check(
            "ingest.dedup_max_events",
            c.ingest.dedup_max_events >= c.ingest.max_events,
            "must be at least ingest.max_events",
        )?;
        check(
            "retention.raw_days",
            c.retention.raw_days >= 1,
            "must be at least 1",
        )?;
        check(
            "retention.rollup_days",
            c.retention.rollup_days >= c.retention.raw_days,
            "must be at least retention.raw_days (rollups outlive the events behind them)",
        )?;
        check(
            "retention.check_results_days",
            (1..=c.retention.rollup_days).contains(&c.retention.check_results_days),
            "must be at least 1 and at most retention.rollup_days",
        )?;
        check(
            "ingest.max_body_bytes",
            c.ingest.max_body_bytes >= 1024,
            "must be at least 1024",
        )?;
        check(
            "access.login_max_failures",
            c.access.login_max_failures >= 1,
            "must be at least 1",
        )?;
        check(
            "access.login_window",
            !c.access.login_window.is_zero(),
            "must be longer than zero",
        )?;
        check(
            "access.api_requests_per_minute",
            c.access.api_requests_per_minute >= 1,
            "must be at least 1",
        )?;
        self.validate_metering(c)
    }

    fn validate_metering(&self, c: &Config) -> Result<(), ConfigError> {
        let fail = |key: String, problem: String| ConfigError::Invalid {
            origin: self.origin_of(&key),
            key,
            problem,
        };
        for (prefix, category) in &c.usage.endpoint_categories {
            let key = format!("usage.endpoint_categories.{prefix:?}");
            let pattern = prefix.strip_suffix('*').unwrap_or(prefix);
            if !pattern.starts_with('/') || pattern.contains('*') {
                return Err(fail(
                    key,
                    "a category prefix is a path starting with / (a trailing * is allowed)".into(),
                ));
            }
            if category.trim().is_empty() || category.len() > 64 {
                return Err(fail(key, "a category name is 1–64 characters".into()));
            }
        }
        if c.usage.quota_hysteresis_percent > 50 {
            return Err(fail(
                "usage.quota_hysteresis_percent".into(),
                "must be at most 50".into(),
            ));
        }
        if c.usage.quota_check_interval.is_zero() {
            return Err(fail(
                "usage.quota_check_interval".into(),
                "must be longer than zero".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, plan) in c.plans.iter().enumerate() {
            let at = |field: &str| format!("plans[{i}].{field}");
            crate::usage::plans::check_plan_id(&plan.id).map_err(|p| fail(at("id"), p))?;
            if !seen.insert(plan.id.as_str()) {
                return Err(fail(
                    at("id"),
                    format!("plan {:?} is declared twice", plan.id),
                ));
            }
            if plan.name.trim().is_empty() {
                return Err(fail(at("name"), "must not be empty".into()));
            }
            crate::money::parse_scaled(&plan.price.0, 2).map_err(|p| fail(at("price"), p))?;
            crate::money::Money::new(0, &plan.currency).map_err(|p| fail(at("currency"), p))?;
            crate::money::parse_scaled(&plan.overage_per_1k_calls.0, crate::money::PICO)
                .map_err(|p| fail(at("overage_per_1k_calls"), p))?;
            if !(100..=1000).contains(&plan.hard_limit_percent) {
                return Err(fail(
                    at("hard_limit_percent"),
                    "must be between 100 and 1000".into(),
                ));
            }
        }
        let default_plan = &c.usage.default_plan;
        if !default_plan.is_empty() {
            crate::usage::plans::check_plan_id(default_plan)
                .map_err(|p| fail("usage.default_plan".into(), p))?;
        }
        if !(1..=10_000).contains(&c.health.concurrency) {
            return Err(fail(
                "health.concurrency".into(),
                "must be between 1 and 10000".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, monitor) in c.monitors.iter().enumerate() {
            monitor
                .validate()
                .map_err(|e| fail(format!("monitors[{i}].{}", e.field), e.problem))?;
            if !names.insert(monitor.name.trim()) {
                return Err(fail(
                    format!("monitors[{i}].name"),
                    format!("monitor {:?} is declared twice", monitor.name.trim()),
                ));
            }
        }
        let mut credentials = std::collections::HashSet::new();
        for (i, credential) in c.credentials.iter().enumerate() {
            credential
                .validate()
                .map_err(|e| fail(format!("credentials[{i}].{}", e.field), e.problem))?;
            if !credentials.insert(credential.name.trim()) {
                return Err(fail(
                    format!("credentials[{i}].name"),
                    format!("credential {:?} is declared twice", credential.name.trim()),
                ));
            }
        }
        let mut notifiers = std::collections::HashSet::new();
        for (i, notifier) in c.notifiers.iter().enumerate() {
            notifier.check().map_err(|e| match e {
                crate::webhooks::endpoints::EndpointError::Invalid { field, problem } => {
                    fail(format!("notifiers[{i}].{field}"), problem)
                }
                other => fail(format!("notifiers[{i}]"), other.to_string()),
            })?;
            if !notifiers.insert(notifier.name.trim()) {
                return Err(fail(
                    format!("notifiers[{i}].name"),
                    format!("notifier {:?} is declared twice", notifier.name.trim()),
                ));
            }
        }
        for (i, price) in c.pricing.iter().enumerate() {
            let at = |field: &str| format!("pricing[{i}].{field}");
            crate::costs::check_provider(&price.provider).map_err(|p| fail(at("provider"), p))?;
            crate::costs::check_sku(&price.sku).map_err(|p| fail(at("sku"), p))?;
            crate::costs::check_unit(&price.unit).map_err(|p| fail(at("unit"), p))?;
            crate::money::parse_scaled(&price.price.0, crate::money::PICO)
                .map_err(|p| fail(at("price"), p))?;
            crate::costs::import::parse_effective_from(&price.effective_from)
                .map_err(|p| fail(at("effective_from"), p))?;
        }
        Ok(())
    }
}

/// Deep-merges `from` into `into`, remembering which keys `origin` set.
fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming, &path, origin, origins);
            }
            (_, value) => {
                origins.insert(path, origin.to_string());
                into.insert(key, value);
            }
        }
    }
}

/// Interpolates every string inside `table`, however deeply nested (arrays of tables such as
/// `[[monitors]]` included); errors carry the dotted key.
fn interpolate_value<'a>(
    table: &mut toml::Table,
    prefix: &str,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<(), (String, String)> {
    fn walk<'a>(
        value: &mut toml::Value,
        path: &str,
        lookup: &impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(), (String, String)> {
        match value {
            toml::Value::String(s) => {
                *s = interpolate(s, lookup).map_err(|p| (path.to_string(), p))?;
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, &format!("{path}[{i}]"), lookup)?;
                }
            }
            toml::Value::Table(t) => interpolate_value(t, path, lookup)?,
            _ => {}
        }
        Ok(())
    }
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        walk(value, &path, lookup)?;
    }
    Ok(())
}

/// Expands `${NAME}`; `$${` is a literal `${`. An unset variable is an error, not "".
fn interpolate<'a>(s: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "unclosed ${ (write $${ for a literal)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name {name:?} in ${{…}}"));
            }
            out.push_str(
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?,
            );
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let c = Config::defaults();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.access.login_max_failures, 5);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn layers_apply_in_order() {
        let f = write("[server]\nlisten = \"0.0.0.0:9000\"\ndatabase_url = \"${DB}\"\n");
        let e = env(&[
            ("DB", "postgres://u@h/d"),
            ("OPSDECK_SERVER__DB_MAX_CONNECTIONS", "3"),
        ]);
        let c = Config::load(Some(f.path()), &e, &Overrides::default()).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9000");
        assert_eq!(c.server.database_url, "postgres://u@h/d");
        assert_eq!(c.server.db_max_connections, 3);
        let o = Overrides {
            listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let c = Config::load(Some(f.path()), &e, &o).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:1");
    }

    #[test]
    fn notifiers_are_checked_by_field() {
        let f = write(
            "[[notifiers]]\nname = \"sms\"\nkind = \"twilio_sms\"\n\
             account_sid = \"AC00000000000000000000000000000001\"\nauth_token = \"t\"\n\
             from = \"+15005550006\"\nto = \"+1555\"\n",
        );
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notifiers[0].to") && err.contains("E.164"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_origin_and_key() {
        let f = write("[server]\nlistn = \"x\"\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("listn"), "{err}");

        let f = write("[server]\nlisten = \"nope\"\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.listen") && err.contains("nope"),
            "{err}"
        );

        let f = write("[access]\nsession_ttl = \"12 parsecs\"\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("access.session_ttl"), "{err}");

        let f = write("[webhooks]\nallow_private = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webhooks.allow_private[1]") && err.contains("10.0.0.0/8"),
            "{err}"
        );
        let f = write("[webhooks]\nretry_schedule = [\"5s\", \"soon\"]\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhooks.retry_schedule"), "{err}");

        let f = write("[server\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid TOML"), "{err}");

        let err = Config::load(
            None,
            &env(&[("OPSDECK_SERVER__DB_MAX_CONNECTIONS", "many")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OPSDECK_SERVER__DB_MAX_CONNECTIONS") && err.contains("integer"),
            "{err}"
        );

        let err = Config::load(
            None,
            &env(&[("OPSDECK_SERVER__NOPE", "1")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.nope"), "{err}");

        let f = write("[server]\ndatabase_url = \"${MISSING_VAR}\"\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MISSING_VAR") && err.contains("server.database_url"),
            "{err}"
        );
    }

    #[test]
    fn arrays_override_from_the_environment_and_interpolate() {
        let e = env(&[("OPSDECK_SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\", \"::1\"]")]);
        let c = Config::load(None, &e, &Overrides::default()).unwrap();
        assert_eq!(c.server.trusted_proxies, ["10.0.0.1", "::1"]);
        let f = write("[server]\ntrusted_proxies = [\"${PROXY}\"]\n");
        let c = Config::load(
            Some(f.path()),
            &env(&[("PROXY", "10.1.1.1")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.trusted_proxies, ["10.1.1.1"]);
        let err = Config::load(
            None,
            &env(&[("OPSDECK_SERVER__TRUSTED_PROXIES", "[\"nope\"]")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.trusted_proxies"), "{err}");
        let err = Config::load(
            None,
            &env(&[("OPSDECK_SERVER__LOG_LEVEL", "info,=[")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.log_level"), "{err}");
    }

    #[test]
    fn whole_value_variables_take_the_keys_type() {
        let f = write("[server]\ndb_max_connections = \"${POOL}\"\n");
        let c = Config::load(
            Some(f.path()),
            &env(&[("POOL", "12")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.server.db_max_connections, 12);
        let err = Config::load(
            Some(f.path()),
            &env(&[("POOL", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&f.path().display().to_string())
                && err.contains("server.db_max_connections"),
            "{err}"
        );
        let f = write("[server]\ntrusted_proxies = [\"nope\"]\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&f.path().display().to_string()) && err.contains("server.trusted_proxies"),
            "{err}"
        );
    }

    #[test]
    fn unrelated_opsdeck_variables_are_not_keys() {
        let e = env(&[
            ("OPSDECK_MASTER_KEY", "x"),
            ("OPSDECK_ADMIN_EMAIL", "a@b.c"),
        ]);
        assert!(Config::load(None, &e, &Overrides::default()).is_ok());
    }

    #[test]
    fn interpolation_rules() {
        let look = |n: &str| (n == "A").then_some("1");
        assert_eq!(interpolate("x${A}y", look).unwrap(), "x1y");
        assert_eq!(interpolate("$${A}", look).unwrap(), "${A}");
        assert_eq!(interpolate("cost $5", look).unwrap(), "cost $5");
        assert!(interpolate("${B}", look).is_err());
        assert!(interpolate("${A", look).is_err());
    }

    proptest::proptest! {
        #[test]
        fn text_without_dollars_is_left_alone(s in "[^$]{0,40}") {
            proptest::prop_assert_eq!(interpolate(&s, |_| None).unwrap(), s);
        }

        #[test]
        fn interpolation_never_panics(s in "\\PC{0,40}") {
            let _ = interpolate(&s, |n| (n == "A").then_some("x"));
        }
    }
}
