//! A small SMTP server on loopback (RFC 5321 subset): EHLO/HELO, STARTTLS (when given a
//! rustls server configuration), AUTH PLAIN and LOGIN (RFC 4954), MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT. Stores every accepted message with its envelope, and can
//! answer the next MAIL FROM with a transient (451) or permanent (550) refusal on demand.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message as received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body), dot-unstuffed, CRLF line ends.
    pub data: String,
    /// The user that authenticated, if any.
    pub user: Option<String>,
    /// Whether the session had upgraded to TLS.
    pub tls: bool,
}

#[derive(Default)]
struct Book {
    mails: Vec<Mail>,
    /// (reply code, times): how the next MAIL FROMs are refused.
    refuse: Option<(u16, usize)>,
    sessions: usize,
}

/// A running server. Dropping it stops accepting.
pub struct SmtpSim {
    addr: SocketAddr,
    book: Arc<Mutex<Book>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup {
    user: String,
    password: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl SmtpSim {
    /// Serves on `127.0.0.1:0`; `user`/`password` are the only accepted credentials (AUTH is
    /// then required before MAIL); `tls` enables STARTTLS.
    pub async fn start(
        user: &str,
        password: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<SmtpSim> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let book: Arc<Mutex<Book>> = Arc::default();
        let setup = Arc::new(Setup {
            user: user.to_string(),
            password: password.to_string(),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        });
        let shared = book.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let book = shared.clone();
                let setup = setup.clone();
                tokio::spawn(async move {
                    let _ = session(socket, book, setup).await;
                });
            }
        });
        Ok(SmtpSim { addr, book, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.lock().mails.clone()
    }

    pub fn sessions(&self) -> usize {
        self.lock().sessions
    }

    /// The next `times` MAIL FROM commands get `code` (451 transient, 550 permanent).
    pub fn refuse(&self, code: u16, times: usize) {
        self.lock().refuse = Some((code, times));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn reply(stream: &mut BufReader<Box<dyn Stream>>, text: &str) -> std::io::Result<()> {
    stream.get_mut().write_all(text.as_bytes()).await?;
    stream.get_mut().write_all(b"\r\n").await?;
    stream.get_mut().flush().await
}

async fn line(stream: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<Option<String>> {
    let mut buf = String::new();
    if stream.read_line(&mut buf).await? == 0 {
        return Ok(None);
    }
    Ok(Some(buf.trim_end_matches(['\r', '\n']).to_string()))
}

fn decode(b64: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn angle(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg.get(start..end).unwrap_or_default().to_string()
}

async fn session(
    socket: tokio::net::TcpStream,
    book: Arc<Mutex<Book>>,
    setup: Arc<Setup>,
) -> std::io::Result<()> {
    book.lock().unwrap_or_else(|e| e.into_inner()).sessions += 1;
    let mut s = BufReader::new(Box::new(socket) as Box<dyn Stream>);
    let mut tls = false;
    let mut user: Option<String> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    reply(&mut s, "220 sim.smtp.local ESMTP opsdeck simulator").await?;
    while let Some(cmd) = line(&mut s).await? {
        let (verb, arg) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let mut lines = vec!["250-sim.smtp.local".to_string()];
                if setup.tls.is_some() && !tls {
                    lines.push("250-STARTTLS".into());
                }
                lines.push("250-AUTH PLAIN LOGIN".into());
                lines.push("250-8BITMIME".into());
                lines.push("250 SIZE 10485760".into());
                reply(&mut s, &lines.join("\r\n")).await?;
            }
            "HELO" => reply(&mut s, "250 sim.smtp.local").await?,
            "STARTTLS" => {
                let Some(acceptor) = setup.tls.clone().filter(|_| !tls) else {
                    reply(&mut s, "502 5.5.1 STARTTLS not available").await?;
                    continue;
                };
                reply(&mut s, "220 2.0.0 Ready to start TLS").await?;
                // The client waits for the 220 before its handshake, so nothing is buffered.
                let plain = s.into_inner();
                let secured = acceptor.accept(plain).await?;
                s = BufReader::new(Box::new(secured) as Box<dyn Stream>);
                tls = true;
                (user, from, to) = (None, None, Vec::new());
            }
            "AUTH" => {
                let (mech, initial) = arg.split_once(' ').unwrap_or((arg, ""));
                let (u, p) = match mech.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let creds = if initial.is_empty() {
                            reply(&mut s, "334 ").await?;
                            decode(&line(&mut s).await?.unwrap_or_default())
                        } else {
                            decode(initial)
                        };
                        let mut parts = creds.split('\0').skip(1);
                        (
                            parts.next().unwrap_or_default().to_string(),
                            parts.next().unwrap_or_default().to_string(),
                        )
                    }
                    "LOGIN" => {
                        let u = if initial.is_empty() {
                            reply(&mut s, "334 VXNlcm5hbWU6").await?;
                            decode(&line(&mut s).await?.unwrap_or_default())
                        } else {
                            decode(initial)
                        };
                        reply(&mut s, "334 UGFzc3dvcmQ6").await?;
                        let p = decode(&line(&mut s).await?.unwrap_or_default());
                        (u, p)
                    }
                    _ => {
                        reply(&mut s, "504 5.5.4 Unrecognized authentication type").await?;
                        continue;
                    }
                };
                if u == setup.user && p == setup.password {
                    user = Some(u);
                    reply(&mut s, "235 2.7.0 Authentication successful").await?;
                } else {
                    reply(&mut s, "535 5.7.8 Authentication credentials invalid").await?;
                }
            }
            "MAIL" => {
                if !setup.user.is_empty() && user.is_none() {
                    reply(&mut s, "530 5.7.0 Authentication required").await?;
                    continue;
                }
                let refusal = {
                    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
                    match b.refuse.as_mut() {
                        Some((code, left)) if *left > 0 => {
                            *left -= 1;
                            Some(*code)
                        }
                        _ => None,
                    }
                };
                match refusal {
                    Some(451) => {
                        reply(&mut s, "451 4.3.0 Temporary local problem, try later").await?
                    }
                    Some(code) => {
                        reply(&mut s, &format!("{code} 5.7.1 Sender rejected by policy")).await?
                    }
                    None => {
                        from = Some(angle(arg));
                        to.clear();
                        reply(&mut s, "250 2.1.0 Ok").await?;
                    }
                }
            }
            "RCPT" => {
                if from.is_none() {
                    reply(&mut s, "503 5.5.1 Need MAIL command").await?;
                    continue;
                }
                to.push(angle(arg));
                reply(&mut s, "250 2.1.5 Ok").await?;
            }
            "DATA" => {
                if from.is_none() || to.is_empty() {
                    reply(&mut s, "503 5.5.1 Need RCPT command").await?;
                    continue;
                }
                reply(&mut s, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = String::new();
                loop {
                    let Some(l) = line(&mut s).await? else {
                        return Ok(());
                    };
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    data.push_str("\r\n");
                }
                book.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mails
                    .push(Mail {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                        user: user.clone(),
                        tls,
                    });
                reply(&mut s, "250 2.0.0 Ok: queued as SIM0001").await?;
            }
            "RSET" => {
                (from, to) = (None, Vec::new());
                reply(&mut s, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(&mut s, "250 2.0.0 Ok").await?,
            "QUIT" => {
                reply(&mut s, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(&mut s, "502 5.5.2 Error: command not recognized").await?,
        }
    }
    Ok(())
}
