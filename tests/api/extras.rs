//! Provider extras through the real server: the server's own `provider-extras` job collects
//! from the fake providers, the figures and snapshot are stored, shown on the monitor page and
//! in `GET /api/v1/integrations/{id}/extras`; a slot is collected once; a provider answering
//! garbage fails only its own collection, and no key reaches a stored row. Twilio's WhatsApp
//! traffic is reported per sender, with figures worked out here from the fake's own messages.

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
    let client = opsdeck::health::checks::outbound().no_redirect;
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
    for shown in ["$0.006667 per message", "$0.013 per minute", "66.7 %"] {
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

/// One WhatsApp sender's figures, worked out from the fake's messages without the server's
/// code: what the extras must report.
#[derive(Debug, Default)]
struct Expected {
    sent: u64,
    delivered: u64,
    read: u64,
    failed: u64,
    received: u64,
    /// Outbound prices, in millionths.
    cost: i64,
    priced: u64,
    errors: std::collections::BTreeMap<u32, u64>,
}

/// The test's own reading of a Twilio price string ("-0.00500") in millionths.
fn micros(price: &str) -> i64 {
    let (whole, frac) = price
        .trim_start_matches('-')
        .split_once('.')
        .unwrap_or((price, ""));
    let frac = format!("{frac:0<6}");
    whole.parse::<i64>().unwrap() * 1_000_000 + frac[..6].parse::<i64>().unwrap()
}

async fn whatsapp_senders_reported(backend: Backend) {
    use opsdeck::simulators::providers_extras::{TwilioItem, whatsapp_message};
    let now = opsdeck::store::now_ms();
    let minute = 60_000;
    let (support, sales, idle) = (
        "whatsapp:+14155238886",
        "whatsapp:+12025550143",
        "whatsapp:+13105550188",
    );
    // A day's mixed traffic: WhatsApp on two senders with every kind of outcome, SMS beside
    // it, and a WhatsApp message from before the window.
    let statuses = [
        "read",
        "delivered",
        "read",
        "failed",
        "sent",
        "undelivered",
        "read",
        "queued",
        "canceled",
    ];
    let mut items: Vec<TwilioItem> = Vec::new();
    for i in 0..40i64 {
        let sender = if i % 3 == 0 { sales } else { support };
        let customer = format!("whatsapp:+4477009{:05}", i % 7);
        let outbound = i % 5 != 4;
        let status = if outbound {
            statuses[i as usize % statuses.len()]
        } else {
            "received"
        };
        let price = match status {
            "failed" | "queued" | "canceled" => None,
            _ if i % 2 == 0 => Some("-0.00500"),
            _ => Some("-0.00420"),
        };
        let mut m = whatsapp_message(
            sender,
            &customer,
            outbound,
            status,
            price,
            now - (i + 1) * 7 * minute,
            2_000,
        );
        if status == "failed" && i % 2 == 1 {
            m.error_code = Some(63024);
        }
        items.push(m);
    }
    for (i, status) in ["delivered", "undelivered", "delivered", "sent"]
        .iter()
        .enumerate()
    {
        items.push(TwilioItem {
            status: status.to_string(),
            direction: "outbound-api".into(),
            from: "+15005550006".into(),
            to: "+14155552671".into(),
            error_code: (*status == "undelivered").then_some(30003),
            price: Some("-0.00790".into()),
            at: now - (i as i64 + 1) * 11 * minute,
            updated: now - (i as i64 + 1) * 11 * minute + 3_000,
            duration_s: 0,
        });
    }
    items.push(whatsapp_message(
        support,
        "whatsapp:+447700900001",
        true,
        "read",
        Some("-0.00500"),
        now - 30 * 3_600_000,
        1_000,
    ));
    items.sort_by_key(|m| std::cmp::Reverse(m.at));

    // What the extras must say, from the items alone.
    let since = now - 24 * 3_600_000;
    let mut expected: std::collections::BTreeMap<&str, Expected> = Default::default();
    let (mut sms_sent, mut sms_delivered, mut sms_failed) = (0u64, 0u64, 0u64);
    for m in items.iter().filter(|m| m.at >= since) {
        let outbound = m.direction.starts_with("outbound");
        let whatsapp = m.from.starts_with("whatsapp:") || m.to.starts_with("whatsapp:");
        if !whatsapp {
            if outbound {
                sms_sent += 1;
                sms_delivered += u64::from(m.status == "delivered");
                sms_failed += u64::from(m.status == "undelivered");
            }
            continue;
        }
        let sender = if outbound { &m.from } else { &m.to };
        let e = expected
            .entry([support, sales].into_iter().find(|s| s == sender).unwrap())
            .or_default();
        if !outbound {
            e.received += 1;
            continue;
        }
        if m.status == "canceled" {
            continue;
        }
        e.sent += 1;
        e.delivered += u64::from(m.status == "delivered" || m.status == "read");
        e.read += u64::from(m.status == "read");
        if m.status == "failed" || m.status == "undelivered" {
            e.failed += 1;
            *e.errors.entry(m.error_code.unwrap()).or_default() += 1;
        }
        if let Some(p) = &m.price {
            e.cost += micros(p);
            e.priced += 1;
        }
    }
    assert!(
        expected
            .values()
            .all(|e| e.read > 0 && e.failed > 0 && e.received > 0)
    );

    let fake = FakeProviders::new(KEY, ACCOUNT);
    fake.figures(|f| f.extras.twilio_messages = items.clone());
    let (base, _server) = fake.start().await.expect("fake starts");
    let monitors = vec![MonitorSpec {
        whatsapp_senders: vec![support.into(), idle.into()],
        ..monitor("messaging", "twilio", &base)
    }];
    let Some(app) = spawn_app_with(backend, move |c| c.monitors = monitors).await else {
        return;
    };
    let key = app.key("viewer", &["read"]).await;
    let (id,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT id FROM monitors", opsdeck::args![])
        .await
        .unwrap();
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        let res = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/integrations/{id}/extras"),
                &key,
                None,
            )
            .await;
        body = res.json().await.unwrap();
        if !body["collected_at"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body["last_run"]["state"], "ok", "{body}");
    let readings = &body["readings"];
    let reading = |name: String| {
        readings[&name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name}: {readings}"))
    };

    // SMS figures are SMS alone.
    assert_eq!(reading("twilio.sms.total".into()), sms_sent as f64);
    assert_eq!(
        reading("twilio.sms.delivered_rate".into()),
        sms_delivered as f64 / (sms_delivered + sms_failed) as f64
    );
    assert!(body["snapshot"]["sms"]["statuses"].get("read").is_none());

    for (sender, e) in &expected {
        let p = format!(
            "twilio.whatsapp.{}",
            sender.trim_start_matches("whatsapp:+")
        );
        let figure = |f: &str| reading(format!("{p}.{f}"));
        assert_eq!(figure("sent"), e.sent as f64, "{sender}");
        assert_eq!(figure("delivered"), e.delivered as f64, "{sender}");
        assert_eq!(figure("read"), e.read as f64, "{sender}");
        assert_eq!(figure("failed"), e.failed as f64, "{sender}");
        assert_eq!(figure("received"), e.received as f64, "{sender}");
        assert_eq!(
            figure("delivered_rate"),
            e.delivered as f64 / (e.delivered + e.failed) as f64,
            "{sender}"
        );
        assert_eq!(
            figure("read_rate"),
            e.read as f64 / e.delivered as f64,
            "{sender}"
        );
        let per_message = (e.cost as f64 / e.priced as f64).round() / 1e6;
        assert!(
            (figure("cost_per_message") - per_message).abs() < 1e-9,
            "{sender}: {} vs {per_message}",
            figure("cost_per_message")
        );
        for (code, n) in &e.errors {
            assert_eq!(figure(&format!("error.{code}")), *n as f64, "{sender}");
        }
        let row = body["snapshot"]["whatsapp_senders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["sender"] == *sender)
            .unwrap_or_else(|| panic!("no row for {sender}: {body}"));
        assert_eq!(row["configured"], *sender == support);
        assert_eq!(row["sent"], e.sent);
        let mut errors: Vec<(String, u64)> =
            e.errors.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        assert_eq!(row["errors"], serde_json::json!(errors), "{sender}");
    }
    // A configured sender without traffic has its row, and zero counts.
    let rows = body["snapshot"]["whatsapp_senders"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let quiet = rows.iter().find(|r| r["sender"] == idle).expect("idle row");
    assert_eq!(
        (quiet["configured"].as_bool(), quiet["sent"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(reading("twilio.whatsapp.13105550188.sent".into()), 0.0);

    // The page shows the table.
    let admin = browser();
    sign_in_admin(&app, &admin).await;
    let html = crate::helpers::page_text(&app, &admin, &format!("/integrations/{id}")).await;
    for shown in [
        "WhatsApp senders",
        support,
        sales,
        idle,
        "<code>63016</code>",
    ] {
        assert!(html.contains(shown), "the page lacks {shown:?}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_senders_reported_sqlite() {
    whatsapp_senders_reported(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_senders_reported_postgres() {
    whatsapp_senders_reported(Backend::Postgres).await;
}
