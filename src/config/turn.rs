//! The `[turn]` section of the configuration: typed, with defaults that make a fresh start work,
//! and validation messages that name the key.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::duration;
use signalbox_turn_proto::policy::Cidr;
pub use signalbox_turn_proto::ports::PortRange;
pub use signalbox_turn_proto::server::AllocationFamily;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    pub enabled: bool,
    /// UDP listener addresses (a string or a list); `[::]:PORT` serves both families.
    #[serde(deserialize_with = "addr_list")]
    pub listen: Vec<SocketAddr>,
    /// Realm of the long-term credentials; empty = `[server] public_host`.
    pub realm: String,
    /// REST-API shared secrets: the first mints credentials, all verify. Empty = random at start.
    pub secrets: Vec<String>,
    pub username_separator: String,
    /// Lifetime of the credentials signaling hands each peer; renewed at 80 % of it.
    #[serde(deserialize_with = "duration")]
    pub credential_ttl: Duration,
    pub strict_expiry: bool,
    #[serde(deserialize_with = "duration")]
    pub max_allocation_lifetime: Duration,
    #[serde(deserialize_with = "optional_ip")]
    pub relay_ip: Option<IpAddr>,
    #[serde(deserialize_with = "optional_ip")]
    pub external_ip: Option<IpAddr>,
    /// The IPv6 relay address when `relay_ip` is IPv4 (or empty); empty = found on the host.
    #[serde(deserialize_with = "optional_ip")]
    pub relay_ip_v6: Option<IpAddr>,
    /// The public IPv6 address of `relay_ip_v6` behind a 1:1 NAT (rare); empty = the local one.
    #[serde(deserialize_with = "optional_ip")]
    pub external_ip_v6: Option<IpAddr>,
    /// The relayed family of an Allocate that names none: "ipv4" (RFC 8656) or "keep".
    #[serde(deserialize_with = "allocation_family")]
    pub allocation_family: AllocationFamily,
    #[serde(deserialize_with = "port_range")]
    pub relay_ports: PortRange,
    pub user_quota: u32,
    pub total_quota: u32,
    /// Most live allocations from one client address (IPv4 address, IPv6 /64).
    pub max_allocations_per_ip: u32,
    /// Bits per second per allocation, 0 = no cap.
    pub max_bitrate: u64,
    #[serde(deserialize_with = "cidrs")]
    pub allowed_peer_ranges: Vec<Cidr>,
    #[serde(deserialize_with = "cidrs")]
    pub denied_peer_ranges: Vec<Cidr>,
    pub allow_loopback_peers: bool,
    /// Worker threads; 0 = one per available core.
    pub workers: usize,
    /// Under load, a worker handles what queued in this window in one pass; 0 = off.
    #[serde(deserialize_with = "duration")]
    pub batch_window: Duration,
    /// Answers to unauthenticated requests (challenges, 400s, UDP Bindings from sources without
    /// an allocation) per second and source.
    pub unauth_rate: u32,
    pub unauth_burst: u32,
    #[serde(deserialize_with = "duration")]
    pub nonce_lifetime: Duration,
    /// TURN over TCP listener addresses (a string or a list); empty = off.
    #[serde(deserialize_with = "addr_list")]
    pub listen_tcp: Vec<SocketAddr>,
    /// TURN over TLS (`turns:`) listener addresses (a string or a list); empty = off.
    #[serde(deserialize_with = "addr_list")]
    pub listen_tls: Vec<SocketAddr>,
    /// Read a PROXY protocol header (v1 or v2) on `listen_tcp` and `listen_tls` from the
    /// addresses in `[http] trusted_proxies`.
    pub proxy_protocol: bool,
    /// Serve TURN over TCP and TLS on the HTTPS listener too (one port for everything).
    pub one_port: bool,
    /// Time a stream client gets from accept to a successful Allocate, and to finish any
    /// message it has begun.
    #[serde(deserialize_with = "duration")]
    pub stream_handshake_timeout: Duration,
    /// An allocated stream connection that sends no whole message for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub stream_idle_timeout: Duration,
    /// Most TURN stream connections at once, and from one source IP.
    pub max_stream_connections: u32,
    pub max_stream_connections_per_ip: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, 3478))],
            realm: String::new(),
            secrets: Vec::new(),
            username_separator: ":".into(),
            credential_ttl: Duration::from_secs(600),
            strict_expiry: false,
            max_allocation_lifetime: Duration::from_secs(3600),
            relay_ip: None,
            external_ip: None,
            relay_ip_v6: None,
            external_ip_v6: None,
            allocation_family: AllocationFamily::Ipv4,
            relay_ports: PortRange {
                first: 49152,
                last: 65535,
            },
            user_quota: 12,
            total_quota: 10_000,
            max_allocations_per_ip: 1000,
            max_bitrate: 0,
            allowed_peer_ranges: Vec::new(),
            denied_peer_ranges: Vec::new(),
            allow_loopback_peers: false,
            workers: 0,
            batch_window: Duration::from_micros(200),
            unauth_rate: 50,
            unauth_burst: 200,
            nonce_lifetime: Duration::from_secs(600),
            listen_tcp: vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, 3478))],
            listen_tls: vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, 5349))],
            one_port: true,
            proxy_protocol: false,
            stream_handshake_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(600),
            max_stream_connections: 10_000,
            max_stream_connections_per_ip: 64,
        }
    }
}

impl TurnConfig {
    /// Checks what the types cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.listen.is_empty() {
            return Err(("turn.listen", "needs at least one address".into()));
        }
        if self.username_separator.chars().count() != 1 {
            return Err((
                "turn.username_separator",
                format!(
                    "`{}` must be exactly one character",
                    self.username_separator
                ),
            ));
        }
        if self
            .username_separator
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_whitespace() || c.is_control())
        {
            return Err((
                "turn.username_separator",
                "must not be a digit or white space (it follows the expiry digits)".into(),
            ));
        }
        if self.credential_ttl < Duration::from_secs(1) {
            return Err(("turn.credential_ttl", "must be at least 1s".into()));
        }
        if self.realm.contains('"') || self.realm.len() > 127 {
            return Err((
                "turn.realm",
                "must be under 128 bytes and contain no quotes".into(),
            ));
        }
        if self.secrets.iter().any(|s| s.is_empty()) {
            return Err(("turn.secrets", "an empty secret is not a secret".into()));
        }
        if self.max_allocation_lifetime < Duration::from_secs(600) {
            return Err((
                "turn.max_allocation_lifetime",
                "must be at least 10m, the default lifetime of RFC 8656".into(),
            ));
        }
        if let Some(ip) = self.relay_ip {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(("turn.relay_ip", format!("`{ip}` cannot be a relay address")));
            }
        }
        for (key, ip) in [
            ("turn.relay_ip_v6", self.relay_ip_v6),
            ("turn.external_ip_v6", self.external_ip_v6),
        ] {
            let Some(ip) = ip else { continue };
            if !ip.is_ipv6() || ip.is_unspecified() || ip.is_multicast() {
                return Err((key, format!("`{ip}` is not a usable IPv6 address")));
            }
        }
        if self.relay_ip.is_some_and(|ip| ip.is_ipv6()) && self.relay_ip_v6.is_some() {
            return Err((
                "turn.relay_ip_v6",
                "relay_ip is already the IPv6 relay address; leave one of them empty".into(),
            ));
        }
        if self.user_quota == 0 {
            return Err(("turn.user_quota", "must be at least 1".into()));
        }
        if self.total_quota == 0 {
            return Err(("turn.total_quota", "must be at least 1".into()));
        }
        if self.max_allocations_per_ip == 0 {
            return Err(("turn.max_allocations_per_ip", "must be at least 1".into()));
        }
        if self.batch_window > Duration::from_millis(5) {
            return Err((
                "turn.batch_window",
                "at most 5ms: a longer window delays media noticeably".into(),
            ));
        }
        if self.workers > 256 {
            return Err(("turn.workers", "at most 256".into()));
        }
        if self.unauth_rate == 0 || self.unauth_burst == 0 {
            return Err((
                "turn.unauth_rate",
                "unauth_rate and unauth_burst must be at least 1".into(),
            ));
        }
        if self.nonce_lifetime < Duration::from_secs(30) {
            return Err(("turn.nonce_lifetime", "must be at least 30s".into()));
        }
        if self.stream_handshake_timeout < Duration::from_secs(1) {
            return Err((
                "turn.stream_handshake_timeout",
                "must be at least 1s".into(),
            ));
        }
        if self.stream_idle_timeout < Duration::from_secs(1) {
            return Err(("turn.stream_idle_timeout", "must be at least 1s".into()));
        }
        if self.max_stream_connections == 0 {
            return Err(("turn.max_stream_connections", "must be at least 1".into()));
        }
        if self.max_stream_connections_per_ip == 0 {
            return Err((
                "turn.max_stream_connections_per_ip",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn separator(&self) -> char {
        self.username_separator.chars().next().unwrap_or(':')
    }
}

fn port_range<'de, D: Deserializer<'de>>(de: D) -> Result<PortRange, D::Error> {
    String::deserialize(de)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn allocation_family<'de, D: Deserializer<'de>>(de: D) -> Result<AllocationFamily, D::Error> {
    match String::deserialize(de)?.trim() {
        "ipv4" => Ok(AllocationFamily::Ipv4),
        "keep" => Ok(AllocationFamily::Keep),
        other => Err(serde::de::Error::custom(format!(
            "`{other}` is not \"ipv4\" or \"keep\""
        ))),
    }
}

fn optional_ip<'de, D: Deserializer<'de>>(de: D) -> Result<Option<IpAddr>, D::Error> {
    let s = String::deserialize(de)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an IP address")))
}

/// Serde adapter: one address (`"0.0.0.0:3478"`) or a list of them; `""` is the empty list.
fn addr_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let texts = match OneOrMany::deserialize(de).map_err(|_| {
        serde::de::Error::custom(
            "must be an address like \"0.0.0.0:3478\" or a list like [\"0.0.0.0:3478\", \"[::]:3478\"]",
        )
    })? {
        OneOrMany::One(s) if s.trim().is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(list) => list,
    };
    texts
        .iter()
        .map(|s| {
            s.trim().parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address like 0.0.0.0:3478 or [::]:3478 (an IP address, not a name)"
                ))
            })
        })
        .collect()
}

pub(super) fn cidrs<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Cidr>, D::Error> {
    Vec::<String>::deserialize(de)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn listeners_take_one_address_or_a_list() {
        let c = Config::parse(
            "[turn]\nlisten = \"127.0.0.1:3478\"\nlisten_tcp = \"\"\nlisten_tls = [\"127.0.0.1:5349\", \"[::1]:5349\"]\n",
            "c.toml",
        )
        .expect("parses");
        assert_eq!(c.turn.listen, vec!["127.0.0.1:3478".parse().expect("addr")]);
        assert!(c.turn.listen_tcp.is_empty());
        assert_eq!(c.turn.listen_tls.len(), 2);
        let e =
            Config::parse("[turn]\nlisten = \"localhost:3478\"\n", "c.toml").expect_err("a name");
        assert!(e.to_string().contains("turn.listen"), "{e}");
        assert!(e.to_string().contains("localhost:3478"), "{e}");
        let e = Config::parse("[turn]\nlisten_tcp = 3478\n", "c.toml").expect_err("a number");
        assert!(e.to_string().contains("a list like"), "{e}");
    }

    #[test]
    fn the_proxy_protocol_needs_trusted_proxies() {
        let src = crate::config::Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        for section in ["http", "turn"] {
            let c = Config::parse(&format!("[{section}]\nproxy_protocol = true\n"), "c.toml")
                .expect("parses");
            let e = c.validate(&src).expect_err("no trusted proxies");
            assert_eq!(
                e.key.as_deref(),
                Some(&*format!("{section}.proxy_protocol"))
            );
            assert!(e.to_string().contains("trusted_proxies"), "{e}");
        }
        let c = Config::parse(
            "[http]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
            "c.toml",
        )
        .expect("parses");
        assert_eq!(c.http.trusted_proxies.len(), 2);
        let e = Config::parse("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "c.toml")
            .expect_err("bad prefix");
        assert!(e.to_string().contains("http.trusted_proxies"), "{e}");
    }

    #[test]
    fn relay_ip_v6_must_be_an_ipv6_address() {
        let c = Config::parse("[turn]\nrelay_ip_v6 = \"192.0.2.1\"", "c.toml").expect("parses");
        assert_eq!(c.turn.validate().map_err(|e| e.0), Err("turn.relay_ip_v6"));
        let c = Config::parse(
            "[turn]\nrelay_ip = \"2001:db8::1\"\nrelay_ip_v6 = \"2001:db8::2\"",
            "c.toml",
        )
        .expect("parses");
        assert_eq!(c.turn.validate().map_err(|e| e.0), Err("turn.relay_ip_v6"));
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::parse("", "c.toml").expect("parses");
        assert!(c.turn.enabled);
        assert_eq!(c.turn.listen, vec!["[::]:3478".parse().expect("addr")]);
        assert_eq!(c.turn.relay_ports.to_string(), "49152-65535");
        assert_eq!(c.turn.user_quota, 12);
        assert_eq!(c.turn.listen_tcp, vec!["[::]:3478".parse().expect("addr")]);
        assert_eq!(c.turn.listen_tls, vec!["[::]:5349".parse().expect("addr")]);
        assert!(c.turn.one_port);
        assert!(c.turn.validate().is_ok());
    }

    #[test]
    fn the_shipped_config_file_parses_to_the_defaults() {
        let text = include_str!("../../config.toml");
        let c = Config::parse(text, "config.toml").expect("config.toml parses");
        let d = Config::default();
        assert_eq!(format!("{:?}", c.turn), format!("{:?}", d.turn));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::parse("[turn]\nrelay_ports = \"5-1\"\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("turn.relay_ports"));
        let e = Config::parse("[turn]\ndenied_peer_ranges = [\"x\"]\n", "c.toml").unwrap_err();
        assert!(e
            .key
            .as_deref()
            .unwrap_or("")
            .starts_with("turn.denied_peer_ranges"));
        let c = Config::parse("[turn]\nusername_separator = \"::\"\n", "c.toml").expect("parses");
        assert_eq!(c.turn.validate().unwrap_err().0, "turn.username_separator");
        let c = Config::parse("[turn]\nbatch_window = \"6ms\"\n", "c.toml").expect("parses");
        assert_eq!(c.turn.validate().unwrap_err().0, "turn.batch_window");
        let e = Config::parse("[turn]\nbatch_window = \"200 ns\"\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("turn.batch_window"));
        let c = Config::parse("[turn]\nbatch_window = \"0us\"\n", "c.toml").expect("parses");
        assert!(c.turn.batch_window.is_zero() && c.turn.validate().is_ok());
        let c = Config::parse("[turn]\nuser_quota = 0\n", "c.toml").expect("parses");
        assert_eq!(c.turn.validate().unwrap_err().0, "turn.user_quota");
        let c = Config::parse("[turn]\nstream_idle_timeout = \"0s\"\n", "c.toml").expect("parses");
        assert_eq!(c.turn.validate().unwrap_err().0, "turn.stream_idle_timeout");
        let c =
            Config::parse("[turn]\nmax_stream_connections_per_ip = 0\n", "c.toml").expect("parses");
        assert_eq!(
            c.turn.validate().unwrap_err().0,
            "turn.max_stream_connections_per_ip"
        );
    }
}
