//! TURN over UDP against the real binary, with three clients: the `turn` crate and Debian's
//! coturn tools (`turnutils_stunclient`, `turnutils_uclient`, `turnutils_peer`) as independent
//! implementations, and the project's own (turn-proto's sans-IO client, `turn_raw`) for the
//! refusals the other two cannot provoke.

mod common;
mod coturn;
mod turn_raw;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use signalbox_stun::Class;
use turn_raw::TurnClient;

const SECRET: &str = "integration-secret";
const REALM: &str = "turn.test";

fn start(extra: &str) -> Server {
    let quota = if extra.contains("user_quota") {
        ""
    } else {
        "user_quota = 50\n"
    };
    Server::start(&common::base_config(&format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nrealm = \"{REALM}\"\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\nworkers = 2\n{quota}{extra}\n"
    )))
}

fn start_loopback(extra: &str) -> Server {
    start(&format!("allow_loopback_peers = true\n{extra}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// REST credentials computed here from the definition, not with the server's code.
fn rest_credentials(user: &str, valid_for: i64, secret: &str) -> (String, String) {
    let username = format!("{}:{user}", (unix_now() as i64 + valid_for) as u64);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

// ---------------------------------------------------------------------------------------------
// The `turn` crate's client.

#[tokio::test]
async fn turn_crate_client_relays_both_ways_with_a_udp_peer() {
    use webrtc_util::Conn;
    let server = start_loopback("");
    let addr = server.addr("turn-udp");
    let (username, password) = rest_credentials("alice", 3600, SECRET);
    let conn = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: addr.to_string(),
        turn_serv_addr: addr.to_string(),
        username,
        password,
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    let mapped = client.send_binding_request().await.expect("binding");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");
    let relay = client.allocate().await.expect("allocate");
    let relayed = relay.local_addr().expect("relayed address");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("peer");
    let peer_addr = peer.local_addr().expect("peer addr");
    let mut buf = [0u8; 1500];
    // Several rounds: the first go out as Send indications, later ones over the channel.
    for round in 0..20u32 {
        let msg = format!("ping {round}");
        relay
            .send_to(msg.as_bytes(), peer_addr)
            .await
            .expect("send");
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("peer receives in time")
            .expect("recv");
        assert_eq!(&buf[..n], msg.as_bytes());
        assert_eq!(from, relayed, "the peer sees the relayed address");
        let reply = format!("pong {round}");
        peer.send_to(reply.as_bytes(), relayed)
            .await
            .expect("reply");
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .expect("client receives in time")
            .expect("recv");
        assert_eq!(&buf[..n], reply.as_bytes());
        assert_eq!(from, peer_addr);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.close().await.expect("close relay");
    client.close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// coturn's tools as an independent client.

#[test]
fn coturn_stunclient_gets_its_reflexive_address() {
    let server = start("");
    let port = server.addr("turn-udp").port().to_string();
    let out = coturn::tool("turnutils_stunclient")
        .args(["-p", &port, "127.0.0.1"])
        .output()
        .expect("run turnutils_stunclient");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.1:"),
        "unexpected output:\n{text}"
    );
}

/// Runs `turnutils_uclient` against `server` with `flags`, to a `turnutils_peer`, and returns
/// (sent, received, lost) from its summary.
fn uclient(server: &Server, user: &str, flags: &[&str]) -> (u64, u64, u64, String) {
    let run = coturn::uclient(server.addr("turn-udp").port(), SECRET, user, flags);
    (run.sent, run.received, run.lost, run.output)
}

#[test]
fn coturn_uclient_relays_channel_data_to_turnutils_peer_with_zero_loss() {
    let server = start_loopback("");
    // 10 clients × 300 messages of 200 bytes, one every 5 ms each: ~2,000 packets/s.
    let (sent, received, lost, text) = uclient(
        &server,
        "alice",
        &["-c", "-m", "10", "-n", "300", "-l", "200", "-z", "5"],
    );
    assert_eq!(sent, 3000, "{text}");
    assert_eq!(received, sent, "{text}");
    assert_eq!(lost, 0, "{text}");
}

#[test]
fn coturn_uclient_relays_send_indications_with_dont_fragment_with_zero_loss() {
    let server = start_loopback("");
    let (sent, received, lost, text) = uclient(
        &server,
        "bob",
        &[
            "-s", "-g", "-X", "-c", "-m", "4", "-n", "200", "-l", "120", "-z", "5",
        ],
    );
    assert_eq!(sent, 800, "{text}");
    assert_eq!(received, sent, "{text}");
    assert_eq!(lost, 0, "{text}");
}

#[test]
fn coturn_uclient_client_to_client_goes_relay_to_relay_with_zero_loss() {
    let server = start_loopback("");
    let (sent, received, lost, text) = uclient(
        &server,
        "carol",
        &["-y", "-c", "-m", "10", "-n", "200", "-l", "200", "-z", "5"],
    );
    assert!(sent >= 2000, "{text}");
    assert_eq!(received, sent, "{text}");
    assert_eq!(lost, 0, "{text}");
}

#[test]
fn coturn_uclient_with_the_wrong_secret_gets_no_allocation() {
    let server = start_loopback("");
    // The start-up self-test makes (and deletes) two allocations of its own; count from there.
    assert!(server.log_contains("self-test turn-relay: ok"));
    let created_before = server.stderr_text().matches("allocation created").count();
    let port = server.addr("turn-udp").port().to_string();
    let out = coturn::tool("turnutils_uclient")
        .args([
            "-W",
            "wrong",
            "-u",
            "eve",
            "-p",
            &port,
            "-e",
            "127.0.0.1",
            "-c",
            "-n",
            "5",
            "127.0.0.1",
        ])
        .output()
        .expect("run turnutils_uclient");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Cannot complete Allocation"), "{text}");
    assert_eq!(
        server.stderr_text().matches("allocation created").count(),
        created_before,
        "no allocation for the wrong secret"
    );
}

// ---------------------------------------------------------------------------------------------
// The project's own client, for the refusals.

/// The project's own client with REST credentials for `user`, valid for `valid_for` seconds
/// (negative: already expired), minted with `secret`.
fn raw(server: SocketAddr, user: &str, valid_for: i64, secret: &str) -> TurnClient {
    let (username, password) = rest_credentials(user, valid_for, secret);
    TurnClient::new(server, &username, &password)
}

/// [`raw`] from the local address `bind`.
fn raw_bound(
    bind: &str,
    server: SocketAddr,
    user: &str,
    valid_for: i64,
    secret: &str,
) -> TurnClient {
    let (username, password) = rest_credentials(user, valid_for, secret);
    TurnClient::bound(bind, server, &username, &password)
}

#[test]
fn forbidden_peers_are_refused_with_403_and_nothing_is_sent() {
    let server = start("");
    let mut c = raw(server.addr("turn-udp"), "alice", 3600, SECRET);
    assert_eq!(c.allocate().class, Class::Success);
    let target = UdpSocket::bind("127.0.0.1:0").expect("bind target");
    target
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let target_addr = target.local_addr().expect("addr");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", target_addr.port())
        .parse()
        .expect("addr");
    for peer in [
        "10.0.0.1:5000".parse().expect("addr"),
        "169.254.169.254:80".parse().expect("addr"),
        target_addr,
        mapped,
        server.addr("turn-udp"),
    ] {
        assert_eq!(c.permission(peer).code, Some(403), "{peer}");
    }
    c.send_indication(target_addr, b"must not arrive");
    let mut buf = [0u8; 100];
    assert!(
        target.recv_from(&mut buf).is_err(),
        "a packet reached a forbidden peer"
    );
}

#[test]
fn wrong_and_expired_credentials_get_401_and_no_relay() {
    let server = start_loopback("");
    let mut wrong = raw(server.addr("turn-udp"), "alice", 3600, "not-the-secret");
    assert_eq!(wrong.allocate().code, Some(401));
    let mut expired = raw(server.addr("turn-udp"), "alice", -10, SECRET);
    assert_eq!(expired.allocate().code, Some(401));
    assert_eq!(
        expired
            .permission("127.0.0.1:9".parse().expect("addr"))
            .code,
        Some(437)
    );
}

#[test]
fn the_user_quota_answers_486() {
    let server = start("user_quota = 2");
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut c = raw(server.addr("turn-udp"), "alice", 3600, SECRET);
        answers.push(c.allocate().code);
    }
    assert_eq!(answers, vec![None, None, Some(486)]);
    let mut bob = raw(server.addr("turn-udp"), "bob", 3600, SECRET);
    assert_eq!(
        bob.allocate().class,
        Class::Success,
        "other users are unaffected"
    );
}

#[test]
fn one_address_past_max_allocations_per_ip_gets_486_whatever_the_user_and_others_do_not() {
    // Two workers: the port of each client picks its worker, the count is the server's. The
    // clients use 127.0.0.3, away from the self-test's allocations on 127.0.0.1.
    const HOST: &str = "127.0.0.3:0";
    let server = start("max_allocations_per_ip = 3");
    let addr = server.addr("turn-udp");
    let mut held: Vec<TurnClient> = (0..3)
        .map(|i| {
            let mut c = raw_bound(HOST, addr, &format!("user-{i}"), 3600, SECRET);
            let reply = c.allocate();
            assert_eq!(
                reply.class,
                Class::Success,
                "allocation {i}: {:?}",
                reply.code
            );
            c
        })
        .collect();
    let mut over = raw_bound(HOST, addr, "someone-else", 3600, SECRET);
    assert_eq!(over.allocate().code, Some(486), "a fourth from one address");
    let mut elsewhere = raw_bound("127.0.0.4:0", addr, "someone-else", 3600, SECRET);
    assert_eq!(
        elsewhere.allocate().class,
        Class::Success,
        "another address is not affected"
    );
    let deleted = held[0].refresh(0);
    assert_eq!(deleted.class, Class::Success);
    let mut again = raw_bound(HOST, addr, "someone-else", 3600, SECRET);
    assert_eq!(
        again.allocate().class,
        Class::Success,
        "a deleted allocation frees its place"
    );
    let m = server.metrics();
    assert_eq!(
        m.get("signalbox_turn_quota_refusals_total{scope=\"address\"}"),
        Some(&1.0)
    );
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let server = start_loopback("");
    let mut c = raw(server.addr("turn-udp"), "alice", 3600, SECRET);
    assert_eq!(c.allocate().class, Class::Success);
    let r = c.refresh(0);
    assert_eq!(r.class, Class::Success);
    assert_eq!(
        c.permission("127.0.0.1:9".parse().expect("addr")).code,
        Some(437)
    );
    assert_eq!(
        c.allocate().class,
        Class::Success,
        "the 5-tuple is free again"
    );
}

#[test]
fn a_flood_of_unauthenticated_allocates_is_rate_limited() {
    let server = start("unauth_rate = 10\nunauth_burst = 20");
    let addr = server.addr("turn-udp");
    let sockets: Vec<UdpSocket> = (0..50)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let started = Instant::now();
    let req = raw(addr, "stranger", 3600, SECRET).first_allocate_request();
    for round in 0..40 {
        for s in &sockets {
            let _ = s.send_to(&req, addr);
        }
        if round % 10 == 9 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let elapsed = started.elapsed().as_secs_f64();
    let mut answers = 0;
    let mut buf = [0u8; 1500];
    for s in &sockets {
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    let allowed = 20.0 + 10.0 * elapsed + 2.0;
    assert!(answers > 0, "some requests are answered");
    assert!(
        (answers as f64) <= allowed,
        "{answers} answers to 2000 requests in {elapsed:.2}s (limit {allowed:.0})"
    );
}

/// STUN Binding requests from a source with no allocation share the unauthenticated-answer
/// limiter: a reflection flood gets a bounded trickle of answers, and the refusals are counted.
#[test]
fn a_flood_of_binding_requests_gets_a_bounded_number_of_answers() {
    let server = start("unauth_rate = 10\nunauth_burst = 20");
    let addr = server.addr("turn-udp");
    let limited_before = server.metrics()["signalbox_rate_limited_total{what=\"turn\"}"];
    let sockets: Vec<UdpSocket> = (0..20)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u32;
    for round in 0..25u8 {
        for (i, s) in sockets.iter().enumerate() {
            let mut req = Vec::new();
            let tid = signalbox_stun::TransactionId([round, i as u8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
            signalbox_stun::MessageWriter::new(
                &mut req,
                signalbox_stun::Method::BINDING,
                Class::Request,
                tid,
            )
            .finish();
            let _ = s.send_to(&req, addr);
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let elapsed = started.elapsed().as_secs_f64();
    let mut answers = 0;
    let mut buf = [0u8; 1500];
    for s in &sockets {
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    let allowed = 20.0 + 10.0 * elapsed + 2.0;
    assert!(answers > 0, "the first Bindings are answered");
    assert!(
        (answers as f64) <= allowed,
        "{answers} answers to {sent} Bindings in {elapsed:.2}s (limit {allowed:.0})"
    );
    let limited = server.metrics()["signalbox_rate_limited_total{what=\"turn\"}"] - limited_before;
    assert!(
        limited >= f64::from(sent) - allowed,
        "{limited} refusals counted of {sent} Bindings"
    );
}

#[test]
fn an_ipv6_relay_is_given_when_requested_and_relays_to_an_ipv6_peer() {
    let server = start_loopback("");
    let mut c = raw(server.addr("turn-udp"), "alice", 3600, SECRET);
    let r = c.allocate_v6();
    assert_eq!(r.class, Class::Success, "{:?}", r.code);
    let relayed = r.relayed.expect("XOR-RELAYED-ADDRESS");
    assert_eq!(relayed.ip().to_string(), "::1");
    let peer = UdpSocket::bind("[::1]:0").expect("IPv6 loopback peer");
    peer.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    assert_eq!(
        c.permission("127.0.0.1:9".parse().expect("addr")).code,
        Some(443)
    );
    assert_eq!(c.permission(peer_addr).class, Class::Success);
    c.send_indication(peer_addr, b"over ipv6");
    let mut buf = [0u8; 100];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer receives");
    assert_eq!(&buf[..n], b"over ipv6");
    assert_eq!(from, relayed);
}

#[test]
fn metrics_follow_a_relayed_exchange() {
    let server = start_loopback("");
    assert!(server.log_contains("self-test turn-relay: ok"));
    let before = server.metrics();
    let (sent, received, _, text) = uclient(
        &server,
        "metrics",
        &["-c", "-m", "4", "-n", "100", "-l", "120", "-z", "5"],
    );
    assert_eq!(received, sent, "{text}");
    let after = server.metrics();
    let delta = |series: &str| after[series] - before.get(series).copied().unwrap_or(0.0);
    // Each client message goes to the peer and its echo comes back.
    assert!(
        delta("signalbox_turn_relayed_packets_total{direction=\"client_to_peer\"}") >= sent as f64
    );
    assert!(
        delta("signalbox_turn_relayed_packets_total{direction=\"peer_to_client\"}") >= sent as f64
    );
    assert!(
        delta("signalbox_turn_relayed_bytes_total{direction=\"client_to_peer\"}")
            >= 120.0 * sent as f64
    );
    assert!(delta("signalbox_turn_allocations_created_total{transport=\"udp\"}") >= 4.0);
    // The first Allocate of each client is challenged: an expected 401 with no credentials.
    assert!(delta("signalbox_turn_auth_failures_total{reason=\"missing\"}") >= 4.0);
    assert!(after["signalbox_turn_allocations_active{transport=\"udp\"}"] >= 0.0);
    assert!(after["signalbox_turn_channels_active"] >= 0.0);
    // The self-test's relay-to-relay packet went through memory.
    assert!(after["signalbox_turn_relayed_packets_total{direction=\"in_memory\"}"] >= 1.0);
}

#[test]
fn metrics_count_forbidden_peers_and_allocations_that_come_and_go() {
    let server = start("");
    assert!(server.log_contains("self-test turn-relay: ok"));
    let before = server.metrics();
    let mut raw = raw(server.addr("turn-udp"), "gauges", 3600, SECRET);
    assert_eq!(raw.allocate().class, Class::Success);
    let mid = server.metrics();
    assert_eq!(
        mid["signalbox_turn_allocations_active{transport=\"udp\"}"]
            - before["signalbox_turn_allocations_active{transport=\"udp\"}"],
        1.0
    );
    assert_eq!(
        raw.permission("10.0.0.1:9".parse().unwrap()).code,
        Some(403)
    );
    let deleted = raw.refresh(0);
    assert_eq!(deleted.class, Class::Success);
    let after = server.metrics();
    assert_eq!(
        after["signalbox_turn_peer_refusals_total{reason=\"special_range\"}"]
            - before["signalbox_turn_peer_refusals_total{reason=\"special_range\"}"],
        1.0
    );
    assert_eq!(
        after["signalbox_turn_allocations_active{transport=\"udp\"}"],
        before["signalbox_turn_allocations_active{transport=\"udp\"}"]
    );
}

#[test]
fn while_draining_new_allocations_get_508_and_existing_ones_keep_relaying() {
    let mut server = start_loopback("");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    let mut old = raw(server.addr("turn-udp"), "early", 3600, SECRET);
    assert_eq!(old.allocate().class, Class::Success);
    assert_eq!(old.permission(peer_addr).class, Class::Success);

    server.signal(libc::SIGTERM);
    assert!(server.log_contains("draining"));
    let mut late = raw(server.addr("turn-udp"), "late", 3600, SECRET);
    let refused = late.allocate();
    assert_eq!(refused.class, Class::Error);
    assert_eq!(refused.code, Some(508));

    old.send_indication(peer_addr, b"still relaying");
    let mut buf = [0u8; 200];
    let (n, _) = peer
        .recv_from(&mut buf)
        .expect("the old allocation still relays");
    assert_eq!(&buf[..n], b"still relaying");
    assert_eq!(server.wait_exit(Duration::from_secs(6)), Some(0));
}

#[test]
fn a_reload_changes_the_secret_and_the_quota_while_an_allocation_keeps_relaying() {
    let turn = |secret: &str, quota: u32| {
        common::base_config(&format!(
            "[turn]\nlisten = [\"127.0.0.1:0\"]\nrealm = \"{REALM}\"\nsecrets = [\"{secret}\"]\nrelay_ip = \"127.0.0.1\"\nallow_loopback_peers = true\nuser_quota = {quota}\n"
        ))
    };
    let server = Server::start(&turn("first-secret", 1));
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    let addr = server.addr("turn-udp");
    let mut first = raw(addr, "carol", 3600, "first-secret");
    assert_eq!(first.allocate().class, Class::Success);
    assert_eq!(first.permission(peer_addr).class, Class::Success);
    let mut second = raw(addr, "carol", 3600, "first-secret");
    assert_eq!(second.allocate().code, Some(486), "user_quota = 1");

    std::fs::write(
        server.dir.path().join("config.toml"),
        turn("second-secret", 2),
    )
    .expect("write config");
    server.signal(libc::SIGHUP);
    assert!(server.log_contains("[turn] secrets reloaded"));

    // The allocation made before keeps relaying.
    first.send_indication(peer_addr, b"after the reload");
    let mut buf = [0u8; 200];
    let (n, _) = peer.recv_from(&mut buf).expect("still relaying");
    assert_eq!(&buf[..n], b"after the reload");
    // New credentials need the new secret, and the raised quota admits a second allocation.
    let mut stale = raw(addr, "dave", 3600, "first-secret");
    assert_eq!(stale.allocate().code, Some(401));
    let mut fresh = raw(addr, "carol", 3600, "second-secret");
    assert_eq!(fresh.allocate().class, Class::Success, "user_quota = 2 now");
}
