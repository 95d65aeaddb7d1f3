//! Demo simulators: local servers that speak the real wire formats of Stripe and the AI
//! providers, plus a traffic generator for the ingest API, so `opsdeck demo` exercises the
//! production code paths end to end. Each capability adds its simulator here.
//!
//! A simulator never writes to opsdeck's store directly: it only serves a provider API that a
//! real connector syncs from, or calls opsdeck's public HTTP API like a customer's app would.

pub mod gcp;
pub mod notify;
pub mod oauth;
pub mod providers;
pub mod providers_demo;
pub mod providers_extras;
pub mod smtp;
pub mod stripe;
pub mod stripe_demo;
pub mod usage;
pub mod webhook_receiver;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where a simulator can reach the running opsdeck.
#[derive(Debug, Clone)]
pub struct DemoContext {
    /// Base URL of the opsdeck server, e.g. `http://127.0.0.1:8080`.
    pub opsdeck_url: String,
    /// An API key with the `ingest` and `admin` scopes, as a customer's app and its operator
    /// would hold.
    pub api_key: String,
    /// Where the simulators report how far their history load has come, for the demo's
    /// progress bar.
    pub progress: Arc<DemoProgress>,
}

/// How far the usage history's backfill has come. Written by the usage simulator, read by the
/// demo's terminal; plain counters, so reading them never holds the simulator up.
#[derive(Debug, Default)]
pub struct DemoProgress {
    customers_total: AtomicU64,
    customers_queued: AtomicU64,
    events_sent: AtomicU64,
    done: AtomicBool,
}

/// A reading of [`DemoProgress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backfill {
    /// Customers whose history has been generated and queued for sending, of `total`.
    pub queued: u64,
    pub total: u64,
    /// Events posted to the ingest API so far.
    pub events: u64,
    pub done: bool,
}

impl DemoProgress {
    pub fn start(&self, customers: u64) {
        self.customers_total.store(customers, Ordering::Relaxed);
    }

    pub fn customer_queued(&self) {
        self.customers_queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sent(&self, events: u64) {
        self.events_sent.fetch_add(events, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub fn read(&self) -> Backfill {
        Backfill {
            queued: self.customers_queued.load(Ordering::Relaxed),
            total: self.customers_total.load(Ordering::Relaxed),
            events: self.events_sent.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Acquire),
        }
    }
}

/// One simulated provider or traffic source.
pub trait Simulator: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs until `cancel` fires.
    fn run(
        &self,
        ctx: DemoContext,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The simulators `opsdeck demo` starts, in order.
pub fn all() -> Vec<Box<dyn Simulator>> {
    vec![Box::new(usage::UsageSimulator)]
}

/// Starts every simulator, and the `extra` ones that needed setting up before the app (such
/// as the demo Stripe account), on `tracker`; returns their names for the startup banner.
pub fn start(
    ctx: &DemoContext,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
    extra: Vec<Box<dyn Simulator>>,
) -> Vec<&'static str> {
    all()
        .into_iter()
        .chain(extra)
        .map(|sim| {
            let name = sim.name();
            tracker.spawn(sim.run(ctx.clone(), cancel.clone()));
            name
        })
        .collect()
}
