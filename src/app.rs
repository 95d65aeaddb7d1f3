//! Startup: builds the shared state from a validated [`Config`], runs migrations, and serves the
//! router plus background jobs on an already-bound listener until a [`CancellationToken`] fires.
//! Tests bind port 0 and call [`App::serve`] in-process; `main` does the same with the
//! configured address.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::keys::KeyUsage;
use crate::access::ratelimit::{ApiLimiter, EventLimiter, LoginLimiter};
use crate::access::secrets::MasterKey;
use crate::config::Config;
use crate::costs::pricebook::PriceBook;
use crate::http::metrics::HttpMetrics;
use crate::store::{ConnectOptions, Store, StoreError};
use crate::usage::categories::Categories;
use crate::usage::quota;
use crate::usage::writer::{self, Ingestor, WriterInbox};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("applying [[plans]] / [[pricing]] from config: {0}")]
    Metering(String),
    #[error("[stripe]: {0}")]
    Stripe(String),
    #[error("[[monitors]]: {0}")]
    Monitors(String),
    #[error("[[credentials]]: {0}")]
    Credentials(String),
    #[error("[webhooks]: {0}")]
    Webhooks(String),
    #[error("[[alert_rules]] / [alerts]: {0}")]
    Alerts(String),
}

/// Everything a request handler or job may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub master_key: MasterKey,
    pub login_limiter: LoginLimiter,
    pub key_usage: KeyUsage,
    pub api_limiter: ApiLimiter,
    /// Ingest's own limit, in events per credential (`ingest.events_per_second`).
    pub event_limiter: EventLimiter,
    pub metrics: HttpMetrics,
    pub ingestor: Ingestor,
    /// Prices `provider.usage` events at ingest.
    pub prices: PriceBook,
    /// Endpoint categories of `api.request` events.
    pub categories: Categories,
    /// Customers whose quota state needs re-evaluating.
    pub quota_watch: Arc<quota::Watch>,
    /// The Stripe connection and the MRR history's freshness.
    pub revenue: Arc<crate::revenue::service::Revenue>,
    /// The health scheduler's shared parts (start lateness, manual checks).
    pub health: Arc<crate::health::scheduler::Health>,
    /// OAuth credentials: the vault of current access tokens and the refresh client.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// The outgoing webhook delivery worker (its guarded client and rate limiters).
    pub webhooks: Arc<crate::webhooks::worker::Deliverer>,
    /// What happens as it happens, for the real-time streams.
    pub events: crate::events::Bus,
    /// The real-time streams' shared parts (client count, activity sampling, last figures).
    pub realtime: crate::realtime::Realtime,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A built application: state ready, schema migrated, not yet serving.
pub struct App {
    pub state: AppState,
    /// The receiving end of `state.ingestor`; `serve` runs the ingest writer on it.
    writer_inbox: WriterInbox,
}

impl App {
    /// Opens the store named by the config, applies migrations and loads the master key
    /// (`master_key_env` is the value of `OPSDECK_MASTER_KEY`, if set).
    pub async fn build(
        mut config: Config,
        master_key_env: Option<&str>,
    ) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        store.migrate().await?;
        let master_key = MasterKey::load_or_create(master_key_env, &config.master_key_path())
            .map_err(|e| StartError::MasterKey(e.to_string()))?;
        crate::usage::plans::sync_config(&store, &config.plans)
            .await
            .map_err(|e| StartError::Metering(e.to_string()))?;
        crate::costs::prices::sync_config(&store, &config.pricing)
            .await
            .map_err(|e| StartError::Metering(e.to_string()))?;
        crate::health::store::sync_config(&store, &master_key, &config.monitors)
            .await
            .map_err(|e| StartError::Monitors(e.to_string()))?;
        crate::tokens::store::sync_config(&store, &master_key, &config.credentials)
            .await
            .map_err(|e| StartError::Credentials(e.to_string()))?;
        crate::webhooks::endpoints::sync_config(&store, &master_key, &config.notifiers)
            .await
            .map_err(|e| StartError::Webhooks(e.to_string()))?;
        let vault: Arc<crate::tokens::Vault> = Arc::default();
        crate::tokens::store::reload_vault(&store, &master_key, &vault)
            .await
            .map_err(|e| StartError::Credentials(e.to_string()))?;
        // Stored now, and read from the store from here on: at 10,000 monitors the definitions
        // are megabytes the running server has no use for.
        config.monitors = Vec::new();
        let prices = PriceBook::load(&store).await?;
        let quota_watch: Arc<quota::Watch> = Arc::default();
        let revenue = crate::revenue::service::Revenue::new(&config.stripe, quota_watch.clone())
            .map_err(|e| StartError::Stripe(e.to_string()))?;
        crate::revenue::history::sync_config_rates(&store, &config.stripe.fx_rates)
            .await
            .map_err(|e| StartError::Stripe(e.to_string()))?;
        let access = &config.access;
        // Names pinned by a test resolve as it says in every guard; their addresses are
        // checked like any others.
        let pin = |guard: crate::net::guard::Guard| {
            config
                .pinned_hosts
                .iter()
                .fold(guard, |g, (name, ip)| g.with_pinned(name, vec![*ip]))
        };
        let operator = pin(crate::net::guard::operator_policy(
            &config.webhooks.allow_private,
            config.alerts.allow_private_targets,
        )
        .map_err(|e| StartError::Webhooks(format!("webhooks.allow_private: {e}")))?);
        let webhooks = crate::webhooks::worker::Deliverer::new(&config.webhooks, operator.clone())
            .map_err(|e| StartError::Webhooks(e.to_string()))?;
        let monitors =
            crate::health::checks::Outbound::new(pin(crate::net::guard::Guard::private_allowed()));
        let (ingestor, inbox) = Ingestor::channel();
        let events = crate::events::Bus::default();
        let state = AppState(Arc::new(Shared {
            webhooks: Arc::new(webhooks),
            events: events.clone(),
            realtime: crate::realtime::Realtime::default(),
            key_usage: KeyUsage::default(),
            login_limiter: LoginLimiter::new(access.login_max_failures, access.login_window.0),
            api_limiter: ApiLimiter::new(access.api_requests_per_minute),
            event_limiter: EventLimiter::new(config.ingest.events_per_second),
            metrics: HttpMetrics::new(),
            ingestor,
            prices,
            categories: Categories::new(&config.usage.endpoint_categories),
            quota_watch,
            revenue: Arc::new(revenue),
            health: Arc::new(
                crate::health::scheduler::Health::with_tokens(vault.clone())
                    .with_events(events)
                    .with_outbound(monitors),
            ),
            tokens: Arc::new(crate::tokens::Tokens::new(vault, operator)),
            master_key,
            store,
            config,
        }));
        // After the notifiers exist: rules route to them by name.
        crate::alerts::sync_config(&state)
            .await
            .map_err(|e| StartError::Alerts(e.to_string()))?;
        Ok(App {
            state,
            writer_inbox: inbox,
        })
    }

    /// Writes the rollups of events acknowledged just before a crash, which the journal holds.
    /// `opsdeck serve` does this before it says it is listening, so that a reader started by
    /// that line finds them; [`App::serve`] does it too, for other callers.
    pub async fn recover_rollups(&self) {
        match writer::recover_rollups(&self.state.store).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "wrote the usage rollups held at the last stop"),
            Err(e) => {
                tracing::error!(error = %e, "could not write the usage rollups held at the last stop; they stay journaled for the next start")
            }
        }
    }

    /// Serves HTTP on `listener` and runs the background jobs until `cancel` fires, then
    /// finishes in-flight requests and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        // Before anything reads (returns at once where `opsdeck serve` already did).
        self.recover_rollups().await;
        let jobs = crate::jobs::spawn_all(self.state.clone(), cancel.clone());
        // The writer outlives the HTTP server: requests still in flight during a graceful
        // shutdown get their events committed before it stops.
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(writer::run(
            self.state.store.clone(),
            self.writer_inbox,
            self.state.quota_watch.clone(),
            writer::DedupSettings::from_config(&self.state.config.ingest),
            writer_stop.clone().cancelled_owned(),
        ));
        let fanout = (!self.state.config.server.redis_url.is_empty()).then(|| {
            crate::realtime::fanout::spawn(
                &self.state.config.server.redis_url,
                self.state.events.clone(),
                cancel.clone(),
            )
        });
        let stop = self.state.realtime.stop.clone();
        let cancelled = cancel.clone();
        tokio::spawn(async move {
            cancelled.cancelled().await;
            stop.cancel();
        });
        let router = crate::http::router(self.state.clone());
        let result = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .await;
        cancel.cancel();
        writer_stop.cancel();
        let _ = writer.await;
        jobs.close();
        jobs.wait().await;
        if let Some(fanout) = fanout {
            let _ = fanout.await;
        }
        if let Err(e) = self.state.key_usage.flush(&self.state.store).await {
            tracing::warn!(error = %e, "could not record API key last-use times at shutdown");
        }
        self.state.store.close().await;
        result
    }
}

/// Opens (creating the data directory for SQLite) the configured store without migrating.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    open(config, true).await
}

/// Opens the configured store only if it already exists (for `backup`).
pub async fn open_existing_store(config: &Config) -> Result<Store, StartError> {
    open(config, false).await
}

async fn open(config: &Config, create_if_missing: bool) -> Result<Store, StartError> {
    let url = config.database_url();
    if create_if_missing && url.starts_with("sqlite://") {
        // 0700: the directory holds the database and, by default, the master key.
        crate::store::files::create_private_dir(&config.server.data_dir).map_err(|source| {
            StartError::DataDir {
                path: config.server.data_dir.display().to_string(),
                source,
            }
        })?;
    }
    let opts = ConnectOptions {
        max_connections: config.server.db_max_connections,
        create_if_missing,
        ..Default::default()
    };
    Ok(Store::connect(&url, &opts).await?)
}
