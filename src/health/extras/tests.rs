//! Each provider's extras against the fake providers: the figures worked out by hand from the
//! fake's sample data, pagination across pages, and every way a provider can misbehave failing
//! just that collection with a clear error that never holds the key.

use std::time::Duration;

use super::*;
use crate::simulators::providers::{Behaviour, FakeProviders};

const KEY: &str = "key_live_9f8e7d";
const ACCOUNT: &str = "AC0123456789abcdef";

fn limits(page_size: u32) -> Limits {
    Limits {
        page_size,
        max_pages: 8,
        request_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(10),
        window_ms: 24 * 3_600_000,
        max_droplets: 10,
        max_failures: 5,
    }
}

async fn run(p: Provider, base: &str, limits: Limits) -> Result<Collected, Failure> {
    run_with(p, base, limits, Vec::new()).await
}

async fn run_with(
    p: Provider,
    base: &str,
    limits: Limits,
    whatsapp_senders: Vec<String>,
) -> Result<Collected, Failure> {
    let client = crate::health::checks::outbound().no_redirect;
    let ctx = Ctx {
        client: &client,
        provider: p,
        base: base.to_string(),
        account: ACCOUNT.into(),
        key: KEY.into(),
        metric_types: Vec::new(),
        limits,
        now: crate::store::now_ms(),
        whatsapp_senders,
    };
    collect(&ctx).await
}

fn get(c: &Collected, name: &str) -> f64 {
    c.readings
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no reading {name}: {:?}", c.readings))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn n8n_counts_executions_per_workflow_across_pages() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let c = run(Provider::N8n, &base, limits(2))
        .await
        .expect("collects");
    // wf1 in the window: 3 succeeded (2, 4, 6 s), 1 failed (3 s), 1 running.
    assert_eq!(get(&c, "n8n.workflow.wf1.executions"), 5.0);
    assert_eq!(get(&c, "n8n.workflow.wf1.success_rate"), 0.75);
    assert_eq!(get(&c, "n8n.workflow.wf1.avg_duration_ms"), 3_750.0);
    // wf2: 1 success, 1 crashed, 1 canceled (no side), 1 waiting; durations 10, 1, 1 s.
    assert_eq!(get(&c, "n8n.workflow.wf2.success_rate"), 0.5);
    assert_eq!(get(&c, "n8n.workflow.wf2.avg_duration_ms"), 4_000.0);
    assert_eq!(
        get(&c, "n8n.executions.total"),
        9.0,
        "the 2-day-old one is out"
    );
    assert_eq!(get(&c, "n8n.executions.success_rate"), 4.0 / 6.0);
    assert_eq!(get(&c, "n8n.executions.running"), 1.0);
    assert_eq!(get(&c, "n8n.executions.waiting"), 1.0);
    assert_eq!(get(&c, "n8n.workflows.total"), 3.0);
    assert_eq!(get(&c, "n8n.workflows.active"), 2.0);
    // Insights count every finished execution, the old one too: 7, 3 failed.
    assert_eq!(get(&c, "n8n.insights.total"), 7.0);
    assert_eq!(get(&c, "n8n.insights.failure_rate"), 3.0 / 7.0);
    let Snapshot::N8n(s) = &c.snapshot else {
        panic!("{:?}", c.snapshot)
    };
    assert_eq!(s.source, "insights");
    assert_eq!(s.failures.len(), 2);
    assert_eq!(s.failures[0].id, "107");
    assert_eq!(s.failures[0].workflow_name, "Sync CRM");
    assert_eq!(s.failures[0].node.as_deref(), Some("HTTP Request"));
    assert!(
        s.failures[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused the connection")),
        "{:?}",
        s.failures[0]
    );
    assert_eq!(s.failures[1].status, "crashed");
    assert_eq!(s.workflows[0].id, "wf1", "busiest first");
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/executions?") && r.contains("cursor=2")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/v1/workflows?") && r.contains("cursor=2"))
    );

    // An older server without insights: totals are counted, nothing invented.
    fake.figures(|f| f.extras.n8n_insights = false);
    let c = run(Provider::N8n, &base, limits(100))
        .await
        .expect("collects");
    assert!(
        c.readings
            .iter()
            .all(|(n, _)| !n.starts_with("n8n.insights"))
    );
    let Snapshot::N8n(s) = &c.snapshot else {
        panic!()
    };
    assert_eq!(
        (s.source.as_str(), s.insights.is_none()),
        ("executions", true)
    );
    // The page bound stops the scan and says so.
    let mut tight = limits(1);
    tight.max_pages = 2;
    let c = run(Provider::N8n, &base, tight).await.expect("collects");
    let Snapshot::N8n(s) = &c.snapshot else {
        panic!()
    };
    assert!(s.truncated);
    assert_eq!(s.executions_scanned, 2);
}

#[tokio::test]
async fn twilio_rates_latency_and_costs_across_pages() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let c = run(Provider::Twilio, &base, limits(2))
        .await
        .expect("collects");
    assert_eq!(get(&c, "twilio.balance"), 42.17);
    // Outbound: delivered ×2, undelivered, queued; the inbound one is left out.
    assert_eq!(get(&c, "twilio.sms.total"), 4.0);
    assert_eq!(get(&c, "twilio.sms.delivered_rate"), 2.0 / 3.0);
    assert_eq!(get(&c, "twilio.sms.latency_p50_ms"), 2_000.0);
    assert_eq!(get(&c, "twilio.sms.latency_p95_ms"), 4_000.0);
    assert!(close(get(&c, "twilio.sms.cost_total"), 0.02));
    assert!(close(get(&c, "twilio.sms.cost_per_message"), 0.006667));
    // Calls: 61 s and 30 s bill 3 minutes for 0.039; the busy one fails.
    assert_eq!(get(&c, "twilio.calls.success_rate"), 2.0 / 3.0);
    assert_eq!(get(&c, "twilio.calls.minutes"), 3.0);
    assert!(close(get(&c, "twilio.calls.cost_per_minute"), 0.013));
    assert_eq!(get(&c, "twilio.concurrent_requests"), 1.0);
    let Snapshot::Twilio(s) = &c.snapshot else {
        panic!()
    };
    assert_eq!(s.currency, "USD");
    assert_eq!(s.sms.cost_per_unit.as_deref(), Some("0.006667"));
    assert_eq!(s.balance.as_deref(), Some("42.17"));
    let requests = fake.requests();
    for page in [
        "Messages.json?PageSize=2&Page=1",
        "Messages.json?PageSize=2&Page=2",
        "Calls.json?PageSize=2&Page=1",
    ] {
        assert!(
            requests.iter().any(|r| r.contains(page)),
            "{page}: {requests:?}"
        );
    }
}

#[tokio::test]
async fn twilio_whatsapp_senders_are_split_from_sms_across_pages() {
    use crate::simulators::providers_extras::{WHATSAPP_ALERTS, WHATSAPP_SUPPORT};
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let idle = "whatsapp:+13105550188".to_string();
    let c = run_with(Provider::Twilio, &base, limits(3), vec![idle.clone()])
        .await
        .expect("collects");
    // SMS alone: the same figures as with no WhatsApp traffic at all.
    assert_eq!(get(&c, "twilio.sms.total"), 4.0);
    assert_eq!(get(&c, "twilio.sms.failed"), 1.0);
    assert!(close(get(&c, "twilio.sms.cost_total"), 0.02));
    // Support: read ×2, delivered, failed ×2 (63016), undelivered (63024), sent; the
    // two-day-old read one is outside the window.
    let p = "twilio.whatsapp.14155238886";
    assert_eq!(get(&c, &format!("{p}.sent")), 7.0);
    assert_eq!(get(&c, &format!("{p}.delivered")), 3.0);
    assert_eq!(get(&c, &format!("{p}.read")), 2.0);
    assert_eq!(get(&c, &format!("{p}.failed")), 3.0);
    assert_eq!(get(&c, &format!("{p}.received")), 2.0);
    assert_eq!(get(&c, &format!("{p}.delivered_rate")), 0.5);
    assert_eq!(get(&c, &format!("{p}.read_rate")), 2.0 / 3.0);
    assert!(close(get(&c, &format!("{p}.cost_total")), 0.025));
    assert!(close(get(&c, &format!("{p}.cost_per_message")), 0.005));
    assert_eq!(get(&c, &format!("{p}.error.63016")), 2.0);
    assert_eq!(get(&c, &format!("{p}.error.63024")), 1.0);
    let p = "twilio.whatsapp.12025550143";
    assert_eq!(get(&c, &format!("{p}.read_rate")), 1.0);
    assert!(close(get(&c, &format!("{p}.cost_per_message")), 0.0042));
    assert_eq!(get(&c, "twilio.whatsapp.13105550188.sent"), 0.0);
    let Snapshot::Twilio(s) = &c.snapshot else {
        panic!()
    };
    assert!(!s.truncated, "every page read");
    let senders: Vec<(&str, bool)> = s
        .whatsapp_senders
        .iter()
        .map(|w| (w.sender.as_str(), w.configured))
        .collect();
    assert_eq!(
        senders,
        vec![
            (idle.as_str(), true),
            (WHATSAPP_SUPPORT, false),
            (WHATSAPP_ALERTS, false)
        ]
    );
    assert_eq!(
        s.whatsapp_senders[1].errors,
        vec![("63016".to_string(), 2), ("63024".to_string(), 1)]
    );
    // A snapshot stored before WhatsApp was split out still reads.
    let mut old = serde_json::to_value(&c.snapshot).expect("serializes");
    old.as_object_mut()
        .expect("an object")
        .remove("whatsapp_senders");
    let Snapshot::Twilio(back) = serde_json::from_value::<Snapshot>(old).expect("reads") else {
        panic!()
    };
    assert!(back.whatsapp_senders.is_empty());
}

#[test]
fn whatsapp_senders_are_normalised_and_refused_with_the_field_named() {
    use crate::health::monitor::{MonitorSpec, Secret};
    let spec = |kind: &str, senders: &[&str]| MonitorSpec {
        name: "m".into(),
        kind: kind.into(),
        target: "http://127.0.0.1:1".into(),
        account: (kind == "twilio").then(|| ACCOUNT.to_string()),
        key: Some(Secret(KEY.into())),
        whatsapp_senders: senders.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let m = spec(
        "twilio",
        &[
            "whatsapp:+14155238886",
            " +14155238886 ",
            "WHATSAPP:+12025550143",
        ],
    )
    .validate()
    .expect("valid");
    assert_eq!(
        m.whatsapp_senders,
        vec!["whatsapp:+14155238886", "whatsapp:+12025550143"]
    );
    for (kind, bad, field, says) in [
        (
            "twilio",
            "14155238886",
            "whatsapp_senders[0]",
            "is not a WhatsApp sender",
        ),
        (
            "twilio",
            "whatsapp:+1415abc",
            "whatsapp_senders[0]",
            "is not",
        ),
        (
            "twilio",
            "whatsapp:+1234567890123456",
            "whatsapp_senders[0]",
            "is not",
        ),
        (
            "n8n",
            "whatsapp:+14155238886",
            "whatsapp_senders",
            "applies to twilio",
        ),
    ] {
        let e = spec(kind, &[bad]).validate().unwrap_err();
        assert_eq!(e.field, field, "{bad}");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[tokio::test]
async fn vonage_reports_follow_truncated_pages() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    fake.figures(|f| f.extras.vonage_page = 2);
    let c = run(Provider::Vonage, &base, limits(100))
        .await
        .expect("collects");
    assert_eq!(get(&c, "vonage.balance_eur"), 18.5);
    assert_eq!(get(&c, "vonage.sms.total"), 4.0, "both pages read");
    assert_eq!(get(&c, "vonage.sms.delivered_rate"), 2.0 / 3.0);
    assert_eq!(get(&c, "vonage.sms.latency_p50_ms"), 800.0);
    assert_eq!(get(&c, "vonage.sms.latency_p95_ms"), 1_200.0);
    assert!(close(get(&c, "vonage.sms.cost_total"), 0.1332));
    assert!(close(get(&c, "vonage.sms.cost_per_message"), 0.0333));
    // 90 s + 30 s = 2 real minutes for 0.028.
    assert!(close(get(&c, "vonage.calls.minutes"), 2.0));
    assert!(close(get(&c, "vonage.calls.cost_per_minute"), 0.014));
    assert_eq!(get(&c, "vonage.calls.success_rate"), 2.0 / 3.0);
    let sms_pages = fake
        .requests()
        .iter()
        .filter(|r| r.as_str() == "GET /v2/reports/records?product=SMS")
        .count();
    assert_eq!(sms_pages, 2);
}

#[tokio::test]
async fn retell_success_latency_cost_and_reasons_on_v3_and_v2() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    for v3 in [true, false] {
        fake.figures(|f| f.extras.retell_v3 = v3);
        let c = run(Provider::Retell, &base, limits(2))
            .await
            .expect("collects");
        assert_eq!(get(&c, "retell.calls.total"), 5.0, "v3 {v3}");
        assert_eq!(get(&c, "retell.calls.success_rate"), 0.6);
        assert_eq!(get(&c, "retell.calls.analysis_success_rate"), 2.0 / 3.0);
        // Pooled samples 400, 500, 600, 700, 800, 900.
        assert_eq!(get(&c, "retell.latency_e2e_p50_ms"), 600.0);
        assert_eq!(get(&c, "retell.latency_e2e_p95_ms"), 900.0);
        // Cents: 12.5 + 10 + 2.25 + 8 + 0 = 32.75 over five calls.
        assert!(close(get(&c, "retell.cost_total_cents"), 32.75));
        assert!(close(get(&c, "retell.cost_per_call_cents"), 6.55));
        assert_eq!(get(&c, "retell.disconnection.user_hangup"), 2.0);
        let Snapshot::Retell(s) = &c.snapshot else {
            panic!()
        };
        assert_eq!(s.disconnection_reasons[0], ("user_hangup".to_string(), 2));
    }
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| *r == "POST /v3/list-calls")
            .count()
            >= 4
    );
    assert!(
        requests
            .iter()
            .filter(|r| *r == "POST /v2/list-calls")
            .count()
            >= 3
    );
}

#[tokio::test]
async fn digitalocean_droplets_metrics_and_balance() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let c = run(Provider::DigitalOcean, &base, limits(2))
        .await
        .expect("collects");
    assert_eq!(get(&c, "do.droplets.total"), 3.0);
    assert_eq!(get(&c, "do.droplets.active"), 2.0);
    assert!(close(get(&c, "do.droplet.3164444.cpu_percent"), 25.0));
    assert!(close(get(&c, "do.droplet.3164444.memory_percent"), 75.0));
    assert!(close(get(&c, "do.droplet.3164444.disk_percent"), 25.0));
    assert!(close(get(&c, "do.droplet.3164444.bandwidth_in_mbps"), 1.5));
    assert!(close(get(&c, "do.droplet.3164445.cpu_percent"), 60.0));
    assert!(close(get(&c, "do.droplet.3164445.disk_percent"), 80.0));
    assert!(
        c.readings
            .iter()
            .all(|(n, _)| !n.starts_with("do.droplet.3164446")),
        "off: not measured"
    );
    assert!(close(get(&c, "do.balance.month_to_date_usage_usd"), 23.4));
    let Snapshot::DigitalOcean(s) = &c.snapshot else {
        panic!()
    };
    assert_eq!(s.droplets.len(), 3);
    assert_eq!(s.month_to_date_usage_usd.as_deref(), Some("23.4"));
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("/v2/droplets?") && r.contains("page=2"))
    );
    // Bounded: one droplet measured, and a note says so.
    let mut one = limits(200);
    one.max_droplets = 1;
    let c = run(Provider::DigitalOcean, &base, one)
        .await
        .expect("collects");
    let Snapshot::DigitalOcean(s) = &c.snapshot else {
        panic!()
    };
    assert_eq!(s.droplets.iter().filter(|d| d.measured).count(), 1);
    assert!(
        s.notes.iter().any(|n| n.contains("first 1 active")),
        "{:?}",
        s.notes
    );
}

#[tokio::test]
async fn supabase_services_api_counts_disk_and_pg_stat() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    fake.figures(|f| f.supabase_services[1].1 = "UNHEALTHY".into());
    let c = run(Provider::Supabase, &base, limits(100))
        .await
        .expect("collects");
    assert_eq!(get(&c, "supabase.services.healthy"), 5.0);
    assert_eq!(get(&c, "supabase.service.db.healthy"), 0.0);
    assert_eq!(get(&c, "supabase.api.rest_requests"), 125.0);
    assert_eq!(get(&c, "supabase.api.total_requests"), 138.0);
    assert_eq!(get(&c, "supabase.disk.used_percent"), 25.0);
    assert_eq!(get(&c, "supabase.db.cache_hit_rate"), 0.99);
    assert_eq!(get(&c, "supabase.db.connections"), 12.0);
}

/// Every way a provider can misbehave fails that collection alone, saying what was read and
/// what was wrong, and never with the key.
#[tokio::test]
async fn misbehaving_providers_fail_the_collection_clearly() {
    let fake = FakeProviders::new(KEY, ACCOUNT);
    let (base, _server) = fake.start().await.expect("fake starts");
    let providers = [
        Provider::N8n,
        Provider::Twilio,
        Provider::Vonage,
        Provider::Retell,
        Provider::DigitalOcean,
        Provider::Supabase,
    ];
    let cases: &[(Behaviour, &str)] = &[
        (Behaviour::Unauthorized, "HTTP 401: Invalid API key"),
        (Behaviour::RateLimited, "rate limited; retry after 30 s"),
        (Behaviour::Failing, "HTTP 500"),
        (Behaviour::Garbage, "the answer is not JSON"),
        (Behaviour::WrongShape, "unexpected answer"),
        (Behaviour::Huge, "response body over 1024 KiB"),
        (Behaviour::Slow(1_500), "timed out after 500 ms"),
        (Behaviour::Trickle(100), "timed out after 500 ms"),
    ];
    for p in providers {
        let ok = run(p, &base, limits(100))
            .await
            .expect("collects when well");
        let json = serde_json::to_string(&ok.snapshot).expect("serializes");
        assert!(!json.contains(KEY), "{p:?} snapshot leaks the key");
        assert!(ok.readings.iter().all(|(n, _)| !n.contains(KEY)));
        // Round-trips as stored.
        assert_eq!(
            serde_json::from_str::<Snapshot>(&json).expect("reads back"),
            ok.snapshot
        );
        for (behaviour, says) in cases {
            fake.set(p, *behaviour);
            let started = std::time::Instant::now();
            let r = run(p, &base, limits(100)).await;
            fake.set(p, Behaviour::Normal);
            let f = r.expect_err("fails");
            assert!(f.why.contains(says), "{p:?} {behaviour:?}: {}", f.why);
            assert!(!f.why.contains(KEY), "{p:?} {behaviour:?} leaks the key");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{p:?} {behaviour:?}"
            );
        }
    }
    // The error names what was being read.
    fake.set(Provider::DigitalOcean, Behaviour::Garbage);
    let f = run(Provider::DigitalOcean, &base, limits(100))
        .await
        .expect_err("fails");
    assert_eq!(f.why, "DigitalOcean droplets: the answer is not JSON");
    fake.set(Provider::DigitalOcean, Behaviour::Normal);
    // A wrong key is refused with the provider's message; Vonage's secret (sent in the query
    // of get-balance) never reaches the error, even on a transport failure.
    let f = run(Provider::Vonage, "http://127.0.0.1:9", limits(100))
        .await
        .expect_err("fails");
    assert!(f.why.starts_with("Vonage balance: "), "{}", f.why);
    assert!(!f.why.contains(KEY));
}

#[test]
fn scrub_hides_an_echoed_key_and_links_are_rebased() {
    let client = reqwest::Client::new();
    let ctx = Ctx {
        client: &client,
        provider: Provider::Twilio,
        base: "http://127.0.0.1:4000".into(),
        account: ACCOUNT.into(),
        key: KEY.into(),
        metric_types: Vec::new(),
        limits: limits(10),
        now: 0,
        whatsapp_senders: Vec::new(),
    };
    assert_eq!(ctx.scrub(&format!("bad key {KEY}!")), "bad key ***!");
    // A next link naming another host is followed on the monitor's own base.
    assert_eq!(
        ctx.rebase("https://evil.example/v2/droplets?page=2")
            .as_deref(),
        Some("http://127.0.0.1:4000/v2/droplets?page=2")
    );
    assert_eq!(
        ctx.rebase("/2010-04-01/Accounts/AC1/Messages.json?Page=1")
            .as_deref(),
        Some("http://127.0.0.1:4000/2010-04-01/Accounts/AC1/Messages.json?Page=1")
    );
}

#[test]
fn extras_interval_defaults_parses_and_refuses_with_the_field_named() {
    use crate::health::monitor::{MonitorSpec, Secret};
    let spec = |kind: &str, interval: Option<&str>| MonitorSpec {
        name: "m".into(),
        kind: kind.into(),
        target: "http://127.0.0.1:1".into(),
        account: (kind == "twilio").then(|| ACCOUNT.to_string()),
        key: Some(Secret(KEY.into())),
        extras_interval: interval.map(str::to_string),
        ..Default::default()
    };
    let interval =
        |kind: &str, i: Option<&str>| spec(kind, i).validate().map(|m| m.extras_interval);
    assert_eq!(interval("n8n", None), Ok(Some(DEFAULT_INTERVAL)));
    assert_eq!(
        interval("twilio", Some("5m")),
        Ok(Some(Duration::from_secs(300)))
    );
    assert_eq!(interval("retell", Some("off")), Ok(None));
    assert_eq!(interval("luma", None), Ok(None), "no extras for luma");
    for (kind, bad, says) in [
        ("n8n", "30s", "from 1m to 24h"),
        ("n8n", "2d", "extras_interval"),
        ("n8n", "soon", "extras_interval"),
        ("luma", "10m", "applies to n8n"),
    ] {
        let e = spec(kind, Some(bad)).validate().unwrap_err();
        assert_eq!(e.field, "extras_interval", "{bad}");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}
