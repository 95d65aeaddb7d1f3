//! The `redis` kind: `redis://[user:password@]host[:port][/db]` (or `rediss://` for TLS),
//! spoken in RESP directly — AUTH when the URL has a password, SELECT for a database, PING
//! expecting PONG, and INFO (only when a condition reads `[BODY]`) as a JSON object, so
//! `[BODY].used_memory` and `[BODY].connected_clients` can be compared. Every reply is read
//! with a size bound; a garbage or silent server fails the check, and the password never
//! appears in an error, even if the server echoes it.

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Io, read_line};
use crate::health::checks::Probe;
use crate::health::conditions::Subject;
use crate::health::monitor::Monitor;
use crate::net::guard::Guard;

/// Largest bulk reply accepted; INFO is a few KiB.
const MAX_BULK: usize = 1 << 20;

/// A parsed redis target.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<u32>,
}

impl Target {
    /// Parses the URL; errors never repeat it, as it may hold a password.
    pub fn parse(target: &str) -> Result<Target, String> {
        let need = "redis kind needs a redis:// or rediss:// URL";
        let url = reqwest::Url::parse(target).map_err(|_| need.to_string())?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(need.into()),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the redis URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the redis URL takes no query or fragment".into());
        }
        let db = match url.path().trim_start_matches('/') {
            "" => None,
            n => Some(
                n.parse::<u32>()
                    .map_err(|_| "the redis URL's path must be a database number")?,
            ),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the redis URL's credentials are not UTF-8".to_string())
        };
        let username = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url.password().map(decode).transpose()?;
        if username.is_some() && password.is_none() {
            return Err("the redis URL has a user but no password".into());
        }
        Ok(Target {
            tls,
            host,
            port: url.port().unwrap_or(6379),
            username,
            password,
            db,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0}")]
    Io(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{command}: {message}")]
    Refused {
        command: &'static str,
        message: String,
    },
    #[error("{command}: unexpected reply {reply}")]
    Unexpected {
        command: &'static str,
        reply: String,
    },
    #[error("not a redis reply: {0}")]
    Protocol(String),
}

/// One RESP reply, as far as these commands need.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

impl Reply {
    fn excerpt(&self) -> String {
        let text = match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(e) => format!("-{e}"),
            Reply::Integer(n) => format!(":{n}"),
            Reply::Bulk(None) => "(nil)".into(),
            Reply::Bulk(Some(b)) => format!("${} bytes", b.len()),
        };
        text.chars().take(60).collect()
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, RedisError> {
    let line = read_line(reader).await.map_err(RedisError::Io)?;
    let mut chars = line.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    let shown = || {
        let cut: String = line.chars().take(40).collect();
        format!("{cut:?}")
    };
    match kind {
        Some('+') => Ok(Reply::Simple(rest.to_string())),
        Some('-') => Ok(Reply::Error(rest.to_string())),
        Some(':') => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| RedisError::Protocol(shown())),
        Some('$') => {
            let len: i64 = rest.parse().map_err(|_| RedisError::Protocol(shown()))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_BULK)
                .ok_or_else(|| RedisError::Protocol(format!("a reply over {MAX_BULK} bytes")))?;
            let mut data = vec![0u8; len + 2];
            reader
                .read_exact(&mut data)
                .await
                .map_err(|e| RedisError::Io(format!("reading: {e}")))?;
            if !data.ends_with(b"\r\n") {
                return Err(RedisError::Protocol("a bulk reply without its CRLF".into()));
            }
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        _ => Err(RedisError::Protocol(shown())),
    }
}

/// INFO's `key:value` lines as a JSON object; numbers as numbers.
fn info_json(text: &str) -> Value {
    let mut fields = Map::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            let value = match v.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => match v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => Value::from(v),
                },
            };
            fields.insert(k.to_string(), value);
        }
    }
    Value::Object(fields)
}

struct Session {
    io: BufReader<Box<dyn Io>>,
}

impl Session {
    async fn call(&mut self, args: &[&str]) -> Result<Reply, RedisError> {
        let io = |e: std::io::Error| RedisError::Io(format!("writing: {e}"));
        self.io
            .get_mut()
            .write_all(&encode(args))
            .await
            .map_err(io)?;
        self.io.get_mut().flush().await.map_err(io)?;
        read_reply(&mut self.io).await
    }
}

async fn check(monitor: &Monitor, target: &Target, guard: &Guard) -> Result<Probe, RedisError> {
    let socket = super::connect(guard, &target.host, target.port)
        .await
        .map_err(RedisError::Io)?;
    let mut certificate_days = None;
    let stream: Box<dyn Io> = if target.tls {
        let secured = super::tls::handshake(socket, &target.host, &monitor.tls)
            .await
            .map_err(|f| RedisError::Io(f.error.to_string()))?;
        certificate_days = secured.certificate_days;
        Box::new(secured.stream)
    } else {
        Box::new(socket)
    };
    let mut session = Session {
        io: BufReader::new(stream),
    };
    if let Some(password) = &target.password {
        let mut args = vec!["AUTH"];
        args.extend(target.username.as_deref());
        args.push(password);
        match session.call(&args).await? {
            Reply::Simple(ok) if ok == "OK" => {}
            Reply::Error(e) => return Err(RedisError::Auth(e)),
            other => {
                return Err(RedisError::Unexpected {
                    command: "AUTH",
                    reply: other.excerpt(),
                });
            }
        }
    }
    if let Some(db) = target.db {
        match session.call(&["SELECT", &db.to_string()]).await? {
            Reply::Simple(ok) if ok == "OK" => {}
            Reply::Error(message) => {
                return Err(RedisError::Refused {
                    command: "SELECT",
                    message,
                });
            }
            other => {
                return Err(RedisError::Unexpected {
                    command: "SELECT",
                    reply: other.excerpt(),
                });
            }
        }
    }
    match session.call(&["PING"]).await? {
        Reply::Simple(pong) if pong == "PONG" => {}
        Reply::Error(message) => {
            return Err(RedisError::Refused {
                command: "PING",
                message,
            });
        }
        other => {
            return Err(RedisError::Unexpected {
                command: "PING",
                reply: other.excerpt(),
            });
        }
    }
    let wants_body = monitor
        .conditions
        .iter()
        .chain(&monitor.degraded_when)
        .any(|c| matches!(c.subject(), Subject::Body | Subject::Json(_)));
    let body = if wants_body {
        match session.call(&["INFO"]).await? {
            Reply::Bulk(Some(text)) => Some(info_json(&String::from_utf8_lossy(&text)).to_string()),
            Reply::Error(message) => {
                return Err(RedisError::Refused {
                    command: "INFO",
                    message,
                });
            }
            other => {
                return Err(RedisError::Unexpected {
                    command: "INFO",
                    reply: other.excerpt(),
                });
            }
        }
    } else {
        None
    };
    // Not waiting for QUIT's reply: the verdict is in.
    let _ = session.io.get_mut().write_all(&encode(&["QUIT"])).await;
    Ok(Probe {
        body,
        certificate_days,
        ..Probe::default()
    })
}

pub(crate) async fn probe(monitor: &Monitor, guard: &Guard) -> Probe {
    let target = match Target::parse(&monitor.target) {
        Ok(t) => t,
        Err(e) => return Probe::failed(e),
    };
    match check(monitor, &target, guard).await {
        Ok(probe) => probe,
        Err(e) => {
            let secrets = [target.password.as_deref().unwrap_or("")];
            Probe::failed(super::redact(&e.to_string(), &secrets))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, Verdict};
    use crate::health::monitor::MonitorSpec;
    use std::time::Duration;

    fn monitor(target: &str, conditions: &[&str]) -> Monitor {
        MonitorSpec {
            name: "cache".into(),
            kind: "redis".into(),
            target: target.into(),
            timeout: Some("1s".into()),
            conditions: conditions.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
        .validate()
        .expect("valid monitor")
    }

    #[test]
    fn targets_parse_without_echoing_the_password() {
        assert_eq!(
            Target::parse("redis://app:p%40ss@cache.internal:6380/2"),
            Ok(Target {
                tls: false,
                host: "cache.internal".into(),
                port: 6380,
                username: Some("app".into()),
                password: Some("p@ss".into()),
                db: Some(2),
            })
        );
        let t = Target::parse("rediss://:secret@[::1]").expect("valid");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.username),
            (true, "::1", 6379, None)
        );
        for (bad, why) in [
            ("http://a:secret@x", "redis:// or rediss://"),
            ("redis://a:secret@x/zero", "database number"),
            ("redis://a:secret@x?db=1", "no query"),
            ("redis://user@x", "no password"),
        ] {
            let e = Target::parse(bad).expect_err(bad);
            assert!(e.contains(why) && !e.contains("secret"), "{bad}: {e}");
        }
    }

    /// A local server answering every connection with `reply` (or nothing, when empty).
    async fn fake(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    if !reply.is_empty() {
                        let _ = s.write_all(reply).await;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        format!("redis://{addr}")
    }

    #[tokio::test]
    async fn garbage_silence_and_closed_ports_fail_with_a_reason() {
        let client = checks::outbound();
        for (reply, why) in [
            (
                &b"HTTP/1.1 400 Bad Request\r\n"[..],
                "not a redis reply: \"HTTP/1.1 400",
            ),
            (
                b"$99999999\r\n",
                "not a redis reply: a reply over 1048576 bytes",
            ),
            // Half a line, then nothing: the timeout ends the wait.
            (b"+PONG", "timed out after 1s"),
            (b"", "timed out after 1s"),
            (
                b"-NOAUTH Authentication required.\r\n",
                "PING: NOAUTH Authentication required.",
            ),
            (b":1\r\n", "PING: unexpected reply :1"),
        ] {
            let target = fake(reply).await;
            let r = checks::run(&monitor(&target, &[]), &client).await;
            let e = r.error.unwrap_or_default();
            assert_eq!(r.verdict, Verdict::Down, "{reply:?}");
            assert!(e.starts_with(why), "{reply:?}: {e}");
        }
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let r = checks::run(
            &monitor(&format!("redis://:pw-secret@{closed}"), &[]),
            &client,
        )
        .await;
        let e = r.error.unwrap_or_default();
        assert!(e.contains("refused") && !e.contains("pw-secret"), "{e}");
    }

    #[tokio::test]
    async fn an_echoed_password_is_redacted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"-ERR wrong password pw-secret\r\n").await;
            }
        });
        let r = checks::run(
            &monitor(&format!("redis://:pw-secret@{addr}"), &[]),
            &checks::outbound(),
        )
        .await;
        assert_eq!(
            r.error.as_deref(),
            Some("authentication failed: ERR wrong password ***")
        );
    }

    /// Reads one RESP command and answers AUTH (password `s3cret`) and PING; anything else,
    /// or a closed connection, ends the session.
    async fn answer_one<S: Io>(io: &mut BufReader<S>) -> Result<(), String> {
        let header = read_line(io).await?;
        let n: usize = header
            .trim_start_matches('*')
            .parse()
            .map_err(|_| "not an array")?;
        let mut args = Vec::new();
        for _ in 0..n {
            read_line(io).await?;
            args.push(read_line(io).await?);
        }
        let answer: &[u8] = match args.first().map(String::as_str) {
            Some("AUTH") if args.last().map(String::as_str) == Some("s3cret") => b"+OK\r\n",
            Some("AUTH") => b"-WRONGPASS invalid username-password pair\r\n",
            Some("PING") => b"+PONG\r\n",
            _ => return Err("done".into()),
        };
        io.get_mut()
            .write_all(answer)
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn rediss_speaks_resp_over_verified_tls() {
        use crate::health::probes::testing::{Ca, server_config};
        let ca = Ca::new();
        let ca_file = ca.pem_file();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(server_config(&ca.leaf(&["cache.test"], 20)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(socket).await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut io = BufReader::new(tls);
                    while answer_one(&mut io).await.is_ok() {}
                });
            }
        });
        let m = |password: &str, conditions: &[&str]| {
            MonitorSpec {
                name: "cache".into(),
                kind: "redis".into(),
                target: format!("rediss://:{password}@127.0.0.1:{}", addr.port()),
                timeout: Some("2s".into()),
                server_name: Some("cache.test".into()),
                ca_file: Some(ca_file.path().display().to_string()),
                conditions: conditions.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            }
            .validate()
            .expect("valid monitor")
        };
        let client = checks::outbound();
        let r = checks::run(&m("s3cret", &["[CERTIFICATE_EXPIRATION] > 19"]), &client).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = checks::run(&m("wrong-secret", &[]), &client).await;
        assert_eq!(
            r.error.as_deref(),
            Some("authentication failed: WRONGPASS invalid username-password pair")
        );
    }

    #[tokio::test]
    async fn redis_checks_against_a_real_server() {
        let Ok(url) = std::env::var("OPSDECK_TEST_REDIS_URL") else {
            eprintln!(
                "\n*** SKIPPED the redis monitor against a real server: OPSDECK_TEST_REDIS_URL \
                 (e.g. redis://127.0.0.1:6379) is not set.\n"
            );
            return;
        };
        let client = checks::outbound();
        let r = checks::run(&monitor(&url, &[]), &client).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = checks::run(
            &monitor(
                &format!("{}/1", url.trim_end_matches('/')),
                &[
                    "[BODY].connected_clients >= 1",
                    "[BODY].used_memory > 0",
                    "[BODY].redis_version contains .",
                ],
            ),
            &client,
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = checks::run(&monitor(&url, &["[BODY].used_memory < 10"]), &client).await;
        // Everyone sees which condition failed; only the detail, for admins, has the value read.
        assert_eq!(
            r.error.as_deref(),
            Some("condition failed: [BODY].used_memory < 10"),
            "{r:?}"
        );
        assert!(
            r.detail
                .as_deref()
                .is_some_and(|e| e.starts_with("[BODY].used_memory < 10: was ")),
            "{r:?}"
        );
        // A password on a server without one (or the wrong one): refused, not echoed.
        let mut wrong = reqwest::Url::parse(&url).expect("URL");
        wrong.set_password(Some("wrong-secret")).expect("password");
        let r = checks::run(&monitor(wrong.as_str(), &[]), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        let e = r.error.unwrap_or_default();
        assert!(
            e.starts_with("authentication failed: ") && !e.contains("wrong-secret"),
            "{e}"
        );
    }
}
