//! Notifiers end to end: each kind created through the API, a "send test" (or an alert
//! message) delivered by the running server's worker to a local simulator of the service,
//! which checks the request's shape and answers as the real service does; failures retried on
//! the schedule; bad input refused by field with nothing stored; config notifiers read-only.

use std::time::Duration;

use opsdeck::config::{Config, ConfigDuration};
use opsdeck::simulators::notify::{self, NotifySim, Service, Trouble};
use opsdeck::simulators::smtp::SmtpSim;
use opsdeck::webhooks::queue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn fast(c: &mut Config) {
    c.alerts.allow_private_targets = true;
    c.webhooks.retry_schedule = vec![
        ConfigDuration(Duration::from_millis(200)),
        ConfigDuration(Duration::from_millis(200)),
    ];
    c.webhooks.timeout = ConfigDuration(Duration::from_secs(3));
}

async fn wait_for<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// (state, attempts, last_status) of the one delivery of `msg`.
async fn delivery(app: &TestApp, msg: &str) -> (String, i64, Option<i64>) {
    app.state
        .store
        .fetch_one(
            "SELECT state, attempts, last_status FROM webhook_deliveries WHERE message_id = $1",
            opsdeck::args![msg],
        )
        .await
        .unwrap()
}

async fn settled(app: &TestApp, msg: &str) -> (String, i64, Option<i64>) {
    wait_for("the delivery settles", || async {
        delivery(app, msg).await.0 != "pending"
    })
    .await;
    delivery(app, msg).await
}

/// The attempts' (status, error) of `msg`'s delivery, in order.
async fn attempts(app: &TestApp, msg: &str) -> Vec<(Option<i64>, Option<String>)> {
    app.state
        .store
        .fetch_all(
            "SELECT a.status, a.error FROM webhook_attempts a JOIN webhook_deliveries d \
             ON d.id = a.delivery_id WHERE d.message_id = $1 ORDER BY a.attempt",
            opsdeck::args![msg],
        )
        .await
        .unwrap()
}

async fn create(app: &TestApp, admin: &str, spec: Value) -> i64 {
    let res = app
        .call(
            Method::POST,
            "/api/v1/webhooks/endpoints",
            admin,
            Some(&spec),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_i64().expect("id")
}

async fn send_test(app: &TestApp, admin: &str, id: i64) -> String {
    let res = app
        .call(
            Method::POST,
            &format!("/api/v1/webhooks/endpoints/{id}/test"),
            admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    body["message_id"].as_str().expect("message id").to_string()
}

async fn endpoints_json(app: &TestApp, admin: &str) -> Value {
    app.call(Method::GET, "/api/v1/webhooks/endpoints", admin, None)
        .await
        .json()
        .await
        .unwrap()
}

/// Slack and Discord: the exact message shapes, a rate limit retried, the chat URL (their
/// secret) never shown, and Slack's 410 `channel_is_archived` disabling the notifier.
async fn chat_notifiers(app: &TestApp) {
    let sim = NotifySim::start().await.unwrap();
    let admin = app.key("admin", &["admin"]).await;
    let slack = create(
        app,
        &admin,
        json!({"name": "ops-slack", "kind": "slack", "url": sim.slack_url()}),
    )
    .await;
    let msg = send_test(app, &admin, slack).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 1, Some(200)));
    let hits = sim.hits(Service::Slack);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].content_type, "application/json");
    let body = hits[0].json();
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Test notification from opsdeck to ops-slack")),
        "{body}"
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    assert_eq!(body["blocks"][1]["type"], "section");

    // Rate limited once (429 + Retry-After: 1): the second attempt delivers.
    sim.trouble(Service::Slack, Trouble::RateLimited, 1);
    let msg = send_test(app, &admin, slack).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 2, Some(200)));
    assert_eq!(attempts(app, &msg).await[0].0, Some(429));

    let list = endpoints_json(app, &admin).await;
    let text = list.to_string();
    assert!(!text.contains(notify::SLACK_PATH), "secret leaked: {text}");
    let view = &list["endpoints"][0];
    assert_eq!(view["kind"], "slack");
    assert!(
        view["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/services/***")),
        "{view}"
    );

    let discord = create(
        app,
        &admin,
        json!({"name": "ops-discord", "kind": "discord", "url": sim.discord_url()}),
    )
    .await;
    let mut tx = app.state.store.begin().await.unwrap();
    let fired = queue::enqueue_to(
        &mut tx,
        "alert.firing",
        &alert("firing"),
        opsdeck::store::now_ms(),
        &[discord],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        settled(app, &fired).await,
        ("succeeded".into(), 1, Some(200))
    );
    let hit = &sim.hits(Service::Discord)[0];
    assert_eq!(hit.query.get("wait").map(String::as_str), Some("true"));
    let body = hit.json();
    assert_eq!(
        body["content"],
        "[FIRING] Integration down: api (and 2 more)"
    );
    assert_eq!(body["embeds"][0]["color"], 0xD0_2F_2F);
    assert_eq!(
        body["embeds"][0]["fields"][0]["name"],
        "integration down (critical)"
    );
    assert_eq!(body["allowed_mentions"]["parse"], json!([]));

    // Discord's 429 names its wait in the body; the retry then goes through.
    sim.trouble(Service::Discord, Trouble::RateLimited, 1);
    let msg = send_test(app, &admin, discord).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 2, Some(200)));

    // 410 channel_is_archived: failed at once, the notifier disabled.
    sim.trouble(Service::Slack, Trouble::Gone, 1);
    let msg = send_test(app, &admin, slack).await;
    assert_eq!(settled(app, &msg).await, ("failed".into(), 1, Some(410)));
    let errors = attempts(app, &msg).await;
    assert!(
        errors[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("channel_is_archived")),
        "{errors:?}"
    );
    let list = endpoints_json(app, &admin).await;
    let slack_view = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ops-slack")
        .cloned()
        .unwrap();
    assert_eq!(slack_view["enabled"], false);
}
crate::dual_test!(chat_notifiers, super::fast);

fn alert(status: &str) -> Value {
    json!({"group_key": "rule:12|service=api", "status": status, "severity": "critical",
        "summary": "Integration down: api (and 2 more)", "url": "https://ops.example.com/alerts",
        "alerts": [{"id": 41, "rule": "integration down", "rule_id": 12,
            "severity": "critical", "state": status, "summary": "api is down",
            "labels": {"integration": "api"}, "value": 1.0, "threshold": 1.0,
            "started_at": "2026-11-30T02:00:00Z", "resolved_at": null,
            "acked_by": null, "ack_note": null}]})
}

/// Twilio (form, Basic auth, 429 code 20429 retried) and Vonage (HTTP 200 with a failed
/// status counted as a failure, retried until the schedule runs out).
async fn sms_notifiers(app: &TestApp) {
    let sim = NotifySim::start().await.unwrap();
    let admin = app.key("admin", &["admin"]).await;
    let twilio = create(
        app,
        &admin,
        json!({"name": "oncall-sms", "kind": "twilio_sms", "api_base": sim.base(),
            "account_sid": notify::TWILIO_SID, "auth_token": notify::TWILIO_TOKEN,
            "from": "+15005550006", "to": "+15551234567"}),
    )
    .await;
    sim.trouble(Service::Twilio, Trouble::RateLimited, 1);
    let msg = send_test(app, &admin, twilio).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 2, Some(201)));
    let tries = attempts(app, &msg).await;
    assert_eq!(tries[0].0, Some(429));
    assert!(
        tries[0].1.as_deref().is_some_and(|e| e.contains("20429")),
        "{tries:?}"
    );
    let hit = sim.hits(Service::Twilio).pop().unwrap();
    assert_eq!(hit.content_type, "application/x-www-form-urlencoded");
    assert!(
        hit.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    );
    let form = hit.form();
    assert_eq!(form["To"], "+15551234567");
    assert_eq!(form["From"], "+15005550006");
    assert!(form["Body"].starts_with("Test notification from opsdeck"));

    // A wrong token: Twilio's 401 code 20003, retried on the schedule, then failed.
    let wrong = create(
        app,
        &admin,
        json!({"name": "wrong-sms", "kind": "twilio_sms", "api_base": sim.base(),
            "account_sid": notify::TWILIO_SID, "auth_token": "nope",
            "from": "+15005550006", "to": "+15551234567"}),
    )
    .await;
    let msg = send_test(app, &admin, wrong).await;
    assert_eq!(settled(app, &msg).await, ("failed".into(), 3, Some(401)));

    let vonage = create(
        app,
        &admin,
        json!({"name": "vonage", "kind": "vonage_sms", "api_base": sim.base(),
            "api_key": notify::VONAGE_KEY, "api_secret": notify::VONAGE_SECRET,
            "from": "opsdeck", "to": "+447700900000"}),
    )
    .await;
    let msg = send_test(app, &admin, vonage).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 1, Some(200)));
    let form = sim.hits(Service::Vonage).pop().unwrap().form();
    assert_eq!(form["to"], "447700900000", "Vonage numbers go without +");
    assert_eq!(form["api_key"], notify::VONAGE_KEY);
    assert!(form["text"].starts_with("Test notification"));

    sim.trouble(Service::Vonage, Trouble::Rejected, 10);
    let msg = send_test(app, &admin, vonage).await;
    assert_eq!(
        settled(app, &msg).await,
        ("failed".into(), 3, Some(200)),
        "HTTP 200 with status 4 is a failure"
    );
    let tries = attempts(app, &msg).await;
    assert_eq!(
        tries[0].1.as_deref(),
        Some("Vonage status 4: Bad Credentials")
    );
}
crate::dual_test!(sms_notifiers, super::fast);

/// PagerDuty: firing, acknowledged and resolved messages of one alert group become trigger,
/// acknowledge and resolve events with one dedup key; a 400 `invalid event` is retried.
async fn pagerduty_lifecycle(app: &TestApp) {
    let sim = NotifySim::start().await.unwrap();
    let admin = app.key("admin", &["admin"]).await;
    let pd = create(
        app,
        &admin,
        json!({"name": "pagerduty", "kind": "pagerduty", "api_base": sim.base(),
            "routing_key": notify::PAGERDUTY_KEY}),
    )
    .await;
    for (kind, status) in [
        ("alert.firing", "firing"),
        ("alert.acknowledged", "acknowledged"),
        ("alert.resolved", "resolved"),
    ] {
        let mut tx = app.state.store.begin().await.unwrap();
        let msg = queue::enqueue_to(
            &mut tx,
            kind,
            &alert(status),
            opsdeck::store::now_ms(),
            &[pd],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(settled(app, &msg).await, ("succeeded".into(), 1, Some(202)));
    }
    let events: Vec<Value> = sim
        .hits(Service::PagerDuty)
        .iter()
        .map(|h| h.json())
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
    assert_eq!(events[0]["dedup_key"], "opsdeck:rule:12|service=api");
    assert!(
        events
            .iter()
            .all(|e| e["dedup_key"] == events[0]["dedup_key"])
    );
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert_eq!(events[0]["payload"]["source"], "opsdeck");
    assert_eq!(
        events[0]["links"][0]["href"],
        "https://ops.example.com/alerts"
    );

    sim.trouble(Service::PagerDuty, Trouble::Rejected, 1);
    let msg = send_test(app, &admin, pd).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 2, Some(202)));
    let tries = attempts(app, &msg).await;
    assert!(
        tries[0]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("invalid event")),
        "{tries:?}"
    );
}
crate::dual_test!(pagerduty_lifecycle, super::fast);

fn tls_setup() -> (
    std::sync::Arc<rustls::ServerConfig>,
    tempfile::NamedTempFile,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    (std::sync::Arc::new(config), ca)
}

/// Email over STARTTLS with AUTH to a local SMTP server trusting its self-signed certificate
/// through `ca_file`: a multipart text + HTML message; a 451 refusal retried.
async fn email_notifier(app: &TestApp) {
    let (tls, ca) = tls_setup();
    let smtp = SmtpSim::start("alerts@example.com", "smtp-pass", Some(tls))
        .await
        .unwrap();
    let admin = app.key("admin", &["admin"]).await;
    let id = create(
        app,
        &admin,
        json!({"name": "mail", "kind": "email", "host": "127.0.0.1", "port": smtp.port(),
            "tls": "starttls", "username": "alerts@example.com", "password": "smtp-pass",
            "from": "opsdeck <alerts@example.com>",
            "to": ["oncall@example.com", "cto@example.com"],
            "ca_file": ca.path().to_str().unwrap()}),
    )
    .await;
    let mut tx = app.state.store.begin().await.unwrap();
    let msg = queue::enqueue_to(
        &mut tx,
        "alert.firing",
        &alert("firing"),
        opsdeck::store::now_ms(),
        &[id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 1, Some(250)));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.tls, "STARTTLS was used");
    assert_eq!(mail.user.as_deref(), Some("alerts@example.com"));
    assert_eq!(mail.from, "alerts@example.com");
    assert_eq!(mail.to, ["oncall@example.com", "cto@example.com"]);
    assert!(mail.data.contains("multipart/alternative"), "{}", mail.data);
    assert!(
        mail.data.contains("Content-Type: text/plain"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Content-Type: text/html"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("Subject: [FIRING] Integration down: api (and 2 more)"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("<table"), "{}", mail.data);

    smtp.refuse(451, 1);
    let msg = send_test(app, &admin, id).await;
    assert_eq!(settled(app, &msg).await, ("succeeded".into(), 2, Some(250)));
    assert_eq!(attempts(app, &msg).await[0].0, Some(451));

    // The password is never answered.
    let list = endpoints_json(app, &admin).await.to_string();
    assert!(!list.contains("smtp-pass"), "{list}");
}
crate::dual_test!(email_notifier, super::fast);

/// Bad notifiers are refused naming the field, and nothing is stored.
async fn bad_notifiers(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let sid = notify::TWILIO_SID;
    let cases = [
        (json!({"name": "x", "kind": "carrier-pigeon"}), "kind:"),
        (json!({"name": "x", "kind": "slack"}), "url: is required"),
        (
            json!({"name": "x", "kind": "pagerduty"}),
            "routing_key: is required",
        ),
        (
            json!({"name": "x", "kind": "twilio_sms", "account_sid": sid,
                "auth_token": "t", "from": "+15005550006", "to": "+1555"}),
            "to: \"+1555\" is not an E.164 number",
        ),
        (
            json!({"name": "x", "kind": "twilio_sms", "account_sid": sid,
                "auth_token": "t", "to": "+15551234567"}),
            "from: is required",
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "ftp://hooks.slack.com/services/a"}),
            "url:",
        ),
        (
            json!({"name": "x", "kind": "discord", "url": "http://169.254.169.254/api/webhooks/1/t"}),
            "url: 169.254.169.254 is a cloud metadata",
        ),
        (
            json!({"name": "x", "kind": "slack", "url": "http://[fe80::1]/services/a"}),
            "url: fe80::1 is a link-local address",
        ),
        (
            json!({"name": "x", "kind": "email", "host": "mail.example.com",
                "from": "alerts@example.com", "to": ["oncall"]}),
            "to: \"oncall\" is not an email address",
        ),
        (
            json!({"name": "x", "kind": "email", "host": "mail.example.com", "tls": "ssl",
                "from": "alerts@example.com", "to": "a@example.com"}),
            "tls:",
        ),
        (
            json!({"name": "x", "kind": "pagerduty", "routing_key": notify::PAGERDUTY_KEY,
                "to": "+15551234567"}),
            "to: is not a field of a pagerduty notifier",
        ),
    ];
    for (spec, expected) in cases {
        let res = app
            .call(
                Method::POST,
                "/api/v1/webhooks/endpoints",
                &admin,
                Some(&spec),
            )
            .await;
        let body =
            crate::helpers::error_body(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(expected)),
            "{spec} → {body}"
        );
    }
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT COUNT(*) FROM webhook_endpoints", opsdeck::args![])
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing stored");
    let res = app
        .call(
            Method::POST,
            "/api/v1/webhooks/endpoints/999/test",
            &admin,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
crate::dual_test!(bad_notifiers, super::fast);

/// `[[notifiers]]` are stored at start, listed with source `config`, and refused for deletion
/// through the API; the send test works on them like any other.
async fn config_notifiers(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let list = endpoints_json(app, &admin).await;
    let view = &list["endpoints"][0];
    assert_eq!(view["name"], "pager", "{list}");
    assert_eq!(view["source"], "config");
    assert_eq!(view["kind"], "pagerduty");
    assert!(!list.to_string().contains(notify::PAGERDUTY_KEY));
    let id = view["id"].as_i64().unwrap();
    let res = app
        .call(
            Method::DELETE,
            &format!("/api/v1/webhooks/endpoints/{id}"),
            &admin,
            None,
        )
        .await;
    crate::helpers::error_body(res, StatusCode::CONFLICT, "conflict").await;
}
crate::dual_test!(config_notifiers, |c| {
    super::fast(c);
    c.notifiers = vec![
        serde_json::from_value(serde_json::json!({"name": "pager", "kind": "pagerduty",
            "routing_key": opsdeck::simulators::notify::PAGERDUTY_KEY, "api_base": "http://127.0.0.1:9"}))
        .unwrap(),
    ];
});

/// Without `[alerts] allow_private_targets` (nor `webhooks.allow_private`), a notifier on
/// loopback is refused by the SSRF guard before any byte is sent, and the attempt says why.
async fn private_targets_need_allowing(app: &TestApp) {
    let sim = NotifySim::start().await.unwrap();
    let admin = app.key("admin", &["admin"]).await;
    let slack = create(
        app,
        &admin,
        json!({"name": "ops-slack", "kind": "slack", "url": sim.slack_url()}),
    )
    .await;
    let msg = send_test(app, &admin, slack).await;
    wait_for("the first attempt", || async {
        !attempts(app, &msg).await.is_empty()
    })
    .await;
    let tries = attempts(app, &msg).await;
    assert!(
        tries[0]
            .1
            .as_deref()
            .is_some_and(|e| e.starts_with("refused:") && e.contains("loopback")),
        "{tries:?}"
    );
    assert!(
        sim.hits(Service::Slack).is_empty(),
        "nothing reached the service"
    );
}
crate::dual_test!(private_targets_need_allowing);
