//! Placeholder: the demo's usage simulator (being written).

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use super::{DemoContext, Simulator};
use crate::config::Config;

/// Plans and endpoint categories of the demo's simulated SaaS.
pub fn configure(_config: &mut Config) {}

#[derive(Default)]
pub struct UsageSimulator;

impl Simulator for UsageSimulator {
    fn name(&self) -> &'static str {
        "usage"
    }
    fn run(
        &self,
        _ctx: DemoContext,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { cancel.cancelled().await })
    }
}
