//! TURN credentials over their life, against the real binary: minted per peer in `joined`,
//! accepted by the TURN listener, renewed before they expire, outlived by the allocations made
//! with them, and ended with the peer. Also the credentials other apps make (Synapse's way).

mod common;
mod turn_raw;
mod ws_client;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use common::Server;
use turn_raw::{addr_of_uri, Peer, TurnClient};
use ws_client::Ws;

const SECRET: &str = "credentials-test-secret";

fn start(ttl: &str) -> Server {
    Server::start(&common::base_config(&format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\n\
         allow_loopback_peers = true\nworkers = 2\ncredential_ttl = \"{ttl}\"\n\n\
         [rooms]\nreconnect_grace = \"1s\"\n"
    )))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The TURN entry of an `iceServers` list: (URI, username, credential).
fn turn_entry(ice_servers: &Value) -> (String, String, String) {
    let list = ice_servers.as_array().expect("iceServers is a list");
    let entry = list
        .iter()
        .find(|e| e.get("username").is_some())
        .unwrap_or_else(|| panic!("no TURN entry in {ice_servers}"));
    let uri = entry["urls"][0].as_str().expect("a TURN URL").to_owned();
    let user = entry["username"].as_str().expect("username").to_owned();
    let pass = entry["credential"].as_str().expect("credential").to_owned();
    (uri, user, pass)
}

fn expiry_of(username: &str) -> u64 {
    username
        .split(':')
        .next()
        .and_then(|e| e.parse().ok())
        .expect("username starts with the expiry")
}

/// Polls `check` every 100 ms until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[tokio::test]
async fn a_peers_joined_credentials_name_it_and_open_an_allocation_on_the_turn_listener() {
    let server = start("10m");
    let mut ws = Ws::connect(&server).await;
    let joined = ws.join("standup").await;
    let id = joined["id"].as_str().expect("id").to_owned();
    let turn_port = server.addr("turn-udp").port();
    assert_eq!(
        joined["iceServers"][0],
        json!({"urls": [format!("stun:127.0.0.1:{turn_port}")]})
    );
    let (uri, username, password) = turn_entry(&joined["iceServers"]);
    assert_eq!(uri, format!("turn:127.0.0.1:{turn_port}?transport=udp"));
    let expiry = expiry_of(&username);
    assert_eq!(username, format!("{expiry}:~standup:{id}"));
    assert!(expiry.abs_diff(unix_now() + 600) <= 2, "TTL is 10 minutes");

    let mut client = TurnClient::new(addr_of_uri(&uri), &username, &password);
    let reply = client.allocate();
    assert!(reply.is_success(), "{reply:?}");
    assert!(reply.relayed.is_some());

    let mut wrong = TurnClient::new(addr_of_uri(&uri), &username, "not-the-password");
    assert_eq!(wrong.allocate().code, Some(401));
}

#[tokio::test]
async fn the_turn_crates_client_relays_with_a_peers_joined_credentials() {
    use webrtc_util::Conn;
    let server = start("10m");
    let mut ws = Ws::connect(&server).await;
    let joined = ws.join("interop").await;
    let (uri, username, password) = turn_entry(&joined["iceServers"]);
    let turn_addr = addr_of_uri(&uri);
    let conn = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: turn_addr.to_string(),
        turn_serv_addr: turn_addr.to_string(),
        username,
        password,
        // The realm defaults to `[server] public_host`.
        realm: "127.0.0.1".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: std::sync::Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    let relay = client
        .allocate()
        .await
        .expect("allocate with the joined credentials");
    let relayed = relay.local_addr().expect("relayed address");
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("peer");
    let peer_addr = peer.local_addr().expect("peer address");
    relay.send_to(b"hello", peer_addr).await.expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("the peer receives in time")
        .expect("recv");
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, relayed);
    relay.close().await.expect("close relay");
    client.close().await.expect("close");
}

#[tokio::test]
async fn fresh_credentials_arrive_before_the_old_ones_expire_and_work() {
    let server = start("5s");
    let mut ws = Ws::connect(&server).await;
    let joined = ws.join("r").await;
    let (_, first, _) = turn_entry(&joined["iceServers"]);
    let sent = Instant::now();
    let renewal = tokio::time::timeout(Duration::from_secs(5), ws.recv_type("ice-servers"))
        .await
        .expect("an ice-servers message within the 5 s TTL");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "renewed at 80 %, not at once"
    );
    let (uri, second, password) = turn_entry(&renewal["iceServers"]);
    assert!(
        expiry_of(&second) > expiry_of(&first),
        "{first} then {second}"
    );
    assert_eq!(
        second.split_once(':').map(|p| p.1),
        first.split_once(':').map(|p| p.1),
        "same peer, new expiry"
    );
    let mut client = TurnClient::new(addr_of_uri(&uri), &second, &password);
    assert!(client.allocate().is_success());
    // And again: renewals keep coming for as long as the peer stays.
    let again = tokio::time::timeout(Duration::from_secs(5), ws.recv_type("ice-servers"))
        .await
        .expect("a second renewal");
    let (_, third, _) = turn_entry(&again["iceServers"]);
    assert!(expiry_of(&third) > expiry_of(&second));
}

#[tokio::test]
async fn an_allocation_keeps_refreshing_and_relaying_after_its_credential_expired() {
    let server = start("2s");
    let mut ws = Ws::connect(&server).await;
    let joined = ws.join("long-call").await;
    let (uri, username, password) = turn_entry(&joined["iceServers"]);
    let mut client = TurnClient::new(addr_of_uri(&uri), &username, &password);
    assert!(client.allocate().is_success());
    let peer = Peer::new();
    assert!(client.permission(peer.addr()).is_success());

    // Wait until the credential is past its expiry (the TURN server counts its last second).
    let expiry = expiry_of(&username);
    while unix_now() <= expiry + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut late = TurnClient::new(addr_of_uri(&uri), &username, &password);
    assert_eq!(late.allocate().code, Some(401), "no new allocation with it");

    let refresh = client.refresh(600);
    assert!(refresh.is_success(), "{refresh:?}");
    assert!(client.permission(peer.addr()).is_success());
    client.send_indication(peer.addr(), b"still talking");
    let (data, _) = peer.recv().expect("the relay still carries data");
    assert_eq!(data, b"still talking");
    drop(ws);
}

#[tokio::test]
async fn a_peer_that_leaves_loses_its_allocations_within_seconds_and_the_others_keep_theirs() {
    let server = start("10m");
    let mut alice = Ws::connect(&server).await;
    let mut bob = Ws::connect(&server).await;
    let a = alice.join("r").await;
    let b = bob.join("r").await;
    let (uri, user_a, pass_a) = turn_entry(&a["iceServers"]);
    let (_, user_b, pass_b) = turn_entry(&b["iceServers"]);
    let mut alloc_a = TurnClient::new(addr_of_uri(&uri), &user_a, &pass_a);
    let mut alloc_a2 = TurnClient::new(addr_of_uri(&uri), &user_a, &pass_a);
    let mut alloc_b = TurnClient::new(addr_of_uri(&uri), &user_b, &pass_b);
    assert!(alloc_a.allocate().is_success());
    assert!(alloc_a2.allocate().is_success());
    assert!(alloc_b.allocate().is_success());

    alice.send(json!({"type":"leave"})).await;
    bob.recv_type("peer-left").await;
    assert!(
        eventually(Duration::from_secs(3), || alloc_a.refresh(600).code
            == Some(437)),
        "alice's allocation is gone (437 Allocation Mismatch)"
    );
    // With two workers, each closes its share on its own wake-up.
    assert!(
        eventually(Duration::from_secs(3), || alloc_a2.refresh(600).code
            == Some(437)),
        "all of them"
    );
    assert!(alloc_b.refresh(600).is_success(), "bob's stays");
}

#[tokio::test]
async fn credentials_of_a_peer_that_left_open_no_new_allocation_though_unexpired() {
    let server = start("10m");
    let mut alice = Ws::connect(&server).await;
    let mut bob = Ws::connect(&server).await;
    let a = alice.join("r").await;
    let b = bob.join("r").await;
    let (uri, user_a, pass_a) = turn_entry(&a["iceServers"]);
    let (_, user_b, pass_b) = turn_entry(&b["iceServers"]);
    assert!(
        expiry_of(&user_a) > unix_now() + 500,
        "valid for minutes yet"
    );
    let mut before = TurnClient::new(addr_of_uri(&uri), &user_a, &pass_a);
    assert!(before.allocate().is_success(), "live: allowed");

    alice.send(json!({"type":"leave"})).await;
    bob.recv_type("peer-left").await;
    assert!(
        eventually(Duration::from_secs(3), || {
            TurnClient::new(addr_of_uri(&uri), &user_a, &pass_a)
                .allocate()
                .code
                == Some(401)
        }),
        "alice left: Allocate with her credentials gets 401"
    );
    let mut again = TurnClient::new(addr_of_uri(&uri), &user_a, &pass_a);
    assert_eq!(again.allocate().code, Some(401), "and keeps getting it");
    let mut other = TurnClient::new(addr_of_uri(&uri), &user_b, &pass_b);
    assert!(other.allocate().is_success(), "bob is still live");
}

#[tokio::test]
async fn a_peer_gone_past_the_grace_loses_its_allocation_but_one_that_resumes_keeps_it() {
    let server = start("10m");
    let mut gone = Ws::connect(&server).await;
    let mut back = Ws::connect(&server).await;
    let g = gone.join("r").await;
    let b = back.join("r").await;
    let (uri, user_g, pass_g) = turn_entry(&g["iceServers"]);
    let (_, user_b, pass_b) = turn_entry(&b["iceServers"]);
    let mut alloc_g = TurnClient::new(addr_of_uri(&uri), &user_g, &pass_g);
    let mut alloc_b = TurnClient::new(addr_of_uri(&uri), &user_b, &pass_b);
    assert!(alloc_g.allocate().is_success());
    assert!(alloc_b.allocate().is_success());

    let resume = b["resume"].as_str().expect("resume token").to_owned();
    back.drop_without_close();
    gone.drop_without_close();
    let mut again = Ws::connect(&server).await;
    let rejoined = {
        again
            .send(json!({"type":"join","room":"r","resume":resume}))
            .await;
        again.recv_type("joined").await
    };
    assert_eq!(rejoined["id"], b["id"], "resumed under the same id");

    // The grace is 1 s: the peer that never came back is removed soon after.
    assert!(
        eventually(Duration::from_secs(5), || alloc_g.refresh(600).code
            == Some(437)),
        "the gone peer's allocation is closed"
    );
    assert!(
        alloc_b.refresh(600).is_success(),
        "the resumed peer keeps its allocation"
    );
    let mut late = TurnClient::new(addr_of_uri(&uri), &user_g, &pass_g);
    assert_eq!(
        late.allocate().code,
        Some(401),
        "the gone peer's credentials open nothing new"
    );
    let mut resumed = TurnClient::new(addr_of_uri(&uri), &user_b, &pass_b);
    assert!(
        resumed.allocate().is_success(),
        "the resumed peer's first credentials still do"
    );
}

/// Synapse (`synapse/rest/client/voip.py`) makes `username = f"{expiry}:{user_id}"` and
/// `password = base64(HMAC-SHA1(turn_shared_secret, username))`; computed here independently.
fn synapse_credentials(user_id: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{user_id}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let mac = ring::hmac::sign(&key, username.as_bytes());
    (
        username,
        base64::engine::general_purpose::STANDARD.encode(mac.as_ref()),
    )
}

#[test]
fn credentials_made_the_way_synapse_makes_them_open_an_allocation() {
    let server = start("10m");
    let turn = server.addr("turn-udp");
    let (username, password) = synapse_credentials("@alice:example.org", unix_now() + 86_400);
    let mut client = TurnClient::new(turn, &username, &password);
    let reply = client.allocate();
    assert!(reply.is_success(), "{reply:?}");

    let (expired, password) = synapse_credentials("@bob:example.org", unix_now() - 10);
    let mut late = TurnClient::new(turn, &expired, &password);
    assert_eq!(late.allocate().code, Some(401));
}
