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
//!
//! WhatsApp through Twilio uses the same Messages resource with `whatsapp:+E164` addresses, so
//! the one scan of `Messages.json` is split by channel: a message with a `whatsapp:` address
//! is WhatsApp traffic, counted per WhatsApp sender (the business's own address: `from` of
//! an outbound message, `to` of an inbound one), and the SMS figures are SMS alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::math::{self, Micros, name_part};
use super::{Collected, Ctx, Failure, list, num_of, shape, str_of};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub window_hours: i64,
    /// The account's currency (Twilio's `price_unit`/balance currency; Vonage EUR).
    pub currency: String,
    pub balance: Option<String>,
    pub sms: Traffic,
    pub calls: Traffic,
    /// Twilio's WhatsApp senders: the configured ones first (shown even without traffic),
    /// then busiest first; always empty for Vonage. Absent in snapshots stored before WhatsApp was
    /// split out, hence the default.
    #[serde(default)]
    pub whatsapp_senders: Vec<WhatsAppSender>,
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

/// One WhatsApp sender's traffic over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WhatsAppSender {
    /// The business's address, `whatsapp:+E164` ([`UNASSIGNED`] when Twilio named none).
    pub sender: String,
    /// Named in the monitor's `whatsapp_senders`.
    pub configured: bool,
    /// Outbound messages (canceled ones left out).
    pub sent: u64,
    /// Delivered or read: a read message was delivered first.
    pub delivered: u64,
    pub read: u64,
    /// Failed or undelivered.
    pub failed: u64,
    /// Not final yet (queued, accepted, sent without a receipt, …).
    pub pending: u64,
    /// delivered / (delivered + failed), as the SMS delivered rate.
    pub delivered_rate: Option<f64>,
    /// read / delivered: of the messages that arrived, the share opened. Recipients can turn
    /// read receipts off, so this is a floor.
    pub read_rate: Option<f64>,
    /// Inbound messages to this sender.
    pub received: u64,
    /// Outbound messages' prices, like the SMS cost (inbound ones are not counted).
    pub cost_total: String,
    pub cost_per_message: Option<String>,
    /// The failed and undelivered messages' `error_code`s, most common first, at most
    /// [`TOP_ERRORS`]; `(code, messages)`.
    pub errors: Vec<(String, u64)>,
}

/// The sender of a WhatsApp message whose business side carries no `whatsapp:` address.
pub const UNASSIGNED: &str = "whatsapp:unassigned";

/// Error codes kept per sender.
pub const TOP_ERRORS: usize = 5;

/// Sender rows kept in a snapshot (configured ones first): each row is a few readings.
const MAX_SENDERS: usize = 100;

/// The channel a Twilio message went over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Sms,
    /// With the business's sender address.
    WhatsApp(String),
}

/// `address` as `whatsapp:…` with the prefix in Twilio's lower case, when it is one.
fn whatsapp_address(address: &str) -> Option<String> {
    let prefix = address.get(..9)?;
    prefix
        .eq_ignore_ascii_case("whatsapp:")
        .then(|| format!("whatsapp:{}", &address[9..]))
}

/// Which channel message `m` went over. Twilio puts `whatsapp:` on both addresses of a
/// WhatsApp message; should only the customer's side carry it (a sender not chosen yet),
/// the message is still WhatsApp, counted under [`UNASSIGNED`] rather than as an SMS.
pub fn channel(m: &Value) -> Channel {
    let (from, to) = (str_of(m, "from"), str_of(m, "to"));
    let (ours, theirs) = if str_of(m, "direction").starts_with("outbound") {
        (from, to)
    } else {
        (to, from)
    };
    match (whatsapp_address(ours), whatsapp_address(theirs)) {
        (Some(sender), _) => Channel::WhatsApp(sender),
        (None, Some(_)) => Channel::WhatsApp(UNASSIGNED.into()),
        (None, None) => Channel::Sms,
    }
}

/// The name-safe part of a sender for reading names: the E.164 digits
/// (`whatsapp:+14155238886` → `14155238886`), which identify the number on their own.
pub fn sender_key(sender: &str) -> String {
    let bare = sender.strip_prefix("whatsapp:").unwrap_or(sender);
    name_part(bare.trim_start_matches('+'))
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

    /// Counts an outbound Twilio message: its outcome, its delivery latency and its price.
    /// Returns the outcome (`None`: canceled, not counted), or why its price is unreadable.
    fn message(&mut self, m: &Value) -> Result<Option<Option<bool>>, String> {
        let status = str_of(m, "status");
        let Some(outcome) = twilio_message(status) else {
            return Ok(None);
        };
        self.add(status, outcome);
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
            self.latencies.push((u - s) as f64);
        }
        match m.get("price") {
            Some(Value::Null) | None => {}
            Some(p) => {
                self.price(Some(
                    math::micros_of(p).ok_or_else(|| format!("price {p} is not a decimal"))?,
                ));
            }
        }
        Ok(Some(outcome))
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

/// One WhatsApp sender's messages while they are read.
#[derive(Default)]
struct SenderAcc {
    out: Acc,
    read: u64,
    received: u64,
    errors: BTreeMap<String, u64>,
}

impl SenderAcc {
    /// Counts message `m` of this sender, outbound or inbound.
    fn add(&mut self, m: &Value, outbound: bool) -> Result<(), String> {
        if !outbound {
            self.received += 1;
            return Ok(());
        }
        let outcome = self.out.message(m)?;
        let status = str_of(m, "status");
        if status == "read" {
            self.read += 1;
        }
        if outcome == Some(Some(false)) {
            let code = match m.get("error_code") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                _ => "none".to_string(),
            };
            *self.errors.entry(code).or_default() += 1;
        }
        Ok(())
    }

    fn finish(self, sender: String, configured: bool) -> WhatsAppSender {
        let mut errors: Vec<(String, u64)> = self.errors.into_iter().collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        errors.truncate(TOP_ERRORS);
        let read = self.read;
        let received = self.received;
        let t = self.out.finish("message");
        WhatsAppSender {
            sender,
            configured,
            sent: t.total,
            delivered: t.succeeded,
            read,
            failed: t.failed,
            pending: t.pending,
            delivered_rate: t.success_rate,
            read_rate: math::rate(read, t.succeeded),
            received,
            cost_total: t.cost_total,
            cost_per_message: t.cost_per_unit,
            errors,
        }
    }
}

/// The sender rows: every sender with traffic and every configured one, configured first,
/// then busiest (sent + received) first, bounded.
fn sender_rows(
    mut tallies: BTreeMap<String, SenderAcc>,
    configured: &[String],
) -> Vec<WhatsAppSender> {
    for c in configured {
        tallies.entry(c.clone()).or_default();
    }
    let mut rows: Vec<WhatsAppSender> = tallies
        .into_iter()
        .map(|(sender, acc)| {
            let is_configured = configured.contains(&sender);
            acc.finish(sender, is_configured)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.configured
            .cmp(&a.configured)
            .then((b.sent + b.received).cmp(&(a.sent + a.received)))
            .then_with(|| a.sender.cmp(&b.sender))
    });
    rows.truncate(MAX_SENDERS);
    rows
}

/// A sender's readings, `twilio.whatsapp.<digits>.<figure>`.
fn sender_readings(s: &WhatsAppSender, out: &mut Vec<(String, f64)>) {
    let p = format!("twilio.whatsapp.{}", sender_key(&s.sender));
    for (figure, n) in [
        ("sent", s.sent),
        ("delivered", s.delivered),
        ("read", s.read),
        ("failed", s.failed),
        ("received", s.received),
    ] {
        out.push((format!("{p}.{figure}"), n as f64));
    }
    if let Some(r) = s.delivered_rate {
        out.push((format!("{p}.delivered_rate"), r));
    }
    if let Some(r) = s.read_rate {
        out.push((format!("{p}.read_rate"), r));
    }
    if let Some(m) = math::parse_micros(&s.cost_total) {
        out.push((format!("{p}.cost_total"), math::units(m)));
    }
    if let Some(m) = s.cost_per_message.as_deref().and_then(math::parse_micros) {
        out.push((format!("{p}.cost_per_message"), math::units(m)));
    }
    for (code, n) in &s.errors {
        out.push((format!("{p}.error.{}", name_part(code)), *n as f64));
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
    // SMS figures are SMS alone: "SMS delivered rate" is what a user alerts on, and WhatsApp
    // differs in price, in statuses (`read`) and in how it fails (template and session-window
    // errors), so mixing it in would move the SMS rate for reasons that are not SMS's. Its
    // own figures are per sender below; the total of both is their sum.
    let mut sms = Acc::default();
    let mut senders: BTreeMap<String, SenderAcc> = BTreeMap::new();
    let mut bad = None;
    // One scan serves both channels. Reading each sender with `From=whatsapp:+…` instead
    // would add requests, not save any: the SMS figures need the whole list anyway.
    let mut truncated = twilio_list(
        ctx,
        "Twilio messages",
        "Messages",
        "DateSent>",
        "messages",
        |m| {
            let sent = m
                .get("date_sent")
                .and_then(Value::as_str)
                .or_else(|| m.get("date_created").and_then(Value::as_str))
                .and_then(math::rfc2822_ms);
            if sent.is_some_and(|s| s < since) {
                return;
            }
            let outbound = str_of(m, "direction").starts_with("outbound");
            let counted = match channel(m) {
                // Inbound SMS are not the account's sending: left out, as before.
                Channel::Sms if !outbound => return,
                Channel::Sms => sms.message(m).map(|_| ()),
                Channel::WhatsApp(sender) => senders.entry(sender).or_default().add(m, outbound),
            };
            if let Err(why) = counted {
                bad = Some(why);
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
    let whatsapp_senders = sender_rows(senders, &ctx.whatsapp_senders);
    for s in &whatsapp_senders {
        sender_readings(s, &mut readings);
    }
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
            whatsapp_senders,
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
            whatsapp_senders: Vec::new(),
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

    fn message(direction: &str, from: &str, to: &str, status: &str) -> Value {
        serde_json::json!({
            "direction": direction, "from": from, "to": to, "status": status,
            "price": "-0.00500", "error_code": null,
        })
    }

    #[test]
    fn whatsapp_is_told_from_sms_by_either_address_and_counted_on_the_business_side() {
        let ours = "whatsapp:+14155238886";
        let theirs = "whatsapp:+447700900123";
        let wa = |s: &str| Channel::WhatsApp(s.to_string());
        // Outbound: the sender is `from`; inbound: it is `to`.
        assert_eq!(
            channel(&message("outbound-api", ours, theirs, "read")),
            wa(ours)
        );
        assert_eq!(
            channel(&message("outbound-reply", ours, theirs, "sent")),
            wa(ours)
        );
        assert_eq!(
            channel(&message("inbound", theirs, ours, "received")),
            wa(ours)
        );
        // Twilio's prefix is lower case; another case is the same sender.
        assert_eq!(
            channel(&message(
                "outbound-api",
                "WhatsApp:+14155238886",
                theirs,
                "sent"
            )),
            wa(ours)
        );
        // Only the customer's side is WhatsApp: still not an SMS.
        let no_from = serde_json::json!({"direction": "outbound-api", "from": null,
            "to": theirs, "status": "accepted"});
        assert_eq!(channel(&no_from), wa(UNASSIGNED));
        // Plain numbers, or none at all, are SMS.
        assert_eq!(
            channel(&message(
                "outbound-api",
                "+15005550006",
                "+14155552671",
                "sent"
            )),
            Channel::Sms
        );
        assert_eq!(channel(&serde_json::json!({})), Channel::Sms);
        assert_eq!(
            channel(&message("inbound", "whatsapp", "+1", "x")),
            Channel::Sms
        );
        assert_eq!(sender_key(ours), "14155238886");
        assert_eq!(sender_key(UNASSIGNED), "unassigned");
        assert_eq!(sender_key("whatsapp:+1 (415)"), "1__415_");
    }

    #[test]
    fn a_senders_read_rate_is_over_delivered_and_errors_are_ranked() {
        let (ours, theirs) = ("whatsapp:+14155238886", "whatsapp:+447700900123");
        let mut acc = SenderAcc::default();
        let mut add = |direction: &str, status: &str, code: Option<Value>| {
            let mut m = message(direction, ours, theirs, status);
            if let Some(c) = code {
                m["error_code"] = c;
            }
            acc.add(&m, direction != "inbound").expect("counts");
        };
        for status in ["read", "read", "delivered", "sent", "canceled"] {
            add("outbound-api", status, None);
        }
        add("outbound-api", "failed", Some(63016.into()));
        add("outbound-api", "failed", Some(63016.into()));
        // Codes arrive as numbers, now and then as strings.
        add("outbound-api", "undelivered", Some("63024".into()));
        add("outbound-api", "failed", None);
        add("inbound", "received", None);
        let s = acc.finish(ours.into(), false);
        // The canceled one is not a sent message.
        assert_eq!((s.sent, s.delivered, s.read, s.failed), (8, 3, 2, 4));
        assert_eq!((s.pending, s.received), (1, 1));
        assert_eq!(s.delivered_rate, Some(3.0 / 7.0));
        assert_eq!(
            s.read_rate,
            Some(2.0 / 3.0),
            "read ÷ delivered, read ones included"
        );
        // Priced outbound messages only: 8 × 0.005 (the canceled one was never sent).
        assert_eq!(s.cost_total, "0.04");
        assert_eq!(s.cost_per_message.as_deref(), Some("0.005"));
        assert_eq!(
            s.errors,
            vec![
                ("63016".to_string(), 2),
                ("63024".to_string(), 1),
                ("none".to_string(), 1)
            ]
        );
        // A price that is not a decimal is an error, not a zero.
        let mut bad = message("outbound-api", ours, theirs, "read");
        bad["price"] = "free".into();
        assert!(SenderAcc::default().add(&bad, true).is_err());
    }

    #[test]
    fn configured_senders_show_without_traffic_and_come_first() {
        let mut tallies = BTreeMap::new();
        let busy = "whatsapp:+12025550143";
        let acc: &mut SenderAcc = tallies.entry(busy.to_string()).or_default();
        acc.received = 3;
        let idle = "whatsapp:+13105550188".to_string();
        let rows = sender_rows(tallies, std::slice::from_ref(&idle));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].sender.as_str(), rows[0].configured),
            (idle.as_str(), true)
        );
        assert_eq!(
            (rows[0].sent, rows[0].delivered_rate, rows[0].read_rate),
            (0, None, None)
        );
        assert_eq!((rows[1].sender.as_str(), rows[1].received), (busy, 3));
        let mut readings = Vec::new();
        sender_readings(&rows[0], &mut readings);
        let names: Vec<&str> = readings.iter().map(|(n, _)| n.as_str()).collect();
        // Zero counts are recorded (a quiet sender is a figure), rates without a base are not.
        assert!(
            names.contains(&"twilio.whatsapp.13105550188.sent"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.ends_with("_rate")), "{names:?}");
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
