//! IPv6 by default: one `[::]` UDP listener (the default shape, on an ephemeral port) answers
//! Bindings and Allocates over IPv4 and over IPv6 loopback, and an Allocate that asks for an
//! IPv6 relayed address (REQUESTED-ADDRESS-FAMILY) gets one.

mod common;
mod turn_raw;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};
use turn_raw::TurnClient;

const SECRET: &str = "ipv6-secret";

fn start() -> Server {
    start_with("")
}

fn start_with(extra_turn: &str) -> Server {
    Server::start(&common::base_config(&format!(
        "[turn]\nlisten = \"[::]:0\"\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\nworkers = 2\n{extra_turn}"
    )))
}

fn credentials(user: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 600;
    let username = format!("{expiry}:{user}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

/// The `[::]` listener as reached over one family's loopback.
fn over(server: &Server, ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, server.addr("turn-udp").port())
}

/// Sends a Binding from a socket on `client_ip` and returns the reflexive address and where
/// the answer came from.
fn binding(server: SocketAddr, client_ip: IpAddr) -> (SocketAddr, SocketAddr, SocketAddr) {
    let sock = UdpSocket::bind(SocketAddr::new(client_ip, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let tid = TransactionId([7; 12]);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, tid);
    w.fingerprint();
    w.finish();
    sock.send_to(&buf, server).expect("send");
    let mut rx = [0u8; 1024];
    let (n, from) = sock.recv_from(&mut rx).expect("a Binding answer in time");
    let msg = MessageRef::parse(&rx[..n]).expect("a STUN message");
    assert_eq!(msg.class(), Class::Success);
    let mapped = msg
        .xor_address(attr::XOR_MAPPED_ADDRESS)
        .expect("XOR-MAPPED-ADDRESS")
        .expect("well-formed");
    (mapped, from, sock.local_addr().expect("addr"))
}

#[test]
fn one_wildcard_listener_answers_bindings_over_both_families() {
    let server = start();
    assert_eq!(
        server.addr("turn-udp").ip(),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    );
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let to = over(&server, ip);
        let (mapped, from, local) = binding(to, ip);
        assert_eq!(
            mapped, local,
            "the reflexive address keeps the client's family"
        );
        assert_eq!(from, to, "answered from the address asked");
    }
}

#[test]
fn allocates_over_both_families_with_relayed_addresses_of_either() {
    let server = start();
    let (user, pass) = credentials("v6");
    let mut v6 = TurnClient::new(over(&server, Ipv6Addr::LOCALHOST.into()), &user, &pass);
    let reply = v6.allocate_v6();
    assert!(reply.is_success(), "IPv6 Allocate for IPv6: {reply:?}");
    let relayed = reply.relayed.expect("XOR-RELAYED-ADDRESS");
    assert_eq!(relayed.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));

    let mut v6_default = TurnClient::new(over(&server, Ipv6Addr::LOCALHOST.into()), &user, &pass);
    let reply = v6_default.allocate();
    assert!(reply.is_success(), "IPv6 Allocate, no family: {reply:?}");
    assert_eq!(
        reply.relayed.expect("relayed").ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "IPv4 when REQUESTED-ADDRESS-FAMILY is absent (RFC 8656 §7.2)"
    );

    let mut v4 = TurnClient::new(over(&server, Ipv4Addr::LOCALHOST.into()), &user, &pass);
    let reply = v4.allocate_v6();
    assert!(reply.is_success(), "IPv4 Allocate for IPv6: {reply:?}");
    assert_eq!(
        reply.relayed.expect("relayed").ip(),
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    );
}

#[test]
fn with_allocation_family_keep_an_allocate_naming_no_family_gets_the_clients_family() {
    let server = start_with("allocation_family = \"keep\"\n");
    let (user, pass) = credentials("keep");
    let mut v6 = TurnClient::new(over(&server, Ipv6Addr::LOCALHOST.into()), &user, &pass);
    let reply = v6.allocate();
    assert!(reply.is_success(), "IPv6 Allocate, no family: {reply:?}");
    assert_eq!(
        reply.relayed.expect("relayed").ip(),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        "an IPv6 client keeps its family"
    );
    let mut v4 = TurnClient::new(over(&server, Ipv4Addr::LOCALHOST.into()), &user, &pass);
    let reply = v4.allocate();
    assert!(reply.is_success(), "IPv4 Allocate, no family: {reply:?}");
    assert_eq!(
        reply.relayed.expect("relayed").ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "an IPv4 client keeps its family"
    );
}
