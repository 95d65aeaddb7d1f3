//! Shapes a queued message (`{type, timestamp, data}`) into each notifier kind's request —
//! Slack and Discord messages, Twilio and Vonage SMS forms, PagerDuty Events v2, an email's
//! text and HTML — and reads each service's answer (Vonage says 200 even when it failed).
//! Pure functions: no I/O here, so each shape is tested without a network.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::notifiers::Kind;

/// What a message says, read once from its stored body.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: String,
    pub timestamp: String,
    pub data: Value,
    pub message_id: String,
}

/// One alert of a grouped notification, as shown in every kind.
#[derive(Debug, Clone)]
pub struct Line {
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub labels: String,
    pub value: Option<String>,
    pub started_at: String,
}

impl Line {
    /// Whether the summary already names every label value (a quota alert names its
    /// customer and plan), so listing the labels again adds nothing.
    pub fn labels_in_summary(&self) -> bool {
        self.labels
            .split(", ")
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
            .all(|v| self.summary.contains(v))
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

impl Notice {
    pub fn parse(message_id: &str, body: &str) -> Option<Notice> {
        let v: Value = serde_json::from_str(body).ok()?;
        Some(Notice {
            kind: text(&v, "type"),
            timestamp: text(&v, "timestamp"),
            data: v.get("data").cloned().unwrap_or(Value::Null),
            message_id: message_id.to_string(),
        })
    }

    pub fn is_alert(&self) -> bool {
        self.kind.starts_with("alert.")
    }

    /// `firing`, `resolved`, `acknowledged`, or the event type for anything else.
    pub fn status(&self) -> String {
        let s = text(&self.data, "status");
        if !s.is_empty() {
            return s;
        }
        match self.kind.as_str() {
            "alert.firing" => "firing".into(),
            "alert.resolved" => "resolved".into(),
            "alert.acknowledged" => "acknowledged".into(),
            other => other.to_string(),
        }
    }

    /// `critical`, `warning` or `info` (an event without one is `info`).
    pub fn severity(&self) -> String {
        match text(&self.data, "severity").as_str() {
            s @ ("critical" | "warning" | "info") => s.to_string(),
            "error" => "critical".to_string(),
            _ => "info".to_string(),
        }
    }

    pub fn summary(&self) -> String {
        let s = text(&self.data, "summary");
        if !s.is_empty() {
            return s;
        }
        match self.kind.as_str() {
            "notifier.test" => "Test notification from opsdeck".into(),
            other => format!("opsdeck event {other}"),
        }
    }

    /// The one-line headline every kind leads with.
    pub fn title(&self) -> String {
        if self.is_alert() {
            format!("[{}] {}", self.status().to_uppercase(), self.summary())
        } else {
            self.summary()
        }
    }

    pub fn url(&self) -> Option<String> {
        let u = text(&self.data, "url");
        (u.starts_with("http://") || u.starts_with("https://")).then_some(u)
    }

    /// How many alerts the message is about (a grouped message lists only some of them).
    pub fn count(&self) -> usize {
        self.data
            .get("count")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(|| {
                self.data
                    .get("alerts")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            })
    }

    /// Alerts of the message's group still firing after a `resolved` one: the incident
    /// goes on for them.
    pub fn still_open(&self) -> u64 {
        self.data
            .get("group_open")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// "…and 140 more" after the first `shown` lines, or nothing.
    pub fn more(&self, shown: usize) -> Option<String> {
        let n = self.count();
        (n > shown).then(|| format!("…and {} more", n - shown))
    }

    pub fn lines(&self) -> Vec<Line> {
        let Some(alerts) = self.data.get("alerts").and_then(Value::as_array) else {
            return Vec::new();
        };
        alerts
            .iter()
            .map(|a| Line {
                rule: text(a, "rule"),
                severity: text(a, "severity"),
                state: text(a, "state"),
                summary: text(a, "summary"),
                labels: a
                    .get("labels")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                value: a.get("value").filter(|v| !v.is_null()).map(|v| {
                    match (v, a.get("threshold").filter(|t| !t.is_null())) {
                        (v, Some(t)) => format!("{v} (threshold {t})"),
                        (v, None) => v.to_string(),
                    }
                }),
                started_at: text(a, "started_at"),
            })
            .collect()
    }

    /// A stable key for the incident this message is about: every message of one alert
    /// group (firing, acknowledged, resolved) gives the same key, so PagerDuty folds them
    /// into one incident.
    pub fn dedup_key(&self) -> String {
        let group = text(&self.data, "group_key");
        let basis = if group.is_empty() {
            self.message_id.clone()
        } else {
            group
        };
        let key = format!("opsdeck:{basis}");
        if key.len() <= 255 {
            key
        } else {
            use sha2::Digest;
            format!(
                "opsdeck:{}",
                hex::encode(sha2::Sha256::digest(key.as_bytes()))
            )
        }
    }

    /// The plain-text body: headline, each alert, the link.
    pub fn plain(&self) -> String {
        let mut out = format!("{}\nSeverity: {}\n", self.title(), self.severity());
        if let Some(by) = self.data.get("acked_by").and_then(Value::as_str) {
            let _ = writeln!(out, "Acknowledged by {by}");
        }
        for l in self.lines().into_iter().take(PLAIN_LINES) {
            let _ = write!(out, "\n- [{}] {}: {}", l.severity, l.rule, l.summary);
            if !l.labels.is_empty() {
                let _ = write!(out, " ({})", l.labels);
            }
            if let Some(v) = &l.value {
                let _ = write!(out, " value {v}");
            }
            if !l.started_at.is_empty() {
                let _ = write!(out, " since {}", l.started_at);
            }
        }
        if let Some(more) = self.more(PLAIN_LINES) {
            let _ = write!(out, "\n{more}");
        }
        if let Some(url) = self.url() {
            let _ = write!(out, "\n\n{url}");
        }
        out
    }
}

/// Alerts listed one by one in a text body; a grouped message says how many more.
const PLAIN_LINES: usize = 20;
/// Alerts listed in an email's table.
const EMAIL_ROWS: usize = 100;
/// Alerts PagerDuty gets in `custom_details` (its events are capped at 512 KB).
const PAGERDUTY_ALERTS: usize = 20;

/// A request for an HTTP notifier: where, how, and its authentication.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub url: String,
    pub content_type: &'static str,
    pub body: String,
    pub basic_auth: Option<(String, String)>,
}

/// Alerts a Slack message lists (a section holds 3,000 characters).
const SLACK_LINES: usize = 20;

/// Slack's escaping for text it parses (mrkdwn and the top-level `text`): `&`, `<` and `>`
/// become entities, so `<!channel>`, `<!here>`, `<@U…>` and `<url|label>` in alert text are shown
/// as written instead of pinging everyone or disguising a link.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn color(severity: &str) -> u32 {
    match severity {
        "critical" => 0xD0_2F_2F,
        "warning" => 0xF2_A3_3A,
        _ => 0x3B_82_F6,
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// The request `kind` makes for `notice`; `secret` is the kind's secret and `settings` its
/// stored fields. `None` for kinds that are not plain HTTP (webhook, email).
pub fn outgoing(kind: Kind, settings: &Value, secret: &str, notice: &Notice) -> Option<Outgoing> {
    let setting = |key: &str| text(settings, key);
    Some(match kind {
        Kind::Webhook | Kind::Email => return None,
        Kind::Slack => {
            let mut detail = String::new();
            let lines = notice.lines();
            // A group of one rule's alerts names the rule once, in the headline's summary.
            let one_rule = lines.len() > 1 && lines.iter().all(|l| l.rule == lines[0].rule);
            for l in lines.iter().take(SLACK_LINES) {
                let mut line = String::from("• ");
                if !one_rule {
                    let _ = write!(line, "*{}* ", slack_escape(&l.rule));
                }
                let _ = write!(
                    line,
                    "`{}` {}",
                    slack_escape(&l.severity),
                    slack_escape(&l.summary)
                );
                if !l.labels.is_empty() && !l.labels_in_summary() {
                    let _ = write!(line, " _({})_", slack_escape(&l.labels));
                }
                let _ = writeln!(detail, "{line}");
            }
            if let Some(more) = notice.more(SLACK_LINES) {
                let _ = writeln!(detail, "_{more}_");
            }
            if detail.is_empty() {
                detail = slack_escape(&notice.summary());
            }
            let mut context = format!(
                "Severity *{}* · {}",
                notice.severity(),
                slack_escape(&notice.timestamp)
            );
            if let Some(url) = notice.url() {
                let _ = write!(context, " · <{}|Open in opsdeck>", slack_escape(&url));
            }
            let body = json!({
                // The fallback for notifications and clients without blocks: Slack parses it
                // like mrkdwn, so it is escaped as the blocks are. Clipped first, so an entity
                // is never cut in half.
                "text": slack_escape(&clip(&notice.title(), 3000)),
                "blocks": [
                    {"type": "header",
                     "text": {"type": "plain_text", "text": clip(&notice.title(), 150)}},
                    {"type": "section",
                     "text": {"type": "mrkdwn", "text": clip(&detail, 3000)}},
                    {"type": "context",
                     "elements": [{"type": "mrkdwn", "text": clip(&context, 3000)}]}
                ]
            });
            Outgoing {
                url: secret.to_string(),
                content_type: "application/json",
                body: body.to_string(),
                basic_auth: None,
            }
        }
        Kind::Discord => {
            let fields: Vec<Value> = notice
                .lines()
                .iter()
                .take(25)
                .map(|l| {
                    let mut value = l.summary.clone();
                    if !l.labels.is_empty() {
                        let _ = write!(value, "\n{}", l.labels);
                    }
                    if let Some(v) = &l.value {
                        let _ = write!(value, "\nvalue {v}");
                    }
                    json!({"name": clip(&format!("{} ({})", l.rule, l.severity), 256),
                           "value": clip(if value.is_empty() { "-" } else { &value }, 1024),
                           "inline": false})
                })
                .collect();
            let mut embed = json!({
                "title": clip(&notice.title(), 256),
                "description": clip(&notice.plain(), 4096),
                "color": color(&notice.severity()),
                "fields": fields,
            });
            if !notice.timestamp.is_empty() {
                embed["timestamp"] = json!(notice.timestamp);
            }
            if let Some(url) = notice.url() {
                embed["url"] = json!(url);
            }
            let body = json!({
                "content": clip(&notice.title(), 2000),
                "embeds": [embed],
                // Alert text comes from labels and summaries: never let it ping @everyone.
                "allowed_mentions": {"parse": []},
            });
            // `wait=true`: Discord then answers once the message is saved (200 with the
            // message), and reports a message it could not save instead of a silent 204.
            let sep = if secret.contains('?') { '&' } else { '?' };
            Outgoing {
                url: format!("{secret}{sep}wait=true"),
                content_type: "application/json",
                body: body.to_string(),
                basic_auth: None,
            }
        }
        Kind::TwilioSms => {
            let sid = setting("account_sid");
            let text = clip(&notice.plain(), 1600);
            let to = setting("to");
            let mut pairs = vec![("To", to.as_str())];
            let from = setting("from");
            let service = setting("messaging_service_sid");
            if service.is_empty() {
                pairs.push(("From", from.as_str()));
            } else {
                pairs.push(("MessagingServiceSid", service.as_str()));
            }
            pairs.push(("Body", text.as_str()));
            Outgoing {
                url: format!(
                    "{}/2010-04-01/Accounts/{sid}/Messages.json",
                    setting("api_base")
                ),
                content_type: "application/x-www-form-urlencoded",
                body: form(&pairs),
                basic_auth: Some((sid, secret.to_string())),
            }
        }
        Kind::VonageSms => {
            let key = setting("api_key");
            let from = setting("from");
            let from = from.strip_prefix('+').unwrap_or(&from).to_string();
            let to = setting("to");
            let to = to.strip_prefix('+').unwrap_or(&to).to_string();
            let text = clip(&notice.plain(), 1600);
            let mut pairs = vec![
                ("api_key", key.as_str()),
                ("api_secret", secret),
                ("from", from.as_str()),
                ("to", to.as_str()),
                ("text", text.as_str()),
            ];
            if !text.is_ascii() {
                pairs.push(("type", "unicode"));
            }
            Outgoing {
                url: format!("{}/sms/json", setting("api_base")),
                content_type: "application/x-www-form-urlencoded",
                body: form(&pairs),
                basic_auth: None,
            }
        }
        Kind::Pagerduty => {
            // One incident per alert group: while others of the group still fire, some of
            // them ending updates the incident instead of resolving it.
            let action = match notice.kind.as_str() {
                "alert.resolved" if notice.still_open() > 0 => "trigger",
                "alert.resolved" => "resolve",
                "alert.acknowledged" => "acknowledge",
                _ => "trigger",
            };
            let mut event = json!({
                "routing_key": secret,
                "event_action": action,
                "dedup_key": notice.dedup_key(),
            });
            if action == "trigger" {
                let lines = notice.lines();
                let first = lines.first();
                let mut summary = notice.title();
                if notice.kind == "alert.resolved" {
                    let _ = write!(summary, "; {} still firing", notice.still_open());
                }
                let mut details = notice.data.clone();
                if let Some(list) = details.get_mut("alerts").and_then(Value::as_array_mut) {
                    list.truncate(PAGERDUTY_ALERTS);
                }
                let mut payload = json!({
                    "summary": clip(&summary, 1024),
                    "source": "opsdeck",
                    "severity": notice.severity(),
                    "class": notice.kind,
                    "custom_details": details,
                });
                let ts = first
                    .map(|l| l.started_at.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| notice.timestamp.clone());
                if !ts.is_empty() {
                    payload["timestamp"] = json!(ts);
                }
                if let Some(l) = first {
                    if !l.rule.is_empty() {
                        payload["group"] = json!(l.rule);
                    }
                    if let Some(component) = notice
                        .data
                        .pointer("/alerts/0/labels")
                        .and_then(Value::as_object)
                        .and_then(|m| m.values().find_map(Value::as_str))
                    {
                        payload["component"] = json!(component);
                    }
                }
                event["payload"] = payload;
                event["client"] = json!("opsdeck");
                if let Some(url) = notice.url() {
                    event["client_url"] = json!(url);
                    event["links"] = json!([{"href": url, "text": "Open in opsdeck"}]);
                }
            }
            Outgoing {
                url: format!("{}/v2/enqueue", setting("api_base")),
                content_type: "application/json",
                body: event.to_string(),
                basic_auth: None,
            }
        }
    })
}

/// What an answer meant beyond its status code.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// The service refused although the status was 2xx (Vonage), or why a failure failed.
    pub failure: Option<String>,
    /// A wait the service asked for in its body (Discord's `retry_after`).
    pub retry_after: Option<Duration>,
}

/// Reads a service's answer: its own error text, and Vonage's 200-with-failure.
pub fn judge(kind: Kind, status: u16, body: &str) -> Verdict {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let mut verdict = Verdict::default();
    match kind {
        Kind::VonageSms if (200..300).contains(&status) => {
            let messages = json
                .as_ref()
                .and_then(|v| v.get("messages"))
                .and_then(Value::as_array);
            match messages {
                None => verdict.failure = Some("answer without messages".into()),
                Some(list) => {
                    // Every part must be accepted ("0"); "1" is throttling, retried like
                    // any failure on the schedule.
                    if let Some(bad) = list.iter().find(|m| text(m, "status") != "0") {
                        verdict.failure = Some(format!(
                            "Vonage status {}: {}",
                            text(bad, "status"),
                            text(bad, "error-text")
                        ));
                    }
                }
            }
        }
        Kind::Discord if status == 429 => {
            verdict.retry_after = json
                .as_ref()
                .and_then(|v| v.get("retry_after"))
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
        }
        _ => {}
    }
    if verdict.failure.is_none() && !(200..300).contains(&status) {
        let detail = match (kind, &json) {
            (Kind::TwilioSms, Some(v)) => {
                format!("Twilio error {}: {}", text(v, "code"), text(v, "message"))
            }
            (Kind::Discord, Some(v)) => text(v, "message"),
            (Kind::Pagerduty, Some(v)) => {
                let errors = v
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|e| {
                        e.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                format!("{}: {} {errors}", text(v, "status"), text(v, "message"))
                    .trim()
                    .to_string()
            }
            (Kind::Slack, _) => body.trim().to_string(),
            _ => String::new(),
        };
        if !detail.is_empty() {
            verdict.failure = Some(format!("HTTP {status}: {}", clip(&detail, 300)));
        }
    }
    verdict
}

/// The email's subject, plain text and HTML.
pub fn email(notice: &Notice) -> (String, String, String) {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <h2 style=\"color:#{:06x}\">{}</h2><p>Severity: <strong>{}</strong></p>",
        color(&notice.severity()),
        esc(&notice.title()),
        esc(&notice.severity())
    );
    let lines = notice.lines();
    if !lines.is_empty() {
        html.push_str(
            "<table cellpadding=\"6\" style=\"border-collapse:collapse\" border=\"1\">\
             <tr><th>Rule</th><th>Severity</th><th>State</th><th>Summary</th><th>Labels</th>\
             <th>Value</th><th>Since</th></tr>",
        );
        for l in lines.iter().take(EMAIL_ROWS) {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&l.rule),
                esc(&l.severity),
                esc(&l.state),
                esc(&l.summary),
                esc(&l.labels),
                esc(l.value.as_deref().unwrap_or("")),
                esc(&l.started_at)
            );
        }
        html.push_str("</table>");
        if let Some(more) = notice.more(EMAIL_ROWS) {
            let _ = write!(html, "<p>{}</p>", esc(&more));
        }
    }
    if let Some(url) = notice.url() {
        let _ = write!(html, "<p><a href=\"{}\">Open in opsdeck</a></p>", esc(&url));
    }
    html.push_str("</body></html>");
    (clip(&notice.title(), 200), notice.plain(), html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: &str) -> Notice {
        Notice {
            kind: kind.into(),
            timestamp: "2026-11-30T02:01:00Z".into(),
            message_id: "msg_1".into(),
            data: json!({"group_key": "rule:12|service=api", "status": "firing",
                "severity": "critical", "summary": "Integration down: api",
                "url": "https://ops.example.com/alerts",
                "alerts": [{"id": 41, "rule": "integration down", "rule_id": 12,
                    "severity": "critical", "state": "firing", "summary": "api is down",
                    "labels": {"integration": "api"}, "value": 1.0, "threshold": 1.0,
                    "started_at": "2026-11-30T02:00:00Z"}]}),
        }
    }

    #[test]
    fn pagerduty_actions_share_one_dedup_key() {
        let settings = json!({"api_base": "http://pd"});
        let bodies: Vec<Value> = ["alert.firing", "alert.acknowledged", "alert.resolved"]
            .iter()
            .map(|k| {
                let o = outgoing(Kind::Pagerduty, &settings, "k", &alert(k)).expect("http");
                serde_json::from_str(&o.body).expect("json")
            })
            .collect();
        let actions: Vec<&str> = bodies
            .iter()
            .map(|b| b["event_action"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
        assert!(
            bodies
                .iter()
                .all(|b| b["dedup_key"] == bodies[0]["dedup_key"])
        );
        assert_eq!(bodies[0]["payload"]["severity"], "critical");
        assert_eq!(bodies[0]["payload"]["component"], "api");
        assert!(bodies[1].get("payload").is_none());
    }

    /// A grouped quota notification for `n` customers.
    fn quota_group(kind: &str, n: usize, still_open: u64) -> Notice {
        let alerts: Vec<Value> = (0..n)
            .map(|i| {
                json!({"id": i, "rule": "customer quota", "severity": "critical",
                       "state": "firing",
                       "summary": format!("cus_{i:03} (pro) at 12{} % of quota (>= 120 %)", i % 10),
                       "labels": {"customer": format!("cus_{i:03}"), "plan": "pro"},
                       "value": 120.5, "threshold": 120.0,
                       "started_at": "2026-11-30T02:00:00Z"})
            })
            .collect();
        Notice {
            kind: kind.into(),
            timestamp: "2026-11-30T02:01:00Z".into(),
            message_id: "msg_2".into(),
            data: json!({"group_key": "rule:9", "status": "firing", "severity": "critical",
                "summary": format!("{n} customers over quota: cus_000 (120.5 %), cus_001 (120.5 %), cus_002 (120.5 %) and {} more", n - 3),
                "count": n, "group_open": still_open,
                "url": "https://ops.example.com/alerts", "alerts": alerts}),
        }
    }

    #[test]
    fn a_grouped_message_names_the_count_and_lists_the_first() {
        let n = quota_group("alert.firing", 45, 0);
        let o = outgoing(Kind::Slack, &json!({}), "http://s/x", &n).expect("http");
        let body: Value = serde_json::from_str(&o.body).unwrap();
        let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            header.starts_with("[FIRING] 45 customers over quota"),
            "{header}"
        );
        let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(section.matches("• ").count(), 20, "{section}");
        assert!(section.contains("…and 25 more"), "{section}");
        assert!(
            !section.contains("customer quota"),
            "the rule is not repeated per line"
        );
        assert!(
            !section.contains("customer=cus_000"),
            "nor the labels the summary names"
        );
        let (subject, text, html) = email(&n);
        assert!(subject.contains("45 customers over quota"));
        assert!(text.contains("…and 25 more") && html.contains("cus_044"));
        let pd = outgoing(Kind::Pagerduty, &json!({"api_base": "http://pd"}), "k", &n).unwrap();
        let pd: Value = serde_json::from_str(&pd.body).unwrap();
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(
            pd["payload"]["custom_details"]["alerts"]
                .as_array()
                .unwrap()
                .len(),
            20
        );
        assert_eq!(pd["payload"]["custom_details"]["count"], 45);
        // Some customers back under quota while others are still over: the incident stays.
        let back = quota_group("alert.resolved", 5, 40);
        let pd = outgoing(
            Kind::Pagerduty,
            &json!({"api_base": "http://pd"}),
            "k",
            &back,
        )
        .unwrap();
        let pd: Value = serde_json::from_str(&pd.body).unwrap();
        assert_eq!(pd["event_action"], "trigger");
        assert!(
            pd["payload"]["summary"]
                .as_str()
                .unwrap()
                .ends_with("40 still firing")
        );
        let all = quota_group("alert.resolved", 5, 0);
        let pd = outgoing(
            Kind::Pagerduty,
            &json!({"api_base": "http://pd"}),
            "k",
            &all,
        )
        .unwrap();
        let pd: Value = serde_json::from_str(&pd.body).unwrap();
        assert_eq!(pd["event_action"], "resolve");
    }

    #[test]
    fn vonage_200_with_an_error_is_a_failure() {
        let ok = r#"{"message-count":"1","messages":[{"status":"0","message-id":"x"}]}"#;
        assert_eq!(judge(Kind::VonageSms, 200, ok), Verdict::default());
        let bad =
            r#"{"message-count":"1","messages":[{"status":"4","error-text":"Bad Credentials"}]}"#;
        assert_eq!(
            judge(Kind::VonageSms, 200, bad).failure.as_deref(),
            Some("Vonage status 4: Bad Credentials")
        );
    }

    #[test]
    fn discord_body_retry_after() {
        let v = judge(
            Kind::Discord,
            429,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        );
        assert_eq!(v.retry_after, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn slack_escapes_markup() {
        let mut n = alert("alert.firing");
        n.data["alerts"][0]["summary"] = json!("<!channel> & co");
        let o = outgoing(Kind::Slack, &json!({}), "http://s/x", &n).expect("http");
        assert!(o.body.contains("&lt;!channel&gt; &amp; co"), "{}", o.body);
    }

    #[test]
    fn slack_fallback_text_is_escaped_like_the_blocks() {
        let mut n = alert("alert.firing");
        n.data["summary"] = json!("<!here> <!channel> <https://evil.example|docs> & co");
        let o = outgoing(Kind::Slack, &json!({}), "http://s/x", &n).expect("http");
        let body: Value = serde_json::from_str(&o.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert_eq!(
            text,
            "[FIRING] &lt;!here&gt; &lt;!channel&gt; &lt;https://evil.example|docs&gt; &amp; co"
        );
        // The header block is plain_text, which Slack never parses: shown as written.
        assert_eq!(
            body["blocks"][0]["text"]["text"],
            "[FIRING] <!here> <!channel> <https://evil.example|docs> & co"
        );
        assert_eq!(body["blocks"][0]["text"]["type"], "plain_text");
    }

    #[test]
    fn discord_never_pings_from_alert_text() {
        let mut n = alert("alert.firing");
        n.data["summary"] = json!("@everyone @here <@&123> down");
        let o = outgoing(Kind::Discord, &json!({}), "http://d/x", &n).expect("http");
        let body: Value = serde_json::from_str(&o.body).unwrap();
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    }
}
