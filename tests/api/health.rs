//! Integration health against a real store: config monitors stored sealed, check results
//! recorded with their rollups and states, monitors removed from the config removed with
//! their history.

use opsdeck::health::checks::{CheckResult, Verdict};
use opsdeck::health::monitor::MonitorSpec;
use opsdeck::health::state::{State, Thresholds, Tracker};
use opsdeck::health::store::{self, Recorded};
use opsdeck::store::now_ms;

use crate::helpers::{Backend, spawn_app_with};

fn spec(name: &str, kind: &str, target: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        kind: kind.into(),
        target: target.into(),
        ..Default::default()
    }
}

async fn count(app: &crate::helpers::TestApp, sql: &'static str) -> i64 {
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one(sql, opsdeck::args![])
        .await
        .expect("count");
    n
}

async fn monitors_and_results(backend: Backend) {
    let mut api = spec(
        "api",
        "http",
        "https://api.example.com/health?token=tok_secret_1",
    );
    api.headers
        .insert("Authorization".into(), "Bearer hdr_secret_2".into());
    api.failure_threshold = Some(2);
    // A day apart: the server's scheduler, spreading first checks over the interval, stays
    // out of the results this test records itself.
    api.interval = Some("24h".into());
    let mut db = spec("db", "tcp", "127.0.0.1:5432");
    db.interval = Some("24h".into());
    let configured = vec![api.clone(), db.clone()];
    let Some(app) = spawn_app_with(backend, move |c| {
        c.monitors = configured;
        // The server's own retention job must not prune the 20-day-old result the test
        // prunes itself below.
        c.retention.check_results_days = 60;
    })
    .await
    else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let listed = store::list(store, key).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|m| m.monitor.name.as_str()).collect();
    assert_eq!(names, ["api", "db"]);
    assert_eq!(listed[0].spec, api, "the definition reads back whole");
    assert!(listed.iter().all(|m| m.source == "config" && !m.paused));
    // Sealed: neither the target's token nor the header's appears in the stored row.
    let rows: Vec<(Vec<u8>,)> = store
        .fetch_all("SELECT spec_sealed FROM monitors", opsdeck::args![])
        .await
        .expect("rows");
    for (sealed,) in rows {
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("tok_secret_1") && !text.contains("hdr_secret_2"));
    }

    // Three checks of "api" a minute apart (down, down, up) and one of "db".
    let (api_id, db_id) = (listed[0].id, listed[1].id);
    let limits = Thresholds {
        failures: 2,
        successes: 1,
    };
    let t0 = (now_ms() / 3_600_000) * 3_600_000 + 60_000;
    let mut tracker = Tracker::default();
    let mut batch = Vec::new();
    for (i, (verdict, latency_us)) in [
        (Verdict::Down, 40_000),
        (Verdict::Down, 60_000),
        (Verdict::Up, 120_000),
    ]
    .into_iter()
    .enumerate()
    {
        let at = t0 + i as i64 * 60_000;
        tracker.apply(verdict, limits, false, at);
        batch.push(Recorded {
            monitor_id: api_id,
            at,
            result: CheckResult {
                verdict,
                latency_us,
                status: Some(if verdict == Verdict::Up { 200 } else { 503 }),
                error: (verdict == Verdict::Down).then(|| "HTTP 503".to_string()),
                detail: None,
                headers: vec![("ratelimit-remaining".into(), "9".into())],
                readings: vec![],
            },
            tracker,
        });
    }
    let mut db_tracker = Tracker::default();
    db_tracker.apply(Verdict::Up, limits, false, t0);
    batch.push(Recorded {
        monitor_id: db_id,
        at: t0,
        result: CheckResult {
            verdict: Verdict::Up,
            latency_us: 800,
            status: None,
            error: None,
            detail: None,
            headers: vec![],
            readings: vec![],
        },
        tracker: db_tracker,
    });
    // Recorded in two batches: the rollups add up across them.
    store::record(store, &batch[..2]).await.expect("record");
    store::record(store, &batch[2..]).await.expect("record");

    assert_eq!(count(&app, "SELECT COUNT(*) FROM check_results").await, 4);
    let hour: (i64, i64, i64, i64, i64) = store
        .fetch_one(
            "SELECT checks, up, down, latency_sum_us, b9 FROM check_rollups \
             WHERE monitor_id = $1 AND granularity = 'hour'",
            opsdeck::args![api_id],
        )
        .await
        .expect("hour rollup");
    // 120 ms falls in the (100, 150] bucket, b9.
    assert_eq!(hour, (3, 1, 2, 220_000, 1));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM check_rollups WHERE granularity = 'minute'"
        )
        .await,
        4
    );
    let trackers = store::trackers(store).await.expect("trackers");
    // Down after two failures, up again with the success (threshold 1).
    assert_eq!(trackers[&api_id].state, State::Up);
    assert_eq!(trackers[&api_id].since, Some(t0 + 120_000));
    assert_eq!(trackers[&db_id].state, State::Up);
    let (error,): (Option<String>,) = store
        .fetch_one(
            "SELECT last_error FROM monitor_states WHERE monitor_id = $1",
            opsdeck::args![api_id],
        )
        .await
        .expect("state");
    assert_eq!(error, None, "the latest check's error, which passed");

    // Retention: results and minute rollups older than check_results_days go, hour and day
    // rollups follow rollup_days.
    let day = 86_400_000;
    let mut old = batch[0].clone();
    old.at = t0 - 20 * day;
    store::record(store, &[old]).await.expect("record old");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM check_results").await, 5);
    let deleted = store::prune(store, now_ms(), 14, 730).await.expect("prune");
    assert_eq!(deleted, 2, "one result and its minute rollup");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM check_results").await, 4);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM check_rollups WHERE granularity = 'day'"
        )
        .await,
        3,
        "its day rollup stays"
    );
    assert_eq!(
        store::prune(store, now_ms(), 14, 730).await.expect("prune"),
        0
    );
    let deleted = store::prune(store, now_ms(), 14, 10).await.expect("prune");
    assert_eq!(deleted, 2, "the hour and day rollups 20 days back");

    // "db" leaves the config: it goes, with its history; "api" stays as it was.
    store::sync_config(store, key, &[api]).await.expect("sync");
    let listed = store::list(store, key).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, api_id);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM check_results").await,
        3,
        "db's results are gone with it"
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM monitor_states").await, 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_and_results_sqlite() {
    monitors_and_results(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_and_results_postgres() {
    monitors_and_results(Backend::Postgres).await;
}

async fn state_of(app: &crate::helpers::TestApp, name: &str) -> Option<(String, i64)> {
    app.state
        .store
        .fetch_optional(
            "SELECT s.state, s.failures FROM monitor_states s JOIN monitors m ON m.id = s.monitor_id \
             WHERE m.name = $1",
            opsdeck::args![name],
        )
        .await
        .expect("state")
}

/// The running server checks each monitor on its interval and moves its state only once the
/// threshold is met.
async fn scheduled_checks_move_the_state(backend: Backend) {
    let (url, answer) = crate::helpers::switchable_peer().await;
    let mut web = spec("web", "http", &url);
    web.interval = Some("1s".into());
    web.failure_threshold = Some(2);
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![web]).await else {
        return;
    };
    let wait_for = |want: &'static str| {
        let app = &app;
        async move {
            for _ in 0..100 {
                if state_of(app, "web").await.is_some_and(|(s, _)| s == want) {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        wait_for("up").await,
        "first check passes: {:?}",
        state_of(&app, "web").await
    );
    answer.store(503, std::sync::atomic::Ordering::Relaxed);
    assert!(
        wait_for("down").await,
        "two failures: {:?}",
        state_of(&app, "web").await
    );
    let (_, failures) = state_of(&app, "web").await.unwrap_or_default();
    assert!(failures >= 2);
    let (error,): (Option<String>,) = app
        .state
        .store
        .fetch_one(
            "SELECT error FROM check_results ORDER BY at DESC LIMIT 1",
            opsdeck::args![],
        )
        .await
        .expect("result");
    assert_eq!(error.as_deref(), Some("HTTP 503"));
    answer.store(200, std::sync::atomic::Ordering::Relaxed);
    assert!(wait_for("up").await, "back up");
    let (timed, ..) = app.state.health.drift.take();
    assert!(
        timed >= 4,
        "every check's start lateness is measured: {timed}"
    );

    // The grid and one integration over HTTP, with a read key; nothing without one.
    let key = app.key("grid", &["read"]).await;
    let get = |path: String| {
        let key = key.clone();
        async move {
            let res = crate::helpers::api()
                .get(path)
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = res.status();
            (
                status,
                res.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let res = crate::helpers::api()
        .get(app.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    let (status, grid) = get(app.url("/api/v1/integrations")).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{grid}");
    let row = &grid["integrations"][0];
    assert_eq!(
        (row["name"].as_str(), row["kind"].as_str()),
        (Some("web"), Some("http"))
    );
    assert_eq!(row["source"], "config");
    assert_eq!(row["state"], "up");
    assert_eq!(row["interval_secs"], 1.0);
    let uptime = row["uptime"]["24h"].as_f64().expect("24 h uptime");
    assert!(uptime > 0.0 && uptime < 1.0, "some checks failed: {uptime}");
    assert_eq!(
        row["uptime"]["24h"], row["uptime"]["30d"],
        "one day of history"
    );
    assert!(row["latency_ms"]["p95"].as_f64().is_some(), "{row}");
    let id = row["id"].as_i64().expect("id");
    let (status, one) = get(app.url(&format!("/api/v1/integrations/{id}"))).await;
    assert_eq!(
        (status, &one["name"]),
        (reqwest::StatusCode::OK, &row["name"])
    );
    let (status, _) = get(app.url("/api/v1/integrations/999999")).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let (status, _) = get(app.url("/api/v1/integrations/abc")).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    let (status, results) =
        get(app.url(&format!("/api/v1/integrations/{id}/results?limit=3"))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{results}");
    let list = results["results"].as_array().expect("results");
    assert_eq!(list.len(), 3);
    assert!(
        list[0]["at"].as_str() > list[1]["at"].as_str(),
        "newest first"
    );
    // "Check now": admin only; recorded like a scheduled check, with the state after it.
    let check_url = app.url(&format!("/api/v1/integrations/{id}/check"));
    let res = crate::helpers::api()
        .post(&check_url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        reqwest::StatusCode::FORBIDDEN,
        "a read key cannot"
    );
    let admin = app.key("ops", &["admin"]).await;
    answer.store(500, std::sync::atomic::Ordering::Relaxed);
    let res = crate::helpers::api()
        .post(&check_url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let now: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (now["verdict"].as_str(), now["status"].as_u64()),
        (Some("down"), Some(500))
    );
    assert_eq!(now["error"], "HTTP 500");
    let (_, latest) = get(app.url(&format!("/api/v1/integrations/{id}/results?limit=1"))).await;
    assert_eq!(
        latest["results"][0]["status"], 500,
        "written before the reply: {latest}"
    );
    let res = crate::helpers::api()
        .post(app.url("/api/v1/integrations/424242/check"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::NOT_FOUND);
    for bad in ["limit=0", "limit=5000", "before=yesterday"] {
        let (status, body) =
            get(app.url(&format!("/api/v1/integrations/{id}/results?{bad}"))).await;
        assert_eq!(
            status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {body}"
        );
    }

    // The grid the scheduler keeps in memory says exactly what a fresh load from the store
    // (as after a restart) says. Paused first, so no check lands between the two reads.
    let actor = opsdeck::access::audit::Actor::new("test", None);
    store::set_paused(&app.state.store, id, true, &actor)
        .await
        .unwrap();
    app.state.health.reload().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let now = now_ms();
    let memory = app.state.health.rows(&app.state.store, None).await.unwrap();
    let loaded = opsdeck::health::grid::Grid::load(&app.state.store, now)
        .await
        .unwrap()
        .rows(now, None);
    let (memory, loaded) = (
        serde_json::to_value(&memory).unwrap(),
        serde_json::to_value(&loaded).unwrap(),
    );
    assert_eq!(memory, loaded);
    assert_eq!(memory[0]["state"], "paused");
    assert!(
        memory[0]["sparkline"]
            .as_array()
            .is_some_and(|points| points.iter().any(|p| p.as_f64().is_some())),
        "the last hours have a mean latency: {memory}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_checks_move_the_state_sqlite() {
    scheduled_checks_move_the_state(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_checks_move_the_state_postgres() {
    scheduled_checks_move_the_state(Backend::Postgres).await;
}

/// During a maintenance window checks run and are recorded, but the state does not move.
async fn maintenance_holds_the_state(backend: Backend) {
    let (url, answer) = crate::helpers::switchable_peer().await;
    answer.store(503, std::sync::atomic::Ordering::Relaxed);
    let mut web = spec("web", "http", &url);
    web.interval = Some("1s".into());
    let hour = 3_600_000;
    let iso = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    web.maintenance = vec![opsdeck::health::monitor::MaintenanceSpec {
        start: Some(iso(now_ms() - hour)),
        end: Some(iso(now_ms() + hour)),
        ..Default::default()
    }];
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![web]).await else {
        return;
    };
    let mut downs = 0;
    for _ in 0..60 {
        downs = count(
            &app,
            "SELECT COUNT(*) FROM check_results WHERE verdict = 'down'",
        )
        .await;
        if downs >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(downs >= 3, "failing checks are recorded: {downs}");
    let (state, failures) = state_of(&app, "web").await.expect("a state row");
    assert_eq!(
        (state.as_str(), failures),
        ("unknown", 0),
        "held by the window"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_holds_the_state_sqlite() {
    maintenance_holds_the_state(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_holds_the_state_postgres() {
    maintenance_holds_the_state(Backend::Postgres).await;
}

async fn wait_until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if ok().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn results_of(app: &crate::helpers::TestApp, id: i64) -> i64 {
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT COUNT(*) FROM check_results WHERE monitor_id = $1",
            opsdeck::args![id],
        )
        .await
        .expect("count");
    n
}

/// Monitors created, edited, paused, resumed and deleted over the JSON API: validated with the
/// field named, config ones read-only, credentials masked when read back and kept on edit,
/// the scheduler following every change, and nothing of a deleted monitor written after.
async fn monitors_through_the_api(backend: Backend) {
    use reqwest::{Method, StatusCode};
    use serde_json::json;
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let mut configured = spec("cfg", "tcp", "127.0.0.1:9");
    configured.interval = Some("24h".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![configured]).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let reader = app.key("viewer", &["read"]).await;
    let monitors = || count(&app, "SELECT COUNT(*) FROM monitors");
    let body = json!({
        "name": "web", "kind": "http", "target": url, "interval": "1s",
        "headers": {"Authorization": "Bearer sekrit-42", "Accept": "application/json"},
        "conditions": ["[STATUS] == 200"],
    });

    // Refused without changing anything: a read key, then bad definitions, each naming the
    // field at fault.
    let res = app
        .call(Method::POST, "/api/v1/integrations", &reader, Some(&body))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for (patch, field) in [
        (
            json!({"interval": "500ms"}),
            "interval: must be at least 1s",
        ),
        (json!({"kind": "gopher"}), "kind: unknown kind"),
        (json!({"target": "not a url"}), "target:"),
        (json!({"conditions": ["[STATUS] =="]}), "conditions[0]:"),
        (json!({"name": ""}), "name:"),
        (json!({"timeout": "5s", "interval": "2s"}), "timeout:"),
    ] {
        let mut bad = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let res = app
            .call(Method::POST, "/api/v1/integrations", &admin, Some(&bad))
            .await;
        let err =
            crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        let detail = err["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{patch}: {detail}");
    }
    let mut unknown_field = body.clone();
    unknown_field["intervall"] = json!("5s");
    let res = app
        .call(
            Method::POST,
            "/api/v1/integrations",
            &admin,
            Some(&unknown_field),
        )
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = crate::helpers::api()
        .post(app.url("/api/v1/integrations"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(monitors().await, 1, "nothing created by refused requests");

    // Created, then checked by the running scheduler without a restart.
    let res = app
        .call(Method::POST, "/api/v1/integrations", &admin, Some(&body))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.unwrap();
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["source"], "api");
    assert_eq!(
        created["interval_secs"], 1.0,
        "scheduled at once: {created}"
    );
    let path = format!("/api/v1/integrations/{id}");
    let state = |key: String| {
        let app = &app;
        let path = path.clone();
        async move {
            let res = app.call(Method::GET, &path, &key, None).await;
            let v: serde_json::Value = res.json().await.unwrap();
            v["state"].as_str().unwrap_or_default().to_string()
        }
    };
    wait_until("the new monitor is up", || async {
        state(reader.clone()).await == "up"
    })
    .await;
    let res = app
        .call(Method::POST, "/api/v1/integrations", &admin, Some(&body))
        .await;
    crate::helpers::error_body(res, StatusCode::CONFLICT, "conflict").await;
    let mut clash = body.clone();
    clash["name"] = json!("cfg");
    let res = app
        .call(Method::POST, "/api/v1/integrations", &admin, Some(&clash))
        .await;
    crate::helpers::error_body(res, StatusCode::CONFLICT, "conflict").await;

    // Read back masked; sent back masked with one real change, the stored credential stays.
    let res = app
        .call(Method::GET, &format!("{path}/definition"), &reader, None)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "definitions are for admins"
    );
    let res = app
        .call(Method::GET, &format!("{path}/definition"), &admin, None)
        .await;
    let shown: serde_json::Value = res.json().await.unwrap();
    let text = shown.to_string();
    assert!(!text.contains("sekrit-42"), "{text}");
    assert_eq!(shown["definition"]["headers"]["Accept"], "application/json");
    let mut edited = shown["definition"].clone();
    edited["failure_threshold"] = json!(3);
    let res = app.call(Method::PUT, &path, &admin, Some(&edited)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let stored = store::get(&app.state.store, &app.state.master_key, id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.spec.failure_threshold, Some(3));
    assert_eq!(stored.spec.headers["Authorization"], "Bearer sekrit-42");
    // An invalid edit changes nothing.
    edited["interval"] = json!("0s");
    let res = app.call(Method::PUT, &path, &admin, Some(&edited)).await;
    crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let again = store::get(&app.state.store, &app.state.master_key, id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(again.spec, stored.spec);

    // The config monitor is read-only, but may be paused.
    let listed: serde_json::Value = app
        .call(Method::GET, "/api/v1/integrations", &reader, None)
        .await
        .json()
        .await
        .unwrap();
    let cfg_id = listed["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "cfg")
        .and_then(|i| i["id"].as_i64())
        .expect("cfg listed");
    let cfg_path = format!("/api/v1/integrations/{cfg_id}");
    let res = app.call(Method::PUT, &cfg_path, &admin, Some(&body)).await;
    crate::helpers::error_body(res, StatusCode::CONFLICT, "conflict").await;
    let res = app.call(Method::DELETE, &cfg_path, &admin, None).await;
    crate::helpers::error_body(res, StatusCode::CONFLICT, "conflict").await;
    let res = app
        .call(Method::POST, &format!("{cfg_path}/pause"), &admin, None)
        .await;
    let paused: serde_json::Value = res.json().await.unwrap();
    assert_eq!(paused["state"], "paused");

    // Paused: no more checks (one already in flight may land); resumed: checks again.
    let res = app
        .call(Method::POST, &format!("{path}/pause"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = results_of(&app, id).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        results_of(&app, id).await,
        before,
        "a paused monitor is not checked"
    );
    let res = app
        .call(Method::POST, &format!("{path}/resume"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    wait_until("the resumed monitor is checked", || async {
        results_of(&app, id).await > before
    })
    .await;

    // Deleted with its history, and nothing written for it after.
    let res = app.call(Method::DELETE, &path, &admin, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.call(Method::GET, &path, &reader, None).await;
    crate::helpers::error_body(res, StatusCode::NOT_FOUND, "not_found").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(results_of(&app, id).await, 0);
    let (left,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT (SELECT COUNT(*) FROM check_rollups WHERE monitor_id = $1) \
             + (SELECT COUNT(*) FROM monitor_states WHERE monitor_id = $1)",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    assert_eq!(left, 0);
    for method in [Method::DELETE, Method::PUT] {
        let res = app.call(method, &path, &admin, Some(&body)).await;
        crate::helpers::error_body(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let actions = app.audit_actions().await;
    for action in [
        "monitor.create",
        "monitor.update",
        "monitor.pause",
        "monitor.resume",
        "monitor.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_through_the_api_sqlite() {
    monitors_through_the_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_through_the_api_postgres() {
    monitors_through_the_api(Backend::Postgres).await;
}

/// A provider monitor run by the server against a fake speaking the provider's API: its
/// readings are stored and shown as a quota gauge in the grid, and the readings route
/// forecasts when the quota runs out from the stored history.
async fn provider_readings_and_forecast(backend: Backend) {
    use opsdeck::health::monitor::Secret;
    use opsdeck::simulators::providers::FakeProviders;
    let fake = FakeProviders::new("xi_key_123", "unused");
    let (base, _server) = fake.start().await.expect("fake starts");
    let mut eleven = spec("voices", "elevenlabs", &base);
    eleven.interval = Some("1s".into());
    eleven.key = Some(Secret("xi_key_123".into()));
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![eleven]).await else {
        return;
    };
    let key = app.key("viewer", &["read"]).await;
    let grid = || async {
        let v: serde_json::Value = app
            .call(reqwest::Method::GET, "/api/v1/integrations", &key, None)
            .await
            .json()
            .await
            .unwrap();
        v["integrations"][0].clone()
    };
    let mut row = serde_json::Value::Null;
    for _ in 0..100 {
        row = grid().await;
        if !row["quota"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(row["state"], "up", "{row}");
    assert_eq!(row["quota"]["name"], "characters", "{row}");
    assert_eq!(row["quota"]["used_percent"], 61.0, "{row}");
    let id = row["id"].as_i64().unwrap();
    // Spending shows at the next check.
    fake.figures(|f| f.elevenlabs_used = 90_000);
    for _ in 0..50 {
        row = grid().await;
        if row["quota"]["used_percent"] == 90.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(row["quota"]["used_percent"], 90.0, "{row}");
    let (stored,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT COUNT(*) FROM provider_readings WHERE monitor_id = $1 \
             AND name = 'characters_used'",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    assert!(stored >= 2, "{stored}");
    // The key never reaches a stored result.
    let (leaks,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT COUNT(*) FROM check_results WHERE headers LIKE '%xi_key_123%' \
             OR error LIKE '%xi_key_123%'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(leaks, 0);

    // Three days of history, 10,000 characters a day on a 100,000 allowance, recorded like
    // checks: 30,000 used at the last, so 7 days left.
    let day = 86_400_000;
    let t0 = now_ms() - 4 * day;
    let history: Vec<Recorded> = (0..=3)
        .map(|i| Recorded {
            monitor_id: id,
            at: t0 + i * day,
            result: CheckResult {
                verdict: Verdict::Up,
                latency_us: 1_000,
                status: Some(200),
                error: None,
                detail: None,
                headers: vec![],
                readings: vec![
                    ("characters_used".into(), 10_000.0 * i as f64),
                    ("characters_limit".into(), 100_000.0),
                ],
            },
            tracker: Tracker {
                state: State::Up,
                since: Some(t0),
                failures: 0,
                successes: 1,
            },
        })
        .collect();
    let actor = opsdeck::access::audit::Actor::new("test", None);
    store::set_paused(&app.state.store, id, true, &actor)
        .await
        .unwrap();
    app.state.health.reload().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Only the synthetic history below: the live readings are from today.
    app.state
        .store
        .execute(
            "DELETE FROM provider_readings WHERE monitor_id = $1",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    store::record(&app.state.store, &history).await.unwrap();
    let res = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/integrations/{id}/readings?days=7"),
            &key,
            None,
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let readings: serde_json::Value = res.json().await.unwrap();
    let quota = &readings["quotas"][0];
    assert_eq!(quota["name"], "characters", "{readings}");
    assert_eq!(quota["remaining"], 70_000.0, "{readings}");
    assert_eq!(quota["used_percent"], 30.0);
    let per_day = quota["per_day"].as_f64().expect("a rate");
    assert!((per_day - 10_000.0).abs() < 1e-6, "{per_day}");
    let expected =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t0 + 10 * day) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(
        quota["runs_out"].as_str().map(|t| &t[..16]),
        Some(&expected[..16]),
        "{readings}"
    );
    let names: Vec<&str> = readings["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["characters_limit", "characters_used"]);

    // A figure read every five minutes for a week comes back as the last reading of each of
    // at most 720 slices of the window, picked by the database.
    let now = now_ms();
    let every: Vec<(i64, f64)> = (0..2016)
        .map(|i| (now - 7 * day + 60_000 + i * 300_000, i as f64))
        .collect();
    let values = every
        .iter()
        .map(|(at, v)| format!("({id}, 'requests_left', {at}, {v})"))
        .collect::<Vec<_>>()
        .join(",");
    app.state
        .store
        .execute_assembled(
            format!("INSERT INTO provider_readings (monitor_id, name, at, value) VALUES {values}"),
            opsdeck::args![],
        )
        .await
        .unwrap();
    let res = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/integrations/{id}/readings?days=7"),
            &key,
            None,
        )
        .await;
    let readings: serde_json::Value = res.json().await.unwrap();
    let series = readings["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "requests_left")
        .expect("the series");
    let slice = 7 * day / opsdeck::health::forecast::MAX_POINTS;
    let mut expected: std::collections::BTreeMap<i64, f64> = Default::default();
    let from = ((now - 7 * day) / slice + 1) * slice;
    for (at, v) in every.iter().filter(|(at, _)| *at >= from) {
        expected.insert(at / slice, *v);
    }
    let got: Vec<f64> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert!(got.len() <= 720 && got.len() >= 715, "{}", got.len());
    assert_eq!(got, expected.into_values().collect::<Vec<_>>());
    for bad in ["days=0", "days=31", "days=x"] {
        let res = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/integrations/{id}/readings?{bad}"),
                &key,
                None,
            )
            .await;
        assert!(res.status().is_client_error(), "{bad}: {}", res.status());
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_readings_and_forecast_sqlite() {
    provider_readings_and_forecast(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_readings_and_forecast_postgres() {
    provider_readings_and_forecast(Backend::Postgres).await;
}

/// A batch holding two checks of one monitor in the same millisecond, and a reading named
/// twice in one check, is written whole on both databases (PostgreSQL refuses an upsert that
/// meets one key twice): the later of each is kept.
async fn duplicate_keys_in_a_batch(backend: Backend) {
    let mut tcp = spec("db", "tcp", "127.0.0.1:9");
    tcp.interval = Some("24h".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![tcp]).await else {
        return;
    };
    let store = &app.state.store;
    let id = store::list(store, &app.state.master_key).await.unwrap()[0].id;
    let at = now_ms() - 5_000;
    let check = |latency_us: i64, credits: &[f64]| Recorded {
        monitor_id: id,
        at,
        result: CheckResult {
            verdict: Verdict::Up,
            latency_us,
            status: None,
            error: None,
            detail: None,
            headers: vec![],
            readings: credits
                .iter()
                .map(|c| ("credits".to_string(), *c))
                .collect(),
        },
        tracker: Tracker::default(),
    };
    store::record(
        store,
        &[check(1_000, &[5.0, 6.0]), check(2_000, &[7.0, 8.0])],
    )
    .await
    .expect("the batch is written");
    let (latency,): (i64,) = store
        .fetch_one(
            "SELECT latency_us FROM check_results WHERE monitor_id = $1",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    assert_eq!(latency, 2_000, "the later check is kept");
    let (value,): (f64,) = store
        .fetch_one(
            "SELECT value FROM provider_readings WHERE monitor_id = $1 AND name = 'credits'",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    assert_eq!(value, 8.0, "the last reading of the later check is kept");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_in_a_batch_sqlite() {
    duplicate_keys_in_a_batch(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_in_a_batch_postgres() {
    duplicate_keys_in_a_batch(Backend::Postgres).await;
}

/// Monitors changed through another instance (which writes the store and has no scheduler to
/// tell) are picked up by the running scheduler on its next poll, and a monitor deleted there
/// stops being checked here without losing other monitors' results.
async fn changes_made_elsewhere_reach_the_scheduler(backend: Backend) {
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let mut steady = spec("steady", "http", &url);
    steady.interval = Some("1s".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![steady]).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let actor = opsdeck::access::audit::Actor::new("other-instance", None);
    let mut web = spec("elsewhere", "http", &url);
    web.interval = Some("1s".into());
    let id = store::create(store, key, &web, &actor).await.unwrap();
    wait_until(
        "the scheduler checks a monitor created elsewhere",
        || async { results_of(&app, id).await > 0 },
    )
    .await;
    store::delete(store, id, &actor).await.unwrap();
    store::purge_deleted(store).await.unwrap();
    // Within a poll (5 s) it is dropped; until then its results are set aside, not the batch.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let steady_id = store::list(store, key)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.monitor.name == "steady")
        .map(|m| m.id)
        .unwrap();
    let before = results_of(&app, steady_id).await;
    assert_eq!(
        results_of(&app, id).await,
        0,
        "nothing of the deleted monitor is kept"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        results_of(&app, id).await,
        0,
        "and nothing is written after"
    );
    wait_until("the other monitor's results keep landing", || async {
        results_of(&app, steady_id).await > before
    })
    .await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_elsewhere_reach_the_scheduler_sqlite() {
    changes_made_elsewhere_reach_the_scheduler(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_elsewhere_reach_the_scheduler_postgres() {
    changes_made_elsewhere_reach_the_scheduler(Backend::Postgres).await;
}

/// With every check slot held by slow checks, a change through the API still answers at
/// once: the scheduler serves reloads while it waits for a free slot.
async fn changes_do_not_wait_for_busy_slots(backend: Backend) {
    use opsdeck::health::monitor::Secret;
    use opsdeck::health::providers::Provider;
    use opsdeck::simulators::providers::{Behaviour, FakeProviders};
    let fake = FakeProviders::new("k", "a");
    fake.set(Provider::Luma, Behaviour::Slow(2_900));
    let (base, _server) = fake.start().await.expect("fake starts");
    let slow = |name: &str| {
        let mut m = spec(name, "luma", &base);
        m.interval = Some("3s".into());
        m.timeout = Some("3s".into());
        m.key = Some(Secret("k".into()));
        m
    };
    let monitors = vec![slow("slow-1"), slow("slow-2"), slow("slow-3")];
    let Some(app) = spawn_app_with(backend, move |c| {
        c.monitors = monitors;
        c.health.concurrency = 1;
    })
    .await
    else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    // Let the slow checks take the only slot.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let body = serde_json::json!({"name": "new", "kind": "http", "target": url, "interval": "60s"});
    let started = std::time::Instant::now();
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/integrations",
            &admin,
            Some(&body),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let row: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        row["interval_secs"], 60.0,
        "scheduled when the answer came: {row}"
    );
    assert!(
        took < std::time::Duration::from_millis(1500),
        "answered in {took:?} while slow checks held every slot"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_do_not_wait_for_busy_slots_sqlite() {
    changes_do_not_wait_for_busy_slots(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_do_not_wait_for_busy_slots_postgres() {
    changes_do_not_wait_for_busy_slots(Backend::Postgres).await;
}

/// An instance without the scheduler (a standby) reads the grid from the store: one
/// integration's row alone, the whole grid through a copy it keeps a few seconds, which a
/// change made through it drops at once. Both agree with the leader's grid in memory.
async fn a_standby_reads_the_grid_from_the_store(backend: Backend) {
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let mut a = spec("alpha", "http", &url);
    a.interval = Some("1s".into());
    let mut b = spec("beta", "http", &url);
    b.interval = Some("1s".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![a, b]).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let ids: Vec<i64> = store::list(store, key)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    for id in ids.clone() {
        wait_until("both monitors are checked", || async {
            results_of(&app, id).await > 0
        })
        .await;
    }
    // Stop the leader's checks from moving on while the two views are compared.
    let actor = opsdeck::access::audit::Actor::new("test", None);
    for id in &ids {
        store::set_paused(store, *id, true, &actor).await.unwrap();
    }
    app.state.health.reload().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let standby = opsdeck::health::scheduler::Health::default();
    let pick = |rows: Vec<opsdeck::health::grid::Integration>| {
        rows.into_iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap();
                // Only the leader knows the intervals (from the definitions).
                v.as_object_mut().unwrap().remove("interval_secs");
                v
            })
            .collect::<Vec<_>>()
    };
    for id in &ids {
        let one = pick(standby.rows(store, Some(*id)).await.unwrap());
        let leader = pick(app.state.health.rows(store, Some(*id)).await.unwrap());
        assert_eq!(one.len(), 1);
        assert_eq!(one, leader, "monitor {id}");
    }
    let all = pick(standby.rows(store, None).await.unwrap());
    assert_eq!(all, pick(app.state.health.rows(store, None).await.unwrap()));
    let json: serde_json::Value =
        serde_json::from_slice(&standby.grid_json(store).await.unwrap()).unwrap();
    assert_eq!(json["integrations"].as_array().unwrap().len(), 2);

    // A monitor created elsewhere shows once the copy is old; one created through the standby
    // shows at once.
    let gamma = store::create(store, key, &spec("gamma", "http", &url), &actor)
        .await
        .unwrap();
    assert_eq!(
        standby.rows(store, None).await.unwrap().len(),
        2,
        "the copy is reused"
    );
    assert_eq!(standby.rows(store, Some(gamma)).await.unwrap().len(), 1);
    standby.reload().await;
    assert_eq!(standby.rows(store, None).await.unwrap().len(), 3);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_the_grid_from_the_store_sqlite() {
    a_standby_reads_the_grid_from_the_store(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_the_grid_from_the_store_postgres() {
    a_standby_reads_the_grid_from_the_store(Backend::Postgres).await;
}

/// A stored monitor whose definition cannot be opened (sealed with another key, or damaged)
/// is no longer checked but stays on the grid with the reason, and can still be deleted.
async fn an_unreadable_monitor_stays_listed(backend: Backend) {
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let actor = opsdeck::access::audit::Actor::new("test", None);
    let mut m = spec("sealed", "http", &url);
    m.interval = Some("1s".into());
    let id = store::create(store, key, &m, &actor).await.unwrap();
    app.state.health.reload().await;
    wait_until("the monitor is checked", || async {
        results_of(&app, id).await > 0
    })
    .await;
    store
        .execute(
            "UPDATE monitors SET spec_sealed = $1, updated_at = updated_at + 1 WHERE id = $2",
            opsdeck::args![vec![7u8; 48], id],
        )
        .await
        .unwrap();
    app.state.health.reload().await;
    let rows = app.state.health.rows(store, Some(id)).await.unwrap();
    assert_eq!(rows.len(), 1, "still listed");
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("cannot be read"), "{error}");
    // Let a check already in flight land, then nothing more comes.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let checked = results_of(&app, id).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(results_of(&app, id).await, checked, "no longer checked");

    let admin = app.key("admin", &["admin"]).await;
    let res = crate::helpers::api()
        .delete(app.url(&format!("/api/v1/integrations/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(
        app.state
            .health
            .rows(store, Some(id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(results_of(&app, id).await, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_monitor_stays_listed_sqlite() {
    an_unreadable_monitor_stays_listed(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_monitor_stays_listed_postgres() {
    an_unreadable_monitor_stays_listed(Backend::Postgres).await;
}

/// Deleting a monitor removes it at once and leaves its history to a purge that goes in
/// chunks; a purge cut short (here: never started, as after a crash) is finished later and
/// touches no other monitor's rows.
async fn deleted_monitors_history_is_purged_in_chunks(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let actor = opsdeck::access::audit::Actor::new("test", None);
    let mut ids = Vec::new();
    for name in ["gone", "kept"] {
        let mut m = spec(name, "tcp", "127.0.0.1:9");
        m.interval = Some("1h".into());
        let id = store::create(store, key, &m, &actor).await.unwrap();
        // Paused at once, so the running scheduler adds no result of its own to the counts.
        store::set_paused(store, id, true, &actor).await.unwrap();
        // 12,000 results and a rollup each, written as a long history would be.
        for chunk in 0..12 {
            let values = (0..1000)
                .map(|i| format!("({id}, {}, 'up', 1000)", (chunk * 1000 + i) * 10_000))
                .collect::<Vec<_>>()
                .join(",");
            store
                .execute_assembled(
                    format!(
                        "INSERT INTO check_results (monitor_id, at, verdict, latency_us) \
                         VALUES {values}"
                    ),
                    opsdeck::args![],
                )
                .await
                .unwrap();
        }
        store
            .execute(
                "INSERT INTO check_rollups (monitor_id, granularity, bucket, checks, up, \
                 degraded, down, latency_sum_us) VALUES ($1, 'hour', 0, 1, 1, 0, 0, 1000)",
                opsdeck::args![id],
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let rows = |sql: &'static str, id: i64| async move {
        let (n,): (i64,) = store.fetch_one(sql, opsdeck::args![id]).await.unwrap();
        n
    };
    store::delete(store, ids[0], &actor).await.unwrap();
    assert!(store::get(store, key, ids[0]).await.unwrap().is_none());
    assert_eq!(
        rows(
            "SELECT COUNT(*) FROM check_results WHERE monitor_id = $1",
            ids[0]
        )
        .await,
        12_000,
        "the history waits for the purge"
    );
    assert_eq!(
        rows(
            "SELECT COUNT(*) FROM monitor_purges WHERE monitor_id = $1",
            ids[0]
        )
        .await,
        1
    );
    let removed = store::purge_deleted(store).await.unwrap();
    assert_eq!(
        removed,
        12_000 + 1 + 1,
        "results, the rollup and the purge's own row"
    );
    for (sql, left) in [
        (
            "SELECT COUNT(*) FROM check_results WHERE monitor_id = $1",
            0,
        ),
        (
            "SELECT COUNT(*) FROM check_rollups WHERE monitor_id = $1",
            0,
        ),
        (
            "SELECT COUNT(*) FROM monitor_purges WHERE monitor_id = $1",
            0,
        ),
    ] {
        assert_eq!(rows(sql, ids[0]).await, left, "{sql}");
    }
    assert_eq!(
        rows(
            "SELECT COUNT(*) FROM check_results WHERE monitor_id = $1",
            ids[1]
        )
        .await,
        12_000,
        "the other monitor's history is untouched"
    );
    assert_eq!(
        store::purge_deleted(store).await.unwrap(),
        0,
        "nothing left to do"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_monitors_history_is_purged_in_chunks_sqlite() {
    deleted_monitors_history_is_purged_in_chunks(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_monitors_history_is_purged_in_chunks_postgres() {
    deleted_monitors_history_is_purged_in_chunks(Backend::Postgres).await;
}

/// Minute, hour and day rollups over the API agree with the raw results they summarise, and
/// bad parameters are refused naming the parameter.
async fn rollups_over_the_api(backend: Backend) {
    let (url, _answer) = crate::helpers::switchable_peer().await;
    let mut m = spec("rolled", "http", &url);
    m.interval = Some("1s".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![m]).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let id = store::list(store, key).await.unwrap()[0].id;
    wait_until("a few checks", || async { results_of(&app, id).await >= 3 }).await;
    let actor = opsdeck::access::audit::Actor::new("test", None);
    store::set_paused(store, id, true, &actor).await.unwrap();
    app.state.health.reload().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let raw = results_of(&app, id).await;
    let read_key = app.key("reader", &["read"]).await;
    for (granularity, span) in [("minute", 1), ("hour", 1), ("day", 30)] {
        let res = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/integrations/{id}/rollups?granularity={granularity}&span={span}"),
                &read_key,
                None,
            )
            .await;
        assert_eq!(res.status(), reqwest::StatusCode::OK, "{granularity}");
        let body: serde_json::Value = res.json().await.unwrap();
        let points = body["points"].as_array().unwrap();
        let checks: i64 = points.iter().map(|p| p["checks"].as_i64().unwrap()).sum();
        assert_eq!(checks, raw, "{granularity}: {body}");
        assert!(points.iter().all(|p| p["uptime"] == 1.0), "{body}");
        assert!(points[0]["latency_ms"]["p95"].as_f64().is_some(), "{body}");
    }
    for bad in [
        "granularity=second",
        "granularity=minute&span=25",
        "span=0",
        "span=x",
    ] {
        let res = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/integrations/{id}/rollups?{bad}"),
                &read_key,
                None,
            )
            .await;
        assert!(res.status().is_client_error(), "{bad}: {}", res.status());
    }
    let res = app
        .call(
            reqwest::Method::GET,
            "/api/v1/integrations/99999/rollups",
            &read_key,
            None,
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_over_the_api_sqlite() {
    rollups_over_the_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_over_the_api_postgres() {
    rollups_over_the_api(Backend::Postgres).await;
}

/// The global limit holds however many checks are due: six slow monitors every second with
/// `[health] concurrency = 2` never have more than two requests in flight. A monitor whose
/// `degraded_when` holds is degraded through the scheduler, not down.
async fn concurrency_is_bounded_and_degraded_is_a_state(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (now, most) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (n, m) = (now.clone(), most.clone());
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let (n, m) = (n.clone(), m.clone());
            async move {
                let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(inside, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let monitors: Vec<MonitorSpec> = (0..6)
        .map(|i| {
            let mut m = spec(&format!("slow-{i}"), "http", &url);
            m.interval = Some("1s".into());
            if i == 0 {
                m.degraded_when = vec!["[RESPONSE_TIME] > 100".into()];
            }
            m
        })
        .collect();
    let Some(app) = spawn_app_with(backend, move |c| {
        c.monitors = monitors;
        c.health.concurrency = 2;
    })
    .await
    else {
        return;
    };
    wait_until("the slow monitor is degraded", || async {
        state_of(&app, "slow-0").await.map(|(s, _)| s) == Some("degraded".into())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than the limit, and it is used"
    );
    assert_eq!(
        state_of(&app, "slow-1").await.map(|(s, _)| s),
        Some("up".into())
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_and_degraded_is_a_state_sqlite() {
    concurrency_is_bounded_and_degraded_is_a_state(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_and_degraded_is_a_state_postgres() {
    concurrency_is_bounded_and_degraded_is_a_state(Backend::Postgres).await;
}

/// A peer that answers garbage or never finishes fails its own check with a clear error; the
/// monitor beside it keeps its cadence.
async fn a_misbehaving_peer_fails_alone(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Slowloris: once the request is in, headers, then a byte of body every 200 ms, forever
    // (until the client leaves). It answers only after reading the request head, as any HTTP
    // server does. Writing on accept raced the client: a fresh connection that read those
    // bytes before its request went out was closed by the client as unexpected data, and the
    // check failed with "connection was not ready" or "unexpected message" instead of the
    // timeout, depending on scheduling (on a loaded machine, now and then).
    let drip = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let drip_url = format!("http://{}/", drip.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = drip.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 100000\r\n\r\n{";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if sock.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (healthy_url, _answer) = crate::helpers::switchable_peer().await;
    let mut slow = spec("drip", "http", &drip_url);
    slow.interval = Some("1s".into());
    slow.timeout = Some("1s".into());
    let mut fine = spec("fine", "http", &healthy_url);
    fine.interval = Some("1s".into());
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![slow, fine]).await else {
        return;
    };
    let (store, key) = (&app.state.store, &app.state.master_key);
    let ids: std::collections::HashMap<String, i64> = store::list(store, key)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.monitor.name, m.id))
        .collect();
    wait_until("the dripping peer is down", || async {
        state_of(&app, "drip").await.map(|(s, _)| s) == Some("down".into())
    })
    .await;
    let before = results_of(&app, ids["fine"]).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let after = results_of(&app, ids["fine"]).await;
    assert!(
        after - before >= 3,
        "the healthy monitor kept its cadence: {before} → {after}"
    );
    let (error,): (Option<String>,) = store
        .fetch_one(
            "SELECT last_error FROM monitor_states WHERE monitor_id = $1",
            opsdeck::args![ids["drip"]],
        )
        .await
        .unwrap();
    // Cut off by the timeout, every time: each check opens a fresh connection (a timed-out
    // one is never reused) and the peer answers only after reading its request.
    let error = error.unwrap_or_default();
    assert!(error.contains("timed out after 1s"), "{error}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_peer_fails_alone_sqlite() {
    a_misbehaving_peer_fails_alone(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_peer_fails_alone_postgres() {
    a_misbehaving_peer_fails_alone(Backend::Postgres).await;
}
