//! The fake providers' list and metrics endpoints that provider extras read, on their real
//! paths with their real pagination: n8n workflows and executions (`nextCursor`), an
//! execution's error data and `/insights/summary` (or a 404 like older servers), Twilio
//! `Messages.json` and `Calls.json` (`next_page_uri`), Vonage's Reports API (`TRUNCATED` with
//! `_links.next.href`), Retell `/v3/list-calls` (`pagination_key`, and the bare-array v2),
//! DigitalOcean droplets (`links.pages.next`) and monitoring matrices, Supabase API counts,
//! disk use and the read-only SQL endpoint. Every route goes through the provider's
//! [`Behaviour`](super::providers::Behaviour) switch, so each can misbehave.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::providers::{
    FakeProviders, basic, bearer, digitalocean_headers, guard, header, misbehave, query, twilio_ok,
};
use crate::health::providers::Provider;

const MINUTE: i64 = 60_000;

/// One n8n execution.
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: u64,
    pub workflow_id: String,
    /// success, error, crashed, canceled, running, waiting, new.
    pub status: String,
    pub mode: String,
    pub started_at: i64,
    pub stopped_at: Option<i64>,
    /// (message, node) of a failed one.
    pub error: Option<(String, String)>,
}

/// One Twilio message or call.
#[derive(Debug, Clone)]
pub struct TwilioItem {
    pub status: String,
    pub direction: String,
    /// As Twilio sends them: `+E164` for SMS and calls, `whatsapp:+E164` for WhatsApp.
    pub from: String,
    pub to: String,
    /// A failed or undelivered message's Twilio error code.
    pub error_code: Option<u32>,
    /// As Twilio sends it: negative, a string, `None` while unpriced.
    pub price: Option<String>,
    /// date_sent / start_time (UTC ms).
    pub at: i64,
    /// date_updated (messages).
    pub updated: i64,
    /// Calls: seconds.
    pub duration_s: u64,
}

/// One Vonage report record (SMS or voice).
#[derive(Debug, Clone)]
pub struct VonageRecord {
    pub status: String,
    pub latency_ms: u64,
    pub price: String,
    pub duration_s: u64,
    pub at: i64,
}

/// One Retell call.
#[derive(Debug, Clone)]
pub struct RetellCall {
    pub id: String,
    pub status: String,
    pub reason: String,
    pub cost_cents: f64,
    pub e2e_ms: Vec<f64>,
    pub start: i64,
    pub successful: Option<bool>,
}

/// One droplet and what its metrics say.
#[derive(Debug, Clone)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    pub status: String,
    pub vcpus: u64,
    /// Share of CPU time not idle, 0–1.
    pub busy: f64,
    pub memory_total: f64,
    pub memory_available: f64,
    pub fs_size: f64,
    pub fs_free: f64,
    pub bandwidth_in: f64,
    pub bandwidth_out: f64,
}

/// Everything the extras routes serve.
#[derive(Debug, Clone)]
pub struct ExtrasData {
    /// (id, name, active).
    pub n8n_workflows: Vec<(String, String, bool)>,
    /// Newest first.
    pub n8n_executions: Vec<Execution>,
    /// Whether the n8n server has `/insights/summary` (older ones answer 404).
    pub n8n_insights: bool,
    /// Newest first.
    pub twilio_messages: Vec<TwilioItem>,
    pub twilio_calls: Vec<TwilioItem>,
    pub vonage_sms: Vec<VonageRecord>,
    pub vonage_calls: Vec<VonageRecord>,
    /// Records per Reports API page (1,000 in production).
    pub vonage_page: usize,
    /// Newest first.
    pub retell_calls: Vec<RetellCall>,
    /// Whether Retell serves v3 (older servers answer 404 there).
    pub retell_v3: bool,
    pub droplets: Vec<Droplet>,
    /// Per bucket: rest, auth, storage, realtime.
    pub supabase_api: Vec<[u64; 4]>,
    /// (size, used) bytes.
    pub supabase_disk: (u64, u64),
    /// connections, max_connections, xact_commit, xact_rollback, blks_hit, blks_read, deadlocks.
    pub supabase_pg: [u64; 7],
}

impl ExtrasData {
    /// A small, realistic account whose figures are known: the tests assert on them.
    pub fn sample(now: i64) -> Self {
        let exec = |id, wf: &str, status: &str, ago_min: i64, secs: Option<i64>| Execution {
            id,
            workflow_id: wf.into(),
            status: status.into(),
            mode: "trigger".into(),
            started_at: now - ago_min * MINUTE,
            stopped_at: secs.map(|s| now - ago_min * MINUTE + s * 1000),
            error: (status == "error").then(|| {
                (
                    "The service refused the connection - perhaps it is offline".to_string(),
                    "HTTP Request".to_string(),
                )
            }),
        };
        let msg = |status: &str, price: Option<&str>, ago_min: i64, receipt_s: i64| TwilioItem {
            status: status.into(),
            direction: "outbound-api".into(),
            from: SMS_NUMBER.into(),
            to: CUSTOMER.into(),
            error_code: (status == "undelivered").then_some(30003),
            price: price.map(str::to_string),
            at: now - ago_min * MINUTE,
            updated: now - ago_min * MINUTE + receipt_s * 1000,
            duration_s: 0,
        };
        let call = |status: &str, secs: u64, price: Option<&str>, ago_min: i64| TwilioItem {
            status: status.into(),
            direction: "outbound-api".into(),
            from: SMS_NUMBER.into(),
            to: CUSTOMER.into(),
            error_code: None,
            price: price.map(str::to_string),
            at: now - ago_min * MINUTE,
            updated: now - ago_min * MINUTE,
            duration_s: secs,
        };
        let record =
            |status: &str, latency_ms, price: &str, duration_s, ago_min: i64| VonageRecord {
                status: status.into(),
                latency_ms,
                price: price.into(),
                duration_s,
                at: now - ago_min * MINUTE,
            };
        let retell =
            |i: usize, status: &str, reason: &str, cents: f64, e2e: &[f64], ok| RetellCall {
                id: format!("call_{i:03}"),
                status: status.into(),
                reason: reason.into(),
                cost_cents: cents,
                e2e_ms: e2e.to_vec(),
                start: now - (i as i64 + 1) * 10 * MINUTE,
                successful: ok,
            };
        ExtrasData {
            n8n_workflows: vec![
                ("wf1".into(), "Sync CRM".into(), true),
                ("wf2".into(), "Nightly report".into(), true),
                ("wf3".into(), "Old import".into(), false),
            ],
            // wf1: 3 succeeded (2 s, 4 s, 6 s), 1 failed (3 s); wf2: 1 succeeded (10 s),
            // 1 crashed, 1 canceled; 1 running, 1 waiting; one from two days ago (outside).
            n8n_executions: vec![
                exec(110, "wf1", "running", 1, None),
                exec(109, "wf2", "waiting", 3, None),
                exec(108, "wf1", "success", 5, Some(2)),
                exec(107, "wf1", "error", 15, Some(3)),
                exec(106, "wf2", "success", 20, Some(10)),
                exec(105, "wf1", "success", 30, Some(4)),
                exec(104, "wf2", "crashed", 40, Some(1)),
                exec(103, "wf2", "canceled", 50, Some(1)),
                exec(102, "wf1", "success", 60, Some(6)),
                exec(101, "wf1", "error", 2 * 24 * 60, Some(1)),
            ],
            n8n_insights: true,
            // SMS: 4 outbound messages priced -0.0079 ×2, -0.0042 and unpriced; delivered
            // after 2 s and 4 s; one inbound (ignored). The rest is WhatsApp (see
            // `whatsapp_sample`), which the SMS figures leave out.
            twilio_messages: {
                let mut m = vec![
                    msg("delivered", Some("-0.00790"), 5, 2),
                    msg("queued", None, 6, 0),
                    msg("undelivered", Some("-0.00420"), 7, 30),
                    msg("delivered", Some("-0.00790"), 8, 4),
                    TwilioItem {
                        direction: "inbound".into(),
                        from: CUSTOMER.into(),
                        to: SMS_NUMBER.into(),
                        ..msg("received", Some("-0.00790"), 9, 0)
                    },
                ];
                m.extend(whatsapp_sample(now));
                m.sort_by_key(|i| std::cmp::Reverse(i.at));
                m
            },
            // 61 s + 30 s completed (2 + 1 billed minutes) for 0.039, one busy.
            twilio_calls: vec![
                call("completed", 61, Some("-0.02600"), 10),
                call("busy", 0, Some("0.00000"), 12),
                call("completed", 30, Some("-0.01300"), 14),
            ],
            vonage_sms: vec![
                record("delivered", 1200, "0.0333", 0, 5),
                record("delivered", 800, "0.0333", 0, 6),
                record("failed", 0, "0.0333", 0, 7),
                record("accepted", 0, "0.0333", 0, 8),
            ],
            // 90 s + 30 s answered = 2 minutes for 0.028, one unanswered.
            vonage_calls: vec![
                record("ANSWERED", 0, "0.0210", 90, 9),
                record("UNANSWERED", 0, "0", 0, 10),
                record("ANSWERED", 0, "0.0070", 30, 11),
            ],
            vonage_page: 1000,
            retell_calls: vec![
                retell(
                    0,
                    "ended",
                    "user_hangup",
                    12.5,
                    &[400.0, 600.0, 800.0],
                    Some(true),
                ),
                retell(
                    1,
                    "ended",
                    "agent_hangup",
                    10.0,
                    &[500.0, 700.0],
                    Some(true),
                ),
                retell(2, "error", "error_llm_websocket_open", 2.25, &[], None),
                retell(3, "ended", "user_hangup", 8.0, &[900.0], Some(false)),
                retell(4, "not_connected", "dial_no_answer", 0.0, &[], None),
            ],
            retell_v3: true,
            droplets: vec![
                Droplet {
                    id: 3164444,
                    name: "web-1".into(),
                    status: "active".into(),
                    vcpus: 2,
                    busy: 0.25,
                    memory_total: 4_000_000_000.0,
                    memory_available: 1_000_000_000.0,
                    fs_size: 80_000_000_000.0,
                    fs_free: 60_000_000_000.0,
                    bandwidth_in: 1.5,
                    bandwidth_out: 0.5,
                },
                Droplet {
                    id: 3164445,
                    name: "worker-1".into(),
                    status: "active".into(),
                    vcpus: 1,
                    busy: 0.6,
                    memory_total: 2_000_000_000.0,
                    memory_available: 1_500_000_000.0,
                    fs_size: 50_000_000_000.0,
                    fs_free: 10_000_000_000.0,
                    bandwidth_in: 0.2,
                    bandwidth_out: 0.1,
                },
                Droplet {
                    id: 3164446,
                    name: "old-db".into(),
                    status: "off".into(),
                    vcpus: 1,
                    busy: 0.0,
                    memory_total: 1_000_000_000.0,
                    memory_available: 1_000_000_000.0,
                    fs_size: 25_000_000_000.0,
                    fs_free: 25_000_000_000.0,
                    bandwidth_in: 0.0,
                    bandwidth_out: 0.0,
                },
            ],
            supabase_api: vec![[100, 7, 0, 3], [25, 1, 2, 0]],
            supabase_disk: (8_000_000_000, 2_000_000_000),
            supabase_pg: [12, 60, 990, 10, 9_900, 100, 1],
        }
    }
}

/// The sample's SMS number and customer.
const SMS_NUMBER: &str = "+15005550006";
const CUSTOMER: &str = "+14155552671";
/// The sample's WhatsApp senders.
pub const WHATSAPP_SUPPORT: &str = "whatsapp:+14155238886";
pub const WHATSAPP_ALERTS: &str = "whatsapp:+12025550143";

/// A WhatsApp message between one of the business's senders and a customer.
pub fn whatsapp_message(
    sender: &str,
    customer: &str,
    outbound: bool,
    status: &str,
    price: Option<&str>,
    at: i64,
    receipt_ms: i64,
) -> TwilioItem {
    let (from, to) = if outbound {
        (sender, customer)
    } else {
        (customer, sender)
    };
    TwilioItem {
        status: status.into(),
        direction: if outbound { "outbound-api" } else { "inbound" }.into(),
        from: from.into(),
        to: to.into(),
        // 63016: a free-form message outside the 24-hour window; 63024: an invalid recipient.
        error_code: match status {
            "failed" => Some(63016),
            "undelivered" => Some(63024),
            _ => None,
        },
        price: price.map(str::to_string),
        at,
        updated: at + receipt_ms,
        duration_s: 0,
    }
}

/// The sample's WhatsApp traffic, whose figures the tests know:
///
/// - support (`+14155238886`): 7 outbound in the window — read ×2, delivered, failed ×2
///   (63016, unpriced), undelivered (63024), sent (no receipt yet) — five priced at
///   -0.0050; 2 inbound; one read message two days old, outside the window.
/// - alerts (`+12025550143`): 1 read at -0.0042 and 1 inbound.
fn whatsapp_sample(now: i64) -> Vec<TwilioItem> {
    let customer = "whatsapp:+447700900123";
    let ago = |min: i64| now - min * MINUTE;
    let support = |outbound, status, price, min, receipt_s: i64| {
        whatsapp_message(
            WHATSAPP_SUPPORT,
            customer,
            outbound,
            status,
            price,
            ago(min),
            receipt_s * 1000,
        )
    };
    vec![
        support(true, "read", Some("-0.00500"), 3, 3),
        support(false, "received", Some("-0.00500"), 4, 0),
        support(true, "read", Some("-0.00500"), 11, 5),
        support(true, "delivered", Some("-0.00500"), 13, 2),
        support(true, "failed", None, 15, 1),
        support(true, "failed", None, 16, 1),
        support(true, "undelivered", Some("-0.00500"), 17, 20),
        support(true, "sent", Some("-0.00500"), 18, 1),
        support(false, "received", Some("-0.00500"), 19, 0),
        support(true, "read", Some("-0.00500"), 2 * 24 * 60, 4),
        whatsapp_message(
            WHATSAPP_ALERTS,
            customer,
            true,
            "read",
            Some("-0.00420"),
            ago(21),
            6_000,
        ),
        whatsapp_message(
            WHATSAPP_ALERTS,
            customer,
            false,
            "received",
            None,
            ago(22),
            0,
        ),
    ]
}

pub(super) fn routes() -> Router<FakeProviders> {
    Router::new()
        .route("/api/v1/workflows", get(n8n_workflows))
        .route("/api/v1/executions", get(n8n_executions))
        .route("/api/v1/executions/{id}", get(n8n_execution))
        .route("/api/v1/insights/summary", get(n8n_insights))
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            get(twilio_messages),
        )
        .route("/2010-04-01/Accounts/{sid}/Calls.json", get(twilio_calls))
        .route("/v2/reports/records", get(vonage_records))
        .route("/v3/list-calls", post(retell_v3))
        .route("/v2/list-calls", post(retell_v2))
        .route("/v2/droplets", get(droplets))
        .route(
            "/v2/monitoring/metrics/droplet/{metric}",
            get(droplet_metric),
        )
        .route(
            "/v1/projects/{reference}/analytics/endpoints/usage.api-counts",
            get(supabase_api_counts),
        )
        .route(
            "/v1/projects/{reference}/config/disk/util",
            get(supabase_disk),
        )
        .route(
            "/v1/projects/{reference}/database/query/read-only",
            post(supabase_query),
        )
}

fn iso(ms: i64) -> String {
    crate::usage::quota::rfc3339(ms)
}

fn rfc2822(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default()
}

/// `(limit, offset)` from n8n's `limit` and `cursor` (here an offset, opaque to clients).
fn cursor_page(q: &std::collections::HashMap<String, String>) -> (usize, usize) {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .clamp(1, 250);
    let offset = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    (limit, offset)
}

/// A page of `items` in n8n's envelope.
fn n8n_page(items: Vec<Value>, limit: usize, offset: usize) -> Response {
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total).then(|| (offset + limit).to_string());
    axum::Json(json!({"data": data, "nextCursor": next})).into_response()
}

fn n8n_ok(f: &FakeProviders, headers: &HeaderMap) -> bool {
    header(headers, "x-n8n-api-key") == Some(f.key())
}

async fn n8n_workflows(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /api/v1/workflows?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::N8n, n8n_ok(&f, &headers));
    let (limit, offset) = cursor_page(&query(&q));
    let items = f.with_figures(|x| {
        x.extras
            .n8n_workflows
            .iter()
            .map(|(id, name, active)| {
                json!({"id": id, "name": name, "active": active,
                    "createdAt": "2026-10-01T09:00:00.000Z", "updatedAt": "2026-11-20T12:00:00.000Z",
                    "nodes": [], "connections": {}, "settings": {}, "tags": []})
            })
            .collect()
    });
    n8n_page(items, limit, offset)
}

fn execution_json(e: &Execution) -> Value {
    json!({
        "id": e.id.to_string(), "finished": e.status == "success", "mode": e.mode,
        "retryOf": null, "retrySuccessId": null, "startedAt": iso(e.started_at),
        "stoppedAt": e.stopped_at.map(iso), "workflowId": e.workflow_id, "waitTill": null,
        "status": e.status,
    })
}

async fn n8n_executions(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /api/v1/executions?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::N8n, n8n_ok(&f, &headers));
    let params = query(&q);
    let (limit, offset) = cursor_page(&params);
    let status = params.get("status").cloned();
    let items = f.with_figures(|x| {
        x.extras
            .n8n_executions
            .iter()
            .filter(|e| status.as_ref().is_none_or(|s| *s == e.status))
            .map(execution_json)
            .collect()
    });
    n8n_page(items, limit, offset)
}

async fn n8n_execution(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    f.note(format!("GET /api/v1/executions/{id}"));
    guard!(f, Provider::N8n, n8n_ok(&f, &headers));
    let found = f.with_figures(|x| {
        x.extras
            .n8n_executions
            .iter()
            .find(|e| e.id.to_string() == id)
            .cloned()
    });
    let Some(e) = found else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        )
            .into_response();
    };
    let mut body = execution_json(&e);
    if let Some((message, node)) = &e.error {
        body["data"] = json!({"resultData": {
            "error": {"message": message, "name": "NodeApiError", "node": {"name": node, "type": "n8n-nodes-base.httpRequest"}},
            "lastNodeExecuted": node, "runData": {}}});
    }
    axum::Json(body).into_response()
}

async fn n8n_insights(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /api/v1/insights/summary?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::N8n, n8n_ok(&f, &headers));
    let (available, executions) =
        f.with_figures(|x| (x.extras.n8n_insights, x.extras.n8n_executions.clone()));
    if !available {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "not found"})),
        )
            .into_response();
    }
    // Production executions that finished, as insights count them.
    let done: Vec<&Execution> = executions
        .iter()
        .filter(|e| matches!(e.status.as_str(), "success" | "error" | "crashed"))
        .collect();
    let failed = done.iter().filter(|e| e.status != "success").count();
    let run_ms: Vec<i64> = done
        .iter()
        .filter_map(|e| e.stopped_at.map(|s| s - e.started_at))
        .collect();
    let avg = if run_ms.is_empty() {
        0.0
    } else {
        run_ms.iter().sum::<i64>() as f64 / run_ms.len() as f64
    };
    let figure = |value: f64, unit: &str| json!({"value": value, "deviation": null, "unit": unit});
    axum::Json(json!({
        "total": figure(done.len() as f64, "count"),
        "failed": figure(failed as f64, "count"),
        "failureRate": figure(if done.is_empty() { 0.0 } else { failed as f64 / done.len() as f64 }, "ratio"),
        "timeSaved": figure(0.0, "minute"),
        "averageRunTime": figure(avg, "millisecond"),
    }))
    .into_response()
}

/// A page of a Twilio list, `PageSize` items from `Page`, with `next_page_uri` while more.
fn twilio_page(
    sid: &str,
    resource: &str,
    key: &str,
    items: Vec<Value>,
    q: &Option<String>,
) -> Response {
    let params = query(q);
    let size: usize = params
        .get("PageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50usize)
        .clamp(1, 1000);
    let page: usize = params.get("Page").and_then(|s| s.parse().ok()).unwrap_or(0);
    let total = items.len();
    let list: Vec<Value> = items.into_iter().skip(page * size).take(size).collect();
    let uri = format!("/2010-04-01/Accounts/{sid}/{resource}.json");
    let next = ((page + 1) * size < total).then(|| {
        format!(
            "{uri}?PageSize={size}&Page={}&PageToken=PA{}",
            page + 1,
            page + 1
        )
    });
    let mut res = axum::Json(json!({
        key: list, "page": page, "page_size": size, "start": page * size,
        "first_page_uri": format!("{uri}?PageSize={size}&Page=0"),
        "next_page_uri": next, "previous_page_uri": null, "uri": uri,
    }))
    .into_response();
    res.headers_mut()
        .insert("twilio-concurrent-requests", 1.into());
    res
}

async fn twilio_messages(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(sid): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /2010-04-01/Accounts/{sid}/Messages.json?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::Twilio, twilio_ok(&f, &headers, &sid));
    let items = f.with_figures(|x| {
        x.extras
            .twilio_messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({
                    "sid": format!("SM{i:032}"), "account_sid": sid, "status": m.status,
                    "direction": m.direction, "from": m.from, "to": m.to,
                    "body": "Your code is 123456", "num_segments": "1", "num_media": "0",
                    "date_created": rfc2822(m.at), "date_sent": rfc2822(m.at),
                    "date_updated": rfc2822(m.updated), "price": m.price, "price_unit": "USD",
                    "error_code": m.error_code,
                    "error_message": null, "api_version": "2010-04-01",
                })
            })
            .collect()
    });
    twilio_page(&sid, "Messages", "messages", items, &q)
}

async fn twilio_calls(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(sid): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /2010-04-01/Accounts/{sid}/Calls.json?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::Twilio, twilio_ok(&f, &headers, &sid));
    let items = f.with_figures(|x| {
        x.extras
            .twilio_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "sid": format!("CA{i:032}"), "account_sid": sid, "status": c.status,
                    "direction": c.direction, "from": c.from, "to": c.to,
                    "start_time": rfc2822(c.at), "end_time": rfc2822(c.at + c.duration_s as i64 * 1000),
                    "duration": c.duration_s.to_string(), "price": c.price, "price_unit": "USD",
                })
            })
            .collect()
    });
    twilio_page(&sid, "Calls", "calls", items, &q)
}

async fn vonage_records(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params = query(&q);
    let product = params.get("product").cloned().unwrap_or_default();
    f.note(format!("GET /v2/reports/records?product={product}"));
    let ok = basic(&headers).is_some_and(|(u, p)| u == f.account() && p == f.key())
        && params.get("account_id").map(String::as_str) == Some(f.account());
    guard!(f, Provider::Vonage, ok);
    let (records, size) = f.with_figures(|x| {
        let list = if product == "VOICE-CALL" {
            &x.extras.vonage_calls
        } else {
            &x.extras.vonage_sms
        };
        (list.clone(), x.extras.vonage_page.max(1))
    });
    let offset: usize = params
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = records
        .iter()
        .skip(offset)
        .take(size)
        .enumerate()
        .map(|(i, r)| {
            if product == "VOICE-CALL" {
                json!({"account_id": f.account(), "uuid": format!("call-{}", offset + i),
                    "status": r.status, "duration": r.duration_s.to_string(),
                    "price": r.price, "total_price": r.price, "direction": "outbound",
                    "call_start_date": iso(r.at), "call_end_date": iso(r.at + r.duration_s as i64 * 1000)})
            } else {
                json!({"account_id": f.account(), "message_id": format!("msg-{}", offset + i),
                    "status": r.status, "latency": r.latency_ms, "total_price": r.price,
                    "from": "Acme", "to": "447700900000", "network": "23410", "country": "GB",
                    "date_received": iso(r.at), "date_finalized": iso(r.at + r.latency_ms as i64),
                    "error_code": if r.status == "failed" { "1" } else { "0" }})
            }
        })
        .collect();
    let more = offset + size < records.len();
    let host = header(&headers, "host")
        .unwrap_or("api.nexmo.com")
        .to_string();
    let mut body = json!({
        "request_id": "ccf5c6ff-4c2c-4a2f-8a71-3e3f4a1f2a14", "request_status": if more { "TRUNCATED" } else { "SUCCESS" },
        "received_at": iso(crate::store::now_ms()), "price": 0, "currency": "EUR",
        "items_count": page.len(), "records": page,
        "_links": {"self": {"href": format!("http://{host}/v2/reports/records")}},
    });
    if more {
        body["cursor"] = json!((offset + size).to_string());
        body["iv"] = json!("4a5d");
        body["_links"]["next"] = json!({"href": format!(
            "http://{host}/v2/reports/records?account_id={}&product={product}&direction=outbound&cursor={}&iv=4a5d",
            f.account(), offset + size)});
    }
    axum::Json(body).into_response()
}

fn retell_call_json(c: &RetellCall) -> Value {
    let e2e = if c.e2e_ms.is_empty() {
        json!(null)
    } else {
        let mut sorted = c.e2e_ms.clone();
        sorted.sort_by(f64::total_cmp);
        json!({"p50": sorted[sorted.len() / 2], "p90": sorted[sorted.len() - 1],
            "p95": sorted[sorted.len() - 1], "p99": sorted[sorted.len() - 1],
            "min": sorted[0], "max": sorted[sorted.len() - 1], "num": sorted.len(), "values": c.e2e_ms})
    };
    json!({
        "call_id": c.id, "agent_id": "agent_1", "agent_version": 3, "call_type": "phone_call",
        "call_status": c.status, "start_timestamp": c.start, "end_timestamp": c.start + 90_000,
        "duration_ms": 90_000, "disconnection_reason": c.reason,
        "call_cost": {"combined_cost": c.cost_cents, "product_costs": [], "total_duration_seconds": 90,
            "total_duration_unit_price": 0.1},
        "latency": {"e2e": e2e},
        "call_analysis": {"call_successful": c.successful, "user_sentiment": "Neutral", "in_voicemail": false},
    })
}

/// Calls after `pagination_key` (exclusive), `limit` of them.
fn retell_slice(f: &FakeProviders, body: &Bytes) -> (Vec<Value>, bool, Option<String>) {
    let body: Value = serde_json::from_slice(body).unwrap_or_default();
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(50)
        .clamp(1, 1000) as usize;
    let after = body
        .get("pagination_key")
        .and_then(Value::as_str)
        .map(str::to_string);
    let calls = f.with_figures(|x| x.extras.retell_calls.clone());
    let start = after
        .and_then(|k| calls.iter().position(|c| c.id == k).map(|i| i + 1))
        .unwrap_or(0);
    let page: Vec<&RetellCall> = calls.iter().skip(start).take(limit).collect();
    let more = start + page.len() < calls.len();
    let last = page.last().map(|c| c.id.clone());
    (page.into_iter().map(retell_call_json).collect(), more, last)
}

async fn retell_v3(State(f): State<FakeProviders>, headers: HeaderMap, body: Bytes) -> Response {
    f.note("POST /v3/list-calls".into());
    guard!(f, Provider::Retell, bearer(&headers) == Some(f.key()));
    if !f.with_figures(|x| x.extras.retell_v3) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        )
            .into_response();
    }
    let (items, more, last) = retell_slice(&f, &body);
    axum::Json(json!({"items": items, "has_more": more, "pagination_key": last})).into_response()
}

async fn retell_v2(State(f): State<FakeProviders>, headers: HeaderMap, body: Bytes) -> Response {
    f.note("POST /v2/list-calls".into());
    guard!(f, Provider::Retell, bearer(&headers) == Some(f.key()));
    let (items, _, _) = retell_slice(&f, &body);
    axum::Json(Value::Array(items)).into_response()
}

async fn droplets(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /v2/droplets?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::DigitalOcean, bearer(&headers) == Some(f.key()));
    let params = query(&q);
    let per_page: usize = params
        .get("per_page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20usize)
        .clamp(1, 200);
    let page: usize = params
        .get("page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let all = f.with_figures(|x| x.extras.droplets.clone());
    let list: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|d| {
            json!({"id": d.id, "name": d.name, "memory": (d.memory_total / 1_048_576.0) as u64,
                "vcpus": d.vcpus, "disk": (d.fs_size / 1e9) as u64, "locked": false, "status": d.status,
                "created_at": "2026-01-10T09:00:00Z", "region": {"slug": "fra1", "name": "Frankfurt 1"},
                "size_slug": format!("s-{}vcpu-{}gb", d.vcpus, (d.memory_total / 1e9) as u64),
                "networks": {"v4": [], "v6": []}, "tags": ["web"]})
        })
        .collect();
    let host = header(&headers, "host")
        .unwrap_or("api.digitalocean.com")
        .to_string();
    let mut links = json!({});
    if page * per_page < all.len() {
        links["pages"] = json!({"next": format!("http://{host}/v2/droplets?page={}&per_page={per_page}", page + 1)});
    }
    let mut res =
        axum::Json(json!({"droplets": list, "links": links, "meta": {"total": all.len()}}))
            .into_response();
    digitalocean_headers(&f, &mut res);
    res
}

async fn droplet_metric(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(metric): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /v2/monitoring/metrics/droplet/{metric}?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::DigitalOcean, bearer(&headers) == Some(f.key()));
    let params = query(&q);
    let num = |k: &str| params.get(k).and_then(|v| v.parse::<i64>().ok());
    let (Some(host), Some(start), Some(end)) = (num("host_id"), num("start"), num("end")) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"id": "bad_request", "message": "host_id, start and end are required"}),
            ),
        )
            .into_response();
    };
    let droplet = f.with_figures(|x| {
        x.extras
            .droplets
            .iter()
            .find(|d| d.id as i64 == host)
            .cloned()
    });
    let times: Vec<i64> = (0..)
        .map(|i| start + i * 60)
        .take_while(|t| *t <= end.max(start + 60))
        .collect();
    let series = |labels: Value, value: &dyn Fn(i64) -> f64| {
        let values: Vec<Value> = times
            .iter()
            .map(|t| json!([t, format!("{}", value(*t))]))
            .collect();
        json!({"metric": labels, "values": values})
    };
    let id = host.to_string();
    let result: Vec<Value> = match (&droplet, metric.as_str()) {
        (None, _) => vec![],
        (Some(d), "cpu") => {
            let cpus = d.vcpus as f64;
            let elapsed = |t: i64| (t - start) as f64 * cpus;
            vec![
                series(json!({"host_id": id, "mode": "idle"}), &|t| {
                    900_000.0 + elapsed(t) * (1.0 - d.busy)
                }),
                series(json!({"host_id": id, "mode": "user"}), &|t| {
                    40_000.0 + elapsed(t) * d.busy * 0.8
                }),
                series(json!({"host_id": id, "mode": "system"}), &|t| {
                    9_000.0 + elapsed(t) * d.busy * 0.2
                }),
            ]
        }
        (Some(d), "memory_total") => vec![series(json!({"host_id": id}), &|_| d.memory_total)],
        (Some(d), "memory_available") => {
            vec![series(json!({"host_id": id}), &|_| d.memory_available)]
        }
        (Some(d), "filesystem_size") => vec![series(
            json!({"host_id": id, "device": "/dev/vda1", "fstype": "ext4", "mountpoint": "/"}),
            &|_| d.fs_size,
        )],
        (Some(d), "filesystem_free") => vec![series(
            json!({"host_id": id, "device": "/dev/vda1", "fstype": "ext4", "mountpoint": "/"}),
            &|_| d.fs_free,
        )],
        (Some(d), "bandwidth") => {
            let inbound = params.get("direction").map(String::as_str) == Some("inbound");
            let rate = if inbound {
                d.bandwidth_in
            } else {
                d.bandwidth_out
            };
            vec![series(
                json!({"host_id": id, "interface": params.get("interface"), "direction": params.get("direction")}),
                &|_| rate,
            )]
        }
        _ => vec![],
    };
    let mut res = axum::Json(
        json!({"status": "success", "data": {"resultType": "matrix", "result": result}}),
    )
    .into_response();
    digitalocean_headers(&f, &mut res);
    res
}

fn supabase_ok(f: &FakeProviders, headers: &HeaderMap, reference: &str) -> bool {
    bearer(headers) == Some(f.key()) && reference == f.account()
}

async fn supabase_api_counts(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    f.note(format!(
        "GET /v1/projects/{reference}/analytics/endpoints/usage.api-counts?{}",
        q.clone().unwrap_or_default()
    ));
    guard!(f, Provider::Supabase, supabase_ok(&f, &headers, &reference));
    let now = crate::store::now_ms();
    let buckets = f.with_figures(|x| x.extras.supabase_api.clone());
    let n = buckets.len() as i64;
    let result: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, [rest, auth, storage, realtime])| {
            json!({"timestamp": iso(now - (n - i as i64) * 3_600_000), "total_rest_requests": rest,
                "total_auth_requests": auth, "total_storage_requests": storage,
                "total_realtime_requests": realtime})
        })
        .collect();
    axum::Json(json!({"result": result})).into_response()
}

async fn supabase_disk(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Response {
    f.note(format!("GET /v1/projects/{reference}/config/disk/util"));
    guard!(f, Provider::Supabase, supabase_ok(&f, &headers, &reference));
    let (size, used) = f.with_figures(|x| x.extras.supabase_disk);
    axum::Json(json!({"timestamp": iso(crate::store::now_ms()), "metrics": {
        "fs_size_bytes": size, "fs_avail_bytes": size.saturating_sub(used), "fs_used_bytes": used}}))
    .into_response()
}

async fn supabase_query(
    State(f): State<FakeProviders>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    body: Bytes,
) -> Response {
    f.note(format!(
        "POST /v1/projects/{reference}/database/query/read-only"
    ));
    guard!(f, Provider::Supabase, supabase_ok(&f, &headers, &reference));
    let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
    let sql = asked
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !sql.contains("pg_stat_database") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "the fake answers only the pg_stat query"})),
        )
            .into_response();
    }
    let [connections, max, commit, rollback, hit, read, deadlocks] =
        f.with_figures(|x| x.extras.supabase_pg);
    axum::Json(json!([{"connections": connections, "max_connections": max,
        "xact_commit": commit, "xact_rollback": rollback, "blks_hit": hit, "blks_read": read,
        "deadlocks": deadlocks}]))
    .into_response()
}
