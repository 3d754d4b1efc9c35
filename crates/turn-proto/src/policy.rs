//! Which peer addresses a TURN allocation may talk to.
//!
//! A TURN server is a packet launcher sitting inside someone's network: without a policy any
//! authenticated user (in open mode, any visitor of the web page) could reach the cloud metadata
//! service, the operator's LAN, or services on the relay host itself that the cloud firewall
//! keeps from the internet (DNS, memcached, SNMP, the server's own STUN port). So the default
//! refuses this host and every special-purpose range of RFC 6890 and the IANA registries, in
//! IPv4, IPv6 and IPv4-mapped IPv6 form. The operator adjusts it with `allowed_peer_ranges`
//! (wins over the built-in list, e.g. for a LAN install) and `denied_peer_ranges` (wins over
//! everything else); neither opens this host.
//!
//! Order of the decision, first match wins:
//! 1. a relayed transport address of a live allocation on this server (exact IP *and* port)
//!    → allowed: that traffic never leaves the process;
//! 2. one of our listener addresses (IP and port; a wildcard listener's port on any IP, as this
//!    host may be that IP behind a NAT) → denied;
//!
//!    Rule 2a, in a cluster: another node's relay address with a port in that node's relay
//!    port range ([`ClusterPeers`]) → allowed, unless the IP is in `denied_peer_ranges`:
//!    relay-to-relay between nodes works even over private addresses or on one host, while
//!    every other port of those addresses goes through the rules below;
//!
//! 3. this host ([`PeerPolicy::own_addresses`]: every interface address, `relay_ip`,
//!    `external_ip`; plus all of loopback and the unspecified address) → denied, even inside
//!    `allowed_peer_ranges`; `allow_loopback_peers` lifts this for loopback addresses only;
//! 4. `denied_peer_ranges` → denied;
//! 5. `allowed_peer_ranges` → allowed;
//! 6. loopback with `allow_loopback_peers` → allowed;
//! 7. the built-in special-purpose ranges ([`SPECIAL_PURPOSE`]) → denied;
//! 8. anything else → allowed.
//!
//! # One decision, two costs
//! CreatePermission and ChannelBind run all of it ([`PeerPolicy::check`]). Every packet —
//! ChannelData and Send indications to a peer, datagrams from a peer — runs
//! [`PeerPolicy::check_packet`], which must cost a few comparisons: no lock, no allocation, no
//! scan of range lists. It is the same decision because a packet only reaches it after the
//! allocation's permission for the peer's IP, and a permission is installed only when `check`
//! allowed that IP with some port. Rules 3 to 8 depend on the IP alone and on configuration
//! fixed for the core's life, so they passed then and cannot have changed. What can differ per
//! port or over time is rules 1 and 2 and, for this host, which port is a live relayed address.
//! This host's addresses only ever get a permission through rule 1, which only matches the
//! relay IPs, so per packet "this host" narrows to "the relay IPs": [`Relayed`] answers that
//! together with rule 1 from the relay plan (two to four comparisons and one atomic load). A
//! test checks that both functions agree for every permitted IP.
//!
//! Rule 2a depends on the port and changes while the server runs (nodes come and go), so the
//! per-packet check has to apply it too: a packet to or from an IP that is, or was, another
//! node's relay address is allowed on that node's current port range, and otherwise judged by
//! the whole of [`PeerPolicy::check`] (a scan of the lists, paid only for those few IPs). A
//! node that leaves the cluster stays listed without ports ("was") until no permission it could
//! have opened is left (twice the permission lifetime), so a permission granted under rule 2a
//! never opens the other ports of a private address.
//!
//! # 6to4, Teredo, NAT64
//! Their prefixes are refused outright (not only when the IPv4 address they embed is
//! special-purpose): a packet sent into a translator reaches whatever IPv4 address the
//! translator reaches, including this host through a hairpin, so checking the embedded address
//! would trust routing this server cannot see; and a peer behind one has a native address the
//! relay can use instead (6to4 is deprecated, RFC 7526). An operator who does need one lists
//! it in `allowed_peer_ranges`. IPv4-compatible addresses (`::a.b.c.d`, deprecated by RFC 4291)
//! are refused outright for the same reason.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ports::PortRange;

pub use crate::counters::PeerRefusal;

/// An IP network such as `10.0.0.0/8` or `fc00::/7`. Host bits are cleared on parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// An IPv4 network, for constant tables such as [`SPECIAL_PURPOSE`].
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

/// The built-in deny list (rule 7). Loopback is listed too; `allow_loopback_peers` lifts it.
pub const SPECIAL_PURPOSE: &[Cidr] = &[
    Cidr::v4([0, 0, 0, 0], 8),                       // "this network"
    Cidr::v4([10, 0, 0, 0], 8),                      // RFC 1918
    Cidr::v4([100, 64, 0, 0], 10),                   // carrier-grade NAT, RFC 6598
    Cidr::v4([127, 0, 0, 0], 8),                     // loopback
    Cidr::v4([169, 254, 0, 0], 16),                  // link-local, cloud metadata
    Cidr::v4([172, 16, 0, 0], 12),                   // RFC 1918
    Cidr::v4([192, 0, 0, 0], 24),                    // IETF protocol assignments
    Cidr::v4([192, 0, 2, 0], 24),                    // TEST-NET-1
    Cidr::v4([192, 168, 0, 0], 16),                  // RFC 1918
    Cidr::v4([198, 18, 0, 0], 15),                   // benchmarking
    Cidr::v4([198, 51, 100, 0], 24),                 // TEST-NET-2
    Cidr::v4([203, 0, 113, 0], 24),                  // TEST-NET-3
    Cidr::v4([224, 0, 0, 0], 4),                     // multicast
    Cidr::v4([240, 0, 0, 0], 4),                     // reserved, includes broadcast 255.255.255.255
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),         // ::1
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),         // ::
    Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),          // IPv4-compatible ::a.b.c.d, deprecated
    Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),  // NAT64 well-known prefix, RFC 6052
    Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // NAT64 local use, RFC 8215
    Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only, RFC 6666
    Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),     // Teredo, RFC 4380
    Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),     // benchmarking, RFC 5180
    Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation, RFC 3849
    Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),     // 6to4, RFC 3056
    Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation, RFC 9637
    Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local
    Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
    Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site-local, deprecated (RFC 3879)
    Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
];

/// The peer policy of one server, built once from the configuration and the host's addresses.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// `allowed_peer_ranges` (rule 5).
    pub allowed: Vec<Cidr>,
    /// `denied_peer_ranges` (rule 4).
    pub denied: Vec<Cidr>,
    /// `allow_loopback_peers`: lifts rules 3 and 7 for loopback addresses (rule 6).
    pub allow_loopback: bool,
    /// The server's own listener addresses (`0.0.0.0:3478` matches port 3478 on any IP).
    pub listeners: Vec<SocketAddr>,
    /// This host's addresses (rule 3): every interface address, `relay_ip` and `external_ip`.
    /// The core adds its relay addresses itself; loopback and the unspecified address count
    /// whether listed or not.
    pub own_addresses: Vec<IpAddr>,
    /// The other nodes' relays, in a cluster (rule 2a); empty on a single node.
    pub cluster: ClusterPeers,
}

/// The relays of the other nodes of a cluster as one worker's policy sees them (rule 2a), kept
/// current from a shared [`ClusterRelays`] by [`PeerPolicy::sync_cluster`].
#[derive(Clone, Debug, Default)]
pub struct ClusterPeers {
    /// Where the server publishes the current list; `None` on a single node.
    pub source: Option<Arc<ClusterRelays>>,
    generation: u64,
    relays: Vec<ClusterRelay>,
}

impl ClusterPeers {
    /// Rule 2a fed from `source`, which the server keeps current.
    pub fn new(source: Arc<ClusterRelays>) -> ClusterPeers {
        ClusterPeers {
            source: Some(source),
            generation: 0,
            relays: Vec::new(),
        }
    }
}

/// One relay IP of another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClusterRelay {
    ip: IpAddr,
    /// Its node's relay port range; `None` once no node has it (judged by the other rules).
    ports: Option<PortRange>,
    /// When (core clock, ms) it stopped being a relay, for forgetting it.
    gone_at: Option<u64>,
}

/// How long an IP that stopped being another node's relay stays listed: twice the permission
/// lifetime (RFC 8656 §9), after which no permission granted under rule 2a can be alive.
pub const CLUSTER_RELAY_MEMORY_MS: u64 =
    2 * crate::allocation::PERMISSION_LIFETIME.as_millis() as u64;

/// The other nodes' relay addresses and port ranges, written by the server from the cluster
/// registry and read by every worker; a worker takes a copy only when the generation moved,
/// so the per-packet cost is one atomic load.
#[derive(Debug, Default)]
pub struct ClusterRelays {
    generation: AtomicU64,
    list: Mutex<Vec<(IpAddr, PortRange)>>,
}

impl ClusterRelays {
    /// Replaces the list (IPv4-mapped addresses are taken as IPv4); a list equal to the current
    /// one changes nothing.
    pub fn set(&self, mut list: Vec<(IpAddr, PortRange)>) {
        for (ip, _) in &mut list {
            *ip = canonical(*ip);
        }
        list.sort_by_key(|(ip, r)| (*ip, r.first, r.last));
        list.dedup();
        let mut current = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if *current != list {
            *current = list;
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> (u64, Vec<(IpAddr, PortRange)>) {
        let list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        (self.generation(), list.clone())
    }
}

/// The outcome of [`PeerPolicy::check`], with the reason for the counters and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The relay may send to the peer and deliver what it sends.
    Allowed,
    /// The relay must not, for this reason.
    Denied(PeerRefusal),
}

/// What the relay plan says about a peer address: whether it is one of this server's relayed
/// addresses. Cheap to compute per packet (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// The relayed transport address of a live allocation of this server; the local address
    /// its socket is bound to.
    Live(SocketAddr),
    /// On one of the relay IPs (local or advertised), but no live allocation holds the port:
    /// this host itself.
    NotLive,
    /// Not on a relay IP.
    Elsewhere,
}

impl PeerRefusal {
    /// Why, in words for the log.
    pub fn describe(self) -> &'static str {
        match self {
            PeerRefusal::OwnListener => "the peer is this host itself (one of its addresses or listener ports) and not a live relayed address",
            PeerRefusal::DeniedRange => "the peer is in denied_peer_ranges",
            PeerRefusal::SpecialRange => "the peer is in a special-purpose range (private, loopback, link-local, multicast, documentation, translation or reserved)",
            PeerRefusal::FamilyMismatch => "the peer's address family differs from the relayed address's",
        }
    }
}

impl PeerPolicy {
    /// The whole decision for `peer` (rules 1–8); `is_our_relay` says whether it is the
    /// relayed address of a live allocation on this server. For CreatePermission and
    /// ChannelBind.
    pub fn check(&self, peer: SocketAddr, is_our_relay: bool) -> Verdict {
        if let Some(verdict) = self.port_rules(peer, is_our_relay) {
            return verdict;
        }
        let ip = canonical(peer.ip());
        if self.cluster_relay(peer) == Some(true) && !self.denied.iter().any(|c| c.contains(ip)) {
            return Verdict::Allowed;
        }
        if self.is_own(ip) && !self.loopback_lifted(ip) {
            return Verdict::Denied(PeerRefusal::OwnListener);
        }
        if self.denied.iter().any(|c| c.contains(ip)) {
            return Verdict::Denied(PeerRefusal::DeniedRange);
        }
        if self.allowed.iter().any(|c| c.contains(ip)) || self.loopback_lifted(ip) {
            return Verdict::Allowed;
        }
        if SPECIAL_PURPOSE.iter().any(|c| c.contains(ip)) {
            return Verdict::Denied(PeerRefusal::SpecialRange);
        }
        Verdict::Allowed
    }

    /// The decision for one packet to or from `peer`, whose IP holds a live permission: the
    /// same as [`PeerPolicy::check`] (see the module notes), in a few comparisons.
    pub fn check_packet(&self, peer: SocketAddr, relayed: Relayed) -> Verdict {
        let live = matches!(relayed, Relayed::Live(_));
        if let Some(verdict) = self.port_rules(peer, live) {
            return verdict;
        }
        // The permission's IP passed rule 2a or rules 3-8: only the whole check says which
        // applies to this port now (in range, it stops at rule 2a after the deny list).
        if self.cluster_relay(peer).is_some() {
            return self.check(peer, false);
        }
        if relayed == Relayed::NotLive && !self.loopback_lifted(canonical(peer.ip())) {
            return Verdict::Denied(PeerRefusal::OwnListener);
        }
        Verdict::Allowed
    }

    /// Takes the current list of other nodes' relays if it changed, at `now_ms` on the core's
    /// clock: IPs no longer listed stay, without ports, for [`CLUSTER_RELAY_MEMORY_MS`].
    pub fn sync_cluster(&mut self, now_ms: u64) {
        let Some(source) = &self.cluster.source else {
            return;
        };
        if source.generation() == self.cluster.generation {
            return;
        }
        let (generation, list) = source.snapshot();
        let mut relays: Vec<ClusterRelay> = list
            .iter()
            .map(|&(ip, ports)| ClusterRelay {
                ip,
                ports: Some(ports),
                gone_at: None,
            })
            .collect();
        for old in &self.cluster.relays {
            let listed = relays.iter().any(|r| r.ip == old.ip);
            let gone_at = old.gone_at.unwrap_or(now_ms);
            if !listed && now_ms.saturating_sub(gone_at) < CLUSTER_RELAY_MEMORY_MS {
                relays.push(ClusterRelay {
                    ip: old.ip,
                    ports: None,
                    gone_at: Some(gone_at),
                });
            }
        }
        self.cluster.relays = relays;
        self.cluster.generation = generation;
    }

    /// Rule 2a: `None` when `peer`'s IP is not (and was not lately) another node's relay;
    /// otherwise whether its port is in that node's current relay range.
    fn cluster_relay(&self, peer: SocketAddr) -> Option<bool> {
        if self.cluster.relays.is_empty() {
            return None;
        }
        let ip = canonical(peer.ip());
        let mut found = None;
        for r in self.cluster.relays.iter().filter(|r| r.ip == ip) {
            let in_range = r.ports.is_some_and(|p| p.contains(peer.port()));
            found = Some(found.unwrap_or(false) || in_range);
        }
        found
    }

    /// Rules 1 and 2, the ones that depend on the port.
    fn port_rules(&self, peer: SocketAddr, is_our_relay: bool) -> Option<Verdict> {
        if is_our_relay {
            return Some(Verdict::Allowed);
        }
        let ip = canonical(peer.ip());
        let listener = self.listeners.iter().any(|l| {
            l.port() == peer.port() && (l.ip().is_unspecified() || canonical(l.ip()) == ip)
        });
        listener.then_some(Verdict::Denied(PeerRefusal::OwnListener))
    }

    /// Whether `ip` (canonical) is this host: listed, loopback, or unspecified (which the
    /// kernel delivers locally).
    fn is_own(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.is_unspecified()
            || self.own_addresses.iter().any(|own| canonical(*own) == ip)
    }

    fn loopback_lifted(&self, ip: IpAddr) -> bool {
        self.allow_loopback && ip.is_loopback()
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

/// The unit every per-address limit counts (connection caps, rate limits): an IPv4 address,
/// or the /64 of an IPv6 address, since one host or one site usually holds a whole /64 and
/// counting single IPv6 addresses would be no limit at all. An IPv4-mapped address
/// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 clients) counts as its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    /// The key of a client address.
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

#[cfg(test)]
mod tests;
