//! The monitor kinds that read a provider with a registered credential, each the provider's
//! cheapest authenticated read: `google_oauth` (tokeninfo), `google_calendar` (one calendar of
//! the user's list) and `meta` (`debug_token`, with the Graph usage headers as readings). The
//! access token comes from the [`Vault`], never from the monitor definition, so a refresh is
//! seen by the next check. An expired, revoked or unknown credential fails the check with a
//! reason that names the credential, never the token; one inside its warning window degrades it.

use serde_json::Value;

use super::{TokenState, Vault};
use crate::health::checks::Probe;
use crate::health::monitor::Monitor;

/// The token-based monitor kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    GoogleOauth,
    GoogleCalendar,
    Meta,
}

impl TokenKind {
    pub const ALL: [TokenKind; 3] = [
        TokenKind::GoogleOauth,
        TokenKind::GoogleCalendar,
        TokenKind::Meta,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::GoogleOauth => "google_oauth",
            TokenKind::GoogleCalendar => "google_calendar",
            TokenKind::Meta => "meta",
        }
    }

    /// The production API base; a monitor's `target` overrides it.
    pub fn default_base(self) -> &'static str {
        match self {
            TokenKind::GoogleOauth => "https://oauth2.googleapis.com",
            TokenKind::GoogleCalendar => "https://www.googleapis.com",
            TokenKind::Meta => "https://graph.facebook.com/v25.0",
        }
    }
}

/// Readings from Meta's `X-App-Usage` (`app_call_count`, `app_total_cputime`,
/// `app_total_time`, percentages) and `X-Business-Use-Case-Usage` (the highest of each figure
/// over every business and type, as `buc_*`, plus `buc_minutes_to_regain_access`).
pub fn usage_readings(headers: &[(String, String)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let figures = ["call_count", "total_cputime", "total_time"];
    if let Some((_, v)) = headers.iter().find(|(k, _)| k == "x-app-usage")
        && let Ok(json) = serde_json::from_str::<Value>(v)
    {
        for f in figures {
            if let Some(n) = json.get(f).and_then(Value::as_f64) {
                out.push((format!("app_{f}"), n));
            }
        }
    }
    if let Some((_, v)) = headers
        .iter()
        .find(|(k, _)| k == "x-business-use-case-usage")
        && let Ok(Value::Object(businesses)) = serde_json::from_str::<Value>(v)
    {
        let entries: Vec<&Value> = businesses
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        for f in figures
            .iter()
            .copied()
            .chain(["estimated_time_to_regain_access"])
        {
            let most = entries
                .iter()
                .filter_map(|e| e.get(f).and_then(Value::as_f64))
                .fold(None, |m: Option<f64>, n| Some(m.map_or(n, |m| m.max(n))));
            if let Some(n) = most {
                let name = if f == "estimated_time_to_regain_access" {
                    "buc_minutes_to_regain_access".to_string()
                } else {
                    format!("buc_{f}")
                };
                out.push((name, n));
            }
        }
    }
    // The nearest limit: Meta throttles once any of these reaches 100 %.
    let most = out
        .iter()
        .filter(|(n, _)| n != "buc_minutes_to_regain_access")
        .map(|(_, v)| *v)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    if let Some(most) = most {
        out.push(("graph_usage_percent".into(), most));
    }
    out
}

/// Why Meta is throttling (or about to lift a block), from [`usage_readings`]: a figure at
/// 100 % or more, or minutes left before access is regained.
pub fn throttled(readings: &[(String, f64)]) -> Option<String> {
    let get = |n: &str| readings.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    if let Some(minutes) = get("buc_minutes_to_regain_access").filter(|m| *m > 0.0) {
        return Some(format!(
            "Graph API throttled: access regained in about {minutes} min"
        ));
    }
    readings
        .iter()
        .filter(|(n, _)| n != "graph_usage_percent" && n != "buc_minutes_to_regain_access")
        .find(|(_, v)| *v >= 100.0)
        .map(|(n, v)| format!("Graph API throttled: {n} at {v} %"))
}

fn failed(status: Option<u16>, headers: Vec<(String, String)>, why: String) -> Probe {
    Probe {
        failure: Some(why),
        status,
        headers,
        ..Probe::default()
    }
}

/// Runs the check of `monitor` (a token kind) with its credential's current access token.
pub(crate) async fn probe(
    monitor: &Monitor,
    kind: TokenKind,
    client: &reqwest::Client,
    vault: Option<&Vault>,
) -> Probe {
    let name = monitor.credential.as_deref().unwrap_or_default();
    let Some(live) = vault.and_then(|v| v.get(name)) else {
        return Probe::failed(format!(
            "no credential named {name:?} is registered ([[credentials]] or /api/v1/tokens)"
        ));
    };
    if live.state == TokenState::ReauthorizationRequired {
        return Probe::failed(format!(
            "credential {name:?} needs re-authorization: its refresh was refused (invalid_grant)"
        ));
    }
    let Some(token) = live.access_token.as_ref().map(|t| t.expose().clone()) else {
        return Probe::failed(format!(
            "credential {name:?} has no access token yet; refresh it"
        ));
    };
    let base = monitor.target.trim_end_matches('/');
    let mut readings: Vec<(String, f64)> = Vec::new();
    let mut expiry = live.effective_expiry;
    let mut degraded = None;
    let (status, headers) = match kind {
        TokenKind::GoogleOauth => {
            let req = client
                .get(format!("{base}/tokeninfo"))
                .query(&[("access_token", token.as_str())]);
            let (status, headers, json) = match fetch(req).await {
                Ok(a) => a,
                Err(p) => return p,
            };
            if status != 200 {
                let why = google_error(&json).unwrap_or_default();
                return failed(
                    Some(status),
                    headers,
                    format!(
                        "tokeninfo refused credential {name:?}'s access token (HTTP {status}{why}): expired or revoked"
                    ),
                );
            }
            let Some(json) = json else {
                return failed(Some(status), headers, "tokeninfo answered non-JSON".into());
            };
            let number = |field: &str| match json.get(field) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            };
            if let Some(left) = number("expires_in") {
                readings.push(("expires_in_seconds".into(), left));
            }
            // A self-renewing token's hourly expiry is no warning; an access-only one's is.
            if expiry.is_none()
                && !live.renews
                && let Some(exp) = number("exp")
            {
                expiry = Some(exp as i64 * 1000);
            }
            (status, headers)
        }
        TokenKind::GoogleCalendar => {
            let req = client
                .get(format!("{base}/calendar/v3/users/me/calendarList"))
                .query(&[("maxResults", "1")])
                .bearer_auth(&token);
            let (status, headers, json) = match fetch(req).await {
                Ok(a) => a,
                Err(p) => return p,
            };
            if status != 200 {
                let why = google_error(&json).unwrap_or_default();
                let hint = if status == 401 {
                    ": the access token is expired or revoked"
                } else {
                    ""
                };
                return failed(
                    Some(status),
                    headers,
                    format!("calendarList with credential {name:?}: HTTP {status}{why}{hint}"),
                );
            }
            if !json
                .as_ref()
                .and_then(|j| j.get("items"))
                .is_some_and(Value::is_array)
            {
                return failed(
                    Some(status),
                    headers,
                    "unexpected answer: calendarList has no items list".into(),
                );
            }
            (status, headers)
        }
        TokenKind::Meta => {
            let Some(secret) = live.client_secret.as_ref() else {
                return Probe::failed(format!(
                    "credential {name:?} has no app secret to sign debug_token"
                ));
            };
            let d = match super::refresh::debug_token(
                client,
                base,
                &token,
                &live.client_id,
                secret.expose(),
            )
            .await
            {
                Ok(d) => d,
                Err(f) => {
                    return Probe::failed(format!(
                        "debug_token for credential {name:?}: {}",
                        f.text()
                    ));
                }
            };
            let headers = d.headers.clone();
            if !d.is_valid {
                return failed(
                    Some(200),
                    headers,
                    format!(
                        "debug_token says credential {name:?}'s token is not valid{}",
                        d.error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                );
            }
            expiry = match (d.expires_at, d.data_access_expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let usage = usage_readings(&headers);
            if let Some(why) = throttled(&usage) {
                degraded = Some(why);
            }
            readings.extend(usage);
            (200, headers)
        }
    };
    let now = crate::store::now_ms();
    if let Some(at) = expiry {
        readings.push(("token_expires_at".into(), (at / 1000) as f64));
        if at <= now {
            return failed(
                Some(status),
                headers,
                format!("credential {name:?} has expired"),
            );
        }
        if at - now <= live.warn_before_ms && degraded.is_none() {
            degraded = Some(format!(
                "credential {name:?} expires in {} h",
                (at - now) / 3_600_000
            ));
        }
    }
    if live.state == TokenState::RefreshFailing && degraded.is_none() {
        degraded = Some(format!("credential {name:?}: refreshing fails"));
    }
    let body: serde_json::Map<String, Value> = readings
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::json!(v)))
        .collect();
    Probe {
        status: Some(status),
        headers,
        body: Some(Value::Object(body).to_string()),
        degraded,
        readings,
        ..Probe::default()
    }
}

/// Google's error text: `{"error": {"message"}}` (APIs) or `{"error", "error_description"}`
/// (OAuth endpoints), as ": text".
fn google_error(json: &Option<Value>) -> Option<String> {
    let j = json.as_ref()?;
    let text = j
        .pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| j.get("error_description").and_then(Value::as_str))
        .or_else(|| j.get("error").and_then(Value::as_str))?;
    Some(format!(": {}", text.chars().take(200).collect::<String>()))
}

/// Sends a read and returns (status, headers, JSON body if any); a transport failure is a
/// failed probe without the URL (the tokeninfo query carries the token).
async fn fetch(
    req: reqwest::RequestBuilder,
) -> Result<(u16, Vec<(String, String)>, Option<Value>), Probe> {
    let res = req
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| Probe::failed(crate::health::checks::describe(&e.without_url())))?;
    let status = res.status().as_u16();
    let headers = crate::health::checks::lowercase_headers(res.headers());
    let body = crate::health::checks::read_body(res)
        .await
        .map_err(|why| failed(Some(status), headers.clone(), why))?;
    Ok((status, headers, serde_json::from_slice(&body).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_headers_become_readings() {
        let headers = vec![
            (
                "x-app-usage".to_string(),
                r#"{"call_count":28,"total_cputime":9,"total_time":12}"#.to_string(),
            ),
            (
                "x-business-use-case-usage".to_string(),
                r#"{"1234":[{"type":"ads_management","call_count":40,"total_cputime":3,"total_time":5,"estimated_time_to_regain_access":0},{"type":"ads_insights","call_count":95,"total_cputime":1,"total_time":2,"estimated_time_to_regain_access":7}]}"#.to_string(),
            ),
        ];
        let r = usage_readings(&headers);
        let get = |n: &str| r.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("app_call_count"), Some(28.0));
        assert_eq!(get("app_total_time"), Some(12.0));
        assert_eq!(get("buc_call_count"), Some(95.0));
        assert_eq!(get("buc_minutes_to_regain_access"), Some(7.0));
        assert_eq!(get("graph_usage_percent"), Some(95.0), "the nearest limit");
        assert_eq!(
            throttled(&r).as_deref(),
            Some("Graph API throttled: access regained in about 7 min")
        );
        assert!(usage_readings(&[("x-app-usage".into(), "garbage".into())]).is_empty());
        // CPU time counts as much as calls; below 100 % everywhere is not throttled.
        let cpu = usage_readings(&[(
            "x-app-usage".into(),
            r#"{"call_count":3,"total_cputime":100,"total_time":40}"#.into(),
        )]);
        assert_eq!(
            throttled(&cpu).as_deref(),
            Some("Graph API throttled: app_total_cputime at 100 %")
        );
        let calm = usage_readings(&[(
            "x-app-usage".into(),
            r#"{"call_count":3,"total_cputime":99,"total_time":40}"#.into(),
        )]);
        assert_eq!(throttled(&calm), None);
    }
}
