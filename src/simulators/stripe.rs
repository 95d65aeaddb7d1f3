//! A local server speaking Stripe's API for the read endpoints opsdeck syncs from: bearer-key
//! auth with Stripe's 401 body, list objects newest first with `limit` (1–100, default 10),
//! `starting_after` / `ending_before` cursors and `has_more`, `created[gt|gte|lt|lte]`
//! filters, `status=all` on subscriptions (canceled ones are left out without it), Stripe's
//! error bodies, and `Request-Id` headers. Faults can be queued (429, 5xx with or without
//! `Stripe-Should-Retry` and `Retry-After`, slow answers) to exercise the client's retries.
//! It also signs and sends webhook events as Stripe does. Used by the demo and the tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::revenue::stripe::signature;

/// List endpoints served, by path segment.
pub const LISTS: &[&str] = &[
    "customers",
    "products",
    "prices",
    "coupons",
    "subscriptions",
    "invoices",
    "payment_intents",
    "charges",
    "refunds",
    "disputes",
    "balance_transactions",
    "payouts",
    "events",
];

/// Seconds from a charge until its funds are available, as on a standard Stripe account in
/// the US (two business days; calendar days here).
pub const AVAILABLE_AFTER_SECS: i64 = 2 * 86_400;

/// The account balance the stored objects make at `now` (Unix seconds), per currency, as
/// `(available, pending)` in minor units: succeeded charges are pending for
/// [`AVAILABLE_AFTER_SECS`] and available after; refunds, disputes (unless won) and payouts
/// (unless failed or canceled) are taken from the available funds when created. Objects
/// created after `now` do not count. Fees are not modelled: the fake's charges carry none.
pub fn balance_at(lists: &HashMap<String, Vec<Value>>, now: i64) -> Vec<(String, i64, i64)> {
    let mut by_currency: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    let objects = |list: &str| {
        lists
            .get(list)
            .into_iter()
            .flatten()
            .filter(move |o| o["created"].as_i64().is_some_and(|c| c <= now))
    };
    let mut add = |o: &Value, available: i64, pending: i64| {
        let currency = o["currency"].as_str().unwrap_or("usd").to_ascii_lowercase();
        let entry = by_currency.entry(currency).or_default();
        entry.0 += available;
        entry.1 += pending;
    };
    for c in objects("charges").filter(|c| c["status"] == "succeeded") {
        let amount = c["amount"].as_i64().unwrap_or(0);
        if c["created"].as_i64().unwrap_or(0) + AVAILABLE_AFTER_SECS <= now {
            add(c, amount, 0);
        } else {
            add(c, 0, amount);
        }
    }
    for r in objects("refunds").filter(|r| r["status"] != "failed" && r["status"] != "canceled") {
        add(r, -r["amount"].as_i64().unwrap_or(0), 0);
    }
    for d in objects("disputes").filter(|d| d["status"] != "won") {
        add(d, -d["amount"].as_i64().unwrap_or(0), 0);
    }
    for p in objects("payouts").filter(|p| p["status"] != "failed" && p["status"] != "canceled") {
        add(p, -p["amount"].as_i64().unwrap_or(0), 0);
    }
    by_currency
        .into_iter()
        .map(|(currency, (available, pending))| (currency, available, pending))
        .collect()
}

/// The answer to the next request instead of the real one.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    pub status: u16,
    /// `Stripe-Should-Retry` header, when set.
    pub should_retry: Option<bool>,
    /// `Retry-After` header in seconds, when set.
    pub retry_after: Option<u64>,
    /// Wait this long before answering (a timeout, when longer than the client waits).
    pub delay: Option<Duration>,
}

impl Fault {
    pub fn rate_limited() -> Self {
        Self {
            status: 429,
            ..Self::default()
        }
    }

    pub fn server_error() -> Self {
        Self {
            status: 500,
            ..Self::default()
        }
    }
}

#[derive(Default)]
struct Shared {
    key: String,
    lists: Mutex<HashMap<String, Vec<Value>>>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<String>>,
}

/// The fake Stripe. Cloning shares the same data.
#[derive(Clone)]
pub struct FakeStripe {
    shared: Arc<Shared>,
}

impl FakeStripe {
    /// A server accepting only `key`.
    pub fn new(key: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                key: key.into(),
                ..Shared::default()
            }),
        }
    }

    /// Adds (or replaces, by id) an object in list `list` (e.g. `customers`).
    pub fn put(&self, list: &str, object: Value) {
        let mut lists = self.shared.lists.lock().unwrap_or_else(|e| e.into_inner());
        let items = lists.entry(list.to_string()).or_default();
        let id = object.get("id").cloned();
        match items.iter_mut().find(|o| o.get("id") == id.as_ref()) {
            Some(slot) => *slot = object,
            None => items.push(object),
        }
    }

    /// Appends objects to `list` without checking their ids: for seeding many new objects.
    pub fn extend(&self, list: &str, objects: Vec<Value>) {
        let mut lists = self.shared.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists.entry(list.to_string()).or_default().extend(objects);
    }

    /// Every object of `list`.
    pub fn all(&self, list: &str) -> Vec<Value> {
        let lists = self.shared.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists.get(list).cloned().unwrap_or_default()
    }

    pub fn get(&self, list: &str, id: &str) -> Option<Value> {
        let lists = self.shared.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .get(list)?
            .iter()
            .find(|o| o.get("id").and_then(Value::as_str) == Some(id))
            .cloned()
    }

    /// Queues a fault for the next request.
    pub fn fault(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(fault);
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/balance", get(balance))
            .route("/v1/{list}", get(list))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped or aborted.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds an ephemeral loopback port and serves there; returns the base URL.
    pub async fn start(&self) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let me = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = me.serve(listener).await {
                tracing::warn!(error = %e, "fake Stripe stopped");
            }
        });
        Ok((base, task))
    }

    /// Posts `event` to `url` signed with `secret` as Stripe does; returns the status.
    pub async fn send_event(
        client: &reqwest::Client,
        url: &str,
        secret: &str,
        event: &Value,
        now_secs: i64,
    ) -> reqwest::Result<u16> {
        let body = event.to_string();
        let header = signature::header(body.as_bytes(), now_secs, &[secret]);
        let response = client
            .post(url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// Checks the key and plays any queued fault; `Some` is the answer to send instead.
async fn gate(stripe: &FakeStripe, headers: &HeaderMap, request: String) -> Option<Response> {
    stripe
        .shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    let fault = stripe
        .shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    if let Some(f) = fault {
        if let Some(delay) = f.delay {
            tokio::time::sleep(delay).await;
        }
        if f.status != 0 {
            let status =
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = if f.status == 429 {
                stripe_error(
                    status,
                    "invalid_request_error",
                    Some("rate_limit"),
                    "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                )
            } else {
                stripe_error(
                    status,
                    "api_error",
                    None,
                    "An unknown error occurred while processing your request.",
                )
            };
            if let Some(retry) = f.should_retry {
                response.headers_mut().insert(
                    "Stripe-Should-Retry",
                    HeaderValue::from_static(if retry { "true" } else { "false" }),
                );
            }
            if let Some(secs) = f.retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert("Retry-After", v);
            }
            return Some(response);
        }
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if key != Some(stripe.shared.key.as_str()) {
        let shown = key.map_or_else(String::new, |k| {
            format!(
                ": {}****{}",
                &k[..k.len().min(8)],
                &k[k.len().saturating_sub(4)..]
            )
        });
        let message = match key {
            None => "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_string(),
            Some(_) => format!("Invalid API Key provided{shown}"),
        };
        return Some(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            &message,
        ));
    }
    None
}

fn with_request_id(mut response: Response) -> Response {
    let id = format!("req_{}", uuid::Uuid::new_v4().simple());
    if let Ok(v) = HeaderValue::from_str(&id[..18]) {
        response.headers_mut().insert("Request-Id", v);
    }
    response
}

async fn balance(State(stripe): State<FakeStripe>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&stripe, &headers, "/v1/balance".into()).await {
        return with_request_id(r);
    }
    let now = crate::store::now_ms() / 1000;
    let mut funds = {
        let lists = stripe
            .shared
            .lists
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        balance_at(&lists, now)
    };
    if funds.is_empty() {
        funds.push(("usd".into(), 0, 0));
    }
    let entries = |pick: fn(&(String, i64, i64)) -> i64| {
        funds
            .iter()
            .map(|f| json!({"amount": pick(f), "currency": f.0, "source_types": {"card": pick(f)}}))
            .collect::<Vec<_>>()
    };
    with_request_id(
        axum::Json(json!({
            "object": "balance", "livemode": false,
            "available": entries(|f| f.1),
            "pending": entries(|f| f.2)
        }))
        .into_response(),
    )
}

/// Query pairs in order, decoded (`expand[]` may repeat).
fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn singular(list: &str) -> &str {
    match list {
        "customers" => "customer",
        "products" => "product",
        "prices" => "price",
        "coupons" => "coupon",
        "subscriptions" => "subscription",
        "invoices" => "invoice",
        "payment_intents" => "payment_intent",
        "charges" => "charge",
        "refunds" => "refund",
        "disputes" => "dispute",
        "balance_transactions" => "balance_transaction",
        "events" => "event",
        other => other,
    }
}

async fn list(
    State(stripe): State<FakeStripe>,
    Path(list): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request = match &query {
        Some(q) => format!("/v1/{list}?{q}"),
        None => format!("/v1/{list}"),
    };
    if let Some(r) = gate(&stripe, &headers, request).await {
        return with_request_id(r);
    }
    with_request_id(answer_list(&stripe, &list, &pairs(query.as_deref())))
}

/// Which subscriptions a list answers with, by `status`.
enum StatusFilter<'a> {
    All,
    Only(&'a str),
    /// Stripe's default: every status but the ended ones.
    NotEnded,
}

fn answer_list(stripe: &FakeStripe, list: &str, query: &[(String, String)]) -> Response {
    if !LISTS.contains(&list) {
        return stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!(
                "Unrecognized request URL (GET: /v1/{list}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            ),
        );
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match param("limit").map(str::parse::<i64>) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n as usize,
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_integer"),
                "Invalid integer: limit must be between 1 and 100.",
            );
        }
    };
    if param("starting_after").is_some() && param("ending_before").is_some() {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "You may only specify one of these parameters: ending_before, starting_after.",
        );
    }
    // Filter and order references under the lock and clone only the page: the read benchmark
    // pages through 100k invoices, and cloning and re-keying every object on every page made
    // each page take a large fraction of a second.
    let lists = stripe
        .shared
        .lists
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let all = lists.get(list).map(Vec::as_slice).unwrap_or_default();
    let bounds: Vec<(usize, i64)> = [
        ("created[gt]", 0),
        ("created[gte]", 1),
        ("created[lt]", 2),
        ("created[lte]", 3),
    ]
    .into_iter()
    .filter_map(|(name, op)| Some((op, param(name)?.parse::<i64>().ok()?)))
    .collect();
    let status = if list == "subscriptions" {
        match param("status") {
            Some("all") => StatusFilter::All,
            Some(status) => StatusFilter::Only(status),
            None => StatusFilter::NotEnded,
        }
    } else {
        StatusFilter::All
    };
    let mut items: Vec<(i64, &str, &Value)> = all
        .iter()
        .map(|v| {
            (
                v.get("created").and_then(Value::as_i64).unwrap_or(0),
                v.get("id").and_then(Value::as_str).unwrap_or(""),
                v,
            )
        })
        .filter(|(c, _, _)| {
            bounds.iter().all(|(op, bound)| match op {
                0 => c > bound,
                1 => c >= bound,
                2 => c < bound,
                _ => c <= bound,
            })
        })
        .filter(|(_, _, v)| {
            let s = v.get("status").and_then(Value::as_str);
            match status {
                StatusFilter::All => true,
                StatusFilter::Only(wanted) => s == Some(wanted),
                StatusFilter::NotEnded => !matches!(s, Some("canceled" | "incomplete_expired")),
            }
        })
        .collect();
    // Newest first, as Stripe lists.
    items.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
    let position = |id: &str| items.iter().position(|(_, i, _)| *i == id);
    let missing = |id: &str| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such {}: '{id}'", singular(list)),
        )
    };
    let (range, has_more) = if let Some(after) = param("starting_after") {
        let Some(i) = position(after) else {
            return missing(after);
        };
        let rest = items.len() - (i + 1);
        (i + 1..i + 1 + rest.min(limit), rest > limit)
    } else if let Some(before) = param("ending_before") {
        let Some(i) = position(before) else {
            return missing(before);
        };
        let start = i.saturating_sub(limit);
        (start..i, start > 0)
    } else {
        (0..items.len().min(limit), items.len() > limit)
    };
    let page: Vec<Value> = items[range].iter().map(|(_, _, v)| (*v).clone()).collect();
    drop(lists);
    axum::Json(json!({
        "object": "list",
        "data": page,
        "has_more": has_more,
        "url": format!("/v1/{list}"),
    }))
    .into_response()
}
