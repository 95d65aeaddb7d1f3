//! A typed client for the Stripe read endpoints opsdeck uses, on `reqwest` + `serde` rather
//! than `async-stripe` (see ARCHITECTURE.md: build cost, and its verifier's single-`v1` limit).
//!
//! Every request pins `Stripe-Version`, is paced under Stripe's read limit and a concurrency
//! cap, and is retried with jittered exponential backoff when Stripe says so
//! (`Stripe-Should-Retry`), or, without that header, on 409, 429, 5xx and transport failures;
//! `Retry-After` is obeyed when present. A 401 is never retried: the key is wrong.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

/// The API version every request and every object opsdeck parses follows. It is after
/// 2025-03-31 (basil), which moved `current_period_*` onto subscription items.
pub const STRIPE_VERSION: &str = "2025-03-31.basil";

/// The largest page Stripe serves.
pub const PAGE_LIMIT: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// 401: the secret key is missing, wrong or revoked. Marks the integration broken.
    #[error("Stripe refused the API key (401): {0}")]
    Unauthorized(String),
    /// A 4xx Stripe will not change its mind about, or a retryable failure that outlasted the
    /// retries.
    #[error("Stripe answered {status} on {path}: {message}")]
    Api {
        status: u16,
        path: String,
        /// `error.type`, `error.code` when given.
        kind: String,
        message: String,
    },
    #[error("cannot reach Stripe at {path}: {message}")]
    Transport { path: String, message: String },
    #[error("unexpected response from {path}: {message}")]
    Decode { path: String, message: String },
}

impl StripeError {
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized(_))
    }
}

/// Retry pacing; tests shrink the delays.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff before retry n is a random delay up to `base × 2^n`, capped at `max`.
    pub base: Duration,
    pub max: Duration,
    /// Longest `Retry-After` obeyed; longer asks are cut to this.
    pub max_retry_after: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One page of a Stripe list.
#[derive(Debug, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: String,
    retry: RetryPolicy,
    pace: Arc<DefaultDirectRateLimiter>,
    slots: Arc<Semaphore>,
}

impl StripeClient {
    /// A client for `api_base` (e.g. `https://api.stripe.com`) with secret key `key`. Reads are
    /// paced at 80 % of Stripe's limit for the key's mode (100/s live, 25/s test) with at most
    /// eight in flight.
    pub fn new(api_base: &str, key: &str, retry: RetryPolicy) -> Result<Self, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(retry.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StripeError::Transport {
                path: api_base.into(),
                message: e.to_string(),
            })?;
        let test_mode = key.starts_with("sk_test_") || key.starts_with("rk_test_");
        let per_second =
            NonZeroU32::new(if test_mode { 20 } else { 80 }).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            http,
            base: api_base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            retry,
            pace: Arc::new(RateLimiter::direct(Quota::per_second(per_second))),
            slots: Arc::new(Semaphore::new(8)),
        })
    }

    /// The same client paced at `per_second` reads instead (an account with a raised limit,
    /// or a local server that has none).
    pub fn with_pace(mut self, per_second: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        self.pace = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
        self
    }

    /// `GET {base}{path}?{query}` decoded as `T`, retried as the module describes.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<T, StripeError> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(&url, query).await;
            let (error, wait) = match outcome {
                Ok(Ok(body)) => {
                    // serde quotes the offending value, which may be anything the body held.
                    return serde_json::from_slice(&body).map_err(|e| StripeError::Decode {
                        path: path.into(),
                        message: redact_secrets(&e.to_string()),
                    });
                }
                Ok(Err(failure)) => {
                    let retry = failure.retryable();
                    let wait = failure.retry_after;
                    let error = failure.into_error(path);
                    if !retry {
                        return Err(error);
                    }
                    (error, wait)
                }
                Err(message) => (
                    StripeError::Transport {
                        path: path.into(),
                        message,
                    },
                    None,
                ),
            };
            if attempt >= self.retry.attempts {
                return Err(error);
            }
            let delay = match wait {
                Some(asked) => asked.min(self.retry.max_retry_after),
                None => self.backoff(attempt),
            };
            tracing::debug!(path, attempt, ?delay, %error, "retrying Stripe request");
            tokio::time::sleep(delay).await;
        }
    }

    /// Full jitter: a random delay up to the exponential ceiling.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base
            .saturating_mul(1 << attempt.min(16))
            .min(self.retry.max);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// One request: the body of a 2xx, the failure of any other status, or a transport error.
    async fn attempt(
        &self,
        url: &str,
        query: &[(String, String)],
    ) -> Result<Result<Vec<u8>, Failure>, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        self.pace.until_ready().await;
        let response = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(&self.key)
            .header("Stripe-Version", STRIPE_VERSION)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            return Ok(Ok(body.to_vec()));
        }
        Ok(Err(Failure::new(status, &headers, &body)))
    }

    /// Pages through a list endpoint (`limit=100`, `starting_after` the last id, until
    /// `has_more` is false).
    pub fn pages<T: DeserializeOwned + HasId>(
        &self,
        path: &str,
        params: Vec<(String, String)>,
    ) -> Pager<'_, T> {
        Pager {
            client: self,
            path: path.to_string(),
            params,
            after: None,
            done: false,
            _t: std::marker::PhantomData,
        }
    }
}

/// What Stripe's secrets start with: secret and restricted keys in either mode, and webhook
/// signing secrets.
const SECRET_PREFIXES: [&str; 5] = ["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"];

/// `text` with every Stripe secret in it masked after its prefix (`sk_test_***`), so an error
/// that quotes one can be shown and stored.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, prefix)) = SECRET_PREFIXES
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, *p)))
        .min_by_key(|(i, _)| *i)
    {
        let after = &rest[at + prefix.len()..];
        let secret_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)))
            .unwrap_or(after.len());
        out.push_str(&rest[..at + prefix.len()]);
        if secret_len > 0 {
            out.push_str("***");
        }
        rest = &after[secret_len..];
    }
    out.push_str(rest);
    out
}

/// A non-2xx answer.
struct Failure {
    status: StatusCode,
    should_retry: Option<bool>,
    retry_after: Option<Duration>,
    kind: String,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let should_retry = header("stripe-should-retry").and_then(|v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (kind, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (
                match b.error.code {
                    Some(code) => format!("{}/{code}", b.error.kind),
                    None => b.error.kind,
                },
                b.error.message.unwrap_or_default(),
            ),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        Self {
            status,
            should_retry,
            retry_after,
            kind,
            // Kept in the sync status, the Revenue page, the log and the database: an upstream
            // (or a proxy in front of it) that echoes the key must not put it there.
            message: redact_secrets(&message),
        }
    }

    fn retryable(&self) -> bool {
        if self.status == StatusCode::UNAUTHORIZED {
            return false;
        }
        self.should_retry.unwrap_or_else(|| {
            self.status == StatusCode::CONFLICT
                || self.status == StatusCode::TOO_MANY_REQUESTS
                || self.status.is_server_error()
        })
    }

    fn into_error(self, path: &str) -> StripeError {
        if self.status == StatusCode::UNAUTHORIZED {
            return StripeError::Unauthorized(self.message);
        }
        StripeError::Api {
            status: self.status.as_u16(),
            path: path.into(),
            kind: self.kind,
            message: self.message,
        }
    }
}

/// Objects with an `id`, the cursor for the next page.
pub trait HasId {
    fn id(&self) -> &str;
}

impl HasId for serde_json::Value {
    fn id(&self) -> &str {
        self.get("id").and_then(|v| v.as_str()).unwrap_or_default()
    }
}

/// Walks a list endpoint one page at a time.
pub struct Pager<'a, T> {
    client: &'a StripeClient,
    path: String,
    params: Vec<(String, String)>,
    after: Option<String>,
    done: bool,
    _t: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned + HasId> Pager<'_, T> {
    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, StripeError> {
        if self.done {
            return Ok(None);
        }
        let mut query = self.params.clone();
        query.push(("limit".into(), PAGE_LIMIT.to_string()));
        if let Some(after) = &self.after {
            query.push(("starting_after".into(), after.clone()));
        }
        let page: List<T> = self.client.get(&self.path, &query).await?;
        match page.data.last() {
            Some(last) if page.has_more => self.after = Some(last.id().to_string()),
            // An empty page that claims more would loop forever: stop.
            _ => self.done = true,
        }
        Ok(Some(page.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_stand() {
        assert_eq!(
            redact_secrets("Invalid API Key provided: sk_test_51HxAbCdEf0123456789"),
            "Invalid API Key provided: sk_test_***"
        );
        assert_eq!(
            redact_secrets(
                "keys rk_live_abc, whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw and sk_live_x."
            ),
            "keys rk_live_***, whsec_*** and sk_live_***."
        );
        assert_eq!(
            redact_secrets("no secret here: sk_test_"),
            "no secret here: sk_test_"
        );
        assert_eq!(redact_secrets("plain text"), "plain text");
        assert_eq!(redact_secrets("ünïcode sk_test_é"), "ünïcode sk_test_é");
    }

    #[test]
    fn an_error_body_echoing_the_key_keeps_only_its_prefix() {
        let body = br#"{"error": {"type": "invalid_request_error", "message": "No such key: sk_test_4eC39HqLyjWDarjtT1zdp7dc"}}"#;
        let failure = Failure::new(StatusCode::UNAUTHORIZED, &HeaderMap::new(), body);
        let error = failure.into_error("/v1/customers").to_string();
        assert!(error.contains("sk_test_***"), "{error}");
        assert!(!error.contains("4eC39"), "{error}");
        // A body that is not Stripe's JSON is quoted raw: masked too.
        let failure = Failure::new(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"proxy error for Authorization: Bearer sk_live_abcdef123",
        );
        let error = failure.into_error("/v1/customers").to_string();
        assert!(!error.contains("abcdef123"), "{error}");
    }
}
