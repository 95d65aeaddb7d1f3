//! The `smtp` kind: read the 220 greeting, EHLO, upgrade with STARTTLS (or start in TLS, or
//! stay plain, as `tls_mode` says), log in with AUTH PLAIN or LOGIN when credentials are given,
//! then QUIT. The certificate's expiry comes from the handshake; the greeting is `[BODY]`.
//! Replies are read a bounded line at a time, and neither the password nor its base64 form can
//! reach an error, even when a server echoes what it was sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncWriteExt, BufReader};

use super::{Io, read_line};
use crate::health::checks::Probe;
use crate::health::monitor::{Monitor, SmtpMode, host_port};
use crate::net::guard::Guard;

/// Most lines in one reply (EHLO lists a dozen extensions at most).
const MAX_REPLY_LINES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Tls(String),
    #[error("not an SMTP reply: {0}")]
    Protocol(String),
    #[error("{step}: {code} {text}")]
    Refused {
        step: &'static str,
        code: u16,
        text: String,
    },
    #[error("the server does not offer STARTTLS")]
    NoStartTls,
    #[error("the server offers no AUTH PLAIN or LOGIN")]
    NoAuthMechanism,
    #[error("authentication failed: {code} {text}")]
    AuthFailed { code: u16, text: String },
    #[error("the server sent data after agreeing to STARTTLS")]
    Injected,
}

struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        let joined = self.lines.join(" ");
        joined.chars().take(120).collect()
    }

    fn refused(&self, step: &'static str) -> SmtpError {
        SmtpError::Refused {
            step,
            code: self.code,
            text: self.text(),
        }
    }
}

struct Session {
    io: BufReader<Box<dyn Io>>,
}

impl Session {
    fn new(stream: Box<dyn Io>) -> Self {
        Session {
            io: BufReader::new(stream),
        }
    }

    /// One reply: lines of `NNN-text`, ending with `NNN text`.
    async fn reply(&mut self) -> Result<Reply, SmtpError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = read_line(&mut self.io).await.map_err(SmtpError::Io)?;
            let shown = || format!("{:?}", line.chars().take(40).collect::<String>());
            let this: u16 = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| SmtpError::Protocol(shown()))?;
            if *code.get_or_insert(this) != this {
                return Err(SmtpError::Protocol(shown()));
            }
            let (more, text) = match line.as_bytes().get(3) {
                Some(b'-') => (true, &line[4..]),
                Some(b' ') => (false, &line[4..]),
                None => (false, ""),
                Some(_) => return Err(SmtpError::Protocol(shown())),
            };
            lines.push(text.to_string());
            if !more {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(SmtpError::Protocol(format!(
                    "a reply of over {MAX_REPLY_LINES} lines"
                )));
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, SmtpError> {
        let io = |e: std::io::Error| SmtpError::Io(format!("writing: {e}"));
        let stream = self.io.get_mut();
        stream.write_all(line.as_bytes()).await.map_err(io)?;
        stream.write_all(b"\r\n").await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        self.reply().await
    }

    /// EHLO; the extensions it lists, uppercase.
    async fn ehlo(&mut self, name: &str) -> Result<Vec<String>, SmtpError> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.code != 250 {
            return Err(reply.refused("EHLO"));
        }
        Ok(reply.lines[1..]
            .iter()
            .map(|l| l.to_ascii_uppercase())
            .collect())
    }
}

/// AUTH mechanisms an EHLO reply offers (`AUTH PLAIN LOGIN`, or the old `AUTH=PLAIN`).
fn mechanisms(extensions: &[String]) -> Vec<String> {
    extensions
        .iter()
        .filter_map(|e| e.strip_prefix("AUTH ").or_else(|| e.strip_prefix("AUTH=")))
        .flat_map(|m| m.split_whitespace().map(str::to_string))
        .collect()
}

async fn login(
    session: &mut Session,
    user: &str,
    password: &str,
    offered: &[String],
) -> Result<(), SmtpError> {
    let failed = |r: Reply| SmtpError::AuthFailed {
        code: r.code,
        text: r.text(),
    };
    let done = if offered.iter().any(|m| m == "PLAIN") {
        let token = BASE64.encode(format!("\0{user}\0{password}"));
        session.command(&format!("AUTH PLAIN {token}")).await?
    } else if offered.iter().any(|m| m == "LOGIN") {
        for (step, value) in [
            ("AUTH LOGIN", None),
            ("username", Some(user)),
            ("password", Some(password)),
        ] {
            let line = value.map_or_else(|| step.to_string(), |v| BASE64.encode(v));
            let reply = session.command(&line).await?;
            let last = step == "password";
            if last {
                return if reply.code == 235 {
                    Ok(())
                } else {
                    Err(failed(reply))
                };
            }
            if reply.code != 334 {
                return Err(failed(reply));
            }
        }
        return Ok(());
    } else {
        return Err(SmtpError::NoAuthMechanism);
    };
    if done.code == 235 {
        Ok(())
    } else {
        Err(failed(done))
    }
}

async fn check(monitor: &Monitor, guard: &Guard) -> Result<Probe, SmtpError> {
    let (host, port) = host_port(&monitor.target).map_err(SmtpError::Io)?;
    let socket = super::connect(guard, &host, port)
        .await
        .map_err(SmtpError::Io)?;
    // An address literal is always a valid EHLO argument; a hostname we would have to guess.
    let ehlo_name = match socket.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => format!("[{}]", a.ip()),
        Ok(std::net::SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
        Err(_) => "[127.0.0.1]".to_string(),
    };
    let mut certificate_days = None;
    let tls_error = |f: super::tls::Failed| SmtpError::Tls(f.error.to_string());
    let stream: Box<dyn Io> = if monitor.smtp_mode == SmtpMode::Implicit {
        let secured = super::tls::handshake(socket, &host, &monitor.tls)
            .await
            .map_err(tls_error)?;
        certificate_days = secured.certificate_days;
        Box::new(secured.stream)
    } else {
        Box::new(socket)
    };
    let mut session = Session::new(stream);
    let greeting = session.reply().await?;
    if greeting.code != 220 {
        return Err(greeting.refused("greeting"));
    }
    let mut extensions = session.ehlo(&ehlo_name).await?;
    if monitor.smtp_mode == SmtpMode::StartTls {
        if !extensions.iter().any(|e| e == "STARTTLS") {
            return Err(SmtpError::NoStartTls);
        }
        let reply = session.command("STARTTLS").await?;
        if reply.code != 220 {
            return Err(reply.refused("STARTTLS"));
        }
        // Anything already buffered was sent before TLS and could be an attacker's.
        if !session.io.buffer().is_empty() {
            return Err(SmtpError::Injected);
        }
        let plain = session.io.into_inner();
        let secured = super::tls::handshake(plain, &host, &monitor.tls)
            .await
            .map_err(tls_error)?;
        certificate_days = secured.certificate_days;
        session = Session::new(Box::new(secured.stream));
        extensions = session.ehlo(&ehlo_name).await?;
    }
    if let Some((user, password)) = &monitor.credentials {
        login(
            &mut session,
            user,
            password.expose(),
            &mechanisms(&extensions),
        )
        .await?;
    }
    // QUIT's reply does not change the verdict.
    let _ = session.command("QUIT").await;
    Ok(Probe {
        body: Some(greeting.lines.join("\n")),
        certificate_days,
        ..Probe::default()
    })
}

pub(crate) async fn probe(monitor: &Monitor, guard: &Guard) -> Probe {
    match check(monitor, guard).await {
        Ok(probe) => probe,
        Err(e) => {
            let text = e.to_string();
            let text = match &monitor.credentials {
                Some((user, password)) => {
                    let password = password.expose();
                    let plain = BASE64.encode(format!("\0{user}\0{password}"));
                    super::redact(&text, &[password, &plain, &BASE64.encode(password)])
                }
                None => text,
            };
            Probe::failed(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, Verdict};
    use crate::health::monitor::{MonitorSpec, Secret};
    use crate::health::probes::testing::{Ca, Leaf, server_config};
    use tokio::io::AsyncBufReadExt;

    const USER: &str = "ops@example.test";
    const PASSWORD: &str = "correct horse battery";

    /// How the test mail server behaves.
    #[derive(Clone, Copy, Default)]
    struct Behaviour {
        /// Offer and accept STARTTLS.
        starttls: bool,
        /// Start in TLS (port 465 style).
        implicit: bool,
        /// Offer only AUTH LOGIN.
        login_only: bool,
        /// Never send the greeting.
        silent: bool,
    }

    /// A mail server on 127.0.0.1 speaking enough SMTP: EHLO, STARTTLS, AUTH PLAIN and
    /// LOGIN against one user, QUIT.
    async fn mail_server(leaf: &Leaf, behaviour: Behaviour) -> String {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(leaf));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, acceptor, behaviour).await;
                });
            }
        });
        addr.to_string()
    }

    async fn serve(
        socket: tokio::net::TcpStream,
        acceptor: tokio_rustls::TlsAcceptor,
        b: Behaviour,
    ) -> std::io::Result<()> {
        let mut secured = b.implicit;
        let stream: Box<dyn Io> = if b.implicit {
            Box::new(acceptor.accept(socket).await?)
        } else {
            Box::new(socket)
        };
        let mut io = BufReader::new(stream);
        if b.silent {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            return Ok(());
        }
        io.get_mut()
            .write_all(b"220 mail.test ESMTP ready\r\n")
            .await?;
        let mut line = String::new();
        let mut login_step = 0;
        let mut login_user = String::new();
        loop {
            line.clear();
            if io.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            let decode = |s: &str| {
                String::from_utf8(BASE64.decode(s).unwrap_or_default()).unwrap_or_default()
            };
            let answer: String = if login_step == 1 {
                login_step = 2;
                login_user = decode(&command);
                "334 UGFzc3dvcmQ6\r\n".into()
            } else if login_step == 2 {
                login_step = 0;
                if login_user == USER && decode(&command) == PASSWORD {
                    "235 2.7.0 Authentication successful\r\n".into()
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n".into()
                }
            } else if command.starts_with("EHLO ") {
                let mut a = String::from("250-mail.test greets you\r\n");
                if b.starttls && !secured {
                    a.push_str("250-STARTTLS\r\n");
                }
                a.push_str(if b.login_only {
                    "250-AUTH LOGIN\r\n"
                } else {
                    "250-AUTH PLAIN LOGIN\r\n"
                });
                a.push_str("250 8BITMIME\r\n");
                a
            } else if command == "STARTTLS" && b.starttls && !secured {
                io.get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                let plain = io.into_inner();
                io = BufReader::new(Box::new(acceptor.accept(plain).await?));
                secured = true;
                continue;
            } else if let Some(token) = command.strip_prefix("AUTH PLAIN ") {
                if !b.login_only && decode(token) == format!("\0{USER}\0{PASSWORD}") {
                    "235 2.7.0 Authentication successful\r\n".into()
                } else {
                    // Echoes the token, as a careless server might.
                    format!("535 5.7.8 Authentication credentials invalid ({token})\r\n")
                }
            } else if command == "AUTH LOGIN" {
                login_step = 1;
                "334 VXNlcm5hbWU6\r\n".into()
            } else if command == "QUIT" {
                io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            } else {
                "502 5.5.2 Command not recognized\r\n".into()
            };
            io.get_mut().write_all(answer.as_bytes()).await?;
        }
    }

    fn monitor(target: &str, ca_file: &std::path::Path, extra: MonitorSpec) -> Monitor {
        MonitorSpec {
            name: "mail".into(),
            kind: "smtp".into(),
            target: target.into(),
            timeout: Some("2s".into()),
            server_name: Some("mail.test".into()),
            ca_file: Some(ca_file.display().to_string()),
            ..extra
        }
        .validate()
        .expect("valid monitor")
    }

    fn with_login(password: &str) -> MonitorSpec {
        MonitorSpec {
            username: Some(USER.into()),
            password: Some(Secret(password.into())),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn smtp_checks_greet_upgrade_and_log_in() {
        let ca = Ca::new();
        let ca_file = ca.pem_file();
        let leaf = ca.leaf(&["mail.test"], 60);
        let client = checks::outbound();
        let starttls = Behaviour {
            starttls: true,
            ..Default::default()
        };
        let server = mail_server(&leaf, starttls).await;
        let run = |target: String, extra: MonitorSpec| {
            let m = monitor(&target, ca_file.path(), extra);
            let client = client.clone();
            async move { checks::run(&m, &client).await }
        };

        let r = run(
            server.clone(),
            MonitorSpec {
                conditions: vec![
                    "[CERTIFICATE_EXPIRATION] > 30d".into(),
                    "[BODY] contains ESMTP".into(),
                ],
                ..with_login(PASSWORD)
            },
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));

        let r = run(server.clone(), with_login("wrong password")).await;
        assert_eq!(r.verdict, Verdict::Down);
        let e = r.error.unwrap_or_default();
        assert!(e.starts_with("authentication failed: 535 5.7.8"), "{e}");
        let echoed = BASE64.encode(format!("\0{USER}\0wrong password"));
        assert!(!e.contains("wrong password") && !e.contains(&echoed), "{e}");
        assert!(e.contains("(***)"), "the echoed token is redacted: {e}");

        // AUTH LOGIN, when that is all a server offers.
        let login_only = mail_server(
            &leaf,
            Behaviour {
                login_only: true,
                ..starttls
            },
        )
        .await;
        let r = run(login_only.clone(), with_login(PASSWORD)).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = run(login_only, with_login("nope")).await;
        assert_eq!(
            r.error.as_deref(),
            Some("authentication failed: 535 5.7.8 Authentication credentials invalid")
        );

        // STARTTLS required (the default mode) but not offered.
        let plain = mail_server(&leaf, Behaviour::default()).await;
        let r = run(plain.clone(), MonitorSpec::default()).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("the server does not offer STARTTLS"))
        );
        let r = checks::run(
            &MonitorSpec {
                name: "mail".into(),
                kind: "smtp".into(),
                target: plain,
                timeout: Some("2s".into()),
                tls_mode: Some("none".into()),
                ..Default::default()
            }
            .validate()
            .expect("valid"),
            &client,
        )
        .await;
        assert_eq!(
            (r.verdict, r.error),
            (Verdict::Up, None),
            "plain when asked for"
        );

        // Implicit TLS, with a certificate about to expire and one expired.
        let implicit = Behaviour {
            implicit: true,
            ..Default::default()
        };
        let soon = mail_server(&ca.leaf(&["mail.test"], 3), implicit).await;
        let r = run(
            soon,
            MonitorSpec {
                tls_mode: Some("tls".into()),
                degraded_when: vec!["[CERTIFICATE_EXPIRATION] < 7d".into()],
                ..with_login(PASSWORD)
            },
        )
        .await;
        assert_eq!(r.verdict, Verdict::Degraded, "{r:?}");
        let expired = mail_server(&ca.leaf(&["mail.test"], -1), implicit).await;
        let r = run(
            expired,
            MonitorSpec {
                tls_mode: Some("tls".into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("certificate expired 1 day ago"))
        );

        // No greeting at all: the timeout ends it.
        let silent = mail_server(
            &leaf,
            Behaviour {
                silent: true,
                ..starttls
            },
        )
        .await;
        let r = run(silent, MonitorSpec::default()).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("timed out after 2s"))
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_smtp_fails_clearly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
            }
        });
        let m = MonitorSpec {
            name: "mail".into(),
            kind: "smtp".into(),
            target: addr.to_string(),
            timeout: Some("2s".into()),
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let r = checks::run(&m, &checks::outbound()).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (
                Verdict::Down,
                Some("not an SMTP reply: \"SSH-2.0-OpenSSH_9.2\"")
            )
        );
    }
}
