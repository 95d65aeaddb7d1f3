//! Verification of the `Stripe-Signature` header on inbound webhooks: HMAC-SHA256 keyed with the
//! whole `whsec_…` secret over `"{t}.{raw body}"`, lowercase hex. Any one matching `v1` value is
//! enough, because Stripe signs with every active secret while one is being rolled; `v0` (a
//! test-mode decoy) and unknown schemes are ignored so they can never downgrade the check. A
//! timestamp older than the tolerance is refused as a replay, as Stripe's own libraries do, and
//! so is one further ahead than the tolerance: a signature dated in the future would otherwise
//! stay replayable until that date (a leaked secret could mint deliveries good for years), and
//! clocks that drift more than five minutes apart are a fault to see, not to absorb.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's libraries' default, and the product's contract.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a delivery was refused; every variant is a 400 for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature header has no valid timestamp (t=)")]
    NoTimestamp,
    #[error("Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature matches the payload")]
    Mismatch,
    #[error("timestamp is {age} s old, past the {tolerance} s tolerance")]
    TooOld { age: i64, tolerance: i64 },
    #[error("timestamp is {ahead} s in the future, past the {tolerance} s tolerance")]
    InFuture { ahead: i64, tolerance: i64 },
}

/// The parts of a `Stripe-Signature` header that count.
#[derive(Debug, PartialEq, Eq)]
struct Header<'a> {
    timestamp: i64,
    v1: Vec<&'a str>,
}

fn parse(header: &str) -> Result<Header<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(Header { timestamp, v1 })
}

/// The lowercase hex `v1` signature of `payload` at `timestamp` under `secret`.
pub fn sign(payload: &[u8], timestamp: i64, secret: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// A complete header as Stripe would send it, for the demo simulator and tests.
pub fn header(payload: &[u8], timestamp: i64, secrets: &[&str]) -> String {
    let mut out = format!("t={timestamp}");
    for secret in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(payload, timestamp, secret));
    }
    out
}

/// Checks `header` against the raw `payload` bytes; returns the signed timestamp.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let header = parse(header.ok_or(SignatureError::Missing)?)?;
    let expected = sign(payload, header.timestamp, secret);
    // Every candidate is compared, in constant time, so timing says nothing about which (if
    // any) matched.
    let matched = header.v1.iter().fold(false, |found, candidate| {
        let same: bool = candidate.as_bytes().ct_eq(expected.as_bytes()).into();
        found | same
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // The tolerance bounds both directions; saturating, since `t=` is the sender's number.
    let age = now_secs.saturating_sub(header.timestamp);
    if tolerance_secs > 0 && age > tolerance_secs {
        return Err(SignatureError::TooOld {
            age,
            tolerance: tolerance_secs,
        });
    }
    if tolerance_secs > 0 && age < -tolerance_secs {
        return Err(SignatureError::InFuture {
            ahead: header.timestamp.saturating_sub(now_secs),
            tolerance: tolerance_secs,
        });
    }
    Ok(header.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    #[test]
    fn signature_matches_an_independently_computed_vector() {
        // HMAC-SHA256(key "whsec_test_secret", "1700000000.{BODY}"), computed with Python's
        // hmac module from the scheme's definition.
        assert_eq!(
            sign(BODY, 1_700_000_000, SECRET),
            "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd"
        );
    }

    #[test]
    fn any_matching_v1_is_accepted_and_v0_ignored() {
        let t = 1_700_000_000;
        let good = sign(BODY, t, SECRET);
        let other = sign(BODY, t, "whsec_old_secret");
        let h = format!("t={t},v1={other},v1={good},v0={good}");
        assert_eq!(verify(BODY, Some(&h), SECRET, t + 10, 300), Ok(t));
        // A v0 alone (Stripe's test decoy) is never enough.
        let h = format!("t={t},v0={good}");
        assert_eq!(
            verify(BODY, Some(&h), SECRET, t, 300),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn tampering_and_replays_are_refused() {
        let t = 1_700_000_000;
        let h = header(BODY, t, &[SECRET]);
        assert_eq!(
            verify(b"{\"id\":\"evt_2\"}", Some(&h), SECRET, t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&h), "whsec_wrong", t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(BODY, Some(&h), SECRET, t + 301, 300),
            Err(SignatureError::TooOld {
                age: 301,
                tolerance: 300
            })
        );
        assert_eq!(verify(BODY, Some(&h), SECRET, t + 300, 300), Ok(t));
        assert_eq!(
            verify(BODY, None, SECRET, t, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(BODY, Some("v1=abc"), SECRET, t, 300),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            verify(BODY, Some("t=notanumber,v1=abc"), SECRET, t, 300),
            Err(SignatureError::NoTimestamp)
        );
        // Re-serialised JSON (whitespace changed) no longer verifies: the raw bytes count.
        assert_eq!(
            verify(
                br#"{"id": "evt_1", "object": "event"}"#,
                Some(&h),
                SECRET,
                t,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_ahead_of_the_clock_are_bounded_like_old_ones() {
        let t = 1_700_000_000;
        let h = header(BODY, t, &[SECRET]);
        // Five minutes ahead is within the tolerance, as five minutes behind is.
        assert_eq!(verify(BODY, Some(&h), SECRET, t - 300, 300), Ok(t));
        assert_eq!(
            verify(BODY, Some(&h), SECRET, t - 301, 300),
            Err(SignatureError::InFuture {
                ahead: 301,
                tolerance: 300
            })
        );
        // A correctly signed delivery dated far ahead would otherwise be replayable until then.
        let far = header(BODY, i64::MAX, &[SECRET]);
        assert!(matches!(
            verify(BODY, Some(&far), SECRET, t, 300),
            Err(SignatureError::InFuture { .. })
        ));
        // A tolerance of 0 turns the age check off in both directions, as before.
        assert_eq!(verify(BODY, Some(&h), SECRET, t - 10_000, 0), Ok(t));
    }
}
