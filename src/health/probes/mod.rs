//! The protocol-speaking kinds, one file each: `tls` (also the handshakes of `smtp` and
//! `rediss`), `dns`, `postgres`, `redis`, `smtp`. Each turns a monitor into a `Probe` (what was
//! seen, or why it failed) and leaves judging to `checks`; none stores, logs or retries, and
//! none puts a password or a connection URL into an error.

pub mod dns;
pub mod postgres;
pub mod redis;
pub mod smtp;
pub mod tls;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::net::guard::{ConnectError, Guard};

/// A byte stream behind a box, so a session can swap its plain socket for TLS midway.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Longest line a text protocol peer may send before the check fails.
const MAX_LINE: usize = 4096;

/// Connects through the destination guard: `host` resolved, every address checked, one of
/// those connected to. A refusal reads "destination refused: …", anything else names the
/// address tried.
pub(crate) async fn connect(guard: &Guard, host: &str, port: u16) -> Result<TcpStream, String> {
    let stream = guard.connect(host, port).await.map_err(|e| match e {
        ConnectError::Guard(refused) if refused.is_refusal() => {
            super::checks::refused_reason(&refused)
        }
        other => format!("connect {host}:{port}: {other}"),
    })?;
    // Commands are small and a reply is awaited after each; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One CRLF- (or LF-) terminated line without its terminator, at most `MAX_LINE` bytes, so a
/// peer that never ends a line cannot grow memory; the check's timeout bounds the wait.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, String> {
    let mut buf = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n >= MAX_LINE {
            format!("a line over {MAX_LINE} bytes from the server")
        } else {
            "the server closed the connection mid-line".into()
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `text` with every non-empty secret replaced by `***`: servers may echo what they were sent.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s, "***"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates and TLS servers for the probes' tests.

    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A test CA and a way to issue leaves from it.
    pub struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    /// A leaf certificate with its key.
    pub struct Leaf {
        pub cert: CertificateDer<'static>,
        pub key: PrivateKeyDer<'static>,
    }

    impl Ca {
        pub fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            // A name of its own: a verifier looks a root up by name, and two CAs of one name
            // would fail as a bad signature rather than an unknown issuer.
            params.distinguished_name.push(
                DnType::CommonName,
                format!("opsdeck test CA {:016x}", rand::random::<u64>()),
            );
            let key = KeyPair::generate().expect("key");
            let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
            Ca { issuer }
        }

        pub fn pem(&self) -> String {
            self.issuer.pem()
        }

        /// Writes the CA certificate to a temporary PEM file for `ca_file`.
        pub fn pem_file(&self) -> tempfile::NamedTempFile {
            let file = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::write(file.path(), self.pem()).expect("write CA");
            file
        }

        /// A leaf for `names`, valid from a year ago until `days` from now (negative: expired).
        pub fn leaf(&self, names: &[&str], days: i64) -> Leaf {
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .expect("params");
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(365);
            params.not_after = now + time::Duration::days(days);
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &*self.issuer).expect("leaf");
            Leaf {
                cert: cert.der().clone(),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            }
        }
    }

    /// A rustls server configuration presenting `leaf`.
    pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
            .expect("server config");
        Arc::new(config)
    }

    /// A TLS server on 127.0.0.1 that completes handshakes and then holds the connection.
    pub async fn tls_server(leaf: &Leaf) -> std::net::SocketAddr {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(socket).await {
                        let mut buf = [0u8; 64];
                        let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                    }
                });
            }
        });
        addr
    }
}
