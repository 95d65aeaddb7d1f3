//! The destination guard for every outgoing connection to an address a user typed: webhook
//! and notifier deliveries, health checks of every kind, OAuth token refreshes. A target must
//! not reach a cloud metadata service, and reaches opsdeck's own host or its private network
//! only where the caller's policy allows it.
//!
//! Two doors need guarding. A URL whose host is a literal IP never goes through DNS in
//! reqwest, so [`Guard::check_url`] checks it before the request is built, and
//! [`redirect_policy`] checks every redirect hop the same way. A host name is checked at
//! connect time by [`GuardedResolver`], which reqwest calls for every connection, and by
//! [`Guard::connect`] for the protocols that open their own sockets: the addresses checked are
//! the addresses connected to, so a name that resolves to a public address when saved and to
//! `169.254.169.254` when used (DNS rebinding) is still refused.
//!
//! Ranges come in two kinds. Unspecified, link-local (with the metadata address
//! `169.254.169.254`), multicast, broadcast, reserved and the known metadata addresses are
//! refused always, even when an allow-list entry covers them: no legitimate receiver lives
//! there, while link-local is exactly where clouds put the instance metadata service and its
//! credentials, so a broad allow-list entry such as `0.0.0.0/0` must not open it. Loopback,
//! private, shared (CGNAT), unique-local, documentation and other special-purpose ranges are
//! refused unless the policy allow-lists them: webhooks and token endpoints open them only on
//! the operator's word, while health monitors open all of them ([`Guard::private_allowed`]),
//! since watching the LAN is what they are for. IPv4 addresses embedded in IPv6 (mapped,
//! compatible, NAT64, 6to4) are judged as the IPv4 address they lead to, and IPv4 shorthands
//! (`2852039166`, `0xa9fea9fe`, a trailing dot) as the address they spell.
//!
//! The guard decides and connects; it knows nothing of the domains that use it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::net::TcpStream;

/// An IP network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why an allow-list entry was refused; the message names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, fd00::/8)")]
    Address(String),
    #[error("`{text}` has a prefix length outside 0..={max}")]
    Prefix { text: String, max: u8 },
    #[error("`{text}` has host bits set; did you mean `{network}`?")]
    HostBits { text: String, network: String },
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. An IPv4 network never contains an IPv6 address and
    /// the reverse; the guard unwraps embedded IPv4 addresses before asking.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address meaning just that host (`/32`, `/128`).
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let trimmed = text.trim();
        let (addr, prefix) = match trimmed.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (trimmed, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix {
                    text: text.to_owned(),
                    max,
                })?,
            Some(_) => {
                return Err(CidrError::Prefix {
                    text: text.to_owned(),
                    max,
                });
            }
        };
        // Host bits set usually means a typo (`10.1.2.3/8` for `10.1.2.3/32`?); refusing
        // says so at startup instead of silently widening or narrowing the entry.
        let clean = match network {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & mask_v4(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask_v6(prefix))),
        };
        if clean != network {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network: format!("{clean}/{prefix}"),
            });
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The special-purpose range an address fell in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Range {
    Unspecified,
    LinkLocal,
    Metadata,
    Multicast,
    Broadcast,
    Reserved,
    Loopback,
    Private,
    SharedAddressSpace,
    UniqueLocal,
    Documentation,
    SpecialPurpose,
}

impl Range {
    /// Ranges no allow-list entry can open (see the module documentation for why).
    pub fn always_refused(self) -> bool {
        matches!(
            self,
            Range::Unspecified
                | Range::LinkLocal
                | Range::Metadata
                | Range::Multicast
                | Range::Broadcast
                | Range::Reserved
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Range::Unspecified => "an unspecified (\"this host\") address",
            Range::LinkLocal => "a link-local address",
            Range::Metadata => "a cloud metadata service address",
            Range::Multicast => "a multicast address",
            Range::Broadcast => "the broadcast address",
            Range::Reserved => "a reserved address",
            Range::Loopback => "a loopback address",
            Range::Private => "a private network address",
            Range::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Range::UniqueLocal => "an IPv6 unique-local address",
            Range::Documentation => "a documentation or benchmarking address",
            Range::SpecialPurpose => "a special-purpose address",
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Every non-public range, the most specific first so a metadata or broadcast address is
/// named as such rather than by its enclosing range. IPv4 addresses embedded in IPv6 are
/// unwrapped before this table is consulted.
const RANGES: &[(Cidr, Range)] = &[
    // Alibaba Cloud's metadata service sits inside the shared (CGNAT) range, which an
    // operator may allow-list; AWS's IPv6 one inside fc00::/7.
    (Cidr::v4(100, 100, 100, 200, 32), Range::Metadata),
    (Cidr::v4(169, 254, 169, 254, 32), Range::Metadata),
    (
        Cidr::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        Range::Metadata,
    ),
    (Cidr::v4(255, 255, 255, 255, 32), Range::Broadcast),
    // 0.0.0.0 reaches the local host on Linux, so all of 0/8 is treated as unspecified.
    (Cidr::v4(0, 0, 0, 0, 8), Range::Unspecified),
    (Cidr::v4(169, 254, 0, 0, 16), Range::LinkLocal),
    (Cidr::v4(224, 0, 0, 0, 4), Range::Multicast),
    (Cidr::v4(240, 0, 0, 0, 4), Range::Reserved),
    (Cidr::v4(127, 0, 0, 0, 8), Range::Loopback),
    (Cidr::v4(10, 0, 0, 0, 8), Range::Private),
    (Cidr::v4(172, 16, 0, 0, 12), Range::Private),
    (Cidr::v4(192, 168, 0, 0, 16), Range::Private),
    (Cidr::v4(100, 64, 0, 0, 10), Range::SharedAddressSpace),
    (Cidr::v4(192, 0, 0, 0, 24), Range::SpecialPurpose),
    (Cidr::v4(192, 0, 2, 0, 24), Range::Documentation),
    (Cidr::v4(198, 51, 100, 0, 24), Range::Documentation),
    (Cidr::v4(203, 0, 113, 0, 24), Range::Documentation),
    (Cidr::v4(198, 18, 0, 0, 15), Range::Documentation),
    (Cidr::v6([0; 8], 128), Range::Unspecified),
    (
        Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        Range::LinkLocal,
    ),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Range::Multicast),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Range::Loopback),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        Range::UniqueLocal,
    ),
    // Deprecated site-local: still private wherever it is configured.
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Range::Private),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Range::Documentation,
    ),
    // Discard-only, IETF protocol assignments (Teredo among them), local-use NAT64.
    (
        Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        Range::SpecialPurpose,
    ),
    (
        Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        Range::SpecialPurpose,
    ),
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        Range::SpecialPurpose,
    ),
];

/// The IPv4 address an IPv6 address leads to, for the forms that carry one: mapped
/// (`::ffff:a.b.c.d`), the deprecated compatible form (`::a.b.c.d`), well-known NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let seg = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible forms.
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// The range `ip` falls in, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Range> {
    let ip = match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    };
    RANGES
        .iter()
        .find(|(cidr, _)| cidr.contains(ip))
        .map(|(_, range)| *range)
}

/// Why an outgoing request was refused before any byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("URL scheme `{0}` is not allowed; use http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("{ip} is {range}; refused")]
    RefusedIp { ip: IpAddr, range: Range },
    #[error("{host} resolves to {ip}, which is {range}; refused")]
    RefusedHost {
        host: String,
        ip: IpAddr,
        range: Range,
    },
    #[error("could not resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("{0:?} is not a host name or IP address")]
    BadHost(String),
}

impl GuardError {
    /// Whether the guard refused the destination (as opposed to DNS failing). A refusal will
    /// not change on retry unless DNS or the allow-list does.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            GuardError::Resolve { .. } | GuardError::NoAddress { .. } | GuardError::BadHost(_)
        )
    }
}

/// The SSRF policy: the fixed refusals plus the operator's allow-list of private ranges.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<Cidr>,
    /// Names answered without DNS (lowercase, no trailing dot). Their addresses are checked
    /// like any resolved address; tests use them to make a name lead where they need it.
    pinned: HashMap<String, Vec<IpAddr>>,
}

impl Guard {
    /// A guard opening the non-public ranges covered by `allow` (never the always-refused
    /// ones). An empty list allows public addresses only.
    pub fn new(allow: Vec<Cidr>) -> Guard {
        Guard {
            allow,
            pinned: HashMap::new(),
        }
    }

    /// A guard opening every range that can be opened: loopback, private, shared and the
    /// other special-purpose ranges pass, and only the always-refused ones (link-local,
    /// metadata, unspecified, multicast, broadcast, reserved) are refused. Health monitors
    /// use it, since monitoring private hosts is what they are for.
    pub fn private_allowed() -> Guard {
        Guard::new(vec![Cidr::v4(0, 0, 0, 0, 0), Cidr::v6([0; 8], 0)])
    }

    /// This guard, answering `name` with `addrs` instead of asking DNS. The addresses still go
    /// through the same check as resolved ones.
    pub fn with_pinned(mut self, name: &str, addrs: Vec<IpAddr>) -> Guard {
        self.pinned.insert(normalise_name(name), addrs);
        self
    }

    /// Parses allow-list entries such as `"10.0.0.0/8"`, `"127.0.0.0/8"`, `"::1/128"`; the
    /// first bad entry is the error.
    pub fn parse<S: AsRef<str>>(allow: &[S]) -> Result<Guard, CidrError> {
        let allow = allow
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(Guard::new(allow))
    }

    pub fn allow_list(&self) -> &[Cidr] {
        &self.allow
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let unwrapped = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|cidr| cidr.contains(ip) || unwrapped.is_some_and(|v4| cidr.contains(v4)))
    }

    /// Refuses `ip` unless it is public or allow-listed; returns the range it fell in.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Range> {
        match classify(ip) {
            None => Ok(()),
            Some(range) if !range.always_refused() && self.allowed(ip) => Ok(()),
            Some(range) => Err(range),
        }
    }

    /// Checks what can be checked without DNS: the scheme, that there is a host, and the host
    /// itself when it is a literal IP (which reqwest connects to without asking the
    /// resolver). Call it before every request; [`GuardedResolver`] covers host names.
    pub fn check_url(&self, url: &Url) -> Result<(), GuardError> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(GuardError::Scheme(other.to_owned())),
        }
        // The URL parser has already normalised IPv4 shorthands such as `http://2130706433/`
        // or `http://0x7f.1/` to dotted form for http(s), so parsing the host text is enough.
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(GuardError::NoHost)?;
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check_ip(ip)
                .map_err(|range| GuardError::RefusedIp { ip, range })?;
        }
        Ok(())
    }

    /// Checks a bare host as a user typed it (`host` of a `host:port` target, an IPv6
    /// address with or without brackets) without DNS: a literal address in any spelling the
    /// WHATWG URL parser accepts — `2852039166`, `0xa9fea9fe`, `169.254.169.254.`,
    /// `::ffff:169.254.169.254` — is judged as the address it spells, because the system
    /// resolver spells it the same way when the check connects. A name passes here and is
    /// judged when it is resolved.
    pub fn check_host(&self, host: &str) -> Result<(), GuardError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let as_url = if bare.contains(':') {
            format!("http://[{bare}]/")
        } else {
            format!("http://{bare}/")
        };
        let url = Url::parse(&as_url).map_err(|_| GuardError::BadHost(host.to_owned()))?;
        self.check_url(&url)
    }

    /// Resolves `host` and returns its addresses with `port`, refusing the whole name if any
    /// one address is refused: a name mixing public and private answers is a rebinding
    /// attempt or a misconfiguration, and either way the connection might pick the private
    /// one.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = match self.pinned.get(&normalise_name(host)) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| GuardError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(GuardError::NoAddress {
                host: host.to_owned(),
            });
        }
        for addr in &addrs {
            self.check_ip(addr.ip())
                .map_err(|range| GuardError::RefusedHost {
                    host: host.to_owned(),
                    ip: addr.ip(),
                    range,
                })?;
        }
        Ok(addrs)
    }

    /// Opens a TCP connection to `host:port` through the guard: resolved (or read as a
    /// literal in any spelling), every address checked, then one of exactly those addresses
    /// connected to, so nothing is resolved twice.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        // A literal first, in the spellings the system resolver would also accept, so the
        // refusal names the address rather than a failed lookup.
        self.check_host(host).map_err(ConnectError::Guard)?;
        let addrs = self
            .resolve_checked(host, port)
            .await
            .map_err(ConnectError::Guard)?;
        TcpStream::connect(&addrs[..])
            .await
            .map_err(ConnectError::Io)
    }
}

/// Why [`Guard::connect`] has no connection: the guard refused (or DNS failed), or connecting
/// to the checked address did.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Guard(GuardError),
    #[error("{0}")]
    Io(std::io::Error),
}

/// A name as the pinned table keys it: lowercase, without the root's trailing dot.
fn normalise_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A redirect policy that checks every hop's URL with [`Guard::check_url`] before it is
/// followed (the guarded resolver then checks the hop's resolved addresses), follows at most
/// `max` hops, and with `same_origin_only` answers a redirect to another origin as the 3xx it
/// is, for requests carrying credentials in headers reqwest cannot know are secret.
pub fn redirect_policy(
    guard: Arc<Guard>,
    max: usize,
    same_origin_only: bool,
) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error("too many redirects");
        }
        if let Err(refused) = guard.check_url(attempt.url()) {
            return attempt.error(refused);
        }
        let same = attempt.previous().last().is_some_and(|from| {
            from.scheme() == attempt.url().scheme()
                && from.host_str() == attempt.url().host_str()
                && from.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if same_origin_only && !same {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// Every private and loopback range, for `[alerts] allow_private_targets`.
pub fn every_private_range() -> Vec<Cidr> {
    vec![
        Cidr::v4(127, 0, 0, 0, 8),
        Cidr::v4(10, 0, 0, 0, 8),
        Cidr::v4(172, 16, 0, 0, 12),
        Cidr::v4(192, 168, 0, 0, 16),
        Cidr::v4(100, 64, 0, 0, 10),
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    ]
}

/// The operator's policy for requests that carry secrets to a URL someone typed (webhook and
/// notifier deliveries, OAuth token refreshes): public addresses, the private ranges listed
/// in `allow_private` (`[webhooks] allow_private`), and every private and loopback range when
/// `every_private` (`[alerts] allow_private_targets`). Link-local and metadata stay refused.
pub fn operator_policy<S: AsRef<str>>(
    allow_private: &[S],
    every_private: bool,
) -> Result<Guard, CidrError> {
    let mut guard = Guard::parse(allow_private)?;
    if every_private {
        guard.allow.extend(every_private_range());
    }
    Ok(guard)
}

/// reqwest's resolver, filtered through a [`Guard`]. reqwest asks it for every new
/// connection, so the check happens at the moment of connecting.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port (or the scheme's default) in its place.
            let addrs = guard.resolve_checked(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A reqwest client builder wired to the guard: the guarded resolver, no proxy (a proxy would
/// resolve the destination itself, out of the guard's sight, and the environment's
/// `HTTP_PROXY` would otherwise apply silently) and no redirects (a 3xx is a failed delivery,
/// and following one would skip [`Guard::check_url`] for the new location). Add timeouts and
/// the user agent, then call [`Guard::check_url`] before each request.
pub fn client_builder(guard: Arc<Guard>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver::new(guard))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// The guard's refusal inside a reqwest error, if that is what failed the request: the
/// delivery worker can then record "refused by the SSRF guard" rather than a network error.
pub fn guard_error(err: &reqwest::Error) -> Option<&GuardError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<GuardError>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn strict() -> Guard {
        Guard::default()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::ffff:10.0.0.1")), "families never mix");
        let host: Cidr = "::1".parse().expect("bare v6");
        assert_eq!(host.to_string(), "::1/128");
        let all: Cidr = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = " fd00::/8 ".parse().expect("trimmed");
        assert!(v6.contains(ip("fd12::1")));
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address("10.0.0/8".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix {
                text: "10.0.0.0/33".into(),
                max: 32
            })
        );
        for bad in ["10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/x"] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Prefix { .. })),
                "{bad}"
            );
        }
        let err = "10.1.2.3/8".parse::<Cidr>().expect_err("host bits");
        assert_eq!(
            err.to_string(),
            "`10.1.2.3/8` has host bits set; did you mean `10.0.0.0/8`?"
        );
        assert!(matches!(
            Guard::parse(&["127.0.0.0/8", "nonsense"]),
            Err(CidrError::Address(s)) if s == "nonsense"
        ));
    }

    #[test]
    fn every_range_is_classified() {
        let cases = [
            ("0.0.0.0", Range::Unspecified),
            ("0.1.2.3", Range::Unspecified),
            ("::", Range::Unspecified),
            ("169.254.1.1", Range::LinkLocal),
            ("169.254.169.254", Range::Metadata),
            ("fe80::1", Range::LinkLocal),
            ("febf::1", Range::LinkLocal),
            ("fd00:ec2::254", Range::Metadata),
            ("100.100.100.200", Range::Metadata),
            ("224.0.0.1", Range::Multicast),
            ("239.255.255.250", Range::Multicast),
            ("ff02::1", Range::Multicast),
            ("255.255.255.255", Range::Broadcast),
            ("240.0.0.1", Range::Reserved),
            ("127.0.0.1", Range::Loopback),
            ("127.255.255.254", Range::Loopback),
            ("::1", Range::Loopback),
            ("10.0.0.1", Range::Private),
            ("172.16.0.1", Range::Private),
            ("172.31.255.255", Range::Private),
            ("192.168.1.1", Range::Private),
            ("100.64.0.1", Range::SharedAddressSpace),
            ("100.127.255.255", Range::SharedAddressSpace),
            ("fc00::1", Range::UniqueLocal),
            ("fd12:3456::1", Range::UniqueLocal),
            ("192.0.2.1", Range::Documentation),
            ("2001:db8::1", Range::Documentation),
        ];
        for (text, range) in cases {
            assert_eq!(classify(ip(text)), Some(range), "{text}");
            assert_eq!(strict().check_ip(ip(text)), Err(range), "{text}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
            assert_eq!(strict().check_ip(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        let cases = [
            ("::ffff:127.0.0.1", Range::Loopback),
            ("::ffff:169.254.169.254", Range::Metadata),
            ("::ffff:10.1.1.1", Range::Private),
            ("::ffff:0.0.0.0", Range::Unspecified),
            ("::ffff:224.0.0.1", Range::Multicast),
            ("::ffff:255.255.255.255", Range::Broadcast),
            ("::127.0.0.1", Range::Loopback),
            ("64:ff9b::a9fe:a9fe", Range::Metadata),
            ("64:ff9b::7f00:1", Range::Loopback),
            ("2002:a9fe:a9fe::1", Range::Metadata),
            ("2002:c0a8:0101::1", Range::Private),
        ];
        for (text, range) in cases {
            assert_eq!(strict().check_ip(ip(text)), Err(range), "{text}");
        }
        assert_eq!(strict().check_ip(ip("::ffff:8.8.8.8")), Ok(()));
        assert_eq!(strict().check_ip(ip("64:ff9b::808:808")), Ok(()));
        // A v4 allow-list entry covers the mapped form of its addresses.
        let lan = Guard::parse(&["127.0.0.0/8"]).expect("allow");
        assert_eq!(lan.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
    }

    #[test]
    fn allow_list_opens_private_ranges_but_never_link_local_or_metadata() {
        let lan = Guard::parse(&[
            "10.0.0.0/8",
            "127.0.0.0/8",
            "::1/128",
            "100.64.0.0/10",
            "fc00::/7",
        ])
        .expect("allow");
        for open in ["10.1.2.3", "127.0.0.1", "::1", "100.64.0.9", "fd00::1"] {
            assert_eq!(lan.check_ip(ip(open)), Ok(()), "{open}");
        }
        // Allow-listed ranges are exact: 10/8 does not open 192.168/16.
        assert_eq!(lan.check_ip(ip("192.168.0.1")), Err(Range::Private));
        // Metadata addresses inside allow-listed ranges stay shut.
        assert_eq!(lan.check_ip(ip("fd00:ec2::254")), Err(Range::Metadata));
        assert_eq!(lan.check_ip(ip("100.100.100.200")), Err(Range::Metadata));
        // Even an allow-everything entry does not open the always-refused ranges.
        let all = Guard::parse(&["0.0.0.0/0", "::/0"]).expect("allow");
        assert_eq!(all.check_ip(ip("192.168.0.1")), Ok(()));
        for shut in [
            ("169.254.169.254", Range::Metadata),
            ("169.254.0.1", Range::LinkLocal),
            ("fe80::1", Range::LinkLocal),
            ("0.0.0.0", Range::Unspecified),
            ("::", Range::Unspecified),
            ("224.0.0.1", Range::Multicast),
            ("255.255.255.255", Range::Broadcast),
            ("::ffff:169.254.169.254", Range::Metadata),
        ] {
            assert_eq!(all.check_ip(ip(shut.0)), Err(shut.1), "{}", shut.0);
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_host_and_literal_ips() {
        let url = |s: &str| Url::parse(s).expect("url");
        let g = strict();
        assert!(g.check_url(&url("https://hooks.example.com/x")).is_ok());
        assert!(
            g.check_url(&url("http://user:pw@hooks.example.com:8080/x"))
                .is_ok()
        );
        assert!(matches!(
            g.check_url(&url("ftp://example.com/")),
            Err(GuardError::Scheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            g.check_url(&url("file:///etc/passwd")),
            Err(GuardError::Scheme(_))
        ));
        assert!(matches!(
            g.check_url(&url("unix:/run/docker.sock")),
            Err(GuardError::Scheme(_))
        ));
        for (literal, range) in [
            ("http://127.0.0.1:8080/", Range::Loopback),
            ("http://169.254.169.254/latest/meta-data/", Range::Metadata),
            ("http://[::1]/", Range::Loopback),
            ("http://[fd00:ec2::254]/", Range::Metadata),
            ("http://[::ffff:169.254.169.254]/", Range::Metadata),
            // The URL parser turns these IPv4 shorthands into 127.0.0.1 / 10.0.0.1.
            ("http://2130706433/", Range::Loopback),
            ("http://0x7f.1/", Range::Loopback),
            ("http://10.1/", Range::Private),
            ("http://0/", Range::Unspecified),
        ] {
            match g.check_url(&url(literal)) {
                Err(GuardError::RefusedIp { range: got, .. }) => {
                    assert_eq!(got, range, "{literal}")
                }
                other => panic!("{literal}: {other:?}"),
            }
        }
        let lan = Guard::parse(&["127.0.0.0/8"]).expect("allow");
        assert!(lan.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(lan.check_url(&url("http://169.254.169.254/")).is_err());
    }

    #[tokio::test]
    async fn resolving_checks_every_address() {
        let err = strict()
            .resolve_checked("localhost", 80)
            .await
            .expect_err("localhost refused");
        assert!(
            matches!(&err, GuardError::RefusedHost { host, range: Range::Loopback, .. } if host == "localhost"),
            "{err:?}"
        );
        assert!(err.is_refusal());
        // Some hosts files map localhost to ::1 as well; allow both so the test does not
        // depend on that.
        let lan = Guard::parse(&["127.0.0.0/8", "::1/128"]).expect("allow");
        let addrs = lan.resolve_checked("localhost", 80).await.expect("allowed");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        // Literal addresses go through the same check.
        assert!(
            strict()
                .resolve_checked("169.254.169.254", 80)
                .await
                .is_err()
        );
        assert!(strict().resolve_checked("8.8.8.8", 443).await.is_ok());
        // DNS failures are not refusals (no lookup here: it would depend on the network).
        let dns = GuardError::NoAddress {
            host: "example.com".into(),
        };
        assert!(!dns.is_refusal());
    }

    #[tokio::test]
    async fn the_reqwest_resolver_refuses_and_allows() {
        let strict = GuardedResolver::new(Arc::new(strict()));
        let name = Name::from_str("localhost").expect("name");
        let Err(err) = strict.resolve(name).await else {
            panic!("localhost resolved through a strict guard");
        };
        assert!(err.downcast_ref::<GuardError>().is_some(), "{err}");
        let lan = GuardedResolver::new(Arc::new(
            Guard::parse(&["127.0.0.0/8", "::1/128"]).expect("allow"),
        ));
        let name = Name::from_str("localhost").expect("name");
        let Ok(addrs) = lan.resolve(name).await else {
            panic!("localhost refused through an allow-list");
        };
        assert!(addrs.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_guarded_client_cannot_reach_localhost_unless_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://localhost:{port}/");

        let strict = client_builder(Arc::new(strict())).build().expect("client");
        let err = strict.get(&url).send().await.expect_err("refused");
        assert!(
            matches!(guard_error(&err), Some(GuardError::RefusedHost { .. })),
            "{err:?}"
        );

        let lan = Guard::parse(&["127.0.0.0/8", "::1/128"]).expect("allow");
        let lan = client_builder(Arc::new(lan)).build().expect("client");
        let body = lan
            .get(&url)
            .send()
            .await
            .expect("allowed")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "ok");
        server.abort();
    }

    /// Every spelling of the metadata address the security review tried, as a bare host.
    const METADATA_SPELLINGS: &[&str] = &[
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "::ffff:169.254.169.254",
        "2852039166",
        "0xa9fea9fe",
        "0xA9.0xFE.0xA9.0xFE",
        "0251.0376.0251.0376",
        "169.254.43518",
        "169.254.169.254.",
        "[fd00:ec2::254]",
        "fd00:ec2::254",
        "100.100.100.200",
        "[::a9fe:a9fe]",
        "[64:ff9b::a9fe:a9fe]",
        "169.254.1.1",
        "[fe80::1]",
    ];

    #[test]
    fn bare_hosts_are_judged_in_every_spelling() {
        let health = Guard::private_allowed();
        for host in METADATA_SPELLINGS {
            match health.check_host(host) {
                Err(GuardError::RefusedIp { range, .. }) => assert!(
                    matches!(range, Range::Metadata | Range::LinkLocal),
                    "{host}: {range}"
                ),
                other => panic!("{host}: {other:?}"),
            }
        }
        // Monitoring the LAN stays open to the permissive policy and shut to the strict one.
        for open in ["127.0.0.1", "10.0.0.5", "[::1]", "db.internal", "localhost"] {
            assert!(health.check_host(open).is_ok(), "{open}");
        }
        assert!(matches!(
            strict().check_host("2130706433"),
            Err(GuardError::RefusedIp {
                range: Range::Loopback,
                ..
            })
        ));
        assert!(matches!(
            health.check_host("a b"),
            Err(GuardError::BadHost(_))
        ));
    }

    #[tokio::test]
    async fn a_name_resolving_to_metadata_is_refused_after_resolution() {
        let guard = Guard::private_allowed()
            .with_pinned("metadata.test", vec![ip("169.254.169.254")])
            .with_pinned("rebind.test", vec![ip("127.0.0.1"), ip("fd00:ec2::254")])
            .with_pinned("lan.test", vec![ip("127.0.0.1")]);
        // The name itself is fine; what it resolves to is not.
        assert!(guard.check_host("metadata.test").is_ok());
        for name in ["metadata.test", "METADATA.test.", "rebind.test"] {
            let err = guard.resolve_checked(name, 80).await.expect_err(name);
            assert!(
                matches!(
                    err,
                    GuardError::RefusedHost {
                        range: Range::Metadata,
                        ..
                    }
                ),
                "{name}: {err:?}"
            );
            assert!(matches!(
                guard.connect(name, 80).await,
                Err(ConnectError::Guard(GuardError::RefusedHost { .. }))
            ));
        }
        let addrs = guard.resolve_checked("lan.test", 81).await.expect("lan");
        assert_eq!(addrs, vec!["127.0.0.1:81".parse().expect("addr")]);
    }

    #[tokio::test]
    async fn connecting_refuses_every_spelling_and_reaches_the_lan() {
        let guard = Guard::private_allowed();
        for host in METADATA_SPELLINGS {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            assert!(
                matches!(
                    guard.connect(host, 80).await,
                    Err(ConnectError::Guard(e)) if e.is_refusal()
                ),
                "{host}"
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(guard.connect("127.0.0.1", port).await.is_ok());
        assert!(matches!(
            strict().connect("127.0.0.1", port).await,
            Err(ConnectError::Guard(GuardError::RefusedIp { .. }))
        ));
    }

    /// A loopback server that redirects to the metadata address: the guarded client refuses
    /// the hop before any connection to it is attempted, and says so.
    #[tokio::test]
    async fn redirect_hops_are_checked_before_they_are_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new()
            .route(
                "/to-metadata",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", "http://169.254.169.254/latest/meta-data/")],
                    )
                }),
            )
            .route(
                "/to-name",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", "http://metadata.test/computeMetadata/v1/")],
                    )
                }),
            )
            .route(
                "/to-self",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::FOUND, [("location", "/ok")])
                }),
            )
            .route("/ok", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let guard = Arc::new(
            Guard::private_allowed().with_pinned("metadata.test", vec![ip("169.254.169.254")]),
        );
        let client = reqwest::Client::builder()
            .dns_resolver(GuardedResolver::new(guard.clone()))
            .no_proxy()
            .redirect(redirect_policy(guard, 5, false))
            .build()
            .expect("client");
        for path in ["/to-metadata", "/to-name"] {
            let err = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .expect_err(path);
            let refused = guard_error(&err).expect("the guard's refusal");
            assert!(refused.is_refusal(), "{path}: {refused}");
            assert!(refused.to_string().contains("169.254.169.254"), "{refused}");
        }
        let ok = client
            .get(format!("http://127.0.0.1:{port}/to-self"))
            .send()
            .await
            .expect("same host");
        assert_eq!(ok.text().await.expect("body"), "ok");
        server.abort();
    }
}
