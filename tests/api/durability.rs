//! Nothing acknowledged is lost: `opsdeck serve` runs as a child process, several clients
//! ingest concurrently, the process is killed with SIGKILL at random moments, restarted, and
//! every event that got a 2xx must be stored exactly once.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use crate::cli::{read_until, url_in};
use crate::helpers::*;

const ROUNDS: usize = 4;
const CLIENTS: usize = 4;
const BATCH: usize = 25;

fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsdeck"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let mut child = cmd
        .env("OPSDECK_ADMIN_PASSWORD", "irrelevant password")
        .env_remove("OPSDECK_SERVER__DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let base = url_in(&read_until(&mut out, "listening on"));
    (child, base)
}

fn batch(client: usize, round: usize, n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..BATCH)
        .map(|i| format!("r{round}-c{client}-b{n}-e{i}"))
        .collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"specversion": "1.0", "id": id, "source": "durability", "type": "api.request", "subject": "cus_1",
                   "data": {"endpoint": "/api/x", "method": "GET", "status": 200, "duration_ms": 3}})
        })
        .collect();
    (ids, json!(events).to_string())
}

async fn kill9_loses_nothing_acknowledged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = None;
    if backend == Backend::Postgres {
        let Some(admin) = postgres_url() else { return };
        pg = Some(fresh_postgres_database(&admin).await);
    }
    let db_url = pg.as_ref().map(|(_, url)| url.clone());
    let mut args = vec!["--data-dir".to_string(), dir.path().display().to_string()];
    if let Some(url) = &db_url {
        args.extend(["--database-url".to_string(), url.clone()]);
    }
    args.extend(["key", "create", "--name", "loader", "--scope", "ingest"].map(String::from));
    let out = Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("opsk_"))
        .unwrap()
        .to_string();

    let mut acked: Vec<Vec<String>> = Vec::new();
    let mut acked_bodies: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let (mut child, base) = start(dir.path(), db_url.as_deref());
        // Signalled at each acknowledgement; the kill waits for the first one, so that every
        // round kills a server with acknowledged batches behind it and more in flight, however
        // slowly a loaded machine starts the process.
        let acked_once = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (base, key, acked_once) = (base.clone(), key.clone(), acked_once.clone());
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut ok = Vec::new();
                for n in 0..2_000 {
                    let (ids, body) = batch(c, round, n);
                    let sent = http
                        .post(format!("{base}/api/v1/events"))
                        .bearer_auth(&key)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status().is_success() => {
                            let reply: Value = res.json().await.unwrap_or(Value::Null);
                            // A body cut off by the kill is not an acknowledgement.
                            if reply["accepted"].as_u64() == Some(BATCH as u64) {
                                ok.push((ids, body));
                                acked_once.notify_one();
                            } else {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                ok
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), acked_once.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no batch acknowledged within 60 s"));
        // Then a random moment in the stream of batches: mid-commit, mid-reply or between.
        let pause = rand::rng().random_range(0..450);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for c in clients {
            for (ids, body) in c.await.unwrap() {
                acked.push(ids);
                acked_bodies.push(body);
            }
        }
    }
    assert!(
        acked.len() >= ROUNDS,
        "each round acknowledged something ({} batches)",
        acked.len()
    );

    // Restart once more: every acknowledged event is there, once; resending them changes nothing.
    let (mut child, base) = start(dir.path(), db_url.as_deref());
    let store = opsdeck::store::Store::connect(
        db_url.clone().as_deref().unwrap_or(&format!(
            "sqlite://{}",
            dir.path().join("opsdeck.db").display()
        )),
        &Default::default(),
    )
    .await
    .unwrap();
    let rows: Vec<(String,)> = store
        .fetch_all(
            "SELECT event_id FROM events WHERE source = 'durability'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let present: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(present.len(), rows.len(), "no event stored twice");
    let want: Vec<&String> = acked.iter().flatten().collect();
    let missing: Vec<&&String> = want
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // The rollups and month totals were written in the killed transactions too: whatever
    // survived, they still agree with the events behind them, at every granularity.
    let stored = rows.len() as i64;
    let by_granularity: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT granularity, CAST(SUM(events) AS BIGINT) FROM usage_rollups \
             WHERE source = 'durability' GROUP BY granularity ORDER BY granularity",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(by_granularity.len(), 6, "{by_granularity:?}");
    for (granularity, events) in &by_granularity {
        assert_eq!(
            *events, stored,
            "{granularity} rollups match the stored events"
        );
    }
    let (month_calls,): (i64,) = store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM usage_months WHERE subject = 'cus_1'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        month_calls, stored,
        "the month totals match the stored events"
    );

    let sample = acked_bodies.iter().step_by((acked_bodies.len() / 5).max(1));
    for body in sample {
        let res = api()
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(&key)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let reply: Value = res.json().await.unwrap();
        assert_eq!(
            (reply["accepted"].as_u64(), reply["duplicates"].as_u64()),
            (Some(0), Some(BATCH as u64))
        );
    }
    eprintln!(
        "durability ({backend:?}): {} acknowledged events over {ROUNDS} kills, all present once",
        want.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    store.close().await;
    if let Some((name, _)) = pg {
        drop_postgres_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_nothing_acknowledged_sqlite() {
    kill9_loses_nothing_acknowledged(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_nothing_acknowledged_postgres() {
    kill9_loses_nothing_acknowledged(Backend::Postgres).await;
}

/// Outgoing webhooks survive a crash: with deliveries in flight to a slow receiver the server
/// is killed with SIGKILL and restarted; every queued message still reaches the receiver (at
/// least once — an attempt in flight at the kill may be made again once its lease lapses).
async fn kill9_loses_no_delivery(backend: Backend) {
    use opsdeck::simulators::webhook_receiver::{Behaviour, WebhookReceiver};
    let dir = tempfile::tempdir().unwrap();
    let mut pg = None;
    if backend == Backend::Postgres {
        let Some(admin) = postgres_url() else { return };
        pg = Some(fresh_postgres_database(&admin).await);
    }
    let db_url = pg.as_ref().map(|(_, url)| url.clone());
    let secret = opsdeck::webhooks::signing::Secret::generate().expose();
    let receiver = WebhookReceiver::start(&[secret.as_str()]).await.unwrap();
    receiver.set(Behaviour::ok().delay(Duration::from_millis(50)));
    // The endpoint and the messages go in through the store, as a producer's would.
    let mut config = opsdeck::config::Config::defaults();
    config.server.data_dir = dir.path().to_path_buf();
    if let Some(url) = &db_url {
        config.server.database_url = url.clone();
    }
    let app = opsdeck::app::App::build(config, None).await.unwrap();
    let store = app.state.store.clone();
    let spec: opsdeck::webhooks::endpoints::EndpointSpec =
        serde_json::from_value(json!({"name": "crash", "url": receiver.url(), "secret": secret}))
            .unwrap();
    opsdeck::webhooks::endpoints::create(
        &store,
        &app.state.master_key,
        &spec,
        &opsdeck::access::audit::Actor::new("test", None),
        opsdeck::store::now_ms(),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    let mut tx = store.begin().await.unwrap();
    for i in 0..400 {
        ids.push(
            opsdeck::webhooks::queue::enqueue(
                &mut tx,
                "crash.test",
                &json!({"i": i}),
                opsdeck::store::now_ms(),
            )
            .await
            .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    drop(app);

    let serve = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsdeck"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path());
        if let Some(url) = &db_url {
            cmd.args(["--database-url", url]);
        }
        let mut child = cmd
            .env("OPSDECK_ADMIN_PASSWORD", "irrelevant password")
            .env("OPSDECK_WEBHOOKS__ALLOW_PRIVATE", "[\"127.0.0.0/8\"]")
            .env("OPSDECK_WEBHOOKS__TIMEOUT", "1s")
            .env("OPSDECK_WEBHOOKS__CONCURRENCY", "8")
            .env_remove("OPSDECK_SERVER__DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        read_until(&mut out, "listening on");
        child
    };
    let mut child = serve();
    for _ in 0..200 {
        if receiver.received().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap(); // SIGKILL, with attempts in flight
    child.wait().unwrap();
    let before = receiver.received().len();
    assert!(before > 0 && before < ids.len(), "killed mid-way: {before}");
    let mut child = serve();
    let mut left = i64::MAX;
    for _ in 0..600 {
        let (n,): (i64,) = store
            .fetch_one(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state <> 'succeeded'",
                opsdeck::args![],
            )
            .await
            .unwrap();
        left = n;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if left != 0 {
        let rows: Vec<(String, Option<i64>, Option<i64>, i64)> = store
            .fetch_all(
                "SELECT state, lease_until, next_attempt_at, attempts FROM webhook_deliveries \
                 WHERE state <> 'succeeded'",
                opsdeck::args![],
            )
            .await
            .unwrap();
        eprintln!("now {} left {rows:?}", opsdeck::store::now_ms());
    }
    assert_eq!(left, 0, "every delivery completed after the restart");
    let lost: Vec<&String> = ids.iter().filter(|id| receiver.count(id) == 0).collect();
    assert!(lost.is_empty(), "{} messages never arrived", lost.len());
    assert!(receiver.received().iter().all(|r| r.verified));
    let again = receiver.received().len() - ids.len();
    eprintln!(
        "webhook durability ({backend:?}): {} messages, {before} before the kill, {again} sent twice",
        ids.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    store.close().await;
    if let Some((name, _)) = pg {
        drop_postgres_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_delivery_sqlite() {
    kill9_loses_no_delivery(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_delivery_postgres() {
    kill9_loses_no_delivery(Backend::Postgres).await;
}
