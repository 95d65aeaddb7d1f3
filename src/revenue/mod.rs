//! Revenue from Stripe. `stripe` speaks Stripe's wire format (typed client, objects, webhook
//! signatures, conversion into the engine's terms); `records` stores what Stripe sent and `states`
//! the subscription states valued for the engine; `sync`
//! backfills and catches up; `events` applies webhook and catch-up events; `mrr` is the pure
//! MRR engine and `history` runs it over the stored subscription states; `metrics` turns the
//! history and payments into figures and `margin` sets net revenue against provider cost.

pub mod customers;
pub mod delta;
pub mod drill;
pub mod events;
pub mod history;
pub mod margin;
pub mod metrics;
pub mod mrr;
pub mod plans;
pub mod records;
pub mod routes;
pub mod service;
pub mod states;
pub mod stripe;
pub mod sync;

use crate::store::StoreError;
use stripe::client::StripeError;

/// Failures of the revenue domain; the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum RevenueError {
    #[error("{0}")]
    Invalid(String),
    #[error("malformed Stripe data: {0}")]
    Malformed(String),
    #[error("Stripe is not connected: set stripe.secret_key")]
    NotConfigured,
    #[error("a Stripe sync is already running")]
    Busy,
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Plan assignment from subscriptions.
    #[error(transparent)]
    Usage(#[from] crate::usage::UsageError),
    /// Provider cost, for margin.
    #[error(transparent)]
    Costs(#[from] crate::costs::CostsError),
}

impl From<crate::webhooks::queue::QueueError> for RevenueError {
    fn from(e: crate::webhooks::queue::QueueError) -> Self {
        match e {
            crate::webhooks::queue::QueueError::Store(s) => RevenueError::Store(s),
            other => RevenueError::Invalid(other.to_string()),
        }
    }
}
