//! Plans, quotas and their states, provider pricing and the usage/cost figures, over HTTP on
//! both backends.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dual_test;
use crate::helpers::*;
use opsdeck::config::{Config, DecimalText, PlanConfig};

fn configure(c: &mut Config) {
    c.plans = vec![PlanConfig {
        id: "starter".into(),
        name: "Starter".into(),
        price: DecimalText("8".into()),
        currency: "usd".into(),
        api_calls: 100,
        provider_credits: 50,
        overage_per_1k_calls: DecimalText("0.50".into()),
        hard_limit_percent: 120,
    }];
    c.usage.quota_check_interval = opsdeck::config::ConfigDuration(Duration::from_millis(100));
    c.usage.endpoint_categories = [("/api/referrals*", "Referrals"), ("/api/auth", "Auth")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    opsdeck::store::now_ms()
}

/// `n` api.request events for `customer` starting at id `first`, this month.
fn calls(customer: &str, first: usize, n: usize, endpoint: &str, ms: f64) -> Value {
    let time = iso(now_ms() - 1000);
    Value::Array(
        (first..first + n)
            .map(|i| {
                json!({"specversion": "1.0", "id": format!("{customer}-{i}"), "source": "app",
                    "type": "api.request", "subject": customer, "time": time,
                    "data": {"endpoint": endpoint, "method": "GET",
                             "status": if i % 10 == 0 { 503 } else { 200 }, "duration_ms": ms}})
            })
            .collect(),
    )
}

fn job(id: &str, customer: &str, provider: &str, sku: &str, unit: &str, q: f64, at: i64) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "app", "type": "provider.usage",
        "subject": customer, "time": iso(at),
        "data": {"provider": provider, "sku": sku, "unit": unit, "quantity": q}})
}

async fn detail(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["detail"].as_str().unwrap_or_default().to_string()
}

async fn ingest(app: &TestApp, key: &str, events: &Value) -> Value {
    let res = app
        .call(Method::POST, "/api/v1/events", key, Some(events))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The Usage page's event export for `query` (`?customer=…` and the like), as a signed-in
/// browser downloads it.
async fn events_csv(app: &TestApp, client: &reqwest::Client, query: &str) -> String {
    let res = client
        .get(app.url(&format!("/usage/events.csv{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    res.text().await.unwrap()
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let res = app.call(Method::GET, path, key, None).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.json().await.unwrap()
}

async fn quota_states_follow_usage_with_hysteresis(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let ingest_key = app.key("app", &["ingest"]).await;

    // No plan yet: a precise 404.
    let res = app
        .call(
            Method::GET,
            "/api/v1/customers/cus_a/quota",
            &ingest_key,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(detail(res).await.contains("cus_a"));

    // A Settings plan, so its quota can be edited (config plans are read-only).
    let res = app
        .call(
            Method::POST,
            "/api/v1/plans",
            &admin,
            Some(
                &json!({"id": "flex", "name": "Flex", "price": "26.00", "api_calls": 100,
                         "overage_per_1k_calls": "0.50"}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::PUT,
            "/api/v1/customers/cus_a/plan",
            &admin,
            Some(&json!({"plan": "flex"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    ingest(app, &ingest_key, &calls("cus_a", 0, 79, "/api/x", 10.0)).await;
    let q = get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await;
    assert_eq!(q["plan"], "flex");
    assert_eq!(q["used"], 79);
    assert_eq!(q["limit"], 100);
    assert_eq!(q["state"], "ok");
    assert_eq!(q["overage_usd"], json!({"amount": 0, "currency": "usd"}));
    assert!(
        q["period_start"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z")
    );

    ingest(app, &ingest_key, &calls("cus_a", 79, 1, "/api/x", 10.0)).await;
    let q = get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await;
    assert_eq!(
        (q["percent"].as_f64(), &q["state"]),
        (Some(80.0), &json!("warning"))
    );
    let changes = wait_for_changes(app, &admin, "cus_a", 1).await;
    assert_eq!(
        (&changes[0]["from"], &changes[0]["to"]),
        (&json!("ok"), &json!("warning"))
    );
    // The change's webhook message, stored in the same transaction.
    let messages: Vec<(String,)> = app
        .state
        .store
        .fetch_all(
            "SELECT body FROM webhook_messages WHERE type = 'quota.state_changed'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(messages.len(), 1, "one message per change");
    let message: Value = serde_json::from_str(&messages[0].0).unwrap();
    assert_eq!(message["type"], "quota.state_changed");
    assert_eq!(message["data"]["customer"], "cus_a");
    assert_eq!(message["data"]["plan"], "flex");
    assert_eq!(
        (&message["data"]["from"], &message["data"]["to"]),
        (&json!("ok"), &json!("warning"))
    );
    assert_eq!(
        message["data"]["summary"],
        "cus_a is warning on plan flex (80.0 % of quota; was ok)"
    );

    // Teetering below 80 %: 80 of 103 is 77.7 %, inside the 5-point margin, so still warning.
    set_quota(app, &admin, 103).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let q = get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await;
    assert_eq!(q["state"], "warning");
    assert_eq!(wait_for_changes(app, &admin, "cus_a", 1).await.len(), 1);

    // Well below (72.7 %): back to ok, recorded once.
    set_quota(app, &admin, 110).await;
    let changes = wait_for_changes(app, &admin, "cus_a", 2).await;
    assert_eq!(
        (&changes[1]["from"], &changes[1]["to"]),
        (&json!("warning"), &json!("ok"))
    );
    // Just under the threshold from below stays ok; reaching it warns again.
    set_quota(app, &admin, 101).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await["state"],
        "ok"
    );
    set_quota(app, &admin, 100).await;
    let changes = wait_for_changes(app, &admin, "cus_a", 3).await;
    assert_eq!(changes[2]["to"], "warning");

    // 90 % is critical and 100 % over, each recorded once reached (the recording follows the
    // commit asynchronously, so each is awaited before usage moves on).
    for (start, used, n, from, to) in [
        (80, 90, 4, "warning", "critical"),
        (90, 100, 5, "critical", "over"),
    ] {
        ingest(app, &ingest_key, &calls("cus_a", start, 10, "/api/x", 10.0)).await;
        let q = get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await;
        assert_eq!((q["used"].as_i64(), &q["state"]), (Some(used), &json!(to)));
        let changes = wait_for_changes(app, &admin, "cus_a", n).await;
        assert_eq!(
            (&changes[n - 1]["from"], &changes[n - 1]["to"]),
            (&json!(from), &json!(to))
        );
    }

    // Past the hard limit: overage at $0.50 per 1,000 calls.
    ingest(app, &ingest_key, &calls("cus_a", 100, 25, "/api/x", 10.0)).await;
    let q = get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await;
    assert_eq!(q["used"], 125);
    assert_eq!(q["state"], "suspended");
    // 25 calls over at $0.50 per 1,000 = 1.25 cents → 1 cent.
    assert_eq!(q["overage_usd"], json!({"amount": 1, "currency": "usd"}));
    let changes = wait_for_changes(app, &admin, "cus_a", 6).await;
    assert_eq!(
        (&changes[5]["from"], &changes[5]["to"]),
        (&json!("over"), &json!("suspended"))
    );

    // Customers at risk are listed on the usage report.
    let usage = get(app, &admin, "/api/v1/usage").await;
    assert_eq!(usage["at_risk"][0]["customer"], "cus_a");
    assert_eq!(usage["at_risk"][0]["state"], "suspended");

    // Customers in `ok` are ranked by percent of quota too, and their percent follows usage.
    let res = app
        .call(
            Method::PUT,
            "/api/v1/customers/cus_b/plan",
            &admin,
            Some(&json!({"plan": "flex"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    ingest(app, &ingest_key, &calls("cus_b", 0, 10, "/api/x", 10.0)).await;
    let ranked = wait_for_ranking(app, &admin, "cus_b", 10.0).await;
    assert_eq!(ranked[0]["customer"], "cus_a");
    assert_eq!(ranked[1]["state"], "ok");
    ingest(app, &ingest_key, &calls("cus_b", 10, 30, "/api/x", 10.0)).await;
    wait_for_ranking(app, &admin, "cus_b", 40.0).await;
    let at_risk = get(app, &admin, "/api/v1/usage").await["at_risk"].clone();
    assert_eq!(
        at_risk.as_array().unwrap().len(),
        1,
        "ok customers are not at risk"
    );

    // Duplicates change nothing.
    let again = ingest(app, &ingest_key, &calls("cus_a", 80, 45, "/api/x", 10.0)).await;
    assert_eq!(again["duplicates"], 45);
    assert_eq!(
        get(app, &ingest_key, "/api/v1/customers/cus_a/quota").await["used"],
        125
    );
}
dual_test!(quota_states_follow_usage_with_hysteresis, super::configure);

async fn set_quota(app: &TestApp, admin: &str, calls: i64) {
    let res = app
        .call(
            Method::PUT,
            "/api/v1/plans/flex",
            admin,
            Some(
                &json!({"id": "flex", "name": "Flex", "price": "26.00", "api_calls": calls,
                         "overage_per_1k_calls": "0.50"}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// Polls the usage report until `customer` is ranked by percent of quota at `percent`, then
/// returns the ranking.
async fn wait_for_ranking(app: &TestApp, key: &str, customer: &str, percent: f64) -> Vec<Value> {
    for _ in 0..100 {
        let ranked = get(app, key, "/api/v1/usage").await["top_by_quota"]
            .as_array()
            .unwrap()
            .clone();
        let found = ranked
            .iter()
            .any(|r| r["customer"] == customer && r["percent"].as_f64() == Some(percent));
        if found {
            return ranked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{customer} was not ranked at {percent} % of quota");
}

/// Polls the recorded changes of `customer` until there are `n` (the evaluator runs every 100 ms
/// in these tests), then returns them.
async fn wait_for_changes(app: &TestApp, key: &str, customer: &str, n: usize) -> Vec<Value> {
    let path = format!("/api/v1/quota/changes?customer={customer}");
    for _ in 0..100 {
        let changes = get(app, key, &path).await;
        let list = changes.as_array().unwrap().clone();
        if list.len() >= n {
            assert_eq!(list.len(), n, "more changes than expected: {list:?}");
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("quota changes for {customer} did not reach {n}");
}

async fn config_plans_are_read_only_and_checked(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let reader = app.key("reader", &["read"]).await;
    let plans = get(app, &reader, "/api/v1/plans").await;
    assert_eq!(plans[0]["id"], "starter");
    assert_eq!(plans[0]["price"], json!({"amount": 800, "currency": "usd"}));
    assert_eq!(plans[0]["origin"], "config");
    assert_eq!(plans[0]["overage_per_1k_calls"], "0.50");

    let body = json!({"id": "starter", "name": "Mine", "price": "1"});
    let res = app
        .call(Method::PUT, "/api/v1/plans/starter", &admin, Some(&body))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(detail(res).await.contains("config file"));
    // Readers cannot write.
    let res = app
        .call(
            Method::POST,
            "/api/v1/plans",
            &reader,
            Some(&json!({"id": "x", "name": "X", "price": "1"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    for (bad, needle) in [
        (
            json!({"id": "Bad Id", "name": "X", "price": "1"}),
            "plan id",
        ),
        (json!({"id": "x", "name": "X", "price": "1.001"}), "price"),
        (json!({"id": "x", "name": "X", "price": "-1"}), "price"),
        (json!({"id": "x", "name": "", "price": "1"}), "name"),
        (
            json!({"id": "x", "name": "X", "price": "1", "hard_limit_percent": 50}),
            "hard_limit_percent",
        ),
        (
            json!({"id": "x", "name": "X", "price": "1", "api_calls": -5}),
            "negative",
        ),
    ] {
        let res = app
            .call(Method::POST, "/api/v1/plans", &admin, Some(&bad))
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(detail(res).await.contains(needle), "{bad}");
    }
    let res = app
        .call(
            Method::POST,
            "/api/v1/plans",
            &admin,
            Some(&json!({"id": "x", "name": "X", "price": "1", "extra": 1})),
        )
        .await;
    assert!(res.status().is_client_error());
    assert_eq!(
        get(app, &reader, "/api/v1/plans")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Assigning an unknown plan or a hostile customer id changes nothing.
    let res = app
        .call(
            Method::PUT,
            "/api/v1/customers/cus_1/plan",
            &admin,
            Some(&json!({"plan": "nope"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let long = "c".repeat(300);
    let res = app
        .call(
            Method::PUT,
            &format!("/api/v1/customers/{long}/plan"),
            &admin,
            Some(&json!({"plan": "starter"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(get(app, &reader, "/api/v1/plans").await[0]["customers"], 0);

    // A plan in use cannot be deleted; a tenant key sees only its own customer's quota.
    let res = app
        .call(
            Method::POST,
            "/api/v1/plans",
            &admin,
            Some(&json!({"id": "pro", "name": "Pro", "price": "68"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .call(
            Method::PUT,
            "/api/v1/customers/cus_1/plan",
            &admin,
            Some(&json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .call(Method::DELETE, "/api/v1/plans/pro", &admin, None)
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let tenant = app.key("tenant", &["tenant:cus_1"]).await;
    let q = get(app, &tenant, "/api/v1/customers/cus_1/quota").await;
    assert_eq!(
        (&q["plan"], &q["limit"], &q["state"]),
        (&json!("pro"), &Value::Null, &json!("ok"))
    );
    let res = app
        .call(Method::GET, "/api/v1/customers/cus_2/quota", &tenant, None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        app.audit_actions()
            .await
            .contains(&"customer.plan".to_string())
    );
}
dual_test!(config_plans_are_read_only_and_checked, super::configure);

async fn provider_usage_is_priced_at_ingest(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let ingest_key = app.key("app", &["ingest"]).await;
    let now = now_ms();
    let change = now - 86_400_000;

    // Shipped default: luma/v2 at $0.0045 per credit. A new price from `change` on.
    let res = app
        .call(
            Method::POST,
            "/api/v1/prices",
            &admin,
            Some(
                &json!({"provider": "luma", "sku": "v2", "unit": "credit", "price_usd": "0.005",
                         "effective_from": iso(change)}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let events = json!([
        job(
            "before",
            "cus_1",
            "luma",
            "v2",
            "credit",
            1000.0,
            change - 7_200_000
        ),
        job(
            "after",
            "cus_1",
            "luma",
            "v2",
            "credit",
            1000.0,
            change + 3_600_000
        ),
        job("img", "cus_2", "bfl", "flux", "image", 3.0, now - 1000),
        job(
            "tts",
            "cus_2",
            "elevenlabs",
            "tts",
            "character",
            1234.0,
            now - 1000
        ),
        job(
            "mystery",
            "cus_2",
            "acme",
            "turbo",
            "credit",
            7.0,
            now - 1000
        ),
        job(
            "wrong-unit",
            "cus_2",
            "luma",
            "v2",
            "image",
            1.0,
            now - 1000
        ),
    ]);
    let reply = ingest(app, &ingest_key, &events).await;
    assert_eq!(reply["accepted"], 6);

    let log = get(app, &admin, "/api/v1/events?type=provider.usage").await;
    let cost = |id: &str| {
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()["cost_usd"]
            .clone()
    };
    assert_eq!(cost("before"), "4.50");
    assert_eq!(cost("after"), "5.00");
    assert_eq!(cost("img"), "0.009");
    assert_eq!(cost("tts"), "1.234");
    assert_eq!(cost("mystery"), Value::Null);
    assert_eq!(cost("wrong-unit"), Value::Null);

    // A later price change never rewrites costs already recorded.
    let res = app
        .call(
            Method::POST,
            "/api/v1/prices",
            &admin,
            Some(
                &json!({"provider": "luma", "sku": "v2", "unit": "credit", "price_usd": "0.1",
                         "effective_from": iso(change - 86_400_000)}),
            ),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let costs = get(app, &admin, "/api/v1/metrics/costs?period=30d").await;
    // 4.50 + 5.00 + 0.009 + 1.234
    assert_eq!(costs["cost_usd"], "10.743");
    assert_eq!(costs["cost"], json!({"amount": 1074, "currency": "usd"}));
    assert_eq!(costs["unpriced_events"], 2);
    let unpriced: Vec<(String, String)> = costs["unpriced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["provider"].as_str().unwrap().into(),
                u["unit"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(unpriced.contains(&("acme".into(), "credit".into())));
    assert!(unpriced.contains(&("luma".into(), "image".into())));
    let luma = costs["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "luma")
        .unwrap();
    assert_eq!(luma["cost_usd"], "9.50");
    assert_eq!(costs["by_customer"][0]["customer"], "cus_1");
    assert!(!costs["by_day"].as_array().unwrap().is_empty());
    let overview = get(app, &admin, "/api/v1/metrics/overview?period=30d").await;
    assert_eq!(
        overview["figures"]["provider_cost"]["value"],
        json!({"amount": 1074, "currency": "usd"})
    );

    // Prices list marks the one in force now; bad prices are refused and change nothing.
    let prices = get(app, &admin, "/api/v1/prices").await;
    let current: Vec<&Value> = prices
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["provider"] == "luma" && p["sku"] == "v2" && p["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["price_usd"], "0.005");
    let before = prices.as_array().unwrap().len();
    for bad in [
        json!({"provider": "Luma", "sku": "v2", "unit": "credit", "price_usd": "1", "effective_from": "2026-01-01"}),
        json!({"provider": "luma", "sku": "v2", "unit": "parsec", "price_usd": "1", "effective_from": "2026-01-01"}),
        json!({"provider": "luma", "sku": "v2", "unit": "credit", "price_usd": "NaN", "effective_from": "2026-01-01"}),
        json!({"provider": "luma", "sku": "v2", "unit": "credit", "price_usd": "1e-13", "effective_from": "2026-01-01"}),
        json!({"provider": "luma", "sku": "v2", "unit": "credit", "price_usd": "1", "effective_from": "soon"}),
    ] {
        let res = app
            .call(Method::POST, "/api/v1/prices", &admin, Some(&bad))
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(
        get(app, &admin, "/api/v1/prices")
            .await
            .as_array()
            .unwrap()
            .len(),
        before
    );
}
dual_test!(provider_usage_is_priced_at_ingest, super::configure);

async fn usage_report_breaks_down_calls(app: &TestApp) {
    let reader = app.key("reader", &["read"]).await;
    let ingest_key = app.key("app", &["ingest"]).await;
    ingest(
        app,
        &ingest_key,
        &calls("cus_1", 0, 30, "/api/referrals/7", 40.0),
    )
    .await;
    ingest(
        app,
        &ingest_key,
        &calls("cus_2", 0, 10, "/api/auth/login", 300.0),
    )
    .await;
    ingest(app, &ingest_key, &calls("cus_2", 10, 5, "/health", 3000.0)).await;

    let u = get(app, &reader, "/api/v1/usage?interval=hour").await;
    assert_eq!(u["totals"]["calls"], 45);
    // Ids 0, 10, 20 of cus_1 and 0 and 10 of cus_2 answered 503.
    assert_eq!(u["totals"]["status_5xx"], 5);
    assert_eq!(u["totals"]["latency"]["p50_ms"], 50.0);
    let cats: Vec<(String, i64)> = u["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().into(),
                c["calls"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cats,
        vec![
            ("Referrals".into(), 30),
            ("Auth".into(), 10),
            ("Other".into(), 5)
        ]
    );
    assert_eq!(
        u["top_customers"][0],
        json!({"customer": "cus_1", "calls": 30, "events": 30})
    );
    assert_eq!(
        u["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["calls"].as_i64().unwrap())
            .sum::<i64>(),
        45
    );
    assert_eq!(u["recent"].as_array().unwrap().len(), 45);
    let overview = get(app, &reader, "/api/v1/metrics/overview?period=7d").await;
    assert_eq!(overview["figures"]["api_calls"]["value"], 45.0);

    // The previous period of the same length: 20 calls 40 days ago, 2 of them 503.
    assert_eq!(u["previous"]["calls"], 0);
    assert_eq!(
        u["change"]["calls_pct"],
        Value::Null,
        "nothing to compare with"
    );
    let mut old = calls("cus_3", 0, 20, "/api/referrals", 40.0);
    for e in old.as_array_mut().unwrap() {
        e["time"] = json!(iso(now_ms() - 40 * 86_400_000));
    }
    ingest(app, &ingest_key, &old).await;
    let u = get(app, &reader, "/api/v1/usage?interval=day").await;
    assert_eq!(
        u["totals"]["calls"], 45,
        "the old calls are not in this period"
    );
    assert_eq!(u["previous"]["calls"], 20);
    assert_eq!(u["previous"]["status_5xx"], 2);
    assert_eq!(
        u["previous_from"].as_i64().unwrap(),
        2 * u["from"].as_i64().unwrap() - u["to"].as_i64().unwrap()
    );
    // 45 against 20 calls; 11.1 % against 10.0 % errors.
    assert_eq!(
        u["change"],
        json!({"calls_pct": 125.0, "events_pct": 125.0, "error_rate_points": 1.1})
    );

    let one = get(app, &reader, "/api/v1/usage?customer=cus_2&interval=day").await;
    assert_eq!(one["totals"]["calls"], 15);
    assert_eq!(one["top_customers"], json!([]));
    assert_eq!(one["categories"][0]["latency"]["p95_ms"], 500.0);

    let three_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let minutes_3_days_ago = format!(
        "/api/v1/usage?interval=minute&from={}&to={}",
        rfc3339(three_days_ago),
        rfc3339(three_days_ago + time::Duration::hours(1))
    );
    for (bad, needle) in [
        ("/api/v1/usage?interval=week", "interval"),
        ("/api/v1/usage?from=2026-02-01&to=2026-01-01", "before"),
        ("/api/v1/usage?from=yesterday", "from"),
        ("/api/v1/usage?interval=minute&from=2025-01-01", "coarser"),
        (minutes_3_days_ago.as_str(), "last 2 days"),
        ("/api/v1/metrics/costs?period=forever", "period"),
    ] {
        let res = app.call(Method::GET, bad, &reader, None).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(detail(res).await.contains(needle), "{bad}");
    }
    let res = app
        .call(Method::GET, "/api/v1/usage", &ingest_key, None)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
dual_test!(usage_report_breaks_down_calls, super::configure);

async fn pages_show_usage_costs_plans_and_prices(app: &TestApp) {
    let ingest_key = app.key("app", &["ingest"]).await;
    ingest(
        app,
        &ingest_key,
        &calls("cus_<b>", 0, 12, "/api/referrals/1", 20.0),
    )
    .await;
    let events = json!([job(
        "j1",
        "cus_<b>",
        "kling",
        "v2",
        "credit",
        10.0,
        now_ms() - 1000
    )]);
    ingest(app, &ingest_key, &events).await;

    let client = browser();
    let token = sign_in_admin(app, &client).await;
    let page = |path: &'static str| {
        let client = client.clone();
        async move {
            let res = client.get(app.url(path)).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.text().await.unwrap()
        }
    };
    let usage = page("/usage").await;
    assert!(usage.contains("<svg") && usage.contains("Referrals"));
    // Customer ids are escaped wherever they appear.
    assert!(usage.contains("cus_&lt;b&gt;") || usage.contains("cus_&#60;b&#62;"));
    assert!(!usage.contains("cus_<b>"));
    assert!(usage.contains("data-export=\"usage-events.csv\""));
    assert!(usage.contains("data-export=\"usage-top-by-quota.csv\""));
    assert!(usage.contains("vs previous 30d") || usage.contains("none in the previous 30d"));

    // The full export: every matching event (not just the rows shown), filtered by app, with
    // senders' text quoted and kept from running as a spreadsheet formula.
    let hostile = json!([{"specversion": "1.0", "id": "=HYPERLINK(\"x\")", "source": "other-app",
        "type": "feature.used", "subject": "cus_a,b", "data": {"feature": "export"}}]);
    ingest(app, &ingest_key, &hostile).await;
    let csv = |query| events_csv(app, &client, query);
    let all = csv("").await;
    assert!(
        all.starts_with("time,type,customer,app,id,data,cost_usd\n"),
        "{all}"
    );
    // 12 calls, the job and the hostile event, one line each after the header.
    assert_eq!(all.lines().count(), 1 + 12 + 1 + 1, "{all}");
    let other = csv("?source=other-app").await;
    let lines: Vec<&str> = other.lines().collect();
    assert_eq!(lines.len(), 2, "{other}");
    assert!(
        lines[1].contains(",\"cus_a,b\",other-app,\"'=HYPERLINK(\"\"x\"\")\","),
        "{other}"
    );
    assert!(csv("?customer=nobody").await.lines().count() == 1);
    let anonymous = api()
        .get(app.url("/usage/events.csv"))
        .send()
        .await
        .unwrap();
    assert_ne!(anonymous.status(), StatusCode::OK);
    // The Overview renders metering's figures without JavaScript.
    let overview = page("/").await;
    let card = &overview[overview.find("data-figure=\"api_calls\"").unwrap()..];
    assert!(
        card[..200].contains("<p class=\"value\">12</p>"),
        "{}",
        &card[..200]
    );
    let costs = page("/costs").await;
    // 10 credits of kling/v2 at $0.006.
    assert!(costs.contains("0.06"), "{costs}");
    assert!(costs.contains("<svg"));

    // Plans: add one from the form, assign a customer, refuse a bad one with the reason.
    let res = app
        .post_form(
            &client,
            "/settings/plans",
            &[
                ("csrf_token", &token),
                ("id", "team"),
                ("name", "Team"),
                ("price", "68"),
                ("api_calls", "1000"),
                ("overage_per_1k_calls", "0.40"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = app
        .post_form(
            &client,
            "/settings/plans",
            &[
                ("csrf_token", &token),
                ("id", "bad"),
                ("name", "Bad"),
                ("price", "lots"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("price"));
    let res = app
        .post_form(
            &client,
            "/settings/plans/assign",
            &[
                ("csrf_token", &token),
                ("customer", "cus_9"),
                ("plan", "team"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let plans = page("/settings/plans").await;
    assert!(
        plans.contains("cus_9")
            && plans.contains("Team")
            && plans.contains("config file (read-only)")
    );
    // Edit the Settings plan in place; the config plan has no edit form and refuses one.
    assert!(plans.contains("action=\"/settings/plans/team\""));
    assert!(!plans.contains("action=\"/settings/plans/starter\""));
    let edit = |id: &'static str, calls: &'static str| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            app.post_form(
                &client,
                &format!("/settings/plans/{id}"),
                &[
                    ("csrf_token", token.as_str()),
                    ("id", id),
                    ("name", "Team plus"),
                    ("price", "72.50"),
                    ("api_calls", calls),
                    ("overage_per_1k_calls", "0.40"),
                    ("hard_limit_percent", "150"),
                ],
            )
            .await
        }
    };
    assert_eq!(edit("team", "2000").await.status(), StatusCode::SEE_OTHER);
    let admin = app.key("plans-admin", &["admin"]).await;
    let team: Vec<Value> = get(app, &admin, "/api/v1/plans")
        .await
        .as_array()
        .unwrap()
        .clone();
    let team = team.iter().find(|p| p["id"] == "team").unwrap();
    assert_eq!(
        (
            &team["name"],
            &team["api_calls"],
            &team["hard_limit_percent"],
            &team["price"]["amount"]
        ),
        (&json!("Team plus"), &json!(2000), &json!(150), &json!(7250))
    );
    let res = edit("team", "many").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("api_calls"));
    let res = edit("starter", "10").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("config"));
    let starter = get(app, &admin, "/api/v1/plans").await;
    assert!(
        starter
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "starter" && p["api_calls"] == 100)
    );
    // Forms without the CSRF token change nothing.
    let res = app
        .post_form(
            &client,
            "/settings/plans/assign",
            &[("customer", "cus_10"), ("plan", "team")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let res = app
        .post_form(
            &client,
            "/settings/pricing",
            &[
                ("csrf_token", &token),
                ("provider", "openai"),
                ("sku", "gpt-4o/input"),
                ("unit", "token"),
                ("price_usd", "0.0000025"),
                ("effective_from", "2026-01-01"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let prices = page("/settings/pricing").await;
    assert!(prices.contains("gpt-4o/input") && prices.contains("0.0000025"));
    let res = app
        .post_form(
            &client,
            "/settings/pricing",
            &[
                ("csrf_token", &token),
                ("provider", "openai"),
                ("sku", "x"),
                ("unit", "token"),
                ("price_usd", "-1"),
                ("effective_from", "2026-01-01"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
dual_test!(pages_show_usage_costs_plans_and_prices, super::configure);

/// The event log's export is the whole result however many pages the server streams it in
/// (it reads 2,000 events per query, and once stopped at 10,000): every matching event once,
/// newest first.
async fn usage_events_export_is_whole_past_one_page(app: &TestApp) {
    let ingest_key = app.key("app", &["ingest"]).await;
    let many = 10_321;
    for first in (0..many).step_by(1000) {
        let n = (many - first).min(1000);
        ingest(app, &ingest_key, &calls("cus_big", first, n, "/api/x", 5.0)).await;
    }
    ingest(app, &ingest_key, &calls("cus_small", 0, 7, "/api/x", 5.0)).await;
    let client = browser();
    sign_in_admin(app, &client).await;
    let export = |query| events_csv(app, &client, query);
    let big = export("?customer=cus_big").await;
    let mut lines = big.lines();
    assert_eq!(
        lines.next(),
        Some("time,type,customer,app,id,data,cost_usd")
    );
    let ids: Vec<String> = lines
        .map(|l| l.split(',').nth(4).unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), many, "one line per event");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), many, "no event twice across pages");
    // Stored in the order sent, so newest first is the reverse of it.
    assert_eq!(ids[0], format!("cus_big-{}", many - 1));
    assert_eq!(ids[many - 1], "cus_big-0");
    let all = export("").await;
    assert_eq!(all.lines().count(), 1 + many + 7);
}
dual_test!(usage_events_export_is_whole_past_one_page, super::configure);

/// Many concurrent read-then-write requests (each assignment checks the plan, then writes)
/// all succeed: none fails with a lock error.
async fn concurrent_plan_changes_all_succeed(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (url, key) = (
            app.url(&format!("/api/v1/customers/cus_{i}/plan")),
            admin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            api()
                .put(url)
                .bearer_auth(key)
                .json(&json!({"plan": "starter"}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let plans = get(app, &admin, "/api/v1/plans").await;
    assert_eq!(plans[0]["customers"], 40);
}
dual_test!(concurrent_plan_changes_all_succeed, super::configure);

/// The customers per plan (migration 0043's kept counts) follow assignments, moves between
/// plans and removals, and read the same before and after housekeeping folds PostgreSQL's ±1
/// rows; the assignments pager's total agrees.
async fn plan_counts_follow_every_assignment(app: &TestApp) {
    let admin = app.key("admin", &["admin"]).await;
    let res = app
        .call(
            Method::POST,
            "/api/v1/plans",
            &admin,
            Some(&json!({"id": "flex", "name": "Flex", "price": "26.00", "api_calls": 100})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let assign = |customer: String, plan: &'static str| {
        let admin = admin.clone();
        async move {
            let res = app
                .call(
                    Method::PUT,
                    &format!("/api/v1/customers/{customer}/plan"),
                    &admin,
                    Some(&json!({ "plan": plan })),
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK);
        }
    };
    for i in 0..6 {
        assign(format!("cus_{i}"), "starter").await;
    }
    // Two move to flex, one is assigned starter again (no move), one is removed.
    assign("cus_0".into(), "flex").await;
    assign("cus_1".into(), "flex").await;
    assign("cus_2".into(), "starter").await;
    let res = app
        .call(Method::DELETE, "/api/v1/customers/cus_3/plan", &admin, None)
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    let counts = || async {
        let plans = get(app, &admin, "/api/v1/plans").await;
        let of = |id: &str| {
            plans
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == id)
                .map(|p| p["customers"].as_i64().unwrap())
                .unwrap()
        };
        (of("starter"), of("flex"))
    };
    assert_eq!(counts().await, (3, 2));
    opsdeck::jobs::housekeeping(&app.state).await.unwrap();
    assert_eq!(counts().await, (3, 2), "the same after folding");
    let (exact,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM customer_plans",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let (kept,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM customer_plan_counts",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!((exact, kept), (5, 5));
}
dual_test!(plan_counts_follow_every_assignment, super::configure);

/// The Usage page counts every customer at risk on its card and lists them a page at a time
/// (the Overview links to it for all of them), not only as many as one page shows.
async fn usage_page_counts_and_pages_every_customer_at_risk(app: &TestApp) {
    let store = &app.state.store;
    let period = opsdeck::usage::quota::month_of(now_ms()).0;
    for i in 0..30i64 {
        store
            .execute(
                "INSERT INTO quota_states (customer_id, plan_id, period_start, state, percent, \
                 changed_at) VALUES ($1, 'flex', $2, 'warning', $3, $4)",
                opsdeck::args![
                    format!("cus_risk{i:02}"),
                    period,
                    80.0 + i as f64 / 10.0,
                    now_ms()
                ],
            )
            .await
            .unwrap();
    }
    let client = browser();
    sign_in_admin(app, &client).await;
    let page = |path: String| {
        let client = client.clone();
        async move {
            let res = client.get(app.url(&path)).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            // Askama writes `&` in attributes as `&#38;`.
            res.text().await.unwrap().replace("&#38;", "&amp;")
        }
    };
    let first = page("/usage".into()).await;
    let card = first.split("<h2>Customers at risk</h2>").nth(1).unwrap();
    assert!(card.starts_with("<p class=\"value\">30</p>"), "{card}");
    assert!(
        first.contains("showing 1–25 of 30"),
        "the list says it is cut"
    );
    // Highest percent first: cus_risk29 on the first page, cus_risk04 the last one on it.
    assert!(first.contains("/usage?customer=cus_risk29") && first.contains("cus_risk05"));
    assert!(!first.contains("customer=cus_risk04\""));
    let next = "/usage?period=30d&amp;risk_from=25";
    assert!(first.contains(next), "a link to the rest");
    let second = page(next.replace("&amp;", "&")).await;
    assert!(second.contains("showing 26–30 of 30"));
    assert!(second.contains("customer=cus_risk04\"") && second.contains("customer=cus_risk00\""));
    assert!(!second.contains("customer=cus_risk05\""));
}
dual_test!(
    usage_page_counts_and_pages_every_customer_at_risk,
    super::configure
);
