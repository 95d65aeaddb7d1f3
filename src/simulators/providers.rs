//! A local server speaking the APIs opsdeck's provider checks read, on their real paths with
//! their real auth schemes and error envelopes: n8n, Twilio, Vonage, Retell, DigitalOcean,
//! Supabase, Luma, Kling, Black Forest Labs, ElevenLabs, PiAPI and OpenAI (Stripe has its own
//! fake in `stripe.rs`). Each provider can be switched to misbehave — refuse the key, rate-limit,
//! fail, answer slowly, answer garbage, the wrong shape or a huge body — and its balances and
//! quotas can be set and spent, so the demo's grid is alive and the tests see real wire data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::health::providers::Provider;

/// How a provider answers its next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    #[default]
    Normal,
    /// Refuses the credentials with the provider's 401 body.
    Unauthorized,
    /// 429 with the provider's body and rate-limit headers.
    RateLimited,
    /// 500 with the provider's error body.
    Failing,
    /// Answers after this many milliseconds.
    Slow(u64),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with JSON missing the fields the provider documents.
    WrongShape,
    /// 200 with a 2 MiB body.
    Huge,
    /// 200 at once, then a JSON body dripped a byte every this many milliseconds (slowloris).
    Trickle(u64),
}

/// The figures the fake serves; tests and the demo set and spend them.
#[derive(Debug, Clone)]
pub struct Figures {
    pub twilio_status: String,
    pub twilio_balance: f64,
    pub vonage_balance: f64,
    pub digitalocean_status: String,
    pub digitalocean_requests_left: u64,
    pub digitalocean_month_to_date: f64,
    /// (service, status) as Supabase reports them.
    pub supabase_services: Vec<(String, String)>,
    pub luma_credits: f64,
    /// (name, total, remaining, status) of each Kling resource pack.
    pub kling_packs: Vec<(String, f64, f64, String)>,
    pub bfl_credits: f64,
    pub elevenlabs_used: u64,
    pub elevenlabs_limit: u64,
    pub elevenlabs_status: String,
    pub piapi_credits: f64,
    /// The extras' data (`providers_extras.rs`): n8n workflows and executions, Twilio and
    /// Vonage traffic, Retell calls, DigitalOcean droplets, Supabase usage.
    pub extras: super::providers_extras::ExtrasData,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            twilio_status: "active".into(),
            twilio_balance: 42.17,
            vonage_balance: 18.5,
            digitalocean_status: "active".into(),
            digitalocean_requests_left: 5000,
            digitalocean_month_to_date: 23.4,
            supabase_services: ["auth", "db", "pooler", "realtime", "rest", "storage"]
                .iter()
                .map(|s| (s.to_string(), "ACTIVE_HEALTHY".to_string()))
                .collect(),
            luma_credits: 1520.5,
            kling_packs: vec![("Video Pack 3000".into(), 3000.0, 1875.0, "online".into())],
            bfl_credits: 812.25,
            elevenlabs_used: 61_000,
            elevenlabs_limit: 100_000,
            elevenlabs_status: "active".into(),
            piapi_credits: 2400.0,
            extras: super::providers_extras::ExtrasData::sample(crate::store::now_ms()),
        }
    }
}

/// Requests the fake remembers for `requests()`.
const MAX_LOGGED: usize = 10_000;

struct Shared {
    key: String,
    /// Twilio Account SID, Vonage API key, Supabase project ref and Kling access key.
    account: String,
    behaviour: Mutex<HashMap<Provider, Behaviour>>,
    figures: Mutex<Figures>,
    requests: Mutex<Vec<String>>,
}

/// The fake providers. Cloning shares the same state.
#[derive(Clone)]
pub struct FakeProviders {
    shared: Arc<Shared>,
}

impl FakeProviders {
    /// A server accepting only `key` (the API key, token or secret of every provider) and
    /// `account` where a provider needs one.
    pub fn new(key: &str, account: &str) -> Self {
        FakeProviders {
            shared: Arc::new(Shared {
                key: key.into(),
                account: account.into(),
                behaviour: Mutex::default(),
                figures: Mutex::new(Figures::default()),
                requests: Mutex::default(),
            }),
        }
    }

    pub fn set(&self, provider: Provider, behaviour: Behaviour) {
        self.shared
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(provider, behaviour);
    }

    /// Changes the served figures.
    pub fn figures(&self, f: impl FnOnce(&mut Figures)) {
        f(&mut self
            .shared
            .figures
            .lock()
            .unwrap_or_else(|e| e.into_inner()));
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(super::providers_extras::routes())
            .route("/2010-04-01/Accounts/{file}", get(twilio_account))
            .route(
                "/2010-04-01/Accounts/{sid}/Balance.json",
                get(twilio_balance),
            )
            .route("/account/get-balance", get(vonage))
            .route("/v2/account", get(digitalocean_account))
            .route("/v2/customers/my/balance", get(digitalocean_balance))
            .route("/v1/projects/{reference}/health", get(supabase))
            .route("/dream-machine/v1/credits", get(luma))
            .route("/account/costs", get(kling))
            .route("/v1/credits", get(bfl))
            .route("/v1/user/subscription", get(elevenlabs))
            .route("/account/info", get(piapi))
            .route("/v1/models", get(openai))
            .with_state(self.clone())
    }

    /// Binds a loopback port and serves there; returns the base URL.
    pub async fn start(&self) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((base, task))
    }

    /// The one key every provider accepts.
    pub(super) fn key(&self) -> &str {
        &self.shared.key
    }

    /// Twilio's SID, Vonage's API key, Supabase's project ref.
    pub(super) fn account(&self) -> &str {
        &self.shared.account
    }

    /// Logs a request; the demo runs for days, so only the latest are kept.
    pub(super) fn note(&self, what: String) {
        let mut log = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_LOGGED {
            log.drain(..MAX_LOGGED / 2);
        }
        log.push(what);
    }

    pub(super) fn behaviour(&self, p: Provider) -> Behaviour {
        self.shared
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn with_figures<T>(&self, f: impl FnOnce(&mut Figures) -> T) -> T {
        f(&mut self
            .shared
            .figures
            .lock()
            .unwrap_or_else(|e| e.into_inner()))
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

pub(super) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = header(headers, "authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

pub(super) fn query(raw: &Option<String>) -> HashMap<String, String> {
    raw.as_deref()
        .and_then(|q| reqwest::Url::parse(&format!("http://fake/?{q}")).ok())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Each provider's error body for a status, in the envelope its API uses.
fn error_body(p: Provider, status: u16) -> Value {
    let (short, long) = match status {
        401 => ("unauthorized", "Invalid API key"),
        429 => ("rate_limited", "Too many requests"),
        _ => ("server_error", "Internal error"),
    };
    match p {
        Provider::Stripe | Provider::OpenAi => {
            json!({"error": {"message": long, "type": "invalid_request_error", "param": null, "code": short}})
        }
        Provider::Twilio => {
            let code = match status {
                401 => 20003,
                429 => 20429,
                _ => 20500,
            };
            json!({"code": code, "message": long, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status})
        }
        Provider::Vonage => {
            json!({"type": format!("https://developer.nexmo.com/api-errors#{short}"), "title": long, "detail": long, "instance": "bf0ca0bf-927b-4d9d-a4a8-ec1a5e1f3e6f"})
        }
        Provider::DigitalOcean => {
            json!({"id": short, "message": long, "request_id": "4d9d8375-3c56-4925-a3e7-eb137fed17e9"})
        }
        Provider::Kling => {
            json!({"code": if status == 401 { 1000 } else { 1302 }, "message": long, "request_id": "CjhH2mdmpV"})
        }
        Provider::ElevenLabs => json!({"detail": {"status": short, "message": long}}),
        Provider::Bfl | Provider::Luma => json!({"detail": long}),
        Provider::PiApi => json!({"code": status, "message": long, "data": {}}),
        Provider::N8n | Provider::Retell | Provider::Supabase => json!({"message": long}),
        // Google Cloud has its own fake (`gcp.rs`); its envelope, should this one be asked.
        Provider::Gcp => json!({"error": {"code": status, "message": long, "status": short}}),
    }
}

/// Applies the provider's behaviour; `None` means answer normally.
pub(super) async fn misbehave(
    fake: &FakeProviders,
    p: Provider,
    authorized: bool,
) -> Option<Response> {
    if !authorized {
        return Some((StatusCode::UNAUTHORIZED, axum::Json(error_body(p, 401))).into_response());
    }
    match fake.behaviour(p) {
        Behaviour::Normal => None,
        Behaviour::Unauthorized => {
            Some((StatusCode::UNAUTHORIZED, axum::Json(error_body(p, 401))).into_response())
        }
        Behaviour::RateLimited => {
            let mut res = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(error_body(p, 429)),
            )
                .into_response();
            let h = res.headers_mut();
            h.insert("retry-after", 30.into());
            if p == Provider::DigitalOcean {
                h.insert("ratelimit-limit", 5000.into());
                h.insert("ratelimit-remaining", 0.into());
            }
            Some(res)
        }
        Behaviour::Failing => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(error_body(p, 500)),
            )
                .into_response(),
        ),
        Behaviour::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        Behaviour::Garbage => {
            Some((StatusCode::OK, "<html>upstream gateway</html>").into_response())
        }
        Behaviour::WrongShape => {
            Some((StatusCode::OK, axum::Json(json!({"unexpected": true}))).into_response())
        }
        Behaviour::Trickle(ms) => {
            let drip = futures_util::stream::unfold(0u32, move |i| async move {
                if i >= 10_000 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let chunk = if i == 0 { "{\"data\": [" } else { " " };
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), i + 1))
            });
            Some(
                (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    axum::body::Body::from_stream(drip),
                )
                    .into_response(),
            )
        }
        Behaviour::Huge => Some(
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20)),
            )
                .into_response(),
        ),
    }
}

macro_rules! guard {
    ($fake:expr, $p:expr, $ok:expr) => {
        if let Some(res) = misbehave(&$fake, $p, $ok).await {
            return res;
        }
    };
}
pub(super) use guard;

pub(super) fn twilio_ok(f: &FakeProviders, headers: &HeaderMap, sid: &str) -> bool {
    basic(headers).is_some_and(|(user, password)| {
        user == f.shared.account && password == f.shared.key && sid == f.shared.account
    })
}

async fn twilio_account(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Response {
    f.note(format!("GET /2010-04-01/Accounts/{file}"));
    let sid = file.strip_suffix(".json").unwrap_or_default();
    guard!(f, Provider::Twilio, twilio_ok(&f, &headers, sid));
    let status = f.with_figures(|x| x.twilio_status.clone());
    // The real resource carries the auth token; opsdeck must never keep it.
    axum::Json(json!({
        "sid": sid, "friendly_name": "Demo account", "status": status, "type": "Full",
        "auth_token": f.shared.key, "owner_account_sid": sid,
        "date_created": "Thu, 01 Oct 2026 09:00:00 +0000",
        "date_updated": "Fri, 20 Nov 2026 12:00:00 +0000",
        "uri": format!("/2010-04-01/Accounts/{sid}.json"),
    }))
    .into_response()
}

async fn twilio_balance(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(sid): Path<String>,
) -> Response {
    f.note(format!("GET /2010-04-01/Accounts/{sid}/Balance.json"));
    guard!(f, Provider::Twilio, twilio_ok(&f, &headers, &sid));
    let balance = f.with_figures(|x| x.twilio_balance);
    axum::Json(json!({"account_sid": sid, "balance": format!("{balance:.5}"), "currency": "USD"}))
        .into_response()
}

async fn vonage(State(f): State<FakeProviders>, RawQuery(q): RawQuery) -> Response {
    // Never echo the query: it carries the secret.
    f.note("GET /account/get-balance".into());
    let params = query(&q);
    let ok = params.get("api_key") == Some(&f.shared.account)
        && params.get("api_secret") == Some(&f.shared.key);
    guard!(f, Provider::Vonage, ok);
    let value = f.with_figures(|x| x.vonage_balance);
    axum::Json(json!({"value": value, "autoReload": false})).into_response()
}

pub(super) fn digitalocean_headers(f: &FakeProviders, res: &mut Response) {
    let left = f.with_figures(|x| {
        x.digitalocean_requests_left = x.digitalocean_requests_left.saturating_sub(1);
        x.digitalocean_requests_left
    });
    let h = res.headers_mut();
    h.insert("ratelimit-limit", 5000.into());
    h.insert("ratelimit-remaining", left.into());
    h.insert("ratelimit-reset", 1_764_003_600u64.into());
}

async fn digitalocean_account(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /v2/account".into());
    guard!(
        f,
        Provider::DigitalOcean,
        bearer(&headers) == Some(&f.shared.key)
    );
    let status = f.with_figures(|x| x.digitalocean_status.clone());
    let mut res = axum::Json(json!({"account": {
        "droplet_limit": 25, "floating_ip_limit": 5, "email": "ops@example.com",
        "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": true,
        "status": status, "status_message": "",
        "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "My Team"},
    }}))
    .into_response();
    digitalocean_headers(&f, &mut res);
    res
}

async fn digitalocean_balance(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /v2/customers/my/balance".into());
    guard!(
        f,
        Provider::DigitalOcean,
        bearer(&headers) == Some(&f.shared.key)
    );
    let mtd = f.with_figures(|x| x.digitalocean_month_to_date);
    let mut res = axum::Json(json!({
        "month_to_date_balance": format!("{mtd:.2}"), "account_balance": "0.00",
        "month_to_date_usage": format!("{mtd:.2}"), "generated_at": "2026-11-29T12:00:00Z",
    }))
    .into_response();
    digitalocean_headers(&f, &mut res);
    res
}

async fn supabase(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /v1/projects/{reference}/health?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(
        f,
        Provider::Supabase,
        bearer(&headers) == Some(&f.shared.key) && reference == f.shared.account
    );
    let services = f.with_figures(|x| x.supabase_services.clone());
    let asked = query(&q).get("services").cloned().unwrap_or_default();
    let list: Vec<Value> = services
        .into_iter()
        .filter(|(name, _)| asked.is_empty() || asked.split(',').any(|a| a == name))
        .map(|(name, status)| {
            let healthy = status == "ACTIVE_HEALTHY";
            json!({"name": name, "status": status, "healthy": healthy})
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn luma(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /dream-machine/v1/credits".into());
    guard!(f, Provider::Luma, bearer(&headers) == Some(&f.shared.key));
    let credits = f.with_figures(|x| x.luma_credits);
    axum::Json(json!({"credit_balance": credits})).into_response()
}

/// Kling's token: HS256 over the claims, signed with the secret key, issued by the access key.
fn kling_ok(f: &FakeProviders, headers: &HeaderMap) -> bool {
    use hmac::{KeyInit, Mac};
    let Some(token) = bearer(headers) else {
        return false;
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [head, claims, signature] = parts.as_slice() else {
        return false;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(mut mac) =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(f.shared.key.as_bytes())
    else {
        return false;
    };
    mac.update(format!("{head}.{claims}").as_bytes());
    let signed = b64
        .decode(signature)
        .is_ok_and(|s| mac.verify_slice(&s).is_ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims: Option<Value> = b64
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice(&c).ok());
    signed
        && claims.is_some_and(|c| {
            c["iss"] == f.shared.account.as_str()
                && c["exp"].as_i64().is_some_and(|e| e > now)
                && c["nbf"].as_i64().is_some_and(|n| n <= now)
        })
}

async fn kling(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /account/costs?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::Kling, kling_ok(&f, &headers));
    let params = query(&q);
    if !params.contains_key("start_time") || !params.contains_key("end_time") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": 1201, "message": "start_time and end_time are required", "request_id": "Cjh"})),
        )
            .into_response();
    }
    let packs: Vec<Value> = f
        .with_figures(|x| x.kling_packs.clone())
        .into_iter()
        .enumerate()
        .map(|(i, (name, total, remaining, status))| {
            json!({
                "resource_pack_name": name, "resource_pack_id": format!("pack_{i}"),
                "resource_pack_type": "decreasing_total", "total_quantity": total,
                "remaining_quantity": remaining, "purchase_time": 1_761_955_200_000i64,
                "effective_time": 1_761_955_200_000i64, "invalid_time": 1_793_491_200_000i64,
                "status": status,
            })
        })
        .collect();
    axum::Json(
        json!({"code": 0, "message": "SUCCEED", "request_id": "CjikY2dh",
        "data": {"code": 0, "msg": "", "resource_pack_subscribe_infos": packs}}),
    )
    .into_response()
}

async fn bfl(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /v1/credits".into());
    guard!(
        f,
        Provider::Bfl,
        header(&headers, "x-key") == Some(&f.shared.key)
    );
    let credits = f.with_figures(|x| x.bfl_credits);
    axum::Json(json!({"credits": credits})).into_response()
}

async fn elevenlabs(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /v1/user/subscription".into());
    guard!(
        f,
        Provider::ElevenLabs,
        header(&headers, "xi-api-key") == Some(&f.shared.key)
    );
    let (used, limit, status) = f.with_figures(|x| {
        (
            x.elevenlabs_used,
            x.elevenlabs_limit,
            x.elevenlabs_status.clone(),
        )
    });
    axum::Json(json!({
        "tier": "creator", "character_count": used, "character_limit": limit,
        "can_extend_character_limit": true, "allowed_to_extend_character_limit": true,
        "next_character_count_reset_unix": 1_767_225_600, "voice_limit": 30,
        "professional_voice_limit": 1, "can_extend_voice_limit": false, "can_use_instant_voice_cloning": true,
        "can_use_professional_voice_cloning": true, "currency": "usd", "status": status,
        "billing_period": "monthly_period", "character_refresh_period": "monthly_period",
    }))
    .into_response()
}

async fn piapi(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /account/info".into());
    guard!(
        f,
        Provider::PiApi,
        header(&headers, "x-api-key") == Some(&f.shared.key)
    );
    let credits = f.with_figures(|x| x.piapi_credits);
    axum::Json(json!({"code": 200, "message": "success", "data": {
        "account_name": "demo", "account_id": "1234", "credits": credits,
        "equivalent_in_usd": credits / 1000.0, "plan": "creator",
    }}))
    .into_response()
}

async fn openai(State(f): State<FakeProviders>, headers: HeaderMap) -> Response {
    f.note("GET /v1/models".into());
    guard!(f, Provider::OpenAi, bearer(&headers) == Some(&f.shared.key));
    let mut res = axum::Json(json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_741, "owned_by": "system"},
        {"id": "text-embedding-3-small", "object": "model", "created": 1_705_948_997, "owned_by": "system"},
    ]}))
    .into_response();
    let h = res.headers_mut();
    h.insert("x-ratelimit-limit-requests", 10_000.into());
    h.insert("x-ratelimit-remaining-requests", 9_999.into());
    res
}
