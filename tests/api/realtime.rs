//! Real-time push against the running server: the SSE stream and Socket.IO (a minimal Engine.IO
//! v4 websocket client) refuse callers without valid credentials and carry integration state
//! changes, sampled ingest and published alerts; integration state changes reach a webhook
//! endpoint subscribed to `integration.*`, signed; with Redis, an event published on one
//! instance reaches a client on another exactly once.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use opsdeck::events::Channel;
use opsdeck::simulators::webhook_receiver::WebhookReceiver;

use crate::dual_test;
use crate::helpers::*;

/// One SSE frame: `event:`, `id:`, `data:` (parsed).
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) event: String,
    pub(crate) id: String,
    pub(crate) data: Value,
}

/// A reading SSE client on `reqwest` (no streaming feature needed: `chunk()`).
pub(crate) struct SseClient {
    pub(crate) res: reqwest::Response,
    pub(crate) buf: String,
}

impl SseClient {
    pub(crate) async fn open(app: &TestApp, key: &str) -> SseClient {
        let res = api()
            .get(app.url("/api/v1/stream"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        SseClient::start(res).await
    }

    /// Takes over an answer from `GET /api/v1/stream` (sent with any credential) once it is
    /// subscribed.
    pub(crate) async fn start(res: reqwest::Response) -> SseClient {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut client = SseClient {
            res,
            buf: String::new(),
        };
        // The `: ready` comment: subscribed from here on.
        while !client.buf.contains(": ready") {
            let chunk = client.res.chunk().await.unwrap().expect("stream open");
            client.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        let at = client.buf.find(": ready").unwrap_or(0);
        client.buf = client.buf[at..].to_string();
        client
    }

    /// The next event frame (comments skipped), or `None` after `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame {
                    event: String::new(),
                    id: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        frame.id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !frame.event.is_empty() {
                    frame.data = serde_json::from_str(&data).expect("data is JSON");
                    return Some(frame);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next frame on `event` whose data passes `want`, skipping others.
    pub(crate) async fn expect(&mut self, event: &str, want: impl Fn(&Value) -> bool) -> Frame {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {event} event in time"));
            let frame = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no {event} event in time"));
            if frame.event == event && want(&frame.data) {
                return frame;
            }
        }
    }
}

async fn stream_status(
    app: &TestApp,
    auth: Option<&str>,
    cookie: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = api().get(app.url("/api/v1/stream"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Creates an http monitor on a local peer, checked every second.
async fn monitor(app: &TestApp, admin: &str, name: &str, url: &str) -> i64 {
    let res = app
        .call(
            Method::POST,
            "/api/v1/integrations",
            admin,
            Some(
                &json!({"name": name, "kind": "http", "target": url, "interval": "1s",
                "conditions": ["[STATUS] == 200"]}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    created["id"].as_i64().unwrap()
}

/// SSE: refused without (valid, fitting) credentials; carries a state change, sampled ingest
/// and an alert, with the channel as `event:` and rising ids.
async fn sse_stream(app: &TestApp) {
    let (status, body) = stream_status(app, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    let (status, _) = stream_status(app, Some("Bearer opsk_nope_nope"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a bad key");
    let (status, _) = stream_status(app, Some("Basic eDp5"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not a bearer");
    let (status, _) = stream_status(app, None, Some("opsdeck_session=forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a forged session");
    let tenant = app.key("tenant", &["tenant:cus_1"]).await;
    let (status, body) = stream_status(app, Some(&format!("Bearer {tenant}")), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a tenant key sees no other customers"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("tenant"),
        "{body}"
    );
    let ingest = app.key("ingest", &["ingest"]).await;
    let (status, _) = stream_status(app, Some(&format!("Bearer {ingest}")), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "ingest only");

    // A session cookie works too.
    let browser = browser();
    sign_in_admin(app, &browser).await;
    let res = browser.get(app.url("/api/v1/stream")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "signed in");
    drop(res);

    let reader = app.key("reader", &["read"]).await;
    let admin = app.key("admin", &["admin"]).await;
    let mut sse = SseClient::open(app, &reader).await;
    let (url, _peer) = switchable_peer().await;
    let id = monitor(app, &admin, "web", &url).await;
    let up = sse
        .expect("system_status", |d| d["data"]["integration_id"] == id)
        .await;
    assert_eq!(up.data["channel"], "system_status");
    assert_eq!(up.data["type"], "integration.state_changed");
    assert_eq!(up.data["data"]["name"], "web");
    assert_eq!(up.data["data"]["kind"], "http");
    assert_eq!(up.data["data"]["to"], "up");
    assert_eq!(up.data["data"]["summary"], "web is up (was unknown)");
    let first: u64 = up.id.parse().unwrap();

    let res = api()
        .post(app.url("/api/v1/events"))
        .bearer_auth(&ingest)
        .json(&json!([{"specversion": "1.0", "id": "rt-1", "source": "referral-app",
            "type": "api.request", "subject": "cus_42", "time": "2026-11-20T10:00:00Z",
            "data": {"endpoint": "/api/referrals", "method": "POST", "status": 201, "duration_ms": 35}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let activity = sse
        .expect("user_activity", |d| d["data"]["id"] == "rt-1")
        .await;
    assert_eq!(activity.data["data"]["subject"], "cus_42");
    assert_eq!(activity.data["data"]["summary"], "api.request from cus_42");
    assert!(activity.id.parse::<u64>().unwrap() > first, "ids rise");

    app.state.events.publish(
        Channel::Alert,
        "alert.firing",
        json!({"group_key": "rule:1", "status": "firing", "summary": "api is down"}),
    );
    let alert = sse.expect("alert", |_| true).await;
    assert_eq!(alert.data["type"], "alert.firing");
    assert_eq!(alert.data["data"]["summary"], "api is down");
}
dual_test!(sse_stream);

/// A client that falls more than the bus's capacity behind is told how many it missed.
async fn sse_lagged_notice(app: &TestApp) {
    let reader = app.key("reader", &["read"]).await;
    let mut sse = SseClient::open(app, &reader).await;
    // The client reads nothing while the burst is published. The server's stream task may
    // keep up with the bus for a while (on another worker thread), but only until the socket
    // buffers (a few MB on loopback) are full; ~24 MB of events is far past that plus the
    // bus's capacity, so this client's place in the bus overflows whatever the scheduling.
    let pad = "x".repeat(2000);
    for i in 0..12_000 {
        app.state
            .events
            .publish(Channel::Alert, "alert.firing", json!({"n": i, "pad": pad}));
    }
    let lagged = sse.expect("lagged", |_| true).await;
    assert!(lagged.data["missed"].as_u64().unwrap() > 0, "{:?}", lagged);
    let next = sse.expect("alert", |_| true).await;
    assert!(
        next.data["data"]["n"].as_u64().unwrap() > 0,
        "resumes with newer events"
    );
}
dual_test!(sse_lagged_notice);

/// An endpoint subscribed to `integration.*` receives `integration.state_changed`, signed per
/// Standard Webhooks, enqueued with the state change.
async fn state_changes_reach_subscribed_endpoints(app: &TestApp) {
    let secret = opsdeck::webhooks::signing::Secret::generate().expose();
    let receiver = WebhookReceiver::start(&[secret.as_str()]).await.unwrap();
    let admin = app.key("admin", &["admin"]).await;
    for (name, types) in [
        ("ops", json!(["integration.*"])),
        ("billing", json!(["payment.failed"])),
    ] {
        let res = app
            .call(
                Method::POST,
                "/api/v1/webhooks/endpoints",
                &admin,
                Some(
                    &json!({"name": name, "url": format!("{}/{name}", receiver.url()),
                    "event_types": types, "secret": secret}),
                ),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let (url, _peer) = switchable_peer().await;
    let id = monitor(app, &admin, "api", &url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got: Vec<_> = receiver
            .received()
            .into_iter()
            .filter(|r| r.event_type.as_deref() == Some("integration.state_changed"))
            .collect();
        if !got.is_empty() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "no integration.state_changed delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(got.iter().all(|r| r.verified), "{:?}", got[0].rejection);
    assert!(
        got.iter().all(|r| r.path.ends_with("/ops")),
        "only the subscribed endpoint"
    );
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "integration.state_changed");
    assert_eq!(body["data"]["integration_id"], id);
    assert_eq!(body["data"]["name"], "api");
    assert_eq!(body["data"]["from"], "unknown");
    assert_eq!(body["data"]["to"], "up");
    assert_eq!(body["data"]["summary"], "api is up (was unknown)");
    // Stored in the change's transaction: one message per change.
    let (messages,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_messages WHERE type = 'integration.state_changed'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(messages, 1);
}
dual_test!(state_changes_reach_subscribed_endpoints, |c| {
    c.webhooks.allow_private = vec!["127.0.0.0/8".into()];
});

/// A minimal Engine.IO v4 / Socket.IO client over a websocket.
pub(crate) struct SocketIoClient {
    pub(crate) ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl SocketIoClient {
    /// Opens the Engine.IO session and sends the namespace connect with `auth`; returns the
    /// client and the connect answer (`40{"sid"…}` or `44{"message"…}`).
    pub(crate) async fn connect(app: &TestApp, auth: Option<Value>) -> (SocketIoClient, String) {
        SocketIoClient::connect_with(app, auth, &[]).await
    }

    /// The same, with extra handshake headers (`cookie`, `origin`, `authorization`).
    pub(crate) async fn connect_with(
        app: &TestApp,
        auth: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (SocketIoClient, String) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            app.base.replacen("http", "ws", 1)
        );
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = SocketIoClient { ws };
        let open = client.read().await.expect("open packet");
        assert!(open.starts_with("0{"), "{open}");
        let handshake: Value = serde_json::from_str(&open[1..]).unwrap();
        assert!(handshake["sid"].is_string() && handshake["pingInterval"].is_number());
        let connect = match auth {
            Some(a) => format!("40{a}"),
            None => "40".to_string(),
        };
        client.ws.send(Message::Text(connect.into())).await.unwrap();
        let answer = client.read().await.expect("connect answer");
        (client, answer)
    }

    /// The next text packet, answering pings on the way; `None` when closed or after 15 s.
    pub(crate) async fn read(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) if t.as_str() == "2" => {
                    self.ws.send(Message::Text("3".into())).await.ok()?;
                }
                Message::Text(t) => return Some(t.to_string()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next `42[name, payload]` event with this name.
    pub(crate) async fn event(&mut self, name: &str) -> Value {
        loop {
            let packet = self
                .read()
                .await
                .unwrap_or_else(|| panic!("no {name} event"));
            if let Some(body) = packet.strip_prefix("42") {
                let v: Value = serde_json::from_str(body).unwrap();
                if v[0] == name {
                    return v[1].clone();
                }
            }
        }
    }
}

/// Socket.IO: admitted with a key in `auth` or as a Bearer header, refused with a
/// `connect_error` otherwise; events arrive under their channel's name.
async fn socketio_stream(app: &TestApp) {
    let (_c, refused) = SocketIoClient::connect(app, None).await;
    assert!(refused.starts_with("44"), "no credentials: {refused}");
    assert!(refused.contains("authentication required"), "{refused}");
    let (_c, refused) = SocketIoClient::connect(app, Some(json!({"token": "opsk_bad_key"}))).await;
    assert!(refused.starts_with("44"), "a bad key: {refused}");
    let tenant = app.key("tenant", &["tenant:cus_9"]).await;
    let (_c, refused) = SocketIoClient::connect(app, Some(json!({"token": tenant}))).await;
    assert!(
        refused.starts_with("44") && refused.contains("tenant"),
        "{refused}"
    );

    let reader = app.key("reader", &["read"]).await;
    let (mut client, admitted) = SocketIoClient::connect(app, Some(json!({"token": reader}))).await;
    assert!(admitted.starts_with("40{"), "{admitted}");
    let sid: Value = serde_json::from_str(&admitted[2..]).unwrap();
    assert!(sid["sid"].is_string());
    // Admitted sockets join the room before the `40` answer: an event published after it
    // arrives.
    app.state.events.publish(
        Channel::SystemStatus,
        "integration.state_changed",
        json!({"name": "db", "to": "down", "summary": "db is down (was up)"}),
    );
    let got = client.event("system_status").await;
    assert_eq!(got["channel"], "system_status");
    assert_eq!(got["type"], "integration.state_changed");
    assert_eq!(got["data"]["summary"], "db is down (was up)");
    app.state.events.publish(
        Channel::Alert,
        "alert.resolved",
        json!({"summary": "db is back"}),
    );
    let got = client.event("alert").await;
    assert_eq!(got["type"], "alert.resolved");
}
dual_test!(socketio_stream);

/// Two instances sharing one Redis: an event published on A reaches a client on B exactly
/// once, and A's own client once (its echo from Redis is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fans_events_out_across_instances() {
    let url = match std::env::var("OPSDECK_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!(
                "\n*** SKIPPED redis_fans_events_out_across_instances: OPSDECK_TEST_REDIS_URL is not set. ***\n"
            );
            return;
        }
    };
    let (u1, u2) = (url.clone(), url.clone());
    let a = spawn_app_with(Backend::Sqlite, move |c| c.server.redis_url = u1)
        .await
        .unwrap();
    let b = spawn_app_with(Backend::Sqlite, move |c| c.server.redis_url = u2)
        .await
        .unwrap();
    let key_a = a.key("reader", &["read"]).await;
    let key_b = b.key("reader", &["read"]).await;
    let mut on_a = SseClient::open(&a, &key_a).await;
    let mut on_b = SseClient::open(&b, &key_b).await;
    // The relay subscribes in the background: probe until B hears A.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        a.state
            .events
            .publish(Channel::Alert, "alert.probe", json!({"probe": true}));
        if let Some(f) = on_b.next(Duration::from_millis(300)).await
            && f.data["type"] == "alert.probe"
        {
            break;
        }
        assert!(Instant::now() < deadline, "B never heard A through Redis");
    }
    let marker = uuid::Uuid::new_v4().to_string();
    a.state.events.publish(
        Channel::SystemStatus,
        "integration.state_changed",
        json!({"marker": marker}),
    );
    let count = |frames: &[Frame]| {
        frames
            .iter()
            .filter(|f| f.data["data"]["marker"] == marker.as_str())
            .count()
    };
    let mut seen_b = Vec::new();
    let mut seen_a = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(f) = on_b.next(Duration::from_millis(100)).await {
            seen_b.push(f);
        }
        if let Some(f) = on_a.next(Duration::from_millis(100)).await {
            seen_a.push(f);
        }
    }
    assert_eq!(count(&seen_b), 1, "B sees A's event exactly once");
    assert_eq!(count(&seen_a), 1, "A sees its own event once, not its echo");
    let on_b_frame = seen_b
        .iter()
        .find(|f| f.data["data"]["marker"] == marker.as_str())
        .unwrap();
    assert_eq!(on_b_frame.event, "system_status");
    a.finish().await;
    b.finish().await;
}
