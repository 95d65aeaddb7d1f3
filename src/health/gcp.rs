//! Google Cloud: the service-account key a `gcp` monitor holds, the OAuth 2.0 JWT-bearer
//! grant that turns it into an access token, the in-memory token cache, and the monitor's
//! health read (the token exchange plus one Cloud Monitoring `timeSeries` page).
//!
//! The key is parsed and its RSA private key loaded when the definition is validated, so bad
//! key material is refused with the field named rather than failing every check. A token is
//! kept per key (a SHA-256 of its identity and private key, never the key itself) until five
//! minutes before Google says it expires, and shared by the health checks and the extras
//! collection of the same key. Nothing here logs; errors name the problem and never carry the
//! key, the assertion or a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use sha2::Digest as _;

use super::checks::Verdict;
use super::providers::{ProviderTarget, Seen, get_json};

/// Google's token endpoint, when the key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The one scope a gcp monitor asks for: reading Cloud Monitoring.
pub const MONITORING_READ: &str = "https://www.googleapis.com/auth/monitoring.read";
/// The metric types read when a monitor names none; the first is also the health read's.
pub const DEFAULT_METRIC_TYPES: &[&str] = &[
    "compute.googleapis.com/instance/cpu/utilization",
    "compute.googleapis.com/instance/network/received_bytes_count",
];
/// The JWT-bearer grant type (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google accepts assertions valid for at most an hour.
const ASSERTION_LIFETIME_S: i64 = 3600;
/// A cached token is replaced this long before it expires, so no check holds a token that
/// dies in flight.
const REFRESH_BEFORE_S: i64 = 300;
/// Keys whose tokens are cached at most; past it, idle entries are dropped.
const MAX_CACHED_KEYS: usize = 1024;
/// How far back the health read asks for points: a few alignment periods of a typical metric.
const HEALTH_WINDOW_S: i64 = 300;

/// What went wrong with a key or a token exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcpError {
    /// The key is not a usable service-account key; the text names the part at fault.
    #[error("not a service-account key: {0}")]
    Key(String),
    /// The token endpoint refused the assertion or answered something else than a token.
    #[error("token exchange: {why}")]
    Token { status: Option<u16>, why: String },
}

/// A parsed service-account key file: what the grant needs. `Debug` never shows the private
/// key.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub project_id: Option<String>,
    pub token_uri: String,
    /// The PKCS#8 DER of the RSA private key.
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

fn bad(why: impl Into<String>) -> GcpError {
    GcpError::Key(why.into())
}

impl ServiceAccount {
    /// Parses a key file (`type`, `project_id`, `private_key_id`, `private_key`,
    /// `client_email`, `token_uri`) and loads its private key, which must be an RSA key in
    /// PEM PKCS#8 (`BEGIN PRIVATE KEY`), as Google issues them.
    pub fn parse(text: &str) -> Result<Self, GcpError> {
        let json: Value = serde_json::from_str(text.trim())
            .map_err(|_| bad("not JSON (give the key file's contents)"))?;
        let Some(obj) = json.as_object() else {
            return Err(bad("not a JSON object"));
        };
        let field = |name: &'static str| -> Result<Option<&str>, GcpError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
                Some(_) => Err(bad(format!("{name} must be a non-empty string"))),
            }
        };
        let required =
            |name: &'static str| field(name)?.ok_or_else(|| bad(format!("{name} is missing")));
        if let Some(kind) = field("type")?
            && kind != "service_account"
        {
            // Only the kind is echoed: it is not secret, and says which file was pasted.
            let kind: String = kind.chars().take(40).collect();
            return Err(bad(format!("type is {kind:?}, not \"service_account\"")));
        }
        let client_email = required("client_email")?;
        if !client_email.contains('@') || client_email.len() > 320 {
            return Err(bad("client_email is not an e-mail address"));
        }
        let private_key_id = required("private_key_id")?;
        let token_uri = field("token_uri")?.unwrap_or(DEFAULT_TOKEN_URI);
        match reqwest::Url::parse(token_uri) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.password().is_none() => {}
            _ => return Err(bad("token_uri is not an http(s) URL")),
        }
        let project_id = field("project_id")?.map(str::to_string);
        let pem = required("private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            bad("private_key is not a PEM PKCS#8 key (-----BEGIN PRIVATE KEY-----)")
        })?;
        let pkcs8 = der.secret_pkcs8_der().to_vec();
        if !known_rsa_key(&pkcs8) {
            RsaKeyPair::from_pkcs8(&pkcs8)
                .map_err(|_| bad("private_key is not an RSA private key (2048 to 8192 bits)"))?;
            remember_rsa_key(&pkcs8);
        }
        Ok(ServiceAccount {
            client_email: client_email.to_string(),
            private_key_id: private_key_id.to_string(),
            project_id,
            token_uri: token_uri.to_string(),
            pkcs8,
        })
    }

    /// The signed assertion for `scope` (space-separated scopes), issued at `now` (unix s),
    /// valid for an hour.
    pub fn assertion(&self, scope: &str, now: i64) -> Result<String, GcpError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signer = RsaKeyPair::from_pkcs8(&self.pkcs8)
            .map_err(|_| bad("private_key is not an RSA private key"))?;
        let mut signature = vec![0; signer.public_modulus_len()];
        signer
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| bad("private_key could not sign"))?;
        Ok(format!("{signing_input}.{}", b64.encode(signature)))
    }

    /// Where this key's tokens are cached: its identity and private key, hashed, so two keys
    /// of one account (a rotated or a wrong one) never share a token.
    fn cache_id(&self, scope: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        for part in [
            self.token_uri.as_bytes(),
            scope.as_bytes(),
            self.client_email.as_bytes(),
            self.private_key_id.as_bytes(),
            &self.pkcs8,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// Digests of private keys already loaded as RSA keys. Definitions are validated again at each
/// reload and extras step (every 15 s), and loading an RSA key checks it (~1 ms); a key seen
/// before is known good.
fn loaded_keys() -> &'static Mutex<std::collections::HashSet<[u8; 32]>> {
    static LOADED: OnceLock<Mutex<std::collections::HashSet<[u8; 32]>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

fn known_rsa_key(pkcs8: &[u8]) -> bool {
    let digest: [u8; 32] = sha2::Sha256::digest(pkcs8).into();
    loaded_keys()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&digest)
}

fn remember_rsa_key(pkcs8: &[u8]) {
    let digest: [u8; 32] = sha2::Sha256::digest(pkcs8).into();
    let mut set = loaded_keys().lock().unwrap_or_else(|e| e.into_inner());
    if set.len() >= MAX_CACHED_KEYS {
        set.clear();
    }
    set.insert(digest);
}

/// An access token and when it stops being used (unix s).
#[derive(Clone)]
struct Cached {
    token: String,
    use_until: i64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Per key, the current token. Each key has its own async lock, so concurrent checks of one
/// key make one exchange and a slow token endpoint holds up only that key.
fn cache() -> &'static Mutex<HashMap<[u8; 32], Slot>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Slot>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn slot(id: [u8; 32]) -> Slot {
    let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_CACHED_KEYS && !map.contains_key(&id) {
        // Bounded: entries nobody is using right now go first (they refill on demand).
        map.retain(|_, s| Arc::strong_count(s) > 1);
    }
    map.entry(id).or_default().clone()
}

/// Drops the cached token of `sa`, e.g. after the API refused it.
pub fn forget(sa: &ServiceAccount, scope: &str) {
    let id = sa.cache_id(scope);
    let removed = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    drop(removed);
}

fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The access token for `sa` and `scope`: the cached one while it has more than five minutes
/// left, else a new one from the token endpoint.
pub async fn access_token(
    client: &reqwest::Client,
    sa: &ServiceAccount,
    scope: &str,
) -> Result<String, GcpError> {
    let slot = slot(sa.cache_id(scope));
    let mut held = slot.lock().await;
    let now = now_s();
    if let Some(c) = held.as_ref()
        && c.use_until > now
    {
        return Ok(c.token.clone());
    }
    let (token, expires_in) = exchange(client, sa, scope, now).await?;
    // A token living under ten minutes (Google's live an hour) is kept for half its life.
    let keep = if expires_in > 2 * REFRESH_BEFORE_S {
        expires_in - REFRESH_BEFORE_S
    } else {
        expires_in / 2
    };
    *held = Some(Cached {
        token: token.clone(),
        use_until: now + keep,
    });
    Ok(token)
}

/// One JWT-bearer grant: POSTs the signed assertion, returns the token and its lifetime (s).
async fn exchange(
    client: &reqwest::Client,
    sa: &ServiceAccount,
    scope: &str,
    now: i64,
) -> Result<(String, i64), GcpError> {
    let assertion = sa.assertion(scope, now)?;
    fn enc(s: &str) -> percent_encoding::PercentEncode<'_> {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
    }
    let body = format!(
        "grant_type={}&assertion={}",
        enc(JWT_BEARER),
        enc(&assertion)
    );
    let failed = |status, why: String| GcpError::Token { status, why };
    let res = client
        .post(&sa.token_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| failed(None, super::checks::describe(&e.without_url())))?;
    let status = res.status().as_u16();
    let body = super::checks::read_body(res)
        .await
        .map_err(|why| failed(Some(status), why))?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !(200..300).contains(&status) {
        return Err(failed(Some(status), token_error(status, json.as_ref())));
    }
    let Some(json) = json else {
        return Err(failed(Some(status), "the answer is not JSON".into()));
    };
    let token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains(['\r', '\n']))
        .ok_or_else(|| failed(Some(status), "unexpected answer: no access_token".into()))?;
    let expires_in = match json.get("expires_in") {
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                failed(
                    Some(status),
                    "unexpected answer: expires_in is not a positive number".into(),
                )
            })?,
        None => ASSERTION_LIFETIME_S,
    };
    Ok((token.to_string(), expires_in))
}

/// Google's OAuth error (`{"error": "invalid_grant", "error_description": "..."}`) as a
/// reason: `HTTP 400: invalid_grant: Invalid JWT Signature.`
fn token_error(status: u16, json: Option<&Value>) -> String {
    let mut why = format!("HTTP {status}");
    let text = |k: &str| {
        json.and_then(|j| j.get(k))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect::<String>())
    };
    if let Some(code) = text("error") {
        why.push_str(": ");
        why.push_str(&code);
    }
    if let Some(description) = text("error_description") {
        why.push_str(": ");
        why.push_str(&description);
    }
    why
}

/// The `timeSeries` list URL of `project` on `base`.
pub fn time_series_url(base: &str, project: &str) -> String {
    format!(
        "{}/v3/projects/{project}/timeSeries",
        base.trim_end_matches('/')
    )
}

/// `t` (unix s) as RFC 3339, as the Monitoring API's intervals take it.
pub fn rfc3339(t: i64) -> String {
    crate::usage::quota::rfc3339(t.saturating_mul(1000))
}

/// The filter naming one metric type, as `timeSeries.list` requires.
pub fn metric_filter(metric_type: &str) -> String {
    format!("metric.type = \"{metric_type}\"")
}

/// The health read: the token exchange, then the first page (one series) of the first
/// metric type over the last five minutes. A refused assertion, a refused token (401/403,
/// Google's `{"error": {"code", "message", "status"}}`) or a rate limit (429
/// `RESOURCE_EXHAUSTED`) is down with Google's message.
pub(super) async fn read(t: &ProviderTarget, client: &reqwest::Client) -> Result<Seen, Seen> {
    let down = |status, why: String| Seen {
        status,
        headers: Vec::new(),
        problem: Some((Verdict::Down, why)),
        detail: None,
        readings: Vec::new(),
    };
    let sa = ServiceAccount::parse(t.key.expose()).map_err(|e| down(None, format!("key: {e}")))?;
    let project = t
        .account
        .clone()
        .or_else(|| sa.project_id.clone())
        .ok_or_else(|| down(None, "project: none given and the key names none".into()))?;
    let token = access_token(client, &sa, MONITORING_READ)
        .await
        .map_err(|e| match e {
            // Google's message quotes its answer: administrators only.
            GcpError::Token { status, .. } => Seen {
                detail: Some(e.to_string()),
                ..down(
                    status,
                    match status {
                        Some(s) => format!("token exchange: HTTP {s}"),
                        None => "token exchange failed".into(),
                    },
                )
            },
            GcpError::Key(_) => down(None, format!("key: {e}")),
        })?;
    let metric_type = t
        .metric_types
        .first()
        .map(String::as_str)
        .unwrap_or(DEFAULT_METRIC_TYPES[0]);
    let now = now_s();
    let req = client
        .get(time_series_url(&t.base, &project))
        .bearer_auth(&token)
        .query(&[
            ("filter", metric_filter(metric_type)),
            ("interval.startTime", rfc3339(now - HEALTH_WINDOW_S)),
            ("interval.endTime", rfc3339(now)),
            ("pageSize", "1".to_string()),
        ]);
    let answer = match get_json(req).await {
        Ok(a) => a,
        Err(f) => {
            if f.status == Some(401) {
                // Revoked or expired early: the next check asks for a new one.
                forget(&sa, MONITORING_READ);
            }
            return Err(super::providers::Seen::failed_detail(
                f.status, f.headers, f.public, f.why,
            ));
        }
    };
    // Google leaves empty lists out: no `timeSeries` is no data, not a wrong shape.
    let series = match answer.json.get("timeSeries") {
        None => 0,
        Some(Value::Array(list)) => list.len(),
        Some(_) => {
            return Err(Seen {
                status: Some(answer.status),
                headers: answer.headers,
                problem: Some((
                    Verdict::Down,
                    "unexpected answer: timeSeries is not a list".into(),
                )),
                detail: None,
                readings: Vec::new(),
            });
        }
    };
    if !answer.json.is_object() {
        return Err(down(
            Some(answer.status),
            "unexpected answer: not a JSON object".into(),
        ));
    }
    Ok(Seen {
        status: Some(answer.status),
        headers: answer.headers,
        problem: None,
        detail: None,
        readings: vec![super::providers::Reading {
            name: "series_seen".into(),
            value: series as f64,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    fn key_json(pem: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "opsdeck-test",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "watcher@opsdeck-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "http://127.0.0.1:9/token",
        })
        .to_string()
    }

    #[test]
    fn assertions_carry_the_claims_and_verify_with_the_public_key() {
        let (pem, public) = crate::simulators::gcp::generate_key().expect("a key");
        let sa = ServiceAccount::parse(&key_json(&pem)).expect("parses");
        assert_eq!(sa.project_id.as_deref(), Some("opsdeck-test"));
        let jwt = sa.assertion(MONITORING_READ, 1_700_000_000).expect("signs");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "watcher@opsdeck-test.iam.gserviceaccount.com",
                "scope": MONITORING_READ,
                "aud": "http://127.0.0.1:9/token",
                "iat": 1_700_000_000,
                "exp": 1_700_003_600,
            })
        );
        let signature = b64.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies");
        // Another key's public half does not verify it.
        let (_, other) = crate::simulators::gcp::generate_key().expect("a key");
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &other)
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .is_err()
        );
        // The private key never shows in Debug.
        assert!(!format!("{sa:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_key_material_is_refused_naming_the_part() {
        let (pem, _) = crate::simulators::gcp::generate_key().expect("a key");
        let good: Value = serde_json::from_str(&key_json(&pem)).unwrap();
        let with = |k: &str, v: Value| {
            let mut j = good.clone();
            j[k] = v;
            ServiceAccount::parse(&j.to_string())
                .unwrap_err()
                .to_string()
        };
        assert!(
            ServiceAccount::parse("sk_live_123")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let not_pem = with("private_key", "MIIEvQ".into());
        assert!(
            not_pem.contains("private_key is not a PEM PKCS#8 key"),
            "{not_pem}"
        );
        // PKCS#1 ("RSA PRIVATE KEY") is not what Google issues.
        let pkcs1 = pem.replace("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY");
        assert!(with("private_key", pkcs1.into()).contains("PEM PKCS#8"));
        // A PKCS#8 key that is not RSA (an EC key).
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let ec_pem = crate::simulators::gcp::pem("PRIVATE KEY", ec.to_pkcs8v1().unwrap().as_ref());
        assert!(with("private_key", ec_pem.into()).contains("not an RSA private key"));
        assert!(with("type", "authorized_user".into()).contains("type is \"authorized_user\""));
        assert!(with("client_email", Value::Null).contains("client_email is missing"));
        assert!(with("token_uri", "ftp://x".into()).contains("token_uri"));
        let e = with(
            "private_key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
        );
        assert!(e.contains("private_key"), "{e}");
    }

    fn gcp_spec(base: &str, key: &str) -> crate::health::monitor::MonitorSpec {
        crate::health::monitor::MonitorSpec {
            name: "gcp".into(),
            kind: "gcp".into(),
            target: base.into(),
            timeout: Some("5s".into()),
            key: Some(crate::health::monitor::Secret(key.into())),
            ..Default::default()
        }
    }

    #[test]
    fn gcp_definitions_take_a_key_file_a_project_and_metric_types() {
        let (pem, _) = crate::simulators::gcp::generate_key().expect("a key");
        let key = key_json(&pem);
        let m = gcp_spec("", &key).validate().expect("valid");
        assert_eq!(m.target, "https://monitoring.googleapis.com");
        assert_eq!(
            m.account.as_deref(),
            Some("opsdeck-test"),
            "the key's project"
        );
        assert_eq!(m.metric_types, DEFAULT_METRIC_TYPES);
        assert!(m.extras_interval.is_some(), "extras by default");
        let mut s = gcp_spec("", &key);
        s.project = Some("other-project".into());
        s.metric_types = vec!["cloudsql.googleapis.com/database/cpu/utilization".into()];
        let m = s.validate().expect("valid");
        assert_eq!(m.account.as_deref(), Some("other-project"));
        assert_eq!(m.metric_types.len(), 1);
        let refused = |s: crate::health::monitor::MonitorSpec| s.validate().unwrap_err();
        let e = refused(gcp_spec("", "{\"type\": \"service_account\"}"));
        assert_eq!(e.field, "key");
        assert!(e.problem.contains("client_email is missing"), "{e}");
        let e = refused(gcp_spec(
            "",
            &key.replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE"),
        ));
        assert_eq!(e.field, "key");
        assert!(!e.to_string().contains("MII"), "no key material in {e}");
        let mut s = gcp_spec("", &key);
        s.project = Some("Bad/Project".into());
        assert_eq!(refused(s).field, "project");
        let mut s = gcp_spec("", &key);
        s.metric_types = vec!["x\" OR metric.type=\"y".into()];
        assert_eq!(refused(s).field, "metric_types[0]");
        let mut s = gcp_spec("", &key);
        s.account = Some("p".into());
        assert_eq!(refused(s).field, "account");
        let mut other = gcp_spec("", "k");
        other.kind = "luma".into();
        other.project = Some("p".into());
        assert_eq!(refused(other.clone()).field, "project");
        other.project = None;
        other.metric_types = vec!["a/b".into()];
        assert_eq!(refused(other).field, "metric_types");
    }

    /// Against the fake: up; a key signed by another key is down with Google's message; two
    /// checks make one token exchange; a revoked token is replaced; 403 and 429 are down with
    /// Google's message.
    #[tokio::test]
    async fn the_health_read_exchanges_once_and_fails_with_googles_message() {
        use crate::health::checks::{self, Verdict};
        use crate::simulators::gcp::{FakeGcp, GcpBehaviour};
        let fake = FakeGcp::new().expect("a key");
        let (base, _server) = fake.start().await.expect("fake starts");
        let monitor = gcp_spec(&base, &fake.key_file()).validate().expect("valid");
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");
        assert_eq!(fake.token_requests(), 1, "the token is cached");
        assert_eq!(fake.list_requests(), 2);

        let stranger = gcp_spec(&base, &fake.stranger_key_file().unwrap())
            .validate()
            .expect("valid");
        let r = checks::run(&stranger, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Down);
        // Google's words are for administrators; everyone sees the status.
        assert_eq!(r.error.as_deref(), Some("token exchange: HTTP 400"));
        assert_eq!(
            r.detail.as_deref(),
            Some("token exchange: HTTP 400: invalid_grant: Invalid JWT Signature.")
        );
        assert_eq!(r.status, Some(400));

        fake.revoke_tokens();
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.error.as_deref(), Some("HTTP 401"));
        assert!(
            r.detail
                .as_deref()
                .unwrap_or_default()
                .starts_with("HTTP 401: Request had invalid authentication"),
            "{r:?}"
        );
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Up, "a new token after the 401: {r:?}");

        fake.set(GcpBehaviour::PermissionDenied);
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.error.as_deref(), Some("HTTP 403"));
        assert!(
            r.detail
                .as_deref()
                .unwrap_or_default()
                .starts_with("HTTP 403: Permission monitoring.timeSeries.list denied"),
            "{r:?}"
        );
        fake.set(GcpBehaviour::RateLimited);
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert!(
            r.error
                .as_deref()
                .unwrap_or_default()
                .contains("(rate limited)"),
            "{r:?}"
        );
        fake.set(GcpBehaviour::Garbage);
        let r = checks::run(&monitor, &checks::outbound()).await;
        assert_eq!(r.error.as_deref(), Some("the answer is not JSON"));
        let text = format!("{r:?}");
        assert!(
            !text.contains("PRIVATE") && !text.contains("ya29"),
            "{text}"
        );
    }

    #[test]
    fn token_errors_name_googles_code_and_description() {
        let j = serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."});
        assert_eq!(
            token_error(400, Some(&j)),
            "HTTP 400: invalid_grant: Invalid JWT Signature."
        );
        assert_eq!(token_error(502, None), "HTTP 502");
    }
}
