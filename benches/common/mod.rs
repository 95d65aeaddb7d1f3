//! Helpers shared by the benchmark binaries (knobs from the environment, percentiles, memory).

#![allow(dead_code)] // each bench uses its own subset

use std::time::{Duration, Instant};

/// A `usize` knob from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory in MiB from a `/proc/<pid>/status` file (Linux).
fn status_rss_mb(path: &str) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}

/// This process's resident memory in MiB (Linux), 0 where unknown.
pub fn rss_mb() -> f64 {
    status_rss_mb("/proc/self/status").unwrap_or(0.0)
}

/// The server a process-level benchmark starts (`opsdeck serve` as its own process), killed
/// and reaped when dropped, so a failed run leaves nothing behind.
pub struct ServerProcess(pub std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ServerProcess {
    /// The server's resident memory in MiB (Linux), NaN where unknown.
    pub fn rss_mb(&self) -> f64 {
        status_rss_mb(&format!("/proc/{}/status", self.0.id())).unwrap_or(f64::NAN)
    }
}

/// The `p` quantile (0–1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A route to time: its label, and the path (with query) of request `i`.
pub type Route = (&'static str, Box<dyn Fn(usize) -> String>);

/// Times `requests` GETs of each route over HTTP (at most 10 minutes in all) and prints p50,
/// p95, p99 and the share under 10 ms.
pub async fn time_routes(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    routes: &[Route],
    requests: usize,
) {
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>10}",
        "route", "p50 ms", "p95 ms", "p99 ms", "< 10 ms"
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    for (name, path) in routes {
        let mut times = Vec::with_capacity(requests);
        for i in 0..requests {
            if Instant::now() > deadline {
                break;
            }
            let t = Instant::now();
            let res = client
                .get(format!("{base}{}", path(i)))
                .bearer_auth(key)
                .send()
                .await
                .expect("request");
            let status = res.status();
            let _ = res.bytes().await;
            assert!(status.is_success(), "{name}: {status}");
            times.push(t.elapsed());
        }
        times.sort();
        let under = times
            .iter()
            .filter(|d| **d < Duration::from_millis(10))
            .count();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<28} {:>9.2} {:>9.2} {:>9.2} {:>9.0}%",
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.95)),
            ms(percentile(&times, 0.99)),
            under as f64 * 100.0 / times.len().max(1) as f64
        );
    }
}

/// UTC milliseconds as RFC 3339.
pub fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
