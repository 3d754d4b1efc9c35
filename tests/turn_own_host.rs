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

use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use signalbox_stun::TransactionId;
use signalbox_stun::{attr, channel_data, Class, MessageRef, MessageWriter, Method};

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
// A small TURN client over UDP (long-term credentials computed here from the definitions).

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    tid: u32,
    /// Datagrams that were not the answer waited for (Data indications, ChannelData).
    other: Vec<Vec<u8>>,
}

/// What the peer `from` sent, as a Data indication or ChannelData carries it.
#[derive(Debug, PartialEq)]
enum Relayed {
    Data { from: SocketAddr, data: Vec<u8> },
    Channel { number: u16, data: Vec<u8> },
}

impl Client {
    fn new(ns: &Netns, server: SocketAddr, user: &str) -> Client {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let username = format!("{}:{user}", unix + 3600);
        let hmac =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
        let password = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&hmac, username.as_bytes()).as_ref());
        let key = {
            use md5::{Digest, Md5};
            Md5::digest(format!("{username}:{REALM}:{password}").as_bytes()).into()
        };
        let sock = ns.udp("0.0.0.0:0");
        Client {
            sock,
            server,
            username,
            key,
            nonce: Vec::new(),
            tid: 0,
            other: Vec::new(),
        }
    }

    /// Sends a request (signed once a nonce is known, fetching one first) and returns the
    /// answer's error code (`None` for success) and bytes.
    fn call(
        &mut self,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> (Option<u16>, Vec<u8>) {
        if self.nonce.is_empty() {
            let (code, bytes) = self.send_request(Method::ALLOCATE, false, &udp);
            assert_eq!(code, Some(401), "an unauthenticated Allocate is challenged");
            let msg = MessageRef::parse(&bytes).expect("401 parses");
            self.nonce = msg.get(attr::NONCE).expect("NONCE").to_vec();
        }
        self.send_request(method, true, attrs)
    }

    fn send_request(
        &mut self,
        method: Method,
        signed: bool,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> (Option<u16>, Vec<u8>) {
        self.tid += 1;
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&self.tid.to_be_bytes());
        let tid = TransactionId(id);
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, tid);
        attrs(&mut w);
        if signed {
            w.attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, REALM.as_bytes())
                .attr(attr::NONCE, &self.nonce)
                .integrity(&self.key);
        }
        w.fingerprint();
        w.finish();
        self.sock.send_to(&buf, self.server).expect("send");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut rx = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut rx) else {
                continue;
            };
            let answer = MessageRef::parse(&rx[..n])
                .ok()
                .filter(|m| from == self.server && m.transaction_id() == tid);
            match answer {
                Some(m) => {
                    return (
                        m.error_code().and_then(Result::ok).map(|(c, _)| c),
                        rx[..n].to_vec(),
                    )
                }
                None => self.other.push(rx[..n].to_vec()),
            }
        }
        panic!("no answer to {method:?} within 3 s");
    }

    fn allocate(&mut self) -> SocketAddr {
        let (code, bytes) = self.call(Method::ALLOCATE, &udp);
        assert_eq!(code, None, "Allocate succeeds");
        MessageRef::parse(&bytes)
            .expect("parses")
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
            .expect("valid")
    }

    fn permission(&mut self, peer: SocketAddr) -> Option<u16> {
        self.call(Method::CREATE_PERMISSION, &|w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .0
    }

    fn bind(&mut self, number: u16, peer: SocketAddr) -> Option<u16> {
        self.call(Method::CHANNEL_BIND, &|w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(number) << 16)
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .0
    }

    fn delete(&mut self) {
        let (code, _) = self.call(Method::REFRESH, &|w| {
            w.u32(attr::LIFETIME, 0);
        });
        assert_eq!(code, None, "Refresh 0 deletes");
    }

    fn send(&self, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            Method::SEND,
            Class::Indication,
            TransactionId([5; 12]),
        );
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        w.finish();
        self.sock.send_to(&buf, self.server).expect("send");
    }

    fn channel_data(&self, number: u16, data: &[u8]) {
        let mut header = [0u8; 4];
        channel_data::write_header(&mut header, number, data.len() as u16);
        let mut frame = header.to_vec();
        frame.extend_from_slice(data);
        self.sock.send_to(&frame, self.server).expect("send");
    }

    /// What peers sent this client, from datagrams already set aside and arriving now.
    fn relayed(&mut self) -> Vec<Relayed> {
        let mut all = std::mem::take(&mut self.other);
        all.extend(drain(&self.sock).into_iter().map(|(d, _)| d));
        all.iter()
            .filter_map(|d| {
                if let Some((number, data)) = channel_data::parse(d) {
                    return Some(Relayed::Channel {
                        number,
                        data: data.to_vec(),
                    });
                }
                let m = MessageRef::parse(d).ok()?;
                if m.method() != Method::DATA || m.class() != Class::Indication {
                    return None;
                }
                Some(Relayed::Data {
                    from: m.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?,
                    data: m.get(attr::DATA)?.to_vec(),
                })
            })
            .collect()
    }
}

fn udp(w: &mut MessageWriter<'_>) {
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
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

    let mut alice = Client::new(&ns, listener, "alice");
    let mut bob = Client::new(&ns, listener, "bob");
    let alice_relay = alice.allocate();
    let bob_relay = bob.allocate();
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
        assert_eq!(alice.permission(peer), Some(403), "CreatePermission {peer}");
        assert_eq!(
            alice.bind(0x4100 + i as u16, peer),
            Some(403),
            "ChannelBind {peer}"
        );
    }

    // A permission for the relay IP through Bob's relayed address, then every way to reach
    // another port of it: Send indications and ChannelData.
    assert_eq!(alice.permission(bob_relay), None);
    assert_eq!(alice.bind(0x4000, bob_relay), None);
    assert_eq!(bob.permission(alice_relay), None);
    for peer in [target, mapped(target), idle_relay_port] {
        alice.send(peer, b"leak by Send");
    }
    alice.send(listener, &binding_request());

    // The relayed exchange between the two allocations still works, both ways.
    alice.send(bob_relay, b"hello bob");
    alice.channel_data(0x4000, b"over the channel");
    bob.send(alice_relay, b"hello alice");
    let to_bob = bob.relayed();
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
    assert_eq!(alice.permission(loopback), None);
    alice.send(loopback, b"over loopback");

    let received: Vec<Vec<u8>> = drain(&service).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        received,
        vec![b"over loopback".to_vec()],
        "only the loopback control arrives"
    );
    let to_alice = alice.relayed();
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
    let mut alice = Client::new(&ns, listener, "alice");
    let mut bob = Client::new(&ns, listener, "bob");
    let alice_relay = alice.allocate();
    let bob_relay = bob.allocate();
    assert_eq!(alice.permission(bob_relay), None);
    assert_eq!(alice.bind(0x4000, bob_relay), None);
    assert_eq!(bob.permission(alice_relay), None);
    alice.channel_data(0x4000, b"while bob is there");
    assert_eq!(
        bob.relayed(),
        vec![Relayed::Data {
            from: alice_relay,
            data: b"while bob is there".to_vec()
        }]
    );

    // Bob's allocation goes and another service binds its port on the relay address.
    bob.delete();
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
    alice.send(bob_relay, b"leak by Send");
    // A request after the packets: the worker has handled them when it answers.
    assert_eq!(alice.permission(SocketAddr::from(([8, 8, 8, 8], 53))), None);

    let received: Vec<Vec<u8>> = drain(&squatter).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        received,
        vec![b"direct".to_vec()],
        "only the direct probe arrives"
    );
}
