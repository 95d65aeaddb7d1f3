//! OAuth tokens against the real server and store, with Google and Meta faked on their real
//! paths: refresh success, `invalid_grant` as terminal, backoff after transient failures, Meta's
//! exchange with its two expiries, warnings at the configured horizon, the bulk refresh
//! endpoint, the token monitor kinds, and secrets kept out of every answer.

use opsdeck::health::checks::{self, Verdict};
use opsdeck::health::monitor::MonitorSpec;
use opsdeck::simulators::oauth::FakeOauth;
use opsdeck::store::now_ms;
use opsdeck::tokens::{self, TokenState, job, store};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::dual_test;
use crate::helpers::TestApp;

const CLIENT_ID: &str = "123-fake.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-client-secret-x1";
const APP_ID: &str = "1020304050";
const APP_SECRET: &str = "meta-app-secret-y2";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// The fake token endpoints listen on loopback, which token URLs reach only where the operator
/// allows private targets.
fn allow_local_token_endpoints(c: &mut opsdeck::config::Config) {
    c.alerts.allow_private_targets = true;
}

async fn fake() -> (FakeOauth, String) {
    let fake = FakeOauth::new(CLIENT_ID, CLIENT_SECRET, APP_ID, APP_SECRET);
    let (base, _task) = fake.start().await.expect("fake starts");
    (fake, base)
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn create(app: &TestApp, key: &str, body: serde_json::Value) -> reqwest::Response {
    app.call(Method::POST, "/api/v1/tokens", key, Some(&body))
        .await
}

fn google(name: &str, base: &str, refresh_token: &str, expires_at: i64) -> serde_json::Value {
    json!({
        "name": name, "provider": "google", "token_url": format!("{base}/token"),
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "access_token": "ya29.initial-access-token", "refresh_token": refresh_token,
        "expires_at": iso(expires_at), "scopes": ["https://www.googleapis.com/auth/calendar.readonly"],
        "owner": "ops@example.com",
    })
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

async fn plain(app: &TestApp, name: &str) -> store::Plain {
    store::get_plain(&app.state.store, name)
        .await
        .expect("read")
        .expect("credential exists")
}

async fn secrets(app: &TestApp, name: &str) -> store::Secrets {
    store::opened(&app.state.store, &app.state.master_key)
        .await
        .expect("open")
        .into_iter()
        .find(|(p, _)| p.name == name)
        .expect("credential exists")
        .1
}

async fn run_job(app: &TestApp, now: i64) -> Vec<job::Report> {
    job::refresh_due(
        &app.state.store,
        &app.state.master_key,
        &app.state.tokens,
        now,
    )
    .await
    .expect("job step")
}

fn monitor(kind: &str, base: &str, credential: &str) -> opsdeck::health::monitor::Monitor {
    MonitorSpec {
        name: format!("{kind} check"),
        kind: kind.into(),
        target: base.into(),
        credential: Some(credential.into()),
        timeout: Some("5s".into()),
        ..Default::default()
    }
    .validate()
    .expect("valid token monitor")
}

fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{s:?} leaked into: {text}");
    }
}

async fn refresh_success_then_invalid_grant(app: &TestApp) {
    let (fake, base) = fake().await;
    fake.add_refresh_token("1//rt-good");
    let admin = app.key("ops", &["admin"]).await;
    let now = now_ms();
    let res = create(
        app,
        &admin,
        google("workspace", &base, "1//rt-good", now + 5 * MINUTE),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let text = res.text().await.unwrap();
    assert_no_secrets(&text, &["1//rt-good", CLIENT_SECRET, "ya29.initial"]);
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            shown["has_refresh_token"].as_bool(),
            shown["state"].as_str()
        ),
        (Some(true), Some("ok"))
    );

    // Five minutes left of an hour-long token: due. The new token is stored sealed, the expiry
    // moves to ~1 h out, Google's missing refresh_token keeps the old one, the log has a row.
    let reports = run_job(app, now).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].outcome, "refreshed", "{reports:?}");
    assert_eq!(fake.count("POST /token"), 1);
    let p = plain(app, "workspace").await;
    let expires = p.expires_at.expect("expiry known");
    assert!(
        (now + 3_590_000..=now_ms() + 3_600_000).contains(&expires),
        "{expires} vs {now}"
    );
    let s = secrets(app, "workspace").await;
    let token = s.access_token.clone().unwrap();
    assert!(token.starts_with("ya29.a0fake"), "{token}");
    assert_eq!(s.refresh_token.as_deref(), Some("1//rt-good"));
    let (sealed,): (Vec<u8>,) = app
        .state
        .store
        .fetch_one("SELECT secrets_sealed FROM credentials", opsdeck::args![])
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("ya29"),
        "tokens are stored sealed"
    );
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM token_refresh_log WHERE outcome = 'refreshed'"
        )
        .await,
        1
    );
    // Not due again until its last ten minutes.
    assert!(run_job(app, now + 30 * MINUTE).await.is_empty());
    assert_eq!(fake.count("POST /token"), 1);

    // The token monitors read with the refreshed token from the vault.
    let client = checks::outbound();
    let vault = Some(&*app.state.tokens.vault);
    for kind in ["google_oauth", "google_calendar"] {
        let r = checks::run_with(&monitor(kind, &base, "workspace"), &client, vault).await;
        assert_eq!(r.verdict, Verdict::Up, "{kind}: {r:?}");
    }
    let r = checks::run_with(&monitor("google_oauth", &base, "workspace"), &client, vault).await;
    assert!(
        r.readings
            .iter()
            .any(|(n, v)| n == "expires_in_seconds" && *v > 3000.0),
        "{r:?}"
    );
    // An access token expired at Google (revoked by the user): down, with no token in the reason.
    fake.expire_access_token(&token);
    let r = checks::run_with(
        &monitor("google_calendar", &base, "workspace"),
        &client,
        vault,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Down);
    let why = r.error.unwrap_or_default();
    assert!(why.contains("401") && why.contains("workspace"), "{why}");
    assert_no_secrets(&why, &[&token]);
    let r = checks::run_with(&monitor("google_oauth", &base, "nobody"), &client, vault).await;
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("no credential named \"nobody\"")),
        "{r:?}"
    );

    // Revoked: invalid_grant is terminal and never retried by the job.
    fake.revoke_refresh_token("1//rt-good");
    let reports = run_job(app, expires - 5 * MINUTE).await;
    assert_eq!(reports[0].outcome, "invalid_grant", "{reports:?}");
    assert_eq!(reports[0].state, TokenState::ReauthorizationRequired);
    assert_eq!(fake.count("POST /token"), 2);
    for later in [expires, expires + HOUR, expires + 48 * HOUR] {
        assert!(run_job(app, later).await.is_empty());
    }
    assert_eq!(
        fake.count("POST /token"),
        2,
        "invalid_grant is never retried"
    );
    let status = tokens::status(&app.state.store, now_ms()).await.unwrap();
    assert_eq!(status[0].state, TokenState::ReauthorizationRequired);
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("invalid_grant") && e.contains("expired or revoked")),
        "{status:?}"
    );
    let r = checks::run_with(&monitor("google_oauth", &base, "workspace"), &client, vault).await;
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("re-authorization")),
        "{r:?}"
    );
    // A manual refresh skips it too, and the API shows the log without secrets.
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens/refresh?name=workspace",
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["outcome"], "skipped", "{body}");
    assert_eq!(fake.count("POST /token"), 2);
    let res = app
        .call(Method::GET, "/api/v1/tokens/workspace", &admin, None)
        .await;
    let text = res.text().await.unwrap();
    assert_no_secrets(&text, &["1//rt-good", CLIENT_SECRET, &token]);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["state"], "reauthorization_required", "{body}");
    let outcomes: Vec<&str> = body["refreshes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["invalid_grant", "refreshed"]);
}
dual_test!(
    refresh_success_then_invalid_grant,
    super::allow_local_token_endpoints
);

async fn transient_failures_are_retried_with_backoff(app: &TestApp) {
    let (fake, base) = fake().await;
    fake.add_refresh_token("1//rt-flaky");
    let admin = app.key("ops", &["admin"]).await;
    let now = now_ms();
    let res = create(
        app,
        &admin,
        google("flaky", &base, "1//rt-flaky", now + 2 * MINUTE),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    fake.set_failing(true);
    let reports = run_job(app, now).await;
    assert_eq!(reports[0].outcome, "failed", "{reports:?}");
    assert!(
        reports[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "{reports:?}"
    );
    let p = plain(app, "flaky").await;
    assert_eq!(p.state, "refresh_failing");
    let next = p.next_attempt_at.expect("a retry is scheduled");
    assert!(next > now && next <= now + 2 * MINUTE, "{next} vs {now}");
    // Not before the backoff ends.
    assert!(run_job(app, now + 30_000).await.is_empty());
    assert_eq!(fake.count("POST /token"), 1);
    fake.set_failing(false);
    let reports = run_job(app, next).await;
    assert_eq!(reports[0].outcome, "refreshed", "{reports:?}");
    let p = plain(app, "flaky").await;
    assert_eq!((p.state.as_str(), p.failures), ("ok", 0));
    assert_eq!(
        count(app, "SELECT COUNT(*) FROM token_refresh_log").await,
        2
    );
}
dual_test!(
    transient_failures_are_retried_with_backoff,
    super::allow_local_token_endpoints
);

async fn meta_exchange_reads_both_expiries(app: &TestApp) {
    let (fake, base) = fake().await;
    let now = now_ms();
    fake.add_access_token("EAAshort-lived", now / 1000 + 3600);
    // Data access runs out in two days, long before the 60-day token.
    let data_access = now / 1000 + 2 * 86_400;
    fake.set_meta_data_access_expires_at(data_access);
    let admin = app.key("ops", &["admin"]).await;
    let res = create(
        app,
        &admin,
        json!({"name": "ads", "provider": "meta",
            "token_url": format!("{base}/v25.0/oauth/access_token"),
            "client_id": APP_ID, "client_secret": APP_SECRET, "access_token": "EAAshort-lived",
            "warn_before": "3d"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let reports = run_job(app, now).await;
    assert_eq!(reports[0].outcome, "refreshed", "{reports:?}");
    assert_eq!(fake.count("GET /v25.0/oauth/access_token"), 1);
    assert_eq!(fake.count("GET /v25.0/debug_token"), 1);
    let p = plain(app, "ads").await;
    let expires = p.expires_at.expect("expiry from debug_token");
    assert!(expires > now + 59 * 24 * HOUR, "{expires}");
    assert_eq!(p.data_access_expires_at, Some(data_access * 1000));
    let s = secrets(app, "ads").await;
    assert!(
        s.access_token
            .as_deref()
            .is_some_and(|t| t.starts_with("EAAGfake"))
    );
    // Whichever comes first: data access, inside the 3-day window.
    let status = tokens::status(&app.state.store, now_ms()).await.unwrap();
    assert_eq!(status[0].effective_expiry, Some(data_access * 1000));
    assert_eq!(status[0].state, TokenState::Expiring);
    // The meta monitor: debug_token, degraded by the expiry, usage headers as readings.
    let r = checks::run_with(
        &monitor("meta", &format!("{base}/v25.0"), "ads"),
        &checks::outbound(),
        Some(&app.state.tokens.vault),
    )
    .await;
    assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
    let reading = |n: &str| r.readings.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    assert_eq!(reading("app_call_count"), Some(12.0));
    assert!(
        reading("graph_usage_percent").is_some_and(|p| p >= 12.0),
        "{r:?}"
    );
    assert_eq!(reading("token_expires_at"), Some(data_access as f64));
    assert!(r.headers.iter().any(|(k, _)| k == "x-app-usage"), "{r:?}");
    // An expired short-lived token cannot be exchanged: OAuthException 190 is terminal.
    let res = create(
        app,
        &admin,
        json!({"name": "stale", "provider": "meta",
            "token_url": format!("{base}/v25.0/oauth/access_token"),
            "client_id": APP_ID, "client_secret": APP_SECRET, "access_token": "EAAexpired"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let reports = run_job(app, now).await;
    let stale = reports
        .iter()
        .find(|r| r.name == "stale")
        .expect("attempted");
    assert_eq!(stale.outcome, "invalid_grant", "{reports:?}");
    assert!(
        stale.error.as_deref().is_some_and(|e| e.contains("190")),
        "{stale:?}"
    );
    assert_no_secrets(
        &format!("{reports:?}"),
        &[APP_SECRET, "EAAexpired", "EAAGfake"],
    );
}
dual_test!(
    meta_exchange_reads_both_expiries,
    super::allow_local_token_endpoints
);

async fn expiry_warnings_at_the_configured_horizon(app: &TestApp) {
    let admin = app.key("ops", &["admin"]).await;
    let now = now_ms();
    let res = create(
        app,
        &admin,
        json!({"name": "crm", "provider": "oauth2", "token_url": "https://auth.example.com/token",
            "client_id": "opsdeck", "access_token": "crm-access-token-z3",
            "expires_at": iso(now + 3 * HOUR), "warn_before": "2h"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let at = |t: i64| {
        let store = app.state.store.clone();
        async move { tokens::status(&store, t).await.unwrap()[0].state }
    };
    assert_eq!(at(now).await, TokenState::Ok);
    assert_eq!(at(now + HOUR - 2000).await, TokenState::Ok);
    assert_eq!(at(now + HOUR + 1000).await, TokenState::Expiring);
    assert_eq!(at(now + 3 * HOUR + 1000).await, TokenState::Expired);
    // The job logs the warning once per expiry (an access-only credential is never refreshed).
    assert!(run_job(app, now).await.is_empty());
    assert_eq!(plain(app, "crm").await.warned_for, None);
    run_job(app, now + HOUR + 1000).await;
    let warned = plain(app, "crm").await.warned_for;
    assert!(warned.is_some());
    assert_eq!(
        count(app, "SELECT COUNT(*) FROM token_refresh_log").await,
        0
    );
}
dual_test!(
    expiry_warnings_at_the_configured_horizon,
    super::allow_local_token_endpoints
);

async fn bulk_refresh_is_for_admins(app: &TestApp) {
    let (fake, base) = fake().await;
    fake.add_refresh_token("1//rt-a");
    let admin = app.key("ops", &["admin"]).await;
    let viewer = app.key("viewer", &["read"]).await;
    let far = now_ms() + 50 * MINUTE;
    for body in [
        google("a", &base, "1//rt-a", far),
        google("b", &base, "1//rt-revoked", far),
        json!({"name": "c", "provider": "oauth2", "token_url": "https://auth.example.com/token",
            "access_token": "c-access-token"}),
    ] {
        assert_eq!(
            create(app, &admin, body).await.status(),
            StatusCode::CREATED
        );
    }
    for (method, path) in [
        (Method::POST, "/api/v1/tokens/refresh"),
        (Method::GET, "/api/v1/tokens"),
        (Method::GET, "/api/v1/tokens/a"),
        (Method::DELETE, "/api/v1/tokens/a"),
    ] {
        let res = app.call(method, path, &viewer, None).await;
        crate::helpers::error_body(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    assert_eq!(fake.count("POST /token"), 0);
    let res = app
        .call(Method::POST, "/api/v1/tokens/refresh", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert_no_secrets(&text, &["1//rt-a", "1//rt-revoked", CLIENT_SECRET, "ya29"]);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let outcomes: Vec<(&str, &str)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [("a", "refreshed"), ("b", "invalid_grant"), ("c", "skipped")]
    );
    let list = app.call(Method::GET, "/api/v1/tokens", &admin, None).await;
    let text = list.text().await.unwrap();
    assert_no_secrets(&text, &["1//rt-a", CLIENT_SECRET, "ya29", "c-access-token"]);
    let actions = app.audit_actions().await;
    assert_eq!(
        actions.iter().filter(|a| *a == "credential.create").count(),
        3
    );
    assert!(actions.iter().any(|a| a == "credential.refresh"));
    let res = app
        .call(Method::DELETE, "/api/v1/tokens/c", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(
        app.audit_actions()
            .await
            .iter()
            .any(|a| a == "credential.delete")
    );
    assert_eq!(count(app, "SELECT COUNT(*) FROM credentials").await, 2);
}
dual_test!(
    bulk_refresh_is_for_admins,
    super::allow_local_token_endpoints
);

async fn bad_input_is_refused_with_the_field_named(app: &TestApp) {
    let admin = app.key("ops", &["admin"]).await;
    let good = json!({"name": "x", "provider": "google", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "refresh_token": "1//rt-secret-q"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("provider", json!("github")), "provider"),
        (with("token_url", json!("not a url")), "token_url"),
        (with("expires_at", json!("tomorrow")), "expires_at"),
        (with("warn_before", json!("0s")), "warn_before"),
        (
            json!({"name": "m", "provider": "meta", "client_id": APP_ID, "access_token": "EAAx"}),
            "client_secret",
        ),
    ] {
        let res = create(app, &admin, body).await;
        let err =
            crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        let detail = err["detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{field}: {detail}");
        assert_no_secrets(detail, &["1//rt-secret-q", CLIENT_SECRET]);
    }
    let res = create(
        app,
        &admin,
        json!({"name": "x", "provider": "google", "shh": 1}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count(app, "SELECT COUNT(*) FROM credentials").await, 0);
    // Refreshing a credential that has no refresh token names the field and stores nothing.
    let res = create(
        app,
        &admin,
        json!({"name": "plain", "provider": "google", "access_token": "ya29.only"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens/refresh?name=plain",
            &admin,
            None,
        )
        .await;
    let err = crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert!(
        err["detail"].as_str().unwrap().starts_with("refresh_token"),
        "{err}"
    );
    let res = app
        .call(
            Method::POST,
            "/api/v1/tokens/refresh?name=ghost",
            &admin,
            None,
        )
        .await;
    crate::helpers::error_body(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        count(app, "SELECT COUNT(*) FROM token_refresh_log").await,
        0
    );
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'credential.refresh'"
        )
        .await,
        0
    );
    // A duplicate name is a conflict.
    let res = create(
        app,
        &admin,
        json!({"name": "plain", "provider": "google", "access_token": "ya29.other"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}
dual_test!(
    bad_input_is_refused_with_the_field_named,
    super::allow_local_token_endpoints
);

async fn token_status_tab_and_grid_column(app: &TestApp) {
    let (fake, base) = fake().await;
    let now = now_ms();
    fake.add_access_token("EAAlong-lived", now / 1000 + 5 * 3600);
    let admin = app.key("ops", &["admin"]).await;
    let res = create(
        app,
        &admin,
        json!({"name": "ads", "provider": "meta", "owner": "growth team",
            "token_url": format!("{base}/v25.0/oauth/access_token"),
            "client_id": APP_ID, "client_secret": APP_SECRET, "access_token": "EAAlong-lived",
            "expires_at": iso(now + 5 * HOUR)}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // A meta monitor checked now: the grid's token expiry comes from its reading.
    let res = app
        .call(
            Method::POST,
            "/api/v1/integrations",
            &admin,
            Some(&json!({"name": "Facebook Ads", "kind": "meta",
                "target": format!("{base}/v25.0"), "credential": "ads", "interval": "24h"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/integrations/{id}/check"),
            &admin,
            None,
        )
        .await;
    let checked: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        checked["verdict"], "degraded",
        "expires within 24 h: {checked}"
    );
    let row: serde_json::Value = app
        .call(
            Method::GET,
            &format!("/api/v1/integrations/{id}"),
            &admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        row["token_expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with('2')),
        "{row}"
    );

    let browser = crate::helpers::browser();
    crate::helpers::sign_in_admin(app, &browser).await;
    let page = browser
        .get(app.url("/integrations/tokens"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("growth team") && page.contains(">expiring<"),
        "{page}"
    );
    assert!(page.contains("Refresh all") && page.contains("Refresh now"));
    assert_no_secrets(&page, &["EAAlong-lived", APP_SECRET]);
    let grid = browser
        .get(app.url("/integrations"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        grid.contains("class=\"token-expiry\"><time"),
        "the grid shows the expiry"
    );
    // "Refresh now" is a CSRF form: without the token nothing happens.
    let res = app
        .post_form(&browser, "/integrations/tokens/refresh", &[("name", "ads")])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(fake.count("GET /v25.0/oauth/access_token"), 0);
    let csrf = crate::helpers::csrf_from(&page);
    let res = app
        .post_form(
            &browser,
            "/integrations/tokens/refresh",
            &[("csrf_token", &csrf), ("name", "ads")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(fake.count("GET /v25.0/oauth/access_token"), 1);
    let after = plain(app, "ads").await;
    assert_eq!(after.last_outcome.as_deref(), Some("refreshed"));
}
dual_test!(
    token_status_tab_and_grid_column,
    super::allow_local_token_endpoints
);
