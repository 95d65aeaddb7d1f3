//! `POST /api/v1/events`: CloudEvents ingest over HTTP on both backends.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual_test;
use crate::helpers::*;

fn api_call(id: usize, customer: &str) -> Value {
    json!({
        "specversion": "1.0", "id": format!("evt-{id}"), "source": "referral-app", "type": "api.request",
        "subject": customer, "time": "2026-11-20T10:00:00Z",
        "data": {"endpoint": "/api/referrals", "method": "POST", "status": 201, "duration_ms": 35}
    })
}

async fn post(
    app: &TestApp,
    key: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    api()
        .post(app.url("/api/v1/events"))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Runs the retention job until it has nothing left to delete.
async fn prune_all(app: &TestApp) {
    let mut steps = 0;
    while opsdeck::jobs::retention(&app.state).await.unwrap() == opsdeck::jobs::Outcome::MoreWork {
        steps += 1;
        assert!(steps < 100, "pruning terminates");
    }
}

/// The ids of the stored events, in order.
async fn stored_ids(app: &TestApp) -> Vec<String> {
    let ids: Vec<(String,)> = app
        .state
        .store
        .fetch_all(
            "SELECT event_id FROM events ORDER BY event_id",
            opsdeck::args![],
        )
        .await
        .unwrap();
    ids.into_iter().map(|(id,)| id).collect()
}

async fn stored(app: &TestApp) -> i64 {
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT COUNT(*) FROM events", opsdeck::args![])
        .await
        .unwrap();
    n
}

async fn events_are_accepted_in_every_shape(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let one = api_call(1, "cus_1").to_string();
    let res = post(app, &key, "application/cloudevents+json", one.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );

    let batch = json!([api_call(2, "cus_1"), api_call(3, "cus_2")]).to_string();
    let res = post(
        app,
        &key,
        "application/cloudevents-batch+json; charset=utf-8",
        batch,
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 2);
    let res = post(
        app,
        &key,
        "application/json",
        api_call(4, "cus_3").to_string(),
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 1);
    let res = post(
        app,
        &key,
        "application/json",
        json!([api_call(5, "cus_3")]).to_string(),
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 1);
    assert_eq!(stored(app).await, 5);

    // The stored row carries the envelope and the data.
    let (subject, kind, time, data): (Option<String>, String, i64, String) = app
        .state
        .store
        .fetch_one(
            "SELECT subject, type, time, data FROM events WHERE event_id = $1",
            opsdeck::args!["evt-1"],
        )
        .await
        .unwrap();
    assert_eq!(
        (subject.as_deref(), kind.as_str()),
        (Some("cus_1"), "api.request")
    );
    assert_eq!(time, 1_795_168_800_000);
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["endpoint"],
        "/api/referrals"
    );

    // Shape and content type must agree.
    let res = post(
        app,
        &key,
        "application/cloudevents+json",
        json!([api_call(9, "c")]).to_string(),
    )
    .await;
    error_body(res, StatusCode::BAD_REQUEST, "bad_request").await;
    let res = post(app, &key, "application/cloudevents-batch+json", one).await;
    error_body(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(stored(app).await, 5);
}
dual_test!(events_are_accepted_in_every_shape);

async fn invalid_events_are_rejected_one_by_one(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let mut no_subject = api_call(2, "x");
    no_subject.as_object_mut().unwrap().remove("subject");
    let mut negative = json!({"specversion": "1.0", "id": "p1", "source": "app", "type": "provider.usage", "subject": "cus_1",
        "data": {"provider": "luma", "sku": "v2", "unit": "credit", "quantity": -4}});
    let mut bad_time = api_call(4, "cus_1");
    bad_time["time"] = json!("last tuesday");
    let long_subject = api_call(5, &"x".repeat(300));
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({"d": deep});
    }
    let deep_event =
        json!({"specversion": "1.0", "id": "d1", "source": "app", "type": "custom", "data": deep});
    let batch = json!([
        api_call(1, "cus_1"),
        no_subject,
        negative.clone(),
        bad_time,
        long_subject,
        deep_event,
        api_call(6, "cus_2"),
        7
    ]);
    let res = post(
        app,
        &key,
        "application/cloudevents-batch+json",
        batch.to_string(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let indexes: Vec<u64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5, 7]);
    for (needle, (_, error)) in [
        "subject",
        "data.quantity",
        "RFC 3339",
        "256",
        "nested",
        "JSON object",
    ]
    .iter()
    .zip(&rejected)
    {
        assert!(error.contains(needle), "{error} should mention {needle}");
    }
    assert_eq!(stored(app).await, 2, "only the valid siblings were stored");

    // A single invalid event: 200 with nothing accepted and nothing stored.
    negative["id"] = json!("p2");
    let res = post(
        app,
        &key,
        "application/cloudevents+json",
        negative.to_string(),
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 0);
    assert_eq!(stored(app).await, 2);
}
dual_test!(invalid_events_are_rejected_one_by_one);

async fn bad_requests_are_refused_whole(app: &TestApp) {
    let ingest = app.key("app", &["ingest"]).await;
    let read = app.key("dash", &["read"]).await;
    let event = api_call(1, "cus_1").to_string();
    error_body(
        post(app, &read, "application/cloudevents+json", event.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let res = api()
        .post(app.url("/api/v1/events"))
        .body(event.clone())
        .send()
        .await
        .unwrap();
    error_body(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    for ct in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        let body = error_body(
            post(app, &ingest, ct, event.clone()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("application/cloudevents+json")
        );
    }
    let res = api()
        .post(app.url("/api/v1/events"))
        .bearer_auth(&ingest)
        .body(event.clone())
        .send()
        .await
        .unwrap();
    error_body(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let truncated = &event[..event.len() - 10];
    let body = error_body(
        post(app, &ingest, "application/json", truncated.to_string()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("line 1 column"),
        "{body}"
    );
    let multi_line = "[\n  {\"specversion\": \"1.0\",\n   \"id\": oops}\n]";
    let body = error_body(
        post(app, &ingest, "application/json", multi_line).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("line 3 column"),
        "{body}"
    );
    let huge_number = event.replace("\"duration_ms\":35", "\"duration_ms\":1e400");
    assert_ne!(huge_number, event);
    error_body(
        post(app, &ingest, "application/json", huge_number).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let absurd = format!("{}1{}", "[".repeat(1500), "]".repeat(1500));
    error_body(
        post(app, &ingest, "application/json", absurd).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    let too_many: Vec<Value> = (0..4).map(|i| api_call(100 + i, "cus_1")).collect();
    let body = error_body(
        post(
            app,
            &ingest,
            "application/json",
            json!(too_many).to_string(),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("limit is 3"),
        "{body}"
    );
    let big = json!({"specversion": "1.0", "id": "big", "source": "app", "type": "custom", "data": {"pad": "x".repeat(5000)}});
    let body = error_body(
        post(app, &ingest, "application/json", big.to_string()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("4096 bytes"),
        "{body}"
    );
    assert_eq!(
        stored(app).await,
        0,
        "nothing from a refused request was stored"
    );
}
dual_test!(
    bad_requests_are_refused_whole,
    |c: &mut opsdeck::config::Config| {
        c.ingest.max_events = 3;
        c.ingest.max_body_bytes = 4096;
    }
);

async fn repeated_events_are_counted_once(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let batch = json!([
        api_call(1, "cus_1"),
        api_call(2, "cus_1"),
        api_call(1, "cus_1")
    ])
    .to_string();
    let body: Value = post(app, &key, "application/json", batch.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    let body: Value = post(app, &key, "application/json", batch)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    // The same id from another source is another event.
    let mut other = api_call(1, "cus_1");
    other["source"] = json!("billing-app");
    let body: Value = post(app, &key, "application/json", other.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 1);

    // Identical requests racing each other: every event is stored once, and the replies agree.
    let batch: Vec<Value> = (100..150).map(|i| api_call(i, "cus_9")).collect();
    let batch = json!(batch).to_string();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (url, key, batch) = (app.url("/api/v1/events"), key.clone(), batch.clone());
        handles.push(tokio::spawn(async move {
            let res = api()
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(batch)
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()
        }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for h in handles {
        let body = h.await.unwrap();
        accepted += body["accepted"].as_u64().unwrap();
        duplicates += body["duplicates"].as_u64().unwrap();
    }
    assert_eq!((accepted, duplicates), (50, 350));
    assert_eq!(stored(app).await, 2 + 1 + 50);
}
dual_test!(repeated_events_are_counted_once);

/// PostgreSQL's dedup keys are computed in Rust for each batch, and were computed in SQL by
/// migration 0037 for the events stored before it: if the two disagreed, a retry of an event
/// stored before the upgrade would be stored again.
async fn dedup_keys_agree_with_the_migration(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let mut batch: Vec<Value> = (0..20).map(|i| api_call(i, "cus_1")).collect();
    let mut unicode = api_call(1, "cus_1");
    unicode["source"] = json!("https://shop.example/é");
    unicode["id"] = json!("ид-1 \u{1F600}");
    batch.push(unicode);
    let body: Value = post(app, &key, "application/json", json!(batch).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 21);
    let keys: Vec<(i64, i64)> = app
        .state
        .store
        .fetch_all("SELECT key, received_at FROM event_keys", opsdeck::args![])
        .await
        .unwrap();
    if app.state.store.backend() == opsdeck::store::Backend::Sqlite {
        assert!(keys.is_empty(), "SQLite keeps its window elsewhere");
        return;
    }
    let stored: Vec<(String, String, i64)> = app
        .state
        .store
        .fetch_all(
            "SELECT source, event_id, ('x' || encode(substr(sha256(convert_to(source, 'UTF8') \
             || '\\xff'::bytea || convert_to(event_id, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint \
             FROM events",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 21);
    let held: std::collections::HashSet<i64> = keys.iter().map(|(k, _)| *k).collect();
    for (source, id, in_sql) in &stored {
        let in_rust = opsdeck::usage::dedup::pg_key(source, id);
        assert_eq!(in_rust, *in_sql, "{source} / {id}");
        assert!(
            held.contains(&in_rust),
            "the key of {source} / {id} is held"
        );
    }
    assert_eq!(keys.len(), 21);
}
dual_test!(dedup_keys_agree_with_the_migration);

/// Duplicates are recognised within `ingest.dedup_window` of the original's receipt, on both
/// backends; past it, retention drops the key and the same event is stored again.
async fn the_dedup_window_bounds_what_is_recognised(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let send = |event: Value| {
        let key = key.clone();
        async move {
            let body: Value = post(app, &key, "application/json", event.to_string())
                .await
                .json()
                .await
                .unwrap();
            (body["accepted"].as_u64(), body["duplicates"].as_u64())
        }
    };
    assert_eq!(send(api_call(1, "cus_1")).await, (Some(1), Some(0)));
    assert_eq!(send(api_call(1, "cus_1")).await, (Some(0), Some(1)));
    // The window is one second: wait until the original's receipt is older than that (the
    // condition itself is the passing of time).
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    prune_all(app).await;
    let (held,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT COUNT(*) FROM event_keys", opsdeck::args![])
        .await
        .unwrap();
    assert_eq!(held, 0, "keys older than the window are pruned");
    assert_eq!(send(api_call(1, "cus_1")).await, (Some(1), Some(0)));
    assert_eq!(send(api_call(1, "cus_1")).await, (Some(0), Some(1)));
    assert_eq!(stored(app).await, 2);
}
dual_test!(
    the_dedup_window_bounds_what_is_recognised,
    |c: &mut opsdeck::config::Config| {
        c.ingest.dedup_window = opsdeck::config::ConfigDuration(std::time::Duration::from_secs(1));
    }
);

fn provider_usage(
    id: &str,
    customer: &str,
    provider: &str,
    sku: &str,
    quantity: f64,
    time: &str,
) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "referral-app", "type": "provider.usage", "subject": customer,
           "time": time, "data": {"provider": provider, "sku": sku, "unit": "credit", "quantity": quantity}})
}

#[derive(Debug, PartialEq)]
struct RollupRow {
    granularity: String,
    bucket: i64,
    subject: String,
    source: String,
    r#type: String,
    provider: String,
    sku: String,
    events: i64,
    quantity: f64,
    status_2xx: i64,
    status_5xx: i64,
    duration_ms_sum: f64,
    cost_nano: i64,
    unpriced: i64,
    latency: i64,
}
opsdeck::from_row!(RollupRow {
    granularity,
    bucket,
    subject,
    source,
    r#type: "type",
    provider,
    sku,
    events,
    quantity,
    status_2xx,
    status_5xx,
    duration_ms_sum,
    cost_nano,
    unpriced,
    latency
});

async fn rollups(app: &TestApp, granularity: &str) -> Vec<RollupRow> {
    // As every reader of the rollups does: the writer may still hold the latest increments.
    app.state.store.settle().await;
    app.state
        .store
        .fetch_all(
            "SELECT granularity, bucket, subject, source, type, provider, sku, events, quantity, status_2xx, status_5xx,
                    duration_ms_sum, cost_nano, unpriced,
                    lat_50 + lat_100 + lat_250 + lat_500 + lat_1000 + lat_2500 + lat_5000 + lat_inf AS latency
             FROM usage_rollups WHERE granularity = $1 ORDER BY bucket, subject, type, provider, sku",
            opsdeck::args![granularity],
        )
        .await
        .unwrap()
}

async fn rollups_count_what_was_stored(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let mut failed = api_call(2, "cus_1");
    failed["data"]["status"] = json!(503);
    failed["data"]["duration_ms"] = json!(65);
    let batch = json!([
        api_call(1, "cus_1"),
        failed,
        api_call(1, "cus_1"), // repeated in the same request
        provider_usage("p1", "cus_1", "luma", "v2", 40.0, "2026-11-20T10:00:30Z"),
        provider_usage("p2", "cus_1", "luma", "v2", 2.5, "2026-11-20T10:59:00Z"),
        provider_usage("p3", "cus_2", "kling", "v1", 10.0, "2026-11-20T23:59:59Z"),
    ]);
    let body: Value = post(app, &key, "application/json", batch.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(5), Some(1))
    );
    // Repeating the whole request adds nothing anywhere.
    post(app, &key, "application/json", batch.to_string()).await;

    let day = rollups(app, "day").await;
    let d = 1_795_132_800_000; // 2026-11-20 00:00 UTC
    let row = |s: &str, t: &str, p: &str| {
        day.iter()
            .find(|r| r.subject == s && r.r#type == t && r.provider == p)
            .unwrap()
    };
    let api = row("cus_1", "api.request", "");
    assert_eq!(
        (api.bucket, api.events, api.status_2xx, api.status_5xx),
        (d, 2, 1, 1)
    );
    assert_eq!(api.duration_ms_sum, 100.0);
    let luma = row("cus_1", "provider.usage", "luma");
    assert_eq!(
        (luma.sku.as_str(), luma.events, luma.quantity),
        ("v2", 2, 42.5)
    );
    assert_eq!(row("cus_2", "provider.usage", "kling").quantity, 10.0);
    assert_eq!(day.len(), 3);
    // The two luma jobs fall in one hour but two minutes.
    let hour = rollups(app, "hour").await;
    assert_eq!(
        hour.iter()
            .filter(|r| r.provider == "luma")
            .map(|r| r.events)
            .collect::<Vec<_>>(),
        [2]
    );
    // These minutes are older than the two days minute rollups are kept: they have none.
    assert!(rollups(app, "minute").await.is_empty());
    assert!(rollups(app, "minute_total").await.is_empty());
}
dual_test!(rollups_count_what_was_stored);

/// The Costs page's count of customers with a cost this month, kept by the writer as costs
/// arrive (migration 0039), equals a fresh count after every commit, and after folding; a
/// history import counts in its own month.
async fn costed_customers_are_counted_as_their_cost_arrives(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let store = &app.state.store;
    let now = days_ago(0);
    let month = opsdeck::usage::quota::month_of(opsdeck::store::now_ms()).0;
    let check = |what: &'static str| async move {
        // The month totals are folded after the commit, with the rollups.
        store.settle().await;
        let (fresh,): (i64,) = store
            .fetch_one(
                "SELECT COUNT(*) FROM usage_months WHERE month = $1 AND cost_nano > 0",
                opsdeck::args![month],
            )
            .await
            .unwrap();
        let (kept,) = opsdeck::costs::report::costed_count(store, month)
            .await
            .unwrap();
        assert_eq!(kept, fresh, "{what}");
        kept
    };
    let mut calls: Vec<Value> = (0..6).map(|i| api_call(900 + i, "cus_a")).collect();
    for c in &mut calls {
        c["time"] = json!(now);
    }
    let send = |batch: Vec<Value>| {
        let key = key.clone();
        async move {
            let body: Value = post(app, &key, "application/json", json!(batch).to_string())
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(
                body["accepted"].as_u64(),
                Some(batch.len() as u64),
                "{body}"
            );
        }
    };
    send(calls).await;
    assert_eq!(check("calls cost nothing").await, 0);
    send(vec![provider_usage("c1", "cus_a", "luma", "v1", 2.0, &now)]).await;
    assert_eq!(check("the first cost").await, 1);
    send(vec![
        provider_usage("c2", "cus_a", "luma", "v1", 1.0, &now),
        provider_usage("c3", "cus_b", "luma", "v2", 1.0, &now),
        provider_usage("c4", "cus_c", "nobody", "unpriced", 1.0, &now),
    ])
    .await;
    assert_eq!(
        check("a second customer; an unpriced one is not costed").await,
        2
    );
    // A history import: last month's costs count in last month.
    send(vec![provider_usage(
        "old",
        "cus_d",
        "luma",
        "v1",
        1.0,
        &days_ago(40),
    )])
    .await;
    assert_eq!(check("other months apart").await, 2);
    opsdeck::costs::report::fold_counts(store).await.unwrap();
    assert_eq!(check("after folding").await, 2);
    let (_, total) = opsdeck::costs::report::customers_this_month(store, 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 2);
}
dual_test!(costed_customers_are_counted_as_their_cost_arrives);

/// (bucket, customer, type, provider) → (events, quantity, 2xx, 5xx)
/// (bucket, subject, type, provider) → (events, quantity, 2xx, 5xx, cost in nano-USD, unpriced,
/// latency histogram total).
/// Sums by (bucket, customer, app, type, provider, sku).
type Aggregates = std::collections::BTreeMap<
    (i64, String, String, String, String, String),
    (i64, f64, i64, i64, i64, i64, i64),
>;

/// Property: after randomized ingest (random customers, types, times, batch sizes and repeats,
/// sent by concurrent clients), every granularity's rollups equal a direct aggregation of the
/// stored raw events.
async fn rollups_equal_the_raw_events_after_random_ingest(app: &TestApp) {
    use rand::Rng;
    let key = app.key("app", &["ingest"]).await;
    let mut rng = rand::rng();
    // Over the last four days: minute rollups are kept for the last two (MINUTE_KEEP_MS), so
    // some events have minute rows and some only hours and days. None falls within ten minutes
    // of that boundary, which moves while the test runs.
    let now = opsdeck::store::now_ms();
    let keep = opsdeck::usage::rollup::MINUTE_KEEP_MS;
    let base = now - 4 * 86_400_000_i64;
    const EVENTS: usize = 1500;
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let t = loop {
                let t = base + rng.random_range(0..4 * 86_400_000_i64 - 60_000);
                if (t - (now - keep)).abs() > 600_000 {
                    break t;
                }
            };
            let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1_000_000)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let customer = format!("cus_{}", rng.random_range(0..7));
            let app = ["referral-app", "billing-app"][rng.random_range(0..2)];
            let mut e = if rng.random_bool(0.5) {
                let mut e = api_call(i, &customer);
                e["time"] = json!(time);
                e["data"]["status"] = json!([200, 201, 302, 404, 500][rng.random_range(0..5)]);
                e["data"]["duration_ms"] = json!(rng.random_range(0..2000));
                e
            } else {
                let (p, s) =
                    [("luma", "v1"), ("luma", "v2"), ("bfl", "flux")][rng.random_range(0..3)];
                provider_usage(
                    &format!("p{i}"),
                    &customer,
                    p,
                    s,
                    f64::from(rng.random_range(0..100_u32)),
                    &time,
                )
            };
            e["source"] = json!(app);
            e
        })
        .collect();
    // Random batches, with a share of events sent twice (repeating an earlier batch's event or
    // one earlier in the same batch), from four concurrent clients. Some batches are big enough
    // that PostgreSQL's writer splits them over several statements.
    let mut batches: Vec<String> = Vec::new();
    let (mut i, mut sent) = (0, 0);
    while i < events.len() {
        let size = if rng.random_bool(0.2) {
            100..400
        } else {
            1..60
        };
        let n = rng.random_range(size).min(events.len() - i);
        let mut batch: Vec<Value> = events[i..i + n].to_vec();
        for _ in 0..rng.random_range(0..3) {
            let repeat = events[rng.random_range(0..i + n)].clone();
            batch.insert(rng.random_range(0..=batch.len()), repeat);
        }
        sent += batch.len();
        batches.push(json!(batch).to_string());
        i += n;
    }
    // On PostgreSQL every instance folds the journaled rollups of all: two more folders, each
    // with a connection pool of its own as another instance would have, run beside the
    // server's own for the whole ingest.
    let folding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut others = Vec::new();
    if app.backend == Backend::Postgres {
        for _ in 0..2 {
            let url = &app.state.config.server.database_url;
            others.push(
                opsdeck::store::Store::connect(url, &Default::default())
                    .await
                    .unwrap(),
            );
        }
    }
    let folders: Vec<_> = others
        .into_iter()
        .map(|store| {
            let folding = folding.clone();
            tokio::spawn(async move {
                while folding.load(std::sync::atomic::Ordering::SeqCst) {
                    opsdeck::usage::writer::fold_pg(&store).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mine: Vec<String> = batches.iter().skip(c).step_by(4).cloned().collect();
        let (url, key) = (app.url("/api/v1/events"), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts = (0, 0);
            for body in mine {
                let res = api()
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                let reply: Value = res.json().await.unwrap();
                assert!(status.is_success(), "{status}: {reply}");
                counts.0 += reply["accepted"].as_u64().unwrap() as usize;
                counts.1 += reply["duplicates"].as_u64().unwrap() as usize;
            }
            counts
        }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for t in tasks {
        let (a, d) = t.await.unwrap();
        (accepted, duplicates) = (accepted + a, duplicates + d);
    }
    folding.store(false, std::sync::atomic::Ordering::SeqCst);
    for f in folders {
        f.await.unwrap();
    }
    assert_eq!((accepted, duplicates), (EVENTS, sent - EVENTS));
    assert_eq!(stored(app).await, EVENTS as i64);

    let raw: Vec<(String, String, String, i64, String, Option<i64>)> = app
        .state
        .store
        .fetch_all(
            "SELECT subject, source, type, time, data, cost_nano FROM events",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let floor = opsdeck::usage::rollup::minute_floor(opsdeck::store::now_ms());
    let minutes = raw.iter().filter(|r| r.3 >= floor).count();
    assert!(
        0 < minutes && minutes < EVENTS,
        "some events are past the minute horizon"
    );
    for (granularity, width) in opsdeck::usage::rollup::GRANULARITIES {
        let mut expected = Aggregates::default();
        for (subject, source, kind, time, data, cost) in &raw {
            if *granularity == "minute" && *time < floor {
                continue;
            }
            let data: Value = serde_json::from_str(data).unwrap();
            let text = |field: &str| data[field].as_str().unwrap_or("").to_string();
            let e = expected
                .entry((
                    opsdeck::usage::rollup::bucket_start(*time, *width),
                    subject.clone(),
                    source.clone(),
                    kind.clone(),
                    text("provider"),
                    text("sku"),
                ))
                .or_default();
            e.0 += 1;
            e.1 += data["quantity"].as_f64().unwrap_or(0.0);
            let status = data["status"].as_i64().unwrap_or(0);
            e.2 += i64::from((200..300).contains(&status));
            e.3 += i64::from((500..600).contains(&status));
            e.4 += cost.unwrap_or(0);
            e.5 += i64::from(kind == "provider.usage" && cost.is_none());
            e.6 += i64::from(kind == "api.request");
            // Each job's cost is the price in force at its time (shipped defaults here).
            if let Some(c) = cost {
                let pico = match (data["provider"].as_str(), data["sku"].as_str()) {
                    (Some("luma"), Some("v1")) => 3_200_000_000,
                    (Some("luma"), Some("v2")) => 4_500_000_000,
                    other => panic!("{other:?} should be unpriced"),
                };
                let q = data["quantity"].as_f64().unwrap() as i64;
                assert_eq!(*c, q * pico / 1000);
            }
        }
        let mut actual = Aggregates::default();
        for r in rollups(app, granularity).await {
            let e = actual
                .entry((r.bucket, r.subject, r.source, r.r#type, r.provider, r.sku))
                .or_default();
            e.0 += r.events;
            e.1 += r.quantity;
            e.2 += r.status_2xx;
            e.3 += r.status_5xx;
            e.4 += r.cost_nano;
            e.5 += r.unpriced;
            e.6 += r.latency;
        }
        assert_eq!(
            actual, expected,
            "{granularity} rollups disagree with the raw events"
        );
        // The all-customer rows hold the same sums without the customer.
        let total = opsdeck::usage::rollup::total_of(granularity).unwrap();
        let mut summed = Aggregates::default();
        for ((bucket, _, source, kind, provider, sku), v) in expected {
            let e = summed
                .entry((bucket, String::new(), source, kind, provider, sku))
                .or_default();
            e.0 += v.0;
            e.1 += v.1;
            e.2 += v.2;
            e.3 += v.3;
            e.4 += v.4;
            e.5 += v.5;
            e.6 += v.6;
        }
        let mut totals = Aggregates::default();
        for r in rollups(app, total).await {
            assert_eq!(r.subject, "");
            let e = totals
                .entry((r.bucket, r.subject, r.source, r.r#type, r.provider, r.sku))
                .or_default();
            e.0 += r.events;
            e.1 += r.quantity;
            e.2 += r.status_2xx;
            e.3 += r.status_5xx;
            e.4 += r.cost_nano;
            e.5 += r.unpriced;
            e.6 += r.latency;
        }
        assert_eq!(
            totals, summed,
            "{total} rollups disagree with the raw events"
        );
    }
    // Per-customer month totals (the quota route's source) agree too.
    let months: Vec<(i64, String, i64, i64, i64)> = app
        .state
        .store
        .fetch_all(
            "SELECT month, subject, calls, events, cost_nano FROM usage_months ORDER BY month, subject",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let mut expected = std::collections::BTreeMap::<(i64, String), (i64, i64, i64)>::new();
    for (subject, _, kind, time, _, cost) in &raw {
        let month = opsdeck::usage::quota::month_of(*time).0;
        let e = expected.entry((month, subject.clone())).or_default();
        e.0 += i64::from(kind == "api.request");
        e.1 += 1;
        e.2 += cost.unwrap_or(0);
    }
    let actual: std::collections::BTreeMap<(i64, String), (i64, i64, i64)> = months
        .into_iter()
        .map(|(m, s, c, e, n)| ((m, s), (c, e, n)))
        .collect();
    assert_eq!(
        actual, expected,
        "usage_months disagree with the raw events"
    );
}
dual_test!(rollups_equal_the_raw_events_after_random_ingest);

fn days_ago(days: i64) -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn retention_prunes_raw_events_and_rollups_separately(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    // 120 days: far enough past the 60-day rollup cutoff that its month is always an earlier
    // calendar month than the cutoff's, whatever today's date.
    let batch: Vec<Value> = [(10, "recent"), (45, "middle"), (120, "old")]
        .iter()
        .flat_map(|(age, name)| {
            (0..3).map(move |i| {
                provider_usage(
                    &format!("{name}-{i}"),
                    "cus_1",
                    "luma",
                    "v1",
                    1.0,
                    &days_ago(*age),
                )
            })
        })
        .collect();
    let body: Value = post(app, &key, "application/json", json!(batch).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 9);
    // Raw events are kept `raw_days` from when they arrived: the middle and old ones are made
    // to have arrived when they happened, while "imported" (a history import just now of an
    // event 120 days old) stays.
    app.state
        .store
        .execute(
            "UPDATE events SET received_at = time WHERE event_id NOT LIKE 'recent-%'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let imported = provider_usage("imported", "cus_1", "luma", "v1", 1.0, &days_ago(120));
    let body: Value = post(app, &key, "application/json", json!([imported]).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 1);

    // Yesterday's usage has minute rows, kept; a minute row three days old (as a store written
    // before minute rows were limited to two days holds) is pruned.
    let recent = provider_usage("yesterday", "cus_1", "luma", "v1", 1.0, &days_ago(1));
    let body: Value = post(app, &key, "application/json", json!([recent]).to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 1);
    app.state.store.settle().await;
    let (yesterday,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT bucket FROM usage_rollups WHERE granularity = 'minute'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let now = opsdeck::store::now_ms();
    for (granularity, subject) in [("minute", "cus_1"), ("minute_total", "")] {
        app.state
            .store
            .execute(
                "INSERT INTO usage_rollups (granularity, bucket, subject, source, type, category, \
                 provider, sku, unit, events, quantity, cost_nano, unpriced, status_2xx, \
                 status_3xx, status_4xx, status_5xx, duration_ms_sum, lat_50, lat_100, lat_250, \
                 lat_500, lat_1000, lat_2500, lat_5000, lat_inf) \
                 SELECT granularity, $2, subject, source, type, category, \
                 provider, sku, unit, events, quantity, cost_nano, unpriced, status_2xx, \
                 status_3xx, status_4xx, status_5xx, duration_ms_sum, lat_50, lat_100, lat_250, \
                 lat_500, lat_1000, lat_2500, lat_5000, lat_inf FROM usage_rollups \
                 WHERE granularity = $1 AND subject = $3",
                opsdeck::args![granularity, yesterday - 2 * 86_400_000, subject],
            )
            .await
            .unwrap();
    }

    // Quota state changes are history kept as long as the rollups.
    for (customer, age_days) in [("cus_old", 61), ("cus_new", 59)] {
        app.state
            .store
            .execute(
                "INSERT INTO quota_state_changes (customer_id, plan_id, period_start, from_state, \
                 to_state, percent, at) VALUES ($1, 'p', 0, 'ok', 'warning', 81.0, $2)",
                opsdeck::args![customer, now - age_days * 86_400_000],
            )
            .await
            .unwrap();
    }

    prune_all(app).await;
    let ids = stored_ids(app).await;
    assert_eq!(
        ids,
        ["imported", "recent-0", "recent-1", "recent-2", "yesterday"],
        "raw events received more than 30 days ago are gone"
    );
    for granularity in ["hour", "day"] {
        let total: i64 = rollups(app, granularity)
            .await
            .iter()
            .map(|r| r.events)
            .sum();
        assert_eq!(
            total, 7,
            "{granularity}: rollups keep 60 days, so 1-, 10- and 45-day-old usage stays"
        );
    }
    // Minute rows are kept two days: the 3-day-old one is gone, yesterday's stays.
    for granularity in ["minute", "minute_total"] {
        let rows = rollups(app, granularity).await;
        assert_eq!(
            rows.iter()
                .map(|r| (r.bucket, r.events))
                .collect::<Vec<_>>(),
            [(yesterday, 1)],
            "{granularity}"
        );
    }
    app.state.store.settle().await;
    for granularity in ["hour_total", "day_total"] {
        let (total,): (i64,) = app
            .state
            .store
            .fetch_one(
                "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM usage_rollups WHERE granularity = $1",
                opsdeck::args![granularity],
            )
            .await
            .unwrap();
        assert_eq!(
            total, 7,
            "{granularity}: all-customer totals are pruned alike"
        );
    }
    let (months,): (i64,) = app
        .state
        .store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM usage_months",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        months, 7,
        "month totals before the cutoff's month are pruned"
    );
    let changes: Vec<(String,)> = app
        .state
        .store
        .fetch_all(
            "SELECT customer_id FROM quota_state_changes",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        changes,
        [("cus_new".to_string(),)],
        "old quota changes pruned"
    );

    // A pruned event sent again is still a duplicate: the dedup window covers what arrived in
    // the last 24 h whatever retention did to the events, and this one truly arrived moments ago.
    let again = provider_usage("old-0", "cus_1", "luma", "v1", 1.0, &days_ago(1));
    let body: Value = post(app, &key, "application/json", again.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 0);
}
dual_test!(
    retention_prunes_raw_events_and_rollups_separately,
    |c: &mut opsdeck::config::Config| {
        c.retention.raw_days = 30;
        c.retention.rollup_days = 60;
    }
);

async fn hostile_strings_cannot_fail_a_shared_commit(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let mut nul_source = api_call(1, "cus_1");
    nul_source["source"] = json!("app\u{0}");
    let mut nul_in_data = api_call(2, "cus_1");
    nul_in_data["data"]["note"] = json!("a\u{0}b"); // escaped inside the stored JSON text: fine
    let batch = json!([nul_source, nul_in_data, api_call(3, "cus_1")]);
    let body: Value = post(app, &key, "application/json", batch.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"][0]["index"], 0);
    assert!(
        body["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("control characters")
    );
}
dual_test!(hostile_strings_cannot_fail_a_shared_commit);

/// Ingest has its own limit, counted in events: an app sending many small requests is not held
/// to the read limit (here 2 requests a minute), and a batch over the event rate is refused
/// whole, changing nothing.
async fn ingest_is_limited_in_events_not_requests(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    for i in 0..4 {
        let res = post(
            app,
            &key,
            "application/cloudevents+json",
            api_call(i, "cus_a").to_string(),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "request {i} is under the event rate"
        );
    }
    // Two batches of five at once need ten events of a bucket that holds five: one at least is
    // refused, however long the requests above took (the bucket refills at five a second, so
    // a lone batch sent after a slow commit could find it full again).
    let batch = |from: usize| {
        let events: Vec<Value> = (from..from + 5).map(|i| api_call(i, "cus_a")).collect();
        Value::from(events).to_string()
    };
    let kind = "application/cloudevents-batch+json";
    let (a, b) = tokio::join!(
        post(app, &key, kind, batch(10)),
        post(app, &key, kind, batch(20))
    );
    let mut accepted = 0;
    let mut refused = 0;
    for res in [a, b] {
        if res.status() == StatusCode::OK {
            accepted += 1;
            continue;
        }
        refused += 1;
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait >= 1);
        let body = error_body(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("ingest.events_per_second"),
            "{body}"
        );
    }
    assert!(refused >= 1, "ten events at once are over a bucket of five");
    assert_eq!(
        stored(app).await,
        4 + 5 * accepted,
        "a refused batch stored nothing"
    );
    // Each credential has its own bucket.
    let other = app.key("other app", &["ingest"]).await;
    let res = post(app, &other, kind, batch(30)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(stored(app).await, 9 + 5 * accepted);
}
dual_test!(
    ingest_is_limited_in_events_not_requests,
    |c: &mut opsdeck::config::Config| {
        c.access.api_requests_per_minute = 2;
        c.ingest.max_events = 5;
        c.ingest.events_per_second = 5;
    }
);

/// A store held by another writer past the busy timeout answers 503 with Retry-After, stores
/// nothing, and forgets the refused events' dedup keys, so the retry is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_answers_503_and_keeps_nothing() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let key = app.key("app", &["ingest"]).await;
    // Once an event is stored the writer has loaded its dedup window: taken during that load,
    // the lock held the writer up a busy timeout before the request's own commit waited one,
    // and the request timeout could answer first (after which the events were stored anyway).
    let warm = json!([api_call(0, "cus_0")]).to_string();
    assert_eq!(
        post(&app, &key, "application/json", warm).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let other = rusqlite::Connection::open(app.data_dir.path().join("opsdeck.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = json!([api_call(1, "cus_1"), api_call(2, "cus_1")]).to_string();
    let res = post(&app, &key, "application/json", body.clone()).await;
    let (status, retry) = (res.status(), res.headers().get("retry-after").cloned());
    let reply: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert_eq!(retry.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
    other.execute_batch("ROLLBACK").unwrap();

    let res = post(&app, &key, "application/json", body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(
        (reply["accepted"].as_u64(), reply["duplicates"].as_u64()),
        (Some(2), Some(0)),
        "the refused events were not remembered as seen"
    );
    assert_eq!(stored(&app).await, 1 + 2);
}

/// The SQLite writer prepares the next group (its duplicates decided against the window)
/// while the previous one is being written. When that write fails, the group behind it is
/// decided again: an event it shares with the failed request is stored with it, not reported
/// as a duplicate of an event that was never stored, and its own events are not duplicates of
/// themselves. Driven through a writer of its own on the app's store, so that nothing else on
/// the request path waits for the lock first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_does_not_make_the_next_ones_events_duplicates() {
    use opsdeck::usage::event::NewEvent;
    use opsdeck::usage::writer::{self, DedupSettings, IngestError, Ingestor, Written};
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let (ingestor, inbox) = Ingestor::channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(writer::run(
        app.state.store.clone(),
        inbox,
        Default::default(),
        DedupSettings {
            window_ms: 3_600_000,
            max_events: 10_000,
        },
        stop.clone().cancelled_owned(),
    ));
    let event = |id: &str, customer: &str| NewEvent {
        source: "referral-app".into(),
        id: id.into(),
        kind: "api.request".into(),
        subject: Some(customer.into()),
        time_ms: 1_763_632_800_000,
        data: "{}".into(),
        facts: Default::default(),
    };
    // Once this is answered the writer has loaded its window and opened its connection; its
    // rollups are written 50 ms after, while the connection is idle, not behind the lock.
    ingestor.write(vec![event("evt-0", "cus_0")]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let other = rusqlite::Connection::open(app.data_dir.path().join("opsdeck.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let send = |events: Vec<NewEvent>| {
        let ingestor = ingestor.clone();
        tokio::spawn(async move { ingestor.write(events).await })
    };
    let a = send(vec![event("evt-1", "cus_1"), event("evt-2", "cus_1")]);
    // The first group is on the connection, waiting for the lock, before the second arrives
    // and is prepared behind it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let b = send(vec![event("evt-2", "cus_1"), event("evt-3", "cus_2")]);
    let refused = a.await.unwrap();
    assert!(matches!(refused, Err(IngestError::Busy)), "{refused:?}");
    other.execute_batch("ROLLBACK").unwrap();
    let written = b.await.unwrap().unwrap();
    assert_eq!(
        written,
        Written {
            accepted: 2,
            duplicates: 0
        },
        "decided again once the first group failed"
    );
    stop.cancel();
    running.await.unwrap();
    assert_eq!(stored_ids(&app).await, ["evt-0", "evt-2", "evt-3"]);
}

/// Ids in one customer's events log (`/api/v1/events?customer=…`), newest first, read in
/// pages of `limit` until `next_before` runs out.
async fn log_ids(app: &TestApp, key: &str, query: &str, limit: usize) -> Vec<String> {
    let (mut ids, mut before) = (Vec::new(), None::<i64>);
    loop {
        let mut path = format!("/api/v1/events?{query}&limit={limit}");
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        let res = app.call(reqwest::Method::GET, &path, key, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let page: Value = res.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        ids.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return ids,
        }
        assert!(ids.len() < 1_000, "paging terminates");
    }
}

/// A customer's events log is found through runs of their events on SQLite (migration 0042):
/// runs still in `event_runs_recent` and runs already moved into `event_runs` read as one log,
/// newest first, every event once, with the type filter, and once retention has deleted the
/// oldest events, without them and without their runs. PostgreSQL reads the same log through
/// its (subject, seq) index.
async fn a_customers_log_reads_every_event_once_across_runs(app: &TestApp) {
    let key = app.key("app", &["ingest"]).await;
    let reader = app.key("reader", &["read"]).await;
    let customers = ["cus_a", "cus_b", "cus_c"];
    let mut sent: Vec<(String, String, bool)> = Vec::new(); // (customer, id, is provider usage)
    let mut n = 0;
    for request in 0..8 {
        // Customers are interleaved within each request; the commit sorts its events by
        // customer, so each customer's events in it form one run. Some requests' runs are
        // moved into `event_runs` before the next arrives (settling the writer does that),
        // others are still recent when the log is read.
        let mut batch = Vec::new();
        for i in 0..15 {
            let customer = customers[(i + request) % customers.len()];
            n += 1;
            let usage = n % 4 == 0;
            let id = format!("log-{n}");
            batch.push(if usage {
                provider_usage(&id, customer, "luma", "v1", 1.0, &days_ago(0))
            } else {
                let mut e = api_call(n, customer);
                e["id"] = json!(id);
                e
            });
            sent.push((customer.to_string(), id, usage));
        }
        let body: Value = post(app, &key, "application/json", json!(batch).to_string())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["accepted"], 15, "{body}");
        if request % 3 == 0 {
            app.state.store.settle().await;
        }
    }
    let expect = |customer: &str, usage_only: bool, sent: &[(String, String, bool)]| {
        sent.iter()
            .rev()
            .filter(|(c, _, u)| c == customer && (*u || !usage_only))
            .map(|(_, id, _)| id.clone())
            .collect::<Vec<_>>()
    };
    for customer in customers {
        for limit in [1, 4, 7, 50] {
            assert_eq!(
                log_ids(app, &reader, &format!("customer={customer}"), limit).await,
                expect(customer, false, &sent),
                "{customer}, pages of {limit}"
            );
        }
        assert_eq!(
            log_ids(
                app,
                &reader,
                &format!("customer={customer}&type=provider.usage"),
                3
            )
            .await,
            expect(customer, true, &sent),
            "{customer}, provider usage only"
        );
    }
    assert!(
        log_ids(app, &reader, "customer=cus_nobody", 10)
            .await
            .is_empty()
    );

    let count = |sql: &'static str| async move {
        let (n,): (i64,) = app
            .state
            .store
            .fetch_one(sql, opsdeck::args![])
            .await
            .unwrap();
        n
    };
    app.state.store.settle().await;
    let sqlite = app.state.store.backend() == opsdeck::store::Backend::Sqlite;
    if sqlite {
        assert_eq!(count("SELECT COUNT(*) FROM event_runs_recent").await, 0);
        let runs = count("SELECT COUNT(*) FROM event_runs").await;
        // One run per customer per commit, not one entry per event.
        assert!(runs <= 8 * 3, "{runs} runs for 120 events");
    } else {
        assert_eq!(count("SELECT COUNT(*) FROM event_runs").await, 0);
    }

    // Retention deletes the first three requests' events; their runs go with them.
    app.state
        .store
        .execute(
            "UPDATE events SET received_at = 0 WHERE seq <= (SELECT MIN(seq) + 44 FROM events)",
            opsdeck::args![],
        )
        .await
        .unwrap();
    prune_all(app).await;
    assert_eq!(stored(app).await, 75);
    let kept = &sent[45..];
    for customer in customers {
        assert_eq!(
            log_ids(app, &reader, &format!("customer={customer}"), 4).await,
            expect(customer, false, kept),
            "{customer} after retention"
        );
    }
    if sqlite {
        let stale =
            count("SELECT COUNT(*) FROM event_runs WHERE last_seq < (SELECT MIN(seq) FROM events)")
                .await;
        assert_eq!(stale, 0, "the runs of deleted events are deleted");
        assert!(count("SELECT COUNT(*) FROM event_runs").await > 0);
    }
}
dual_test!(a_customers_log_reads_every_event_once_across_runs);
