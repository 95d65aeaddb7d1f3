//! The `tls` kind, and the TLS handshakes of the `smtp` and `rediss` checks: verification
//! against the system's roots, a CA file, or nothing (`insecure`), and the peer certificate's
//! expiry. The leaf certificate is read even when verification fails, so an expired one is
//! reported as expired, with how long ago. An expired certificate fails even when
//! verification is off: nobody skips verification to accept that.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::client::TlsStream;

use super::Io;
use crate::health::checks::Probe;
use crate::health::monitor::{Monitor, TlsOptions, Trust, host_port};
use crate::net::guard::Guard;

/// Why a handshake did not give a usable, trusted connection.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate expired {ago} ago")]
    Expired { ago: String },
    #[error("certificate is not valid yet")]
    NotYetValid,
    #[error(
        "certificate not trusted: unknown issuer (set ca_file for a private CA, or insecure = true)"
    )]
    UnknownIssuer,
    #[error("certificate is not valid for {0}")]
    NameMismatch(String),
    #[error("certificate rejected: {0}")]
    Rejected(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("CA certificates: {0}")]
    Roots(String),
    #[error("{0:?} is not a TLS server name")]
    BadName(String),
}

/// A failed handshake, with the certificate's remaining days when the server sent one.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: TlsError,
    pub certificate_days: Option<f64>,
}

/// An established session and its peer certificate's remaining days.
pub(crate) struct Secured<S> {
    pub stream: TlsStream<S>,
    pub certificate_days: Option<f64>,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The system-roots verifier, built once: building it reads every system CA certificate.
fn system_verifier() -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    static SYSTEM: OnceLock<Result<Arc<dyn ServerCertVerifier>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            rustls_platform_verifier::Verifier::new(provider())
                .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(TlsError::Roots)
}

/// The certificates in a PEM file; at least one, or an error naming the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

fn verifier(trust: &Trust) -> Result<Option<Arc<dyn ServerCertVerifier>>, TlsError> {
    match trust {
        Trust::System => system_verifier().map(Some),
        Trust::Insecure => Ok(None),
        Trust::CaFile(path) => {
            // Read at every check so a renewed CA is picked up without a restart.
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_ca_file(path).map_err(TlsError::Roots)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Roots(format!("{}: {e}", path.display())))?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map(|v| Some(v as Arc<dyn ServerCertVerifier>))
                .map_err(|e| TlsError::Roots(e.to_string()))
        }
    }
}

/// Keeps the leaf certificate it is shown, then verifies as told (or not at all): rustls
/// discards the certificate of a failed handshake, and that is the one worth reporting on.
#[derive(Debug)]
struct Recording {
    inner: Option<Arc<dyn ServerCertVerifier>>,
    provider: Arc<CryptoProvider>,
    leaf: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
        match &self.inner {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Even unverified, the server must hold the certificate's key.
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs a client handshake over `io` for `host` (or the configured server name).
pub(crate) async fn handshake<S: Io>(
    io: S,
    host: &str,
    options: &TlsOptions,
) -> Result<Secured<S>, Failed> {
    let fail = |error| Failed {
        error,
        certificate_days: None,
    };
    let name = options.server_name.as_deref().unwrap_or(host).to_string();
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| fail(TlsError::BadName(name.clone())))?;
    let leaf = Arc::new(Mutex::new(None));
    let recording = Recording {
        inner: verifier(&options.trust).map_err(fail)?,
        provider: provider(),
        leaf: leaf.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(TlsError::Handshake(e.to_string())))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(recording))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let outcome = connector.connect(server_name, io).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days = leaf
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|cert| not_after(cert))
        .map(|end| (end - now) as f64 / 86_400.0);
    let expired = |days: f64| TlsError::Expired { ago: ago(-days) };
    match outcome {
        Ok(stream) => match days {
            Some(d) if d < 0.0 => Err(Failed {
                error: expired(d),
                certificate_days: Some(d),
            }),
            _ => Ok(Secured {
                stream,
                certificate_days: days,
            }),
        },
        Err(e) => {
            let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            let error = match rustls_error {
                Some(rustls::Error::InvalidCertificate(c)) => match c {
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => days
                        .map_or(
                            TlsError::Expired {
                                ago: "some time".into(),
                            },
                            expired,
                        ),
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        TlsError::NotYetValid
                    }
                    CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        TlsError::NameMismatch(name)
                    }
                    other => TlsError::Rejected(format!("{other:?}")),
                },
                Some(other) => TlsError::Handshake(other.to_string()),
                None => TlsError::Handshake(e.to_string()),
            };
            Err(Failed {
                error,
                certificate_days: days,
            })
        }
    }
}

/// `2.4` → "2 days", `0.5` → "12 hours".
fn ago(days: f64) -> String {
    if days >= 1.0 {
        let d = days.floor() as i64;
        format!("{d} day{}", if d == 1 { "" } else { "s" })
    } else {
        let h = (days * 24.0).floor().max(0.0) as i64;
        format!("{h} hour{}", if h == 1 { "" } else { "s" })
    }
}

/// The `tls` kind: connect, handshake, read the certificate's expiry.
pub(crate) async fn probe(monitor: &Monitor, guard: &Guard) -> Probe {
    let (host, port) = match host_port(&monitor.target) {
        Ok(hp) => hp,
        Err(e) => return Probe::failed(e),
    };
    let socket = match super::connect(guard, &host, port).await {
        Ok(s) => s,
        Err(e) => return Probe::failed(e),
    };
    match handshake(socket, &host, &monitor.tls).await {
        Ok(secured) => Probe {
            certificate_days: secured.certificate_days,
            ..Probe::default()
        },
        Err(failed) => Probe {
            certificate_days: failed.certificate_days,
            ..Probe::failed(failed.error.to_string())
        },
    }
}

/// The notAfter of a DER X.509 certificate, as a Unix time. A dozen lines of DER walking
/// instead of an X.509 crate: rustls has already checked the certificate's structure when it
/// verifies, and this is the only field we read.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (0x30, certificate, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (mut tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // The optional explicit version; the serial number follows.
        (tag, _, rest) = tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let (0x30, _signature, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, _issuer, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (_, _not_before, rest) = tlv(validity)?;
    let (tag, text, _) = tlv(rest)?;
    asn1_time(tag, text)
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18), the
/// only forms RFC 5280 allows in a certificate.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(field(0)?).ok()?, field(2)?)
            .ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, Verdict};
    use crate::health::monitor::MonitorSpec;
    use crate::health::probes::testing::{Ca, tls_server};

    #[test]
    fn not_after_reads_the_certificate_s_end() {
        let ca = Ca::new();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for days in [-3, 5, 400] {
            let leaf = ca.leaf(&["a.test"], days);
            let end = not_after(&leaf.cert).expect("a notAfter");
            assert!(
                (end - (now + days * 86_400)).abs() < 60,
                "{days} days: off by {}s",
                end - now - days * 86_400
            );
        }
        // A GeneralizedTime (years from 2050 on), by hand.
        assert_eq!(asn1_time(0x18, b"20510102030405Z"), Some(2_556_241_445));
        assert_eq!(asn1_time(0x17, b"500101000000Z"), Some(-631_152_000));
        for bad in [
            &b"2051010203040Z"[..],
            b"20511302030405Z",
            b"2051010203040xZ",
        ] {
            assert_eq!(asn1_time(0x18, bad), None, "{bad:?}");
        }
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None, "truncated");
        assert_eq!(not_after(b""), None);
    }

    fn monitor(target: String, extra: MonitorSpec) -> Monitor {
        MonitorSpec {
            name: "cert".into(),
            kind: "tls".into(),
            target,
            timeout: Some("2s".into()),
            ..extra
        }
        .validate()
        .expect("valid monitor")
    }

    #[tokio::test]
    async fn tls_checks_report_expiry_and_why_a_certificate_is_refused() {
        let ca = Ca::new();
        let ca_file = ca.pem_file();
        let trusted = || MonitorSpec {
            ca_file: Some(ca_file.path().display().to_string()),
            ..Default::default()
        };
        let client = checks::outbound();

        let fresh = tls_server(&ca.leaf(&["localhost"], 90)).await;
        let r = checks::run(
            &monitor(format!("localhost:{}", fresh.port()), trusted()),
            &client,
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));

        // Soon expiring: up by the certificate, degraded by the default rule.
        let soon = tls_server(&ca.leaf(&["localhost"], 5)).await;
        let r = checks::run(
            &monitor(format!("localhost:{}", soon.port()), trusted()),
            &client,
        )
        .await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        assert_eq!(r.error.as_deref(), Some("[CERTIFICATE_EXPIRATION] < 14d"));
        let r = checks::run(
            &monitor(
                format!("localhost:{}", soon.port()),
                MonitorSpec {
                    conditions: vec!["[CERTIFICATE_EXPIRATION] > 30d".into()],
                    degraded_when: vec!["[RESPONSE_TIME] > 10s".into()],
                    ..trusted()
                },
            ),
            &client,
        )
        .await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("[CERTIFICATE_EXPIRATION] > 30d: was ")),
            "{r:?}"
        );

        let expired = tls_server(&ca.leaf(&["localhost"], -3)).await;
        let target = format!("localhost:{}", expired.port());
        let r = checks::run(&monitor(target.clone(), trusted()), &client).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("certificate expired 3 days ago"))
        );
        let insecure = MonitorSpec {
            insecure: Some(true),
            ..Default::default()
        };
        let r = checks::run(&monitor(target, insecure.clone()), &client).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("certificate expired 3 days ago")),
            "insecure skips verification, not expiry"
        );

        // Another CA's certificate: unknown issuer, unless verification is off.
        let stranger = tls_server(&Ca::new().leaf(&["localhost"], 90)).await;
        let target = format!("localhost:{}", stranger.port());
        let r = checks::run(&monitor(target.clone(), trusted()), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("unknown issuer")),
            "{r:?}"
        );
        let r = checks::run(&monitor(target, insecure), &client).await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");

        // A name the certificate does not cover, and the server_name override that fixes it.
        let other = tls_server(&ca.leaf(&["db.internal"], 90)).await;
        let target = format!("127.0.0.1:{}", other.port());
        let r = checks::run(&monitor(target.clone(), trusted()), &client).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (
                Verdict::Down,
                Some("certificate is not valid for 127.0.0.1")
            )
        );
        let r = checks::run(
            &monitor(
                target,
                MonitorSpec {
                    server_name: Some("db.internal".into()),
                    ..trusted()
                },
            ),
            &client,
        )
        .await;
        assert_eq!(r.verdict, Verdict::Up, "{r:?}");

        // Not TLS at all: a server that answers with plain text.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = plain.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = plain.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"220 hello\r\n").await;
            }
        });
        let r = checks::run(&monitor(addr.to_string(), trusted()), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("TLS handshake failed")),
            "{r:?}"
        );
    }
}
