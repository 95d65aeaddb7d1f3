//! Operational endpoints, error shapes, body limits, security headers, OpenAPI.

use reqwest::{Method, StatusCode};

use crate::dual_test;
use crate::helpers::*;

async fn health_ready_and_metrics(app: &TestApp) {
    let c = api();
    let res = c.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ready: serde_json::Value = c
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["backend"],
        if app.backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );

    let text = c
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"opsdeck_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"opsdeck_http_request_duration_seconds_count{method="GET",route="/readyz"} 1"#
    ));
    assert!(text.contains("opsdeck_db_pool_connections{"));
    assert!(text.contains(&format!(
        "opsdeck_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}
dual_test!(health_ready_and_metrics);

async fn readyz_fails_when_migrations_are_missing(app: &TestApp) {
    app.state
        .store
        .execute("DELETE FROM _sqlx_migrations", opsdeck::args![])
        .await
        .unwrap();
    let res = api().get(app.url("/readyz")).send().await.unwrap();
    let body = error_body(res, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    let expected = format!("0/{} applied", opsdeck::store::MIGRATION_COUNT);
    assert_eq!(body["migrations"], expected.as_str());
}
dual_test!(readyz_fails_when_migrations_are_missing);

async fn errors_are_json_on_api_and_pages_elsewhere(app: &TestApp) {
    let c = api();
    error_body(
        c.get(app.url("/api/v1/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let res = c.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        res.text().await.unwrap().contains(&id),
        "the page quotes the request id"
    );
    let res = c.delete(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(
        res.headers()["allow"],
        "GET,HEAD",
        "Allow survives the error rendering"
    );
    error_body(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = c.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    error_body(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    let admin = app.key("ops", &["admin"]).await;
    let keys_before = opsdeck::access::keys::list(&app.state.store)
        .await
        .unwrap()
        .len();
    let huge = format!(
        "{{\"name\": \"{}\", \"scopes\": [\"read\"]}}",
        "x".repeat(200_000)
    );
    let res = c
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    // The rest of the body was never read: the server says it closes the connection, so the
    // pooled client does not reuse it for the next request.
    assert_eq!(res.headers()["connection"], "close");
    let body = error_body(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(body["detail"].as_str().unwrap().contains("65536"));
    let res = c
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    error_body(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = c
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .body("name=x")
        .send()
        .await
        .unwrap();
    error_body(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/keys",
            &admin,
            Some(&serde_json::json!({"name": "x"})),
        )
        .await;
    error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let res = app
        .call(Method::DELETE, "/api/v1/keys/not-a-number", &admin, None)
        .await;
    error_body(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(
        opsdeck::access::keys::list(&app.state.store)
            .await
            .unwrap()
            .len(),
        keys_before,
        "nothing written"
    );

    // Incoming request ids are kept when sane, replaced when not.
    let res = c
        .get(app.url("/api/v1/me"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = c
        .get(app.url("/api/v1/me"))
        .header("x-request-id", "<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "<script>");
}
dual_test!(errors_are_json_on_api_and_pages_elsewhere);

async fn pages_carry_security_headers(app: &TestApp) {
    let res = api().get(app.url("/signin")).send().await.unwrap();
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    for asset in [
        "/static/app.css",
        "/static/app.js",
        "/static/favicon.svg",
        "/favicon.ico",
    ] {
        let res = api().get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset} is embedded");
    }
}
dual_test!(pages_carry_security_headers);

#[tokio::test]
async fn openapi_documents_every_api_route() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let doc = openapi_document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/metrics/overview",
        "/api/v1/me",
        "/api/v1/keys",
        "/api/v1/keys/{id}",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/audit",
        "/api/v1/secrets",
        "/api/v1/secrets/{name}",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert!(paths.contains_key("/healthz") && paths.contains_key("/readyz"));
    // Every documented operation exists: without credentials an API route answers 401 (never
    // 404/405), a probe answers 200.
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = app.url(&path.replace("{id}", "1").replace("{name}", "x.y"));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = api()
                .request(m, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            if path.starts_with("/webhooks/") {
                // Receivers authenticate by signature; this one has no secret configured, and
                // says so with a 4xx a sender's log makes sense of, not a passing outage.
                let body = error_body(res, StatusCode::NOT_FOUND, "not_configured").await;
                assert!(
                    body["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("stripe.webhook_secret")),
                    "{body}"
                );
                continue;
            }
            let expected = if path.starts_with("/api/") {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(res.status(), expected, "{method} {path}");
        }
    }
    app.finish().await;
}
