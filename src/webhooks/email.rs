//! The email notifier's SMTP send (lettre over rustls): resolves the server through the SSRF
//! guard and connects to the checked address (TLS still verifies the configured host name),
//! sends one multipart (text + HTML) message to every recipient, and reports the server's
//! reply code so the attempt log reads like HTTP: 2xx delivered, 4xx and 5xx failed and
//! retried on the schedule.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use super::render::{self, Notice};
use crate::net::guard::Guard;

/// The outcome of one SMTP attempt: the reply code and text, as status and excerpt.
pub struct Sent {
    pub code: u16,
    pub reply: String,
}

fn setting(settings: &Value, key: &str) -> String {
    settings
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Sends `notice` through the server in `settings`; `Err` carries (reply code if the server
/// answered one, why).
pub async fn send(
    guard: &Guard,
    settings: &Value,
    password: &str,
    notice: &Notice,
    timeout: Duration,
) -> Result<Sent, (Option<u16>, String)> {
    let host = setting(settings, "host");
    let port = settings
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(587);
    let addrs = guard
        .resolve_checked(&host, port)
        .await
        .map_err(|e| (None, format!("refused: {e}")))?;
    let addr = addrs
        .first()
        .ok_or_else(|| (None, format!("{host} resolves to no address")))?;
    let (subject, plain, html) = render::email(notice);
    let from: Mailbox = setting(settings, "from")
        .parse()
        .map_err(|e| (None, format!("from: {e}")))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for to in settings
        .get("to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let mbox: Mailbox = to.parse().map_err(|e| (None, format!("to: {e}")))?;
        builder = builder.to(mbox);
    }
    let message = builder
        .message_id(Some(format!("<{}@opsdeck>", notice.message_id)))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(plain),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| (None, format!("building the message: {e}")))?;

    let tls_mode = setting(settings, "tls");
    let tls = if tls_mode == "none" {
        Tls::None
    } else {
        let mut params = TlsParameters::builder(host.clone());
        let ca = setting(settings, "ca_file");
        if !ca.is_empty() {
            let pem = tokio::fs::read(&ca)
                .await
                .map_err(|e| (None, format!("ca_file {ca}: {e}")))?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| (None, format!("ca_file {ca}: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| (None, format!("TLS set-up: {e}")))?;
        if tls_mode == "tls" {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        }
    };
    // The checked address, not the name: resolving again could give another answer.
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
    let username = setting(settings, "username");
    if !username.is_empty() {
        transport = transport.credentials(Credentials::new(username, password.to_string()));
    }
    let transport = transport.build();
    let sent = tokio::time::timeout(timeout * 2, transport.send(message))
        .await
        .map_err(|_| (None, "timed out".to_string()))?;
    match sent {
        Ok(response) => Ok(Sent {
            code: code_of(&response.code().to_string()).unwrap_or(250),
            reply: response.message().collect::<Vec<_>>().join(" "),
        }),
        Err(e) => {
            let code = e.status().and_then(|c| code_of(&c.to_string()));
            Err((code, format!("SMTP: {e}")))
        }
    }
}

fn code_of(text: &str) -> Option<u16> {
    text.trim().parse().ok()
}
