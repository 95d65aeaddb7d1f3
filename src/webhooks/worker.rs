//! The delivery worker: claims due deliveries under a lease, sends each attempt — signed per
//! Standard Webhooks for a `webhook`, shaped by `render` for a notifier kind, over SMTP for
//! `email` — through the SSRF guard (no redirects, bounded time and body),
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
use super::notifiers::Kind;
use super::queue::{self, Claimed, Next, Outcome, QueueError};
use super::render::{self, Notice};
use super::signing::Secret;
use crate::access::secrets::MasterKey;
use crate::config::WebhooksConfig;
use crate::jobs::Outcome as Step;
use crate::net::guard::{self, Guard};
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

/// How often a worker extends the lease on the deliveries it has in flight, and how long
/// before the lease's end it stops starting attempts.
const LEASE_RENEW: Duration = Duration::from_secs(2);
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Extends `owner`'s claimed deliveries every `LEASE_RENEW` until aborted, moving `deadline`
/// (before which attempts may start) on after each confirmed extension. The deadline counts
/// from before the statement was sent, so it is never past the lease it wrote.
async fn keep_claimed(store: Store, owner: String, deadline: Arc<Mutex<tokio::time::Instant>>) {
    let lease = crate::jobs::LEASE_TTL;
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let sent = tokio::time::Instant::now();
        let until = now_ms() + i64::try_from(lease.as_millis()).unwrap_or(6_000);
        match tokio::time::timeout(LEASE_RENEW, queue::extend(&store, &owner, until)).await {
            Ok(Ok(_)) => {
                *deadline.lock().unwrap_or_else(|e| e.into_inner()) = sent + lease - LEASE_MARGIN;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not extend the deliveries' lease"),
            Err(_) => tracing::warn!("extending the deliveries' lease timed out"),
        }
    }
}

/// Aborts a task when dropped, so the lease keeper ends with its step whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    /// Deliveries go through `guard`: the operator's policy ([`guard::operator_policy`] of
    /// `webhooks.allow_private` and `[alerts] allow_private_targets`), under which link-local
    /// and metadata addresses stay refused either way.
    pub fn new(config: &WebhooksConfig, guard: Guard) -> Result<Self, WorkerError> {
        let guard = Arc::new(guard);
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
        // Short, and extended every `LEASE_RENEW` while the batch's attempts are in flight:
        // it is how long a crashed instance's claimed deliveries wait before another instance
        // takes them over.
        let lease = i64::try_from(crate::jobs::LEASE_TTL.as_millis()).unwrap_or(6_000);
        // Twice what can be in flight: enough to keep every slot busy through the batch,
        // not so much that one instance hoards work another could be sending.
        let limit = (self.concurrency as i64 * 2).min(BATCH);
        let sent = tokio::time::Instant::now();
        let claimed = queue::claim(store, &self.owner, now, lease, limit).await?;
        if claimed.is_empty() {
            return Ok(Step::Idle);
        }
        // No attempt starts once the lease might have lapsed (its last extension not
        // confirmed in time), so another instance that took a delivery over is the only one
        // to make its attempt.
        let deadline = Arc::new(Mutex::new(sent + crate::jobs::LEASE_TTL - LEASE_MARGIN));
        let keeper = tokio::spawn(keep_claimed(
            store.clone(),
            self.owner.clone(),
            deadline.clone(),
        ));
        let _stop_keeper = AbortOnDrop(keeper);
        let messages = messages(store, &claimed).await?;
        let mut ids: Vec<i64> = claimed.iter().map(|c| c.endpoint_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let endpoints: HashMap<i64, (Endpoint, String)> = endpoints::for_sending(store, key, &ids)
            .await?
            .into_iter()
            .map(|(e, s)| (e.id, (e, s)))
            .collect();
        let attempts: Vec<_> = claimed
            .iter()
            .map(|c| {
                let endpoint = endpoints.get(&c.endpoint_id);
                let message = messages.get(&c.message_id);
                let deadline = deadline.clone();
                async move {
                    let until = *deadline.lock().unwrap_or_else(|e| e.into_inner());
                    if tokio::time::Instant::now() >= until {
                        return None;
                    }
                    Some(self.attempt(c, endpoint, message).await)
                }
            })
            .collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(attempts)
            .buffer_unordered(self.concurrency)
            .filter_map(std::future::ready)
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
        endpoint: Option<&(Endpoint, String)>,
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
                    200..=299 if answer.failure.is_none() => {
                        outcome.next = Next::Succeeded;
                        return outcome;
                    }
                    410 => {
                        outcome.error = Some(format!(
                            "{}: the endpoint is disabled",
                            answer
                                .failure
                                .unwrap_or_else(|| "HTTP 410 Gone".to_string())
                        ));
                        outcome.disable = Some("answered 410 Gone".into());
                        return outcome;
                    }
                    300..=399 => {
                        outcome.error = Some(format!(
                            "HTTP {}: redirects are not followed",
                            answer.status
                        ));
                    }
                    s => {
                        outcome.error = Some(answer.failure.unwrap_or_else(|| format!("HTTP {s}")))
                    }
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
        secret: &str,
        message_id: &str,
        body: &str,
    ) -> Result<Answer, String> {
        let kind = Kind::parse(&endpoint.kind)
            .ok_or_else(|| format!("unknown notifier kind {:?}", endpoint.kind))?;
        if kind == Kind::Webhook {
            let secret = Secret::parse(secret).map_err(|e| format!("signing secret: {e}"))?;
            return self.send_webhook(endpoint, &secret, message_id, body).await;
        }
        let notice = Notice::parse(message_id, body).ok_or("the message is not JSON")?;
        if kind == Kind::Email {
            return match super::email::send(
                &self.guard,
                &endpoint.settings,
                secret,
                &notice,
                self.timeout,
            )
            .await
            {
                Ok(sent) => Ok(Answer {
                    status: sent.code,
                    retry_after: None,
                    excerpt: sent.reply,
                    failure: None,
                }),
                Err((Some(code), why)) => Ok(Answer {
                    status: code,
                    retry_after: None,
                    excerpt: why.clone(),
                    failure: Some(why),
                }),
                Err((None, why)) => Err(why),
            };
        }
        let out = render::outgoing(kind, &endpoint.settings, secret, &notice)
            .ok_or("no request shape for this kind")?;
        // Never the URL itself in the error: Slack's and Discord's carry their secret.
        let url = reqwest::Url::parse(&out.url).map_err(|e| format!("bad URL: {e}"))?;
        self.guard
            .check_url(&url)
            .map_err(|e| format!("refused: {e}"))?;
        let mut request = self
            .client
            .post(url)
            .header("content-type", out.content_type)
            .header("accept", "application/json")
            .body(out.body);
        if let Some((user, password)) = out.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let res = request.send().await.map_err(describe)?;
        let status = res.status().as_u16();
        let header_wait = retry_after_of(&res);
        let full = read_body(res).await;
        let verdict = render::judge(kind, status, &String::from_utf8_lossy(&full));
        Ok(Answer {
            status,
            retry_after: header_wait.or(verdict.retry_after),
            excerpt: excerpt(full),
            failure: verdict.failure,
        })
    }

    async fn send_webhook(
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
            .map_err(describe)?;
        let status = res.status().as_u16();
        let retry_after = retry_after_of(&res);
        Ok(Answer {
            status,
            retry_after,
            excerpt: excerpt(read_body(res).await),
            failure: None,
        })
    }
}

fn describe(e: reqwest::Error) -> String {
    match guard::guard_error(&e) {
        Some(refused) => format!("refused: {refused}"),
        None => crate::health::checks::describe(&e.without_url()),
    }
}

fn retry_after_of(res: &reqwest::Response) -> Option<Duration> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    excerpt: String,
    /// The service refused in its body (Vonage's 200 with a failed status), or its own
    /// words for a failure.
    failure: Option<String>,
}

/// An answer's body, at most [`MAX_READ`] bytes (a receiver sending more, or never finishing,
/// is cut off by the size or the client's timeout).
async fn read_body(mut res: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_READ {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The start of an answer kept in the attempt log: [`EXCERPT`] bytes.
fn excerpt(mut body: Vec<u8>) -> String {
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
        let placeholders = crate::store::placeholders(1, chunk.len());
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
