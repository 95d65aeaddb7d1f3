//! The condition language of monitors: `[SUBJECT] <operator> <value>`, one condition per string,
//! parsed once when a monitor is defined and evaluated against each check's observation.
//!
//! Subjects: `[STATUS]` (HTTP status), `[RESPONSE_TIME]` (milliseconds), `[BODY]` (the body as
//! text), `[BODY].path.to[0].value` (a value inside a JSON body), `[HEADER].name` (a response
//! header, case-insensitive), `[CERTIFICATE_EXPIRATION]` (days until the peer certificate
//! expires), `[DNS_RCODE]` (a DNS answer's response code, e.g. `NOERROR`, `NXDOMAIN`). What
//! `[BODY]` holds depends on the kind: the HTTP body, a DNS answer's records one per line, a
//! postgres query's value, redis `INFO` as a JSON object, an SMTP greeting. Operators: `==`,
//! `!=`, `<`, `<=`, `>`, `>=`, `contains`, `!contains`. Values are numbers (a duration such as
//! `500ms` or `2s` for `[RESPONSE_TIME]`, days such as `14` or `14d` — or hours, `36h` — for
//! certificates) or text, optionally in double quotes.

use std::fmt;

use serde_json::Value;

/// What a condition reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Status,
    ResponseTime,
    Body,
    /// Steps into a JSON body: object keys and array indexes.
    Json(Vec<Step>),
    Header(String),
    CertificateExpiration,
    DnsRcode,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    NotContains,
}

/// A parsed condition, kept with its text for error messages and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub text: String,
    subject: Subject,
    op: Op,
    value: String,
    /// The value as a number (a duration in ms for `[RESPONSE_TIME]`), where it is one.
    number: Option<f64>,
}

/// What one check saw, as far as conditions can ask.
#[derive(Debug, Default)]
pub struct Observation<'a> {
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub body: Option<&'a str>,
    /// Header names lowercase.
    pub headers: &'a [(String, String)],
    pub certificate_days: Option<f64>,
    pub dns_rcode: Option<&'a str>,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Condition {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let rest = trimmed
            .strip_prefix('[')
            .ok_or_else(|| format!("{trimmed:?}: a condition starts with a [SUBJECT]"))?;
        let close = rest
            .find(']')
            .ok_or_else(|| format!("{trimmed:?}: unclosed ["))?;
        let (name, rest) = (&rest[..close], &rest[close + 1..]);
        let (path, rest) = match rest.strip_prefix('.') {
            Some(after) => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (Some(&after[..end]), &after[end..])
            }
            None => (None, rest),
        };
        let subject = match (name, path) {
            ("STATUS", None) => Subject::Status,
            ("RESPONSE_TIME", None) => Subject::ResponseTime,
            ("BODY", None) => Subject::Body,
            ("BODY", Some(p)) => {
                Subject::Json(parse_path(p).map_err(|e| format!("{trimmed:?}: {e}"))?)
            }
            ("HEADER", Some(h)) if !h.is_empty() => Subject::Header(h.to_ascii_lowercase()),
            ("HEADER", _) => {
                return Err(format!(
                    "{trimmed:?}: [HEADER] needs a name, as in [HEADER].content-type"
                ));
            }
            ("CERTIFICATE_EXPIRATION", None) => Subject::CertificateExpiration,
            ("DNS_RCODE", None) => Subject::DnsRcode,
            (other, _) => {
                return Err(format!(
                    "{trimmed:?}: unknown subject [{other}] (known: [STATUS], [RESPONSE_TIME], \
                     [BODY], [BODY].path, [HEADER].name, [CERTIFICATE_EXPIRATION], [DNS_RCODE])"
                ));
            }
        };
        let rest = rest.trim_start();
        let (op, value) = [
            ("!contains", Op::NotContains),
            ("contains", Op::Contains),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(token, op)| rest.strip_prefix(token).map(|v| (op, v)))
        .ok_or_else(|| {
            format!("{trimmed:?}: expected an operator (==, !=, <, <=, >, >=, contains, !contains)")
        })?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{trimmed:?}: the value is missing"));
        }
        let value = match value.strip_prefix('"') {
            Some(inner) => inner
                .strip_suffix('"')
                .ok_or_else(|| format!("{trimmed:?}: unclosed quote"))?
                .to_string(),
            None => value.to_string(),
        };
        let number = match subject {
            Subject::ResponseTime => Some(parse_ms(&value).ok_or_else(|| {
                format!("{trimmed:?}: {value:?} is not a time (e.g. 500, 500ms, 2s)")
            })?),
            Subject::CertificateExpiration => Some(parse_days(&value).ok_or_else(|| {
                format!("{trimmed:?}: {value:?} is not a number of days (e.g. 14, 14d, 36h)")
            })?),
            _ => value.parse::<f64>().ok().filter(|n| n.is_finite()),
        };
        let ordered = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
        if ordered && number.is_none() {
            return Err(format!(
                "{trimmed:?}: {value:?} is not a number to compare with"
            ));
        }
        let numeric_only = matches!(
            subject,
            Subject::Status | Subject::ResponseTime | Subject::CertificateExpiration
        );
        if numeric_only && matches!(op, Op::Contains | Op::NotContains) {
            return Err(format!(
                "{trimmed:?}: contains applies to text, not a number"
            ));
        }
        if numeric_only && number.is_none() {
            return Err(format!("{trimmed:?}: {value:?} is not a number"));
        }
        Ok(Self {
            text: trimmed.to_string(),
            subject,
            op,
            value,
            number,
        })
    }

    /// Whether a failure would quote what the peer sent (the body, a JSON value, a header),
    /// which only administrators may read.
    pub fn quotes_peer(&self) -> bool {
        matches!(
            self.subject,
            Subject::Body | Subject::Json(_) | Subject::Header(_)
        )
    }

    /// What the condition reads, so a definition can refuse subjects its kind never sees.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Whether `seen` satisfies the condition; `Err` says what was seen instead.
    pub fn check(&self, seen: &Observation<'_>) -> Result<(), String> {
        let actual: Option<Actual> = match &self.subject {
            Subject::Status => seen.status.map(|s| Actual::Number(f64::from(s))),
            Subject::ResponseTime => Some(Actual::Number(seen.latency_ms)),
            Subject::CertificateExpiration => seen.certificate_days.map(Actual::Number),
            Subject::DnsRcode => seen.dns_rcode.map(|r| Actual::Text(r.to_string())),
            Subject::Body => seen.body.map(|b| Actual::Text(b.to_string())),
            Subject::Header(name) => seen
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| Actual::Text(v.clone())),
            Subject::Json(path) => {
                let json: Option<Value> = seen.body.and_then(|b| serde_json::from_str(b).ok());
                let Some(json) = json else {
                    return Err(format!("{}: the body is not JSON", self.text));
                };
                let mut at = &json;
                let mut found = true;
                for step in path {
                    let next = match step {
                        Step::Key(k) => at.get(k),
                        Step::Index(i) => at.get(i),
                    };
                    match next {
                        Some(v) => at = v,
                        None => {
                            found = false;
                            break;
                        }
                    }
                }
                found.then(|| match at {
                    Value::Number(n) => n
                        .as_f64()
                        .map_or(Actual::Text(n.to_string()), Actual::Number),
                    Value::String(s) => Actual::Text(s.clone()),
                    other => Actual::Text(other.to_string()),
                })
            }
        };
        let Some(actual) = actual else {
            return Err(format!("{}: nothing to compare (absent)", self.text));
        };
        let holds = match (&actual, self.number) {
            (Actual::Number(a), Some(want)) => compare_numbers(*a, self.op, want),
            (Actual::Text(t), Some(want))
                if matches!(self.op, Op::Lt | Op::Le | Op::Gt | Op::Ge) =>
            {
                t.trim()
                    .parse::<f64>()
                    .is_ok_and(|a| compare_numbers(a, self.op, want))
            }
            (Actual::Number(a), None) => compare_text(&format_number(*a), self.op, &self.value),
            (Actual::Text(t), Some(want)) if matches!(self.op, Op::Eq | Op::Ne) => {
                // "200" and 200.0 are the same value.
                let equal = t.trim().parse::<f64>().is_ok_and(|a| a == want) || t == &self.value;
                equal == (self.op == Op::Eq)
            }
            (Actual::Text(t), _) => compare_text(t, self.op, &self.value),
        };
        if holds {
            Ok(())
        } else {
            Err(format!("{}: was {}", self.text, actual.excerpt()))
        }
    }
}

enum Actual {
    Number(f64),
    Text(String),
}

impl Actual {
    fn excerpt(&self) -> String {
        match self {
            Actual::Number(n) => format_number(*n),
            Actual::Text(t) => {
                let cut: String = t.chars().take(80).collect();
                if cut.len() < t.len() {
                    format!("{cut:?}…")
                } else {
                    format!("{cut:?}")
                }
            }
        }
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n:.1}")
    }
}

fn compare_numbers(a: f64, op: Op, b: f64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Contains => format_number(a).contains(&format_number(b)),
        Op::NotContains => !format_number(a).contains(&format_number(b)),
    }
}

fn compare_text(a: &str, op: Op, b: &str) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Contains => a.contains(b),
        Op::NotContains => !a.contains(b),
        // Ordered comparisons were refused at parse time for non-numbers.
        Op::Lt | Op::Le | Op::Gt | Op::Ge => false,
    }
}

/// `500`, `500ms`, `2s`, `1.5s` → milliseconds.
fn parse_ms(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (value, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n * scale)
}

/// `14`, `14d`, `36h` → days; negative values allowed, since an expired certificate has them.
fn parse_days(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix('d') {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('h') {
        (n, 1.0 / 24.0)
    } else {
        (value, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(|n| n * scale)
}

/// `data.items[0].status` → steps.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && indexes.is_empty() {
            return Err(format!("empty step in path {path:?}"));
        }
        if !key.is_empty() {
            steps.push(Step::Key(key.to_string()));
        }
        while let Some(inner) = indexes.strip_prefix('[') {
            let end = inner
                .find(']')
                .ok_or_else(|| format!("unclosed [ in path {path:?}"))?;
            let index = inner[..end].parse::<usize>().map_err(|_| {
                format!("{:?} is not an array index in path {path:?}", &inner[..end])
            })?;
            steps.push(Step::Index(index));
            indexes = &inner[end + 1..];
        }
        if !indexes.is_empty() {
            return Err(format!("unexpected {indexes:?} in path {path:?}"));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(
        status: u16,
        ms: f64,
        body: &'a str,
        headers: &'a [(String, String)],
    ) -> Observation<'a> {
        Observation {
            status: Some(status),
            latency_ms: ms,
            body: Some(body),
            headers,
            certificate_days: Some(12.5),
            dns_rcode: Some("NOERROR"),
        }
    }

    #[test]
    fn conditions_hold_or_say_what_was_seen() {
        let headers = [(
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        )];
        let body = r#"{"status":"ok","data":{"items":[{"n":3},{"n":"7"}]}}"#;
        let o = seen(200, 120.0, body, &headers);
        for ok in [
            "[STATUS] == 200",
            "[STATUS] < 300",
            "[RESPONSE_TIME] < 500ms",
            "[RESPONSE_TIME] <= 0.2s",
            "[BODY] contains \"ok\"",
            "[BODY].status == ok",
            "[BODY].data.items[0].n >= 3",
            "[BODY].data.items[1].n == 7",
            "[HEADER].Content-Type contains json",
            "[CERTIFICATE_EXPIRATION] > 7",
            "[CERTIFICATE_EXPIRATION] < 14d",
            "[CERTIFICATE_EXPIRATION] > 36h",
            "[DNS_RCODE] == NOERROR",
            "[BODY] !contains error",
        ] {
            let c = Condition::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(c.check(&o), Ok(()), "{ok}");
        }
        let c = Condition::parse("[STATUS] == 200").expect("parses");
        assert_eq!(
            c.check(&seen(503, 1.0, "", &[])),
            Err("[STATUS] == 200: was 503".to_string())
        );
        let c = Condition::parse("[BODY].data.missing == 1").expect("parses");
        assert!(c.check(&o).is_err_and(|e| e.contains("absent")));
        let c = Condition::parse("[BODY].status == ok").expect("parses");
        assert!(
            c.check(&seen(200, 1.0, "<html>", &[]))
                .is_err_and(|e| e.contains("not JSON"))
        );
        let c = Condition::parse("[CERTIFICATE_EXPIRATION] > 13d").expect("parses");
        assert_eq!(
            c.check(&o),
            Err("[CERTIFICATE_EXPIRATION] > 13d: was 12.5".to_string())
        );
        let c = Condition::parse("[DNS_RCODE] == NOERROR").expect("parses");
        assert!(
            c.check(&seen(200, 1.0, "", &[])).is_ok()
                && c.check(&Observation::default())
                    .is_err_and(|e| e.contains("absent"))
        );
        let c = Condition::parse("[RESPONSE_TIME] < 100").expect("parses");
        assert_eq!(
            c.check(&o),
            Err("[RESPONSE_TIME] < 100: was 120".to_string())
        );
    }

    #[test]
    fn malformed_conditions_are_refused_with_the_reason() {
        for (bad, why) in [
            ("STATUS == 200", "starts with a [SUBJECT]"),
            ("[STATUS == 200", "unclosed ["),
            ("[STATE] == up", "unknown subject"),
            ("[STATUS] = 200", "expected an operator"),
            ("[STATUS] ==", "value is missing"),
            ("[STATUS] == ok", "not a number"),
            ("[STATUS] contains 2", "applies to text"),
            ("[RESPONSE_TIME] < fast", "not a time"),
            ("[CERTIFICATE_EXPIRATION] < 2w", "not a number of days"),
            ("[BODY] > abc", "not a number to compare"),
            ("[BODY].a[x] == 1", "not an array index"),
            ("[HEADER] == x", "needs a name"),
            ("[BODY] == \"open", "unclosed quote"),
        ] {
            let err = Condition::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
