//! Alerts against a real store and a real server: the evaluator's state machine on stored
//! quota figures at controlled times (pending, `for`, grouping, hysteresis, flapping,
//! reminders, acknowledgement, silences, maintenance, no double notification), and a real
//! monitor going down and up again with its notifications delivered, signed, to a receiver.

use std::time::Duration;

use opsdeck::alerts::{engine, rules::RuleSpec, silences};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_with};

pub async fn set_quota(app: &TestApp, customer: &str, percent: f64) {
    let store = &app.state.store;
    store
        .execute(
            "INSERT INTO quota_states (customer_id, plan_id, period_start, state, percent, \
             changed_at) VALUES ($1, 'pro', 0, 'ok', $2, 0) \
             ON CONFLICT (customer_id) DO UPDATE SET percent = excluded.percent",
            opsdeck::args![customer, percent],
        )
        .await
        .unwrap();
}

/// Messages queued for endpoint `endpoint`, oldest first: (type, data).
async fn queued(app: &TestApp, endpoint: i64) -> Vec<(String, Value)> {
    let rows: Vec<(String, String)> = app
        .state
        .store
        .fetch_all(
            "SELECT m.type, m.body FROM webhook_messages m \
             JOIN webhook_deliveries d ON d.message_id = m.id \
             WHERE d.endpoint_id = $1 ORDER BY d.id",
            opsdeck::args![endpoint],
        )
        .await
        .unwrap();
    rows.into_iter()
        .map(|(t, b)| {
            let v: Value = serde_json::from_str(&b).unwrap();
            (t, v["data"].clone())
        })
        .collect()
}

fn customers(data: &Value) -> Vec<String> {
    let mut c: Vec<String> = data["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["customer"].as_str().unwrap().to_string())
        .collect();
    c.sort();
    c
}

async fn state_of(app: &TestApp, customer: &str) -> Option<String> {
    let fp =
        serde_json::to_string(&json!({"customer": customer, "plan": "pro", "team": "billing"}))
            .unwrap();
    let row: Option<(String,)> = app
        .state
        .store
        .fetch_optional(
            "SELECT state FROM alerts WHERE fingerprint = $1 ORDER BY id DESC LIMIT 1",
            opsdeck::args![fp.as_str()],
        )
        .await
        .unwrap();
    row.map(|r| r.0)
}

async fn state_machine(backend: Backend) {
    // The server's own evaluator is off: this test drives every run itself, at times it
    // chooses.
    let Some(app) = spawn_app_with(backend, |c| {
        c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(Duration::ZERO);
    })
    .await
    else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    // The notifier, pointed nowhere: this test reads the queue, not a receiver.
    let res = app
        .call(
            Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(
                &json!({"name": "pager", "url": "https://pager.example.com/hook",
                          "event_types": ["payment.failed"]}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let pager = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let spec: RuleSpec = serde_json::from_value(json!({
        "name": "quota high", "metric": "quota.percent", "condition": ">= 90", "for": "1m",
        "hysteresis": 5, "severity": "critical", "notifiers": ["pager"],
        "labels": {"team": "billing"}
    }))
    .unwrap();
    let res = app
        .call(
            Method::POST,
            "/api/v1/alert-rules",
            &admin,
            Some(&serde_json::to_value(&spec).unwrap()),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    // Only this rule: the built-in quota rules would alert on the same figures.
    let (prometheus, notifiers) = opsdeck::alerts::names(&app.state).await.unwrap();
    let rules: Vec<_> = opsdeck::alerts::rules::load(&app.state.store, &prometheus, &notifiers)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name == "quota high")
        .collect();
    assert_eq!(rules.len(), 1);
    let settings = engine::Settings {
        repeat_ms: 600_000,
        alerts_url: "https://ops.example.com/alerts".into(),
    };
    let store = &app.state.store;
    let t0 = 4_000_000_000_000i64;
    let run = |at: i64| {
        let rules = rules.clone();
        let settings = settings.clone();
        async move {
            engine::run(store, &rules, at, "", &settings)
                .await
                .unwrap()
                .0
        }
    };

    set_quota(&app, "c1", 95.0).await;
    set_quota(&app, "c2", 97.0).await;
    set_quota(&app, "c3", 50.0).await;
    let r = run(t0).await;
    assert_eq!((r.fired, r.notifications), (0, 0), "pending first: {r:?}");
    assert_eq!(state_of(&app, "c1").await.as_deref(), Some("pending"));
    assert_eq!(state_of(&app, "c3").await, None);
    assert_eq!(run(t0 + 30_000).await.fired, 0);
    // Held for `for`: both fire, in one notification.
    let r = run(t0 + 60_000).await;
    assert_eq!((r.fired, r.notifications), (2, 1), "{r:?}");
    let q = queued(&app, pager).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "alert.firing");
    assert_eq!(customers(&q[0].1), ["c1", "c2"]);
    assert_eq!(q[0].1["severity"], "critical");
    assert_eq!(q[0].1["url"], "https://ops.example.com/alerts");
    assert_eq!(q[0].1["alerts"][0]["labels"]["team"], "billing");
    assert!(
        q[0].1["summary"]
            .as_str()
            .unwrap()
            .starts_with("2 customers over quota: c2 (97 %), c1 (95 %)"),
        "{}",
        q[0].1["summary"]
    );
    // The same run again (another instance, a retry): nothing twice.
    let r = run(t0 + 60_000).await;
    assert_eq!((r.fired, r.notifications), (0, 0));
    assert_eq!(queued(&app, pager).await.len(), 1);

    // Hysteresis: 88 is within 5 of 90, still firing; 80 resolves.
    set_quota(&app, "c1", 88.0).await;
    assert_eq!(run(t0 + 90_000).await.resolved, 0);
    assert_eq!(state_of(&app, "c1").await.as_deref(), Some("firing"));
    set_quota(&app, "c1", 80.0).await;
    let r = run(t0 + 120_000).await;
    assert_eq!((r.resolved, r.notifications), (1, 1));
    let q = queued(&app, pager).await;
    assert_eq!(q.last().unwrap().0, "alert.resolved");
    assert_eq!(customers(&q.last().unwrap().1), ["c1"]);
    assert_eq!(state_of(&app, "c1").await.as_deref(), Some("resolved"));

    // Reminders while nobody acknowledges, then none after the acknowledgement.
    let r = run(t0 + 60_000 + 600_000).await;
    assert_eq!((r.reminded, r.notifications), (1, 1));
    let c2: (i64,) = store
        .fetch_one(
            "SELECT id FROM alerts WHERE state = 'firing' AND summary LIKE '%c2%'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{}/ack", c2.0),
            &admin,
            Some(&json!({"note": "looking into it"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let acked: Value = res.json().await.unwrap();
    assert!(
        acked["acked_by"].as_str().unwrap().ends_with(":ops"),
        "{acked}"
    );
    assert_eq!(acked["ack_note"], "looking into it");
    let q = queued(&app, pager).await;
    assert_eq!(q.last().unwrap().0, "alert.acknowledged");
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{}/ack", c2.0),
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "acknowledged twice");
    assert_eq!(run(t0 + 60_000 + 1_300_000).await.reminded, 0);

    // A silence: c3 fires, shown, but nobody is told. A maintenance window: c4 never fires.
    let actor = opsdeck::access::audit::Actor::new("test", None);
    let until = t0 + 86_400_000;
    for (kind, customer) in [("silence", "c3"), ("maintenance", "c4")] {
        let s: silences::SilenceSpec = serde_json::from_value(json!({
            "kind": kind, "matchers": {"customer": customer}, "starts_at": t0, "ends_at": until,
            "comment": "planned"
        }))
        .unwrap();
        silences::create(store, &s, &actor, t0).await.unwrap();
    }
    set_quota(&app, "c3", 99.0).await;
    set_quota(&app, "c4", 99.0).await;
    let before = queued(&app, pager).await.len();
    run(t0 + 1_400_000).await;
    let r = run(t0 + 1_460_000).await;
    assert_eq!((r.fired, r.notifications), (1, 0), "{r:?}");
    assert_eq!(state_of(&app, "c3").await.as_deref(), Some("firing"));
    assert_eq!(state_of(&app, "c4").await, None);
    assert_eq!(queued(&app, pager).await.len(), before);

    // Flapping across the threshold every run never lasts the minute `for` asks.
    set_quota(&app, "c5", 50.0).await;
    for i in 0..8 {
        set_quota(&app, "c5", if i % 2 == 0 { 95.0 } else { 50.0 }).await;
        assert_eq!(run(t0 + 2_000_000 + i * 30_000).await.fired, 0);
    }
    assert_eq!(state_of(&app, "c5").await, None);

    // History, searchable through the API.
    let res = app
        .call(
            Method::GET,
            "/api/v1/alerts?state=resolved&q=c1",
            &admin,
            None,
        )
        .await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["alerts"].as_array().unwrap().len(), 1);
    let id = list["alerts"][0]["id"].as_i64().unwrap();
    let detail: Value = app
        .call(Method::GET, &format!("/api/v1/alerts/{id}"), &admin, None)
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["pending", "firing", "notified", "resolved", "notified"]
    );

    // The page: open alerts with their acknowledgement, a form to acknowledge the others,
    // silences added through a form (bad input refused, nothing stored).
    let browser = crate::helpers::browser();
    let csrf = crate::helpers::sign_in_admin(&app, &browser).await;
    let html = crate::helpers::page_text(&app, &browser, "/alerts").await;
    assert!(
        html.contains("looking into it"),
        "c2's acknowledgement shown"
    );
    assert!(
        html.contains("c3 (pro) at 99 % of quota"),
        "c3 firing, shown though silenced"
    );
    let c3: (i64,) = store
        .fetch_one(
            "SELECT id FROM alerts WHERE state = 'firing' AND summary LIKE '%c3%'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert!(html.contains(&format!("/alerts/{}/ack", c3.0)));
    let res = app
        .post_form(
            &browser,
            &format!("/alerts/{}/ack", c3.0),
            &[("csrf_token", &csrf), ("note", "from the page")],
        )
        .await;
    assert!(res.status().is_success() || res.status().is_redirection());
    let (by,): (Option<String>,) = store
        .fetch_one(
            "SELECT acked_by FROM alerts WHERE id = $1",
            opsdeck::args![c3.0],
        )
        .await
        .unwrap();
    assert!(
        by.unwrap().contains('@'),
        "acknowledged by the signed-in user"
    );
    let silences_now = || async {
        let (n,): (i64,) = store
            .fetch_one("SELECT COUNT(*) FROM alert_silences", opsdeck::args![])
            .await
            .unwrap();
        n
    };
    let before = silences_now().await;
    let res = app
        .post_form(
            &browser,
            "/alerts/silences",
            &[
                ("csrf_token", &csrf),
                ("kind", "silence"),
                ("matchers", "no equals sign"),
                ("hours", "2"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("matchers"));
    let res = app
        .post_form(
            &browser,
            "/alerts/silences",
            &[
                ("kind", "silence"),
                ("matchers", "integration=api"),
                ("hours", "2"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(silences_now().await, before);
    let res = app
        .post_form(
            &browser,
            "/alerts/silences",
            &[
                ("csrf_token", &csrf),
                ("kind", "maintenance"),
                ("matchers", "integration=api"),
                ("hours", "2"),
                ("comment", "db upgrade"),
            ],
        )
        .await;
    assert!(res.status().is_success() || res.status().is_redirection());
    assert_eq!(silences_now().await, before + 1);

    // Rules from the page: refused with the field named and nothing stored, then added and
    // deleted.
    let rules_now = || async {
        let (n,): (i64,) = store
            .fetch_one("SELECT COUNT(*) FROM alert_rules", opsdeck::args![])
            .await
            .unwrap();
        n
    };
    let before = rules_now().await;
    for (field, value, named) in [
        ("metric", "cpu.load", "metric:"),
        ("condition", "very high", "condition:"),
        ("filter", "integration", "filter:"),
        ("notifiers", "nobody", "notifiers[0]:"),
    ] {
        let mut form = vec![
            ("csrf_token", csrf.as_str()),
            ("name", "page rule"),
            ("metric", "integration.error_rate"),
            ("condition", "> 10"),
            ("severity", "critical"),
        ];
        form.retain(|(k, _)| *k != field);
        form.push((field, value));
        let res = app.post_form(&browser, "/alerts/rules", &form).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(res.text().await.unwrap().contains(named), "{field}");
    }
    assert_eq!(rules_now().await, before);
    let res = app
        .post_form(
            &browser,
            "/alerts/rules",
            &[
                ("csrf_token", &csrf),
                ("name", "page rule"),
                ("metric", "integration.error_rate"),
                ("condition", "> 10"),
                ("window", "10m"),
                ("for", "1m"),
                ("severity", "critical"),
                ("filter", "integration=api"),
                ("notifiers", "pager"),
                ("hysteresis", ""),
            ],
        )
        .await;
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(rules_now().await, before + 1);
    let (id, spec): (i64, String) = store
        .fetch_one(
            "SELECT id, spec FROM alert_rules WHERE name = 'page rule'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["filter"]["integration"], "api");
    assert_eq!(spec["notifiers"], json!(["pager"]));
    let res = app
        .post_form(
            &browser,
            &format!("/alerts/rules/{id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert!(res.status().is_redirection());
    assert_eq!(rules_now().await, before);
    app.finish().await;
}

#[tokio::test]
async fn state_machine_sqlite() {
    state_machine(Backend::Sqlite).await;
}

#[tokio::test]
async fn state_machine_postgres() {
    state_machine(Backend::Postgres).await;
}

/// Bad rules are refused with the field named, and change nothing.
async fn bad_rules(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let reader = app.key("viewer", &["read"]).await;
    let count = || async {
        let (n,): (i64,) = app
            .state
            .store
            .fetch_one("SELECT COUNT(*) FROM alert_rules", opsdeck::args![])
            .await
            .unwrap();
        n
    };
    let before = count().await;
    assert!(before >= 9, "built-in rules stored: {before}");
    let good = json!({"name": "slow api", "metric": "integration.latency_p95",
                      "condition": "> 800", "window": "10m"});
    let res = app
        .call(Method::POST, "/api/v1/alert-rules", &reader, Some(&good))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for (patch, field) in [
        (json!({"metric": "cpu.load"}), "metric:"),
        (json!({"metric": "opsdeck_nonexistent_total"}), "metric:"),
        (json!({"condition": "above 800"}), "condition:"),
        (json!({"condition": "> eight hundred"}), "condition:"),
        (json!({"window": "ten minutes"}), "window:"),
        (json!({"for": "-1m"}), "for:"),
        (json!({"severity": "page-everyone"}), "severity:"),
        (json!({"notifiers": ["nobody"]}), "notifiers[0]:"),
        (json!({"name": ""}), "name:"),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = app
            .call(Method::POST, "/api/v1/alert-rules", &admin, Some(&body))
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{patch}");
        let text = res.text().await.unwrap();
        assert!(text.contains(field), "{patch}: {text}");
    }
    let res = app
        .call(
            Method::POST,
            "/api/v1/alert-rules",
            &admin,
            Some(&json!({"name": "x"})),
        )
        .await;
    assert!(res.status().is_client_error());
    assert_eq!(count().await, before, "nothing stored");
    let res = app
        .call(Method::POST, "/api/v1/alert-rules", &admin, Some(&good))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(Method::POST, "/api/v1/alert-rules", &admin, Some(&good))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    // Built-in and config rules are not the API's to delete.
    let list: Value = app
        .call(Method::GET, "/api/v1/alert-rules", &reader, None)
        .await
        .json()
        .await
        .unwrap();
    let builtin = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "integration down")
        .unwrap();
    assert_eq!(builtin["source"], "default");
    let res = app
        .call(
            Method::DELETE,
            &format!("/api/v1/alert-rules/{}", builtin["id"]),
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    for (path, status) in [
        ("/api/v1/alerts/999999/ack", StatusCode::NOT_FOUND),
        ("/api/v1/alerts?state=burning", StatusCode::BAD_REQUEST),
        ("/api/v1/alerts?limit=0", StatusCode::BAD_REQUEST),
    ] {
        let method = if path.ends_with("ack") {
            Method::POST
        } else {
            Method::GET
        };
        let res = app.call(method, path, &admin, None).await;
        assert_eq!(res.status(), status, "{path}");
    }
    let res = app
        .call(
            Method::POST,
            "/api/v1/alerts/silences",
            &admin,
            Some(&json!({"matchers": {}, "ends_at": 4_000_000_000_000i64})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("matchers"));
    let res = reqwest::Client::new()
        .get(app.url("/api/v1/alerts"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

#[tokio::test]
async fn bad_rules_sqlite() {
    bad_rules(Backend::Sqlite).await;
}

#[tokio::test]
async fn bad_rules_postgres() {
    bad_rules(Backend::Postgres).await;
}

/// A real monitor goes down and comes back: the evaluator (running as the server runs it)
/// fires, the acknowledgement and the resolution follow, each delivered signed to the rule's
/// notifier exactly once.
async fn monitor_down_and_up(backend: Backend) {
    use opsdeck::simulators::webhook_receiver::{Behaviour, WebhookReceiver};
    use std::sync::atomic::Ordering;
    let secret = opsdeck::webhooks::signing::Secret::generate().expose();
    let receiver = WebhookReceiver::start(&[secret.as_str()]).await.unwrap();
    receiver.set(Behaviour::ok());
    let (peer, answer) = crate::helpers::switchable_peer().await;
    let Some(app) = spawn_app_with(backend, |c| {
        c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(Duration::from_millis(300));
        c.webhooks.allow_private = vec!["127.0.0.0/8".into()];
        c.webhooks.retry_schedule = Vec::new();
    })
    .await
    else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/webhooks/endpoints",
            &admin,
            Some(
                &json!({"name": "oncall", "url": receiver.url(), "secret": secret,
                          "event_types": ["payment.failed"]}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::POST,
            "/api/v1/alert-rules",
            &admin,
            Some(&json!({"name": "web down", "metric": "integration.state",
                          "condition": ">= 2", "severity": "critical",
                          "filter": {"integration": "web"}, "notifiers": ["oncall"]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::POST,
            "/api/v1/integrations",
            &admin,
            Some(&json!({"name": "web", "kind": "http", "target": peer, "interval": "1s"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let of_type = |t: &str| {
        receiver
            .received()
            .into_iter()
            .filter(|r| r.event_type.as_deref() == Some(t))
            .collect::<Vec<_>>()
    };
    let wait_for = |t: &'static str| async move {
        for _ in 0..300 {
            if !of_type(t).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {t} delivered");
    };
    answer.store(500, Ordering::Relaxed);
    wait_for("alert.firing").await;
    let firing = &of_type("alert.firing")[0];
    assert!(firing.verified, "{:?}", firing.rejection);
    let body: Value = serde_json::from_slice(&firing.body).unwrap();
    assert_eq!(body["data"]["alerts"][0]["labels"]["integration"], "web");
    assert_eq!(body["data"]["status"], "firing");
    let list: Value = app
        .call(
            Method::GET,
            "/api/v1/alerts?state=firing&q=web",
            &admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let id = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "web down")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{id}/ack"),
            &admin,
            Some(&json!({})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    wait_for("alert.acknowledged").await;
    answer.store(200, Ordering::Relaxed);
    wait_for("alert.resolved").await;
    // Let a few more runs pass: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for t in ["alert.firing", "alert.acknowledged", "alert.resolved"] {
        assert_eq!(of_type(t).len(), 1, "{t} exactly once");
    }

    // The Webhooks tab: the notifier's success rate, "send test", a failed delivery with its
    // attempt, and "retry".
    let browser = crate::helpers::browser();
    let csrf = crate::helpers::sign_in_admin(&app, &browser).await;
    let html = crate::helpers::page_text(&app, &browser, "/integrations/webhooks").await;
    assert!(
        html.contains("oncall") && html.contains("100.0 %"),
        "success rate shown"
    );
    let endpoint: (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT id FROM webhook_endpoints WHERE name = 'oncall'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    receiver.set(Behaviour::status(500));
    let res = app
        .post_form(
            &browser,
            &format!("/integrations/webhooks/test/{}", endpoint.0),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert!(res.status().is_success() || res.status().is_redirection());
    let failed = || async {
        let (n,): (i64,) = app
            .state
            .store
            .fetch_one(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'failed'",
                opsdeck::args![],
            )
            .await
            .unwrap();
        n
    };
    for _ in 0..200 {
        if failed().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        failed().await,
        1,
        "no retries configured: failed after one attempt"
    );
    let html = crate::helpers::page_text(&app, &browser, "/integrations/webhooks").await;
    assert!(
        html.contains("notifier.test") && html.contains("HTTP 500"),
        "failed delivery shown"
    );
    receiver.set(Behaviour::ok());
    let res = app
        .post_form(
            &browser,
            "/integrations/webhooks/retry/0",
            &[("csrf_token", &csrf)],
        )
        .await;
    assert!(res.status().is_success() || res.status().is_redirection());
    wait_for("notifier.test").await;
    for _ in 0..200 {
        if failed().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed().await, 0, "retried and delivered");

    // Adding endpoints from the tab: bad fields refused by name with nothing stored, a
    // webhook's generated secret shown once.
    let endpoints = || async {
        let (n,): (i64,) = app
            .state
            .store
            .fetch_one("SELECT COUNT(*) FROM webhook_endpoints", opsdeck::args![])
            .await
            .unwrap();
        n
    };
    let before = endpoints().await;
    for (form, problem) in [
        (
            vec![("name", "sms"), ("kind", "twilio_sms"), ("to", "+1555")],
            "to",
        ),
        (
            vec![
                ("name", "mail"),
                ("kind", "email"),
                ("host", "smtp.example.com"),
                ("port", "lots"),
            ],
            "port",
        ),
        (vec![("name", "x"), ("kind", "carrier-pigeon")], "kind"),
    ] {
        let mut form = form;
        form.push(("csrf_token", &csrf));
        let res = app
            .post_form(&browser, "/integrations/webhooks/endpoints", &form)
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{form:?}");
        assert!(res.text().await.unwrap().contains(problem), "{form:?}");
    }
    assert_eq!(endpoints().await, before);
    let res = app
        .post_form(
            &browser,
            "/integrations/webhooks/endpoints",
            &[
                ("csrf_token", &csrf),
                ("name", "audit-sink"),
                ("kind", "webhook"),
                ("url", "https://audit.example.com/hook"),
                ("event_types", "alert.*, payment.failed"),
                ("port", ""),
                ("secret", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        res.text().await.unwrap().contains("whsec_"),
        "the generated secret, once"
    );
    assert_eq!(endpoints().await, before + 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_down_and_up_sqlite() {
    monitor_down_and_up(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_down_and_up_postgres() {
    monitor_down_and_up(Backend::Postgres).await;
}

/// Open alerts of `customer`, oldest first: (id, severity, threshold).
async fn open_of(app: &TestApp, customer: &str) -> Vec<(i64, String, f64)> {
    app.state
        .store
        .fetch_all(
            "SELECT id, severity, threshold FROM alerts \
             WHERE state <> 'resolved' AND labels LIKE $1 ORDER BY id",
            opsdeck::args![format!("%\"customer\":\"{customer}\"%")],
        )
        .await
        .unwrap()
}

async fn timeline(app: &TestApp, id: i64) -> Vec<String> {
    let rows: Vec<(String,)> = app
        .state
        .store
        .fetch_all(
            "SELECT kind FROM alert_events WHERE alert_id = $1 ORDER BY id",
            opsdeck::args![id],
        )
        .await
        .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// The built-in quota rule: many customers over quota in one run are one Slack message
/// ("12 customers over quota", the worst first), each customer has one open alert at its
/// highest step, a higher step replaces a lower one (90 → 100 → 120, notified) and falling
/// back steps down quietly, every change in the alert's timeline.
/// An app whose alerts go to a Slack simulator, that simulator, and the built-in quota rule
/// (evaluated by the test itself: the engine's own interval is off).
async fn quota_alerts_app(
    backend: Backend,
) -> Option<(
    TestApp,
    opsdeck::simulators::notify::NotifySim,
    Vec<opsdeck::alerts::rules::Rule>,
)> {
    let slack = opsdeck::simulators::notify::NotifySim::start()
        .await
        .unwrap();
    let url = slack.slack_url();
    let app = spawn_app_with(backend, |c| {
        c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(Duration::ZERO);
        c.alerts.allow_private_targets = true;
        c.alerts.default_notifiers = vec!["oncall-slack".into()];
        c.notifiers
            .push(opsdeck::webhooks::endpoints::EndpointSpec {
                name: "oncall-slack".into(),
                kind: Some("slack".into()),
                url,
                ..Default::default()
            });
    })
    .await?;
    let (prometheus, notifiers) = opsdeck::alerts::names(&app.state).await.unwrap();
    let quota: Vec<_> = opsdeck::alerts::rules::load(&app.state.store, &prometheus, &notifiers)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name == opsdeck::alerts::rules::QUOTA_RULE)
        .collect();
    Some((app, slack, quota))
}

async fn quota_one_alert_per_customer(backend: Backend) {
    use opsdeck::simulators::notify::Service;
    let Some((app, slack, quota)) = quota_alerts_app(backend).await else {
        return;
    };
    let store = &app.state.store;
    assert_eq!(quota.len(), 1, "one built-in quota rule");
    let settings = engine::Settings {
        repeat_ms: 0,
        alerts_url: "https://ops.example.com/alerts".into(),
    };
    // Runs in the recent past, so the deliveries they queue are due at once.
    let t0 = opsdeck::store::now_ms() - 300_000;
    let run = |at: i64| {
        let quota = quota.clone();
        let settings = settings.clone();
        async move {
            engine::run(store, &quota, at, "", &settings)
                .await
                .unwrap()
                .0
        }
    };
    let slack_messages = || async {
        // The worker delivers on its own schedule: wait for what the queue holds.
        let (queued,): (i64,) = store
            .fetch_one("SELECT COUNT(*) FROM webhook_deliveries", opsdeck::args![])
            .await
            .unwrap();
        for _ in 0..200 {
            if slack.hits(Service::Slack).len() as i64 >= queued {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slack.hits(Service::Slack)
    };

    // Twelve customers over quota, one of them at 125 % (past 100 and 120 at once).
    for i in 1..=12 {
        set_quota(&app, &format!("c{i:02}"), 80.0 + f64::from(i) * 3.0).await;
    }
    set_quota(&app, "c12", 125.0).await;
    set_quota(&app, "c13", 50.0).await;
    let r = run(t0).await;
    assert_eq!((r.fired, r.notifications), (12, 1), "{r:?}");
    let hits = slack_messages().await;
    let attempts: Vec<(String, Option<String>)> = store
        .fetch_all(
            "SELECT d.state, d.last_error FROM webhook_deliveries d",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        1,
        "one message for twelve customers: {attempts:?}"
    );
    let body = hits[0].json();
    let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.starts_with(
            "[FIRING] 12 customers over quota: c12 (125 %), c11 (113 %), c10 (110 %) and 9 more"
        ),
        "{header}"
    );
    let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
    assert_eq!(section.matches("• ").count(), 12, "{section}");
    // Slack's escaping of `>`: it shows `>=`.
    assert!(
        section.contains("c01 (pro) at 83 % of quota (&gt;= 80 %)"),
        "{section}"
    );
    let c12 = open_of(&app, "c12").await;
    assert_eq!(
        c12.len(),
        1,
        "one alert for c12, at its highest step: {c12:?}"
    );
    assert_eq!((c12[0].1.as_str(), c12[0].2), ("critical", 120.0));
    assert_eq!(open_of(&app, "c13").await, []);
    let (open,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM alerts WHERE state <> 'resolved'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(open, 12, "one open alert per customer over quota");

    // Values that move within a step change no state and notify no one, but the open alerts
    // show them (written together, one statement for many alerts).
    set_quota(&app, "c01", 85.0).await;
    set_quota(&app, "c02", 87.5).await;
    let r = run(t0 + 10_000).await;
    assert_eq!((r.fired, r.notifications), (0, 0), "{r:?}");
    let values: Vec<(String, Option<f64>)> = store
        .fetch_all(
            "SELECT labels, value FROM alerts WHERE state <> 'resolved' ORDER BY labels",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let value_of = |c: &str| {
        values
            .iter()
            .find(|(labels, _)| labels.contains(&format!("\"customer\":\"{c}\"")))
            .and_then(|(_, v)| *v)
    };
    assert_eq!(
        (value_of("c01"), value_of("c02"), value_of("c03")),
        (Some(85.0), Some(87.5), Some(89.0)),
        "{values:?}"
    );

    // c13 climbs 91 → 100 → 120: each step replaces the alert and is notified.
    set_quota(&app, "c13", 91.0).await;
    run(t0 + 30_000).await;
    let first = open_of(&app, "c13").await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].1.as_str(), first[0].2), ("warning", 90.0));
    set_quota(&app, "c13", 100.0).await;
    let r = run(t0 + 60_000).await;
    assert_eq!((r.fired, r.notifications), (1, 1), "{r:?}");
    let second = open_of(&app, "c13").await;
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].1.as_str(), second[0].2), ("critical", 100.0));
    set_quota(&app, "c13", 121.0).await;
    run(t0 + 90_000).await;
    let third = open_of(&app, "c13").await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].2, 120.0);
    // The same run again (another instance, a retry) changes nothing.
    let r = run(t0 + 90_000).await;
    assert_eq!((r.fired, r.stepped_down, r.notifications), (0, 0, 0));
    assert_eq!(open_of(&app, "c13").await, third);
    let hits = slack_messages().await;
    assert_eq!(hits.len(), 4);
    // Delivered concurrently, so in any order: one message per step. The fallback `text` is
    // escaped as Slack requires (`>` as `&gt;`); Slack shows it as written.
    for step in [
        "91 % of quota (&gt;= 90 %)",
        "100 % of quota (&gt;= 100 %)",
        "121 % of quota (&gt;= 120 %)",
    ] {
        let of_step = hits
            .iter()
            .filter(|h| h.json()["text"].as_str().unwrap().ends_with(step))
            .count();
        assert_eq!(of_step, 1, "{step}");
    }

    // Acknowledged at 120 %, then back to 110 %: one step down, quiet, still acknowledged;
    // then under quota: resolved and notified.
    let actor = opsdeck::access::audit::Actor::new("test", None);
    engine::acknowledge(
        store,
        third[0].0,
        &actor,
        "calling them",
        t0 + 95_000,
        &settings,
    )
    .await
    .unwrap();
    set_quota(&app, "c13", 110.0).await;
    let r = run(t0 + 120_000).await;
    assert_eq!((r.stepped_down, r.notifications), (1, 0), "{r:?}");
    let fourth = open_of(&app, "c13").await;
    assert_eq!(fourth.len(), 1);
    assert_eq!((fourth[0].1.as_str(), fourth[0].2), ("critical", 100.0));
    let (by,): (Option<String>,) = store
        .fetch_one(
            "SELECT ack_note FROM alerts WHERE id = $1",
            opsdeck::args![fourth[0].0],
        )
        .await
        .unwrap();
    assert_eq!(by.as_deref(), Some("calling them"));
    set_quota(&app, "c13", 40.0).await;
    let r = run(t0 + 150_000).await;
    assert_eq!((r.resolved, r.notifications), (1, 1), "{r:?}");
    assert_eq!(open_of(&app, "c13").await, []);
    assert_eq!(
        timeline(&app, first[0].0).await,
        ["firing", "notified", "superseded"]
    );
    assert_eq!(
        timeline(&app, second[0].0).await,
        ["escalated", "notified", "superseded"]
    );
    assert_eq!(
        timeline(&app, third[0].0).await,
        ["escalated", "notified", "acknowledged", "superseded"]
    );
    assert_eq!(
        timeline(&app, fourth[0].0).await,
        ["stepped_down", "resolved", "notified"]
    );
    // The worker sends concurrently, so the acknowledgement's message and the resolution's
    // may arrive in either order: look for the resolution among all of them.
    let texts: Vec<String> = slack_messages()
        .await
        .iter()
        .map(|h| h.json()["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.starts_with("[RESOLVED] c13"))
            .count(),
        1,
        "{texts:?}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_one_alert_per_customer_sqlite() {
    quota_one_alert_per_customer(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_one_alert_per_customer_postgres() {
    quota_one_alert_per_customer(Backend::Postgres).await;
}

/// A run that changes many alerts commits them a chunk at a time (so it never holds the write
/// lock for long) and notifies each chunk: nothing is lost across the commits.
async fn a_burst_of_alerts_is_written_in_chunks(backend: Backend) {
    let Some((app, _slack, quota)) = quota_alerts_app(backend).await else {
        return;
    };
    let store = &app.state.store;
    let settings = engine::Settings {
        repeat_ms: 0,
        alerts_url: String::new(),
    };
    for i in 1..=12 {
        set_quota(&app, &format!("c{i:02}"), 85.0).await;
    }
    let now = opsdeck::store::now_ms();
    let (r, _) = engine::run_chunked(store, &quota, now, "", &settings, 5)
        .await
        .unwrap();
    assert_eq!((r.fired, r.notifications), (12, 3), "{r:?}");
    let count = |sql: &'static str| async move {
        let (n,): (i64,) = store.fetch_one(sql, opsdeck::args![]).await.unwrap();
        n
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM alerts WHERE state = 'firing'").await,
        12
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM alert_events WHERE kind = 'notified'").await,
        12,
        "every alert is in one notification"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM webhook_deliveries").await,
        3,
        "one message per chunk"
    );
    // The next run finds them all open and changes nothing.
    let (r, _) = engine::run_chunked(store, &quota, now + 10_000, "", &settings, 5)
        .await
        .unwrap();
    assert_eq!((r.fired, r.notifications), (0, 0), "{r:?}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_alerts_is_written_in_chunks_sqlite() {
    a_burst_of_alerts_is_written_in_chunks(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_alerts_is_written_in_chunks_postgres() {
    a_burst_of_alerts_is_written_in_chunks(Backend::Postgres).await;
}

/// Bulk acknowledgement from the page's form and the JSON API: all or nothing, bad input
/// refused with the position named, each alert with who, when and the note, audited; and
/// the page's filters (state, severity, rule, text) as a plain GET form.
async fn bulk_ack_and_filters(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(Duration::ZERO);
    })
    .await
    else {
        return;
    };
    let store = &app.state.store;
    let (prometheus, notifiers) = opsdeck::alerts::names(&app.state).await.unwrap();
    let quota: Vec<_> = opsdeck::alerts::rules::load(store, &prometheus, &notifiers)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name == opsdeck::alerts::rules::QUOTA_RULE)
        .collect();
    for (c, p) in [
        ("c1", 85.0),
        ("c2", 95.0),
        ("c3", 105.0),
        ("c4", 125.0),
        ("c5", 50.0),
    ] {
        set_quota(&app, c, p).await;
    }
    let t0 = opsdeck::store::now_ms();
    engine::run(store, &quota, t0, "", &engine::Settings::default())
        .await
        .unwrap();
    let app_ref = &app;
    let id_of = |c: &'static str| async move { open_of(app_ref, c).await[0].0 };
    let (c1, c2, c3, c4) = (
        id_of("c1").await,
        id_of("c2").await,
        id_of("c3").await,
        id_of("c4").await,
    );
    let acked = || async {
        let (n,): (i64,) = store
            .fetch_one(
                "SELECT COUNT(*) FROM alerts WHERE acked_at IS NOT NULL",
                opsdeck::args![],
            )
            .await
            .unwrap();
        n
    };
    // Of API keys only admin keys acknowledge (`who_may_acknowledge`).
    let oncall = app.key("oncall", &["admin"]).await;
    let bulk = |body: Value| {
        let oncall = oncall.clone();
        let app = &app;
        async move {
            app.call(Method::POST, "/api/v1/alerts/ack", &oncall, Some(&body))
                .await
        }
    };
    let audits_before = app.audit_actions().await.len();
    for (body, status, says) in [
        (json!({"ids": []}), StatusCode::UNPROCESSABLE_ENTITY, "ids:"),
        (
            json!({"ids": [c1, 999_999]}),
            StatusCode::NOT_FOUND,
            "ids[1]: no alert 999999",
        ),
        (
            json!({"ids": [c1, c1]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ids[1]",
        ),
        (
            json!({"ids": [c1], "note": "x".repeat(2001)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "note:",
        ),
        (
            json!({"ids": [c1], "who": "me"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
        ),
        (json!({"ids": "all"}), StatusCode::UNPROCESSABLE_ENTITY, ""),
        (
            json!({"ids": (0..501).collect::<Vec<i64>>()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 500",
        ),
    ] {
        let res = bulk(body.clone()).await;
        assert_eq!(res.status(), status, "{body}");
        let text = res.text().await.unwrap();
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(acked().await, 0, "refused requests change nothing");
    let res = bulk(json!({"ids": [c1, c2], "note": "customer success is on it"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["alerts"].as_array().unwrap().len(), 2);
    assert!(
        body["alerts"][0]["acked_by"]
            .as_str()
            .unwrap()
            .ends_with(":oncall")
    );
    assert_eq!(body["alerts"][1]["ack_note"], "customer success is on it");
    assert_eq!(acked().await, 2);
    // One already acknowledged in the list: refused, the other untouched.
    let res = bulk(json!({"ids": [c3, c1]})).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("ids[1]: alert"));
    assert_eq!(acked().await, 2);
    let actions = app.audit_actions().await;
    assert_eq!(actions.len(), audits_before + 1, "{actions:?}");
    assert!(
        actions.iter().any(|a| a == "alert.acknowledge"),
        "{actions:?}"
    );

    // The page: the ticked boxes acknowledged at once, with the CSRF token.
    let browser = crate::helpers::browser();
    let csrf = crate::helpers::sign_in_admin(&app, &browser).await;
    let html = crate::helpers::page_text(&app, &browser, "/alerts").await;
    assert!(
        html.contains(&format!("name=\"ack_{c3}\"")),
        "a box per firing alert"
    );
    assert!(
        !html.contains(&format!("name=\"ack_{c1}\"")),
        "none once acknowledged"
    );
    assert!(html.contains("id=\"group-"), "grouped by rule");
    let ack3 = format!("ack_{c3}");
    let ack4 = format!("ack_{c4}");
    let res = app
        .post_form(
            &browser,
            "/alerts/ack",
            &[(ack3.as_str(), "1"), (ack4.as_str(), "1")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let ack1 = format!("ack_{c1}");
    let res = app
        .post_form(
            &browser,
            "/alerts/ack",
            &[
                ("csrf_token", &csrf),
                (ack3.as_str(), "1"),
                (ack1.as_str(), "1"),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "c1 is acknowledged already"
    );
    assert!(res.text().await.unwrap().contains("already acknowledged"));
    let res = app
        .post_form(
            &browser,
            "/alerts/ack",
            &[("csrf_token", &csrf), ("note", "")],
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing ticked"
    );
    assert_eq!(acked().await, 2);
    let res = app
        .post_form(
            &browser,
            "/alerts/ack",
            &[
                ("csrf_token", &csrf),
                (ack3.as_str(), "1"),
                (ack4.as_str(), "1"),
                ("note", "raising their plan"),
            ],
        )
        .await;
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(acked().await, 4);
    let (by, note): (String, String) = store
        .fetch_one(
            "SELECT acked_by, ack_note FROM alerts WHERE id = $1",
            opsdeck::args![c4],
        )
        .await
        .unwrap();
    assert!(by.contains(crate::helpers::ADMIN_EMAIL), "{by}");
    assert_eq!(note, "raising their plan");

    // Filters, without JavaScript: a GET form.
    let rows = |html: &str| html.matches("<tr class=\"sev-row-").count();
    let html = crate::helpers::page_text(&app, &browser, "/alerts?severity=critical").await;
    assert_eq!(rows(&html), 2, "c3 and c4");
    let html =
        crate::helpers::page_text(&app, &browser, "/alerts?state=open&severity=&rule=&q=c2").await;
    assert_eq!(rows(&html), 1);
    assert!(html.contains("c2 (pro) at 95 % of quota"));
    let rule = quota[0].id;
    let html = crate::helpers::page_text(
        &app,
        &browser,
        &format!("/alerts?rule={rule}&severity=info"),
    )
    .await;
    assert_eq!(rows(&html), 1, "c1 at 80 %");
    let html = crate::helpers::page_text(&app, &browser, "/alerts?state=resolved").await;
    assert_eq!(rows(&html), 0);
    for bad in [
        "/alerts?state=burning",
        "/alerts?rule=quota",
        "/alerts?severity=dire",
    ] {
        let res = browser.get(app.url(bad)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let res = app
        .call(
            Method::GET,
            &format!("/api/v1/alerts?state=open&severity=critical&rule_id={rule}&q=c4"),
            &oncall,
            None,
        )
        .await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["alerts"].as_array().unwrap().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn bulk_ack_and_filters_sqlite() {
    bulk_ack_and_filters(Backend::Sqlite).await;
}

#[tokio::test]
async fn bulk_ack_and_filters_postgres() {
    bulk_ack_and_filters(Backend::Postgres).await;
}

/// Who may acknowledge: every signed-in person, viewers included (the on-call person is rarely
/// an admin), and admin keys; a read key reads only (403, nothing acknowledged). The OpenAPI
/// document says so on both routes.
async fn who_may_acknowledge(app: &TestApp) {
    use crate::helpers::{browser, openapi_document, page_csrf, sign_in};
    let store = &app.state.store;
    let (prometheus, notifiers) = opsdeck::alerts::names(&app.state).await.unwrap();
    let quota: Vec<_> = opsdeck::alerts::rules::load(store, &prometheus, &notifiers)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name == opsdeck::alerts::rules::QUOTA_RULE)
        .collect();
    for c in ["k1", "k2", "k3"] {
        set_quota(app, c, 125.0).await;
    }
    engine::run(
        store,
        &quota,
        opsdeck::store::now_ms(),
        "",
        &engine::Settings::default(),
    )
    .await
    .unwrap();
    let (k1, k2, k3) = (
        open_of(app, "k1").await[0].0,
        open_of(app, "k2").await[0].0,
        open_of(app, "k3").await[0].0,
    );
    let acked_by = |id: i64| async move {
        let (by,): (Option<String>,) = store
            .fetch_one(
                "SELECT acked_by FROM alerts WHERE id = $1",
                opsdeck::args![id],
            )
            .await
            .unwrap();
        by
    };

    let reader = app.key("dashboard", &["read"]).await;
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{k1}/ack"),
            &reader,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a read key reads only");
    let res = app
        .call(
            Method::POST,
            "/api/v1/alerts/ack",
            &reader,
            Some(&json!({"ids": [k1, k2]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!((acked_by(k1).await, acked_by(k2).await), (None, None));
    // Reading stays allowed.
    let res = app.call(Method::GET, "/api/v1/alerts", &reader, None).await;
    assert_eq!(res.status(), StatusCode::OK);

    // A signed-in viewer acknowledges through the JSON API (with the session's CSRF token).
    app.add_user(
        "oncall@example.com",
        "on call password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    let viewer = browser();
    let res = sign_in(app, &viewer, "oncall@example.com", "on call password 1").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let csrf = page_csrf(app, &viewer, "/alerts").await;
    let res = viewer
        .post(app.url(&format!("/api/v1/alerts/{k1}/ack")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"note": "on it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        acked_by(k1)
            .await
            .is_some_and(|by| by.contains("oncall@example.com"))
    );

    // An admin key acknowledges too.
    let admin = app.key("pager-bot", &["admin"]).await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/alerts/ack",
            &admin,
            Some(&json!({"ids": [k2, k3]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        acked_by(k3)
            .await
            .is_some_and(|by| by.ends_with(":pager-bot"))
    );

    // The OpenAPI document states the rule and the 403 on both routes.
    let doc = openapi_document(app).await;
    for path in ["/api/v1/alerts/{id}/ack", "/api/v1/alerts/ack"] {
        let op = &doc["paths"][path]["post"];
        let text = format!("{} {}", op["summary"], op["description"])
            .replace("\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("viewers included") && text.contains("read key"),
            "{path}: {text}"
        );
        assert!(op["responses"]["403"].is_object(), "{path}");
    }
}
crate::dual_test!(who_may_acknowledge, |c| {
    c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(std::time::Duration::ZERO);
});
