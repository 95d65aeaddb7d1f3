//! Sign-in, sessions, CSRF, login rate limits and roles, through the web pages.

use opsdeck::access::Role;
use reqwest::StatusCode;

use crate::dual_test;
use crate::helpers::*;

async fn sign_in_shows_overview_and_sign_out_ends_it(app: &TestApp) {
    let client = browser();
    let res = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/signin?next=/");

    let res = sign_in(app, &client, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("opsdeck_session="))
        .expect("session cookie set");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without public_url https: no Secure flag"
    );
    let session_value = cookie.split(';').next().unwrap().to_string();

    let page = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"));
    assert!(
        html.contains("Not measured: product analytics is not built yet."),
        "no invented figures"
    );
    for nav in [
        "Revenue",
        "Margin",
        "Usage",
        "Analytics",
        "Integrations",
        "Alerts",
        "Settings",
    ] {
        assert!(html.contains(nav), "nav has {nav}");
    }
    let res = client.get(app.url("/analytics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text().await.unwrap().contains("Not built yet"),
        "/analytics says so plainly"
    );
    // Alerts is built; with nothing firing it says so.
    let res = client.get(app.url("/alerts")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("Nothing is firing or pending."), "{html}");
    assert!(
        html.contains("integration down"),
        "the built-in rules are listed"
    );
    // Integrations is built; with no monitors it says how to declare one.
    let integrations = client.get(app.url("/integrations")).send().await.unwrap();
    assert_eq!(integrations.status(), StatusCode::OK);
    assert!(
        integrations
            .text()
            .await
            .unwrap()
            .contains("No monitors yet")
    );
    // Revenue is built; without Stripe it says how to connect rather than show invented $0s.
    let revenue = client.get(app.url("/revenue")).send().await.unwrap();
    assert_eq!(revenue.status(), StatusCode::OK);
    let revenue = revenue.text().await.unwrap();
    assert!(revenue.contains("Stripe is not connected"));
    assert!(!revenue.contains("$0.00"), "no invented figures");

    let token = csrf_from(&html);
    let res = app
        .post_form(&client, "/signout", &[("csrf_token", token.as_str())])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/signin");

    // The old cookie is dead server-side, not merely cleared in this browser.
    let res = api()
        .get(app.url("/"))
        .header("cookie", &session_value)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let actions = app.audit_actions().await;
    assert!(
        actions.contains(&"session.sign_in".to_string())
            && actions.contains(&"session.sign_out".to_string())
    );
}
dual_test!(sign_in_shows_overview_and_sign_out_ends_it);

async fn expired_sessions_are_refused(app: &TestApp) {
    let client = browser();
    sign_in_admin(app, &client).await;
    app.state
        .store
        .execute("UPDATE sessions SET expires_at = 0", opsdeck::args![])
        .await
        .unwrap();
    let res = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "expired session sends the user to sign in"
    );
    // The housekeeping job may already have pruned it; either way it must be gone now.
    opsdeck::access::sessions::prune_expired(&app.state.store, 100)
        .await
        .unwrap();
    let (left,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT COUNT(*) FROM sessions", opsdeck::args![])
        .await
        .unwrap();
    assert_eq!(left, 0, "expired sessions are pruned");
}
dual_test!(expired_sessions_are_refused);

async fn wrong_credentials_get_401_without_hint(app: &TestApp) {
    let wrong_password = sign_in(app, &browser(), ADMIN_EMAIL, "not the password").await;
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    let a = wrong_password.text().await.unwrap();
    let unknown_user = sign_in(app, &browser(), "nobody@example.com", ADMIN_PASSWORD).await;
    assert_eq!(unknown_user.status(), StatusCode::UNAUTHORIZED);
    let b = unknown_user.text().await.unwrap();
    assert!(a.contains("Invalid email or password.") && b.contains("Invalid email or password."));
    assert!(!a.contains("unknown") && !b.contains("wrong password"));
}
dual_test!(wrong_credentials_get_401_without_hint);

async fn login_failures_are_rate_limited_per_address_not_per_account(app: &TestApp) {
    let attacker = browser_from("127.0.0.1");
    for _ in 0..5 {
        assert_eq!(
            sign_in(app, &attacker, ADMIN_EMAIL, "guess guess guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The attacker's address is locked, even with the right password...
    let res = sign_in(app, &attacker, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    // ...but the admin, from another address, still signs in: guesses from one address do
    // not lock the account's owner out.
    let res = sign_in(app, &browser_from("127.0.0.2"), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The attacker's address stays locked, for the admin and for every other account, also
    // after the admin's successful sign-in.
    let res = sign_in(app, &attacker, ADMIN_EMAIL, "another guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    app.add_user("viewer@example.com", "viewer password 1", Role::Viewer)
        .await;
    let res = sign_in(
        app,
        &browser_from("127.0.0.1"),
        "viewer@example.com",
        "viewer password 1",
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another address and account is unaffected.
    let res = sign_in(
        app,
        &browser_from("127.0.0.3"),
        "viewer@example.com",
        "viewer password 1",
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}
dual_test!(login_failures_are_rate_limited_per_address_not_per_account);

async fn csrf_is_required_and_rejection_writes_nothing(app: &TestApp) {
    let client = browser();
    let token = sign_in_admin(app, &client).await;
    let audit_before = app.audit_actions().await.len();

    for form in [
        vec![("name", "k"), ("scopes", "read")],
        vec![("name", "k"), ("scopes", "read"), ("csrf_token", "forged")],
    ] {
        let res = client
            .post(app.url("/settings/keys"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(res.text().await.unwrap().contains("csrf_rejected"));
    }
    // Cookie-authenticated API writes need the header.
    let res = client
        .post(app.url("/api/v1/keys"))
        .json(&serde_json::json!({"name": "k", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    error_body(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    let res = app
        .post_form(&client, "/signout", &[("csrf_token", "forged")])
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Sign-in itself needs the login token from the form's cookie.
    let res = browser()
        .post(app.url("/signin"))
        .form(&[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("csrf_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    assert!(
        opsdeck::access::keys::list(&app.state.store)
            .await
            .unwrap()
            .is_empty(),
        "no key was created"
    );
    assert_eq!(
        app.audit_actions().await.len(),
        audit_before,
        "nothing audited, nothing written"
    );
    assert_eq!(
        client.get(app.url("/")).send().await.unwrap().status(),
        StatusCode::OK,
        "still signed in"
    );

    // With the token, the same form works.
    let res = app
        .post_form(
            &client,
            "/settings/keys",
            &[
                ("name", "k"),
                ("scopes", "read"),
                ("csrf_token", token.as_str()),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        res.text().await.unwrap().contains("opsk_"),
        "the new key is shown once"
    );
    let res = client
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({"name": "k2", "scopes": ["read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}
dual_test!(csrf_is_required_and_rejection_writes_nothing);

async fn viewers_read_but_cannot_administer(app: &TestApp) {
    app.add_user("viewer@example.com", "viewer password 1", Role::Viewer)
        .await;
    let client = browser();
    assert_eq!(
        sign_in(app, &client, "viewer@example.com", "viewer password 1")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let token = page_csrf(app, &client, "/").await;
    assert_eq!(
        client.get(app.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    for path in [
        "/settings/users",
        "/settings/keys",
        "/settings/audit",
        "/settings/integrations",
    ] {
        let res = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    let res = app
        .post_form(
            &client,
            "/settings/users",
            &[
                ("email", "x@example.com"),
                ("role", "admin"),
                ("password", "0123456789ab"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        opsdeck::access::users::list(&app.state.store)
            .await
            .unwrap()
            .len(),
        2,
        "no user added"
    );

    let res = client
        .get(app.url("/api/v1/metrics/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "viewers read the API with their session"
    );
    let res = client
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .json(&serde_json::json!({"name": "k", "scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    error_body(res, StatusCode::FORBIDDEN, "forbidden").await;
}
dual_test!(viewers_read_but_cannot_administer);

async fn admins_manage_users_in_settings(app: &TestApp) {
    let client = browser();
    let token = sign_in_admin(app, &client).await;
    let res = app
        .post_form(
            &client,
            "/settings/users",
            &[
                ("email", "New@Example.com"),
                ("role", "viewer"),
                ("password", "short"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("at least 10 characters"));
    let res = app
        .post_form(
            &client,
            "/settings/users",
            &[
                ("email", "New@Example.com"),
                ("role", "viewer"),
                ("password", "long enough pw"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let html = client
        .get(app.url("/settings/users"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("new@example.com"));
    // The new user can sign in.
    assert_eq!(
        sign_in(app, &browser(), "new@example.com", "long enough pw")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let audit = client
        .get(app.url("/settings/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains("user.create") && audit.contains("user:admin@example.com"));
}
dual_test!(admins_manage_users_in_settings);

async fn secrets_are_set_from_settings(app: &TestApp) {
    let client = browser();
    let token = sign_in_admin(app, &client).await;
    let res = app
        .post_form(
            &client,
            "/settings/integrations",
            &[
                ("name", "Not Valid"),
                ("value", "x"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .post_form(
            &client,
            "/settings/integrations",
            &[
                ("name", "twilio.auth_token"),
                ("value", "tw-secret-123456"),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = client
        .get(app.url("/settings/integrations"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("twilio.auth_token") && !page.contains("tw-secret-123456"));
    let stored =
        opsdeck::access::secrets::get(&app.state.store, &app.state.master_key, "twilio.auth_token")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.expose(), "tw-secret-123456");
}
dual_test!(secrets_are_set_from_settings);

#[tokio::test]
async fn behind_tls_cookies_are_secure_and_hsts_is_sent() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.server.public_url = "https://ops.example.com".into()
    })
    .await
    .unwrap();
    let client = browser();
    let res = sign_in(&app, &client, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("opsdeck_session="))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        res.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    app.finish().await;
}

async fn parallel_guesses_cannot_outrun_the_login_limit(app: &TestApp) {
    // Every guess needs its own login token, fetched first; then all are fired at once.
    let mut forms = Vec::new();
    for _ in 0..12 {
        let client = browser();
        let page = client
            .get(app.url("/signin"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        forms.push((client, csrf_from(&page)));
    }
    let guesses = forms.into_iter().map(|(client, token)| {
        let url = app.url("/signin");
        async move {
            let form = [
                ("email", ADMIN_EMAIL),
                ("password", "wrong guess here"),
                ("csrf_token", token.as_str()),
            ];
            client.post(url).form(&form).send().await.unwrap().status()
        }
    });
    let statuses = futures_join_all(guesses).await;
    let tried = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((tried, refused), (5, 7), "{statuses:?}");
}
dual_test!(parallel_guesses_cannot_outrun_the_login_limit);

/// Runs futures concurrently on the test runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn forwarded_clients_are_limited_apart_behind_a_trusted_proxy() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()]
    })
    .await
    .unwrap();
    app.add_user("viewer@example.com", "viewer password 1", Role::Viewer)
        .await;
    let via_proxy = |client_ip: &'static str| {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(
                [(
                    reqwest::header::HeaderName::from_static("x-forwarded-for"),
                    client_ip.parse().unwrap(),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .unwrap()
    };
    let attacker = via_proxy("203.0.113.7");
    for i in 0..5 {
        let res = sign_in(
            &app,
            &attacker,
            &format!("nobody{i}@example.com"),
            "wrong guess here",
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = sign_in(&app, &attacker, "viewer@example.com", "viewer password 1").await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded address is limited"
    );
    let res = sign_in(
        &app,
        &via_proxy("198.51.100.4"),
        "viewer@example.com",
        "viewer password 1",
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "another client behind the same proxy is not"
    );
    let entry = opsdeck::access::audit::list(&app.state.store, 1, None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(entry.action, "session.sign_in");
    assert_eq!(
        entry.client_addr.as_deref(),
        Some("198.51.100.4"),
        "the audit log names the real client"
    );
    app.finish().await;
}
