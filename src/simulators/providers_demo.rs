//! The demo's providers: the fake providers served on a loopback port, a monitor for each of
//! them (plus the demo Stripe account's balance, and a Google Cloud project on its own fake
//! with a key generated at start) added to the config, and a loop that keeps
//! them alive — credits and allowances spent so the quota forecasts have a slope, one provider
//! slow, one flaky, a project now and then coming up — so the status grid moves as a real one
//! does. The monitors go through the real provider checks; nothing is written to the store.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::gcp::FakeGcp;
use super::providers::{Behaviour, FakeProviders};
use super::providers_extras::{
    Execution, ExtrasData, RetellCall, TwilioItem, WHATSAPP_ALERTS, WHATSAPP_SUPPORT,
    whatsapp_message,
};
use super::{DemoContext, Simulator};
use crate::config::Config;
use crate::health::monitor::{MonitorSpec, Secret};
use crate::health::providers::Provider;

const KEY: &str = "demo_provider_key_5b2e";
const ACCOUNT: &str = "AC5b2e00demo";

/// How often the loop changes something.
const TICK: Duration = Duration::from_secs(5);

pub struct ProvidersDemo {
    fake: FakeProviders,
    gcp: FakeGcp,
}

impl ProvidersDemo {
    /// Serves the fake providers and adds a monitor per provider to `config`; call after the
    /// Stripe demo has set `config.stripe`, whose balance gets a monitor too.
    pub async fn start(config: &mut Config) -> std::io::Result<Self> {
        let fake = FakeProviders::new(KEY, ACCOUNT);
        let (base, _server) = fake.start().await?;
        let monitor = |p: Provider, name: &str, interval: &str| MonitorSpec {
            name: name.into(),
            kind: p.as_str().into(),
            target: base.clone(),
            interval: Some(interval.into()),
            timeout: Some("5s".into()),
            account: p.needs().account.map(|_| ACCOUNT.to_string()),
            key: Some(Secret(KEY.into())),
            // Extras every minute in the demo, so their tables fill while one watches.
            extras_interval: crate::health::extras::has_extras(p).then(|| "1m".to_string()),
            ..Default::default()
        };
        let mut monitors = vec![
            monitor(Provider::N8n, "n8n automations", "30s"),
            monitor(Provider::Twilio, "Twilio SMS", "30s"),
            monitor(Provider::Vonage, "Vonage SMS", "60s"),
            monitor(Provider::Retell, "Retell voice agents", "15s"),
            monitor(Provider::DigitalOcean, "DigitalOcean", "30s"),
            monitor(Provider::Supabase, "Supabase", "30s"),
            monitor(Provider::Luma, "Luma Dream Machine", "15s"),
            monitor(Provider::Kling, "Kling AI", "30s"),
            monitor(Provider::Bfl, "Black Forest Labs", "15s"),
            monitor(Provider::ElevenLabs, "ElevenLabs", "30s"),
            monitor(Provider::PiApi, "PiAPI", "30s"),
            monitor(Provider::OpenAi, "OpenAI", "30s"),
        ];
        // PiAPI answers slowly in the demo: degraded past 800 ms.
        if let Some(m) = monitors.iter_mut().find(|m| m.kind == "piapi") {
            m.degraded_when = vec!["[RESPONSE_TIME] > 800ms".into()];
        }
        // The WhatsApp senders the demo's Twilio traffic uses, plus one idle sender that shows
        // with no traffic, as a configured one does.
        if let Some(m) = monitors.iter_mut().find(|m| m.kind == "twilio") {
            m.whatsapp_senders = vec![
                WHATSAPP_SUPPORT.into(),
                WHATSAPP_ALERTS.into(),
                "whatsapp:+13105550188".into(),
            ];
        }
        // Low credits degrade Luma before they run out.
        if let Some(m) = monitors.iter_mut().find(|m| m.kind == "luma") {
            m.degraded_when = vec!["[BODY].credits < 500".into()];
        }
        if !config.stripe.api_base.is_empty() && !config.stripe.secret_key.is_empty() {
            monitors.push(MonitorSpec {
                name: "Stripe".into(),
                kind: "stripe".into(),
                target: config.stripe.api_base.clone(),
                interval: Some("30s".into()),
                key: Some(Secret(config.stripe.secret_key.clone())),
                ..Default::default()
            });
        }
        // Google Cloud: a service account whose key is generated now, never stored anywhere
        // but in the demo's config.
        let gcp = FakeGcp::new().map_err(|_| std::io::Error::other("generating an RSA key"))?;
        let (gcp_base, _gcp_server) = gcp.start().await?;
        monitors.push(MonitorSpec {
            name: "Google Cloud".into(),
            kind: "gcp".into(),
            target: gcp_base,
            interval: Some("30s".into()),
            timeout: Some("5s".into()),
            key: Some(Secret(gcp.key_file())),
            extras_interval: Some("1m".into()),
            ..Default::default()
        });
        config.monitors.extend(monitors);
        fake.set(Provider::PiApi, Behaviour::Slow(900));
        Ok(ProvidersDemo { fake, gcp })
    }
}

impl Simulator for ProvidersDemo {
    fn name(&self) -> &'static str {
        "providers"
    }

    fn run(
        &self,
        _ctx: DemoContext,
        cancel: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(live(self.fake.clone(), self.gcp.clone(), cancel))
    }
}

/// Spends credits and allowances, and now and then makes a provider misbehave for a while.
async fn live(fake: FakeProviders, gcp: FakeGcp, cancel: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(0x5eed_9a7e);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        tick += 1;
        fake.figures(|f| {
            f.luma_credits = (f.luma_credits - rng.random_range(0.0..6.0)).max(0.0);
            f.bfl_credits = (f.bfl_credits - rng.random_range(0.0..3.0)).max(0.0);
            f.piapi_credits = (f.piapi_credits - rng.random_range(0.0..8.0)).max(0.0);
            f.elevenlabs_used =
                (f.elevenlabs_used + rng.random_range(0..400)).min(f.elevenlabs_limit);
            if let Some(pack) = f.kling_packs.first_mut() {
                pack.2 = (pack.2 - rng.random_range(0.0..2.0)).max(0.0);
            }
            f.twilio_balance = (f.twilio_balance - rng.random_range(0.0..0.05)).max(0.0);
            f.digitalocean_month_to_date += rng.random_range(0.0..0.02);
            // The hourly request budget refills every 12 ticks (a minute), as a reset would.
            if tick.is_multiple_of(12) {
                f.digitalocean_requests_left = 5000;
            }
            // A Supabase project restarting a service now and then.
            let realtime = if rng.random_bool(0.05) {
                "COMING_UP"
            } else {
                "ACTIVE_HEALTHY"
            };
            if let Some(s) = f.supabase_services.iter_mut().find(|s| s.0 == "realtime") {
                s.1 = realtime.into();
            }
            traffic(&mut f.extras, crate::store::now_ms(), tick, &mut rng);
        });
        // Retell is flaky: a failing spell of a tick or two, about one tick in eight.
        let retell = if rng.random_bool(0.125) {
            Behaviour::Failing
        } else {
            Behaviour::Normal
        };
        fake.set(Provider::Retell, retell);
        // OpenAI rate-limits the demo for a minute every ten.
        let openai = if tick % 120 < 12 {
            Behaviour::RateLimited
        } else {
            Behaviour::Normal
        };
        fake.set(Provider::OpenAi, openai);
        // The instances' load wanders, so the CPU column moves between collections.
        gcp.series(|all| {
            for s in all.iter_mut() {
                let Some(last) = s.values.last().copied() else {
                    continue;
                };
                let next = if s.int64 {
                    (last * rng.random_range(0.8..1.25)).clamp(1e5, 5e7).round()
                } else {
                    (last + rng.random_range(-0.05..0.05)).clamp(0.01, 0.99)
                };
                s.values.remove(0);
                s.values.push(next);
            }
        });
    }
}

/// WhatsApp traffic on two senders: support conversations (replies, mostly read, now and
/// then one outside the 24-hour window failing with 63016) and one-way alerts (delivered,
/// read less often).
fn whatsapp(x: &mut ExtrasData, now: i64, rng: &mut StdRng) {
    let customer = format!("whatsapp:+4477009{:05}", rng.random_range(0..1_000));
    if rng.random_bool(0.5) {
        x.twilio_messages.insert(
            0,
            whatsapp_message(
                WHATSAPP_SUPPORT,
                &customer,
                false,
                "received",
                Some("-0.00500"),
                now - 8_000,
                0,
            ),
        );
        let status = match rng.random_range(0..100) {
            0..4 => "failed",
            4..6 => "undelivered",
            6..30 => "delivered",
            _ => "read",
        };
        let price = (status != "failed").then_some("-0.00500");
        x.twilio_messages.insert(
            0,
            whatsapp_message(
                WHATSAPP_SUPPORT,
                &customer,
                true,
                status,
                price,
                now - 4_000,
                rng.random_range(700..4_000),
            ),
        );
    }
    if rng.random_bool(0.3) {
        let status = if rng.random_bool(0.45) {
            "read"
        } else {
            "delivered"
        };
        x.twilio_messages.insert(
            0,
            whatsapp_message(
                WHATSAPP_ALERTS,
                &customer,
                true,
                status,
                Some("-0.00420"),
                now - 3_000,
                rng.random_range(900..5_000),
            ),
        );
    }
}

/// A tick's worth of traffic for the extras: an n8n execution now and then (one workflow
/// flakier than the other), SMS, WhatsApp messages and calls with their prices, a Retell
/// call, droplets' load wandering, Supabase requests; everything older than a day is
/// dropped, as the window is.
fn traffic(x: &mut ExtrasData, now: i64, tick: u64, rng: &mut StdRng) {
    let day_ago = now - 86_400_000;
    if rng.random_bool(0.6) {
        let (workflow, fails) = if rng.random_bool(0.5) {
            ("wf1", 0.1)
        } else {
            ("wf2", 0.3)
        };
        let failed = rng.random_bool(fails);
        let took = rng.random_range(500..12_000);
        x.n8n_executions.insert(
            0,
            Execution {
                id: 1_000 + tick,
                workflow_id: workflow.into(),
                status: if failed { "error" } else { "success" }.into(),
                mode: "trigger".into(),
                started_at: now - took,
                stopped_at: Some(now),
                error: failed.then(|| {
                    (
                        "Request failed with status code 502".to_string(),
                        "HTTP Request".to_string(),
                    )
                }),
            },
        );
    }
    let status = if rng.random_bool(0.93) {
        "delivered"
    } else {
        "undelivered"
    };
    x.twilio_messages.insert(
        0,
        TwilioItem {
            status: status.into(),
            direction: "outbound-api".into(),
            from: "+15005550006".into(),
            to: "+14155552671".into(),
            error_code: (status == "undelivered").then_some(30003),
            price: Some("-0.00790".into()),
            at: now - 5_000,
            updated: now - 5_000 + rng.random_range(800..6_000),
            duration_s: 0,
        },
    );
    if rng.random_bool(0.3) {
        let seconds = rng.random_range(10..400u64);
        x.twilio_calls.insert(
            0,
            TwilioItem {
                status: "completed".into(),
                direction: "outbound-api".into(),
                from: "+15005550006".into(),
                to: "+14155552671".into(),
                error_code: None,
                price: Some(format!("-{:.5}", 0.013 * seconds.div_ceil(60) as f64)),
                at: now - seconds as i64 * 1000,
                updated: now,
                duration_s: seconds,
            },
        );
    }
    whatsapp(x, now, rng);
    if rng.random_bool(0.4) {
        let error = rng.random_bool(0.08);
        let e2e: Vec<f64> = (0..6).map(|_| rng.random_range(450.0..1_600.0)).collect();
        x.retell_calls.insert(
            0,
            RetellCall {
                id: format!("call_demo_{tick}"),
                status: if error { "error" } else { "ended" }.into(),
                reason: if error {
                    "error_llm_websocket_open"
                } else if rng.random_bool(0.6) {
                    "user_hangup"
                } else {
                    "agent_hangup"
                }
                .into(),
                cost_cents: rng.random_range(4.0..30.0),
                e2e_ms: e2e,
                start: now - 90_000,
                successful: Some(!error && rng.random_bool(0.85)),
            },
        );
    }
    for d in x.droplets.iter_mut().filter(|d| d.status == "active") {
        d.busy = (d.busy + rng.random_range(-0.05..0.05)).clamp(0.02, 0.98);
        d.fs_free = (d.fs_free - rng.random_range(0.0..5e6)).max(0.0);
    }
    if let Some(bucket) = x.supabase_api.last_mut() {
        bucket[0] += rng.random_range(0..40);
        bucket[1] += rng.random_range(0..4);
    }
    x.n8n_executions.retain(|e| e.started_at >= day_ago);
    x.twilio_messages.retain(|m| m.at >= day_ago);
    x.twilio_calls.retain(|c| c.at >= day_ago);
    x.retell_calls.retain(|c| c.start >= day_ago);
}
