//! A real headless Chromium signs in and sees the Overview page.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_chrome::{Browser, LaunchOptions};

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_and_sees_the_overview() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "\n*** SKIPPED browser test: {CHROMIUM} is not installed (apt-get install chromium). .ci/run installs it. ***\n"
        );
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let profile_path = profile.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || drive(&base, profile_path))
        .await
        .unwrap();
    app.finish().await;
    let (title, cards, signed_in_as) = result.expect("browser session");
    assert_eq!(title, "Overview");
    assert_eq!(cards, 16, "one card per headline figure");
    assert!(signed_in_as.contains(ADMIN_EMAIL));
}

fn drive(base: &str, profile: PathBuf) -> anyhow::Result<(String, usize, String)> {
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(PathBuf::from(CHROMIUM)))
            .headless(true)
            .sandbox(false)
            .user_data_dir(Some(profile))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(60))
            .build()?,
    )?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(20));
    tab.navigate_to(&format!("{base}/"))?
        .wait_until_navigated()?;
    // Unauthenticated: redirected to the sign-in form.
    tab.wait_for_element("#email")?.click()?;
    tab.type_str(ADMIN_EMAIL)?;
    tab.wait_for_element("#password")?.click()?;
    tab.type_str(ADMIN_PASSWORD)?;
    tab.wait_for_element("#signin")?.click()?;
    tab.wait_for_element("#overview-cards")?;
    let title = tab.find_element("main h1")?.get_inner_text()?;
    let cards = tab.find_elements("#overview-cards .card")?.len();
    let who = tab.find_element("header .who span")?.get_inner_text()?;
    // The embedded script runs under the CSP: it adds CSV export to Settings tables.
    tab.navigate_to(&format!("{base}/settings/audit"))?
        .wait_until_navigated()?;
    let export = tab.wait_for_element("button.export")?.get_inner_text()?;
    anyhow::ensure!(export == "Export CSV", "export button says {export:?}");
    Ok((title, cards, who))
}
