//! Operator endpoints against the real binary: `/api/stats`, `/api/diag`, and the signaling
//! metrics they and `/metrics` report.
mod common;
mod ws_client;

use serde_json::{json, Value};

use common::{base_config, Server};
use ws_client::Ws;

const ADMIN: &str = "admin-token-0123456789";

fn start(extra: &str) -> Server {
    Server::start(&base_config(&format!(
        "[admin]\ntoken = \"{ADMIN}\"\n{extra}"
    )))
}

async fn stats(server: &Server, token: Option<&str>) -> (u16, Value) {
    let mut req = server.client().get(server.https_url("/api/stats"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

#[tokio::test]
async fn stats_need_the_admin_token() {
    let server = start("");
    assert_eq!(stats(&server, None).await.0, 401);
    assert_eq!(stats(&server, Some("admin-token-012345678X")).await.0, 401);
    let off = Server::start(&base_config(""));
    let (status, body) = stats(&off, Some(ADMIN)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not-found");
}

#[tokio::test]
async fn stats_and_metrics_follow_a_room_session() {
    let server = start("");
    let before = server.metrics();
    let mut ann = Ws::connect(&server).await;
    let mut bob = Ws::connect(&server).await;
    ann.join_named("ops-room", "Ann").await;
    bob.join_named("ops-room", "Bob").await;
    ann.recv_type("peer-joined").await;
    ann.send_text("not json").await;
    ann.expect_error("bad-request").await;

    let (status, body) = stats(&server, Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    let room = body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room"] == "ops-room")
        .expect("the room is listed");
    let names: Vec<&str> = room["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Ann", "Bob"]);
    assert!(room["peers"][0]["connected"].as_bool().expect("connected"));
    assert_eq!(body["peers"], json!(2));
    assert_eq!(body["ws_connections"], json!(2));

    let after = server.metrics();
    let delta = |k: &str| after[k] - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(after["signalbox_rooms_active"], 1.0);
    assert_eq!(after["signalbox_peers_active"], 2.0);
    assert_eq!(after["signalbox_ws_connections_active"], 2.0);
    assert_eq!(delta("signalbox_joins_total"), 2.0);
    assert_eq!(
        delta("signalbox_signaling_errors_total{code=\"bad-request\"}"),
        1.0
    );
    assert!(delta("signalbox_ws_messages_total{direction=\"in\"}") >= 3.0);
    assert!(delta("signalbox_ws_messages_total{direction=\"out\"}") >= 4.0);

    ann.send(json!({"type": "leave"})).await;
    bob.recv_type("peer-left").await;
    bob.recv_type("host-changed").await;
    bob.send(json!({"type": "leave"})).await;
    bob.send(json!({"type": "ping"})).await;
    bob.recv_type("pong").await;
    let end = server.metrics();
    assert_eq!(end["signalbox_rooms_active"], 0.0);
    assert_eq!(end["signalbox_peers_active"], 0.0);
}

#[tokio::test]
async fn diag_hands_out_one_entry_per_path_with_its_own_credential() {
    let server = start("");
    let body: Value = server
        .client()
        .get(server.https_url("/api/diag"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let checks = body["checks"].as_array().expect("checks");
    let stun = checks
        .iter()
        .find(|c| c["id"] == "stun")
        .expect("a STUN check");
    let port = server.addr("turn-udp").port();
    assert_eq!(
        stun["iceServer"]["urls"][0],
        format!("stun:127.0.0.1:{port}")
    );
    assert_eq!(stun["expect"], "srflx");
    let udp = checks
        .iter()
        .find(|c| c["id"] == "turn-udp")
        .expect("a TURN/UDP check");
    assert_eq!(udp["expect"], "relay");
    let username = udp["iceServer"]["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("EXPIRY:USER");
    assert!(
        user.starts_with("diag-") && user.len() == "diag-".len() + 16,
        "a user of its own: {user}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().expect("expiry");
    assert!(
        expiry > now && expiry <= now + 130,
        "short-lived: {expiry} vs {now}"
    );
    assert!(udp["iceServer"]["credential"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
}

/// The user part of the TURN/UDP credential of one `/api/diag` answer.
async fn diag_user(server: &Server) -> String {
    let body: Value = server
        .client()
        .get(server.https_url("/api/diag"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let check = body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "turn-udp")
        .expect("a TURN/UDP check")
        .clone();
    let username = check["iceServer"]["username"].as_str().expect("username");
    username.split_once(':').expect("EXPIRY:USER").1.to_owned()
}

#[tokio::test]
async fn every_connection_check_gets_its_own_turn_user() {
    let server = start("");
    let first = diag_user(&server).await;
    let second = diag_user(&server).await;
    assert_ne!(
        first, second,
        "nobody can use up the quota of everyone's check"
    );
}

#[tokio::test]
async fn connection_checks_are_rate_limited_per_address_with_a_json_429() {
    let server = start("");
    let client = server.client();
    let mut statuses = Vec::new();
    for _ in 0..31 {
        let resp = client
            .get(server.https_url("/api/diag"))
            .send()
            .await
            .expect("request");
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            let body: Value = resp.json().await.expect("a JSON error body");
            assert_eq!(body["error"], "rate-limited");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    assert_eq!(statuses[..30], [200; 30], "{statuses:?}");
    assert_eq!(statuses[30], 429);

    let pem = std::fs::read(server.dir.path().join("certs/selfsigned-cert.pem")).expect("cert");
    let other = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .use_rustls_tls()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let resp = other
        .get(server.https_url("/api/diag"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200, "another address has its own budget");
}

#[tokio::test]
async fn diag_is_off_when_only_invited_callers_may_use_the_relay() {
    let server = start("[access]\nmode = \"token\"\n");
    let resp = server
        .client()
        .get(server.https_url("/api/diag"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn sigterm_drains_then_closes_within_the_grace() {
    let mut server = start("");
    let mut ann = Ws::connect(&server).await;
    let mut bob = Ws::connect(&server).await;
    ann.join("drain-room").await;
    bob.join("drain-room").await;
    ann.recv_type("peer-joined").await;
    let started = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let notice = ann.recv_type("server-shutdown").await;
    // A single node: nowhere else to go at once.
    assert_eq!(
        notice,
        json!({"type": "server-shutdown", "grace_s": 2, "reconnect": false})
    );
    bob.recv_type("server-shutdown").await;
    // Calls go on during the grace; only new joins are refused.
    ann.send(json!({"type": "leave"})).await;
    bob.recv_type("peer-left").await;
    ann.send(json!({"type": "join", "room": "drain-room"}))
        .await;
    ann.expect_error("shutting-down").await;
    // New connections are no longer accepted: the listener stops within moments of the
    // signal (its own task sees it; the hub may see it first).
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(server.addr("https"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the HTTPS listener still accepts a second after SIGTERM"
    );
    // After the grace every connection is closed (1001) and the process exits 0.
    let close = bob.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(server.wait_exit(std::time::Duration::from_secs(5)), Some(0));
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1900),
        "kept going for the grace: {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
}
