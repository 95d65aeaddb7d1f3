//! Query benchmark: the dashboard's read routes against a store holding many events. Loads
//! BENCH_STORED events (default 10,000,000) for BENCH_CUSTOMERS customers (50,000) spread over the
//! last 90 days through the real ingest writer (rollups included), puts every customer on a plan,
//! then times each route over HTTP and prints p50/p95/p99 and the share under 10 ms.
//!
//! `cargo bench --bench queries` — knobs (environment): BENCH_STORED, BENCH_CUSTOMERS,
//! BENCH_REQUESTS (per route, default 300), BENCH_DIR (keep the SQLite store there and reuse it
//! on the next run instead of loading again), BENCH_POSTGRES_URL (an empty database to use instead
//! of SQLite). Loopback only; every loop is bounded.

use std::sync::Arc;
mod common;

use common::*;
use std::time::Instant;

use opsdeck::access::audit::Actor;
use opsdeck::access::{Scopes, keys};
use opsdeck::app::App;
use opsdeck::config::{Config, DecimalText, PlanConfig};
use opsdeck::store::now_ms;
use opsdeck::usage::event::{Facts, NewEvent};
use tokio_util::sync::CancellationToken;

const CATEGORIES: &[&str] = &["Referrals", "Campaigns", "Auth", "Users", "Other"];
const SKUS: &[(&str, &str, &str)] = &[
    ("luma", "v2", "credit"),
    ("kling", "v1", "credit"),
    ("bfl", "flux", "image"),
    ("elevenlabs", "tts", "character"),
];

/// Event `i` of the load: 90 % API calls, 10 % provider jobs, spread evenly over 90 days.
fn event(i: usize, customers: usize, total: usize, start: i64, span: i64) -> NewEvent {
    // A cheap deterministic scramble so customers and times are not in lockstep.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let customer = format!("cus_{:06}", h as usize % customers);
    let time_ms = start + (i as i64 * span) / total as i64;
    let mut facts = Facts::default();
    let (kind, data) = if i % 10 == 9 {
        let (p, s, u) = SKUS[(h as usize / 7) % SKUS.len()];
        facts.provider = Some(p.into());
        facts.sku = Some(s.into());
        facts.unit = u;
        facts.quantity = (h % 40 + 1) as f64;
        facts.cost_nano = Some(opsdeck::money::cost_nano(facts.quantity, 4_500_000_000));
        (
            "provider.usage",
            format!(
                r#"{{"provider":"{p}","sku":"{s}","unit":"{u}","quantity":{}}}"#,
                facts.quantity
            ),
        )
    } else {
        let status = if h.is_multiple_of(100) { 503 } else { 200 };
        facts.status = Some(status);
        facts.duration_ms = (h % 900) as f64;
        facts.category = Some(Arc::from(CATEGORIES[(h as usize / 3) % CATEGORIES.len()]));
        (
            "api.request",
            format!(
                r#"{{"endpoint":"/api/x","method":"GET","status":{status},"duration_ms":{}}}"#,
                facts.duration_ms
            ),
        )
    };
    NewEvent {
        source: "bench-app".into(),
        id: format!("q-{i}"),
        kind: kind.into(),
        subject: Some(customer),
        time_ms,
        data,
        facts,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total = env_usize("BENCH_STORED", 10_000_000);
    let customers = env_usize("BENCH_CUSTOMERS", 50_000).max(1);
    let requests = env_usize("BENCH_REQUESTS", 300).max(1);
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());

    // BENCH_DIR keeps the SQLite store between runs: a 10M load takes most of an hour, while
    // timing the routes again against it takes a minute.
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = std::env::var("BENCH_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir).expect("BENCH_DIR");
    let mut config = Config::defaults();
    config.server.data_dir = data_dir;
    if let Some(url) = &pg {
        config.server.database_url = url.clone();
    }
    config.access.api_requests_per_minute = 1_000_000;
    config.plans = vec![PlanConfig {
        id: "growth".into(),
        name: "Growth".into(),
        price: DecimalText("26".into()),
        currency: "usd".into(),
        api_calls: 200,
        provider_credits: 500,
        overage_per_1k_calls: DecimalText("0.50".into()),
        hard_limit_percent: 120,
    }];
    config.usage.default_plan = "growth".into();
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let app = App::build(config, None).await.expect("app builds");
    let key = keys::create(
        &app.state.store,
        "bench",
        &Scopes::parse_list(&["read", "ingest"]).expect("scopes"),
        &Actor::new("bench", None),
    )
    .await
    .expect("key")
    .secret;
    let state = app.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));

    // Load through the real writer (group commit, dedup, rollups), skipping only HTTP; a kept
    // store that already holds the events is reused as it is.
    let (stored,): (i64,) = state
        .store
        .fetch_one("SELECT COUNT(*) FROM events", opsdeck::args![])
        .await
        .expect("count events");
    let now = now_ms();
    let span = 90 * 86_400_000 - 3_600_000;
    let start = now - span - 60_000;
    let loading = Instant::now();
    let chunk = 1000;
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..if stored as usize >= total { 0 } else { writers } {
        let ingestor = state.ingestor.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w * chunk;
            while i < total {
                let end = (i + chunk).min(total);
                let batch = (i..end)
                    .map(|n| event(n, customers, total, start, span))
                    .collect();
                ingestor.write(batch).await.expect("load batch");
                i += writers * chunk;
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
    let load_secs = loading.elapsed().as_secs_f64();
    if stored as usize >= total {
        println!(
            "reusing the {stored} events stored in BENCH_DIR (loaded earlier; times are relative to that load)"
        );
    } else {
        println!(
            "loaded {total} events for {customers} customers into {backend} in {load_secs:.0} s ({:.0} events/s)",
            total as f64 / load_secs
        );
    }

    let client = reqwest::Client::new();
    let routes: Vec<Route> = vec![
        (
            "quota",
            Box::new(move |i| format!("/api/v1/customers/cus_{:06}/quota", (i * 7919) % customers)),
        ),
        (
            "usage (one customer, 30 d)",
            Box::new(move |i| {
                format!(
                    "/api/v1/usage?customer=cus_{:06}",
                    (i * 104_729) % customers
                )
            }),
        ),
        ("usage (all, 30 d)", Box::new(|_| "/api/v1/usage".into())),
        (
            "usage (all, 24 h, hourly)",
            Box::new(|_| {
                format!(
                    "/api/v1/usage?interval=hour&from={}",
                    iso(now_ms() - 86_400_000)
                )
            }),
        ),
        (
            "metrics/costs (30 d)",
            Box::new(|_| "/api/v1/metrics/costs?period=30d".into()),
        ),
        (
            "metrics/overview (30 d)",
            Box::new(|_| "/api/v1/metrics/overview?period=30d".into()),
        ),
    ];
    time_routes(&client, &base, &key, &routes, requests).await;
    cancel.cancel();
    let _ = server.await;
}
