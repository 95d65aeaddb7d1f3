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
use std::time::{Duration, Instant};

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

/// How far the usage history's load has come. Written by the usage simulator, read by the
/// demo's terminal; plain counters, so reading them never holds the simulator up.
#[derive(Debug, Default)]
pub struct DemoProgress {
    events_total: AtomicU64,
    events_loaded: AtomicU64,
    events_failed: AtomicU64,
    /// How many days back from today the history is loaded without a gap (the load goes
    /// newest day first), and how many days it covers in all.
    days_loaded: AtomicU64,
    days_total: AtomicU64,
    /// Milliseconds from the progress's creation to the first event sent, plus one (0: not
    /// yet), so the rate counts only the time spent loading.
    load_started_ms: AtomicU64,
    created: std::sync::OnceLock<Instant>,
    done: AtomicBool,
}

/// A reading of [`DemoProgress`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backfill {
    /// Events the history holds in all; 0 until it has been generated.
    pub total: u64,
    /// Events the ingest API acknowledged (stored, or recognised as already stored).
    pub loaded: u64,
    /// Events in requests given up on.
    pub failed: u64,
    pub days_loaded: u64,
    pub days_total: u64,
    /// Time spent loading so far (since the first request went out).
    pub loading_for: Duration,
    pub done: bool,
}

impl DemoProgress {
    fn clock(&self) -> Instant {
        *self.created.get_or_init(Instant::now)
    }

    /// The history is generated: `events` over `days`.
    pub fn start(&self, events: u64, days: u64) {
        self.clock();
        self.events_total.store(events, Ordering::Relaxed);
        self.days_total.store(days, Ordering::Relaxed);
    }

    /// The first request is going out.
    pub fn sending(&self) {
        let ms = self.clock().elapsed().as_millis() as u64 + 1;
        let _ = self
            .load_started_ms
            .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn loaded(&self, events: u64) {
        self.events_loaded.fetch_add(events, Ordering::Relaxed);
    }

    pub fn failed(&self, events: u64) {
        self.events_failed.fetch_add(events, Ordering::Relaxed);
    }

    /// Every day from today back to `days` ago (exclusive) is in.
    pub fn days_loaded(&self, days: u64) {
        self.days_loaded.fetch_max(days, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub fn read(&self) -> Backfill {
        let started = self.load_started_ms.load(Ordering::Relaxed);
        let loading_for = if started == 0 {
            Duration::ZERO
        } else {
            self.clock()
                .elapsed()
                .saturating_sub(Duration::from_millis(started - 1))
        };
        Backfill {
            total: self.events_total.load(Ordering::Relaxed),
            loaded: self.events_loaded.load(Ordering::Relaxed),
            failed: self.events_failed.load(Ordering::Relaxed),
            days_loaded: self.days_loaded.load(Ordering::Relaxed),
            days_total: self.days_total.load(Ordering::Relaxed),
            loading_for,
            done: self.done.load(Ordering::Acquire),
        }
    }
}

impl Backfill {
    /// Events per second since the first request, once there is something to divide.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.loading_for.as_secs_f64();
        (secs >= 0.5 && self.loaded > 0).then(|| self.loaded as f64 / secs)
    }

    /// Time left at the rate so far; `None` before there is a rate, or when done.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.total.saturating_sub(self.loaded + self.failed);
        if self.done || left == 0 {
            return None;
        }
        self.rate()
            .map(|r| Duration::from_secs_f64(left as f64 / r))
    }

    /// The line beside the bar: `"210,000 / 412,300 events · 18k/s · 11 s left · 183 of 365
    /// days"`, or what is still being prepared.
    pub fn summary(&self) -> String {
        use crate::web::format::count;
        if self.total == 0 {
            return if self.done {
                "no history sent".into()
            } else {
                "preparing the history".into()
            };
        }
        let mut out = format!("{} / {} events", count(self.loaded), count(self.total));
        if let Some(rate) = self.rate() {
            out.push_str(&format!(" · {}/s", compact(rate)));
        }
        if let Some(eta) = self.eta() {
            out.push_str(&format!(" · {} s left", eta.as_secs_f64().ceil() as u64));
        }
        out.push_str(&format!(
            " · {} of {} days",
            self.days_loaded, self.days_total
        ));
        if self.failed > 0 {
            out.push_str(&format!(" · {} failed", count(self.failed)));
        }
        out
    }
}

/// 950, 9.5k, 18k: a rate short enough for a progress line.
fn compact(x: f64) -> String {
    if x < 1_000.0 {
        format!("{x:.0}")
    } else if x < 10_000.0 {
        format!("{:.1}k", x / 1_000.0)
    } else {
        format!("{:.0}k", x / 1_000.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(loaded: u64, secs: u64) -> Backfill {
        Backfill {
            total: 400_000,
            loaded,
            failed: 0,
            days_loaded: 120,
            days_total: 365,
            loading_for: Duration::from_secs(secs),
            done: false,
        }
    }

    #[test]
    fn summary_says_what_is_loaded_how_fast_and_how_long_is_left() {
        let b = reading(100_000, 5);
        assert_eq!(b.rate(), Some(20_000.0));
        assert_eq!(b.eta(), Some(Duration::from_secs(15)));
        assert_eq!(
            b.summary(),
            "100,000 / 400,000 events · 20k/s · 15 s left · 120 of 365 days"
        );
    }

    #[test]
    fn summary_before_the_first_answer_and_once_done() {
        let mut b = reading(0, 0);
        b.total = 0;
        assert_eq!(b.summary(), "preparing the history");
        let b = reading(0, 0);
        assert_eq!((b.rate(), b.eta()), (None, None), "no rate from nothing");
        assert_eq!(b.summary(), "0 / 400,000 events · 120 of 365 days");
        let mut b = reading(399_000, 20);
        b.failed = 1_000;
        b.days_loaded = 365;
        b.done = true;
        assert_eq!(b.eta(), None);
        assert_eq!(
            b.summary(),
            "399,000 / 400,000 events · 20k/s · 365 of 365 days · 1,000 failed"
        );
    }

    #[test]
    fn progress_counts_what_the_simulator_reports() {
        let p = DemoProgress::default();
        assert_eq!(p.read().total, 0);
        p.start(1_000, 365);
        p.sending();
        p.loaded(600);
        p.failed(100);
        p.days_loaded(30);
        p.days_loaded(20); // never goes back
        let b = p.read();
        assert_eq!(
            (
                b.total,
                b.loaded,
                b.failed,
                b.days_loaded,
                b.days_total,
                b.done
            ),
            (1_000, 600, 100, 30, 365, false)
        );
        p.finish();
        assert!(p.read().done);
    }

    #[test]
    fn rates_are_short() {
        assert_eq!(compact(950.4), "950");
        assert_eq!(compact(9_540.0), "9.5k");
        assert_eq!(compact(18_200.0), "18k");
    }
}
