//! The demo SaaS's Stripe account, served by [`FakeStripe`] for `opsdeck demo` to sync from
//! through the real connector, and kept alive with signed webhooks.
//!
//! The account bills the usage simulator's ~500 customers (same ids, signup and churn days,
//! same plan now): Starter / Growth / Scale at $8 / $26 / $68 a month or $80 / $260 / $680 a
//! year, one-time credit packs at $8 / $18 / $45 / $90, a three-month 25 % launch coupon,
//! 14-day trials, upgrades and downgrades (visible in the billed invoice lines), failed first
//! attempts retried, a few customers past due, refunds, disputes won and lost, churn and
//! reactivation. Everything is a pure function of (seed, now), so a restart shows the same
//! history. While the demo runs, a credit-pack purchase or a plan change happens every few
//! seconds: stored in the fake account (and its `/v1/events`) and sent to opsdeck's
//! `/webhooks/stripe` signed as Stripe signs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::stripe::FakeStripe;
use super::usage::{self, Clock, Customer, Tier, mix};
use super::{DemoContext, Simulator};
use crate::config::Config;
use crate::revenue::stripe::convert::add_months;

const DAY: i64 = 86_400;
const KEY: &str = "sk_test_opsdeck_demo_account";
const WEBHOOK_SECRET: &str = "whsec_opsdeck_demo_endpoint";
/// Credit packs: (price id, cents).
const PACKS: [(&str, i64); 4] = [
    ("price_credits_8", 800),
    ("price_credits_18", 1_800),
    ("price_credits_45", 4_500),
    ("price_credits_90", 9_000),
];
const COUPON: &str = "LAUNCH25";
/// A live change every this many seconds, give or take half.
const LIVE_EVERY_SECS: u64 = 8;

fn plan_id(tier: Tier) -> &'static str {
    tier.spec().id
}

fn tier_cents(tier: Tier) -> i64 {
    crate::money::parse_scaled(tier.spec().price, 2).unwrap_or(0)
}

fn price_id(tier: Tier, annual: bool) -> String {
    format!(
        "price_{}_{}",
        plan_id(tier),
        if annual { "annual" } else { "monthly" }
    )
}

const TIERS: [Tier; 3] = [Tier::Starter, Tier::Growth, Tier::Scale];

/// What the account sells: products, prices and the coupon, created 400 days ago.
fn catalogue(now: i64) -> Vec<(&'static str, Value)> {
    let created = now - 400 * DAY;
    let mut out = Vec::new();
    for tier in TIERS {
        let spec = tier.spec();
        let product = format!("prod_{}", spec.id);
        out.push((
            "products",
            json!({"id": product, "object": "product", "name": format!("opsdeck demo {}", spec.id),
                   "active": true, "created": created, "livemode": false}),
        ));
        for annual in [false, true] {
            let cents = tier_cents(tier) * if annual { 10 } else { 1 };
            out.push((
                "prices",
                json!({"id": price_id(tier, annual), "object": "price", "active": true,
                       "currency": "usd", "unit_amount": cents, "unit_amount_decimal": cents.to_string(),
                       "billing_scheme": "per_unit", "type": "recurring", "product": product,
                       "created": created, "livemode": false,
                       "recurring": {"interval": if annual { "year" } else { "month" },
                                     "interval_count": 1, "usage_type": "licensed"}}),
            ));
        }
    }
    out.push((
        "products",
        json!({"id": "prod_credits", "object": "product", "name": "Media credits",
               "active": true, "created": created, "livemode": false}),
    ));
    for (id, cents) in PACKS {
        out.push((
            "prices",
            json!({"id": id, "object": "price", "active": true, "currency": "usd",
                   "unit_amount": cents, "unit_amount_decimal": cents.to_string(),
                   "billing_scheme": "per_unit", "type": "one_time", "recurring": null,
                   "product": "prod_credits", "created": created, "livemode": false}),
        ));
    }
    out.push(("coupons", coupon(created)));
    out
}

fn coupon(created: i64) -> Value {
    json!({"id": COUPON, "object": "coupon", "percent_off": 25.0, "amount_off": null,
           "duration": "repeating", "duration_in_months": 3, "valid": true,
           "created": created, "livemode": false})
}

/// The objects of one payment: invoice, payment intent and charge(s), plus a refund or a
/// dispute now and then.
struct Payment<'a> {
    customer: &'a str,
    /// Subscription and billed period, for subscription invoices.
    subscription: Option<(&'a str, i64, i64)>,
    price: &'a str,
    cents: i64,
    at: i64,
    /// The first attempt failed and a retry a day later paid.
    retried: bool,
    /// Every attempt failed so far: the invoice is open (past due).
    unpaid: bool,
}

/// Appends the objects of `p` to `out`; `n` makes the ids unique.
fn pay(rng: &mut StdRng, p: &Payment, n: &str, now: i64, out: &mut Vec<(&'static str, Value)>) {
    let (invoice, intent) = (format!("in_{n}"), format!("pi_{n}"));
    let parent = p.subscription.map_or(Value::Null, |(sub, _, _)| {
        json!({"type": "subscription_details", "subscription_details": {"subscription": sub}})
    });
    let (start, end) = p
        .subscription
        .map_or((p.at, p.at), |(_, start, end)| (start, end));
    let paid_at = if p.retried { p.at + DAY } else { p.at }.min(now);
    let status = if p.unpaid { "open" } else { "paid" };
    let attempts = 1 + u32::from(p.retried || p.unpaid) + u32::from(p.unpaid);
    out.push((
        "invoices",
        json!({"id": invoice, "object": "invoice", "customer": p.customer, "status": status,
               "currency": "usd", "created": p.at, "total": p.cents,
               "amount_paid": if p.unpaid { 0 } else { p.cents }, "amount_due": p.cents,
               "attempt_count": attempts, "livemode": false, "payment_intent": intent,
               "billing_reason": if p.subscription.is_some() { "subscription_cycle" } else { "manual" },
               "parent": parent,
               "lines": {"object": "list", "has_more": false, "data": [
                   {"id": format!("il_{n}"), "object": "line_item", "amount": p.cents,
                    "currency": "usd", "quantity": 1, "period": {"start": start, "end": end},
                    "pricing": {"type": "price_details", "price_details": {"price": p.price}},
                    "parent": if p.subscription.is_some() {
                        json!({"type": "subscription_item_details",
                               "subscription_item_details": {"proration": false}})
                    } else { Value::Null }}]}}),
    ));
    let declined = json!({"code": "card_declined", "decline_code": "insufficient_funds",
                          "message": "Your card has insufficient funds.", "type": "card_error"});
    out.push((
        "payment_intents",
        json!({"id": intent, "object": "payment_intent", "customer": p.customer, "amount": p.cents,
               "currency": "usd", "created": p.at, "livemode": false, "invoice": invoice,
               "status": if p.unpaid { "requires_payment_method" } else { "succeeded" },
               "last_payment_error": if p.unpaid { declined.clone() } else { Value::Null }}),
    ));
    let charge = |id: String, at: i64, ok: bool| {
        json!({"id": id, "object": "charge", "customer": p.customer, "amount": p.cents,
               "currency": "usd", "created": at, "livemode": false, "invoice": invoice,
               "payment_intent": intent, "paid": ok,
               "status": if ok { "succeeded" } else { "failed" },
               "failure_code": if ok { Value::Null } else { json!("card_declined") }})
    };
    if p.retried || p.unpaid {
        out.push(("charges", charge(format!("ch_{n}_f"), p.at, false)));
    }
    if p.unpaid {
        return;
    }
    let charge_id = format!("ch_{n}");
    out.push(("charges", charge(charge_id.clone(), paid_at, true)));
    let r: f64 = rng.random();
    let later = (paid_at + rng.random_range(DAY..4 * DAY)).min(now);
    if r < 0.015 {
        out.push((
            "refunds",
            json!({"id": format!("re_{n}"), "object": "refund", "amount": p.cents,
                   "charge": charge_id, "payment_intent": intent, "currency": "usd",
                   "status": "succeeded", "reason": "requested_by_customer",
                   "created": later, "livemode": false}),
        ));
    } else if r < 0.02 {
        let status = ["lost", "won", "needs_response"][rng.random_range(0..3)];
        out.push((
            "disputes",
            json!({"id": format!("dp_{n}"), "object": "dispute", "amount": p.cents,
                   "charge": charge_id, "payment_intent": intent, "currency": "usd",
                   "status": status, "reason": "fraudulent", "created": later,
                   "livemode": false}),
        ));
    }
}

fn subscription(
    id: &str,
    customer: &str,
    price: &Value,
    status: &str,
    created: i64,
    period: (i64, i64),
) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": status,
           "currency": "usd", "created": created, "start_date": created, "livemode": false,
           "discounts": [], "cancel_at_period_end": false, "pause_collection": null,
           "items": {"object": "list", "has_more": false, "data": [
               {"id": format!("si_{id}"), "object": "subscription_item", "quantity": 1,
                "price": price, "discounts": [], "created": created,
                "current_period_start": period.0, "current_period_end": period.1}]}})
}

/// One customer's account history: the customer, their subscriptions and every payment.
fn history(
    c: &Customer,
    prices: &BTreeMap<String, Value>,
    now: i64,
    out: &mut Vec<(&'static str, Value)>,
) {
    let mut rng = StdRng::seed_from_u64(mix(usage::SEED ^ 0x5712_19e5, u64::from(c.index)));
    let signup = (c.signup_day * DAY + rng.random_range(8 * 3_600..20 * 3_600)).min(now - 60);
    let churn = c.churn_day.map(|d| (d * DAY + 12 * 3_600).min(now - 60));
    out.push((
        "customers",
        json!({"id": c.id, "object": "customer", "created": signup, "livemode": false,
               "email": format!("billing+{}@example.com", c.id), "name": format!("Demo customer {}", c.index),
               "currency": "usd", "delinquent": false}),
    ));
    let annual = rng.random_bool(0.2);
    let trial_end = rng
        .random_bool(0.3)
        .then_some(signup + 14 * DAY)
        .filter(|end| churn.is_none_or(|c| *end < c));
    let paid_from = trial_end.unwrap_or(signup);
    let end = churn.unwrap_or(now);
    // Earlier tiers: an upgrade (or, rarer, a downgrade) a month or more after paying began.
    let tiers = TIERS;
    let at = tiers.iter().position(|t| *t == c.tier).unwrap_or(0);
    let change_at = (!annual && end - paid_from > 75 * DAY)
        .then(|| paid_from + rng.random_range(40 * DAY..end - paid_from - 30 * DAY));
    let earlier = match rng.random::<f64>() {
        r if r < 0.2 && at > 0 => Some(tiers[at - 1]),
        r if r < 0.27 && at < 2 => Some(tiers[at + 1]),
        _ => None,
    };
    let tier_at = |t: i64| match (change_at, earlier) {
        (Some(change), Some(e)) if t < change => e,
        _ => c.tier,
    };
    // A lapse for some long-standing customers: canceled, then back weeks later.
    let lapse =
        (churn.is_none() && end - paid_from > 150 * DAY && rng.random_bool(0.05)).then(|| {
            let from = paid_from + rng.random_range(60 * DAY..end - paid_from - 60 * DAY);
            (from, from + rng.random_range(15 * DAY..40 * DAY))
        });
    let coupon_until = rng
        .random_bool(0.15)
        .then(|| add_months(paid_from * 1000, 3) / 1000);
    let past_due = churn.is_none() && !annual && rng.random_bool(0.02);

    let subs: Vec<(String, i64, i64, Option<i64>)> = match lapse {
        // (id, created, paid from, ended)
        Some((gone, back)) => vec![
            (format!("sub_{}_1", c.id), signup, paid_from, Some(gone)),
            (format!("sub_{}_2", c.id), back, back, None),
        ],
        None => vec![(format!("sub_{}", c.id), signup, paid_from, churn)],
    };
    let mut n = 0;
    for (sub_id, created, from, ended) in subs {
        let stop = ended.unwrap_or(now);
        let mut start = from;
        let mut last = (from, from);
        while start < stop {
            let next = add_months(start * 1000, if annual { 12 } else { 1 }) / 1000;
            let tier = tier_at(start);
            let base = tier_cents(tier) * if annual { 10 } else { 1 };
            let cents = if coupon_until.is_some_and(|u| start < u) {
                base * 3 / 4
            } else {
                base
            };
            n += 1;
            let is_last = next >= stop;
            let retried = rng.random_bool(0.04);
            pay(
                &mut rng,
                &Payment {
                    customer: &c.id,
                    subscription: Some((&sub_id, start, next)),
                    price: &price_id(tier, annual),
                    cents,
                    at: start,
                    retried,
                    unpaid: past_due && is_last && ended.is_none(),
                },
                &format!("{}_{n}", c.id),
                now,
                out,
            );
            last = (start, next);
            start = next;
        }
        let price = &prices[&price_id(tier_at(last.0), annual)];
        let status = match (ended, trial_end) {
            (Some(_), _) => "canceled",
            (None, Some(t)) if t > now => "trialing",
            (None, _) if past_due => "past_due",
            (None, _) => "active",
        };
        let period = if status == "trialing" {
            (created, trial_end.unwrap_or(now))
        } else {
            last
        };
        let mut sub = subscription(&sub_id, &c.id, price, status, created, period);
        if let Some(t) = trial_end.filter(|_| from == paid_from && created == signup) {
            sub["trial_start"] = json!(signup);
            sub["trial_end"] = json!(t);
        }
        if let Some(e) = ended {
            sub["canceled_at"] = json!(e);
            sub["ended_at"] = json!(e);
        }
        if let Some(until) = coupon_until.filter(|_| from == paid_from) {
            sub["discounts"] = json!([{"id": format!("di_{sub_id}"), "object": "discount",
                "start": from, "end": until, "customer": c.id, "subscription": sub_id,
                "source": {"type": "coupon", "coupon": coupon(now - 400 * DAY)}}]);
        }
        out.push(("subscriptions", sub));
    }
    // Credit packs, for customers who generate media: a few a quarter.
    if c.uses_media() {
        let mut month = paid_from;
        while month < end {
            if rng.random_bool(0.3) {
                let (price, cents) = PACKS[pick_pack(&mut rng)];
                let at = (month + rng.random_range(0..28 * DAY)).min(end - 1);
                n += 1;
                pay(
                    &mut rng,
                    &Payment {
                        customer: &c.id,
                        subscription: None,
                        price,
                        cents,
                        at,
                        retried: false,
                        unpaid: false,
                    },
                    &format!("{}_{n}", c.id),
                    now,
                    out,
                );
            }
            month += 30 * DAY;
        }
    }
}

fn pick_pack(rng: &mut StdRng) -> usize {
    match rng.random_range(0..100) {
        0..40 => 0,
        40..70 => 1,
        70..90 => 2,
        _ => 3,
    }
}

/// Every object of the demo account as of `now` (Unix seconds), by list.
pub fn seed(now: i64) -> Vec<(&'static str, Value)> {
    let clock = Clock::new(usage::SEED, now * 1000);
    let mut out = catalogue(now);
    let prices: BTreeMap<String, Value> = out
        .iter()
        .filter(|(list, _)| *list == "prices")
        .filter_map(|(_, p)| Some((p.get("id")?.as_str()?.to_string(), p.clone())))
        .collect();
    for c in usage::customers(usage::SEED, &clock) {
        history(&c, &prices, now, &mut out);
    }
    payouts(now, &mut out);
    out
}

/// A bigger account of the same shapes, for the read benchmark: `customers` customers
/// `cus_000000`, `cus_000001`, … (the ids the benchmark's usage events carry as their
/// subject), each on one monthly Starter, Growth or Scale subscription whose start is spread
/// so that about `invoices` subscription invoices, with their payment intents and charges,
/// have been billed by `now` (Unix seconds). One in ten subscriptions was canceled after its
/// last paid period, one in fifty is past due (its last invoice unpaid), one in twenty-five paid
/// after a failed first attempt; refunds and disputes now and then, as in the demo's account.
/// A pure function of its arguments.
pub fn scaled_account(customers: usize, invoices: usize, now: i64) -> Vec<(&'static str, Value)> {
    let mut out = catalogue(now);
    let prices: BTreeMap<String, Value> = out
        .iter()
        .filter(|(list, _)| *list == "prices")
        .filter_map(|(_, p)| Some((p.get("id")?.as_str()?.to_string(), p.clone())))
        .collect();
    let customers = customers.max(1);
    for i in 0..customers {
        let mut rng = StdRng::seed_from_u64(mix(0x0bec_4ead, i as u64));
        let id = format!("cus_{i:06}");
        // Invoices this customer has had: the total shared out, the remainder to the first.
        let billed = invoices / customers + usize::from(i < invoices % customers);
        let tier = TIERS[rng.random_range(0..TIERS.len())];
        let price_id = price_id(tier, false);
        let canceled = i % 10 == 9;
        let past_due = !canceled && i % 50 == 7;
        // The first period starts so that the last billed one (number `billed`) began in the
        // last 28 days; a canceled subscription ended its last period a few days ago.
        let months = billed.max(1) as u32;
        let mut start = now - i64::from(months) * 31 * DAY + rng.random_range(DAY..28 * DAY);
        while add_months(start * 1000, months - 1) / 1000 >= now - 60 {
            start -= DAY;
        }
        let created = start - rng.random_range(3_600..DAY);
        out.push((
            "customers",
            json!({"id": id, "object": "customer", "created": created, "livemode": false,
                   "email": format!("billing+{id}@example.com"), "name": format!("Customer {i}"),
                   "currency": "usd", "delinquent": past_due}),
        ));
        let sub_id = format!("sub_{i:06}");
        let mut last = (start, start);
        for n in 0..billed as u32 {
            let at = add_months(start * 1000, n) / 1000;
            let next = add_months(start * 1000, n + 1) / 1000;
            pay(
                &mut rng,
                &Payment {
                    customer: &id,
                    subscription: Some((&sub_id, at, next)),
                    price: &price_id,
                    cents: tier_cents(tier),
                    at,
                    retried: i % 25 == 3,
                    unpaid: past_due && n + 1 == billed as u32,
                },
                &format!("{i:06}_{n}"),
                now,
                &mut out,
            );
            last = (at, next);
        }
        let status = match (canceled, past_due) {
            (true, _) => "canceled",
            (false, true) => "past_due",
            _ => "active",
        };
        let mut sub = subscription(&sub_id, &id, &prices[&price_id], status, created, last);
        if canceled {
            let ended = last.1.min(now - 60);
            sub["canceled_at"] = json!(ended);
            sub["ended_at"] = json!(ended);
        }
        out.push(("subscriptions", sub));
    }
    out
}

/// Weekly automatic payouts of the available balance, as Stripe makes them, so that the
/// account's balance is what a real account with this history would hold: the funds of the
/// last week or so, not every charge ever made.
fn payouts(now: i64, out: &mut Vec<(&'static str, Value)>) {
    let mut lists: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for (list, object) in out.iter() {
        if matches!(*list, "charges" | "refunds" | "disputes") {
            lists
                .entry(list.to_string())
                .or_default()
                .push(object.clone());
        }
    }
    let Some(first) = lists
        .get("charges")
        .into_iter()
        .flatten()
        .filter_map(|c| c["created"].as_i64())
        .min()
    else {
        return;
    };
    let mut at = first + 7 * DAY;
    let mut n = 0;
    while at <= now {
        for (currency, available, _) in super::stripe::balance_at(&lists, at) {
            if available <= 0 {
                continue;
            }
            n += 1;
            let payout = json!({"id": format!("po_demo_{n}"), "object": "payout",
                "amount": available, "currency": currency, "created": at,
                "arrival_date": at + 2 * DAY, "automatic": true, "method": "standard",
                "type": "bank_account", "status": if at + 2 * DAY <= now { "paid" } else { "in_transit" },
                "livemode": false});
            lists
                .entry("payouts".into())
                .or_default()
                .push(payout.clone());
            out.push(("payouts", payout));
        }
        at += 7 * DAY;
    }
}

/// The running demo account.
pub struct StripeDemo {
    stripe: FakeStripe,
}

impl StripeDemo {
    /// Seeds the account, serves it on a loopback port and points `config.stripe` at it
    /// (key, webhook secret, and the plan map from its prices to the demo's plans).
    pub async fn start(config: &mut Config) -> std::io::Result<Self> {
        let stripe = FakeStripe::new(KEY);
        let mut by_list: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (list, object) in seed(crate::store::now_ms() / 1000) {
            by_list.entry(list).or_default().push(object);
        }
        for (list, objects) in by_list {
            stripe.extend(list, objects);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = stripe.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener).await {
                tracing::warn!(error = %e, "demo Stripe account stopped");
            }
        });
        config.stripe.api_base = base;
        config.stripe.secret_key = KEY.into();
        config.stripe.webhook_secret = WEBHOOK_SECRET.into();
        // A local simulator has no rate limit; Stripe's test-mode pace (20 reads a second)
        // would make the demo's first sync take most of a minute.
        config.stripe.max_reads_per_second = 1_000;
        for tier in TIERS {
            for annual in [false, true] {
                config
                    .stripe
                    .plan_map
                    .insert(price_id(tier, annual), plan_id(tier).into());
            }
        }
        Ok(Self { stripe })
    }
}

impl Simulator for StripeDemo {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn run(
        &self,
        ctx: DemoContext,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(live(self.stripe.clone(), ctx, cancel))
    }
}

/// Keeps the account moving: a credit pack bought, or a customer changing plan, every few
/// seconds, each stored in the account and sent to opsdeck as a signed webhook.
async fn live(stripe: FakeStripe, ctx: DemoContext, cancel: CancellationToken) {
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/stripe", ctx.opsdeck_url.trim_end_matches('/'));
    let mut rng = StdRng::seed_from_u64(mix(usage::SEED, 0x11fe));
    let customers: Vec<Value> = stripe.all("subscriptions");
    let mut n: u64 = 0;
    loop {
        let wait =
            Duration::from_millis(rng.random_range(LIVE_EVERY_SECS * 500..LIVE_EVERY_SECS * 1500));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let live: Vec<&Value> = customers
            .iter()
            .filter(|s| s["status"] == "active")
            .collect();
        if live.is_empty() {
            return;
        }
        let sub = live[rng.random_range(0..live.len())];
        let Some(customer) = sub["customer"].as_str() else {
            continue;
        };
        let now = crate::store::now_ms() / 1000;
        n += 1;
        let mut objects = Vec::new();
        let (price, cents) = PACKS[pick_pack(&mut rng)];
        pay(
            &mut rng,
            &Payment {
                customer,
                subscription: None,
                price,
                cents,
                at: now,
                retried: false,
                unpaid: false,
            },
            &format!("live_{n}"),
            now,
            &mut objects,
        );
        let mut events = Vec::new();
        for (list, object) in objects {
            let kind = match list {
                "invoices" => "invoice.payment_succeeded",
                "payment_intents" => "payment_intent.succeeded",
                "charges" => "charge.succeeded",
                "refunds" => "charge.refunded",
                "disputes" => "charge.dispute.created",
                _ => continue,
            };
            stripe.put(list, object.clone());
            events.push(
                json!({"id": format!("evt_live_{n}_{}", events.len()), "object": "event",
                "type": kind, "created": now, "livemode": false,
                "api_version": crate::revenue::stripe::client::STRIPE_VERSION,
                "data": {"object": object}}),
            );
        }
        for event in events {
            stripe.put("events", event.clone());
            match FakeStripe::send_event(&client, &url, WEBHOOK_SECRET, &event, now).await {
                Ok(200) => {}
                Ok(status) => tracing::warn!(status, "demo Stripe: webhook refused"),
                Err(e) if cancel.is_cancelled() => {
                    tracing::debug!(error = %e, "demo Stripe: stopping");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "demo Stripe: webhook not delivered"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_has_everything_the_figures_need() {
        let now = 1_790_000_000;
        let objects = seed(now);
        let count = |list: &str| objects.iter().filter(|(l, _)| *l == list).count();
        let with = |list: &str, key: &str, value: &str| {
            objects
                .iter()
                .filter(|(l, o)| *l == list && o[key] == value)
                .count()
        };
        assert_eq!(count("customers"), 500);
        assert!(count("subscriptions") >= 500);
        assert!(with("subscriptions", "status", "canceled") > 40);
        assert!(with("subscriptions", "status", "past_due") >= 1);
        assert!(
            objects
                .iter()
                .any(|(l, o)| *l == "subscriptions" && o.get("trial_end").is_some())
        );
        assert!(objects.iter().any(|(l, o)| *l == "subscriptions"
            && o["discounts"].as_array().is_some_and(|d| !d.is_empty())));
        assert!(count("invoices") > 2_000);
        assert!(with("charges", "status", "failed") > 20);
        assert!(count("refunds") > 10 && count("disputes") > 3);
        // Payouts leave the balance of the last week or so: positive, and well below the
        // charges of a month.
        let mut lists: std::collections::HashMap<String, Vec<Value>> = Default::default();
        for (list, object) in &objects {
            lists
                .entry(list.to_string())
                .or_default()
                .push(object.clone());
        }
        assert!(count("payouts") > 10);
        let balance = crate::simulators::stripe::balance_at(&lists, now);
        let month: i64 = objects
            .iter()
            .filter(|(l, o)| {
                *l == "charges"
                    && o["status"] == "succeeded"
                    && o["created"].as_i64().is_some_and(|c| c > now - 30 * DAY)
            })
            .map(|(_, o)| o["amount"].as_i64().unwrap_or(0))
            .sum();
        let (currency, available, pending) = &balance[0];
        assert_eq!(currency, "usd");
        assert!(*available + *pending > 0, "{balance:?}");
        assert!(*available + *pending < month, "{balance:?} against {month}");
        // Credit packs are one-time invoices.
        assert!(
            objects
                .iter()
                .any(|(l, o)| *l == "invoices" && o["parent"].is_null())
        );
        // Nothing dated in the future, and ids are unique per list.
        let mut seen = std::collections::HashSet::new();
        for (list, o) in &objects {
            assert!(o["created"].as_i64().is_some_and(|c| c <= now), "{o}");
            assert!(
                seen.insert((*list, o["id"].to_string())),
                "{list} {}",
                o["id"]
            );
        }
        // A pure function of (seed, now).
        assert_eq!(seed(now).len(), objects.len());
    }

    #[test]
    fn the_scaled_account_bills_what_it_was_asked_for() {
        let now = 1_790_000_000;
        let objects = scaled_account(200, 450, now);
        let count = |list: &str| objects.iter().filter(|(l, _)| *l == list).count();
        assert_eq!(count("customers"), 200);
        assert_eq!(count("subscriptions"), 200);
        assert_eq!(count("invoices"), 450);
        assert_eq!(count("payment_intents"), 450);
        assert!(count("charges") >= 450);
        let mut seen = std::collections::HashSet::new();
        for (list, o) in &objects {
            assert!(o["created"].as_i64().is_some_and(|c| c <= now), "{o}");
            assert!(
                seen.insert((*list, o["id"].to_string())),
                "{list} {}",
                o["id"]
            );
        }
        // Every subscription's last billed period began within the last month.
        for (_, s) in objects.iter().filter(|(l, _)| *l == "subscriptions") {
            let start = s["items"]["data"][0]["current_period_start"]
                .as_i64()
                .unwrap_or(0);
            assert!(start > now - 32 * DAY && start < now, "{s}");
        }
        assert_eq!(scaled_account(200, 450, now).len(), objects.len());
    }
}
