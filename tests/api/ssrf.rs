//! The destination guard end to end (security issue 17): monitors, OAuth credentials and
//! webhook endpoints refuse link-local and cloud metadata destinations in every spelling when
//! they are saved, and checks and refreshes refuse them again after DNS resolution and at
//! every redirect hop; what a monitored peer sent reaches administrators only.
//!
//! DNS is the app's own guard answering a pinned name (`metadata.test`) with the metadata
//! address, so the post-resolution check under test is the product's; nothing leaves
//! loopback.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::get;
use opsdeck::access::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dual_test;
use crate::helpers::{TestApp, browser, error_body, page_text, sign_in};

const METADATA: &str = "169.254.169.254";

/// A name the app's guards resolve to the metadata address without asking DNS.
const METADATA_NAME: &str = "metadata.test";

/// The metadata and link-local addresses in every spelling the security review used, as the
/// host part of a URL or of `host:port`.
const SPELLINGS: &[&str] = &[
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "2852039166",
    "0xa9fea9fe",
    "169.254.169.254.",
    "[fd00:ec2::254]",
    "100.100.100.200",
    "169.254.1.1",
    "[fe80::1]",
];

fn pin_metadata(c: &mut opsdeck::config::Config) {
    c.pinned_hosts = vec![(METADATA_NAME.into(), METADATA.parse().unwrap())];
}

fn pin_metadata_and_allow_private(c: &mut opsdeck::config::Config) {
    pin_metadata(c);
    c.alerts.allow_private_targets = true;
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one(sql, opsdeck::args![])
        .await
        .expect("count");
    n
}

/// Serves `app` on a fresh loopback port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn redirect(to: &'static str) -> axum::routing::MethodRouter {
    get(move || async move { (AxumStatus::FOUND, [("location", to)], "") })
}

/// Creates a monitor as the admin key; answers the response.
async fn create_monitor(app: &TestApp, admin: &str, spec: &Value) -> reqwest::Response {
    app.call(Method::POST, "/api/v1/integrations", admin, Some(spec))
        .await
}

/// Creates a monitor that must be accepted, checks it now and answers the check's JSON.
async fn created_and_checked(app: &TestApp, admin: &str, spec: Value) -> Value {
    let res = create_monitor(app, admin, &spec).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{spec}");
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/check"),
            admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{spec}");
    let mut checked: Value = res.json().await.unwrap();
    checked["id"] = json!(id);
    checked
}

/// Every kind that opens a connection refuses a literal metadata or link-local target in any
/// spelling when it is saved, naming the field; nothing is stored. Loopback stays allowed.
async fn monitors_refuse_metadata_in_every_spelling(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    for host in SPELLINGS {
        let cases = [
            (
                "target",
                json!({"kind": "http", "target": format!("http://{host}/latest/meta-data/")}),
            ),
            (
                "target",
                json!({"kind": "tcp", "target": format!("{host}:80")}),
            ),
            (
                "target",
                json!({"kind": "tls", "target": format!("{host}:443")}),
            ),
            (
                "target",
                json!({"kind": "smtp", "target": format!("{host}:25")}),
            ),
            (
                "target",
                json!({"kind": "redis", "target": format!("redis://{host}:6379")}),
            ),
            (
                "target",
                json!({"kind": "postgres", "target": format!("postgres://u:pw@{host}:5432/db")}),
            ),
            (
                "target",
                json!({"kind": "bfl", "target": format!("http://{host}"), "key": "bfl-key-123456"}),
            ),
            (
                "nameserver",
                json!({"kind": "dns", "target": "example.com", "nameserver": format!("{host}:53")}),
            ),
        ];
        for (field, mut spec) in cases {
            spec["name"] = json!("metadata");
            let res = create_monitor(app, &admin, &spec).await;
            let body = error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with(&format!("{field}: destination refused: ")),
                "{spec} → {detail}"
            );
        }
    }
    assert_eq!(count(app, "SELECT COUNT(*) FROM monitors").await, 0);
    // Monitoring the LAN is the point: loopback and private targets are saved.
    for spec in [
        json!({"name": "lo", "kind": "tcp", "target": "127.0.0.1:9"}),
        json!({"name": "lan", "kind": "http", "target": "http://10.0.0.7/health"}),
    ] {
        let res = create_monitor(app, &admin, &spec).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{spec}");
    }
}
dual_test!(monitors_refuse_metadata_in_every_spelling);

/// A name that resolves to the metadata address passes validation and is refused by every
/// connecting kind when the check resolves it; an http check that a loopback peer redirects
/// there is refused at the hop, before any request to it; a provider's key never follows a
/// redirect to another host. Each check says the destination was refused.
async fn checks_refuse_metadata_after_resolution_and_redirects(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let reader = app.key("reader", &["read"]).await;
    let peer = serve(
        axum::Router::new()
            .route(
                "/to-metadata",
                redirect("http://169.254.169.254/latest/meta-data/"),
            )
            .route(
                "/to-name",
                redirect("http://metadata.test/computeMetadata/v1/"),
            )
            .route("/to-spelled", redirect("http://2852039166/latest/"))
            .route("/ok", get(|| async { "ok" })),
    )
    .await;
    let name = METADATA_NAME;
    let refused = [
        json!({"kind": "http", "target": format!("http://{name}/latest/meta-data/")}),
        json!({"kind": "http", "target": format!("{peer}/to-metadata")}),
        json!({"kind": "http", "target": format!("{peer}/to-name")}),
        json!({"kind": "http", "target": format!("{peer}/to-spelled")}),
        // With a key header, checks keep to their origin; a hop to a refused address is
        // still reported as refused rather than as the 3xx.
        json!({"kind": "http", "target": format!("{peer}/to-metadata"),
            "headers": {"X-Api-Key": "hk_5d8c2e7f4a"}}),
        json!({"kind": "tcp", "target": format!("{name}:80")}),
        json!({"kind": "tls", "target": format!("{name}:443")}),
        json!({"kind": "smtp", "target": format!("{name}:25")}),
        json!({"kind": "redis", "target": format!("redis://{name}:6379")}),
        json!({"kind": "postgres", "target": format!("postgres://u:pw@{name}:5432/db")}),
        json!({"kind": "bfl", "target": format!("http://{name}"), "key": "bfl-key-123456"}),
        json!({"kind": "dns", "target": "example.com", "nameserver": format!("{name}:53")}),
    ];
    for (i, mut spec) in refused.into_iter().enumerate() {
        spec["name"] = json!(format!("refused-{i}"));
        spec["timeout"] = json!("5s");
        let checked = created_and_checked(app, &admin, spec.clone()).await;
        assert_eq!(checked["verdict"], "down", "{spec} → {checked}");
        let error = checked["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("destination refused") && error.contains(METADATA),
            "{spec} → {error}"
        );
        // The recorded result says so to readers too.
        let id = checked["id"].as_i64().unwrap();
        let res = app
            .call(
                Method::GET,
                &format!("/api/v1/integrations/{id}/results"),
                &reader,
                None,
            )
            .await;
        let results: Value = res.json().await.unwrap();
        assert!(
            results["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("destination refused"))),
            "{results}"
        );
    }
    let checked = created_and_checked(
        app,
        &admin,
        json!({"name": "loopback", "kind": "http", "target": format!("{peer}/ok")}),
    )
    .await;
    assert_eq!(checked["verdict"], "up", "{checked}");

    // A provider monitor sends its key to its configured host only: a redirect elsewhere is
    // not followed, so the other host never sees the key.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let elsewhere = serve(axum::Router::new().fallback(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let values = headers
                .values()
                .map(|v| v.to_str().unwrap_or_default().to_string());
            log.lock().unwrap().extend(values);
            axum::Json(json!({"credits": 1}))
        }
    }))
    .await;
    let to: &'static str = Box::leak(format!("{elsewhere}/v1/credits").into_boxed_str());
    let moving =
        serve(axum::Router::new().fallback(move || async move {
            (AxumStatus::TEMPORARY_REDIRECT, [("location", to)], "")
        }))
        .await;
    let checked = created_and_checked(
        app,
        &admin,
        json!({"name": "provider", "kind": "bfl", "target": moving, "key": "bfl-key-123456"}),
    )
    .await;
    assert_eq!(checked["verdict"], "down", "{checked}");
    assert!(
        checked["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 307")),
        "{checked}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the other host was reached"
    );
}
dual_test!(
    checks_refuse_metadata_after_resolution_and_redirects,
    super::pin_metadata
);

/// What the peer sent (here, the JSON value a condition read) is shown to administrators on
/// the results route, the monitor page and the error log; read keys and viewers get which
/// condition failed.
async fn body_excerpts_reach_admins_only(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let reader = app.key("reader", &["read"]).await;
    let peer = serve(axum::Router::new().route(
        "/status",
        get(|| async { axum::Json(json!({"status": "excerpt-7f3a", "db": "internal"})) }),
    ))
    .await;
    let checked = created_and_checked(
        app,
        &admin,
        json!({"name": "status", "kind": "http", "target": format!("{peer}/status"),
            "conditions": ["[BODY].status == ok"]}),
    )
    .await;
    assert_eq!(checked["verdict"], "down");
    let id = checked["id"].as_i64().unwrap();
    let results = |key: String| async move {
        let res = app
            .call(
                Method::GET,
                &format!("/api/v1/integrations/{id}/results"),
                &key,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["results"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        results(reader.clone()).await,
        "condition failed: [BODY].status == ok"
    );
    let admin_sees = results(admin.clone()).await;
    assert!(admin_sees.contains("excerpt-7f3a"), "{admin_sees}");

    app.add_user("viewer@example.com", "viewer-password-1", Role::Viewer)
        .await;
    let viewer = browser();
    let res = sign_in(app, &viewer, "viewer@example.com", "viewer-password-1").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let admin_browser = browser();
    crate::helpers::sign_in_admin(app, &admin_browser).await;
    for path in [
        format!("/integrations/{id}"),
        "/integrations/errors".to_string(),
    ] {
        let seen = page_text(app, &viewer, &path).await;
        assert!(seen.contains("condition failed"), "{path}");
        assert!(
            !seen.contains("excerpt-7f3a"),
            "a viewer sees the excerpt on {path}"
        );
        let seen = page_text(app, &admin_browser, &path).await;
        assert!(
            seen.contains("excerpt-7f3a"),
            "an admin misses the excerpt on {path}"
        );
    }
}
dual_test!(body_excerpts_reach_admins_only);

fn credential(name: &str, token_url: &str) -> Value {
    json!({"name": name, "provider": "oauth2", "token_url": token_url,
        "client_id": "client-1", "client_secret": "client-secret-9f8e7d",
        "refresh_token": "refresh-token-6c5b4a"})
}

/// A token URL in any metadata spelling is refused when saved, naming the field; loopback is
/// refused too unless the operator allows private targets (as for webhooks).
async fn token_urls_refuse_metadata_and_private_by_default(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let mut urls: Vec<String> = SPELLINGS
        .iter()
        .map(|h| format!("http://{h}/token"))
        .collect();
    urls.push("http://127.0.0.1:9/token".into());
    urls.push("http://[::1]:9/token".into());
    for url in urls {
        let res = app
            .call(
                Method::POST,
                "/api/v1/tokens",
                &admin,
                Some(&credential("c", &url)),
            )
            .await;
        let body = error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("token_url: destination refused: "),
            "{url} → {detail}"
        );
    }
    assert_eq!(count(app, "SELECT COUNT(*) FROM credentials").await, 0);
}
dual_test!(token_urls_refuse_metadata_and_private_by_default);

/// With private targets allowed, a loopback token URL is saved; metadata stays refused when
/// saved, and a name resolving to it is refused at refresh time, before the client secret or
/// refresh token is sent.
async fn token_refreshes_refuse_metadata_after_resolution(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens",
            &admin,
            Some(&credential("local", "http://127.0.0.1:9/token")),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens",
            &admin,
            Some(&credential("spelled", "http://0xa9fea9fe/token")),
        )
        .await;
    error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens",
            &admin,
            Some(&credential("named", "http://metadata.test/token")),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens/refresh?name=named",
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let report = &body["results"][0];
    assert_eq!(report["outcome"], "failed", "{body}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("token_url refused") && error.contains(METADATA),
        "{error}"
    );
}
dual_test!(
    token_refreshes_refuse_metadata_after_resolution,
    super::pin_metadata_and_allow_private
);
