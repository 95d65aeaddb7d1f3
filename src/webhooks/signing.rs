//! Standard Webhooks signatures (standardwebhooks.com, version 1.0.0, symmetric scheme): the
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, where the signature is
//! `v1,` + base64 of HMAC-SHA256 keyed with the decoded `whsec_` secret over
//! `"{msg_id}.{timestamp}.{body}"`. Several space-separated signatures may be sent so a secret
//! can be rotated without downtime; a verifier accepts any one `v1` match and ignores other
//! versions (such as the asymmetric `v1a`), so an unknown scheme can never downgrade the check.
//!
//! This module owns the wire format only. It never sends anything, never stores a secret, and
//! never prints one: [`Secret`]'s `Debug` is redacted, and only [`Secret::expose`] yields the
//! serialized form, for showing it to the operator once or for encrypting it at rest.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How secrets are marked when shown to people, so they are recognised for what they are.
pub const SECRET_PREFIX: &str = "whsec_";
/// The spec's bounds on the decoded key: at least 192 bits, at most 512.
pub const SECRET_MIN_BYTES: usize = 24;
pub const SECRET_MAX_BYTES: usize = 64;
/// What [`Secret::generate`] makes: 256 bits, inside the spec's bounds with room either side.
pub const SECRET_GENERATED_BYTES: usize = 32;
/// The reference libraries' tolerance for `webhook-timestamp`, in both directions.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The symmetric scheme's signature identifier.
const VERSION: &str = "v1";

/// Why a secret string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret is empty")]
    Empty,
    #[error("webhook secret is not valid base64 after the `whsec_` prefix")]
    Base64,
    #[error(
        "webhook secret decodes to {bytes} bytes; the spec requires {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES}"
    )]
    Length { bytes: usize },
}

/// Why a message could not be signed. Both are bugs in the caller, never a receiver's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("webhook message id must be non-empty printable ASCII without `.` or spaces: {0:?}")]
    InvalidMessageId(String),
    #[error("webhook timestamp must not be negative: {0}")]
    NegativeTimestamp(i64),
    #[error("no signing secret given")]
    NoSecret,
}

/// Why a request's signature was refused; every variant means "do not trust this body".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    #[error("malformed `{0}` header")]
    InvalidHeader(&'static str),
    #[error("`webhook-timestamp` is not a unix time in whole seconds")]
    InvalidTimestamp,
    #[error("timestamp is {age} s old, past the {tolerance} s tolerance")]
    TooOld { age: i64, tolerance: i64 },
    #[error("timestamp is {ahead} s in the future, past the {tolerance} s tolerance")]
    TooNew { ahead: i64, tolerance: i64 },
    #[error("`webhook-signature` holds no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the message")]
    Mismatch,
}

/// A symmetric signing key. Cloning copies the key; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// A fresh random key from the thread's cryptographically secure generator.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; SECRET_GENERATED_BYTES];
        rand::rng().fill_bytes(&mut key);
        Secret { key }
    }

    /// Parses `whsec_<base64>`. The prefix is optional, as in the reference libraries, so a key
    /// copied without it from another provider's dashboard still works; surrounding whitespace
    /// (a pasted newline) is ignored.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Base64)?;
        Secret::from_bytes(key)
    }

    /// Wraps raw key bytes, held to the spec's length bounds.
    pub fn from_bytes(key: Vec<u8>) -> Result<Secret, SecretError> {
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(SecretError::Length { bytes: key.len() });
        }
        Ok(Secret { key })
    }

    /// The `whsec_…` form, to show the operator once or to encrypt at rest. Never log it.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length, so this cannot fail; the fallback only satisfies the
        // type and is unreachable.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `v1,<base64>` signature of `body` sent as message `msg_id` at `timestamp` (unix
    /// seconds). The body is signed exactly as given: send these same bytes.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignError> {
        check_message_id(msg_id)?;
        if timestamp < 0 {
            return Err(SignError::NegativeTimestamp(timestamp));
        }
        Ok(format!(
            "{VERSION},{}",
            BASE64.encode(self.mac(msg_id, timestamp, body))
        ))
    }

    /// Checks the three Standard Webhooks header values against `body` at `now_secs`, with
    /// `tolerance_secs` either side; returns the signed timestamp. `None` means the header was
    /// absent.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<i64, VerifyError> {
        let id = id.ok_or(VerifyError::MissingHeader(HEADER_ID))?;
        let timestamp = timestamp.ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
        let signature = signature.ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;
        // A `.` in the id would make the signed text ambiguous: a signature over id "a",
        // timestamp 1 and body "2.{…}" would also cover id "a.1", timestamp 2 and body "{…}",
        // letting the timestamp be moved. The spec forbids it for producers; refusing it here
        // closes the hole for anyone who does not follow that.
        if check_message_id(id).is_err() {
            return Err(VerifyError::InvalidHeader(HEADER_ID));
        }
        let timestamp = parse_timestamp(timestamp)?;
        // Timestamp first, as the reference libraries do, so a replay is reported as one.
        let age = now_secs.saturating_sub(timestamp);
        if age > tolerance_secs {
            return Err(VerifyError::TooOld {
                age,
                tolerance: tolerance_secs,
            });
        }
        if -age > tolerance_secs {
            return Err(VerifyError::TooNew {
                ahead: -age,
                tolerance: tolerance_secs,
            });
        }
        let expected = self.mac(id, timestamp, body);
        let mut any_v1 = false;
        let mut matched = false;
        for entry in signature.split_ascii_whitespace() {
            let Some((version, value)) = entry.split_once(',') else {
                continue;
            };
            if version != VERSION {
                continue;
            }
            any_v1 = true;
            // Compare decoded bytes, so length and content both count: a truncated or empty
            // candidate never matches (`ct_eq` on slices of different lengths is false).
            // Every candidate is compared, so timing does not say which one matched.
            let candidate = BASE64.decode(value).unwrap_or_default();
            let same: bool = candidate.as_slice().ct_eq(&expected).into();
            matched |= same;
        }
        if !any_v1 {
            return Err(VerifyError::NoV1Signature);
        }
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        Ok(timestamp)
    }

    /// [`Secret::verify`] reading the headers from a request's header map. A header that is
    /// not visible ASCII counts as malformed.
    pub fn verify_headers(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<i64, VerifyError> {
        let get = |name: &'static str| -> Result<Option<&str>, VerifyError> {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| VerifyError::InvalidHeader(name)))
                .transpose()
        };
        self.verify(
            get(HEADER_ID)?,
            get(HEADER_TIMESTAMP)?,
            get(HEADER_SIGNATURE)?,
            body,
            now_secs,
            tolerance_secs,
        )
    }
}

impl std::str::FromStr for Secret {
    type Err = SecretError;
    fn from_str(text: &str) -> Result<Secret, SecretError> {
        Secret::parse(text)
    }
}

/// A fresh message id, `msg_` + 32 hex digits. The id stays the same across every retry of
/// one message, so receivers can use it to deduplicate.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Ids go into a header and into the signed text, so they must be printable ASCII, and must
/// not hold the `.` delimiter (see [`Secret::verify`]).
fn check_message_id(id: &str) -> Result<(), SignError> {
    let ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'.');
    if ok {
        Ok(())
    } else {
        Err(SignError::InvalidMessageId(id.to_owned()))
    }
}

/// Whole unix seconds, digits only: the reference libraries refuse fractions and signs too.
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    text.parse::<i64>()
        .map_err(|_| VerifyError::InvalidTimestamp)
}

/// The `webhook-signature` value for a message signed with every secret in `secrets`, space
/// separated: during a rotation, send both the new and the old secret's signatures.
pub fn signature_header(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    if secrets.is_empty() {
        return Err(SignError::NoSecret);
    }
    let signatures = secrets
        .iter()
        .map(|secret| secret.sign(msg_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

/// The three headers to send with `body`, ready for `reqwest::RequestBuilder::headers`.
pub fn headers(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<HeaderMap, SignError> {
    let signature = signature_header(secrets, msg_id, timestamp, body)?;
    let mut map = HeaderMap::with_capacity(3);
    // The id was checked as printable ASCII by signing, and base64 and digits always are, so
    // these conversions cannot fail; mapping the error keeps that an error, not a panic.
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| SignError::InvalidMessageId(msg_id.to_owned()))
    };
    map.insert(HEADER_ID, value(msg_id)?);
    map.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
    map.insert(HEADER_SIGNATURE, value(&signature)?);
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published test vector: standard-webhooks/standard-webhooks,
    // libraries/go/webhook_test.go `TestWebhookSign` (the same values appear in the PHP and
    // JavaScript reference tests and the Svix libraries). Re-computed at development time
    // with Python's `hmac`/`hashlib`/`base64` modules from the spec's definition, which
    // agreed.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Secret {
        Secret::parse(VECTOR_SECRET).expect("vector secret")
    }

    fn verify(sig: &str, body: &[u8], now: i64) -> Result<i64, VerifyError> {
        secret().verify(
            Some(VECTOR_ID),
            Some(&VECTOR_TS.to_string()),
            Some(sig),
            body,
            now,
            DEFAULT_TOLERANCE_SECS,
        )
    }

    #[test]
    fn signs_the_published_test_vector() {
        assert_eq!(
            secret().sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY).as_deref(),
            Ok(VECTOR_SIG)
        );
        assert_eq!(verify(VECTOR_SIG, VECTOR_BODY, VECTOR_TS), Ok(VECTOR_TS));
    }

    #[test]
    fn signs_the_rust_reference_library_vector() {
        // standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs `test_sign`; also
        // re-computed with Python's hmac module.
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("secret");
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret
                .sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body)
                .as_deref(),
            Ok("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn secrets_parse_with_or_without_prefix_and_round_trip() {
        let bare = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("bare");
        assert_eq!(bare.expose(), VECTOR_SECRET);
        assert_eq!(
            Secret::parse(&format!("  {VECTOR_SECRET}\n")).map(|s| s.expose()),
            Ok(VECTOR_SECRET.to_owned())
        );
        let fresh = Secret::generate();
        let shown = fresh.expose();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(Secret::parse(&shown).map(|s| s.key), Ok(fresh.key.clone()));
        assert_ne!(Secret::generate().key, fresh.key);
    }

    #[test]
    fn bad_secrets_are_refused_with_the_reason() {
        assert_eq!(Secret::parse("whsec_").map(|_| ()), Err(SecretError::Empty));
        assert_eq!(Secret::parse("").map(|_| ()), Err(SecretError::Empty));
        assert_eq!(
            Secret::parse("whsec_not*base64").map(|_| ()),
            Err(SecretError::Base64)
        );
        // 16 bytes: under the spec's 192-bit minimum.
        assert_eq!(
            Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAA==").map(|_| ()),
            Err(SecretError::Length { bytes: 16 })
        );
        assert_eq!(
            Secret::from_bytes(vec![1; 65]).map(|_| ()),
            Err(SecretError::Length { bytes: 65 })
        );
        assert!(Secret::from_bytes(vec![1; 64]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", secret());
        assert_eq!(shown, "Secret(***)");
        assert!(!shown.contains("MfKQ"));
    }

    #[test]
    fn tampered_body_and_wrong_secret_are_refused() {
        assert_eq!(
            verify(VECTOR_SIG, br#"{"test": 2432232315}"#, VECTOR_TS),
            Err(VerifyError::Mismatch)
        );
        let other = Secret::generate()
            .sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
            .expect("sign");
        assert_eq!(
            verify(&other, VECTOR_BODY, VECTOR_TS),
            Err(VerifyError::Mismatch)
        );
        // The id and timestamp are signed too: moving either breaks the signature.
        let moved = secret().verify(
            Some("msg_other"),
            Some(&VECTOR_TS.to_string()),
            Some(VECTOR_SIG),
            VECTOR_BODY,
            VECTOR_TS,
            DEFAULT_TOLERANCE_SECS,
        );
        assert_eq!(moved, Err(VerifyError::Mismatch));
        let shifted = secret().verify(
            Some(VECTOR_ID),
            Some(&(VECTOR_TS + 1).to_string()),
            Some(VECTOR_SIG),
            VECTOR_BODY,
            VECTOR_TS,
            DEFAULT_TOLERANCE_SECS,
        );
        assert_eq!(shifted, Err(VerifyError::Mismatch));
    }

    #[test]
    fn any_v1_of_several_matches_and_other_versions_are_ignored() {
        let decoy = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let header = format!("{decoy} v2,abc {VECTOR_SIG} {decoy}");
        assert_eq!(verify(&header, VECTOR_BODY, VECTOR_TS), Ok(VECTOR_TS));
        // The right bytes under another version label are not a v1 signature.
        let relabelled = VECTOR_SIG.replacen("v1,", "v1a,", 1);
        assert_eq!(
            verify(&relabelled, VECTOR_BODY, VECTOR_TS),
            Err(VerifyError::NoV1Signature)
        );
        // A rotation header from our side verifies under either secret.
        let new = Secret::generate();
        let both = signature_header(&[new.clone(), secret()], VECTOR_ID, VECTOR_TS, VECTOR_BODY)
            .expect("sign");
        assert_eq!(both.split(' ').count(), 2);
        assert_eq!(verify(&both, VECTOR_BODY, VECTOR_TS), Ok(VECTOR_TS));
        assert_eq!(
            new.verify(
                Some(VECTOR_ID),
                Some(&VECTOR_TS.to_string()),
                Some(&both),
                VECTOR_BODY,
                VECTOR_TS,
                DEFAULT_TOLERANCE_SECS
            ),
            Ok(VECTOR_TS)
        );
    }

    #[test]
    fn truncated_or_empty_signatures_never_match() {
        // A naive zip-and-compare accepts a prefix of the right signature, or an empty one.
        for sig in [
            "v1,",
            "v1,g0hM9SsE",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        ] {
            assert_eq!(
                verify(sig, VECTOR_BODY, VECTOR_TS),
                Err(VerifyError::Mismatch),
                "{sig}"
            );
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_both_ways() {
        let tol = DEFAULT_TOLERANCE_SECS;
        assert_eq!(
            verify(VECTOR_SIG, VECTOR_BODY, VECTOR_TS + tol),
            Ok(VECTOR_TS)
        );
        assert_eq!(
            verify(VECTOR_SIG, VECTOR_BODY, VECTOR_TS - tol),
            Ok(VECTOR_TS)
        );
        assert_eq!(
            verify(VECTOR_SIG, VECTOR_BODY, VECTOR_TS + tol + 1),
            Err(VerifyError::TooOld {
                age: tol + 1,
                tolerance: tol
            })
        );
        assert_eq!(
            verify(VECTOR_SIG, VECTOR_BODY, VECTOR_TS - tol - 1),
            Err(VerifyError::TooNew {
                ahead: tol + 1,
                tolerance: tol
            })
        );
    }

    #[test]
    fn malformed_and_missing_headers_are_named() {
        let s = secret();
        let ts = VECTOR_TS.to_string();
        let check = |id: Option<&str>, t: Option<&str>, sig: Option<&str>| {
            s.verify(id, t, sig, VECTOR_BODY, VECTOR_TS, DEFAULT_TOLERANCE_SECS)
        };
        assert_eq!(
            check(None, Some(&ts), Some(VECTOR_SIG)),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            check(Some(VECTOR_ID), None, Some(VECTOR_SIG)),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            check(Some(VECTOR_ID), Some(&ts), None),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
        for bad_ts in [
            "",
            "1614265330.0",
            "-1614265330",
            "+1614265330",
            "soon",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(Some(VECTOR_ID), Some(bad_ts), Some(VECTOR_SIG)),
                Err(VerifyError::InvalidTimestamp),
                "{bad_ts:?}"
            );
        }
        for bad_id in ["", "msg.1", "msg 1"] {
            assert_eq!(
                check(Some(bad_id), Some(&ts), Some(VECTOR_SIG)),
                Err(VerifyError::InvalidHeader("webhook-id")),
                "{bad_id:?}"
            );
        }
        for bad_sig in ["", "garbage", "v1", "v1a,xyz"] {
            assert_eq!(
                check(Some(VECTOR_ID), Some(&ts), Some(bad_sig)),
                Err(VerifyError::NoV1Signature),
                "{bad_sig:?}"
            );
        }
        assert_eq!(
            check(Some(VECTOR_ID), Some(&ts), Some("v1,***not-base64***")),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn header_map_round_trip_and_sign_errors() {
        let map = headers(&[secret()], VECTOR_ID, VECTOR_TS, VECTOR_BODY).expect("headers");
        assert_eq!(
            map.get(HEADER_ID).map(|v| v.as_bytes()),
            Some(VECTOR_ID.as_bytes())
        );
        assert_eq!(
            map.get(HEADER_TIMESTAMP).map(|v| v.as_bytes()),
            Some(&b"1614265330"[..])
        );
        assert_eq!(
            map.get(HEADER_SIGNATURE).map(|v| v.as_bytes()),
            Some(VECTOR_SIG.as_bytes())
        );
        assert_eq!(
            secret().verify_headers(&map, VECTOR_BODY, VECTOR_TS, DEFAULT_TOLERANCE_SECS),
            Ok(VECTOR_TS)
        );
        let mut bad = map.clone();
        bad.insert(
            HEADER_SIGNATURE,
            HeaderValue::from_bytes(b"v1,\xff").expect("opaque header bytes"),
        );
        assert_eq!(
            secret().verify_headers(&bad, VECTOR_BODY, VECTOR_TS, DEFAULT_TOLERANCE_SECS),
            Err(VerifyError::InvalidHeader("webhook-signature"))
        );
        assert_eq!(
            secret().sign("msg.1", 1, b"").map(|_| ()),
            Err(SignError::InvalidMessageId("msg.1".into()))
        );
        assert_eq!(
            secret().sign("msg_1", -1, b"").map(|_| ()),
            Err(SignError::NegativeTimestamp(-1))
        );
        assert_eq!(
            signature_header(&[], "msg_1", 1, b"").map(|_| ()),
            Err(SignError::NoSecret)
        );
        let id = new_message_id();
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert!(secret().sign(&id, 1, b"").is_ok());
    }
}
