//! Twilio and Vonage extras: balance, SMS delivery rate and latency, call success rate, and
//! cost per message and per minute over the window. Twilio lists follow `next_page_uri`;
//! Vonage's Reports API follows `_links.next.href` while the answer is `TRUNCATED`. Money is
//! summed exactly in millionths: Twilio's `price` is a negative string, Vonage's prices and
//! counts may arrive as strings.
//!
//! Twilio has no delivery time on a message: the latency is `date_updated − date_sent` of a
//! delivered message, the moment its delivery receipt changed it, which is as close as its
//! API comes. Twilio bills calls per started minute, so its cost per minute divides by billed
//! minutes; Vonage's voice records carry exact durations, so its divides by real minutes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::math::{self, Micros};
use super::{Collected, Ctx, Failure, list, num_of, shape, str_of};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub window_hours: i64,
    /// The account's currency (Twilio's `price_unit`/balance currency; Vonage EUR).
    pub currency: String,
    pub balance: Option<String>,
    pub sms: Traffic,
    pub calls: Traffic,
    /// The page bound was reached: figures cover the newest part of the window.
    pub truncated: bool,
    pub notes: Vec<String>,
}

impl Snapshot {
    /// The SMS and calls rows with their labels, as the page's table lists them.
    pub fn rows(&self) -> [(&'static str, &Traffic); 2] {
        [
            ("SMS (delivered)", &self.sms),
            ("Calls (completed)", &self.calls),
        ]
    }
}

/// Messages or calls over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Not final yet (queued, sent without a receipt, ringing, …).
    pub pending: u64,
    /// succeeded / (succeeded + failed).
    pub success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub cost_total: String,
    /// Per message, or per minute for calls.
    pub cost_per_unit: Option<String>,
    pub unit: String,
    pub minutes: Option<f64>,
    pub statuses: BTreeMap<String, u64>,
}

/// Messages or calls while they are read.
#[derive(Default)]
struct Acc {
    total: u64,
    succeeded: u64,
    failed: u64,
    pending: u64,
    statuses: BTreeMap<String, u64>,
    latencies: Vec<f64>,
    cost: Micros,
    priced: u64,
    /// Denominator of the per-minute cost.
    minutes: f64,
}

impl Acc {
    fn add(&mut self, status: &str, outcome: Option<bool>) {
        self.total += 1;
        *self.statuses.entry(status.to_string()).or_default() += 1;
        match outcome {
            Some(true) => self.succeeded += 1,
            Some(false) => self.failed += 1,
            None => self.pending += 1,
        }
    }

    /// Adds a price; Twilio's are negative (money leaving the account), so the magnitude.
    fn price(&mut self, micros: Option<Micros>) {
        if let Some(m) = micros {
            self.cost += m.abs();
            self.priced += 1;
        }
    }

    fn finish(mut self, unit: &str) -> Traffic {
        let per_unit = if unit == "minute" {
            (self.minutes > 0.0).then(|| (self.cost as f64 / self.minutes).round() as Micros)
        } else {
            (self.priced > 0).then(|| (self.cost as f64 / self.priced as f64).round() as Micros)
        };
        Traffic {
            total: self.total,
            succeeded: self.succeeded,
            failed: self.failed,
            pending: self.pending,
            success_rate: math::rate(self.succeeded, self.succeeded + self.failed),
            latency_p50_ms: math::percentile(&mut self.latencies, 0.5),
            latency_p95_ms: math::percentile(&mut self.latencies, 0.95),
            cost_total: math::decimal(self.cost),
            cost_per_unit: per_unit.map(math::decimal),
            unit: unit.into(),
            minutes: (unit == "minute").then_some(self.minutes),
            statuses: self.statuses,
        }
    }
}

/// Twilio's message statuses: delivered (or read, on WhatsApp) succeed, failed and
/// undelivered fail, the rest are not final; canceled ones were never sent.
fn twilio_message(status: &str) -> Option<Option<bool>> {
    match status {
        "delivered" | "read" => Some(Some(true)),
        "failed" | "undelivered" => Some(Some(false)),
        "canceled" => None,
        _ => Some(None),
    }
}

/// Twilio's call statuses: completed calls succeed; busy, failed and no-answer fail; a call
/// canceled by the caller before it was answered counts neither way.
fn twilio_call(status: &str) -> Option<Option<bool>> {
    match status {
        "completed" => Some(Some(true)),
        "busy" | "failed" | "no-answer" => Some(Some(false)),
        "canceled" => None,
        _ => Some(None),
    }
}

fn readings_of(prefix: &str, t: &Traffic, rate_name: &str, out: &mut Vec<(String, f64)>) {
    out.push((format!("{prefix}.total"), t.total as f64));
    out.push((format!("{prefix}.failed"), t.failed as f64));
    if let Some(r) = t.success_rate {
        out.push((format!("{prefix}.{rate_name}"), r));
    }
    if let Some(v) = t.latency_p50_ms {
        out.push((format!("{prefix}.latency_p50_ms"), v));
    }
    if let Some(v) = t.latency_p95_ms {
        out.push((format!("{prefix}.latency_p95_ms"), v));
    }
    if let Some(m) = math::parse_micros(&t.cost_total) {
        out.push((format!("{prefix}.cost_total"), math::units(m)));
    }
    if let Some(m) = t.cost_per_unit.as_deref().and_then(math::parse_micros) {
        out.push((format!("{prefix}.cost_per_{}", t.unit), math::units(m)));
    }
    if let Some(m) = t.minutes {
        out.push((format!("{prefix}.minutes"), m));
    }
}

fn date(ms: i64) -> String {
    crate::usage::quota::rfc3339(ms)
        .get(..10)
        .unwrap_or_default()
        .to_string()
}

/// Reads a Twilio list (`Messages` or `Calls`) newest first over the window.
async fn twilio_list(
    ctx: &Ctx<'_>,
    what: &str,
    resource: &str,
    filter: &str,
    key: &str,
    mut each: impl FnMut(&Value),
    concurrency: &mut Option<f64>,
) -> Result<bool, Failure> {
    let since = ctx.now - ctx.limits.window_ms;
    let account = &ctx.account;
    let mut url = ctx.url(&format!("/2010-04-01/Accounts/{account}/{resource}.json"));
    let mut first = true;
    for _ in 0..ctx.limits.max_pages {
        let mut req = ctx.client.get(&url).basic_auth(account, Some(&ctx.key));
        if first {
            req = req.query(&[
                ("PageSize", ctx.limits.page_size.to_string()),
                (filter, date(since)),
            ]);
            first = false;
        }
        let page = ctx.fetch(what, req).await?;
        if let Some((_, v)) = page
            .headers
            .iter()
            .find(|(k, _)| k == "twilio-concurrent-requests")
            && let Ok(n) = v.trim().parse::<f64>()
        {
            *concurrency = Some(concurrency.map_or(n, |c: f64| c.max(n)));
        }
        for item in list(what, &page.json, &format!("/{key}"))? {
            each(item);
        }
        match page.json.get("next_page_uri") {
            Some(Value::String(next)) if !next.is_empty() => {
                url = ctx
                    .rebase(next)
                    .ok_or_else(|| shape(what, "next_page_uri is not a path"))?;
            }
            Some(Value::Null) | None => return Ok(false),
            Some(other) => return Err(shape(what, format!("next_page_uri is {other}"))),
        }
    }
    Ok(true)
}

pub async fn twilio(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let since = ctx.now - ctx.limits.window_ms;
    let mut notes = Vec::new();
    let account = &ctx.account;
    let balance_req = ctx
        .client
        .get(ctx.url(&format!("/2010-04-01/Accounts/{account}/Balance.json")))
        .basic_auth(account, Some(&ctx.key));
    let (mut balance, mut currency) = (None, String::new());
    match ctx.fetch("Twilio balance", balance_req).await {
        Ok(page) => {
            let m = page.json.get("balance").and_then(math::micros_of);
            let Some(m) = m else {
                return Err(shape("Twilio balance", "no balance"));
            };
            balance = Some(m);
            currency = str_of(&page.json, "currency").to_string();
        }
        // Subaccounts have no balance.
        Err(f) if f.status == Some(404) => notes.push("no balance (a subaccount)".into()),
        Err(f) => return Err(f),
    }
    let mut concurrency = None;
    let mut sms = Acc::default();
    let mut bad = None;
    let mut truncated = twilio_list(
        ctx,
        "Twilio messages",
        "Messages",
        "DateSent>",
        "messages",
        |m| {
            if !str_of(m, "direction").starts_with("outbound") {
                return;
            }
            let sent = m
                .get("date_sent")
                .and_then(Value::as_str)
                .or_else(|| m.get("date_created").and_then(Value::as_str))
                .and_then(math::rfc2822_ms);
            if sent.is_some_and(|s| s < since) {
                return;
            }
            let status = str_of(m, "status");
            let Some(outcome) = twilio_message(status) else {
                return;
            };
            sms.add(status, outcome);
            if outcome == Some(true)
                && let (Some(s), Some(u)) = (
                    m.get("date_sent")
                        .and_then(Value::as_str)
                        .and_then(math::rfc2822_ms),
                    m.get("date_updated")
                        .and_then(Value::as_str)
                        .and_then(math::rfc2822_ms),
                )
                && u >= s
            {
                sms.latencies.push((u - s) as f64);
            }
            match m.get("price") {
                Some(Value::Null) | None => {}
                Some(p) => match math::micros_of(p) {
                    Some(micros) => sms.price(Some(micros)),
                    None => bad = Some(format!("price {p} is not a decimal")),
                },
            }
            if currency.is_empty() {
                currency = str_of(m, "price_unit").to_string();
            }
        },
        &mut concurrency,
    )
    .await?;
    if let Some(why) = bad.take() {
        return Err(shape("Twilio messages", why));
    }
    let mut calls = Acc::default();
    truncated |= twilio_list(
        ctx,
        "Twilio calls",
        "Calls",
        "StartTime>",
        "calls",
        |c| {
            let status = str_of(c, "status");
            let Some(outcome) = twilio_call(status) else {
                return;
            };
            calls.add(status, outcome);
            let seconds = num_of(c, "duration").unwrap_or(0.0).max(0.0) as u64;
            match c.get("price") {
                Some(Value::Null) | None => {}
                Some(p) => match math::micros_of(p) {
                    Some(micros) => {
                        calls.price(Some(micros));
                        calls.minutes += math::billed_minutes(seconds) as f64;
                    }
                    None => bad = Some(format!("price {p} is not a decimal")),
                },
            }
        },
        &mut concurrency,
    )
    .await?;
    if let Some(why) = bad {
        return Err(shape("Twilio calls", why));
    }
    let (sms, calls) = (sms.finish("message"), calls.finish("minute"));
    let mut readings = Vec::new();
    if let Some(b) = balance {
        readings.push(("twilio.balance".to_string(), math::units(b)));
    }
    if let Some(c) = concurrency {
        readings.push(("twilio.concurrent_requests".to_string(), c));
    }
    readings_of("twilio.sms", &sms, "delivered_rate", &mut readings);
    readings_of("twilio.calls", &calls, "success_rate", &mut readings);
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::Twilio(Snapshot {
            window_hours: ctx.limits.window_ms / 3_600_000,
            currency: if currency.is_empty() {
                "USD".into()
            } else {
                currency.to_ascii_uppercase()
            },
            balance: balance.map(math::decimal),
            sms,
            calls,
            truncated,
            notes,
        }),
    })
}

/// Vonage SMS report statuses.
fn vonage_sms(status: &str) -> Option<bool> {
    match status.to_ascii_lowercase().as_str() {
        "delivered" => Some(true),
        "failed" | "rejected" | "expired" => Some(false),
        _ => None,
    }
}

/// Vonage voice report statuses (their case varies between products).
fn vonage_call(status: &str) -> Option<bool> {
    match status.to_ascii_lowercase().as_str() {
        "completed" | "answered" => Some(true),
        "failed" | "busy" | "rejected" | "unanswered" | "timeout" | "cancelled" => Some(false),
        _ => None,
    }
}

/// The Reports API lives on `api.nexmo.com`, the balance on `rest.nexmo.com`; a monitor
/// pointed elsewhere (a proxy, the fake) serves both.
fn reports_base(base: &str) -> String {
    if base == "https://rest.nexmo.com" {
        "https://api.nexmo.com".into()
    } else {
        base.to_string()
    }
}

/// Reads one product's records over the window, following `_links.next.href` while the
/// report is truncated.
async fn vonage_records(
    ctx: &Ctx<'_>,
    product: &str,
    mut each: impl FnMut(&Value) -> Result<(), String>,
    currency: &mut String,
) -> Result<bool, Failure> {
    let what = format!("Vonage {product} records");
    let base = reports_base(&ctx.base);
    let mut url = format!("{base}/v2/reports/records");
    let mut first = true;
    for _ in 0..ctx.limits.max_pages {
        let mut req = ctx
            .client
            .get(&url)
            .basic_auth(&ctx.account, Some(&ctx.key));
        if first {
            req = req.query(&[
                ("account_id", ctx.account.as_str()),
                ("product", product),
                ("direction", "outbound"),
                (
                    "date_start",
                    &crate::usage::quota::rfc3339(ctx.now - ctx.limits.window_ms),
                ),
                ("date_end", &crate::usage::quota::rfc3339(ctx.now)),
            ]);
            first = false;
        }
        let page = ctx.fetch(&what, req).await?;
        for record in list(&what, &page.json, "/records")? {
            each(record).map_err(|why| shape(&what, why))?;
        }
        if currency.is_empty() {
            *currency = str_of(&page.json, "currency").to_string();
        }
        if str_of(&page.json, "request_status") != "TRUNCATED" {
            return Ok(false);
        }
        let next = page
            .json
            .pointer("/_links/next/href")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(&what, "TRUNCATED without _links.next.href"))?;
        // Rebased on the reports base: credentials never go to a host the answer names.
        let path = reqwest::Url::parse(next)
            .ok()
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .or_else(|| next.starts_with('/').then(|| next.to_string()))
            .ok_or_else(|| shape(&what, "_links.next.href is not a URL"))?;
        url = format!("{base}{path}");
    }
    Ok(true)
}

pub async fn vonage(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let req = ctx
        .client
        .get(ctx.url("/account/get-balance"))
        .query(&[("api_key", ctx.account.as_str()), ("api_secret", &ctx.key)]);
    let page = ctx.fetch("Vonage balance", req).await?;
    let balance = page
        .json
        .get("value")
        .and_then(math::micros_of)
        .ok_or_else(|| shape("Vonage balance", "no value"))?;
    let mut currency = String::new();
    let mut sms = Acc::default();
    let mut truncated = vonage_records(
        ctx,
        "SMS",
        |r| {
            let status = str_of(r, "status");
            let outcome = vonage_sms(status);
            sms.add(status, outcome);
            if outcome == Some(true)
                && let Some(l) = num_of(r, "latency")
            {
                sms.latencies.push(l);
            }
            match r.get("total_price").or_else(|| r.get("price")) {
                Some(Value::Null) | None => {}
                Some(p) => sms.price(Some(
                    math::micros_of(p).ok_or_else(|| format!("price {p} is not a decimal"))?,
                )),
            }
            Ok(())
        },
        &mut currency,
    )
    .await?;
    let mut calls = Acc::default();
    truncated |= vonage_records(
        ctx,
        "VOICE-CALL",
        |r| {
            let status = str_of(r, "status");
            calls.add(status, vonage_call(status));
            let seconds = num_of(r, "duration").unwrap_or(0.0).max(0.0);
            match r.get("total_price").or_else(|| r.get("price")) {
                Some(Value::Null) | None => {}
                Some(p) => {
                    calls.price(Some(
                        math::micros_of(p).ok_or_else(|| format!("price {p} is not a decimal"))?,
                    ));
                    calls.minutes += seconds / 60.0;
                }
            }
            Ok(())
        },
        &mut currency,
    )
    .await?;
    let (sms, calls) = (sms.finish("message"), calls.finish("minute"));
    let mut readings = vec![("vonage.balance_eur".to_string(), math::units(balance))];
    readings_of("vonage.sms", &sms, "delivered_rate", &mut readings);
    readings_of("vonage.calls", &calls, "success_rate", &mut readings);
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::Vonage(Snapshot {
            window_hours: ctx.limits.window_ms / 3_600_000,
            currency: if currency.is_empty() {
                "EUR".into()
            } else {
                currency.to_ascii_uppercase()
            },
            balance: Some(math::decimal(balance)),
            sms,
            calls,
            truncated,
            notes: Vec::new(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_per_message_and_per_billed_minute() {
        // Three messages at Twilio's negative prices, one unpriced (still queued).
        let mut sms = Acc::default();
        for (status, price) in [
            ("delivered", Some("-0.00790")),
            ("delivered", Some("-0.00790")),
            ("undelivered", Some("-0.00420")),
            ("queued", None),
        ] {
            sms.add(status, twilio_message(status).flatten());
            sms.price(price.and_then(math::parse_micros));
        }
        let t = sms.finish("message");
        assert_eq!(t.cost_total, "0.02");
        // 0.02 / 3 priced messages, not / 4 messages.
        assert_eq!(t.cost_per_unit.as_deref(), Some("0.006667"));
        assert_eq!(t.success_rate, Some(2.0 / 3.0), "the queued one is pending");
        assert_eq!((t.total, t.pending), (4, 1));
        // Calls of 61 s and 30 s bill 2 + 1 minutes: 0.039 / 3 = 0.013 a minute.
        let mut calls = Acc::default();
        for (seconds, price) in [(61u64, "-0.026"), (30, "-0.013")] {
            calls.add("completed", Some(true));
            calls.price(math::parse_micros(price));
            calls.minutes += math::billed_minutes(seconds) as f64;
        }
        let t = calls.finish("minute");
        assert_eq!(t.cost_per_unit.as_deref(), Some("0.013"));
        assert_eq!(t.minutes, Some(3.0));
    }

    #[test]
    fn statuses_sort_into_outcomes() {
        assert_eq!(twilio_message("read"), Some(Some(true)));
        assert_eq!(twilio_message("sent"), Some(None));
        assert_eq!(twilio_message("canceled"), None);
        assert_eq!(twilio_call("no-answer"), Some(Some(false)));
        assert_eq!(vonage_sms("EXPIRED"), Some(false));
        assert_eq!(vonage_sms("buffered"), None);
        assert_eq!(vonage_call("ANSWERED"), Some(true));
        assert_eq!(
            reports_base("https://rest.nexmo.com"),
            "https://api.nexmo.com"
        );
        assert_eq!(reports_base("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(date(86_400_000 + 5), "1970-01-02");
    }
}
