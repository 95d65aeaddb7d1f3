//! Storage: both dialects migrate to the same schema; online backup while serving.

use std::time::Duration;

use opsdeck::store::{ConnectOptions, Store};
use reqwest::StatusCode;

use crate::dual_test;
use crate::helpers::*;

#[tokio::test]
async fn migrations_give_both_dialects_the_same_schema() {
    let Some(admin) = postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(
        &format!("sqlite://{}", dir.path().join("a.db").display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    let (name, url) = fresh_postgres_database(&admin).await;
    let pg = Store::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    pg.migrate().await.unwrap();
    // Applying twice is a no-op.
    pg.migrate().await.unwrap();
    let (a, b) = (sqlite.schema().await.unwrap(), pg.schema().await.unwrap());
    assert!(a.len() > 20, "schema read back: {a:?}");
    assert_eq!(a, b, "SQLite and PostgreSQL schemas differ");
    pg.close().await;
    drop_postgres_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_is_consistent_while_serving() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let admin = app.key("ops", &["admin"]).await;
    // Keep writing through the API while the backup runs in another process.
    let writer = {
        let url = app.url("/api/v1/keys");
        let admin = admin.clone();
        tokio::spawn(async move {
            let c = api();
            let mut created = 0;
            for i in 0..40 {
                let res = c
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"name": format!("k{i}"), "scopes": ["read"]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
                created += 1;
            }
            created
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let target = app.data_dir.path().join("copy.db");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .arg("backup")
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .arg(&target)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup written"));
    assert_eq!(writer.await.unwrap(), 40);

    let copy = Store::connect(
        &format!("sqlite://{}", target.display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    let (keys,): (i64,) = copy
        .fetch_one("SELECT COUNT(*) FROM api_keys", opsdeck::args![])
        .await
        .unwrap();
    let (audited,): (i64,) = copy
        .fetch_one(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'api_key.create'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert!(
        (1..=41).contains(&keys),
        "copy has a prefix of the writes: {keys}"
    );
    // Each key and its audit entry commit together, so a consistent copy has both or neither.
    assert_eq!(keys, audited, "a torn copy would disagree");
    assert_eq!(
        copy.applied_migrations().await.unwrap(),
        opsdeck::store::MIGRATION_COUNT
    );

    // A second backup to the same file is refused, not overwritten.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args(["backup", "--data-dir"])
        .arg(app.data_dir.path())
        .arg(&target)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    copy.close().await;
    app.finish().await;
}

/// The counts triggers keep (migration 0034) equal a fresh count after inserts, state and
/// severity changes and deletes, before and after PostgreSQL's change rows are folded.
async fn kept_counts_follow_every_write(app: &TestApp) {
    use opsdeck::alerts::summary;
    use opsdeck::usage::quota;
    let store = &app.state.store;
    let period = quota::month_of(opsdeck::store::now_ms()).0;
    let expected = |store: &Store| {
        let store = store.clone();
        async move {
            let mut alerts = [0i64; 3];
            for (i, severity) in summary::SEVERITIES.iter().enumerate() {
                let (n,): (i64,) = store
                    .fetch_one(
                        "SELECT COUNT(*) FROM alerts WHERE severity = $1 \
                         AND state IN ('pending', 'firing')",
                        opsdeck::args![*severity],
                    )
                    .await
                    .unwrap();
                alerts[i] = n;
            }
            let (at_risk,): (i64,) = store
                .fetch_one(
                    "SELECT COUNT(*) FROM quota_states WHERE period_start = $1 AND state <> 'ok'",
                    opsdeck::args![period],
                )
                .await
                .unwrap();
            (alerts, at_risk)
        }
    };
    let kept = |store: &Store| {
        let store = store.clone();
        async move {
            (
                summary::counts(&store).await.unwrap(),
                quota::at_risk_count(&store).await.unwrap(),
            )
        }
    };
    let states = ["pending", "firing", "resolved"];
    let severities = summary::SEVERITIES;
    for i in 0..30i64 {
        store
            .execute(
                "INSERT INTO alerts (rule_id, rule, fingerprint, labels, state, severity, \
                 group_key, summary, threshold, pending_since, updated_at) \
                 VALUES (1, 'r', $1, '{}', $2, $3, 'g', 's', 1, 0, 0)",
                opsdeck::args![
                    format!("f{i}"),
                    states[(i % 3) as usize],
                    severities[(i % 4 % 3) as usize]
                ],
            )
            .await
            .unwrap();
        let state = ["ok", "warning", "exceeded", "blocked"][(i % 4) as usize];
        // Two periods: last month's states are not this month's risk.
        let starts = if i % 5 == 0 { period - 1 } else { period };
        store
            .execute(
                "INSERT INTO quota_states (customer_id, plan_id, period_start, state, percent, \
                 changed_at) VALUES ($1, 'p', $2, $3, 50, 0)",
                opsdeck::args![format!("c{i}"), starts, state],
            )
            .await
            .unwrap();
    }
    assert_eq!(kept(store).await, expected(store).await, "after inserts");
    let writes = [
        "UPDATE alerts SET state = 'firing' WHERE state = 'pending' AND id % 2 = 0",
        "UPDATE alerts SET state = 'resolved' WHERE state = 'firing' AND id % 3 = 0",
        "UPDATE alerts SET severity = 'critical' WHERE id % 4 = 1",
        "UPDATE alerts SET summary = 'unrelated' WHERE id % 2 = 1",
        "DELETE FROM alerts WHERE id % 7 = 0",
        "UPDATE quota_states SET state = 'ok' WHERE customer_id IN ('c1', 'c2', 'c3')",
        "UPDATE quota_states SET period_start = period_start + 1 WHERE customer_id = 'c5'",
        "UPDATE quota_states SET percent = 99 WHERE customer_id = 'c6'",
        "DELETE FROM quota_states WHERE customer_id IN ('c7', 'c10')",
    ];
    for sql in writes {
        store.execute(sql, opsdeck::args![]).await.unwrap();
        assert_eq!(kept(store).await, expected(store).await, "after {sql}");
    }
    let want = expected(store).await;
    assert!(want.0.iter().sum::<i64>() > 0 && want.1 > 0, "{want:?}");
    summary::fold_counts(store).await.unwrap();
    quota::fold_counts(store).await.unwrap();
    assert_eq!(kept(store).await, want, "after folding");
    // Folded: one row per key (PostgreSQL appended one per change before).
    let (rows, keys): (i64, i64) = store
        .fetch_one(
            "SELECT COUNT(*), COUNT(DISTINCT state || severity) FROM alert_counts",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert!(rows <= keys, "{rows} rows for {keys} keys");
}
dual_test!(kept_counts_follow_every_write);

/// The paying-customer count triggers keep (migration 0038) equals a fresh count through
/// inserts, upserts that cross zero either way, deletes and the history rewrite's emptying
/// (PostgreSQL's TRUNCATE fires no row trigger), before and after folding; and the Revenue
/// page's total, which corrects it for rows a scheduled movement has overtaken, equals a full
/// count of who pays today.
async fn paying_count_follows_every_write(app: &TestApp) {
    use opsdeck::revenue::drill;
    let store = &app.state.store;
    // The MRR job's first recompute (at start) rewrites revenue_customers from the Stripe
    // objects, of which there are none: let it finish before writing rows by hand. After it,
    // the job runs again only when a sync marks the history dirty, and none runs here.
    app.state.revenue.recompute_if_dirty(store).await.unwrap();
    let now = opsdeck::store::now_ms();
    let today = now - now.rem_euclid(86_400_000);
    let fresh = |store: &Store| {
        let store = store.clone();
        async move {
            let (n,): (i64,) = store
                .fetch_one(
                    "SELECT COUNT(*) FROM revenue_customers WHERE mrr > 0",
                    opsdeck::args![],
                )
                .await
                .unwrap();
            n
        }
    };
    let upsert = "INSERT INTO revenue_customers (customer_id, mrr, first_day, last_day, next_day) \
                  VALUES ($1, $2, 0, 0, $3) ON CONFLICT (customer_id) DO UPDATE SET \
                  mrr = excluded.mrr, next_day = excluded.next_day";
    for i in 0..40i64 {
        // Paying, free and refunded-below-zero customers; some with a movement scheduled in
        // the past (overtaken: no movements, so nothing today) or the future.
        let mrr = [5_000, 0, -300, 12_000][(i % 4) as usize];
        let next_day = match i % 5 {
            0 => Some(today - 86_400_000),
            1 => Some(today + 86_400_000),
            _ => None,
        };
        store
            .execute(upsert, opsdeck::args![format!("cus_{i}"), mrr, next_day])
            .await
            .unwrap();
    }
    assert_eq!(
        drill::paying_count(store).await.unwrap(),
        fresh(store).await
    );
    let writes: [(&str, i64, Option<i64>); 4] = [
        ("cus_1", 700, None),   // free to paying
        ("cus_0", 0, None),     // paying to free
        ("cus_3", 9_000, None), // paying to paying
        ("cus_new", 100, None),
    ];
    for (customer, mrr, next_day) in writes {
        store
            .execute(upsert, opsdeck::args![customer, mrr, next_day])
            .await
            .unwrap();
        assert_eq!(
            drill::paying_count(store).await.unwrap(),
            fresh(store).await,
            "after {customer} at {mrr}"
        );
    }
    for sql in [
        "UPDATE revenue_customers SET mrr = -mrr WHERE customer_id IN ('cus_2', 'cus_7')",
        "UPDATE revenue_customers SET last_day = 5 WHERE mrr > 0",
        "DELETE FROM revenue_customers WHERE customer_id IN ('cus_4', 'cus_5', 'cus_6')",
    ] {
        store.execute(sql, opsdeck::args![]).await.unwrap();
        assert_eq!(
            drill::paying_count(store).await.unwrap(),
            fresh(store).await,
            "after {sql}"
        );
    }
    let want = fresh(store).await;
    assert!(want > 0);
    drill::fold_counts(store).await.unwrap();
    assert_eq!(
        drill::paying_count(store).await.unwrap(),
        want,
        "after folding"
    );

    // The Revenue page's total: who pays as of today, overtaken rows counted by today's MRR.
    let (today_paying,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM revenue_customers WHERE mrr > 0 \
             AND (next_day IS NULL OR next_day > $1)",
            opsdeck::args![today],
        )
        .await
        .unwrap();
    let (_, total) = drill::by_mrr_now(store, "usd", 10, 0, now).await.unwrap();
    assert_eq!(total, today_paying);
    assert!(total < want, "some paying rows are overtaken");

    // The history rewrite empties the table as it does (TRUNCATE on PostgreSQL) and writes
    // it again.
    let empty = if store.backend() == opsdeck::store::Backend::Postgres {
        "TRUNCATE revenue_customers"
    } else {
        "DELETE FROM revenue_customers"
    };
    store.execute(empty, opsdeck::args![]).await.unwrap();
    assert_eq!(
        drill::paying_count(store).await.unwrap(),
        0,
        "after emptying"
    );
    for i in 0..6i64 {
        store
            .execute(
                upsert,
                opsdeck::args![format!("cus_{i}"), i - 2, None::<i64>],
            )
            .await
            .unwrap();
    }
    assert_eq!(drill::paying_count(store).await.unwrap(), 3);
    drill::fold_counts(store).await.unwrap();
    assert_eq!(drill::paying_count(store).await.unwrap(), 3);
}
dual_test!(paying_count_follows_every_write);

/// Customer search finds what a scan would, through SQLite's trigram index (migration 0035)
/// as rows are added, renamed and removed, and by scan for short or very common queries.
async fn search_follows_the_stored_customers(app: &TestApp) {
    use opsdeck::revenue::customers::search;
    let store = &app.state.store;
    let add = |id: String, name: &str| {
        let store = store.clone();
        let haystack = format!("{}\n{}\n", id.to_lowercase(), name.to_lowercase());
        let name = name.to_string();
        async move {
            store
                .execute(
                    "INSERT INTO customer_search (id, name, email, haystack) \
                     VALUES ($1, $2, NULL, $3)",
                    opsdeck::args![id, name, haystack],
                )
                .await
                .unwrap();
        }
    };
    for i in 0..2_100 {
        add(format!("cus_{i:05}"), &format!("Company {i}")).await;
    }
    add("cus_zz".into(), "Zürich \"Quoted\" AG").await;
    let ids = |found: Vec<opsdeck::revenue::customers::CustomerName>| {
        found.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(search(store, "company 1234", 50).await.unwrap()),
        ["cus_01234"]
    );
    assert_eq!(
        ids(search(store, "COMPANY 209", 50).await.unwrap()),
        std::iter::once(209)
            .chain(2090..2100)
            .map(|i| format!("cus_{i:05}"))
            .collect::<Vec<_>>(),
        "any case"
    );
    assert_eq!(
        ids(search(store, "\"quoted\"", 50).await.unwrap()),
        ["cus_zz"],
        "quotes are text"
    );
    assert_eq!(
        ids(search(store, "zz", 50).await.unwrap()),
        ["cus_zz"],
        "two letters"
    );
    assert_eq!(
        ids(search(store, "_zz", 50).await.unwrap()),
        ["cus_zz"],
        "underscore is text"
    );
    // More matches than a search considers: the first in id order, as a scan finds them.
    let common = ids(search(store, "company", 5).await.unwrap());
    assert_eq!(
        common,
        [
            "cus_00000",
            "cus_00001",
            "cus_00002",
            "cus_00003",
            "cus_00004"
        ]
    );
    // An exact id comes first.
    assert_eq!(
        ids(search(store, "cus_00017", 50).await.unwrap()),
        ["cus_00017"]
    );
    // Renamed: found by the new name only; removed: not found.
    store
        .execute(
            "UPDATE customer_search SET name = 'Renamed', haystack = 'cus_00042\nrenamed widgets\n' \
             WHERE id = 'cus_00042'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(search(store, "renamed widg", 50).await.unwrap()),
        ["cus_00042"]
    );
    assert!(
        search(store, "company 42", 50)
            .await
            .unwrap()
            .iter()
            .all(|c| c.id != "cus_00042")
    );
    store
        .execute(
            "DELETE FROM customer_search WHERE id = 'cus_00042'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    assert!(search(store, "renamed widg", 50).await.unwrap().is_empty());
    assert!(search(store, "nobody here", 50).await.unwrap().is_empty());
}
dual_test!(search_follows_the_stored_customers);

/// The webhook endpoints' counts over a window (whole hours kept by triggers, migration 0036,
/// plus the partial first hour counted from the deliveries) equal a fresh count, across hours,
/// state changes and deletes, before and after folding and pruning.
async fn delivery_counts_cover_the_window_exactly(app: &TestApp) {
    use opsdeck::webhooks::queue;
    let store = &app.state.store;
    const HOUR: i64 = 3_600_000;
    let now = opsdeck::store::now_ms();
    for name in ["a", "b"] {
        store
            .execute(
                "INSERT INTO webhook_endpoints (name, url, secret_nonce, secret_sealed, \
                 event_types, created_at, updated_at) \
                 VALUES ($1, 'http://127.0.0.1:9/', $2, $2, '[\"*\"]', 0, 0)",
                opsdeck::args![name, vec![0u8; 12]],
            )
            .await
            .unwrap();
    }
    let ids: Vec<(i64,)> = store
        .fetch_all(
            "SELECT id FROM webhook_endpoints ORDER BY id",
            opsdeck::args![],
        )
        .await
        .unwrap();
    let states = ["succeeded", "failed", "pending"];
    // 30 hours of deliveries, several per hour, at odd minutes.
    for i in 0..240i64 {
        let at = now - i * 7 * 60_000 - 13_000;
        store
            .execute(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $4)",
                opsdeck::args![
                    format!("m{i}"),
                    ids[(i % 2) as usize].0,
                    states[(i % 3) as usize],
                    at
                ],
            )
            .await
            .unwrap();
    }
    let fresh = |since: i64| {
        let store = store.clone();
        async move {
            let rows: Vec<(i64, String, i64)> = store
                .fetch_all(
                    "SELECT endpoint_id, state, COUNT(*) FROM webhook_deliveries \
                     WHERE created_at >= $1 GROUP BY endpoint_id, state ORDER BY endpoint_id",
                    opsdeck::args![since],
                )
                .await
                .unwrap();
            let mut out: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
            for (e, s, n) in rows {
                let c = out.entry(e).or_default();
                match s.as_str() {
                    "succeeded" => c.0 += n,
                    "failed" => c.1 += n,
                    _ => c.2 += n,
                }
            }
            out.into_iter()
                .map(|(e, (s, f, p))| (e, s, f, p))
                .collect::<Vec<_>>()
        }
    };
    let check = |what: &'static str| {
        let store = store.clone();
        async move {
            // A window starting mid-hour, one on an hour, and one of a day.
            for since in [
                now - 5 * HOUR - 1_234,
                now - now % HOUR - 3 * HOUR,
                now - 24 * HOUR,
            ] {
                assert_eq!(
                    queue::stats(&store, since).await.unwrap(),
                    fresh(since).await,
                    "{what}, since {since}"
                );
            }
        }
    };
    check("after inserts").await;
    store
        .execute(
            "UPDATE webhook_deliveries SET state = 'succeeded' WHERE state = 'pending' AND id % 2 = 0",
            opsdeck::args![],
        )
        .await
        .unwrap();
    check("after retries succeeded").await;
    store
        .execute(
            "DELETE FROM webhook_deliveries WHERE id % 5 = 0",
            opsdeck::args![],
        )
        .await
        .unwrap();
    check("after deletes").await;
    queue::fold_counts(store).await.unwrap();
    queue::prune_counts(store, now).await.unwrap();
    check("after folding").await;
    let (old,): (i64,) = store
        .fetch_one(
            "SELECT COUNT(*) FROM webhook_delivery_counts WHERE hour < $1",
            opsdeck::args![now - 48 * HOUR],
        )
        .await
        .unwrap();
    assert_eq!(old, 0, "hours past two days are dropped");
}
dual_test!(delivery_counts_cover_the_window_exactly);

/// The Overview's customers with failed payments (latest failure first, with their counts
/// and how many in all) equal a grouping of every failure, whether a walk of the newest
/// failures finds them or a customer failing hundreds of times makes it group after all.
async fn failed_customers_match_a_full_grouping(app: &TestApp) {
    use opsdeck::revenue::drill;
    let store = &app.state.store;
    let add = |n: i64, customer: String, created: i64, failed: bool| {
        let store = store.clone();
        async move {
            store
                .execute(
                    "INSERT INTO revenue_payments (kind, id, customer_id, created, status, amount, \
                     currency, failed, recurring) VALUES ('invoice', $1, $2, $3, 'open', 100, \
                     'usd', $4, 1)",
                    opsdeck::args![format!("in_{n}"), customer, created, i64::from(failed)],
                )
                .await
                .unwrap();
        }
    };
    let expected = |from: i64, to: i64| {
        let store = store.clone();
        async move {
            let rows: Vec<(String, i64, i64)> = store
                .fetch_all(
                    "SELECT customer_id, COUNT(*), MAX(created) FROM revenue_payments \
                     WHERE failed = 1 AND created >= $1 AND created < $2 \
                     AND customer_id IS NOT NULL \
                     GROUP BY customer_id ORDER BY MAX(created) DESC, customer_id DESC",
                    opsdeck::args![from, to],
                )
                .await
                .unwrap();
            rows
        }
    };
    let got = |from: i64, to: i64| {
        let store = store.clone();
        async move {
            let (rows, total) = drill::failed_customers(&store, from, to, 5).await.unwrap();
            (
                rows.into_iter()
                    .map(|f| (f.customer, f.failures, f.last))
                    .collect::<Vec<_>>(),
                total,
            )
        }
    };
    // 40 customers failing a few times each, and succeeding in between.
    let mut n = 0;
    for i in 0..400i64 {
        n += 1;
        add(
            n,
            format!("cus_{:03}", i % 40),
            1_000_000 + i * 1_000,
            i % 3 != 0,
        )
        .await;
    }
    for (from, to) in [
        (0, i64::MAX),
        (1_100_000, 1_200_000),
        (1_380_000, 1_399_500),
    ] {
        let want = expected(from, to).await;
        let (rows, total) = got(from, to).await;
        assert_eq!(total, want.len() as i64, "{from}..{to}");
        assert_eq!(
            rows,
            want.into_iter().take(5).collect::<Vec<_>>(),
            "{from}..{to}"
        );
    }
    // One customer with the 300 latest failures: the walk meets no one else.
    for i in 0..300i64 {
        n += 1;
        add(n, "cus_heavy".into(), 2_000_000 + i, true).await;
    }
    let want = expected(0, i64::MAX).await;
    let (rows, total) = got(0, i64::MAX).await;
    assert_eq!(rows[0].0, "cus_heavy");
    assert_eq!(rows[0].1, 300);
    assert_eq!(total, want.len() as i64);
    assert_eq!(rows, want.into_iter().take(5).collect::<Vec<_>>());
    assert_eq!(got(5_000_000, 6_000_000).await, (Vec::new(), 0), "none");

    // The latest failure per customer that triggers keep (migration 0044, read for periods
    // ending after the newest failure) follows failures paid after all, moved to another
    // customer or time, deleted, and failures of no customer.
    let kept = || {
        let store = store.clone();
        async move {
            let kept: Vec<(String, i64)> = store
                .fetch_all(
                    "SELECT customer_id, last_failed FROM revenue_last_failures \
                     ORDER BY customer_id",
                    opsdeck::args![],
                )
                .await
                .unwrap();
            let grouped: Vec<(String, i64)> = store
                .fetch_all(
                    "SELECT customer_id, MAX(created) FROM revenue_payments \
                     WHERE failed = 1 AND customer_id IS NOT NULL \
                     GROUP BY customer_id ORDER BY customer_id",
                    opsdeck::args![],
                )
                .await
                .unwrap();
            (kept, grouped)
        }
    };
    let changes: [(&str, &'static str); 6] = [
        (
            "paid after all",
            "UPDATE revenue_payments SET failed = 0 WHERE customer_id = 'cus_heavy' \
             AND created >= 2000200",
        ),
        (
            "moved to another customer",
            "UPDATE revenue_payments SET customer_id = 'cus_moved' WHERE id = 'in_2'",
        ),
        (
            "moved later",
            "UPDATE revenue_payments SET created = 9000000 WHERE id = 'in_5'",
        ),
        (
            "no customer any more",
            "UPDATE revenue_payments SET customer_id = NULL WHERE id = 'in_8'",
        ),
        (
            "failed after all",
            "UPDATE revenue_payments SET failed = 1 WHERE id = 'in_1'",
        ),
        (
            "deleted",
            "DELETE FROM revenue_payments WHERE customer_id = 'cus_heavy'",
        ),
    ];
    for (what, sql) in changes {
        store.execute(sql, opsdeck::args![]).await.unwrap();
        let (kept_rows, grouped) = kept().await;
        assert_eq!(kept_rows, grouped, "{what}");
        for from in [
            0, 1_200_000, 1_390_000, 2_000_150, 2_000_299, 8_999_999, 9_000_001,
        ] {
            for to in [i64::MAX, 2_000_250, 9_000_000] {
                if from >= to {
                    continue;
                }
                let want = expected(from, to).await;
                let (rows, total) = got(from, to).await;
                assert_eq!(total, want.len() as i64, "{what}: {from}..{to}");
                assert_eq!(rows, want.into_iter().take(5).collect::<Vec<_>>(), "{what}");
            }
        }
    }
}
dual_test!(failed_customers_match_a_full_grouping);

/// The payment counts triggers keep (migration 0040) give the Payments page's total exactly
/// for whole and partial days, through inserts, updates that move a payment to another day,
/// kind or failure state, deletes and folding; the page's list is newest first with ties
/// broken by id, and its pages cover every payment once.
async fn payment_counts_follow_every_write(app: &TestApp) {
    use opsdeck::revenue::drill;
    let store = &app.state.store;
    const DAY: i64 = 86_400_000;
    let base = 20_000 * DAY; // a UTC midnight
    let exact = |kind: &'static str, failed: bool, (from, to): (i64, i64)| {
        let store = store.clone();
        async move {
            let (n,): (i64,) = store
                .fetch_one(
                    "SELECT COUNT(*) FROM revenue_payments WHERE kind = $1 AND created >= $2 \
                     AND created < $3 AND failed >= $4",
                    opsdeck::args![kind, from, to, i64::from(failed)],
                )
                .await
                .unwrap();
            n
        }
    };
    let ranges = [
        (base - 3 * DAY, base + 12 * DAY),            // whole days
        (base + DAY / 2, base + 6 * DAY + 7),         // partial at both ends
        (base + 2 * DAY + 5, base + 2 * DAY + 9_000), // inside one day
        (base + 3 * DAY, base + 3 * DAY),             // empty
        (base + 4 * DAY, base + 9 * DAY - 1),         // partial at the end only
    ];
    let check = |when: &'static str| async move {
        for kind in ["charge", "payment_intent", "refund"] {
            for failed in [false, true] {
                for range in ranges {
                    assert_eq!(
                        drill::payment_count(store, kind, failed, range)
                            .await
                            .unwrap(),
                        exact(kind, failed, range).await,
                        "{when}: {kind} failed={failed} {range:?}"
                    );
                }
            }
        }
    };
    for i in 0..300i64 {
        let kind = ["charge", "payment_intent", "refund"][(i % 3) as usize];
        // Some share a timestamp (a billing run), the rest spread over ten days.
        let created = if i % 4 == 0 {
            base + 2 * DAY + 3_000
        } else {
            base + (i * 7_919_000) % (10 * DAY)
        };
        store
            .execute(
                "INSERT INTO revenue_payments (kind, id, customer_id, created, status, amount, \
                 currency, failed, recurring) VALUES ($1, $2, 'cus_1', $3, 'succeeded', 100, \
                 'usd', $4, 0)",
                opsdeck::args![kind, format!("py_{i:03}"), created, i64::from(i % 5 == 0)],
            )
            .await
            .unwrap();
    }
    check("after inserts").await;
    for sql in [
        "UPDATE revenue_payments SET failed = 1 - failed WHERE id IN ('py_001', 'py_002', 'py_003')",
        "UPDATE revenue_payments SET created = created + 86400000 WHERE id IN ('py_004', 'py_010')",
        "UPDATE revenue_payments SET kind = 'refund' WHERE id = 'py_011'",
        "UPDATE revenue_payments SET status = 'failed', amount = 5 WHERE id = 'py_012'",
        "DELETE FROM revenue_payments WHERE id IN ('py_020', 'py_021', 'py_024')",
    ] {
        store.execute(sql, opsdeck::args![]).await.unwrap();
        check(sql).await;
    }
    drill::fold_counts(store).await.unwrap();
    check("after folding").await;

    // The list: newest first, ties by id (newest first too), pages that cover everything once.
    let range = (base, base + 10 * DAY);
    let (all, total) = drill::payments(store, "charge", false, range, 1_000, 0)
        .await
        .unwrap();
    assert_eq!(total, all.len() as i64);
    assert!(
        all.windows(2)
            .all(|w| (w[0].created, &w[0].id) > (w[1].created, &w[1].id)),
        "newest first, then by id"
    );
    let mut paged = Vec::new();
    for offset in (0..total).step_by(7) {
        let (rows, t) = drill::payments(store, "charge", false, range, 7, offset)
            .await
            .unwrap();
        assert_eq!(t, total);
        paged.extend(rows.into_iter().map(|r| r.id));
    }
    assert_eq!(paged, all.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    let (failed, n) = drill::payments(store, "charge", true, range, 1_000, 0)
        .await
        .unwrap();
    assert!(n > 0 && failed.iter().all(|r| r.failed) && failed.len() as i64 == n);
}
dual_test!(payment_counts_follow_every_write);
