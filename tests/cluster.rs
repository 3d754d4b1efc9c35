//! `[cluster]` against the real binary: Debian's `redis-server` started on a free loopback port
//! for each test (no persistence) and stopped when the test ends, and two signalbox nodes.
mod cluster_support;
mod common;
mod turn_raw;
mod ws_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::{turn_credentials, wait_for, Redis};
use common::{base_config, named_port, run_cli, Server};
use serde_json::{json, Value};
use turn_raw::{Relayed, TurnClient};
use ws_client::Ws;

const ADMIN: &str = "admin-token-0123456789";

fn node_config(redis: &Redis, name: &str, node_timeout: &str) -> String {
    node_config_with_relay_ports(redis, name, node_timeout, "40000-40999")
}

fn node_config_with_relay_ports(
    redis: &Redis,
    name: &str,
    node_timeout: &str,
    relay_ports: &str,
) -> String {
    base_config(&format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nrelay_ip = \"127.0.0.1\"\nrelay_ports = \"{relay_ports}\"\n\
         secrets = [\"shared-cluster-secret\"]\n\n[rooms]\nreconnect_grace = \"1s\"\n\n\
         [admin]\ntoken = \"{ADMIN}\"\n\n\
         [cluster]\nredis_url = \"{}\"\nnode_name = \"{name}\"\nnode_timeout = \"{node_timeout}\"\n",
        redis.url()
    ))
}

fn metric(server: &Server, name: &str) -> Option<f64> {
    server.metrics().get(name).copied()
}

async fn get_json(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = server.client().get(server.https_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn cluster_check(body: &Value) -> Value {
    body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "cluster")
        .cloned()
        .unwrap_or_else(|| panic!("no cluster check in {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_register_and_a_killed_node_is_gone_within_node_timeout() {
    let redis = Redis::start();
    let a = Server::start(&node_config(&redis, "node-a", "2s"));
    let b = Server::start(&node_config(&redis, "node-b", "2s"));
    for node in [&a, &b] {
        wait_for(Duration::from_secs(5), "both nodes registered", || {
            metric(node, "signalbox_cluster_nodes_alive") == Some(2.0)
        });
    }
    assert_eq!(metric(&a, "signalbox_cluster_redis_up"), Some(1.0));
    assert!(metric(&a, "signalbox_cluster_redis_latency_seconds").is_some_and(|s| s > 0.0));

    let (status, stats) = get_json(&a, "/api/stats", Some(ADMIN)).await;
    assert_eq!(status, 200);
    let cluster = &stats["cluster"];
    assert_eq!(cluster["node"], "node-a");
    assert_eq!(cluster["redis"]["up"], true);
    let nodes = cluster["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    let node_b = &nodes[1];
    assert_eq!(node_b["relays"][0]["advertised"], "127.0.0.1");
    assert_eq!(node_b["relay_ports"], "40000-40999");
    assert_eq!(
        node_b["public"],
        format!("127.0.0.1:{}", b.addr("https").port())
    );

    drop(b); // SIGKILL: no goodbye, the entry has to expire.
    let took = wait_for(
        Duration::from_secs(4),
        "node-b gone from node-a's view",
        || metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0),
    );
    eprintln!("a killed node left the registry after {took:?}");
    let (_, stats) = get_json(&a, "/api/stats", Some(ADMIN)).await;
    assert_eq!(stats["cluster"]["nodes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_node_leaves_the_registry_at_once() {
    let redis = Redis::start();
    // A node_timeout far longer than the wait below: only leaving explains a quick exit.
    let a = Server::start(&node_config(&redis, "node-a", "30s"));
    let b = Server::start(&node_config(&redis, "node-b", "30s"));
    wait_for(Duration::from_secs(15), "both nodes registered", || {
        metric(&a, "signalbox_cluster_nodes_alive") == Some(2.0)
    });
    b.signal(libc::SIGTERM);
    assert!(
        b.log_contains("cluster: left the registry"),
        "{}",
        b.stderr_text()
    );
    // node-a reads the registry every 10 s with this node_timeout.
    wait_for(
        Duration::from_secs(12),
        "node-b gone after its drain",
        || metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_redis_makes_the_node_unhealthy_until_redis_is_back() {
    let mut redis = Redis::start();
    let a = Server::start(&node_config(&redis, "node-a", "1s"));
    wait_for(Duration::from_secs(5), "registered", || {
        metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0)
    });
    let (status, health) = get_json(&a, "/healthz?deep=1", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(cluster_check(&health)["status"], "ok");

    redis.stop();
    wait_for(Duration::from_secs(5), "Redis seen as down", || {
        metric(&a, "signalbox_cluster_redis_up") == Some(0.0)
    });
    let (status, health) = get_json(&a, "/healthz?deep=1", None).await;
    assert_eq!(status, 503, "{health}");
    let check = cluster_check(&health);
    assert_eq!(check["status"], "fail");
    assert!(
        check["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{check}"
    );
    // The HTTPS side goes on serving meanwhile.
    assert_eq!(get_json(&a, "/healthz", None).await.0, 200);

    redis.run(); // Empty again: the node registers anew on its own.
    wait_for(Duration::from_secs(10), "Redis back", || {
        metric(&a, "signalbox_cluster_redis_up") == Some(1.0)
            && metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0)
    });
    let (status, health) = get_json(&a, "/healthz?deep=1", None).await;
    assert_eq!(status, 200, "{health}");
    assert!(metric(&a, "signalbox_cluster_heartbeat_failures_total").is_some_and(|n| n >= 1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_has_no_cluster_state_at_all() {
    let a = Server::start(&base_config(&format!("[admin]\ntoken = \"{ADMIN}\"\n")));
    assert!(
        !a.metrics()
            .keys()
            .any(|k| k.starts_with("signalbox_cluster_")),
        "cluster metrics on a single node"
    );
    let (_, stats) = get_json(&a, "/api/stats", Some(ADMIN)).await;
    assert_eq!(stats["cluster"], Value::Null);
    let (_, health) = get_json(&a, "/healthz?deep=1", None).await;
    assert!(!health.to_string().contains("\"cluster\""), "{health}");
    assert!(!a.stderr_text().contains("cluster"), "{}", a.stderr_text());
}

#[test]
fn check_config_refuses_a_cluster_without_shared_turn_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("config.toml"),
        "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n",
    )
    .expect("write config");
    let (code, _, stderr) = run_cli(dir.path(), &["check-config"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("cluster.redis_url"), "{stderr}");
    assert!(stderr.contains("[turn] secrets"), "{stderr}");

    std::fs::write(
        dir.path().join("config.toml"),
        "[turn]\nsecrets = [\"s\"]\n\n[cluster]\nredis_url = \"rediss://user:pw@127.0.0.1:6380/1\"\n",
    )
    .expect("write config");
    let (code, _, stderr) = run_cli(dir.path(), &["check-config"]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peers_credentials_work_on_every_node_until_it_leaves_then_on_none() {
    let redis = Redis::start();
    let a = Server::start(&node_config(&redis, "node-a", "2s"));
    let b = Server::start(&node_config(&redis, "node-b", "2s"));
    assert!(b.log_contains("cluster: listening for credential notes"));
    let (turn_a, turn_b) = (a.addr("turn-udp"), b.addr("turn-udp"));

    let mut alice = Ws::connect(&a).await;
    let mut bob = Ws::connect(&a).await;
    let (alice_user, alice_pass) = turn_credentials(&alice.join("r").await);
    let (bob_user, bob_pass) = turn_credentials(&bob.join("r").await);
    let allocate = |server, user: &str, pass: &str| {
        let mut client = TurnClient::new(server, user, pass);
        let reply = client.allocate();
        (client, reply)
    };
    // Node B learns of alice through Redis only: its own signaling never saw her.
    let start = Instant::now();
    let mut on_b = loop {
        let (client, reply) = allocate(turn_b, &alice_user, &alice_pass);
        if reply.is_success() {
            break client;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "node-b still refuses alice's credentials: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(on_b.refresh(600).is_success());
    assert!(allocate(turn_a, &alice_user, &alice_pass).1.is_success());

    alice.send(json!({"type": "leave"})).await;
    bob.recv_type("peer-left").await;
    wait_for(
        Duration::from_secs(3),
        "alice's allocation on node-b closed",
        || on_b.refresh(600).code == Some(437),
    );
    for (node, turn) in [("node-a", turn_a), ("node-b", turn_b)] {
        assert_eq!(
            allocate(turn, &alice_user, &alice_pass).1.code,
            Some(401),
            "alice's credentials still open allocations on {node}"
        );
    }
    assert!(
        allocate(turn_b, &bob_user, &bob_pass).1.is_success(),
        "bob is still live, on every node"
    );
    assert!(metric(
        &b,
        "signalbox_cluster_messages_total{direction=\"received\"}"
    )
    .is_some_and(|n| n >= 3.0));
    assert!(
        metric(&a, "signalbox_cluster_messages_total{direction=\"sent\"}")
            .is_some_and(|n| n >= 3.0)
    );
}

/// REST credentials (`EXPIRY:USER`) with the nodes' shared secret, computed here independently.
fn rest_credentials(user: &str) -> (String, String) {
    use base64::Engine as _;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 600;
    let username = format!("{expiry}:{user}");
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"shared-cluster-secret",
    );
    let mac = ring::hmac::sign(&key, username.as_bytes());
    (
        username,
        base64::engine::general_purpose::STANDARD.encode(mac.as_ref()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn relays_of_two_nodes_reach_each_other_on_their_ranges_and_nowhere_else_on_the_host() {
    let redis = Redis::start();
    // Both on loopback, which the peer policy refuses (this host, and a special range). The
    // ranges lie below the kernel's ephemeral ports, where the listeners on port 0 land.
    let a = Server::start(&node_config_with_relay_ports(
        &redis,
        "node-a",
        "2s",
        "20000-20999",
    ));
    let b = Server::start(&node_config_with_relay_ports(
        &redis,
        "node-b",
        "2s",
        "21000-21999",
    ));
    let (user, pass) = rest_credentials("relay-test");
    let mut on_a = TurnClient::new(a.addr("turn-udp"), &user, &pass);
    let mut on_b = TurnClient::new(b.addr("turn-udp"), &user, &pass);
    let relayed_a = on_a.allocate().relayed.expect("relayed address on node-a");
    let relayed_b = on_b.allocate().relayed.expect("relayed address on node-b");
    assert_eq!(relayed_b.port() / 1000, 21, "{relayed_b}");

    // Until node-a has read node-b's entry, node-b's relay is just this host.
    for node in [&a, &b] {
        wait_for(Duration::from_secs(5), "both nodes registered", || {
            metric(node, "signalbox_cluster_nodes_alive") == Some(2.0)
        });
    }
    assert!(
        on_a.permission(relayed_b).is_success(),
        "node-b's relay from node-a"
    );
    assert!(
        on_b.permission(relayed_a).is_success(),
        "node-a's relay from node-b"
    );
    on_a.send_indication(relayed_b, b"across the cluster");
    let got = on_b.relayed(Duration::from_millis(500));
    assert!(
        got.iter().any(|r| matches!(r, Relayed::Data { from, data }
            if *from == relayed_a && data.as_slice() == b"across the cluster")),
        "{got:?}"
    );

    // Everything else on this host stays refused: node-b's other ports, a port just past its
    // range, and node-a's own relay range where no allocation lives.
    for peer in [
        b.addr("turn-udp"),
        b.addr("https"),
        SocketAddr::new(relayed_b.ip(), 22_000),
        SocketAddr::new(
            relayed_a.ip(),
            if relayed_a.port() == 20_000 {
                20_001
            } else {
                20_000
            },
        ),
    ] {
        assert_eq!(on_a.permission(peer).code, Some(403), "{peer} from node-a");
    }

    // node-b gone: its range is this host again.
    drop(b);
    wait_for(Duration::from_secs(4), "node-b gone", || {
        metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0)
    });
    assert_eq!(on_a.permission(relayed_b).code, Some(403));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_password_comes_through_the_url_and_a_wrong_one_is_reported() {
    let redis = Redis::start_with(&["--requirepass", "s3cret-pw"]);
    let config = |url: &str| node_config(&redis, "node-a", "1s").replace(&redis.url(), url);
    let port = redis.port;
    let a = Server::start(&config(&format!("redis://:s3cret-pw@127.0.0.1:{port}")));
    wait_for(
        Duration::from_secs(5),
        "registered with the password",
        || metric(&a, "signalbox_cluster_nodes_alive") == Some(1.0),
    );
    assert!(
        !a.stderr_text().contains("s3cret-pw"),
        "the password is logged"
    );

    let b = Server::start(&config(&format!("redis://:wrong-pw@127.0.0.1:{port}")));
    wait_for(Duration::from_secs(5), "refused for the password", || {
        metric(&b, "signalbox_cluster_redis_up") == Some(0.0)
            && metric(&b, "signalbox_cluster_heartbeat_failures_total").is_some_and(|n| n >= 1.0)
    });
    let (status, health) = get_json(&b, "/healthz?deep=1", None).await;
    assert_eq!(status, 503, "{health}");
    let message = cluster_check(&health)["message"].to_string();
    assert!(message.contains("redis://:***@127.0.0.1"), "{message}");
    assert!(!message.contains("wrong-pw"), "{message}");
    assert!(
        !b.stderr_text().contains("wrong-pw"),
        "the password is logged"
    );
    assert_eq!(metric(&a, "signalbox_cluster_nodes_alive"), Some(1.0));
}

/// Starts the binary with `SSL_CERT_FILE` naming the roots it trusts (the system's roots are
/// what `rediss://` checks the server against); waits for its `open` line.
struct TrustingNode {
    child: Child,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TrustingNode {
    fn start(config: &str, roots: &std::path::Path) -> TrustingNode {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signalbox"))
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env("SSL_CERT_FILE", roots)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start signalbox");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut metrics = None;
        for line in out.lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("signalbox: metrics listening on ") {
                metrics = addr.trim().parse().ok();
            }
            if line.starts_with("signalbox: open ") {
                break;
            }
        }
        TrustingNode {
            child,
            metrics: metrics.expect("a metrics listener"),
            _dir: dir,
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let mut tcp = TcpStream::connect(self.metrics).expect("metrics listener");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        tcp.read_to_string(&mut text).expect("response");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for TrustingNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_to_redis_comes_through_a_rediss_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (cert_file, key_file) = (dir.path().join("redis.pem"), dir.path().join("redis.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write certificate");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    let tls_port = named_port();
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let redis = Redis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path(&cert_file),
        "--tls-key-file",
        &path(&key_file),
        "--tls-ca-cert-file",
        &path(&cert_file),
        "--tls-auth-clients",
        "no",
    ]);
    let config = node_config(&redis, "node-tls", "1s")
        .replace(&redis.url(), &format!("rediss://127.0.0.1:{tls_port}"));
    let node = TrustingNode::start(&config, &cert_file);
    wait_for(Duration::from_secs(5), "registered over TLS", || {
        node.metric("signalbox_cluster_nodes_alive") == Some(1.0)
    });

    // The same server is not trusted with another certificate as the only root.
    let other_key = rcgen::KeyPair::generate().expect("key");
    let other = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .self_signed(&other_key)
        .expect("certificate");
    let other_roots = dir.path().join("other.pem");
    std::fs::write(&other_roots, other.pem()).expect("write roots");
    let untrusting = TrustingNode::start(&config.replace("node-tls", "node-other"), &other_roots);
    wait_for(Duration::from_secs(5), "refused without trust", || {
        untrusting
            .metric("signalbox_cluster_heartbeat_failures_total")
            .is_some_and(|n| n >= 1.0)
    });
    assert_eq!(untrusting.metric("signalbox_cluster_redis_up"), Some(0.0));
    assert_eq!(node.metric("signalbox_cluster_nodes_alive"), Some(1.0));
}
