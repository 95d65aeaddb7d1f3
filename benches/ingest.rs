//! Ingest benchmark as a user sees it: the release binary runs as its own process (`opsdeck
//! serve` with shipped defaults, one ingest key made with `opsdeck key create`), and this process
//! is the separate load generator. Connections post batches of CloudEvents with current times
//! (mostly `api.request` for a set of customers, plus `page.view`, `feature.used` and
//! `session.start` analytics events) without pause, and the run prints the curve as the store
//! grows: at each checkpoint of stored events, the rate over a measuring window, ack latency
//! p50/p99 and the server's resident memory. Filling between checkpoints is measured too.
//!
//! Then, as the physical reference, the same rows are inserted into a table with only its
//! primary key (SQLite: WAL, `synchronous=FULL`, one prepared statement; PostgreSQL: the
//! writer's own `UNNEST` statement) in transactions of one batch each, and the ratio printed.
//!
//! `cargo bench --bench ingest` — knobs (environment): BENCH_CURVE (checkpoints in stored
//! events, default "0,1000000,10000000"), BENCH_WINDOW (seconds measured at each, 20),
//! BENCH_CONNECTIONS (16), BENCH_BATCH (500), BENCH_CUSTOMERS (500), BENCH_ANALYTICS (percent of
//! events that are analytics, 20), BENCH_MAX_SECONDS (whole run, 1800), BENCH_POSTGRES_URL (an
//! empty database to use instead of SQLite), BENCH_KEEP (keep the data directory). Loopback only;
//! every loop is bounded by the checkpoints and the deadline.

mod common;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::Mutex;

const BINARY: &str = env!("CARGO_BIN_EXE_opsdeck");

struct Knobs {
    curve: Vec<u64>,
    window: Duration,
    connections: usize,
    batch: usize,
    customers: usize,
    analytics_pct: usize,
    /// 0: events carry the current time (live traffic); N: times spread over the last N days
    /// (a history import).
    spread_days: u64,
    deadline: Instant,
    postgres: Option<String>,
}

/// The server under test, killed when dropped.
struct Server {
    process: ServerProcess,
    base: String,
    key: String,
    data_dir: Option<tempfile::TempDir>,
}

impl Server {
    fn rss_mb(&self) -> f64 {
        self.process.rss_mb()
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.process.0.id()))
    }
}

/// A process's user + system CPU time from its `/proc/<pid>/stat` (Linux), in seconds.
fn cpu_seconds(stat: &str) -> f64 {
    // utime and stime, in clock ticks (100 per second on Linux).
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(f64::NAN, |ticks| ticks / 100.0)
}

fn store_args(dir: &std::path::Path, pg: &Option<String>) -> Vec<String> {
    let mut a = vec!["--data-dir".to_string(), dir.display().to_string()];
    if let Some(url) = pg {
        a.extend(["--database-url".to_string(), url.clone()]);
    }
    a
}

async fn start(k: &Knobs) -> Server {
    let data_dir = tempfile::tempdir().expect("temp dir");
    // As an operator's data directory would be (the server warns otherwise).
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data_dir.path(), std::fs::Permissions::from_mode(0o700));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let args = store_args(data_dir.path(), &k.postgres);
    let child = Command::new(BINARY)
        .arg("serve")
        .args(&args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn,sqlx=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start opsdeck serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < ready, "server not ready in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = Command::new(BINARY)
        .args(["key", "create"])
        .args(&args)
        .args(["--name", "bench", "--scope", "ingest"])
        .output()
        .expect("opsdeck key create");
    assert!(out.status.success(), "key create failed: {out:?}");
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Server {
        process: ServerProcess(child),
        base,
        key,
        data_dir: Some(data_dir),
    }
}

/// Appends event `n` (a unique id) to `body` as JSON, at `time` or, for a history import,
/// at a time of its own in the last `spread_days` days.
fn push_event(body: &mut String, n: u64, k: &Knobs, time: &str) {
    let spread;
    let time = if k.spread_days == 0 {
        time
    } else {
        let back_ms = (n.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 20) % (k.spread_days * 86_400_000);
        let at = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(back_ms as i64);
        spread = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        spread.as_str()
    };
    const ENDPOINTS: &[&str] = &[
        "/api/referrals",
        "/api/rewards",
        "/api/users/me",
        "/api/campaigns",
    ];
    const PAGES: &[&str] = &["/", "/pricing", "/docs", "/dashboard", "/settings"];
    const FEATURES: &[&str] = &["export", "invite", "webhooks", "api-keys"];
    let customer = n % k.customers as u64;
    let user = n % (k.customers as u64 * 8);
    // A cheap spread that is not correlated with the customer.
    let pick = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize;
    let _ = write!(
        body,
        r#"{{"specversion":"1.0","id":"{:016x}{n:016x}","source":"bench-app","subject":"cus_{customer:06}","time":"{time}","#,
        // Unordered, like the UUIDv4s most SDKs send: the worst case for an index on ids.
        n.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(29)
    );
    let analytics = pick % 100 < k.analytics_pct;
    let _ = if !analytics {
        write!(
            body,
            r#""type":"api.request","data":{{"endpoint":"{}","method":"POST","status":{},"duration_ms":{}}}}}"#,
            ENDPOINTS[pick % ENDPOINTS.len()],
            if n.is_multiple_of(50) { 500 } else { 200 },
            pick % 300
        )
    } else {
        match pick % 10 {
            0..=5 => write!(
                body,
                r#""type":"page.view","data":{{"path":"{}","user":"u{user}"}}}}"#,
                PAGES[pick % PAGES.len()]
            ),
            6..=8 => write!(
                body,
                r#""type":"feature.used","data":{{"feature":"{}","user":"u{user}"}}}}"#,
                FEATURES[pick % FEATURES.len()]
            ),
            _ => write!(
                body,
                r#""type":"session.start","data":{{"user":"u{user}"}}}}"#
            ),
        }
    };
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the load tasks share: the next event number, and the acks of the current window.
struct Shared {
    next: AtomicU64,
    acked: AtomicU64,
    stop: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
}

async fn load_task(server_url: String, key: String, k: Arc<Knobs>, shared: Arc<Shared>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut body = String::with_capacity(k.batch * 260);
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < k.deadline {
        let first = shared.next.fetch_add(k.batch as u64, Ordering::Relaxed);
        let time = rfc3339_now();
        body.clear();
        body.push('[');
        for n in first..first + k.batch as u64 {
            if n != first {
                body.push(',');
            }
            push_event(&mut body, n, &k, &time);
        }
        body.push(']');
        let t = Instant::now();
        let res = http
            .post(&server_url)
            .bearer_auth(&key)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body.clone())
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = res.status();
        let reply = res.bytes().await.unwrap_or_default();
        if status.as_u16() == 429 || status.as_u16() == 503 {
            // Refused under the shipped limits: wait as told and send a new batch. Printed,
            // because a refusal at this load is a finding.
            eprintln!("server answered {status}; backing off");
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&reply)
        );
        shared.latencies.lock().await.push(t.elapsed());
        shared.acked.fetch_add(k.batch as u64, Ordering::Relaxed);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One event as the writer stores it: (source, id, type, subject, data).
type RawRow = (String, String, String, String, String);

/// The benchmark's events as rows, built before any reference's clock starts.
fn raw_rows(k: &Knobs, rows: u64) -> Vec<RawRow> {
    let time = rfc3339_now();
    (0..rows)
        .map(|n| {
            let mut s = String::new();
            push_event(&mut s, n, k, &time);
            let e: serde_json::Value = serde_json::from_str(&s).expect("own JSON");
            let f = |f: &str| e[f].as_str().unwrap_or_default().to_string();
            (
                f("source"),
                f("id"),
                f("type"),
                f("subject"),
                e["data"].to_string(),
            )
        })
        .collect()
}

/// Inserts the benchmark's rows into a table with only its primary key, one transaction per
/// batch, and returns rows per second.
async fn raw_reference(k: &Knobs, events: &[RawRow]) -> (f64, &'static str) {
    let rows = events.len() as u64;
    let received = opsdeck::store::now_ms();
    if let Some(url) = &k.postgres {
        let store = opsdeck::store::Store::connect(url, &Default::default())
            .await
            .expect("connect");
        store
            .execute("DROP TABLE IF EXISTS bench_raw", opsdeck::args![])
            .await
            .expect("drop");
        store
            .execute(
                "CREATE TABLE bench_raw (source TEXT NOT NULL, event_id TEXT NOT NULL, \
                 type TEXT NOT NULL, subject TEXT, time BIGINT NOT NULL, received_at BIGINT NOT NULL, \
                 data TEXT NOT NULL, PRIMARY KEY (source, event_id))",
                opsdeck::args![],
            )
            .await
            .expect("create");
        let started = Instant::now();
        for chunk in events.chunks(k.batch) {
            let mut tx = store.begin().await.expect("begin");
            let opsdeck::store::Tx::Postgres(conn) = &mut tx else {
                unreachable!("a PostgreSQL URL opens PostgreSQL")
            };
            // In statements of at most PG_STATEMENT_BYTES, as the writer sends them: a bigger
            // one waits ~40 ms for a delayed ACK (sqlx leaves Nagle's algorithm on), which made
            // this reference measure the network stack rather than PostgreSQL.
            let size = |r: &RawRow| r.0.len() + r.1.len() + r.2.len() + r.3.len() + r.4.len() + 44;
            for part in
                opsdeck::store::chunks_by_size(chunk, opsdeck::store::PG_STATEMENT_BYTES, size)
            {
                let col = |f: fn(&RawRow) -> &String| {
                    part.iter().map(|r| f(r).as_str()).collect::<Vec<&str>>()
                };
                let times: Vec<i64> = vec![received; part.len()];
                sqlx::query(
                    "INSERT INTO bench_raw SELECT s, i, t, c, tm, $6, d FROM UNNEST($1::text[], \
                     $2::text[], $3::text[], $4::text[], $5::int8[], $7::text[]) AS e (s, i, t, c, tm, d)",
                )
                .bind(col(|r| &r.0))
                .bind(col(|r| &r.1))
                .bind(col(|r| &r.2))
                .bind(col(|r| &r.3))
                .bind(times)
                .bind(received)
                .bind(col(|r| &r.4))
                .execute(&mut **conn)
                .await
                .expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        let rate = rows as f64 / started.elapsed().as_secs_f64();
        let _ = store
            .execute("DROP TABLE bench_raw", opsdeck::args![])
            .await;
        return (
            rate,
            "UNNEST in statements of at most 256 KiB, (source, id) primary key",
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE raw (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL, \
         type TEXT NOT NULL, subject TEXT, time INTEGER NOT NULL, received_at INTEGER NOT NULL, \
         data TEXT NOT NULL)",
    )
    .expect("create");
    let mut conn = conn;
    let started = Instant::now();
    for chunk in events.chunks(k.batch) {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO raw (source, event_id, type, subject, time, received_at, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .expect("prepare");
            for (source, id, kind, subject, data) in chunk {
                insert
                    .execute(rusqlite::params![
                        source, id, kind, subject, received, received, data
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    (
        rows as f64 / started.elapsed().as_secs_f64(),
        "rowid primary key, WAL, synchronous=FULL",
    )
}

/// The reference issue 18 was filed with: the same rows, table and pragmas as `raw_reference`,
/// inserted by a Python script through its standard `sqlite3` module (`executemany`, one
/// transaction per batch). It costs the interpreter's per-row work as well as SQLite's, so it is
/// printed beside the in-process reference, not instead of it. `None` when `python3` is absent.
fn script_reference(k: &Knobs, events: &[RawRow]) -> Option<f64> {
    const SCRIPT: &str = r#"
import json, sqlite3, sys, time
rows_path, db, batch, received = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(rows_path) as f:
    rows = [(s, i, t, c, received, received, d) for (s, i, t, c, d) in map(json.loads, f)]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE raw (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, "
             "event_id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT, time INTEGER NOT NULL, "
             "received_at INTEGER NOT NULL, data TEXT NOT NULL)")
insert = ("INSERT INTO raw (source, event_id, type, subject, time, received_at, data) "
          "VALUES (?, ?, ?, ?, ?, ?, ?)")
start = time.perf_counter()
for n in range(0, len(rows), batch):
    conn.execute("BEGIN")
    conn.executemany(insert, rows[n:n + batch])
    conn.execute("COMMIT")
print(len(rows) / (time.perf_counter() - start))
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let rows_path = dir.path().join("rows.jsonl");
    let mut text = String::new();
    for row in events {
        text.push_str(&serde_json::to_string(row).expect("rows encode"));
        text.push('\n');
    }
    std::fs::write(&rows_path, text).expect("write rows");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&rows_path)
        .arg(dir.path().join("script.db"))
        .arg(k.batch.to_string())
        .arg(opsdeck::store::now_ms().to_string())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().parse().ok(),
        Ok(out) => {
            println!(
                "  script reference failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("  script reference skipped: python3 could not be started ({e})");
            None
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let curve: Vec<u64> = std::env::var("BENCH_CURVE")
        .unwrap_or_else(|_| "0,1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let k = Arc::new(Knobs {
        curve,
        window: Duration::from_secs(env_usize("BENCH_WINDOW", 20) as u64),
        connections: env_usize("BENCH_CONNECTIONS", 16).max(1),
        batch: env_usize("BENCH_BATCH", 500).clamp(1, 1000),
        customers: env_usize("BENCH_CUSTOMERS", 500).max(1),
        analytics_pct: env_usize("BENCH_ANALYTICS", 20).min(100),
        spread_days: env_usize("BENCH_SPREAD_DAYS", 0) as u64,
        deadline: Instant::now() + Duration::from_secs(env_usize("BENCH_MAX_SECONDS", 1800) as u64),
        postgres: std::env::var("BENCH_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty()),
    });
    let server = start(&k).await;
    let backend = if k.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "ingest benchmark ({backend}): release binary as its own process, shipped defaults; \
         {} connections, batches of {}, {} customers, {} % analytics events, {}",
        k.connections,
        k.batch,
        k.customers,
        k.analytics_pct,
        if k.spread_days == 0 {
            "current times (live)".to_string()
        } else {
            format!(
                "times spread over the last {} days (history import)",
                k.spread_days
            )
        }
    );
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        latencies: Mutex::new(Vec::new()),
    });
    let url = format!("{}/api/v1/events", server.base);
    let tasks: Vec<_> = (0..k.connections)
        .map(|_| {
            tokio::spawn(load_task(
                url.clone(),
                server.key.clone(),
                k.clone(),
                shared.clone(),
            ))
        })
        .collect();

    println!(
        "{:>12} {:>10} {:>8} {:>8} {:>8} {:>10} {:>12} {:>12}",
        "stored",
        "events/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU cores",
        "CPU µs/event",
        "load µs/event"
    );
    let started = Instant::now();
    let mut windows = Vec::new();
    for &checkpoint in &k.curve {
        // Fill up to the checkpoint, printing the rate every million.
        let mut mark = (Instant::now(), shared.acked.load(Ordering::Relaxed));
        while shared.acked.load(Ordering::Relaxed) < checkpoint && Instant::now() < k.deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let acked = shared.acked.load(Ordering::Relaxed);
            if acked / 1_000_000 > mark.1 / 1_000_000 {
                let rate = (acked - mark.1) as f64 / mark.0.elapsed().as_secs_f64();
                println!(
                    "  filling: {:>5.1} M stored, {rate:>9.0} events/s",
                    acked as f64 / 1e6
                );
                mark = (Instant::now(), acked);
            }
        }
        if Instant::now() >= k.deadline {
            println!("  deadline reached before {checkpoint} events were stored");
            break;
        }
        // The measuring window.
        shared.latencies.lock().await.clear();
        let (t0, a0, cpu0, load0) = (
            Instant::now(),
            shared.acked.load(Ordering::Relaxed),
            server.cpu_seconds(),
            cpu_seconds("/proc/self/stat"),
        );
        tokio::time::sleep(k.window).await;
        let (elapsed, acked) = (t0.elapsed(), shared.acked.load(Ordering::Relaxed) - a0);
        let cpu = (server.cpu_seconds() - cpu0) / elapsed.as_secs_f64();
        // The load generator's own CPU shows how much of the two cores the server could have.
        let load_cpu = (cpu_seconds("/proc/self/stat") - load0) / elapsed.as_secs_f64();
        let mut lat = std::mem::take(&mut *shared.latencies.lock().await);
        lat.sort();
        let rate = acked as f64 / elapsed.as_secs_f64();
        println!(
            "{:>12} {:>10.0} {:>8.1} {:>8.1} {:>8.0} {:>10.2} {:>12.1} {:>12.1}",
            a0,
            rate,
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            server.rss_mb(),
            cpu,
            cpu * 1e6 / rate.max(1.0),
            load_cpu * 1e6 / rate.max(1.0)
        );
        windows.push((a0, rate));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let total = shared.acked.load(Ordering::Relaxed);
    println!(
        "  {total} events acknowledged in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut server = server;
    if std::env::var("BENCH_KEEP").is_ok()
        && let Some(dir) = server.data_dir.take()
    {
        println!("  data directory kept: {}", dir.keep().display());
    }
    drop(server);

    let rows = raw_rows(&k, 1_000_000);
    let (raw, how) = raw_reference(&k, &rows).await;
    println!(
        "  raw insert of the same rows ({how}, {}-row transactions): {raw:.0} rows/s",
        k.batch
    );
    let script = if k.postgres.is_none() {
        script_reference(&k, &rows)
    } else {
        None
    };
    if let Some(script) = script {
        println!(
            "  the same rows from a Python script (sqlite3 module, executemany, same table and \
             pragmas, the way issue 18's reference was taken): {script:.0} rows/s"
        );
    }
    for (stored, rate) in windows {
        match script {
            Some(script) => println!(
                "  ratio at {stored:>10} stored: {:.2} of the raw insert, {:.2} of the script",
                rate / raw,
                rate / script
            ),
            None => println!("  ratio at {stored:>10} stored: {:.2}", rate / raw),
        }
    }
}
