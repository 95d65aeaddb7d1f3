//! Runs one check of one monitor and judges it: `up`, `degraded` or `down`, with the latency,
//! an error that says what was wrong, and the response headers worth keeping (rate limits and
//! quotas). The http and tcp probes live here; the protocol-speaking kinds have theirs in
//! `probes/`. Nothing here stores anything; a check that fails in any way is a result, never a
//! panic or an error that stops the caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conditions::Observation;
use super::monitor::{Kind, Monitor, host_port};
use super::probes;
use crate::net::guard::{Guard, GuardedResolver, guard_error, redirect_policy};

/// Most of a response body a check reads; a bigger body fails the check.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Most readings kept from one check.
const MAX_READINGS: usize = 64;

/// Longest error text kept.
const MAX_ERROR_CHARS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Up,
    Degraded,
    Down,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Up => "up",
            Verdict::Degraded => "degraded",
            Verdict::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "up" => Some(Verdict::Up),
            "degraded" => Some(Verdict::Degraded),
            "down" => Some(Verdict::Down),
            _ => None,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub verdict: Verdict,
    /// Time from start to the verdict, in microseconds.
    pub latency_us: i64,
    /// HTTP status, where there was one.
    pub status: Option<u16>,
    /// Why the check failed or is degraded, in words anyone who may read the monitor may see:
    /// the status, what failed, never what the peer sent.
    pub error: Option<String>,
    /// The same with what the peer sent (a body excerpt, the value a condition read, a
    /// provider's own message), for administrators only; `None` when `error` says it all.
    pub detail: Option<String>,
    /// Rate-limit and quota headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Figures a provider check read (credits, balances, quota use), by name.
    pub readings: Vec<(String, f64)>,
}

/// Response headers kept with a result: what rate limits and quotas say. Never credentials.
fn worth_keeping(name: &str) -> bool {
    name.starts_with("ratelimit")
        || name.starts_with("x-ratelimit")
        || name.starts_with("x-rate-limit")
        || matches!(
            name,
            "retry-after"
                | "x-app-usage"
                | "x-business-use-case-usage"
                | "x-ad-account-usage"
                | "stripe-should-retry"
                | "twilio-concurrent-requests"
        )
}

/// What every check reaches its target through: the destination guard and the HTTP clients
/// built on it. The guard refuses link-local and cloud metadata addresses (and the other
/// always-refused ranges) after DNS resolution, at connect time and at every redirect hop,
/// while loopback and private addresses stay open: monitoring them is what monitors are for.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub guard: Arc<Guard>,
    /// No cookies, up to five redirects (each hop checked), rustls, and the peer certificate
    /// kept with each response for `[CERTIFICATE_EXPIRATION]`.
    pub http: reqwest::Client,
    /// For http monitors that send credentials in custom headers (`X-Api-Key`): redirects are
    /// followed only within the same origin. reqwest drops `Authorization` and cookies on a
    /// redirect to another host, but not headers it cannot know are secret, which a redirect
    /// would hand to whoever the first host points at; a cross-origin redirect is answered as
    /// the 3xx it is.
    pub same_origin: reqwest::Client,
    /// For provider reads, which follow no redirect at all: provider APIs do not redirect
    /// their reads, and a redirect would carry key headers such as `x-key` or `xi-api-key`
    /// to another host. The key goes only to the configured API base.
    pub no_redirect: reqwest::Client,
}

impl Outbound {
    /// The clients for `guard`.
    pub fn new(guard: Guard) -> Outbound {
        let guard = Arc::new(guard);
        let build = |policy| {
            reqwest::Client::builder()
                .dns_resolver(GuardedResolver::new(guard.clone()))
                // A proxy would resolve the target itself, out of the guard's sight.
                .no_proxy()
                .redirect(policy)
                .tls_info(true)
                .user_agent(concat!("opsdeck-monitor/", env!("CARGO_PKG_VERSION")))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default()
        };
        Outbound {
            http: build(redirect_policy(guard.clone(), 5, false)),
            same_origin: build(redirect_policy(guard.clone(), 5, true)),
            no_redirect: build(reqwest::redirect::Policy::none()),
            guard,
        }
    }
}

/// The checks' clients under the monitors' policy: private and loopback allowed, link-local
/// and metadata refused.
pub fn outbound() -> Outbound {
    Outbound::new(Guard::private_allowed())
}

/// Runs one check of `monitor`, bounded by its timeout.
pub async fn run(monitor: &Monitor, out: &Outbound) -> CheckResult {
    run_with(monitor, out, None).await
}

/// [`run`] with the OAuth credentials' current access tokens, which the token kinds
/// (`google_oauth`, `google_calendar`, `meta`) need.
pub async fn run_with(
    monitor: &Monitor,
    out: &Outbound,
    tokens: Option<&crate::tokens::Vault>,
) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(monitor.timeout, probe(monitor, out, tokens)).await;
    let elapsed = started.elapsed();
    let probe = match outcome {
        Ok(p) => p,
        Err(_) => Probe::failed(format!("timed out after {}", humanize(monitor.timeout))),
    };
    judge(monitor, probe, elapsed)
}

/// What a probe saw before any condition is applied.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub failure: Option<String>,
    pub status: Option<u16>,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
    pub certificate_days: Option<f64>,
    pub dns_rcode: Option<String>,
    /// The peer's own answer says it works, but not fully (a provider account with a warning).
    pub degraded: Option<String>,
    /// Figures read from a provider, by name.
    pub readings: Vec<(String, f64)>,
    /// `failure` (or `degraded`) with what the peer said, for administrators only.
    pub detail: Option<String>,
}

impl Probe {
    pub fn failed(why: impl Into<String>) -> Self {
        Probe {
            failure: Some(why.into()),
            ..Default::default()
        }
    }
}

async fn probe(monitor: &Monitor, out: &Outbound, tokens: Option<&crate::tokens::Vault>) -> Probe {
    let guard = &*out.guard;
    match monitor.kind {
        Kind::Http => http(monitor, out).await,
        Kind::Tcp => tcp(&monitor.target, guard).await,
        Kind::Tls => probes::tls::probe(monitor, guard).await,
        Kind::Dns => probes::dns::probe(monitor, guard).await,
        Kind::Postgres => probes::postgres::probe(monitor, guard).await,
        Kind::Redis => probes::redis::probe(monitor, guard).await,
        Kind::Smtp => probes::smtp::probe(monitor, guard).await,
        Kind::Provider(p) => provider(monitor, p, out).await,
        Kind::Token(t) => crate::tokens::checks::probe(monitor, t, &out.http, tokens).await,
    }
}

async fn http(monitor: &Monitor, out: &Outbound) -> Probe {
    let method = reqwest::Method::from_bytes(monitor.method.as_bytes()).unwrap_or_default();
    let guarded = monitor.headers.iter().any(|(k, _)| {
        super::definition::sensitive(k)
            && !matches!(
                k.to_ascii_lowercase().as_str(),
                "authorization" | "cookie" | "proxy-authorization"
            )
    });
    // The first hop's literal address; later hops are checked by the redirect policy, and
    // every name by the guarded resolver.
    if let Ok(url) = reqwest::Url::parse(&monitor.target)
        && let Err(refused) = out.guard.check_url(&url)
    {
        return Probe::failed(refused_reason(&refused));
    }
    let req = if guarded {
        out.same_origin.request(method, &monitor.target)
    } else {
        out.http.request(method, &monitor.target)
    };
    let mut req = req;
    for (k, v) in &monitor.headers {
        req = req.header(k, v);
    }
    if let Some(body) = &monitor.body {
        req = req.body(body.clone());
    }
    let res = match req.send().await {
        Ok(r) => r,
        Err(e) => return Probe::failed(transport_failure(e)),
    };
    let status = res.status().as_u16();
    let certificate_days = res
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .and_then(probes::tls::not_after)
        .map(|end| (end - time::OffsetDateTime::now_utc().unix_timestamp()) as f64 / 86_400.0);
    let headers = lowercase_headers(res.headers());
    let body = match read_body(res).await {
        Ok(body) => body,
        Err(why) => {
            return Probe {
                failure: Some(why),
                status: Some(status),
                headers,
                ..Probe::default()
            };
        }
    };
    Probe {
        status: Some(status),
        body: Some(String::from_utf8_lossy(&body).into_owned()),
        headers,
        certificate_days,
        ..Probe::default()
    }
}

/// Why a request failed, without its URL (a query string may carry a key); a refusal by the
/// destination guard, at the first hop or a redirect, says so plainly.
pub(crate) fn transport_failure(e: reqwest::Error) -> String {
    match guard_error(&e) {
        Some(refused) if refused.is_refusal() => refused_reason(refused),
        _ => describe(&e.without_url()),
    }
}

/// The text a check records when the guard refuses its destination.
pub(crate) fn refused_reason(refused: &crate::net::guard::GuardError) -> String {
    format!("destination refused: {refused}")
}

/// A response's headers as (lowercase name, value) pairs.
pub(crate) fn lowercase_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Reads a response body of at most [`MAX_BODY_BYTES`]; a bigger one, or one that breaks off,
/// is an error saying so (without the URL).
pub(crate) async fn read_body(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!("response body over {} KiB", MAX_BODY_BYTES / 1024));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the body: {}", describe(&e.without_url()))),
        }
    }
}

/// A provider kind: its check, with the readings as `[BODY]` (a JSON object) so conditions such
/// as `[BODY].credits < 100` work, and the provider's own verdict on its answer.
async fn provider(
    monitor: &Monitor,
    provider: super::providers::Provider,
    out: &Outbound,
) -> Probe {
    let target = super::providers::ProviderTarget {
        provider,
        base: monitor.target.clone(),
        account: monitor.account.clone(),
        key: monitor.key.clone().unwrap_or_default(),
        metric_types: monitor.metric_types.clone(),
    };
    let seen = super::providers::check(&target, out).await;
    // A gateway may echo what it was sent: the key and account never reach an error.
    let secrets = [
        target.key.expose(),
        target.account.as_deref().unwrap_or_default(),
    ];
    let scrub = |why: String| probes::redact(&why, &secrets);
    let readings: serde_json::Map<String, serde_json::Value> = seen
        .readings
        .iter()
        .map(|r| (r.name.clone(), serde_json::json!(r.value)))
        .collect();
    let (failure, degraded) = match seen.problem {
        Some((Verdict::Down, why)) => (Some(scrub(why)), None),
        Some((_, why)) => (None, Some(scrub(why))),
        None => (None, None),
    };
    Probe {
        failure,
        degraded,
        detail: seen.detail.map(scrub),
        status: seen.status,
        body: Some(serde_json::Value::Object(readings).to_string()),
        headers: seen.headers,
        // Bounded: reading names can come from an answer (currencies), which a broken peer
        // could make endless.
        readings: seen
            .readings
            .into_iter()
            .filter(|r| r.value.is_finite())
            .take(MAX_READINGS)
            .map(|r| (r.name, r.value))
            .collect(),
        ..Probe::default()
    }
}

async fn tcp(target: &str, guard: &Guard) -> Probe {
    let (host, port) = match host_port(target) {
        Ok(hp) => hp,
        Err(e) => return Probe::failed(e),
    };
    match probes::connect(guard, &host, port).await {
        Ok(_) => Probe::default(),
        Err(e) => Probe::failed(e),
    }
}

/// Applies the monitor's conditions to what the probe saw.
fn judge(monitor: &Monitor, probe: Probe, elapsed: Duration) -> CheckResult {
    let latency_us = i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX);
    let kept: Vec<(String, String)> = probe
        .headers
        .iter()
        .filter(|(k, _)| worth_keeping(k))
        .cloned()
        .collect();
    // A peer may echo what it was sent (a failed `[BODY]` condition quotes the body), so the
    // monitor's own credentials never reach a stored error.
    // Only a failed check has an error to clean, so the work stays off the passing path.
    let clean = |e: String| {
        let secrets = own_secrets(monitor);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        truncate(&probes::redact(&e, &secrets))
    };
    let result = |verdict, error: Option<String>, detail: Option<String>| CheckResult {
        verdict,
        latency_us,
        status: probe.status,
        error: error.map(clean),
        detail: detail.map(clean),
        headers: kept.clone(),
        readings: probe.readings.clone(),
    };
    if let Some(why) = &probe.failure {
        return result(Verdict::Down, Some(why.clone()), probe.detail.clone());
    }
    let seen = Observation {
        status: probe.status,
        latency_ms: elapsed.as_secs_f64() * 1000.0,
        body: probe.body.as_deref(),
        headers: &probe.headers,
        certificate_days: probe.certificate_days,
        dns_rcode: probe.dns_rcode.as_deref(),
    };
    if monitor.conditions.is_empty()
        && let Some(why) = default_failure(monitor, &probe)
    {
        return result(Verdict::Down, Some(why), None);
    }
    let failed: Vec<(&super::conditions::Condition, String)> = monitor
        .conditions
        .iter()
        .filter_map(|c| c.check(&seen).err().map(|why| (c, why)))
        .collect();
    if !failed.is_empty() {
        // A condition on the body, a JSON value or a header would quote what the peer sent
        // ("was …"): others see which condition failed, administrators also what was read.
        let public: Vec<String> = failed
            .iter()
            .map(|(c, why)| {
                if c.quotes_peer() {
                    format!("condition failed: {}", c.text)
                } else {
                    why.clone()
                }
            })
            .collect();
        let public = public.join("; ");
        let detail: Vec<&str> = failed.iter().map(|(_, why)| why.as_str()).collect();
        let detail = detail.join("; ");
        let detail = (detail != public).then_some(detail);
        return result(Verdict::Down, Some(public), detail);
    }
    let degraded: Vec<String> = probe
        .degraded
        .iter()
        .cloned()
        .chain(
            monitor
                .degraded_when
                .iter()
                .filter(|c| c.check(&seen).is_ok())
                .map(|c| c.text.clone()),
        )
        .collect();
    if !degraded.is_empty() {
        return result(
            Verdict::Degraded,
            Some(degraded.join("; ")),
            probe.detail.clone(),
        );
    }
    result(Verdict::Up, None, None)
}

/// The credentials a monitor sends: values of sensitive headers, the URL's password or bare
/// user name, sensitive query values and token-like path segments, sensitive fields of a JSON
/// or form body, and its password or key. Short values (under 6 characters) are left out: they
/// would blank ordinary words rather than protect anything.
fn own_secrets(monitor: &Monitor) -> Vec<String> {
    use super::definition::{secret_like, sensitive};
    let mut out: Vec<String> = monitor
        .headers
        .iter()
        .filter(|(k, _)| sensitive(k))
        .flat_map(|(_, v)| {
            // `Bearer abc…`: the token alone too, as a peer may quote it without the scheme.
            let token = v.split_whitespace().last().unwrap_or_default().to_string();
            [v.clone(), token]
        })
        .collect();
    if let Ok(url) = reqwest::Url::parse(&monitor.target) {
        match url.password() {
            Some(p) => out.push(p.to_string()),
            None => out.push(url.username().to_string()),
        }
        out.extend(
            url.query_pairs()
                .filter(|(k, _)| sensitive(k))
                .map(|(_, v)| v.into_owned()),
        );
        if let Some(segments) = url.path_segments() {
            out.extend(segments.filter(|s| secret_like(s)).map(str::to_string));
        }
    }
    if let Some(body) = &monitor.body {
        if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(body) {
            super::definition::each_sensitive_json(&mut json, &mut |v| {
                if let Some(s) = v.as_str() {
                    out.push(s.to_string());
                }
            });
        } else {
            out.extend(body.split('&').filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                sensitive(k).then(|| v.to_string())
            }));
        }
    }
    if let Some((_, password)) = &monitor.credentials {
        out.push(password.expose().to_string());
    }
    if let Some(key) = &monitor.key {
        out.push(key.expose().to_string());
    }
    out.retain(|s| s.len() >= 6);
    // Longest first, so a token inside a longer header value is not left half-shown.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// What fails a check that has no conditions of its own: an HTTP status outside 2xx; a DNS
/// answer that is not NOERROR or has no records of the type asked for.
fn default_failure(monitor: &Monitor, probe: &Probe) -> Option<String> {
    // A provider read judges its own status (a 429 is degraded, not down).
    if let Some(status) = probe.status
        && !(200..300).contains(&status)
        && !matches!(monitor.kind, Kind::Provider(_))
    {
        return Some(format!("HTTP {status}"));
    }
    if let Some(rcode) = &probe.dns_rcode {
        if rcode != "NOERROR" {
            return Some(format!("DNS {rcode}"));
        }
        if probe.body.as_deref().is_none_or(str::is_empty) {
            return Some(format!("no {} records", monitor.record_type.as_str()));
        }
    }
    None
}

/// A transport error with its causes, which is where reqwest puts the useful part.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_ERROR_CHARS).collect();
    out.push('…');
    out
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::monitor::MonitorSpec;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    /// A local server with a switch for every way a peer can answer.
    async fn peer() -> String {
        let app = Router::new()
            .route(
                "/ok",
                get(|| async {
                    (
                        [("content-type", "application/json")],
                        r#"{"status":"ok","db":{"lag":3}}"#,
                    )
                }),
            )
            .route(
                "/down",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "late"
                }),
            )
            .route("/html", get(|| async { "<html>not json</html>" }))
            .route("/huge", get(|| async { "x".repeat(MAX_BODY_BYTES + 10) }))
            .route(
                "/limited",
                get(|| async {
                    let mut h = HeaderMap::new();
                    h.insert("ratelimit-remaining", "17".parse().expect("header"));
                    h.insert(
                        "x-app-usage",
                        r#"{"call_count":12}"#.parse().expect("header"),
                    );
                    h.insert("set-cookie", "session=secret".parse().expect("header"));
                    (h, "ok")
                }),
            )
            .route(
                "/trickle",
                get(|| async {
                    // Headers at once, then a body that never ends.
                    let stream = futures_util::stream::unfold(0u8, |n| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((
                            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b".")),
                            n,
                        ))
                    });
                    axum::body::Body::from_stream(stream)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn monitor(kind: &str, target: String, conditions: &[&str], degraded: &[&str]) -> Monitor {
        MonitorSpec {
            name: "m".into(),
            kind: kind.into(),
            target,
            timeout: Some("1s".into()),
            conditions: conditions.iter().map(|c| c.to_string()).collect(),
            degraded_when: degraded.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
        .validate()
        .expect("valid monitor")
    }

    #[tokio::test]
    async fn http_checks_judge_what_the_peer_answers() {
        let base = peer().await;
        let client = outbound();
        let run = |path: &str, conditions: &[&str], degraded: &[&str]| {
            let m = monitor("http", format!("{base}{path}"), conditions, degraded);
            let client = client.clone();
            async move { run(&m, &client).await }
        };
        let r = run("/ok", &["[STATUS] == 200", "[BODY].db.lag < 10"], &[]).await;
        assert_eq!(
            (r.verdict, r.status, r.error.as_deref()),
            (Verdict::Up, Some(200), None)
        );
        let r = run("/ok", &["[BODY].db.lag < 2"], &[]).await;
        assert_eq!(r.verdict, Verdict::Down);
        // What the body held is for administrators (`detail`); everyone sees the condition.
        assert_eq!(
            r.error.as_deref(),
            Some("condition failed: [BODY].db.lag < 2")
        );
        assert_eq!(r.detail.as_deref(), Some("[BODY].db.lag < 2: was 3"));
        // No conditions: any 2xx passes, anything else fails with the status.
        let r = run("/down", &[], &[]).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("HTTP 503"))
        );
        let r = run("/slow", &[], &["[RESPONSE_TIME] > 200ms"]).await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        assert!(r.latency_us >= 300_000);
        let r = run("/html", &["[BODY].status == ok"], &[]).await;
        assert!(
            r.detail.as_deref().is_some_and(|e| e.contains("not JSON")),
            "{r:?}"
        );
        let r = run("/huge", &[], &[]).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("over 1024 KiB")),
            "{r:?}"
        );
        let r = run("/trickle", &[], &[]).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("timed out after 1s"))
        );
        // Rate-limit headers are kept; anything else (a cookie) is not.
        let r = run("/limited", &[], &[]).await;
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["ratelimit-remaining", "x-app-usage"]);
    }

    #[tokio::test]
    async fn connection_failures_are_results_and_keep_secrets_out() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let client = outbound();
        let r = run(&monitor("tcp", closed.to_string(), &[], &[]), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("refused")),
            "{r:?}"
        );
        let m = monitor(
            "http",
            format!("http://{closed}/v1?api_key=sk_live_secret"),
            &[],
            &[],
        );
        let r = run(&m, &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        let e = r.error.unwrap_or_default();
        assert!(!e.contains("sk_live_secret") && !e.is_empty(), "{e}");
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = open.local_addr().expect("addr");
        let r = run(&monitor("tcp", addr.to_string(), &[], &[]), &client).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
    }

    /// A peer that echoes the request (method, headers, body) back as JSON, and one that
    /// redirects to another origin: the monitor sends what it declares, its credentials never
    /// reach a stored error, and a custom key header never follows a redirect off its host.
    #[tokio::test]
    async fn http_checks_send_what_is_declared_and_keep_credentials_home() {
        use axum::routing::any;
        let seen_elsewhere = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen_elsewhere.clone();
        let elsewhere = Router::new().route(
            "/",
            any(move |headers: HeaderMap| {
                let log = log.clone();
                async move {
                    let keys: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
                    log.lock().expect("log").extend(keys);
                    "landed"
                }
            }),
        );
        let other = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let other_url = format!("http://{}/", other.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(other, elsewhere).await });
        let to = other_url.clone();
        let app = Router::new()
            .route(
                "/echo",
                any(
                    |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                        let headers: serde_json::Map<String, serde_json::Value> = headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
                            .collect();
                        axum::Json(serde_json::json!({
                            "method": method.as_str(), "headers": headers, "body": body,
                            "status": "degraded"
                        }))
                    },
                ),
            )
            .route(
                "/moved",
                any(move || {
                    let to = to.clone();
                    async move { (StatusCode::FOUND, [("location", to)], "") }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let spec = |path: &str, conditions: &[&str]| MonitorSpec {
            name: "m".into(),
            kind: "http".into(),
            target: format!("{base}{path}?api_key=qk_7f3e9a1b2c"),
            timeout: Some("2s".into()),
            method: Some("POST".into()),
            headers: [
                ("X-Api-Key".to_string(), "hk_5d8c2e7f4a".to_string()),
                ("X-Trace".to_string(), "visible".to_string()),
            ]
            .into_iter()
            .collect(),
            body: Some(r#"{"client_secret":"bs_9a8b7c6d5e","q":"ping"}"#.into()),
            conditions: conditions.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        let m = spec(
            "/echo",
            &[
                r#"[BODY].method == "POST""#,
                r#"[BODY].headers.x-trace == "visible""#,
                r#"[BODY].status == "ok""#,
            ],
        )
        .validate()
        .expect("valid");
        let r = run(&m, &outbound()).await;
        assert_eq!(r.verdict, Verdict::Down, "{r:?}");
        let error = r.detail.clone().unwrap_or_default();
        assert!(
            error.contains("degraded"),
            "the failed condition is reported: {error}"
        );
        let public = r.error.clone().unwrap_or_default();
        assert_eq!(public, r#"condition failed: [BODY].status == "ok""#);
        assert!(
            !error.contains("[BODY].method") && !error.contains("x-trace"),
            "the conditions on what was sent hold: {error}"
        );
        let echoed = r#"[BODY].headers.x-api-key == "hk_5d8c2e7f4a""#;
        let m = spec("/echo", &[echoed, r#"[BODY].body == "nothing""#])
            .validate()
            .expect("valid");
        let r = run(&m, &outbound()).await;
        let error = format!("{:?} {:?}", r.error, r.detail);
        assert_eq!(r.verdict, Verdict::Down, "{r:?}");
        for secret in ["hk_5d8c2e7f4a", "bs_9a8b7c6d5e", "qk_7f3e9a1b2c"] {
            assert!(!error.contains(secret), "{secret} in {error}");
        }

        // The key header does not follow the redirect to another origin: the 302 is the answer.
        let m = spec("/moved", &["[STATUS] == 302"])
            .validate()
            .expect("valid");
        let r = run(&m, &outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        assert!(seen_elsewhere.lock().expect("log").is_empty());
        // Without a custom key header the redirect is followed as before.
        let mut plain = spec("/moved", &["[STATUS] == 200"]);
        plain.headers.clear();
        let r = run(&plain.validate().expect("valid"), &outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        assert!(!seen_elsewhere.lock().expect("log").is_empty());
    }
}
