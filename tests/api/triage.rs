//! Problems first, over HTTP against the real server and store: monitors checked against local
//! peers (one up, one degraded, one down) come down-first in the JSON grid and on the
//! Integrations page, the error log lists degraded checks beside down ones, the Overview's
//! status line names the broken ones, and a monitor's page shows its incidents and MTTR once it
//! recovers. Also the Overview's period (`from`/`to` with clear 400s), its open alerts and
//! customers at risk, and the Revenue page's movements narrowed to a day.

use std::sync::atomic::Ordering;
use std::time::Duration;

use opsdeck::health::monitor::MonitorSpec;
use opsdeck::store::now_ms;
use reqwest::StatusCode;

use crate::dual_test;
use crate::helpers::*;

fn http(name: &str, target: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        kind: "http".into(),
        target: target.into(),
        interval: Some("1s".into()),
        ..Default::default()
    }
}

/// Waits until every named monitor shows the state asked for.
async fn wait_for(app: &TestApp, want: &[(&str, &str)]) {
    for _ in 0..200 {
        let rows = app.state.health.rows(&app.state.store, None).await.unwrap();
        if want
            .iter()
            .all(|(n, s)| rows.iter().any(|r| r.name == *n && r.state == *s))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("monitors never reached {want:?}");
}

async fn id_of(app: &TestApp, name: &str) -> i64 {
    app.state
        .health
        .rows(&app.state.store, None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no monitor {name}"))
        .id
}

/// Where each name first appears in `html`, in order of appearance.
fn order_in(html: &str, names: &[&str]) -> Vec<String> {
    let mut found: Vec<(usize, String)> = names
        .iter()
        .map(|n| {
            let at = html
                .find(&format!("data-name=\"{n}\""))
                .unwrap_or_else(|| panic!("{n} not on the page"));
            (at, n.to_string())
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

/// Peers for "alpha" and "delta" (up), "bravo" (degraded: a condition on the status it
/// answers) and "charlie" (down until the test lets it recover).
async fn problem_monitors() -> (
    Vec<MonitorSpec>,
    std::sync::Arc<std::sync::atomic::AtomicU16>,
) {
    let (up, _) = switchable_peer().await;
    let (broken, answer) = switchable_peer().await;
    answer.store(503, Ordering::Relaxed);
    let mut bravo = http("bravo", &up);
    bravo.degraded_when = vec!["[STATUS] == 200".into()];
    (
        vec![
            http("alpha", &up),
            bravo,
            http("charlie", &broken),
            http("delta", &up),
        ],
        answer,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_come_first_and_incidents_are_timed() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (monitors, answer) = problem_monitors().await;
        let Some(app) = spawn_app_with(backend, move |c| c.monitors = monitors).await else {
            continue;
        };
        problems_first(&app, &answer).await;
        app.finish().await;
    }
}

async fn problems_first(app: &TestApp, answer: &std::sync::atomic::AtomicU16) {
    wait_for(
        app,
        &[
            ("alpha", "up"),
            ("bravo", "degraded"),
            ("charlie", "down"),
            ("delta", "up"),
        ],
    )
    .await;
    let names = ["alpha", "bravo", "charlie", "delta"];
    let problems_first = ["charlie", "bravo", "alpha", "delta"];

    // The JSON grid: down, degraded, then the rest by name.
    let key = app.key("reader", &["read"]).await;
    let res = app
        .call(reqwest::Method::GET, "/api/v1/integrations", &key, None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    let listed: Vec<&str> = body["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, problems_first);

    // The Integrations page in the same order, its state counts problems first.
    let client = browser();
    sign_in_admin(app, &client).await;
    let grid = page_text(app, &client, "/integrations").await;
    assert_eq!(order_in(&grid, &names), problems_first);
    let counts = &grid[grid.find("id=\"state-counts\"").unwrap()..];
    assert!(
        counts.find("data-state=\"down\"").unwrap() < counts.find("data-state=\"up\"").unwrap()
    );

    // The error log holds degraded checks beside down ones.
    let log = page_text(app, &client, "/integrations/errors").await;
    let log = &log[log.find("id=\"error-log\"").unwrap()..];
    assert!(log.contains("state-degraded\">degraded") && log.contains(">bravo</a>"));
    assert!(log.contains("state-down\">down") && log.contains(">charlie</a>"));
    assert!(!log.contains(">alpha</a>"), "passing checks stay out");
    let bravo = id_of(app, "bravo").await;
    let one = page_text(
        app,
        &client,
        &format!("/integrations/errors?monitor={bravo}"),
    )
    .await;
    assert!(one.contains("state-degraded\">degraded"));

    // The Overview's status line names the broken monitors, down first, with links.
    let charlie = id_of(app, "charlie").await;
    let overview = page_text(app, &client, "/").await;
    let status = &overview[overview.find("id=\"status-line\"").unwrap()..];
    let status = &status[..status.find("</p>").unwrap()];
    assert!(
        status.contains("1 down") && status.contains("1 degraded"),
        "{status}"
    );
    assert!(status.contains("href=\"/integrations?state=down\""));
    let (c, b) = (
        status
            .find(&format!("href=\"/integrations/{charlie}\""))
            .expect("charlie linked"),
        status
            .find(&format!("href=\"/integrations/{bravo}\""))
            .expect("bravo linked"),
    );
    assert!(c < b, "down before degraded");
    assert!(overview.contains("class=\"status-line status-down\""));

    // Charlie's page: one incident, still going.
    let path = format!("/integrations/{charlie}");
    let detail = page_text(app, &client, &path).await;
    let incidents = &detail[detail.find("id=\"incident-list\"").unwrap()..];
    let incidents = &incidents[..incidents.find("</table>").unwrap()];
    assert_eq!(
        incidents.matches("class=\"incident ").count(),
        1,
        "{incidents}"
    );
    assert!(incidents.contains("incident-ongoing") && incidents.contains("ongoing"));

    // It recovers: the incident ends, with a duration, and MTTR is that duration.
    answer.store(200, Ordering::Relaxed);
    wait_for(app, &[("charlie", "up")]).await;
    let detail = page_text(app, &client, &path).await;
    let incidents = &detail[detail.find("id=\"incident-list\"").unwrap()..];
    let incidents = &incidents[..incidents.find("</table>").unwrap()];
    assert!(incidents.contains("incident-ended") && !incidents.contains("incident-ongoing"));
    let mttr = &detail[detail.find("<dt>MTTR, 30 d</dt>").expect("MTTR shown")..];
    let mttr = &mttr[..mttr.find("</dd>").unwrap()];
    assert!(
        mttr.ends_with(" s") || mttr.contains(" min"),
        "a duration: {mttr}"
    );
    // Everything passing again but bravo: the status line says degraded only.
    let overview = page_text(app, &client, "/").await;
    assert!(overview.contains("class=\"status-line status-degraded\""));
}

async fn all_up_and_nothing_at_risk(app: &TestApp) {
    let client = browser();
    sign_in_admin(app, &client).await;
    let overview = page_text(app, &client, "/").await;
    assert!(
        overview.contains("No monitors yet."),
        "an empty install says so"
    );
    assert!(overview.contains("No open alerts."));
    assert!(overview.contains("No customer is at 80 % of quota or more."));
    assert!(overview.contains("No failed payments."));
    assert!(
        !overview.contains("Not available yet"),
        "no stale placeholder"
    );
    assert!(overview.contains("Not measured: product analytics is not built yet."));
    // Every headline figure still has its card, grouped.
    assert_eq!(overview.matches("class=\"card\" data-figure=").count(), 16);
    for group in ["group-revenue", "group-cost", "group-margin", "group-usage"] {
        assert!(overview.contains(group), "{group}");
    }
}
dual_test!(all_up_and_nothing_at_risk);

async fn alerts_and_customers_at_risk(app: &TestApp) {
    let store = &app.state.store;
    let now = now_ms();
    // Open alerts of each severity and a resolved one, as the engine writes them.
    for (i, (state, severity, summary)) in [
        ("firing", "critical", "Payments API is down"),
        ("firing", "warning", "quota 90%: customer=cus_b"),
        ("pending", "critical", "Latency is climbing"),
        ("firing", "info", "token expires in 6 days"),
        ("resolved", "critical", "Old outage"),
    ]
    .into_iter()
    .enumerate()
    {
        let i = i as i64;
        store
            .execute(
                "INSERT INTO alerts (rule_id, rule, fingerprint, labels, state, severity, \
                 group_key, summary, value, threshold, pending_since, started_at, resolved_at, \
                 updated_at) VALUES ($1, $2, $3, '{}', $4, $5, $6, $7, 1.0, 1.0, $8, $9, $10, $8)",
                opsdeck::args![
                    i + 1,
                    format!("rule {i}"),
                    format!("fp{i}"),
                    state,
                    severity,
                    format!("g{i}"),
                    summary,
                    now - 60_000,
                    (state != "pending").then_some(now - 30_000),
                    (state == "resolved").then_some(now)
                ],
            )
            .await
            .unwrap();
    }
    // Two customers past 80 % of quota this month, one fine.
    let month = opsdeck::usage::quota::month_of(now).0;
    for (customer, state, percent) in [
        ("cus_over", "over", 104.0),
        ("cus_warn", "warning", 85.0),
        ("cus_fine", "ok", 10.0),
    ] {
        store
            .execute(
                "INSERT INTO quota_states (customer_id, plan_id, period_start, state, percent, \
                 changed_at) VALUES ($1, 'starter', $2, $3, $4, $5)",
                opsdeck::args![customer, month, state, percent, now],
            )
            .await
            .unwrap();
    }
    // A failed invoice this week, a paid one, and a failure long before the period.
    for (id, customer, created, failed) in [
        ("in_failed", "cus_pay", now - 86_400_000, 1i64),
        ("in_paid", "cus_ok", now - 86_400_000, 0),
        ("in_old", "cus_old", now - 200 * 86_400_000, 1),
    ] {
        store
            .execute(
                "INSERT INTO revenue_payments (kind, id, customer_id, created, status, amount, \
                 currency, failed, recurring) VALUES ('invoice', $1, $2, $3, 'open', 2000, 'usd', $4, 1)",
                opsdeck::args![id, customer, created, failed],
            )
            .await
            .unwrap();
    }
    let client = browser();
    sign_in_admin(app, &client).await;
    let page = page_text(app, &client, "/").await;
    let alerts = &page[page.find("id=\"open-alerts\"").unwrap()..];
    let alerts = &alerts[..alerts.find("</section>").unwrap()];
    assert!(
        alerts.contains("<span class=\"count\">4</span>"),
        "{alerts}"
    );
    for (severity, n) in [("critical", 2), ("warning", 1), ("info", 1)] {
        assert!(
            alerts.contains(&format!(
                "href=\"/alerts?state=open&amp;severity={severity}\">{n} {severity}</a>"
            )),
            "{severity} in {alerts}"
        );
    }
    // Firing critical first, the pending one after the firing ones, the resolved one absent.
    let at = |s: &str| alerts.find(s).unwrap_or_else(|| panic!("{s} in {alerts}"));
    assert!(at("Payments API is down") < at("quota 90%"));
    assert!(at("token expires") < at("Latency is climbing"));
    assert!(!alerts.contains("Old outage"));

    let risk = &page[page.find("id=\"at-risk\"").unwrap()..];
    let risk = &risk[..risk.find("</section>").unwrap()];
    assert!(risk.contains("href=\"/usage?customer=cus_over\""));
    assert!(risk.contains("href=\"/usage?customer=cus_warn\""));
    assert!(risk.find("cus_over").unwrap() < risk.find("cus_warn").unwrap());
    assert!(!risk.contains("cus_fine"));
    assert!(risk.contains("href=\"/revenue/customers/cus_pay\""));
    assert!(!risk.contains("cus_ok") && !risk.contains("cus_old"));
    // A period reaching back far enough finds the old failure too.
    let year = page_text(app, &client, "/?period=365d").await;
    assert!(year.contains("href=\"/revenue/customers/cus_old\""));
}
// The alert evaluator stays off: it would raise its own quota alerts from the rows above.
dual_test!(alerts_and_customers_at_risk, |c| {
    c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(std::time::Duration::ZERO)
});

async fn overview_periods_and_ranges(app: &TestApp) {
    let key = app.key("reader", &["read"]).await;
    let get = |q: String| {
        let key = key.clone();
        async move {
            app.call(
                reqwest::Method::GET,
                &format!("/api/v1/metrics/overview{q}"),
                &key,
                None,
            )
            .await
        }
    };
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| opsdeck::overview::triage::show_date(&d);
    let from = day(today - time::Duration::days(9));
    let to = day(today - time::Duration::days(3));
    let res = get(format!("?from={from}&to={to}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["period"]["from"], format!("{from}T00:00:00Z"));
    let end = day(today - time::Duration::days(2));
    assert_eq!(body["period"]["to"], format!("{end}T00:00:00Z"));
    assert!(body["figures"]["api_calls"].is_object());
    // "custom" beside the days is fine; a length beside them is not.
    assert_eq!(
        get(format!("?period=custom&from={from}&to={to}"))
            .await
            .status(),
        StatusCode::OK
    );
    let future = day(today + time::Duration::days(1));
    for (q, says) in [
        (format!("?from={from}"), "go together"),
        (format!("?to={to}"), "go together"),
        (format!("?from=2026-02-30&to={to}"), "from:"),
        (format!("?from={to}&to={from}"), "before from"),
        (format!("?from={from}&to={future}"), "future"),
        ("?from=2020-01-01&to=2024-01-01".into(), "longer than"),
        (format!("?period=7d&from={from}&to={to}"), "not both"),
        ("?period=custom".into(), "custom period"),
    ] {
        let body = error_body(get(q.clone()).await, StatusCode::BAD_REQUEST, "bad_request").await;
        assert!(
            body["detail"].as_str().unwrap().contains(says),
            "{q}: {body}"
        );
    }
    // A bad length is refused as before.
    error_body(
        get("?period=7w".into()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;

    // The page: the range as a GET form, no script needed; a bad one says why and shows 30 days.
    let client = browser();
    sign_in_admin(app, &client).await;
    let page = page_text(app, &client, &format!("/?period=30d&from={from}&to={to}")).await;
    assert!(page.contains("<option value=\"custom\" selected>"));
    assert!(page.contains(&format!("name=\"from\" value=\"{from}\"")));
    assert!(page.contains(&format!("data-query=\"from={from}&#38;to={to}\"")));
    for p in ["24h", "7d", "30d", "90d", "365d"] {
        assert!(page.contains(&format!("<option value=\"{p}\"")), "{p}");
    }
    let week = page_text(app, &client, "/?period=7d").await;
    assert!(week.contains("<option value=\"7d\" selected>") && week.contains("Last 7 days"));
    let bad = page_text(app, &client, &format!("/?from={to}&to={from}")).await;
    assert!(bad.contains("role=\"alert\"") && bad.contains("Showing the last 30 days."));
}
dual_test!(overview_periods_and_ranges);

async fn movements_narrowed_to_a_day(app: &TestApp) {
    let store = &app.state.store;
    const DAY: i64 = 86_400_000;
    let today = now_ms().div_euclid(DAY) * DAY;
    // The history recomputed at start (from no subscriptions) must not replace the rows
    // below: this waits for it, or runs it.
    app.state
        .revenue
        .recompute_if_dirty(store)
        .await
        .expect("recompute");
    // A small stored history (amounts in millionths): cus_a new two days ago at $10, cus_b
    // new yesterday at $20.
    for (n, (day, mrr, new)) in [
        (today - 2 * DAY, 10_000_000i64, 10_000_000i64),
        (today - DAY, 30_000_000, 20_000_000),
        (today, 30_000_000, 0),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .execute(
                "INSERT INTO revenue_days (day, mrr, customers, subscriptions, new, expansion, \
                 contraction, churn, reactivation, new_customers, churned_customers, \
                 reactivated_customers) VALUES ($1, $2, $3, $3, $4, 0, 0, 0, 0, 0, 0, 0)",
                opsdeck::args![day, mrr, n.min(2) as i64, new],
            )
            .await
            .unwrap();
    }
    for (customer, day, amount) in [
        ("cus_a", today - 2 * DAY, 10_000_000i64),
        ("cus_b", today - DAY, 20_000_000),
    ] {
        store
            .execute(
                "INSERT INTO revenue_movements (customer_id, day, kind, amount, since) \
                 VALUES ($1, $2, 'new', $3, $2)",
                opsdeck::args![customer, day, amount],
            )
            .await
            .unwrap();
    }
    let client = browser();
    sign_in_admin(app, &client).await;
    let show = |ms: i64| {
        opsdeck::overview::triage::show_date(
            &time::OffsetDateTime::from_unix_timestamp(ms / 1000)
                .unwrap()
                .date(),
        )
    };
    let yesterday = show(today - DAY);
    // The Overview's MRR charts link each day to its movements and mark today as running.
    let overview = page_text(app, &client, "/").await;
    assert!(
        overview.contains(&format!("<a href=\"/revenue?day={yesterday}#movements\">")),
        "MRR days link to their movements"
    );
    assert!(overview.contains("class=\"chart-partial\""));
    assert!(overview.contains("(so far)"));
    assert!(overview.contains("chart chart-wide") && overview.contains("chart chart-narrow"));
    // The link's page: that day's movements only.
    let res = client
        .get(app.url(&format!("/revenue?day={yesterday}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    let moves = &page[page.find("id=\"movements\"").expect("movements heading")..];
    assert!(
        moves.starts_with("id=\"movements\">Movements on "),
        "{}",
        &moves[..80]
    );
    assert!(moves.contains("Show the whole period"));
    assert!(moves.contains(">cus_b</a>") && !moves.contains(">cus_a</a>"));
    let whole = page_text(app, &client, "/revenue").await;
    let moves = &whole[whole.find("id=\"movements\"").unwrap()..];
    assert!(moves.contains(">cus_b</a>") && moves.contains(">cus_a</a>"));
    let res = client
        .get(app.url("/revenue?day=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
dual_test!(movements_narrowed_to_a_day);
