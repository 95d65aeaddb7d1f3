//! Stripe's wire format: webhook signatures now; the typed list client and objects next.

pub mod client;
pub mod convert;
pub mod objects;
pub mod signature;
