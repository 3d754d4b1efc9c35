//! The peer policy on every packet path: this host is refused as a peer whatever
//! `allowed_peer_ranges` says, except the exact relayed address of a live allocation, and
//! that is decided per packet, not per permission.

use super::*;

/// An "interface address" of the host besides the relay addresses.
const HOST_IP: &str = "198.51.100.250";

/// A policy that allows the ranges of the relay addresses and of the host's interface, so
/// that only the own-host rule can refuse them; and a listener on every address.
fn open_policy() -> PeerPolicy {
    PeerPolicy {
        allowed: ["192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/24"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect(),
        listeners: vec![addr("0.0.0.0:3478")],
        own_addresses: vec![HOST_IP.parse().expect("ip")],
        ..PeerPolicy::default()
    }
}

fn relay_ip_port(port: u16) -> String {
    format!("{}:{port}", IpAddr::from(RELAY_IP))
}

impl Harness {
    fn send_indication(&mut self, from: &str, peer: &str, data: &[u8]) -> (Action, Vec<u8>) {
        let tid = self.next_tid();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Method::SEND, Class::Indication, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, addr(peer))
            .attr(attr::DATA, data);
        w.finish();
        self.client(from, &buf)
    }

    fn own_host_refusals(&self) -> u64 {
        self.core
            .counters()
            .peer_refusals
            .get(PeerRefusal::OwnListener)
    }
}

#[test]
fn create_permission_refuses_the_host_itself_even_inside_allowed_ranges() {
    let mut h = harness_with(12, open_policy());
    let (c, _, relayed) = h.allocated(ALICE, "alice");
    let public_53 = format!("{}:53", relayed.ip());
    let host_53 = format!("{HOST_IP}:53");
    for peer in [relay_ip_port(53).as_str(), &public_53, &host_53] {
        assert_eq!(h.permit(ALICE, &c, &[peer]).code, Some(403), "{peer}");
    }
    assert_eq!(h.own_host_refusals(), 3);
    assert_eq!(
        h.permit(ALICE, &c, &["192.0.2.11:53"]).class,
        Class::Success,
        "a neighbour in the allowed range is not this host"
    );
}

#[test]
fn channel_bind_refuses_the_host_itself_but_binds_a_live_relayed_address() {
    let mut h = harness_with(12, open_policy());
    let (c, _, _) = h.allocated(ALICE, "alice");
    let (_, _, bob_relayed) = h.allocated(BOB, "bob");
    assert_eq!(
        h.bind(ALICE, &c, 0x4000, &relay_ip_port(53)).code,
        Some(403)
    );
    let idle = relay_ip_port(bob_relayed.port() + 1);
    assert_eq!(h.bind(ALICE, &c, 0x4001, &idle).code, Some(403));
    assert_eq!(
        h.bind(ALICE, &c, 0x4002, &bob_relayed.to_string()).class,
        Class::Success
    );
}

#[test]
fn a_send_indication_to_another_port_of_the_relay_ip_is_dropped() {
    let mut h = harness_with(12, open_policy());
    let (c, _, alice_relayed) = h.allocated(ALICE, "alice");
    let (b, _, bob_relayed) = h.allocated(BOB, "bob");
    assert_eq!(
        h.permit(BOB, &b, &[&alice_relayed.to_string()]).class,
        Class::Success
    );
    // The attack: a permission for the relay IP through another allocation's address...
    assert_eq!(
        h.permit(ALICE, &c, &[&relay_ip_port(bob_relayed.port())])
            .class,
        Class::Success
    );
    assert_eq!(
        h.permit(ALICE, &c, &[&bob_relayed.to_string()]).class,
        Class::Success
    );
    // ...then the host's DNS, its STUN port, an idle relay port, in both spellings.
    for peer in [
        relay_ip_port(53),
        relay_ip_port(3478),
        relay_ip_port(bob_relayed.port() + 1),
        format!("{}:53", bob_relayed.ip()),
        format!("[::ffff:{}]:53", IpAddr::from(RELAY_IP)),
    ] {
        assert_eq!(
            h.send_indication(ALICE, &peer, b"query").0,
            Action::Nothing,
            "{peer}"
        );
    }
    // The relayed exchange itself still works, in memory.
    let (action, bytes) = h.send_indication(ALICE, &bob_relayed.to_string(), b"hello");
    assert!(
        matches!(action, Action::Send { via: Via::Listener(_), to, .. } if to == addr(BOB)),
        "{action:?}"
    );
    let msg = MessageRef::parse(&bytes).expect("Data indication");
    assert_eq!(msg.get(attr::DATA), Some(&b"hello"[..]));
    assert_eq!(
        msg.xor_address(attr::XOR_PEER_ADDRESS).map(|r| r.ok()),
        Some(Some(alice_relayed))
    );
}

#[test]
fn channel_data_stops_when_the_bound_relayed_address_goes() {
    let mut h = harness_with(12, open_policy());
    let (c, _, alice_relayed) = h.allocated(ALICE, "alice");
    let (b, _, bob_relayed) = h.allocated(BOB, "bob");
    assert_eq!(
        h.bind(ALICE, &c, 0x4000, &bob_relayed.to_string()).class,
        Class::Success
    );
    assert_eq!(
        h.permit(BOB, &b, &[&alice_relayed.to_string()]).class,
        Class::Success
    );
    let frame = [0x40, 0x00, 0, 2, b'h', b'i'];
    assert!(matches!(
        h.client(ALICE, &frame).0,
        Action::Send { via: Via::Listener(_), to, .. } if to == addr(BOB)
    ));
    let delete = h.build(Method::REFRESH, Some(&b), |w| {
        w.u32(attr::LIFETIME, 0);
    });
    assert_eq!(h.request(BOB, &delete).class, Class::Success);
    assert_eq!(
        h.client(ALICE, &frame).0,
        Action::Nothing,
        "the port is this host's again, not a peer to send to through the kernel"
    );
}

#[test]
fn a_datagram_from_the_relay_host_reaches_no_client() {
    let mut h = harness_with(12, open_policy());
    let (c, alice, _) = h.allocated(ALICE, "alice");
    let (_, _, bob_relayed) = h.allocated(BOB, "bob");
    assert_eq!(
        h.permit(ALICE, &c, &[&bob_relayed.to_string()]).class,
        Class::Success
    );
    assert_eq!(
        h.peer(alice, &relay_ip_port(53), b"answer").0,
        Action::Nothing
    );
    assert_eq!(
        h.peer(alice, &format!("{}:53", bob_relayed.ip()), b"answer")
            .0,
        Action::Nothing
    );
    assert_ne!(
        h.peer(alice, &bob_relayed.to_string(), b"from a live relay")
            .0,
        Action::Nothing
    );
}

#[test]
fn a_listener_port_of_a_permitted_peer_is_refused_per_packet() {
    let mut h = harness_with(12, open_policy());
    let (c, id, _) = h.allocated(ALICE, "alice");
    assert_eq!(h.permit(ALICE, &c, &["8.8.8.8:5000"]).class, Class::Success);
    assert_eq!(
        h.send_indication(ALICE, "8.8.8.8:3478", b"loop").0,
        Action::Nothing
    );
    assert!(matches!(
        h.send_indication(ALICE, "8.8.8.8:5000", b"fine").0,
        Action::Send { via: Via::Relay(r), .. } if r == id
    ));
    assert_eq!(h.peer(id, "8.8.8.8:3478", b"loop").0, Action::Nothing);
}
