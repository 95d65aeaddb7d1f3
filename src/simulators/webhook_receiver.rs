//! A local webhook receiver, the far end of opsdeck's outgoing webhooks in tests, benchmarks and
//! `opsdeck demo`. It accepts any path, verifies every request's Standard Webhooks signature
//! the way the spec describes it, records what arrived and counts arrivals per `webhook-id`, so
//! a test can assert "delivered at least once" or "exactly once" by asking it.
//!
//! The verification here is written from the spec on purpose instead of calling
//! `webhooks::signing`: it builds the signed text, base64-encodes the HMAC and compares
//! strings, while the production verifier decodes and compares bytes, so a mistake in either
//! shows up as a disagreement. Only the HMAC-SHA256 primitive is shared.
//!
//! Switches make it misbehave the ways real receivers do: any status code (500, 410, a 301
//! with `Location`), `Retry-After`, a slow answer, a huge streamed body, a body that never
//! finishes, or one that drips a byte at a time (slowloris). A request whose signature does
//! not verify is recorded and answered 401 whatever the switches say.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::stream::{self, StreamExt as _};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;

/// The spec's replay window, as the receiver applies it.
const TOLERANCE_SECS: i64 = 5 * 60;

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// `webhook-id`, if sent.
    pub id: Option<String>,
    /// `webhook-timestamp`, if sent and numeric.
    pub timestamp: Option<i64>,
    /// The payload's `type`, if the body is JSON with one.
    pub event_type: Option<String>,
    pub body: Bytes,
    pub verified: bool,
    /// Why verification failed, in words; `None` when it passed.
    pub rejection: Option<String>,
}

/// What the body of the answer looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ResponseBody {
    /// `ok`.
    #[default]
    Short,
    /// This many bytes, streamed in 64 KiB chunks without a length, to test bounded reads.
    Huge(usize),
    /// One chunk, then nothing, forever: the connection stays open.
    NeverFinish,
    /// One byte per interval, forever, which defeats an idle-read timeout (slowloris).
    Drip(Duration),
}

/// How to answer verified requests. Build with the methods; the default is `200 ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    /// Wait this long (after recording the request) before answering.
    pub delay: Duration,
    pub body: ResponseBody,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: StatusCode::OK,
            retry_after: None,
            location: None,
            delay: Duration::ZERO,
            body: ResponseBody::Short,
        }
    }
}

impl Behaviour {
    pub fn ok() -> Behaviour {
        Behaviour::default()
    }

    /// Answer with `code`; an invalid code (outside 100..=999) falls back to 500.
    pub fn status(code: u16) -> Behaviour {
        Behaviour {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ..Behaviour::default()
        }
    }

    /// `301 Moved Permanently` to `location`.
    pub fn redirect(location: &str) -> Behaviour {
        Behaviour {
            status: StatusCode::MOVED_PERMANENTLY,
            location: Some(location.to_owned()),
            ..Behaviour::default()
        }
    }

    /// Adds `Retry-After` (seconds or an HTTP date, sent verbatim).
    pub fn retry_after(mut self, value: &str) -> Behaviour {
        self.retry_after = Some(value.to_owned());
        self
    }

    pub fn delay(mut self, delay: Duration) -> Behaviour {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: ResponseBody) -> Behaviour {
        self.body = body;
        self
    }
}

#[derive(Debug, Default)]
struct Book {
    received: Vec<Received>,
    counts: HashMap<String, usize>,
    behaviour: Behaviour,
}

struct Shared {
    /// Decoded keys; a signature from any of them verifies (rotation).
    keys: Vec<Vec<u8>>,
    book: Mutex<Book>,
}

/// Why the receiver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("receiver secret is not `whsec_` + base64")]
    Secret,
    #[error("could not bind the receiver: {0}")]
    Bind(#[from] std::io::Error),
}

/// A running receiver on a loopback port. Dropping it stops the server.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// Binds `127.0.0.1:0` and serves, verifying with any of `secrets` (`whsec_…`, prefix
    /// optional as the spec's libraries have it).
    pub async fn start(secrets: &[&str]) -> Result<WebhookReceiver, ReceiverError> {
        let keys = secrets
            .iter()
            .map(|s| {
                let s = s.trim();
                BASE64
                    .decode(s.strip_prefix("whsec_").unwrap_or(s))
                    .map_err(|_| ReceiverError::Secret)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            keys,
            book: Mutex::new(Book::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver { addr, shared, task })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        f(&mut self.shared.book.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`; any path under it is accepted.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.with(|b| b.received.clone())
    }

    /// How many requests arrived carrying `webhook-id: msg_id`, verified or not.
    pub fn count(&self, msg_id: &str) -> usize {
        self.with(|b| b.counts.get(msg_id).copied().unwrap_or(0))
    }

    /// How verified requests are answered from now on.
    pub fn set(&self, behaviour: Behaviour) {
        self.with(|b| b.behaviour = behaviour);
    }

    /// Forgets what was received (the behaviour stays).
    pub fn clear(&self) {
        self.with(|b| {
            b.received.clear();
            b.counts.clear();
        });
    }
}

fn unix_now() -> i64 {
    crate::store::now_ms() / 1000
}

/// The spec's check, step by step: the three headers present, the timestamp within the
/// tolerance of now, then `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")) equal
/// to one of the space-separated signatures.
fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .ok_or_else(|| format!("missing {name}"))?
            .to_str()
            .map_err(|_| format!("{name} is not ASCII"))
    };
    let id = header("webhook-id")?;
    let timestamp = header("webhook-timestamp")?;
    let signatures = header("webhook-signature")?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| format!("webhook-timestamp {timestamp:?} is not an integer"))?;
    let now = unix_now();
    if now - ts > TOLERANCE_SECS {
        return Err(format!("timestamp too old ({} s)", now - ts));
    }
    if ts - now > TOLERANCE_SECS {
        return Err(format!("timestamp too new ({} s ahead)", ts - now));
    }
    let signed_text = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    for key in keys {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
            continue;
        };
        mac.update(&signed_text);
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        if signatures.split(' ').any(|candidate| candidate == expected) {
            return Ok(());
        }
    }
    Err("no matching v1 signature".to_owned())
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let outcome = verify(&shared.keys, &headers, &body);
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let event_type = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
    let received = Received {
        method: method.to_string(),
        path: uri.path().to_owned(),
        id: text("webhook-id"),
        timestamp: text("webhook-timestamp").and_then(|t| t.parse().ok()),
        event_type,
        body,
        verified: outcome.is_ok(),
        rejection: outcome.as_ref().err().cloned(),
    };
    let behaviour = {
        let mut book = shared.book.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = &received.id {
            *book.counts.entry(id.clone()).or_default() += 1;
        }
        book.received.push(received);
        book.behaviour.clone()
    };
    if let Err(why) = outcome {
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    answer(behaviour)
}

fn answer(behaviour: Behaviour) -> Response {
    let body = match behaviour.body {
        ResponseBody::Short => Body::from("ok"),
        ResponseBody::Huge(total) => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = stream::iter((0..total).step_by(CHUNK).map(move |start| {
                Ok::<_, std::io::Error>(chunk.slice(..CHUNK.min(total - start)))
            }));
            Body::from_stream(chunks)
        }
        ResponseBody::NeverFinish => Body::from_stream(
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"partial"))])
                .chain(stream::pending()),
        ),
        ResponseBody::Drip(every) => Body::from_stream(stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
        })),
    };
    let mut response = (behaviour.status, body).into_response();
    let headers = response.headers_mut();
    let mut put = |name, value: &Option<String>| {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    };
    put(header::RETRY_AFTER, &behaviour.retry_after);
    put(header::LOCATION, &behaviour.location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::signing::{self, Secret};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    async fn send(rx: &WebhookReceiver, id: &str, body: &'static [u8]) -> reqwest::Response {
        let secret = Secret::parse(SECRET).expect("secret");
        let headers = signing::headers(&[secret], id, unix_now(), body).expect("sign");
        client()
            .post(format!("{}/hooks/a", rx.url()))
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("send")
    }

    #[tokio::test]
    async fn a_signed_request_verifies_and_is_counted() {
        let rx = WebhookReceiver::start(&[SECRET]).await.expect("start");
        let body = br#"{"type":"alert.firing","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let res = send(&rx, "msg_1", body).await;
        assert_eq!(res.status(), 200);
        send(&rx, "msg_1", body).await;
        assert_eq!(rx.count("msg_1"), 2);
        assert_eq!(rx.count("msg_2"), 0);
        let got = rx.received();
        assert_eq!(got.len(), 2);
        assert!(got[0].verified, "{:?}", got[0].rejection);
        assert_eq!(got[0].event_type.as_deref(), Some("alert.firing"));
        assert_eq!(got[0].path, "/hooks/a");
        assert_eq!(got[0].body.as_ref(), &body[..]);
    }

    #[tokio::test]
    async fn tampered_or_unsigned_requests_are_recorded_and_refused() {
        let rx = WebhookReceiver::start(&[SECRET]).await.expect("start");
        let secret = Secret::parse(SECRET).expect("secret");
        let headers = signing::headers(&[secret], "msg_t", unix_now(), b"{\"a\":1}").expect("sign");
        let res = client()
            .post(rx.url())
            .headers(headers)
            .body("{\"a\":2}")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 401);
        let res = client()
            .post(rx.url())
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 401);
        let got = rx.received();
        assert_eq!(got.len(), 2);
        assert!(!got[0].verified && !got[1].verified);
        assert_eq!(
            got[0].rejection.as_deref(),
            Some("no matching v1 signature")
        );
        assert_eq!(got[1].rejection.as_deref(), Some("missing webhook-id"));
        assert_eq!(rx.count("msg_t"), 1);
    }

    #[tokio::test]
    async fn an_old_timestamp_is_refused() {
        let rx = WebhookReceiver::start(&[SECRET]).await.expect("start");
        let secret = Secret::parse(SECRET).expect("secret");
        let old = unix_now() - TOLERANCE_SECS - 10;
        let headers = signing::headers(&[secret], "msg_old", old, b"{}").expect("sign");
        let res = client()
            .post(rx.url())
            .headers(headers)
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 401);
    }

    #[tokio::test]
    async fn switches_change_the_answer() {
        let rx = WebhookReceiver::start(&[SECRET]).await.expect("start");
        rx.set(Behaviour::status(503).retry_after("30"));
        let res = send(&rx, "msg_s", b"{}").await;
        assert_eq!(res.status(), 503);
        assert_eq!(
            res.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"30"[..])
        );
        rx.set(Behaviour::redirect("http://example.com/elsewhere"));
        let res = send(&rx, "msg_s", b"{}").await;
        assert_eq!(res.status(), 301);
        assert_eq!(
            res.headers().get("location").map(|v| v.as_bytes()),
            Some(&b"http://example.com/elsewhere"[..])
        );
        rx.set(Behaviour::status(410));
        assert_eq!(send(&rx, "msg_s", b"{}").await.status(), 410);

        rx.set(Behaviour::ok().body(ResponseBody::Huge(1_000_000)));
        let res = send(&rx, "msg_s", b"{}").await;
        assert_eq!(res.bytes().await.expect("body").len(), 1_000_000);

        // The request is recorded before the delay, so a client that gives up still counts.
        rx.set(Behaviour::ok().delay(Duration::from_secs(30)));
        let slow = client()
            .post(rx.url())
            .timeout(Duration::from_millis(200))
            .headers(
                signing::headers(
                    &[Secret::parse(SECRET).expect("secret")],
                    "msg_slow",
                    unix_now(),
                    b"{}",
                )
                .expect("sign"),
            )
            .body("{}")
            .send()
            .await;
        assert!(slow.is_err_and(|e| e.is_timeout()));
        assert_eq!(rx.count("msg_slow"), 1);

        for endless in [
            ResponseBody::NeverFinish,
            ResponseBody::Drip(Duration::from_millis(20)),
        ] {
            rx.set(Behaviour::ok().body(endless));
            let res = send(&rx, "msg_s", b"{}").await;
            assert_eq!(res.status(), 200);
            let read = tokio::time::timeout(Duration::from_millis(300), res.bytes()).await;
            assert!(read.is_err(), "the body should still be open");
        }
    }

    #[tokio::test]
    async fn any_configured_secret_verifies() {
        let new = Secret::generate();
        let shown = new.expose();
        let rx = WebhookReceiver::start(&[SECRET, &shown])
            .await
            .expect("start");
        let headers = signing::headers(&[new], "msg_r", unix_now(), b"{}").expect("sign");
        let res = client()
            .post(rx.url())
            .headers(headers)
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200);
        assert!(matches!(
            WebhookReceiver::start(&["whsec_***"]).await,
            Err(ReceiverError::Secret)
        ));
    }
}
