//! Monitor definitions: what to check, how often, and what counts as up, degraded or down.
//! One validator serves `[[monitors]]` in config and the JSON API, so both refuse the same
//! things with the same field names.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// Every kind a monitor can have. The generic kinds check a protocol; the provider kinds make
/// the provider's cheapest authenticated read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Http,
    Tcp,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::Http, Kind::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
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
    /// A URL, `host:port` or connection URL, as the kind needs.
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
}

/// A validated monitor, ready to run.
#[derive(Debug, Clone)]
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
        let target = self.target.trim();
        check_target(kind, target).map_err(|p| invalid("target", p))?;
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
        let http_only = [
            ("method", self.method.is_some()),
            ("headers", !self.headers.is_empty()),
            ("body", self.body.is_some()),
        ];
        if kind != Kind::Http
            && let Some((field, _)) = http_only.iter().find(|(_, set)| *set)
        {
            return Err(invalid(
                field,
                format!("applies to http monitors, not {}", kind.as_str()),
            ));
        }
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
        let degraded_when = parse_all("degraded_when", &self.degraded_when)?;
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
        })
    }
}

fn check_target(kind: Kind, target: &str) -> Result<(), String> {
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
        Kind::Tcp => host_port(target).map(|_| ()),
    }
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
}
