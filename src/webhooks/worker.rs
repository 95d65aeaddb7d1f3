//! The delivery worker: claims due deliveries under a lease, sends each attempt signed per
//! Standard Webhooks through the SSRF-guarded client (no redirects, bounded time and body),
//! and records every outcome with the next attempt's time from the retry schedule. A 2xx is
//! delivered; a 3xx is a failure (redirects are not followed); 410 Gone disables the endpoint;
//! anything else is retried until the schedule runs out. Endpoints with a rate limit get at
//! most that many attempts a second; the rest wait without spending an attempt.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;

use super::endpoints::{self, Endpoint, EndpointError};
use super::guard::{self, Guard};
use super::queue::{self, Claimed, Next, Outcome, QueueError};
use super::signing::Secret;
use crate::access::secrets::MasterKey;
use crate::config::WebhooksConfig;
use crate::jobs::Outcome as Step;
use crate::store::{Store, StoreError, now_ms};

/// Most deliveries claimed per step.
const BATCH: i64 = 512;
/// Most of an answer read (the rest is dropped with the connection) and kept as its excerpt.
const MAX_READ: usize = 64 * 1024;
const EXCERPT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("webhooks.allow_private: {0}")]
    Config(String),
}

/// The worker's settings and state: the guarded client, its lease owner id and the endpoints'
/// rate limiters.
pub struct Deliverer {
    client: reqwest::Client,
    guard: Arc<Guard>,
    owner: String,
    schedule: Vec<Duration>,
    jitter: f64,
    timeout: Duration,
    disable_after: Duration,
    concurrency: usize,
    limiters: Mutex<HashMap<i64, (i64, Arc<DefaultDirectRateLimiter>)>>,
}

impl Deliverer {
    pub fn new(config: &WebhooksConfig) -> Result<Self, WorkerError> {
        let guard = Arc::new(
            Guard::parse(&config.allow_private).map_err(|e| WorkerError::Config(e.to_string()))?,
        );
        let client = guard::client_builder(guard.clone())
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .user_agent(concat!("opsdeck-webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        Ok(Deliverer {
            client,
            guard,
            owner: format!("webhooks-{}", uuid::Uuid::new_v4().simple()),
            schedule: config.retry_schedule.iter().map(|d| d.0).collect(),
            jitter: f64::from(config.jitter_percent) / 100.0,
            timeout: config.timeout.0,
            disable_after: config.disable_after.0,
            concurrency: config.concurrency.max(1),
            limiters: Mutex::default(),
        })
    }

    /// One step: claims a batch of due deliveries, makes their attempts, records the outcomes.
    pub async fn step(&self, store: &Store, key: &MasterKey) -> Result<Step, WorkerError> {
        let now = now_ms();
        // The lease covers the batch's two rounds of attempts (each at most the timeout) with
        // room for writing them down; kept short because it is also how long a crashed
        // instance's claimed deliveries wait before another instance takes them over.
        let lease = i64::try_from((self.timeout * 2 + Duration::from_secs(10)).as_millis())
            .unwrap_or(i64::MAX);
        // Twice what can be in flight: enough to keep every slot busy through the batch,
        // not so much that one instance hoards work another could be sending.
        let limit = (self.concurrency as i64 * 2).min(BATCH);
        let claimed = queue::claim(store, &self.owner, now, lease, limit).await?;
        if claimed.is_empty() {
            return Ok(Step::Idle);
        }
        let messages = messages(store, &claimed).await?;
        let mut ids: Vec<i64> = claimed.iter().map(|c| c.endpoint_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let endpoints: HashMap<i64, (Endpoint, Secret)> = endpoints::for_sending(store, key, &ids)
            .await?
            .into_iter()
            .map(|(e, s)| (e.id, (e, s)))
            .collect();
        let attempts: Vec<_> = claimed
            .iter()
            .map(|c| {
                let endpoint = endpoints.get(&c.endpoint_id);
                let message = messages.get(&c.message_id);
                self.attempt(c, endpoint, message)
            })
            .collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(attempts)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let cutoff = now_ms() - i64::try_from(self.disable_after.as_millis()).unwrap_or(i64::MAX);
        let disabled = queue::record(store, &self.owner, &outcomes, cutoff).await?;
        for (id, reason) in disabled {
            tracing::warn!(endpoint = id, %reason, "webhook endpoint disabled");
        }
        Ok(Step::MoreWork)
    }

    /// Makes one delivery's attempt (or decides not to) and says what happens next.
    async fn attempt(
        &self,
        c: &Claimed,
        endpoint: Option<&(Endpoint, Secret)>,
        message: Option<&(String, String)>,
    ) -> Outcome {
        let at = now_ms();
        let attempt = c.attempts + 1;
        let mut outcome = Outcome {
            delivery_id: c.id,
            endpoint_id: c.endpoint_id,
            attempted: false,
            attempt,
            at,
            status: None,
            latency_us: 0,
            response: None,
            error: None,
            next: Next::Failed,
            disable: None,
        };
        let (Some((endpoint, secret)), Some((_, body))) = (endpoint, message) else {
            outcome.error = Some("the endpoint or the message no longer exists".into());
            return outcome;
        };
        if !endpoint.enabled {
            outcome.error = Some(format!(
                "endpoint disabled: {}",
                endpoint.disabled_reason.as_deref().unwrap_or("by hand")
            ));
            return outcome;
        }
        if let Some(wait) = self.rate_limited(endpoint) {
            outcome.next = Next::Postponed(at + i64::try_from(wait.as_millis()).unwrap_or(1_000));
            return outcome;
        }
        outcome.attempted = true;
        let started = Instant::now();
        let sent = self.send(endpoint, secret, &c.message_id, body).await;
        outcome.latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
        let retry_after = match sent {
            Ok(answer) => {
                outcome.status = Some(answer.status);
                outcome.response = Some(answer.excerpt);
                match answer.status {
                    200..=299 => {
                        outcome.next = Next::Succeeded;
                        return outcome;
                    }
                    410 => {
                        outcome.error = Some("HTTP 410 Gone: the endpoint is disabled".into());
                        outcome.disable = Some("answered 410 Gone".into());
                        return outcome;
                    }
                    300..=399 => {
                        outcome.error = Some(format!(
                            "HTTP {}: redirects are not followed",
                            answer.status
                        ));
                    }
                    s => outcome.error = Some(format!("HTTP {s}")),
                }
                answer.retry_after
            }
            Err(why) => {
                outcome.error = Some(why);
                None
            }
        };
        let random: f64 = rand::rng().random();
        outcome.next = match queue::next_attempt(
            at,
            attempt - c.schedule_start,
            &self.schedule,
            self.jitter,
            retry_after,
            random,
        ) {
            Some(next) => Next::RetryAt(next),
            None => Next::Failed,
        };
        outcome
    }

    /// The wait before `endpoint` may take another attempt, if its rate limit says so.
    fn rate_limited(&self, endpoint: &Endpoint) -> Option<Duration> {
        let rate = NonZeroU32::new(u32::try_from(endpoint.rate_per_second).ok()?)?;
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&endpoint.id) {
                Some((r, l)) if *r == endpoint.rate_per_second => l.clone(),
                // New, or its rate changed: a fresh limiter at the current rate.
                _ => {
                    let l = Arc::new(RateLimiter::direct(Quota::per_second(rate)));
                    map.insert(endpoint.id, (endpoint.rate_per_second, l.clone()));
                    l
                }
            }
        };
        match limiter.check() {
            Ok(()) => None,
            Err(not_until) => Some(
                not_until
                    .wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ))
                    .max(Duration::from_millis(10)),
            ),
        }
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        secret: &Secret,
        message_id: &str,
        body: &str,
    ) -> Result<Answer, String> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("bad URL: {e}"))?;
        self.guard
            .check_url(&url)
            .map_err(|e| format!("refused: {e}"))?;
        let timestamp = now_ms() / 1000;
        let headers = super::signing::headers(
            std::slice::from_ref(secret),
            message_id,
            timestamp,
            body.as_bytes(),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let res = self
            .client
            .post(url)
            .headers(headers)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| match guard::guard_error(&e) {
                Some(refused) => format!("refused: {refused}"),
                None => crate::health::checks::describe(&e.without_url()),
            })?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Ok(Answer {
            status,
            retry_after,
            excerpt: read_excerpt(res).await,
        })
    }
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    excerpt: String,
}

/// The start of an answer: at most [`MAX_READ`] bytes are read (a receiver sending more, or
/// never finishing, is cut off by the size or the client's timeout), [`EXCERPT`] kept.
async fn read_excerpt(mut res: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_READ {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(EXCERPT);
    String::from_utf8_lossy(&body).into_owned()
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The claimed deliveries' messages: id → (type, body).
async fn messages(
    store: &Store,
    claimed: &[Claimed],
) -> Result<HashMap<String, (String, String)>, WorkerError> {
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let placeholders = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",");
        let rows: Vec<(String, String, String)> = store
            .fetch_all_assembled(
                format!("SELECT id, type, body FROM webhook_messages WHERE id IN ({placeholders})"),
                chunk
                    .iter()
                    .map(|id| crate::store::Value::from(*id))
                    .collect(),
            )
            .await?;
        out.extend(rows.into_iter().map(|(id, kind, body)| (id, (kind, body))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).expect("a date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
