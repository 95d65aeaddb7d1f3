//! Read benchmark as a user sees it: the release binary runs as its own process (`opsdeck
//! serve` with shipped defaults, plus what a real team configures: plans, the Stripe
//! connection with its price → plan map, a few health monitors and a webhook notifier), and
//! this process is the separate load process. It seeds the store through the product's own
//! paths only:
//!
//! - BENCH_EVENTS usage events (default 10,000,000) for BENCH_CUSTOMERS customers (50,000),
//!   spread in time order over the last 30 days, through `POST /api/v1/events` with an ingest
//!   key from `opsdeck key create` (BENCH_CONNECTIONS connections, batches of 1,000): 75 %
//!   `api.request`, 5 % `provider.usage`, 20 % analytics events.
//! - A Stripe account of the same customers with about BENCH_INVOICES subscription invoices
//!   (100,000), their payment intents and charges, served by the repo's Stripe simulator (Stripe's
//!   list and pagination wire format) in this process, which the server's own first sync
//!   backfills at its shipped pace.
//!
//! Then it enumerates every GET operation of `/api/openapi.json` (except the live stream), adds
//! the HTML pages a browser loads and the CSV exports, fills path parameters from what is
//! stored, and requests them round-robin, one request in flight, each credential (a read key,
//! an admin key, a signed-in session) at most 8 times a second, under the shipped limit of 600
//! a minute: no limit is lifted. Prints p50 / p95 / p99 / max per route.
//!
//! `cargo bench --bench reads` — knobs (environment): BENCH_EVENTS, BENCH_CUSTOMERS,
//! BENCH_INVOICES, BENCH_CONNECTIONS (8), BENCH_REQUESTS (per route, 100), BENCH_EXPORTS
//! (requests per CSV export, 10), BENCH_SETTLE (seconds to let the quota evaluator and alert
//! engine catch up after seeding, 40), BENCH_SYNC_WAIT (seconds to wait for the Stripe backfill
//! before measuring anyway, 1800), BENCH_DIR (keep the store there; a later run with the
//! same BENCH_DIR skips the seeding and measures the stored data again, e.g. with a newer
//! binary), BENCH_MAX_SECONDS (seeding deadline, 5400), BENCH_SERVER_LOG (the server's
//! `RUST_LOG`). Loopback only; every loop is bounded.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The path (with query) of a route's request `i`.
type PathFn = Box<dyn Fn(usize) -> String>;

const BINARY: &str = env!("CARGO_BIN_EXE_opsdeck");
const DAY_MS: i64 = 86_400_000;
const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "correct horse battery staple";
const STRIPE_KEY: &str = "sk_live_opsdeck_read_bench";
/// One request per credential every this long: 8 a second, under the shipped 600 a minute.
const PACE: Duration = Duration::from_millis(125);

struct Knobs {
    events: u64,
    customers: usize,
    invoices: usize,
    connections: usize,
    requests: usize,
    exports: usize,
    settle: Duration,
    sync_wait: Duration,
    deadline: Instant,
}

/// The server under test, killed when dropped.
struct Server {
    process: ServerProcess,
    base: String,
}

impl Server {
    fn rss_mb(&self) -> f64 {
        self.process.rss_mb()
    }
}

/// Monthly API calls of each plan: the mean a customer makes this month times 0.5, 1 and 2,
/// so that about half the customers end up near or over their quota, as on a busy month-end.
fn quotas(k: &Knobs) -> [u64; 3] {
    let now = time::OffsetDateTime::now_utc();
    // Events fall evenly over the last 30 days; this month holds today's day-of-month of them.
    let this_month = (f64::from(now.day()) / 30.0).min(1.0);
    let mean = (k.events as f64 * 0.75 * this_month / k.customers as f64).max(2.0);
    [mean * 0.5, mean, mean * 2.0].map(|q| q.round().max(1.0) as u64)
}

fn config(k: &Knobs, stripe: &str, target: &str, hook: &str) -> String {
    let [starter, growth, scale] = quotas(k);
    let mut c = format!(
        r#"[usage]
default_plan = "growth"
endpoint_categories = {{ "/api/auth" = "Auth", "/api/items*" = "Items", "/api/search" = "Search" }}

[[plans]]
id = "starter"
name = "Starter"
price = "8.00"
currency = "usd"
api_calls = {starter}
provider_credits = 2000
overage_per_1k_calls = "0.50"
hard_limit_percent = 120

[[plans]]
id = "growth"
name = "Growth"
price = "26.00"
currency = "usd"
api_calls = {growth}
provider_credits = 5000
overage_per_1k_calls = "0.50"
hard_limit_percent = 120

[[plans]]
id = "scale"
name = "Scale"
price = "68.00"
currency = "usd"
api_calls = {scale}
provider_credits = 20000
overage_per_1k_calls = "0.50"
hard_limit_percent = 120

[stripe]
secret_key = "{STRIPE_KEY}"
api_base = "{stripe}"
plan_map = {{ price_starter_monthly = "starter", price_growth_monthly = "growth", price_scale_monthly = "scale" }}

[alerts]
default_notifiers = ["ops"]
allow_private_targets = true

[[notifiers]]
name = "ops"
kind = "webhook"
url = "{hook}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#
    );
    for (i, path) in ["/healthz", "/api", "/status", "/login", "/search"]
        .iter()
        .enumerate()
    {
        let _ = write!(
            c,
            "\n[[monitors]]\nname = \"app {i}\"\nkind = \"http\"\ntarget = \"{target}{path}\"\n\
             interval = \"10s\"\ndegraded_when = [\"[RESPONSE_TIME] > 500\"]\n"
        );
    }
    // One monitor that is down, so the alert pages have an integration alert too.
    let _ = write!(
        c,
        "\n[[monitors]]\nname = \"legacy api\"\nkind = \"http\"\ntarget = \"{target}/gone\"\n\
         interval = \"10s\"\n"
    );
    c
}

/// A small app the monitors check and the webhook notifier posts to, served by this process.
async fn start_target() -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/gone",
            get(|| async { (axum::http::StatusCode::GONE, "gone") }),
        )
        .route("/hook", post(|| async { "ok" }))
        .fallback(get(|| async {
            axum::Json(serde_json::json!({"status": "ok"}))
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind target");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn cli(data_dir: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(BINARY)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run opsdeck");
    assert!(out.status.success(), "opsdeck {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn start(data_dir: &Path, config: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(BINARY)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("OPSDECK_ADMIN_EMAIL", EMAIL)
        .env("OPSDECK_ADMIN_PASSWORD", PASSWORD)
        // BENCH_SERVER_LOG sets the server's log filter, e.g. `warn,sqlx::query=debug` to see
        // each statement's time (which slows every request a little).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn,sqlx=error".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start opsdeck serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < ready, "server not ready in 300 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        process: ServerProcess(child),
        base,
    }
}

/// Appends event `n` of `total` to `body`: times in order over the 30 days before `now_ms`.
fn push_event(body: &mut String, n: u64, total: u64, customers: usize, now_ms: i64) {
    let span = 30 * DAY_MS - 120_000;
    let at = now_ms - 30 * DAY_MS + 60_000 + (i128::from(span) * n as i128 / total as i128) as i64;
    let pick = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    let customer = (n.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 24) % customers as u64;
    let _ = write!(
        body,
        r#"{{"specversion":"1.0","id":"{:016x}","source":"app","subject":"cus_{customer:06}","time":"{}","#,
        n.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(29),
        iso(at)
    );
    const ENDPOINTS: &[&str] = &["/api/auth", "/api/items", "/api/items/42", "/api/search"];
    const PAGES: &[&str] = &["/", "/pricing", "/docs", "/dashboard"];
    const FEATURES: &[&str] = &["export", "invite", "webhooks"];
    let user = (customer * 8) + pick % 8;
    let _ = match pick % 100 {
        0..75 => write!(
            body,
            r#""type":"api.request","data":{{"endpoint":"{}","method":"GET","status":{},"duration_ms":{}}}}}"#,
            ENDPOINTS[(pick / 100) as usize % ENDPOINTS.len()],
            if n.is_multiple_of(50) { 500 } else { 200 },
            5 + (pick / 7) % 400
        ),
        75..80 => write!(
            body,
            r#""type":"provider.usage","data":{{"provider":"luma","sku":"v2","unit":"credit","quantity":{}}}}}"#,
            1 + (pick / 100) % 50
        ),
        80..92 => write!(
            body,
            r#""type":"page.view","data":{{"path":"{}","user":"u{user}"}}}}"#,
            PAGES[(pick / 100) as usize % PAGES.len()]
        ),
        92..97 => write!(
            body,
            r#""type":"feature.used","data":{{"feature":"{}","user":"u{user}"}}}}"#,
            FEATURES[(pick / 100) as usize % FEATURES.len()]
        ),
        _ => write!(
            body,
            r#""type":"session.start","data":{{"user":"u{user}"}}}}"#
        ),
    };
}

/// Sends every event through `POST /api/v1/events`; returns events per second.
async fn ingest(k: &Arc<Knobs>, base: &str, key: &str, now_ms: i64) -> f64 {
    const BATCH: u64 = 1000;
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..k.connections)
        .map(|_| {
            let (k, next, acked) = (k.clone(), next.clone(), acked.clone());
            let (url, key) = (format!("{base}/api/v1/events"), key.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut body = String::with_capacity(BATCH as usize * 300);
                while Instant::now() < k.deadline {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= k.events {
                        break;
                    }
                    body.clear();
                    body.push('[');
                    for n in first..(first + BATCH).min(k.events) {
                        if n != first {
                            body.push(',');
                        }
                        push_event(&mut body, n, k.events, k.customers, now_ms);
                    }
                    body.push(']');
                    loop {
                        let res = http
                            .post(&url)
                            .bearer_auth(&key)
                            .header("content-type", "application/cloudevents-batch+json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("ingest request");
                        let status = res.status();
                        let reply = res.text().await.unwrap_or_default();
                        if status.as_u16() == 429 || status.as_u16() == 503 {
                            eprintln!("ingest answered {status}; backing off");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                        assert!(status.is_success(), "ingest: {status}: {reply}");
                        break;
                    }
                    acked.fetch_add((first + BATCH).min(k.events) - first, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut mark = (Instant::now(), 0u64);
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = acked.load(Ordering::Relaxed);
        if done / 1_000_000 > mark.1 / 1_000_000 {
            println!(
                "  ingested {:>5.1} M, {:>7.0} events/s over the last million",
                done as f64 / 1e6,
                (done - mark.1) as f64 / mark.0.elapsed().as_secs_f64()
            );
            mark = (Instant::now(), done);
        }
    }
    for t in tasks {
        t.await.expect("ingest task");
    }
    let done = acked.load(Ordering::Relaxed);
    assert!(
        done >= k.events,
        "deadline reached after {done} of {} events",
        k.events
    );
    done as f64 / started.elapsed().as_secs_f64()
}

async fn get_json(http: &reqwest::Client, base: &str, key: &str, path: &str) -> Value {
    let res = http
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {path}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The first `id` (or `name`) of the first object found in `v`, depth first.
fn first_field(v: &Value, field: &str) -> Option<String> {
    match v {
        Value::Object(o) => {
            if let Some(id) = o.get(field) {
                return match id {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
            }
            o.values().find_map(|x| first_field(x, field))
        }
        Value::Array(a) => a.iter().find_map(|x| first_field(x, field)),
        _ => None,
    }
}

/// Waits for the server's first Stripe sync (a full backfill) to finish, at most `wait`. A sync
/// that fails is printed (it is a finding) and started again, as an operator would from Settings.
async fn wait_for_sync(http: &reqwest::Client, base: &str, keys: (&str, &str), wait: Duration) {
    let (read, admin) = keys;
    let until = Instant::now() + wait;
    let started = Instant::now();
    loop {
        let s = get_json(http, base, read, "/api/v1/stripe/sync").await;
        if s["last_sync_at"].is_i64() && s["running"] == false {
            println!(
                "  Stripe backfill by the server's own sync: done {:.0} s after the wait began",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if let Some(e) = s["last_error"].as_str()
            && s["running"] == false
        {
            println!(
                "  Stripe sync failed after {:.0} s: {e}; starting it again",
                started.elapsed().as_secs_f64()
            );
            let _ = http
                .post(format!("{base}/api/v1/stripe/sync"))
                .bearer_auth(admin)
                .send()
                .await;
        }
        if Instant::now() > until {
            let stored: Vec<String> = s["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r.to_string())
                .collect();
            println!(
                "  Stripe backfill NOT finished after {} s; measuring with what is stored: {}",
                wait.as_secs(),
                stored.join(", ")
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Credential {
    Read,
    Admin,
    Session,
}

struct Target {
    label: String,
    credential: Credential,
    /// Path (with query) of request `i`.
    path: PathFn,
    requests: usize,
    export: bool,
    samples: Vec<Duration>,
    bytes: usize,
    failure: Option<String>,
}

fn target(
    label: impl Into<String>,
    credential: Credential,
    requests: usize,
    path: impl Fn(usize) -> String + 'static,
) -> Target {
    Target {
        label: label.into(),
        credential,
        path: Box::new(path),
        requests,
        export: false,
        samples: Vec::new(),
        bytes: 0,
        failure: None,
    }
}

/// What the route list needs from the stored data.
struct Ids {
    customers: usize,
    alert: Option<String>,
    integration: Option<String>,
    delivery: Option<String>,
    token: Option<String>,
    invoice: Option<String>,
}

fn fixed(path: String) -> PathFn {
    Box::new(move |_| path.clone())
}

/// Every GET operation of the OpenAPI document, with path parameters filled in, plus a few
/// query variants the dashboard uses.
fn api_targets(doc: &Value, ids: &Ids, requests: usize) -> (Vec<Target>, Vec<String>) {
    let customers = ids.customers;
    let customer = move |i: usize| format!("cus_{:06}", (i * 7_919) % customers);
    let today = time::OffsetDateTime::now_utc().date();
    let two_weeks = today - time::Duration::days(14);
    let year = today - time::Duration::days(365);
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return (out, vec!["the OpenAPI document has no paths".into()]);
    };
    for (path, item) in paths {
        let Some(op) = item.get("get") else { continue };
        if path == "/api/v1/stream" {
            skipped.push(format!("{path} (a live event stream, not a read)"));
            continue;
        }
        let admin = op["security"].as_array().is_some_and(|s| {
            s.iter().all(|req| {
                req.as_object()
                    .and_then(|o| o.values().next())
                    .and_then(Value::as_array)
                    .is_some_and(|scopes| scopes.iter().any(|x| x == "admin"))
            })
        });
        let credential = if admin {
            Credential::Admin
        } else {
            Credential::Read
        };
        let fill = |name: &str, value: &Option<String>| -> Option<String> {
            value.as_ref().map(|v| path.replace(name, v))
        };
        let filled: Option<PathFn> = if !path.contains('{') {
            Some(fixed(path.clone()))
        } else if path.contains("/customers/{id}") {
            let p = path.clone();
            Some(Box::new(move |i| p.replace("{id}", &customer(i))))
        } else if path.starts_with("/api/v1/alerts/") {
            fill("{id}", &ids.alert).map(fixed)
        } else if path.starts_with("/api/v1/integrations/") {
            fill("{id}", &ids.integration).map(fixed)
        } else if path.starts_with("/api/v1/webhooks/deliveries/") {
            fill("{id}", &ids.delivery).map(fixed)
        } else if path.starts_with("/api/v1/tokens/") {
            fill("{name}", &ids.token).map(fixed)
        } else {
            None
        };
        match filled {
            Some(f) => out.push(Target {
                label: format!("GET {path}"),
                credential,
                path: f,
                requests,
                export: false,
                samples: Vec::new(),
                bytes: 0,
                failure: None,
            }),
            None => skipped.push(format!("{path} (nothing stored to name in it)")),
        }
    }
    let variants: Vec<(String, PathFn)> = vec![
        (
            "GET /api/v1/metrics/overview?from=…&to=… (14 d)".into(),
            Box::new(move |_| format!("/api/v1/metrics/overview?from={two_weeks}&to={today}")),
        ),
        (
            "GET /api/v1/usage?customer=… (30 d)".into(),
            Box::new(move |i| format!("/api/v1/usage?customer={}", customer(i))),
        ),
        (
            "GET /api/v1/usage?interval=hour&from=… (24 h)".into(),
            Box::new(|_| {
                format!(
                    "/api/v1/usage?interval=hour&from={}",
                    iso(opsdeck::store::now_ms() - DAY_MS)
                )
            }),
        ),
        (
            "GET /api/v1/metrics/revenue?interval=month&from=… (1 y)".into(),
            Box::new(move |_| format!("/api/v1/metrics/revenue?interval=month&from={year}")),
        ),
        (
            "GET /api/v1/alerts?state=open".into(),
            Box::new(|_| "/api/v1/alerts?state=open".into()),
        ),
        (
            "GET /api/v1/events?customer=…".into(),
            Box::new(move |i| format!("/api/v1/events?customer={}", customer(i))),
        ),
    ];
    for (label, path) in variants {
        out.push(target(label, Credential::Read, requests, path));
    }
    (out, skipped)
}

/// The HTML pages a browser loads, and the CSV exports, with a session cookie.
fn page_targets(ids: &Ids, requests: usize, exports: usize) -> (Vec<Target>, Vec<String>) {
    let customers = ids.customers;
    let customer = move |i: usize| format!("cus_{:06}", (i * 7_919) % customers);
    let today = time::OffsetDateTime::now_utc().date();
    let two_weeks = today - time::Duration::days(14);
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let pages = [
        "/",
        "/revenue",
        "/revenue/payments",
        "/costs",
        "/usage",
        "/analytics",
        "/integrations",
        "/integrations/errors",
        "/integrations/tokens",
        "/integrations/webhooks",
        "/alerts",
        // `/settings` itself only redirects here.
        "/settings/users",
        "/settings/keys",
        "/settings/audit",
        "/settings/integrations",
        "/settings/pricing",
        "/settings/plans",
    ];
    for p in pages {
        out.push(target(
            format!("page {p}"),
            Credential::Session,
            requests,
            move |_| p.to_string(),
        ));
    }
    out.push(target(
        "page /?from=…&to=… (14 d)",
        Credential::Session,
        requests,
        move |_| format!("/?from={two_weeks}&to={today}"),
    ));
    out.push(target(
        "page /revenue/customers/{id}",
        Credential::Session,
        requests,
        move |i| format!("/revenue/customers/{}", customer(i)),
    ));
    out.push(target(
        "page /customers?q=…",
        Credential::Session,
        requests,
        move |i| format!("/customers?q={}", &customer(i)[..8]),
    ));
    match &ids.invoice {
        Some(inv) => {
            let inv = inv.clone();
            out.push(target(
                "page /revenue/objects/invoice/{id}",
                Credential::Session,
                requests,
                move |_| format!("/revenue/objects/invoice/{inv}"),
            ));
        }
        None => skipped.push("/revenue/objects/{kind}/{id} (no invoice stored)".into()),
    }
    match &ids.integration {
        Some(id) => {
            let id = id.clone();
            out.push(target(
                "page /integrations/{id}",
                Credential::Session,
                requests,
                move |_| format!("/integrations/{id}"),
            ));
        }
        None => skipped.push("/integrations/{id} (no monitor stored)".into()),
    }
    for p in [
        "/revenue/customers.csv",
        "/revenue/movements.csv",
        "/revenue/payments.csv",
        "/costs/customers.csv",
        "/usage/events.csv",
        "/settings/plans/assignments.csv",
    ] {
        let mut t = target(
            format!("export {p}"),
            Credential::Session,
            exports,
            move |_| p.to_string(),
        );
        t.export = true;
        out.push(t);
    }
    (out, skipped)
}

/// Requests every target round-robin, one request in flight; each credential waits [`PACE`]
/// after its previous request was sent.
async fn measure(
    http_key: &reqwest::Client,
    browser: &reqwest::Client,
    base: &str,
    keys: &HashMap<Credential, String>,
    targets: &mut [Target],
) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut next_at: HashMap<Credential, Instant> = HashMap::new();
    let rounds = targets.iter().map(|t| t.requests).max().unwrap_or(0);
    for round in 0..rounds {
        let mut pending: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].requests > round && targets[i].failure.is_none())
            .collect();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                println!("  measuring stopped at the one-hour bound");
                return;
            }
            // The target whose credential is free first.
            let now = Instant::now();
            let (pos, &i) = pending
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| {
                    next_at
                        .get(&targets[**i].credential)
                        .copied()
                        .unwrap_or(now)
                })
                .expect("pending is not empty");
            pending.swap_remove(pos);
            let t = &mut targets[i];
            if let Some(at) = next_at.get(&t.credential) {
                tokio::time::sleep_until((*at).into()).await;
            }
            let url = format!("{base}{}", (t.path)(round));
            let sent = Instant::now();
            next_at.insert(t.credential, sent + PACE);
            let request = match t.credential {
                Credential::Session => browser.get(&url),
                c => http_key.get(&url).bearer_auth(&keys[&c]),
            };
            let mut res = request.send().await.expect("request");
            let status = res.status();
            if !status.is_success() {
                let body = res.bytes().await.unwrap_or_default();
                t.failure = Some(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
                continue;
            }
            // Read as a browser saving a download would: chunk by chunk, counting, so an
            // export of millions of rows is timed to its last byte without being held here.
            let mut bytes = 0;
            loop {
                match res.chunk().await {
                    Ok(Some(c)) => bytes += c.len(),
                    Ok(None) => break,
                    Err(e) => {
                        t.failure = Some(format!("body ended early after {bytes} bytes: {e}"));
                        break;
                    }
                }
            }
            if t.failure.is_some() {
                continue;
            }
            t.samples.push(sent.elapsed());
            t.bytes = bytes;
        }
    }
}

fn report(targets: &mut [Target]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let over = targets
        .iter()
        .filter(|t| !t.export && !t.samples.is_empty())
        .count();
    println!(
        "{:<62} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "route", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "bytes"
    );
    let mut slow = Vec::new();
    for export in [false, true] {
        if export {
            println!("CSV exports (downloads of whole tables, not page loads):");
        }
        for t in targets.iter_mut().filter(|t| t.export == export) {
            if let Some(f) = &t.failure {
                println!("{:<62} FAILED {f}", t.label);
                continue;
            }
            t.samples.sort();
            let p95 = percentile(&t.samples, 0.95);
            if !export && p95 >= Duration::from_millis(10) {
                slow.push(t.label.clone());
            }
            let p50 = percentile(&t.samples, 0.50);
            println!(
                "{:<62} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {}",
                t.label,
                t.samples.len(),
                ms(p50),
                ms(p95),
                ms(percentile(&t.samples, 0.99)),
                ms(t.samples.last().copied().unwrap_or_default()),
                t.bytes,
                if !export && p95 >= Duration::from_millis(10) {
                    "  p95 >= 10 ms".to_string()
                } else if export && p50 > Duration::ZERO {
                    format!("  {:.1} MB/s", t.bytes as f64 / 1e6 / p50.as_secs_f64())
                } else {
                    String::new()
                }
            );
        }
    }
    println!(
        "{} of {over} routes and pages at p95 >= 10 ms{}",
        slow.len(),
        if slow.is_empty() {
            String::new()
        } else {
            format!(": {}", slow.join(", "))
        }
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let k = Arc::new(Knobs {
        events: env_usize("BENCH_EVENTS", 10_000_000).max(1) as u64,
        customers: env_usize("BENCH_CUSTOMERS", 50_000).max(1),
        invoices: env_usize("BENCH_INVOICES", 100_000),
        connections: env_usize("BENCH_CONNECTIONS", 8).max(1),
        requests: env_usize("BENCH_REQUESTS", 100).max(1),
        exports: env_usize("BENCH_EXPORTS", 10),
        settle: Duration::from_secs(env_usize("BENCH_SETTLE", 40) as u64),
        sync_wait: Duration::from_secs(env_usize("BENCH_SYNC_WAIT", 1800) as u64),
        deadline: Instant::now() + Duration::from_secs(env_usize("BENCH_MAX_SECONDS", 5400) as u64),
    });
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir: PathBuf = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| temp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir).expect("BENCH_DIR");
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    // The seeding's clock, kept with the store so that a later run serves the same account.
    let marker = data_dir.join("bench-seeded");
    let seeded_at: Option<i64> = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let now_ms = seeded_at.unwrap_or_else(opsdeck::store::now_ms);

    let stripe = opsdeck::simulators::stripe::FakeStripe::new(STRIPE_KEY);
    let mut by_list: HashMap<&str, Vec<Value>> = HashMap::new();
    for (list, object) in
        opsdeck::simulators::stripe_demo::scaled_account(k.customers, k.invoices, now_ms / 1000)
    {
        by_list.entry(list).or_default().push(object);
    }
    let invoices = by_list.get("invoices").map_or(0, Vec::len);
    for (list, objects) in by_list {
        stripe.extend(list, objects);
    }
    let (stripe_base, _stripe_task) = stripe.start().await.expect("fake Stripe");
    let target_base = start_target().await;
    let config_path = data_dir.join("opsdeck.toml");
    std::fs::write(
        &config_path,
        config(
            &k,
            &stripe_base,
            &target_base,
            &format!("{target_base}/hook"),
        ),
    )
    .expect("write config");

    let server = start(&data_dir, &config_path).await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let key = |scope: &str| {
        cli(
            &data_dir,
            &config_path,
            &["key", "create", "--name", scope, "--scope", scope],
        )
    };
    let read_key = key("read");
    let admin_key = key("admin");
    println!(
        "read benchmark (sqlite): release binary as its own process, shipped defaults; \
         {} events, {} customers, {invoices} invoices{}",
        k.events,
        k.customers,
        if seeded_at.is_some() {
            " (stored by an earlier run)"
        } else {
            ""
        }
    );
    if seeded_at.is_none() {
        let ingest_key = key("ingest");
        let rate = ingest(&k, &base, &ingest_key, now_ms).await;
        println!(
            "  {} events through POST /api/v1/events at {rate:.0} events/s ({} connections)",
            k.events, k.connections
        );
        // The events are stored: a later run with this BENCH_DIR measures them again.
        std::fs::write(&marker, now_ms.to_string()).expect("marker");
    }
    wait_for_sync(&http, &base, (&read_key, &admin_key), k.sync_wait).await;
    println!(
        "  settling {} s (quota evaluation, alerts, notifications)",
        k.settle.as_secs()
    );
    tokio::time::sleep(k.settle).await;

    // Ids the parameterised routes need, from what is stored.
    let ids = Ids {
        customers: k.customers,
        alert: first_field(
            &get_json(&http, &base, &read_key, "/api/v1/alerts?state=open").await,
            "id",
        ),
        integration: first_field(
            &get_json(&http, &base, &read_key, "/api/v1/integrations").await,
            "id",
        ),
        delivery: first_field(
            &get_json(&http, &base, &read_key, "/api/v1/webhooks/deliveries").await,
            "id",
        ),
        token: first_field(
            &get_json(&http, &base, &admin_key, "/api/v1/tokens").await,
            "name",
        ),
        invoice: Some("in_000000_0".to_string()).filter(|_| invoices > 0),
    };
    let doc = get_json(&http, &base, &read_key, "/api/openapi.json").await;
    let (mut targets, mut skipped) = api_targets(&doc, &ids, k.requests);
    let (pages, more) = page_targets(&ids, k.requests, k.exports);
    targets.extend(pages);
    skipped.extend(more);

    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = browser
        .get(format!("{base}/signin"))
        .send()
        .await
        .expect("signin page")
        .text()
        .await
        .unwrap_or_default();
    let marker_text = "name=\"csrf_token\" value=\"";
    let csrf = page
        .find(marker_text)
        .map(|i| &page[i + marker_text.len()..])
        .and_then(|rest| rest.split('"').next())
        .expect("sign-in form has a csrf_token")
        .to_string();
    let signed_in = browser
        .post(format!("{base}/signin"))
        .form(&[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status().as_u16(), 303, "sign-in redirects");

    println!(
        "  {} routes, {} requests each ({} per CSV export), round-robin, one in flight, \
         each credential at most 8 a second; server RSS {:.0} MiB",
        targets.len(),
        k.requests,
        k.exports,
        server.rss_mb()
    );
    let keys = HashMap::from([
        (Credential::Read, read_key.clone()),
        (Credential::Admin, admin_key.clone()),
    ]);
    let started = Instant::now();
    measure(&http, &browser, &base, &keys, &mut targets).await;
    println!(
        "  measured in {:.0} s; server RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        server.rss_mb()
    );
    report(&mut targets);
    for s in skipped {
        println!("  not measured: {s}");
    }
    drop(server);
    if std::env::var("BENCH_DIR").is_ok() {
        println!("  store kept in {}", data_dir.display());
    }
}
