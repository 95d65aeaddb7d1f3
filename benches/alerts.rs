//! Alert evaluation benchmark: BENCH_RULES rules (default 10,000) over BENCH_MONITORS
//! integrations (default 1,000, each with 5 minutes of checks) and BENCH_CUSTOMERS customers'
//! quota figures (default 5,000). Rules are what a large installation has: one error-rate,
//! latency and state rule per integration plus quota rules per customer, the rest spread over
//! the other metrics. Prints the time of a run that changes nothing (the steady state, every
//! 30 s), of a run where a tenth of the series start failing at once (alerts fire and are
//! notified), and of the run resolving them. Goal: a run well inside the 30 s interval.
//!
//! `cargo bench --bench alerts` — knobs: BENCH_RULES, BENCH_MONITORS, BENCH_CUSTOMERS,
//! BENCH_POSTGRES_URL (an empty database to use instead of SQLite).

mod common;

use std::time::Instant;

use common::*;
use opsdeck::alerts::{engine, rules::RuleSpec};
use opsdeck::app::App;
use opsdeck::config::{Config, ConfigDuration};
use opsdeck::store::{Store, Value, multi_row_insert};

fn main() {
    opsdeck::cli::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn insert(store: &Store, table: &str, columns: &[&str], rows: Vec<Vec<Value>>) {
    let mut tx = store.begin().await.expect("begin");
    let head = format!("{table} ({})", columns.join(", "));
    // Small statements: PostgreSQL bulk writes stay under its fast size (see the store).
    for chunk in rows.chunks(100) {
        let sql = multi_row_insert(&head, columns.len(), chunk.len(), "");
        tx.execute_assembled(sql, chunk.concat())
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
}

async fn run() {
    let rules_n = env_usize("BENCH_RULES", 10_000).max(1);
    let monitors = env_usize("BENCH_MONITORS", 1_000).max(1);
    let customers = env_usize("BENCH_CUSTOMERS", 5_000).max(1);
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = temp.path().to_path_buf();
    if let Some(u) = &pg {
        config.server.database_url = u.clone();
    }
    config.alerts.evaluation_interval = ConfigDuration(std::time::Duration::ZERO);
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let app = App::build(config, None).await.expect("app builds");
    let store = app.state.store.clone();
    let now = opsdeck::store::now_ms();

    // Integrations with a state and 10 checks each in the last 5 minutes.
    let started = Instant::now();
    insert(
        &store,
        "monitors",
        &[
            "id",
            "name",
            "kind",
            "source",
            "spec_nonce",
            "spec_sealed",
            "paused",
            "created_at",
            "updated_at",
        ],
        (0..monitors)
            .map(|i| {
                vec![
                    Value::from(i as i64 + 1),
                    Value::from(format!("m{i}")),
                    Value::from("http"),
                    Value::from("api"),
                    Value::from(vec![0u8; 12]),
                    Value::from(vec![0u8; 16]),
                    Value::from(0i64),
                    Value::from(now),
                    Value::from(now),
                ]
            })
            .collect(),
    )
    .await;
    set_health(&store, monitors, now, |_| "up").await;
    insert(
        &store,
        "quota_states",
        &[
            "customer_id",
            "plan_id",
            "period_start",
            "state",
            "percent",
            "changed_at",
        ],
        (0..customers)
            .map(|i| {
                vec![
                    Value::from(format!("cus_{i}")),
                    Value::from("pro"),
                    Value::from(0i64),
                    Value::from("ok"),
                    Value::from((i % 70) as f64),
                    Value::from(now),
                ]
            })
            .collect(),
    )
    .await;
    println!(
        "seeded {monitors} integrations (10 checks each) and {customers} customers in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The rules.
    let mut specs: Vec<serde_json::Value> = Vec::with_capacity(rules_n);
    let mut i = 0;
    while specs.len() < rules_n {
        let m = format!("m{}", i % monitors);
        let c = format!("cus_{}", i % customers);
        let spec = match i % 5 {
            0 => serde_json::json!({"metric": "integration.error_rate", "condition": "> 20",
                                    "filter": {"integration": m}, "for": "0s"}),
            1 => serde_json::json!({"metric": "integration.latency_p95", "condition": "> 2000",
                                    "filter": {"integration": m}}),
            2 => serde_json::json!({"metric": "integration.state", "condition": ">= 2",
                                    "filter": {"integration": m}}),
            3 => serde_json::json!({"metric": "quota.percent", "condition": ">= 90",
                                    "filter": {"customer": c}, "hysteresis": 2}),
            _ => serde_json::json!({"metric": "webhooks.failure_rate", "condition": "> 50",
                                    "window": "15m"}),
        };
        let mut spec = spec;
        spec["name"] = serde_json::json!(format!("rule {i}"));
        specs.push(spec);
        i += 1;
    }
    let mut rules = Vec::with_capacity(specs.len());
    let mut rows = Vec::with_capacity(specs.len());
    for (n, s) in specs.iter().enumerate() {
        let spec: RuleSpec = serde_json::from_value(s.clone()).expect("spec");
        let mut rule = spec.validate(&[], &[]).expect("valid");
        rule.id = n as i64 + 1_000_000;
        rows.push(vec![
            Value::from(rule.id),
            Value::from(spec.name.clone()),
            Value::from("api"),
            Value::from(serde_json::to_string(&spec).expect("json")),
            Value::from(now),
            Value::from(now),
        ]);
        rules.push(rule);
    }
    insert(
        &store,
        "alert_rules",
        &["id", "name", "source", "spec", "created_at", "updated_at"],
        rows,
    )
    .await;
    let settings = engine::Settings::default();

    let timed = |label: &'static str, at: i64| {
        let (store, rules, settings) = (store.clone(), rules.clone(), settings.clone());
        async move {
            let started = Instant::now();
            let (report, _) = engine::run(&store, &rules, at, "", &settings)
                .await
                .expect("run");
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{label:<34} {:>8.0} ms  ({} rules, {} series, {} fired, {} resolved, {} notifications)",
                secs * 1000.0,
                report.rules,
                report.series,
                report.fired,
                report.resolved,
                report.notifications
            );
            secs
        }
    };
    println!("alert evaluation on {backend}, {} rules:", rules.len());
    let steady = timed("steady state (nothing changes)", now).await;
    timed("steady state, again", now + 1).await;
    // A tenth of the integrations go down and a tenth of the customers over 90 %.
    set_health(&store, monitors, now + 2, |i| {
        if i % 10 == 0 { "down" } else { "up" }
    })
    .await;
    let hot: Vec<String> = (0..customers)
        .step_by(10)
        .map(|i| format!("cus_{i}"))
        .collect();
    for chunk in hot.chunks(500) {
        let list = chunk
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(",");
        store
            .execute_assembled(
                format!("UPDATE quota_states SET percent = 95 WHERE customer_id IN ({list})"),
                Vec::new(),
            )
            .await
            .expect("update");
    }
    let firing = timed("a tenth start failing", now + 5).await;
    timed("still failing (no change)", now + 10).await;
    set_health(&store, monitors, now + 15, |_| "up").await;
    store
        .execute_assembled("UPDATE quota_states SET percent = 10".into(), Vec::new())
        .await
        .expect("update");
    let resolving = timed("all recover", now + 20).await;
    println!(
        "worst run {:.2} s = {:.1} % of the 30 s interval",
        steady.max(firing).max(resolving),
        steady.max(firing).max(resolving) / 30.0 * 100.0
    );
    app.state.store.close().await;
}

/// Sets every integration's state (`of(i)`) and replaces its checks with 10 in the 5 minutes
/// before `at`, down ones failing.
async fn set_health(store: &Store, monitors: usize, at: i64, of: impl Fn(usize) -> &'static str) {
    store
        .execute_assembled("DELETE FROM monitor_states".into(), Vec::new())
        .await
        .expect("clear");
    store
        .execute_assembled("DELETE FROM check_results".into(), Vec::new())
        .await
        .expect("clear");
    insert(
        store,
        "monitor_states",
        &[
            "monitor_id",
            "state",
            "since",
            "failures",
            "successes",
            "last_check_at",
        ],
        (0..monitors)
            .map(|i| {
                vec![
                    Value::from(i as i64 + 1),
                    Value::from(of(i)),
                    Value::from(at),
                    Value::from(0i64),
                    Value::from(0i64),
                    Value::from(at),
                ]
            })
            .collect(),
    )
    .await;
    let mut rows = Vec::with_capacity(monitors * 10);
    for i in 0..monitors {
        for k in 0..10i64 {
            rows.push(vec![
                Value::from(i as i64 + 1),
                Value::from(at - k * 29_000),
                Value::from(if of(i) == "down" { "down" } else { "up" }),
                Value::from(40_000i64),
            ]);
        }
    }
    insert(
        store,
        "check_results",
        &["monitor_id", "at", "verdict", "latency_us"],
        rows,
    )
    .await;
}
