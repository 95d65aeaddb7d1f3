//! One way to write a number, before and after the live refresh; tables that sort numbers as
//! numbers, page, and export the whole result; customers by name. A real headless Chromium reads
//! the Overview as the server drew it, receives a `metrics_update` from the event bus and must
//! show the same text and badges; it sorts the Revenue page's MRR column by its header button.
//! The exports, pagers and the customer search are read over HTTP on both backends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use headless_chrome::Tab;
use opsdeck::access::audit::Actor;
use opsdeck::revenue::stripe::client::{RetryPolicy, StripeClient};
use opsdeck::revenue::{history, sync};
use opsdeck::simulators::stripe::FakeStripe;
use opsdeck::store::now_ms;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dual_test;
use crate::helpers::*;

const KEY: &str = "sk_test_opsdeck_format_key";
const DAY: i64 = 86_400;
const CUSTOMERS: i64 = 30;
/// A customer whose name a spreadsheet would run as a formula.
const FORMULA_NAME: &str = "=HYPERLINK(\"http://x\")";

fn price(id: &str, cents: i64, created: i64) -> Value {
    json!({"id": id, "object": "price", "active": true, "currency": "usd", "unit_amount": cents,
           "unit_amount_decimal": cents.to_string(), "billing_scheme": "per_unit",
           "type": "recurring", "created": created, "livemode": false,
           "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}})
}

/// 30 customers with names and emails, MRRs chosen so that their text order ("$1,2…" before
/// "$9…") differs from their numeric order, every seventh canceled five days ago; synced from
/// the fake Stripe and the MRR history recomputed.
async fn seed_revenue(app: &TestApp) {
    let now = now_ms() / 1000;
    let start = now - 60 * DAY;
    let stripe = FakeStripe::new(KEY);
    for n in 0..CUSTOMERS {
        let cents = [900, 8_000, 120_000, 1_500, 25_000, 300][n as usize % 6] + n * 100;
        let p = price(&format!("price_{n}"), cents, start - DAY);
        stripe.put("prices", p.clone());
        let customer = format!("cus_{n:04}");
        let name = if n == 3 {
            FORMULA_NAME.to_string()
        } else {
            format!("Customer {n:02}")
        };
        stripe.put(
            "customers",
            json!({"id": customer, "object": "customer", "created": start + n, "name": name,
                   "email": format!("c{n}@example.com")}),
        );
        let canceled = n % 7 == 6;
        let mut sub = json!({"id": format!("sub_{n:04}"), "object": "subscription",
            "customer": customer, "status": if canceled { "canceled" } else { "active" },
            "currency": "usd", "created": start + n, "start_date": start + n,
            "discounts": [], "livemode": false,
            "items": {"object": "list", "has_more": false, "data": [
                {"id": format!("si_{n}"), "object": "subscription_item", "quantity": 1,
                 "price": p, "discounts": [],
                 "current_period_start": start, "current_period_end": start + 30 * DAY}]}});
        if canceled {
            sub["canceled_at"] = json!(now - 5 * DAY);
            sub["ended_at"] = json!(now - 5 * DAY);
        }
        stripe.put("subscriptions", sub);
    }
    let (base, _server) = stripe.start().await.expect("fake stripe");
    let client = StripeClient::new(&base, KEY, RetryPolicy::default()).expect("client");
    // The server's own start-up recompute, done (or taken) first: one that read the empty
    // store before the backfill and wrote after the recompute below would leave no history.
    app.state
        .revenue
        .recompute_if_dirty(&app.state.store)
        .await
        .expect("start-up recompute");
    sync::backfill(&app.state.store, &client, "usd", &|_| {})
        .await
        .expect("backfill");
    let settings = history::Settings {
        reporting_currency: "usd".into(),
        past_due_churn_days: 0,
    };
    history::recompute(&app.state.store, &settings, now_ms())
        .await
        .expect("recompute");
}

/// Evaluates `js` (an expression yielding a JSON string, or a promise of one) in the page.
fn eval_json(tab: &Tab, js: &str) -> anyhow::Result<Value> {
    let result = tab.evaluate(js, true)?;
    let text = result
        .value
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("{js} gave no string"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Every card of a document as [name, value, note text, badge class or null].
const READ_CARDS: &str = "[...DOC.querySelectorAll('#overview-cards .card')].map((c) => [\
    c.dataset.figure, c.querySelector('.value').textContent, \
    c.querySelector('.note').textContent, \
    c.querySelector('.badge') ? c.querySelector('.badge').className : null])";

fn drive(
    base: &str,
    profile: PathBuf,
    publish: impl Fn(),
) -> anyhow::Result<(Value, Value, Value, Value)> {
    let browser = crate::browser::launch(profile)?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(20));
    crate::browser::sign_in(&tab, base, "#overview-cards")?;

    // The cards exactly as the server rendered them, from a fresh copy of the page.
    let server = eval_json(
        &tab,
        &format!(
            "fetch('/').then((r) => r.text()).then((html) => {{ \
             const DOC = new DOMParser().parseFromString(html, 'text/html'); \
             return JSON.stringify({}); }})",
            READ_CARDS
        ),
    )?;
    // Wait for the script's own first refresh, then blank every card that has a figure so
    // that only a later update can fill it again.
    wait_for(&tab, "document.querySelector('#overview-cards') !== null")?;
    eval_json(
        &tab,
        "new Promise((done) => setTimeout(() => { \
         document.querySelectorAll('#overview-cards .card').forEach((c) => { \
           if (c.querySelector('.note').textContent.startsWith('previous')) { \
             c.querySelector('.value').textContent = 'stale'; \
             c.querySelector('.note').textContent = ''; } }); \
         done(JSON.stringify(true)); }, 1000))",
    )?;
    // The live update, from the event bus to the page's event stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        publish();
        if eval_json(
            &tab,
            "new Promise((done) => setTimeout(() => done(JSON.stringify(\
             ![...document.querySelectorAll('#overview-cards .value')].some((v) => v.textContent === 'stale'))), 300))",
        )? == json!(true)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no metrics_update reached the page"
        );
    }
    let live = eval_json(
        &tab,
        &format!("(() => {{ const DOC = document; return JSON.stringify({READ_CARDS}); }})()"),
    )?;

    // The Revenue page's MRR column, sorted by its header button, up then down.
    tab.navigate_to(&format!("{base}/revenue"))?
        .wait_until_navigated()?;
    tab.wait_for_element("#top-customers th button")?;
    let column = "JSON.stringify({sort: document.querySelector('#top-customers th:nth-child(2)').getAttribute('aria-sort'), \
        values: [...document.querySelectorAll('#top-customers tbody tr td:nth-child(2)')].map((td) => [Number(td.dataset.sort), td.textContent])})";
    tab.wait_for_element("#top-customers th:nth-child(2) button")?
        .click()?;
    let up = eval_json(&tab, column)?;
    tab.wait_for_element("#top-customers th:nth-child(2) button")?
        .click()?;
    let down = eval_json(&tab, column)?;
    Ok((server, live, up, down))
}

/// Waits until `condition` (a JS boolean expression) holds in the page.
fn wait_for(tab: &Tab, condition: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tab.evaluate(condition, false)?.value != Some(json!(true)) {
        anyhow::ensure!(Instant::now() < deadline, "{condition} never held");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_refresh_writes_what_the_server_wrote_and_mrr_sorts_as_numbers() {
    if crate::browser::chromium_missing() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    seed_revenue(&app).await;
    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let profile_path = profile.path().to_path_buf();
    let state = app.state.clone();
    let runtime = tokio::runtime::Handle::current();
    // Publishes the Overview's figures as the realtime job does.
    let publish = move || {
        let overview = runtime
            .block_on(opsdeck::overview::overview(
                &state,
                time::OffsetDateTime::now_utc(),
                30 * DAY,
            ))
            .expect("overview");
        state.events.publish(
            opsdeck::events::Channel::MetricsUpdate,
            "metrics.updated",
            json!({"period": overview.period, "figures": overview.figures}),
        );
    };
    let result = tokio::task::spawn_blocking(move || drive(&base, profile_path, publish))
        .await
        .unwrap();
    app.finish().await;
    let (server, live, up, down) = result.expect("browser session");

    // Identical text and badges, and the figures carry their units.
    assert_eq!(
        live, server,
        "live refresh differs from the server's rendering"
    );
    let cards = server.as_array().expect("cards");
    let card = |name: &str| {
        cards
            .iter()
            .find(|c| c[0] == name)
            .unwrap_or_else(|| panic!("{name} card"))
    };
    assert!(
        card("mrr")[1].as_str().unwrap().starts_with('$'),
        "{cards:?}"
    );
    assert!(card("arr")[1].as_str().unwrap().contains(','), "{cards:?}");
    for rate in ["customer_churn_rate", "nrr", "payment_success_rate"] {
        let c = card(rate);
        let value = c[1].as_str().unwrap();
        assert!(value == "—" || value.ends_with(" %"), "{rate}: {value}");
        if let Some(badge) = c[3].as_str() {
            assert!(badge.contains("badge"), "{badge}");
            assert!(c[2].as_str().unwrap().ends_with(" pp"), "{c:?}");
        }
    }
    let badges = cards.iter().filter(|c| c[3].is_string()).count();
    assert!(badges > 0, "some change badges: {cards:?}");

    // Numeric order both ways, whatever the text order.
    let values = |v: &Value| -> Vec<f64> {
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_f64().unwrap())
            .collect()
    };
    let ascending = values(&up);
    assert_eq!(up["sort"], "ascending");
    assert!(ascending.len() >= 10, "{up}");
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]), "{up}");
    assert_eq!(down["sort"], "descending");
    let descending = values(&down);
    assert!(descending.windows(2).all(|w| w[0] >= w[1]), "{down}");
    let texts: Vec<String> = up["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect();
    let mut as_text = texts.clone();
    as_text.sort();
    assert_ne!(
        as_text, texts,
        "the data tells text order from numeric order"
    );
}

async fn exports_pagers_and_search(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
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
    })
    .await
    else {
        return;
    };
    seed_revenue(&app).await;
    // More plan assignments than Settings → Plans shows on one page.
    for n in 0..205 {
        opsdeck::usage::plans::assign(
            &app.state.store,
            &format!("cus_plan_{n:04}"),
            "growth",
            "manual",
            &Actor::new("test", None),
        )
        .await
        .expect("assign");
    }
    let web = browser();
    sign_in_admin(&app, &web).await;
    let get = |path: String| {
        let web = web.clone();
        let url = app.url(&path);
        async move {
            let res = web.get(url).send().await.expect("page");
            let status = res.status();
            let location = res
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            (status, location, res.text().await.expect("body"))
        }
    };

    // The Revenue page shows 20 customers of 26 paying, says so, and names them.
    let (status, _, html) = get("/revenue".into()).await;
    assert_eq!(status, StatusCode::OK);
    let pager = html
        .find("showing")
        .map(|i| html[i..].chars().take(30).collect::<String>());
    assert!(
        html.contains("showing 1–20 of 26"),
        "top customers pager: {pager:?}"
    );
    assert!(html.contains("customers_from=20"), "next page link");
    assert!(html.contains("Customer 02"), "names beside ids");
    assert!(html.contains("data-export-url=\"/revenue/customers.csv\""));
    let (_, _, page2) = get("/revenue?customers_from=20".into()).await;
    assert!(page2.contains("showing 21–26 of 26"), "second page");

    // The export has every paying customer, not the 20 on screen, and defuses formulas.
    let (status, _, csv) = get("/revenue/customers.csv".into()).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "customer,name,email,mrr,currency,customer_since,last_change"
    );
    assert_eq!(lines.len(), 1 + 26, "{csv}");
    assert!(
        csv.contains("cus_0003,\"'=HYPERLINK(\"\"http://x\"\")\",c3@example.com,"),
        "{csv}"
    );
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");
    let (_, _, movements) = get("/revenue/movements.csv?period=90d".into()).await;
    assert!(
        movements.lines().count() > 26,
        "every movement: {movements}"
    );

    // Settings → Plans: 200 of 205 assignments on screen, all of them in the export.
    let (_, _, plans) = get("/settings/plans".into()).await;
    assert!(plans.contains("showing 1–200 of 205"), "plans pager");
    assert!(plans.contains("href=\"/settings/plans?offset=200\""));
    let (_, _, rest) = get("/settings/plans?offset=200".into()).await;
    assert!(rest.contains("showing 201–205 of 205"));
    let (_, _, all) = get("/settings/plans/assignments.csv".into()).await;
    assert_eq!(all.lines().count(), 1 + 205);

    // Search by name, email or id: one match goes to the customer's page.
    let (status, location, _) = get("/customers?q=customer%2007".into()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/revenue/customers/cus_0007"));
    let (status, location, _) = get("/customers?q=C12%40EXAMPLE.com".into()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "email, any case");
    assert_eq!(location.as_deref(), Some("/revenue/customers/cus_0012"));
    let (status, _, html) = get("/customers?q=example.com".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("href=\"/revenue/customers/").count(), 30);
    let (_, _, html) = get("/customers?q=cus_plan_000".into()).await;
    assert_eq!(
        html.matches("href=\"/revenue/customers/").count(),
        10,
        "usage-only ids"
    );
    let (_, _, html) = get("/customers?q=nobody%25".into()).await;
    assert!(html.contains("No customer"), "{html}");
    let (_, _, html) = get("/revenue/customers/cus_0007".into()).await;
    assert!(html.contains("Customer 07"), "the customer page names them");

    app.finish().await;
}

#[tokio::test]
async fn exports_pagers_and_search_sqlite() {
    exports_pagers_and_search(Backend::Sqlite).await;
}

#[tokio::test]
async fn exports_pagers_and_search_postgres() {
    exports_pagers_and_search(Backend::Postgres).await;
}

/// The payments list pages at 100 rows and the costliest customers at 50; both exports hold
/// every row under a header and defuse a formula-looking customer id.
async fn payments_and_costliest_page_and_export(app: &TestApp) {
    let store = &app.state.store;
    let now = now_ms();
    // 130 charges a minute apart, the newest (ch_0000) from a customer id a spreadsheet would run.
    for n in 0..130i64 {
        let customer = if n == 0 {
            "=2+5".to_string()
        } else {
            format!("cus_pay_{n:04}")
        };
        store
            .execute(
                "INSERT INTO revenue_payments (kind, id, customer_id, created, status, amount, \
                 currency, failed, recurring) VALUES ('charge', $1, $2, $3, 'succeeded', 1500, \
                 'usd', 0, 0)",
                opsdeck::args![format!("ch_{n:04}"), customer, now - 3_600_000 - n * 60_000],
            )
            .await
            .unwrap();
    }
    // 60 customers with provider cost this month, the cheapest one formula-looking.
    let month = opsdeck::usage::quota::month_of(now).0;
    for n in 0..60i64 {
        let subject = if n == 0 {
            "=SUM(A1)".to_string()
        } else {
            format!("cus_cost_{n:04}")
        };
        store
            .execute(
                "INSERT INTO usage_months (month, subject, calls, events, credits, cost_nano) \
                 VALUES ($1, $2, 1, 1, 0.0, $3)",
                opsdeck::args![month, subject, (n + 1) * 1_000_000_000],
            )
            .await
            .unwrap();
    }
    // Written by hand, so also the count the ingest writer keeps beside them (migration 0039).
    store
        .execute(
            "INSERT INTO usage_month_counts (month, kind, n) VALUES ($1, 'costed', 60)",
            opsdeck::args![month],
        )
        .await
        .unwrap();
    let web = browser();
    sign_in_admin(app, &web).await;

    let html = page_text(app, &web, "/revenue/payments?kind=charge&period=30d").await;
    assert!(html.contains("showing 1–100 of 130"), "{html}");
    assert!(html.contains("ch_0000") && html.contains("ch_0099"));
    assert!(!html.contains("ch_0100"), "the second page's rows");
    assert!(
        html.contains(
            "href=\"/revenue/payments?kind=charge&#38;period=30d&#38;offset=100\" rel=\"next\""
        ),
        "{html}"
    );
    let html = page_text(
        app,
        &web,
        "/revenue/payments?kind=charge&period=30d&offset=100",
    )
    .await;
    assert!(html.contains("showing 101–130 of 130"), "{html}");
    assert!(html.contains("ch_0100") && html.contains("ch_0129"));
    assert!(!html.contains("ch_0099"), "the first page's rows");
    assert!(html.contains("rel=\"prev\"") && !html.contains("rel=\"next\""));

    let csv = page_text(app, &web, "/revenue/payments.csv?kind=charge&period=30d").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "created,kind,id,customer,name,status,failed,amount,currency"
    );
    assert_eq!(lines.len(), 1 + 130, "every payment: {csv}");
    assert!(csv.contains(",charge,ch_0000,'=2+5,,succeeded,"), "{csv}");
    assert!(!csv.contains(",=2+5"), "{csv}");

    let html = page_text(app, &web, "/costs").await;
    assert!(html.contains("showing 1–50 of 60"), "{html}");
    assert!(html.contains("customers_from=50"), "next page link");
    let html = page_text(app, &web, "/costs?customers_from=50").await;
    assert!(html.contains("showing 51–60 of 60"), "{html}");
    assert!(html.contains(">=SUM(A1)</a>"), "the cheapest last");

    let csv = page_text(app, &web, "/costs/customers.csv").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "customer,name,cost_usd");
    assert_eq!(lines.len(), 1 + 60, "every customer: {csv}");
    assert!(lines[60].starts_with("'=SUM(A1),"), "{csv}");
    assert!(!csv.contains("\n=SUM"), "{csv}");
}

dual_test!(payments_and_costliest_page_and_export);
