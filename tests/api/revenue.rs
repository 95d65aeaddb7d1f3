//! Revenue from Stripe against the fake Stripe server (Stripe's list format, pagination,
//! errors and faults): backfill through faults, signed webhooks (bad signatures, replays,
//! duplicates, out-of-order delivery), and the MRR history the engine stores.

use std::time::Duration;

use opsdeck::revenue::stripe::client::{RetryPolicy, StripeClient, StripeError};
use opsdeck::revenue::stripe::signature;
use opsdeck::revenue::{RevenueError, history, sync};
use opsdeck::simulators::stripe::{FakeStripe, Fault};
use opsdeck::store::now_ms;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, api, browser, page_text, sign_in_admin, spawn_app_with};

const KEY: &str = "sk_test_opsdeck_fake_key";
const SECRET: &str = "whsec_opsdeck_test_secret";
const DAY: i64 = 86_400;

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        max_retry_after: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    }
}

async fn start(backend: Backend, stripe_base: Option<&str>) -> Option<TestApp> {
    let base = stripe_base.map(str::to_string);
    spawn_app_with(backend, move |c| {
        c.stripe.webhook_secret = SECRET.into();
        c.stripe
            .fx_rates
            .insert("eur".into(), opsdeck::config::DecimalText("1.10".into()));
        c.stripe
            .plan_map
            .insert("price_growth".into(), "growth".into());
        c.plans = vec![opsdeck::config::PlanConfig {
            id: "growth".into(),
            name: "Growth".into(),
            price: opsdeck::config::DecimalText("26".into()),
            currency: "usd".into(),
            api_calls: 50_000,
            provider_credits: 0,
            overage_per_1k_calls: opsdeck::config::DecimalText("0.50".into()),
            hard_limit_percent: 120,
        }];
        if let Some(base) = base {
            c.stripe.api_base = base;
            c.stripe.secret_key = KEY.into();
            // No background sync: the tests drive syncs themselves.
            c.stripe.sync_interval = opsdeck::config::ConfigDuration(Duration::ZERO);
        }
    })
    .await
}

fn price(id: &str, cents: i64, interval: &str, count: u32, created: i64) -> Value {
    json!({"id": id, "object": "price", "active": true, "currency": "usd", "unit_amount": cents,
           "unit_amount_decimal": cents.to_string(), "billing_scheme": "per_unit",
           "type": "recurring", "created": created, "livemode": false,
           "recurring": {"interval": interval, "interval_count": count, "usage_type": "licensed"}})
}

fn subscription(
    id: &str,
    customer: &str,
    status: &str,
    price: &Value,
    qty: u64,
    start: i64,
) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": status,
           "currency": price["currency"], "created": start, "start_date": start,
           "discounts": [], "livemode": false,
           "items": {"object": "list", "has_more": false, "data": [
               {"id": format!("si_{id}"), "object": "subscription_item", "quantity": qty,
                "price": price, "discounts": [],
                "current_period_start": start, "current_period_end": start + 30 * DAY}]}})
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

async fn post_event(app: &TestApp, body: &str, header: Option<String>) -> (StatusCode, Value) {
    let mut req = api()
        .post(app.url("/webhooks/stripe"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(h) = header {
        req = req.header("Stripe-Signature", h);
    }
    let res = req.send().await.expect("webhook");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "api_version": "2025-03-31.basil", "data": {"object": object}})
    .to_string()
}

async fn webhooks(app: &TestApp) {
    let now = now_ms() / 1000;
    let growth = price("price_growth", 2600, "month", 1, now - 90 * DAY);
    let sub = subscription("sub_w1", "cus_w1", "active", &growth, 1, now - 40 * DAY);
    let body = event(
        "evt_1",
        "customer.subscription.created",
        now - 40 * DAY,
        sub.clone(),
    );

    // Refused, and nothing stored: no header, a wrong secret, a changed body, an old signature.
    let (status, _) = post_event(app, &body, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let wrong = signature::header(body.as_bytes(), now, &["whsec_someone_else"]);
    assert_eq!(
        post_event(app, &body, Some(wrong)).await.0,
        StatusCode::BAD_REQUEST
    );
    let signed = signature::header(body.as_bytes(), now, &[SECRET]);
    let tampered = body.replace("cus_w1", "cus_w2");
    assert_eq!(
        post_event(app, &tampered, Some(signed.clone())).await.0,
        StatusCode::BAD_REQUEST
    );
    let replayed = signature::header(body.as_bytes(), now - 301, &[SECRET]);
    let (status, err) = post_event(app, &body, Some(replayed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["detail"].as_str().unwrap_or("").contains("tolerance"),
        "{err}"
    );
    // Each refusal is logged with its reason (the Webhooks tab shows them), nothing else.
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM stripe_events WHERE outcome <> 'rejected'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM stripe_events WHERE outcome = 'rejected'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            app,
            "SELECT COUNT(*) FROM stripe_events WHERE outcome = 'rejected' AND detail LIKE '%tolerance%'"
        )
        .await,
        1
    );
    assert_eq!(count(app, "SELECT COUNT(*) FROM stripe_objects").await, 0);

    // A secret being rolled: one v1 per active secret, any match is enough.
    let rolling = signature::header(body.as_bytes(), now, &["whsec_old_one", SECRET]);
    let (status, reply) = post_event(app, &body, Some(rolling)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["outcome"], "applied");
    // Stripe delivering it again changes nothing.
    let (_, reply) = post_event(app, &body, Some(signed)).await;
    assert_eq!(reply["outcome"], "duplicate");

    // An upgrade on day −10, then a late delivery of an older update (day −20) saying past_due.
    let mut upgraded = sub.clone();
    upgraded["items"]["data"][0]["quantity"] = json!(3);
    let newer = event(
        "evt_3",
        "customer.subscription.updated",
        now - 10 * DAY,
        upgraded,
    );
    let header = signature::header(newer.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(app, &newer, Some(header)).await.1["outcome"],
        "applied"
    );
    let mut late = sub.clone();
    late["status"] = json!("past_due");
    let older = event(
        "evt_2",
        "customer.subscription.updated",
        now - 20 * DAY,
        late,
    );
    let header = signature::header(older.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(app, &older, Some(header)).await.1["outcome"],
        "stale"
    );
    let (stored,): (String,) = app
        .state
        .store
        .fetch_one(
            "SELECT data FROM stripe_objects WHERE object_type = 'subscription' AND id = 'sub_w1'",
            opsdeck::args![],
        )
        .await
        .expect("stored");
    let stored: Value = serde_json::from_str(&stored).expect("json");
    assert_eq!(stored["items"]["data"][0]["quantity"], 3);
    assert_eq!(stored["status"], "active");

    // Types opsdeck does not use are acknowledged and logged; a malformed object is logged.
    let other = event("evt_4", "account.updated", now, json!({"id": "acct_1"}));
    let header = signature::header(other.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(app, &other, Some(header)).await.1["outcome"],
        "ignored"
    );
    let broken = event(
        "evt_5",
        "customer.subscription.updated",
        now,
        json!({"id": "sub_bad", "status": "active"}),
    );
    let header = signature::header(broken.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(app, &broken, Some(header)).await.1["outcome"],
        "failed"
    );
    let (outcome,): (String,) = app
        .state
        .store
        .fetch_one(
            "SELECT outcome FROM stripe_events WHERE id = 'evt_5'",
            opsdeck::args![],
        )
        .await
        .expect("logged");
    assert_eq!(outcome, "failed");
    let (status, _) = post_event(
        app,
        "{not json",
        Some(signature::header(b"{not json", now, &[SECRET])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The history follows the events in time order, whatever order they came in: $26 from day
    // −40, past due (still counted) from −20, $78 from −10.
    app.state.revenue.mark_dirty();
    app.state
        .revenue
        .recompute_if_dirty(&app.state.store)
        .await
        .expect("recompute");
    // The subscription's price maps to the growth plan, so its quota follows.
    let key = app.key("reader", &["read"]).await;
    let quota: Value = app
        .call(
            reqwest::Method::GET,
            "/api/v1/customers/cus_w1/quota",
            &key,
            None,
        )
        .await
        .json()
        .await
        .expect("quota");
    assert_eq!(quota["plan"], "growth", "{quota}");
    let day = |d: i64| (now - d * DAY) / DAY * DAY * 1000;
    for (d, cents) in [(41, 0), (39, 2600), (15, 2600), (5, 7800)] {
        let mrr: Option<(i64,)> = app
            .state
            .store
            .fetch_optional(
                "SELECT mrr FROM revenue_days WHERE day = $1",
                opsdeck::args![day(d)],
            )
            .await
            .expect("day");
        assert_eq!(mrr.map_or(0, |m| m.0), cents * 1_000_000, "day −{d}");
    }

    // Canceled: churned in the history, and off the plan Stripe had put it on.
    let mut canceled = sub.clone();
    canceled["status"] = json!("canceled");
    canceled["ended_at"] = json!(now - 60);
    let gone = event("evt_6", "customer.subscription.deleted", now - 60, canceled);
    let header = signature::header(gone.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(app, &gone, Some(header)).await.1["outcome"],
        "applied"
    );
    app.state.revenue.mark_dirty();
    app.state
        .revenue
        .recompute_if_dirty(&app.state.store)
        .await
        .expect("recompute");
    let res = app
        .call(
            reqwest::Method::GET,
            "/api/v1/customers/cus_w1/quota",
            &key,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let (churned,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(churned_customers), 0) AS BIGINT) FROM revenue_days",
            opsdeck::args![],
        )
        .await
        .expect("churn");
    assert_eq!(churned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_sqlite() {
    let app = start(Backend::Sqlite, None).await.expect("sqlite");
    webhooks(&app).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_postgres() {
    let Some(app) = start(Backend::Postgres, None).await else {
        return;
    };
    webhooks(&app).await;
    app.finish().await;
}

/// 250 customers with one subscription each (every tenth canceled), so every list spans pages.
fn seed(stripe: &FakeStripe) -> i64 {
    let now = now_ms() / 1000;
    let start = now - 100 * DAY;
    let starter = price("price_starter", 800, "month", 1, start - DAY);
    let annual = price("price_annual", 240_000, "year", 2, start - DAY);
    stripe.put("prices", starter.clone());
    stripe.put("prices", annual.clone());
    stripe.put(
        "products",
        json!({"id": "prod_1", "object": "product", "name": "Growth", "active": true, "created": start}),
    );
    let mut expected = 0;
    for n in 0..250 {
        let created = start + n;
        let customer = format!("cus_{n:04}");
        stripe.put(
            "customers",
            json!({"id": customer, "object": "customer", "created": created, "email": format!("c{n}@example.com")}),
        );
        let (p, status) = match n % 10 {
            0 => (&starter, "canceled"),
            1 => (&annual, "active"),
            _ => (&starter, "active"),
        };
        let mut sub = subscription(&format!("sub_{n:04}"), &customer, status, p, 1, created);
        if status == "canceled" {
            sub["canceled_at"] = json!(now - 5 * DAY);
            sub["ended_at"] = json!(now - 5 * DAY);
        } else {
            expected += if p == &annual { 10_000 } else { 800 };
        }
        stripe.put("subscriptions", sub);
    }
    expected
}

async fn backfill(backend: Backend) {
    let stripe = FakeStripe::new(KEY);
    let expected_cents = seed(&stripe);
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let client = StripeClient::new(&base, KEY, quick_retries()).expect("client");
    // A rate limit, a 500 asking for a retry, a timeout and a 503 with Retry-After, all
    // recovered from.
    stripe.fault(Fault::rate_limited());
    stripe.fault(Fault {
        should_retry: Some(true),
        ..Fault::server_error()
    });
    stripe.fault(Fault {
        delay: Some(Duration::from_millis(700)),
        ..Fault::default()
    });
    stripe.fault(Fault {
        status: 503,
        retry_after: Some(1),
        ..Fault::default()
    });
    // The server's own start-up recompute, done (or taken) first, so that it cannot write a
    // history of the empty store after the recompute below.
    app.state
        .revenue
        .recompute_if_dirty(&app.state.store)
        .await
        .expect("start-up recompute");
    let summary = sync::backfill(&app.state.store, &client, "usd", &|_| {})
        .await
        .expect("backfill");
    assert_eq!(summary.stored, 2 + 1 + 250 + 250);
    assert!(summary.skipped.is_empty());
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_objects WHERE object_type = 'subscription'"
        )
        .await,
        250
    );
    let requests = stripe.requests();
    let subs: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("/v1/subscriptions"))
        .collect();
    assert_eq!(
        subs.len(),
        3,
        "250 subscriptions are three pages of 100: {subs:?}"
    );
    assert!(
        subs.iter()
            .all(|r| r.contains("status=all") && r.contains("limit=100"))
    );
    assert!(subs[1].contains("starting_after=sub_0150"), "{subs:?}");
    assert!(subs.iter().all(
        |r| r.contains("expand%5B%5D=data.discounts") || r.contains("expand[]=data.discounts")
    ));
    // Progress was recorded for every resource.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_sync WHERE state = 'done'"
        )
        .await,
        sync::RESOURCES.len() as i64
    );

    let settings = history::Settings {
        reporting_currency: "usd".into(),
        past_due_churn_days: 0,
    };
    history::recompute(&app.state.store, &settings, now_ms())
        .await
        .expect("recompute");
    let (mrr, customers): (i64, i64) = app
        .state
        .store
        .fetch_one(
            "SELECT mrr, customers FROM revenue_days ORDER BY day DESC LIMIT 1",
            opsdeck::args![],
        )
        .await
        .expect("today");
    assert_eq!(mrr, expected_cents * 1_000_000);
    assert_eq!(customers, 225);
    let (churned,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(churned_customers), 0) AS BIGINT) FROM revenue_days",
            opsdeck::args![],
        )
        .await
        .expect("churn");
    assert_eq!(churned, 25);

    // Stripe saying not to retry, and a refused key, end the sync at once; stored data stays.
    stripe.fault(Fault {
        should_retry: Some(false),
        ..Fault::server_error()
    });
    let before = stripe.requests().len();
    let err = sync::backfill(&app.state.store, &client, "usd", &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RevenueError::Stripe(StripeError::Api { status: 500, .. })
        ),
        "{err}"
    );
    assert_eq!(
        stripe.requests().len(),
        before + 1,
        "no retry after Stripe-Should-Retry: false"
    );
    let wrong = StripeClient::new(&base, "sk_test_wrong", quick_retries()).expect("client");
    let err = sync::backfill(&app.state.store, &wrong, "usd", &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, RevenueError::Stripe(ref e) if e.is_unauthorized()),
        "{err}"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_objects WHERE object_type = 'subscription'"
        )
        .await,
        250
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_sqlite() {
    backfill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_postgres() {
    backfill(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_marks_stripe_broken_over_http() {
    let stripe = FakeStripe::new("sk_test_the_real_one");
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let app = start(Backend::Sqlite, Some(&base)).await.expect("sqlite");
    let admin = app.key("ops", &["admin"]).await;
    let res = app
        .call(reqwest::Method::POST, "/api/v1/stripe/sync", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mut status = Value::Null;
    for _ in 0..100 {
        status = app
            .call(reqwest::Method::GET, "/api/v1/stripe/sync", &admin, None)
            .await
            .json()
            .await
            .expect("json");
        if status["broken"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["connected"], true);
    assert_eq!(status["broken"], true, "{status}");
    // A failed sync leaves whatever was stored and says the figures are stale.
    assert_eq!(status["stale"], true, "{status}");
    assert!(status["last_sync_at"].is_null());
    assert!(
        status["last_error"].as_str().unwrap_or("").contains("401"),
        "{status}"
    );
    app.finish().await;
}

/// An upstream that quotes the whole key back (a misbehaving proxy in front of Stripe, say):
/// the key reaches neither the sync status, the Revenue page nor the stored sync state.
async fn an_echoed_key_is_never_shown_or_stored(backend: Backend) {
    use axum::http::{HeaderMap, StatusCode as Status};
    async fn echo(headers: HeaderMap) -> (Status, axum::Json<Value>) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let message = format!("Invalid API Key provided. You sent: {auth}");
        let body = json!({"error": {"type": "invalid_request_error", "message": message}});
        (Status::UNAUTHORIZED, axum::Json(body))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let res = app
        .call(reqwest::Method::POST, "/api/v1/stripe/sync", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mut status = String::new();
    for _ in 0..100 {
        status = app
            .call(reqwest::Method::GET, "/api/v1/stripe/sync", &admin, None)
            .await
            .text()
            .await
            .unwrap();
        if status.contains("\"broken\":true") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.contains("\"broken\":true"), "{status}");
    assert!(status.contains("You sent: Bearer sk_test_***"), "{status}");
    assert!(!status.contains(KEY), "the status quotes the key: {status}");
    let client = browser();
    sign_in_admin(&app, &client).await;
    let page = page_text(&app, &client, "/revenue").await;
    assert!(!page.contains(KEY), "the Revenue page quotes the key");
    let stored = count(
        &app,
        "SELECT COUNT(*) FROM stripe_sync WHERE error LIKE '%opsdeck_fake_key%'",
    )
    .await;
    assert_eq!(stored, 0, "a sync error stored with the key in it");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_key_is_never_shown_or_stored_sqlite() {
    an_echoed_key_is_never_shown_or_stored(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_key_is_never_shown_or_stored_postgres() {
    an_echoed_key_is_never_shown_or_stored(Backend::Postgres).await;
}

fn discount(percent: f64, duration: &str, months: Option<u32>, start: i64) -> Value {
    json!({"id": format!("di_{start}"), "object": "discount", "start": start, "end": null,
           "source": {"type": "coupon", "coupon": {"id": format!("co_{duration}"),
             "object": "coupon", "percent_off": percent, "amount_off": null,
             "duration": duration, "duration_in_months": months}}})
}

fn invoice(id: &str, customer: &str, sub: &str, price: &str, cents: i64, start: i64) -> Value {
    json!({"id": id, "object": "invoice", "customer": customer, "status": "paid",
           "currency": "usd", "created": start, "total": cents, "amount_paid": cents,
           "amount_due": cents, "attempt_count": 1, "billing_reason": "subscription_cycle",
           "parent": {"type": "subscription_details",
                      "subscription_details": {"subscription": sub}},
           "lines": {"object": "list", "has_more": false, "data": [
               {"id": format!("il_{id}"), "object": "line_item", "amount": cents,
                "currency": "usd", "quantity": 1,
                "period": {"start": start, "end": start + 30 * DAY},
                "pricing": {"type": "price_details", "price_details": {"price": price}},
                "parent": {"type": "subscription_item_details",
                           "subscription_item_details": {"proration": false}}}]}})
}

/// A dozen subscriptions chosen for their edge cases, with every figure worked out by hand
/// (the arithmetic is in the comments), synced from the fake Stripe and read over HTTP.
async fn tricky_subscriptions(backend: Backend) {
    let now = now_ms() / 1000;
    let ago = |days: i64| now - days * DAY;
    let stripe = FakeStripe::new(KEY);
    let growth = price("price_growth", 2600, "month", 1, ago(400));
    let starter = price("price_starter", 800, "month", 1, ago(400));
    let biennial = price("price_biennial", 240_000, "year", 2, ago(400));
    let weekly = price("price_weekly", 1000, "week", 1, ago(400));
    let seat = price("price_seat", 500, "month", 1, ago(400));
    let pro = price("price_pro", 6800, "month", 1, ago(400));
    let mut euro = price("price_euro", 2000, "month", 1, ago(400));
    euro["currency"] = json!("eur");
    let mut metered = price("price_metered", 1, "month", 1, ago(400));
    metered["recurring"]["usage_type"] = json!("metered");
    for p in [
        &growth, &starter, &biennial, &weekly, &seat, &pro, &euro, &metered,
    ] {
        stripe.put("prices", p.clone());
    }
    let mut subs = Vec::new();
    // a: $2,400 every 2 years = $100.00 a month.
    subs.push(subscription(
        "sub_a",
        "cus_a",
        "active",
        &biennial,
        1,
        ago(60),
    ));
    // b: $10 a week = 1000 × 52 / 12 = 4333.33¢.
    subs.push(subscription(
        "sub_b",
        "cus_b",
        "active",
        &weekly,
        1,
        ago(60),
    ));
    // c: 7 × $26 = $182, new 10 days ago.
    subs.push(subscription(
        "sub_c",
        "cus_c",
        "active",
        &growth,
        7,
        ago(10),
    ));
    // d: $26 + 2 seats × $5 = $36.
    let mut d = subscription("sub_d", "cus_d", "active", &growth, 1, ago(60));
    d["items"]["data"].as_array_mut().expect("items").push(
        json!({"id": "si_d2", "object": "subscription_item", "quantity": 2, "price": seat,
                     "discounts": [], "current_period_start": ago(60)}),
    );
    subs.push(d);
    // e: 25 % off $68 for 3 months, from 45 days ago: $51.
    let mut e = subscription("sub_e", "cus_e", "active", &pro, 1, ago(45));
    e["discounts"] = json!([discount(25.0, "repeating", Some(3), ago(45))]);
    subs.push(e);
    // f: a 14-day trial from 20 days ago converting to $26: new 6 days ago.
    let mut f = subscription("sub_f", "cus_f", "active", &growth, 1, ago(20));
    f["trial_start"] = json!(ago(20));
    f["trial_end"] = json!(ago(6));
    f["items"]["data"][0]["current_period_start"] = json!(ago(6));
    subs.push(f);
    // g: $26, past due, then canceled 5 days ago: churn of $26.
    let mut g = subscription("sub_g", "cus_g", "canceled", &growth, 1, ago(60));
    g["canceled_at"] = json!(ago(5));
    g["ended_at"] = json!(ago(5));
    subs.push(g);
    // h: $8, collection paused from its period 15 days ago: contraction, not churn.
    let mut h = subscription("sub_h", "cus_h", "active", &starter, 1, ago(60));
    h["pause_collection"] = json!({"behavior": "void", "resumes_at": null});
    h["items"]["data"][0]["current_period_start"] = json!(ago(15));
    subs.push(h);
    // i: €20 at the configured 1.10 = $22.
    subs.push(subscription("sub_i", "cus_i", "active", &euro, 1, ago(60)));
    // j: billed $8 60 and 30 days ago, upgraded to $26 from its period 12 days ago: +$18.
    let mut j = subscription("sub_j", "cus_j", "active", &growth, 1, ago(60));
    j["items"]["data"][0]["current_period_start"] = json!(ago(12));
    subs.push(j);
    stripe.put(
        "invoices",
        invoice("in_j1", "cus_j", "sub_j", "price_starter", 800, ago(60)),
    );
    stripe.put(
        "invoices",
        invoice("in_j2", "cus_j", "sub_j", "price_starter", 800, ago(30)),
    );
    // k: metered only: never MRR.
    subs.push(subscription(
        "sub_k",
        "cus_k",
        "active",
        &metered,
        1,
        ago(60),
    ));
    // l: a one-time 50 % coupon leaves MRR at $26.
    let mut l = subscription("sub_l", "cus_l", "active", &growth, 1, ago(60));
    l["discounts"] = json!([discount(50.0, "once", None, ago(60))]);
    subs.push(l);
    for sub in subs {
        stripe.put("subscriptions", sub);
    }
    // Payments in the period: 8 intents succeeded and 2 failed; 8 charges of $26, one refunded
    // and one lost in a dispute; 4 paid invoices of $26 of a subscription not synced.
    for n in 0..10 {
        let ok = n < 8;
        stripe.put(
            "payment_intents",
            json!({"id": format!("pi_{n}"), "object": "payment_intent",
            "amount": 2600, "currency": "usd", "created": ago(3 + n), "customer": "cus_c",
            "status": if ok { "succeeded" } else { "requires_payment_method" },
            "last_payment_error": if ok { Value::Null } else { json!({"code": "card_declined"}) }}),
        );
        if ok {
            stripe.put(
                "charges",
                json!({"id": format!("ch_{n}"), "object": "charge",
                "amount": 2600, "currency": "usd", "created": ago(3 + n), "customer": "cus_c",
                "status": "succeeded", "paid": true}),
            );
        }
    }
    stripe.put(
        "refunds",
        json!({"id": "re_1", "object": "refund", "amount": 2600,
        "currency": "usd", "created": ago(2), "charge": "ch_1", "status": "succeeded"}),
    );
    stripe.put(
        "disputes",
        json!({"id": "dp_1", "object": "dispute", "amount": 2600,
        "currency": "usd", "created": ago(2), "charge": "ch_2", "status": "lost",
        "reason": "fraudulent"}),
    );
    for n in 0..4 {
        stripe.put(
            "invoices",
            invoice(
                &format!("in_c{n}"),
                "cus_x",
                "sub_x",
                "price_growth",
                2600,
                ago(4 + n),
            ),
        );
    }

    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let synced = app
        .state
        .revenue
        .sync(&app.state.store, true, &|_| {})
        .await;
    assert!(synced.is_ok(), "{synced:?}");
    let key = app.key("reader", &["read"]).await;
    let report: Value = app
        .call(
            reqwest::Method::GET,
            "/api/v1/metrics/revenue?interval=week",
            &key,
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    let fig = |name: &str| report["figures"][name]["value"].clone();
    let cents = |name: &str| fig(name)["amount"].as_i64().unwrap_or(i64::MIN);
    // End: 10000 + 4333.33 + 18200 + 3600 + 5100 + 2600 + 0 + 0 + 2200 + 2600 + 0 + 2600.
    assert_eq!(cents("mrr"), 51_233, "{report}");
    assert_eq!(cents("arr"), 614_800);
    assert_eq!(fig("mrr")["currency"], "usd");
    // Start (day −30): a, b, d, e, g ($26), h ($8), i, j ($8), l = 32033.33.
    assert_eq!(cents("new_mrr"), 20_800);
    assert_eq!(cents("expansion_mrr"), 1_800);
    assert_eq!(cents("contraction_mrr"), 800);
    assert_eq!(cents("churned_mrr"), 2_600);
    assert_eq!(cents("reactivation_mrr"), 0);
    assert_eq!(cents("net_new_mrr"), 19_200);
    assert_eq!(fig("paying_customers"), json!(9.0));
    // 1 of the 9 paying at the start churned.
    assert_eq!(fig("customer_churn_rate"), json!(11.11));
    // (2600 + 800) / 32033.33 and (3400 − 1800) / 32033.33.
    assert_eq!(fig("gross_mrr_churn_rate"), json!(10.61));
    assert_eq!(fig("net_mrr_churn_rate"), json!(4.99));
    assert_eq!(fig("nrr"), json!(95.01));
    // (20800 + 1800) / (800 + 2600).
    assert_eq!(fig("quick_ratio"), json!(6.65));
    // 51233.33 / 9.
    assert_eq!(cents("arpa"), 5_693);
    assert_eq!(fig("payment_success_rate"), json!(80.0));
    assert_eq!(fig("refund_rate"), json!(12.5));
    assert_eq!(fig("dispute_rate"), json!(12.5));
    // 20800 − 2600 refunded − 2600 lost in dispute.
    assert_eq!(cents("net_revenue"), 15_600);
    // Four $26 invoices of another subscription, and j's $8 invoice of 30 days ago.
    assert_eq!(cents("recurring_revenue"), 11_200);
    assert_eq!(cents("non_recurring_revenue"), 9_600);
    // The weekly series ends on the period's MRR, and its movements add up to the change.
    let series = report["series"].as_array().expect("series");
    let last = series.last().expect("points");
    assert_eq!(last["mrr"]["amount"], 51_233);
    let moved: i64 = series
        .iter()
        .map(|p| {
            ["new", "expansion", "contraction", "churn", "reactivation"]
                .iter()
                .map(|k| p[*k]["amount"].as_i64().unwrap_or(0))
                .sum::<i64>()
        })
        .sum();
    assert_eq!(moved, 20_800 + 1_800 - 800 - 2_600);

    // Bad input names the problem.
    for (query, needle) in [
        ("interval=hour", "interval"),
        ("from=2026-13-01", "from"),
        ("from=2026-02-01&to=2026-01-01", "before"),
    ] {
        let res = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/metrics/revenue?{query}"),
                &key,
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let body: Value = res.json().await.expect("json");
        assert!(
            body["detail"].as_str().unwrap_or("").contains(needle),
            "{query}: {body}"
        );
    }

    // The sync is recorded, so the figures are not stale.
    let status: Value = app
        .call(reqwest::Method::GET, "/api/v1/stripe/sync", &key, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(status["stale"], false, "{status}");
    assert!(status["last_sync_at"].as_i64().is_some(), "{status}");
    assert!(status["age_secs"].as_i64().is_some_and(|a| a < 60));

    // Every figure leads to the customers and objects behind it.
    let detail: Value = app
        .call(
            reqwest::Method::GET,
            "/api/v1/revenue/customers/cus_a",
            &key,
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(detail["mrr"]["amount"], 10_000, "{detail}");
    assert_eq!(detail["movements"][0]["kind"], "new");
    assert!(
        detail["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .any(|o| o["id"] == "sub_a" && o["object_type"] == "subscription"),
        "{detail}"
    );
    let res = app
        .call(
            reqwest::Method::GET,
            "/api/v1/revenue/customers/cus_nobody",
            &key,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let web = browser();
    let csrf = sign_in_admin(&app, &web).await;
    let page = |path: &'static str| {
        let web = web.clone();
        let url = app.url(path);
        async move {
            let res = web.get(url).send().await.expect("page");
            (res.status(), res.text().await.expect("html"))
        }
    };
    let (status, html) = page("/revenue").await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "$512.33",
        "Last synced",
        "aria-label=\"MRR movements\"",
        "href=\"/revenue/customers/cus_a\"",
        "Payments health",
        "Sync now",
    ] {
        assert!(html.contains(needle), "{needle} on the Revenue page");
    }
    assert!(!html.contains("stale</span>"));
    let (_, html) = page("/").await;
    let card = &html[html.find("data-figure=\"mrr\"").expect("MRR card")..];
    assert!(card[..300].contains("$512.33"), "{}", &card[..300]);
    assert!(html.contains("aria-label=\"MRR movements\""));
    let (status, html) = page("/revenue/customers/cus_a").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("$100.00") && html.contains("/revenue/objects/subscription/sub_a"));
    let (status, html) = page("/revenue/objects/subscription/sub_a").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("price_biennial"));
    // The payment figures lead to their objects.
    let (status, html) = page("/revenue/payments?kind=refund&period=30d").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("/revenue/objects/refund/"),
        "refunds are listed"
    );
    assert!(
        page("/revenue")
            .await
            .1
            .contains("/revenue/payments?kind=payment_intent&amp;failed=1")
    );
    let (status, _) = page("/revenue/payments?kind=banana").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for missing in [
        "/revenue/objects/banana/sub_a",
        "/revenue/objects/subscription/sub_nope",
        "/revenue/customers/cus_nobody",
    ] {
        assert_eq!(page(missing).await.0, StatusCode::NOT_FOUND, "{missing}");
    }
    let res = web
        .post(app.url("/revenue/sync"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = web
        .post(app.url("/revenue/sync"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_subscriptions_sqlite() {
    tricky_subscriptions(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_subscriptions_postgres() {
    tricky_subscriptions(Backend::Postgres).await;
}

fn charge(id: &str, customer: &str, cents: i64, status: &str, created: i64) -> Value {
    json!({"id": id, "object": "charge", "customer": customer, "amount": cents, "currency": "usd",
           "status": status, "paid": status == "succeeded", "refunded": false, "created": created,
           "livemode": false})
}

fn usage(id: &str, customer: &str, provider: &str, sku: &str, unit: &str, quantity: f64) -> Value {
    let time = time::OffsetDateTime::from_unix_timestamp(now_ms() / 1000 - DAY)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    json!({"specversion": "1.0", "id": id, "source": "app", "type": "provider.usage",
           "subject": customer, "time": time,
           "data": {"provider": provider, "sku": sku, "unit": unit, "quantity": quantity}})
}

/// Margin per customer, plan and provider from synced charges, refunds and disputes against
/// priced provider usage, worked out by hand.
async fn margin(backend: Backend) {
    let stripe = FakeStripe::new(KEY);
    let now = now_ms() / 1000;
    let at = now - 2 * DAY;
    stripe.put(
        "customers",
        json!({"id": "cus_a", "object": "customer", "created": at}),
    );
    stripe.put("charges", charge("ch_a", "cus_a", 10_000, "succeeded", at));
    stripe.put("charges", charge("ch_b", "cus_b", 2_600, "succeeded", at));
    stripe.put("charges", charge("ch_c", "cus_c", 800, "failed", at));
    stripe.put("charges", charge("ch_d", "cus_d", 6_800, "succeeded", at));
    // Refunds and disputes name only the charge: they count against its customer.
    stripe.put(
        "refunds",
        json!({"id": "re_a", "object": "refund", "amount": 2_000, "charge": "ch_a",
               "currency": "usd", "status": "succeeded", "created": at + 60}),
    );
    stripe.put(
        "disputes",
        json!({"id": "dp_d", "object": "dispute", "amount": 6_800, "charge": "ch_d",
               "currency": "usd", "status": "lost", "created": at + 60}),
    );
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let client = StripeClient::new(&base, KEY, quick_retries()).expect("client");
    sync::backfill(&app.state.store, &client, "usd", &|_| {})
        .await
        .expect("backfill");

    let ingest = app.key("app", &["ingest"]).await;
    let batch = json!([
        usage("u1", "cus_a", "luma", "v2", "credit", 1_000.0), // $4.50
        usage("u2", "cus_a", "elevenlabs", "tts", "character", 1_500.0), // $1.50
        usage("u3", "cus_b", "kling", "v2", "credit", 5_000.0), // $30.00
        usage("u4", "cus_x", "bfl", "flux", "image", 1.0),     // $0.003
    ]);
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/events",
            &ingest,
            Some(&batch),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let admin = app.key("admin", &["admin"]).await;
    let res = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/customers/cus_a/plan",
            &admin,
            Some(&json!({"plan": "growth"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let read = app.key("read", &["read"]).await;
    let get = |query: &str| {
        let app = &app;
        let read = read.clone();
        let path = format!("/api/v1/metrics/margin{query}");
        async move {
            let res = app.call(reqwest::Method::GET, &path, &read, None).await;
            let status = res.status();
            (status, res.json::<Value>().await.expect("json"))
        }
    };
    let amount = |v: &Value| v["amount"].as_i64().expect("amount");
    let keys = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| r["key"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // Revenue: a 10,000 − 2,000 refunded; b 2,600; c's charge failed; d 6,800 − 6,800 lost.
    // Cost: a 450 + 150, b 3,000, x 0.3 (rounds once, in the total).
    let (status, by_customer) = get("?period=30d").await;
    assert_eq!(status, StatusCode::OK, "{by_customer}");
    assert_eq!(by_customer["group_by"], "customer");
    assert_eq!(amount(&by_customer["revenue"]), 10_600);
    assert_eq!(amount(&by_customer["cost"]), 3_600);
    assert_eq!(amount(&by_customer["margin"]), 7_000);
    assert_eq!(by_customer["margin_pct"], 66.04);
    assert_eq!(amount(&by_customer["previous"]["revenue"]), 0);
    assert!(by_customer["change_pct"].is_null());
    assert_eq!(by_customer["groups"], 4);
    assert_eq!(
        keys(&by_customer["rows"]),
        ["cus_a", "cus_d", "cus_x", "cus_b"]
    );
    let a = &by_customer["rows"][0];
    assert_eq!(
        (
            amount(&a["revenue"]),
            amount(&a["cost"]),
            amount(&a["margin"])
        ),
        (8_000, 600, 7_400)
    );
    assert_eq!(a["margin_pct"], 92.5);
    let b = &by_customer["least_profitable"][0];
    assert_eq!(b["key"], "cus_b");
    assert_eq!(amount(&b["margin"]), -400);
    assert_eq!(b["cost_of_revenue_pct"], 28.3);

    let (_, by_plan) = get("?period=30d&group_by=plan").await;
    assert_eq!(keys(&by_plan["rows"]), ["growth", "(none)"]);
    let none = &by_plan["rows"][1];
    assert_eq!(
        (
            amount(&none["revenue"]),
            amount(&none["cost"]),
            none["customers"].as_i64()
        ),
        (2_600, 3_000, Some(3))
    );

    let (_, by_provider) = get("?period=30d&group_by=provider&limit=2").await;
    assert_eq!(by_provider["groups"], 4);
    assert_eq!(keys(&by_provider["rows"]), ["bfl", "elevenlabs"]);
    assert_eq!(keys(&by_provider["least_profitable"]), ["kling", "luma"]);
    assert!(by_provider["rows"][0]["revenue"].is_null());
    assert_eq!(amount(&by_provider["least_profitable"][0]["cost"]), 3_000);

    // The period before is summed as a whole (its groups are never shown): a period of the
    // next three days has all of the above as its previous period, at the same figures.
    let date = |secs: i64| {
        let d = time::OffsetDateTime::from_unix_timestamp(secs).expect("time");
        format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    };
    let ahead = format!("?from={}&to={}", date(now), date(now + 3 * DAY));
    let (status, ahead) = get(&ahead).await;
    assert_eq!(status, StatusCode::OK, "{ahead}");
    assert_eq!(
        (
            amount(&ahead["previous"]["revenue"]),
            amount(&ahead["previous"]["cost"]),
            amount(&ahead["previous"]["margin"])
        ),
        (10_600, 3_600, 7_000),
        "{ahead}"
    );
    assert_eq!(amount(&ahead["revenue"]), 0);

    // Outside the period nothing counts.
    let (_, old) = get("?from=2020-01-01&to=2020-02-01").await;
    assert_eq!(amount(&old["revenue"]), 0);
    assert_eq!(old["groups"], 0);

    for bad in [
        "?group_by=sku",
        "?limit=0",
        "?period=banana",
        "?from=2026-02-01&to=2026-01-01",
    ] {
        let (status, body) = get(bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }

    // A payment intent that failed and then succeeded on retry counts once, as succeeded; the
    // daily sums kept one payment at a time equal a rebuild from every stored payment.
    let pi = |status: &str, error: bool| {
        json!({"id": "pi_retry", "object": "payment_intent", "customer": "cus_a",
               "amount": 2_600, "currency": "usd", "status": status, "created": now - 3_600,
               "last_payment_error": if error { json!({"code": "card_declined"}) } else { Value::Null }})
    };
    for (n, (kind, object)) in [
        (
            "payment_intent.payment_failed",
            pi("requires_payment_method", true),
        ),
        ("payment_intent.succeeded", pi("succeeded", false)),
    ]
    .into_iter()
    .enumerate()
    {
        let body = event(&format!("evt_pi_{n}"), kind, now - 60 + n as i64, object);
        let header = signature::header(body.as_bytes(), now, &[SECRET]);
        assert_eq!(
            post_event(&app, &body, Some(header)).await.0,
            StatusCode::OK
        );
    }
    type Sums = (
        i64,
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let sums = || async {
        app.state
            .store
            .fetch_all::<Sums>(
                "SELECT day, currency, intents_succeeded, intents_failed, charges, charged, \
                 refunds, refunded, disputes_opened, disputes_lost, recurring, disputes_on_charges \
                 FROM revenue_payment_days ORDER BY day, currency",
                opsdeck::args![],
            )
            .await
            .expect("sums")
    };
    let kept = sums().await;
    let intents = kept.iter().fold((0, 0), |a, r| (a.0 + r.2, a.1 + r.3));
    assert_eq!(intents, (1, 0), "{kept:?}");
    let charged: i64 = kept.iter().map(|r| r.5).sum();
    assert_eq!(charged, 10_000 + 2_600 + 6_800);
    opsdeck::revenue::records::rebuild_payment_days(&app.state.store)
        .await
        .expect("rebuild");
    assert_eq!(sums().await, kept);

    // The Costs & Margin page shows the same figures.
    let web = browser();
    sign_in_admin(&app, &web).await;
    let html = web
        .get(app.url("/costs"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    for needle in [
        "$70.00",
        "66.0 % of net revenue $106.00",
        "Least profitable customers",
        "href=\"/revenue/customers/cus_b\"",
        "28.3 %",
        // Per plan, the customers active in the period; Settings → Plans counts those
        // assigned, and each page says which it counts.
        "Customers active in period</th>",
    ] {
        assert!(html.contains(needle), "{needle} on the Costs page");
    }
    let plans = web
        .get(app.url("/settings/plans"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(plans.contains("Customers assigned</th>"), "{plans}");

    // A computed margin is kept only while what it is made of is unchanged: more provider
    // cost, a plan assignment and a new charge each show in the next answer.
    let (_, kept) = get("?period=30d").await;
    assert_eq!(amount(&kept["cost"]), 3_600);
    let more = json!([usage("u5", "cus_b", "kling", "v2", "credit", 5_000.0)]);
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/events",
            &ingest,
            Some(&more),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, after) = get("?period=30d").await;
    assert_eq!(amount(&after["cost"]), 6_600, "{after}");
    assert_eq!(after["least_profitable"][0]["key"], "cus_b");
    assert_eq!(amount(&after["least_profitable"][0]["margin"]), -3_400);

    let res = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/customers/cus_b/plan",
            &admin,
            Some(&json!({"plan": "growth"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, by_plan) = get("?period=30d&group_by=plan").await;
    let growth = &by_plan["rows"].as_array().expect("rows")[..]
        .iter()
        .find(|r| r["key"] == "growth")
        .cloned()
        .expect("growth");
    assert_eq!(growth["customers"], 2, "{by_plan}");

    let body = event(
        "evt_ch_late",
        "charge.succeeded",
        now - 30,
        charge("ch_e", "cus_x", 1_000, "succeeded", now - 120),
    );
    let header = signature::header(body.as_bytes(), now, &[SECRET]);
    assert_eq!(
        post_event(&app, &body, Some(header)).await.0,
        StatusCode::OK
    );
    let (_, after) = get("?period=30d").await;
    assert_eq!(amount(&after["revenue"]), 11_600, "{after}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn margin_sqlite() {
    margin(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn margin_postgres() {
    margin(Backend::Postgres).await;
}

/// Polls the sync status until no sync runs and one has finished after `after` (UTC ms).
async fn wait_for_sync(app: &TestApp, key: &str, after: i64) -> Value {
    let mut status = Value::Null;
    for _ in 0..200 {
        status = app
            .call(reqwest::Method::GET, "/api/v1/stripe/sync", key, None)
            .await
            .json()
            .await
            .expect("json");
        let done = status["last_sync_at"].as_i64().is_some_and(|t| t >= after);
        if status["running"] == false && (done || !status["last_error"].is_null()) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no sync finished: {status}");
}

/// After downtime, a sync reads what was missed from `/v1/events` (from shortly before the
/// last sync, oldest first), skips what webhooks already delivered, and the figures follow.
async fn catch_up(backend: Backend) {
    let stripe = FakeStripe::new(KEY);
    let now = now_ms() / 1000;
    let starter = price("price_starter", 800, "month", 1, now - 90 * DAY);
    let growth = price("price_growth", 2600, "month", 1, now - 90 * DAY);
    stripe.put("prices", starter.clone());
    stripe.put("prices", growth.clone());
    let sub1 = subscription("sub_c1", "cus_c1", "active", &starter, 1, now - 20 * DAY);
    stripe.put("subscriptions", sub1.clone());
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let sync = || app.call(reqwest::Method::POST, "/api/v1/stripe/sync", &admin, None);
    let mrr = || async {
        let report: Value = app
            .call(
                reqwest::Method::GET,
                "/api/v1/metrics/revenue",
                &admin,
                None,
            )
            .await
            .json()
            .await
            .expect("json");
        report["figures"]["mrr"]["value"]["amount"].as_i64()
    };

    // The first sync is a backfill.
    let started = now_ms();
    assert_eq!(sync().await.status(), StatusCode::ACCEPTED);
    let status = wait_for_sync(&app, &admin, started).await;
    assert_eq!(status["stale"], false, "{status}");
    assert_eq!(mrr().await, Some(800));
    let backfill_requests = stripe.requests().len();
    assert!(
        !stripe
            .requests()
            .iter()
            .any(|r| r.starts_with("/v1/events")),
        "a backfill reads the lists, not the events"
    );

    // While opsdeck was down: c1 upgraded, c2 subscribed; one of those was also delivered by
    // webhook once opsdeck came back. An event from before the last sync is not asked for.
    let mut upgraded = subscription("sub_c1", "cus_c1", "active", &growth, 1, now - 20 * DAY);
    upgraded["items"]["data"][0]["current_period_start"] = json!(now - 60);
    let sub2 = subscription("sub_c2", "cus_c2", "active", &growth, 2, now - 30);
    let e_upgrade = event(
        "evt_up",
        "customer.subscription.updated",
        now - 60,
        upgraded,
    );
    let e_new = event("evt_new", "customer.subscription.created", now - 30, sub2);
    let e_old = event(
        "evt_old",
        "customer.subscription.updated",
        now - 10 * DAY,
        sub1,
    );
    // Newest first, as Stripe lists them.
    for e in [&e_new, &e_upgrade, &e_old] {
        stripe.put("events", serde_json::from_str(e).expect("event"));
    }
    let signed = signature::header(e_new.as_bytes(), now, &[SECRET]);
    let (status, reply) = post_event(&app, &e_new, Some(signed)).await;
    assert_eq!(
        (status, reply["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );

    let started = now_ms();
    assert_eq!(sync().await.status(), StatusCode::ACCEPTED);
    let status = wait_for_sync(&app, &admin, started).await;
    assert!(status["last_error"].is_null(), "{status}");
    let requests = stripe.requests();
    let catch_up: Vec<&String> = requests[backfill_requests..].iter().collect();
    assert!(
        catch_up.iter().all(|r| r.starts_with("/v1/events")),
        "a catch-up reads only the events: {catch_up:?}"
    );
    let since = catch_up
        .first()
        .and_then(|r| {
            r.split(['?', '&']).find_map(|kv| {
                kv.strip_prefix("created%5Bgte%5D=")
                    .or(kv.strip_prefix("created[gte]="))
            })
        })
        .and_then(|v| v.parse::<i64>().ok())
        .expect("created[gte] filter");
    // From 5 minutes before the backfill began.
    assert!(
        since <= started / 1000 - 300 && since > now - DAY,
        "{since}"
    );

    // The upgrade applied once, the webhook's event was not counted twice: 2600 + 2 × 2600.
    assert_eq!(mrr().await, Some(7_800));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_events WHERE via = 'catchup'"
        )
        .await,
        1,
        "only the upgrade was new to the catch-up"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM stripe_events WHERE id = 'evt_old'"
        )
        .await,
        0
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_sqlite() {
    catch_up(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_postgres() {
    catch_up(Backend::Postgres).await;
}

/// Every row of the three MRR history tables, in key order.
async fn history_rows(
    app: &TestApp,
) -> (
    Vec<Vec<i64>>,
    Vec<(String, i64, String, i64, i64)>,
    Vec<(String, i64, i64, i64)>,
) {
    let store = &app.state.store;
    type Day = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let days: Vec<Day> = store
        .fetch_all(
            "SELECT day, mrr, customers, subscriptions, new, expansion, contraction, churn, \
             reactivation, new_customers, churned_customers, reactivated_customers \
             FROM revenue_days ORDER BY day",
            opsdeck::args![],
        )
        .await
        .expect("days");
    let days = days
        .into_iter()
        .map(|d| vec![d.0, d.1, d.2, d.3, d.4, d.5, d.6, d.7, d.8, d.9, d.10, d.11])
        .collect();
    let movements = store
        .fetch_all(
            "SELECT customer_id, day, kind, amount, since FROM revenue_movements \
             ORDER BY customer_id, day",
            opsdeck::args![],
        )
        .await
        .expect("movements");
    let customers = store
        .fetch_all(
            "SELECT customer_id, mrr, first_day, last_day FROM revenue_customers \
             ORDER BY customer_id",
            opsdeck::args![],
        )
        .await
        .expect("customers");
    (days, movements, customers)
}

async fn add_state(app: &TestApp, sub: &str, customer: &str, at: i64, status: &str, mrr: i64) {
    app.state
        .store
        .execute(
            "INSERT INTO stripe_subscription_states (subscription_id, state_at, source, at, \
             customer_id, status, currency, mrr) VALUES ($1, $2, 'event', $2, $3, $4, 'usd', $5)",
            opsdeck::args![sub, at, customer, status, mrr],
        )
        .await
        .expect("state");
}

/// A recompute writes only what changed (rows of changed customers, rows of customers gone
/// from the states); what it leaves must equal a recompute into empty tables.
async fn recompute_writes_the_difference(backend: Backend) {
    let Some(app) = start(backend, None).await else {
        return;
    };
    // Through the service, whose lock keeps the server's own background recompute out.
    let recompute = || async {
        app.state.revenue.mark_dirty();
        app.state
            .revenue
            .recompute_if_dirty(&app.state.store)
            .await
            .expect("recompute");
    };
    let now = now_ms();
    let day = DAY * 1000;
    // Forty customers on $26 from 100 days ago; enough unchanged ones that the later changes
    // stay under the share that makes a recompute rewrite every table.
    for c in 0..40 {
        let (sub, customer) = (format!("sub_d{c:02}"), format!("cus_d{c:02}"));
        add_state(&app, &sub, &customer, now - 100 * day, "active", 26_000_000).await;
    }
    recompute().await;
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM revenue_movements").await,
        40
    );

    // One upgrade, one cancellation, one customer whose states are gone entirely, one new.
    add_state(
        &app,
        "sub_d01",
        "cus_d01",
        now - 30 * day,
        "active",
        68_000_000,
    )
    .await;
    add_state(&app, "sub_d02", "cus_d02", now - 20 * day, "canceled", 0).await;
    app.state
        .store
        .execute(
            "DELETE FROM stripe_subscription_states WHERE customer_id = 'cus_d03'",
            opsdeck::args![],
        )
        .await
        .expect("delete");
    add_state(
        &app,
        "sub_d99",
        "cus_d99",
        now - 10 * day,
        "active",
        8_000_000,
    )
    .await;
    recompute().await;
    let incremental = history_rows(&app).await;
    assert_eq!(incremental.1.len(), 40 + 2 - 1 + 1, "{:?}", incremental.1);
    assert!(incremental.1.iter().all(|m| m.0 != "cus_d03"));
    assert!(incremental.2.iter().all(|c| c.0 != "cus_d03"));
    let upgraded: Vec<_> = incremental.1.iter().filter(|m| m.0 == "cus_d01").collect();
    assert_eq!(
        upgraded.last().map(|m| (m.2.as_str(), m.3)),
        Some(("expansion", 42_000_000))
    );

    // The same history written from scratch.
    for sql in [
        "DELETE FROM revenue_days",
        "DELETE FROM revenue_movements",
        "DELETE FROM revenue_customers",
    ] {
        app.state
            .store
            .execute(sql, opsdeck::args![])
            .await
            .expect("clear");
    }
    recompute().await;
    assert_eq!(history_rows(&app).await, incremental);
    // The rewrite drops the movements' secondary indexes while it writes; they are back.
    let indexes = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
             AND tbl_name = 'revenue_movements' AND sql IS NOT NULL"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'revenue_movements' \
             AND indexname <> 'revenue_movements_pkey'"
        }
    };
    assert_eq!(count(&app, indexes).await, 2);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recompute_writes_the_difference_sqlite() {
    recompute_writes_the_difference(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recompute_writes_the_difference_postgres() {
    recompute_writes_the_difference(Backend::Postgres).await;
}

/// Monthly renewals (`customer.subscription.updated` changing nothing the engine reads) are
/// kept aside as echoes, in whatever order they arrive; a late change between two identical
/// renewals brings the second back, and the history is the one every state gives.
async fn renewals_are_echoes(backend: Backend) {
    let Some(app) = start(backend, None).await else {
        return;
    };
    let now = now_ms() / 1000;
    let start_at = (now / DAY - 200) * DAY;
    let growth = price("price_growth", 2600, "month", 1, start_at);
    let sub = subscription("sub_r1", "cus_r1", "active", &growth, 1, start_at);
    let send = |id: String, day: i64, object: Value| {
        let app = &app;
        async move {
            let body = event(
                &id,
                "customer.subscription.updated",
                start_at + day * DAY,
                object,
            );
            let header = signature::header(body.as_bytes(), now, &[SECRET]);
            let (status, reply) = post_event(app, &body, Some(header)).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
    };
    let movements = || async {
        app.state.revenue.mark_dirty();
        app.state
            .revenue
            .recompute_if_dirty(&app.state.store)
            .await
            .expect("recompute");
        let (_, movements, _) = history_rows(&app).await;
        movements
            .into_iter()
            .map(|m| (m.1 / 1000 - start_at, m.2, m.3))
            .collect::<Vec<_>>()
    };
    let mut upgraded = sub.clone();
    upgraded["items"]["data"][0]["quantity"] = json!(3);
    // Months 0-2 on one seat, 3-5 on three; delivered out of order.
    for month in [5, 1, 4, 0, 2, 3] {
        let object = if month >= 3 { &upgraded } else { &sub };
        send(format!("evt_r{month}"), month * 30, object.clone()).await;
    }
    let states = "SELECT COUNT(*) FROM stripe_subscription_states";
    let echoes = "SELECT COUNT(*) FROM stripe_subscription_echoes";
    assert_eq!(
        (count(&app, states).await, count(&app, echoes).await),
        (2, 4)
    );
    let seat = 2_600 * 1_000_000;
    assert_eq!(
        movements().await,
        [
            (0, "new".to_string(), seat),
            (90 * DAY, "expansion".to_string(), 2 * seat)
        ]
    );

    // A late downgrade on day 135: month 5's three seats become a change again.
    send("evt_r4b".into(), 135, sub.clone()).await;
    assert_eq!(
        (count(&app, states).await, count(&app, echoes).await),
        (4, 3)
    );
    assert_eq!(
        movements().await,
        [
            (0, "new".to_string(), seat),
            (90 * DAY, "expansion".to_string(), 2 * seat),
            (135 * DAY, "contraction".to_string(), -2 * seat),
            (150 * DAY, "expansion".to_string(), 2 * seat)
        ]
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_are_echoes_sqlite() {
    renewals_are_echoes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_are_echoes_postgres() {
    renewals_are_echoes(Backend::Postgres).await;
}

/// One random subscription for [`customer_mrr_adds_up_to_the_headline`]: all times in days
/// relative to now (negative: past).
#[derive(Debug, Clone)]
struct RandomSub {
    customer: u8,
    /// 0: $26 a month, 1: $240 a year, 2: $10 a week, 3: €20 a month.
    price: u8,
    quantity: u64,
    started: i64,
    /// Trial length from the start, in days.
    trial: Option<i64>,
    /// Percent off, duration (`once`, `repeating`, `forever`), months, days after the start.
    coupon: Option<(f64, &'static str, u32, i64)>,
    /// Ended this many days after the start (clamped to the past).
    canceled: Option<i64>,
    /// `cancel_at` this many days from now.
    cancel_at: Option<i64>,
    past_due: bool,
    /// Billed at another (usd) price until this many days ago: an upgrade or downgrade.
    changed: Option<(u8, i64)>,
}

fn random_sub() -> impl proptest::strategy::Strategy<Value = RandomSub> {
    use proptest::prelude::*;
    let coupon = prop_oneof![Just("once"), Just("repeating"), Just("forever")];
    (
        (0u8..4, 0u8..4, 1u64..4, 5i64..400),
        proptest::option::of(7i64..60),
        proptest::option::weighted(0.6, (5u32..75, coupon, 1u32..13, 0i64..40)),
        proptest::option::weighted(0.2, 1i64..300),
        proptest::option::weighted(0.3, 1i64..120),
        any::<bool>(),
        proptest::option::weighted(0.3, (0u8..3, 1i64..25)),
    )
        .prop_map(
            |(
                (customer, price, quantity, started),
                trial,
                coupon,
                canceled,
                cancel_at,
                past_due,
                changed,
            )| {
                RandomSub {
                    customer,
                    price,
                    quantity,
                    started: -started,
                    trial,
                    coupon: coupon.map(|(p, d, m, after)| (f64::from(p), d, m, after)),
                    canceled,
                    cancel_at,
                    past_due: past_due && canceled.is_none(),
                    changed,
                }
            },
        )
}

/// The Stripe subscription (and invoices) `r` stands for, as `{id}` of `customer`.
fn random_sub_objects(id: &str, customer: &str, r: &RandomSub, now: i64) -> (Value, Vec<Value>) {
    let at = |days: i64| now + days * DAY;
    let prices = [
        price("price_p_month", 2600, "month", 1, at(-500)),
        price("price_p_year", 24_000, "year", 1, at(-500)),
        price("price_p_week", 1000, "week", 1, at(-500)),
        {
            let mut p = price("price_p_euro", 2000, "month", 1, at(-500));
            p["currency"] = json!("eur");
            p
        },
    ];
    let start = at(r.started);
    let trial_end = r.trial.map(|t| start + t * DAY);
    let ended = r.canceled.map(|d| (start + d * DAY).min(at(0) - 60));
    let status = if ended.is_some() {
        "canceled"
    } else if trial_end.is_some_and(|t| t > at(0)) {
        "trialing"
    } else if r.past_due {
        "past_due"
    } else {
        "active"
    };
    let mut sub = subscription(
        id,
        customer,
        status,
        &prices[r.price as usize],
        r.quantity,
        start,
    );
    if let Some(end) = trial_end {
        sub["trial_start"] = json!(start);
        sub["trial_end"] = json!(end);
    }
    if let Some((percent, duration, months, after)) = r.coupon {
        let mut d = discount(percent, duration, Some(months), start + after * DAY);
        d["id"] = json!(format!("di_{id}"));
        if duration != "repeating" {
            d["source"]["coupon"]["duration_in_months"] = Value::Null;
        }
        sub["discounts"] = json!([d]);
    }
    if let Some(end) = ended {
        sub["canceled_at"] = json!(end);
        sub["ended_at"] = json!(end);
    }
    if let Some(days) = r.cancel_at.filter(|_| ended.is_none()) {
        sub["cancel_at"] = json!(at(days));
    }
    let mut invoices = Vec::new();
    let paid_from = trial_end.unwrap_or(start);
    if let Some((other, ago)) = r.changed.filter(|_| r.price < 3 && ended.is_none())
        && at(-ago) > paid_from
    {
        // Billed at another price from its paid start until the current period.
        sub["items"]["data"][0]["current_period_start"] = json!(at(-ago));
        let other = &prices[other as usize];
        let cents = other["unit_amount"].as_i64().expect("amount");
        invoices.push(invoice(
            &format!("in_{id}"),
            customer,
            id,
            other["id"].as_str().expect("id"),
            cents,
            paid_from,
        ));
    }
    for p in prices {
        invoices.push(p);
    }
    (sub, invoices)
}

/// The invariant behind the top-customers table: over random subscription histories (coupons
/// that end, scheduled and past cancellations, trials, upgrades and downgrades, past-due
/// auto-churn, two currencies), the customers' MRR now adds up to the headline MRR now, on
/// any later day too — before a recompute catches up with movements scheduled for it, and
/// after — and nobody's latest change lies in the future.
async fn customer_mrr_adds_up_to_the_headline(backend: Backend) {
    use opsdeck::revenue::{drill, metrics};
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let stripe = FakeStripe::new(KEY);
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let now = now_ms() / 1000;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let store = &app.state.store;
    let result = runner.run(&proptest::collection::vec(random_sub(), 1..8), |subs| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                for (i, r) in subs.iter().enumerate() {
                    let (sub, others) = random_sub_objects(
                        &format!("sub_p{n}_{i}"),
                        &format!("cus_p{n}_{}", r.customer),
                        r,
                        now,
                    );
                    stripe.put("subscriptions", sub);
                    for o in others {
                        let list = if o["object"] == "price" {
                            "prices"
                        } else {
                            "invoices"
                        };
                        if stripe.get(list, o["id"].as_str().expect("id")).is_none() {
                            stripe.put(list, o);
                        }
                    }
                }
                app.state
                    .revenue
                    .sync(store, true, &|_| {})
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let rates = history::Rates::load(store, "usd").await.expect("rates");
                let check = |later_days: i64| {
                    let rates = &rates;
                    async move {
                        let t = (now + later_days * DAY) * 1000;
                        let (from, to) = metrics::whole_days(t - 30 * DAY * 1000, t);
                        let headline = metrics::period(store, rates, from, to)
                            .await
                            .expect("period")
                            .mrr_end;
                        let customers = drill::top_customers(store, "usd", 100_000, t)
                            .await
                            .expect("customers");
                        let sum: i64 = customers.iter().map(|c| c.mrr.amount).sum();
                        let late = customers
                            .iter()
                            .filter(|c| c.last_day > t)
                            .map(|c| c.customer.clone())
                            .collect::<Vec<_>>();
                        // Exactly, before rounding to cents: stored rows where current,
                        // else the customer's movements up to the day.
                        let (micro,): (i64,) = store
                            .fetch_one(
                                "SELECT CAST(COALESCE(SUM(CASE WHEN c.next_day <= $1 THEN \
                                     (SELECT COALESCE(SUM(m.amount), 0) FROM revenue_movements m \
                                      WHERE m.customer_id = c.customer_id AND m.day <= $1) \
                                     ELSE c.mrr END), 0) AS BIGINT) FROM revenue_customers c",
                                opsdeck::args![opsdeck::revenue::mrr::day_of(t)],
                            )
                            .await
                            .expect("sum");
                        assert_eq!(micro, headline, "{later_days} days on, micro-units");
                        (metrics::micro_to_minor(headline), sum, late, customers)
                    }
                };
                for later in [0, 3, 20, 45, 100, 400] {
                    let (headline, sum, late, customers) = check(later).await;
                    proptest::prop_assert!(late.is_empty(), "{later} days on: {late:?}");
                    // Each customer rounds to cents on its own: allow a cent each.
                    proptest::prop_assert!(
                        (headline - sum).abs() <= customers.len() as i64,
                        "{later} days on: headline {headline}, customers {sum}"
                    );
                    if let Some(c) = customers.first() {
                        let t = (now + later * DAY) * 1000;
                        let detail = drill::customer(store, "usd", &c.customer, t)
                            .await
                            .expect("detail")
                            .expect("known");
                        proptest::prop_assert_eq!(detail.mrr.as_ref(), Some(&c.mrr));
                    }
                }
                Ok(())
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_mrr_adds_up_to_the_headline_sqlite() {
    customer_mrr_adds_up_to_the_headline(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_mrr_adds_up_to_the_headline_postgres() {
    customer_mrr_adds_up_to_the_headline(Backend::Postgres).await;
}

/// While the first Stripe sync runs, the revenue figures are pending — null and flagged in the
/// JSON, "pending" on the pages — never $0.00; once it finishes they carry values. Rates then
/// compare across periods in percentage points beside the relative change.
async fn first_sync_is_pending_not_zero(backend: Backend) {
    let stripe = FakeStripe::new(KEY);
    let now = now_ms() / 1000;
    let ago = |days: i64| now - days * DAY;
    let growth = price("price_growth", 2600, "month", 1, ago(90));
    stripe.put("prices", growth.clone());
    stripe.put(
        "subscriptions",
        subscription("sub_q", "cus_q", "active", &growth, 2, ago(70)),
    );
    // Refund rate: 1 of 4 charges' money refunded this period (25 %), 1 of 5 before (20 %).
    for (n, days) in [
        (0, 3),
        (1, 5),
        (2, 7),
        (3, 9),
        (4, 33),
        (5, 35),
        (6, 37),
        (7, 39),
        (8, 41),
    ] {
        stripe.put(
            "charges",
            charge(&format!("ch_q{n}"), "cus_q", 2600, "succeeded", ago(days)),
        );
    }
    for (n, days) in [(0, 2), (4, 32)] {
        stripe.put(
            "refunds",
            json!({"id": format!("re_q{n}"), "object": "refund", "amount": 2600,
                   "currency": "usd", "created": ago(days), "charge": format!("ch_q{n}"),
                   "status": "succeeded"}),
        );
    }
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let Some(app) = start(backend, Some(&base)).await else {
        return;
    };
    let admin = app.key("ops", &["admin"]).await;
    let get = |path: &'static str| {
        let admin = admin.clone();
        let app = &app;
        async move {
            app.call(reqwest::Method::GET, path, &admin, None)
                .await
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let web = browser();
    sign_in_admin(&app, &web).await;
    let page = |path: &'static str| {
        let web = web.clone();
        let url = app.url(path);
        async move {
            web.get(url)
                .send()
                .await
                .expect("page")
                .text()
                .await
                .expect("html")
        }
    };

    // Held mid-sync: the first two requests answer, the third takes a while.
    stripe.fault(Fault::default());
    stripe.fault(Fault::default());
    stripe.fault(Fault {
        delay: Some(Duration::from_millis(1500)),
        ..Fault::default()
    });
    let started = now_ms();
    let res = app
        .call(reqwest::Method::POST, "/api/v1/stripe/sync", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let overview = get("/api/v1/metrics/overview").await;
    assert_eq!(overview["pending"][0]["source"], "revenue", "{overview}");
    for name in [
        "mrr",
        "arr",
        "paying_customers",
        "net_revenue",
        "gross_margin",
    ] {
        let f = &overview["figures"][name];
        assert_eq!(f["pending"], true, "{name}: {f}");
        assert!(
            f["value"].is_null() && f["previous"].is_null(),
            "{name}: {f}"
        );
    }
    // Figures of other sources are not held back.
    assert!(overview["figures"]["api_calls"]["pending"].is_null());
    let revenue = get("/api/v1/metrics/revenue").await;
    assert_eq!(revenue["pending"][0]["source"], "revenue");
    assert_eq!(revenue["figures"]["mrr"]["pending"], true);
    assert_eq!(revenue["series"], json!([]));
    let html = page("/").await;
    let card = &html[html.find("data-figure=\"mrr\"").expect("MRR card")..];
    assert!(
        card[..400].contains("first Stripe sync in progress") && !card[..400].contains("$0.00"),
        "{}",
        &card[..400]
    );
    let html = page("/revenue").await;
    assert!(html.contains("pending — first Stripe sync in progress ("));
    assert!(
        !html.contains("$0.00"),
        "no invented zero on the Revenue page"
    );

    let status = wait_for_sync(&app, &admin, started).await;
    assert!(status["last_error"].is_null(), "{status}");
    let overview = get("/api/v1/metrics/overview").await;
    assert_eq!(overview["pending"], json!([]));
    let mrr = &overview["figures"]["mrr"];
    assert_eq!(mrr["value"]["amount"], 5200, "{mrr}");
    assert!(mrr.get("pending").is_none() && mrr.get("change_pp").is_none());

    // Rates: 25 % against 20 % is +5 pp (and +25 % relative, kept for compatibility).
    let revenue = get("/api/v1/metrics/revenue").await;
    let refund = &revenue["figures"]["refund_rate"];
    assert_eq!(
        (refund["value"].as_f64(), refund["previous"].as_f64()),
        (Some(25.0), Some(20.0)),
        "{refund}"
    );
    assert_eq!(refund["change_pp"].as_f64(), Some(5.0));
    assert_eq!(refund["change_pct"].as_f64(), Some(25.0));
    assert!(revenue["figures"]["mrr"].get("change_pp").is_none());
    let overview_churn = &overview["figures"]["customer_churn_rate"];
    assert!(
        overview_churn.get("change_pp").is_some(),
        "{overview_churn}"
    );
    let html = page("/revenue").await;
    assert!(!html.contains("revenue-pending"));
    let row = &html[html.find("Refund rate").expect("refund rate row")..];
    let row = &row[..row.find("</tr>").expect("row end")];
    assert!(row.contains("+5.0 pp") && !row.contains("+25.0 %"), "{row}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_is_pending_not_zero_sqlite() {
    first_sync_is_pending_not_zero(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_is_pending_not_zero_postgres() {
    first_sync_is_pending_not_zero(Backend::Postgres).await;
}
