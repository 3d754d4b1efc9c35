//! Protocol core tests: requests built with the codec's writer, fed through [`Core`] in
//! virtual time, answers parsed back.

use super::*;
use crate::allocation::{Limits, Quotas};
use signalbox_stun::Integrity;
use std::sync::Mutex;
use std::time::Duration;

const SECRET: &str = "s3cret";
const REALM: &str = "example.org";
const T0: Millis = Millis(1_700_000_000_000);
const LISTENER: &str = "127.0.0.1:3478";
const RELAY_IP: [u8; 4] = [192, 0, 2, 10];

#[derive(Default)]
struct FakeSockets {
    /// First port handed out; 0 = 50000.
    base: u16,
    next_port: u16,
    open: Vec<(AllocId, SocketAddr)>,
    closed: Vec<AllocId>,
}

impl RelaySockets for FakeSockets {
    fn open(&mut self, id: AllocId, ip: IpAddr, even: bool) -> std::io::Result<SocketAddr> {
        self.next_port += 2;
        let base = if self.base == 0 { 50000 } else { self.base };
        let port = base + self.next_port + u16::from(!even);
        let addr = SocketAddr::new(ip, port);
        self.open.push((id, addr));
        Ok(addr)
    }
    fn close(&mut self, id: AllocId) {
        self.closed.push(id);
    }
}

struct Harness {
    core: Core,
    /// The core's set of live room peers, as signaling would update it.
    live_peers: Arc<auth::LivePeers>,
    sockets: FakeSockets,
    now: Millis,
    tid: u8,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn harness_with(user_quota: u32, policy: PeerPolicy) -> Harness {
    worker_harness(user_quota, policy, 0, 1, Arc::default())
}

fn worker_harness(
    user_quota: u32,
    policy: PeerPolicy,
    worker: usize,
    workers: usize,
    live: Arc<LiveRelays>,
) -> Harness {
    let config = CoreConfig {
        realm: REALM.into(),
        separator: ':',
        nonce_lifetime_secs: 600,
        policy,
        relay: RelayPlan {
            v4: Some((IpAddr::from(RELAY_IP), IpAddr::from([203, 0, 113, 10]))),
            v6: None,
            ports: PortRange {
                first: 50000,
                last: 59999,
            },
            workers,
            live,
        },
        worker,
        draining: Default::default(),
        live_peers: Arc::new(auth::LivePeers::new(16)),
        allocation_family: Default::default(),
    };
    let live_peers = config.live_peers.clone();
    let table = AllocationTable::new(
        Arc::new(Quotas::new(user_quota, 100)),
        Limits {
            max_lifetime: Duration::from_secs(3600),
            strict_expiry: false,
            max_bytes_per_sec: 0,
        },
    );
    let secrets = Arc::new(Secrets::new(vec![SECRET.as_bytes().to_vec()]).expect("one secret"));
    let nonces = Arc::new(NonceKey::new([9; 32]));
    Harness {
        live_peers,
        core: Core::new(
            config,
            table,
            secrets,
            nonces,
            Arc::new(Mutex::new(RateLimiter::new(64, 5, 10))),
        ),
        sockets: FakeSockets {
            base: 50000 + 5000 * worker as u16,
            ..FakeSockets::default()
        },
        now: T0,
        tid: 0,
    }
}

fn harness() -> Harness {
    harness_with(12, PeerPolicy::default())
}

/// A decoded answer: class, error code, and the raw bytes for further checks.
#[derive(Debug)]
struct Answer {
    class: Class,
    code: Option<u16>,
    bytes: Vec<u8>,
}

impl Answer {
    fn msg(&self) -> MessageRef<'_> {
        MessageRef::parse(&self.bytes).expect("answers parse")
    }
}

struct Creds {
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    sha256: bool,
}

impl Harness {
    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId([self.tid; 12])
    }

    /// Feeds a datagram from `from`; returns the action and a copy of the bytes it names.
    fn client(&mut self, from: &str, datagram: &[u8]) -> (Action, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + datagram.len()];
        buf[HEADROOM..].copy_from_slice(datagram);
        let action = self.core.handle_client(
            addr(from),
            addr(LISTENER),
            &mut buf,
            datagram.len(),
            self.now,
            &mut self.sockets,
        );
        let bytes = self.bytes_of(action, &buf);
        (action, bytes)
    }

    fn peer(&mut self, id: AllocId, from: &str, payload: &[u8]) -> (Action, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + payload.len()];
        buf[HEADROOM..].copy_from_slice(payload);
        let action = self
            .core
            .handle_peer(id, addr(from), &mut buf, payload.len(), self.now);
        let bytes = self.bytes_of(action, &buf);
        (action, bytes)
    }

    fn bytes_of(&self, action: Action, buf: &[u8]) -> Vec<u8> {
        match action {
            Action::Send {
                payload: Payload::Scratch,
                ..
            } => self.core.scratch().to_vec(),
            Action::Send {
                payload: Payload::Input { start, end },
                ..
            } => buf[start..end].to_vec(),
            _ => Vec::new(),
        }
    }

    /// Sends a STUN request and expects a STUN answer back to the client.
    fn request(&mut self, from: &str, bytes: &[u8]) -> Answer {
        let (action, out) = self.client(from, bytes);
        match action {
            Action::Send {
                via: Via::Listener(l),
                to,
                payload: Payload::Scratch,
            } => {
                assert_eq!(l, addr(LISTENER));
                assert_eq!(to, addr(from));
            }
            other => panic!("expected an answer, got {other:?}"),
        }
        let msg = MessageRef::parse(&out).expect("answer parses");
        assert_eq!(
            msg.has_valid_fingerprint(),
            Some(true),
            "answers carry FINGERPRINT"
        );
        Answer {
            class: msg.class(),
            code: msg.error_code().and_then(Result::ok).map(|(c, _)| c),
            bytes: out,
        }
    }

    /// Builds a request, signed when `creds` is given.
    fn build(
        &mut self,
        method: Method,
        creds: Option<&Creds>,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let tid = self.next_tid();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, tid);
        attrs(&mut w);
        if let Some(c) = creds {
            w.attr(attr::USERNAME, c.username.as_bytes())
                .attr(attr::REALM, REALM.as_bytes())
                .attr(attr::NONCE, &c.nonce);
            if c.sha256 {
                w.integrity_sha256(&c.key);
            } else {
                w.integrity(&c.key);
            }
        }
        w.fingerprint();
        w.finish();
        buf
    }

    /// REST credentials valid for `valid_for` seconds (negative = expired), with a nonce
    /// obtained the way a client does: from a 401.
    fn creds(&mut self, from: &str, user: &str, valid_for: i64, secret: &str) -> Creds {
        let expiry = (T0.unix_secs() as i64 + valid_for) as u64;
        let username = format!("{expiry}:{user}");
        let password = auth::rest_password(secret.as_bytes(), &username);
        let key = auth::long_term_key(&username, REALM, &password);
        let req = self.build(Method::ALLOCATE, None, |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let challenge = self.request(from, &req);
        assert_eq!(challenge.code, Some(401));
        let nonce = challenge
            .msg()
            .get(attr::NONCE)
            .expect("401 has NONCE")
            .to_vec();
        assert_eq!(challenge.msg().get(attr::REALM), Some(REALM.as_bytes()));
        Creds {
            username,
            key,
            nonce,
            sha256: false,
        }
    }

    fn allocate(&mut self, from: &str, c: &Creds) -> Answer {
        let req = self.build(Method::ALLOCATE, Some(c), |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        self.request(from, &req)
    }

    fn allocated(&mut self, from: &str, user: &str) -> (Creds, AllocId, SocketAddr) {
        let c = self.creds(from, user, 3600, SECRET);
        let a = self.allocate(from, &c);
        assert_eq!(a.class, Class::Success, "{:?}", a.code);
        let relayed = a
            .msg()
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
            .expect("valid");
        let (id, _) = *self.sockets.open.last().expect("a relay socket was opened");
        (c, id, relayed)
    }

    fn permit(&mut self, from: &str, c: &Creds, peers: &[&str]) -> Answer {
        let req = self.build(Method::CREATE_PERMISSION, Some(c), |w| {
            for p in peers {
                w.xor_address(attr::XOR_PEER_ADDRESS, addr(p));
            }
        });
        self.request(from, &req)
    }

    fn bind(&mut self, from: &str, c: &Creds, number: u16, peer: &str) -> Answer {
        let req = self.build(Method::CHANNEL_BIND, Some(c), |w| {
            w.u32(attr::CHANNEL_NUMBER, u32::from(number) << 16)
                .xor_address(attr::XOR_PEER_ADDRESS, addr(peer));
        });
        self.request(from, &req)
    }
}

const ALICE: &str = "198.51.100.1:40000";
const BOB: &str = "198.51.100.2:40000";

#[test]
fn binding_requests_get_the_reflexive_address() {
    let mut h = harness();
    let req = h.build(Method::BINDING, None, |_| {});
    let a = h.request(ALICE, &req);
    assert_eq!(a.class, Class::Success);
    assert_eq!(
        a.msg()
            .xor_address(attr::XOR_MAPPED_ADDRESS)
            .map(|r| r.ok()),
        Some(Some(addr(ALICE)))
    );
}

#[test]
fn an_unauthenticated_allocate_is_challenged_and_an_authenticated_one_succeeds() {
    let mut h = harness();
    let (_, _, relayed) = h.allocated(ALICE, "alice");
    assert_eq!(
        relayed.ip(),
        IpAddr::from([203, 0, 113, 10]),
        "external address is advertised"
    );
    assert_eq!(h.core.table().len(), 1);
}

#[test]
fn message_integrity_sha256_is_accepted_and_answered_in_kind() {
    let mut h = harness();
    let mut c = h.creds(ALICE, "alice", 3600, SECRET);
    c.sha256 = true;
    let a = h.allocate(ALICE, &c);
    assert_eq!(a.class, Class::Success);
    assert_eq!(
        a.msg().integrity_algorithm(),
        Some(IntegrityAlgorithm::Sha256)
    );
    assert_eq!(a.msg().verify_integrity(&c.key), Integrity::Ok);
}

#[test]
fn a_retransmitted_allocate_gets_the_original_answer_and_a_new_one_gets_437() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 3600, SECRET);
    let req = h.build(Method::ALLOCATE, Some(&c), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let first = h.request(ALICE, &req);
    let again = h.request(ALICE, &req);
    assert_eq!(first.class, Class::Success);
    assert_eq!(first.bytes, again.bytes);
    assert_eq!(h.sockets.open.len(), 1, "no second relay socket");
    let other = h.allocate(ALICE, &c);
    assert_eq!(other.code, Some(437));
}

#[test]
fn wrong_and_expired_credentials_get_401_and_no_relay() {
    let mut h = harness();
    let wrong = h.creds(ALICE, "alice", 3600, "not-the-secret");
    assert_eq!(h.allocate(ALICE, &wrong).code, Some(401));
    let expired = h.creds(ALICE, "alice", -1, SECRET);
    assert_eq!(h.allocate(ALICE, &expired).code, Some(401));
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.core.table().len(), 0);
}

#[test]
fn an_old_nonce_gets_438_with_a_fresh_one() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 7200, SECRET);
    h.now = T0.plus(Duration::from_secs(601));
    let a = h.allocate(ALICE, &c);
    assert_eq!(a.code, Some(438));
    assert!(a
        .msg()
        .get(attr::NONCE)
        .is_some_and(|n| n != c.nonce.as_slice()));
}

#[test]
fn allocate_checks_transport_family_and_reservations() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 3600, SECRET);
    let ask = |h: &mut Harness, f: &dyn Fn(&mut MessageWriter<'_>)| {
        let req = h.build(Method::ALLOCATE, Some(&c), f);
        h.request(ALICE, &req).code
    };
    assert_eq!(ask(&mut h, &|_w| {}), Some(400), "no REQUESTED-TRANSPORT");
    assert_eq!(
        ask(&mut h, &|w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        }),
        Some(442)
    );
    let udp = |w: &mut MessageWriter<'_>| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    };
    assert_eq!(
        ask(&mut h, &|w| {
            udp(w);
            w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
        }),
        Some(440),
        "no IPv6 relay here"
    );
    assert_eq!(
        ask(&mut h, &|w| {
            udp(w);
            w.attr(attr::EVEN_PORT, &[0x80]);
        }),
        Some(508)
    );
    assert_eq!(
        ask(&mut h, &|w| {
            udp(w);
            w.attr(attr::RESERVATION_TOKEN, &[1; 8]);
        }),
        Some(508)
    );
    assert_eq!(
        ask(&mut h, &|w| {
            udp(w);
            w.attr(0x7777, &[1, 2, 3, 4]);
        }),
        Some(420)
    );
    assert!(h.sockets.open.is_empty());
    assert_eq!(
        ask(&mut h, &|w| {
            udp(w);
            w.attr(attr::DONT_FRAGMENT, &[]);
            w.attr(attr::EVEN_PORT, &[0]);
        }),
        None,
        "DONT-FRAGMENT and EVEN-PORT without R are fine"
    );
    assert_eq!(h.sockets.open[0].1.port() % 2, 0);
}

#[test]
fn the_user_quota_answers_486() {
    let mut h = harness_with(1, PeerPolicy::default());
    h.allocated(ALICE, "alice");
    let c = h.creds(BOB, "alice", 3600, SECRET);
    assert_eq!(h.allocate(BOB, &c).code, Some(486));
}

#[test]
fn a_room_peers_credential_allocates_only_while_the_peer_is_live() {
    let mut h = harness();
    let (peer, never) = ("~standup:p1", "~standup:never-handed-out");
    h.live_peers
        .insert(peer, T0.unix_secs() + 600, T0.unix_secs());
    let c = h.creds("198.51.100.1:5000", peer, 600, SECRET);
    assert_eq!(h.allocate("198.51.100.1:5000", &c).class, Class::Success);

    h.live_peers.remove(peer);
    let c = h.creds("198.51.100.1:5001", peer, 600, SECRET);
    let refused = h.allocate("198.51.100.1:5001", &c);
    assert_eq!(
        refused.code,
        Some(401),
        "the peer left: its credential is revoked"
    );
    assert!(
        refused.msg().get(attr::NONCE).is_some() && refused.msg().get(attr::REALM).is_some(),
        "a 401 is a challenge (RFC 8489 §9.2.4)"
    );
    let c = h.creds("198.51.100.1:5002", never, 600, SECRET);
    assert_eq!(h.allocate("198.51.100.1:5002", &c).code, Some(401));
    assert_eq!(
        h.sockets.open.len(),
        1,
        "no relay socket for a refused peer"
    );

    let other = h.creds("198.51.100.1:5003", "@alice:example.org", 600, SECRET);
    assert_eq!(
        h.allocate("198.51.100.1:5003", &other).class,
        Class::Success,
        "credentials of other apps are not affected"
    );
}

#[test]
fn create_permission_installs_every_peer_or_none() {
    let mut h = harness();
    let (c, id, _) = h.allocated(ALICE, "alice");
    let ok = h.permit(ALICE, &c, &["8.8.8.8:1", "9.9.9.9:2", "[::ffff:1.1.1.1]:3"]);
    assert_eq!(ok.class, Class::Success);
    for ip in ["8.8.8.8", "9.9.9.9", "1.1.1.1"] {
        assert!(h
            .core
            .table()
            .has_permission(id, ip.parse().expect("ip"), h.now));
    }
    let refused = h.permit(ALICE, &c, &["4.4.4.4:1", "169.254.169.254:80"]);
    assert_eq!(refused.code, Some(403));
    assert!(!h
        .core
        .table()
        .has_permission(id, "4.4.4.4".parse().expect("ip"), h.now));
    for bad in [
        "10.0.0.1:1",
        "127.0.0.1:1",
        "[::ffff:127.0.0.1]:1",
        "0.0.0.0:9",
    ] {
        assert_eq!(h.permit(ALICE, &c, &[bad]).code, Some(403), "{bad}");
    }
    assert_eq!(h.permit(ALICE, &c, &[]).code, Some(400));
    assert_eq!(h.permit(ALICE, &c, &["[2001:db8::1]:1"]).code, Some(443));
}

#[test]
fn another_allocations_relayed_address_is_allowed_even_in_a_private_range() {
    let mut h = harness();
    let (c, _, _) = h.allocated(ALICE, "alice");
    let (_, _, bob_relayed) = h.allocated(BOB, "bob");
    let port = bob_relayed.port();
    let bob_local = format!("{}:{port}", IpAddr::from(RELAY_IP));
    assert_eq!(h.permit(ALICE, &c, &[&bob_local]).code, None);
    assert_eq!(h.permit(ALICE, &c, &[&bob_relayed.to_string()]).code, None);
    let unused = format!("{}:{}", IpAddr::from(RELAY_IP), port + 100);
    assert_eq!(
        h.permit(ALICE, &c, &[&unused]).code,
        Some(403),
        "a port of the relay range without a live allocation is not ours"
    );
}

#[test]
fn requests_on_someone_elses_allocation_get_437_or_441() {
    let mut h = harness();
    h.allocated(ALICE, "alice");
    let stranger = h.creds(BOB, "alice", 3600, SECRET);
    assert_eq!(h.permit(BOB, &stranger, &["8.8.8.8:1"]).code, Some(437));
    let other = h.creds(ALICE, "mallory", 3600, SECRET);
    assert_eq!(h.permit(ALICE, &other, &["8.8.8.8:1"]).code, Some(441));
}

#[test]
fn channel_data_flows_both_ways_and_the_header_is_written_in_place() {
    let mut h = harness();
    let (c, id, _) = h.allocated(ALICE, "alice");
    assert_eq!(
        h.bind(ALICE, &c, 0x4001, "8.8.8.8:5000").class,
        Class::Success
    );
    let mut frame = vec![0x40, 0x01, 0, 5];
    frame.extend_from_slice(b"hello\0\0\0");
    let (action, bytes) = h.client(ALICE, &frame);
    assert!(matches!(
        action,
        Action::Send { via: Via::Relay(r), to, .. } if r == id && to == addr("8.8.8.8:5000")
    ));
    assert_eq!(bytes, b"hello");
    let (action, bytes) = h.peer(id, "8.8.8.8:5000", b"world");
    assert!(matches!(
        action,
        Action::Send { via: Via::Listener(_), to, payload: Payload::Input { start: 0, .. } } if to == addr(ALICE)
    ));
    assert_eq!(bytes, [&[0x40, 0x01, 0, 5][..], b"world"].concat());
    // Unknown channel and unknown peer: dropped.
    assert_eq!(h.client(ALICE, &[0x40, 0x02, 0, 1, 9]).0, Action::Nothing);
    assert_eq!(h.peer(id, "7.7.7.7:1", b"x").0, Action::Nothing);
}

#[test]
fn channel_rebinding_rules_answer_400() {
    let mut h = harness();
    let (c, _, _) = h.allocated(ALICE, "alice");
    assert_eq!(
        h.bind(ALICE, &c, 0x4000, "8.8.8.8:5000").class,
        Class::Success
    );
    assert_eq!(h.bind(ALICE, &c, 0x4000, "8.8.8.8:5001").code, Some(400));
    assert_eq!(h.bind(ALICE, &c, 0x4001, "8.8.8.8:5000").code, Some(400));
    assert_eq!(h.bind(ALICE, &c, 0x3fff, "8.8.8.8:5002").code, Some(400));
    assert_eq!(h.bind(ALICE, &c, 0x4002, "10.1.1.1:5002").code, Some(403));
}

#[test]
fn the_whole_rfc_5766_channel_range_binds_and_nothing_past_it() {
    let mut h = harness();
    let (c, id, _) = h.allocated(ALICE, "alice");
    // RFC 5766 §11 allowed 0x4000–0x7FFF; its clients (coturn 4.6) still pick 0x7FFF.
    assert_eq!(
        h.bind(ALICE, &c, 0x7fff, "8.8.8.8:5000").class,
        Class::Success
    );
    let (action, bytes) = h.client(ALICE, &[0x7f, 0xff, 0, 2, b'h', b'i', 0, 0]);
    assert!(matches!(action, Action::Send { via: Via::Relay(r), .. } if r == id));
    assert_eq!(bytes, b"hi");
    assert_eq!(h.bind(ALICE, &c, 0x8000, "8.8.8.8:5001").code, Some(400));
    assert_eq!(h.bind(ALICE, &c, 0xffff, "8.8.8.8:5002").code, Some(400));
}

#[test]
fn send_and_data_indications_relay_with_a_permission_only() {
    let mut h = harness();
    let (c, id, _) = h.allocated(ALICE, "alice");
    let send = |h: &mut Harness| {
        let tid = h.next_tid();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Method::SEND, Class::Indication, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, addr("8.8.8.8:5000"))
            .attr(attr::DATA, b"payload");
        w.finish();
        h.client(ALICE, &buf)
    };
    assert_eq!(send(&mut h).0, Action::Nothing, "no permission yet");
    h.permit(ALICE, &c, &["8.8.8.8:1"]);
    let (action, bytes) = send(&mut h);
    assert!(matches!(action, Action::Send { via: Via::Relay(r), .. } if r == id));
    assert_eq!(bytes, b"payload");
    let (action, bytes) = h.peer(id, "8.8.8.8:5000", b"back");
    assert!(matches!(
        action,
        Action::Send {
            payload: Payload::Scratch,
            ..
        }
    ));
    let msg = MessageRef::parse(&bytes).expect("Data indication");
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(msg.get(attr::DATA), Some(&b"back"[..]));
}

#[test]
fn refresh_with_lifetime_zero_deletes_and_closes_the_relay_socket() {
    let mut h = harness();
    let (c, id, _) = h.allocated(ALICE, "alice");
    let req = h.build(Method::REFRESH, Some(&c), |w| {
        w.u32(attr::LIFETIME, 0);
    });
    let a = h.request(ALICE, &req);
    assert_eq!(a.class, Class::Success);
    assert_eq!(h.sockets.closed, vec![id]);
    assert_eq!(h.core.table().len(), 0);
    let again = h.build(Method::REFRESH, Some(&c), |w| {
        w.u32(attr::LIFETIME, 600);
    });
    assert_eq!(h.request(ALICE, &again).code, Some(437));
}

#[test]
fn expiry_closes_the_relay_socket() {
    let mut h = harness();
    let (_, id, _) = h.allocated(ALICE, "alice");
    let deadline = h.core.poll_timeout().expect("a deadline");
    assert_eq!(deadline, T0.plus(Duration::from_secs(600)));
    h.core.handle_timeout(deadline, &mut h.sockets);
    assert_eq!(h.sockets.closed, vec![id]);
}

#[test]
fn relay_to_relay_traffic_on_one_worker_never_touches_a_socket() {
    let mut h = harness();
    let (a, a_id, a_relay) = h.allocated(ALICE, "alice");
    let (b, _, b_relay) = h.allocated(BOB, "bob");
    assert_eq!(
        h.bind(ALICE, &a, 0x4000, &b_relay.to_string()).class,
        Class::Success
    );
    assert_eq!(
        h.bind(BOB, &b, 0x4100, &a_relay.to_string()).class,
        Class::Success
    );
    let (action, bytes) = h.client(ALICE, &[0x40, 0x00, 0, 3, b'a', b'b', b'c']);
    match action {
        Action::Send {
            via: Via::Listener(_),
            to,
            ..
        } => assert_eq!(to, addr(BOB)),
        other => panic!("expected delivery to Bob's client, got {other:?}"),
    }
    assert_eq!(bytes, [0x41, 0x00, 0, 3, b'a', b'b', b'c']);
    let _ = a_id;
}

#[test]
fn unauthenticated_requests_are_rate_limited_per_source() {
    let mut h = harness();
    let req = h.build(Method::ALLOCATE, None, |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let mut answered = 0;
    for port in 0..100u16 {
        let from = format!("198.51.100.7:{}", 1000 + port);
        if h.client(&from, &req).0 != Action::Nothing {
            answered += 1;
        }
    }
    assert_eq!(answered, 10, "the burst, then silence");
    h.now = T0.plus(Duration::from_secs(1));
    assert_ne!(h.client("198.51.100.7:999", &req).0, Action::Nothing);
    assert_ne!(
        h.client(BOB, &req).0,
        Action::Nothing,
        "other sources are unaffected"
    );
}

#[test]
fn garbage_never_panics_and_is_dropped() {
    let mut h = harness();
    for junk in [
        &[][..],
        &[0],
        &[0x40, 0, 0xff, 0xff],
        &[0xff; 40],
        &[0; 20],
        &[0x00, 0x01, 0, 4, 0x21, 0x12],
    ] {
        assert_eq!(h.client(ALICE, junk).0, Action::Nothing);
    }
}

#[test]
fn the_relay_port_range_is_cut_into_one_slice_per_worker() {
    let plan = RelayPlan {
        v4: None,
        v6: None,
        ports: PortRange {
            first: 49152,
            last: 65535,
        },
        workers: 3,
        live: Arc::default(),
    };
    let slices: Vec<PortRange> = (0..3).map(|w| plan.ports_of(w)).collect();
    assert_eq!(slices[0].first, 49152);
    assert_eq!(slices[2].last, 65535);
    for w in 0..3 {
        assert_eq!(plan.worker_of(slices[w].first), w);
        assert_eq!(plan.worker_of(slices[w].last), w);
        if w > 0 {
            assert_eq!(
                slices[w].first,
                slices[w - 1].last + 1,
                "no gaps, no overlap"
            );
        }
    }
}

#[test]
fn relay_to_relay_traffic_between_workers_is_forwarded_in_memory() {
    let live: Arc<LiveRelays> = Arc::default();
    let mut w0 = worker_harness(12, PeerPolicy::default(), 0, 2, live.clone());
    let mut w1 = worker_harness(12, PeerPolicy::default(), 1, 2, live);
    let (a, _, a_relay) = w0.allocated(ALICE, "alice");
    let (b, _, b_relay) = w1.allocated(BOB, "bob");
    assert!(b_relay.port() >= 55000, "worker 1 uses its own port slice");
    assert_eq!(
        w0.bind(ALICE, &a, 0x4000, &b_relay.to_string()).class,
        Class::Success
    );
    assert_eq!(
        w1.bind(BOB, &b, 0x4321, &a_relay.to_string()).class,
        Class::Success
    );
    let (action, _) = w0.client(ALICE, &[0x40, 0x00, 0, 2, b'h', b'i']);
    let Action::Forward {
        worker,
        from,
        to,
        start,
        end,
    } = action
    else {
        panic!("expected a hand-over to worker 1, got {action:?}");
    };
    assert_eq!((worker, from, end - start), (1, a_relay, 2));
    let mut buf = vec![0u8; HEADROOM + 2];
    buf[HEADROOM..].copy_from_slice(b"hi");
    let action = w1.core.handle_forwarded(from, to, &mut buf, 2, w1.now);
    assert!(
        matches!(action, Action::Send { via: Via::Listener(_), to, payload: Payload::Input { start: 0, end: 6 } } if to == addr(BOB)),
        "{action:?}"
    );
    assert_eq!(buf, [0x43, 0x21, 0, 2, b'h', b'i']);
}

mod families;
mod peers;
mod streams;
mod unauthenticated;

#[test]
fn closing_a_users_allocations_also_ends_their_relayed_addresses_being_ours() {
    let mut h = harness();
    let (c, _, _) = h.allocated(ALICE, "alice");
    let (_, bob_id, bob_relayed) = h.allocated(BOB, "bob");
    let bob_local = format!("{}:{}", IpAddr::from(RELAY_IP), bob_relayed.port());
    assert_eq!(h.permit(ALICE, &c, &[&bob_local]).code, None);
    assert_eq!(h.core.close_user("bob", &mut h.sockets), 1);
    assert!(
        h.sockets.closed.contains(&bob_id),
        "bob's relay socket is closed"
    );
    assert_eq!(
        h.permit(ALICE, &c, &[&bob_local]).code,
        Some(403),
        "a closed allocation's address is a private address like any other"
    );
}
