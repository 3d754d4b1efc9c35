//! The client against the real server core, in memory and in virtual time: every byte the
//! client writes goes through [`Core`], every answer comes back through
//! [`Client::handle_input`]. No sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::allocation::{
    AllocId, AllocationTable, FiveTuple, Limits, Millis, Quotas, Transport as Link,
};
use crate::auth::{rest_password, NonceKey, RateLimiter, Secrets, MAX_USERNAME_LEN};
use crate::policy::PeerPolicy;
use crate::ports::PortRange;
use crate::server::{
    Action, Core, CoreConfig, LiveRelays, Payload, RelayPlan, RelaySockets, Via, HEADROOM,
};

const SECRET: &str = "client-secret";
const REALM: &str = "client.test";
const T0: Millis = Millis(1_700_000_000_000);
const LISTENER: &str = "192.0.2.1:3478";
const ALICE: &str = "198.51.100.1:40000";
const BOB: &str = "198.51.100.2:40000";
/// A peer outside every special-purpose range.
const PEER: &str = "9.9.9.9:5000";
const RELAY_PUBLIC: [u8; 4] = [203, 0, 113, 10];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[derive(Default)]
struct FakeSockets {
    open: Vec<(AllocId, SocketAddr)>,
}

impl RelaySockets for FakeSockets {
    fn open(&mut self, id: AllocId, ip: IpAddr, _even: bool) -> std::io::Result<SocketAddr> {
        let local = SocketAddr::new(ip, 50000 + 2 * self.open.len() as u16);
        self.open.push((id, local));
        Ok(local)
    }
    fn close(&mut self, id: AllocId) {
        self.open.retain(|(open, _)| *open != id);
    }
}

/// One client of the in-memory world, at its own address.
struct Party {
    client: Client,
    addr: SocketAddr,
    link: Link,
    /// Requests this party's client transmitted, as sent.
    sent: Vec<Vec<u8>>,
    /// Data from peers, as the client decoded it: (peer, channel, data).
    received: Vec<(SocketAddr, Option<ChannelNumber>, Vec<u8>)>,
}

/// The core, its clients, and what it sent to peers outside.
struct World {
    core: Core,
    sockets: FakeSockets,
    core_now: Millis,
    now: Instant,
    parties: Vec<Party>,
    /// (allocation, peer, payload) for every datagram the core sent out of a relay socket.
    to_peers: Vec<(AllocId, SocketAddr, Vec<u8>)>,
}

fn world() -> World {
    world_with_nonce_lifetime(600)
}

fn world_with_nonce_lifetime(nonce_lifetime_secs: u64) -> World {
    let config = CoreConfig {
        realm: REALM.into(),
        separator: ':',
        nonce_lifetime_secs,
        policy: PeerPolicy::default(),
        relay: RelayPlan {
            v4: Some((IpAddr::from([192, 0, 2, 10]), IpAddr::from(RELAY_PUBLIC))),
            v6: None,
            ports: PortRange {
                first: 50000,
                last: 59999,
            },
            workers: 1,
            live: Arc::new(LiveRelays::default()),
        },
        worker: 0,
        draining: Default::default(),
        live_peers: Arc::new(crate::auth::LivePeers::new(16)),
        allocation_family: Default::default(),
    };
    let table = AllocationTable::new(
        Arc::new(Quotas::new(10, 100)),
        Limits {
            max_lifetime: Duration::from_secs(3600),
            strict_expiry: false,
            max_bytes_per_sec: 0,
        },
    );
    let secrets = Arc::new(Secrets::new(vec![SECRET.as_bytes().to_vec()]).expect("a secret"));
    World {
        core: Core::new(
            config,
            table,
            secrets,
            Arc::new(NonceKey::new([7; 32])),
            Arc::new(Mutex::new(RateLimiter::new(64, 100, 100))),
        ),
        sockets: FakeSockets::default(),
        core_now: T0,
        now: Instant::now(),
        parties: Vec::new(),
        to_peers: Vec::new(),
    }
}

/// REST credentials for `user` valid for an hour after T0, minted with `secret`.
fn credentials(user: &str, secret: &str) -> Credentials {
    let username = format!("{}:{user}", T0.unix_secs() + 3600);
    Credentials::new(&username, &rest_password(secret.as_bytes(), &username)).expect("username")
}

impl World {
    /// Adds a client at `at`; returns its index.
    fn join(&mut self, at: &str, credentials: Credentials, link: Link) -> usize {
        let transport = match link {
            Link::Udp => Transport::Udp,
            Link::Tcp | Link::Tls => Transport::Stream,
        };
        let seed = [self.parties.len() as u8 + 1; 32];
        self.parties.push(Party {
            client: Client::new(Config::new(credentials, transport, seed)),
            addr: addr(at),
            link,
            sent: Vec::new(),
            received: Vec::new(),
        });
        self.parties.len() - 1
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core_now = self.core_now.plus(by);
    }

    /// Sends everything party `p` has due through the core and routes what comes back.
    fn pump(&mut self, p: usize) {
        while let Some(bytes) = self.parties[p].client.poll_transmit(self.now) {
            let bytes = bytes.to_vec();
            self.parties[p].sent.push(bytes.clone());
            self.client_sends(p, &bytes);
        }
    }

    /// Hands `bytes` to the core as if party `p` had sent them.
    fn client_sends(&mut self, p: usize, bytes: &[u8]) {
        let mut buf = vec![0u8; HEADROOM + bytes.len()];
        buf[HEADROOM..].copy_from_slice(bytes);
        let party = &self.parties[p];
        let listener = addr(LISTENER);
        let action = match party.link {
            Link::Udp => self.core.handle_client(
                party.addr,
                listener,
                &mut buf,
                bytes.len(),
                self.core_now,
                &mut self.sockets,
            ),
            link => self.core.handle_stream(
                &FiveTuple {
                    client: party.addr,
                    listener,
                    transport: link,
                },
                &mut buf,
                bytes.len(),
                self.core_now,
                &mut self.sockets,
            ),
        };
        self.route(action, &buf);
    }

    /// A datagram from `peer` arriving at the relay socket of party `p`'s allocation.
    fn peer_sends(&mut self, p: usize, peer: SocketAddr, payload: &[u8]) {
        let relayed = self.parties[p].client.relayed().expect("an allocation");
        let local = SocketAddr::new(IpAddr::from([192, 0, 2, 10]), relayed.port());
        let (id, _) = *self
            .sockets
            .open
            .iter()
            .find(|(_, a)| *a == local)
            .expect("a relay socket for the allocation");
        let mut buf = vec![0u8; HEADROOM + payload.len()];
        buf[HEADROOM..].copy_from_slice(payload);
        let action = self
            .core
            .handle_peer(id, peer, &mut buf, payload.len(), self.core_now);
        self.route(action, &buf);
    }

    fn route(&mut self, action: Action, buf: &[u8]) {
        let Action::Send { via, to, payload } = action else {
            assert_eq!(action, Action::Nothing, "one worker never forwards");
            return;
        };
        let bytes = match payload {
            Payload::Scratch => self.core.scratch().to_vec(),
            Payload::Input { start, end } => buf[start..end].to_vec(),
        };
        match via {
            Via::Relay(id) => self.to_peers.push((id, to, bytes)),
            Via::Listener(_) | Via::Stream(_) => {
                let party = self
                    .parties
                    .iter_mut()
                    .find(|p| p.addr == to)
                    .expect("answers go to a client of this world");
                match party.client.handle_input(&bytes) {
                    Ok(Received::Response) => {}
                    Ok(Received::Data(d)) => {
                        party.received.push((d.peer, d.channel, d.data.to_vec()))
                    }
                    Err(e) => panic!("the client refused what the core sent: {e}"),
                }
            }
        }
    }

    /// Runs `request` of party `p` to its end and returns the one event it produced.
    fn outcome(&mut self, p: usize, request: RequestId) -> Event {
        self.pump(p);
        let event = self.parties[p]
            .client
            .poll_event()
            .expect("the request ended");
        assert_eq!(event.request(), request);
        assert_eq!(self.parties[p].client.poll_event(), None, "one event");
        assert!(!self.parties[p].client.has_requests_in_flight());
        event
    }

    /// Allocates for party `p` and returns the relayed address.
    fn allocated(&mut self, p: usize) -> SocketAddr {
        let request = self.parties[p].client.allocate(AllocateOptions::default());
        match self.outcome(p, request) {
            Event::Allocated { relayed, .. } => relayed,
            other => panic!("expected an allocation, got {other:?}"),
        }
    }

    fn permitted(&mut self, p: usize, peers: &[SocketAddr]) {
        let request = self.parties[p]
            .client
            .create_permission(peers)
            .expect("peers");
        assert_eq!(
            self.outcome(p, request),
            Event::PermissionCreated { request }
        );
    }

    fn bound(&mut self, p: usize, channel: u16, peer: SocketAddr) -> ChannelNumber {
        let channel = ChannelNumber::new(channel).expect("a channel number");
        let request = self.parties[p].client.channel_bind(channel, peer);
        assert_eq!(
            self.outcome(p, request),
            Event::ChannelBound {
                request,
                channel,
                peer
            }
        );
        channel
    }
}

/// The request as sent, parsed.
fn parsed(bytes: &[u8]) -> MessageRef<'_> {
    MessageRef::parse(bytes).expect("the client writes valid STUN")
}

#[test]
fn a_binding_request_learns_the_reflexive_address_without_credentials() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    let request = w.parties[a].client.binding();
    assert_eq!(
        w.outcome(a, request),
        Event::Mapped {
            request,
            mapped: addr(ALICE)
        }
    );
    assert_eq!(w.parties[a].sent.len(), 1);
    assert_eq!(parsed(&w.parties[a].sent[0]).get(attr::USERNAME), None);
}

#[test]
fn an_allocate_is_challenged_then_signed_with_the_long_term_key() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    let request = w.parties[a].client.allocate(AllocateOptions::default());
    let event = w.outcome(a, request);
    let Event::Allocated {
        relayed,
        mapped,
        lifetime,
        ..
    } = event
    else {
        panic!("expected an allocation, got {event:?}");
    };
    assert_eq!(relayed.ip(), IpAddr::from(RELAY_PUBLIC));
    assert_eq!(mapped, Some(addr(ALICE)));
    assert_eq!(lifetime, Duration::from_secs(600));
    assert_eq!(w.parties[a].client.relayed(), Some(relayed));
    assert_eq!(w.parties[a].client.realm(), Some(REALM));

    let sent = &w.parties[a].sent;
    assert_eq!(sent.len(), 2, "an unsigned try, then a signed one");
    let (first, second) = (parsed(&sent[0]), parsed(&sent[1]));
    assert_eq!(first.integrity_algorithm(), None);
    assert_ne!(
        first.transaction_id(),
        second.transaction_id(),
        "a new transaction"
    );
    assert_eq!(second.get(attr::REALM), Some(REALM.as_bytes()));
    let username = w.parties[a].client.credentials().username().to_owned();
    let password = rest_password(SECRET.as_bytes(), &username);
    let key = long_term_key(&username, REALM, &password);
    assert_eq!(second.verify_integrity(&key), Integrity::Ok);
    assert_eq!(second.has_valid_fingerprint(), Some(true));
}

#[test]
fn allocate_carries_the_requested_lifetime_and_address_family() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    let request = w.parties[a].client.allocate(AllocateOptions {
        lifetime: Some(Duration::from_secs(1200)),
        family: Some(AddressFamily::V4),
    });
    let event = w.outcome(a, request);
    assert!(
        matches!(event, Event::Allocated { lifetime, .. } if lifetime == Duration::from_secs(1200)),
        "{event:?}"
    );
    let signed = parsed(w.parties[a].sent.last().expect("sent"));
    assert_eq!(signed.u32_attr(attr::LIFETIME), Some(Ok(1200)));
    assert_eq!(
        signed.get(attr::REQUESTED_ADDRESS_FAMILY),
        Some(&[attr::FAMILY_IPV4, 0, 0, 0][..])
    );

    // This core has no IPv6 relay address: RFC 8656 §7.2 answers 440.
    let b = w.join(BOB, credentials("bob", SECRET), Link::Udp);
    let request = w.parties[b].client.allocate(AllocateOptions {
        lifetime: None,
        family: Some(AddressFamily::V6),
    });
    let event = w.outcome(b, request);
    let Event::Failed { method, error, .. } = event else {
        panic!("expected a refusal, got {event:?}");
    };
    assert_eq!((method, error.code()), (Method::ALLOCATE, Some(440)));
    assert_eq!(method_name(method), "Allocate");
    assert_eq!(w.parties[b].client.relayed(), None);
}

#[test]
fn a_permission_lets_send_and_data_indications_through_both_ways() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    let peer = addr(PEER);
    w.permitted(a, &[peer]);

    let mut out = Vec::new();
    let n = w.parties[a]
        .client
        .send_indication(peer, b"to the peer", &mut out)
        .expect("fits");
    assert_eq!(n, out.len());
    w.client_sends(a, &out);
    assert_eq!(w.to_peers.len(), 1);
    assert_eq!(
        (w.to_peers[0].1, &w.to_peers[0].2[..]),
        (peer, &b"to the peer"[..])
    );

    w.peer_sends(a, peer, b"to the client");
    assert_eq!(
        w.parties[a].received,
        vec![(peer, None, b"to the client".to_vec())]
    );
}

#[test]
fn a_bound_channel_carries_channel_data_both_ways() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    let peer = addr(PEER);
    let channel = w.bound(a, 0x4001, peer);
    assert_eq!(w.parties[a].client.channel_to(peer), Some(channel));

    let mut out = Vec::new();
    w.parties[a]
        .client
        .channel_data(peer, b"odd", &mut out)
        .expect("a bound channel");
    assert_eq!(
        out,
        [0x40, 0x01, 0, 3, b'o', b'd', b'd'],
        "no padding over UDP"
    );
    w.client_sends(a, &out);
    assert_eq!(w.to_peers.last().map(|t| &t.2[..]), Some(&b"odd"[..]));

    w.peer_sends(a, peer, b"back");
    assert_eq!(
        w.parties[a].received,
        vec![(peer, Some(channel), b"back".to_vec())]
    );
}

#[test]
fn over_a_stream_channel_data_is_padded_and_relayed_without_the_padding() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Tcp);
    w.allocated(a);
    let peer = addr(PEER);
    w.bound(a, 0x4000, peer);
    let mut out = Vec::new();
    let n = w.parties[a]
        .client
        .channel_data(peer, b"hello", &mut out)
        .expect("a bound channel");
    assert_eq!(n, 12, "4 header bytes, 5 data bytes, 3 padding bytes");
    w.client_sends(a, &out);
    assert_eq!(w.to_peers.last().map(|t| &t.2[..]), Some(&b"hello"[..]));
    w.peer_sends(a, peer, b"hi");
    assert_eq!(w.parties[a].received[0].2, b"hi");
}

#[test]
fn two_allocations_relay_to_each_other_through_their_relayed_addresses() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    let b = w.join(BOB, credentials("bob", SECRET), Link::Udp);
    let relay_a = w.allocated(a);
    let relay_b = w.allocated(b);
    w.permitted(a, &[relay_b]);
    w.permitted(b, &[relay_a]);

    let mut out = Vec::new();
    w.parties[a]
        .client
        .send_indication(relay_b, b"a to b", &mut out)
        .expect("fits");
    w.client_sends(a, &out);
    w.parties[b]
        .client
        .send_indication(relay_a, b"b to a", &mut out)
        .expect("fits");
    w.client_sends(b, &out);

    assert!(w.to_peers.is_empty(), "relay to relay stays in memory");
    assert_eq!(
        w.parties[b].received,
        vec![(relay_a, None, b"a to b".to_vec())]
    );
    assert_eq!(
        w.parties[a].received,
        vec![(relay_b, None, b"b to a".to_vec())]
    );
}

#[test]
fn refresh_extends_the_allocation_and_lifetime_zero_deletes_it() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    w.bound(a, 0x4000, addr(PEER));
    let request = w.parties[a].client.refresh(Duration::from_secs(900));
    assert_eq!(
        w.outcome(a, request),
        Event::Refreshed {
            request,
            lifetime: Duration::from_secs(900)
        }
    );
    let request = w.parties[a].client.refresh(Duration::ZERO);
    assert_eq!(
        w.outcome(a, request),
        Event::Refreshed {
            request,
            lifetime: Duration::ZERO
        }
    );
    assert_eq!(w.core.table().len(), 0);
    assert_eq!(w.parties[a].client.relayed(), None);
    assert_eq!(w.parties[a].client.channel_to(addr(PEER)), None);
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_signed_again() {
    let mut w = world_with_nonce_lifetime(60);
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    let before = w.parties[a].sent.len();
    w.advance(Duration::from_secs(61));

    let request = w.parties[a].client.refresh(Duration::from_secs(600));
    assert_eq!(
        w.outcome(a, request),
        Event::Refreshed {
            request,
            lifetime: Duration::from_secs(600)
        }
    );
    let sent = &w.parties[a].sent[before..];
    assert_eq!(
        sent.len(),
        2,
        "the stale try, then one with the fresh nonce"
    );
    assert_ne!(
        parsed(&sent[0]).get(attr::NONCE),
        parsed(&sent[1]).get(attr::NONCE)
    );
}

#[test]
fn wrong_credentials_fail_with_401_after_one_signed_try() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", "not-the-secret"), Link::Udp);
    let request = w.parties[a].client.allocate(AllocateOptions::default());
    let event = w.outcome(a, request);
    let Event::Failed { error, .. } = event else {
        panic!("expected a refusal, got {event:?}");
    };
    assert_eq!(error.code(), Some(401));
    assert_eq!(w.parties[a].sent.len(), 2, "not retried");
    assert_eq!(w.core.table().len(), 0);
}

#[test]
fn an_unanswered_request_is_retransmitted_with_backoff_then_times_out() {
    let config = Config::new(credentials("alice", SECRET), Transport::Udp, [1; 32])
        .with_retransmission(Duration::from_millis(100), 3, 4);
    let mut client = Client::new(config);
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let request = client.binding();
    let first = client.poll_transmit(t0).expect("sent at once").to_vec();
    assert_eq!(client.poll_transmit(t0), None);
    assert_eq!(client.poll_timeout(), Some(ms(100)));
    assert_eq!(client.poll_transmit(ms(99)), None);
    assert_eq!(
        client.poll_transmit(ms(100)),
        Some(&first[..]),
        "same bytes"
    );
    assert_eq!(client.poll_timeout(), Some(ms(300)), "the wait doubles");
    assert_eq!(client.poll_transmit(ms(300)), Some(&first[..]));
    assert_eq!(client.poll_timeout(), Some(ms(700)), "then last_wait × RTO");
    assert_eq!(client.poll_transmit(ms(700)), None, "sent max_sends times");
    client.handle_timeout(ms(699));
    assert_eq!(client.poll_event(), None);
    client.handle_timeout(ms(700));
    assert_eq!(
        client.poll_event(),
        Some(Event::Failed {
            request,
            method: Method::BINDING,
            error: RequestError::TimedOut { sends: 3 }
        })
    );
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn over_a_stream_a_request_is_sent_once() {
    let config = Config::new(credentials("alice", SECRET), Transport::Stream, [1; 32])
        .with_stream_timeout(Duration::from_secs(5));
    let mut client = Client::new(config);
    let t0 = Instant::now();
    let request = client.binding();
    assert!(client.poll_transmit(t0).is_some());
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(client.poll_transmit(t0 + Duration::from_secs(5)), None);
    client.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        client.poll_event().map(|e| e.request()),
        Some(request),
        "timed out"
    );
}

#[test]
fn a_success_signed_with_another_key_is_discarded_and_the_real_one_taken() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    let request = w.parties[a].client.refresh(Duration::from_secs(700));
    let bytes = w.parties[a]
        .client
        .poll_transmit(w.now)
        .expect("due")
        .to_vec();
    let tid = parsed(&bytes).transaction_id();
    let mut forged = Vec::new();
    let mut fw = MessageWriter::new(&mut forged, Method::REFRESH, Class::Success, tid);
    fw.u32(attr::LIFETIME, 0).integrity(&[0; 16]).fingerprint();
    fw.finish();
    assert_eq!(
        w.parties[a].client.handle_input(&forged),
        Err(InputError::IntegrityMismatch)
    );
    assert_eq!(w.parties[a].client.poll_event(), None);
    assert!(w.parties[a].client.relayed().is_some(), "not deleted");

    w.client_sends(a, &bytes);
    assert_eq!(
        w.parties[a].client.poll_event(),
        Some(Event::Refreshed {
            request,
            lifetime: Duration::from_secs(700)
        })
    );
}

#[test]
fn stray_and_malformed_input_is_reported_and_changes_nothing() {
    let mut w = world();
    let a = w.join(ALICE, credentials("alice", SECRET), Link::Udp);
    w.allocated(a);
    let client = &mut w.parties[a].client;
    assert_eq!(client.handle_input(&[]), Err(InputError::Empty));
    assert_eq!(
        client.handle_input(&[0x80, 0, 0, 0]),
        Err(InputError::NotStunOrChannelData(0x80))
    );
    assert_eq!(
        client.handle_input(&[0x40, 0x00, 0, 1, 7]),
        Err(InputError::UnknownChannel(0x4000))
    );
    assert_eq!(
        client.handle_input(&[0x40, 0x00, 0, 9, 7]),
        Err(InputError::BadChannelData)
    );
    assert!(matches!(
        client.handle_input(&[0u8; 19]),
        Err(InputError::Malformed(ParseError::TooShort))
    ));

    // A late duplicate of the Allocate answer.
    let answer = {
        let mut out = Vec::new();
        let tid = parsed(w.parties[a].sent.last().expect("sent")).transaction_id();
        let mut fw = MessageWriter::new(&mut out, Method::ALLOCATE, Class::Success, tid);
        fw.fingerprint();
        fw.finish();
        out
    };
    let client = &mut w.parties[a].client;
    assert!(matches!(
        client.handle_input(&answer),
        Err(InputError::UnknownTransaction(_))
    ));
    // A request is nothing a server sends to a client.
    let mut request = Vec::new();
    MessageWriter::new(
        &mut request,
        Method::BINDING,
        Class::Request,
        TransactionId([3; 12]),
    )
    .finish();
    assert_eq!(
        client.handle_input(&request),
        Err(InputError::Unexpected {
            method: Method::BINDING,
            class: Class::Request
        })
    );
    // A Data indication without DATA.
    let mut data = Vec::new();
    let mut fw = MessageWriter::new(
        &mut data,
        Method::DATA,
        Class::Indication,
        TransactionId([4; 12]),
    );
    fw.xor_address(attr::XOR_PEER_ADDRESS, addr(PEER));
    fw.finish();
    assert_eq!(
        client.handle_input(&data),
        Err(InputError::IncompleteDataIndication("DATA"))
    );
    assert_eq!(client.poll_event(), None);
    assert!(client.relayed().is_some());
}

#[test]
fn what_cannot_be_sent_is_refused_before_it_is_built() {
    assert_eq!(
        Credentials::new("", "pw").map(|_| ()),
        Err(UsageError::BadUsernameLength(0))
    );
    assert!(Credentials::new(&"u".repeat(MAX_USERNAME_LEN), "pw").is_ok());
    assert_eq!(ChannelNumber::new(0x3FFF), None);
    assert_eq!(ChannelNumber::new(0x5000), None);
    assert_eq!(ChannelNumber::new(0x4FFF), Some(ChannelNumber::MAX));

    let mut client = Client::new(Config::new(
        credentials("alice", SECRET),
        Transport::Udp,
        [1; 32],
    ));
    assert_eq!(client.create_permission(&[]), Err(UsageError::NoPeers));
    let many = vec![addr(PEER); MAX_PEERS_PER_PERMISSION + 1];
    assert_eq!(
        client.create_permission(&many),
        Err(UsageError::TooManyPeers(65))
    );
    let mut out = Vec::new();
    assert_eq!(
        client.channel_data(addr(PEER), b"x", &mut out),
        Err(UsageError::NoChannel(addr(PEER)))
    );
    assert_eq!(
        client.send_indication(addr(PEER), &[0; 0xFFF0], &mut out),
        Err(UsageError::TooLong(0xFFF0))
    );
    assert_eq!(
        frame_channel_data(ChannelNumber::MIN, &[0; 0x10000], Transport::Udp, &mut out),
        Err(UsageError::TooLong(0x10000))
    );
    assert!(!client.has_requests_in_flight());
}

#[test]
fn transaction_ids_differ_per_request_and_follow_the_seed() {
    let ids = |seed: u8| {
        let mut client = Client::new(Config::new(
            credentials("alice", SECRET),
            Transport::Udp,
            [seed; 32],
        ));
        let now = Instant::now();
        (0..3)
            .map(|_| {
                client.binding();
                parsed(client.poll_transmit(now).expect("due")).transaction_id()
            })
            .collect::<Vec<_>>()
    };
    let first = ids(1);
    assert_ne!(first[0], first[1]);
    assert_ne!(first[1], first[2]);
    assert_eq!(first, ids(1), "reproducible for one seed");
    assert_ne!(first, ids(2));
}
