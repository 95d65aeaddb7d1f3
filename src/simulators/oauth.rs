//! A local server speaking Google's and Meta's token APIs on their real paths, with their real
//! auth and error bodies: Google's `POST /token` (refresh-token grant, client in the body or
//! HTTP Basic), `GET /tokeninfo` and `GET /calendar/v3/users/me/calendarList`; Meta's
//! `GET /v25.0/oauth/access_token` (`fb_exchange_token`), `GET /v25.0/debug_token` and a Graph
//! read (`GET /v25.0/me`) with `X-App-Usage` and `X-Business-Use-Case-Usage`. Switches revoke a
//! refresh token, expire an access token or make the token endpoints fail with 500, so tests
//! and `opsdeck demo` see every path the refresh job and the token monitors take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use tokio::net::TcpListener;

/// Google's access token lifetime.
pub const GOOGLE_EXPIRES_IN: i64 = 3599;
/// Meta's long-lived token lifetime (about 60 days).
pub const META_EXPIRES_IN: i64 = 5_183_944;

#[derive(Debug, Default)]
struct Book {
    /// Refresh token → still valid.
    refresh_tokens: HashMap<String, bool>,
    /// Access token → expiry (unix seconds), Google and Meta alike.
    access_tokens: HashMap<String, i64>,
    /// Meta's data-access expiry (unix seconds) for the tokens it issues.
    meta_data_access_expires_at: i64,
    issued: u64,
    failing: bool,
    app_call_count: u32,
    requests: Vec<String>,
}

struct Shared {
    google_client: (String, String),
    meta_app: (String, String),
    state: Mutex<Book>,
}

/// The fake OAuth providers. Cloning shares the same state.
#[derive(Clone)]
pub struct FakeOauth {
    shared: Arc<Shared>,
}

fn unix_now() -> i64 {
    crate::store::now_ms() / 1000
}

impl FakeOauth {
    /// Accepts Google client (`google_client_id`, `google_client_secret`) and Meta app
    /// (`meta_app_id`, `meta_app_secret`); no tokens are valid until added.
    pub fn new(
        google_client_id: &str,
        google_client_secret: &str,
        meta_app_id: &str,
        meta_app_secret: &str,
    ) -> Self {
        FakeOauth {
            shared: Arc::new(Shared {
                google_client: (google_client_id.into(), google_client_secret.into()),
                meta_app: (meta_app_id.into(), meta_app_secret.into()),
                state: Mutex::new(Book {
                    meta_data_access_expires_at: unix_now() + 90 * 86_400,
                    app_call_count: 12,
                    ..Book::default()
                }),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        f(&mut self.shared.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `token` a valid refresh token.
    pub fn add_refresh_token(&self, token: &str) {
        self.with(|s| s.refresh_tokens.insert(token.into(), true));
    }

    /// Revokes a refresh token: the next grant with it answers `invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.with(|s| s.refresh_tokens.insert(token.into(), false));
    }

    /// Makes `token` a valid access token (Google or Meta) until `expires_at` (unix seconds).
    pub fn add_access_token(&self, token: &str, expires_at: i64) {
        self.with(|s| s.access_tokens.insert(token.into(), expires_at));
    }

    /// Expires an access token now.
    pub fn expire_access_token(&self, token: &str) {
        let past = unix_now() - 1;
        self.with(|s| s.access_tokens.insert(token.into(), past));
    }

    /// Token endpoints answer 500 while set.
    pub fn set_failing(&self, failing: bool) {
        self.with(|s| s.failing = failing);
    }

    /// The data-access expiry (unix seconds) debug_token reports for Meta tokens.
    pub fn set_meta_data_access_expires_at(&self, at: i64) {
        self.with(|s| s.meta_data_access_expires_at = at);
    }

    /// The app's call count percentage in `X-App-Usage`.
    pub fn set_app_call_count(&self, percent: u32) {
        self.with(|s| s.app_call_count = percent);
    }

    /// Every request so far, as `METHOD path` (no query: it carries secrets).
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    /// How many requests went to `path`.
    pub fn count(&self, method_path: &str) -> usize {
        self.with(|s| s.requests.iter().filter(|r| *r == method_path).count())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/token", post(google_token))
            .route("/tokeninfo", get(google_tokeninfo))
            .route("/calendar/v3/users/me/calendarList", get(google_calendars))
            .route("/v25.0/oauth/access_token", get(meta_exchange))
            .route("/v25.0/debug_token", get(meta_debug_token))
            .route("/v25.0/me", get(meta_me))
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

    fn note(&self, what: &str) {
        self.with(|s| s.requests.push(what.into()));
    }

    fn valid_access(&self, token: &str) -> Option<i64> {
        let now = unix_now();
        self.with(|s| s.access_tokens.get(token).copied())
            .filter(|exp| *exp > now)
    }

    fn issue(&self, prefix: &str, lifetime: i64) -> (String, i64) {
        let expires_at = unix_now() + lifetime;
        self.with(|s| {
            s.issued += 1;
            let token = format!("{prefix}{}-{}", s.issued, uuid::Uuid::new_v4().simple());
            s.access_tokens.insert(token.clone(), expires_at);
            (token, expires_at)
        })
    }

    fn usage_headers(&self) -> [(&'static str, String); 2] {
        let calls = self.with(|s| s.app_call_count);
        [
            (
                "x-app-usage",
                json!({"call_count": calls, "total_cputime": calls / 3, "total_time": calls / 2})
                    .to_string(),
            ),
            (
                "x-business-use-case-usage",
                json!({"1020304050": [{"type": "ads_management", "call_count": calls / 2,
                    "total_cputime": 1, "total_time": 2, "estimated_time_to_regain_access": 0}]})
                .to_string(),
            ),
        ]
    }
}

fn query(raw: &Option<String>) -> HashMap<String, String> {
    raw.as_deref()
        .and_then(|q| reqwest::Url::parse(&format!("http://fake/?{q}")).ok())
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn graph_error(code: i64, subcode: Option<i64>, message: &str) -> Response {
    let mut err = json!({"message": message, "type": "OAuthException", "code": code,
        "fbtrace_id": "AbCdEfGhIjK"});
    if let Some(s) = subcode {
        err["error_subcode"] = json!(s);
    }
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": err}))).into_response()
}

/// `POST /token`: the refresh-token grant, as oauth2.googleapis.com answers it.
async fn google_token(State(f): State<FakeOauth>, headers: HeaderMap, body: Bytes) -> Response {
    f.note("POST /token");
    if f.with(|s| s.failing) {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_failure",
            "Backend Error",
        );
    }
    let form: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://fake/?{}", String::from_utf8_lossy(&body)))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| {
            t.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let client = basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ))
    });
    if client.as_ref() != Some(&f.shared.google_client) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
        );
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    if !f.with(|s| s.refresh_tokens.get(&rt).copied().unwrap_or(false)) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        );
    }
    let (token, _) = f.issue("ya29.a0fake", GOOGLE_EXPIRES_IN);
    // Google sends no new refresh token on a refresh.
    axum::Json(json!({
        "access_token": token,
        "expires_in": GOOGLE_EXPIRES_IN,
        "scope": "https://www.googleapis.com/auth/calendar.readonly openid",
        "token_type": "Bearer",
    }))
    .into_response()
}

/// `GET /tokeninfo?access_token=…`; `exp` and `expires_in` come as strings, as Google sends them.
async fn google_tokeninfo(State(f): State<FakeOauth>, RawQuery(raw): RawQuery) -> Response {
    f.note("GET /tokeninfo");
    let q = query(&raw);
    let token = q.get("access_token").cloned().unwrap_or_default();
    match f.valid_access(&token) {
        Some(exp) => axum::Json(json!({
            "azp": f.shared.google_client.0, "aud": f.shared.google_client.0,
            "sub": "110248495921238986420",
            "scope": "https://www.googleapis.com/auth/calendar.readonly openid",
            "exp": exp.to_string(), "expires_in": (exp - unix_now()).to_string(),
            "email": "ops@example.com", "email_verified": "true", "access_type": "offline",
        }))
        .into_response(),
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_token", "Invalid Value"),
    }
}

/// `GET /calendar/v3/users/me/calendarList?maxResults=1` with a bearer token.
async fn google_calendars(State(f): State<FakeOauth>, headers: HeaderMap) -> Response {
    f.note("GET /calendar/v3/users/me/calendarList");
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if f.valid_access(token).is_none() {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                "location": "Authorization", "locationType": "header"}],
            "status": "UNAUTHENTICATED"}}))).into_response();
    }
    axum::Json(json!({
        "kind": "calendar#calendarList", "etag": "\"p33c9hbpdqvlsa0o\"",
        "nextPageToken": "EhkKF29wc0BleGFtcGxlLmNvbQ==",
        "items": [{"kind": "calendar#calendarListEntry", "id": "ops@example.com",
            "summary": "ops@example.com", "timeZone": "Europe/Berlin", "accessRole": "owner",
            "primary": true}],
    }))
    .into_response()
}

/// `GET /v25.0/oauth/access_token?grant_type=fb_exchange_token&client_id&client_secret&fb_exchange_token`.
async fn meta_exchange(State(f): State<FakeOauth>, RawQuery(raw): RawQuery) -> Response {
    f.note("GET /v25.0/oauth/access_token");
    if f.with(|s| s.failing) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "An unexpected error has occurred. Please retry your request later.", "type": "OAuthException", "is_transient": true, "code": 2, "fbtrace_id": "AbCdEfGhIjK"}})),
        )
            .into_response();
    }
    let q = query(&raw);
    let app = (
        q.get("client_id").cloned().unwrap_or_default(),
        q.get("client_secret").cloned().unwrap_or_default(),
    );
    if app != f.shared.meta_app {
        return graph_error(1, None, "Error validating client secret.");
    }
    if q.get("grant_type").map(String::as_str) != Some("fb_exchange_token") {
        return graph_error(100, None, "Unsupported grant_type");
    }
    let short = q.get("fb_exchange_token").cloned().unwrap_or_default();
    if f.valid_access(&short).is_none() {
        return graph_error(
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        );
    }
    let (token, _) = f.issue("EAAGfake", META_EXPIRES_IN);
    axum::Json(
        json!({"access_token": token, "token_type": "bearer", "expires_in": META_EXPIRES_IN}),
    )
    .into_response()
}

/// `GET /v25.0/debug_token?input_token=…&access_token={app-id}|{app-secret}`.
async fn meta_debug_token(State(f): State<FakeOauth>, RawQuery(raw): RawQuery) -> Response {
    f.note("GET /v25.0/debug_token");
    let q = query(&raw);
    let (id, secret) = &f.shared.meta_app;
    if q.get("access_token") != Some(&format!("{id}|{secret}")) {
        return graph_error(
            190,
            None,
            "Invalid OAuth access token - Cannot parse access token",
        );
    }
    let input = q.get("input_token").cloned().unwrap_or_default();
    let data_access = f.with(|s| s.meta_data_access_expires_at);
    let data = match f.with(|s| s.access_tokens.get(&input).copied()) {
        Some(exp) if exp > unix_now() => json!({
            "app_id": id, "type": "USER", "application": "opsdeck demo",
            "data_access_expires_at": data_access, "expires_at": exp, "is_valid": true,
            "issued_at": exp - META_EXPIRES_IN,
            "scopes": ["ads_read", "ads_management", "public_profile"],
            "user_id": "10229485729384756",
        }),
        Some(exp) => json!({
            "app_id": id, "type": "USER", "application": "opsdeck demo",
            "data_access_expires_at": data_access, "expires_at": exp, "is_valid": false,
            "error": {"code": 190, "message": "Error validating access token: Session has expired.", "subcode": 463},
            "scopes": [], "user_id": "10229485729384756",
        }),
        None => json!({
            "is_valid": false,
            "error": {"code": 190, "message": "Invalid OAuth access token."},
            "scopes": [],
        }),
    };
    let mut res = axum::Json(json!({"data": data})).into_response();
    for (k, v) in f.usage_headers() {
        if let Ok(v) = v.parse() {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

/// `GET /v25.0/me` with the token as bearer or `access_token`: the cheapest Graph read.
async fn meta_me(
    State(f): State<FakeOauth>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    f.note("GET /v25.0/me");
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query(&raw).get("access_token").cloned())
        .unwrap_or_default();
    if f.valid_access(&token).is_none() {
        return graph_error(
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        );
    }
    let mut res =
        axum::Json(json!({"id": "10229485729384756", "name": "Ops Example"})).into_response();
    for (k, v) in f.usage_headers() {
        if let Ok(v) = v.parse() {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

/// `opsdeck demo`'s OAuth providers: serves the fake and adds to `config` a Google credential
/// whose access token is about to expire (the refresh job renews it at once, through the real
/// refresh-token grant), a Meta credential exchanged for a long-lived token, and an access-only
/// credential five hours from expiry, which the Token Status tab and the grid show as expiring;
/// plus a token monitor on each.
pub async fn configure_demo(config: &mut crate::config::Config) -> std::io::Result<FakeOauth> {
    // The fake token endpoints listen on loopback, which token URLs reach only when the
    // operator allows private targets.
    config.alerts.allow_private_targets = true;
    use crate::health::monitor::{MonitorSpec, Secret};
    use crate::tokens::CredentialSpec;
    const CLIENT_ID: &str = "482915-demo.apps.googleusercontent.com";
    const CLIENT_SECRET: &str = "GOCSPX-demo-secret";
    const APP_ID: &str = "1020304050";
    const APP_SECRET: &str = "demo-meta-app-secret";
    let fake = FakeOauth::new(CLIENT_ID, CLIENT_SECRET, APP_ID, APP_SECRET);
    let (base, _server) = fake.start().await?;
    let now = unix_now();
    fake.add_refresh_token("1//demo-refresh-token");
    fake.add_access_token("ya29.demo-initial", now + 300);
    fake.add_access_token("ya29.demo-legacy", now + 5 * 3600);
    fake.add_access_token("EAAdemo-short-lived", now + 3600);
    let at = |secs: i64| crate::usage::quota::rfc3339((now + secs) * 1000);
    let secret = |s: &str| Some(Secret(s.into()));
    config.credentials.extend([
        CredentialSpec {
            name: "google-workspace".into(),
            provider: "google".into(),
            token_url: Some(format!("{base}/token")),
            client_id: CLIENT_ID.into(),
            client_secret: secret(CLIENT_SECRET),
            access_token: secret("ya29.demo-initial"),
            refresh_token: secret("1//demo-refresh-token"),
            expires_at: Some(at(300)),
            scopes: vec!["https://www.googleapis.com/auth/calendar.readonly".into()],
            owner: Some("ops@demo.opsdeck.dev".into()),
            ..Default::default()
        },
        CredentialSpec {
            name: "legacy-reporting".into(),
            provider: "google".into(),
            token_url: Some(format!("{base}/token")),
            access_token: secret("ya29.demo-legacy"),
            expires_at: Some(at(5 * 3600)),
            owner: Some("finance@demo.opsdeck.dev".into()),
            ..Default::default()
        },
        CredentialSpec {
            name: "facebook-ads".into(),
            provider: "meta".into(),
            token_url: Some(format!("{base}/v25.0/oauth/access_token")),
            client_id: APP_ID.into(),
            client_secret: secret(APP_SECRET),
            access_token: secret("EAAdemo-short-lived"),
            scopes: vec!["ads_read".into()],
            owner: Some("growth@demo.opsdeck.dev".into()),
            warn_before: Some("3d".into()),
            ..Default::default()
        },
    ]);
    let monitor = |name: &str, kind: &str, target: String, credential: &str| MonitorSpec {
        name: name.into(),
        kind: kind.into(),
        target,
        credential: Some(credential.into()),
        interval: Some("30s".into()),
        timeout: Some("5s".into()),
        ..Default::default()
    };
    config.monitors.extend([
        monitor(
            "Google sign-in",
            "google_oauth",
            base.clone(),
            "google-workspace",
        ),
        monitor(
            "Google Calendar",
            "google_calendar",
            base.clone(),
            "google-workspace",
        ),
        monitor(
            "Legacy reporting (Google)",
            "google_oauth",
            base.clone(),
            "legacy-reporting",
        ),
        monitor(
            "Facebook Ads",
            "meta",
            format!("{base}/v25.0"),
            "facebook-ads",
        ),
    ]);
    Ok(fake)
}
