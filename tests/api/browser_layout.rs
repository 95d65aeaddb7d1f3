//! The pages an on-call person opens first, in a real headless Chromium at a desktop (1440 px)
//! and a phone (390 px) width: the Overview, the Integrations grid and a monitor's page never
//! overflow the window sideways, the Overview opens with its status line, and the grid lists
//! the broken monitor first. Screenshots of each go to a temporary directory, never the
//! repository.

use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_chrome::Tab;
use headless_chrome::protocol::cdp::{Emulation, Page};
use opsdeck::health::monitor::MonitorSpec;

use crate::helpers::*;

const WIDTHS: [u32; 2] = [1440, 390];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_fit_desktop_and_phone_widths() {
    if crate::browser::chromium_missing() {
        return;
    }
    let (up, _) = switchable_peer().await;
    let (broken, answer) = switchable_peer().await;
    answer.store(503, std::sync::atomic::Ordering::Relaxed);
    let monitor = |name: &str, target: &str| MonitorSpec {
        name: name.into(),
        kind: "http".into(),
        target: target.into(),
        interval: Some("1s".into()),
        ..Default::default()
    };
    // "a-api" sorts first by name; down, "z-payments" must come first anyway.
    let monitors = vec![monitor("a-api", &up), monitor("z-payments", &broken)];
    let app = spawn_app_with(Backend::Sqlite, move |c| c.monitors = monitors)
        .await
        .unwrap();
    let mut down_id = None;
    for _ in 0..200 {
        let rows = app.state.health.rows(&app.state.store, None).await.unwrap();
        if let Some(r) = rows
            .iter()
            .find(|r| r.name == "z-payments" && r.state == "down")
            && rows.iter().any(|r| r.name == "a-api" && r.state == "up")
        {
            down_id = Some(r.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down_id = down_id.expect("monitors checked");
    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let shots = tempfile::Builder::new()
        .prefix("opsdeck-layout-")
        .tempdir()
        .unwrap()
        .keep();
    let (profile_path, shots_path) = (profile.path().to_path_buf(), shots.clone());
    let result =
        tokio::task::spawn_blocking(move || drive(&base, profile_path, &shots_path, down_id))
            .await
            .unwrap();
    app.finish().await;
    eprintln!("screenshots in {}", shots.display());
    result.expect("browser session");
}

fn drive(base: &str, profile: PathBuf, shots: &Path, down_id: i64) -> anyhow::Result<()> {
    let browser = crate::browser::launch(profile)?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(30));
    crate::browser::sign_in(&tab, base, "#status-line")?;
    let pages = [
        ("overview", "/".to_string()),
        ("integrations", "/integrations".to_string()),
        ("monitor", format!("/integrations/{down_id}")),
    ];
    for width in WIDTHS {
        tab.call_method(Emulation::SetDeviceMetricsOverride {
            width,
            height: 900,
            device_scale_factor: 1.0,
            mobile: width < 600,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })?;
        for (name, path) in &pages {
            tab.navigate_to(&format!("{base}{path}"))?
                .wait_until_navigated()?;
            tab.wait_for_element("main h1")?;
            let overflow = number(
                &tab,
                "document.documentElement.scrollWidth - window.innerWidth",
            )?;
            let png =
                tab.capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)?;
            std::fs::write(shots.join(format!("{name}-{width}.png")), png)?;
            anyhow::ensure!(
                overflow <= 0.0,
                "{path} at {width} px is {overflow} px wider than the window"
            );
            match *name {
                "overview" => {
                    let status = tab.find_element("#status-line")?.get_inner_text()?;
                    anyhow::ensure!(
                        status.contains("1 down") && status.contains("z-payments"),
                        "status line at {width} px: {status:?}"
                    );
                    tab.find_element("#open-alerts")?;
                    tab.find_element("#at-risk")?;
                }
                "integrations" => {
                    let first = tab
                        .find_element("#integrations-grid tbody tr")?
                        .get_attribute_value("data-name")?;
                    anyhow::ensure!(
                        first.as_deref() == Some("z-payments"),
                        "first row at {width} px: {first:?}"
                    );
                    // The state and the name stay visible on a phone.
                    let state = tab
                        .find_element("#integrations-grid tbody tr .state")?
                        .get_inner_text()?;
                    anyhow::ensure!(state == "down", "first row's state: {state:?}");
                }
                _ => {
                    tab.find_element("#incident-list .incident-ongoing")?;
                }
            }
            // Chart text stays readable: no axis label under 10.5 px on screen.
            let smallest = number(
                &tab,
                "Math.min(1e9, ...[...document.querySelectorAll('svg.chart text')] \
                 .filter((t) => t.getBoundingClientRect().height > 0) \
                 .map((t) => t.getBoundingClientRect().height))",
            )?;
            anyhow::ensure!(
                smallest >= 10.5,
                "{path} at {width} px has chart text {smallest} px high"
            );
        }
    }
    Ok(())
}

fn number(tab: &Tab, expression: &str) -> anyhow::Result<f64> {
    let value = tab.evaluate(expression, false)?.value;
    value
        .as_ref()
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| anyhow::anyhow!("{expression} gave {value:?}"))
}
