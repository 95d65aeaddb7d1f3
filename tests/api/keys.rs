//! API keys and scopes, the per-key rate limit, the audit log and encrypted secrets, through
//! the JSON API.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::dual_test;
use crate::helpers::*;

async fn api_keys_are_scoped(app: &TestApp) {
    let c = api();
    let overview = app.url("/api/v1/metrics/overview?period=30d");
    error_body(
        c.get(&overview).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    for bad in [
        "Bearer opsk_nope_nope",
        "Bearer ",
        "Basic YTpi",
        "Bearer opsk_",
    ] {
        let res = c
            .get(&overview)
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        error_body(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }

    let read = app.key("dashboard", &["read"]).await;
    let res = c.get(&overview).bearer_auth(&read).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["period"]["from"].is_string() && body["period"]["to"].is_string());
    let figures = body["figures"].as_object().unwrap();
    for name in [
        "mrr",
        "arr",
        "paying_customers",
        "new_mrr",
        "churned_mrr",
        "customer_churn_rate",
        "nrr",
        "arpa",
        "ltv",
        "payment_success_rate",
        "dispute_rate",
        "net_revenue",
        "gross_margin",
        "active_users",
    ] {
        assert!(
            figures.get(name).is_some_and(|v| v.is_null()),
            "{name} is present and null until its capability lands"
        );
    }
    // Metering's figures are real from the start: nothing ingested yet.
    assert_eq!(
        figures["api_calls"],
        serde_json::json!({"value": 0.0, "previous": 0.0, "change_pct": null})
    );
    assert_eq!(
        figures["provider_cost"]["value"],
        serde_json::json!({"amount": 0, "currency": "usd"})
    );
    let res = app
        .call(
            Method::GET,
            "/api/v1/metrics/overview?period=fortnight",
            &read,
            None,
        )
        .await;
    error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    for scopes in [&["ingest"][..], &["tenant:cus_42"][..]] {
        let key = app.key("narrow", scopes).await;
        let res = c.get(&overview).bearer_auth(&key).send().await.unwrap();
        let body = error_body(res, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(body["detail"].as_str().unwrap().contains("read"), "{body}");
    }
    let res = app.call(Method::GET, "/api/v1/keys", &read, None).await;
    error_body(res, StatusCode::FORBIDDEN, "forbidden").await;

    // An admin key manages keys; the secret is returned once and never listed.
    let admin = app.key("ops", &["admin"]).await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/keys",
            &admin,
            Some(&json!({"name": "tenant portal", "scopes": ["tenant:cus_42"]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("opsk_"));
    assert_eq!(created["scopes"], json!(["tenant:cus_42"]));
    let listed = app
        .call(Method::GET, "/api/v1/keys", &admin, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(&secret) && listed.contains("tenant portal"));

    // Bad scopes are refused and create nothing.
    let count = opsdeck::access::keys::list(&app.state.store)
        .await
        .unwrap()
        .len();
    for scopes in [
        json!(["root"]),
        json!([]),
        json!(["tenant:a", "read"]),
        json!(["tenant:"]),
    ] {
        let res = app
            .call(
                Method::POST,
                "/api/v1/keys",
                &admin,
                Some(&json!({"name": "x", "scopes": scopes})),
            )
            .await;
        error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    }
    assert_eq!(
        opsdeck::access::keys::list(&app.state.store)
            .await
            .unwrap()
            .len(),
        count
    );

    // Revocation takes effect on the next request.
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", &secret, None)
            .await
            .status(),
        StatusCode::OK
    );
    let res = app
        .call(Method::DELETE, &format!("/api/v1/keys/{id}"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    error_body(
        app.call(Method::GET, "/api/v1/me", &secret, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    let res = app
        .call(Method::DELETE, &format!("/api/v1/keys/{id}"), &admin, None)
        .await;
    error_body(res, StatusCode::NOT_FOUND, "not_found").await;
}
dual_test!(api_keys_are_scoped);

async fn api_requests_are_rate_limited_per_key(app: &TestApp) {
    let a = app.key("a", &["read"]).await;
    let b = app.key("b", &["read"]).await;
    for _ in 0..3 {
        assert_eq!(
            app.call(Method::GET, "/api/v1/me", &a, None).await.status(),
            StatusCode::OK
        );
    }
    let res = app.call(Method::GET, "/api/v1/me", &a, None).await;
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    error_body(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/me", &b, None).await.status(),
        StatusCode::OK
    );
}
dual_test!(
    api_requests_are_rate_limited_per_key,
    |c: &mut opsdeck::config::Config| c.access.api_requests_per_minute = 3
);

async fn admin_actions_are_audited(app: &TestApp) {
    let admin = app.key("ops", &["admin"]).await;
    let res = app.call(Method::POST, "/api/v1/users", &admin, Some(&json!({"email": "ana@example.com", "role": "viewer", "password": "a long password"}))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: serde_json::Value = res.json().await.unwrap();
    let res = app.call(Method::POST, "/api/v1/users", &admin, Some(&json!({"email": "ana@example.com", "role": "viewer", "password": "a long password"}))).await;
    error_body(res, StatusCode::CONFLICT, "conflict").await;
    let res = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{}", user["id"]),
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let audit: Vec<serde_json::Value> = app
        .call(Method::GET, "/api/v1/audit?limit=10", &admin, None)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions[..2],
        ["user.delete", "user.create"],
        "newest first, the rejected duplicate absent"
    );
    let entry = &audit[1];
    assert!(
        entry["actor"].as_str().unwrap().starts_with("key:")
            && entry["actor"].as_str().unwrap().ends_with(":ops")
    );
    assert_eq!(entry["target"], "ana@example.com");
    assert_eq!(entry["client_addr"], "127.0.0.1");
    assert!(entry["at"].as_i64().unwrap() > 1_700_000_000_000);

    let res = app
        .call(Method::GET, "/api/v1/audit?limit=0", &admin, None)
        .await;
    error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let res = app
        .call(Method::DELETE, "/api/v1/users/1", &admin, None)
        .await;
    error_body(res, StatusCode::CONFLICT, "conflict").await;
}
dual_test!(admin_actions_are_audited);

async fn secrets_are_encrypted_at_rest(app: &TestApp) {
    let admin = app.key("ops", &["admin"]).await;
    let plaintext = "sk_live_51TOPSECRETvalueXYZ";
    let res = app
        .call(
            Method::PUT,
            "/api/v1/secrets/stripe.secret_key",
            &admin,
            Some(&json!({"value": plaintext})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let listed = app
        .call(Method::GET, "/api/v1/secrets", &admin, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("stripe.secret_key") && !listed.contains(plaintext));

    let (nonce, ciphertext): (Vec<u8>, Vec<u8>) = app
        .state
        .store
        .fetch_one(
            "SELECT nonce, ciphertext FROM secrets WHERE name = $1",
            opsdeck::args!["stripe.secret_key"],
        )
        .await
        .unwrap();
    assert_eq!(nonce.len(), 12);
    assert!(
        !ciphertext
            .windows(plaintext.len())
            .any(|w| w == plaintext.as_bytes())
    );
    let back =
        opsdeck::access::secrets::get(&app.state.store, &app.state.master_key, "stripe.secret_key")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(back.expose(), plaintext);
    assert_eq!(format!("{back:?}"), "***");

    if app.backend == Backend::Sqlite {
        for file in ["opsdeck.db", "opsdeck.db-wal"] {
            if let Ok(bytes) = std::fs::read(app.data_dir.path().join(file)) {
                assert!(
                    !bytes
                        .windows(plaintext.len())
                        .any(|w| w == plaintext.as_bytes()),
                    "{file} holds no plaintext"
                );
            }
        }
    }

    for (name, body) in [
        ("Bad Name", json!({"value": "x"})),
        ("ok.name", json!({"value": ""})),
        ("ok.name", json!({"val": "x"})),
    ] {
        let res = app
            .call(
                Method::PUT,
                &format!("/api/v1/secrets/{name}"),
                &admin,
                Some(&body),
            )
            .await;
        assert!(
            res.status() == StatusCode::UNPROCESSABLE_ENTITY
                || res.status() == StatusCode::BAD_REQUEST,
            "{name}"
        );
    }
    assert_eq!(
        opsdeck::access::secrets::list(&app.state.store)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        app.audit_actions()
            .await
            .contains(&"secret.set".to_string())
    );
}
dual_test!(secrets_are_encrypted_at_rest);

async fn key_last_use_is_recorded_only_for_successful_requests(app: &TestApp) {
    let ingest = app.key("collector", &["ingest"]).await;
    let last_used = || async {
        let keys = opsdeck::access::keys::list(&app.state.store).await.unwrap();
        keys.into_iter()
            .find(|k| k.name == "collector")
            .unwrap()
            .last_used_at
    };
    // 403 (wrong scope) and 422 (bad input) are rejections: nothing may be written.
    let res = app
        .call(Method::GET, "/api/v1/metrics/overview", &ingest, None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    opsdeck::jobs::housekeeping(&app.state).await.unwrap();
    assert_eq!(last_used().await, None);

    let res = app.call(Method::GET, "/api/v1/me", &ingest, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    // (Kept in memory until a housekeeping step writes it; the background job may be that step,
    // so only the state after an explicit step is asserted.)
    opsdeck::jobs::housekeeping(&app.state).await.unwrap();
    assert!(last_used().await.is_some_and(|t| t > 1_700_000_000_000));
}
dual_test!(key_last_use_is_recorded_only_for_successful_requests);
