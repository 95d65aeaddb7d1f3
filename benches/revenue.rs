//! Revenue benchmark. Stores BENCH_SUBSCRIPTIONS subscriptions (default 100,000) for
//! BENCH_CUSTOMERS customers (50,000), each with BENCH_MONTHS months of history (24): a state
//! every BENCH_STATE_EVERY months (1: each monthly renewal's `customer.subscription.updated`
//! records one) and a new price or quantity every BENCH_CHANGE_EVERY months (6; 1 is the worst
//! case, every state a change); one in ten ends early. States are stored as the product stores
//! them, repeats of the state before aside as echoes that a recompute does not read. Also BENCH_INVOICES paid invoices (100,000) with their
//! payment intents and charges. Then times the full MRR history recompute (goal < 2 s) three times —
//! into empty tables, over the stored history unchanged, and after 1% of the subscriptions
//! changed — and the revenue and overview routes over HTTP (goal p95 < 10 ms).
//!
//! `cargo bench --bench revenue` — knobs above plus BENCH_REQUESTS (per route, 300) and
//! BENCH_POSTGRES_URL (an empty database to use instead of SQLite). Loopback only; every loop
//! is bounded.

mod common;

use std::time::Instant;

use common::*;
use opsdeck::access::audit::Actor;
use opsdeck::access::{Scopes, keys};
use opsdeck::app::App;
use opsdeck::config::Config;
use opsdeck::revenue::history::{self, Settings};
use opsdeck::revenue::states::{StateRow, split};
use opsdeck::store::{Store, Value, multi_row_insert, now_ms};
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400_000;
const MONTH: i64 = 30 * DAY;
const MICRO: i64 = 1_000_000;

/// Each subscription's states in order: one every `state_every` months (each monthly renewal
/// records one, as Stripe sends `customer.subscription.updated`), a new price or quantity every
/// `change_every` months, and for one in ten an end.
fn states(
    subs: usize,
    customers: usize,
    months: usize,
    (state_every, change_every): (usize, usize),
    now: i64,
) -> Vec<StateRow> {
    let row = |sub: &str, at: i64, source: &str, customer: &str, status: &str, mrr: i64| StateRow {
        subscription_id: sub.to_string(),
        state_at: at,
        source: source.to_string(),
        at,
        customer_id: customer.to_string(),
        status: status.to_string(),
        currency: "usd".to_string(),
        mrr,
        data: None,
    };
    let mut rows = Vec::with_capacity(subs * (months / state_every + 2));
    for i in 0..subs {
        let sub = format!("sub_{i:07}");
        let customer = format!("cus_{:06}", i % customers);
        let start = now - months as i64 * MONTH + (i as i64 * 7_919) % MONTH;
        let ends = (i % 10 == 9).then_some(months / 2 + i % (months / 2).max(1));
        for m in (0..months).step_by(state_every) {
            if ends.is_some_and(|e| m >= e) {
                break;
            }
            let at = start + m as i64 * MONTH;
            // The price and quantity of the change period holding month m.
            let period = m / change_every;
            let cents = [800, 2_600, 6_800][(i + period) % 3]
                * (1 + (i + period * change_every) as i64 % 3);
            rows.push(row(&sub, at, "event", &customer, "active", cents * MICRO));
        }
        if let Some(e) = ends {
            let at = start + e as i64 * MONTH;
            rows.push(row(&sub, at, "event", &customer, "canceled", 0));
        }
    }
    rows
}

async fn insert(store: &Store, table_and_columns: &str, width: usize, rows: Vec<Vec<Value>>) {
    // Small statements: bigger ones wait on Nagle over PostgreSQL (see store::PG_STATEMENT_BYTES).
    for chunk in rows.chunks(600 / width) {
        let sql = multi_row_insert(table_and_columns, width, chunk.len(), "");
        let values = chunk.iter().flatten().cloned().collect();
        store
            .execute_assembled(sql, values)
            .await
            .expect("bench insert");
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let subs = env_usize("BENCH_SUBSCRIPTIONS", 100_000);
    let customers = env_usize("BENCH_CUSTOMERS", 50_000).max(1);
    let months = env_usize("BENCH_MONTHS", 24).max(2);
    let state_every = env_usize("BENCH_STATE_EVERY", 1).max(1);
    let every = env_usize("BENCH_CHANGE_EVERY", 6).max(1);
    let invoices = env_usize("BENCH_INVOICES", 100_000);
    let requests = env_usize("BENCH_REQUESTS", 300).max(1);
    let pg = std::env::var("BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());

    let temp = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.data_dir = temp.path().to_path_buf();
    config.access.api_requests_per_minute = 1_000_000;
    if let Some(url) = &pg {
        config.server.database_url = url.clone();
    }
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let app = App::build(config, None).await.expect("app builds");
    let store = app.state.store.clone();
    let now = now_ms();

    let loading = Instant::now();
    let rows = states(subs, customers, months, (state_every, every), now);
    let generated = rows.len();
    // Split as the product stores them: repeats of the state before go to the echoes.
    let (mut kept, mut echoes) = (Vec::new(), Vec::new());
    let mut one_sub: Vec<StateRow> = Vec::new();
    for row in rows.into_iter().map(Some).chain([None]) {
        if one_sub.last().is_some_and(|last| {
            row.as_ref()
                .is_none_or(|r| r.subscription_id != last.subscription_id)
        }) {
            let (s, e) = split(std::mem::take(&mut one_sub));
            kept.extend(s);
            echoes.extend(e);
        }
        one_sub.extend(row);
    }
    let state_rows = kept.len();
    let echo_rows = echoes.len();
    for (table, rows) in [
        ("stripe_subscription_states", kept),
        ("stripe_subscription_echoes", echoes),
    ] {
        let rows = rows
            .into_iter()
            .map(|r| {
                opsdeck::args![
                    r.subscription_id,
                    r.state_at,
                    r.source,
                    r.at,
                    r.customer_id,
                    r.status,
                    r.currency,
                    r.mrr
                ]
            })
            .collect();
        insert(
            &store,
            &format!(
                "{table} (subscription_id, state_at, source, at, customer_id, status, currency, \
                 mrr)"
            ),
            8,
            rows,
        )
        .await;
    }
    let mut payments = Vec::with_capacity(invoices * 3);
    for n in 0..invoices {
        let created = now - (n as i64 * 7_919_000) % (months as i64 * MONTH);
        let customer = format!("cus_{:06}", n % customers);
        let failed = i64::from(n % 20 == 0);
        for (kind, status, recurring) in [
            ("invoice", if failed == 1 { "open" } else { "paid" }, 1),
            (
                "payment_intent",
                if failed == 1 {
                    "requires_payment_method"
                } else {
                    "succeeded"
                },
                0,
            ),
            (
                "charge",
                if failed == 1 { "failed" } else { "succeeded" },
                0,
            ),
        ] {
            payments.push(opsdeck::args![
                kind,
                format!("{kind}_{n:07}"),
                customer.clone(),
                created,
                status,
                2_600_i64,
                "usd",
                failed,
                recurring
            ]);
        }
    }
    insert(
        &store,
        "revenue_payments (kind, id, customer_id, created, status, amount, currency, failed, \
         recurring)",
        9,
        payments,
    )
    .await;
    opsdeck::revenue::records::rebuild_payment_days(&store)
        .await
        .expect("payment sums");
    println!(
        "{backend}: stored {generated} subscription states as {state_rows} state rows and \
         {echo_rows} echoes ({subs} subscriptions, {customers} customers, {months} months, a \
         state every {state_every}, a change every {every}) and \
         {invoices} invoices with their payment intents and charges in {:.0} s",
        loading.elapsed().as_secs_f64()
    );

    let settings = Settings {
        reporting_currency: "usd".into(),
        past_due_churn_days: 0,
    };
    // Three recomputes, each over every stored state: into empty tables (the first fill),
    // over the stored history with nothing changed, and after 1% of subscriptions changed
    // (a new state today), which is what a recompute after webhooks looks like.
    let runs = ["first fill", "unchanged", "1% changed"];
    for (run, label) in runs.iter().enumerate() {
        if run == 2 {
            let changed: Vec<Vec<Value>> = (0..subs)
                .step_by(100)
                .map(|i| {
                    let at = now - DAY;
                    opsdeck::args![
                        format!("sub_{i:07}"),
                        at,
                        "event",
                        at,
                        format!("cus_{:06}", i % customers),
                        "active",
                        "usd",
                        99_000 * MICRO
                    ]
                })
                .collect();
            insert(
                &store,
                "stripe_subscription_states (subscription_id, state_at, source, at, customer_id, \
                 status, currency, mrr)",
                8,
                changed,
            )
            .await;
        }
        let t = Instant::now();
        let done = history::recompute(&store, &settings, now)
            .await
            .expect("recompute");
        let took = t.elapsed();
        println!(
            "recompute, {label}: {:.2} s (read {:.2}, engine {:.2}, write {:.2}; {:.2}× the 2 s \
             goal) — {} states of {} subscriptions → {} days, {} movements; RSS {:.0} MiB",
            took.as_secs_f64(),
            done.read.as_secs_f64(),
            done.compute.as_secs_f64(),
            done.write.as_secs_f64(),
            took.as_secs_f64() / 2.0,
            done.states,
            done.subscriptions,
            done.days,
            done.movements,
            rss_mb()
        );
    }
    // A starting server recomputes the history once (it may be stale); do that here, untimed,
    // so the routes are timed in the steady state rather than beside a rewrite of the tables.
    app.state
        .revenue
        .recompute_if_dirty(&store)
        .await
        .expect("the server's first recompute");

    let key = keys::create(
        &store,
        "bench",
        &Scopes::parse_list(&["read"]).expect("scopes"),
        &Actor::new("bench", None),
    )
    .await
    .expect("key")
    .secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));
    let routes: Vec<Route> = vec![
        (
            "metrics/revenue (30 d, day)",
            Box::new(|_| "/api/v1/metrics/revenue".into()),
        ),
        (
            "metrics/revenue (1 y, month)",
            Box::new(move |_| {
                format!(
                    "/api/v1/metrics/revenue?interval=month&from={}",
                    iso(now - 365 * DAY)
                )
            }),
        ),
        (
            "metrics/overview (30 d)",
            Box::new(|_| "/api/v1/metrics/overview?period=30d".into()),
        ),
    ];
    time_routes(&reqwest::Client::new(), &base, &key, &routes, requests).await;
    cancel.cancel();
    let _ = server.await;
}
