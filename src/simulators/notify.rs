//! Notification services on one loopback server, each on its real path and answering as the
//! real service does: a Slack incoming webhook (`/services/T…/B…/…`, `ok` or a plain-text
//! error code), a Discord webhook (`/api/webhooks/{id}/{token}`, 204, or 200 with the message
//! under `?wait=true`), Twilio's Messages resource (`/2010-04-01/Accounts/{sid}/Messages.json`,
//! HTTP Basic, form body, 201 or `{code, message, more_info, status}`), Vonage SMS
//! (`/sms/json`, always HTTP 200 with per-message `status`), and PagerDuty Events v2
//! (`/v2/enqueue`, 202 or 400 `invalid event`). Every request is recorded; trouble (rate
//! limits, rejections, Gone) is switched on per service for the next N requests. `GET /`
//! is an inbox: every message received, newest first, as a person would read it (the demo
//! prints its address, so its alerts visibly arrive somewhere).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SLACK_PATH: &str = "/services/T0SIM0000/B0SIM0000/simsecretslack0000000000";
pub const DISCORD_PATH: &str = "/api/webhooks/1200000000000000001/sim-discord-token";
pub const TWILIO_SID: &str = "AC00000000000000000000000000000001";
pub const TWILIO_TOKEN: &str = "sim_twilio_auth_token_00000000001";
pub const VONAGE_KEY: &str = "simkey01";
pub const VONAGE_SECRET: &str = "SimSecret0001";
pub const PAGERDUTY_KEY: &str = "R0SIMR0UT1NGKEY00000000000000001";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Slack,
    Discord,
    Twilio,
    Vonage,
    PagerDuty,
}

/// What the next requests to a service get instead of success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The service's rate-limit answer (Vonage: status "1" in an HTTP 200).
    RateLimited,
    /// A refusal of the request (Slack `invalid_payload`, Twilio 21211, Vonage status "4"
    /// Bad Credentials, PagerDuty `invalid event`, Discord 400).
    Rejected,
    /// Slack `channel_is_archived` (410), Discord `Unknown Webhook` (404).
    Gone,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Hit {
    pub service: Service,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub authorization: Option<String>,
    pub body: String,
    /// The status answered.
    pub status: u16,
    /// When it arrived, UTC.
    pub at: time::OffsetDateTime,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn form(&self) -> HashMap<String, String> {
        serde_urlencoded::from_str(&self.body).unwrap_or_default()
    }
}

#[derive(Default)]
struct Book {
    hits: Vec<Hit>,
    trouble: HashMap<Service, (Trouble, usize)>,
    next_id: u64,
}

type Shared = Arc<Mutex<Book>>;

/// The running services. Dropping it stops the server.
pub struct NotifySim {
    addr: SocketAddr,
    book: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NotifySim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NotifySim {
    pub async fn start() -> std::io::Result<NotifySim> {
        let book: Shared = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/services/{t}/{b}/{x}", post(slack))
            .route("/api/webhooks/{id}/{token}", post(discord))
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(twilio))
            .route("/sms/json", post(vonage))
            .route("/v2/enqueue", post(pagerduty))
            .route("/", axum::routing::get(inbox))
            .with_state(book.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(NotifySim { addr, book, task })
    }

    /// The API base, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn slack_url(&self) -> String {
        format!("{}{SLACK_PATH}", self.base())
    }

    pub fn discord_url(&self) -> String {
        format!("{}{DISCORD_PATH}", self.base())
    }

    /// The next `times` requests to `service` get `trouble`.
    pub fn trouble(&self, service: Service, trouble: Trouble, times: usize) {
        self.lock().trouble.insert(service, (trouble, times));
    }

    pub fn hits(&self, service: Service) -> Vec<Hit> {
        self.lock()
            .hits
            .iter()
            .filter(|h| h.service == service)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a message says, as its service would show it: a Slack message's header and
/// sections, a Discord message's content, an SMS's text, a PagerDuty event's action and
/// summary.
fn readable(hit: &Hit) -> (String, String) {
    let v = hit.json();
    let form = hit.form();
    match hit.service {
        Service::Slack => {
            let title = v["blocks"][0]["text"]["text"]
                .as_str()
                .or(v["text"].as_str())
                .unwrap_or_default()
                .to_string();
            let body = v["blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .skip(1)
                .filter_map(|b| {
                    b["text"]["text"]
                        .as_str()
                        .or(b["elements"][0]["text"].as_str())
                })
                .collect::<Vec<_>>()
                .join("\n");
            // Slack's own escaping, undone as Slack shows it.
            let body = body
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            (title, body)
        }
        Service::Discord => (
            v["content"].as_str().unwrap_or_default().to_string(),
            v["embeds"][0]["description"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        Service::Twilio => (
            format!("SMS to {}", form.get("To").cloned().unwrap_or_default()),
            form.get("Body").cloned().unwrap_or_default(),
        ),
        Service::Vonage => (
            format!("SMS to {}", form.get("to").cloned().unwrap_or_default()),
            form.get("text").cloned().unwrap_or_default(),
        ),
        Service::PagerDuty => (
            format!(
                "{} {}",
                v["event_action"].as_str().unwrap_or_default(),
                v["dedup_key"].as_str().unwrap_or_default()
            ),
            v["payload"]["summary"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
    }
}

/// `GET /`: every message received, newest first (the latest 200).
async fn inbox(State(book): State<Shared>) -> Response {
    let hits: Vec<Hit> = {
        let b = book.lock().unwrap_or_else(|e| e.into_inner());
        b.hits.iter().rev().take(200).cloned().collect()
    };
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Notification inbox</title><style>body{font:15px/1.45 system-ui,sans-serif;\
         max-width:900px;margin:1rem auto;padding:0 1rem}article{border:1px solid #d0d5dd;\
         border-radius:8px;padding:.5rem 1rem;margin:0 0 .75rem}pre{white-space:pre-wrap;\
         margin:.25rem 0}small{color:#667085}</style></head><body><h1>Notification inbox</h1>\
         <p>Messages opsdeck sent to the local Slack, Discord, Twilio, Vonage and PagerDuty \
         simulators, newest first. Reload to see new ones.</p>",
    );
    if hits.is_empty() {
        html.push_str("<p>Nothing received yet.</p>");
    }
    for h in &hits {
        let (title, body) = readable(h);
        let at =
            h.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        html.push_str(&format!(
            "<article><small>{:?} · {at} · answered {}</small><h2>{}</h2><pre>{}</pre></article>",
            h.service,
            h.status,
            escape(&title),
            escape(&body)
        ));
    }
    html.push_str("</body></html>");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The demo's notifier: the Slack simulator as `[[notifiers]]` entry `demo-slack`, which
/// the built-in alert rules notify (loopback allowed for it). Keep the returned server
/// running for as long as the demo.
pub async fn configure_demo(config: &mut crate::config::Config) -> std::io::Result<NotifySim> {
    let sim = NotifySim::start().await?;
    config
        .notifiers
        .push(crate::webhooks::endpoints::EndpointSpec {
            name: DEMO_NOTIFIER.into(),
            kind: Some("slack".into()),
            url: sim.slack_url(),
            ..Default::default()
        });
    config.alerts.default_notifiers = vec![DEMO_NOTIFIER.into()];
    config.alerts.allow_private_targets = true;
    Ok(sim)
}

/// The name of the demo's notifier.
pub const DEMO_NOTIFIER: &str = "demo-slack";

fn take_trouble(book: &Shared, service: Service) -> Option<Trouble> {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    let (trouble, left) = b.trouble.get_mut(&service)?;
    if *left == 0 {
        return None;
    }
    *left -= 1;
    Some(*trouble)
}

fn record(
    book: &Shared,
    service: Service,
    path: String,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    status: StatusCode,
) -> u64 {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    b.next_id += 1;
    let h = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    b.hits.push(Hit {
        service,
        path,
        query,
        content_type: h(header::CONTENT_TYPE).unwrap_or_default(),
        authorization: h(header::AUTHORIZATION),
        body: String::from_utf8_lossy(body).into_owned(),
        status: status.as_u16(),
        at: time::OffsetDateTime::now_utc(),
    });
    b.next_id
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html")], text).into_response()
}

async fn slack(
    State(book): State<Shared>,
    Path((t, b, x)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/services/{t}/{b}/{x}");
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let (status, response) = if path != SLACK_PATH {
        (
            StatusCode::NOT_FOUND,
            plain(StatusCode::NOT_FOUND, "no_service"),
        )
    } else if let Some(trouble) = take_trouble(&book, Service::Slack) {
        match trouble {
            Trouble::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "rate_limited",
                )
                    .into_response(),
            ),
            Trouble::Rejected => (
                StatusCode::BAD_REQUEST,
                plain(StatusCode::BAD_REQUEST, "invalid_payload"),
            ),
            Trouble::Gone => (
                StatusCode::GONE,
                plain(StatusCode::GONE, "channel_is_archived"),
            ),
        }
    } else if !is_json(&headers) || parsed.is_none() {
        (
            StatusCode::BAD_REQUEST,
            plain(StatusCode::BAD_REQUEST, "invalid_payload"),
        )
    } else if parsed.as_ref().is_some_and(|v| {
        v.get("text")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && v.get("blocks")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    }) {
        (
            StatusCode::BAD_REQUEST,
            plain(StatusCode::BAD_REQUEST, "no_text"),
        )
    } else {
        (StatusCode::OK, plain(StatusCode::OK, "ok"))
    };
    record(
        &book,
        Service::Slack,
        path,
        HashMap::new(),
        &headers,
        &body,
        status,
    );
    response
}

async fn discord(
    State(book): State<Shared>,
    Path((id, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/webhooks/{id}/{token}");
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let err = |status: StatusCode, v: Value| (status, axum::Json(v)).into_response();
    let unknown = || {
        err(
            StatusCode::NOT_FOUND,
            json!({"message": "Unknown Webhook", "code": 10015}),
        )
    };
    let response = if path != DISCORD_PATH {
        unknown()
    } else if let Some(trouble) = take_trouble(&book, Service::Discord) {
        match trouble {
            Trouble::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                [("x-ratelimit-scope", "user")],
                axum::Json(json!({"message": "You are being rate limited.",
                    "retry_after": 0.5, "global": false})),
            )
                .into_response(),
            Trouble::Rejected => err(
                StatusCode::BAD_REQUEST,
                json!({"message": "Cannot send an empty message", "code": 50006}),
            ),
            Trouble::Gone => unknown(),
        }
    } else if !is_json(&headers) || parsed.is_none() {
        err(
            StatusCode::BAD_REQUEST,
            json!({"message": "Cannot send an empty message", "code": 50006}),
        )
    } else {
        let v = parsed.clone().unwrap_or_default();
        let content = v.get("content").and_then(Value::as_str).unwrap_or("");
        let embeds = v.get("embeds").and_then(Value::as_array);
        if content.is_empty() && embeds.is_none_or(Vec::is_empty) {
            err(
                StatusCode::BAD_REQUEST,
                json!({"message": "Cannot send an empty message", "code": 50006}),
            )
        } else if content.chars().count() > 2000 || embeds.is_some_and(|e| e.len() > 10) {
            err(
                StatusCode::BAD_REQUEST,
                json!({"message": "Invalid Form Body", "code": 50035,
                    "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                        "message": "Must be 2000 or fewer in length."}]}}}),
            )
        } else if query.get("wait").is_some_and(|w| w == "true") {
            (
                StatusCode::OK,
                axum::Json(json!({
                    "id": "1300000000000000001", "type": 0, "content": content,
                    "channel_id": "1100000000000000001", "webhook_id": id,
                    "embeds": embeds.cloned().unwrap_or_default(),
                    "timestamp": "2026-11-30T02:00:00.000000+00:00",
                })),
            )
                .into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    };
    record(
        &book,
        Service::Discord,
        path,
        query,
        &headers,
        &body,
        response.status(),
    );
    response
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16()})),
    )
        .into_response()
}

async fn twilio(
    State(book): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))
    );
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let response = if !authorized || sid != TWILIO_SID {
        twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    } else if let Some(trouble) = take_trouble(&book, Service::Twilio) {
        match trouble {
            Trouble::RateLimited => {
                twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
            }
            Trouble::Rejected | Trouble::Gone => twilio_error(
                StatusCode::BAD_REQUEST,
                21211,
                &format!(
                    "The 'To' number {} is not a valid phone number.",
                    field("To")
                ),
            ),
        }
    } else if !is_form(&headers) || field("To").is_empty() {
        twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        )
    } else if field("From").is_empty() && field("MessagingServiceSid").is_empty() {
        twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        )
    } else if field("Body").is_empty() {
        twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.")
    } else if field("Body").chars().count() > 1600 {
        twilio_error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        )
    } else {
        let n = book.lock().map(|b| b.next_id + 1).unwrap_or(1);
        let msg_sid = format!("SM{n:032x}");
        (
            StatusCode::CREATED,
            axum::Json(json!({
                "account_sid": sid, "api_version": "2010-04-01", "body": field("Body"),
                "date_created": "Mon, 30 Nov 2026 02:00:00 +0000",
                "date_sent": null, "date_updated": "Mon, 30 Nov 2026 02:00:00 +0000",
                "direction": "outbound-api", "error_code": null, "error_message": null,
                "from": if field("From").is_empty() { Value::Null } else { json!(field("From")) },
                "messaging_service_sid": if field("MessagingServiceSid").is_empty() {
                    Value::Null } else { json!(field("MessagingServiceSid")) },
                "num_media": "0", "num_segments": "1", "price": null, "price_unit": "USD",
                "sid": msg_sid, "status": "queued", "to": field("To"),
                "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{msg_sid}.json"),
            })),
        )
            .into_response()
    };
    record(
        &book,
        Service::Twilio,
        path,
        HashMap::new(),
        &headers,
        &body,
        response.status(),
    );
    response
}

fn vonage_answer(messages: Value) -> Response {
    let count = messages.as_array().map_or(0, Vec::len);
    (
        StatusCode::OK,
        axum::Json(json!({"message-count": count.to_string(), "messages": messages})),
    )
        .into_response()
}

async fn vonage(State(book): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    // Vonage takes a form, a JSON body or query parameters alike.
    let fields: HashMap<String, String> = if is_json(&headers) {
        serde_json::from_slice::<HashMap<String, Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect()
    } else {
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let failure =
        |status: &str, text: &str| vonage_answer(json!([{"status": status, "error-text": text}]));
    let response = if field("api_key").is_empty() {
        failure("2", "Missing api_key")
    } else if field("api_key") != VONAGE_KEY || field("api_secret") != VONAGE_SECRET {
        failure("4", "Bad Credentials")
    } else if let Some(trouble) = take_trouble(&book, Service::Vonage) {
        match trouble {
            Trouble::RateLimited => failure(
                "1",
                "Throughput Rate Exceeded - please wait [ 30 ] and retry",
            ),
            Trouble::Rejected | Trouble::Gone => failure("4", "Bad Credentials"),
        }
    } else if field("from").is_empty() {
        failure("2", "Missing from param")
    } else if field("to").is_empty() {
        failure("2", "Missing to param")
    } else if field("text").is_empty() {
        failure("2", "Missing text param")
    } else if field("to").starts_with('+') {
        failure("3", "Invalid to param")
    } else {
        vonage_answer(json!([{
            "to": field("to"), "message-id": "0A0000000123ABCD1", "status": "0",
            "remaining-balance": "3.14159265", "message-price": "0.03330000",
            "network": "12345",
        }]))
    };
    record(
        &book,
        Service::Vonage,
        "/sms/json".into(),
        HashMap::new(),
        &headers,
        &body,
        response.status(),
    );
    response
}

async fn pagerduty(State(book): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let invalid = |errors: Vec<String>| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"status": "invalid event", "message": "Event object is invalid",
                "errors": errors}),
            ),
        )
            .into_response()
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let response = if let Some(trouble) = take_trouble(&book, Service::PagerDuty) {
        match trouble {
            Trouble::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"status": "throttle exceeded",
                    "message": "Requests for this service are arriving too quickly. Please retry later."})),
            )
                .into_response(),
            Trouble::Rejected | Trouble::Gone => {
                invalid(vec!["'payload.severity' is missing or blank".into()])
            }
        }
    } else if !is_json(&headers) || parsed.is_none() {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "invalid request", "message": "Invalid JSON"})),
        )
            .into_response()
    } else {
        let v = parsed.unwrap_or_default();
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
        let mut errors = Vec::new();
        if s("/routing_key").len() != 32 {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into());
        } else if s("/routing_key") != PAGERDUTY_KEY {
            errors.push("'routing_key' is not a valid integration key".into());
        }
        let action = s("/event_action");
        if !matches!(action, "trigger" | "acknowledge" | "resolve") {
            errors.push(
                "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
            );
        }
        if action == "trigger" {
            if s("/payload/summary").is_empty() {
                errors.push("'payload.summary' is missing or blank".into());
            } else if s("/payload/summary").chars().count() > 1024 {
                errors.push("'payload.summary' is too long".into());
            }
            if s("/payload/source").is_empty() {
                errors.push("'payload.source' is missing or blank".into());
            }
            if !matches!(
                s("/payload/severity"),
                "critical" | "error" | "warning" | "info"
            ) {
                errors.push("'payload.severity' is invalid (must be one of: critical, error, warning, info)".into());
            }
        } else if s("/dedup_key").is_empty() {
            errors.push("'dedup_key' is missing or blank".into());
        }
        if errors.is_empty() {
            let dedup = if s("/dedup_key").is_empty() {
                "sim0dedup0key".to_string()
            } else {
                s("/dedup_key").to_string()
            };
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "success", "message": "Event processed",
                    "dedup_key": dedup})),
            )
                .into_response()
        } else {
            invalid(errors)
        }
    };
    record(
        &book,
        Service::PagerDuty,
        "/v2/enqueue".into(),
        HashMap::new(),
        &headers,
        &body,
        response.status(),
    );
    response
}
