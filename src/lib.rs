//! opsdeck: a self-hosted operations cockpit for SaaS teams. The binary (`main.rs`) only parses
//! the command line; everything else lives here so tests can start the whole application
//! in-process. See ARCHITECTURE.md for the map.

pub mod access;
pub mod alerts;
pub mod app;
pub mod cli;
pub mod config;
pub mod costs;
pub mod events;
pub mod health;
pub mod http;
pub mod jobs;
pub mod money;
pub mod net;
pub mod overview;
pub mod realtime;
pub mod revenue;
pub mod simulators;
pub mod store;
pub mod tokens;
pub mod usage;
pub mod web;
pub mod webhooks;
