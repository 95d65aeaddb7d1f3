//! Notifier kinds: what each kind needs (its non-secret settings, kept as JSON on the endpoint
//! row, and the one secret sealed with the master key) and the validation of both, so the API
//! and `[[notifiers]]` in the config name the same fields. Shaping the requests is `render`'s
//! job, sending them the worker's.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::endpoints::{EndpointError, EndpointSpec};
use crate::net::guard::{Guard, GuardError};

/// The services a notifier speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Webhook,
    Email,
    TwilioSms,
    VonageSms,
    Slack,
    Discord,
    Pagerduty,
}

pub const KINDS: &str = "email, webhook, twilio_sms, vonage_sms, slack, discord or pagerduty";

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "webhook" => Kind::Webhook,
            "email" => Kind::Email,
            "twilio_sms" => Kind::TwilioSms,
            "vonage_sms" => Kind::VonageSms,
            "slack" => Kind::Slack,
            "discord" => Kind::Discord,
            "pagerduty" => Kind::Pagerduty,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Email => "email",
            Kind::TwilioSms => "twilio_sms",
            Kind::VonageSms => "vonage_sms",
            Kind::Slack => "slack",
            Kind::Discord => "discord",
            Kind::Pagerduty => "pagerduty",
        }
    }
}

pub const TWILIO_API_BASE: &str = "https://api.twilio.com";
pub const VONAGE_API_BASE: &str = "https://rest.nexmo.com";
pub const PAGERDUTY_API_BASE: &str = "https://events.pagerduty.com";

/// Recipients: one address or a list (TOML and JSON both read naturally either way).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

impl Recipients {
    pub fn list(&self) -> Vec<String> {
        match self {
            Recipients::One(one) => vec![one.trim().to_string()],
            Recipients::Many(many) => many.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

/// A validated notifier: its kind, the URL shown in lists (never a secret), the settings
/// stored in the clear and the secret to seal.
#[derive(Debug)]
pub struct Checked {
    pub kind: Kind,
    pub display_url: String,
    pub settings: Value,
    /// The secret to seal; `None` for a webhook without one (a `whsec_` is generated).
    pub secret: Option<String>,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> EndpointError {
    EndpointError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// `+` and 7 to 15 digits, the first not 0 (ITU-T E.164).
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// An http(s) URL with a host that is not an address no allow-list can open (link-local,
/// metadata, …): such a notifier could never deliver, so it is refused when saved. Private
/// and loopback addresses depend on `[alerts]`/`[webhooks]` settings and are checked when
/// sending.
pub fn check_url(field: &'static str, text: &str) -> Result<reqwest::Url, EndpointError> {
    let url = parse_http(field, text)?;
    // The guard that opens every range that can be opened refuses exactly the addresses no
    // setting can open; the URL parser has already turned shorthands such as `2852039166`
    // into the address they spell.
    match Guard::private_allowed().check_url(&url) {
        Err(GuardError::RefusedIp { ip, range }) => {
            Err(invalid(field, format!("{ip} is {range}; refused")))
        }
        _ => Ok(url),
    }
}

/// An http(s) URL with a host, at most 2000 characters.
fn parse_http(field: &'static str, text: &str) -> Result<reqwest::Url, EndpointError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if text.len() > 2000 {
        return Err(invalid(field, "at most 2000 characters"));
    }
    let url = reqwest::Url::parse(text)
        .map_err(|e| invalid(field, format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid(
            field,
            format!("{text:?} must be an http(s) URL with a host"),
        ));
    }
    Ok(url)
}

fn required<'a>(field: &'static str, value: &'a Option<String>) -> Result<&'a str, EndpointError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => {
            if v.len() > 500 || v.chars().any(char::is_control) {
                Err(invalid(field, "at most 500 printable characters"))
            } else {
                Ok(v)
            }
        }
        _ => Err(invalid(field, "is required")),
    }
}

/// Refuses the fields another kind uses, so a typo or a wrong kind is named rather than
/// silently ignored.
fn only(spec: &EndpointSpec, kind: Kind, allowed: &[&str]) -> Result<(), EndpointError> {
    let present: [(&'static str, bool); 17] = [
        ("url", !spec.url.trim().is_empty()),
        ("secret", spec.secret.is_some()),
        ("api_base", spec.api_base.is_some()),
        ("account_sid", spec.account_sid.is_some()),
        ("auth_token", spec.auth_token.is_some()),
        (
            "messaging_service_sid",
            spec.messaging_service_sid.is_some(),
        ),
        ("from", spec.from.is_some()),
        ("to", spec.to.is_some()),
        ("api_key", spec.api_key.is_some()),
        ("api_secret", spec.api_secret.is_some()),
        ("routing_key", spec.routing_key.is_some()),
        ("host", spec.host.is_some()),
        ("port", spec.port.is_some()),
        ("tls", spec.tls.is_some()),
        ("username", spec.username.is_some()),
        ("password", spec.password.is_some()),
        ("ca_file", spec.ca_file.is_some()),
    ];
    for (field, set) in present {
        if set && !allowed.contains(&field) {
            return Err(invalid(
                field,
                format!("is not a field of a {} notifier", kind.as_str()),
            ));
        }
    }
    Ok(())
}

fn api_base(spec: &EndpointSpec, default: &str) -> Result<String, EndpointError> {
    let base = spec.api_base.as_deref().unwrap_or(default);
    let url = check_url("api_base", base)?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn one_number(spec: &EndpointSpec, field: &'static str) -> Result<String, EndpointError> {
    let list = spec
        .to
        .as_ref()
        .map(Recipients::list)
        .ok_or_else(|| invalid(field, "is required"))?;
    // One number per notifier: a retry then resends to exactly the phone that missed it.
    let [number] = list.as_slice() else {
        return Err(invalid(
            field,
            "give one phone number (one notifier per phone)",
        ));
    };
    if !is_e164(number) {
        return Err(invalid(
            field,
            format!("{number:?} is not an E.164 number (+ and 7 to 15 digits)"),
        ));
    }
    Ok(number.clone())
}

/// Origin and first path segment: enough to recognise a Slack or Discord webhook URL in a
/// list without showing the part that lets anyone post to the channel.
fn redact_url(url: &reqwest::Url) -> String {
    let first = url
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{s}"))
        .unwrap_or_default();
    format!("{}{first}/***", url.origin().ascii_serialization())
}

fn is_mailbox(text: &str) -> bool {
    text.parse::<lettre::message::Mailbox>().is_ok()
}

/// Checks the kind's fields of `spec`, naming the first at fault.
pub fn check(spec: &EndpointSpec) -> Result<Checked, EndpointError> {
    let kind_text = spec.kind.as_deref().unwrap_or("webhook").trim();
    let kind = Kind::parse(kind_text).ok_or_else(|| {
        invalid(
            "kind",
            format!("{kind_text:?} is not a notifier kind; use {KINDS}"),
        )
    })?;
    match kind {
        Kind::Webhook => {
            only(spec, kind, &["url", "secret"])?;
            // Refused when saved like every other kind when its literal address is one no
            // setting opens (link-local, metadata); loopback and private addresses, and names,
            // depend on the running server's settings and are judged at each attempt.
            let url = check_url("url", &spec.url)?;
            Ok(Checked {
                kind,
                display_url: url.to_string(),
                settings: json!({}),
                secret: spec.secret.clone(),
            })
        }
        Kind::Slack | Kind::Discord => {
            only(spec, kind, &["url"])?;
            let url = check_url("url", &spec.url)?;
            if url.path().len() <= 1 {
                return Err(invalid(
                    "url",
                    "must be the incoming-webhook URL with its path",
                ));
            }
            Ok(Checked {
                kind,
                display_url: redact_url(&url),
                settings: json!({}),
                secret: Some(url.to_string()),
            })
        }
        Kind::TwilioSms => {
            only(
                spec,
                kind,
                &[
                    "api_base",
                    "account_sid",
                    "auth_token",
                    "messaging_service_sid",
                    "from",
                    "to",
                ],
            )?;
            let sid = required("account_sid", &spec.account_sid)?;
            if !(sid.len() == 34
                && sid.starts_with("AC")
                && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid(
                    "account_sid",
                    format!("{sid:?} is not a Twilio Account SID (AC and 32 hex digits)"),
                ));
            }
            let token = required("auth_token", &spec.auth_token)?;
            let mut settings = json!({"account_sid": sid});
            match (spec.from.as_deref(), spec.messaging_service_sid.as_deref()) {
                (Some(from), None) => {
                    let from = from.trim();
                    if !is_e164(from) {
                        return Err(invalid(
                            "from",
                            format!("{from:?} is not an E.164 number (+ and 7 to 15 digits)"),
                        ));
                    }
                    settings["from"] = json!(from);
                }
                (None, Some(mg)) => {
                    let mg = mg.trim();
                    if !(mg.len() == 34
                        && mg.starts_with("MG")
                        && mg[2..].bytes().all(|b| b.is_ascii_hexdigit()))
                    {
                        return Err(invalid(
                            "messaging_service_sid",
                            format!("{mg:?} is not a Messaging Service SID (MG and 32 hex digits)"),
                        ));
                    }
                    settings["messaging_service_sid"] = json!(mg);
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "from",
                        "give from or messaging_service_sid, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid("from", "is required (or messaging_service_sid)"));
                }
            }
            settings["to"] = json!(one_number(spec, "to")?);
            let base = api_base(spec, TWILIO_API_BASE)?;
            settings["api_base"] = json!(base);
            Ok(Checked {
                kind,
                display_url: format!("{base}/2010-04-01/Accounts/{sid}/Messages.json"),
                settings,
                secret: Some(token.to_string()),
            })
        }
        Kind::VonageSms => {
            only(
                spec,
                kind,
                &["api_base", "api_key", "api_secret", "from", "to"],
            )?;
            let key = required("api_key", &spec.api_key)?;
            if key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid("api_key", "must be letters and digits"));
            }
            let secret = required("api_secret", &spec.api_secret)?;
            let from = required("from", &spec.from)?;
            // A sender is a number or an alphanumeric id of at most 11 characters.
            let numeric = from.strip_prefix('+').unwrap_or(from);
            let ok_from = if numeric.bytes().all(|b| b.is_ascii_digit()) {
                (7..=15).contains(&numeric.len())
            } else {
                from.len() <= 11 && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
            };
            if !ok_from {
                return Err(invalid(
                    "from",
                    format!(
                        "{from:?} is neither a phone number nor an alphanumeric sender id of at \
                         most 11 characters"
                    ),
                ));
            }
            let to = one_number(spec, "to")?;
            let base = api_base(spec, VONAGE_API_BASE)?;
            Ok(Checked {
                kind,
                display_url: format!("{base}/sms/json"),
                settings: json!({"api_key": key, "from": from, "to": to, "api_base": base}),
                secret: Some(secret.to_string()),
            })
        }
        Kind::Pagerduty => {
            only(spec, kind, &["api_base", "routing_key"])?;
            let key = required("routing_key", &spec.routing_key)?;
            if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "routing_key",
                    "must be the 32-character integration key of an Events API v2 integration",
                ));
            }
            let base = api_base(spec, PAGERDUTY_API_BASE)?;
            Ok(Checked {
                kind,
                display_url: format!("{base}/v2/enqueue"),
                settings: json!({"api_base": base}),
                secret: Some(key.to_string()),
            })
        }
        Kind::Email => {
            only(
                spec,
                kind,
                &[
                    "host", "port", "tls", "username", "password", "from", "to", "ca_file",
                ],
            )?;
            let host = required("host", &spec.host)?;
            if host.contains(['/', ' ', ':']) && host.parse::<IpAddr>().is_err() {
                return Err(invalid("host", format!("{host:?} is not a host name")));
            }
            // Any spelling of an address no setting opens (`2852039166`, `0xa9fea9fe`, …).
            if let Err(GuardError::RefusedIp { ip, range }) =
                Guard::private_allowed().check_host(host)
            {
                return Err(invalid("host", format!("{ip} is {range}; refused")));
            }
            let tls = spec.tls.as_deref().unwrap_or("starttls").trim();
            let default_port = match tls {
                "starttls" => 587,
                "tls" => 465,
                "none" => 25,
                other => {
                    return Err(invalid(
                        "tls",
                        format!("{other:?} is not starttls, tls (implicit) or none"),
                    ));
                }
            };
            let port = spec.port.unwrap_or(default_port);
            if port == 0 {
                return Err(invalid("port", "must be 1 to 65535"));
            }
            let username = spec.username.as_deref().map(str::trim).unwrap_or("");
            let password = spec.password.clone().unwrap_or_default();
            if !username.is_empty() && password.is_empty() {
                return Err(invalid("password", "is required with a username"));
            }
            if username.is_empty() && !password.is_empty() {
                return Err(invalid("username", "is required with a password"));
            }
            let from = required("from", &spec.from)?;
            if !is_mailbox(from) {
                return Err(invalid("from", format!("{from:?} is not an email address")));
            }
            let to = spec.to.as_ref().map(Recipients::list).unwrap_or_default();
            if to.is_empty() || to.len() > 50 {
                return Err(invalid("to", "give 1 to 50 email addresses"));
            }
            if let Some(bad) = to.iter().find(|t| !is_mailbox(t)) {
                return Err(invalid("to", format!("{bad:?} is not an email address")));
            }
            let mut settings = json!({"host": host, "port": port, "tls": tls,
                "username": username, "from": from, "to": to});
            if let Some(ca) = spec.ca_file.as_deref().map(str::trim) {
                let pem = std::fs::read(ca)
                    .map_err(|e| invalid("ca_file", format!("cannot read {ca:?}: {e}")))?;
                lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(|e| {
                    invalid("ca_file", format!("{ca:?} is not a PEM certificate: {e}"))
                })?;
                settings["ca_file"] = json!(ca);
            }
            let scheme = if tls == "tls" { "smtps" } else { "smtp" };
            Ok(Checked {
                kind,
                display_url: format!("{scheme}://{host}:{port}"),
                settings,
                secret: Some(password),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> EndpointSpec {
        serde_json::from_value(v).expect("spec")
    }

    fn field(v: Value) -> String {
        match check(&spec(v)) {
            Err(EndpointError::Invalid { field, problem }) => format!("{field}: {problem}"),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn e164() {
        assert!(is_e164("+15551234567"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+05551234567"));
    }

    #[test]
    fn fields_are_named() {
        assert!(field(json!({"name": "x", "kind": "pager"})).starts_with("kind:"));
        let twilio = json!({"name": "x", "kind": "twilio_sms",
            "account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t",
            "from": "+15550000000", "to": "+1555"});
        assert_eq!(
            field(twilio),
            "to: \"+1555\" is not an E.164 number (+ and 7 to 15 digits)"
        );
        assert!(
            field(json!({"name": "x", "kind": "slack", "url": "http://169.254.169.254/x"}))
                .starts_with("url: 169.254.169.254 is a cloud metadata")
        );
        assert!(
            field(json!({"name": "x", "kind": "slack", "url": "ftp://hooks.slack.com/x"}))
                .starts_with("url:")
        );
        assert!(field(json!({"name": "x", "kind": "pagerduty"})).starts_with("routing_key:"));
        assert!(
            field(
                json!({"name": "x", "kind": "pagerduty", "routing_key": "k", "to": "+15550000000"})
            )
            .starts_with("to: is not a field")
        );
        assert!(
            field(
                json!({"name": "x", "kind": "email", "host": "mail", "from": "a@b.c",
                "to": ["nope"]})
            )
            .starts_with("to: \"nope\"")
        );
    }

    #[test]
    fn chat_urls_are_secrets() {
        let c = check(&spec(json!({"name": "x", "kind": "slack",
            "url": "https://hooks.slack.com/services/T0/B0/XYZ"})))
        .expect("valid");
        assert_eq!(c.display_url, "https://hooks.slack.com/services/***");
        assert_eq!(
            c.secret.as_deref(),
            Some("https://hooks.slack.com/services/T0/B0/XYZ")
        );
    }
}
