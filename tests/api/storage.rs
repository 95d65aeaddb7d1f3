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
    summary::compact(store).await.unwrap();
    quota::compact_counts(store).await.unwrap();
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
