//! Which peer addresses a TURN allocation may talk to.
//!
//! A TURN server is a packet launcher sitting inside someone's network: without a policy any
//! authenticated user could reach the cloud metadata service, the operator's LAN or the server's
//! own loopback services. So the default refuses every special-purpose range of RFC 6890 and
//! the IANA registries, in IPv4, IPv6 and IPv4-mapped IPv6 form, plus the server's own listener
//! ports. The operator adjusts it with `allowed_peer_ranges` (wins over the defaults, e.g. for a
//! LAN install) and `denied_peer_ranges` (wins over everything else). A relayed address of this
//! very server is always allowed: that traffic never leaves the process.
//!
//! Order of the decision, first match wins:
//! 1. one of our relayed addresses → allowed;
//! 2. one of our listener addresses (IP and port) → denied;
//! 3. `denied_peer_ranges` → denied;
//! 4. `allowed_peer_ranges` → allowed;
//! 5. loopback with `allow_loopback_peers` → allowed;
//! 6. the built-in special-purpose ranges → denied;
//! 7. anything else → allowed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

pub use crate::counters::PeerRefusal;

/// An IP network such as `10.0.0.0/8` or `fc00::/7`. Host bits are cleared on parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub const fn v4(a: [u8; 4], prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let s = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )),
            prefix,
        }
    }

    /// True when `ip` lies in this network. An IPv4 network also matches the IPv4-mapped IPv6
    /// form of its addresses (`::ffff:10.0.0.1`), so the two spellings cannot be played off.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a text is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a network like 10.0.0.0/8, fd00::/8 or a single address")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/PREFIX`, or a bare address meaning a single host.
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask(a.octets(), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(a.octets(), prefix))),
        };
        Ok(Cidr { addr, prefix })
    }
}

/// The built-in deny list (step 6). Loopback is listed too; `allow_loopback_peers` lifts it.
pub const SPECIAL_PURPOSE: &[Cidr] = &[
    Cidr::v4([0, 0, 0, 0], 8),                      // "this network"
    Cidr::v4([10, 0, 0, 0], 8),                     // RFC 1918
    Cidr::v4([100, 64, 0, 0], 10),                  // carrier-grade NAT, RFC 6598
    Cidr::v4([127, 0, 0, 0], 8),                    // loopback
    Cidr::v4([169, 254, 0, 0], 16),                 // link-local, cloud metadata
    Cidr::v4([172, 16, 0, 0], 12),                  // RFC 1918
    Cidr::v4([192, 0, 0, 0], 24),                   // IETF protocol assignments
    Cidr::v4([192, 0, 2, 0], 24),                   // TEST-NET-1
    Cidr::v4([192, 168, 0, 0], 16),                 // RFC 1918
    Cidr::v4([198, 18, 0, 0], 15),                  // benchmarking
    Cidr::v4([198, 51, 100, 0], 24),                // TEST-NET-2
    Cidr::v4([203, 0, 113, 0], 24),                 // TEST-NET-3
    Cidr::v4([224, 0, 0, 0], 4),                    // multicast
    Cidr::v4([240, 0, 0, 0], 4),                    // reserved, includes broadcast 255.255.255.255
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),        // ::1
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),        // ::
    Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64, would reach IPv4 ranges above
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),     // unique local
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),    // link-local
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),     // multicast
];

/// The peer policy of one server. Cheap to query; built once from the configuration.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    pub allowed: Vec<Cidr>,
    pub denied: Vec<Cidr>,
    pub allow_loopback: bool,
    /// The server's own listener addresses (`0.0.0.0:3478` matches port 3478 on any IP).
    pub listeners: Vec<SocketAddr>,
}

/// The outcome of [`PeerPolicy::check`], with the reason in words for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied(PeerRefusal),
}

impl PeerRefusal {
    /// Why, in words for the log.
    pub fn describe(self) -> &'static str {
        match self {
            PeerRefusal::OwnListener => "the peer is one of this server's own listeners",
            PeerRefusal::DeniedRange => "the peer is in denied_peer_ranges",
            PeerRefusal::SpecialRange => "the peer is in a special-purpose range (private, loopback, link-local, multicast or reserved)",
            PeerRefusal::FamilyMismatch => "the peer's address family differs from the relayed address's",
        }
    }
}

impl PeerPolicy {
    /// Decides for `peer`; `is_our_relay` says whether it is a relayed address of this server.
    pub fn check(&self, peer: SocketAddr, is_our_relay: bool) -> Verdict {
        if is_our_relay {
            return Verdict::Allowed;
        }
        let ip = canonical(peer.ip());
        if self.listeners.iter().any(|l| {
            l.port() == peer.port() && (l.ip().is_unspecified() || canonical(l.ip()) == ip)
        }) {
            return Verdict::Denied(PeerRefusal::OwnListener);
        }
        if self.denied.iter().any(|c| c.contains(ip)) {
            return Verdict::Denied(PeerRefusal::DeniedRange);
        }
        if self.allowed.iter().any(|c| c.contains(ip)) {
            return Verdict::Allowed;
        }
        if self.allow_loopback && ip.is_loopback() {
            return Verdict::Allowed;
        }
        if SPECIAL_PURPOSE.iter().any(|c| c.contains(ip)) {
            return Verdict::Denied(PeerRefusal::SpecialRange);
        }
        Verdict::Allowed
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4 so that one rule covers both spellings.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let m = 0xffu8 << (8 - rest);
    (a[full] & m) == (b[full] & m)
}

fn mask<const N: usize>(mut octets: [u8; N], prefix: u8) -> [u8; N] {
    for (i, o) in octets.iter_mut().enumerate() {
        let bits = (i as u32) * 8;
        let keep = u32::from(prefix).saturating_sub(bits).min(8);
        *o &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    octets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy {
            listeners: vec![addr("0.0.0.0:3478"), addr("[::]:3479")],
            ..PeerPolicy::default()
        }
    }

    fn denied(p: &PeerPolicy, peer: &str) -> bool {
        matches!(p.check(addr(peer), false), Verdict::Denied(_))
    }

    #[test]
    fn every_special_purpose_range_is_refused_by_default() {
        let p = default_policy();
        for peer in [
            "0.0.0.0:1000",
            "0.1.2.3:1000",
            "10.0.0.1:1000",
            "10.255.255.255:1000",
            "100.64.0.1:1000",
            "100.127.255.254:1000",
            "127.0.0.1:1000",
            "127.1.2.3:1000",
            "169.254.169.254:80",
            "172.16.0.1:1000",
            "172.31.255.255:1000",
            "192.0.0.8:1000",
            "192.0.2.1:1000",
            "192.168.1.1:1000",
            "198.18.0.1:1000",
            "198.19.255.255:1000",
            "198.51.100.7:1000",
            "203.0.113.9:1000",
            "224.0.0.251:5353",
            "239.255.255.250:1900",
            "240.0.0.1:1000",
            "255.255.255.255:1000",
            "[::1]:1000",
            "[::]:1000",
            "[64:ff9b::a00:1]:1000",
            "[fc00::1]:1000",
            "[fd12:3456::1]:1000",
            "[fe80::1]:1000",
            "[ff02::1]:1000",
        ] {
            assert!(denied(&p, peer), "{peer} should be denied");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_forms_are_refused_like_their_ipv4_address() {
        let p = default_policy();
        for peer in [
            "[::ffff:127.0.0.1]:1000",
            "[::ffff:10.0.0.1]:1000",
            "[::ffff:169.254.169.254]:80",
            "[::ffff:192.168.0.1]:1000",
            "[::ffff:255.255.255.255]:1000",
        ] {
            assert!(denied(&p, peer), "{peer} should be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = default_policy();
        for peer in [
            "1.1.1.1:53",
            "8.8.8.8:3480",
            "100.63.255.255:1000",
            "100.128.0.0:1000",
            "172.15.255.255:1000",
            "172.32.0.0:1000",
            "198.17.255.255:1000",
            "198.20.0.0:1000",
            "223.255.255.255:1000",
            "[2001:db8::1]:1000",
            "[2a00:1450::1]:443",
            "[::ffff:8.8.8.8]:53",
        ] {
            assert_eq!(p.check(addr(peer), false), Verdict::Allowed, "{peer}");
        }
    }

    #[test]
    fn the_servers_own_listener_ports_are_refused_on_any_address() {
        let p = default_policy();
        assert!(denied(&p, "8.8.8.8:3478"));
        assert!(denied(&p, "[2001:db8::1]:3479"));
        assert!(!denied(&p, "8.8.8.8:3477"));
        let specific = PeerPolicy {
            listeners: vec![addr("203.0.114.5:3478")],
            ..PeerPolicy::default()
        };
        assert!(denied(&specific, "203.0.114.5:3478"));
        assert!(denied(&specific, "[::ffff:203.0.114.5]:3478"));
        assert!(!denied(&specific, "203.0.114.6:3478"));
    }

    #[test]
    fn loopback_is_allowed_only_when_configured_and_only_loopback() {
        let mut p = default_policy();
        p.allow_loopback = true;
        assert!(!denied(&p, "127.0.0.1:5000"));
        assert!(!denied(&p, "[::1]:5000"));
        assert!(!denied(&p, "[::ffff:127.0.0.1]:5000"));
        assert!(denied(&p, "10.0.0.1:5000"));
        assert!(denied(&p, "127.0.0.1:3478"), "listeners stay refused");
    }

    #[test]
    fn allowed_ranges_open_a_lan_and_denied_ranges_win_over_them() {
        let mut p = default_policy();
        p.allowed = vec!["192.168.0.0/16".parse().expect("cidr")];
        p.denied = vec!["192.168.5.0/24".parse().expect("cidr")];
        assert!(!denied(&p, "192.168.1.10:5000"));
        assert!(denied(&p, "192.168.5.10:5000"));
        assert!(denied(&p, "10.0.0.1:5000"));
        p.denied.push("8.8.0.0/16".parse().expect("cidr"));
        assert!(denied(&p, "8.8.8.8:53"));
        assert!(denied(&p, "[::ffff:8.8.8.8]:53"));
    }

    #[test]
    fn our_own_relayed_addresses_are_always_allowed() {
        let mut p = default_policy();
        p.denied = vec!["0.0.0.0/0".parse().expect("cidr")];
        assert_eq!(p.check(addr("10.0.0.5:50000"), true), Verdict::Allowed);
        assert!(denied(&p, "10.0.0.5:50000"));
    }

    #[test]
    fn cidr_parsing_clears_host_bits_and_rejects_nonsense() {
        let c: Cidr = "10.1.2.3/8".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "fd00::1/8".parse().expect("cidr");
        assert_eq!(c.to_string(), "fd00::/8");
        let host: Cidr = "1.2.3.4".parse().expect("cidr");
        assert!(host.contains("1.2.3.4".parse().expect("ip")));
        assert!(!host.contains("1.2.3.5".parse().expect("ip")));
        let odd: Cidr = "10.0.0.0/13".parse().expect("cidr");
        assert!(odd.contains("10.7.255.255".parse().expect("ip")));
        assert!(!odd.contains("10.8.0.0".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0/8", "1.2.3.4/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let zero: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(zero.contains("255.1.2.3".parse().expect("ip")));
    }
}

/// The unit every per-address limit counts (connection caps, rate limits): an IPv4 address,
/// or the /64 of an IPv6 address, since one host or one site usually holds a whole /64 and
/// counting single IPv6 addresses would be no limit at all. An IPv4-mapped address
/// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 clients) counts as its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                AddrKey(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => AddrKey(v4),
        }
    }
}

impl fmt::Display for AddrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}
