//! A real headless Chromium reads the Alerts page with many customers over quota and one
//! integration down, at desktop (1440 px) and phone (390 px) widths: the operational alert
//! comes first, severities are coloured, and nothing forces the page wider than the window.

use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::Tab;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::types::Bounds;
use opsdeck::alerts::{engine, rules};

use crate::alerts::set_quota;
use crate::helpers::*;

/// What the page looked like at one width.
#[derive(Debug)]
struct Seen {
    inner_width: i64,
    scroll_width: i64,
    first_group: String,
    critical_badge: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_page_fits_desktop_and_phone() {
    if crate::browser::chromium_missing() {
        return;
    }
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.alerts.evaluation_interval = opsdeck::config::ConfigDuration(Duration::ZERO);
    })
    .await
    .unwrap();
    // Sixty customers over quota at every step, with long names, raised by the real
    // evaluator; and an integration down, the operational alert that must lead.
    for i in 0..60 {
        set_quota(
            &app,
            &format!("cus_browser_customer_with_a_long_id_{i:03}"),
            80.0 + f64::from(i),
        )
        .await;
    }
    let store = &app.state.store;
    let (prometheus, notifiers) = opsdeck::alerts::names(&app.state).await.unwrap();
    let quota: Vec<_> = rules::load(store, &prometheus, &notifiers)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name == rules::QUOTA_RULE)
        .collect();
    let now = opsdeck::store::now_ms();
    engine::run(store, &quota, now, "", &engine::Settings::default())
        .await
        .unwrap();
    let (down,): (i64,) = store
        .fetch_one(
            "SELECT id FROM alert_rules WHERE name = 'integration down'",
            opsdeck::args![],
        )
        .await
        .unwrap();
    store
        .execute(
            "INSERT INTO alerts (rule_id, rule, fingerprint, labels, state, severity, group_key, \
             summary, value, threshold, pending_since, started_at, updated_at) \
             VALUES ($1, 'integration down', '{\"integration\":\"payments-api\"}', \
             '{\"integration\":\"payments-api\",\"kind\":\"http\"}', 'firing', 'critical', \
             'rule:1', 'integration down: payments-api, kind=http integration.state is 2 (>= 2)', \
             2, 2, $2, $2, $2)",
            opsdeck::args![down, now - 60_000],
        )
        .await
        .unwrap();

    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let profile_path = profile.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || drive(&base, profile_path))
        .await
        .unwrap();
    app.finish().await;
    let [desktop, phone] = result.expect("browser session");
    for seen in [&desktop, &phone] {
        assert!(
            seen.scroll_width <= seen.inner_width,
            "no horizontal overflow: {seen:?}"
        );
        assert!(
            seen.first_group.starts_with("integration down"),
            "operational alerts first: {seen:?}"
        );
        assert!(
            seen.critical_badge.starts_with("rgb(")
                && seen.critical_badge != "rgba(0, 0, 0, 0)"
                && seen.critical_badge != "rgb(255, 255, 255)",
            "the critical badge is coloured: {seen:?}"
        );
    }
    assert_eq!(desktop.inner_width, 1440);
    assert!(phone.inner_width <= 400, "phone width: {phone:?}");
}

fn drive(base: &str, profile: PathBuf) -> anyhow::Result<[Seen; 2]> {
    let browser = crate::browser::launch(profile)?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(20));
    crate::browser::sign_in(&tab, base, "#overview-cards")?;
    let desktop = look(&tab, base, 1440.0, 1000.0, "alerts-1440")?;
    let phone = look(&tab, base, 390.0, 1400.0, "alerts-390")?;
    Ok([desktop, phone])
}

fn number(tab: &Tab, js: &str) -> anyhow::Result<i64> {
    tab.evaluate(js, false)?
        .value
        .and_then(|v| v.as_i64())
        .ok_or_else(|| anyhow::anyhow!("{js} gave no number"))
}

fn text(tab: &Tab, js: &str) -> anyhow::Result<String> {
    Ok(tab
        .evaluate(js, false)?
        .value
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default())
}

/// Sizes the window, loads the page, measures it and keeps a screenshot (in the system's
/// temporary directory, for people reviewing a change).
fn look(tab: &Tab, base: &str, width: f64, height: f64, name: &str) -> anyhow::Result<Seen> {
    tab.set_bounds(Bounds::Normal {
        left: None,
        top: None,
        width: Some(width),
        height: Some(height),
    })?;
    tab.navigate_to(&format!("{base}/alerts"))?
        .wait_until_navigated()?;
    tab.wait_for_element("section.alert-group")?;
    let seen = Seen {
        inner_width: number(tab, "window.innerWidth")?,
        scroll_width: number(tab, "document.documentElement.scrollWidth")?,
        first_group: text(
            tab,
            "document.querySelector('section.alert-group h3').textContent.trim()",
        )?,
        critical_badge: text(
            tab,
            "getComputedStyle(document.querySelector('.alert-counts .sev-critical')).backgroundColor",
        )?,
    };
    let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)?;
    std::fs::write(std::env::temp_dir().join(format!("{name}.png")), png)?;
    Ok(seen)
}
