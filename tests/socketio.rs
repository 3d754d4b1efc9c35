//! The Socket.IO endpoint's limits against the real binary, spoken as raw Engine.IO v4 over a
//! WebSocket (the npm and PyPI clients in `tests/socketio` drive the vocabularies themselves):
//! its rooms are the registry's (gauges, admin view, room size, join rate), and the WebSocket
//! message bound, the connect rate and the drain apply to it.
mod common;
mod ws_client;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use common::{base_config, Server};
use ws_client::{Stream, WAIT};

const ADMIN: &str = "admin-token-0123456789";

fn start(rooms: &str, compat: &str) -> Server {
    Server::start(&base_config(&format!(
        "[admin]\ntoken = \"{ADMIN}\"\n\n[rooms]\n{rooms}\n\n[compat]\nsocketio = true\n{compat}\n"
    )))
}

/// What a Socket.IO connect got.
enum Connect {
    Ok(Box<Sio>),
    /// `connect_error`, with its message.
    Refused(String),
}

/// A Socket.IO client speaking Engine.IO v4 over a WebSocket, by hand.
struct Sio {
    ws: Stream,
    /// The server's log, for the message of a timeout.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sio {
    /// Connects from `from` (any 127.0.0.0/8 address is a client address of its own).
    async fn try_connect(server: &Server, from: IpAddr) -> Connect {
        let url = format!(
            "wss://{}/socket.io/?EIO=4&transport=websocket",
            server.addr("https")
        );
        let req = url.into_client_request().expect("request");
        let ws = ws_client::upgrade_from(server, from, req).await;
        let mut sio = Sio {
            ws,
            log: server.stderr.clone(),
        };
        let open = sio
            .packet("the open packet")
            .await
            .expect("the Engine.IO open packet");
        assert!(open.starts_with("0{"), "{open}");
        sio.send("40").await;
        let answer = sio
            .packet("the connect answer")
            .await
            .expect("the Socket.IO connect answer");
        if let Some(ok) = answer.strip_prefix("40") {
            assert!(ok.contains("\"sid\""), "{answer}");
            Connect::Ok(Box::new(sio))
        } else if let Some(err) = answer.strip_prefix("44") {
            let err: Value = serde_json::from_str(err).expect("connect_error JSON");
            Connect::Refused(err["message"].as_str().expect("message").to_owned())
        } else {
            panic!("unexpected connect answer {answer}");
        }
    }

    async fn connect(server: &Server) -> Sio {
        match Sio::try_connect(server, [127, 0, 0, 1].into()).await {
            Connect::Ok(sio) => *sio,
            Connect::Refused(why) => panic!("connect refused: {why}"),
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send frame");
    }

    async fn emit(&mut self, event: &str, data: Value) {
        self.send(&format!("42{}", json!([event, data]))).await;
    }

    /// The next Engine.IO packet's text, answering pings; `Err` with the close frame when the
    /// connection closes instead. `what` names the wait in a timeout's panic.
    async fn packet(&mut self, what: &str) -> Result<String, Option<CloseFrame>> {
        loop {
            let Ok(next) = tokio::time::timeout(WAIT, self.ws.next()).await else {
                let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "no packet within {WAIT:?} while waiting for {what}; the server's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            };
            match next {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.send("3").await,
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => return Err(frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// The next event named `name` (others are skipped): its arguments.
    async fn event(&mut self, name: &str) -> Vec<Value> {
        loop {
            let packet = self.packet(name).await.unwrap_or_else(|close| {
                panic!("closed ({close:?}) while waiting for `{name}`");
            });
            let Some(body) = packet.strip_prefix("42") else {
                continue;
            };
            let mut args: Vec<Value> = serde_json::from_str(body).expect("event JSON");
            if args.first().and_then(Value::as_str) == Some(name) {
                args.remove(0);
                return args;
            }
        }
    }

    /// Emits `join` (vocabulary 2) and returns the answer's event name.
    async fn join(&mut self, room: &str) -> String {
        self.emit("join", json!(room)).await;
        loop {
            let packet = self
                .packet("an answer to join")
                .await
                .expect("an answer to join");
            let Some(body) = packet.strip_prefix("42") else {
                continue;
            };
            let args: Vec<Value> = serde_json::from_str(body).expect("event JSON");
            let name = args[0].as_str().expect("event name");
            if matches!(name, "room_created" | "room_joined" | "full_room" | "error") {
                return match name {
                    "error" => format!("error {}", args[1]["code"].as_str().unwrap_or("?")),
                    _ => name.to_owned(),
                };
            }
        }
    }
}

fn metric(server: &Server, series: &str) -> f64 {
    server.metrics().get(series).copied().unwrap_or(0.0)
}

/// Polls `metric` until it equals `want` (the hub publishes its gauges after each batch).
async fn wait_metric(server: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    while metric(server, series) != want {
        assert!(
            Instant::now() < deadline,
            "{series} stayed {} (want {want})",
            metric(server, series)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_rooms(server: &Server) -> Vec<Value> {
    let resp = server
        .client()
        .get(server.https_url("/api/stats"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    body["rooms"].as_array().expect("rooms").clone()
}

#[tokio::test]
async fn socketio_rooms_are_registry_rooms_of_two_seen_by_the_gauges_and_the_admin_view() {
    // max_peers 4 for native rooms; a Socket.IO room still takes two.
    let server = start("max_peers = 4", "");
    let mut a = Sio::connect(&server).await;
    let mut b = Sio::connect(&server).await;
    let mut c = Sio::connect(&server).await;
    assert_eq!(a.join("pair").await, "room_created");
    assert_eq!(b.join("pair").await, "room_joined");
    assert_eq!(c.join("pair").await, "full_room");
    wait_metric(&server, "signalbox_rooms_active", 1.0).await;
    wait_metric(&server, "signalbox_peers_active", 2.0).await;
    let rooms = admin_rooms(&server).await;
    let pair = rooms
        .iter()
        .find(|r| r["room"] == "@pair")
        .unwrap_or_else(|| panic!("the room is listed apart from native rooms: {rooms:?}"));
    assert_eq!(pair["peers"].as_array().map(Vec::len), Some(2), "{pair}");

    // A disconnect leaves the room at once (no reconnect grace for Socket.IO).
    drop(b);
    wait_metric(&server, "signalbox_peers_active", 1.0).await;
    assert_eq!(c.join("pair").await, "room_joined");
    drop((a, c));
    wait_metric(&server, "signalbox_rooms_active", 0.0).await;
}

#[tokio::test]
async fn joins_beyond_join_rate_per_ip_are_refused_and_counted() {
    let server = start("join_rate_per_ip = 2", "");
    let mut a = Sio::connect(&server).await;
    let before = metric(&server, "signalbox_rate_limited_total{what=\"signaling\"}");
    assert_eq!(a.join("one").await, "room_created");
    assert_eq!(a.join("two").await, "room_created");
    assert_eq!(a.join("three").await, "error rate-limited");
    let after = metric(&server, "signalbox_rate_limited_total{what=\"signaling\"}");
    assert_eq!(after - before, 1.0);
    // The socket stays usable.
    a.emit("ipaddr", Value::Null).await;
    assert_eq!(a.event("ipaddr").await, [json!("127.0.0.1")]);
}

#[tokio::test]
async fn connects_beyond_connect_rate_per_ip_get_a_connect_error_per_address() {
    let server = start("", "connect_rate_per_ip = 2");
    let limited = IpAddr::from([127, 0, 0, 2]);
    let mut kept = Vec::new();
    for _ in 0..2 {
        match Sio::try_connect(&server, limited).await {
            Connect::Ok(sio) => kept.push(sio),
            Connect::Refused(why) => panic!("refused too early: {why}"),
        }
    }
    match Sio::try_connect(&server, limited).await {
        Connect::Refused(why) => assert!(why.starts_with("rate-limited: "), "{why}"),
        Connect::Ok(_) => panic!("a third connect within the minute was let in"),
    }
    assert_eq!(
        metric(&server, "signalbox_rate_limited_total{what=\"socketio\"}"),
        1.0
    );
    // Another address has a budget of its own.
    assert!(matches!(
        Sio::try_connect(&server, [127, 0, 0, 3].into()).await,
        Connect::Ok(_)
    ));
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_that_socket_with_1009_and_spares_the_others() {
    // Events over 1024 bytes are refused; WebSocket messages over 2048 close the socket.
    let server = start("max_message_bytes = 1024", "");
    let mut a = Sio::connect(&server).await;
    let mut b = Sio::connect(&server).await;
    assert_eq!(a.join("big").await, "room_created");
    assert_eq!(b.join("big").await, "room_joined");

    a.emit("message", json!("x".repeat(1500))).await;
    assert_eq!(a.event("error").await[0]["code"], "too-large");

    a.emit("message", json!("x".repeat(1 << 20))).await;
    let close = loop {
        match a.packet("the close frame").await {
            Ok(_) => continue,
            Err(close) => break close,
        }
    };
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");

    // The other socket is untouched and its room frees the closed socket's place.
    b.emit("ipaddr", Value::Null).await;
    assert_eq!(b.event("ipaddr").await, [json!("127.0.0.1")]);
    wait_metric(&server, "signalbox_peers_active", 1.0).await;
    let mut c = Sio::connect(&server).await;
    assert_eq!(c.join("big").await, "room_joined");
    b.emit("message", json!("still here")).await;
    assert_eq!(c.event("message").await, [json!("still here")]);
}

#[tokio::test]
async fn on_sigterm_sockets_are_told_and_disconnected_when_the_drain_grace_ends() {
    let mut server = start("", "");
    let mut a = Sio::connect(&server).await;
    assert_eq!(a.join("drain").await, "room_created");
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    // base_config's drain_grace.
    assert_eq!(
        a.event("server-shutdown").await,
        [json!({"grace_s": 2, "reconnect": false})]
    );
    // Joins are refused while draining.
    assert_eq!(a.join("other").await, "error shutting-down");
    // A Socket.IO disconnect packet, so the client does not reconnect at once.
    let disconnect = loop {
        match a.packet("the disconnect packet").await {
            Ok(p) if p == "41" => break Some(p),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_eq!(disconnect.as_deref(), Some("41"));
    assert!(signalled.elapsed() >= Duration::from_millis(1500));
    // A client closes its connection on that packet; the server waits for that (up to
    // shutdown_grace), so the packet is not cut off by its exit.
    assert_eq!(server.wait_exit(Duration::from_millis(500)), None);
    let _ = a.ws.close(None).await;
    assert_eq!(server.wait_exit(WAIT), Some(0));
}
