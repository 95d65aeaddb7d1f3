//! Test harness: the real application on an ephemeral port against a fresh database (a SQLite
//! file in a temporary directory, or a new PostgreSQL database when `OPSDECK_TEST_POSTGRES_URL`
//! is set), plus HTTP helpers that behave like a browser or an API client.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use opsdeck::access::audit::Actor;
use opsdeck::access::{Role, Scopes, keys, users};
use opsdeck::app::{App, AppState};
use opsdeck::config::Config;
use reqwest::StatusCode;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub data_dir: tempfile::TempDir,
    pub backend: Backend,
    pg_database: Option<String>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Runs one test body against SQLite and, when configured, PostgreSQL:
/// `dual_test!(name)` expects `async fn name(app: &TestApp)` and generates `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! dual_test {
    ($name:ident) => {
        $crate::dual_test!($name, |_c| {});
    };
    ($name:ident, $configure:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app =
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, $configure)
                        .await
                        .expect("SQLite always runs");
                super::$name(&app).await;
                app.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) =
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, $configure)
                        .await
                else {
                    return;
                };
                super::$name(&app).await;
                app.finish().await;
            }
        }
    };
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("OPSDECK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "\n*** SKIPPED PostgreSQL variant: OPSDECK_TEST_POSTGRES_URL is not set. \
                 .ci/run sets it; export it to run these tests against PostgreSQL. ***\n"
            );
            None
        }
    }
}

/// Creates an empty database next to the one in `admin_url` and returns (name, url). Databases
/// left behind by crashed runs more than an hour old are dropped on the way.
pub async fn fresh_postgres_database(admin_url: &str) -> (String, String) {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to OPSDECK_TEST_POSTGRES_URL");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale: Vec<(String,)> =
        sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname LIKE 'opsdeck_t_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for (name,) in stale {
        let born: u64 = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if born + 3600 < now {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
    let name = format!("opsdeck_t_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    (name.clone(), format!("{base}/{name}"))
}

pub async fn drop_postgres_database(name: &str) {
    let url = std::env::var("OPSDECK_TEST_POSTGRES_URL").unwrap_or_default();
    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the app with the defaults adjusted by `configure`, and an admin user.
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.server.data_dir = data_dir.path().to_path_buf();
    let mut pg_database = None;
    if backend == Backend::Postgres {
        let admin = postgres_url()?;
        let (name, url) = fresh_postgres_database(&admin).await;
        config.server.database_url = url;
        pg_database = Some(name);
    }
    configure(&mut config);
    let app = App::build(config, None).await.expect("app builds");
    users::bootstrap_admin(&app.state.store, Some(ADMIN_EMAIL), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = app.state.clone();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, cancel.clone()));
    Some(TestApp {
        base: format!("http://{addr}"),
        state,
        data_dir,
        backend,
        pg_database,
        cancel,
        server,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server gracefully, keeping its store for the test to read afterwards.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if !self.server.is_finished() {
            let _ = (&mut self.server).await;
        }
    }

    /// Stops the server gracefully and removes its PostgreSQL database.
    pub async fn finish(mut self) {
        self.stop().await;
        if let Some(name) = &self.pg_database {
            drop_postgres_database(name).await;
        }
    }

    /// Creates an API key directly through the domain layer (as `opsdeck key create` does).
    pub async fn key(&self, name: &str, scopes: &[&str]) -> String {
        let scopes = Scopes::parse_list(scopes).unwrap();
        keys::create(&self.state.store, name, &scopes, &Actor::new("test", None))
            .await
            .unwrap()
            .secret
    }

    pub async fn add_user(&self, email: &str, password: &str, role: Role) {
        users::create(
            &self.state.store,
            email,
            password,
            role,
            &Actor::new("test", None),
        )
        .await
        .unwrap();
    }

    /// An API call authenticated with `key`, with `body` as JSON when given.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = api().request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap()
    }

    /// Submits a page form as `client` (a browser with its cookies).
    pub async fn post_form(
        &self,
        client: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client.post(self.url(path)).form(form).send().await.unwrap()
    }

    pub async fn audit_actions(&self) -> Vec<String> {
        opsdeck::access::audit::list(&self.state.store, 1000, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

/// A browser-like client: keeps cookies, does not follow redirects (tests assert them).
pub fn browser() -> reqwest::Client {
    browser_from("127.0.0.1")
}

/// The same, connecting from another loopback address (for per-address rate limits).
pub fn browser_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The served OpenAPI document.
pub async fn openapi_document(app: &TestApp) -> serde_json::Value {
    api()
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn api() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first hidden `csrf_token` input in a page.
pub fn csrf_from(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("page has a csrf_token field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// Loads the sign-in page and submits it; returns the POST's response.
pub async fn sign_in(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    sign_in_at(&app.base, client, email, password).await
}

/// The same against any running opsdeck (e.g. one started as a separate process).
pub async fn sign_in_at(
    base: &str,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let page = client.get(format!("{base}/signin")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let token = csrf_from(&page.text().await.unwrap());
    client
        .post(format!("{base}/signin"))
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", &token),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
}

/// Signs in as the admin and returns the session's CSRF token (read from the Overview page).
pub async fn sign_in_admin(app: &TestApp, client: &reqwest::Client) -> String {
    let res = sign_in(app, client, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "admin sign-in succeeds"
    );
    page_csrf(app, client, "/").await
}

pub async fn page_csrf(app: &TestApp, client: &reqwest::Client, path: &str) -> String {
    csrf_from(&page_text(app, client, path).await)
}

/// The body of the page at `path`, fetched by `client` (a signed-in browser, usually).
pub async fn page_text(app: &TestApp, client: &reqwest::Client, path: &str) -> String {
    client
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Asserts the error body shape `{code, detail, request_id}` and returns it.
pub async fn error_body(
    res: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(res.status(), status);
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(
        body["request_id"].as_str(),
        header_id.as_deref(),
        "request id in body matches header"
    );
    body
}

/// A local HTTP peer at `/health` answering `{"status":"ok"}` with the status code the test
/// stores in the returned cell (200 at first).
pub async fn switchable_peer() -> (String, std::sync::Arc<std::sync::atomic::AtomicU16>) {
    use std::sync::atomic::{AtomicU16, Ordering};
    let status = std::sync::Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let s = s.clone();
            async move {
                let code = axum::http::StatusCode::from_u16(s.load(Ordering::Relaxed))
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                (code, "{\"status\":\"ok\"}")
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/health"), status)
}
