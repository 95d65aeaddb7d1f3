//! Ingest benchmark: N CloudEvents in batches over HTTP from concurrent clients into a fresh
//! store, reporting events/s, ack latency percentiles and resident memory; then, in the same run,
//! the rate of a raw bulk insert of identical rows (one transaction, one prepared statement
//! reused) as the physical reference, and the ratio.
//!
//! `cargo bench --bench ingest` — knobs (environment): BENCH_EVENTS (default 200000),
//! BENCH_BATCH (1000), BENCH_CLIENTS (8), BENCH_CUSTOMERS (500), BENCH_POSTGRES_URL (an empty database to use
//! instead of SQLite). Loopback only; every loop is bounded by BENCH_EVENTS.

mod common;

use common::*;
use std::time::Instant;

use opsdeck::access::audit::Actor;
use opsdeck::access::{Scopes, keys};
use opsdeck::app::App;
use opsdeck::config::Config;
use opsdeck::store::{ConnectOptions, PG_STATEMENT_BYTES, Store, Tx, chunks_by_size};
use opsdeck::usage::event::{NewEvent, Rules, validate};
use opsdeck::usage::writer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn event(i: usize, customers: usize) -> Value {
    const ENDPOINTS: &[&str] = &[
        "/api/referrals",
        "/api/rewards",
        "/api/users/me",
        "/api/campaigns",
    ];
    json!({
        "specversion": "1.0", "id": format!("bench-{i}"), "source": "bench-app", "type": "api.request",
        "subject": format!("cus_{}", i % customers), "time": "2026-11-20T10:00:00Z",
        "data": {"endpoint": ENDPOINTS[i % ENDPOINTS.len()], "method": "POST", "status": if i.is_multiple_of(50) { 500 } else { 200 },
                 "duration_ms": (i % 300) as f64 / 3.0}
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total = env_usize("BENCH_EVENTS", 200_000);
    let batch = env_usize("BENCH_BATCH", 1000).clamp(1, 1000);
    let clients = env_usize("BENCH_CLIENTS", 8).max(1);
    // Customers active in the benchmark's minute: each adds its own minute, hour and day rollup
    // rows to every commit, so fewer customers means fewer rollup rows per event.
    let customers = env_usize("BENCH_CUSTOMERS", 500).max(1);
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());

    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = dir.path().to_path_buf();
    if let Some(url) = &pg {
        config.server.database_url = url.clone();
    }
    let app = App::build(config, None).await.expect("app");
    let key = keys::create(
        &app.state.store,
        "bench",
        &Scopes::parse_list(&["ingest"]).unwrap(),
        &Actor::new("bench", None),
    )
    .await
    .expect("key")
    .secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/events", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));

    // Bodies are built before the clock starts: the benchmark measures the server.
    let bodies: Vec<String> = (0..total.div_ceil(batch))
        .map(|b| {
            let events: Vec<Value> = (b * batch..((b + 1) * batch).min(total))
                .map(|i| event(i, customers))
                .collect();
            json!(events).to_string()
        })
        .collect();
    let rss_before = rss_mb();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mine: Vec<String> = bodies.iter().skip(c).step_by(clients).cloned().collect();
        let (url, key) = (url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(mine.len());
            let mut accepted = 0u64;
            for body in mine {
                let t = Instant::now();
                let res = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert!(res.status().is_success(), "status {}", res.status());
                let reply: Value = res.json().await.expect("reply");
                accepted += reply["accepted"].as_u64().unwrap_or(0);
                latencies.push(t.elapsed());
            }
            (accepted, latencies)
        }));
    }
    let mut latencies = Vec::new();
    let mut accepted = 0;
    for t in tasks {
        let (a, l) = t.await.unwrap();
        accepted += a;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    let rss_peak = rss_mb();
    latencies.sort();
    assert_eq!(accepted as usize, total, "every event accepted once");
    let http_rate = total as f64 / elapsed.as_secs_f64();
    cancel.cancel();
    let _ = server.await;

    // Reference: the identical rows into an empty table on the same backend, one transaction,
    // the writer's own statement and values, no HTTP, no writer task, no rollups.
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = match &pg {
        Some(url) => {
            let raw = Store::connect(url, &ConnectOptions::default())
                .await
                .unwrap();
            raw.execute("DELETE FROM events", opsdeck::args![])
                .await
                .unwrap();
            raw
        }
        None => {
            let url = format!("sqlite://{}", raw_dir.path().join("raw.db").display());
            Store::connect(&url, &ConnectOptions::default())
                .await
                .unwrap()
        }
    };
    raw.migrate().await.unwrap();
    let rules = Rules {
        now_ms: opsdeck::store::now_ms(),
        max_future_skew_ms: 300_000,
    };
    let rows: Vec<NewEvent> = (0..total)
        .map(|i| validate(&event(i, customers), rules).expect("valid event"))
        .collect();
    let received = opsdeck::store::now_ms();
    let raw_started = Instant::now();
    let reference = match raw.direct_sqlite() {
        // SQLite: the writer's own cached single-row statement on a direct connection.
        Some(direct) => {
            direct
                .run(move |conn| {
                    let tx = conn.transaction()?;
                    writer::insert_events_direct(&tx, &rows, received, |_| {})?;
                    tx.commit()?;
                    Ok(())
                })
                .await
                .unwrap();
            "one prepared single-row statement via rusqlite"
        }
        // PostgreSQL: the writer's own UNNEST statements through sqlx, sized as it sizes them.
        None => {
            let mut tx = raw.begin().await.unwrap();
            let Tx::Postgres(conn) = &mut tx else {
                unreachable!("a PostgreSQL URL opens a PostgreSQL store")
            };
            let size = writer::EventColumns::wire_size;
            for chunk in chunks_by_size(&rows, PG_STATEMENT_BYTES, size) {
                writer::EventColumns::new(chunk)
                    .insert(conn, received)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            "UNNEST statements of up to 12 KiB via sqlx"
        }
    };
    let raw_rate = total as f64 / raw_started.elapsed().as_secs_f64();
    raw.close().await;

    let backend = if pg.is_some() { "postgres" } else { "sqlite" };
    println!(
        "ingest benchmark ({backend}): {total} events, batches of {batch}, {clients} concurrent clients, {customers} customers"
    );
    println!(
        "  HTTP ingest       {:>10.0} events/s  ({:.2} s)",
        http_rate,
        elapsed.as_secs_f64()
    );
    println!(
        "  ack latency       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms (per request of {batch})",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  resident memory   {rss_before:.0} MB before, {rss_peak:.0} MB after (server and clients in one process)"
    );
    println!(
        "  raw bulk insert   {raw_rate:>10.0} events/s  ({backend}, one transaction, {reference})"
    );
    println!(
        "  ratio             {:.2} of the raw rate",
        http_rate / raw_rate
    );
}
