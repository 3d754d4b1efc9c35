//! The TURN core's per-packet paths do not touch the heap: ChannelData from a client to a
//! peer, from a peer back to the client (header written in place), relay-to-relay in memory,
//! and Binding answers. Counted with a global allocator that tallies the calling thread's
//! allocations (its own binary, so no other test shares it).

mod counting_alloc;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signalbox::config::PortRange;
use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::allocation::{AllocId, AllocationTable, Limits, Millis, Quotas};
use signalbox_turn_proto::auth::{self, NonceKey, RateLimiter, Secrets};
use signalbox_turn_proto::policy::PeerPolicy;
use signalbox_turn_proto::server::{Action, Core, CoreConfig, RelayPlan, RelaySockets, HEADROOM};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

const REALM: &str = "signalbox.test";
const SECRET: &[u8] = b"secret";
const NOW: Millis = Millis(1_700_000_000_000);

#[derive(Default)]
struct Sockets {
    opened: Vec<AllocId>,
}

impl RelaySockets for Sockets {
    fn open(&mut self, id: AllocId, ip: IpAddr, _even: bool) -> std::io::Result<SocketAddr> {
        self.opened.push(id);
        Ok(SocketAddr::new(ip, 50000 + self.opened.len() as u16))
    }
    fn close(&mut self, _id: AllocId) {}
}

fn core() -> Core {
    let relay_ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let config = CoreConfig {
        realm: REALM.into(),
        separator: ':',
        nonce_lifetime_secs: 600,
        policy: PeerPolicy {
            allow_loopback: true,
            ..PeerPolicy::default()
        },
        relay: RelayPlan {
            v4: Some((relay_ip, relay_ip)),
            v6: None,
            ports: PortRange {
                first: 50000,
                last: 50999,
            },
            workers: 1,
            live: Arc::default(),
        },
        worker: 0,
        draining: Default::default(),
        live_peers: Arc::new(auth::LivePeers::new(16)),
        allocation_family: Default::default(),
    };
    let table = AllocationTable::new(
        Arc::new(Quotas::new(10, 10)),
        Limits {
            max_lifetime: Duration::from_secs(3600),
            strict_expiry: false,
            max_bytes_per_sec: 0,
        },
    );
    Core::new(
        config,
        table,
        Arc::new(Secrets::new(vec![SECRET.to_vec()]).expect("secret")),
        Arc::new(NonceKey::new([1; 32])),
        Arc::new(Mutex::new(RateLimiter::new(16, 100, 100))),
    )
}

/// Sends `datagram` from `from` and returns a copy of the answer in the scratch buffer.
fn send(core: &mut Core, s: &mut Sockets, from: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + datagram.len()];
    buf[HEADROOM..].copy_from_slice(datagram);
    let listener: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
    core.handle_client(from, listener, &mut buf, datagram.len(), NOW, s);
    core.scratch().to_vec()
}

/// Allocates for `client` and binds `channel` to `peer`; returns the relayed address.
fn allocate_and_bind(
    core: &mut Core,
    s: &mut Sockets,
    client: SocketAddr,
    channel: u16,
    peer: SocketAddr,
) -> SocketAddr {
    let username = format!("{}:user{}", NOW.unix_secs() + 3600, client.port());
    let key = auth::long_term_key(&username, REALM, &auth::rest_password(SECRET, &username));
    let request =
        |method: Method, nonce: Option<&[u8]>, tid: u8, extra: &dyn Fn(&mut MessageWriter<'_>)| {
            let mut buf = Vec::new();
            let mut w =
                MessageWriter::new(&mut buf, method, Class::Request, TransactionId([tid; 12]));
            extra(&mut w);
            if let Some(n) = nonce {
                w.attr(attr::USERNAME, username.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, n)
                    .integrity(&key);
            }
            w.finish();
            buf
        };
    let udp = |w: &mut MessageWriter<'_>| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    };
    let challenge = send(core, s, client, &request(Method::ALLOCATE, None, 1, &udp));
    let nonce = MessageRef::parse(&challenge)
        .expect("401")
        .get(attr::NONCE)
        .expect("nonce")
        .to_vec();
    let ok = send(
        core,
        s,
        client,
        &request(Method::ALLOCATE, Some(&nonce), 2, &udp),
    );
    let relayed = MessageRef::parse(&ok)
        .expect("success")
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("relayed")
        .expect("valid");
    let bind = request(Method::CHANNEL_BIND, Some(&nonce), 3, &|w| {
        w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
            .xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    let answer = send(core, s, client, &bind);
    assert_eq!(
        MessageRef::parse(&answer).expect("answer").class(),
        Class::Success
    );
    relayed
}

#[test]
fn channel_data_and_binding_paths_allocate_nothing() {
    let mut core = core();
    let mut s = Sockets::default();
    let alice: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    let bob: SocketAddr = "127.0.0.1:40002".parse().expect("addr");
    let peer: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
    allocate_and_bind(&mut core, &mut s, alice, 0x4000, peer);
    let alice_id = s.opened[0];
    // Bob and Carol relay to each other's relayed addresses: the in-memory path.
    let carol: SocketAddr = "127.0.0.1:40003".parse().expect("addr");
    let bob_relay = allocate_and_bind(
        &mut core,
        &mut s,
        bob,
        0x4001,
        "127.0.0.1:50003".parse().expect("addr"),
    );
    let carol_relay = allocate_and_bind(&mut core, &mut s, carol, 0x4002, bob_relay);
    assert_eq!(carol_relay.port(), 50003);

    let listener: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
    let mut to_peer = vec![0u8; HEADROOM + 104];
    to_peer[HEADROOM..HEADROOM + 4].copy_from_slice(&[0x40, 0x00, 0, 100]);
    let mut from_peer = vec![0u8; HEADROOM + 100];
    let mut relay_to_relay = vec![0u8; HEADROOM + 104];
    relay_to_relay[HEADROOM..HEADROOM + 4].copy_from_slice(&[0x40, 0x01, 0, 100]);
    let mut binding = Vec::new();
    MessageWriter::new(
        &mut binding,
        Method::BINDING,
        Class::Request,
        TransactionId([5; 12]),
    )
    .finish();
    let mut binding_buf = vec![0u8; HEADROOM + binding.len()];
    binding_buf[HEADROOM..].copy_from_slice(&binding);

    let mut actions = [Action::Nothing; 4];
    let count = counting_alloc::allocations_during(|| {
        for _ in 0..1000 {
            actions[0] = core.handle_client(alice, listener, &mut to_peer, 104, NOW, &mut s);
            actions[1] = core.handle_peer(alice_id, peer, &mut from_peer, 100, NOW);
            // Delivery rewrites the header in place (as Carol's channel), so restore Bob's.
            relay_to_relay[HEADROOM..HEADROOM + 4].copy_from_slice(&[0x40, 0x01, 0, 100]);
            actions[2] = core.handle_client(bob, listener, &mut relay_to_relay, 104, NOW, &mut s);
            actions[3] = core.handle_client(
                alice,
                listener,
                &mut binding_buf,
                binding.len(),
                NOW,
                &mut s,
            );
        }
    });
    for (i, a) in actions.iter().enumerate() {
        assert!(
            matches!(a, Action::Send { .. }),
            "path {i} sent nothing: {a:?}"
        );
    }
    assert_eq!(count, 0, "heap allocations on the per-packet paths");
}
