//! Provider extras through the real server: the server's own `provider-extras` job collects
//! from the fake providers, the figures and snapshot are stored, shown on the monitor page and
//! in `GET /api/v1/integrations/{id}/extras`; a slot is collected once; a provider answering
//! garbage fails only its own collection, and no key reaches a stored row.

use opsdeck::health::monitor::{MonitorSpec, Secret};
use opsdeck::simulators::providers::{Behaviour, FakeProviders};

use crate::helpers::{Backend, browser, sign_in_admin, spawn_app_with};

const KEY: &str = "prov_key_8c1d77";
const ACCOUNT: &str = "AC77aa00extras";

fn monitor(name: &str, kind: &str, base: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        kind: kind.into(),
        target: base.into(),
        // A day apart: the health checks stay out of the way of this test.
        interval: Some("24h".into()),
        account: (kind == "twilio").then(|| ACCOUNT.to_string()),
        key: Some(Secret(KEY.into())),
        // A day: no slot boundary falls inside the test, so it knows which runs happen.
        extras_interval: Some("24h".into()),
        ..Default::default()
    }
}

async fn extras_stored_and_shown(backend: Backend) {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let monitors = vec![
        monitor("automations", "n8n", &base),
        monitor("sms", "twilio", &base),
        MonitorSpec {
            extras_interval: Some("off".into()),
            ..monitor("quiet", "n8n", &base)
        },
    ];
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = monitors).await else {
        return;
    };
    let key = app.key("viewer", &["read"]).await;
    let ids: Vec<(i64, String)> = app
        .state
        .store
        .fetch_all(
            "SELECT id, name FROM monitors ORDER BY id",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let id_of = |name: &str| {
        ids.iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
            .unwrap()
    };
    let (n8n, twilio, quiet) = (id_of("automations"), id_of("sms"), id_of("quiet"));
    let extras = |id: i64| {
        let app = &app;
        let key = &key;
        async move {
            let res = app
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/integrations/{id}/extras"),
                    key,
                    None,
                )
                .await;
            assert_eq!(res.status(), reqwest::StatusCode::OK);
            res.json::<serde_json::Value>().await.unwrap()
        }
    };

    // The server's job runs its first step at start: wait for both collections.
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        body = extras(twilio).await;
        if !body["collected_at"].is_null() && !extras(n8n).await["collected_at"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body["snapshot"]["provider"], "twilio", "{body}");
    assert_eq!(body["interval_s"], 86_400);
    assert_eq!(body["last_run"]["state"], "ok", "{body}");
    assert_eq!(body["readings"]["twilio.sms.delivered_rate"], 2.0 / 3.0);
    assert_eq!(body["snapshot"]["sms"]["cost_per_unit"], "0.006667");
    let body = extras(n8n).await;
    assert_eq!(body["snapshot"]["provider"], "n8n", "{body}");
    assert_eq!(body["readings"]["n8n.workflow.wf1.success_rate"], 0.75);
    assert_eq!(body["snapshot"]["failures"][0]["node"], "HTTP Request");
    // Off: never collected, and says so.
    let body = extras(quiet).await;
    assert!(
        body["interval_s"].is_null() && body["collected_at"].is_null(),
        "{body}"
    );

    // A slot is collected once: the current one is taken, the next one runs once.
    let (store, master) = (&app.state.store, &app.state.master_key);
    let client = opsdeck::health::checks::client();
    let now = opsdeck::store::now_ms();
    let ran = opsdeck::health::extras::run_due(store, master, &client, now)
        .await
        .unwrap();
    assert_eq!(ran, 0);
    fake.set(
        opsdeck::health::providers::Provider::N8n,
        Behaviour::Garbage,
    );
    let later = now + 86_400_000;
    // A day later, with a day's new traffic.
    fake.figures(|f| {
        f.extras = opsdeck::simulators::providers_extras::ExtrasData::sample(later);
    });
    let ran = opsdeck::health::extras::run_due(store, master, &client, later)
        .await
        .unwrap();
    assert_eq!(ran, 2, "n8n and twilio, not the one switched off");
    let ran = opsdeck::health::extras::run_due(store, master, &client, later)
        .await
        .unwrap();
    assert_eq!(ran, 0);
    // n8n answered garbage: that collection failed, saying why; Twilio's went on; the
    // previous n8n figures are still what is shown.
    let body = extras(n8n).await;
    assert_eq!(body["last_run"]["state"], "failed", "{body}");
    assert_eq!(
        body["last_run"]["error"],
        "n8n workflows: the answer is not JSON"
    );
    assert_eq!(body["readings"]["n8n.workflow.wf1.success_rate"], 0.75);
    assert_eq!(extras(twilio).await["last_run"]["state"], "ok");

    // The figures are time series in the readings route too.
    let res = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/integrations/{twilio}/readings?days=1"),
            &key,
            None,
        )
        .await;
    let readings: serde_json::Value = res.json().await.unwrap();
    let series = readings["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "twilio.sms.delivered_rate")
        .cloned()
        .expect("a series");
    assert_eq!(series["points"].as_array().unwrap().len(), 2, "{series}");

    // The page shows each provider's tables.
    let admin = browser();
    sign_in_admin(&app, &admin).await;
    let page = |id: i64| {
        let admin = admin.clone();
        let url = app.url(&format!("/integrations/{id}"));
        async move { admin.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let html = page(n8n).await;
    for shown in [
        "Sync CRM",
        "75.0 %",
        "3.75 s",
        "refused the connection",
        "failed: n8n workflows: the answer is not JSON",
    ] {
        assert!(html.contains(shown), "n8n page lacks {shown:?}");
    }
    let html = page(twilio).await;
    for shown in ["0.006667 USD per message", "0.013 USD per minute", "66.7 %"] {
        assert!(html.contains(shown), "twilio page lacks {shown:?}");
    }
    assert!(page(quiet).await.contains("Collected off"));

    // No key in any stored row.
    let (leaks,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM provider_extras WHERE snapshot LIKE $1 OR error LIKE $1",
            opsdeck::args![format!("%{KEY}%")],
        )
        .await
        .unwrap();
    assert_eq!(leaks, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extras_stored_and_shown_sqlite() {
    extras_stored_and_shown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extras_stored_and_shown_postgres() {
    extras_stored_and_shown(Backend::Postgres).await;
}
