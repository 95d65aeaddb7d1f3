//! What the API shows of a stored monitor definition. Headers, targets and query strings may
//! carry credentials, so those parts are masked when a definition is read back; an edit that
//! sends a masked value back unchanged keeps the stored one, so a form can round-trip a
//! definition without ever holding its secrets.

use super::monitor::{Invalid, MonitorSpec, Secret};

/// Stands in for a credential in a definition read back through the API.
pub const MASK: &str = "********";

/// Whether a header or query parameter of this name is likely to carry a credential.
pub(crate) fn sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || [
        "key",
        "token",
        "secret",
        "auth",
        "password",
        "passwd",
        "signature",
        "session",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// `target` with a URL's password (or token-like user name), secret-like path segments and
/// sensitive query values masked; a target that is not a URL (`host:port`) is returned as it
/// is. Also how outgoing webhook URLs are shown (`webhooks::endpoints`), so one rule masks
/// every stored URL.
pub fn mask_target(target: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(target) else {
        return target.to_string();
    };
    if url.cannot_be_a_base() {
        return target.to_string();
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    } else if !url.username().is_empty() {
        // A user name without a password is how tokens ride in URLs (`https://<token>@host`).
        let _ = url.set_username(MASK);
    }
    let path: Vec<String> = url
        .path_segments()
        .map(|segments| {
            segments
                .map(|s| if secret_like(s) { MASK } else { s }.to_string())
                .collect()
        })
        .unwrap_or_default();
    if !path.is_empty() {
        url.set_path(&path.join("/"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if sensitive(&k) {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Whether a URL path segment looks like a credential rather than a name: long and mixing
/// letters and digits, as webhook and bot URLs carry their tokens (`/services/T0/B0/<token>`,
/// `/bot<id>:<token>/`). An id masked by mistake costs only its display: the round trip keeps it.
pub(crate) fn secret_like(segment: &str) -> bool {
    segment.len() >= 20
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().any(|b| b.is_ascii_alphabetic())
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.%".contains(&b))
}

/// Calls `f` on every scalar value of a JSON object member (at any depth) whose name looks
/// sensitive; returns whether there was one. Shared by the masking here and by the checks,
/// which keep those values out of their errors.
pub(crate) fn each_sensitive_json(
    v: &mut serde_json::Value,
    f: &mut dyn FnMut(&mut serde_json::Value),
) -> bool {
    match v {
        serde_json::Value::Object(map) => {
            let mut found = false;
            for (k, v) in map.iter_mut() {
                if sensitive(k) && !v.is_object() && !v.is_array() && !v.is_null() {
                    f(v);
                    found = true;
                } else {
                    found |= each_sensitive_json(v, f);
                }
            }
            found
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, v| each_sensitive_json(v, f) | found),
        _ => false,
    }
}

/// `body` with the values of likely credential fields masked: the members of a JSON object
/// (at any depth) and the pairs of a form-encoded body whose names look sensitive. Other
/// bodies are shown as they are.
fn mask_body(body: &str) -> String {
    if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(body) {
        let masked = each_sensitive_json(&mut json, &mut |v| {
            *v = serde_json::Value::String(MASK.into());
        });
        // Re-serialised only when something was masked, so a body without credentials is
        // shown exactly as it was written.
        return if masked {
            json.to_string()
        } else {
            body.to_string()
        };
    }
    let form = !body.trim().is_empty()
        && body
            .split('&')
            .all(|pair| pair.contains('=') && !pair.contains(char::is_whitespace));
    if form {
        return body
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if sensitive(&k.replace('+', " ")) => format!("{k}={MASK}"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
    }
    body.to_string()
}

/// The definition with its likely credentials replaced by [`MASK`].
pub fn masked(spec: &MonitorSpec) -> MonitorSpec {
    let mut out = spec.clone();
    for (name, value) in out.headers.iter_mut() {
        if sensitive(name) {
            *value = MASK.to_string();
        }
    }
    out.target = mask_target(&spec.target);
    out.body = spec.body.as_deref().map(mask_body);
    for secret in [&mut out.password, &mut out.key] {
        if secret.is_some() {
            *secret = Some(Secret(MASK.into()));
        }
    }
    out
}

/// Puts the stored credentials back where an edited definition still holds [`MASK`]: a header
/// of the same name, or a target that differs from the stored one only in masked parts. A
/// mask left with nothing stored behind it (a new header, a new host) is refused: the monitor
/// would otherwise send the mask itself as a credential.
pub fn keep_masked(edited: &mut MonitorSpec, stored: Option<&MonitorSpec>) -> Result<(), Invalid> {
    if edited.target.contains(MASK) {
        match stored {
            Some(s) if mask_target(&s.target) == edited.target => {
                edited.target.clone_from(&s.target);
            }
            _ => {
                return Err(Invalid {
                    field: "target".into(),
                    problem:
                        "give the credentials in full; the masked ones belong to another target"
                            .into(),
                });
            }
        }
    }
    // Stored credentials go only where they went before: a masked value kept for a new host
    // (or kind) would hand the secret to whoever answers there.
    let moved = stored.is_none_or(|s| {
        s.kind.trim() != edited.kind.trim() || origin(&s.target) != origin(&edited.target)
    });
    let refuse = |field: &str, what: &str| Invalid {
        field: field.into(),
        problem: if moved {
            format!(
                "give {what} again: the target changed, and a stored secret only goes where it went before"
            )
        } else {
            format!("give {what}; nothing is stored for it")
        },
    };
    if edited.body.as_deref().is_some_and(|b| b.contains(MASK)) {
        match stored.and_then(|s| s.body.as_ref()).filter(|_| !moved) {
            Some(b) if edited.body.as_deref() == Some(mask_body(b).as_str()) => {
                edited.body = Some(b.clone());
            }
            _ => {
                return Err(refuse("body", "the body's credentials in full"));
            }
        }
    }
    for (name, value) in edited.headers.iter_mut() {
        if value == MASK {
            match stored.and_then(|s| s.headers.get(name)).filter(|_| !moved) {
                Some(old) => value.clone_from(old),
                None => return Err(refuse("headers", &format!("the value of {name:?}"))),
            }
        }
    }
    for (field, secret, old) in [
        (
            "password",
            &mut edited.password,
            stored.and_then(|s| s.password.clone()),
        ),
        ("key", &mut edited.key, stored.and_then(|s| s.key.clone())),
    ] {
        if secret.as_ref().is_some_and(|p| p.expose() == MASK) {
            match old.filter(|_| !moved) {
                Some(old) => *secret = Some(old),
                None => return Err(refuse(field, &format!("the {field}"))),
            }
        }
    }
    Ok(())
}

/// Where a target sends its requests: scheme, host and port for a URL, the text otherwise.
fn origin(target: &str) -> String {
    match reqwest::Url::parse(target.trim()) {
        Ok(url) if url.has_host() => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        ),
        _ => target.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str, headers: &[(&str, &str)]) -> MonitorSpec {
        MonitorSpec {
            name: "api".into(),
            kind: "http".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_are_masked_and_the_rest_is_shown() {
        let stored = spec(
            "https://ops:hunter2@example.com/health?api_key=sk_live_1&region=eu",
            &[
                ("Authorization", "Bearer abc"),
                ("Accept", "application/json"),
                ("X-Api-Key", "k"),
            ],
        );
        let shown = masked(&stored);
        let text = serde_json::to_string(&shown).unwrap();
        for secret in ["hunter2", "sk_live_1", "Bearer abc", "\"k\""] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(shown.target.contains("region=eu"), "{}", shown.target);
        assert!(shown.target.starts_with("https://ops:"), "{}", shown.target);
        assert_eq!(shown.headers["Accept"], "application/json");
        // A host:port target has nothing to mask.
        assert_eq!(
            masked(&spec("db.internal:5432", &[])).target,
            "db.internal:5432"
        );
    }

    #[test]
    fn tokens_in_paths_user_names_and_bodies_are_masked_and_kept() {
        let mut stored = spec(
            "https://ghp_token123@hooks.example.com/services/T0123/B0456/AbCdEf0123456789XyZ12345/health",
            &[],
        );
        stored.body =
            Some(r#"{"query":"ping","auth":{"client_secret":"cs-9f8e7d","user":"ops"}}"#.into());
        let shown = masked(&stored);
        let text = serde_json::to_string(&shown).unwrap();
        for secret in ["ghp_token123", "AbCdEf0123456789XyZ12345", "cs-9f8e7d"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(
            shown.target.contains("/services/T0123/B0456/"),
            "{}",
            shown.target
        );
        assert!(shown.target.ends_with("/health"), "{}", shown.target);
        let body = shown.body.clone().unwrap();
        assert!(
            body.contains(r#""user":"ops""#) && body.contains("ping"),
            "{body}"
        );
        let mut back = shown.clone();
        keep_masked(&mut back, Some(&stored)).unwrap();
        assert_eq!((&back.target, &back.body), (&stored.target, &stored.body));
        // An edited body still holding the mask has nothing to take it from.
        let mut edited = shown.clone();
        edited.body = Some(body.replace("ping", "pong"));
        assert_eq!(
            keep_masked(&mut edited, Some(&stored)).unwrap_err().field,
            "body"
        );

        let form = "grant_type=client_credentials&client_secret=s3cr3t&scope=read";
        assert_eq!(
            mask_body(form),
            format!("grant_type=client_credentials&client_secret={MASK}&scope=read")
        );
        // Bodies without credentials are shown exactly as written.
        for plain in ["{ \"q\": 1 }", "hello world", "a=1&b=2"] {
            assert_eq!(mask_body(plain), plain);
        }
        assert!(!secret_like("health") && !secret_like("2024-01-01T00:00:00"));
    }

    #[test]
    fn masked_secrets_never_follow_a_new_target() {
        let mut stored = spec("https://api.openai.com", &[("X-Api-Key", "k1")]);
        stored.kind = "openai".into();
        stored.key = Some(Secret("sk-live".into()));
        let mut same_host = masked(&stored);
        same_host.target = "https://api.openai.com/".into();
        keep_masked(&mut same_host, Some(&stored)).unwrap();
        assert_eq!(same_host.key, stored.key, "same origin keeps the key");
        let mut elsewhere = masked(&stored);
        elsewhere.target = "https://evil.example".into();
        let e = keep_masked(&mut elsewhere, Some(&stored)).unwrap_err();
        assert!(e.problem.contains("target changed"), "{e}");
        let mut other_kind = masked(&stored);
        other_kind.kind = "luma".into();
        assert!(keep_masked(&mut other_kind, Some(&stored)).is_err());
    }

    #[test]
    fn passwords_are_masked_and_kept_on_a_round_trip() {
        let mut stored = spec("smtp.example.com:587", &[]);
        stored.kind = "smtp".into();
        stored.username = Some("ops".into());
        stored.password = Some(Secret("pa55word".into()));
        let shown = masked(&stored);
        assert!(!serde_json::to_string(&shown).unwrap().contains("pa55word"));
        let mut back = shown.clone();
        keep_masked(&mut back, Some(&stored)).unwrap();
        assert_eq!(back.password, stored.password);
        let mut fresh = shown;
        assert_eq!(keep_masked(&mut fresh, None).unwrap_err().field, "password");
    }

    #[test]
    fn a_masked_round_trip_keeps_the_stored_credentials_and_real_edits_win() {
        let stored = spec(
            "https://ops:hunter2@example.com/health?token=t1",
            &[("Authorization", "Bearer abc"), ("X-Api-Key", "k")],
        );
        let mut edited = masked(&stored);
        edited.headers.insert("X-Api-Key".into(), "new-key".into());
        keep_masked(&mut edited, Some(&stored)).unwrap();
        assert_eq!(edited.target, stored.target);
        assert_eq!(edited.headers["Authorization"], "Bearer abc");
        assert_eq!(edited.headers["X-Api-Key"], "new-key");

        // A new host with the mask still in it is not given the old host's password, and the
        // mask is not sent as one either.
        let mut moved = masked(&stored);
        moved.target = moved.target.replace("example.com", "elsewhere.test");
        assert_eq!(
            keep_masked(&mut moved, Some(&stored)).unwrap_err().field,
            "target"
        );
        let mut fresh = masked(&stored);
        fresh.headers.insert("X-New-Token".into(), MASK.into());
        assert_eq!(
            keep_masked(&mut fresh, Some(&stored)).unwrap_err().field,
            "headers"
        );
        assert!(keep_masked(&mut masked(&stored), None).is_err());
    }
}
