//! Outgoing webhooks against a real store: messages and their deliveries stored together,
//! deliveries claimed under leases that concurrent claimers never share, outcomes recorded only
//! by the lease's holder.

use std::collections::HashSet;

use opsdeck::webhooks::queue::{self, Next, Outcome};

use crate::helpers::{Backend, spawn_app_with};

async fn endpoint(app: &crate::helpers::TestApp, name: &str, types: &str) -> i64 {
    let (id,): (i64,) = app
        .state
        .store
        .fetch_one(
            "INSERT INTO webhook_endpoints (name, url, secret_nonce, secret_sealed, event_types, \
             created_at, updated_at) VALUES ($1, 'http://127.0.0.1:9/', $2, $2, $3, 0, 0) \
             RETURNING id",
            opsdeck::args![name, vec![0u8; 12], types],
        )
        .await
        .unwrap();
    id
}

async fn queue_claims_and_leases(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let store = &app.state.store;
    let alerts = endpoint(&app, "alerts", r#"["alert.*"]"#).await;
    let all = endpoint(&app, "all", r#"["*"]"#).await;
    // Far in the future, so the running server's own worker (claiming at the real time)
    // never finds these due and the test alone claims them.
    let now = 32_503_680_000_000;
    let mut tx = store.begin().await.unwrap();
    let firing = queue::enqueue(
        &mut tx,
        "alert.firing",
        &serde_json::json!({"rule": "x"}),
        now,
    )
    .await
    .unwrap();
    let paid = queue::enqueue(&mut tx, "payment.failed", &serde_json::json!({}), now)
        .await
        .unwrap();
    assert!(
        queue::enqueue(&mut tx, "Bad Type", &serde_json::json!({}), now)
            .await
            .is_err()
    );
    tx.commit().await.unwrap();
    let rows: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT message_id, endpoint_id FROM webhook_deliveries ORDER BY message_id, endpoint_id",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let mut expected = vec![
        (firing.clone(), alerts),
        (firing.clone(), all),
        (paid.clone(), all),
    ];
    expected.sort();
    assert_eq!(rows, expected, "one delivery per subscribed endpoint");

    // A claims all three; B, at the same moment, gets none; once A's lease lapses, B does.
    assert_eq!(
        queue::claim(store, "limit", now - 1, 30_000, 100)
            .await
            .unwrap()
            .len(),
        0,
        "not due before their time"
    );
    let a = queue::claim(store, "a", now, 30_000, 2).await.unwrap();
    assert_eq!(a.len(), 2, "a claim takes no more than its limit");
    let a2 = queue::claim(store, "a", now, 30_000, 100).await.unwrap();
    assert_eq!(a2.len(), 1);
    let a: Vec<queue::Claimed> = a.into_iter().chain(a2).collect();
    assert_eq!(a.len(), 3);
    assert!(
        queue::claim(store, "b", now + 1, 30_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let b = queue::claim(store, "b", now + 30_001, 30_000, 100)
        .await
        .unwrap();
    assert_eq!(b.len(), 3, "a lapsed lease is taken over");
    // While its attempts are in flight the holder extends its lease; the one it lapsed for
    // extends nothing.
    assert_eq!(queue::extend(store, "a", now + 90_000).await.unwrap(), 0);
    assert_eq!(queue::extend(store, "b", now + 90_000).await.unwrap(), 3);
    assert!(
        queue::claim(store, "c", now + 60_002, 30_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "an extended lease is not taken over"
    );
    // A's late outcome changes nothing; B's counts.
    let outcome = |owner_holds: &queue::Claimed, next| Outcome {
        delivery_id: owner_holds.id,
        endpoint_id: owner_holds.endpoint_id,
        attempted: true,
        attempt: owner_holds.attempts + 1,
        at: now + 31_000,
        status: Some(200),
        latency_us: 900,
        response: Some("ok".into()),
        error: None,
        next,
        disable: None,
    };
    let late: Vec<Outcome> = a.iter().map(|c| outcome(c, Next::Succeeded)).collect();
    queue::record(store, "a", &late, 0).await.unwrap();
    let (pending,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        pending, 3,
        "only the lease's holder records a delivery's state"
    );
    let retry: Vec<Outcome> = b
        .iter()
        .map(|c| outcome(c, Next::RetryAt(now + 40_000)))
        .collect();
    queue::record(store, "b", &retry, 0).await.unwrap();
    assert!(
        queue::claim(store, "c", now + 39_999, 30_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let c = queue::claim(store, "c", now + 40_000, 30_000, 100)
        .await
        .unwrap();
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|d| d.attempts == 1), "{c:?}");

    // Many due deliveries, four claimers at once: every delivery claimed exactly once.
    let mut tx = store.begin().await.unwrap();
    for i in 0..300 {
        queue::enqueue(&mut tx, "alert.firing", &serde_json::json!({"i": i}), now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = queue::claim(&store, &format!("w{w}"), now + 50_000, 30_000, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "delivery {id} claimed twice");
        }
    }
    assert_eq!(total, 600, "two endpoints take alert.firing");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_claims_and_leases_sqlite() {
    queue_claims_and_leases(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_claims_and_leases_postgres() {
    queue_claims_and_leases(Backend::Postgres).await;
}

use opsdeck::simulators::webhook_receiver::{Behaviour, ResponseBody, WebhookReceiver};
use opsdeck::webhooks::endpoints;

async fn wait_for<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if ok().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn delivery(app: &crate::helpers::TestApp, msg: &str) -> (String, i64, Option<i64>) {
    app.state
        .store
        .fetch_one(
            "SELECT state, attempts, last_status FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![msg],
        )
        .await
        .unwrap()
}

async fn send(app: &crate::helpers::TestApp, kind: &str) -> String {
    let mut tx = app.state.store.begin().await.unwrap();
    let id = queue::enqueue(
        &mut tx,
        kind,
        &serde_json::json!({"hello": "world"}),
        opsdeck::store::now_ms(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// The running server's worker delivers each message signed per Standard Webhooks to a local
/// receiver that verifies the signature from the spec; failures are retried on the schedule
/// and then given up; 410 disables the endpoint; redirects, huge and endless answers and
/// refused addresses fail cleanly.
async fn deliveries_reach_a_verifying_receiver(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.webhooks.allow_private = vec!["127.0.0.0/8".into(), "::1/128".into()];
        c.pinned_hosts = vec![("metadata.test".into(), "169.254.169.254".parse().unwrap())];
        c.webhooks.retry_schedule = vec![
            opsdeck::config::ConfigDuration(std::time::Duration::from_millis(300)),
            opsdeck::config::ConfigDuration(std::time::Duration::from_millis(300)),
        ];
        c.webhooks.timeout = opsdeck::config::ConfigDuration(std::time::Duration::from_secs(2));
    })
    .await
    else {
        return;
    };
    let secret = opsdeck::webhooks::signing::Secret::generate().expose();
    let receiver = WebhookReceiver::start(&[secret.as_str()]).await.unwrap();
    let store = &app.state.store;
    let admin = app.key("admin", &["admin"]).await;
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(
                &serde_json::json!({"name": "receiver", "url": receiver.url(),
                "event_types": ["alert.*"], "secret": secret}),
            ),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.unwrap();
    let endpoint = created["id"].as_i64().unwrap();
    assert_eq!(created["secret"], secret.as_str());

    // Delivered once, verified.
    let ok = send(&app, "alert.firing").await;
    wait_for("delivered", || async {
        delivery(&app, &ok).await.0 == "succeeded"
    })
    .await;
    assert_eq!(receiver.count(&ok), 1);
    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.verified),
        "{:?}",
        got.iter().map(|r| &r.rejection).collect::<Vec<_>>()
    );
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["hello"], "world");
    assert_eq!(
        delivery(&app, &ok).await,
        ("succeeded".into(), 1, Some(200))
    );

    // 500s: the first attempt and two retries, then failed, each attempt stored.
    receiver.set(Behaviour::status(500));
    let failing = send(&app, "alert.firing").await;
    wait_for("given up", || async {
        delivery(&app, &failing).await.0 == "failed"
    })
    .await;
    assert_eq!(receiver.count(&failing), 3);
    let (attempts,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_attempts a JOIN webhook_deliveries d \
             ON d.id = a.delivery_id WHERE d.message_id = $1 AND a.status = 500",
            opsdeck::args![failing.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(attempts, 3);

    // A redirect is a failure, not followed; huge and endless answers are cut off.
    receiver.set(Behaviour::redirect("http://127.0.0.1:9/"));
    let moved = send(&app, "alert.firing").await;
    wait_for("redirect refused", || async {
        delivery(&app, &moved).await.0 == "failed"
    })
    .await;
    let (error,): (Option<String>,) = store
        .fetch_one(
            "SELECT last_error FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![moved.as_str()],
        )
        .await
        .unwrap();
    assert!(
        error
            .unwrap_or_default()
            .contains("redirects are not followed")
    );
    receiver.set(Behaviour::ok().body(ResponseBody::Huge(10 * 1024 * 1024)));
    let huge = send(&app, "alert.firing").await;
    wait_for("huge answer", || async {
        delivery(&app, &huge).await.0 == "succeeded"
    })
    .await;
    receiver.set(Behaviour::ok().body(ResponseBody::NeverFinish));
    let endless = send(&app, "alert.firing").await;
    wait_for("endless answer", || async {
        delivery(&app, &endless).await.0 == "succeeded"
    })
    .await;
    let (excerpt,): (Option<String>,) = store
        .fetch_one(
            "SELECT a.response FROM webhook_attempts a JOIN webhook_deliveries d \
             ON d.id = a.delivery_id WHERE d.message_id = $1",
            opsdeck::args![huge.as_str()],
        )
        .await
        .unwrap();
    assert!(excerpt.unwrap_or_default().len() <= 1024);

    // Types the endpoint did not subscribe to are not sent to it.
    let other = send(&app, "payment.failed").await;
    let (n,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![other.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);

    // 410 Gone disables the endpoint; later messages are not queued for it.
    receiver.set(Behaviour::status(410));
    let gone = send(&app, "alert.firing").await;
    wait_for("endpoint disabled", || async {
        delivery(&app, &gone).await.0 == "failed"
    })
    .await;
    let listed = endpoints::list(store).await.unwrap();
    let e = listed.iter().find(|e| e.id == endpoint).unwrap();
    assert!(!e.enabled);
    assert!(
        e.disabled_reason
            .as_deref()
            .unwrap_or_default()
            .contains("410")
    );
    let after = send(&app, "alert.firing").await;
    let (n,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![after.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The deliveries view: failed ones with their attempts; a retry after the endpoint is
    // fixed and enabled again goes out with a fresh schedule and a new attempt number.
    let res = app
        .call(
            reqwest::Method::GET,
            "/api/v1/webhooks/deliveries?status=failed",
            &admin,
            None,
        )
        .await;
    let list: serde_json::Value = res.json().await.unwrap();
    let failed: Vec<&str> = list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message_id"].as_str().unwrap())
        .collect();
    for m in [&failing, &moved, &gone] {
        assert!(failed.contains(&m.as_str()), "{m} in {list}");
    }
    let failing_id = list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["message_id"] == failing.as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let res = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/webhooks/deliveries/{failing_id}/attempts"),
            &admin,
            None,
        )
        .await;
    let attempts: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        attempts["attempts"].as_array().unwrap().len(),
        3,
        "{attempts}"
    );
    receiver.set(Behaviour::ok());
    let res = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/webhooks/endpoints/{endpoint}/enable"),
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT);
    let res = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/webhooks/deliveries/retry-failed?endpoint={endpoint}"),
            &admin,
            None,
        )
        .await;
    let retried: serde_json::Value = res.json().await.unwrap();
    assert_eq!(retried["retried"], 3, "failing, moved and gone: {retried}");
    wait_for("retried", || async {
        delivery(&app, &failing).await.0 == "succeeded"
    })
    .await;
    assert_eq!(receiver.count(&failing), 4);
    assert_eq!(
        delivery(&app, &failing).await.1,
        4,
        "attempts keep their numbers"
    );
    // Replaying the last hour sends every alert message again (not payment.failed).
    let hour_ago = opsdeck::store::now_ms() - 3_600_000;
    let iso = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/replay",
            &admin,
            Some(
                &serde_json::json!({"endpoint": endpoint, "from": iso(hour_ago),
                "to": iso(opsdeck::store::now_ms() + 1000)}),
            ),
        )
        .await;
    let replayed: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        replayed["retried"], 7,
        "every alert.firing message: {replayed}"
    );
    // The receiver counts a delivery when it answers, before the worker records the outcome:
    // wait until the endpoint's view has no replayed delivery pending, not just until the
    // receiver saw them.
    let mut endpoints_view = serde_json::Value::Null;
    for _ in 0..200 {
        let res = app
            .call(
                reqwest::Method::GET,
                "/api/v1/webhooks/endpoints",
                &admin,
                None,
            )
            .await;
        endpoints_view = res.json().await.unwrap();
        if endpoints_view["endpoints"][0]["pending_24h"] == 0 {
            break;
        }
        // Under the key's 600 reads a minute.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        endpoints_view["endpoints"][0]["pending_24h"], 0,
        "replayed deliveries recorded: {endpoints_view}"
    );
    assert_eq!(receiver.count(&ok), 2, "replayed once");
    let view = &endpoints_view["endpoints"][0];
    assert_eq!(view["name"], "receiver", "{endpoints_view}");
    assert_eq!(
        view["success_rate_24h"].as_f64(),
        Some(1.0),
        "every replayed delivery succeeded: {endpoints_view}"
    );
    assert!(
        !endpoints_view.to_string().contains(&secret),
        "the secret is never listed"
    );

    // Bad input is refused naming the problem; only admins change anything.
    let reader = app.key("reader", &["read"]).await;
    for (method, path, body, status, says) in [
        (
            reqwest::Method::GET,
            "/api/v1/webhooks/deliveries?status=bogus",
            None,
            422,
            "status",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/webhooks/deliveries?limit=0",
            None,
            422,
            "limit",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            Some(serde_json::json!({"name": "x", "url": "ftp://example.com/"})),
            422,
            "url",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            Some(serde_json::json!({"name": "y", "url": "https://example.com/", "secret": "nope"})),
            422,
            "secret",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            Some(serde_json::json!({"name": "receiver", "url": "https://example.com/"})),
            409,
            "already exists",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webhooks/replay",
            Some(
                serde_json::json!({"endpoint": endpoint, "from": iso(hour_ago), "to": iso(hour_ago)}),
            ),
            422,
            "to",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webhooks/deliveries/999999/retry",
            None,
            409,
            "not a failed delivery",
        ),
    ] {
        let res = app.call(method.clone(), path, &admin, body.as_ref()).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
        let text = res.text().await.unwrap();
        assert!(text.contains(says), "{path}: {text}");
    }
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/deliveries/retry-failed",
            &reader,
            None,
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::FORBIDDEN);
    let res = crate::helpers::api()
        .get(app.url("/api/v1/webhooks/deliveries"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);

    // An endpoint on the metadata address, in any spelling, is refused when saved, naming the
    // field; nothing is stored.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://169.254.169.254./",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://169.254.1.1/",
    ] {
        let res = app
            .call(
                reqwest::Method::POST,
                "/api/v1/webhooks/endpoints",
                &admin,
                Some(&serde_json::json!({"name": "metadata", "url": url})),
            )
            .await;
        let body =
            crate::helpers::error_body(res, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "invalid")
                .await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("url: ") && detail.ends_with("; refused"),
            "{url}: {detail}"
        );
    }
    let (named,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE name = 'metadata'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(named, 0);
    // A name that resolves there is judged when it resolves: refused before any connection,
    // and retried.
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(&serde_json::json!({"name": "metadata",
                "url": "http://metadata.test/latest/meta-data/"})),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let generated: serde_json::Value = res.json().await.unwrap();
    assert!(generated["secret"].as_str().unwrap().starts_with("whsec_"));
    // (A type only this endpoint takes: the receiver, enabled again, takes alert.*.)
    let refused = send(&app, "payment.failed").await;
    wait_for("refused", || async {
        delivery(&app, &refused).await.0 == "failed"
    })
    .await;
    let (error,): (Option<String>,) = store
        .fetch_one(
            "SELECT last_error FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![refused.as_str()],
        )
        .await
        .unwrap();
    let error = error.unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("169.254.169.254"),
        "{error}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_a_verifying_receiver_sqlite() {
    deliveries_reach_a_verifying_receiver(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_a_verifying_receiver_postgres() {
    deliveries_reach_a_verifying_receiver(Backend::Postgres).await;
}

/// Two instances on one database, both running the worker: every message reaches the
/// receiver exactly once (the receiver counts each webhook-id).
async fn two_instances_deliver_each_attempt_once(backend: Backend) {
    let Some(first) = spawn_app_with(backend, |c| {
        c.webhooks.allow_private = vec!["127.0.0.0/8".into()];
        c.webhooks.concurrency = 16;
    })
    .await
    else {
        return;
    };
    // The second shares the first's database and master key.
    let mut config = first.state.config.clone();
    config.server.data_dir = first.data_dir.path().to_path_buf();
    let key_text = std::fs::read_to_string(first.state.config.master_key_path()).unwrap();
    let second = opsdeck::app::App::build(config, Some(key_text.trim()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let second_state = second.state.clone();
    let server = tokio::spawn(second.serve(listener, cancel.clone()));

    let secret = opsdeck::webhooks::signing::Secret::generate().expose();
    let receiver = WebhookReceiver::start(&[secret.as_str()]).await.unwrap();
    // Slow enough that a batch is still in flight when the other instance wakes up.
    receiver.set(Behaviour::ok().delay(std::time::Duration::from_millis(100)));
    let admin = first.key("admin", &["admin"]).await;
    let res = first
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(&serde_json::json!({"name": "counted", "url": receiver.url(), "secret": secret})),
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let mut ids = Vec::new();
    let mut tx = first.state.store.begin().await.unwrap();
    for i in 0..600 {
        ids.push(
            queue::enqueue(
                &mut tx,
                "event.counted",
                &serde_json::json!({"i": i}),
                opsdeck::store::now_ms(),
            )
            .await
            .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    let store = second_state.store.clone();
    wait_for("every delivery succeeded", || {
        let store = store.clone();
        async move {
            let (left,): (i64,) = store
                .fetch_one(
                    "SELECT COUNT(*) FROM webhook_deliveries WHERE state <> 'succeeded'",
                    opsdeck::args![],
                )
                .await
                .unwrap();
            left == 0
        }
    })
    .await;
    let twice: Vec<&String> = ids.iter().filter(|id| receiver.count(id) != 1).collect();
    assert!(
        twice.is_empty(),
        "{} messages not received exactly once",
        twice.len()
    );
    assert_eq!(receiver.received().len(), 600);
    assert!(receiver.received().iter().all(|r| r.verified));
    let (workers,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(DISTINCT worker) FROM webhook_attempts",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(workers, 2, "both instances delivered");
    cancel.cancel();
    let _ = server.await;
    first.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_each_attempt_once_sqlite() {
    two_instances_deliver_each_attempt_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_each_attempt_once_postgres() {
    two_instances_deliver_each_attempt_once(Backend::Postgres).await;
}

/// A webhook URL's credentials (user info, a path token, `?token=`) are masked wherever the
/// endpoint is shown, as monitors' targets are: the JSON list for a read key and for an admin
/// key, the Webhooks tab for a viewer and for an admin, and the audit row of its creation.
async fn webhook_urls_are_masked_for_everyone(app: &crate::helpers::TestApp) {
    use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, browser, page_text, sign_in};
    const PASSWORD: &str = "pa55word-in-url";
    const PATH_TOKEN: &str = "Zx81kQ7pW3vN5tR9yL2mB6";
    const QUERY_TOKEN: &str = "qt-4f9a1c7e2b";
    let url = format!(
        "https://ops:{PASSWORD}@hooks.example.com/in/{PATH_TOKEN}/events?token={QUERY_TOKEN}&channel=ops"
    );
    let admin = app.key("admin", &["admin"]).await;
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(&serde_json::json!({"name": "tokened", "url": url})),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let leaks = |text: &str| {
        [PASSWORD, PATH_TOKEN, QUERY_TOKEN]
            .into_iter()
            .filter(|s| text.contains(s))
            .collect::<Vec<_>>()
    };

    let reader = app.key("reader", &["read"]).await;
    let mut shown = Vec::new();
    for key in [&reader, &admin] {
        let list: serde_json::Value = app
            .call(
                reqwest::Method::GET,
                "/api/v1/webhooks/endpoints",
                key,
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        let text = list.to_string();
        assert_eq!(leaks(&text), Vec::<&str>::new(), "{text}");
        shown.push(list["endpoints"][0]["url"].as_str().unwrap().to_string());
    }
    assert_eq!(
        shown[0],
        "https://ops:********@hooks.example.com/in/********/events?token=********&channel=ops"
    );
    assert_eq!(shown[0], shown[1], "admins see the same masked URL");

    app.add_user(
        "viewer@example.com",
        "viewer password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    for (email, password) in [
        ("viewer@example.com", "viewer password 1"),
        (ADMIN_EMAIL, ADMIN_PASSWORD),
    ] {
        let client = browser();
        assert_eq!(
            sign_in(app, &client, email, password).await.status(),
            reqwest::StatusCode::SEE_OTHER
        );
        let html = page_text(app, &client, "/integrations/webhooks").await;
        assert!(
            html.contains("hooks.example.com/in/********/events"),
            "{email}"
        );
        assert_eq!(leaks(&html), Vec::<&str>::new(), "{email}");
    }

    let audit = opsdeck::access::audit::list(&app.state.store, 100, None)
        .await
        .unwrap();
    let text = format!("{audit:?}");
    assert!(text.contains("webhook_endpoint.create"), "{text}");
    assert_eq!(leaks(&text), Vec::<&str>::new(), "{text}");
}
crate::dual_test!(webhook_urls_are_masked_for_everyone);
