//! Rate limits: failed sign-ins (a sliding window of failures, so successful sign-ins never
//! count), and a general per-credential limit on the JSON API (a GCRA limiter from
//! `governor`). Both live in memory: they protect this process, and a restart forgetting them
//! is acceptable.
//!
//! Sign-in failures are counted per client address (across every account it tries) and per
//! account, with very different limits. The address limit is what stops one guesser; the
//! account limit is only a ceiling against guessing spread over many addresses, set far above
//! the address limit so that one address's failures can never lock the account's owner out
//! from another address.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Bounds memory under a spray of distinct keys; the oldest windows are dropped first.
const MAX_TRACKED_KEYS: usize = 100_000;

/// How many times the per-address limit one account may fail, from all addresses together,
/// before it is refused everywhere: 100 a minute with the defaults, more than a person
/// mistyping from any number of places, far fewer than a guessing campaign needs.
pub const ACCOUNT_CEILING_FACTOR: u32 = 20;

/// Failed sign-in tracker.
pub struct LoginLimiter {
    per_address: usize,
    per_account: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `max_failures` per client address in `window`, and [`ACCOUNT_CEILING_FACTOR`] times
    /// that per account.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        let per_address = max_failures.max(1);
        Self {
            per_address: per_address as usize,
            per_account: per_address.saturating_mul(ACCOUNT_CEILING_FACTOR) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a sign-in attempt on `account` from `address`: `Err(seconds)` when the address
    /// or the account has used up its failures in the current window; otherwise the attempt
    /// is counted as a failure of both *now*, under the same lock, so parallel guesses cannot
    /// all pass the check before any of them is recorded. The returned guard takes exactly
    /// that count back when dropped, unless [`LoginAttempt::failed`] confirms it; so a
    /// success, a server error or an abandoned request never counts against anyone.
    pub fn begin<'a>(&'a self, address: &str, account: &str) -> Result<LoginAttempt<'a>, u64> {
        let keys = [
            (format!("address:{address}"), self.per_address),
            (format!("account:{account}"), self.per_account),
        ];
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, max) in &keys {
            if let Some(times) = map.get_mut(key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() >= *max {
                    // Free again once the oldest failure that still counts leaves the window.
                    let oldest = times[times.len() - max];
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
        for (key, _) in &keys {
            map.entry(key.clone()).or_default().push_back(now);
        }
        Ok(LoginAttempt {
            limiter: self,
            at: now,
            keys: keys.into_iter().map(|(k, _)| k).collect(),
            confirmed: false,
        })
    }

    /// Clears every failure recorded against `account` (it just signed in). The address's
    /// failures stay: a guesser who also owns an account must not reset its own limit.
    pub fn clear_account(&self, account: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("account:{account}"));
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
            .map_err(|not_until| retry_after(&not_until))
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
            Ok(Err(not_until)) => Err(retry_after(&not_until)),
            Err(_) => Err(1),
        }
    }

    /// Forgets keys whose buckets are full again; called by the housekeeping job.
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The whole seconds a refused caller should wait, at least one: the clock may pass
/// `not_until` between the refusal and this reading (a loaded machine), and `Retry-After: 0`
/// would invite an immediate retry of a request just refused.
fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_limited_across_accounts() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for account in ["a", "b", "c"] {
            l.begin("ip1", account).unwrap().failed();
        }
        let wait = l.begin("ip1", "a").err().unwrap();
        assert!((1..=60).contains(&wait));
        assert!(
            l.begin("ip1", "d").is_err(),
            "every account, from that address"
        );
        assert!(
            l.begin("ip2", "a").is_ok(),
            "another address is not limited"
        );
    }

    #[test]
    fn one_address_cannot_lock_an_account_out_but_many_can_only_up_to_the_ceiling() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            l.begin("attacker", "admin").unwrap().failed();
        }
        assert!(l.begin("attacker", "admin").is_err());
        // The owner, from elsewhere, still gets to try (and succeeds: dropped unconfirmed).
        drop(l.begin("office", "admin").unwrap());
        // Spread over addresses, the account takes 20 times the address limit, then stops.
        let ceiling = 3 * ACCOUNT_CEILING_FACTOR as usize;
        for n in 3..ceiling {
            l.begin(&format!("bot{}", n / 3), "admin").unwrap().failed();
        }
        assert!(l.begin("office", "admin").is_err(), "the ceiling holds");
        assert!(l.begin("office", "other").is_ok(), "for that account only");
        // Signing in clears the account's count, never an address's.
        l.clear_account("admin");
        assert!(l.begin("office", "admin").is_ok());
        assert!(l.begin("attacker", "admin").is_err());
    }

    #[test]
    fn attempts_in_flight_count_and_unconfirmed_ones_are_taken_back() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let first = l.begin("ip", "a").unwrap();
        let second = l.begin("ip", "b").unwrap();
        assert!(
            l.begin("ip", "c").is_err(),
            "two attempts in flight use up the address"
        );
        drop(second); // succeeded, or the request was abandoned
        first.failed();
        let third = l.begin("ip", "c").unwrap();
        assert!(l.begin("ip", "d").is_err());
        drop(third);
        assert!(
            l.begin("ip", "d").is_ok(),
            "only the confirmed failure remains"
        );
    }

    #[test]
    fn failures_expire_with_the_window() {
        let l = LoginLimiter::new(1, Duration::from_millis(1));
        l.begin("ip", "a").unwrap().failed();
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.begin("ip", "a").is_ok());
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
