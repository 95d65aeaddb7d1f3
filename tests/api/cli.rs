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
}
