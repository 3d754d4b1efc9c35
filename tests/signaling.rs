//! Room signaling against the real binary: rooms, relay, every error code, limits, resume.
mod common;
mod ws_client;

use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use common::{base_config, Server};
use ws_client::{try_connect, Ws};

fn start(rooms: &str) -> Server {
    Server::start(&base_config(&format!("[rooms]\n{rooms}")))
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn ids(peers: &Value) -> Vec<String> {
    peers
        .as_array()
        .expect("peers array")
        .iter()
        .map(|p| p["id"].as_str().expect("peer id").to_owned())
        .collect()
}

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    u16::from(frame.expect("close frame with a code").code)
}

#[tokio::test]
async fn the_first_peer_creates_a_room_the_second_joins_and_a_third_finds_it_full() {
    let server = start("max_peers = 2");
    let mut a = Ws::connect(&server).await;
    let ja = a.join("pair").await;
    assert_eq!(ja["room"], "pair");
    assert_eq!(ja["peers"], json!([]));
    // Filled with this server's STUN/TURN and the peer's credentials (tests/credentials.rs).
    assert!(ja["iceServers"].is_array(), "{ja}");
    assert!(ja["id"].as_str().is_some_and(|s| s.len() >= 20), "{ja}");
    assert!(ja["resume"].as_str().is_some_and(|s| s.len() >= 20), "{ja}");

    let mut b = Ws::connect(&server).await;
    let jb = b.join_named("pair", "Bo").await;
    assert_eq!(ids(&jb["peers"]), [id(&ja)]);
    assert_ne!(id(&jb), id(&ja));
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peer"], json!({"id": id(&jb), "name": "Bo"}));

    let mut c = Ws::connect(&server).await;
    c.send(json!({"type":"join","room":"pair"})).await;
    c.expect_error("room-full").await;
    a.barrier().await;
    b.barrier().await;
}

#[tokio::test]
async fn three_peers_in_a_room_of_four_get_correct_peer_lists() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    let mut c = Ws::connect(&server).await;
    let ja = a.join_named("four", "Ann").await;
    let jb = b.join("four").await;
    let jc = c.join_named("four", "Cy").await;
    assert_eq!(
        jc["peers"],
        json!([{"id": id(&ja), "name": "Ann", "host": true}, {"id": id(&jb)}])
    );
    assert_eq!(ids(&jb["peers"]), [id(&ja)]);
    assert_eq!(a.recv_type("peer-joined").await["peer"]["id"], id(&jb));
    assert_eq!(a.recv_type("peer-joined").await["peer"]["id"], id(&jc));
    assert_eq!(b.recv_type("peer-joined").await["peer"]["id"], id(&jc));
    for ws in [&mut a, &mut b, &mut c] {
        ws.barrier().await;
    }
    // The fourth still fits.
    let mut d = Ws::connect(&server).await;
    assert_eq!(ids(&d.join("four").await["peers"]).len(), 3);
}

#[tokio::test]
async fn a_signal_reaches_only_the_addressee_with_its_data_unchanged() {
    let server = start("");
    let (mut a, mut b, mut c) = (
        Ws::connect(&server).await,
        Ws::connect(&server).await,
        Ws::connect(&server).await,
    );
    let ja = a.join("r").await;
    let jb = b.join("r").await;
    c.join("r").await;
    a.recv_type("peer-joined").await;
    a.recv_type("peer-joined").await;
    b.recv_type("peer-joined").await;

    let data =
        json!({"sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "kind": "offer", "n": [1, 2.5, null]});
    a.send(json!({"type":"signal","to": id(&jb),"data": data}))
        .await;
    let got = b.recv_type("signal").await;
    assert_eq!(got, json!({"type":"signal","from": id(&ja),"data": data}));
    // Nothing reached the other member or the sender.
    c.barrier().await;
    a.barrier().await;
}

#[tokio::test]
async fn signaling_a_peer_of_another_room_is_unknown_peer() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    a.join("one").await;
    let jb = b.join("two").await;
    a.send(json!({"type":"signal","to": id(&jb),"data": "hi"}))
        .await;
    a.expect_error("unknown-peer").await;
    b.barrier().await;
}

#[tokio::test]
async fn every_error_code_is_sent_and_the_connection_stays_usable() {
    let server =
        start("max_peers = 2\nmax_message_bytes = 2048\nrate_per_second = 2\nrate_burst = 10");
    let mut a = Ws::connect(&server).await;
    a.send(json!({"type":"signal","to":"x","data":1})).await;
    a.expect_error("not-joined").await;
    a.send(json!({"type":"leave"})).await;
    a.expect_error("not-joined").await;
    a.send_text("{not json").await;
    a.expect_error("bad-request").await;
    let ja = a.join("e").await;
    a.send(json!({"type":"join","room":"f"})).await;
    a.expect_error("already-joined").await;
    a.send(json!({"type":"signal","to":"nobody","data":1}))
        .await;
    a.expect_error("unknown-peer").await;
    a.send(json!({"type":"signal","to": id(&ja),"data":1}))
        .await;
    a.expect_error("unknown-peer").await;
    a.send_text(&format!("\"{}\"", "x".repeat(2100))).await;
    a.expect_error("too-large").await;

    let mut b = Ws::connect(&server).await;
    b.join("e").await;
    a.recv_type("peer-joined").await;
    let mut c = Ws::connect(&server).await;
    c.send(json!({"type":"join","room":"e"})).await;
    c.expect_error("room-full").await;

    // 8 messages so far on `a`; the burst of 10 runs out within the next 10.
    for _ in 0..10 {
        a.send(json!({"type":"ping"})).await;
    }
    let mut limited = 0;
    for _ in 0..10 {
        let v = a.recv().await;
        match v["type"].as_str() {
            Some("pong") => {}
            Some("error") if v["code"] == "rate-limited" => limited += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(limited >= 1, "no rate-limited error");
    // One token refills in half a second at 2 per second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.barrier().await;
}

#[tokio::test]
async fn rate_limited_is_the_error_code_for_a_flood() {
    let server = start("rate_per_second = 1\nrate_burst = 2");
    let mut a = Ws::connect(&server).await;
    for _ in 0..3 {
        a.send(json!({"type":"ping"})).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(a.recv().await);
    }
    let err = seen
        .iter()
        .find(|v| v["type"] == "error")
        .expect("one message over the burst is refused");
    assert_eq!(err["code"], "rate-limited");
    assert_eq!(seen.iter().filter(|v| v["type"] == "pong").count(), 2);
}

#[tokio::test]
async fn joins_past_the_per_address_rate_get_rate_limited_on_any_connection_of_that_address() {
    let server = start("join_rate_per_ip = 3");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    // Join and leave in a loop, as a credential mint would, over two connections.
    a.join("churn-1").await;
    a.send(json!({"type":"leave"})).await;
    a.join("churn-2").await;
    a.send(json!({"type":"leave"})).await;
    b.join("churn-3").await;
    b.send(json!({"type":"leave"})).await;
    a.send(json!({"type":"join","room":"churn-4"})).await;
    let refused = a.expect_error("rate-limited").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 joins per minute")),
        "{refused}"
    );
    b.send(json!({"type":"join","room":"churn-4"})).await;
    b.expect_error("rate-limited").await;
    a.barrier().await;

    let mut other = ws_client::connect_from(&server, [127, 0, 0, 2].into()).await;
    other.join("churn-4").await;
    other.barrier().await;
}

#[tokio::test]
async fn garbage_frames_get_bad_request_and_the_connection_stays_usable() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    for garbage in [
        "",
        "hello",
        "[1,2,3]",
        "{\"type\":5}",
        "{\"type\":\"dance\"}",
        "{\"room\":\"r\"}",
        "{\"type\":\"join\"}",
        "{\"type\":\"join\",\"room\":\"../etc\"}",
        "{\"type\":\"signal\",\"to\":\"x\"}",
        "{\"type\":\"join\",\"room\":\"r\"",
        "\u{0}\u{1}\u{2}",
    ] {
        a.send_text(garbage).await;
        let e = a.expect_error("bad-request").await;
        assert!(e["message"].is_string(), "{garbage:?}");
    }
    let j = a.join("still-works").await;
    assert_eq!(j["room"], "still-works");
}

#[tokio::test]
async fn a_binary_frame_closes_the_connection_with_1003_and_no_error_reply() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    a.join("bin").await;
    a.stream
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send binary");
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut a.stream),
    )
    .await
    .expect("an answer in time");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1003);
            assert!(frame.reason.contains("binary"), "{}", frame.reason);
        }
        other => panic!("expected a close frame and nothing before it, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_pings_take_from_the_message_rate() {
    let server = start("rate_per_second = 1\nrate_burst = 3");
    let mut a = Ws::connect(&server).await;
    for _ in 0..2 {
        a.stream
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .expect("send ping");
    }
    a.send(json!({"type":"ping"})).await;
    a.send(json!({"type":"ping"})).await;
    // `recv` skips the pong frames the WebSocket layer answers with. The local error may
    // overtake the hub's pong, so the order is not checked.
    let mut types = vec![a.recv().await, a.recv().await];
    types.sort_by_key(|v| v["type"].to_string());
    assert_eq!(types[0]["code"], "rate-limited", "{types:?}");
    assert_eq!(
        types[1]["type"], "pong",
        "the third of the burst of three: {types:?}"
    );
}

#[tokio::test]
async fn pings_beyond_the_message_rate_close_the_connection_with_1008() {
    let server = start("rate_per_second = 1\nrate_burst = 2");
    let mut a = Ws::connect(&server).await;
    for _ in 0..3 {
        a.stream
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .expect("send ping");
    }
    let close = a.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    // Not the join timeout's 1008: this one names the pings.
    assert!(close.reason.contains("pings"), "{}", close.reason);
}

#[tokio::test]
async fn an_oversize_frame_gets_too_large_and_a_huge_one_closes_with_1009() {
    let server = start("max_message_bytes = 4096");
    let mut a = Ws::connect(&server).await;
    a.join("big").await;
    a.send_text(&format!("\"{}\"", "x".repeat(4095))).await;
    a.expect_error("too-large").await;
    a.barrier().await;
    a.send_text(&"y".repeat(8193)).await;
    assert_eq!(close_code(a.recv_close().await), 1009);
}

#[tokio::test]
async fn a_drop_without_close_frame_gives_peer_left_after_the_grace() {
    let server = start("reconnect_grace = \"1s\"");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    a.join("g").await;
    let jb = b.join("g").await;
    a.recv_type("peer-joined").await;
    let dropped = Instant::now();
    b.drop_without_close();
    let left = a.recv_type("peer-left").await;
    let waited = dropped.elapsed();
    assert_eq!(left["id"], id(&jb));
    assert!(waited >= Duration::from_millis(900), "after {waited:?}");
    assert!(waited < Duration::from_secs(5), "after {waited:?}");
    // No ghost: the id is gone.
    a.send(json!({"type":"signal","to": id(&jb),"data":1}))
        .await;
    a.expect_error("unknown-peer").await;
}

#[tokio::test]
async fn a_client_silent_past_the_ping_timeout_leaves_after_the_grace() {
    let server =
        start("reconnect_grace = \"1s\"\nping_interval = \"300ms\"\nping_timeout = \"300ms\"");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    a.join("s").await;
    let jb = b.join("s").await;
    a.recv_type("peer-joined").await;
    // `b` stays connected but stops reading, so it never answers a ping. `a` keeps reading,
    // so it answers pings and stays.
    let left = a.recv_type("peer-left").await;
    assert_eq!(left["id"], id(&jb));
    drop(b);
}

#[tokio::test]
async fn a_resume_within_the_grace_keeps_the_id_and_delivers_queued_signals() {
    let server = start("reconnect_grace = \"3s\"");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    let ja = a.join("res").await;
    let jb = b.join_named("res", "Bo").await;
    a.recv_type("peer-joined").await;
    b.drop_without_close();
    // The signals below are kept for Bo only once the server has seen his connection go.
    server.wait_for_metric("signalbox_ws_connections_active", 1.0);

    for n in 0..3 {
        a.send(json!({"type":"signal","to": id(&jb),"data": {"n": n}}))
            .await;
    }
    a.barrier().await;
    let mut b2 = Ws::connect(&server).await;
    b2.send(json!({"type":"join","room":"res","resume": jb["resume"]}))
        .await;
    let again = b2.recv_type("joined").await;
    assert_eq!(again["id"], jb["id"]);
    assert_eq!(ids(&again["peers"]), [id(&ja)]);
    for n in 0..3 {
        let s = b2.recv_type("signal").await;
        assert_eq!(s["data"], json!({"n": n}));
        assert_eq!(s["from"], ja["id"]);
    }
    // Past the original grace, `a` has seen neither peer-left nor peer-joined.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    a.barrier().await;
    b2.barrier().await;
    a.send(json!({"type":"signal","to": id(&jb),"data":"live"}))
        .await;
    assert_eq!(b2.recv_type("signal").await["data"], "live");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_while_others_keep_working() {
    let server = start(
        "rate_per_second = 100000\nrate_burst = 100000\noutbound_queue = 16\nping_timeout = \"3s\"",
    );
    let mut sender = Ws::connect(&server).await;
    let mut sink = Ws::connect(&server).await;
    sender.join("slow").await;
    let js = sink.join("slow").await;
    sender.recv_type("peer-joined").await;
    let (mut x, mut y) = (Ws::connect(&server).await, Ws::connect(&server).await);
    x.join("fine").await;
    let jy = y.join("fine").await;
    x.recv_type("peer-joined").await;

    // `sink` reads nothing from here on. 60 KB signals fill the socket buffers, then its queue.
    let blob = "z".repeat(60_000);
    let started = Instant::now();
    let mut sent = 0;
    let left = loop {
        assert!(sent < 3000, "not cut off after {sent} signals");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not cut off in time"
        );
        sender
            .send(json!({"type":"signal","to": id(&js),"data": blob}))
            .await;
        sent += 1;
        if let Some(v) = sender.try_recv().await {
            break v;
        }
    };
    let left = if left["type"] == "peer-left" {
        left
    } else {
        sender.recv_type("peer-left").await
    };
    assert_eq!(left["id"], id(&js));
    x.send(json!({"type":"signal","to": id(&jy),"data":"still here"}))
        .await;
    assert_eq!(y.recv_type("signal").await["data"], "still here");
    sender
        .send(json!({"type":"signal","to": id(&js),"data":1}))
        .await;
    sender.expect_error("unknown-peer").await;
    drop(sink);
}

#[tokio::test]
async fn many_rooms_at_once_each_relay_only_within_their_pair() {
    const ROOMS: usize = 60;
    let server = start("max_connections_per_ip = 1000");
    let mut pairs = Vec::new();
    for r in 0..ROOMS {
        let room = format!("room-{r}");
        let mut a = Ws::connect(&server).await;
        let mut b = Ws::connect(&server).await;
        a.join(&room).await;
        let jb = b.join(&room).await;
        a.recv_type("peer-joined").await;
        pairs.push((a, b, id(&jb)));
    }
    let tasks = pairs
        .into_iter()
        .enumerate()
        .map(|(r, (mut a, mut b, bid))| {
            tokio::spawn(async move {
                for n in 0..5 {
                    a.send(json!({"type":"signal","to": bid,"data": [r, n]}))
                        .await;
                }
                for n in 0..5 {
                    assert_eq!(b.recv_type("signal").await["data"], json!([r, n]));
                }
                a.barrier().await;
                b.barrier().await;
            })
        });
    let all = futures_util::future::join_all(tasks);
    for r in tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("all rooms done in time")
    {
        r.expect("room task");
    }
}

#[tokio::test]
async fn leave_tells_the_others_and_the_connection_can_join_again() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    a.join("l").await;
    let jb = b.join("l").await;
    a.recv_type("peer-joined").await;
    b.send(json!({"type":"leave"})).await;
    assert_eq!(a.recv_type("peer-left").await["id"], id(&jb));
    let again = b.join("l").await;
    assert_ne!(
        again["id"], jb["id"],
        "a leave is final; joining again is a new peer"
    );
    assert_eq!(a.recv_type("peer-joined").await["peer"]["id"], again["id"]);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_own_or_absent_origins_are_accepted() {
    let server = start("");
    match try_connect(&server, Some("https://evil.example.com")).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a foreign origin was accepted"),
    }
    let port = server.addr("https").port();
    for origin in [
        Some(format!("https://127.0.0.1:{port}")),
        Some(format!("https://localhost:{port}")),
        None,
    ] {
        let mut ws = try_connect(&server, origin.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{origin:?} refused: {e}"));
        ws.barrier().await;
    }
}

#[tokio::test]
async fn connections_over_the_per_ip_cap_get_429_until_one_closes() {
    let server = start("max_connections_per_ip = 2");
    let mut a = Ws::connect(&server).await;
    let _b = Ws::connect(&server).await;
    match try_connect(&server, Some(&ws_client::own_origin(&server))).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 429),
        Err(e) => panic!("expected HTTP 429, got {e}"),
        Ok(_) => panic!("a third connection was accepted"),
    }
    a.stream.close(None).await.expect("close");
    // The slot frees once the server has seen the close; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(&server, Some(&ws_client::own_origin(&server))).await {
            Ok(mut c) => {
                c.barrier().await;
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("slot not freed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_connection_that_does_not_join_in_time_is_closed_with_1008() {
    let server = start("join_timeout = \"500ms\"");
    let mut a = Ws::connect(&server).await;
    let opened = Instant::now();
    assert_eq!(close_code(a.recv_close().await), 1008);
    assert!(opened.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_the_process_exits() {
    let mut server = start("");
    let mut a = Ws::connect(&server).await;
    a.join("bye").await;
    server.signal(libc::SIGTERM);
    assert_eq!(close_code(a.recv_close().await), 1001);
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
}
