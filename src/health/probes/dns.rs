//! The `dns` kind: one query (RFC 1035) for a name and record type, sent over UDP to a given
//! nameserver or the system's first, retried over TCP when the answer is truncated. The
//! records of the asked type become `[BODY]`, one per line, and the response code
//! `[DNS_RCODE]`. Hand-written rather than a resolver crate: one question, no recursion or
//! caching of our own, and a reply is checked (id, question, bounds, compression loops) before
//! anything in it is believed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::health::checks::Probe;
use crate::health::monitor::{Monitor, nameserver_addr};
use crate::net::guard::{Guard, GuardError};

/// A record type a monitor can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordType {
    #[default]
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    Txt,
}

const TYPES: [(RecordType, &str, u16); 9] = [
    (RecordType::A, "A", 1),
    (RecordType::Aaaa, "AAAA", 28),
    (RecordType::Cname, "CNAME", 5),
    (RecordType::Mx, "MX", 15),
    (RecordType::Ns, "NS", 2),
    (RecordType::Ptr, "PTR", 12),
    (RecordType::Soa, "SOA", 6),
    (RecordType::Srv, "SRV", 33),
    (RecordType::Txt, "TXT", 16),
];

impl RecordType {
    pub const NAMES: &'static str = "A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT";

    pub fn parse(text: &str) -> Option<Self> {
        TYPES
            .iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(t, _, _)| *t)
    }

    pub fn as_str(self) -> &'static str {
        TYPES
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or("A", |(_, n, _)| n)
    }

    fn code(self) -> u16 {
        TYPES
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or(1, |(_, _, c)| *c)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("malformed DNS reply: {0}")]
    Malformed(&'static str),
    #[error("the DNS reply's id does not match the query")]
    IdMismatch,
    #[error("the DNS reply answers another question")]
    OtherQuestion,
    #[error("nameserver {server}: {error}")]
    Io {
        server: String,
        error: std::io::Error,
    },
    #[error("no usable nameserver in /etc/resolv.conf; set nameserver")]
    NoNameserver,
    #[error("nameserver {0}: the name does not resolve")]
    Unresolved(String),
    #[error("nameserver {0}")]
    Refused(String),
}

/// A UDP query is sent again after this long without an answer: a lost datagram should cost
/// a second, not the check.
const RESEND_AFTER: Duration = Duration::from_secs(1);

const CLASS_IN: u16 = 1;

/// `example.com` or `example.com.`: labels of 1 to 63 letters, digits, `-` or `_`.
pub fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a domain name to query"))
    }
}

/// What a reply said: its response code, whether it was cut short, and the records of the
/// asked type, rendered as text.
#[derive(Debug, PartialEq)]
struct Reply {
    rcode: u8,
    truncated: bool,
    records: Vec<String>,
}

fn rcode_name(code: u8) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

fn encode_query(id: u16, name: &str, record_type: RecordType) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // Standard query, recursion desired; one question.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        // check_name bounds labels to 63 bytes.
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&record_type.code().to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// Reads big-endian integers off a message, refusing to run past its end.
struct Cursor<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.msg.len())
            .ok_or(DnsError::Malformed("cut short"))?;
        let bytes = &self.msg[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name, leaving the cursor after it.
    fn name(&mut self) -> Result<String, DnsError> {
        let (name, next) = read_name(self.msg, self.at)?;
        self.at = next;
        Ok(name)
    }
}

/// The name at `at` in `msg`, following compression pointers, and where the name (its first
/// part, before any pointer) ends. Pointers may only point backwards, which rules out loops.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut length = 0usize;
    let mut end = None;
    let mut limit = at;
    loop {
        let len = *msg.get(at).ok_or(DnsError::Malformed("name cut short"))?;
        match len {
            0 => {
                end.get_or_insert(at + 1);
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg
                    .get(at + 1)
                    .ok_or(DnsError::Malformed("name cut short"))?;
                let target = usize::from(l & 0x3f) << 8 | usize::from(low);
                if target >= limit {
                    return Err(DnsError::Malformed("name pointer loops"));
                }
                end.get_or_insert(at + 2);
                limit = target;
                at = target;
            }
            l if l & 0xc0 == 0 => {
                let l = usize::from(l);
                let label = msg
                    .get(at + 1..at + 1 + l)
                    .ok_or(DnsError::Malformed("name cut short"))?;
                length += l + 1;
                if length > 255 {
                    return Err(DnsError::Malformed("name over 255 bytes"));
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
            _ => return Err(DnsError::Malformed("unknown label type")),
        }
    }
    let end = end.ok_or(DnsError::Malformed("name cut short"))?;
    Ok((labels.join("."), end))
}

fn parse_reply(
    msg: &[u8],
    id: u16,
    name: &str,
    record_type: RecordType,
) -> Result<Reply, DnsError> {
    if msg.len() < 12 {
        return Err(DnsError::Malformed("shorter than a header"));
    }
    let mut c = Cursor { msg, at: 0 };
    if c.u16()? != id {
        return Err(DnsError::IdMismatch);
    }
    let flags = c.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("a query, not a response"));
    }
    let (questions, answers) = (c.u16()?, c.u16()?);
    c.take(4)?;
    let rcode = (flags & 0x000f) as u8;
    let truncated = flags & 0x0200 != 0;
    for i in 0..questions {
        let asked = c.name()?;
        let (qtype, _class) = (c.u16()?, c.u16()?);
        if i == 0
            && (!asked.eq_ignore_ascii_case(name.trim_end_matches('.'))
                || qtype != record_type.code())
        {
            return Err(DnsError::OtherQuestion);
        }
    }
    // A server may omit the question in an error reply; any other reply must echo it.
    if questions == 0 && rcode == 0 {
        return Err(DnsError::OtherQuestion);
    }
    let mut records = Vec::new();
    if !truncated {
        for _ in 0..answers {
            c.name()?;
            let (rtype, class) = (c.u16()?, c.u16()?);
            c.u32()?;
            let len = usize::from(c.u16()?);
            let start = c.at;
            let data = c.take(len)?;
            if rtype == record_type.code() && class == CLASS_IN {
                records.push(render(msg, start, data, record_type)?);
            }
        }
    }
    Ok(Reply {
        rcode,
        truncated,
        records,
    })
}

/// One record's data as text, names without their final dot.
fn render(
    msg: &[u8],
    start: usize,
    data: &[u8],
    record_type: RecordType,
) -> Result<String, DnsError> {
    let bad = || DnsError::Malformed("record data does not fit its type");
    let mut c = Cursor { msg, at: start };
    let text = match record_type {
        RecordType::A => {
            let b: [u8; 4] = data.try_into().map_err(|_| bad())?;
            IpAddr::from(b).to_string()
        }
        RecordType::Aaaa => {
            let b: [u8; 16] = data.try_into().map_err(|_| bad())?;
            IpAddr::from(b).to_string()
        }
        RecordType::Cname | RecordType::Ns | RecordType::Ptr => c.name()?,
        RecordType::Mx => {
            let preference = c.u16()?;
            format!("{preference} {}", c.name()?)
        }
        RecordType::Srv => {
            let (priority, weight, port) = (c.u16()?, c.u16()?, c.u16()?);
            format!("{priority} {weight} {port} {}", c.name()?)
        }
        RecordType::Soa => {
            let (mname, rname) = (c.name()?, c.name()?);
            let numbers = (0..5)
                .map(|_| c.u32().map(|n| n.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            format!("{mname} {rname} {}", numbers.join(" "))
        }
        RecordType::Txt => {
            // One or more length-prefixed strings, which together are the value.
            let mut out = Vec::new();
            let mut rest = data;
            while let Some((&len, tail)) = rest.split_first() {
                let part = tail.get(..usize::from(len)).ok_or_else(bad)?;
                out.extend_from_slice(part);
                rest = &tail[usize::from(len)..];
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    if c.at > start + data.len() {
        return Err(DnsError::Malformed("record data overruns its length"));
    }
    Ok(text)
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from anyone else are dropped by the kernel, and an ICMP refusal
    // surfaces as an error instead of silence.
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            received = socket.recv(&mut buf) => {
                buf.truncate(received?);
                return Ok(buf);
            }
            _ = tokio::time::sleep(RESEND_AFTER) => {
                socket.send(query).await?;
            }
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// The first nameserver of /etc/resolv.conf that is a plain IP address.
async fn system_nameserver() -> Result<(String, u16), DnsError> {
    let conf = tokio::fs::read_to_string("/etc/resolv.conf")
        .await
        .map_err(|_| DnsError::NoNameserver)?;
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| (ip.to_string(), 53))
        .next()
        .ok_or(DnsError::NoNameserver)
}

async fn resolve(monitor: &Monitor, guard: &Guard) -> Result<Reply, DnsError> {
    let (host, port, chosen) = match &monitor.nameserver {
        Some(ns) => {
            let (host, port) = nameserver_addr(ns).map_err(|_| DnsError::NoNameserver)?;
            (host, port, true)
        }
        None => {
            let (host, port) = system_nameserver().await?;
            (host, port, false)
        }
    };
    let shown = format!("{host}:{port}");
    let io = |error| DnsError::Io {
        server: shown.clone(),
        error,
    };
    // A nameserver the monitor names goes through the destination guard like any target;
    // the system's own (resolv.conf) is the operator's and is trusted as it is, since some
    // clouds serve DNS from a link-local address.
    let server = if chosen {
        let refused = |e: GuardError| match e {
            GuardError::Resolve { source, .. } => io(source),
            GuardError::NoAddress { .. } => DnsError::Unresolved(shown.clone()),
            other => DnsError::Refused(crate::health::checks::refused_reason(&other)),
        };
        guard.check_host(&host).map_err(refused)?;
        guard
            .resolve_checked(&host, port)
            .await
            .map_err(refused)?
            .into_iter()
            .next()
            .ok_or_else(|| DnsError::Unresolved(shown.clone()))?
    } else {
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(io)?
            .next()
            .ok_or_else(|| DnsError::Unresolved(shown.clone()))?
    };
    let id: u16 = rand::random();
    let query = encode_query(id, &monitor.target, monitor.record_type);
    let reply = udp_exchange(server, &query).await.map_err(io)?;
    let parsed = parse_reply(&reply, id, &monitor.target, monitor.record_type)?;
    if !parsed.truncated {
        return Ok(parsed);
    }
    let reply = tcp_exchange(server, &query).await.map_err(io)?;
    parse_reply(&reply, id, &monitor.target, monitor.record_type)
}

pub(crate) async fn probe(monitor: &Monitor, guard: &Guard) -> Probe {
    match resolve(monitor, guard).await {
        Ok(reply) => Probe {
            body: Some(reply.records.join("\n")),
            dns_rcode: Some(rcode_name(reply.rcode)),
            ..Probe::default()
        },
        Err(e) => Probe::failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::{self, Verdict};
    use crate::health::monitor::MonitorSpec;

    /// Builds a reply to `query` (whose question ends at `q_end`) with `flags` and answers
    /// given as (type, rdata); each answer's owner is a pointer to the question's name.
    fn reply(query: &[u8], q_end: usize, flags: u16, answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut r = query[..2].to_vec();
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
        r.extend_from_slice(&query[12..q_end]);
        for (rtype, data) in answers {
            r.extend_from_slice(&[0xc0, 12]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(data);
        }
        r
    }

    /// What the test nameserver answers for a query, by name; `tcp` when asked over TCP.
    fn answer(query: &[u8], tcp: bool) -> Vec<u8> {
        let (name, q_end) = read_name(query, 12).expect("a question");
        let q_end = q_end + 4;
        let ok = 0x8180; // response, recursion desired and available, NOERROR
        match name.as_str() {
            "a.test" => reply(
                query,
                q_end,
                ok,
                &[(1, vec![1, 2, 3, 4]), (1, vec![5, 6, 7, 8])],
            ),
            // A CNAME to a.test, then its address: only the address is an A record.
            "www.a.test" => reply(
                query,
                q_end,
                ok,
                &[(5, vec![0xc0, 16]), (1, vec![1, 2, 3, 4])],
            ),
            // "mail.test" sits at 12; "test" at 17: "mx" plus a pointer to it.
            "mail.test" => reply(
                query,
                q_end,
                ok,
                &[(15, vec![0, 10, 2, b'm', b'x', 0xc0, 17])],
            ),
            "txt.test" => reply(
                query,
                q_end,
                ok,
                &[(16, [&[6u8][..], b"v=spf1", &[5], b" -all"].concat())],
            ),
            "missing.test" => reply(query, q_end, 0x8183, &[]),
            "garbage.test" => b"\xde\xad".to_vec(),
            "stranger.test" => {
                let mut r = reply(query, q_end, ok, &[]);
                r[0] ^= 0xff;
                r
            }
            "loop.test" => {
                // An answer whose owner name points at itself.
                let mut r = reply(query, q_end, ok, &[(1, vec![1, 2, 3, 4])]);
                r[q_end] = 0xc0;
                r[q_end + 1] = q_end as u8;
                r
            }
            "big.test" if !tcp => reply(query, q_end, ok | 0x0200, &[]),
            "big.test" => reply(
                query,
                q_end,
                ok,
                &(0..40).map(|i| (1, vec![10, 0, 0, i])).collect::<Vec<_>>(),
            ),
            _ => reply(query, q_end, 0x8185, &[]),
        }
    }

    /// A nameserver on 127.0.0.1, UDP and TCP on one port, speaking the wire format.
    async fn nameserver() -> SocketAddr {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp");
        let addr = tcp.local_addr().expect("addr");
        let udp = UdpSocket::bind(addr).await.expect("bind udp");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&answer(&buf[..n], false), from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let len = s.read_u16().await.expect("length");
                    let mut q = vec![0u8; usize::from(len)];
                    s.read_exact(&mut q).await.expect("query");
                    let r = answer(&q, true);
                    let _ = s.write_all(&(r.len() as u16).to_be_bytes()).await;
                    let _ = s.write_all(&r).await;
                });
            }
        });
        addr
    }

    fn monitor(server: SocketAddr, name: &str, record_type: &str, conditions: &[&str]) -> Monitor {
        MonitorSpec {
            name: "dns".into(),
            kind: "dns".into(),
            target: name.into(),
            timeout: Some("3s".into()),
            nameserver: Some(server.to_string()),
            record_type: Some(record_type.into()),
            conditions: conditions.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
        .validate()
        .expect("valid monitor")
    }

    #[test]
    fn queries_are_well_formed() {
        let q = encode_query(0xbeef, "mail.example.com.", RecordType::Mx);
        assert_eq!(
            q,
            [
                &[0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x04mail\x07example\x03com\x00",
                &[0, 15, 0, 1]
            ]
            .concat()
        );
        assert!(check_name("_dmarc.example.com.").is_ok());
        for bad in [
            "",
            "a..b",
            "exa mple.com",
            &format!("{}.com", "x".repeat(64)),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn dns_checks_read_real_answers() {
        let server = nameserver().await;
        let client = checks::outbound();
        let check = |name: &str, rtype: &str, conditions: &[&str]| {
            let m = monitor(server, name, rtype, conditions);
            let client = client.clone();
            async move { checks::run(&m, &client).await }
        };
        let r = check(
            "a.test",
            "A",
            &["[BODY] contains 5.6.7.8", "[DNS_RCODE] == NOERROR"],
        )
        .await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = check("a.test", "A", &["[BODY] == 1.2.3.4"]).await;
        assert_eq!(
            r.error.as_deref(),
            Some("condition failed: [BODY] == 1.2.3.4")
        );
        assert_eq!(
            r.detail.as_deref(),
            Some("[BODY] == 1.2.3.4: was \"1.2.3.4\\n5.6.7.8\"")
        );
        let r = check("www.a.test", "a", &["[BODY] == 1.2.3.4"]).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = check("mail.test", "MX", &["[BODY] == \"10 mx.test\""]).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        let r = check("txt.test", "TXT", &["[BODY] == \"v=spf1 -all\""]).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));
        // Truncated over UDP: asked again over TCP, where all 40 fit.
        let r = check("big.test", "A", &["[BODY] contains 10.0.0.39"]).await;
        assert_eq!((r.verdict, r.error), (Verdict::Up, None));

        // Without conditions, a name must exist and have records of the type.
        let r = check("missing.test", "A", &[]).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("DNS NXDOMAIN"))
        );
        let r = check("missing.test", "A", &["[DNS_RCODE] == NXDOMAIN"]).await;
        assert_eq!(r.verdict, Verdict::Up, "a condition may expect NXDOMAIN");
        let r = check("a.test", "AAAA", &[]).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("no AAAA records"))
        );
        let r = check("elsewhere.test", "A", &[]).await;
        assert_eq!(r.error.as_deref(), Some("DNS REFUSED"));

        for (name, why) in [
            ("garbage.test", "malformed DNS reply: shorter than a header"),
            (
                "stranger.test",
                "the DNS reply's id does not match the query",
            ),
            ("loop.test", "malformed DNS reply: name pointer loops"),
        ] {
            let r = check(name, "A", &[]).await;
            assert_eq!(
                (r.verdict, r.error.as_deref()),
                (Verdict::Down, Some(why)),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_silent_or_closed_nameserver_fails_the_check() {
        let client = checks::outbound();
        // Bound but never answering: the check's timeout ends it.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut m = monitor(silent.local_addr().expect("addr"), "a.test", "A", &[]);
        m.timeout = Duration::from_millis(1500);
        let r = checks::run(&m, &client).await;
        assert_eq!(
            (r.verdict, r.error.as_deref()),
            (Verdict::Down, Some("timed out after 1500ms"))
        );
        let closed = silent.local_addr().expect("addr");
        drop(silent);
        let r = checks::run(&monitor(closed, "a.test", "A", &[]), &client).await;
        assert_eq!(r.verdict, Verdict::Down);
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("refused")),
            "{r:?}"
        );
    }
}
