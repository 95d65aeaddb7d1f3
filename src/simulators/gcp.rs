//! A local Google Cloud for the gcp monitor kind: the OAuth token endpoint's JWT-bearer grant
//! (`POST /token`) and Cloud Monitoring's `GET /v3/projects/{project}/timeSeries`, on their
//! real paths with their real error bodies. The token endpoint verifies the assertion's RS256
//! signature against the public key of the service account it serves, and checks `aud`,
//! `iss`, `scope`, the lifetime and the grant type as Google does; the Monitoring API wants a
//! token it issued, a filter naming exactly one metric type and an interval end, and pages
//! with `pageToken`/`nextPageToken`. Keys are generated at run time; none is ever committed.
//! Used by the tests and by `opsdeck demo`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::health::gcp::{JWT_BEARER, MONITORING_READ};

/// The fake's service account and project.
pub const CLIENT_EMAIL: &str = "opsdeck-monitor@opsdeck-demo.iam.gserviceaccount.com";
pub const PROJECT: &str = "opsdeck-demo";
pub const KEY_ID: &str = "5f1c0ffee0ddba11";

/// A new RSA-2048 key: its PEM PKCS#8 private key and its DER `RSAPublicKey`.
pub fn generate_key() -> Result<(String, Vec<u8>), aws_lc_rs::error::Unspecified> {
    let pair = KeyPair::generate(KeySize::Rsa2048)?;
    let pkcs8 = pair.as_der()?;
    let public = pair.public_key().as_ref().to_vec();
    Ok((pem("PRIVATE KEY", pkcs8.as_ref()), public))
}

/// DER as PEM with the given label, 64 characters a line.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A service-account key file as Google issues it.
pub fn key_file(private_key_pem: &str, token_uri: &str, project: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": KEY_ID,
        "private_key": private_key_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "104729365112233445566",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }))
    .unwrap_or_default()
}

/// How the Monitoring API answers its next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GcpBehaviour {
    #[default]
    Normal,
    /// 403 `PERMISSION_DENIED`, as for a service account without `monitoring.viewer`.
    PermissionDenied,
    /// 429 `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// 200 with a body that is not JSON.
    Garbage,
}

/// One series the fake serves.
#[derive(Debug, Clone)]
pub struct FakeSeries {
    pub metric_type: String,
    pub instance_id: String,
    pub instance_name: String,
    pub zone: String,
    /// INT64 (served as `int64Value` strings) rather than DOUBLE.
    pub int64: bool,
    /// Values one minute apart, oldest first; the last ends now.
    pub values: Vec<f64>,
}

impl FakeSeries {
    /// Three instances, each with CPU utilization and received bytes.
    pub fn sample() -> Vec<FakeSeries> {
        let mut out = Vec::new();
        for (i, (id, name, cpu)) in [
            ("7310000000000000001", "web-1", 0.42),
            ("7310000000000000002", "web-2", 0.17),
            ("7310000000000000003", "worker-1", 0.88),
        ]
        .into_iter()
        .enumerate()
        {
            out.push(FakeSeries {
                metric_type: crate::health::gcp::DEFAULT_METRIC_TYPES[0].into(),
                instance_id: id.into(),
                instance_name: name.into(),
                zone: "europe-west1-b".into(),
                int64: false,
                values: vec![cpu - 0.05, cpu + 0.02, cpu],
            });
            out.push(FakeSeries {
                metric_type: crate::health::gcp::DEFAULT_METRIC_TYPES[1].into(),
                instance_id: id.into(),
                instance_name: name.into(),
                zone: "europe-west1-b".into(),
                int64: true,
                values: vec![1_000_000.0, 1_250_000.0, 1_200_000.0 * (i + 1) as f64],
            });
        }
        out
    }
}

struct Shared {
    /// `RSAPublicKey` DER of the service account's keys.
    public_keys: Mutex<Vec<Vec<u8>>>,
    project: String,
    /// The token endpoint's own URL, the only `aud` accepted; set when started.
    token_uri: Mutex<String>,
    /// Issued access tokens → their expiry (unix s).
    tokens: Mutex<HashMap<String, i64>>,
    token_requests: AtomicUsize,
    list_requests: AtomicUsize,
    behaviour: Mutex<GcpBehaviour>,
    series: Mutex<Vec<FakeSeries>>,
    /// The most series one page holds, whatever `pageSize` asks.
    max_page: Mutex<usize>,
    /// The token lifetime it grants, in seconds.
    expires_in: Mutex<i64>,
}

/// The fake. Cloning shares the same state.
#[derive(Clone)]
pub struct FakeGcp {
    shared: Arc<Shared>,
    private_key_pem: Arc<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeGcp {
    /// A fake Google Cloud with a service account of a freshly generated key.
    pub fn new() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let (private_key_pem, public) = generate_key()?;
        Ok(FakeGcp {
            shared: Arc::new(Shared {
                public_keys: Mutex::new(vec![public]),
                project: PROJECT.into(),
                token_uri: Mutex::new(String::new()),
                tokens: Mutex::new(HashMap::new()),
                token_requests: AtomicUsize::new(0),
                list_requests: AtomicUsize::new(0),
                behaviour: Mutex::new(GcpBehaviour::Normal),
                series: Mutex::new(FakeSeries::sample()),
                max_page: Mutex::new(100),
                expires_in: Mutex::new(3599),
            }),
            private_key_pem: Arc::new(private_key_pem),
        })
    }

    /// Serves on a loopback port; returns the base URL (the Monitoring API base; the token
    /// endpoint is `{base}/token`) and the server task.
    pub async fn start(&self) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        *lock(&self.shared.token_uri) = format!("{base}/token");
        let app = Router::new()
            .route("/token", post(token))
            .route("/v3/projects/{project}/timeSeries", get(time_series))
            .with_state(self.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((base, server))
    }

    /// The service account's key file, its token URI on this fake.
    pub fn key_file(&self) -> String {
        key_file(
            &self.private_key_pem,
            &lock(&self.shared.token_uri),
            &self.shared.project,
        )
    }

    /// A key file naming the same account and key id but holding another private key, whose
    /// signatures the fake refuses.
    pub fn stranger_key_file(&self) -> Result<String, aws_lc_rs::error::Unspecified> {
        let (other, _) = generate_key()?;
        Ok(key_file(
            &other,
            &lock(&self.shared.token_uri),
            &self.shared.project,
        ))
    }

    /// Token grants asked for so far.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::Relaxed)
    }

    /// `timeSeries` pages asked for so far.
    pub fn list_requests(&self) -> usize {
        self.shared.list_requests.load(Ordering::Relaxed)
    }

    pub fn set(&self, behaviour: GcpBehaviour) {
        *lock(&self.shared.behaviour) = behaviour;
    }

    /// Caps the series a page holds (to exercise paging).
    pub fn max_page(&self, n: usize) {
        *lock(&self.shared.max_page) = n.max(1);
    }

    /// Changes the served series.
    pub fn series(&self, f: impl FnOnce(&mut Vec<FakeSeries>)) {
        f(&mut lock(&self.shared.series));
    }

    /// Revokes every issued token, as an expiry or a key deletion would.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Google's OAuth error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Google's API error body (`google.rpc.Status` in JSON).
fn api_error(status: StatusCode, message: &str, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code}})),
    )
        .into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn token(State(f): State<FakeGcp>, body: Bytes) -> Response {
    f.shared.token_requests.fetch_add(1, Ordering::Relaxed);
    let fields = form(&body);
    if fields.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
        );
    }
    let Some(assertion) = fields.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let invalid_grant =
        |description: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    let parts: Vec<&str> = assertion.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decoded = |i: usize| -> Option<Value> {
        serde_json::from_slice(&b64.decode(parts.get(i)?).ok()?).ok()
    };
    let (Some(header), Some(claims), Some(signature)) = (
        decoded(0),
        decoded(1),
        parts.get(2).and_then(|s| b64.decode(s).ok()),
    ) else {
        return invalid_grant("Invalid JWT: the assertion is not a JWT");
    };
    if parts.len() != 3 || header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return invalid_grant("Invalid JWT: the assertion is not signed with RS256");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = lock(&f.shared.public_keys).iter().any(|key| {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
            .verify(signed.as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return invalid_grant("Invalid JWT Signature.");
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default();
    if text("iss") != CLIENT_EMAIL {
        return invalid_grant("Invalid grant: account not found");
    }
    if text("aud") != lock(&f.shared.token_uri).as_str() {
        return invalid_grant("Invalid JWT: Failed audience check.");
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return invalid_grant("Invalid JWT: iat and exp are required.");
    };
    let now = now_s();
    if exp - iat > 3600 || exp <= now || iat > now + 300 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scopes: Vec<&str> = text("scope").split(' ').filter(|s| !s.is_empty()).collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    if !scopes.contains(&MONITORING_READ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The fake grants only the monitoring.read scope.",
        );
    }
    let token = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
    let expires_in = *lock(&f.shared.expires_in);
    lock(&f.shared.tokens).insert(token.clone(), now + expires_in);
    axum::Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}))
        .into_response()
}

async fn time_series(
    State(f): State<FakeGcp>,
    Path(project): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    f.shared.list_requests.fetch_add(1, Ordering::Relaxed);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = bearer.is_some_and(|t| {
        lock(&f.shared.tokens)
            .get(t)
            .is_some_and(|exp| *exp > now_s())
    });
    if !valid {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            "UNAUTHENTICATED",
        );
    }
    let behaviour = *lock(&f.shared.behaviour);
    match behaviour {
        GcpBehaviour::PermissionDenied => {
            return api_error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Permission monitoring.timeSeries.list denied (or the resource may not \
                     exist). project={project}"
                ),
                "PERMISSION_DENIED",
            );
        }
        GcpBehaviour::RateLimited => {
            return api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Time series queries' and limit 'Time series \
                 queries per minute' of service 'monitoring.googleapis.com'.",
                "RESOURCE_EXHAUSTED",
            );
        }
        GcpBehaviour::Garbage => return (StatusCode::OK, "<html>oops</html>").into_response(),
        GcpBehaviour::Normal => {}
    }
    if project != f.shared.project {
        return api_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Permission monitoring.timeSeries.list denied (or the resource may not exist). \
                 project={project}"
            ),
            "PERMISSION_DENIED",
        );
    }
    let q = form(query.unwrap_or_default().as_bytes());
    let Some(filter) = q.get("filter") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Field filter had an invalid value: A filter must be specified.",
            "INVALID_ARGUMENT",
        );
    };
    let metric_type = match filter.matches("metric.type").count() {
        1 => filter
            .split_once("metric.type")
            .and_then(|(_, rest)| rest.trim_start().strip_prefix('='))
            .map(|rest| rest.trim_start())
            .and_then(|rest| rest.strip_prefix('"'))
            .and_then(|rest| rest.split_once('"'))
            .map(|(t, _)| t.to_string()),
        _ => None,
    };
    let Some(metric_type) = metric_type else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Field filter had an invalid value: A filter must specify exactly one metric type.",
            "INVALID_ARGUMENT",
        );
    };
    let interval_ok = q.get("interval.endTime").is_some_and(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
    });
    if !interval_ok {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Field interval.endTime had an invalid value: an RFC 3339 time is required.",
            "INVALID_ARGUMENT",
        );
    }
    // Aligning to the mean turns every value into a DOUBLE, as Google does.
    let aligned = q.get("aggregation.perSeriesAligner").map(String::as_str) == Some("ALIGN_MEAN");
    let offset: usize = match q.get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => match t.strip_prefix("page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "Field pageToken had an invalid value.",
                    "INVALID_ARGUMENT",
                );
            }
        },
    };
    let page_size = q
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100_000)
        .min(*lock(&f.shared.max_page));
    let matching: Vec<FakeSeries> = lock(&f.shared.series)
        .iter()
        .filter(|s| s.metric_type == metric_type)
        .cloned()
        .collect();
    let now = now_s();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|s| series_json(s, &f.shared.project, now, aligned))
        .collect();
    let mut body = serde_json::Map::new();
    // Google leaves empty lists and tokens out.
    if !page.is_empty() {
        body.insert("timeSeries".into(), Value::Array(page));
    }
    if offset + page_size < matching.len() {
        body.insert(
            "nextPageToken".into(),
            Value::String(format!("page-{}", offset + page_size)),
        );
    }
    axum::Json(Value::Object(body)).into_response()
}

fn series_json(s: &FakeSeries, project: &str, now: i64, aligned: bool) -> Value {
    let int64 = s.int64 && !aligned;
    let n = s.values.len() as i64;
    // Newest first, as Google returns points.
    let points: Vec<Value> = s
        .values
        .iter()
        .enumerate()
        .rev()
        .map(|(i, v)| {
            let end = now - 60 * (n - 1 - i as i64);
            let value = if int64 {
                json!({"int64Value": format!("{}", *v as i64)})
            } else {
                json!({"doubleValue": v})
            };
            json!({
                "interval": {
                    "startTime": crate::health::gcp::rfc3339(end - 60),
                    "endTime": crate::health::gcp::rfc3339(end),
                },
                "value": value,
            })
        })
        .collect();
    let kind = if s.metric_type.ends_with("_count") {
        "DELTA"
    } else {
        "GAUGE"
    };
    json!({
        "metric": {"type": s.metric_type, "labels": {"instance_name": s.instance_name}},
        "resource": {"type": "gce_instance", "labels": {
            "project_id": project, "instance_id": s.instance_id, "zone": s.zone}},
        "metricKind": if aligned { "GAUGE" } else { kind },
        "valueType": if int64 { "INT64" } else { "DOUBLE" },
        "points": points,
    })
}
