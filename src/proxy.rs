//! Running behind a proxy or load balancer: the PROXY protocol (v1 text, v2 binary; HAProxy's
//! `proxy-protocol.txt`) and the one list of trusted proxies every listener shares.
//!
//! A listener with the PROXY protocol on (`[http] proxy_protocol` for the HTTPS port,
//! `[turn] proxy_protocol` for the TURN TCP/TLS listeners) reads the header before anything
//! else, TLS included, so the connection caps, the rate limits and the log see the client the
//! proxy speaks for. Only an address in `[http] trusted_proxies` may send one: a header from
//! any other address would let a client pick its own address, so it is refused (the connection
//! closed, counted in `signalbox_proxy_headers_total{result="untrusted"}`, logged within a
//! budget). Clients that connect directly are still served, with their own address; a trusted
//! proxy that sends no header (a health check) is served as itself.
//!
//! The read is bounded: a v1 header is at most 107 bytes, a v2 header carries its length and
//! is refused above [`MAX_V2_LEN`], and the caller runs it within the handshake deadline.
//! Bytes read past the header are handed back to go in front of the stream.
//!
//! The same list decides whose `X-Forwarded-For` / `Forwarded` headers count
//! ([`forwarded_client`]), for HTTP reverse proxies that connect over HTTPS.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::caps::ConnPermit;
use crate::metrics::{METRICS, PROXY_ACCEPTED, PROXY_INVALID, PROXY_TIMED_OUT, PROXY_UNTRUSTED};
use crate::ratelimit::RefusalLog;
use signalbox_turn_proto::policy::Cidr;

/// The longest PROXY v1 header, CRLF included (the specification's own bound).
pub const MAX_V1_LEN: usize = 107;
/// The longest PROXY v2 header accepted, its 16 fixed bytes included. Addresses take at most
/// 216 bytes (UNIX sockets); the rest is room for TLVs such as a cloud balancer's endpoint id.
pub const MAX_V2_LEN: usize = 16 + 1024;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The proxies allowed to speak for clients (`[http] trusted_proxies`), shared by every
/// listener.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    pub fn new(ranges: &[Cidr]) -> TrustedProxies {
        TrustedProxies(ranges.into())
    }

    /// True when `ip` is one of the trusted proxies (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One listener's PROXY protocol setting.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    /// Read a header on this listener (`proxy_protocol = true`).
    pub enabled: bool,
    pub trusted: TrustedProxies,
    /// Which listener, for the log.
    pub listener: &'static str,
    log: Arc<Mutex<RefusalLog>>,
}

/// Who a connection is from, once any PROXY header is read.
#[derive(Debug)]
pub struct Arrival {
    /// The client: the header's source address, or the connection's own address.
    pub client: SocketAddr,
    /// Bytes read after the header (or instead of one), to put back in front of the stream.
    pub rest: Vec<u8>,
}

/// Why a connection was refused while its PROXY header was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("a PROXY header from an address not in [http] trusted_proxies")]
    Untrusted,
    #[error("an invalid PROXY header: {0}")]
    Invalid(String),
    #[error("the connection closed before its PROXY header was complete")]
    Closed,
}

impl ProxyProtocol {
    pub fn new(enabled: bool, trusted: TrustedProxies, listener: &'static str) -> ProxyProtocol {
        ProxyProtocol {
            enabled,
            trusted,
            listener,
            log: Arc::default(),
        }
    }

    /// What every listener does first with a connection from `peer`: where the PROXY protocol is
    /// on, read the header and move the connection's place in the caps to the client it names.
    /// Returns the client, the bytes to put back in front of the stream, and the permit; `None`
    /// when the connection must be closed.
    pub async fn arrive<S: AsyncRead + Unpin>(
        &self,
        io: &mut S,
        peer: SocketAddr,
        deadline: Instant,
        permit: ConnPermit,
    ) -> Option<(SocketAddr, Vec<u8>, ConnPermit)> {
        if !self.enabled {
            return Some((peer, Vec::new(), permit));
        }
        let arrival = self.read(io, peer, deadline).await?;
        let permit = permit.rekey(arrival.client.ip()).ok()?;
        Some((arrival.client, arrival.rest, permit))
    }

    /// Reads what must be read before anything else on a connection from `peer`: a PROXY
    /// header from a trusted proxy, or enough of the first bytes to know that an untrusted
    /// address sent none. `None` when the connection must be closed (logged and counted here).
    /// Call only when [`Self::enabled`].
    pub async fn read<S: AsyncRead + Unpin>(
        &self,
        io: &mut S,
        peer: SocketAddr,
        deadline: Instant,
    ) -> Option<Arrival> {
        let trusted = self.trusted.contains(peer.ip());
        let outcome = tokio::time::timeout_at(deadline, read_header(io, trusted)).await;
        let error = match outcome {
            Ok(Ok((client, rest))) => {
                if let Some(client) = client {
                    METRICS.proxy_headers.at(PROXY_ACCEPTED).inc();
                    debug!(%client, proxy = %peer, listener = self.listener, "PROXY header");
                }
                return Some(Arrival {
                    client: client.unwrap_or(peer),
                    rest,
                });
            }
            Ok(Err(ProxyError::Closed)) => {
                debug!(%peer, "closed before its PROXY header was complete");
                return None;
            }
            Err(_) => {
                METRICS.proxy_headers.at(PROXY_TIMED_OUT).inc();
                debug!(%peer, "no complete PROXY header within the handshake timeout");
                return None;
            }
            Ok(Err(e)) => e,
        };
        let index = match error {
            ProxyError::Untrusted => PROXY_UNTRUSTED,
            _ => PROXY_INVALID,
        };
        METRICS.proxy_headers.at(index).inc();
        let logged = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(std::time::Instant::now());
        if let Some(unlogged) = logged {
            warn!(
                %peer,
                unlogged,
                "{} connection refused: {error}", self.listener
            );
        }
        None
    }
}

/// Reads until the first bytes are known not to start a PROXY header, or a whole header is
/// read: `(its source address, the bytes after it)`. A header with no address (`LOCAL`,
/// `UNKNOWN`) gives no client: the proxy speaks for itself.
async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    trusted: bool,
) -> Result<(Option<SocketAddr>, Vec<u8>), ProxyError> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        match parse(&buf) {
            Parsed::NotProxy => return Ok((None, buf)),
            Parsed::Header { .. } | Parsed::NeedMore { header: true } if !trusted => {
                return Err(ProxyError::Untrusted)
            }
            Parsed::Header { client, len } => return Ok((client, buf.split_off(len))),
            Parsed::Invalid(why) => return Err(ProxyError::Invalid(why)),
            Parsed::NeedMore { .. } => {}
        }
        let n = io.read(&mut chunk).await.map_err(|_| ProxyError::Closed)?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What the first bytes of a connection hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// They do not start a PROXY header.
    NotProxy,
    /// Too few bytes to tell; `header` once they are known to start one.
    NeedMore {
        header: bool,
    },
    /// A whole header of `len` bytes; `client` is its source address, if it has one.
    Header {
        client: Option<SocketAddr>,
        len: usize,
    },
    Invalid(String),
}

/// Parses a PROXY header at the start of `buf` (pure, for tests and fuzzing).
pub fn parse(buf: &[u8]) -> Parsed {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    let (v1, v2) = (starts(V1_SIGNATURE), starts(V2_SIGNATURE));
    if buf.is_empty() || (v1 && buf.len() < V1_SIGNATURE.len()) {
        return Parsed::NeedMore { header: false };
    }
    if v2 && buf.len() < V2_SIGNATURE.len() {
        return Parsed::NeedMore { header: false };
    }
    if v1 {
        parse_v1(buf)
    } else if v2 {
        parse_v2(buf)
    } else {
        Parsed::NotProxy
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1_LEN {
            return Parsed::Invalid(format!("v1 header longer than {MAX_V1_LEN} bytes"));
        }
        return Parsed::NeedMore { header: true };
    };
    let len = end + 2;
    match ppp::v1::Header::try_from(&buf[..len]) {
        Ok(header) => {
            use ppp::v1::Addresses;
            let client = match header.addresses {
                Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Unknown => None,
            };
            Parsed::Header { client, len }
        }
        Err(e) => Parsed::Invalid(format!("v1: {e}")),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::NeedMore { header: true };
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_V2_LEN {
        return Parsed::Invalid(format!("v2 header of {len} bytes (at most {MAX_V2_LEN})"));
    }
    if buf.len() < len {
        return Parsed::NeedMore { header: true };
    }
    match ppp::v2::Header::try_from(&buf[..len]) {
        Ok(header) => {
            use ppp::v2::{Addresses, Command};
            let client = match (header.command, header.addresses) {
                (Command::Local, _) => None,
                (Command::Proxy, Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => None,
            };
            Parsed::Header { client, len }
        }
        Err(e) => Parsed::Invalid(format!("v2: {e}")),
    }
}

/// The client an HTTP reverse proxy forwarded a request for: the right-most address in
/// `X-Forwarded-For` (or else `Forwarded: for=`) that is not itself a trusted proxy. Only when
/// `peer` (the connection's address) is a trusted proxy; `None` otherwise or when the headers
/// name no usable address, and then the connection's address stands.
pub fn forwarded_client(
    trusted: &TrustedProxies,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return None;
    }
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let hops: Vec<&str> = if xff.is_empty() {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then_some(v)
                })
            })
            .collect()
    } else {
        xff
    };
    // Right to left: each hop was added by the proxy after it; the first address that is not
    // a trusted proxy is the client (anything left of it the client may have made up).
    for hop in hops.iter().rev() {
        let addr = node_address(hop)?;
        if !trusted.contains(addr.ip()) {
            return Some(addr);
        }
    }
    None
}

/// An address of `X-Forwarded-For` (`192.0.2.1`, `2001:db8::1`) or a `Forwarded` node
/// (`192.0.2.1:4711`, `"[2001:db8::1]:4711"`, RFC 7239 §6); the port is 0 when absent.
fn node_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        let cidrs: Vec<Cidr> = list.iter().map(|s| s.parse().expect("cidr")).collect();
        TrustedProxies::new(&cidrs)
    }

    fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, server),
        )
        .build()
        .expect("header")
    }

    #[test]
    fn a_v1_header_gives_its_source_and_its_length() {
        let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8443\r\n";
        let mut buf = header.to_vec();
        buf.push(0x16);
        assert_eq!(
            parse(&buf),
            Parsed::Header {
                client: Some("203.0.113.7:40000".parse().expect("addr")),
                len: header.len()
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                client: None,
                len: 15
            }
        );
    }

    #[test]
    fn a_v2_header_gives_its_source_and_local_gives_none() {
        let client: SocketAddr = "[2001:db8::7]:4711".parse().expect("addr");
        let server: SocketAddr = "[::1]:8443".parse().expect("addr");
        let header = v2_header(client, server);
        assert_eq!(
            parse(&header),
            Parsed::Header {
                client: Some(client),
                len: header.len()
            }
        );
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .expect("header");
        assert_eq!(
            parse(&local),
            Parsed::Header {
                client: None,
                len: 16
            }
        );
    }

    #[test]
    fn partial_headers_need_more_and_other_protocols_are_not_proxy() {
        let header = v2_header(
            "192.0.2.1:1".parse().expect("addr"),
            "192.0.2.2:2".parse().expect("addr"),
        );
        for n in 1..header.len() {
            assert!(
                matches!(parse(&header[..n]), Parsed::NeedMore { .. }),
                "{n} bytes"
            );
        }
        assert_eq!(parse(b"PROXY TCP4 1.2"), Parsed::NeedMore { header: true });
        assert_eq!(parse(&[0x16, 3, 1]), Parsed::NotProxy, "a TLS ClientHello");
        assert_eq!(parse(&[0, 1, 0, 0]), Parsed::NotProxy, "a STUN request");
        assert_eq!(parse(b"POST /"), Parsed::NotProxy);
    }

    #[test]
    fn overlong_or_malformed_headers_are_invalid_not_waited_for() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(MAX_V1_LEN + 10, b'1');
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Parsed::Invalid(_)
        ));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(parse(&v2), Parsed::Invalid(_)), "65 KiB announced");
    }

    #[tokio::test]
    async fn an_untrusted_header_is_refused_and_a_trusted_one_keeps_the_bytes_after_it() {
        let mut input: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8443\r\nrest";
        assert_eq!(
            read_header(&mut input, false).await,
            Err(ProxyError::Untrusted)
        );
        let mut input: &[u8] = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8443\r\nrest";
        let (client, rest) = read_header(&mut input, true).await.expect("header");
        assert_eq!(client, Some("203.0.113.7:40000".parse().expect("addr")));
        assert_eq!(rest, b"rest");
        let mut input: &[u8] = &[0x16, 3, 1, 0];
        let (client, rest) = read_header(&mut input, false).await.expect("no header");
        assert_eq!((client, rest.first()), (None, Some(&0x16)));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxies = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.9, 203.0.113.7, 10.1.2.3"
                .parse()
                .expect("value"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let stranger: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        assert_eq!(
            forwarded_client(&proxies, proxy, &h),
            Some("203.0.113.7:0".parse().expect("addr")),
            "the right-most address that is not a proxy"
        );
        assert_eq!(forwarded_client(&proxies, stranger, &h), None);
        assert_eq!(
            forwarded_client(&TrustedProxies::default(), proxy, &h),
            None
        );
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            "for=192.0.2.60;proto=https, for=\"[2001:db8::7]:4711\""
                .parse()
                .expect("value"),
        );
        assert_eq!(
            forwarded_client(&proxies, proxy, &h),
            Some("[2001:db8::7]:4711".parse().expect("addr"))
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "not-an-address".parse().expect("value"));
        assert_eq!(forwarded_client(&proxies, proxy, &h), None);
    }
}
