//! Peer policy tests: every rule, every built-in range, both spellings of IPv4.
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
        "[2001:4860:4860::8888]:53",
        "[2001:db9::1]:1000",
        "[2003::1]:1000",
        "[2a00:1450::1]:443",
        "[3fff:1000::1]:1000",
        "[64:ff9b:2::1]:1000",
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

#[test]
fn every_added_ipv6_range_is_refused_by_default() {
    let p = default_policy();
    for (peer, range) in [
        ("[::a00:1]:1000", "::/96, IPv4-compatible"),
        ("[::808:808]:53", "::/96 embedding a public IPv4"),
        (
            "[64:ff9b:1::a9fe:a9fe]:80",
            "64:ff9b:1::/48, local-use NAT64",
        ),
        ("[64:ff9b:1:ffff::1]:1000", "64:ff9b:1::/48, last /64"),
        ("[100::1]:1000", "100::/64, discard-only"),
        ("[100::ffff:ffff:ffff:ffff]:1000", "100::/64, last address"),
        (
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:1000",
            "2001::/32, Teredo",
        ),
        ("[2001:0:ffff::1]:1000", "2001::/32, Teredo"),
        ("[2001:2::1]:1000", "2001:2::/48, benchmarking"),
        ("[2001:db8::1]:1000", "2001:db8::/32, documentation"),
        ("[2001:db8:ffff::1]:1000", "2001:db8::/32, documentation"),
        (
            "[2002:a9fe:a9fe::1]:80",
            "2002::/16, 6to4 of the metadata address",
        ),
        (
            "[2002:808:808::1]:53",
            "2002::/16, 6to4 of a public address",
        ),
        ("[3fff::1]:1000", "3fff::/20, documentation"),
        ("[3fff:fff::1]:1000", "3fff::/20, documentation"),
        ("[fec0::1]:1000", "fec0::/10, site-local"),
        ("[feff::1]:1000", "fec0::/10, site-local"),
        (
            "[64:ff9b::808:808]:53",
            "64:ff9b::/96, NAT64 of a public address",
        ),
    ] {
        assert_eq!(
            p.check(addr(peer), false),
            Verdict::Denied(PeerRefusal::SpecialRange),
            "{peer} ({range})"
        );
    }
}

/// A host with two interface addresses and 1:1 NAT, as the server builds it.
fn host_policy() -> PeerPolicy {
    PeerPolicy {
        listeners: vec![addr("0.0.0.0:3478")],
        own_addresses: vec![
            "93.184.216.34".parse().expect("ip"),
            "10.0.0.5".parse().expect("ip"),
            "2a01:4f8::5".parse().expect("ip"),
        ],
        ..PeerPolicy::default()
    }
}

fn refused_as_own(p: &PeerPolicy, peer: &str) -> bool {
    p.check(addr(peer), false) == Verdict::Denied(PeerRefusal::OwnListener)
}

#[test]
fn the_hosts_own_addresses_are_refused_on_every_port() {
    let p = host_policy();
    for peer in [
        "93.184.216.34:53",
        "93.184.216.34:11211",
        "[::ffff:93.184.216.34]:161",
        "[2a01:4f8::5]:53",
        "10.0.0.5:53",
    ] {
        assert!(refused_as_own(&p, peer), "{peer}");
    }
    assert_eq!(
        p.check(addr("93.184.216.35:53"), false),
        Verdict::Allowed,
        "the neighbour on the same network is not this host"
    );
}

#[test]
fn allowed_peer_ranges_never_open_the_host_itself() {
    let mut p = host_policy();
    p.allowed = vec![
        "10.0.0.0/8".parse().expect("cidr"),
        "93.184.216.0/24".parse().expect("cidr"),
        "0.0.0.0/0".parse().expect("cidr"),
        "::/0".parse().expect("cidr"),
    ];
    assert_eq!(p.check(addr("10.1.2.3:5000"), false), Verdict::Allowed);
    for peer in [
        "10.0.0.5:53",
        "93.184.216.34:53",
        "127.0.0.1:53",
        "127.53.0.1:53",
        "0.0.0.0:53",
        "[::1]:53",
        "[::]:53",
        "[::ffff:127.0.0.1]:53",
        "[2a01:4f8::5]:53",
    ] {
        assert!(refused_as_own(&p, peer), "{peer}");
    }
}

#[test]
fn allow_loopback_peers_lifts_the_own_host_rule_for_loopback_only() {
    let mut p = host_policy();
    p.allow_loopback = true;
    p.allowed = vec!["10.0.0.0/8".parse().expect("cidr")];
    assert_eq!(p.check(addr("127.0.0.1:53"), false), Verdict::Allowed);
    assert_eq!(p.check(addr("[::1]:53"), false), Verdict::Allowed);
    assert!(refused_as_own(&p, "10.0.0.5:53"), "not loopback");
    assert!(
        refused_as_own(&p, "0.0.0.0:53"),
        "unspecified is not loopback"
    );
    assert!(
        refused_as_own(&p, "127.0.0.1:3478"),
        "listener ports stay refused"
    );
}

#[test]
fn denied_ranges_win_over_everything_but_a_live_relayed_address() {
    let mut p = host_policy();
    p.allowed = vec!["8.8.0.0/16".parse().expect("cidr")];
    p.denied = vec!["8.8.8.0/24".parse().expect("cidr")];
    assert_eq!(
        p.check(addr("8.8.8.8:53"), false),
        Verdict::Denied(PeerRefusal::DeniedRange)
    );
    assert_eq!(p.check(addr("8.8.4.4:53"), false), Verdict::Allowed);
    assert_eq!(p.check(addr("8.8.8.8:50000"), true), Verdict::Allowed);
}

#[test]
fn per_packet_only_a_live_relayed_address_opens_a_relay_ip() {
    let p = host_policy();
    let relay = addr("93.184.216.34:50000");
    assert_eq!(
        p.check_packet(relay, Relayed::Live(relay)),
        Verdict::Allowed
    );
    assert_eq!(
        p.check_packet(addr("93.184.216.34:53"), Relayed::NotLive),
        Verdict::Denied(PeerRefusal::OwnListener)
    );
    assert_eq!(
        p.check_packet(addr("8.8.8.8:3478"), Relayed::Elsewhere),
        Verdict::Denied(PeerRefusal::OwnListener),
        "a listener port on a permitted IP"
    );
    assert_eq!(
        p.check_packet(addr("8.8.8.8:53"), Relayed::Elsewhere),
        Verdict::Allowed
    );
    let mut lo = host_policy();
    lo.allow_loopback = true;
    assert_eq!(
        lo.check_packet(addr("127.0.0.1:53"), Relayed::NotLive),
        Verdict::Allowed,
        "a loopback relay with allow_loopback_peers"
    );
    assert_eq!(
        lo.check_packet(addr("93.184.216.34:53"), Relayed::NotLive),
        Verdict::Denied(PeerRefusal::OwnListener)
    );
}

/// `host_policy` in a cluster whose other nodes have these relays, synced at `now_ms`.
fn clustered(relays: &[(&str, &str)]) -> (PeerPolicy, std::sync::Arc<ClusterRelays>) {
    let source = std::sync::Arc::new(ClusterRelays::default());
    let mut p = host_policy();
    p.cluster = ClusterPeers::new(source.clone());
    set_relays(&mut p, &source, relays, 0);
    (p, source)
}

fn set_relays(p: &mut PeerPolicy, source: &ClusterRelays, relays: &[(&str, &str)], now_ms: u64) {
    source.set(
        relays
            .iter()
            .map(|(ip, ports)| (ip.parse().expect("ip"), ports.parse().expect("range")))
            .collect(),
    );
    p.sync_cluster(now_ms);
}

#[test]
fn another_nodes_relay_range_is_a_peer_even_on_a_private_address_and_nothing_else_is() {
    let (p, _) = clustered(&[("10.0.0.7", "49152-49999")]);
    assert_eq!(p.check(addr("10.0.0.7:49152"), false), Verdict::Allowed);
    assert_eq!(p.check(addr("10.0.0.7:49999"), false), Verdict::Allowed);
    assert_eq!(
        p.check(addr("10.0.0.7:22"), false),
        Verdict::Denied(PeerRefusal::SpecialRange)
    );
    assert_eq!(
        p.check(addr("10.0.0.8:49152"), false),
        Verdict::Denied(PeerRefusal::SpecialRange)
    );
    assert_eq!(
        p.check_packet(addr("10.0.0.7:49500"), Relayed::Elsewhere),
        Verdict::Allowed
    );
    assert_eq!(
        p.check_packet(addr("10.0.0.7:6379"), Relayed::Elsewhere),
        Verdict::Denied(PeerRefusal::SpecialRange),
        "a permission for the relay's IP opens no other port"
    );
    assert_eq!(
        p.check(addr("10.0.0.7:3478"), false),
        Verdict::Denied(PeerRefusal::OwnListener),
        "our listener ports stay refused on every address"
    );
}

#[test]
fn a_node_on_this_host_is_a_peer_on_its_own_range_only() {
    let (p, _) = clustered(&[("10.0.0.5", "41000-41999")]);
    assert_eq!(p.check(addr("10.0.0.5:41000"), false), Verdict::Allowed);
    assert_eq!(
        p.check_packet(addr("10.0.0.5:41000"), Relayed::NotLive),
        Verdict::Allowed
    );
    assert_eq!(
        p.check(addr("10.0.0.5:40000"), false),
        Verdict::Denied(PeerRefusal::OwnListener)
    );
    assert_eq!(
        p.check_packet(addr("10.0.0.5:40000"), Relayed::NotLive),
        Verdict::Denied(PeerRefusal::OwnListener)
    );
}

#[test]
fn denied_ranges_win_over_another_nodes_relay() {
    let (mut p, _) = clustered(&[("10.0.0.7", "49152-49999")]);
    p.denied = vec!["10.0.0.0/24".parse().expect("cidr")];
    assert_eq!(
        p.check(addr("10.0.0.7:49152"), false),
        Verdict::Denied(PeerRefusal::DeniedRange)
    );
}

#[test]
fn a_node_that_left_opens_nothing_and_is_forgotten_once_its_permissions_are() {
    let (mut p, source) = clustered(&[("10.0.0.7", "49152-49999")]);
    set_relays(&mut p, &source, &[], 1_000);
    assert_eq!(
        p.check(addr("10.0.0.7:49152"), false),
        Verdict::Denied(PeerRefusal::SpecialRange)
    );
    assert_eq!(
        p.check_packet(addr("10.0.0.7:49152"), Relayed::Elsewhere),
        Verdict::Denied(PeerRefusal::SpecialRange),
        "a permission granted while it was a node relays nothing now"
    );
    set_relays(
        &mut p,
        &source,
        &[("10.0.0.9", "1-2")],
        1_000 + CLUSTER_RELAY_MEMORY_MS,
    );
    assert_eq!(
        p.check_packet(addr("10.0.0.7:49152"), Relayed::Elsewhere),
        Verdict::Allowed,
        "forgotten: per packet the IP is back to what its permission passed"
    );
}

#[test]
fn a_single_node_has_no_cluster_rule() {
    let mut p = host_policy();
    p.sync_cluster(0);
    assert_eq!(
        p.check(addr("10.0.0.7:49152"), false),
        Verdict::Denied(PeerRefusal::SpecialRange)
    );
}

mod agreement {
    //! `check_packet` is `check` for every address whose IP could hold a permission.
    use super::*;
    use crate::ports::PortRange;
    use crate::server::{LiveRelays, RelayPlan};
    use proptest::prelude::*;
    use std::sync::Arc;

    const RELAY: [u8; 4] = [10, 0, 0, 5];
    const PUBLIC: [u8; 4] = [93, 184, 216, 34];
    const LIVE_PORT: u16 = 50_002;

    fn plan() -> RelayPlan {
        let live = Arc::new(LiveRelays::default());
        live.insert(SocketAddr::from((RELAY, LIVE_PORT)));
        RelayPlan {
            v4: Some((IpAddr::from(RELAY), IpAddr::from(PUBLIC))),
            v6: Some((
                "2a01:4f8::5".parse().expect("ip"),
                "2a01:4f8::5".parse().expect("ip"),
            )),
            ports: PortRange {
                first: 50_000,
                last: 50_099,
            },
            workers: 1,
            live,
        }
    }

    fn ips() -> Vec<IpAddr> {
        [
            "10.0.0.5",
            "93.184.216.34",
            "::ffff:93.184.216.34",
            "2a01:4f8::5",
            "10.0.0.6",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "0.0.0.0",
            "::",
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "169.254.169.254",
            "192.168.1.1",
            "172.16.0.9",
            "2002:a9fe:a9fe::1",
            "64:ff9b::808:808",
            "2a00:1450::1",
            "fd00::1",
            "192.0.2.44",
        ]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect()
    }

    fn ports() -> Vec<u16> {
        vec![
            53, 3478, 5349, 50_000, 50_001, LIVE_PORT, 50_099, 50_100, 60_000, 60_050, 65_535,
        ]
    }

    /// Other nodes' relays: private, public, on this host's addresses, loopback.
    fn cluster_relays() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        prop::sample::subsequence(
            vec![
                ("10.0.0.6", "60000-60099"),
                ("192.168.1.1", "50000-50001"),
                ("93.184.216.34", "50100-50199"),
                ("10.0.0.5", "60000-60099"),
                ("127.0.0.1", "53-53"),
                ("8.8.8.8", "60000-60099"),
                ("fd00::1", "50000-50099"),
            ],
            0..4,
        )
    }

    fn policies() -> impl Strategy<Value = PeerPolicy> {
        let cidrs = prop::sample::subsequence(
            vec![
                "10.0.0.0/8",
                "93.184.216.0/24",
                "127.0.0.0/8",
                "8.8.8.0/24",
                "0.0.0.0/0",
                "::/0",
                "192.0.2.0/24",
                "2002::/16",
            ],
            0..4,
        );
        (cidrs.clone(), cidrs, any::<bool>()).prop_map(|(allowed, denied, allow_loopback)| {
            let parse = |v: Vec<&str>| v.iter().map(|c| c.parse().expect("cidr")).collect();
            let mut p = host_policy();
            p.allowed = parse(allowed);
            p.denied = parse(denied);
            p.allow_loopback = allow_loopback;
            // What `Core::new` adds.
            p.own_addresses
                .extend([IpAddr::from(RELAY), IpAddr::from(PUBLIC)]);
            p
        })
    }

    proptest! {
        /// Also while other nodes come and go: for every IP that could hold a permission,
        /// granted before the change or after it.
        #[test]
        fn check_packet_agrees_with_check_on_every_permitted_ip(
            mut policy in policies(),
            before in cluster_relays(),
            after in cluster_relays(),
        ) {
            let plan = plan();
            let permitted = |policy: &PeerPolicy, ip: IpAddr| {
                ports().into_iter().any(|port| {
                    let peer = SocketAddr::new(ip, port);
                    policy.check(peer, plan.ours(peer).is_some()) == Verdict::Allowed
                })
            };
            let source = Arc::new(ClusterRelays::default());
            policy.cluster = ClusterPeers::new(source.clone());
            set_relays(&mut policy, &source, &before, 0);
            let permitted_before: Vec<IpAddr> =
                ips().into_iter().filter(|ip| permitted(&policy, *ip)).collect();
            set_relays(&mut policy, &source, &after, 1_000);
            for ip in ips() {
                if !permitted_before.contains(&ip) && !permitted(&policy, ip) {
                    continue;
                }
                for port in ports() {
                    let peer = SocketAddr::new(ip, port);
                    prop_assert_eq!(
                        policy.check_packet(peer, plan.locate(peer)),
                        policy.check(peer, plan.ours(peer).is_some()),
                        "{} with {:?}", peer, policy
                    );
                }
            }
        }
    }
}
