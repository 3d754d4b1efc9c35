//! Rooms and spaces across the nodes of a cluster, against the real binary: Debian's
//! `redis-server` on a free loopback port per test, and two signalbox nodes; clients connect to
//! whichever node the test picks, as a balancer or DNS round robin would send them.
mod cluster_support;
mod common;
mod turn_raw;
mod ws_client;

use std::time::{Duration, Instant};

use cluster_support::{turn_credentials, wait_for, Redis};
use common::{config_with_http, Server};
use serde_json::{json, Value};
use turn_raw::TurnClient;
use ws_client::Ws;

/// A node named `name` of the cluster on `redis`, with `rooms` as its `[rooms]` settings.
fn node(redis: &Redis, name: &str, rooms: &str) -> Server {
    node_with_http(redis, name, rooms, "")
}

/// [`node`] with `http` lines in its `[http]` section.
fn node_with_http(redis: &Redis, name: &str, rooms: &str, http: &str) -> Server {
    Server::start(&config_with_http(http, &format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nrelay_ip = \"127.0.0.1\"\nrelay_ports = \"41000-41999\"\n\
         secrets = [\"shared-cluster-secret\"]\n\n[rooms]\n{rooms}\n\n\
         [cluster]\nredis_url = \"{}\"\nnode_name = \"{name}\"\nnode_timeout = \"2s\"\n",
        redis.url()
    )))
}

/// Two nodes that see each other.
fn two_nodes(redis: &Redis, rooms: &str) -> (Server, Server) {
    let a = node(redis, "node-a", rooms);
    let b = node(redis, "node-b", rooms);
    for n in [&a, &b] {
        wait_for(Duration::from_secs(10), "both nodes registered", || {
            n.metrics().get("signalbox_cluster_nodes_alive") == Some(&2.0)
        });
    }
    (a, b)
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// The ports the `iceServers` of `joined` name.
fn ice_text(joined: &Value) -> String {
    joined["iceServers"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_on_two_nodes_share_a_room_and_their_signals_keep_their_order() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "rate_per_second = 1000\nrate_burst = 1000");
    let mut ann = Ws::connect(&a).await;
    let joined_ann = ann.join_named("across", "Ann").await;
    assert_eq!(joined_ann["peers"], json!([]));
    let mut bo = Ws::connect(&b).await;
    let joined_bo = bo.join_named("across", "Bo").await;
    let (ann_id, bo_id) = (id(&joined_ann), id(&joined_bo));
    assert_eq!(
        joined_bo["peers"],
        json!([{"id": ann_id, "name": "Ann", "host": true}])
    );
    assert_eq!(joined_bo["host"], false);
    let arrived = ann.recv_type("peer-joined").await;
    assert_eq!(arrived["peer"]["id"], bo_id.as_str());
    assert_eq!(arrived["peer"]["name"], "Bo");

    // Each peer's credentials name its own node's relay.
    let (turn_a, turn_b) = (a.addr("turn-udp").port(), b.addr("turn-udp").port());
    assert!(
        ice_text(&joined_ann).contains(&format!(":{turn_a}")),
        "{joined_ann}"
    );
    assert!(
        ice_text(&joined_bo).contains(&format!(":{turn_b}")),
        "{joined_bo}"
    );
    assert!(
        !ice_text(&joined_bo).contains(&format!(":{turn_a}")),
        "{joined_bo}"
    );

    // Both ways at once, in order.
    const N: usize = 300;
    for i in 0..N {
        ann.send(json!({"type":"signal","to":bo_id,"data":{"n":i}}))
            .await;
        bo.send(json!({"type":"signal","to":ann_id,"data":{"n":i,"sdp":"x".repeat(i)}}))
            .await;
    }
    for i in 0..N {
        let s = bo.recv_type("signal").await;
        assert_eq!((&s["from"], &s["data"]["n"]), (&json!(ann_id), &json!(i)));
        let s = ann.recv_type("signal").await;
        assert_eq!((&s["from"], &s["data"]["n"]), (&json!(bo_id), &json!(i)));
        assert_eq!(s["data"]["sdp"].as_str().map(str::len), Some(i));
    }
    // A signal to nobody is answered from the room's node, through the client's own.
    bo.send(json!({"type":"signal","to":"nobody","data":1}))
        .await;
    bo.expect_error("unknown-peer").await;
    bo.barrier().await;

    bo.send(json!({"type":"leave"})).await;
    assert_eq!(ann.recv_type("peer-left").await["id"], bo_id.as_str());
    // The room lives on node-a: it counts it, node-b does not.
    a.wait_for_metric("signalbox_peers_active", 1.0);
    assert_eq!(b.metrics().get("signalbox_rooms_active"), Some(&0.0));
    let sent = b.metrics();
    assert!(
        sent.get("signalbox_cluster_messages_total{direction=\"sent\"}")
            .is_some_and(|n| *n >= N as f64),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_room_stays_full_across_nodes_when_joins_race() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "max_peers = 2\njoin_rate_per_ip = 1000");
    for round in 0..4 {
        let room = format!("race-{round}");
        let mut clients = Vec::new();
        for i in 0..6 {
            clients.push(Ws::connect(if i % 2 == 0 { &a } else { &b }).await);
        }
        // Every join is on its way before any answer is read.
        for ws in clients.iter_mut() {
            ws.send(json!({"type":"join","room":room})).await;
        }
        let mut joined = 0;
        let mut full = 0;
        for ws in clients.iter_mut() {
            let v = ws.recv().await;
            match v["type"].as_str() {
                Some("joined") => joined += 1,
                Some("error") if v["code"] == "room-full" => full += 1,
                _ => panic!("unexpected answer to join: {v}"),
            }
        }
        assert_eq!((joined, full), (2, 4), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_peers_are_reported_gone_and_come_back_through_another_node() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "reconnect_grace = \"30s\"");
    let mut ann = Ws::connect(&a).await;
    ann.join_named("lost", "Ann").await;
    let mut bo = Ws::connect(&b).await;
    let joined_bo = bo.join_named("lost", "Bo").await;
    let bo_id = id(&joined_bo);
    ann.recv_type("peer-joined").await;

    let killed = Instant::now();
    drop(b); // SIGKILL: node-b's entry has to expire.
    drop(bo);
    let left = tokio::time::timeout(Duration::from_secs(15), ann.recv_type("peer-left"))
        .await
        .expect("peer-left within node_timeout and two heartbeats");
    assert_eq!(left["id"], bo_id.as_str());
    eprintln!("peer-left {:?} after the kill", killed.elapsed());

    // Bo's client reconnects to the node that is left, with its resume token.
    let mut bo = Ws::connect(&a).await;
    bo.send(json!({"type":"join","room":"lost","resume":joined_bo["resume"]}))
        .await;
    let back = bo.recv_type("joined").await;
    assert_eq!(back["id"], bo_id.as_str());
    let again = ann.recv_type("peer-joined").await;
    assert_eq!(again["peer"]["id"], bo_id.as_str());
    assert_eq!(again["peer"]["name"], "Bo");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_a_rooms_node_dies_its_peers_join_again_elsewhere_and_keep_their_ids() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "reconnect_grace = \"30s\"");
    let mut ann = Ws::connect(&a).await;
    let joined_ann = ann.join_named("orphaned", "Ann").await;
    let mut bo = Ws::connect(&b).await;
    let joined_bo = bo.join_named("orphaned", "Bo").await;
    ann.recv_type("peer-joined").await;
    drop(a); // SIGKILL, with the room.
    drop(ann);
    let close = tokio::time::timeout(Duration::from_secs(15), bo.recv_close())
        .await
        .expect("closed once node-a is gone")
        .expect("a close frame");
    assert_eq!(u16::from(close.code), 1012, "{close:?}");

    // Bo's client joins again with its token: the room now lives on node-b, which finds Bo's
    // record left in Redis by node-a.
    let mut bo = Ws::connect(&b).await;
    bo.send(json!({"type":"join","room":"orphaned","resume":joined_bo["resume"]}))
        .await;
    let back = bo.recv_type("joined").await;
    assert_eq!(back["id"], joined_bo["id"]);
    assert_eq!(back["peers"], json!([]));
    b.wait_for_metric("signalbox_rooms_active", 1.0);
    // So does Ann's, whose node died.
    let mut ann = Ws::connect(&b).await;
    ann.send(json!({"type":"join","room":"orphaned","resume":joined_ann["resume"]}))
        .await;
    let back = ann.recv_type("joined").await;
    assert_eq!(back["id"], joined_ann["id"]);
    let again = bo.recv_type("peer-joined").await;
    assert_eq!(again["peer"]["id"], joined_ann["id"]);
    assert_eq!(again["peer"]["name"], "Ann");
    // A token nobody had is an ordinary join.
    let mut cy = Ws::connect(&b).await;
    cy.send(json!({"type":"join","room":"orphaned","resume":"made-up"}))
        .await;
    let fresh = cy.recv_type("joined").await;
    assert_ne!(fresh["id"], joined_ann["id"]);
    assert_ne!(fresh["id"], joined_bo["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_local_calls_go_on_and_joins_are_unavailable_until_it_is_back() {
    let mut redis = Redis::start();
    let a = node(&redis, "node-a", "");
    wait_for(Duration::from_secs(10), "registered", || {
        a.metrics().get("signalbox_cluster_redis_up") == Some(&1.0)
    });
    let mut ann = Ws::connect(&a).await;
    let ann_id = id(&ann.join("local").await);
    let mut bo = Ws::connect(&a).await;
    let bo_id = id(&bo.join("local").await);
    ann.recv_type("peer-joined").await;

    redis.stop();
    wait_for(Duration::from_secs(10), "Redis seen down", || {
        a.metrics().get("signalbox_cluster_redis_up") == Some(&0.0)
    });
    ann.send(json!({"type":"signal","to":bo_id,"data":"still here"}))
        .await;
    assert_eq!(bo.recv_type("signal").await["data"], "still here");
    bo.send(json!({"type":"signal","to":ann_id,"data":"me too"}))
        .await;
    assert_eq!(ann.recv_type("signal").await["data"], "me too");
    let mut cy = Ws::connect(&a).await;
    cy.send(json!({"type":"join","room":"local"})).await;
    cy.expect_error("unavailable").await;
    cy.send(json!({"type":"hello","space":"office","name":"Cy"}))
        .await;
    cy.expect_error("unavailable").await;

    redis.run();
    wait_for(Duration::from_secs(15), "Redis seen again", || {
        a.metrics().get("signalbox_cluster_redis_up") == Some(&1.0)
    });
    // The room is still here, and this node claims it again in the empty Redis.
    let joined = cy.join("local").await;
    assert_eq!(joined["peers"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_call_between_people_on_two_nodes() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let mut ann = Ws::connect(&a).await;
    ann.send(json!({"type":"hello","space":"office","name":"Ann"}))
        .await;
    let ann_id = ann.recv_type("people").await["you"]
        .as_str()
        .expect("you")
        .to_owned();
    let mut bo = Ws::connect(&b).await;
    bo.send(json!({"type":"hello","space":"office","name":"Bo"}))
        .await;
    let people = bo.recv_type("people").await;
    let bo_id = people["you"].as_str().expect("you").to_owned();
    assert_eq!(people["people"][0]["id"], ann_id.as_str(), "{people}");
    assert_eq!(
        ann.recv_type("person-joined").await["person"]["id"],
        bo_id.as_str()
    );

    ann.send(json!({"type":"call","to":bo_id})).await;
    let call = ann.recv_type("ringing").await["call"].clone();
    ann.recv_type("person-busy").await;
    assert_eq!(bo.recv_type("ring").await["call"], call);
    bo.recv_type("person-busy").await;
    bo.send(json!({"type":"accept","call":call})).await;
    let acc_ann = ann.recv_type("call-accepted").await;
    let acc_bo = bo.recv_type("call-accepted").await;
    let room = acc_ann["room"].clone();
    ann.send(json!({"type":"join","room":room,"token":acc_ann["token"]}))
        .await;
    let joined_ann = ann.recv_type("joined").await;
    bo.send(json!({"type":"join","room":room,"token":acc_bo["token"]}))
        .await;
    let joined_bo = bo.recv_type("joined").await;
    assert_eq!(
        ann.recv_type("peer-joined").await["peer"]["id"],
        joined_bo["id"]
    );
    bo.send(json!({"type":"signal","to":joined_ann["id"],"data":"offer"}))
        .await;
    assert_eq!(ann.recv_type("signal").await["data"], "offer");

    bo.send(json!({"type":"leave"})).await;
    assert_eq!(ann.recv_type("peer-left").await["id"], joined_bo["id"]);
    assert_eq!(ann.recv_type("call-ended").await["call"], call);
    assert_eq!(bo.recv_type("call-ended").await["call"], call);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_of_a_peer_held_by_another_node_are_revoked_everywhere_when_it_leaves() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let (turn_a, turn_b) = (a.addr("turn-udp"), b.addr("turn-udp"));
    let mut ann = Ws::connect(&a).await;
    ann.join("creds").await;
    // Bo's room lives on node-a; his credentials come from node-b, which holds him.
    let mut bo = Ws::connect(&b).await;
    let (user, pass) = turn_credentials(&bo.join("creds").await);
    ann.recv_type("peer-joined").await;
    let allocate = |server, user: &str, pass: &str| {
        let mut client = TurnClient::new(server, user, pass);
        let reply = client.allocate();
        (client, reply)
    };
    let (mut on_b, reply) = allocate(turn_b, &user, &pass);
    assert!(reply.is_success(), "{reply:?}");
    let start = Instant::now();
    let mut on_a = loop {
        let (client, reply) = allocate(turn_a, &user, &pass);
        if reply.is_success() {
            break client;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "node-a still refuses Bo's credentials: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    bo.send(json!({"type":"leave"})).await;
    ann.recv_type("peer-left").await;
    for (node, client) in [("node-a", &mut on_a), ("node-b", &mut on_b)] {
        wait_for(
            Duration::from_secs(3),
            &format!("Bo's allocation on {node} closed"),
            || client.refresh(600).code == Some(437),
        );
    }
    for (node, turn) in [("node-a", turn_a), ("node-b", turn_b)] {
        assert_eq!(
            allocate(turn, &user, &pass).1.code,
            Some(401),
            "Bo's credentials still open allocations on {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_nodes_rooms_move_and_the_other_nodes_clients_are_told_at_once() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let mut ann = Ws::connect(&a).await;
    ann.join("moving").await;
    let mut bo = Ws::connect(&b).await;
    let joined_bo = bo.join("moving").await;
    ann.recv_type("peer-joined").await;
    a.signal(libc::SIGTERM);
    let shutdown = ann.recv_type("server-shutdown").await;
    assert_eq!(shutdown["reconnect"], true, "{shutdown}");
    let close = bo.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1012, "{close:?}");
    // Node-a left the registry: the room starts again on node-b, with Bo under his id.
    let mut bo = Ws::connect(&b).await;
    bo.send(json!({"type":"join","room":"moving","resume":joined_bo["resume"]}))
        .await;
    let back = bo.recv_type("joined").await;
    assert_eq!(back["id"], joined_bo["id"]);
    assert_eq!(back["peers"], json!([]));
    b.wait_for_metric("signalbox_rooms_active", 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_whose_end_was_lost_with_redis_is_let_go_once_redis_is_back() {
    let mut redis = Redis::start();
    let (a, b) = two_nodes(&redis, "reconnect_grace = \"1s\"");
    let mut ann = Ws::connect(&a).await;
    ann.join("ghost").await;
    let mut bo = Ws::connect(&b).await;
    let bo_id = id(&bo.join("ghost").await);
    ann.recv_type("peer-joined").await;

    redis.stop();
    wait_for(Duration::from_secs(10), "Redis seen down", || {
        b.metrics().get("signalbox_cluster_redis_up") == Some(&0.0)
    });
    // Node-b cannot tell node-a that Bo's connection ended.
    drop(bo);
    b.wait_for_metric("signalbox_ws_connections_active", 0.0);
    redis.run();
    let left = tokio::time::timeout(Duration::from_secs(25), ann.recv_type("peer-left"))
        .await
        .expect("peer-left once node-b says whom it holds");
    assert_eq!(left["id"], bo_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_redis_restarts_empty_a_room_keeps_its_node() {
    let mut redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let mut ann = Ws::connect(&a).await;
    ann.join("kept").await;
    let mut bo = Ws::connect(&b).await;
    bo.join("kept").await;
    ann.recv_type("peer-joined").await;

    redis.stop();
    for n in [&a, &b] {
        wait_for(Duration::from_secs(10), "Redis seen down", || {
            n.metrics().get("signalbox_cluster_redis_up") == Some(&0.0)
        });
    }
    redis.run(); // Empty: no persistence.
    for n in [&a, &b] {
        wait_for(Duration::from_secs(15), "Redis seen again", || {
            n.metrics().get("signalbox_cluster_redis_up") == Some(&1.0)
        });
    }
    // Each node listens on its channel again (a second listening line in its log).
    for n in [&a, &b] {
        wait_for(Duration::from_secs(15), "listening again", || {
            n.stderr_text()
                .matches("listening for signaling from other nodes")
                .count()
                >= 2
        });
    }
    // Node-a claimed its room again: a join through node-b reaches it, not a second room.
    let mut cy = Ws::connect(&b).await;
    let joined = cy.join("kept").await;
    assert_eq!(
        joined["peers"].as_array().map(Vec::len),
        Some(2),
        "{joined}"
    );
    assert_eq!(b.metrics().get("signalbox_rooms_active"), Some(&0.0));
    ann.recv_type("peer-joined").await;
    bo.recv_type("peer-joined").await;
}

/// A client of the balancer at `front`, which trusts the certificates of `nodes` and comes
/// from the origin every node accepts.
async fn through(front: std::net::SocketAddr, nodes: &[&Server]) -> Ws {
    let origin = format!("https://{front}");
    let tls = ws_client::tls_config_trusting(nodes);
    ws_client::connect_url(&format!("wss://{front}/ws"), Some(&origin), tls)
        .await
        .expect("WebSocket through the balancer")
}

/// HAProxy kept running for a test; killed when dropped.
struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_haproxy_clients_spread_over_the_nodes_share_one_room() {
    assert!(
        std::path::Path::new("/usr/sbin/haproxy").exists(),
        "/usr/sbin/haproxy is missing: run scripts/install-test-deps"
    );
    let redis = Redis::start();
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], common::named_port()));
    // As in docs/cluster.md: TLS passes through, the PROXY protocol carries each client's
    // address, and a node is healthy when its deep health check is.
    let http = format!(
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n\
         allowed_origins = [\"https://{front}\"]"
    );
    let a = node_with_http(&redis, "node-a", "", &http);
    let b = node_with_http(&redis, "node-b", "", &http);
    for n in [&a, &b] {
        wait_for(Duration::from_secs(10), "both nodes registered", || {
            n.metrics().get("signalbox_cluster_nodes_alive") == Some(&2.0)
        });
    }
    let config = a.dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 100\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n\nfrontend calls\n  bind {front}\n  \
             default_backend nodes\n\nbackend nodes\n  balance roundrobin\n  \
             option httpchk GET /healthz?deep=1\n  http-check expect status 200\n  \
             default-server send-proxy-v2 check check-ssl check-send-proxy verify none inter 300ms rise 1\n  \
             server node-a {}\n  server node-b {}\n",
            a.addr("https"),
            b.addr("https")
        ),
    )
    .expect("haproxy config");
    let _haproxy = Haproxy(
        std::process::Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    wait_for(Duration::from_secs(10), "the balancer listening", || {
        std::net::TcpStream::connect(front).is_ok()
    });
    // Checks every 300 ms, one passed check makes a node usable; until both are, round robin
    // may give every client to one node, so clients come until each node holds some.
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    let conns = |n: &Server| n.metrics().get("signalbox_ws_connections_active").copied();
    while clients.len() < 4 || conns(&a) < Some(1.0) || conns(&b) < Some(1.0) {
        assert!(clients.len() < 12, "HAProxy kept every client on one node");
        let mut ws = through(front, &[&a, &b]).await;
        let joined = ws.join("balanced").await;
        assert_eq!(
            joined["peers"].as_array().map(Vec::len),
            Some(clients.len()),
            "{joined}"
        );
        ids.push(id(&joined));
        clients.push(ws);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = clients.len() - 1;
    clients[last]
        .send(json!({"type":"signal","to":ids[0],"data":"hello from the last"}))
        .await;
    loop {
        let v = clients[0].recv().await;
        if v["type"] == "signal" {
            assert_eq!(v["from"], ids[last].as_str());
            break;
        }
        assert_eq!(v["type"], "peer-joined", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_ends_when_the_node_holding_one_side_dies() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "reconnect_grace = \"30s\"");
    let mut ann = Ws::connect(&a).await;
    ann.send(json!({"type":"hello","space":"desk","name":"Ann"}))
        .await;
    ann.recv_type("people").await;
    let mut bo = Ws::connect(&b).await;
    bo.send(json!({"type":"hello","space":"desk","name":"Bo"}))
        .await;
    let bo_id = bo.recv_type("people").await["you"].clone();
    ann.recv_type("person-joined").await;
    ann.send(json!({"type":"call","to":bo_id})).await;
    let call = ann.recv_type("ringing").await["call"].clone();
    bo.recv_type("ring").await;
    bo.send(json!({"type":"accept","call":call})).await;
    let acc_ann = loop {
        let v = ann.recv().await;
        if v["type"] == "call-accepted" {
            break v;
        }
    };
    let acc_bo = loop {
        let v = bo.recv().await;
        if v["type"] == "call-accepted" {
            break v;
        }
    };
    ann.send(json!({"type":"join","room":acc_ann["room"],"token":acc_ann["token"]}))
        .await;
    ann.recv_type("joined").await;
    bo.send(json!({"type":"join","room":acc_bo["room"],"token":acc_bo["token"]}))
        .await;
    let bo_peer = bo.recv_type("joined").await["id"].clone();

    drop(b);
    drop(bo);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|v: &Value| v["type"] == "call-ended") {
        assert!(Instant::now() < deadline, "no call-ended: {seen:?}");
        if let Ok(v) = tokio::time::timeout(Duration::from_secs(1), ann.recv()).await {
            seen.push(v);
        }
    }
    let left = seen.iter().find(|v| v["type"] == "peer-left");
    assert_eq!(left.map(|v| &v["id"]), Some(&bo_peer), "{seen:?}");
    let ended = seen.iter().find(|v| v["type"] == "call-ended");
    assert_eq!(ended.map(|v| &v["call"]), Some(&call), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_join_from_a_room_here_is_refused_and_one_from_a_room_elsewhere_moves() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let mut bo = Ws::connect(&b).await;
    bo.join("far").await; // lives on node-b
    let mut ann = Ws::connect(&a).await;
    ann.join("near").await; // lives on node-a
    ann.send(json!({"type":"join","room":"far"})).await;
    ann.expect_error("already-joined").await;
    ann.send(json!({"type":"leave"})).await;
    let far = ann.join("far").await;
    assert_eq!(bo.recv_type("peer-joined").await["peer"]["id"], far["id"]);
    // Node-a cannot tell whether Ann is still in a room on node-b: the join goes through, and
    // node-b lets her connection go as a dropped one.
    assert_eq!(ann.join("near").await["peers"], json!([]));
    ann.barrier().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_forged_messages_on_a_nodes_channel_reach_no_client() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "");
    let mut ann = Ws::connect(&a).await;
    let ann_id = id(&ann.join("guarded").await);
    let mut bo = Ws::connect(&b).await;
    let bo_id = id(&bo.join("guarded").await);
    ann.recv_type("peer-joined").await;
    let dropped = |n: &Server| {
        n.metrics()
            .get("signalbox_cluster_messages_dropped_total")
            .copied()
            .unwrap_or(0.0)
    };
    let before = dropped(&b);
    // Not a message between nodes at all.
    assert_eq!(
        redis.command(&["PUBLISH", "signalbox:to:node-b", "{\"k\":\"launch\"}"]),
        ":1"
    );
    // A well-formed message to each of node-b's first connections, from a node that is not
    // where their room lives.
    for conn in 0..8 {
        let forged = json!({
            "node": "node-x", "inst": "feed", "k": "down", "conn": conn, "t": "signal",
            "msg": json!({"type":"signal","from":ann_id,"data":"forged"}).to_string(),
        });
        redis.command(&["PUBLISH", "signalbox:to:node-b", &forged.to_string()]);
    }
    wait_for(Duration::from_secs(5), "the garbage counted", || {
        dropped(&b) > before
    });
    // Node-b still carries the room's real traffic, and nothing forged reached Bo.
    ann.send(json!({"type":"signal","to":bo_id,"data":"real"}))
        .await;
    let got = bo.recv_type("signal").await;
    assert_eq!(got["data"], "real", "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_while_redis_stalls_is_answered_unavailable_in_time() {
    let redis = Redis::start_with(&["--enable-debug-command", "yes"]);
    let a = node(&redis, "node-a", "");
    wait_for(Duration::from_secs(10), "registered", || {
        a.metrics().get("signalbox_cluster_redis_up") == Some(&1.0)
    });
    // Redis answers nobody for 4 s.
    let _stalled = redis.send(&["DEBUG", "SLEEP", "4"]);
    std::thread::sleep(Duration::from_millis(100));
    let mut ann = Ws::connect(&a).await;
    let asked = Instant::now();
    ann.send(json!({"type":"join","room":"stalled"})).await;
    ann.expect_error("unavailable").await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    // The connection stays usable, and a join goes through once Redis answers again (and the
    // node has seen it answer).
    assert_eq!(redis.command(&["PING"]), "+PONG");
    let mut tries = 0;
    let joined = loop {
        ann.send(json!({"type":"join","room":"stalled"})).await;
        let v = ann.recv().await;
        if v["type"] == "joined" {
            break v;
        }
        assert_eq!(v["code"], "unavailable", "{v}");
        tries += 1;
        assert!(tries < 20, "joins still refused 10 s after Redis answered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(joined["peers"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_of_rooms_on_another_node_count_against_the_clients_own_node_join_rate() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, "join_rate_per_ip = 3");
    // Rooms that live on node-a, each from a client address of its own.
    let mut hosts = Vec::new();
    for n in 0..4u8 {
        let from = std::net::IpAddr::from([127, 0, 0, 2 + n]);
        let mut ws = ws_client::connect_from(&a, from).await;
        ws.join(&format!("rate-{n}")).await;
        hosts.push(ws);
    }
    // A client of node-b goes from room to room: three joins a minute, as on one node.
    let mut bo = Ws::connect(&b).await;
    for n in 0..3 {
        bo.join(&format!("rate-{n}")).await;
        bo.send(json!({"type":"leave"})).await;
    }
    bo.send(json!({"type":"join","room":"rate-3"})).await;
    bo.expect_error("rate-limited").await;
    assert_eq!(
        b.metrics()
            .get("signalbox_rate_limited_total{what=\"signaling\"}")
            .copied(),
        Some(1.0)
    );
    // Node-a never saw the refused join.
    assert!(hosts[3].try_recv().await.is_none());
}
