//! Webhook delivery benchmark: BENCH_MESSAGES messages (default 20,000) queued for one
//! endpoint, delivered by the running server's worker to a local receiver that answers 200 at
//! once, every attempt persisted. Prints deliveries per second (goal ≥ 2,000/s on 2 cores) and
//! the time from queueing to delivery.
//!
//! `cargo bench --bench webhooks` — knobs: BENCH_MESSAGES, BENCH_CONCURRENCY (the worker's, default
//! 64), BENCH_POSTGRES_URL (an empty database to use instead of SQLite). Loopback only; the
//! wait is bounded by BENCH_SECONDS (default 120).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use opsdeck::app::App;
use opsdeck::config::Config;
use tokio_util::sync::CancellationToken;

fn main() {
    opsdeck::cli::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    let messages = env_usize("BENCH_MESSAGES", 20_000).max(1);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64).max(1);
    let seconds = env_usize("BENCH_SECONDS", 120).clamp(5, 1200) as u64;
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());

    // The receiver: counts what it is sent and answers 200 at once.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = temp.path().to_path_buf();
    if let Some(u) = &pg {
        config.server.database_url = u.clone();
    }
    config.webhooks.allow_private = vec!["127.0.0.0/8".into()];
    config.webhooks.concurrency = concurrency;
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let app = App::build(config, None).await.expect("app builds");
    let state = app.state.clone();
    let store = state.store.clone();
    let spec: opsdeck::webhooks::endpoints::EndpointSpec = serde_json::from_value(
        serde_json::json!({"name": "bench", "url": hook, "event_types": ["*"]}),
    )
    .expect("spec");
    opsdeck::webhooks::endpoints::create(
        &store,
        &state.master_key,
        &spec,
        &opsdeck::access::audit::Actor::new("bench", None),
        opsdeck::store::now_ms(),
    )
    .await
    .expect("endpoint");

    // Queued before the worker starts, in transactions of 1,000, as producers would.
    let queued = Instant::now();
    let mut i = 0;
    while i < messages {
        let mut tx = store.begin().await.expect("tx");
        for _ in 0..1000.min(messages - i) {
            opsdeck::webhooks::queue::enqueue(
                &mut tx,
                "bench.event",
                &serde_json::json!({"i": i, "customer": format!("cus_{:05}", i % 5000)}),
                opsdeck::store::now_ms(),
            )
            .await
            .expect("enqueue");
            i += 1;
        }
        tx.commit().await.expect("commit");
    }
    println!(
        "{backend}: {messages} messages queued in {:.1} s",
        queued.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));
    let deadline = started + Duration::from_secs(seconds);
    let mut done = 0;
    while Instant::now() < deadline {
        let (n,): (i64,) = store
            .fetch_one(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'succeeded'",
                opsdeck::args![],
            )
            .await
            .expect("count");
        done = n as usize;
        if done >= messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (attempts,): (i64,) = store
        .fetch_one("SELECT COUNT(*) FROM webhook_attempts", opsdeck::args![])
        .await
        .expect("count");
    println!(
        "delivered {done} of {messages} in {elapsed:.2} s: {:.0} deliveries/s ({:.2}× the 2,000/s goal); \
         {attempts} attempts persisted; receiver got {}; concurrency {concurrency}; RSS {:.0} MB",
        done as f64 / elapsed,
        done as f64 / elapsed / 2000.0,
        received.load(Ordering::Relaxed),
        rss_mb()
    );
    cancel.cancel();
    let _ = server.await;
}
