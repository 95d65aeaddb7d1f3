//! The demo's usage traffic: the plans and endpoint categories of a simulated referral platform
//! (`configure`), and [`UsageSimulator`], which plays that platform's backend calling opsdeck's
//! public API like a real customer app would.
//!
//! The simulator owns a deterministic population of ~500 customers (seeded RNG: signup dates,
//! plan, churn, how hard each one uses its plan this month). On start it puts every customer on
//! its plan (`PUT /api/v1/customers/{id}/plan`) while it generates the year's history, then
//! backfills those 12 months of `api.request` and `provider.usage` events through
//! `POST /api/v1/events`, newest day first (the dashboard's recent weeks fill in first, and the
//! year is complete when the bar is), and keeps a trickle of live traffic going until the demo
//! stops. The history is a pure function of (seed, now) and event ids are derived from
//! customer, day and position, so a re-sent batch is deduplicated, never counted twice.
//!
//! Volumes are sized so that the history stays around 200k events while this month's quota
//! states come out as a believable mix: most customers `ok`, about a tenth in
//! `warning`/`critical`, a few `over` or `suspended`. Every event is one row the ingest writer
//! stores and folds into rollups, so the volume sets how long the demo's load takes: ~460k
//! events took 54 s to load on a busy 2-core machine, and a newcomer should see the year within
//! 30 s of starting the demo.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{DemoContext, Simulator};
use crate::config::{Config, DecimalText, PlanConfig};

/// Seed of the demo population; any value gives a complete, valid demo.
pub(super) const SEED: u64 = 0x6f70_7364_6563_6b01;
const CUSTOMERS: u32 = 500;
/// Days of history, today included.
const HISTORY_DAYS: i64 = 365;
/// The `source` of every event: the customer app whose backend reports usage.
const SOURCE: &str = "referral-platform";
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Ingest limits are 1,000 events and 1 MiB per request; stay a little under the byte limit.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 960 * 1024;
/// Concurrent plan assignments and concurrent backfill requests.
const PLAN_WORKERS: usize = 16;
const SENDERS: usize = 3;
/// Retries of one request when opsdeck is unreachable, rate limiting (429) or failing (5xx).
const MAX_RETRIES: u32 = 5;
/// How long to wait for the server to answer its first request.
const STARTUP_WAIT: Duration = Duration::from_secs(10);
const LIVE_EVERY: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// This month's pace is the month-to-date target spread over the days elapsed, but over at
/// least this many (weighted) days: early in a month the states are milder rather than the
/// first day carrying a month of traffic.
const MIN_PACE_DAYS: f64 = 5.0;
/// Older months carry less traffic (the platform, and each customer on it, grew): the pace
/// decays by e^(-days before this month / DECAY_DAYS).
const DECAY_DAYS: f64 = 200.0;

// ---------------------------------------------------------------------------------------------
// Plans and endpoint categories
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Tier {
    Starter,
    Growth,
    Scale,
}

pub(super) struct PlanSpec {
    pub(super) id: &'static str,
    name: &'static str,
    pub(super) price: &'static str,
    api_calls: u64,
    credits: u64,
    overage_per_1k_calls: &'static str,
}

/// Quotas are small next to a real platform's because every call of the history is one event
/// to ingest: they are sized against the generator's volumes (see [`Customer::call_share`]).
/// Overage is priced per 1,000 calls so that customers past their quota owe visible amounts.
const PLANS: [PlanSpec; 3] = [
    PlanSpec {
        id: "starter",
        name: "Starter",
        price: "8.00",
        api_calls: 100,
        credits: 300,
        overage_per_1k_calls: "50.00",
    },
    PlanSpec {
        id: "growth",
        name: "Growth",
        price: "26.00",
        api_calls: 400,
        credits: 1_500,
        overage_per_1k_calls: "37.50",
    },
    PlanSpec {
        id: "scale",
        name: "Scale",
        price: "68.00",
        api_calls: 1_200,
        credits: 6_000,
        overage_per_1k_calls: "25.00",
    },
];

impl Tier {
    pub(super) fn spec(self) -> &'static PlanSpec {
        match self {
            Tier::Starter => &PLANS[0],
            Tier::Growth => &PLANS[1],
            Tier::Scale => &PLANS[2],
        }
    }
}

/// Path prefix → category, as a referral platform's API would be grouped.
const CATEGORIES: [(&str, &str); 6] = [
    ("/api/referrals*", "Referrals"),
    ("/api/campaigns*", "Campaigns"),
    ("/api/auth", "Auth"),
    ("/api/webhooks*", "Webhooks"),
    ("/api/media*", "Media generation"),
    ("/api/users", "Users"),
];

/// Declares the demo's plans and endpoint categories; called before the app is built.
pub fn configure(config: &mut Config) {
    for spec in &PLANS {
        // Replace rather than duplicate, so calling this twice stays valid.
        config.plans.retain(|p| p.id != spec.id);
        config.plans.push(PlanConfig {
            id: spec.id.into(),
            name: spec.name.into(),
            price: DecimalText(spec.price.into()),
            currency: "usd".into(),
            api_calls: spec.api_calls,
            provider_credits: spec.credits,
            overage_per_1k_calls: DecimalText(spec.overage_per_1k_calls.into()),
            hard_limit_percent: 120,
        });
    }
    for (prefix, name) in CATEGORIES {
        config
            .usage
            .endpoint_categories
            .insert(prefix.into(), name.into());
    }
}

/// One route of the simulated platform's API.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    /// The category `configure` maps the path to ("Other" when none does).
    category: &'static str,
    /// Relative frequency.
    weight: u32,
    /// Median latency on a normal day, ms.
    median_ms: f64,
    /// Status of a success.
    ok: u16,
}

const fn ep(
    method: &'static str,
    path: &'static str,
    category: &'static str,
    weight: u32,
    median_ms: f64,
    ok: u16,
) -> Endpoint {
    Endpoint {
        method,
        path,
        category,
        weight,
        median_ms,
        ok,
    }
}

/// Paths are route templates, as an app's request logger reports them, so the Usage page's
/// endpoint list stays short. Tracking calls dominate, as on any referral platform.
#[rustfmt::skip]
const ENDPOINTS: &[Endpoint] = &[
    ep("POST", "/api/referrals/track", "Referrals", 160, 45.0, 202),
    ep("GET", "/api/referrals", "Referrals", 90, 70.0, 200),
    ep("POST", "/api/referrals", "Referrals", 60, 85.0, 201),
    ep("GET", "/api/referrals/:id", "Referrals", 60, 40.0, 200),
    ep("POST", "/api/referrals/:id/convert", "Referrals", 35, 95.0, 200),
    ep("GET", "/api/referrals/stats", "Referrals", 40, 140.0, 200),
    ep("GET", "/api/campaigns", "Campaigns", 60, 80.0, 200),
    ep("GET", "/api/campaigns/:id", "Campaigns", 45, 55.0, 200),
    ep("POST", "/api/campaigns", "Campaigns", 10, 120.0, 201),
    ep("PATCH", "/api/campaigns/:id", "Campaigns", 10, 100.0, 200),
    ep("GET", "/api/campaigns/:id/leaderboard", "Campaigns", 30, 180.0, 200),
    ep("POST", "/api/auth", "Auth", 20, 150.0, 200),
    ep("POST", "/api/auth/token", "Auth", 70, 110.0, 200),
    ep("POST", "/api/auth/refresh", "Auth", 45, 60.0, 200),
    ep("GET", "/api/webhooks", "Webhooks", 15, 50.0, 200),
    ep("POST", "/api/webhooks", "Webhooks", 8, 90.0, 201),
    ep("DELETE", "/api/webhooks/:id", "Webhooks", 3, 60.0, 204),
    ep("POST", "/api/webhooks/:id/test", "Webhooks", 6, 400.0, 200),
    ep("POST", "/api/media/videos", "Media generation", 20, 1200.0, 202),
    ep("POST", "/api/media/images", "Media generation", 25, 900.0, 202),
    ep("POST", "/api/media/speech", "Media generation", 15, 700.0, 202),
    ep("GET", "/api/media/jobs/:id", "Media generation", 50, 35.0, 200),
    ep("GET", "/api/users", "Users", 35, 65.0, 200),
    ep("GET", "/api/users/:id", "Users", 40, 30.0, 200),
    ep("POST", "/api/users", "Users", 20, 120.0, 201),
    ep("PATCH", "/api/users/:id", "Users", 10, 80.0, 200),
    // Uncategorised: health probes and a route nobody has mapped yet.
    ep("GET", "/health", "Other", 60, 3.0, 200),
    ep("GET", "/api/version", "Other", 10, 4.0, 200),
    ep("GET", "/api/rewards", "Other", 15, 70.0, 200),
];

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// One CloudEvents 1.0 event as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Event {
    specversion: &'static str,
    id: String,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: String,
    #[serde(serialize_with = "rfc3339_ms")]
    time: i64,
    data: Data,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Data {
    Request {
        endpoint: &'static str,
        method: &'static str,
        status: u16,
        duration_ms: f64,
    },
    Usage {
        provider: &'static str,
        sku: &'static str,
        unit: &'static str,
        quantity: u32,
        job_id: String,
    },
}

impl Event {
    fn new(id: String, subject: &str, time: i64, data: Data) -> Self {
        let kind = match data {
            Data::Request { .. } => "api.request",
            Data::Usage { .. } => "provider.usage",
        };
        Event {
            specversion: "1.0",
            id,
            source: SOURCE,
            kind,
            subject: subject.to_string(),
            time,
            data,
        }
    }
}

fn rfc3339_ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    let t = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(*ms);
    s.serialize_str(&format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// A job on an AI provider, reported as one `provider.usage` event.
#[derive(Debug, Clone, Copy)]
struct Job {
    provider: &'static str,
    sku: &'static str,
    unit: &'static str,
    quantity: u32,
}

// ---------------------------------------------------------------------------------------------
// Randomness helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64: decorrelates seeds derived from small integers (customer index, day number).
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Standard normal (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Long-tailed positive values around `median` (latencies, job sizes, activity).
fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Multiplicative day-to-day noise with mean 1.
fn noise(rng: &mut StdRng) -> f64 {
    const SIGMA: f64 = 0.3;
    (SIGMA * normal(rng) - SIGMA * SIGMA / 2.0).exp()
}

/// `x` rounded up or down at random so that the expectation is `x`.
fn stochastic_round(rng: &mut StdRng, x: f64) -> u32 {
    let floor = x.max(0.0).floor();
    floor as u32 + u32::from(rng.random::<f64>() < x - floor)
}

fn pick_weighted<'a, T>(rng: &mut StdRng, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut r = rng.random_range(0..total.max(1));
    for item in items {
        let w = weight(item);
        if r < w {
            return item;
        }
        r -= w;
    }
    &items[items.len() - 1]
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [(T, u32)]) -> &'a T {
    &pick_weighted(rng, items, |(_, w)| *w).0
}

// ---------------------------------------------------------------------------------------------
// Calendar
// ---------------------------------------------------------------------------------------------

/// Business days carry more traffic than weekends; the mean over a week is 1.
const WEEKDAY: [f64; 7] = [1.15, 1.15, 1.15, 1.15, 1.15, 0.63, 0.62];
/// Traffic by hour (UTC): customers in Europe and the Americas.
const HOURS: [u32; 24] = [
    4, 3, 2, 2, 2, 3, 4, 6, 8, 9, 9, 9, 9, 10, 10, 10, 10, 9, 8, 7, 6, 5, 5, 4,
];

fn pick_hour(rng: &mut StdRng) -> i64 {
    let mut r = rng.random_range(0..HOURS.iter().sum::<u32>());
    for (hour, w) in HOURS.iter().enumerate() {
        if r < *w {
            return hour as i64;
        }
        r -= w;
    }
    23
}

/// "Now" and the calendar facts derived from it, fixed for one backfill so the history is a
/// pure function of (seed, now).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    seed: u64,
    now_ms: i64,
    /// Day numbers (days since 1970-01-01, UTC).
    today: i64,
    month_start: i64,
}

impl Clock {
    pub(super) fn new(seed: u64, now_ms: i64) -> Self {
        // The same calendar month the quota route uses.
        let (month_start_ms, _) = crate::usage::quota::month_of(now_ms);
        Clock {
            seed,
            now_ms,
            today: now_ms.div_euclid(DAY_MS),
            month_start: month_start_ms.div_euclid(DAY_MS),
        }
    }

    fn first_day(&self) -> i64 {
        self.today - HISTORY_DAYS + 1
    }

    /// Traffic weight of a calendar day; today counts only for the part already elapsed.
    fn day_weight(&self, day: i64) -> f64 {
        // Day 0 (1970-01-01) was a Thursday; index 0 is Monday.
        let weekday = WEEKDAY[(day + 3).rem_euclid(7) as usize];
        if day == self.today {
            weekday * (self.now_ms - day * DAY_MS) as f64 / DAY_MS as f64
        } else {
            weekday
        }
    }

    /// Platform-wide bad days (a deploy gone wrong, a provider outage): about ten a year,
    /// tied to the calendar date so they stay put from one run to the next.
    fn incident(&self, day: i64) -> bool {
        mix(self.seed ^ 0x1c1d, day as u64) % 1000 < 30
    }

    /// A moment of `day`, following the daily traffic curve, never later than now.
    fn time_in(&self, rng: &mut StdRng, day: i64) -> i64 {
        let start = day * DAY_MS;
        let end = (start + DAY_MS).min(self.now_ms);
        for _ in 0..8 {
            let t = start + pick_hour(rng) * HOUR_MS + rng.random_range(0..HOUR_MS);
            if t < end {
                return t;
            }
        }
        // Early today most hours are still ahead: anywhere in the part already past.
        start + rng.random_range(0..(end - start).max(1))
    }
}

fn yyyymmdd(day: i64) -> String {
    let d = (OffsetDateTime::UNIX_EPOCH + time::Duration::days(day)).date();
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Customer {
    pub(super) index: u32,
    pub(super) id: String,
    pub(super) tier: Tier,
    /// Day numbers: first day with traffic, and the last one for churned customers.
    pub(super) signup_day: i64,
    pub(super) churn_day: Option<i64>,
    /// This month's month-to-date use of the plan's call quota (1.0 = all of it): this is what
    /// decides the quota state, so it is drawn from the state mix the demo should show.
    call_share: f64,
    /// The same for provider credits; 0 for customers that run no AI jobs.
    credit_share: f64,
    /// Multiplier on the 4xx rate: some integrations are sloppier than others.
    error_prone: f64,
}

impl Customer {
    pub(super) fn uses_media(&self) -> bool {
        self.credit_share > 0.0
    }

    fn call_target(&self) -> f64 {
        self.call_share * self.tier.spec().api_calls as f64
    }

    fn credit_target(&self) -> f64 {
        self.credit_share * self.tier.spec().credits as f64
    }

    fn active_on(&self, day: i64) -> bool {
        day >= self.signup_day && self.churn_day.is_none_or(|c| day <= c)
    }
}

/// The demo population, `cus_demo_0001` upwards.
pub(super) fn customers(seed: u64, clock: &Clock) -> Vec<Customer> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=CUSTOMERS)
        .map(|index| customer(&mut rng, index, clock))
        .collect()
}

fn customer(rng: &mut StdRng, index: u32, clock: &Clock) -> Customer {
    let tier = *pick(
        rng,
        &[(Tier::Starter, 55), (Tier::Growth, 30), (Tier::Scale, 15)],
    );
    // Signups grow over the year: density ∝ e^(k·x) on x ∈ [0, 1] (0 = a year ago), sampled by
    // inverting its distribution function.
    const GROWTH: f64 = 1.5;
    let x = (1.0 + rng.random::<f64>() * (GROWTH.exp() - 1.0)).ln() / GROWTH;
    let age = ((1.0 - x) * (HISTORY_DAYS - 1) as f64).round() as i64;
    let signup_day = clock.today - age;
    // About a fifth of the customers older than six weeks have left.
    let churn_day = (age > 45 && rng.random_bool(0.22))
        .then(|| rng.random_range(signup_day + 30..=clock.today - 3));

    // This month's peak use of the plan (the higher of calls and credits), by target state:
    // ok, warning (80 %), critical (90 %), over (100 %), suspended (120 %). Churned customers
    // send nothing this month, so they all end up `ok` on top of these.
    let peak = match rng.random::<f64>() {
        r if r < 0.79 => lognormal(rng, 0.2, 0.7).clamp(0.02, 0.72),
        r if r < 0.865 => rng.random_range(0.81..0.88),
        r if r < 0.93 => rng.random_range(0.91..0.98),
        r if r < 0.975 => rng.random_range(1.02..1.16),
        _ => rng.random_range(1.23..1.45),
    };
    let uses_media = rng.random_bool(0.85);
    let (call_share, credit_share) = if uses_media && rng.random_bool(0.35) {
        // A heavy video user: credits decide the state.
        (peak * rng.random_range(0.3..0.9), peak)
    } else if uses_media {
        (peak, peak * rng.random_range(0.2..0.9))
    } else {
        (peak, 0.0)
    };
    Customer {
        index,
        id: format!("cus_demo_{index:04}"),
        tier,
        signup_day,
        churn_day,
        call_share,
        credit_share,
        error_prone: lognormal(rng, 1.0, 0.5).clamp(0.3, 4.0),
    }
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// Video generation jobs are billed in credits; their size varies a lot.
fn credit_job(rng: &mut StdRng) -> Job {
    let quantity = lognormal(rng, 45.0, 0.8).clamp(10.0, 400.0).round() as u32;
    let (provider, sku) = *pick(
        rng,
        &[
            (("luma", "v2"), 33),
            (("luma", "v1"), 17),
            (("kling", "v2"), 29),
            (("kling", "v1"), 19),
            // Not in the shipped price list: the Costs page lists it as unpriced.
            (("piapi", "midjourney"), 2),
        ],
    );
    Job {
        provider,
        sku,
        unit: "credit",
        quantity,
    }
}

fn image_job(rng: &mut StdRng) -> Job {
    Job {
        provider: "bfl",
        sku: "flux",
        unit: "image",
        quantity: *pick(rng, &[(1, 50), (2, 20), (3, 10), (4, 20)]),
    }
}

fn speech_job(rng: &mut StdRng) -> Job {
    Job {
        provider: "elevenlabs",
        sku: "tts",
        unit: "character",
        quantity: lognormal(rng, 450.0, 0.8).clamp(200.0, 5000.0).round() as u32,
    }
}

/// Image and speech jobs per API call of a customer that uses media. Speech is billed per
/// character and adds up fast: kept rarer so video generation stays the main cost, as it is.
const IMAGE_JOBS_PER_CALL: f64 = 0.075;
const SPEECH_JOBS_PER_CALL: f64 = 0.025;

fn request(rng: &mut StdRng, c: &Customer, bad_day: bool) -> Data {
    let ep = pick_weighted(rng, ENDPOINTS, |e| e.weight);
    let p5xx = if bad_day { 0.07 } else { 0.006 };
    let p4xx = 0.022 * c.error_prone;
    let r = rng.random::<f64>();
    let status = if r < p5xx {
        *pick(rng, &[(500, 70), (502, 15), (503, 15)])
    } else if r < p5xx + p4xx {
        if ep.category == "Auth" {
            *pick(rng, &[(401, 70), (422, 20), (429, 10)])
        } else {
            *pick(rng, &[(401, 20), (404, 35), (422, 30), (429, 15)])
        }
    } else {
        ep.ok
    };
    let mut ms = lognormal(rng, ep.median_ms, 0.6);
    if bad_day {
        ms *= 2.5;
    }
    if status >= 500 {
        ms *= 3.0; // failures are often timeouts upstream
    } else if status >= 400 {
        ms *= 0.4; // refused early
    }
    Data::Request {
        endpoint: ep.path,
        method: ep.method,
        status,
        duration_ms: (ms.clamp(0.5, 60_000.0) * 10.0).round() / 10.0,
    }
}

/// Credits owed but not yet turned into jobs: credits accrue daily, jobs come in lumps.
struct CreditMeter {
    pending: f64,
    next: Job,
}

impl CreditMeter {
    fn new(rng: &mut StdRng) -> Self {
        CreditMeter {
            pending: 0.0,
            next: credit_job(rng),
        }
    }

    /// The jobs `credits` more accrued credits pay for; with `flush`, whatever is pending
    /// becomes one last job (so this month's credits land on their target).
    fn accrue(&mut self, rng: &mut StdRng, credits: f64, flush: bool, out: &mut Vec<Job>) {
        self.pending += credits;
        while self.pending >= f64::from(self.next.quantity) {
            self.pending -= f64::from(self.next.quantity);
            out.push(self.next);
            self.next = credit_job(rng);
        }
        if flush && self.pending >= 1.0 {
            let mut last = self.next;
            last.quantity = self.pending.round() as u32;
            out.push(last);
            self.pending = 0.0;
            self.next = credit_job(rng);
        }
    }
}

/// Every event of `c`'s history up to the clock's now, oldest day first.
fn history(c: &Customer, clock: &Clock) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(mix(clock.seed, u64::from(c.index)));
    // This month's targets are shared out over the customer's days this month in proportion
    // to their weights, so month-to-date usage lands on the target whatever the day of the
    // month, for customers who joined this month too. Customers who left this month stop
    // short of it, as they would.
    let month_weights: Vec<f64> = (clock.month_start..=clock.today)
        .map(|d| clock.day_weight(d) * noise(&mut rng))
        .collect();
    let month_total = (clock.month_start..=clock.today)
        .zip(&month_weights)
        .filter(|(d, _)| *d >= c.signup_day)
        .map(|(_, w)| w)
        .sum::<f64>()
        .max(MIN_PACE_DAYS);
    // Older months at the customer's monthly pace (the target over a 30-day month).
    let (call_pace, credit_pace) = (c.call_target() / 30.0, c.credit_target() / 30.0);

    let mut events = Vec::new();
    let mut meter = CreditMeter::new(&mut rng);
    let (mut calls_due, mut calls_sent) = (0.0, 0u64);
    let last = c.churn_day.map_or(clock.today, |d| d.min(clock.today));
    for day in c.signup_day.max(clock.first_day())..=last {
        let (calls, credits) = if day >= clock.month_start {
            if day == clock.month_start {
                meter.pending = 0.0; // credits left over from last month do not carry over
            }
            let share = month_weights[(day - clock.month_start) as usize] / month_total;
            // Cumulative rounding: the month's calls add up to the target exactly.
            calls_due += c.call_target() * share;
            let calls = (calls_due.round() as u64).saturating_sub(calls_sent);
            calls_sent += calls;
            (calls as u32, c.credit_target() * share)
        } else {
            let age = (clock.month_start - day) as f64;
            let w = clock.day_weight(day) * noise(&mut rng) * (-age / DECAY_DAYS).exp();
            (stochastic_round(&mut rng, call_pace * w), credit_pace * w)
        };
        let mut jobs = Vec::new();
        meter.accrue(&mut rng, credits, day == clock.today, &mut jobs);
        day_events(&mut rng, c, clock, day, calls, jobs, &mut events);
    }
    events
}

/// One customer-day: `calls` API requests and `jobs` credit jobs, plus the image and speech
/// jobs a media user's traffic brings.
fn day_events(
    rng: &mut StdRng,
    c: &Customer,
    clock: &Clock,
    day: i64,
    calls: u32,
    mut jobs: Vec<Job>,
    out: &mut Vec<Event>,
) {
    if calls == 0 && jobs.is_empty() {
        return;
    }
    let date = yyyymmdd(day);
    let bad_day = clock.incident(day) || rng.random_bool(0.01);
    let mut n = 0u32;
    let mut next_id = || {
        n += 1;
        format!("{}-{date}-{n}", c.id)
    };
    for _ in 0..calls {
        let data = request(rng, c, bad_day);
        let time = clock.time_in(rng, day);
        out.push(Event::new(next_id(), &c.id, time, data));
    }
    if c.uses_media() {
        for _ in 0..stochastic_round(rng, f64::from(calls) * IMAGE_JOBS_PER_CALL) {
            jobs.push(image_job(rng));
        }
        for _ in 0..stochastic_round(rng, f64::from(calls) * SPEECH_JOBS_PER_CALL) {
            jobs.push(speech_job(rng));
        }
    }
    for job in jobs {
        let id = next_id();
        let time = clock.time_in(rng, day);
        out.push(Event::new(id.clone(), &c.id, time, usage(job, id)));
    }
}

fn usage(job: Job, job_id: String) -> Data {
    Data::Usage {
        provider: job.provider,
        sku: job.sku,
        unit: job.unit,
        quantity: job.quantity,
        job_id,
    }
}

/// A few seconds of live traffic at `now_ms`: 20–40 events from active customers, the busier
/// ones more often. Ids carry the time and position, so they never collide with history.
fn live_events(rng: &mut StdRng, active: &[Customer], now_ms: i64) -> Vec<Event> {
    if active.is_empty() {
        return Vec::new();
    }
    let n = rng.random_range(20..=40);
    (0..n)
        .map(|i| {
            let c = pick_weighted(rng, active, |c| (c.call_target().ceil() as u32).max(1));
            let id = format!("{}-live-{now_ms}-{i}", c.id);
            let data = if c.uses_media() && rng.random_bool(0.04) {
                let job = match rng.random_range(0..10) {
                    0..5 => credit_job(rng),
                    5..8 => image_job(rng),
                    _ => speech_job(rng),
                };
                usage(job, id.clone())
            } else {
                request(rng, c, false)
            };
            Event::new(id, &c.id, now_ms, data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------------------------

/// The whole history serialised, one buffer per day, today first: sending it newest day first
/// makes the recent weeks (what the dashboard's default ranges show) appear within seconds,
/// and each batch's rollup rows fall in a narrow range of time buckets.
struct DayBuffers {
    days: Vec<DayEvents>,
    events: u64,
}

/// One day's events as concatenated JSON: event `i` is `json[ends[i - 1]..ends[i]]`.
#[derive(Default)]
struct DayEvents {
    json: Vec<u8>,
    ends: Vec<usize>,
}

impl DayEvents {
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, b)| &self.json[a..*b])
    }
}

/// Generates every customer's history and files it by day (0 = today).
fn history_by_day(population: &[Customer], clock: &Clock) -> DayBuffers {
    let mut days: Vec<DayEvents> = (0..HISTORY_DAYS).map(|_| DayEvents::default()).collect();
    let mut events = 0;
    for c in population {
        for e in history(c, clock) {
            let age = clock.today - e.time.div_euclid(DAY_MS);
            let Some(day) = usize::try_from(age).ok().and_then(|a| days.get_mut(a)) else {
                continue; // history() keeps to the window; nothing lands here
            };
            serde_json::to_writer(&mut day.json, &e).expect("events hold only strings and numbers");
            day.ends.push(day.json.len());
            events += 1;
        }
    }
    DayBuffers { days, events }
}

/// A ready request body: a JSON array of events.
struct Batch {
    body: Vec<u8>,
    events: usize,
    /// Position in the sending order, and the age in days of its oldest event.
    seq: u64,
    oldest_day: u64,
}

/// Packs serialised events into bodies within the ingest limits.
#[derive(Default)]
struct Batcher {
    body: Vec<u8>,
    events: usize,
    next_seq: u64,
    oldest_day: u64,
}

impl Batcher {
    /// Adds `event`; returns the previous batch when it had no room left for it.
    fn push(&mut self, event: &Event) -> Option<Batch> {
        let json = serde_json::to_vec(event).expect("events hold only strings and numbers");
        self.push_json(&json, 0)
    }

    /// Adds one serialised event, `day` days old.
    fn push_json(&mut self, json: &[u8], day: u64) -> Option<Batch> {
        let full = self.events >= BATCH_EVENTS || self.body.len() + json.len() + 2 > BATCH_BYTES;
        let done = if full { self.take() } else { None };
        self.body.push(if self.events == 0 { b'[' } else { b',' });
        self.body.extend_from_slice(json);
        self.events += 1;
        self.oldest_day = self.oldest_day.max(day);
        done
    }

    /// The batch being filled, if any.
    fn take(&mut self) -> Option<Batch> {
        if self.events == 0 {
            return None;
        }
        let mut body = std::mem::take(&mut self.body);
        body.push(b']');
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Batch {
            body,
            events: std::mem::take(&mut self.events),
            seq,
            oldest_day: std::mem::take(&mut self.oldest_day),
        })
    }
}

fn batches(events: &[Event]) -> Vec<Batch> {
    let mut batcher = Batcher::default();
    let mut out: Vec<Batch> = events.iter().filter_map(|e| batcher.push(e)).collect();
    out.extend(batcher.take());
    out
}

/// How far back the history is complete: batches are answered out of order (several are in
/// flight), and a day counts as loaded only once every batch before it in the sending order
/// has been stored.
#[derive(Debug, Default)]
struct Watermark {
    next: u64,
    answered: std::collections::BTreeMap<u64, u64>,
}

impl Watermark {
    /// Batch `seq`, whose oldest event is `oldest_day` days old, is stored; returns how many
    /// days back from today are now complete, when that moved.
    fn stored(&mut self, seq: u64, oldest_day: u64) -> Option<u64> {
        self.answered.insert(seq, oldest_day);
        let mut through = None;
        while let Some(day) = self.answered.remove(&self.next) {
            through = Some(day);
            self.next += 1;
        }
        // The oldest day of the last batch may continue in the next one: only the days
        // younger than it are known to be complete.
        through
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct IngestReply {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejection>,
}

#[derive(Debug, Deserialize)]
struct Rejection {
    index: usize,
    error: String,
}

/// What the backfill's requests achieved.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    /// Batches given up on after a refusal or too many retries.
    failed: u64,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.sent += o.sent;
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.failed += o.failed;
    }
}

/// opsdeck's public API as the simulated app's backend reaches it.
struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
    cancel: CancellationToken,
    /// Requests answered 429: how much the API key's rate limit pushed back.
    throttled: AtomicU64,
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

impl Api {
    /// Waits until opsdeck answers: the simulators start as soon as the server listens.
    async fn wait_until_up(&self) -> bool {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            let probe = self.client.get(format!("{}/healthz", self.base)).send();
            if matches!(probe.await, Ok(r) if r.status().is_success()) {
                return true;
            }
            if Instant::now() >= deadline || !self.pause(Duration::from_millis(200)).await {
                return false;
            }
        }
    }

    /// Sleeps unless cancelled; false when cancelled.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Sends what `build` makes and returns the successful response. Requests that fail for
    /// reasons that may pass (unreachable, 429, 5xx) are retried up to MAX_RETRIES times after
    /// a pause: both requests the simulator makes are idempotent (a plan PUT, events deduped by
    /// id), so a retry cannot count anything twice. Other refusals are logged and given up on,
    /// since resending would be refused again.
    async fn call(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Option<reqwest::Response> {
        for attempt in 0..=MAX_RETRIES {
            let wait = match build().bearer_auth(&self.key).send().await {
                Ok(resp) if resp.status().is_success() => return Some(resp),
                Ok(resp) if resp.status().as_u16() == 429 => {
                    // Flow control (the API key's request rate), not a fault: counted, not logged.
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1)
                        .clamp(1, 10);
                    Duration::from_secs(after)
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    tracing::warn!(%what, %status, body = %excerpt(&body), "usage simulator: request failed");
                    if !status.is_server_error() {
                        return None;
                    }
                    Duration::from_secs(1)
                }
                Err(e) => {
                    tracing::warn!(%what, error = %e, "usage simulator: opsdeck unreachable");
                    Duration::from_secs(1)
                }
            };
            // Up to a second of jitter, so that clients that failed together (e.g. on a
            // contended database) do not retry in lockstep.
            let wait = wait + Duration::from_millis(rand::rng().random_range(0..1000));
            if attempt == MAX_RETRIES || !self.pause(wait).await {
                break;
            }
        }
        tracing::warn!(%what, "usage simulator: giving up on this request");
        None
    }

    async fn put_plan(&self, c: &Customer) -> bool {
        let url = format!("{}/api/v1/customers/{}/plan", self.base, c.id);
        let body = serde_json::json!({ "plan": c.tier.spec().id });
        self.call(&format!("plan of {}", c.id), || {
            self.client.put(&url).json(&body)
        })
        .await
        .is_some()
    }

    async fn post_events(&self, batch: &Batch) -> Totals {
        let url = format!("{}/api/v1/events", self.base);
        let mut t = Totals {
            sent: batch.events as u64,
            ..Totals::default()
        };
        let resp = self
            .call("event batch", || {
                self.client
                    .post(&url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/cloudevents-batch+json",
                    )
                    .body(batch.body.clone())
            })
            .await;
        let reply = match resp {
            Some(r) => r.json::<IngestReply>().await,
            None => {
                t.failed = 1;
                return t;
            }
        };
        match reply {
            Ok(r) => {
                if let Some(first) = r.rejected.first() {
                    // The generator only makes valid events: a rejection is a bug to see.
                    tracing::warn!(rejected = r.rejected.len(), index = first.index, error = %first.error,
                        "usage simulator: events rejected");
                }
                t.accepted = r.accepted;
                t.duplicates = r.duplicates;
                t.rejected = r.rejected.len() as u64;
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage simulator: unreadable ingest reply");
                t.failed = 1;
            }
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

/// Plays the referral platform's backend; see the module documentation.
#[derive(Default)]
pub struct UsageSimulator;

impl Simulator for UsageSimulator {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn run(
        &self,
        ctx: DemoContext,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(run(SEED, ctx, cancel))
    }
}

async fn run(seed: u64, ctx: DemoContext, cancel: CancellationToken) {
    // Whatever ends the backfill early (opsdeck unreachable, cancelled), the demo's progress
    // bar must not wait for it forever.
    let _finished = FinishOnDrop(ctx.progress.clone());
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "usage simulator: cannot build an HTTP client");
            return;
        }
    };
    let api = Arc::new(Api {
        client,
        base: ctx.opsdeck_url.trim_end_matches('/').to_string(),
        key: ctx.api_key,
        cancel: cancel.clone(),
        throttled: AtomicU64::new(0),
    });
    if !api.wait_until_up().await {
        if !cancel.is_cancelled() {
            tracing::warn!(url = %api.base, "usage simulator: opsdeck did not answer within 10 s; no usage traffic");
        }
        return;
    }
    let clock = Clock::new(seed, crate::store::now_ms());
    let population = Arc::new(customers(seed, &clock));

    // The history is generated on a blocking thread while the plans are assigned: both must
    // be done before the first event goes out.
    let started = Instant::now();
    let generated = {
        let population = population.clone();
        tokio::task::spawn_blocking(move || history_by_day(&population, &clock))
    };
    let failed_plans = assign_plans(&api, &population).await;
    if cancel.is_cancelled() {
        return;
    }
    tracing::info!(
        customers = population.len(),
        failed = failed_plans,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "usage simulator: plans assigned"
    );
    let history = match generated.await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "usage simulator: history generator failed");
            return;
        }
    };
    tracing::info!(
        events = history.events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "usage simulator: history generated; loading it newest day first"
    );

    let started = Instant::now();
    ctx.progress
        .start(history.events, history.days.len() as u64);
    let t = backfill(&api, history, &ctx.progress).await;
    ctx.progress.finish();
    if cancel.is_cancelled() {
        return;
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        events = t.sent,
        accepted = t.accepted,
        duplicates = t.duplicates,
        rejected = t.rejected,
        failed_batches = t.failed,
        throttled = api.throttled.load(Ordering::Relaxed),
        elapsed_s = format!("{secs:.1}"),
        events_per_s = (t.sent as f64 / secs.max(0.001)).round() as u64,
        "usage simulator: backfill done; sending live traffic"
    );

    live(&api, &population, clock).await;
}

struct FinishOnDrop(Arc<super::DemoProgress>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Puts every customer on its plan, PLAN_WORKERS at a time; returns how many failed.
async fn assign_plans(api: &Arc<Api>, population: &Arc<Vec<Customer>>) -> usize {
    let mut workers = JoinSet::new();
    for w in 0..PLAN_WORKERS {
        let (api, population) = (api.clone(), population.clone());
        workers.spawn(async move {
            let mut failed = 0;
            for c in population.iter().skip(w).step_by(PLAN_WORKERS) {
                if api.cancel.is_cancelled() {
                    break;
                }
                failed += usize::from(!api.put_plan(c).await);
            }
            failed
        });
    }
    workers.join_all().await.into_iter().sum()
}

/// Streams the history to opsdeck newest day first: one blocking task cuts the day buffers
/// into batches, SENDERS tasks post them. Each day's buffer is released once batched, and the
/// bounded channel keeps only a few bodies in flight.
async fn backfill(
    api: &Arc<Api>,
    history: DayBuffers,
    report: &Arc<super::DemoProgress>,
) -> Totals {
    let (tx, rx) = mpsc::channel::<Batch>(SENDERS * 2);
    let generator = tokio::task::spawn_blocking(move || {
        let mut batcher = Batcher::default();
        for (age, day) in history.days.into_iter().enumerate() {
            for json in day.iter() {
                if let Some(b) = batcher.push_json(json, age as u64)
                    && tx.blocking_send(b).is_err()
                {
                    return; // the senders stopped: cancelled
                }
            }
        }
        if let Some(b) = batcher.take() {
            let _ = tx.blocking_send(b);
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let watermark = Arc::new(std::sync::Mutex::new(Watermark::default()));
    let mut senders = JoinSet::new();
    for _ in 0..SENDERS {
        let (api, rx, report, watermark) =
            (api.clone(), rx.clone(), report.clone(), watermark.clone());
        senders.spawn(async move {
            let mut totals = Totals::default();
            loop {
                let next = {
                    let mut rx = rx.lock().await;
                    tokio::select! {
                        _ = api.cancel.cancelled() => None,
                        b = rx.recv() => b,
                    }
                };
                let Some(batch) = next else { break };
                report.sending();
                let t = api.post_events(&batch).await;
                let stored = t.accepted + t.duplicates;
                report.loaded(stored);
                report.failed(t.sent.saturating_sub(stored));
                if t.failed == 0 && t.rejected == 0 {
                    let through = watermark
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .stored(batch.seq, batch.oldest_day);
                    if let Some(days) = through {
                        report.days_loaded(days);
                    }
                }
                totals.add(t);
            }
            totals
        });
    }
    // Collect the senders' totals, logging progress meanwhile (RUST_LOG=info shows it).
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut totals = Totals::default();
    loop {
        tokio::select! {
            joined = senders.join_next() => match joined {
                Some(Ok(t)) => totals.add(t),
                Some(Err(e)) => tracing::warn!(error = %e, "usage simulator: a sender failed"),
                None => break,
            },
            _ = progress.tick() => {
                tracing::info!(progress = %report.read().summary(),
                    throttled = api.throttled.load(Ordering::Relaxed),
                    "usage simulator: backfilling");
            }
        }
    }
    drop(rx); // lets a cancelled generator's next send fail, so it returns
    if let Err(e) = generator.await {
        tracing::warn!(error = %e, "usage simulator: history batcher failed");
    }
    if totals.failed == 0 && totals.rejected == 0 && !api.cancel.is_cancelled() {
        report.days_loaded(HISTORY_DAYS as u64);
    }
    totals
}

/// Keeps live traffic flowing every LIVE_EVERY until cancelled.
async fn live(api: &Api, population: &[Customer], clock: Clock) {
    let active: Vec<Customer> = population
        .iter()
        .filter(|c| c.active_on(clock.today))
        .cloned()
        .collect();
    let mut rng = StdRng::seed_from_u64(mix(clock.seed, clock.now_ms as u64));
    let mut tick = tokio::time::interval(LIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = api.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let events = live_events(&mut rng, &active, crate::store::now_ms());
        for batch in batches(&events) {
            api.post_events(&batch).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::OnceLock;

    use serde_json::Value;

    use super::*;
    use crate::usage::categories::Categories;
    use crate::usage::event::{Rules, validate};
    use crate::usage::quota::State;

    /// 2026-11-23T14:00:00Z: late enough in the month for this month's mix to show.
    const NOW: i64 = 1_795_442_400_000;

    struct Fixture {
        clock: Clock,
        customers: Vec<Customer>,
        events: Vec<Event>,
    }

    fn generate(seed: u64, now_ms: i64) -> Fixture {
        let clock = Clock::new(seed, now_ms);
        let customers = customers(seed, &clock);
        let events = customers.iter().flat_map(|c| history(c, &clock)).collect();
        Fixture {
            clock,
            customers,
            events,
        }
    }

    /// The full demo history, generated once for all tests.
    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| generate(SEED, NOW))
    }

    fn rules(now_ms: i64) -> Rules {
        Rules {
            now_ms,
            max_future_skew_ms: 300_000,
        }
    }

    #[test]
    fn the_clock_is_what_the_tests_assume() {
        let c = Clock::new(SEED, NOW);
        assert_eq!(yyyymmdd(c.today), "20261123");
        assert_eq!(yyyymmdd(c.month_start), "20261101");
        // 2026-11-23 is a Monday.
        assert_eq!(c.day_weight(c.today - 1), WEEKDAY[6]);
    }

    #[test]
    fn same_seed_same_history() {
        let a = generate(SEED, NOW);
        let f = fixture();
        assert_eq!(a.customers, f.customers);
        assert_eq!(a.events, f.events);
        let other = generate(SEED + 1, NOW);
        assert_ne!(other.customers, f.customers);
    }

    #[test]
    fn every_event_is_valid_and_not_in_the_future() {
        let f = fixture();
        for e in &f.events {
            let json = serde_json::to_value(e).expect("serialisable");
            let v = validate(&json, rules(NOW)).unwrap_or_else(|err| panic!("{json}: {err}"));
            assert!(v.time_ms <= NOW, "{json}");
            assert!(v.time_ms >= (f.clock.first_day()) * DAY_MS, "{json}");
        }
    }

    #[test]
    fn history_volume_is_bounded() {
        let n = fixture().events.len();
        assert!((120_000..=240_000).contains(&n), "{n} events");
        // The volume hardly depends on the day of the month (this month's pace has a floor).
        let early = generate(SEED, NOW + 9 * DAY_MS).events.len(); // 2 December
        assert!((120_000..=240_000).contains(&early), "{early} events");
    }

    #[test]
    fn ids_are_unique() {
        let f = fixture();
        let mut seen = HashSet::with_capacity(f.events.len());
        for e in &f.events {
            assert!(seen.insert(e.id.as_str()), "duplicate id {}", e.id);
        }
    }

    #[test]
    fn plan_mix_roughly_matches() {
        let f = fixture();
        let n = f.customers.len() as f64;
        let share = |t| f.customers.iter().filter(|c| c.tier == t).count() as f64 / n;
        assert!((0.49..0.61).contains(&share(Tier::Starter)));
        assert!((0.25..0.35).contains(&share(Tier::Growth)));
        assert!((0.11..0.19).contains(&share(Tier::Scale)));
        let churned = f.customers.iter().filter(|c| c.churn_day.is_some()).count();
        assert!((40..=130).contains(&churned), "{churned} churned");
    }

    #[test]
    fn events_respect_signup_and_churn() {
        let f = fixture();
        let by_id: HashMap<&str, &Customer> =
            f.customers.iter().map(|c| (c.id.as_str(), c)).collect();
        for e in &f.events {
            let c = by_id[e.subject.as_str()];
            assert!(c.active_on(e.time.div_euclid(DAY_MS)), "{e:?}");
        }
    }

    /// The plans' quotas against this month's traffic give the intended mix of states.
    #[test]
    fn quota_states_this_month_are_mostly_ok() {
        let f = fixture();
        let month_ms = f.clock.month_start * DAY_MS;
        let mut used: HashMap<&str, (f64, f64)> = HashMap::new();
        for e in f.events.iter().filter(|e| e.time >= month_ms) {
            let u = used.entry(e.subject.as_str()).or_default();
            match &e.data {
                Data::Request { .. } => u.0 += 1.0,
                Data::Usage { unit, quantity, .. } if *unit == "credit" => {
                    u.1 += f64::from(*quantity)
                }
                Data::Usage { .. } => {}
            }
        }
        let mut states: BTreeMap<State, usize> = BTreeMap::new();
        for c in &f.customers {
            let (calls, credits) = used.get(c.id.as_str()).copied().unwrap_or_default();
            let spec = c.tier.spec();
            let pct = (calls / spec.api_calls as f64).max(credits / spec.credits as f64) * 100.0;
            *states.entry(State::at(pct, 120.0)).or_default() += 1;
        }
        let share = |s: &[State]| {
            s.iter()
                .map(|s| states.get(s).copied().unwrap_or(0))
                .sum::<usize>() as f64
                / f.customers.len() as f64
        };
        let ok = share(&[State::Ok]);
        let warn = share(&[State::Warning, State::Critical]);
        let over = share(&[State::Over, State::Suspended]);
        assert!((0.74..0.88).contains(&ok), "{states:?}");
        assert!((0.06..0.16).contains(&warn), "{states:?}");
        assert!((0.02..0.10).contains(&over), "{states:?}");
        assert!(
            states.get(&State::Suspended).copied().unwrap_or(0) > 0,
            "{states:?}"
        );
    }

    #[test]
    fn traffic_mix_is_realistic() {
        let f = fixture();
        let (mut requests, mut ok, mut server_errors, mut slow_media) = (0, 0, 0, 0);
        let mut providers: HashMap<&str, usize> = HashMap::new();
        let mut jobs = 0;
        let mut durations = Vec::new();
        for e in &f.events {
            match &e.data {
                Data::Request {
                    status,
                    duration_ms,
                    endpoint,
                    ..
                } => {
                    requests += 1;
                    ok += usize::from((200..300).contains(status));
                    server_errors += usize::from(*status >= 500);
                    durations.push(*duration_ms);
                    slow_media +=
                        usize::from(endpoint.starts_with("/api/media/") && *duration_ms > 500.0);
                }
                Data::Usage { provider, .. } => {
                    jobs += 1;
                    *providers.entry(provider).or_default() += 1;
                }
            }
        }
        let ok = ok as f64 / requests as f64;
        let errors = server_errors as f64 / requests as f64;
        assert!((0.955..0.985).contains(&ok), "2xx share {ok}");
        assert!((0.004..0.012).contains(&errors), "5xx share {errors}");
        assert!(slow_media > 0);
        durations.sort_by(f64::total_cmp);
        let median = durations[durations.len() / 2];
        assert!((40.0..130.0).contains(&median), "median {median} ms");
        for p in ["luma", "kling", "bfl", "elevenlabs", "piapi"] {
            assert!(providers.get(p).copied().unwrap_or(0) > 0, "{providers:?}");
        }
        let unpriced = providers["piapi"] as f64 / jobs as f64;
        assert!(
            (0.002..0.012).contains(&unpriced),
            "unpriced share {unpriced}"
        );
    }

    #[test]
    fn configure_declares_plans_and_categories_the_endpoints_use() {
        let mut config = Config::defaults();
        configure(&mut config);
        configure(&mut config); // idempotent
        assert_eq!(config.plans.len(), 3);
        for p in &config.plans {
            crate::usage::plans::check_plan_id(&p.id).expect("valid plan id");
            crate::money::parse_scaled(&p.price.0, 2).expect("price");
            crate::money::parse_scaled(&p.overage_per_1k_calls.0, crate::money::PICO)
                .expect("overage");
        }
        let categories = Categories::new(&config.usage.endpoint_categories);
        for e in ENDPOINTS {
            assert_eq!(&*categories.of(e.path), e.category, "{}", e.path);
        }
    }

    #[test]
    fn batches_stay_within_the_ingest_limits() {
        let f = fixture();
        let sample = &f.events[..5_000];
        let all = batches(sample);
        assert_eq!(all.iter().map(|b| b.events).sum::<usize>(), sample.len());
        for b in &all {
            assert!(b.events <= BATCH_EVENTS && b.body.len() <= 1 << 20);
            let v: Value = serde_json::from_slice(&b.body).expect("a JSON array");
            assert_eq!(v.as_array().map(Vec::len), Some(b.events));
        }
    }

    #[test]
    fn history_by_day_files_each_event_on_its_day() {
        let f = fixture();
        let by_day = history_by_day(&f.customers, &f.clock);
        assert_eq!(by_day.events, f.events.len() as u64);
        assert_eq!(by_day.days.len(), HISTORY_DAYS as usize);
        let mut filed = 0;
        for (age, day) in by_day.days.iter().enumerate() {
            for json in day.iter() {
                let v: Value = serde_json::from_slice(json).expect("one event per slice");
                let ms = crate::usage::event::validate(&v, rules(NOW))
                    .expect("valid")
                    .time_ms;
                assert_eq!(f.clock.today - ms.div_euclid(DAY_MS), age as i64);
                filed += 1;
            }
        }
        assert_eq!(filed, f.events.len());
        assert!(!by_day.days[0].ends.is_empty(), "today has traffic");
    }

    #[test]
    fn batches_are_numbered_and_know_their_oldest_day() {
        let mut batcher = Batcher::default();
        let json = br#"{"id":"x"}"#;
        let mut out = Vec::new();
        for day in 0..3u64 {
            for _ in 0..700 {
                out.extend(batcher.push_json(json, day));
            }
        }
        out.extend(batcher.take());
        let seen: Vec<(u64, usize, u64)> = out
            .iter()
            .map(|b| (b.seq, b.events, b.oldest_day))
            .collect();
        assert_eq!(seen, [(0, 1000, 1), (1, 1000, 2), (2, 100, 2)]);
    }

    #[test]
    fn days_count_as_loaded_only_after_every_earlier_batch() {
        let mut w = Watermark::default();
        assert_eq!(w.stored(1, 3), None, "batch 0 is still in flight");
        assert_eq!(
            w.stored(0, 1),
            Some(3),
            "0 and 1 are in: days 0..3 are complete"
        );
        assert_eq!(w.stored(3, 9), None);
        assert_eq!(w.stored(2, 5), Some(9));
    }

    #[test]
    fn live_events_are_valid_now() {
        let f = fixture();
        let active: Vec<Customer> = f
            .customers
            .iter()
            .filter(|c| c.active_on(f.clock.today))
            .cloned()
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        let mut ids = HashSet::new();
        for tick in 0..50 {
            let now = NOW + tick * 2_000;
            let events = live_events(&mut rng, &active, now);
            assert!((20..=40).contains(&events.len()));
            for e in events {
                let json = serde_json::to_value(&e).expect("serialisable");
                validate(&json, rules(now)).unwrap_or_else(|err| panic!("{json}: {err}"));
                assert!(ids.insert(e.id));
            }
        }
    }
}
