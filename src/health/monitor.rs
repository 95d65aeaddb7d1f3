//! Monitor definitions: what to check, how often, and what counts as up, degraded or down.
//! One validator serves `[[monitors]]` in config and the JSON API, so both refuse the same
//! things with the same field names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::conditions::{Condition, Subject};
use super::probes::dns::RecordType;
use super::providers::Provider;
use crate::net::guard::{Guard, GuardError};
use crate::tokens::checks::TokenKind;

/// Every kind a monitor can have. The generic kinds check a protocol; the provider kinds make
/// the provider's cheapest authenticated read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Http,
    Tcp,
    Tls,
    Dns,
    Postgres,
    Redis,
    Smtp,
    /// A provider's cheapest authenticated read (`providers.rs`).
    Provider(Provider),
    /// A read with a registered OAuth credential (`tokens::checks`).
    Token(TokenKind),
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Http,
        Kind::Tcp,
        Kind::Tls,
        Kind::Dns,
        Kind::Postgres,
        Kind::Redis,
        Kind::Smtp,
        Kind::Provider(Provider::Stripe),
        Kind::Provider(Provider::N8n),
        Kind::Provider(Provider::Twilio),
        Kind::Provider(Provider::Vonage),
        Kind::Provider(Provider::Retell),
        Kind::Provider(Provider::DigitalOcean),
        Kind::Provider(Provider::Supabase),
        Kind::Provider(Provider::Luma),
        Kind::Provider(Provider::Kling),
        Kind::Provider(Provider::Bfl),
        Kind::Provider(Provider::ElevenLabs),
        Kind::Provider(Provider::PiApi),
        Kind::Provider(Provider::OpenAi),
        Kind::Provider(Provider::Gcp),
        Kind::Token(TokenKind::GoogleOauth),
        Kind::Token(TokenKind::GoogleCalendar),
        Kind::Token(TokenKind::Meta),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Dns => "dns",
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::Smtp => "smtp",
            Kind::Provider(p) => p.as_str(),
            Kind::Token(t) => t.as_str(),
        }
    }

    /// The API base a provider or token kind reads when `target` is left out.
    pub fn default_base(self) -> Option<&'static str> {
        match self {
            Kind::Provider(p) => p.default_base(),
            Kind::Token(t) => Some(t.default_base()),
            _ => None,
        }
    }

    pub fn provider(self) -> Option<Provider> {
        match self {
            Kind::Provider(p) => Some(p),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// A monitor as declared (config or API), before validation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub name: String,
    pub kind: String,
    /// As the kind needs: a URL (http), `host:port` (tcp, tls, smtp), a domain name (dns), a
    /// connection URL (`postgres://…`, `redis://…`; credentials allowed, never shown), or for a
    /// provider kind its API base (default: the provider's production API; n8n needs one).
    #[serde(default)]
    pub target: String,
    /// How often to check, e.g. "30s" (at least 1 s). Default 60 s.
    #[serde(default)]
    pub interval: Option<String>,
    /// How long one check may take, e.g. "10s". Default 10 s, at most the interval.
    #[serde(default)]
    pub timeout: Option<String>,
    /// HTTP method (http). Default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers (http).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (http).
    #[serde(default)]
    pub body: Option<String>,
    /// The name to verify the certificate against and send as SNI (tls, smtp, rediss), when
    /// it differs from the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// A PEM file of CA certificates to trust instead of the system's (tls, smtp, rediss).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Skip certificate verification (tls, smtp, rediss); an expired certificate still fails.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// Record type to query (dns): A (default), AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT.
    #[serde(default)]
    pub record_type: Option<String>,
    /// Nameserver to ask, `host:port` or an IP (port 53) (dns). Default: the first
    /// `nameserver` in /etc/resolv.conf.
    #[serde(default)]
    pub nameserver: Option<String>,
    /// Query whose first column of the first row is `[BODY]` (postgres), run read-only.
    /// Default `SELECT current_setting('server_version')`.
    #[serde(default)]
    pub query: Option<String>,
    /// `starttls` (default), `tls` (implicit, default on port 465) or `none` (smtp).
    #[serde(default)]
    pub tls_mode: Option<String>,
    /// Log in with AUTH PLAIN or LOGIN (smtp); needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username` (smtp).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub password: Option<Secret>,
    /// Provider kinds: the account the key belongs to where the provider needs one (Twilio
    /// Account SID, Vonage API key, Supabase project ref, Kling access key).
    #[serde(default)]
    pub account: Option<String>,
    /// Provider kinds: the API key, token or secret; for gcp the service-account key file
    /// (its JSON text).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub key: Option<Secret>,
    /// gcp: the project whose Cloud Monitoring is read. Default: the key's `project_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// gcp: the Cloud Monitoring metric types read (at most 5), e.g.
    /// `compute.googleapis.com/instance/cpu/utilization`; the first is the health read's.
    /// Default: instance CPU utilization and received network bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_types: Vec<String>,
    /// Token kinds (google_oauth, google_calendar, meta): the name of the registered OAuth
    /// credential whose current access token the check uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Conditions that must all hold for the check to pass, e.g. `[STATUS] == 200`. An http
    /// monitor without any passes on a 2xx status.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Conditions any of which makes a passing check `degraded`, e.g. `[RESPONSE_TIME] > 800`.
    #[serde(default)]
    pub degraded_when: Vec<String>,
    /// Consecutive failures before the state becomes `down`. Default 1.
    #[serde(default)]
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before a down monitor is `up` again. Default 1.
    #[serde(default)]
    pub success_threshold: Option<u32>,
    /// Maintenance windows: checks still run and are recorded, but the state does not change.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceSpec>,
    /// Provider kinds with extras (n8n, twilio, vonage, retell, digitalocean, supabase, gcp): how
    /// often the slower extras collection runs, e.g. "10m" (1 min to 24 h), or "off".
    /// Default 15 min; off for vonage, whose Reports API bills each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras_interval: Option<String>,
    /// Twilio: WhatsApp senders (`whatsapp:+14155238886`, or just the `+E.164` number) whose
    /// extras row shows even when they had no traffic in the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub whatsapp_senders: Vec<String>,
}

/// A maintenance window: once (`start`..`end`, RFC 3339) or weekly (`from`..`to`, "HH:MM" UTC,
/// on `days`, every day when empty; `to` before `from` runs past midnight).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSpec {
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// A validated maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// [start, end) in UTC ms.
    Once { start: i64, end: i64 },
    /// Minutes of the UTC day [from, to), on the weekdays set in `days` (bit 0 = Monday).
    Weekly { days: u8, from: u32, to: u32 },
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Whether `at` (UTC ms) falls inside the window.
    pub fn contains(&self, at: i64) -> bool {
        match *self {
            Window::Once { start, end } => (start..end).contains(&at),
            Window::Weekly { days, from, to } => {
                let day = at.div_euclid(86_400_000);
                let minute = (at.rem_euclid(86_400_000) / 60_000) as u32;
                // 1970-01-01 was a Thursday (index 3 from Monday).
                let weekday = |d: i64| (d + 3).rem_euclid(7) as u8;
                if from <= to {
                    days & (1 << weekday(day)) != 0 && (from..to).contains(&minute)
                } else {
                    // Past midnight: the evening part on a listed day, the morning part on the
                    // day after one.
                    (minute >= from && days & (1 << weekday(day)) != 0)
                        || (minute < to && days & (1 << weekday(day - 1)) != 0)
                }
            }
        }
    }
}

impl MaintenanceSpec {
    fn validate(&self, field: &str) -> Result<Window, Invalid> {
        let time = |name: &str, v: &str| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| {
                    invalid(
                        &format!("{field}.{name}"),
                        format!("{v:?} is not an RFC 3339 time"),
                    )
                })
        };
        let clock = |name: &str, v: &str| {
            let parsed = v.split_once(':').and_then(|(h, m)| {
                let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
                (h < 24 && m < 60 && v.len() == 5).then_some(h * 60 + m)
            });
            parsed.ok_or_else(|| invalid(&format!("{field}.{name}"), format!("{v:?} is not HH:MM")))
        };
        match (&self.start, &self.end, &self.from, &self.to) {
            (Some(start), Some(end), None, None) if self.days.is_empty() => {
                let (start, end) = (time("start", start)?, time("end", end)?);
                if end <= start {
                    return Err(invalid(&format!("{field}.end"), "must be after start"));
                }
                Ok(Window::Once { start, end })
            }
            (None, None, Some(from), Some(to)) => {
                let (from, to) = (clock("from", from)?, clock("to", to)?);
                if from == to {
                    return Err(invalid(&format!("{field}.to"), "must differ from `from`"));
                }
                let mut days = 0u8;
                for d in &self.days {
                    let i = DAY_NAMES
                        .iter()
                        .position(|n| n.eq_ignore_ascii_case(d))
                        .ok_or_else(|| {
                            invalid(
                                &format!("{field}.days"),
                                format!("{d:?} is not a day (mon … sun)"),
                            )
                        })?;
                    days |= 1 << i;
                }
                Ok(Window::Weekly {
                    days: if days == 0 { 0x7f } else { days },
                    from,
                    to,
                })
            }
            _ => Err(invalid(
                field,
                "give either start and end (RFC 3339) or from and to (HH:MM UTC, with optional days)",
            )),
        }
    }
}

/// A credential in a monitor definition. It serializes as itself, since definitions are stored
/// sealed and must round-trip, but `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which certificates a TLS handshake accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots.
    #[default]
    System,
    /// Only the CAs in this PEM file.
    CaFile(PathBuf),
    /// Anything; only expiry is still checked.
    Insecure,
}

/// How a TLS-speaking monitor verifies its peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub server_name: Option<String>,
    pub trust: Trust,
}

/// How an smtp monitor secures its session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SmtpMode {
    #[default]
    StartTls,
    Implicit,
    Plain,
}

/// A validated monitor, ready to run.
#[derive(Clone)]
pub struct Monitor {
    pub name: String,
    pub kind: Kind,
    pub target: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub conditions: Vec<Condition>,
    pub degraded_when: Vec<Condition>,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub maintenance: Vec<Window>,
    /// tls, smtp and rediss.
    pub tls: TlsOptions,
    /// dns: what to ask and whom (`None`: the system's nameserver).
    pub record_type: RecordType,
    pub nameserver: Option<String>,
    /// postgres.
    pub query: Option<String>,
    /// smtp.
    pub smtp_mode: SmtpMode,
    pub credentials: Option<(String, Secret)>,
    /// Provider kinds: the account (where the provider needs one; gcp's project) and the key.
    pub account: Option<String>,
    pub key: Option<Secret>,
    /// gcp: the metric types read; empty for other kinds.
    pub metric_types: Vec<String>,
    /// Token kinds: the credential's name.
    pub credential: Option<String>,
    /// Provider kinds with extras: how often they are collected; `None` when off (or the kind
    /// has none).
    pub extras_interval: Option<Duration>,
    /// Twilio: WhatsApp senders always shown, as `whatsapp:+<digits>`.
    pub whatsapp_senders: Vec<String>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The target may be a connection URL with a password in it.
        f.debug_struct("Monitor")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("target", &redact_url(&self.target))
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("conditions", &self.conditions)
            .field("degraded_when", &self.degraded_when)
            .finish_non_exhaustive()
    }
}

/// `scheme://user:password@host…` with the password replaced by `***`; anything else as is.
pub fn redact_url(target: &str) -> String {
    match reqwest::Url::parse(target) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => target.to_string(),
    }
}

impl Monitor {
    /// Whether `at` (UTC ms) is inside one of the monitor's maintenance windows.
    pub fn in_maintenance(&self, at: i64) -> bool {
        self.maintenance.iter().any(|w| w.contains(at))
    }
}

/// A refused definition: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        problem: problem.into(),
    }
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl MonitorSpec {
    pub fn validate(&self) -> Result<Monitor, Invalid> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("name", "must be 1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        let kind = Kind::parse(&self.kind).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            invalid(
                "kind",
                format!("unknown kind {:?} (known: {})", self.kind, known.join(", ")),
            )
        })?;
        let target = match self.target.trim() {
            "" => kind.default_base().unwrap_or_default(),
            t => t,
        };
        check_target(kind, target).map_err(|p| invalid("target", p))?;
        let (account, key) = self.provider_credentials(kind)?;
        let metric_types = self.metric_types(kind)?;
        let credential = match (kind, self.credential.as_deref().map(str::trim)) {
            (Kind::Token(_), Some(c)) if !c.is_empty() && c.len() <= 100 => Some(c.to_string()),
            (Kind::Token(_), Some(_)) => {
                return Err(invalid("credential", "must be 1 to 100 characters"));
            }
            (Kind::Token(t), None) => {
                return Err(invalid(
                    "credential",
                    format!(
                        "is required for {} monitors: the name of a [[credentials]] entry",
                        t.as_str()
                    ),
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "credential",
                    format!(
                        "applies to google_oauth, google_calendar and meta monitors, not {}",
                        kind.as_str()
                    ),
                ));
            }
            (_, None) => None,
        };
        let interval = match &self.interval {
            Some(text) => parse_duration(text).map_err(|p| invalid("interval", p))?,
            None => DEFAULT_INTERVAL,
        };
        if interval < Duration::from_secs(1) {
            return Err(invalid("interval", "must be at least 1s"));
        }
        if interval > Duration::from_secs(86_400) {
            return Err(invalid("interval", "must be at most 24h"));
        }
        let timeout = match &self.timeout {
            Some(text) => parse_duration(text).map_err(|p| invalid("timeout", p))?,
            None => DEFAULT_TIMEOUT.min(interval),
        };
        if timeout.is_zero() || timeout > interval {
            return Err(invalid(
                "timeout",
                "must be more than 0 and at most the interval",
            ));
        }
        let method = self.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            return Err(invalid("method", format!("unknown HTTP method {method:?}")));
        }
        use Kind::*;
        let tls_kinds: &[Kind] = &[Tls, Smtp, Redis];
        let kind_only: [(&str, bool, &[Kind]); 12] = [
            ("method", self.method.is_some(), &[Http]),
            ("headers", !self.headers.is_empty(), &[Http]),
            ("body", self.body.is_some(), &[Http]),
            ("server_name", self.server_name.is_some(), tls_kinds),
            ("ca_file", self.ca_file.is_some(), tls_kinds),
            ("insecure", self.insecure.is_some(), tls_kinds),
            ("record_type", self.record_type.is_some(), &[Dns]),
            ("nameserver", self.nameserver.is_some(), &[Dns]),
            ("query", self.query.is_some(), &[Postgres]),
            ("tls_mode", self.tls_mode.is_some(), &[Smtp]),
            ("username", self.username.is_some(), &[Smtp]),
            ("password", self.password.is_some(), &[Smtp]),
        ];
        if let Some((field, _, kinds)) = kind_only
            .iter()
            .find(|(_, set, kinds)| *set && !kinds.contains(&kind))
        {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            let mut problem = format!(
                "applies to {} monitors, not {}",
                names.join(", "),
                kind.as_str()
            );
            if kind == Postgres && matches!(*field, "server_name" | "ca_file" | "insecure") {
                problem.push_str(" (set sslmode and sslrootcert in the postgres URL)");
            }
            return Err(invalid(field, problem));
        }
        let tls = self.tls_options(kind, target)?;
        let record_type = match &self.record_type {
            Some(t) => RecordType::parse(t).ok_or_else(|| {
                invalid(
                    "record_type",
                    format!("{t:?} is not a record type ({})", RecordType::NAMES),
                )
            })?,
            None => RecordType::A,
        };
        if let Some(ns) = &self.nameserver {
            let (host, _) = nameserver_addr(ns).map_err(|p| invalid("nameserver", p))?;
            Guard::private_allowed()
                .check_host(&host)
                .map_err(|e| invalid("nameserver", format!("destination refused: {e}")))?;
        }
        if let Some(q) = &self.query
            && (q.trim().is_empty() || q.len() > 10_000)
        {
            return Err(invalid("query", "must be 1 to 10000 characters"));
        }
        let smtp_mode = match self.tls_mode.as_deref() {
            Some("starttls") => SmtpMode::StartTls,
            Some("tls") => SmtpMode::Implicit,
            Some("none") => SmtpMode::Plain,
            Some(other) => {
                return Err(invalid(
                    "tls_mode",
                    format!("{other:?} is not one of starttls, tls, none"),
                ));
            }
            None if kind == Smtp && host_port(target).is_ok_and(|(_, p)| p == 465) => {
                SmtpMode::Implicit
            }
            None => SmtpMode::StartTls,
        };
        if kind == Smtp && smtp_mode == SmtpMode::Plain && tls.trust != Trust::System {
            return Err(invalid(
                "tls_mode",
                "is none, so there is no certificate to check",
            ));
        }
        let credentials = match (&self.username, &self.password) {
            (Some(user), Some(password)) => {
                if user.is_empty() || user.contains(['\r', '\n', '\0']) {
                    return Err(invalid("username", "must be non-empty, on one line"));
                }
                if password.expose().is_empty() || password.expose().contains(['\r', '\n', '\0']) {
                    return Err(invalid("password", "must be non-empty, on one line"));
                }
                if smtp_mode == SmtpMode::Plain {
                    return Err(invalid(
                        "password",
                        "would be sent in clear with tls_mode = \"none\"; use starttls or tls",
                    ));
                }
                Some((user.clone(), password.clone()))
            }
            (Some(_), None) => return Err(invalid("password", "is required with username")),
            (None, Some(_)) => return Err(invalid("username", "is required with password")),
            (None, None) => None,
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(invalid("headers", format!("{k:?} is not a header name")));
            }
            if reqwest::header::HeaderValue::from_str(v).is_err() {
                return Err(invalid(
                    "headers",
                    format!("the value of {k:?} is not a header value"),
                ));
            }
            headers.push((k.clone(), v.clone()));
        }
        let parse_all = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, c)| Condition::parse(c).map_err(|p| invalid(&format!("{field}[{i}]"), p)))
                .collect::<Result<Vec<_>, _>>()
        };
        let conditions = parse_all("conditions", &self.conditions)?;
        let mut degraded_when = parse_all("degraded_when", &self.degraded_when)?;
        for (field, list) in [
            ("conditions", &conditions),
            ("degraded_when", &degraded_when),
        ] {
            for (i, c) in list.iter().enumerate() {
                if !applies(c.subject(), kind) {
                    return Err(invalid(
                        &format!("{field}[{i}]"),
                        format!(
                            "{:?}: its subject does not apply to {} monitors",
                            c.text,
                            kind.as_str()
                        ),
                    ));
                }
            }
        }
        if kind == Tls && degraded_when.is_empty() {
            // What a certificate monitor is for: a warning while there is time to renew.
            degraded_when = vec![
                Condition::parse(DEFAULT_TLS_DEGRADED).map_err(|p| invalid("degraded_when", p))?,
            ];
        }
        let extras_interval = self.extras_interval(kind)?;
        let whatsapp_senders = self.whatsapp_senders(kind)?;
        let threshold = |field: &str, v: Option<u32>| match v.unwrap_or(1) {
            n @ 1..=100 => Ok(n),
            _ => Err(invalid(field, "must be 1 to 100")),
        };
        Ok(Monitor {
            name: name.to_string(),
            kind,
            target: target.to_string(),
            interval,
            timeout,
            method,
            headers,
            body: self.body.clone(),
            conditions,
            degraded_when,
            failure_threshold: threshold("failure_threshold", self.failure_threshold)?,
            success_threshold: threshold("success_threshold", self.success_threshold)?,
            maintenance: self
                .maintenance
                .iter()
                .enumerate()
                .map(|(i, w)| w.validate(&format!("maintenance[{i}]")))
                .collect::<Result<_, _>>()?,
            tls,
            record_type,
            nameserver: self.nameserver.clone(),
            query: self.query.clone(),
            smtp_mode,
            credentials,
            account,
            key,
            metric_types,
            credential,
            extras_interval,
            whatsapp_senders,
        })
    }

    /// `whatsapp_senders`: Twilio only; each `whatsapp:+` and 6 to 15 digits (E.164), the
    /// prefix added to a bare `+` number, duplicates dropped.
    fn whatsapp_senders(&self, kind: Kind) -> Result<Vec<String>, Invalid> {
        const FIELD: &str = "whatsapp_senders";
        if self.whatsapp_senders.is_empty() {
            return Ok(Vec::new());
        }
        if kind != Kind::Provider(super::providers::Provider::Twilio) {
            return Err(invalid(
                FIELD,
                format!("applies to twilio monitors, not {}", kind.as_str()),
            ));
        }
        if self.whatsapp_senders.len() > 50 {
            return Err(invalid(FIELD, "at most 50 senders"));
        }
        let mut out: Vec<String> = Vec::with_capacity(self.whatsapp_senders.len());
        for (i, raw) in self.whatsapp_senders.iter().enumerate() {
            let text = raw.trim();
            let number = match text.get(..9) {
                Some(p) if p.eq_ignore_ascii_case("whatsapp:") => &text[9..],
                _ => text,
            };
            let digits = number.strip_prefix('+').unwrap_or_default();
            if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    &format!("{FIELD}[{i}]"),
                    format!("{raw:?} is not a WhatsApp sender like \"whatsapp:+14155238886\""),
                ));
            }
            let sender = format!("whatsapp:+{digits}");
            if !out.contains(&sender) {
                out.push(sender);
            }
        }
        Ok(out)
    }

    /// `extras_interval`: the default for provider kinds with extras, `off`, or a duration of
    /// 1 min to 24 h; refused on other kinds.
    fn extras_interval(&self, kind: Kind) -> Result<Option<Duration>, Invalid> {
        const FIELD: &str = "extras_interval";
        let has = kind.provider().is_some_and(super::extras::has_extras);
        match (self.extras_interval.as_deref().map(str::trim), has) {
            // Vonage bills Reports API requests: its extras run only when asked for.
            (None, true) if kind == Kind::Provider(super::providers::Provider::Vonage) => Ok(None),
            (None, true) => Ok(Some(super::extras::DEFAULT_INTERVAL)),
            (None, false) => Ok(None),
            (Some(_), false) => Err(invalid(
                FIELD,
                format!(
                    "applies to n8n, twilio, vonage, retell, digitalocean, supabase and gcp \
                     monitors, not {}",
                    kind.as_str()
                ),
            )),
            (Some("off"), true) => Ok(None),
            (Some(text), true) => {
                let d = parse_duration(text).map_err(|p| invalid(FIELD, p))?;
                if d < Duration::from_secs(60) || d > Duration::from_secs(86_400) {
                    return Err(invalid(FIELD, "must be from 1m to 24h, or \"off\""));
                }
                Ok(Some(d))
            }
        }
    }

    /// gcp's `metric_types`: the defaults when none are given, at most 5 otherwise, each a
    /// plain metric type (it goes inside the filter's quotes); refused on other kinds.
    fn metric_types(&self, kind: Kind) -> Result<Vec<String>, Invalid> {
        const FIELD: &str = "metric_types";
        if kind != Kind::Provider(Provider::Gcp) {
            if !self.metric_types.is_empty() {
                return Err(invalid(
                    FIELD,
                    format!("applies to gcp monitors, not {}", kind.as_str()),
                ));
            }
            return Ok(Vec::new());
        }
        if self.metric_types.is_empty() {
            return Ok(super::gcp::DEFAULT_METRIC_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect());
        }
        if self.metric_types.len() > 5 {
            return Err(invalid(FIELD, "at most 5 metric types"));
        }
        let mut out = Vec::with_capacity(self.metric_types.len());
        for (i, t) in self.metric_types.iter().enumerate() {
            let t = t.trim();
            let plain = !t.is_empty()
                && t.len() <= 200
                && t.contains('/')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
            if !plain {
                return Err(invalid(
                    &format!("{FIELD}[{i}]"),
                    format!(
                        "{t:?} is not a metric type such as {}",
                        super::gcp::DEFAULT_METRIC_TYPES[0]
                    ),
                ));
            }
            out.push(t.to_string());
        }
        Ok(out)
    }

    /// gcp's key and project: the key must be a service-account key file with an RSA key
    /// (checked here, so bad key material is refused at once, naming `key`), the project
    /// given or the key's own.
    fn gcp_credentials(&self) -> Result<(Option<String>, Option<Secret>), Invalid> {
        if self.account.is_some() {
            return Err(invalid("account", "gcp monitors take project, not account"));
        }
        let key = match &self.key {
            Some(k) if !k.expose().trim().is_empty() => Secret(k.expose().trim().to_string()),
            _ => {
                return Err(invalid(
                    "key",
                    "is required: the service-account key file (JSON)",
                ));
            }
        };
        let sa = super::gcp::ServiceAccount::parse(key.expose())
            .map_err(|e| invalid("key", e.to_string()))?;
        let project = match self.project.as_deref().map(str::trim) {
            Some(p) => p.to_string(),
            None => sa
                .project_id
                .clone()
                .ok_or_else(|| invalid("project", "is required: the key names no project_id"))?,
        };
        // Project ids are lowercase letters, digits and hyphens; older ones carry a domain
        // (`example.com:project`). It goes into the request path.
        let plain = !project.is_empty()
            && project.len() <= 100
            && project
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c));
        if !plain {
            return Err(invalid(
                "project",
                format!("{project:?} is not a Google Cloud project id"),
            ));
        }
        Ok((Some(project), Some(key)))
    }

    /// A provider kind's `account` and `key`: the key always, the account where the provider
    /// needs one; both refused on other kinds.
    fn provider_credentials(
        &self,
        kind: Kind,
    ) -> Result<(Option<String>, Option<Secret>), Invalid> {
        if kind == Kind::Provider(Provider::Gcp) {
            return self.gcp_credentials();
        }
        if self.project.is_some() {
            return Err(invalid(
                "project",
                format!("applies to gcp monitors, not {}", kind.as_str()),
            ));
        }
        let Some(provider) = kind.provider() else {
            for (field, set) in [
                ("account", self.account.is_some()),
                ("key", self.key.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        field,
                        format!("applies to provider monitors, not {}", kind.as_str()),
                    ));
                }
            }
            return Ok((None, None));
        };
        let key = match &self.key {
            Some(k) if !k.expose().trim().is_empty() && !k.expose().contains(['\r', '\n']) => {
                Secret(k.expose().trim().to_string())
            }
            Some(_) => return Err(invalid("key", "must be non-empty, on one line")),
            None => {
                return Err(invalid(
                    "key",
                    format!("is required: the {} API key", provider.as_str()),
                ));
            }
        };
        let account = match (
            provider.needs().account,
            self.account.as_deref().map(str::trim),
        ) {
            (Some(_), Some(a))
                if !a.is_empty()
                    && a.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Some(a.to_string())
            }
            (Some(what), Some(_)) => {
                return Err(invalid("account", format!("is not a valid {what}")));
            }
            (Some(what), None) => {
                return Err(invalid(
                    "account",
                    format!("is required for {} monitors: the {what}", provider.as_str()),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "account",
                    format!("{} monitors take no account", provider.as_str()),
                ));
            }
            (None, None) => None,
        };
        Ok((account, Some(key)))
    }

    fn tls_options(&self, kind: Kind, target: &str) -> Result<TlsOptions, Invalid> {
        let speaks_tls = match kind {
            Kind::Redis => target.starts_with("rediss://"),
            _ => true,
        };
        let set = self.server_name.is_some() || self.ca_file.is_some() || self.insecure.is_some();
        if set && !speaks_tls {
            let field = if self.server_name.is_some() {
                "server_name"
            } else if self.ca_file.is_some() {
                "ca_file"
            } else {
                "insecure"
            };
            return Err(invalid(field, "applies to rediss:// targets only"));
        }
        if let Some(name) = &self.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(invalid(
                "server_name",
                format!("{name:?} is not a DNS name or IP address"),
            ));
        }
        let trust = match (&self.ca_file, self.insecure) {
            (Some(_), Some(true)) => {
                return Err(invalid(
                    "insecure",
                    "give either ca_file or insecure, not both",
                ));
            }
            (Some(path), _) => {
                super::probes::tls::read_ca_file(std::path::Path::new(path))
                    .map_err(|p| invalid("ca_file", p))?;
                Trust::CaFile(PathBuf::from(path))
            }
            (None, Some(true)) => Trust::Insecure,
            (None, _) => Trust::System,
        };
        Ok(TlsOptions {
            server_name: self.server_name.clone(),
            trust,
        })
    }
}

/// The degraded rule a tls monitor gets when it declares none.
pub const DEFAULT_TLS_DEGRADED: &str = "[CERTIFICATE_EXPIRATION] < 14d";

/// Whether a kind's checks ever see what `subject` reads.
fn applies(subject: &Subject, kind: Kind) -> bool {
    use Kind::*;
    match subject {
        Subject::ResponseTime => true,
        Subject::Status | Subject::Header(_) => matches!(kind, Http | Provider(_) | Token(_)),
        Subject::Body | Subject::Json(_) => {
            matches!(
                kind,
                Http | Dns | Postgres | Redis | Smtp | Provider(_) | Token(_)
            )
        }
        // Redis only over rediss://; a plain target reads it as absent.
        Subject::CertificateExpiration => matches!(kind, Http | Tls | Smtp | Redis),
        Subject::DnsRcode => kind == Dns,
    }
}

fn check_target(kind: Kind, target: &str) -> Result<(), String> {
    check_target_form(kind, target)?;
    check_destination(kind, target)
}

/// Refuses a target whose literal address no monitor may reach (link-local, cloud metadata
/// and the other always-refused ranges, in any spelling), so such a monitor is never saved.
/// A host name is judged each time a check resolves it.
fn check_destination(kind: Kind, target: &str) -> Result<(), String> {
    let guard = Guard::private_allowed();
    let refused = |e: GuardError| format!("destination refused: {e}");
    match kind {
        Kind::Http | Kind::Provider(_) | Kind::Token(_) => match reqwest::Url::parse(target) {
            Ok(url) => guard.check_url(&url).map_err(refused),
            Err(_) => Ok(()),
        },
        Kind::Tcp | Kind::Tls | Kind::Smtp => {
            let (host, _) = host_port(target)?;
            guard.check_host(&host).map_err(refused)
        }
        Kind::Redis => {
            let t = super::probes::redis::Target::parse(target)?;
            guard.check_host(&t.host).map_err(refused)
        }
        Kind::Postgres => match target.parse::<sqlx::postgres::PgConnectOptions>() {
            Ok(options) if options.get_socket().is_none() => {
                guard.check_host(options.get_host()).map_err(refused)
            }
            _ => Ok(()),
        },
        // The target is the name asked about, not a destination; the nameserver is checked
        // with its own field.
        Kind::Dns => Ok(()),
    }
}

fn check_target_form(kind: Kind, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("is required".into());
    }
    match kind {
        Kind::Http => {
            let url =
                reqwest::Url::parse(target).map_err(|e| format!("{target:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{target:?}: an http monitor needs an http(s) URL"));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("{target:?} has no host"));
            }
            Ok(())
        }
        Kind::Tcp | Kind::Tls | Kind::Smtp => host_port(target).map(|_| ()),
        Kind::Dns => super::probes::dns::check_name(target),
        Kind::Postgres => {
            // Never echo the target: it may carry a password.
            let url = reqwest::Url::parse(target)
                .map_err(|_| "postgres kind needs a postgres:// URL".to_string())?;
            if !matches!(url.scheme(), "postgres" | "postgresql") {
                return Err("postgres kind needs a postgres:// URL".into());
            }
            target
                .parse::<sqlx::postgres::PgConnectOptions>()
                .map(|_| ())
                .map_err(|e| {
                    let text = e.to_string();
                    match url.password() {
                        Some(p) if !p.is_empty() => text.replace(p, "***"),
                        _ => text,
                    }
                })
                .map_err(|e| format!("not a usable postgres URL: {e}"))
        }
        Kind::Redis => super::probes::redis::Target::parse(target).map(|_| ()),
        Kind::Provider(_) | Kind::Token(_) => {
            let Ok(url) = reqwest::Url::parse(target) else {
                return Err(format!(
                    "{target:?} is not a URL: {} monitors take the API base, e.g. {}",
                    kind.as_str(),
                    kind.default_base().unwrap_or("https://n8n.example.com")
                ));
            };
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty)
            {
                return Err(format!(
                    "{target:?}: the API base must be an http(s) URL with a host"
                ));
            }
            if url.password().is_some() || url.query().is_some() {
                let instead = if matches!(kind, Kind::Token(_)) {
                    "credential"
                } else {
                    "key and account"
                };
                return Err(format!(
                    "the API base carries no credentials or query; use {instead}"
                ));
            }
            Ok(())
        }
    }
}

/// A nameserver as `host:port`, or an IP address meaning port 53 → (host, port).
pub fn nameserver_addr(text: &str) -> Result<(String, u16), String> {
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok((ip.to_string(), 53));
    }
    host_port(text)
}

/// `host:port` (IPv6 in brackets) → (host, port).
pub fn host_port(target: &str) -> Result<(String, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{target:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{target:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(format!("{target:?}: {host:?} is not a host"));
    }
    Ok((host.to_string(), port))
}

/// `"30s"`, `"500ms"`, `"5m"`, `"1h"` → a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} needs a unit (ms, s, m, h)"))?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a duration"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, target: &str) -> MonitorSpec {
        MonitorSpec {
            name: "api".into(),
            kind: kind.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_definition_gets_its_defaults() {
        let m = spec("http", "https://example.com/health")
            .validate()
            .expect("valid");
        assert_eq!(
            (m.interval, m.timeout),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        assert_eq!((m.method.as_str(), m.failure_threshold), ("GET", 1));
        let mut s = spec("tcp", "db.internal:5432");
        s.interval = Some("5s".into());
        let m = s.validate().expect("valid");
        assert_eq!(
            m.timeout,
            Duration::from_secs(5),
            "the timeout never exceeds the interval"
        );
    }

    #[test]
    fn maintenance_windows_cover_their_times() {
        let window = |w: MaintenanceSpec| {
            let mut s = spec("tcp", "a:1");
            s.maintenance = vec![w];
            s.validate().map(|m| m.maintenance[0].clone())
        };
        let once = window(MaintenanceSpec {
            start: Some("2026-12-01T02:00:00Z".into()),
            end: Some("2026-12-01T03:00:00Z".into()),
            ..Default::default()
        })
        .expect("valid");
        let t = 1_796_090_400_000; // 2026-12-01T02:00:00Z, a Tuesday
        assert!(once.contains(t) && once.contains(t + 3_599_999) && !once.contains(t + 3_600_000));
        // Saturdays 23:00-01:00 UTC: Saturday night and the small hours of Sunday.
        let weekly = window(MaintenanceSpec {
            days: vec!["sat".into()],
            from: Some("23:00".into()),
            to: Some("01:00".into()),
            ..Default::default()
        })
        .expect("valid");
        let saturday = t + 4 * 86_400_000; // 2026-12-05T02:00Z
        let hour = 3_600_000;
        assert!(!weekly.contains(saturday));
        assert!(weekly.contains(saturday + 21 * hour), "Saturday 23:00");
        assert!(
            weekly.contains(saturday + 22 * hour + 59 * 60_000),
            "Sunday 00:59"
        );
        assert!(!weekly.contains(saturday + 23 * hour), "Sunday 01:00");
        assert!(!weekly.contains(t + 21 * hour), "not on Tuesday night");
        for (bad, field, why) in [
            (
                MaintenanceSpec {
                    start: Some("soon".into()),
                    end: Some("later".into()),
                    ..Default::default()
                },
                "maintenance[0].start",
                "RFC 3339",
            ),
            (
                MaintenanceSpec {
                    start: Some("2026-12-01T03:00:00Z".into()),
                    end: Some("2026-12-01T02:00:00Z".into()),
                    ..Default::default()
                },
                "maintenance[0].end",
                "after start",
            ),
            (
                MaintenanceSpec {
                    from: Some("25:00".into()),
                    to: Some("01:00".into()),
                    ..Default::default()
                },
                "maintenance[0].from",
                "HH:MM",
            ),
            (
                MaintenanceSpec {
                    days: vec!["someday".into()],
                    from: Some("01:00".into()),
                    to: Some("02:00".into()),
                    ..Default::default()
                },
                "maintenance[0].days",
                "not a day",
            ),
            (
                MaintenanceSpec {
                    from: Some("01:00".into()),
                    ..Default::default()
                },
                "maintenance[0]",
                "either start and end",
            ),
        ] {
            let e = window(bad).expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(why), "{e}");
        }
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases: Vec<(MonitorSpec, &str, &str)> = vec![
            (spec("ping", "x"), "kind", "unknown kind"),
            (spec("http", "not a url"), "target", "not a URL"),
            (spec("http", "ftp://example.com"), "target", "http(s) URL"),
            (spec("tcp", "example.com"), "target", "host:port"),
            (spec("tcp", "example.com:99999"), "target", "not a port"),
            (
                MonitorSpec {
                    interval: Some("500ms".into()),
                    ..spec("tcp", "a:1")
                },
                "interval",
                "at least 1s",
            ),
            (
                MonitorSpec {
                    interval: Some("soon".into()),
                    ..spec("tcp", "a:1")
                },
                "interval",
                "not a duration",
            ),
            (
                MonitorSpec {
                    interval: Some("30".into()),
                    ..spec("tcp", "a:1")
                },
                "interval",
                "needs a unit",
            ),
            (
                MonitorSpec {
                    timeout: Some("2m".into()),
                    ..spec("tcp", "a:1")
                },
                "timeout",
                "at most the interval",
            ),
            (
                MonitorSpec {
                    conditions: vec!["[STATUS] == 200".into(), "[STATUS] = 1".into()],
                    ..spec("http", "http://a")
                },
                "conditions[1]",
                "expected an operator",
            ),
            (
                MonitorSpec {
                    method: Some("BREW".into()),
                    ..spec("http", "http://a")
                },
                "method",
                "unknown HTTP method",
            ),
            (
                MonitorSpec {
                    body: Some("x".into()),
                    ..spec("tcp", "a:1")
                },
                "body",
                "applies to http",
            ),
            (
                MonitorSpec {
                    failure_threshold: Some(0),
                    ..spec("tcp", "a:1")
                },
                "failure_threshold",
                "1 to 100",
            ),
            (
                MonitorSpec {
                    name: " ".into(),
                    ..spec("tcp", "a:1")
                },
                "name",
                "1 to 100",
            ),
        ];
        for (s, field, why) in cases {
            let e = s.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(why), "{e}");
        }
    }

    #[test]
    fn the_documented_example_monitors_validate() {
        let example = crate::config::DEFAULT_TOML;
        let start = example.find("# [[monitors]]").expect("example monitors");
        let block: Vec<&str> = example[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect();
        #[derive(Deserialize)]
        struct Example {
            monitors: Vec<MonitorSpec>,
        }
        let mut parsed: Example = toml::from_str(&block.join("\n")).expect("the example parses");
        // The gcp example's key is a placeholder for a key file's contents, which no example
        // can hold: a generated key stands in for it.
        let (pem, _) = crate::simulators::gcp::generate_key().expect("a key");
        for m in parsed.monitors.iter_mut().filter(|m| m.kind == "gcp") {
            assert_eq!(
                m.key.as_ref().map(Secret::expose),
                Some("${GCP_SERVICE_ACCOUNT_KEY}")
            );
            m.key = Some(Secret(crate::simulators::gcp::key_file(
                &pem,
                super::super::gcp::DEFAULT_TOKEN_URI,
                "my-project",
            )));
        }
        let kinds: Vec<Kind> = parsed
            .monitors
            .iter()
            .map(|m| {
                m.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", m.name))
                    .kind
            })
            .collect();
        for kind in Kind::ALL {
            assert!(kinds.contains(kind), "no example of {kind:?}");
        }
    }

    #[test]
    fn infrastructure_kinds_validate_their_own_fields() {
        let m = spec("smtp", "mail.example.com:465")
            .validate()
            .expect("valid");
        assert_eq!(m.smtp_mode, SmtpMode::Implicit, "465 means implicit TLS");
        let m = spec("smtp", "mail.example.com:587")
            .validate()
            .expect("valid");
        assert_eq!(m.smtp_mode, SmtpMode::StartTls);
        let m = spec("tls", "example.com:443").validate().expect("valid");
        assert_eq!(
            m.degraded_when
                .iter()
                .map(|c| c.text.as_str())
                .collect::<Vec<_>>(),
            [DEFAULT_TLS_DEGRADED]
        );
        let m = MonitorSpec {
            record_type: Some("mx".into()),
            nameserver: Some("1.1.1.1".into()),
            ..spec("dns", "example.com")
        }
        .validate()
        .expect("valid");
        assert_eq!(
            (m.record_type, m.nameserver.as_deref()),
            (RecordType::Mx, Some("1.1.1.1"))
        );
        let m = spec("postgres", "postgres://app:hunter2@db.internal/app")
            .validate()
            .expect("valid");
        assert!(!format!("{m:?}").contains("hunter2"), "{m:?}");
        let m = MonitorSpec {
            username: Some("ops".into()),
            password: Some(Secret("hunter2".into())),
            ..spec("smtp", "mail.example.com:587")
        }
        .validate()
        .expect("valid");
        assert!(!format!("{m:?}").contains("hunter2") && m.credentials.is_some());

        let cases: Vec<(MonitorSpec, &str, &str)> = vec![
            (spec("tls", "example.com"), "target", "host:port"),
            (spec("dns", "exa mple.com"), "target", "not a domain name"),
            (
                spec("postgres", "mysql://root:hunter2@db/app"),
                "target",
                "postgres:// URL",
            ),
            (
                spec(
                    "postgres",
                    "postgres://root:hunter2@db/app?sslmode=sometimes",
                ),
                "target",
                "not a usable postgres URL",
            ),
            (
                spec("redis", "redis://:hunter2@cache/x"),
                "target",
                "database number",
            ),
            (spec("smtp", "mail.example.com"), "target", "host:port"),
            (
                MonitorSpec {
                    record_type: Some("A".into()),
                    ..spec("tcp", "a:1")
                },
                "record_type",
                "applies to dns monitors, not tcp",
            ),
            (
                MonitorSpec {
                    insecure: Some(true),
                    ..spec("http", "https://a")
                },
                "insecure",
                "applies to tls, smtp, redis monitors",
            ),
            (
                MonitorSpec {
                    ca_file: Some("/x.pem".into()),
                    ..spec("postgres", "postgres://db/app")
                },
                "ca_file",
                "sslrootcert",
            ),
            (
                MonitorSpec {
                    insecure: Some(true),
                    ..spec("redis", "redis://cache")
                },
                "insecure",
                "rediss:// targets only",
            ),
            (
                MonitorSpec {
                    ca_file: Some("/nonexistent/ca.pem".into()),
                    ..spec("tls", "a:443")
                },
                "ca_file",
                "/nonexistent/ca.pem",
            ),
            (
                MonitorSpec {
                    record_type: Some("ANY".into()),
                    ..spec("dns", "example.com")
                },
                "record_type",
                "not a record type",
            ),
            (
                MonitorSpec {
                    nameserver: Some("dns.example".into()),
                    ..spec("dns", "example.com")
                },
                "nameserver",
                "host:port",
            ),
            (
                MonitorSpec {
                    query: Some(" ".into()),
                    ..spec("postgres", "postgres://db/app")
                },
                "query",
                "1 to 10000",
            ),
            (
                MonitorSpec {
                    tls_mode: Some("ssl".into()),
                    ..spec("smtp", "a:25")
                },
                "tls_mode",
                "starttls, tls, none",
            ),
            (
                MonitorSpec {
                    username: Some("ops".into()),
                    ..spec("smtp", "a:587")
                },
                "password",
                "required with username",
            ),
            (
                MonitorSpec {
                    username: Some("ops".into()),
                    password: Some(Secret("hunter2".into())),
                    tls_mode: Some("none".into()),
                    ..spec("smtp", "a:25")
                },
                "password",
                "sent in clear",
            ),
            (
                MonitorSpec {
                    conditions: vec!["[STATUS] == 200".into()],
                    ..spec("dns", "example.com")
                },
                "conditions[0]",
                "does not apply to dns monitors",
            ),
            (
                MonitorSpec {
                    degraded_when: vec!["[CERTIFICATE_EXPIRATION] < 7".into()],
                    ..spec("tcp", "a:1")
                },
                "degraded_when[0]",
                "does not apply to tcp monitors",
            ),
        ];
        for (s, field, why) in cases {
            let e = s.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(why), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
