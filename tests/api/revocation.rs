//! Live streams end with their credential: revoking a key, signing out, changing a password and
//! deleting a user end the SSE streams and Socket.IO connections that credential opened — and
//! only those — at once, on this instance and, through Redis, on another sharing the database;
//! a change made from the command line without Redis ends them at the periodic re-check. Also:
//! a cookie-authenticated Socket.IO connection is admitted only from opsdeck's own origin, and
//! `/socket.io/` answers carry the security headers.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use opsdeck::events::Channel;

use crate::dual_test;
use crate::helpers::*;
use crate::realtime::{SocketIoClient, SseClient};

/// How long a revoked stream may take to end: "at once", with room for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(5);

impl SseClient {
    /// Reads until the server ends the stream (`true`) or `wait` passes with it open (`false`).
    /// Fails if an internal revocation message reaches the client.
    async fn ended(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            assert!(
                !self.buf.contains("revocation") && !self.buf.contains("credential.revoked"),
                "a revocation message reached a client: {}",
                self.buf
            );
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The stream is open and still carries events: `marker` published now arrives, and no
    /// internal message came before it.
    async fn still_open(&mut self, app: &TestApp, marker: &str) {
        app.state.events.publish(
            Channel::Alert,
            "alert.firing",
            json!({"summary": "still here", "marker": marker}),
        );
        let got = self
            .expect("alert", |d| {
                assert_ne!(
                    d["channel"], "revocation",
                    "an internal message reached a client"
                );
                d["data"]["marker"] == marker
            })
            .await;
        assert_eq!(got.data["type"], "alert.firing");
    }
}

impl SocketIoClient {
    /// Reads until the server disconnects the socket (a `41` packet or the websocket closing:
    /// `true`) or `wait` passes (`false`). Fails if an internal message reaches the client.
    async fn disconnected(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            let msg = match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(t) if t.as_str() == "2" => {
                    use futures_util::SinkExt;
                    if self.ws.send(Message::Text("3".into())).await.is_err() {
                        return true;
                    }
                }
                Message::Text(t) if t.as_str().starts_with("41") => return true,
                Message::Text(t) => assert!(
                    !t.as_str().contains("revocation"),
                    "a revocation message reached a client: {t}"
                ),
                Message::Close(_) => return true,
                _ => {}
            }
        }
    }
}

/// Creates a key through the API; returns its id and secret.
async fn create_key(app: &TestApp, admin: &str, name: &str) -> (i64, String) {
    let res = app
        .call(
            Method::POST,
            "/api/v1/keys",
            admin,
            Some(&json!({"name": name, "scopes": ["read"]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    (
        body["id"].as_i64().unwrap(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

/// A signed-in browser at `base` and its session cookie (`opsdeck_session=…`), for clients
/// that set the header themselves.
async fn session_at(base: &str, email: &str, password: &str) -> (reqwest::Client, String) {
    let client = browser();
    let res = sign_in_at(base, &client, email, password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{email} signs in");
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("opsdeck_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    (client, cookie)
}

async fn session(app: &TestApp, email: &str, password: &str) -> (reqwest::Client, String) {
    session_at(&app.base, email, password).await
}

/// An SSE stream opened with a session cookie.
async fn sse_with_cookie(base: &str, cookie: &str) -> SseClient {
    let res = api()
        .get(format!("{base}/api/v1/stream"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    SseClient::start(res).await
}

/// A Socket.IO connection admitted with a session cookie.
/// Asserts that a revoked credential's SSE stream ends and its socket is disconnected promptly;
/// `whose` names them in the failure ("the revoked key's").
async fn both_end(sse: &mut SseClient, socket: &mut SocketIoClient, whose: &str) {
    assert!(sse.ended(PROMPTLY).await, "{whose} SSE stream ends");
    assert!(
        socket.disconnected(PROMPTLY).await,
        "{whose} socket is disconnected"
    );
}

async fn socket_with_cookie(app: &TestApp, cookie: &str) -> SocketIoClient {
    let (client, answer) = SocketIoClient::connect_with(app, None, &[("cookie", cookie)]).await;
    assert!(answer.starts_with("40{"), "{answer}");
    client
}

/// A Socket.IO connection admitted with a key in `auth`.
async fn socket_with_key(app: &TestApp, key: &str) -> SocketIoClient {
    let (client, answer) = SocketIoClient::connect(app, Some(json!({"token": key}))).await;
    assert!(answer.starts_with("40{"), "{answer}");
    client
}

/// The id of the user with this email.
async fn user_id(app: &TestApp, email: &str) -> i64 {
    opsdeck::access::users::list(&app.state.store)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == email)
        .expect("user exists")
        .id
}

/// Runs `opsdeck user passwd` against the app's database, as an operator would beside the
/// running server, with `redis_url` when given.
async fn passwd_from_cli(app: &TestApp, email: &str, redis_url: Option<&str>) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_opsdeck"));
    cmd.arg("--data-dir").arg(app.data_dir.path());
    let database_url = &app.state.config.server.database_url;
    if !database_url.is_empty() {
        cmd.args(["--database-url", database_url]);
    }
    cmd.args(["user", "passwd", "--email", email, "--password-stdin"])
        .env_remove("OPSDECK_SERVER__DATABASE_URL")
        .env_remove("OPSDECK_SERVER__REDIS_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(url) = redis_url {
        cmd.env("OPSDECK_SERVER__REDIS_URL", url);
    }
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a brand new password\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Revoking a key ends its SSE stream and Socket.IO connection at once; another key's stream
/// goes on and never sees the revocation.
async fn key_revocation_ends_its_streams(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let (id, reader) = create_key(app, &admin, "reader").await;
    let other = app.key("other", &["read"]).await;
    let mut sse = SseClient::open(app, &reader).await;
    let mut socket = socket_with_key(app, &reader).await;
    let mut bystander = SseClient::open(app, &other).await;

    let res = app
        .call(Method::DELETE, &format!("/api/v1/keys/{id}"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    both_end(&mut sse, &mut socket, "the revoked key's").await;
    bystander.still_open(app, "after-key-revoke").await;
}
dual_test!(key_revocation_ends_its_streams);

/// Signing out ends the streams of that session only: the same user's other session keeps
/// its stream.
async fn sign_out_ends_that_sessions_streams(app: &TestApp) {
    let (browser, cookie) = session(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_other_browser, other_cookie) = session(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut sse = sse_with_cookie(&app.base, &cookie).await;
    let mut socket = socket_with_cookie(app, &cookie).await;
    let mut bystander = sse_with_cookie(&app.base, &other_cookie).await;

    let csrf = page_csrf(app, &browser, "/").await;
    let res = app
        .post_form(&browser, "/signout", &[("csrf_token", csrf.as_str())])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    both_end(&mut sse, &mut socket, "the signed-out session's").await;
    bystander.still_open(app, "after-sign-out").await;
}
dual_test!(sign_out_ends_that_sessions_streams);

/// Deleting a user ends the streams of every one of their sessions; others' go on.
async fn user_deletion_ends_the_users_streams(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    app.add_user(
        "viewer@example.com",
        "viewer password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    let (_b1, first) = session(app, "viewer@example.com", "viewer password 1").await;
    let (_b2, second) = session(app, "viewer@example.com", "viewer password 1").await;
    let (_b3, admin_cookie) = session(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut sse = sse_with_cookie(&app.base, &first).await;
    let mut socket = socket_with_cookie(app, &second).await;
    let mut bystander = sse_with_cookie(&app.base, &admin_cookie).await;

    let id = user_id(app, "viewer@example.com").await;
    let res = app
        .call(Method::DELETE, &format!("/api/v1/users/{id}"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    both_end(&mut sse, &mut socket, "the deleted user's").await;
    bystander.still_open(app, "after-user-delete").await;
}
dual_test!(user_deletion_ends_the_users_streams);

/// A password change signs the user out everywhere, so every stream of their sessions ends.
/// Passwords change from the command line, which (without Redis) cannot reach the server's
/// bus: the streams end at their periodic credential re-check, shortened here from 30 s.
async fn password_change_ends_the_users_streams(app: &TestApp) {
    app.state
        .realtime
        .set_recheck_every(Duration::from_millis(300));
    app.add_user(
        "viewer@example.com",
        "viewer password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    let (_b1, first) = session(app, "viewer@example.com", "viewer password 1").await;
    let (_b2, second) = session(app, "viewer@example.com", "viewer password 1").await;
    let (_b3, admin_cookie) = session(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut sse = sse_with_cookie(&app.base, &first).await;
    let mut socket = socket_with_cookie(app, &second).await;
    let mut bystander = sse_with_cookie(&app.base, &admin_cookie).await;

    passwd_from_cli(app, "viewer@example.com", None).await;
    both_end(&mut sse, &mut socket, "the user's").await;
    bystander.still_open(app, "after-password-change").await;
}
dual_test!(password_change_ends_the_users_streams);

/// A key revoked behind the server's back (as `opsdeck key revoke` does without Redis: the
/// store changes, the server's bus hears nothing) ends its streams at the periodic re-check.
async fn streams_recheck_their_credential(app: &TestApp) {
    app.state
        .realtime
        .set_recheck_every(Duration::from_millis(300));
    let admin = app.key("admin", &["admin"]).await;
    let (id, reader) = create_key(app, &admin, "reader").await;
    let mut sse = SseClient::open(app, &reader).await;
    let mut socket = socket_with_key(app, &reader).await;
    let elsewhere = opsdeck::events::Bus::default();
    opsdeck::access::keys::revoke(
        &app.state.store,
        &elsewhere,
        id,
        &opsdeck::access::audit::Actor::new("cli", None),
    )
    .await
    .unwrap();
    both_end(&mut sse, &mut socket, "at the re-check, the").await;
}
dual_test!(streams_recheck_their_credential);

/// Cookie-authenticated Socket.IO is admitted only from `server.public_url`'s origin (or
/// without an `Origin`, as non-browser clients connect); a key is not bound to an origin.
async fn socketio_cookie_needs_our_origin(app: &TestApp) {
    let (_browser, cookie) = session(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let foreign = [
        ("cookie", cookie.as_str()),
        ("origin", "https://evil.example"),
    ];
    let (_c, answer) = SocketIoClient::connect_with(app, None, &foreign).await;
    assert!(answer.starts_with("44"), "foreign origin refused: {answer}");
    assert!(answer.contains("Origin"), "{answer}");
    let lookalike = [
        ("cookie", cookie.as_str()),
        ("origin", "http://ops.example.com.evil.example"),
    ];
    let (_c, answer) = SocketIoClient::connect_with(app, None, &lookalike).await;
    assert!(answer.starts_with("44"), "look-alike refused: {answer}");

    let own = [
        ("cookie", cookie.as_str()),
        ("origin", "http://ops.example.com"),
    ];
    let (mut client, answer) = SocketIoClient::connect_with(app, None, &own).await;
    assert!(answer.starts_with("40{"), "our origin admitted: {answer}");
    app.state
        .events
        .publish(Channel::Alert, "alert.firing", json!({"summary": "x"}));
    assert_eq!(client.event("alert").await["type"], "alert.firing");

    let reader = app.key("reader", &["read"]).await;
    let (_c, answer) = SocketIoClient::connect_with(
        app,
        Some(json!({"token": reader})),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert!(answer.starts_with("40{"), "a key in auth: {answer}");
    let bearer = format!("Bearer {reader}");
    let (_c, answer) = SocketIoClient::connect_with(
        app,
        None,
        &[
            ("authorization", bearer.as_str()),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert!(answer.starts_with("40{"), "a Bearer key: {answer}");
}
dual_test!(socketio_cookie_needs_our_origin, |c| {
    c.server.public_url = "http://ops.example.com".into();
});

/// `/socket.io/` answers carry the headers every other route sends: the polling transport's
/// and the websocket upgrade's.
async fn socketio_answers_carry_security_headers(app: &TestApp) {
    let check = |headers: &reqwest::header::HeaderMap, what: &str| {
        for name in [
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
            "cache-control",
        ] {
            assert!(
                headers.contains_key(name),
                "{what} lacks {name}: {headers:?}"
            );
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
    };
    let res = api()
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    check(res.headers(), "the polling handshake");
    let res = api()
        .get(app.url("/socket.io/?EIO=4&transport=nonsense"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    check(res.headers(), "a refused polling request");
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        app.base.replacen("http", "ws", 1)
    );
    let (_ws, res) = tokio_tungstenite::connect_async(url).await.unwrap();
    check(res.headers(), "the websocket upgrade");
}
dual_test!(socketio_answers_carry_security_headers);

/// Two instances on one PostgreSQL database and one Redis: a key revoked, a session signed
/// out and a user deleted on A end the streams opened on B at once, and so does a password
/// changed from the command line with `redis_url` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_end_streams_on_other_instances() {
    let redis = match std::env::var("OPSDECK_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!(
                "\n*** SKIPPED revocations_end_streams_on_other_instances: OPSDECK_TEST_REDIS_URL is not set. ***\n"
            );
            return;
        }
    };
    let r = redis.clone();
    let Some(a) = spawn_app_with(Backend::Postgres, move |c| c.server.redis_url = r).await else {
        return;
    };
    let (r, shared) = (redis.clone(), a.state.config.server.database_url.clone());
    let b = spawn_app_with(Backend::Sqlite, move |c| {
        c.server.redis_url = r;
        c.server.database_url = shared;
    })
    .await
    .unwrap();

    let admin = a.key("admin", &["admin"]).await;
    let probe_key = a.key("probe", &["read"]).await;
    let mut probe = SseClient::open(&b, &probe_key).await;
    // B's relay subscribes in the background: probe until B hears A.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        a.state
            .events
            .publish(Channel::Alert, "alert.probe", json!({"probe": true}));
        if let Some(f) = probe.next(Duration::from_millis(300)).await
            && f.data["type"] == "alert.probe"
        {
            break;
        }
        assert!(Instant::now() < deadline, "B never heard A through Redis");
    }

    // A key revoked on A.
    let (id, reader) = create_key(&a, &admin, "reader").await;
    let mut sse = SseClient::open(&b, &reader).await;
    let mut socket = socket_with_key(&b, &reader).await;
    let res = a
        .call(Method::DELETE, &format!("/api/v1/keys/{id}"), &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    both_end(&mut sse, &mut socket, "key: B's").await;

    // A session signed in on B, signed out on A (the session lives in the shared database).
    let (_on_b, cookie) = session(&b, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut sse = sse_with_cookie(&b.base, &cookie).await;
    let mut socket = socket_with_cookie(&b, &cookie).await;
    let on_a = api();
    let page = on_a
        .get(a.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_from(&page);
    let res = on_a
        .post(a.url("/signout"))
        .header("cookie", &cookie)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    both_end(&mut sse, &mut socket, "sign-out: B's").await;

    // A user deleted on A.
    a.add_user(
        "viewer@example.com",
        "viewer password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    let (_v, cookie) = session(&b, "viewer@example.com", "viewer password 1").await;
    let mut sse = sse_with_cookie(&b.base, &cookie).await;
    let mut socket = socket_with_cookie(&b, &cookie).await;
    let uid = user_id(&a, "viewer@example.com").await;
    let res = a
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{uid}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    both_end(&mut sse, &mut socket, "deletion: B's").await;

    // A password changed from the command line, told through Redis: well before the 30 s
    // re-check.
    a.add_user(
        "other@example.com",
        "other password 1",
        opsdeck::access::Role::Viewer,
    )
    .await;
    let (_o, cookie) = session(&b, "other@example.com", "other password 1").await;
    let mut sse = sse_with_cookie(&b.base, &cookie).await;
    let mut socket = socket_with_cookie(&b, &cookie).await;
    passwd_from_cli(&a, "other@example.com", Some(&redis)).await;
    both_end(&mut sse, &mut socket, "password: B's").await;

    // The probe's key was never revoked: its stream on B goes on, and saw no internal message.
    probe.still_open(&a, "after-everything").await;
    b.finish().await;
    a.finish().await;
}
