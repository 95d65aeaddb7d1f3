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
