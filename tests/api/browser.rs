//! A real headless Chromium signs in and sees the Overview page.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_chrome::{Browser, LaunchOptions, Tab};

use crate::helpers::*;

/// Where the browser tests find Chromium (Debian's package).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether Chromium is missing, said loudly so a skipped browser test is never mistaken for a
/// passing one.
pub fn chromium_missing() -> bool {
    let missing = !Path::new(CHROMIUM).exists();
    if missing {
        eprintln!(
            "\n*** SKIPPED browser test: {CHROMIUM} is not installed (apt-get install chromium). .ci/run installs it. ***\n"
        );
    }
    missing
}

/// Headless Chromium on a fresh profile, its networking features off (the machine has no
/// network), in a 1440 × 1000 window without scrollbars, so widths measured are the page's.
pub fn launch(profile: PathBuf) -> anyhow::Result<Browser> {
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    Browser::new(
        LaunchOptions::default_builder()
            .path(Some(PathBuf::from(CHROMIUM)))
            .headless(true)
            .sandbox(false)
            .user_data_dir(Some(profile))
            .window_size(Some((1440, 1000)))
            .args(args)
            .idle_browser_timeout(Duration::from_secs(90))
            .build()?,
    )
}

/// Opens the app, is sent to the sign-in form, signs in as the test admin and waits for
/// `landmark` on the Overview.
pub fn sign_in(tab: &Tab, base: &str, landmark: &str) -> anyhow::Result<()> {
    tab.navigate_to(&format!("{base}/"))?
        .wait_until_navigated()?;
    tab.wait_for_element("#email")?.click()?;
    tab.type_str(ADMIN_EMAIL)?;
    tab.wait_for_element("#password")?.click()?;
    tab.type_str(ADMIN_PASSWORD)?;
    tab.wait_for_element("#signin")?.click()?;
    tab.wait_for_element(landmark)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_and_sees_the_overview() {
    if crate::browser::chromium_missing() {
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
    let browser = crate::browser::launch(profile)?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(20));
    crate::browser::sign_in(&tab, base, "#overview-cards")?;
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
