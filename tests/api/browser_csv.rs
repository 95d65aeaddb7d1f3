//! The client-side "Export CSV" in a real headless Chromium: customer ids chosen by whoever holds
//! an ingest key reach a table the script exports, and a spreadsheet must never run them as
//! formulas. The CSV the button makes is caught at `URL.createObjectURL` (the script hands its
//! Blob there before the download) and read back. Tab- and CR-led values cannot reach that
//! button (ingest refuses control characters and the script trims each cell), so the served
//! script's `csvCell` is also run on them directly in the page.

use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::Tab;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Customer ids a spreadsheet would run: a command, a link, and the other leading characters
/// that start a formula.
const HOSTILE: [&str; 5] = [
    "=cmd|' /C calc'!A0",
    "=HYPERLINK(\"http://example.com/x\",\"open\")",
    "+1",
    "-2",
    "@x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_export_neutralises_formulas() {
    if crate::browser::chromium_missing() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let ingest = app.key("app", &["ingest"]).await;
    let events: Vec<Value> = HOSTILE
        .iter()
        .enumerate()
        .map(|(n, customer)| {
            json!({"specversion": "1.0", "id": format!("e{n}"), "source": "billing-app",
                   "type": "api.request", "subject": customer,
                   "data": {"endpoint": "/v1/things", "method": "GET", "status": 200,
                            "duration_ms": 12}})
        })
        .collect();
    let res = api()
        .post(app.url("/api/v1/events"))
        .bearer_auth(&ingest)
        .header("content-type", "application/cloudevents-batch+json")
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["accepted"], HOSTILE.len(), "{reply}");
    let script = page_text(&app, &api(), "/static/app.js").await;

    let base = app.base.clone();
    let profile = tempfile::tempdir().unwrap();
    let profile_path = profile.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || drive(&base, profile_path, &script))
        .await
        .unwrap();
    app.finish().await;
    let (csv, control) = result.expect("browser session");

    let rows: Vec<Vec<String>> = csv.lines().map(fields).collect();
    assert_eq!(
        rows[0],
        ["Customer", "API calls", "Events"],
        "the header row: {csv}"
    );
    let customers: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    for id in HOSTILE {
        let neutral = format!("'{id}");
        assert!(
            customers.contains(&neutral.as_str()),
            "{id:?} exported as {neutral:?}: {csv}"
        );
    }
    for field in rows.iter().flatten() {
        assert!(
            !field.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a cell a spreadsheet would run: {field:?} in {csv}"
        );
    }
    // The link keeps its quotes doubled inside one quoted field, so it stays one cell.
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://example.com/x\"\",\"\"open\"\")\""),
        "{csv}"
    );
    assert_eq!(
        control,
        json!(["'\tx", "\"'\rx\"", "'=1+1", "plain", "\"a,b\""]),
        "tab and CR lead, as the server's rule does (src/web/csv.rs)"
    );
}

/// One CSV line's fields (RFC 4180; the exported cells hold no line breaks).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    out.push(field);
    out
}

/// The served script's `csvCell` function, as text.
fn csv_cell_source(script: &str) -> anyhow::Result<&str> {
    let start = script
        .find("function csvCell(")
        .ok_or_else(|| anyhow::anyhow!("the script has no csvCell"))?;
    let len = script[start..]
        .find("\n}\n")
        .ok_or_else(|| anyhow::anyhow!("csvCell does not end"))?;
    Ok(&script[start..start + len + 2])
}

/// Signs in, presses "Export CSV" above the Usage page's top customers and returns the CSV the
/// script made, with `csvCell` (from `script`) applied in the page to tab- and CR-led values.
fn drive(base: &str, profile: PathBuf, script: &str) -> anyhow::Result<(String, Value)> {
    let browser = crate::browser::launch(profile)?;
    let tab = browser.new_tab()?;
    tab.set_default_timeout(Duration::from_secs(20));
    crate::browser::sign_in(&tab, base, "#overview-cards")?;
    tab.navigate_to(&format!("{base}/usage"))?
        .wait_until_navigated()?;
    tab.wait_for_element("table[data-export=\"usage-top-customers.csv\"]")?;
    tab.wait_for_element("button.export")?;
    // The script gives its Blob to URL.createObjectURL before it starts the download.
    tab.evaluate(
        "window.exportedCsv = new Promise((done) => { \
           const original = URL.createObjectURL; \
           URL.createObjectURL = (blob) => { blob.text().then(done); return original.call(URL, blob); }; \
         }); true",
        false,
    )?;
    let pressed = tab.evaluate(
        "(() => { const button = document.querySelector(\
           'table[data-export=\"usage-top-customers.csv\"]').previousElementSibling; \
           if (!button || button.textContent !== 'Export CSV') return false; \
           button.click(); return true; })()",
        false,
    )?;
    anyhow::ensure!(
        pressed.value == Some(json!(true)),
        "no Export CSV button above the table"
    );
    let csv = text_of(&tab, "window.exportedCsv")?;
    let control = text_of(
        &tab,
        &format!(
            "(() => {{ {}\n return JSON.stringify(['\\tx', '\\rx', '=1+1', 'plain', 'a,b'].map(csvCell)); }})()",
            csv_cell_source(script)?
        ),
    )?;
    Ok((csv, serde_json::from_str(&control)?))
}

/// The string `js` evaluates to (awaiting a promise).
fn text_of(tab: &Tab, js: &str) -> anyhow::Result<String> {
    tab.evaluate(js, true)?
        .value
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("{js} gave no string"))
}
