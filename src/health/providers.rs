//! Provider-aware checks: for each provider opsdeck knows, its cheapest authenticated read
//! (from the providers' API references), how to judge the answer, and the figures worth
//! keeping from it (balances, credits, quota use, rate-limit headroom) as named readings. A
//! provider answering garbage — non-JSON, the wrong shape, an error envelope — fails the check
//! with a reason that names what was wrong; credentials never appear in one.

use base64::Engine as _;
use serde_json::Value;

use super::checks::Verdict;

/// The providers with a dedicated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Stripe,
    N8n,
    Twilio,
    Vonage,
    Retell,
    DigitalOcean,
    Supabase,
    Luma,
    Kling,
    Bfl,
    ElevenLabs,
    PiApi,
    OpenAi,
    /// Google Cloud, with a service-account key (`gcp.rs`).
    Gcp,
}

/// What a provider check needs besides the base URL: which credentials, named as the monitor
/// fields that hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// `account`: Twilio's Account SID, Vonage's API key, Supabase's project ref, Kling's
    /// access key.
    pub account: Option<&'static str>,
}

impl Provider {
    pub const ALL: &'static [Provider] = &[
        Provider::Stripe,
        Provider::N8n,
        Provider::Twilio,
        Provider::Vonage,
        Provider::Retell,
        Provider::DigitalOcean,
        Provider::Supabase,
        Provider::Luma,
        Provider::Kling,
        Provider::Bfl,
        Provider::ElevenLabs,
        Provider::PiApi,
        Provider::OpenAi,
        Provider::Gcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::N8n => "n8n",
            Provider::Twilio => "twilio",
            Provider::Vonage => "vonage",
            Provider::Retell => "retell",
            Provider::DigitalOcean => "digitalocean",
            Provider::Supabase => "supabase",
            Provider::Luma => "luma",
            Provider::Kling => "kling",
            Provider::Bfl => "bfl",
            Provider::ElevenLabs => "elevenlabs",
            Provider::PiApi => "piapi",
            Provider::OpenAi => "openai",
            Provider::Gcp => "gcp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    /// The production API base; a monitor's `target` overrides it (tests, the demo, proxies,
    /// regional endpoints). n8n is self-hosted and has none.
    pub fn default_base(self) -> Option<&'static str> {
        Some(match self {
            Provider::Stripe => "https://api.stripe.com",
            Provider::N8n => return None,
            Provider::Twilio => "https://api.twilio.com",
            Provider::Vonage => "https://rest.nexmo.com",
            Provider::Retell => "https://api.retellai.com",
            Provider::DigitalOcean => "https://api.digitalocean.com",
            Provider::Supabase => "https://api.supabase.com",
            Provider::Luma => "https://api.lumalabs.ai",
            Provider::Kling => "https://api.klingai.com",
            Provider::Bfl => "https://api.bfl.ai",
            Provider::ElevenLabs => "https://api.elevenlabs.io",
            Provider::PiApi => "https://api.piapi.ai",
            Provider::OpenAi => "https://api.openai.com",
            // The Cloud Monitoring API; the token endpoint comes from the key file.
            Provider::Gcp => "https://monitoring.googleapis.com",
        })
    }

    pub fn needs(self) -> Needs {
        Needs {
            account: match self {
                Provider::Twilio => Some("Account SID (AC…)"),
                Provider::Vonage => Some("API key"),
                Provider::Supabase => Some("project ref"),
                Provider::Kling => Some("access key"),
                _ => None,
            },
        }
    }
}

/// Where and as whom a provider check reads.
#[derive(Debug, Clone)]
pub struct ProviderTarget {
    pub provider: Provider,
    /// The API base without a trailing slash.
    pub base: String,
    pub account: Option<String>,
    /// The API key, token or secret (its `Debug` shows `***`); for gcp the service-account
    /// key file.
    pub key: super::monitor::Secret,
    /// gcp: the Cloud Monitoring metric types read, the first by the health read.
    pub metric_types: Vec<String>,
}

/// One figure read from a provider, e.g. `credits` = 1520.5.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub name: String,
    pub value: f64,
}

fn reading(name: impl Into<String>, value: f64) -> Reading {
    Reading {
        name: name.into(),
        value,
    }
}

/// What a provider check saw: the HTTP status of the last request, the headers of it worth
/// keeping, the verdict the provider's answer implies, and the readings.
#[derive(Debug, Default)]
pub struct Seen {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// `Some` when the answer itself says the service is not fine (`Down` or `Degraded`), with
    /// why; `None` when it is.
    pub problem: Option<(Verdict, String)>,
    /// The problem with what the provider said in its own words (its error message, the
    /// value that did not fit), for administrators only; `None` when `problem` says it all.
    pub detail: Option<String>,
    pub readings: Vec<Reading>,
}

impl Seen {
    fn failed(status: Option<u16>, headers: Vec<(String, String)>, why: String) -> Self {
        Seen {
            status,
            headers,
            problem: Some((Verdict::Down, why)),
            detail: None,
            readings: Vec::new(),
        }
    }

    /// Down with `public` for everyone and `detail` (quoting the answer) for administrators.
    pub(crate) fn failed_detail(
        status: Option<u16>,
        headers: Vec<(String, String)>,
        public: String,
        detail: String,
    ) -> Self {
        Seen {
            detail: (detail != public).then_some(detail),
            ..Seen::failed(status, headers, public)
        }
    }
}

/// An answer read whole (within the body cap) and parsed as JSON.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
}

/// A provider's JSON answer, or why there is none: the status (when there was an answer),
/// its headers (names lowercase) and a reason naming the status and, where the provider sent
/// one, its own error message — never the request, which may carry a key in its query string.
pub(crate) struct JsonAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub json: Value,
}

pub(crate) struct JsonFailure {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// Why, with the provider's own error message where it sent one.
    pub why: String,
    /// Why without anything the provider wrote: the status and what opsdeck concluded.
    pub public: String,
}

/// Sends `req` and reads a JSON answer of at most the body cap; shared by the health reads
/// and the extras collections.
pub(crate) async fn get_json(req: reqwest::RequestBuilder) -> Result<JsonAnswer, JsonFailure> {
    let failed = |status, headers, why: String| JsonFailure {
        status,
        headers,
        public: why.clone(),
        why,
    };
    let res = req
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| failed(None, Vec::new(), super::checks::transport_failure(e)))?;
    let status = res.status().as_u16();
    let headers = super::checks::lowercase_headers(res.headers());
    let body = super::checks::read_body(res)
        .await
        .map_err(|why| failed(Some(status), headers.clone(), why))?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !(200..300).contains(&status) {
        let mut limited = String::new();
        if status == 429 {
            limited.push_str(" (rate limited");
            if let Some((_, v)) = headers.iter().find(|(k, _)| k == "retry-after") {
                limited.push_str(&format!("; retry after {v} s"));
            }
            limited.push(')');
        }
        // The provider's message is its answer's text: administrators see it, others the status.
        let public = format!("HTTP {status}{limited}");
        let why = match json.as_ref().and_then(error_message) {
            Some(message) => format!("HTTP {status}: {message}{limited}"),
            None => public.clone(),
        };
        return Err(JsonFailure {
            status: Some(status),
            headers,
            why,
            public,
        });
    }
    match json {
        Some(json) => Ok(JsonAnswer {
            status,
            headers,
            json,
        }),
        None => Err(failed(
            Some(status),
            headers,
            "the answer is not JSON".into(),
        )),
    }
}

/// [`get_json`] as a health read: a failure is a `Down` observation.
async fn fetch(req: reqwest::RequestBuilder) -> Result<Answer, Seen> {
    get_json(req)
        .await
        .map(|a| Answer {
            status: a.status,
            headers: a.headers,
            json: a.json,
        })
        .map_err(|f| Seen::failed_detail(f.status, f.headers, f.public, f.why))
}

/// The error text providers put in their error bodies, in the shapes they use.
pub(crate) fn error_message(v: &Value) -> Option<String> {
    let text = v
        .pointer("/error/message")
        .or_else(|| v.pointer("/message"))
        .or_else(|| v.pointer("/error_description"))
        .or_else(|| v.pointer("/detail/message"))
        .or_else(|| v.pointer("/detail"))
        .or_else(|| v.pointer("/error_title"))
        .or_else(|| v.pointer("/error"))?;
    let text = match text {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(text.chars().take(200).collect())
}

/// A number that providers send as either a JSON number or a string.
fn number(v: &Value, pointer: &str) -> Result<f64, String> {
    match v.pointer(pointer) {
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| format!("{pointer} is out of range")),
        // "NaN" and "inf" parse as floats; no provider means them, and NaN cannot be stored.
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{pointer} is not a number: {s:?}")),
        Some(other) => Err(format!("{pointer} is not a number: {other}")),
        None => Err(format!("the answer has no {pointer}")),
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> Result<&'a str, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the answer has no {pointer} text"))
}

/// An answer of the wrong shape. What did not fit may quote the answer, so only
/// administrators see it.
fn shape(status: u16, headers: Vec<(String, String)>, why: String) -> Seen {
    Seen::failed_detail(
        Some(status),
        headers,
        "unexpected answer".into(),
        format!("unexpected answer: {why}"),
    )
}

/// Runs the provider's check. Transport failures, error statuses and wrong shapes all come
/// back as a `Seen` with a `Down` problem.
/// The key goes only to the API base: through `out`'s client that follows no redirect, and
/// not at all when the base is a refused address (named ones are checked as they resolve).
pub async fn check(t: &ProviderTarget, out: &super::checks::Outbound) -> Seen {
    if let Ok(base) = reqwest::Url::parse(&t.base)
        && let Err(refused) = out.guard.check_url(&base)
    {
        return Seen::failed(None, Vec::new(), super::checks::refused_reason(&refused));
    }
    let mut seen = match read(t, &out.no_redirect).await {
        Ok(seen) | Err(seen) => seen,
    };
    note_rate_limit(&mut seen);
    seen
}

/// Every provider read records whether it was rate limited (`rate_limited`, 0 or 1, so a
/// window's sum counts the hits), and what the provider said about it: `retry_after_s`, and
/// Stripe's `Stripe-Should-Retry` as `should_retry` (0 or 1). A 429 is `Degraded`, not `Down`:
/// the provider answered and knows the key; it is only saying "not now", which is what an
/// alert on rate-limit hits is for, rather than an outage.
fn note_rate_limit(seen: &mut Seen) {
    let limited = seen.status == Some(429);
    seen.readings
        .push(reading("rate_limited", if limited { 1.0 } else { 0.0 }));
    let header = |name: &str| {
        seen.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if limited && let Some(secs) = header("retry-after").and_then(|v| v.parse::<f64>().ok()) {
        seen.readings.push(reading("retry_after_s", secs));
    }
    if let Some(v) = header("stripe-should-retry") {
        seen.readings
            .push(reading("should_retry", if v == "true" { 1.0 } else { 0.0 }));
    }
    if limited && let Some((verdict, _)) = seen.problem.as_mut() {
        *verdict = Verdict::Degraded;
    }
}

async fn read(t: &ProviderTarget, client: &reqwest::Client) -> Result<Seen, Seen> {
    let base = t.base.trim_end_matches('/');
    let account = t.account.as_deref().unwrap_or_default();
    let bearer = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(t.key.expose())
    };
    match t.provider {
        Provider::Stripe => {
            let a = fetch(bearer("/v1/balance")).await?;
            if a.json.get("object").and_then(Value::as_str) != Some("balance") {
                return Err(shape(
                    a.status,
                    a.headers,
                    "object is not \"balance\"".into(),
                ));
            }
            let mut readings = Vec::new();
            for (list, prefix) in [("available", "available"), ("pending", "pending")] {
                let Some(items) = a.json.get(list).and_then(Value::as_array) else {
                    return Err(shape(a.status, a.headers, format!("no {list} list")));
                };
                for item in items {
                    let amount = number(item, "/amount")
                        .map_err(|e| shape(a.status, a.headers.clone(), e))?;
                    let currency = text(item, "/currency")
                        .map_err(|e| shape(a.status, a.headers.clone(), e))?;
                    // Reading names come from the answer: only real currency codes make one.
                    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
                        return Err(shape(
                            a.status,
                            a.headers.clone(),
                            format!("{currency:?} is not a currency code"),
                        ));
                    }
                    readings.push(reading(format!("{prefix}_{currency}"), amount));
                }
            }
            Ok(ok(a, readings))
        }
        Provider::N8n => {
            let req = client
                .get(format!("{base}/api/v1/workflows?limit=1"))
                .header("X-N8N-API-KEY", t.key.expose());
            let a = fetch(req).await?;
            if !a.json.get("data").is_some_and(Value::is_array) {
                return Err(shape(a.status, a.headers, "no data list".into()));
            }
            Ok(ok(a, Vec::new()))
        }
        Provider::Twilio => {
            let account_url = format!("{base}/2010-04-01/Accounts/{account}");
            let a = fetch(
                client
                    .get(format!("{account_url}.json"))
                    .basic_auth(account, Some(t.key.expose())),
            )
            .await?;
            // The account resource carries the auth token: only `status` is read from it.
            let status =
                text(&a.json, "/status").map_err(|e| shape(a.status, a.headers.clone(), e))?;
            if status != "active" {
                let why = format!("the account is {status}");
                return Ok(Seen::failed(Some(a.status), a.headers, why));
            }
            let b = fetch(
                client
                    .get(format!("{account_url}/Balance.json"))
                    .basic_auth(account, Some(t.key.expose())),
            )
            .await;
            let mut readings = Vec::new();
            // Subaccounts have no balance: the account check stands on its own.
            if let Ok(b) = &b
                && let Ok(balance) = number(&b.json, "/balance")
            {
                readings.push(reading("balance", balance));
            }
            Ok(ok(a, readings))
        }
        Provider::Vonage => {
            let req = client
                .get(format!("{base}/account/get-balance"))
                .query(&[("api_key", account), ("api_secret", t.key.expose())]);
            let a = fetch(req).await?;
            let value =
                number(&a.json, "/value").map_err(|e| shape(a.status, a.headers.clone(), e))?;
            Ok(ok(a, vec![reading("balance_eur", value)]))
        }
        Provider::Retell => {
            let post = |path: &str| {
                client
                    .post(format!("{base}{path}"))
                    .bearer_auth(t.key.expose())
                    .json(&serde_json::json!({"limit": 1}))
            };
            let a = match fetch(post("/v3/list-calls")).await {
                Ok(a) => a,
                // Servers before v3 (2026-05) list calls at v2, as a bare array.
                Err(seen) if seen.status == Some(404) => fetch(post("/v2/list-calls")).await?,
                Err(seen) => return Err(seen),
            };
            if !(a.json.is_array() || a.json.get("items").is_some_and(Value::is_array)) {
                return Err(shape(a.status, a.headers, "no list of calls".into()));
            }
            Ok(ok(a, Vec::new()))
        }
        Provider::DigitalOcean => {
            let a = fetch(bearer("/v2/account")).await?;
            let status = text(&a.json, "/account/status")
                .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            let problem = match status {
                "active" => None,
                "warning" => Some((Verdict::Degraded, "the account has a warning".to_string())),
                other => Some((Verdict::Down, format!("the account is {other}"))),
            };
            let mut readings = rate_limit_readings(&a.headers);
            if let Ok(b) = fetch(bearer("/v2/customers/my/balance")).await {
                for (field, name) in [
                    ("/month_to_date_usage", "month_to_date_usage"),
                    ("/account_balance", "account_balance"),
                ] {
                    if let Ok(v) = number(&b.json, field) {
                        readings.push(reading(name, v));
                    }
                }
            }
            let mut seen = ok(a, readings);
            seen.problem = problem;
            Ok(seen)
        }
        Provider::Supabase => {
            let a = fetch(bearer(&format!(
                "/v1/projects/{account}/health?services=auth,db,pooler,realtime,rest,storage"
            )))
            .await?;
            let Some(services) = a.json.as_array() else {
                return Err(shape(a.status, a.headers, "not a list of services".into()));
            };
            let mut unhealthy = Vec::new();
            let mut coming_up = Vec::new();
            for s in services {
                let name = text(s, "/name").map_err(|e| shape(a.status, a.headers.clone(), e))?;
                match text(s, "/status").map_err(|e| shape(a.status, a.headers.clone(), e))? {
                    "ACTIVE_HEALTHY" => {}
                    "COMING_UP" => coming_up.push(name.to_string()),
                    _ => unhealthy.push(name.to_string()),
                }
            }
            let healthy = services.len() - unhealthy.len() - coming_up.len();
            let readings = vec![reading("healthy_services", healthy as f64)];
            let problem = if !unhealthy.is_empty() {
                Some((
                    Verdict::Down,
                    format!("unhealthy: {}", unhealthy.join(", ")),
                ))
            } else if !coming_up.is_empty() {
                Some((
                    Verdict::Degraded,
                    format!("coming up: {}", coming_up.join(", ")),
                ))
            } else {
                None
            };
            let mut seen = ok(a, readings);
            seen.problem = problem;
            Ok(seen)
        }
        Provider::Luma => {
            let a = fetch(bearer("/dream-machine/v1/credits")).await?;
            let credits = number(&a.json, "/credit_balance")
                .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            Ok(ok(a, vec![reading("credits", credits)]))
        }
        Provider::Kling => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let token = kling_jwt(account, t.key.expose(), now);
            let end_ms = now * 1000;
            let start_ms = end_ms - 30 * 86_400_000;
            let a = fetch(
                client
                    .get(format!(
                        "{base}/account/costs?start_time={start_ms}&end_time={end_ms}"
                    ))
                    .bearer_auth(token),
            )
            .await?;
            let code =
                number(&a.json, "/code").map_err(|e| shape(a.status, a.headers.clone(), e))?;
            if code != 0.0 {
                let why = format!(
                    "error code {code}: {}",
                    a.json
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message")
                );
                return Ok(Seen::failed(Some(a.status), a.headers, why));
            }
            let Some(packs) = a
                .json
                .pointer("/data/resource_pack_subscribe_infos")
                .and_then(Value::as_array)
            else {
                return Err(shape(a.status, a.headers, "no resource packs".into()));
            };
            let (mut remaining, mut total) = (0.0, 0.0);
            for p in packs.iter().filter(|p| {
                p.get("status")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == "online")
            }) {
                remaining += number(p, "/remaining_quantity")
                    .map_err(|e| shape(a.status, a.headers.clone(), e))?;
                total += number(p, "/total_quantity")
                    .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            }
            Ok(ok(
                a,
                vec![
                    reading("pack_remaining", remaining),
                    reading("pack_total", total),
                ],
            ))
        }
        Provider::Bfl => {
            let a = fetch(
                client
                    .get(format!("{base}/v1/credits"))
                    .header("x-key", t.key.expose()),
            )
            .await?;
            let credits =
                number(&a.json, "/credits").map_err(|e| shape(a.status, a.headers.clone(), e))?;
            Ok(ok(a, vec![reading("credits", credits)]))
        }
        Provider::ElevenLabs => {
            let a = fetch(
                client
                    .get(format!("{base}/v1/user/subscription"))
                    .header("xi-api-key", t.key.expose()),
            )
            .await?;
            let used = number(&a.json, "/character_count")
                .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            let limit = number(&a.json, "/character_limit")
                .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            let status = a
                .json
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("active");
            let problem = match status {
                "past_due" | "incomplete_expired" | "canceled" | "unpaid" => {
                    Some((Verdict::Degraded, format!("the subscription is {status}")))
                }
                _ => None,
            };
            let mut seen = ok(
                a,
                vec![
                    reading("characters_used", used),
                    reading("characters_limit", limit),
                ],
            );
            seen.problem = problem;
            Ok(seen)
        }
        Provider::PiApi => {
            let a = fetch(
                client
                    .get(format!("{base}/account/info"))
                    .header("x-api-key", t.key.expose()),
            )
            .await?;
            let code = number(&a.json, "/code").unwrap_or(200.0);
            if code != 200.0 {
                let why = format!(
                    "error code {code}: {}",
                    a.json
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message")
                );
                return Ok(Seen::failed(Some(a.status), a.headers, why));
            }
            let credits = number(&a.json, "/data/credits")
                .map_err(|e| shape(a.status, a.headers.clone(), e))?;
            let mut readings = vec![reading("credits", credits)];
            if let Ok(usd) = number(&a.json, "/data/equivalent_in_usd") {
                readings.push(reading("credits_usd", usd));
            }
            Ok(ok(a, readings))
        }
        Provider::Gcp => super::gcp::read(t, client).await,
        Provider::OpenAi => {
            let a = fetch(bearer("/v1/models")).await?;
            if !a.json.get("data").is_some_and(Value::is_array) {
                return Err(shape(a.status, a.headers, "no data list".into()));
            }
            let readings = rate_limit_readings(&a.headers);
            Ok(ok(a, readings))
        }
    }
}

fn ok(a: Answer, readings: Vec<Reading>) -> Seen {
    Seen {
        status: Some(a.status),
        headers: a.headers,
        problem: None,
        detail: None,
        readings,
    }
}

/// Rate-limit headroom from `ratelimit-*` (DigitalOcean) and `x-ratelimit-*` (OpenAI)
/// headers, as readings; headers that are not plain numbers are skipped.
fn rate_limit_readings(headers: &[(String, String)]) -> Vec<Reading> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let key = name.strip_prefix("x-").unwrap_or(name);
        let key = match key {
            "ratelimit-limit" | "ratelimit-limit-requests" => "ratelimit_limit",
            "ratelimit-remaining" | "ratelimit-remaining-requests" => "ratelimit_remaining",
            _ => continue,
        };
        if let Ok(v) = value.trim().parse::<f64>()
            && v.is_finite()
            && !out.iter().any(|r: &Reading| r.name == key)
        {
            out.push(reading(key, v));
        }
    }
    out
}

/// Kling's API token: a JWT signed HS256 with the secret key, issued by the access key, valid
/// 30 minutes from 5 seconds ago (clock skew).
pub fn kling_jwt(access_key: &str, secret_key: &str, now: i64) -> String {
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64.encode(
        serde_json::json!({"iss": access_key, "exp": now + 1800, "nbf": now - 5}).to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(signing_input.as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, CheckResult};
    use crate::health::monitor::{MonitorSpec, Secret};
    use crate::simulators::providers::{Behaviour, FakeProviders};

    const KEY: &str = "key_live_9f8e7d";
    const ACCOUNT: &str = "AC0123456789abcdef";

    fn spec(p: Provider, base: &str, key: &str) -> MonitorSpec {
        MonitorSpec {
            name: p.as_str().into(),
            kind: p.as_str().into(),
            target: base.into(),
            timeout: Some("1s".into()),
            account: p.needs().account.map(|_| ACCOUNT.to_string()),
            key: Some(Secret(key.into())),
            ..Default::default()
        }
    }

    async fn run(p: Provider, base: &str, key: &str) -> CheckResult {
        let monitor = spec(p, base, key).validate().expect("valid");
        checks::run(&monitor, &checks::outbound()).await
    }

    fn reading_of(r: &CheckResult, name: &str) -> Option<f64> {
        r.readings.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Every provider against its fake: up with its figures when all is well, and down with a
    /// reason naming the problem (never the key) for each way a provider can misbehave.
    #[tokio::test]
    async fn each_provider_reads_its_figures_and_fails_clearly() {
        let fake = FakeProviders::new(KEY, ACCOUNT);
        let (base, _server) = fake.start().await.expect("fake starts");
        let expected: &[(Provider, &[(&str, f64)])] = &[
            (Provider::N8n, &[]),
            (Provider::Twilio, &[("balance", 42.17)]),
            (Provider::Vonage, &[("balance_eur", 18.5)]),
            (Provider::Retell, &[]),
            (
                Provider::DigitalOcean,
                &[("ratelimit_limit", 5000.0), ("month_to_date_usage", 23.4)],
            ),
            (Provider::Supabase, &[("healthy_services", 6.0)]),
            (Provider::Luma, &[("credits", 1520.5)]),
            (
                Provider::Kling,
                &[("pack_remaining", 1875.0), ("pack_total", 3000.0)],
            ),
            (Provider::Bfl, &[("credits", 812.25)]),
            (
                Provider::ElevenLabs,
                &[
                    ("characters_used", 61_000.0),
                    ("characters_limit", 100_000.0),
                ],
            ),
            (
                Provider::PiApi,
                &[("credits", 2400.0), ("credits_usd", 2.4)],
            ),
            (Provider::OpenAi, &[("ratelimit_remaining", 9_999.0)]),
        ];
        for (p, figures) in expected {
            let r = run(*p, &base, KEY).await;
            assert_eq!(r.verdict, Verdict::Up, "{p:?}: {r:?}");
            // Twilio's account read answers with the account's auth_token (the fake's is the
            // key): nothing of a result may carry it, nor any other provider's key.
            assert!(
                !format!("{r:?}").contains(KEY),
                "{p:?} keeps the key: {r:?}"
            );
            for (name, value) in *figures {
                assert_eq!(reading_of(&r, name), Some(*value), "{p:?} {name}: {r:?}");
            }
        }
        let cases: &[(Behaviour, &str)] = &[
            (Behaviour::Unauthorized, "HTTP 401"),
            (Behaviour::RateLimited, "rate limited; retry after 30 s"),
            (Behaviour::Failing, "HTTP 500"),
            (Behaviour::Garbage, "not JSON"),
            (Behaviour::WrongShape, "unexpected answer"),
            (Behaviour::Huge, "response body over 1024 KiB"),
            (Behaviour::Slow(1_500), "timed out after 1s"),
        ];
        for (p, _) in expected {
            for (behaviour, says) in cases {
                // Every provider's fake keeps its shape checks honest: n8n and Retell only need
                // a list, so "wrong shape" must still be caught.
                fake.set(*p, *behaviour);
                let r = run(*p, &base, KEY).await;
                fake.set(*p, Behaviour::Normal);
                // Throttled is degraded (the provider answered), every other fault down.
                let verdict = if matches!(behaviour, Behaviour::RateLimited) {
                    assert_eq!(reading_of(&r, "rate_limited"), Some(1.0), "{p:?}: {r:?}");
                    Verdict::Degraded
                } else {
                    Verdict::Down
                };
                assert_eq!(r.verdict, verdict, "{p:?} {behaviour:?}: {r:?}");
                let error = r.error.clone().unwrap_or_default();
                assert!(error.contains(says), "{p:?} {behaviour:?}: {error}");
                assert!(
                    !format!("{r:?}").contains(KEY),
                    "{p:?} {behaviour:?} leaks the key"
                );
            }
        }
        // A wrong key is refused by the fake itself, with the provider's own message.
        // Administrators read it in `detail`; everyone else gets the status.
        let r = run(Provider::Twilio, &base, "wrong").await;
        assert_eq!(r.error.as_deref(), Some("HTTP 401"));
        assert_eq!(r.detail.as_deref(), Some("HTTP 401: Invalid API key"));
        let r = run(Provider::ElevenLabs, &base, "wrong").await;
        assert_eq!(r.detail.as_deref(), Some("HTTP 401: Invalid API key"));
        // Twilio's account resource carries the auth token: nothing of it is kept.
        let r = run(Provider::Twilio, &base, KEY).await;
        assert!(!format!("{r:?}").contains(KEY));
        // A key in Vonage's query string never reaches an error, even on a transport failure.
        let r = run(Provider::Vonage, "http://127.0.0.1:9", KEY).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(!r.error.unwrap_or_default().contains(KEY));
    }

    /// A provider read answered with a redirect fails with the status, and the key never
    /// reaches the host it points to.
    #[tokio::test]
    async fn provider_reads_follow_no_redirect() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let elsewhere = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { axum::Json(serde_json::json!({"credits": 1})) }
        });
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_url = format!("http://{}", other.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(other, elsewhere).await });
        let to = format!("{other_url}/v1/credits");
        let redirecting = axum::Router::new().fallback(move || {
            let to = to.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", to)],
                    "",
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, redirecting).await });
        let r = run(Provider::Bfl, &base, KEY).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.error.as_deref(), Some("HTTP 307"));
        assert_eq!(seen.load(Ordering::Relaxed), 0, "the key was not sent on");
    }

    #[tokio::test]
    async fn stripe_reads_the_balance_and_its_errors() {
        let stripe = crate::simulators::stripe::FakeStripe::new(KEY);
        let (base, _server) = stripe.start().await.expect("fake starts");
        let r = run(Provider::Stripe, &base, KEY).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        assert_eq!(reading_of(&r, "available_usd"), Some(0.0));
        // The balance follows the account's money: a charge of $100 a week ago (available),
        // one of $30 an hour ago (pending), a $20 refund, a lost and a won dispute of $5,
        // a $50 payout, and €12 available.
        let now = crate::store::now_ms() / 1000;
        let (week, hour) = (now - 7 * 86_400, now - 3_600);
        let charge = |id: &str, amount: i64, currency: &str, created: i64| {
            serde_json::json!({"id": id, "object": "charge", "amount": amount,
                "currency": currency, "status": "succeeded", "created": created})
        };
        stripe.put("charges", charge("ch_1", 10_000, "usd", week));
        stripe.put("charges", charge("ch_2", 3_000, "usd", hour));
        stripe.put("charges", charge("ch_3", 1_200, "eur", week));
        let mut failed = charge("ch_4", 9_900, "usd", week);
        failed["status"] = "failed".into();
        stripe.put("charges", failed);
        stripe.put(
            "refunds",
            serde_json::json!({"id": "re_1", "object": "refund",
            "amount": 2_000, "currency": "usd", "status": "succeeded", "created": hour}),
        );
        for (id, status) in [("dp_1", "lost"), ("dp_2", "won")] {
            stripe.put(
                "disputes",
                serde_json::json!({"id": id, "object": "dispute",
                "amount": 500, "currency": "usd", "status": status, "created": hour}),
            );
        }
        stripe.put(
            "payouts",
            serde_json::json!({"id": "po_1", "object": "payout",
            "amount": 5_000, "currency": "usd", "status": "paid", "created": hour}),
        );
        let r = run(Provider::Stripe, &base, KEY).await;
        assert_eq!(reading_of(&r, "available_usd"), Some(2_500.0), "{r:?}");
        assert_eq!(reading_of(&r, "pending_usd"), Some(3_000.0));
        assert_eq!(reading_of(&r, "available_eur"), Some(1_200.0));
        assert_eq!(reading_of(&r, "pending_eur"), Some(0.0));
        let r = run(Provider::Stripe, &base, "sk_test_wrong").await;
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.error.as_deref(), Some("HTTP 401"));
        let error = r.detail.unwrap_or_default();
        assert!(error.starts_with("HTTP 401: "), "{error}");
        stripe.fault(crate::simulators::stripe::Fault {
            should_retry: Some(true),
            ..crate::simulators::stripe::Fault::rate_limited()
        });
        let r = run(Provider::Stripe, &base, KEY).await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        assert_eq!(reading_of(&r, "rate_limited"), Some(1.0));
        assert_eq!(reading_of(&r, "should_retry"), Some(1.0));
        assert!(r.error.clone().unwrap_or_default().contains("rate limited"));
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "stripe-should-retry" && v == "true"),
            "{:?}",
            r.headers
        );
    }

    #[tokio::test]
    async fn provider_states_become_verdicts_and_readings_feed_conditions() {
        let fake = FakeProviders::new(KEY, ACCOUNT);
        let (base, _server) = fake.start().await.expect("fake starts");
        fake.figures(|f| f.digitalocean_status = "warning".into());
        let r = run(Provider::DigitalOcean, &base, KEY).await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        fake.figures(|f| f.digitalocean_status = "locked".into());
        let r = run(Provider::DigitalOcean, &base, KEY).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("the account is locked"))
        );
        fake.figures(|f| f.twilio_status = "suspended".into());
        let r = run(Provider::Twilio, &base, KEY).await;
        assert_eq!(r.error.as_deref(), Some("the account is suspended"));
        fake.figures(|f| {
            f.supabase_services[1].1 = "UNHEALTHY".into();
            f.supabase_services[3].1 = "COMING_UP".into();
        });
        let r = run(Provider::Supabase, &base, KEY).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("unhealthy: db"))
        );
        fake.figures(|f| f.supabase_services[1].1 = "ACTIVE_HEALTHY".into());
        let r = run(Provider::Supabase, &base, KEY).await;
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(r.error.as_deref(), Some("coming up: realtime"));

        // Readings are [BODY]: a quota condition degrades the check.
        let mut s = spec(Provider::Luma, &base, KEY);
        s.degraded_when = vec!["[BODY].credits < 2000".into()];
        let monitor = s.validate().expect("valid");
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        fake.figures(|f| f.luma_credits = 5000.0);
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        // The 429's headers are kept with the result.
        fake.set(Provider::DigitalOcean, Behaviour::RateLimited);
        fake.figures(|f| f.digitalocean_status = "active".into());
        let r = run(Provider::DigitalOcean, &base, KEY).await;
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "ratelimit-remaining" && v == "0"),
            "{r:?}"
        );
        assert!(r.headers.iter().any(|(k, _)| k == "retry-after"));
    }

    #[test]
    fn provider_definitions_are_checked_with_the_field_named() {
        let bad = |mut s: MonitorSpec, f: &dyn Fn(&mut MonitorSpec)| {
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        let twilio = spec(Provider::Twilio, "", KEY);
        let m = twilio.validate().expect("valid");
        assert_eq!(
            m.target, "https://api.twilio.com",
            "the production API by default"
        );
        assert!(bad(twilio.clone(), &|s| s.account = None).starts_with("account: is required"));
        assert!(bad(twilio.clone(), &|s| s.key = None).starts_with("key: is required"));
        assert!(
            bad(twilio.clone(), &|s| s.account = Some("AC 1/../x".into())).starts_with("account:")
        );
        assert!(bad(twilio.clone(), &|s| s.target = "ftp://x".into()).starts_with("target:"));
        let leaky = bad(twilio.clone(), &|s| {
            s.target = "https://u:pw@api.twilio.com".into()
        });
        assert!(
            leaky.starts_with("target:") && !leaky.contains("pw@"),
            "{leaky}"
        );
        let luma = spec(Provider::Luma, "", KEY);
        assert!(
            bad(luma.clone(), &|s| s.account = Some("x".into()))
                .starts_with("account: luma monitors take no account")
        );
        assert!(
            bad(luma, &|s| s.conditions =
                vec!["[DNS_RCODE] == NOERROR".into()])
            .starts_with("conditions[0]:")
        );
        let n8n = spec(Provider::N8n, "", KEY);
        assert!(bad(n8n, &|_| {}).starts_with("target: is required"));
        let mut http = spec(Provider::Luma, "", KEY);
        http.kind = "http".into();
        http.target = "https://example.com".into();
        assert!(bad(http, &|_| {}).starts_with("key: applies to provider monitors"));
    }

    #[test]
    fn kling_tokens_verify_with_the_secret_and_carry_the_claims() {
        use hmac::{KeyInit, Mac};
        let token = kling_jwt("ak_1", "sk_secret", 1_700_000_000);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "ak_1");
        assert_eq!(claims["exp"], 1_700_001_800);
        assert_eq!(claims["nbf"], 1_699_999_995);
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"sk_secret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&b64.decode(parts[2]).unwrap())
            .expect("signature verifies");
    }

    #[test]
    fn numbers_are_read_from_numbers_and_strings_and_errors_name_the_field() {
        let v = serde_json::json!({"a": 12.5, "b": " 3 ", "c": "x", "d": null});
        assert_eq!(number(&v, "/a"), Ok(12.5));
        assert_eq!(number(&v, "/b"), Ok(3.0));
        assert!(number(&v, "/c").unwrap_err().contains("/c"));
        assert!(number(&v, "/d").unwrap_err().contains("/d"));
        assert!(number(&v, "/e").unwrap_err().contains("no /e"));
    }

    #[test]
    fn error_messages_come_from_each_providers_envelope() {
        let stripe = serde_json::json!({"error": {"message": "Invalid API Key provided", "type": "invalid_request_error"}});
        assert_eq!(
            error_message(&stripe).as_deref(),
            Some("Invalid API Key provided")
        );
        let eleven = serde_json::json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}});
        assert_eq!(error_message(&eleven).as_deref(), Some("Invalid API key"));
        let twilio = serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401});
        assert_eq!(error_message(&twilio).as_deref(), Some("Authenticate"));
        let vonage = serde_json::json!({"error_title": "Bad Credentials"});
        assert_eq!(error_message(&vonage).as_deref(), Some("Bad Credentials"));
    }

    #[test]
    fn rate_limit_headers_become_readings() {
        let headers = vec![
            ("ratelimit-limit".to_string(), "5000".to_string()),
            ("ratelimit-remaining".to_string(), "4816".to_string()),
            ("ratelimit-reset".to_string(), "1444931833".to_string()),
            (
                "x-ratelimit-remaining-requests".to_string(),
                "59".to_string(),
            ),
            ("x-ratelimit-limit-requests".to_string(), "junk".to_string()),
            ("x-ratelimit-limit-requests".to_string(), "NaN".to_string()),
        ];
        // The first of two headers naming one figure wins (one reading per name and check);
        // what is not a finite number is skipped.
        let r = rate_limit_readings(&headers);
        assert_eq!(
            r,
            vec![
                reading("ratelimit_limit", 5000.0),
                reading("ratelimit_remaining", 4816.0),
            ]
        );
    }
}
