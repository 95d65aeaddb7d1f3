//! Outgoing webhooks against a real store: messages and their deliveries stored together,
//! deliveries claimed under leases that concurrent claimers never share, outcomes recorded only
//! by the lease's holder.

use std::collections::HashSet;

use opsdeck::webhooks::queue::{self, Next, Outcome};

use crate::helpers::{Backend, spawn_app_with};

async fn endpoint(app: &crate::helpers::TestApp, name: &str, types: &str) -> i64 {
    let (id,): (i64,) = app
        .state
        .store
        .fetch_one(
            "INSERT INTO webhook_endpoints (name, url, secret_nonce, secret_sealed, event_types, \
             created_at, updated_at) VALUES ($1, 'http://127.0.0.1:9/', $2, $2, $3, 0, 0) \
             RETURNING id",
            opsdeck::args![name, vec![0u8; 12], types],
        )
        .await
        .unwrap();
    id
}

async fn queue_claims_and_leases(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |_| {}).await else {
        return;
    };
    let store = &app.state.store;
    let alerts = endpoint(&app, "alerts", r#"["alert.*"]"#).await;
    let all = endpoint(&app, "all", r#"["*"]"#).await;
    let now = 1_000_000;
    let mut tx = store.begin().await.unwrap();
    let firing = queue::enqueue(
        &mut tx,
        "alert.firing",
        &serde_json::json!({"rule": "x"}),
        now,
    )
    .await
    .unwrap();
    let paid = queue::enqueue(&mut tx, "payment.failed", &serde_json::json!({}), now)
        .await
        .unwrap();
    assert!(
        queue::enqueue(&mut tx, "Bad Type", &serde_json::json!({}), now)
            .await
            .is_err()
    );
    tx.commit().await.unwrap();
    let rows: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT message_id, endpoint_id FROM webhook_deliveries ORDER BY message_id, endpoint_id",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let mut expected = vec![
        (firing.clone(), alerts),
        (firing.clone(), all),
        (paid.clone(), all),
    ];
    expected.sort();
    assert_eq!(rows, expected, "one delivery per subscribed endpoint");

    // A claims all three; B, at the same moment, gets none; once A's lease lapses, B does.
    let a = queue::claim(store, "a", now, 30_000, 100).await.unwrap();
    assert_eq!(a.len(), 3);
    assert!(
        queue::claim(store, "b", now + 1, 30_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let b = queue::claim(store, "b", now + 30_001, 30_000, 100)
        .await
        .unwrap();
    assert_eq!(b.len(), 3, "a lapsed lease is taken over");
    // A's late outcome changes nothing; B's counts.
    let outcome = |owner_holds: &queue::Claimed, next| Outcome {
        delivery_id: owner_holds.id,
        endpoint_id: owner_holds.endpoint_id,
        attempted: true,
        attempt: owner_holds.attempts + 1,
        at: now + 31_000,
        status: Some(200),
        latency_us: 900,
        response: Some("ok".into()),
        error: None,
        next,
        disable: None,
    };
    let late: Vec<Outcome> = a.iter().map(|c| outcome(c, Next::Succeeded)).collect();
    queue::record(store, "a", &late, 0).await.unwrap();
    let (pending,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        pending, 3,
        "only the lease's holder records a delivery's state"
    );
    let retry: Vec<Outcome> = b
        .iter()
        .map(|c| outcome(c, Next::RetryAt(now + 40_000)))
        .collect();
    queue::record(store, "b", &retry, 0).await.unwrap();
    assert!(
        queue::claim(store, "c", now + 39_999, 30_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let c = queue::claim(store, "c", now + 40_000, 30_000, 100)
        .await
        .unwrap();
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|d| d.attempts == 1), "{c:?}");

    // Many due deliveries, four claimers at once: every delivery claimed exactly once.
    let mut tx = store.begin().await.unwrap();
    for i in 0..300 {
        queue::enqueue(&mut tx, "alert.firing", &serde_json::json!({"i": i}), now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = queue::claim(&store, &format!("w{w}"), now + 50_000, 30_000, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "delivery {id} claimed twice");
        }
    }
    assert_eq!(total, 600, "two endpoints take alert.firing");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_claims_and_leases_sqlite() {
    queue_claims_and_leases(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_claims_and_leases_postgres() {
    queue_claims_and_leases(Backend::Postgres).await;
}
