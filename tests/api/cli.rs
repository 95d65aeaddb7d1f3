//! The binary itself: configuration errors, and user/key administration from the command line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn opsdeck(args: &[&str], dir: &std::path::Path, stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsdeck"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("OPSDECK_SERVER__DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_config_exits_78_naming_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisten = \"not an address\"\n", "server.listen"),
        ("[server]\nlistn = \"127.0.0.1:1\"\n", "listn"),
        (
            "[access]\nlogin_max_failures = \"five\"\n",
            "access.login_max_failures",
        ),
        ("[server\n", "invalid TOML"),
        (
            "[server]\ndatabase_url = \"mysql://x\"\n",
            "server.database_url",
        ),
    ];
    for (body, needle) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let out = opsdeck(
            &["--config", file.to_str().unwrap(), "migrate"],
            dir.path(),
            None,
        );
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(78), "{body}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains(needle),
            "{body}: {err}"
        );
    }
    let out = opsdeck(&["--config", "missing.toml", "migrate"], dir.path(), None);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).1.contains("missing.toml"));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsdeck"));
    let out = cmd
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env("OPSDECK_ACCESS__SESSION_TTL", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out).1.contains("OPSDECK_ACCESS__SESSION_TTL"),
        "{}",
        text(&out).1
    );
}

#[test]
fn print_default_is_the_documented_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsdeck(&["config", "print-default"], dir.path(), None);
    assert!(out.status.success());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/opsdeck.example.toml"))
            .unwrap();
    assert_eq!(text(&out).0, example);
}

#[test]
fn users_and_keys_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        dir.path(),
        Some("a very long password\n"),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("added ops@example.com (admin)"));
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "--email",
            "ops@example.com",
            "--role",
            "viewer",
        ],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("already exists"));
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "user",
            "passwd",
            "--email",
            "ops@example.com",
            "--password-stdin",
        ],
        dir.path(),
        Some("short\n"),
    );
    assert!(!out.status.success() && text(&out).1.contains("at least 10"));
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "user",
            "passwd",
            "--email",
            "ops@example.com",
        ],
        dir.path(),
        None,
    );
    assert!(out.status.success() && text(&out).0.contains("new password (shown once)"));

    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "key",
            "create",
            "--name",
            "app",
            "--scope",
            "ingest",
            "--scope",
            "read",
        ],
        dir.path(),
        None,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    assert!(stdout.contains("scopes: ingest read"));
    let secret = stdout
        .lines()
        .find(|l| l.starts_with("opsk_"))
        .expect("key printed")
        .to_string();
    let out = opsdeck(&["--data-dir", d, "key", "list"], dir.path(), None);
    let (list, _) = text(&out);
    assert!(list.contains("app") && list.contains("active") && !list.contains(&secret));
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "key",
            "create",
            "--name",
            "x",
            "--scope",
            "superuser",
        ],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("unknown scope"));
    let out = opsdeck(&["--data-dir", d, "key", "revoke", "1"], dir.path(), None);
    assert!(out.status.success());
    assert!(
        text(&opsdeck(
            &["--data-dir", d, "key", "list"],
            dir.path(),
            None
        ))
        .0
        .contains("revoked")
    );
    let out = opsdeck(&["--data-dir", d, "key", "revoke", "1"], dir.path(), None);
    assert!(!out.status.success() && text(&out).1.contains("not found"));

    // A mistyped data directory is reported, not silently backed up as an empty store.
    let missing = dir.path().join("no-such-dir");
    let out = opsdeck(
        &["--data-dir", missing.to_str().unwrap(), "backup", "x.db"],
        dir.path(),
        None,
    );
    assert!(
        !out.status.success() && text(&out).1.contains("no SQLite store"),
        "{:?}",
        text(&out)
    );
    assert!(!missing.exists());
}

/// The mode bits (`0o777`) of `path`.
#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A fresh data directory is created 0700, and everything in it — the database, its WAL and
/// shared-memory files, the master key — 0600 while `serve` runs; `opsdeck backup` writes its
/// copy 0600; and a database left world-readable by an older release is tightened the next
/// time the store is opened. The test process's umask (022) would otherwise give 0755/0644.
#[cfg(unix)]
#[tokio::test]
async fn data_directory_database_and_backups_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", d])
        .env("OPSDECK_ADMIN_EMAIL", "boss@example.com")
        .env_remove("OPSDECK_ADMIN_PASSWORD")
        .env_remove("OPSDECK_MASTER_KEY")
        .env_remove("OPSDECK_SERVER__DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let lines = read_until(&mut out, "listening on");
    let base = url_in(&lines);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);

    assert_eq!(mode_of(&data), 0o700, "data directory");
    let db = data.join("opsdeck.db");
    for name in [
        "opsdeck.db",
        "opsdeck.db-wal",
        "opsdeck.db-shm",
        "master.key",
    ] {
        assert_eq!(mode_of(&data.join(name)), 0o600, "{name}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        assert_eq!(mode_of(&data.join(name)), 0o600, "{name} in {names:?}");
    }

    // A backup beside the running server.
    let backup = tmp.path().join("copy.db");
    let out = opsdeck(
        &["--data-dir", d, "backup", backup.to_str().unwrap()],
        tmp.path(),
        None,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(mode_of(&backup), 0o600, "backup file");
    for suffix in ["-wal", "-shm"] {
        let side = tmp.path().join(format!("copy.db{suffix}"));
        if side.exists() {
            assert_eq!(mode_of(&side), 0o600, "{}", side.display());
        }
    }
    assert!(sigterm_and_wait(&mut child).success());

    // An install from before: world-readable files are tightened when the store is opened.
    use std::os::unix::fs::PermissionsExt;
    let wal = data.join("opsdeck.db-wal");
    if !wal.exists() {
        std::fs::write(&wal, b"").unwrap();
    }
    for f in [&db, &wal] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = opsdeck(&["--data-dir", d, "key", "list"], tmp.path(), None);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(mode_of(&db), 0o600);
    // SQLite removes the WAL when its last connection closes; if it stays, it is private.
    assert!(!wal.exists() || mode_of(&wal) == 0o600);
}

/// Reads the child's stdout until a line containing `marker`; returns the lines read so far.
pub fn read_until(reader: &mut impl std::io::BufRead, marker: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..50 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let done = line.contains(marker);
        lines.push(line.trim_end().to_string());
        if done {
            return lines;
        }
    }
    panic!("never saw {marker:?}; got {lines:?}");
}

pub fn url_in(lines: &[String]) -> String {
    let line = lines.iter().find(|l| l.contains("http://")).unwrap();
    line[line.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

pub fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().ok();
    panic!("opsdeck did not stop within 10 s of SIGTERM");
}

#[tokio::test]
async fn serve_bootstraps_an_admin_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("OPSDECK_ADMIN_EMAIL", "boss@example.com")
        .env_remove("OPSDECK_ADMIN_PASSWORD")
        .env_remove("OPSDECK_MASTER_KEY")
        .env_remove("OPSDECK_SERVER__DATABASE_URL")
        .env("OPSDECK_SERVER__LOG_FORMAT", "json")
        .env("OPSDECK_SERVER__LOG_LEVEL", "opsdeck=debug,warn")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("log.jsonl")).unwrap())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let lines = read_until(&mut out, "listening on");
    let password = lines
        .iter()
        .find_map(|l| l.strip_prefix("Password (shown once): "))
        .expect("generated admin password printed once")
        .to_string();
    let base = url_in(&lines);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let request_id = ready.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let client = crate::helpers::browser();
    let res = crate::helpers::sign_in_at(&base, &client, "boss@example.com", &password).await;
    assert_eq!(
        res.status(),
        reqwest::StatusCode::SEE_OTHER,
        "the printed password works"
    );

    let status = sigterm_and_wait(&mut child);
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );

    // Structured logs: one JSON object per line, the request's line tagged with its id.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "request finished"
                && e["span"]["request_id"] == request_id.as_str()
                && e["span"]["path"] == "/readyz"),
        "{log}"
    );
    assert!(
        !log.contains(&password),
        "the generated password never reaches the log"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "master key file created private");
    }
}

#[tokio::test]
async fn demo_prints_a_working_login() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsdeck"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let logged = std::thread::spawn(move || {
        std::io::BufRead::lines(err)
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let lines = read_until(&mut out, "simulators");
    let base = url_in(&lines);
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
            .expect(name)
    };
    let (email, password) = (field("sign in"), field("password"));
    // The rest of the terminal (progress lines, then the tour) is read on its own thread, so
    // the checks below run while the history loads.
    let (lines_tx, later_lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(out).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let data_dir = std::path::PathBuf::from(field("data").split(" (").next().unwrap());
    assert!(data_dir.exists());

    let client = crate::helpers::browser();
    let res = crate::helpers::sign_in_at(&base, &client, &email, &password).await;
    assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER);
    let overview = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(overview.status(), reqwest::StatusCode::OK);

    // The demo's Stripe account syncs through the real connector: the Revenue page fills in.
    // Its backfill shares the store with the usage simulator's, which writes ~200k events at
    // the same time; under a loaded test run that took over two minutes.
    let mut revenue = String::new();
    for _ in 0..480 {
        revenue = client
            .get(format!("{base}/revenue"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if revenue.contains("Last synced") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(revenue.contains("Last synced"), "the demo account synced");
    assert!(
        revenue.contains("href=\"/revenue/customers/cus_demo_"),
        "paying demo customers are listed"
    );

    // The simulated providers are checked through the real provider checks: most monitors
    // have a verdict within a minute or so (first checks spread over 15-60 s intervals), and
    // the ElevenLabs one shows its character quota.
    let mut grid = serde_json::Value::Null;
    let checked = |g: &serde_json::Value| {
        g["integrations"].as_array().map_or(0, |rows| {
            rows.iter().filter(|r| r["state"] != "unknown").count()
        })
    };
    for _ in 0..180 {
        grid = client
            .get(format!("{base}/api/v1/integrations"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if checked(&grid) >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(checked(&grid) >= 10, "demo monitors checked: {grid}");
    let rows = grid["integrations"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        rows.len(),
        18,
        "a monitor per simulated provider, Stripe and Google Cloud, and four on the demo's \
         OAuth credentials"
    );
    for kind in ["google_oauth", "google_calendar", "meta", "gcp"] {
        assert!(rows.iter().any(|r| r["kind"] == kind), "a {kind} monitor");
    }
    // The Google Cloud monitor signs with the key the demo generated, against its fake.
    let gcp = rows.iter().find(|r| r["kind"] == "gcp").expect("gcp");
    if gcp["state"] != "unknown" {
        assert_eq!(gcp["state"], "up", "{gcp}");
    }
    let eleven = rows
        .iter()
        .find(|r| r["kind"] == "elevenlabs")
        .expect("elevenlabs");
    if eleven["state"] != "unknown" {
        assert_eq!(eleven["quota"]["name"], "characters", "{eleven}");
    }
    assert!(
        rows.iter().any(|r| r["state"] == "up"),
        "providers answer: {grid}"
    );

    // Once the history is in, the terminal says so and gives the tour; before that, without a
    // terminal, it reports progress in plain lines (no bar escape codes in a pipe).
    let mut later = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(480);
    while !later.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match later_lines.recv_timeout(left) {
            Ok(line) => later.push(line),
            Err(_) => panic!("no tour within 480 s; the terminal said {later:?}"),
        }
    }
    let loaded = later
        .iter()
        .find(|l| l.trim_start().starts_with("history loaded "))
        .unwrap_or_else(|| panic!("{later:?}"));
    assert!(loaded.contains(" events, Stripe synced"), "{loaded}");
    assert!(
        later.iter().all(|l| !l.contains('\u{1b}')),
        "no escape codes in a pipe: {later:?}"
    );
    for path in ["/revenue", "/integrations", "/alerts"] {
        assert!(
            later.iter().any(|l| l.contains(&format!("{base}{path} "))),
            "the tour links {path}: {later:?}"
        );
    }

    assert!(sigterm_and_wait(&mut child).success());
    assert!(
        !data_dir.exists(),
        "the demo's temporary store is removed on exit"
    );
    // Only warnings and errors are logged, and never sqlx's slow-statement lines quoting SQL.
    let logged = logged.join().unwrap();
    for l in &logged {
        assert!(
            !l.contains("slow statement"),
            "SQL in the demo's terminal: {l}"
        );
        assert!(
            !l.contains("INFO"),
            "info lines in the demo's terminal: {l}"
        );
    }
}

#[test]
fn pricing_import_and_plans_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let litellm = dir.path().join("model_prices_and_context_window.json");
    std::fs::write(
        &litellm,
        r#"{
  "sample_spec": {"litellm_provider": "one of https://docs.litellm.ai/docs/providers",
                  "input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat"},
  "gpt-4o": {"litellm_provider": "openai", "mode": "chat",
             "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
  "tts-1": {"litellm_provider": "openai", "mode": "audio_speech", "input_cost_per_character": 1.5e-05},
  "no-price": {"litellm_provider": "openai", "mode": "chat"}
}"#,
    )
    .unwrap();
    let file = litellm.to_str().unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec!["--data-dir", d, "pricing", "import", file];
        args.extend_from_slice(extra);
        opsdeck(&args, dir.path(), None)
    };
    let out = import(&["--effective-from", "2026-01-01"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("3 added, 0 changed, 1 skipped"), "{stdout}");
    assert!(stderr.contains("no-price"), "{stderr}");
    // The same file again changes nothing.
    let out = import(&["--effective-from", "2026-01-01"]);
    assert!(
        text(&out).0.contains("0 added, 0 changed, 4 skipped"),
        "{:?}",
        text(&out)
    );

    // A CSV with a changed price from a later date.
    let csv = dir.path().join("prices.csv");
    std::fs::write(
        &csv,
        "provider,sku,unit,price,effective_from\nopenai,gpt-4o/input,token,0.000002,2026-06-01\nluma,v2,credit,0.0045,2024-01-01\n",
    )
    .unwrap();
    let out = opsdeck(
        &["--data-dir", d, "pricing", "import", csv.to_str().unwrap()],
        dir.path(),
        None,
    );
    assert!(
        text(&out).0.contains("0 added, 1 changed, 1 skipped"),
        "{:?}",
        text(&out)
    );
    let out = opsdeck(&["--data-dir", d, "pricing", "list"], dir.path(), None);
    let list = text(&out).0;
    assert!(
        list.contains("gpt-4o/input\ttoken\t0.000002\t2026-06-01"),
        "{list}"
    );
    assert!(list.contains("luma\tv2\tcredit\t0.0045"), "{list}");

    // Bad input names the problem and changes nothing.
    let out = import(&["--effective-from", "someday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("--effective-from"),
        "{:?}",
        text(&out)
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"gpt\": {").unwrap();
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "pricing",
            "import",
            broken.to_str().unwrap(),
        ],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("line"), "{:?}", text(&out));
    let out = opsdeck(&["--data-dir", d, "pricing", "list"], dir.path(), None);
    assert_eq!(text(&out).0, list);

    // Plans declared in a config file, customers assigned from the command line.
    let config = dir.path().join("opsdeck.toml");
    std::fs::write(
        &config,
        "[[plans]]\nid = \"growth\"\nname = \"Growth\"\nprice = \"26.00\"\napi_calls = 50000\noverage_per_1k_calls = 0.5\n",
    )
    .unwrap();
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "plan",
            "assign",
            "--customer",
            "cus_1",
            "--plan",
            "growth",
        ],
        dir.path(),
        None,
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = opsdeck(&["--data-dir", d, "plan", "list"], dir.path(), None);
    let plans = text(&out).0;
    assert!(
        plans.contains("growth\tGrowth\t26.00 usd\t50000\t-\t$0.50\t120%\t1\tconfig"),
        "{plans}"
    );
    let out = opsdeck(
        &[
            "--data-dir",
            d,
            "plan",
            "assign",
            "--customer",
            "cus_1",
            "--plan",
            "nope",
        ],
        dir.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("nope"), "{:?}", text(&out));
    std::fs::write(
        &config,
        "[[plans]]\nid = \"Growth!\"\nname = \"G\"\nprice = \"1\"\n",
    )
    .unwrap();
    let out = opsdeck(&["--data-dir", d, "plan", "list"], dir.path(), None);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).1.contains("plans[0].id"), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_stripe_from_the_command_line() {
    use opsdeck::simulators::stripe::FakeStripe;
    use serde_json::json;
    let key = "sk_test_cli_sync";
    let stripe = FakeStripe::new(key);
    let now = opsdeck::store::now_ms() / 1000;
    let price = json!({"id": "price_growth", "object": "price", "active": true, "currency": "usd",
        "unit_amount": 2600, "type": "recurring", "created": now - 90 * 86_400,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}});
    stripe.put("prices", price.clone());
    for n in 0..3 {
        let start = now - (20 + n) * 86_400;
        stripe.put(
            "subscriptions",
            json!({"id": format!("sub_{n}"), "object": "subscription", "customer": format!("cus_{n}"),
                "status": "active", "currency": "usd", "created": start, "start_date": start,
                "items": {"object": "list", "has_more": false, "data": [{"id": format!("si_{n}"),
                    "object": "subscription_item", "quantity": 1, "price": price,
                    "current_period_start": start, "current_period_end": start + 30 * 86_400}]}}),
        );
    }
    let (base, _server) = stripe.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("opsdeck.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n\n[stripe]\nsecret_key = {key:?}\napi_base = {base:?}\n",
            dir.path().to_str().unwrap()
        ),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let run = move |args: Vec<&'static str>, env: Option<(&'static str, &'static str)>| {
        let path = path.clone();
        let config = path.join("opsdeck.toml");
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsdeck"));
            cmd.arg("--config")
                .arg(&config)
                .args(&args)
                .current_dir(&path);
            cmd.env_remove("OPSDECK_SERVER__DATABASE_URL");
            if let Some((k, v)) = env {
                cmd.env(k, v);
            }
            cmd.output().unwrap()
        })
    };

    let out = run(vec!["sync", "stripe"], None).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backfill: 4 objects stored, 0 skipped"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("subscription ") && l.contains(" 3 ")),
        "per-resource counts: {stdout}"
    );
    // The next run only reads the events since; --full reads everything again.
    let out = run(vec!["sync", "stripe"], None).await.unwrap();
    assert!(
        text(&out).0.contains("catch-up: 0 new events applied"),
        "{:?}",
        text(&out)
    );
    let out = run(vec!["sync", "stripe", "--full"], None).await.unwrap();
    assert!(
        text(&out).0.contains("backfill: 4 objects stored"),
        "{:?}",
        text(&out)
    );
    assert!(
        stripe
            .requests()
            .iter()
            .any(|r| r.starts_with("/v1/events")),
        "the catch-up read /v1/events"
    );

    // A refused key fails loudly, naming Stripe's answer.
    let out = run(
        vec!["sync", "stripe"],
        Some(("OPSDECK_STRIPE__SECRET_KEY", "sk_test_wrong")),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("401") || stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );
    // No key at all names the setting.
    std::fs::write(
        dir.path().join("opsdeck.toml"),
        format!("[server]\ndata_dir = {:?}\n", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let out = run(vec!["sync", "stripe"], None).await.unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("stripe.secret_key"),
        "{:?}",
        text(&out)
    );
}

/// `opsdeck check` runs each configured monitor once, prints a table and exits 1 when one is
/// down; a monitor definition that does not parse is refused naming its field.
#[test]
fn check_prints_a_table_and_fails_when_a_monitor_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file = dir.path().join("opsdeck.toml");
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n\n[[monitors]]\nname = \"listener\"\nkind = \"tcp\"\n\
         target = \"{}\"\ninterval = \"5s\"\n\n[[monitors]]\nname = \"gone\"\nkind = \"tcp\"\n\
         target = \"{closed}\"\ntimeout = \"2s\"\n",
        dir.path().join("data").display(),
        open.local_addr().unwrap()
    );
    std::fs::write(&file, &config).unwrap();
    let path = file.to_str().unwrap();
    let out = opsdeck(&["--config", path, "check"], dir.path(), None);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.lines().next().unwrap_or("").starts_with("NAME"),
        "{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .to_string()
    };
    assert!(row("listener").contains(" up "), "{stdout}");
    assert!(
        row("gone").contains(" down ") && row("gone").contains("refused"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 2 monitors down"), "{stderr}");

    // Only the named one, which is up: exit 0.
    let out = opsdeck(&["--config", path, "check", "listener"], dir.path(), None);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = opsdeck(&["--config", path, "check", "nobody"], dir.path(), None);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).1.contains("no monitor is named \"nobody\""));

    // A bad definition: the field is named, with the file.
    std::fs::write(
        &file,
        config.replace("interval = \"5s\"", "interval = \"100ms\""),
    )
    .unwrap();
    let out = opsdeck(&["--config", path, "check"], dir.path(), None);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("monitors[0].interval") && stderr.contains("at least 1s"),
        "{stderr}"
    );
    std::fs::write(&file, config.replace("kind = \"tcp\"", "kind = \"ping\"")).unwrap();
    let (_, stderr) = text(&opsdeck(&["--config", path, "check"], dir.path(), None));
    assert!(
        stderr.contains("monitors[0].kind") && stderr.contains("unknown kind"),
        "{stderr}"
    );
}

/// With the server's store there, `opsdeck check` also runs the monitors created through the
/// API (paused ones only when named), as the server would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_the_stored_monitors_too() {
    let dir = tempfile::tempdir().unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = open.local_addr().unwrap().to_string();
    let file = dir.path().join("opsdeck.toml");
    let config_text = format!(
        "[server]\ndata_dir = \"{}\"\n\n[[monitors]]\nname = \"from-file\"\nkind = \"tcp\"\n\
         target = \"{target}\"\n",
        dir.path().join("data").display()
    );
    std::fs::write(&file, &config_text).unwrap();
    let path = file.to_str().unwrap().to_string();
    {
        let config =
            opsdeck::config::Config::load(Some(&file), &[], &opsdeck::config::Overrides::default())
                .unwrap();
        let app = opsdeck::app::App::build(config, None).await.unwrap();
        let (store, key) = (&app.state.store, &app.state.master_key);
        let actor = opsdeck::access::audit::Actor::new("test", None);
        for name in ["made-in-api", "paused-in-api"] {
            let spec = opsdeck::health::monitor::MonitorSpec {
                name: name.into(),
                kind: "tcp".into(),
                target: target.clone(),
                ..Default::default()
            };
            let id = opsdeck::health::store::create(store, key, &spec, &actor)
                .await
                .unwrap();
            if name.starts_with("paused") {
                opsdeck::health::store::set_paused(store, id, true, &actor)
                    .await
                    .unwrap();
            }
        }
        app.state.store.close().await;
    }
    let run = |args: Vec<String>| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            text(&opsdeck(&args, &dir, None))
        })
    };
    let (stdout, stderr) = run(vec!["--config".into(), path.clone(), "check".into()])
        .await
        .unwrap();
    assert!(
        stdout.contains("from-file") && stdout.contains("made-in-api"),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("paused-in-api"), "{stdout}");
    assert!(!stderr.contains("not readable"), "{stderr}");
    let (stdout, _) = run(vec![
        "--config".into(),
        path,
        "check".into(),
        "paused-in-api".into(),
    ])
    .await
    .unwrap();
    assert!(
        stdout.contains("paused-in-api") && stdout.contains(" up "),
        "{stdout}"
    );
}

/// `opsdeck healthcheck`, the container image's health check: 0 against a ready server (found
/// through `--listen`, as a container's `server.listen` would give it), 1 with the reason when
/// nothing answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_when_ready_and_1_when_nothing_answers() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let addr = app.base.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let ready = tokio::task::spawn_blocking(move || {
        opsdeck(&["healthcheck", "--listen", &addr], &path, None)
    })
    .await
    .unwrap();
    let (out, err) = text(&ready);
    assert_eq!(ready.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("answered 200"), "{out}");

    // A port that was just free: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let path = dir.path().to_path_buf();
    let down = tokio::task::spawn_blocking(move || {
        opsdeck(&["healthcheck", "--listen", &closed_addr], &path, None)
    })
    .await
    .unwrap();
    let (_, err) = text(&down);
    assert_eq!(down.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}
