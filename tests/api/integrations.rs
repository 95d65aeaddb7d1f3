//! The Integrations pages against the real server and store: the status grid after real checks
//! against a local HTTP server, the admin's monitor forms (add, edit, check now, pause, resume,
//! delete) with config monitors read-only, viewers and forged forms refused, the error log,
//! and the Webhooks tab's Stripe receipts.

use std::sync::atomic::{AtomicU16, Ordering};

use opsdeck::access::Role;
use opsdeck::health::monitor::MonitorSpec;
use opsdeck::revenue::stripe::signature;
use opsdeck::store::now_ms;
use reqwest::StatusCode;

use crate::dual_test;
use crate::helpers::*;

/// A local port nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// A config monitor "cfg" (tcp, to a closed port). Day-long intervals keep the scheduler's
/// first checks (spread over the interval) out of what the tests check by hand.
fn with_config_monitor(c: &mut opsdeck::config::Config, target: String) {
    c.monitors = vec![MonitorSpec {
        name: "cfg".into(),
        kind: "tcp".into(),
        target,
        interval: Some("24h".into()),
        ..Default::default()
    }];
}

/// Waits until the server's scheduler runs the config monitor (the grid knows its interval).
/// Until then a created monitor or a manual check can miss the in-memory grid: the scheduler
/// loads the grid before it takes reloads and manual checks.
async fn scheduler_ready(app: &TestApp) {
    for _ in 0..100 {
        let rows = app.state.health.rows(&app.state.store, None).await.unwrap();
        if rows.iter().any(|r| r.interval_secs > 0.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the scheduler did not start");
}

async fn monitors(app: &TestApp) -> i64 {
    let (n,): (i64,) = app
        .state
        .store
        .fetch_one("SELECT COUNT(*) FROM monitors", opsdeck::args![])
        .await
        .unwrap();
    n
}

async fn id_of(app: &TestApp, name: &str) -> i64 {
    opsdeck::health::store::list(&app.state.store, &app.state.master_key)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.monitor.name == name)
        .unwrap_or_else(|| panic!("no monitor {name}"))
        .id
}

async fn page(app: &TestApp, client: &reqwest::Client, path: &str) -> String {
    let res = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.text().await.unwrap()
}

/// The grid row of monitor `name`.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-name=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The add form's fields, filled in as a person would.
fn add_form<'a>(csrf: &'a str, name: &'a str, target: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf_token", csrf),
        ("name", name),
        ("kind", "http"),
        ("target", target),
        ("interval", "24h"),
        ("timeout", "5s"),
        ("method", ""),
        (
            "headers",
            "Authorization: Bearer sekrit-42\r\nAccept: application/json\r\n",
        ),
        ("body", ""),
        ("conditions", "[STATUS] == 200"),
        ("degraded_when", "[RESPONSE_TIME] > 5000"),
        ("failure_threshold", "1"),
        ("success_threshold", ""),
    ]
}

async fn grid_and_forms(app: &TestApp) {
    scheduler_ready(app).await;
    let (url, answer) = switchable_peer().await;
    let admin = browser();
    let csrf = sign_in_admin(app, &admin).await;

    // The config monitor is listed, marked read-only, not yet checked.
    let html = page(app, &admin, "/integrations").await;
    let cfg = row(&html, "cfg");
    assert!(cfg.contains("source-config"), "{cfg}");
    assert!(
        cfg.contains("state-unknown") && cfg.contains("never"),
        "{cfg}"
    );
    assert!(
        cfg.contains("/check") && cfg.contains("/pause"),
        "admins may check and pause it"
    );
    assert!(
        !cfg.contains("/delete") && !cfg.contains("#edit"),
        "but not edit or delete it"
    );
    assert!(html.contains("aria-label=\"Integrations sections\""));
    assert!(html.contains("id=\"add-monitor\""));

    // Refused definitions name the field, keep what was typed, and create nothing.
    for (field, value, problem) in [
        ("interval", "500ms", "interval: must be at least 1s"),
        ("headers", "no colon here", "headers: line 1"),
        ("conditions", "[STATUS] ==", "conditions[0]:"),
        ("failure_threshold", "lots", "failure_threshold:"),
        ("target", "not a url", "target:"),
    ] {
        let mut form = add_form(&csrf, "web", &url);
        for f in form.iter_mut() {
            if f.0 == field {
                f.1 = value;
            }
        }
        let res = app.post_form(&admin, "/integrations", &form).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let html = res.text().await.unwrap();
        assert!(html.contains(problem), "{field}: {problem}");
        assert!(html.contains("role=\"alert\""));
        assert!(
            html.contains(&format!("name=\"{field}\""))
                && html
                    .split(&format!("name=\"{field}\""))
                    .nth(1)
                    .is_some_and(
                        |rest| rest[..rest.find('>').unwrap()].contains("aria-invalid=\"true\"")
                    ),
            "{field} is marked invalid"
        );
        assert!(html.contains("value=\"web\""), "the name typed is kept");
        let typed = if field == "headers" {
            value
        } else {
            "sekrit-42"
        };
        assert!(html.contains(typed), "{field}: the headers typed are kept");
    }
    assert_eq!(monitors(app).await, 1, "nothing created by refused forms");
    // A name already taken is a conflict, named too.
    let res = app
        .post_form(&admin, "/integrations", &add_form(&csrf, "cfg", &url))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("already exists"));

    // Created.
    let res = app
        .post_form(&admin, "/integrations", &add_form(&csrf, "web", &url))
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/integrations?done=created");
    assert_eq!(monitors(app).await, 2);
    let web = id_of(app, "web").await;
    let cfg_id = id_of(app, "cfg").await;
    let html = page(app, &admin, "/integrations?done=created").await;
    assert!(html.contains("Monitor created"));
    let row_web = row(&html, "web");
    assert!(!row_web.contains("source-config"));
    assert!(row_web.contains(&format!("/integrations/{web}/delete")));

    // Check now: up against the healthy peer, then down once it answers 503.
    let back = "/integrations?state=&kind=http";
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{web}/check"),
            &[("csrf_token", &csrf), ("back", back)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), format!("{back}&done=checked&verdict=up"));
    let html = page(app, &admin, "/integrations").await;
    let r = row(&html, "web");
    assert!(r.contains("state-up") && r.contains("100.00 %"), "{r}");
    assert!(
        r.contains("<polyline") || r.contains("<circle"),
        "a sparkline point"
    );
    assert!(r.contains(" s ago"), "{r}");
    answer.store(503, Ordering::Relaxed);
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{web}/check"),
            &[("csrf_token", &csrf), ("back", "/integrations")],
        )
        .await;
    assert_eq!(location(&res), "/integrations?done=checked&verdict=down");
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{cfg_id}/check"),
            &[("csrf_token", &csrf), ("back", "https://evil.example/")],
        )
        .await;
    assert_eq!(
        location(&res),
        "/?done=checked&verdict=down",
        "back only ever leads to a same-site path"
    );
    let html = page(app, &admin, "/integrations").await;
    let r = row(&html, "web");
    assert!(r.contains("state-down") && r.contains("50.00 %"), "{r}");
    assert!(r.contains("[STATUS] == 200: was 503"), "{r}");
    assert!(row(&html, "cfg").contains("state-down"));
    assert!(html.contains("data-state=\"down\""));
    // Filters: by state and by kind.
    let down = page(app, &admin, "/integrations?state=down&kind=tcp").await;
    assert!(down.contains("data-name=\"cfg\"") && !down.contains("data-name=\"web\""));
    let up = page(app, &admin, "/integrations?state=up").await;
    assert!(!up.contains("data-name=") && up.contains("No monitor matches"));

    // The error log: newest first, filterable by monitor.
    let errors = page(app, &admin, "/integrations/errors").await;
    assert!(errors.contains("was 503") && errors.contains(">web</a>"));
    assert!(errors.contains(">cfg</a>"));
    assert!(
        errors.find(">cfg</a>").unwrap() < errors.find(">web</a>").unwrap(),
        "newest first"
    );
    let only = page(app, &admin, &format!("/integrations/errors?monitor={web}")).await;
    assert!(only.contains(">web</a>") && !only.contains(">cfg</a>"));
    let res = admin
        .get(app.url("/integrations/errors?before=junk"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Pause and resume, the config monitor too.
    for (action, state) in [("pause", "state-paused"), ("resume", "state-down")] {
        let res = app
            .post_form(
                &admin,
                &format!("/integrations/{cfg_id}/{action}"),
                &[("csrf_token", &csrf), ("back", "/integrations")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{action}");
        let html = page(app, &admin, "/integrations").await;
        assert!(row(&html, "cfg").contains(state), "{action}");
    }

    // The monitor's page: history, masked definition, an edit form for API monitors only.
    let detail = page(app, &admin, &format!("/integrations/{web}")).await;
    assert!(detail.contains("Verdict history") && detail.contains("was 503"));
    assert!(detail.contains("Checks per hour"), "hourly chart");
    assert!(detail.contains("<svg"), "charts are SVG");
    assert!(detail.contains("********"), "the token is masked");
    assert!(!detail.contains("sekrit-42"), "and never shown");
    assert!(detail.contains("id=\"edit-monitor\""));
    let cfg_page = page(app, &admin, &format!("/integrations/{cfg_id}")).await;
    assert!(cfg_page.contains("config file (read-only here)"));
    assert!(!cfg_page.contains("id=\"edit-monitor\""));
    let res = admin
        .get(app.url("/integrations/999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Edited with the masked header sent back: the stored secret stays.
    let mut form = add_form(&csrf, "web-2", &url);
    let masked_headers = "Authorization: ********\nAccept: application/json\n";
    for f in form.iter_mut() {
        if f.0 == "headers" {
            f.1 = masked_headers;
        }
    }
    let bad: Vec<(&str, &str)> = form
        .iter()
        .map(|&(k, v)| if k == "timeout" { (k, "0s") } else { (k, v) })
        .collect();
    let res = app
        .post_form(&admin, &format!("/integrations/{web}"), &bad)
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("timeout:") && html.contains("value=\"web-2\""));
    let res = app
        .post_form(&admin, &format!("/integrations/{web}"), &form)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), format!("/integrations/{web}?done=saved"));
    let stored = opsdeck::health::store::get(&app.state.store, &app.state.master_key, web)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.spec.name, "web-2");
    assert_eq!(
        stored.spec.headers.get("Authorization").map(String::as_str),
        Some("Bearer sekrit-42")
    );
    // The config monitor cannot be edited or deleted, even by a crafted form.
    let cfg_spec = opsdeck::health::store::get(&app.state.store, &app.state.master_key, cfg_id)
        .await
        .unwrap()
        .unwrap()
        .spec;
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{cfg_id}"),
            &[
                ("csrf_token", &csrf),
                ("name", "cfg"),
                ("kind", "tcp"),
                ("target", &cfg_spec.target),
                ("interval", "1h"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let text = res.text().await.unwrap();
    assert!(text.contains("declared in the config file"), "{text}");
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{cfg_id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    // Deleted from its own page: back to the grid.
    let res = app
        .post_form(
            &admin,
            &format!("/integrations/{web}/delete"),
            &[
                ("csrf_token", &csrf),
                ("back", &format!("/integrations/{web}")),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/integrations?done=deleted");
    assert_eq!(monitors(app).await, 1);
    let actions = app.audit_actions().await;
    for a in [
        "monitor.create",
        "monitor.update",
        "monitor.pause",
        "monitor.resume",
        "monitor.delete",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}

mod grid_and_forms_case {
    use super::*;

    async fn run(backend: Backend) {
        let target = closed_port().await;
        let Some(app) = spawn_app_with(backend, move |c| with_config_monitor(c, target)).await
        else {
            return;
        };
        grid_and_forms(&app).await;
        app.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

/// Viewers see the grid without controls and their forms are refused; a form with a forged
/// CSRF token is refused for admins too; the session cookie reads the JSON grid the live
/// script polls.
async fn viewers_and_forged_forms(app: &TestApp) {
    scheduler_ready(app).await;
    let (url, _answer) = switchable_peer().await;
    let key = app.key("ops", &["admin"]).await;
    let res = app
        .call(
            reqwest::Method::POST,
            "/api/v1/integrations",
            &key,
            Some(&serde_json::json!({"name": "web", "kind": "http", "target": url, "interval": "24h"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let web = id_of(app, "web").await;

    app.add_user("viewer@example.com", "viewer password 123", Role::Viewer)
        .await;
    let viewer = browser();
    let res = sign_in(app, &viewer, "viewer@example.com", "viewer password 123").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let html = page(app, &viewer, "/integrations").await;
    assert!(html.contains("data-name=\"web\""));
    for control in [
        "Check now",
        "Add monitor",
        "/pause",
        "/delete",
        "#edit",
        "Actions",
    ] {
        assert!(!html.contains(control), "viewers see no {control:?}");
    }
    let detail = page(app, &viewer, &format!("/integrations/{web}")).await;
    assert!(!detail.contains("edit-monitor") && !detail.contains("Definition"));
    for tab in [
        "/integrations/errors",
        "/integrations/tokens",
        "/integrations/webhooks",
    ] {
        page(app, &viewer, tab).await;
    }
    let viewer_csrf = csrf_from(&html);
    for path in [
        format!("/integrations/{web}/check"),
        format!("/integrations/{web}/pause"),
        format!("/integrations/{web}/delete"),
    ] {
        let res = app
            .post_form(&viewer, &path, &[("csrf_token", &viewer_csrf)])
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let res = app
        .post_form(&viewer, "/integrations", &add_form(&viewer_csrf, "v", &url))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The live script's read: the session cookie authenticates a JSON GET.
    let res = viewer
        .get(app.url("/api/v1/integrations"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    let names: Vec<&str> = body["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["cfg", "web"]);

    // Admins with a forged token are refused before anything runs.
    let admin = browser();
    sign_in_admin(app, &admin).await;
    for path in [
        format!("/integrations/{web}/pause"),
        format!("/integrations/{web}/delete"),
        "/integrations".to_string(),
    ] {
        let res = app
            .post_form(&admin, &path, &add_form("forged", "x", &url))
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(monitors(app).await, 2);
    let html = page(app, &admin, "/integrations").await;
    assert!(!row(&html, "web").contains("state-paused"));
    assert!(
        !app.audit_actions()
            .await
            .iter()
            .any(|a| a == "monitor.pause")
    );
}

dual_test!(viewers_and_forged_forms, |c| super::with_config_monitor(
    c,
    "127.0.0.1:9".into()
));

const SECRET: &str = "whsec_opsdeck_integrations_test";

/// Signed Stripe deliveries appear in the Webhooks tab with their outcome; refused ones do
/// not, and the tab says so.
async fn webhook_receipts(app: &TestApp) {
    let now = now_ms() / 1000;
    let post = |body: String, header: String| async move {
        api()
            .post(app.url("/webhooks/stripe"))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    };
    let event = |id: &str, kind: &str, object: serde_json::Value| {
        serde_json::json!({"id": id, "object": "event", "type": kind, "created": now,
            "livemode": false, "data": {"object": object}})
        .to_string()
    };
    let ignored = event("evt_ignored_1", "balance.available", serde_json::json!({}));
    let sig = signature::header(ignored.as_bytes(), now, &[SECRET]);
    assert_eq!(post(ignored, sig).await, StatusCode::OK);
    let broken = event(
        "evt_broken_2",
        "customer.subscription.created",
        serde_json::json!({"id": "sub_x", "object": "subscription"}),
    );
    let sig = signature::header(broken.as_bytes(), now, &[SECRET]);
    assert_eq!(post(broken, sig).await, StatusCode::OK);
    let forged = event("evt_forged_3", "balance.available", serde_json::json!({}));
    let sig = signature::header(forged.as_bytes(), now, &["whsec_someone_else"]);
    assert_eq!(post(forged, sig).await, StatusCode::BAD_REQUEST);

    let admin = browser();
    sign_in_admin(app, &admin).await;
    let html = page(app, &admin, "/integrations/webhooks").await;
    assert!(html.contains("evt_ignored_1") && html.contains("balance.available"));
    assert!(html.contains("evt_broken_2") && html.contains("outcome-failed"));
    assert!(
        !html.contains("evt_forged_3"),
        "a refused delivery's claimed event id is not trusted"
    );
    assert!(
        html.contains("outcome-rejected") && html.contains("no v1 signature matches the payload"),
        "the refusal is logged with its reason"
    );
    // Counted by outcome: one ignored, one failed and one rejected in both windows.
    let tally = html.split("Receipts by outcome").nth(1).unwrap();
    let tally = &tally[..tally.find("</table>").unwrap()];
    assert!(tally.contains("outcome-ignored") && tally.contains("outcome-failed"));
    assert!(tally.contains("outcome-rejected"));
    assert_eq!(tally.matches("<td>1</td><td>1</td>").count(), 3, "{tally}");
    assert!(!html.contains("not configured"));
    let res = admin
        .get(app.url("/integrations/webhooks?before=nonsense"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let tokens = page(app, &admin, "/integrations/tokens").await;
    assert!(
        tokens.contains("No OAuth credentials yet"),
        "the empty Token Status tab says so"
    );
}

dual_test!(webhook_receipts, |c| c.stripe.webhook_secret =
    super::SECRET.into());

/// In a real headless Chromium, the grid's badge turns from up to down without a reload when
/// the monitor's peer starts failing: the embedded script polls the JSON grid with the session
/// cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_a_badge_go_down_live() {
    const CHROMIUM: &str = "/usr/bin/chromium";
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("\n*** SKIPPED browser test: {CHROMIUM} is not installed. ***\n");
        return;
    }
    let (url, answer) = switchable_peer().await;
    let web = MonitorSpec {
        name: "web".into(),
        kind: "http".into(),
        target: url,
        interval: Some("1s".into()),
        ..Default::default()
    };
    let app = spawn_app_with(Backend::Sqlite, move |c| c.monitors = vec![web])
        .await
        .unwrap();
    for _ in 0..100 {
        let rows = app.state.health.rows(&app.state.store, None).await.unwrap();
        if rows.iter().any(|r| r.state == "up") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let profile_path = profile.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        drive_live_grid(CHROMIUM, &base, profile_path, &answer)
    })
    .await
    .unwrap();
    app.finish().await;
    result.expect("browser session");
}

fn drive_live_grid(
    chromium: &str,
    base: &str,
    profile: std::path::PathBuf,
    answer: &AtomicU16,
) -> anyhow::Result<()> {
    use headless_chrome::{Browser, LaunchOptions};
    use std::time::Duration;
    let args: Vec<&std::ffi::OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .collect();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(std::path::PathBuf::from(chromium)))
            .headless(true)
            .sandbox(false)
            .user_data_dir(Some(profile))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(90))
            .build()?,
    )?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(30));
    tab.navigate_to(&format!("{base}/integrations"))?
        .wait_until_navigated()?;
    tab.wait_for_element("#email")?.click()?;
    tab.type_str(ADMIN_EMAIL)?;
    tab.wait_for_element("#password")?.click()?;
    tab.type_str(ADMIN_PASSWORD)?;
    tab.wait_for_element("#signin")?.click()?;
    tab.wait_for_element("tr[data-name=\"web\"] .state.state-up")?;
    // Marks this page load: a reload would lose the mark.
    tab.evaluate("window.__sameLoad = 'yes'", false)?;
    answer.store(503, Ordering::Relaxed);
    let badge = tab.wait_for_element("tr[data-name=\"web\"] .state.state-down")?;
    anyhow::ensure!(badge.get_inner_text()? == "down", "badge text follows");
    let same = tab.evaluate("window.__sameLoad", false)?.value;
    anyhow::ensure!(
        same == Some(serde_json::json!("yes")),
        "updated without a reload, got {same:?}"
    );
    let error = tab
        .find_element("tr[data-name=\"web\"] .last-error")?
        .get_inner_text()?;
    anyhow::ensure!(error.contains("503"), "last error follows: {error:?}");
    Ok(())
}
