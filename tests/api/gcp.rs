//! The gcp monitor kind through the real server against the local Google Cloud fake: a
//! monitor with the fake's service-account key goes up, its token is exchanged once and shared
//! by checks and extras, its Cloud Monitoring series are collected as extras and shown; a key
//! signed by another key is down with Google's message; bad key material is refused naming
//! the field; the definition read back masks the key, and no key material reaches a row.

use opsdeck::health::monitor::{MonitorSpec, Secret};
use opsdeck::simulators::gcp::FakeGcp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, browser, sign_in_admin, spawn_app_with};

async fn gcp_end_to_end(backend: Backend) {
    let fake = FakeGcp::new().expect("a key");
    let (base, _server) = fake.start().await.expect("fake starts");
    let key_file = fake.key_file();
    let monitor = MonitorSpec {
        name: "cloud".into(),
        kind: "gcp".into(),
        target: base.clone(),
        // A day apart: the test makes the checks it counts.
        interval: Some("24h".into()),
        key: Some(Secret(key_file.clone())),
        extras_interval: Some("24h".into()),
        ..Default::default()
    };
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = vec![monitor]).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let (id,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT id FROM monitors WHERE name = 'cloud'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let get = |path: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = app.call(Method::GET, &path, &admin, None).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    let check = |id: i64| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = app
                .call(
                    Method::POST,
                    &format!("/api/v1/integrations/{id}/check"),
                    &admin,
                    None,
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };

    // The server's extras job collects at start: the series, their latest values.
    let mut extras = Value::Null;
    for _ in 0..100 {
        extras = get(format!("/api/v1/integrations/{id}/extras")).await;
        if !extras["collected_at"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(extras["last_run"]["state"], "ok", "{extras}");
    assert_eq!(extras["snapshot"]["provider"], "gcp", "{extras}");
    assert_eq!(extras["snapshot"]["project"], "opsdeck-demo");
    assert_eq!(extras["snapshot"]["series"].as_array().unwrap().len(), 6);
    assert_eq!(
        extras["readings"]["gcp.gce_instance.7310000000000000003.instance_cpu_utilization"], 0.88,
        "{extras}"
    );
    assert_eq!(
        extras["readings"]["gcp.instance_network_received_bytes_count.series"],
        3.0
    );

    // Two checks: up, on the token the extras already hold.
    for _ in 0..2 {
        let r = check(id).await;
        assert_eq!(r["verdict"], "up", "{r}");
    }
    assert_eq!(
        fake.token_requests(),
        1,
        "one exchange for checks and extras"
    );

    // A key of the same account signed by another key: created (it is a valid key), and down
    // with Google's own message.
    let stranger = json!({
        "name": "cloud-stranger", "kind": "gcp", "target": base, "interval": "24h",
        "key": fake.stranger_key_file().unwrap(), "extras_interval": "off",
    });
    let res = app
        .call(
            Method::POST,
            "/api/v1/integrations",
            &admin,
            Some(&stranger),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let stranger_id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = check(stranger_id).await;
    assert_eq!(r["verdict"], "down", "{r}");
    assert_eq!(
        r["error"],
        "token exchange: HTTP 400: invalid_grant: Invalid JWT Signature."
    );

    // Bad key material is refused at once, naming the field.
    let pem_start = key_file.find("-----BEGIN").unwrap();
    for (key, says) in [
        (
            key_file.replace("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY"),
            "key: not a service-account key: private_key is not a PEM PKCS#8 key",
        ),
        (
            "AIzaSyA-an-api-key".to_string(),
            "key: not a service-account key: not JSON",
        ),
        (
            format!("{}garbage\"}}", &key_file[..pem_start]),
            "key: not a service-account key: private_key",
        ),
    ] {
        let mut bad = stranger.clone();
        bad["name"] = json!("cloud-bad");
        bad["key"] = json!(key);
        let res = app
            .call(Method::POST, "/api/v1/integrations", &admin, Some(&bad))
            .await;
        let err =
            crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        let detail = err["detail"].as_str().unwrap();
        assert!(detail.starts_with(says), "{detail}");
        assert!(!detail.contains("MII"), "no key material in {detail}");
    }

    // The definition read back masks the key file.
    let def = get(format!("/api/v1/integrations/{id}/definition")).await;
    assert_eq!(def["definition"]["key"], "********", "{def}");
    assert_eq!(def["definition"]["kind"], "gcp");
    assert!(!def.to_string().contains("PRIVATE KEY"));

    // The monitor page shows the series table.
    let page = browser();
    sign_in_admin(&app, &page).await;
    let html = crate::helpers::page_text(&app, &page, &format!("/integrations/{id}")).await;
    for shown in ["worker-1", "88.0 %", "opsdeck-demo", "europe-west1-b"] {
        assert!(html.contains(shown), "the page lacks {shown:?}");
    }

    // No key material, assertion or token in any stored row.
    let store = &app.state.store;
    for (sql, what) in [
        (
            "SELECT COUNT(*) FROM provider_extras WHERE snapshot LIKE $1 OR error LIKE $1",
            "extras",
        ),
        (
            "SELECT COUNT(*) FROM check_results WHERE error LIKE $1",
            "results",
        ),
    ] {
        for needle in ["%PRIVATE%", "%ya29%", "%eyJ%"] {
            let (n,): (i64,) = store
                .fetch_one(sql, opsdeck::args![needle.to_string()])
                .await
                .unwrap();
            assert_eq!(n, 0, "{what} hold {needle}");
        }
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_end_to_end_sqlite() {
    gcp_end_to_end(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_end_to_end_postgres() {
    gcp_end_to_end(Backend::Postgres).await;
}
