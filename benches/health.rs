//! Health benchmark: BENCH_MONITORS http monitors (default 10,000), each every BENCH_INTERVAL
//! seconds (default 10, so 1,000 checks/s are due), against a local HTTP server, with
//! BENCH_HISTORY_DAYS (default 30) of hour and day rollups stored for every monitor. Prints
//! the sustained checks per second, the schedule drift (how late each check started against
//! its slot), the peak resident memory, the time to load the grid, and the grid routes' p50 /
//! p95 / p99 while the checks run.
//!
//! `cargo bench --bench health` — other knobs: BENCH_SECONDS (measured window, default 60),
//! BENCH_REQUESTS (grid requests, default 200), BENCH_CHANGES (monitors then created through
//! the API, timed, default 50), BENCH_POSTGRES_URL (an empty database to use instead of
//! SQLite). Loopback only; every loop is bounded.

mod common;

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use common::*;
use opsdeck::access::audit::Actor;
use opsdeck::access::{Scopes, keys};
use opsdeck::app::App;
use opsdeck::config::Config;
use opsdeck::health::monitor::MonitorSpec;
use opsdeck::store::now_ms;
use tokio_util::sync::CancellationToken;

/// The checked server runs in a child process (this binary again, with BENCH_TARGET_CHILD
/// set), so the resident memory measured is opsdeck's alone; the child prints its address and
/// then, on each line read from stdin, how many requests it has served.
async fn target_child() {
    let (url, served) = target().await;
    println!("{url}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {
        println!("{}", served.load(Ordering::Relaxed));
    }
}

/// The target in its child process: its URL, and a way to ask how many requests it served.
struct Target {
    url: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Target {
    async fn spawn() -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("self"))
            .env("BENCH_TARGET_CHILD", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("target process");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = stdout
            .next_line()
            .await
            .expect("target address")
            .expect("target address");
        Target {
            url,
            child,
            stdin,
            stdout,
        }
    }

    async fn served(&mut self) -> u64 {
        self.stdin.write_all(b"?\n").await.expect("ask target");
        self.stdout
            .next_line()
            .await
            .ok()
            .flatten()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0)
    }
}

/// The checked server: a small JSON answer, like a health endpoint.
async fn target() -> (String, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async {
                (
                    [("content-type", "application/json")],
                    "{\"status\":\"ok\"}",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind target");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/health"), served)
}

/// Fills hour and day rollups for `days` days before `now` for every monitor, in the store's
/// own SQL, with per-monitor variety in failures and latency.
async fn history(store: &opsdeck::store::Store, postgres: bool, days: i64, now: i64) {
    let hour = 3_600_000i64;
    let day = 86_400_000i64;
    let (hours, days_from) = (days * 24, (now / day - days + 1) * day);
    let first_hour = (now / hour - hours + 1) * hour;
    let (sql_hours, sql_days): (&'static str, &'static str) = if postgres {
        (
            "INSERT INTO check_rollups (monitor_id, granularity, bucket, checks, up, degraded, \
             down, latency_sum_us, b4, b5, b6, b7, b9) \
             SELECT m.id, 'hour', $1 + n * 3600000, 360, 360 - m.id % 5, 0, m.id % 5, \
             360 * (20000 + (m.id % 7) * 4000), 100, 140, 80, 30, 10 - m.id % 5 \
             FROM monitors m, generate_series(0, $2 - 1) AS n",
            "INSERT INTO check_rollups (monitor_id, granularity, bucket, checks, up, degraded, \
             down, latency_sum_us, b4, b5, b6, b7, b9) \
             SELECT m.id, 'day', $1 + n * 86400000, 8640, 8640 - 24 * (m.id % 5), 0, \
             24 * (m.id % 5), 8640 * (20000 + (m.id % 7) * 4000), 2400, 3360, 1920, 720, \
             240 - 24 * (m.id % 5) FROM monitors m, generate_series(0, $2 - 1) AS n",
        )
    } else {
        (
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < $2) \
             INSERT INTO check_rollups (monitor_id, granularity, bucket, checks, up, degraded, \
             down, latency_sum_us, b4, b5, b6, b7, b9) \
             SELECT m.id, 'hour', $1 + n * 3600000, 360, 360 - m.id % 5, 0, m.id % 5, \
             360 * (20000 + (m.id % 7) * 4000), 100, 140, 80, 30, 10 - m.id % 5 \
             FROM monitors m, s",
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < $2) \
             INSERT INTO check_rollups (monitor_id, granularity, bucket, checks, up, degraded, \
             down, latency_sum_us, b4, b5, b6, b7, b9) \
             SELECT m.id, 'day', $1 + n * 86400000, 8640, 8640 - 24 * (m.id % 5), 0, \
             24 * (m.id % 5), 8640 * (20000 + (m.id % 7) * 4000), 2400, 3360, 1920, 720, \
             240 - 24 * (m.id % 5) FROM monitors m, s",
        )
    };
    store
        .execute(sql_hours, opsdeck::args![first_hour, hours])
        .await
        .expect("hour rollups");
    store
        .execute(sql_days, opsdeck::args![days_from, days])
        .await
        .expect("day rollups");
}

/// The allocator is tuned as the `opsdeck` binary tunes it, before the runtime starts its
/// threads, so the resident memory measured is the product's.
fn main() {
    opsdeck::cli::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    if std::env::var_os("BENCH_TARGET_CHILD").is_some() {
        target_child().await;
        return;
    }
    let monitors = env_usize("BENCH_MONITORS", 10_000).max(1);
    let interval = env_usize("BENCH_INTERVAL", 10).max(1);
    let seconds = env_usize("BENCH_SECONDS", 60).clamp(5, 600) as u64;
    let history_days = env_usize("BENCH_HISTORY_DAYS", 30).clamp(1, 400) as i64;
    let requests = env_usize("BENCH_REQUESTS", 200).max(1);
    let changes = env_usize("BENCH_CHANGES", 50).clamp(1, 1000);
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());

    let mut target = Target::spawn().await;
    let url = target.url.clone();
    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = temp.path().to_path_buf();
    if let Some(u) = &pg {
        config.server.database_url = u.clone();
    }
    config.access.api_requests_per_minute = 1_000_000;
    config.monitors = (0..monitors)
        .map(|i| MonitorSpec {
            name: format!("svc-{i:05}"),
            kind: "http".into(),
            target: format!("{url}?monitor={i}"),
            interval: Some(format!("{interval}s")),
            timeout: Some(format!("{}s", interval.min(5))),
            ..Default::default()
        })
        .collect();
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };

    // The monitors are stored by App::build; the history goes in before the server starts so
    // the scheduler's grid load reads it, as after a restart.
    let built = Instant::now();
    let app = App::build(config, None).await.expect("app builds");
    let build_secs = built.elapsed().as_secs_f64();
    let store = app.state.store.clone();
    let filling = Instant::now();
    history(&store, pg.is_some(), history_days, now_ms()).await;
    let (rollups,): (i64,) = store
        .fetch_one("SELECT COUNT(*) FROM check_rollups", opsdeck::args![])
        .await
        .expect("count");
    println!(
        "{backend}: {monitors} monitors stored in {build_secs:.1} s; {rollups} hour and day \
         rollups ({history_days} days) filled in {:.1} s",
        filling.elapsed().as_secs_f64()
    );
    let loading = Instant::now();
    let grid = opsdeck::health::grid::Grid::load(&store, now_ms())
        .await
        .expect("grid loads");
    println!(
        "grid load (the scheduler's start): {:.0} ms for {} rows; resident memory now {:.0} MB",
        loading.elapsed().as_secs_f64() * 1000.0,
        grid.rows(now_ms(), None).len(),
        rss_mb()
    );
    drop(grid);

    let key = keys::create(
        &store,
        "bench",
        &Scopes::parse_list(&["read"]).expect("scopes"),
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

    // Peak resident memory, sampled every 200 ms.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, cancel) = (peak.clone(), cancel.clone());
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                peak.fetch_max((rss_mb() * 10.0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The scheduler starts once it has loaded the grid; then one whole interval, over which
    // every monitor's first slot is spread, before measuring.
    let loading = Instant::now();
    for _ in 0..600 {
        let scheduled = state
            .health
            .rows(&store, Some(1))
            .await
            .ok()
            .and_then(|rows| rows.first().map(|r| r.interval_secs > 0.0))
            .unwrap_or(false);
        if scheduled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "scheduler started {:.1} s after the server",
        loading.elapsed().as_secs_f64()
    );
    let warm = Duration::from_secs(interval as u64 + 2);
    println!("warming up for {} s …", warm.as_secs());
    tokio::time::sleep(warm).await;
    println!("resident memory after the warm-up: {:.0} MB", rss_mb());
    let _ = state.health.drift.take();
    let served_before = target.served().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (checks, p50, p99, max) = state.health.drift.take();
    let served_in = target.served().await.saturating_sub(served_before);
    let due = monitors as f64 / interval as f64;
    println!(
        "checks: {:.0}/s recorded ({:.0}/s served by the target) over {elapsed:.0} s; due {due:.0}/s \
         ({:.0}% of due)",
        checks as f64 / elapsed,
        served_in as f64 / elapsed,
        checks as f64 / elapsed / due * 100.0
    );
    println!(
        "schedule drift: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    println!(
        "peak resident memory: {:.0} MB (opsdeck's process: server, scheduler, store; the target runs apart)",
        peak.load(Ordering::Relaxed) as f64 / 10.0
    );

    let client = reqwest::Client::new();
    let routes: Vec<Route> = vec![
        (
            "integrations (grid, all)",
            Box::new(|_| "/api/v1/integrations".into()),
        ),
        (
            "integrations/{id}",
            Box::new(move |i| format!("/api/v1/integrations/{}", (i * 7919) % monitors + 1)),
        ),
    ];
    println!("grid routes, while the checks run:");
    time_routes(&client, &base, &key, &routes, requests).await;
    let body = client
        .get(format!("{base}/api/v1/integrations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("grid")
        .bytes()
        .await
        .expect("body");
    println!("grid body: {:.1} MB", body.len() as f64 / 1e6);

    // Monitors created through the API while the rest are checked: each answer waits until
    // the running scheduler has taken the change in (and the grid shows it).
    let admin = keys::create(
        &store,
        "bench-admin",
        &Scopes::parse_list(&["admin"]).expect("scopes"),
        &Actor::new("bench", None),
    )
    .await
    .expect("key")
    .secret;
    let mut took = Vec::with_capacity(changes);
    for i in 0..changes {
        let started = Instant::now();
        let res = client
            .post(format!("{base}/api/v1/integrations"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "name": format!("added-{i:04}"),
                "kind": "http",
                "target": format!("{url}?added={i}"),
                "interval": format!("{interval}s"),
            }))
            .send()
            .await
            .expect("create");
        assert!(res.status().is_success(), "create: {}", res.status());
        took.push(started.elapsed());
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "monitor created through the API ({changes}, with {monitors} scheduled): p50 {:.1} ms, \
         p99 {:.1} ms",
        at(0.5),
        at(0.99)
    );
    // For comparison, what each change used to cost the scheduler before it re-read only
    // the changed monitors: opening and validating every stored definition.
    let started = Instant::now();
    let (all, _) = opsdeck::health::store::read_for_schedule(&store, &state.master_key, None)
        .await
        .expect("read");
    println!(
        "reading every definition ({}): {:.1} ms",
        all.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    cancel.cancel();
    let _ = sampler.await;
    let _ = server.await;
    let _ = target.child.kill().await;
}
