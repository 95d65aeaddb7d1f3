//! The command line: argument parsing (clap), logging set-up, and one function per subcommand.
//! This is the binary's top level, so it is the one place `anyhow` is used; exit codes are
//! 0 on success, 78 for configuration errors (EX_CONFIG), 1 for anything else.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::audit::Actor;
use crate::access::{Role, Scopes, keys, users};
use crate::app::{App, open_existing_store, open_store};
use crate::config::{Config, ConfigError, LogFormat, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "opsdeck",
    version,
    about = "Operations cockpit for SaaS teams: revenue, costs, usage, integration health and alerts."
)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where configuration and data live; accepted by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Configuration file (default: ./opsdeck.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database, master key).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: HTTP API, web pages and background jobs.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Run a throwaway demo on a fresh temporary SQLite store and print how to sign in.
    Demo {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage people who sign in.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Plans and which customer is on which.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Provider pricing tables.
    #[command(subcommand)]
    Pricing(PricingCommand),
    /// Sync from a provider.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Run the configured health checks once and print a table; exits 1 if any is down.
    Check {
        /// Only the monitor with this name.
        name: Option<String>,
    },
    /// Write a consistent copy of the SQLite store to FILE (safe while `serve` runs).
    Backup {
        /// Destination file; must not exist.
        file: PathBuf,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask the server on this machine whether it is ready (GET /readyz on its listen address);
    /// exits 0 when it answers 200, 1 otherwise. For container health checks.
    Healthcheck {
        /// Address the server listens on (default: server.listen from the configuration).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user. Reads the password from stdin with --password-stdin, else generates and prints one.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (and sign them out everywhere: their open live streams end at once
    /// with `server.redis_url` set, else within 30 s).
    Passwd {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create an API key and print it once.
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Scope: ingest, read, admin or tenant:<customer-id>. Repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List API keys (never their secrets).
    List,
    /// Revoke an API key by id (its open live streams end at once with `server.redis_url` set,
    /// else within 30 s).
    Revoke { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// List plans with their quotas and customer counts.
    List,
    /// Put a customer on a plan.
    Assign {
        /// Customer id (the events' subject).
        #[arg(long)]
        customer: String,
        /// Plan id.
        #[arg(long)]
        plan: String,
    },
    /// Take a customer off their plan.
    Unassign {
        #[arg(long)]
        customer: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PricingCommand {
    /// Import prices from FILE: LiteLLM's model_prices_and_context_window.json, or a TOML
    /// ([[pricing]] tables) or CSV (provider,sku,unit,price[,effective_from]) table. Prints how
    /// many prices were added, changed and skipped; importing the same file again changes nothing.
    Import {
        file: PathBuf,
        /// Date or RFC 3339 time from which prices without their own date apply (default: now).
        #[arg(long, value_name = "DATE")]
        effective_from: Option<String>,
        /// File format, when the extension does not tell.
        #[arg(long, value_parser = ["litellm", "toml", "csv"])]
        format: Option<String>,
    },
    /// List every dated price; * marks the one in force now.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Sync revenue data from Stripe (stripe.secret_key): a full backfill the first time or
    /// with --full, otherwise the events since the last sync; then recompute the MRR history.
    Stripe {
        /// Read every object again instead of only the events since the last sync.
        #[arg(long)]
        full: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the built-in defaults, with every key documented.
    PrintDefault,
}

/// A command line that parses but asks for something the command cannot do (exit code 2, like
/// clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Entry point used by `main`.
/// Caps glibc's malloc at two arenas unless `MALLOC_ARENA_MAX` says otherwise. glibc gives
/// each thread that allocates concurrently an arena of its own, up to eight per core, and
/// memory freed in one arena is not reused by another: with the runtime's workers, the
/// database thread and the blocking pool all allocating, the health benchmark (10,000 monitors)
/// peaked at 170 MB resident with the default and 119 MB with two arenas, at the same
/// throughput and schedule drift. Call it before any thread is started.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's parameters; it is called before the
        // process starts other threads, and M_ARENA_MAX is a parameter glibc defines.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(78)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(args: &StoreArgs, listen: Option<String>) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let overrides = Overrides {
        listen,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
    };
    Ok(Config::load(args.config.as_deref(), &env, &overrides)?)
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.server.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling run twice) is harmless, so the error is ignored.
    let _ = match config.server.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", crate::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Serve { listen } => serve(load_config(&cli.store, listen)?).await,
        Command::Demo { listen } => {
            let s = &cli.store;
            if s.config.is_some() || s.data_dir.is_some() || s.database_url.is_some() {
                return Err(UsageError(
                    "demo always runs on a fresh temporary SQLite store; drop --config, --data-dir and \
                     --database-url (use `opsdeck serve` for a real store)"
                        .into(),
                )
                .into());
            }
            demo(listen).await
        }
        Command::Migrate => {
            let config = load_config(&cli.store, None)?;
            let store = open_store(&config).await?;
            store.migrate().await.context("applying migrations")?;
            println!("migrations applied ({} backend)", store.backend().as_str());
            Ok(())
        }
        Command::User(cmd) => user(load_config(&cli.store, None)?, cmd).await,
        Command::Key(cmd) => key(load_config(&cli.store, None)?, cmd).await,
        Command::Plan(cmd) => plan(load_config(&cli.store, None)?, cmd).await,
        Command::Pricing(cmd) => pricing(load_config(&cli.store, None)?, cmd).await,
        Command::Sync(cmd) => sync(load_config(&cli.store, None)?, cmd).await,
        Command::Check { name } => check(load_config(&cli.store, None)?, name).await,
        Command::Healthcheck { listen } => {
            healthcheck(&load_config(&cli.store, listen)?.server.listen).await
        }
        Command::Backup { file } => {
            let config = load_config(&cli.store, None)?;
            let store = open_existing_store(&config).await?;
            let bytes = crate::store::backup_sqlite(&store, &file).await?;
            println!("backup written to {} ({bytes} bytes)", file.display());
            Ok(())
        }
    }
}

/// `opsdeck check [NAME]`: one check of each monitor, as a table. With the server's store
/// reachable (its data directory or database URL, and its master key), that is every monitor
/// the server checks: the config file's and those created in the UI or API (paused ones only
/// when named), with the OAuth access tokens the server keeps refreshed. Without it, the
/// config file's monitors and tokens as written.
async fn check(config: Config, name: Option<String>) -> anyhow::Result<()> {
    let mut monitors: Vec<crate::health::monitor::Monitor> = config
        .monitors
        .iter()
        .map(|m| m.validate())
        .collect::<Result<_, _>>()
        .context("[[monitors]]")?;
    let mut tokens = crate::tokens::Vault::from_config(&config.credentials, crate::store::now_ms());
    match stored_monitors(&config).await {
        Ok((stored, vault)) => {
            monitors.extend(
                stored
                    .into_iter()
                    .filter(|m| m.source != "config")
                    .filter(|m| !m.paused || name.as_deref() == Some(m.monitor.name.as_str()))
                    .map(|m| m.monitor),
            );
            tokens = vault;
        }
        Err(why) => eprintln!(
            "note: the store is not readable ({why}); checking the config file's monitors with \
             its tokens as written"
        ),
    }
    if let Some(n) = &name
        && !monitors.iter().any(|m| &m.name == n)
    {
        return Err(UsageError(format!("no monitor is named {n:?}")).into());
    }
    if monitors.is_empty() {
        println!("no monitors are configured ([[monitors]] in the config file, or the API)");
        return Ok(());
    }
    let results = crate::health::check_all(&monitors, name.as_deref(), 16, &tokens).await;
    let width = results
        .iter()
        .map(|(m, _)| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let kind_width = results
        .iter()
        .map(|(m, _)| m.kind.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<kind_width$}  {:<8}  {:>10}  DETAIL",
        "NAME", "KIND", "STATE", "LATENCY"
    );
    let mut down = 0;
    for (m, r) in &results {
        if r.verdict == crate::health::checks::Verdict::Down {
            down += 1;
        }
        println!(
            "{:<width$}  {:<kind_width$}  {:<8}  {:>8.1}ms  {}",
            m.name,
            m.kind.as_str(),
            r.verdict.as_str(),
            r.latency_us as f64 / 1000.0,
            r.error.as_deref().unwrap_or("")
        );
    }
    if down > 0 {
        anyhow::bail!("{down} of {} monitors down", results.len());
    }
    Ok(())
}

/// The monitors stored by a server on this configuration, and its OAuth tokens. Reads only: the
/// store and the master key must already exist (nothing is created or migrated here).
async fn stored_monitors(
    config: &Config,
) -> anyhow::Result<(
    Vec<crate::health::store::StoredMonitor>,
    crate::tokens::Vault,
)> {
    let env_key = std::env::var("OPSDECK_MASTER_KEY").ok();
    let key_file = config.master_key_path();
    if env_key.is_none() && !key_file.exists() {
        bail!("no master key at {}", key_file.display());
    }
    let key = crate::access::secrets::MasterKey::load_or_create(env_key.as_deref(), &key_file)?;
    let store = open_existing_store(config).await?;
    let monitors = crate::health::store::list(&store, &key).await?;
    let vault = crate::tokens::Vault::default();
    crate::tokens::store::reload_vault(&store, &key, &vault).await?;
    Ok((monitors, vault))
}

/// Cancels on Ctrl-C or SIGTERM.
fn shutdown_on_signal(cancel: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
}

/// `opsdeck healthcheck`: one HTTP/1.1 `GET /readyz` over a plain TCP connection, so that a
/// container image without curl or a shell can still check its server. A server listening on
/// an unspecified address (0.0.0.0, [::]) is reached through loopback.
async fn healthcheck(listen: &str) -> anyhow::Result<()> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut addr = tokio::net::lookup_host(listen)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| UsageError(format!("cannot resolve the listen address {listen:?}")))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // Only the status line matters; the cap keeps a wrong peer from feeding us forever.
        let mut answer = Vec::new();
        stream.take(16 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .map_err(|_| anyhow::anyhow!("http://{addr}/readyz did not answer within 5 s"))?
        .with_context(|| format!("cannot reach http://{addr}/readyz"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        println!("ready: http://{addr}/readyz answered 200");
        Ok(())
    } else {
        bail!("not ready: http://{addr}/readyz answered {status_line:?}")
    }
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let listener = bind(&config.server.listen).await?;
    let master_key = std::env::var("OPSDECK_MASTER_KEY").ok();
    let app = App::build(config, master_key.as_deref()).await?;
    let email = std::env::var("OPSDECK_ADMIN_EMAIL").ok();
    let password = std::env::var("OPSDECK_ADMIN_PASSWORD").ok();
    match users::bootstrap_admin(&app.state.store, email.as_deref(), password.as_deref()).await? {
        users::Bootstrap::Existing => {}
        users::Bootstrap::Created { email } => tracing::info!(%email, "created the first admin"),
        users::Bootstrap::Generated { email, password } => {
            // Printed once, to the terminal only: it is never logged or stored in clear.
            println!("Created the first admin: {email}\nPassword (shown once): {password}");
        }
    }
    app.recover_rollups().await;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = app.state.store.backend().as_str(), "opsdeck listening");
    println!("opsdeck listening on http://{addr}");
    let cancel = CancellationToken::new();
    shutdown_on_signal(cancel.clone());
    app.serve(listener, cancel).await?;
    Ok(())
}

async fn demo(listen: String) -> anyhow::Result<()> {
    // The history's load is timed from here: what a person waits for is the whole start.
    let since_start = std::time::Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("opsdeck-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut config = Config::defaults();
    config.server.data_dir = dir.path().to_path_buf();
    config.server.listen = listen.clone();
    // The demo's terminal is for a person trying the product: a progress bar and a tour, with
    // only warnings and errors logged below them. The backfill makes SQLite and the MRR engine
    // busy on purpose, so sqlx's slow-statement warnings (the SQL quoted whole) would be noise;
    // RUST_LOG still brings every line back.
    config.server.log_level = "warn,sqlx=error".into();
    init_logging(&config);
    crate::simulators::usage::configure(&mut config);
    // The demo account must be up before the app, whose Stripe client points at it.
    let stripe = crate::simulators::stripe_demo::StripeDemo::start(&mut config)
        .await
        .context("starting the demo Stripe account")?;
    let providers = crate::simulators::providers_demo::ProvidersDemo::start(&mut config)
        .await
        .context("starting the demo providers")?;
    let _oauth = crate::simulators::oauth::configure_demo(&mut config)
        .await
        .context("starting the demo OAuth providers")?;
    let notify = crate::simulators::notify::configure_demo(&mut config)
        .await
        .context("starting the demo's Slack")?;
    let listener = bind(&listen).await?;
    let app = App::build(config, None).await?;
    let users::Bootstrap::Generated { email, password } =
        users::bootstrap_admin(&app.state.store, Some("admin@demo.opsdeck.dev"), None).await?
    else {
        bail!("the demo store was not empty");
    };
    let demo_key = keys::create(
        &app.state.store,
        "demo simulators",
        &Scopes::parse_list(&["ingest", "admin"])?,
        &Actor::new("demo", None),
    )
    .await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let cancel = CancellationToken::new();
    shutdown_on_signal(cancel.clone());
    let sims = tokio_util::task::TaskTracker::new();
    let progress = std::sync::Arc::new(crate::simulators::DemoProgress::default());
    let started = crate::simulators::start(
        &crate::simulators::DemoContext {
            opsdeck_url: url.clone(),
            api_key: demo_key.secret,
            progress: progress.clone(),
        },
        &cancel,
        &sims,
        vec![Box::new(stripe), Box::new(providers)],
    );
    println!("opsdeck demo: a simulated SaaS with ~500 customers, a year of Stripe billing, API");
    println!("calls and AI jobs, sent through the real connectors and the real ingest API.");
    println!();
    println!("  open       {url}");
    println!("  sign in    {email}");
    println!("  password   {password}");
    println!("  data       {} (deleted on exit)", dir.path().display());
    println!(
        "  alerts     sent to a local Slack; read what arrived at {}/",
        notify.base()
    );
    println!("  simulators {}", started.join(", "));
    println!();
    let tour = tokio::spawn(demo_progress(
        app.state.clone(),
        progress,
        url.clone(),
        since_start,
        cancel.clone(),
    ));
    app.serve(listener, cancel).await?;
    tour.abort();
    sims.close();
    sims.wait().await;
    Ok(())
}

/// What the demo's terminal shows while the history loads: a bar of the usage events the
/// ingest API has acknowledged out of the year's total, with the rate, the time left and how
/// many days back the history is complete, and the Stripe sync's count (a line every ten
/// seconds when stdout is not a terminal); then, once both are in, where to look first.
async fn demo_progress(
    state: crate::app::AppState,
    progress: std::sync::Arc<crate::simulators::DemoProgress>,
    url: String,
    since_start: std::time::Instant,
    cancel: CancellationToken,
) {
    use crate::web::format::count;
    let terminal = std::io::stdout().is_terminal();
    let bar = indicatif::ProgressBar::new(1).with_style(
        indicatif::ProgressStyle::with_template("  history {bar:24} {percent:>3} %  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut last_line = std::time::Instant::now();
    let mut objects = 0_i64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => { bar.abandon(); return; }
            _ = tick.tick() => {}
        }
        let usage = progress.read();
        let stripe = state
            .revenue
            .status(&state.store, crate::store::now_ms())
            .await
            .ok();
        let stripe_done = stripe
            .as_ref()
            .is_none_or(|s| !s.connected || s.last_sync_at.is_some() || s.broken);
        // Each resource's count restarts when a later pass starts; the most seen is the
        // truthful "so far".
        let fetched: i64 = stripe
            .as_ref()
            .map(|s| s.resources.iter().map(|r| r.fetched).sum())
            .unwrap_or(0);
        objects = objects.max(fetched);
        let stripe_text = if stripe_done {
            format!("Stripe synced ({} objects)", count(objects))
        } else {
            format!("Stripe syncing ({} objects)", count(objects))
        };
        let message = format!("{} · {stripe_text}", usage.summary());
        bar.set_length(usage.total.max(1));
        bar.set_position(usage.loaded.min(usage.total));
        bar.set_message(message.clone());
        if !terminal && last_line.elapsed() >= std::time::Duration::from_secs(10) {
            println!("  loading history: {message}");
            last_line = std::time::Instant::now();
        }
        if usage.done && stripe_done {
            bar.finish_and_clear();
            break;
        }
    }
    let usage = progress.read();
    println!(
        "  history loaded {} s after start: {} events{}, Stripe synced ({} objects). New traffic \
         keeps arriving.",
        since_start.elapsed().as_secs(),
        count(usage.loaded),
        if usage.failed > 0 {
            format!(" ({} failed)", count(usage.failed))
        } else {
            String::new()
        },
        count(objects),
    );
    println!();
    println!("Where to look:");
    for (path, what) in DEMO_TOUR {
        println!("  {url}{path:<15} {what}");
    }
    println!();
    println!("Warnings and errors are logged below (RUST_LOG=info for everything). Ctrl-C stops.");
}

/// The short tour printed once the demo's history is in.
const DEMO_TOUR: &[(&str, &str)] = &[
    (
        "/",
        "are we making money, is anything broken, who is near quota",
    ),
    (
        "/revenue",
        "MRR and its movements from the demo Stripe account; click a bar",
    ),
    (
        "/costs",
        "what each provider costs, and the margin per customer and plan",
    ),
    (
        "/usage",
        "calls per customer and endpoint category, the event log",
    ),
    (
        "/integrations",
        "provider monitors: one is slow, one flaky; open one for its incidents",
    ),
    (
        "/alerts",
        "quota and integration alerts as they fire; filter, acknowledge",
    ),
];

fn cli_actor() -> Actor {
    Actor::cli(&std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            bail!("no password on stdin");
        }
        return Ok((pw, false));
    }
    if std::io::stdin().is_terminal() {
        eprintln!("no --password-stdin: generating a password");
    }
    Ok((crate::access::random_token(15), true))
}

/// Tells running servers about the revocations this command made, so the streams they opened
/// end: through Redis when `server.redis_url` is set, at once; otherwise each server finds out
/// at its streams' next credential re-check.
async fn announce_revocations(
    config: &Config,
    revoked: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::events::Event>>,
) {
    let mut events = Vec::new();
    while let Ok(event) = revoked.try_recv() {
        events.push((*event).clone());
    }
    if events.is_empty() {
        return;
    }
    let every = crate::realtime::RECHECK_EVERY.as_secs();
    let url = &config.server.redis_url;
    if url.is_empty() {
        eprintln!("open live streams on a running server end within {every} s");
    } else if let Err(e) = crate::realtime::fanout::announce(url, events).await {
        eprintln!(
            "could not tell running servers through Redis ({e}); their open live streams end within {every} s"
        );
    }
}

async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    store.migrate().await?;
    let actor = cli_actor();
    let bus = crate::events::Bus::default();
    let mut revoked = bus.subscribe_local();
    match cmd {
        UserCommand::Add {
            email,
            role,
            password_stdin,
        } => {
            let role = Role::parse(&role)?;
            let (password, generated) = read_password(password_stdin)?;
            let user = users::create(&store, &email, &password, role, &actor).await?;
            println!("added {} ({})", user.email, user.role.as_str());
            if generated {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Passwd {
            email,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            users::set_password(&store, &bus, &email, &password, &actor).await?;
            println!("password changed for {email}; their sessions were signed out");
            announce_revocations(&config, &mut revoked).await;
            if generated {
                println!("new password (shown once): {password}");
            }
        }
        UserCommand::List => {
            for u in users::list(&store).await? {
                println!("{}\t{}\t{}", u.id, u.email, u.role.as_str());
            }
        }
    }
    Ok(())
}

async fn key(config: Config, cmd: KeyCommand) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    store.migrate().await?;
    let actor = cli_actor();
    let bus = crate::events::Bus::default();
    let mut revoked = bus.subscribe_local();
    match cmd {
        KeyCommand::Create { name, scopes } => {
            let scopes = Scopes::parse_list(&scopes)?;
            let created = keys::create(&store, &name, &scopes, &actor).await?;
            println!(
                "created key {} \"{}\" with scopes: {}",
                created.key.id, created.key.name, scopes
            );
            println!("{}", created.secret);
            eprintln!("This is the only time the key is shown; store it now.");
        }
        KeyCommand::List => {
            println!("ID\tNAME\tPREFIX\tSCOPES\tSTATUS");
            for k in keys::list(&store).await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\topsk_{}\t{}\t{status}",
                    k.id,
                    k.name,
                    k.prefix,
                    k.scopes.join(" ")
                );
            }
        }
        KeyCommand::Revoke { id } => {
            keys::revoke(&store, &bus, id, &actor).await?;
            println!("revoked key {id}");
            announce_revocations(&config, &mut revoked).await;
        }
    }
    Ok(())
}

async fn plan(config: Config, cmd: PlanCommand) -> anyhow::Result<()> {
    use crate::usage::plans;
    let store = open_store(&config).await?;
    store.migrate().await?;
    plans::sync_config(&store, &config.plans).await?;
    let actor = cli_actor();
    match cmd {
        PlanCommand::List => {
            println!(
                "ID\tNAME\tPRICE\tAPI CALLS\tCREDITS\tOVERAGE/1K\tHARD LIMIT\tCUSTOMERS\tORIGIN"
            );
            let quota = |q: Option<i64>| q.map_or("-".to_string(), |n| n.to_string());
            for p in plans::list(&store).await? {
                println!(
                    "{}\t{}\t{} {}\t{}\t{}\t${}\t{}%\t{}\t{}",
                    p.id,
                    p.name,
                    crate::money::format_scaled(p.price.amount, 2, 2),
                    p.price.currency,
                    quota(p.api_calls),
                    quota(p.provider_credits),
                    p.overage_per_1k_calls,
                    p.hard_limit_percent,
                    p.customers,
                    p.origin
                );
            }
        }
        PlanCommand::Assign { customer, plan } => {
            plans::assign(&store, &customer, &plan, "manual", &actor).await?;
            println!("{customer} is now on plan {plan}");
        }
        PlanCommand::Unassign { customer } => {
            plans::unassign(&store, &customer, &actor).await?;
            println!("{customer} no longer has a plan");
        }
    }
    Ok(())
}

async fn sync(config: Config, cmd: SyncCommand) -> anyhow::Result<()> {
    use crate::revenue::service::{Revenue, Synced};
    let SyncCommand::Stripe { full } = cmd;
    if config.stripe.secret_key.is_empty() {
        return Err(UsageError(
            "stripe.secret_key is not set (in opsdeck.toml or OPSDECK_STRIPE__SECRET_KEY)".into(),
        )
        .into());
    }
    let store = open_store(&config).await?;
    store.migrate().await?;
    crate::revenue::history::sync_config_rates(&store, &config.stripe.fx_rates).await?;
    // No evaluator runs here: a running server re-evaluates a customer at its next usage, and
    // the quota route always computes from the current plan.
    let revenue = Revenue::new(&config.stripe, Default::default())?;
    // Stripe's lists carry no totals, so each resource shows a spinner with its count.
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let shown = bar.clone();
    // indicatif draws nothing when stdout is not a terminal; the per-resource lines still go to
    // a pipe or a log.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let outcome = revenue
        .sync(&store, full, &move |p| {
            shown.set_message(format!(
                "{}: {} fetched ({})",
                p.resource, p.fetched, p.state
            ));
            if p.state != "running" {
                let line = format!("{:<20} {:>8}  {}", p.resource, p.fetched, p.state);
                if terminal {
                    shown.println(line);
                } else {
                    println!("{line}");
                }
            }
        })
        .await;
    bar.finish_and_clear();
    match outcome? {
        Synced::Backfill(summary) => {
            for (kind, id, problem) in summary.skipped.iter().take(20) {
                eprintln!("skipped {kind} {id}: {problem}");
            }
            println!(
                "backfill: {} objects stored, {} skipped; MRR history recomputed",
                summary.stored,
                summary.skipped.len()
            );
        }
        Synced::CatchUp { events } => {
            println!("catch-up: {events} new events applied; MRR history recomputed");
        }
    }
    Ok(())
}

async fn pricing(config: Config, cmd: PricingCommand) -> anyhow::Result<()> {
    use crate::costs::{import, prices};
    match cmd {
        PricingCommand::Import {
            file,
            effective_from,
            format,
        } => {
            // Parse before touching the store, so a bad file or flag changes nothing.
            let default_from = match &effective_from {
                Some(t) => import::parse_effective_from(t)
                    .map_err(|e| UsageError(format!("--effective-from: {e}")))?,
                None => crate::store::now_ms(),
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let format = match format.as_deref() {
                Some("litellm") => import::Format::LiteLlm,
                Some("toml") => import::Format::Toml,
                Some("csv") => import::Format::Csv,
                _ => import::detect(&name, &text),
            };
            let parsed = import::parse(format, &text).with_context(|| name.clone())?;
            let store = open_store(&config).await?;
            store.migrate().await?;
            let mut report =
                prices::import(&store, &parsed.rows, default_from, &cli_actor(), &name).await?;
            report.skipped += parsed.skipped.len();
            for s in parsed.skipped.iter().take(20) {
                eprintln!("skipped {}: {}", s.entry, s.reason);
            }
            if parsed.skipped.len() > 20 {
                eprintln!("… and {} more skipped entries", parsed.skipped.len() - 20);
            }
            println!(
                "{name}: {} added, {} changed, {} skipped",
                report.added, report.changed, report.skipped
            );
        }
        PricingCommand::List => {
            let store = open_store(&config).await?;
            store.migrate().await?;
            println!("ID\tPROVIDER\tSKU\tUNIT\tUSD/UNIT\tEFFECTIVE FROM\tORIGIN");
            for p in prices::list(&store).await? {
                println!(
                    "{}{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    if p.current { "*" } else { " " },
                    p.id,
                    p.provider,
                    p.sku,
                    p.unit,
                    p.price_usd,
                    crate::web::fmt_ms(&p.effective_from),
                    p.origin
                );
            }
        }
    }
    Ok(())
}
