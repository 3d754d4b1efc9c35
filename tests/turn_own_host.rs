//! The relay never reaches a service on its own host, by any path, while two allocations on
//! the server still relay to each other: the real binary, attacked as a visitor with TURN
//! credentials would attack it.
//!
//! With `relay_ip = 127.0.0.1` and `allow_loopback_peers = true` (how the other tests run)
//! loopback is exempt, so these tests need a relay address that is not loopback. Each test
//! builds its own network namespace (deleted when the test ends, also on failure) holding a
//! veth pair whose end `sbx0` has the documentation address 203.0.113.2/24; the server runs
//! inside it with that address as `relay_ip`, `allowed_peer_ranges` covering 203.0.113.0/24
//! and `allow_loopback_peers = true`, so nothing but the own-host rule stands between a client
//! and a UDP service on 203.0.113.2. The server process and every socket of the test are
//! created on a thread that has entered the namespace (`setns`), so no traffic leaves it.
//! Creating a namespace needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`.

mod common;
mod turn_raw;

use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use signalbox_stun::{Class, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::auth::rest_password;
use turn_raw::{Relayed, TurnClient};

const SECRET: &str = "own-host-secret";
const REALM: &str = "own-host.test";
/// The relay address inside the namespace (TEST-NET-3, RFC 5737).
const RELAY_IP: &str = "203.0.113.2";

// ---------------------------------------------------------------------------------------------
// The namespace.

/// A network namespace of this test, deleted on drop (with its interfaces).
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("sbx-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip` (iproute2)");
        assert!(
            out.status.success(),
            "cannot create network namespace {name}: {} — this test needs root (CAP_SYS_ADMIN, \
             CAP_NET_ADMIN) and iproute2",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "sbx0", "type", "veth", "peer", "name", "sbx1",
        ]);
        ns.ip(&["addr", "add", &format!("{RELAY_IP}/24"), "dev", "sbx0"]);
        ns.ip(&["link", "set", "sbx0", "up"]);
        ns.ip(&["link", "set", "sbx1", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run `ip`");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread inside the namespace: sockets it creates and processes it starts
    /// belong to the namespace for good.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on a valid descriptor changes only this thread's namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }

    fn udp(&self, addr: &str) -> UdpSocket {
        self.run(|| {
            let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("read timeout");
            s
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The server in `ns`, relaying on 203.0.113.2 with that network allowed and loopback exempt;
/// returns it with the address of its UDP listener on 203.0.113.2.
fn start(ns: &Netns) -> (Server, SocketAddr) {
    let config = common::base_config(&format!(
        "[turn]\nlisten = [\"0.0.0.0:0\"]\nrealm = \"{REALM}\"\nsecrets = [\"{SECRET}\"]\n\
         relay_ip = \"{RELAY_IP}\"\nallowed_peer_ranges = [\"203.0.113.0/24\"]\n\
         allow_loopback_peers = true\nworkers = 2\nuser_quota = 50\n"
    ));
    let server = ns.run(|| Server::start(&config));
    let port = server.addr("turn-udp").port();
    (server, relay(port))
}

fn relay(port: u16) -> SocketAddr {
    SocketAddr::new(RELAY_IP.parse().expect("ip"), port)
}

/// Everything `sock` receives until it stays quiet for its read timeout (at most 5 s).
fn drain(sock: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Clients: turn-proto's client over UDP sockets made inside the namespace.

/// A TURN client of `user` on a socket in `ns`, with REST-API credentials.
fn client(ns: &Netns, server: SocketAddr, user: &str) -> TurnClient {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let username = format!("{}:{user}", unix + 3600);
    let password = rest_password(SECRET.as_bytes(), &username);
    TurnClient::on_socket(ns.udp("0.0.0.0:0"), server, &username, &password)
}

/// A successful Allocate in the realm of the test; returns the relayed address.
fn allocate(c: &mut TurnClient) -> SocketAddr {
    let r = c.allocate();
    assert!(r.is_success(), "Allocate succeeds: {:?}", r.code);
    assert_eq!(c.realm(), Some(REALM));
    r.relayed.expect("XOR-RELAYED-ADDRESS")
}

/// What peers sent `c`, until nothing more comes for 300 ms.
fn relayed(c: &mut TurnClient) -> Vec<Relayed> {
    c.relayed(Duration::from_millis(300))
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    let IpAddr::V4(v4) = addr.ip() else {
        panic!("an IPv4 address");
    };
    SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
}

fn binding_request() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Request,
        TransactionId([3; 12]),
    );
    w.fingerprint();
    w.finish();
    buf
}

// ---------------------------------------------------------------------------------------------

#[test]
fn no_path_through_the_relay_reaches_a_service_on_the_relay_address() {
    let ns = Netns::create("own");
    let (server, listener) = start(&ns);
    let service = ns.udp("0.0.0.0:0");
    let port = service.local_addr().expect("service address").port();
    let target = relay(port);

    // The service answers on the relay address: the test can see a leak.
    let probe = ns.udp("0.0.0.0:0");
    probe.send_to(b"direct", target).expect("send");
    assert_eq!(
        drain(&service).len(),
        1,
        "the service is reachable directly"
    );

    let mut alice = client(&ns, listener, "alice");
    let mut bob = client(&ns, listener, "bob");
    let alice_relay = allocate(&mut alice);
    let bob_relay = allocate(&mut bob);
    assert_eq!(alice_relay.ip().to_string(), RELAY_IP);
    let idle_relay_port = relay(bob_relay.port() + 1);

    // CreatePermission and ChannelBind to the host itself: 403, whatever allowed_peer_ranges says.
    let own = [
        target,
        mapped(target),
        relay(53),
        listener,
        idle_relay_port,
        SocketAddr::from(([0, 0, 0, 0], port)),
    ];
    for (i, &peer) in own.iter().enumerate() {
        assert_eq!(
            alice.permission(peer).code,
            Some(403),
            "CreatePermission {peer}"
        );
        assert_eq!(
            alice.channel_bind(0x4100 + i as u16, peer).code,
            Some(403),
            "ChannelBind {peer}"
        );
    }

    // A permission for the relay IP through Bob's relayed address, then every way to reach
    // another port of it: Send indications and ChannelData.
    assert_eq!(alice.permission(bob_relay).code, None);
    assert_eq!(alice.channel_bind(0x4000, bob_relay).code, None);
    assert_eq!(bob.permission(alice_relay).code, None);
    for peer in [target, mapped(target), idle_relay_port] {
        alice.send_indication(peer, b"leak by Send");
    }
    alice.send_indication(listener, &binding_request());

    // The relayed exchange between the two allocations still works, both ways.
    alice.send_indication(bob_relay, b"hello bob");
    alice.channel_data(0x4000, b"over the channel");
    bob.send_indication(alice_relay, b"hello alice");
    let to_bob = relayed(&mut bob);
    assert!(
        to_bob.contains(&Relayed::Data {
            from: alice_relay,
            data: b"hello bob".to_vec()
        }),
        "{to_bob:?}"
    );
    assert!(
        to_bob.contains(&Relayed::Data {
            from: alice_relay,
            data: b"over the channel".to_vec()
        }),
        "{to_bob:?}"
    );

    // Loopback is exempt with allow_loopback_peers: the same service is reachable there, so
    // what it does not receive on the relay address was refused, not lost.
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(alice.permission(loopback).code, None);
    alice.send_indication(loopback, b"over loopback");

    let received: Vec<Vec<u8>> = drain(&service).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        received,
        vec![b"over loopback".to_vec()],
        "only the loopback control arrives"
    );
    let to_alice = relayed(&mut alice);
    assert_eq!(
        to_alice,
        vec![Relayed::Channel {
            number: 0x4000,
            data: b"hello alice".to_vec()
        }],
        "Bob's answer on Alice's channel, and nothing from the STUN listener or the host"
    );
    drop(server);
}

#[test]
fn a_relay_port_freed_and_taken_by_another_service_gets_nothing() {
    let ns = Netns::create("port");
    let (_server, listener) = start(&ns);
    let mut alice = client(&ns, listener, "alice");
    let mut bob = client(&ns, listener, "bob");
    let alice_relay = allocate(&mut alice);
    let bob_relay = allocate(&mut bob);
    assert_eq!(alice.permission(bob_relay).code, None);
    assert_eq!(alice.channel_bind(0x4000, bob_relay).code, None);
    assert_eq!(bob.permission(alice_relay).code, None);
    alice.channel_data(0x4000, b"while bob is there");
    assert_eq!(
        relayed(&mut bob),
        vec![Relayed::Data {
            from: alice_relay,
            data: b"while bob is there".to_vec()
        }]
    );

    // Bob's allocation goes and another service binds its port on the relay address.
    let r = bob.refresh(0);
    assert!(r.is_success(), "Refresh 0 deletes: {:?}", r.code);
    let deadline = Instant::now() + Duration::from_secs(3);
    let squatter = loop {
        let bound = ns.run(|| UdpSocket::bind(bob_relay));
        match bound {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the freed relay port stays bound: {e}"),
        }
    };
    squatter
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let probe = ns.udp("0.0.0.0:0");
    probe.send_to(b"direct", bob_relay).expect("send");

    alice.channel_data(0x4000, b"leak by ChannelData");
    alice.send_indication(bob_relay, b"leak by Send");
    // A request after the packets: the worker has handled them when it answers.
    assert_eq!(
        alice.permission(SocketAddr::from(([8, 8, 8, 8], 53))).code,
        None
    );

    let received: Vec<Vec<u8>> = drain(&squatter).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        received,
        vec![b"direct".to_vec()],
        "only the direct probe arrives"
    );
}
