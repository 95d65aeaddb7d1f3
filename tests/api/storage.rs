//! Storage: both dialects migrate to the same schema; online backup while serving.

use std::time::Duration;

use opsdeck::store::{ConnectOptions, Store};
use reqwest::StatusCode;

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
