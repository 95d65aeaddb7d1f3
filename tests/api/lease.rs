//! Leases on singleton jobs: the rules of one lease on both databases, and two real `opsdeck
//! serve` processes on one PostgreSQL database, one of them killed with SIGKILL while it holds
//! the health scheduler's lease.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsdeck::store::lease;

use crate::cli::{read_until, sigterm_and_wait, url_in};
use crate::helpers::{Backend, drop_postgres_database, fresh_postgres_database, postgres_url};

/// Waits for `cond` to hold, polling every 50 ms, and panics with `what` after `within`.
async fn wait_for<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for_some(within, what, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Waits for `get` to give a value, polling every 50 ms, and panics with `what` after
/// `within`.
async fn wait_for_some<T, F, Fut>(within: Duration, what: &str, mut get: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = get().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often one instance's work under the lease `test-job` started and stopped.
type Counts = Arc<(AtomicUsize, AtomicUsize)>;

/// Runs `holder`'s work under the lease `test-job` until `stop`: the work only counts its
/// starts and stops and waits for its lease to end.
fn counting_runner(
    store: &opsdeck::store::Store,
    holder: &str,
    stop: tokio_util::sync::CancellationToken,
) -> (Counts, tokio::task::JoinHandle<()>) {
    let counts: Counts = Arc::default();
    let c = counts.clone();
    let task = tokio::spawn(opsdeck::jobs::Lease::new("test-job", holder).run(
        store.clone(),
        stop,
        move |run_stop| {
            let c = c.clone();
            async move {
                c.0.fetch_add(1, Ordering::SeqCst);
                run_stop.cancelled().await;
                c.1.fetch_add(1, Ordering::SeqCst);
            }
        },
    ));
    (counts, task)
}

/// A standby never takes an unexpired lease; its holder renews it (moving the expiry on) and
/// gives it back (only its holder can); another takes it only once it has lapsed; and a
/// running server holds the health scheduler's lease and gives it back when it stops.
async fn lease_rules(backend: Backend) {
    let Some(app) = crate::helpers::spawn_app(backend).await else {
        return;
    };
    let store = app.state.store.clone();
    let (server, _) = wait_for_some(
        Duration::from_secs(10),
        "the server to take its lease",
        || {
            let store = store.clone();
            async move { lease::holder(&store, "health-scheduler").await.unwrap() }
        },
    )
    .await;
    assert!(
        server.starts_with(&format!("pid{}-", std::process::id())),
        "the holder names this process: {server}"
    );
    assert!(
        !lease::acquire(&store, "health-scheduler", "other", 60_000)
            .await
            .unwrap(),
        "a held lease is not taken"
    );

    // Taken, renewed by its holder (the expiry moves on), refused to another.
    assert!(lease::acquire(&store, "job", "a", 60_000).await.unwrap());
    let (_, first) = lease::holder(&store, "job").await.unwrap().unwrap();
    assert!(lease::acquire(&store, "job", "a", 120_000).await.unwrap());
    let (who, renewed) = lease::holder(&store, "job").await.unwrap().unwrap();
    assert_eq!(who, "a");
    assert!(renewed >= first + 59_000, "{first} → {renewed}");
    assert!(!lease::acquire(&store, "job", "b", 60_000).await.unwrap());
    // Only the holder gives it back.
    lease::release(&store, "job", "b").await.unwrap();
    assert_eq!(lease::holder(&store, "job").await.unwrap().unwrap().0, "a");
    lease::release(&store, "job", "a").await.unwrap();
    assert!(lease::holder(&store, "job").await.unwrap().is_none());

    // Given back, it is free at once; a short lease is taken by another only after it lapses.
    let taken = Instant::now();
    assert!(lease::acquire(&store, "job", "b", 1_500).await.unwrap());
    assert!(!lease::acquire(&store, "job", "a", 60_000).await.unwrap());
    wait_for(
        Duration::from_secs(10),
        "the lapsed lease to be taken",
        || {
            let store = store.clone();
            async move { lease::acquire(&store, "job", "a", 60_000).await.unwrap() }
        },
    )
    .await;
    assert!(
        taken.elapsed() >= Duration::from_millis(1_500),
        "taken over after {:?}, before the lease lapsed",
        taken.elapsed()
    );
    assert_eq!(lease::holder(&store, "job").await.unwrap().unwrap().0, "a");
    assert!(
        !lease::acquire(&store, "job", "b", 60_000).await.unwrap(),
        "the old holder cannot renew what it lost"
    );

    // A clean stop gives the server's leases back, so a standby takes over at once.
    let mut app = app;
    let url = app.state.config.database_url();
    app.stop().await;
    let store = opsdeck::store::Store::connect(&url, &Default::default())
        .await
        .unwrap();
    let left = lease::holder(&store, "health-scheduler").await.unwrap();
    store.close().await;
    assert!(left.is_none(), "given back on stop: {left:?}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rules_sqlite() {
    lease_rules(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rules_postgres() {
    lease_rules(Backend::Postgres).await;
}

/// The lease runner: of two instances, only the holder works; the other starts once the holder
/// stops (given back at once), and a holder whose lease is taken from it stops working.
async fn lease_runner(backend: Backend) {
    let Some(app) = crate::helpers::spawn_app(backend).await else {
        return;
    };
    let store = app.state.store.clone();
    let runner = |holder: &str, stop| counting_runner(&store, holder, stop);
    let stop_a = tokio_util::sync::CancellationToken::new();
    let (a, a_task) = runner("a", stop_a.clone());
    wait_for(Duration::from_secs(10), "a to start", || {
        let a = a.clone();
        async move { a.0.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let stop_b = tokio_util::sync::CancellationToken::new();
    let (b, b_task) = runner("b", stop_b.clone());
    // Two renewals by a while b stands by.
    let (_, first) = lease::holder(&store, "test-job").await.unwrap().unwrap();
    wait_for(Duration::from_secs(10), "two renewals", || {
        let store = store.clone();
        async move {
            let (who, until) = lease::holder(&store, "test-job").await.unwrap().unwrap();
            who == "a" && until >= first + 3_000
        }
    })
    .await;
    assert_eq!(
        b.0.load(Ordering::SeqCst),
        0,
        "a standby never takes a held lease"
    );

    // a stops cleanly: b takes over within its poll.
    stop_a.cancel();
    a_task.await.unwrap();
    let released = Instant::now();
    wait_for(Duration::from_secs(3), "b to take over", || {
        let b = b.clone();
        async move { b.0.load(Ordering::SeqCst) == 1 }
    })
    .await;
    eprintln!(
        "b took over {:?} after a gave the lease back",
        released.elapsed()
    );
    assert_eq!(
        (a.0.load(Ordering::SeqCst), a.1.load(Ordering::SeqCst)),
        (1, 1)
    );

    // Another holder takes the lease from b (as if b's had lapsed): b stops at its next renewal.
    store
        .execute(
            "UPDATE leases SET holder = 'thief' WHERE name = 'test-job'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), "b to stop", || {
        let b = b.clone();
        async move { b.1.load(Ordering::SeqCst) == 1 }
    })
    .await;
    stop_b.cancel();
    b_task.await.unwrap();
    assert_eq!(
        b.0.load(Ordering::SeqCst),
        1,
        "b never worked beside the thief"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_runner_sqlite() {
    lease_runner(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_runner_postgres() {
    lease_runner(Backend::Postgres).await;
}

/// On SQLite, a bulk write that holds the one write lock for seconds (as the ingest writer's
/// flush of a history import does) does not cost a holder its lease: its renewal takes its turn
/// behind the write and lands before the deadline, so the work is never stopped, and the
/// jobs' other writes go through once the long one ends instead of failing "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_writes_on_sqlite_do_not_cost_a_lease() {
    let Some(app) = crate::helpers::spawn_app(Backend::Sqlite).await else {
        return;
    };
    let store = app.state.store.clone();
    let direct = store
        .direct_sqlite()
        .expect("a SQLite store has a direct connection");
    let stop = tokio_util::sync::CancellationToken::new();
    let (counts, task) = counting_runner(&store, "a", stop.clone());
    wait_for(Duration::from_secs(10), "the holder to start", || {
        let c = counts.clone();
        async move { c.0.load(Ordering::SeqCst) == 1 }
    })
    .await;
    // Twice: just before a renewal is due (1.8 s after one landed), a write holds the lock for
    // 2.5 s, so the renewal waits behind it for longer than a renewal's interval (2 s) and
    // within what a renewal may wait (3 s).
    for _ in 0..2 {
        let (_, before) = lease::holder(&store, "test-job").await.unwrap().unwrap();
        wait_for(Duration::from_secs(5), "a renewal", || {
            let store = store.clone();
            async move {
                let (_, until) = lease::holder(&store, "test-job").await.unwrap().unwrap();
                until > before
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        direct
            .run(|conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ('bulk', 'x', 0) \
                     ON CONFLICT (name) DO UPDATE SET expires_at = leases.expires_at + 1",
                    [],
                )?;
                std::thread::sleep(Duration::from_millis(2_500));
                tx.commit()?;
                Ok(())
            })
            .await
            .unwrap();
        // A job's ordinary write right after goes through.
        store
            .execute(
                "UPDATE leases SET expires_at = expires_at WHERE name = 'bulk'",
                opsdeck::args![],
            )
            .await
            .expect("a short write waits its turn instead of failing");
    }
    assert_eq!(
        counts.1.load(Ordering::SeqCst),
        0,
        "the holder was stopped while another writer held the lock"
    );
    let (who, _) = lease::holder(&store, "test-job").await.unwrap().unwrap();
    assert_eq!(who, "a");
    stop.cancel();
    task.await.unwrap();
    app.finish().await;
}

/// Every singleton job takes its lease through `jobs::Lease`, so all share one takeover time:
/// no other source file takes a named lease.
#[test]
fn only_the_lease_runner_takes_leases() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .contains("lease::acquire(")
            {
                found.push(path.display().to_string());
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    walk(&src, &mut found);
    let expected = src.join("jobs.rs").display().to_string();
    assert_eq!(found, vec![expected]);
}

/// What the local peer saw: each health check's arrival, and each notification's body, once
/// per message: a delivery repeated with the same `webhook-id` (at-least-once delivery, e.g. a
/// response lost to a timeout on a loaded machine) is the same message and is counted apart.
#[derive(Default)]
struct Seen {
    checks: Vec<Instant>,
    notifications: Vec<serde_json::Value>,
    message_ids: std::collections::HashSet<String>,
    redeliveries: usize,
}

/// A loopback peer: `/check` (the monitored service, answering 200 or 500 as `failing`
/// says) and `/hook` (the alert notifier), recording what arrives.
async fn peer(
    seen: Arc<Mutex<Seen>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    use axum::routing::{get, post};
    use std::sync::atomic::Ordering;
    let (a, b) = (seen.clone(), seen);
    let app = axum::Router::new()
        .route(
            "/check",
            get(move || {
                a.lock().unwrap().checks.push(Instant::now());
                let code = if failing.load(Ordering::SeqCst) {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                };
                async move { code }
            }),
        )
        .route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                let id = headers
                    .get("webhook-id")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut s = b.lock().unwrap();
                assert!(!id.is_empty(), "a notification without webhook-id: {body}");
                if s.message_ids.insert(id) {
                    s.notifications.push(v);
                } else {
                    s.redeliveries += 1;
                }
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One `opsdeck serve` process on the shared database; its log goes to a file beside it.
struct Instance {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A failing assertion unwinds past the test's own kill and stop: without this, the process
/// would outlive the test run (seen after a failure on a loaded machine).
impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    async fn start(config: &std::path::Path, database_url: &str, master_key: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsdeck"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(dir.path())
            .env("OPSDECK_SERVER__DATABASE_URL", database_url)
            .env("OPSDECK_MASTER_KEY", master_key)
            .env("OPSDECK_SERVER__LOG_LEVEL", "opsdeck=info,warn")
            .env_remove("RUST_LOG")
            .env_remove("OPSDECK_ADMIN_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines = tokio::task::spawn_blocking(move || read_until(&mut out, "listening on"))
            .await
            .unwrap();
        let base = url_in(&lines);
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), reqwest::StatusCode::OK);
        Instance {
            child,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Which process holds lease `name` now (by the pid its holder name carries), if any.
async fn holder_pid(pool: &sqlx::PgPool, name: &str) -> Option<u32> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT holder, expires_at FROM leases WHERE name = $1 \
         AND expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .ok()?;
    let holder = row?.0;
    holder.strip_prefix("pid")?.split('-').next()?.parse().ok()
}

/// Two instances on one PostgreSQL database: one runs the health checks, once per interval;
/// a monitor going down is notified once, though both run the alerts job; and after the
/// holder of the health lease is killed with SIGKILL the other's checks reach the monitored
/// service within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_take_over_within_ten_seconds_of_a_kill() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(admin) = postgres_url() else {
        eprintln!("*** SKIPPED two_processes_take_over_within_ten_seconds_of_a_kill ***");
        return;
    };
    let (db_name, db_url) = fresh_postgres_database(&admin).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let failing = Arc::new(AtomicBool::new(false));
    let addr = peer(seen.clone(), failing.clone()).await;
    let interval = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsdeck.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\n\
             evaluation_interval = \"1s\"\n\
             allow_private_targets = true\n\
             default_notifiers = [\"hook\"]\n\
             \n\
             [[notifiers]]\n\
             name = \"hook\"\n\
             kind = \"webhook\"\n\
             url = \"http://{addr}/hook\"\n\
             \n\
             [[monitors]]\n\
             name = \"service\"\n\
             kind = \"http\"\n\
             target = \"http://{addr}/check\"\n\
             interval = \"2s\"\n\
             timeout = \"1s\"\n\
             failure_threshold = 1\n"
        ),
    )
    .unwrap();
    let master_key = "11".repeat(32);
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();

    let mut first = Instance::start(&config, &db_url, &master_key).await;
    let mut second = Instance::start(&config, &db_url, &master_key).await;
    let both_from = Instant::now();
    let logs =
        |a: &Instance, b: &Instance| format!("--- first\n{}\n--- second\n{}", a.log(), b.log());

    // While both live: a check per interval, whichever of them runs them.
    wait_for(Duration::from_secs(20), "checks while both live", || {
        let seen = seen.clone();
        async move {
            let s = seen.lock().unwrap();
            s.checks.iter().filter(|t| **t >= both_from).count() >= 5
        }
    })
    .await;

    // The service goes down: one notification of the firing alert, though both instances
    // run the alerts job.
    failing.store(true, Ordering::SeqCst);
    // The built-in "integration down" rule's notifications (no other rule fires this fast).
    let down = |s: &Seen, kind: &str| {
        s.notifications
            .iter()
            .filter(|n| n["type"] == kind && n.to_string().contains("integration down"))
            .count()
    };
    let firing = |s: &Seen| down(s, "alert.firing");
    wait_for(Duration::from_secs(20), "the firing notification", || {
        let seen = seen.clone();
        async move { firing(&seen.lock().unwrap()) >= 1 }
    })
    .await;
    failing.store(false, Ordering::SeqCst);
    wait_for(Duration::from_secs(20), "the resolved notification", || {
        let seen = seen.clone();
        async move { down(&seen.lock().unwrap(), "alert.resolved") >= 1 }
    })
    .await;

    let holder = wait_for_some(
        Duration::from_secs(10),
        "a holder of the health lease",
        || {
            let pool = pool.clone();
            async move { holder_pid(&pool, "health-scheduler").await }
        },
    )
    .await;
    assert!(
        holder == first.pid() || holder == second.pid(),
        "the lease names one of the two: {holder}\n{}",
        logs(&first, &second)
    );
    if holder == second.pid() {
        std::mem::swap(&mut first, &mut second);
    }
    let (victim, survivor) = (first, second);

    // Checks while both lived: never two in one interval. Each run starts up to a tenth of
    // the interval late, so two of one scheduler are at least 0.8 interval apart; two
    // schedulers' would double the count.
    let mut victim = victim;
    let killed = {
        let both_until = Instant::now();
        let s = seen.lock().unwrap();
        let during: Vec<Instant> = s
            .checks
            .iter()
            .copied()
            .filter(|t| *t >= both_from && *t <= both_until)
            .collect();
        let window = both_until - both_from;
        let most = (window.as_secs_f64() / interval.as_secs_f64()).floor() as usize + 2;
        assert!(
            during.len() <= most,
            "{} checks in {window:?} at one per {interval:?}",
            during.len()
        );
        for pair in during.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval.mul_f64(0.6),
                "two checks {:?} apart while both instances lived",
                pair[1] - pair[0]
            );
        }
        drop(s);
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        Instant::now()
    };

    // The survivor takes the lease over and its checks arrive within 10 s of the kill.
    wait_for(
        Duration::from_secs(10),
        "the survivor's first check after the kill",
        || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().checks.iter().any(|t| *t > killed) }
        },
    )
    .await;
    let takeover = {
        let s = seen.lock().unwrap();
        let first_after = s.checks.iter().find(|t| **t > killed).copied();
        first_after.map(|t| t - killed).unwrap_or_default()
    };
    eprintln!("health checks resumed {takeover:?} after the kill");
    assert!(takeover <= Duration::from_secs(10), "{takeover:?}");
    assert_eq!(
        holder_pid(&pool, "health-scheduler").await,
        Some(survivor.pid()),
        "{}",
        survivor.log()
    );
    // The survivor keeps the rhythm: a second check one interval after its first.
    wait_for(
        Duration::from_secs(10),
        "the survivor's second check",
        || {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .checks
                    .iter()
                    .filter(|t| **t > killed)
                    .count()
                    >= 2
            }
        },
    )
    .await;

    // One firing and one resolved message all along (a duplicate would have had the whole
    // takeover to arrive).
    {
        let s = seen.lock().unwrap();
        let counts = (firing(&s), down(&s, "alert.resolved"));
        assert_eq!(counts, (1, 1), "{:?}", s.notifications);
        if s.redeliveries > 0 {
            eprintln!(
                "{} message(s) delivered again under the same webhook-id",
                s.redeliveries
            );
        }
    }

    // A clean stop gives every lease back (the killed one's may still be waiting to lapse).
    let mut survivor = survivor;
    assert!(sigterm_and_wait(&mut survivor.child).success());
    let held: Vec<(String,)> = sqlx::query_as("SELECT holder FROM leases WHERE holder LIKE $1")
        .bind(format!("pid{}-%", survivor.pid()))
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        held.is_empty(),
        "leases left after a clean stop: {held:?}\n{}",
        survivor.log()
    );
    pool.close().await;
    drop_postgres_database(&db_name).await;
}
