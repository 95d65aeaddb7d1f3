//! The `postgres` kind: connect with the monitor's URL (sqlx, so `sslmode` and friends work as
//! they do for our own database), run one query and make its first column of its first row
//! `[BODY]`. A query of the user's runs inside a read-only transaction, so a monitor cannot
//! change data by mistake. Errors carry the server's message, never the URL or its password.

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode};
use sqlx::{Column, ConnectOptions, Connection, Row, TypeInfo};

use crate::health::checks::Probe;
use crate::health::monitor::Monitor;
use crate::net::guard::{Guard, GuardError};

/// Cheap, and says something worth a condition (`[BODY] contains 15.`).
const DEFAULT_QUERY: &str = "SELECT current_setting('server_version')";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("not a usable postgres URL")]
    Url,
    #[error("connect: {0}")]
    Connect(String),
    #[error("postgres: {0}")]
    Server(String),
    #[error("the query returned no rows")]
    NoRows,
    #[error("the query's first column is of type {0}; cast it to text (::text)")]
    Unsupported(String),
    #[error("{0}")]
    Refused(String),
}

fn describe(e: sqlx::Error) -> PgError {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => PgError::Server(format!("{} ({code})", db.message())),
            None => PgError::Server(db.message().to_string()),
        },
        sqlx::Error::Io(io) => PgError::Connect(io.to_string()),
        sqlx::Error::Tls(tls) => PgError::Connect(format!("TLS: {tls}")),
        sqlx::Error::Configuration(_) => PgError::Url,
        other => PgError::Server(other.to_string()),
    }
}

/// The first column of `row` as text.
fn first_column(row: &PgRow) -> Result<String, PgError> {
    let column = row.columns().first().ok_or(PgError::NoRows)?;
    let type_name = column.type_info().name().to_string();
    let text = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    let value = match type_name.as_str() {
        "BOOL" => row
            .try_get::<Option<bool>, _>(0)
            .map(|v| v.map(|b| b.to_string())),
        "INT2" => row
            .try_get::<Option<i16>, _>(0)
            .map(|v| v.map(|n| n.to_string())),
        "INT4" => row
            .try_get::<Option<i32>, _>(0)
            .map(|v| v.map(|n| n.to_string())),
        "INT8" => row
            .try_get::<Option<i64>, _>(0)
            .map(|v| v.map(|n| n.to_string())),
        "FLOAT4" => row
            .try_get::<Option<f32>, _>(0)
            .map(|v| v.map(|n| n.to_string())),
        "FLOAT8" => row
            .try_get::<Option<f64>, _>(0)
            .map(|v| v.map(|n| n.to_string())),
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "UNKNOWN" => row.try_get::<Option<String>, _>(0),
        _ => return Err(PgError::Unsupported(type_name)),
    };
    value.map(text).map_err(describe)
}

async fn query(conn: &mut PgConnection, sql: Option<&str>) -> Result<String, PgError> {
    let row = match sql {
        None => sqlx::query(DEFAULT_QUERY).fetch_optional(&mut *conn).await,
        Some(sql) => {
            sqlx::raw_sql("BEGIN READ ONLY")
                .execute(&mut *conn)
                .await
                .map_err(describe)?;
            // The query comes from the monitor's definition, which only an administrator
            // writes; the read-only transaction is the guard against it writing anything.
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .persistent(false)
                .fetch_optional(&mut *conn)
                .await
        }
    };
    first_column(&row.map_err(describe)?.ok_or(PgError::NoRows)?)
}

async fn check(monitor: &Monitor, guard: &Guard) -> Result<String, PgError> {
    let mut options = monitor
        .target
        .parse::<PgConnectOptions>()
        .map_err(|_| PgError::Url)?
        .application_name("opsdeck-monitor")
        // The query is the user's and may name things; it stays out of our logs.
        .disable_statement_logging();
    if options.get_socket().is_none() {
        options = guarded(options, guard).await?;
    }
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(describe)?;
    let value = query(&mut conn, monitor.query.as_deref()).await;
    // Ending the session politely is not part of the verdict.
    let _ = conn.close().await;
    value
}

/// `options` pointed at the address the guard checked: the driver resolves a name itself, so
/// the name is resolved here, every address checked, and the driver given the first one.
/// Under `sslmode=verify-full` the name stays, since the certificate is checked against it;
/// the driver's own lookup then follows the guard's by moments.
async fn guarded(options: PgConnectOptions, guard: &Guard) -> Result<PgConnectOptions, PgError> {
    let host = options.get_host().to_string();
    let port = options.get_port();
    let refused = |e: GuardError| match e {
        e if e.is_refusal() => PgError::Refused(crate::health::checks::refused_reason(&e)),
        e => PgError::Connect(e.to_string()),
    };
    guard.check_host(&host).map_err(refused)?;
    let addrs = guard.resolve_checked(&host, port).await.map_err(refused)?;
    if matches!(options.get_ssl_mode(), PgSslMode::VerifyFull) {
        return Ok(options);
    }
    match addrs.first() {
        Some(addr) => Ok(options.host(&addr.ip().to_string())),
        None => Err(PgError::Connect(format!("{host} resolves to no address"))),
    }
}

pub(crate) async fn probe(monitor: &Monitor, guard: &Guard) -> Probe {
    let password = reqwest::Url::parse(&monitor.target)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
        .unwrap_or_default();
    match check(monitor, guard).await {
        Ok(value) => Probe {
            body: Some(value),
            ..Probe::default()
        },
        // A server message never holds the password, but a driver error might echo input.
        Err(e) => Probe::failed(super::redact(&e.to_string(), &[&password])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, Verdict};
    use crate::health::monitor::MonitorSpec;

    fn monitor(target: &str, query: Option<&str>, conditions: &[&str]) -> Monitor {
        MonitorSpec {
            name: "db".into(),
            kind: "postgres".into(),
            target: target.into(),
            timeout: Some("5s".into()),
            query: query.map(str::to_string),
            conditions: conditions.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
        .validate()
        .expect("valid monitor")
    }

    /// `OPSDECK_TEST_POSTGRES_URL` with its database swapped for `database`.
    fn server_url(database: &str) -> Option<String> {
        let Ok(url) = std::env::var("OPSDECK_TEST_POSTGRES_URL") else {
            eprintln!(
                "\n*** SKIPPED the postgres monitor against a real server: \
                 OPSDECK_TEST_POSTGRES_URL is not set.\n"
            );
            return None;
        };
        let mut url = reqwest::Url::parse(&url).expect("OPSDECK_TEST_POSTGRES_URL is a URL");
        url.set_path(database);
        Some(url.to_string())
    }

    #[tokio::test]
    async fn postgres_checks_against_a_real_server() {
        let Some(good) = server_url("test") else {
            return;
        };
        let client = checks::outbound();
        let version: String = {
            let mut conn = PgConnection::connect(&good).await.expect("connect");
            sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .expect("version")
        };
        let r = checks::run(
            &monitor(&good, None, &[&format!("[BODY] == \"{version}\"")]),
            &client,
        )
        .await;
        assert_eq!(
            (r.verdict, r.error),
            (Verdict::Up, None),
            "the server's version"
        );
        let r = checks::run(
            &monitor(
                &good,
                Some("SELECT current_setting('server_version_num')::int / 10000"),
                &["[BODY] >= 10", "[BODY] < 100"],
            ),
            &client,
        )
        .await;
        assert_eq!(
            (r.verdict, r.error),
            (Verdict::Up, None),
            "an integer column"
        );
        let r = checks::run(
            &monitor(
                &good,
                Some("SELECT count(*) FROM pg_database"),
                &["[BODY] >= 1"],
            ),
            &client,
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = checks::run(
            &monitor(&good, Some("SELECT 'ok' AS state, 2"), &["[BODY] == ok"]),
            &client,
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = checks::run(&monitor(&good, Some("SELECT now()"), &[]), &client).await;
        assert_eq!(
            r.error.as_deref(),
            Some("the query's first column is of type TIMESTAMPTZ; cast it to text (::text)")
        );
        // The transaction is read-only: a monitor's query cannot write.
        let r = checks::run(
            &monitor(
                &good,
                Some("CREATE TABLE opsdeck_monitor_probe (id int)"),
                &[],
            ),
            &client,
        )
        .await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("read-only transaction")),
            "{r:?}"
        );
        let r = checks::run(&monitor(&good, Some("SELECT 1 WHERE false"), &[]), &client).await;
        assert_eq!(r.error.as_deref(), Some("the query returned no rows"));

        // A database that is not there, asked with a password that must not come back.
        let mut missing =
            reqwest::Url::parse(&server_url("opsdeck_no_such_db").unwrap_or_default())
                .expect("URL");
        missing
            .set_password(Some("hunter2-secret"))
            .expect("password");
        let r = checks::run(&monitor(missing.as_str(), None, &[]), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        let e = r.error.unwrap_or_default();
        assert!(
            e.contains("does not exist") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_down_without_the_password() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let target = format!("postgres://postgres:hunter2-secret@{closed}/test");
        let m = monitor(&target, None, &[]);
        assert!(
            !format!("{m:?}").contains("hunter2"),
            "Debug hides the password"
        );
        let r = checks::run(&m, &checks::outbound()).await;
        assert_eq!(r.verdict, Verdict::Down);
        let e = r.error.unwrap_or_default();
        assert!(e.starts_with("connect: ") && e.contains("refused"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
