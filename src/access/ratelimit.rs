//! Rate limits: failed sign-ins per account and per client address (a sliding window of
//! failures, so successful sign-ins never count), and a general per-credential limit on the
//! JSON API (a GCRA limiter from `governor`). Both live in memory: they protect this process,
//! and a restart forgetting them is acceptable.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Bounds memory under a spray of distinct keys; the oldest windows are dropped first.
const MAX_TRACKED_KEYS: usize = 100_000;

/// Failed sign-in tracker.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a sign-in attempt: `Err(seconds)` when any of `keys` has used up its failures in
    /// the current window; otherwise the attempt is counted as a failure *now*, under the same
    /// lock, so parallel guesses cannot all pass the check before any of them is recorded. A
    /// successful attempt takes its count back with [`LoginLimiter::succeeded`].
    pub fn begin(&self, keys: &[&str]) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = map.get_mut(*key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() >= self.max_failures {
                    // Free again once the oldest failure that still counts leaves the window.
                    let oldest = times[times.len() - self.max_failures];
                    wait = wait.max(self.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait.as_secs().max(1));
        }
        if map.len() >= MAX_TRACKED_KEYS {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for key in keys {
            map.entry((*key).to_string()).or_default().push_back(now);
        }
        Ok(())
    }

    /// The attempt begun for `account` and `others` succeeded: the account's failures are
    /// cleared, and the provisional count on the other keys (the client address) is taken back.
    pub fn succeeded(&self, account: &str, others: &[&str]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(account);
        for key in others {
            if let Some(times) = map.get_mut(*key) {
                times.pop_back();
            }
        }
    }
}

/// Per-credential request limit for `/api`.
pub struct ApiLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl ApiLimiter {
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// `Err(seconds)` to wait when `key` is over its limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }

    /// Forgets keys whose buckets are full again; called by the housekeeping job.
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures_lock_out_after_the_limit() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.begin(&["a", "ip"]).is_ok());
        }
        let wait = l.begin(&["a"]).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.begin(&["ip"]).is_err());
        assert!(l.begin(&["b"]).is_ok());
    }

    #[test]
    fn success_takes_its_count_back() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        l.begin(&["a", "ip"]).unwrap();
        l.begin(&["b", "ip"]).unwrap();
        l.succeeded("b", &["ip"]);
        assert!(
            l.begin(&["c", "ip"]).is_ok(),
            "the address has one failure, not two"
        );
        l.succeeded("c", &["ip"]);
        l.begin(&["a", "x"]).unwrap();
        assert!(l.begin(&["a", "y"]).is_err(), "account a has failed twice");
    }

    #[test]
    fn failures_expire_with_the_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(1));
        l.begin(&["a"]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.begin(&["a"]).is_ok());
    }

    #[test]
    fn api_limiter_counts_per_key() {
        let l = ApiLimiter::new(2);
        assert!(l.check("k1").is_ok());
        assert!(l.check("k1").is_ok());
        assert!(l.check("k1").unwrap_err() >= 1);
        assert!(l.check("k2").is_ok());
    }
}
