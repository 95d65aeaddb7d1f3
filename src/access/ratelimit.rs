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
    /// lock, so parallel guesses cannot all pass the check before any of them is recorded.
    /// The returned guard takes exactly that count back when dropped, unless
    /// [`LoginAttempt::failed`] confirms it; so a success, a server error or an abandoned
    /// request never counts against anyone.
    pub fn begin<'a>(&'a self, keys: &[&str]) -> Result<LoginAttempt<'a>, u64> {
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
        Ok(LoginAttempt {
            limiter: self,
            at: now,
            keys: keys.iter().map(|k| (*k).to_string()).collect(),
            confirmed: false,
        })
    }

    /// Clears every failure recorded for `key` (an account that just signed in).
    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A sign-in attempt in progress, provisionally counted as a failure.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    at: Instant,
    keys: Vec<String>,
    confirmed: bool,
}

impl LoginAttempt<'_> {
    /// The credentials were wrong: the failure stays counted.
    pub fn failed(mut self) {
        self.confirmed = true;
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if self.confirmed {
            return;
        }
        let mut map = self
            .limiter
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if let Some(times) = map.get_mut(key)
                && let Some(i) = times.iter().rposition(|t| *t == self.at)
            {
                times.remove(i);
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

/// Per-credential ingest limit, counted in events: a batch of 500 costs 500, so one app sending
/// large batches and one sending single events are held to the same rate. The bucket holds one
/// second's worth, so a burst up to the per-second rate passes at once.
pub struct EventLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl EventLimiter {
    pub fn new(per_second: u32) -> Self {
        let n = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(n)),
        }
    }

    /// Charges `events` (at least one: an empty or refused request still costs its handling)
    /// to `key`; `Err(seconds)` to wait when the key is over its rate. A batch larger than the
    /// whole bucket cannot pass at any time; the configuration refuses that (the rate must be
    /// at least `ingest.max_events`), so here it is treated as an ordinary refusal.
    pub fn check(&self, key: &str, events: usize) -> Result<(), u64> {
        let n = u32::try_from(events.max(1))
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&key.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            Err(_) => Err(1),
        }
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
            l.begin(&["a", "ip"]).unwrap().failed();
        }
        let wait = l.begin(&["a"]).err().unwrap();
        assert!((1..=60).contains(&wait));
        assert!(l.begin(&["ip"]).is_err());
        assert!(l.begin(&["b"]).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_and_unconfirmed_ones_are_taken_back() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let first = l.begin(&["a", "ip"]).unwrap();
        let second = l.begin(&["b", "ip"]).unwrap();
        assert!(
            l.begin(&["c", "ip"]).is_err(),
            "two attempts in flight use up the address"
        );
        drop(second); // succeeded, or the request was abandoned
        first.failed();
        let third = l.begin(&["c", "ip"]).unwrap();
        assert!(l.begin(&["d", "ip"]).is_err());
        drop(third);
        assert!(
            l.begin(&["d", "ip"]).is_ok(),
            "only the confirmed failure remains"
        );
    }

    #[test]
    fn failures_expire_with_the_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(1));
        l.begin(&["a"]).unwrap().failed();
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.begin(&["a"]).is_ok());
    }

    #[test]
    fn event_limiter_counts_events_not_requests() {
        let l = EventLimiter::new(1000);
        // One second's worth passes at once, in any split...
        assert!(l.check("k1", 600).is_ok());
        assert!(l.check("k1", 400).is_ok());
        // ...and the next event waits about a millisecond, reported as a whole second.
        assert_eq!(l.check("k1", 1), Err(1));
        // Another key has its own bucket; an empty request still costs one.
        assert!(l.check("k2", 0).is_ok());
        assert!(l.check("k2", 999).is_ok());
        assert!(l.check("k2", 1).is_err());
        // More than the bucket holds can never pass.
        assert!(EventLimiter::new(10).check("k3", 11).is_err());
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
