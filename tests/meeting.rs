//! Meetings against the real binary, from raw WebSocket clients: the host, the lobby (knock,
//! admit, decline, time out), lock, remove, ask to mute, end, and every refusal — the server
//! enforces them whatever a client's UI does.

mod common;
mod turn_raw;
mod ws_client;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{base_config, run_cli, Server};
use turn_raw::{addr_of_uri, TurnClient};
use ws_client::Ws;

fn start(rooms: &str) -> Server {
    Server::start(&base_config(&format!("[rooms]\n{rooms}")))
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// Opens `room` with a host and locks it; returns the host's connection and id.
async fn locked_room(server: &Server, room: &str) -> (Ws, String) {
    let mut host = Ws::connect(server).await;
    let joined = host.join_named(room, "Hana").await;
    assert_eq!(joined["host"], true, "{joined}");
    host.send(json!({"type":"lock"})).await;
    assert_eq!(
        host.recv().await,
        json!({"type":"room-locked","locked":true})
    );
    (host, id(&joined))
}

/// A new connection knocks on `room`; returns it and the id it waits under, after checking
/// that the host got the knock.
async fn knock(server: &Server, host: &mut Ws, room: &str, name: &str) -> (Ws, String) {
    let mut guest = Ws::connect(server).await;
    guest
        .send(json!({"type":"join","room":room,"name":name}))
        .await;
    let waiting = guest.recv_type("waiting").await;
    let wid = id(&waiting);
    assert_eq!(
        waiting.as_object().map(|o| o.len()),
        Some(2),
        "no peers, no credentials: {waiting}"
    );
    assert_eq!(
        host.recv().await,
        json!({"type":"knock","peer":wid,"name":name})
    );
    (guest, wid)
}

#[tokio::test]
async fn the_first_peer_hosts_and_the_longest_present_takes_over_when_it_leaves() {
    let server = start("");
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    let mut c = Ws::connect(&server).await;
    let ja = a.join("standup").await;
    assert_eq!(
        (ja["host"].clone(), ja["locked"].clone()),
        (json!(true), json!(false))
    );
    let jb = b.join("standup").await;
    assert_eq!(jb["host"], false);
    assert_eq!(jb["peers"], json!([{"id": id(&ja), "host": true}]));
    assert_eq!(
        a.recv_type("peer-joined").await["peer"],
        json!({"id": id(&jb)})
    );
    c.join("standup").await;
    a.recv_type("peer-joined").await;
    b.recv_type("peer-joined").await;

    a.send(json!({"type":"leave"})).await;
    for ws in [&mut b, &mut c] {
        assert_eq!(ws.recv_type("peer-left").await["id"], id(&ja));
        assert_eq!(
            ws.recv().await,
            json!({"type":"host-changed","peer": id(&jb)})
        );
    }
    c.send(json!({"type":"lock"})).await;
    c.expect_error("not-host").await;
    b.send(json!({"type":"lock"})).await;
    b.recv_type("room-locked").await;
    c.recv_type("room-locked").await;
}

#[tokio::test]
async fn a_locked_room_keeps_joins_in_the_lobby_until_the_host_admits_or_declines() {
    let server = start("max_peers = 2");
    let (mut host, host_id) = locked_room(&server, "board").await;
    let (mut bo, bo_id) = knock(&server, &mut host, "board", "Bo").await;
    let (mut cy, cy_id) = knock(&server, &mut host, "board", "Cy").await;
    // A waiting peer cannot signal, and nobody can signal it.
    bo.send(json!({"type":"signal","to":host_id,"data":1}))
        .await;
    bo.expect_error("not-joined").await;
    host.send(json!({"type":"signal","to":bo_id,"data":1}))
        .await;
    host.expect_error("unknown-peer").await;

    host.send(json!({"type":"admit","peer":bo_id})).await;
    let joined = bo.recv_type("joined").await;
    assert_eq!(id(&joined), bo_id, "the id it waited under");
    assert_eq!(joined["locked"], true);
    assert!(joined["iceServers"].is_array());
    assert_eq!(
        host.recv_type("peer-joined").await["peer"],
        json!({"id": bo_id, "name": "Bo"})
    );
    // The room (max_peers 2) is full now: admitting Cy tells the host, Cy keeps waiting.
    host.send(json!({"type":"admit","peer":cy_id})).await;
    host.expect_error("room-full").await;
    host.send(json!({"type":"decline","peer":cy_id})).await;
    cy.expect_error("declined").await;
    host.send(json!({"type":"admit","peer":cy_id})).await;
    host.expect_error("unknown-peer").await;
    // The declined connection may join another room.
    cy.join("elsewhere").await;
    bo.barrier().await;
}

#[tokio::test]
async fn nobody_answering_ends_the_wait_and_leaving_the_lobby_withdraws_the_knock() {
    let server = start("lobby_timeout = \"1s\"");
    let (mut host, _) = locked_room(&server, "late").await;
    let (mut slow, slow_id) = knock(&server, &mut host, "late", "Sl").await;
    let started = Instant::now();
    slow.expect_error("lobby-timeout").await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(
        host.recv().await,
        json!({"type":"knock-withdrawn","peer":slow_id})
    );
    let (mut shy, shy_id) = knock(&server, &mut host, "late", "Shy").await;
    shy.send(json!({"type":"leave"})).await;
    assert_eq!(
        host.recv().await,
        json!({"type":"knock-withdrawn","peer":shy_id})
    );
    let (gone, gone_id) = knock(&server, &mut host, "late", "Gone").await;
    gone.drop_without_close();
    assert_eq!(
        host.recv().await,
        json!({"type":"knock-withdrawn","peer":gone_id})
    );
}

#[tokio::test]
async fn a_flood_of_joins_to_a_locked_room_reaches_the_host_as_a_bounded_trickle() {
    let server = start("");
    let (mut host, _) = locked_room(&server, "flood").await;
    let mut guests = Vec::new();
    let mut waiting = 0;
    let mut limited = 0;
    for _ in 0..25 {
        let mut g = Ws::connect(&server).await;
        g.send(json!({"type":"join","room":"flood"})).await;
        let v = g.recv().await;
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("waiting"), _) => waiting += 1,
            (Some("error"), Some("rate-limited")) => limited += 1,
            _ => panic!("unexpected answer {v}"),
        }
        guests.push(g);
    }
    assert!((10..=12).contains(&waiting), "{waiting} waiting");
    assert_eq!(waiting + limited, 25);
    let mut knocks = 0;
    while let Some(v) = host.try_recv().await {
        assert_eq!(v["type"], "knock", "{v}");
        knocks += 1;
    }
    host.barrier().await;
    assert_eq!(
        knocks, waiting,
        "one knock per waiting peer, none for the refused"
    );
}

#[tokio::test]
async fn host_only_messages_from_others_are_refused_with_specific_errors() {
    let server = start("");
    let (mut host, host_id) = locked_room(&server, "guarded").await;
    let (mut guest, guest_id) = knock(&server, &mut host, "guarded", "G").await;
    let (mut waiter, _) = knock(&server, &mut host, "guarded", "W").await;
    host.send(json!({"type":"admit","peer":guest_id})).await;
    guest.recv_type("joined").await;
    host.recv_type("peer-joined").await;
    let mut stranger = Ws::connect(&server).await;
    let actions = [
        json!({"type":"lock"}),
        json!({"type":"unlock"}),
        json!({"type":"admit","peer":guest_id}),
        json!({"type":"decline","peer":guest_id}),
        json!({"type":"remove","peer":host_id}),
        json!({"type":"mute-request","peer":"all","kind":"audio"}),
        json!({"type":"end"}),
    ];
    for action in &actions {
        guest.send(action.clone()).await;
        guest.expect_error("not-host").await;
        waiter.send(action.clone()).await;
        waiter.expect_error("not-joined").await;
        stranger.send(action.clone()).await;
        stranger.expect_error("not-joined").await;
    }
    for bad in [
        json!({"type":"admit"}),
        json!({"type":"remove","peer":""}),
        json!({"type":"mute-request","peer":"all","kind":"screen"}),
    ] {
        host.send(bad).await;
        host.expect_error("bad-request").await;
    }
    for unknown in [
        json!({"type":"admit","peer":"nobody"}),
        json!({"type":"decline","peer":guest_id}),
        json!({"type":"remove","peer":host_id}),
        json!({"type":"remove","peer":"nobody"}),
        json!({"type":"mute-request","peer":"nobody","kind":"video"}),
    ] {
        host.send(unknown).await;
        host.expect_error("unknown-peer").await;
    }
    // Nothing happened to anyone.
    for ws in [&mut host, &mut guest, &mut waiter] {
        ws.barrier().await;
    }
}

#[tokio::test]
async fn a_removed_peer_is_told_leaves_and_is_barred_until_the_room_ends() {
    let server = start("");
    let mut host = Ws::connect(&server).await;
    let mut mal = Ws::connect(&server).await;
    let mut ok = Ws::connect(&server).await;
    host.join("meet").await;
    let jm = mal.join("meet").await;
    ok.join("meet").await;
    host.recv_type("peer-joined").await;
    host.recv_type("peer-joined").await;
    mal.recv_type("peer-joined").await;

    host.send(json!({"type":"remove","peer": id(&jm)})).await;
    mal.expect_error("removed").await;
    assert_eq!(host.recv_type("peer-left").await["id"], id(&jm));
    assert_eq!(ok.recv_type("peer-left").await["id"], id(&jm));
    // The same connection, and its resume token from a new one: `removed`.
    mal.send(json!({"type":"join","room":"meet"})).await;
    mal.expect_error("removed").await;
    let mut again = Ws::connect(&server).await;
    again
        .send(json!({"type":"join","room":"meet","resume": jm["resume"]}))
        .await;
    again.expect_error("removed").await;
    // A new session is a new peer: it meets the lobby of a locked room.
    host.send(json!({"type":"lock"})).await;
    host.recv_type("room-locked").await;
    ok.recv_type("room-locked").await;
    let (_fresh, _) = knock(&server, &mut host, "meet", "New").await;
    // The connection itself may go elsewhere, and the bar ends with the room.
    mal.join("other").await;
    mal.send(json!({"type":"leave"})).await;
    host.send(json!({"type":"end"})).await;
    host.recv_type("ended").await;
    ok.recv_type("ended").await;
    let rejoined = mal.join("meet").await;
    assert_eq!(rejoined["host"], true, "a new room, and it is the first");
}

#[tokio::test]
async fn mute_requests_reach_their_target_or_everyone_but_the_host() {
    let server = start("");
    let mut host = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    let mut c = Ws::connect(&server).await;
    let jh = host.join("mute").await;
    let jb = b.join("mute").await;
    c.join("mute").await;
    host.recv_type("peer-joined").await;
    host.recv_type("peer-joined").await;
    b.recv_type("peer-joined").await;
    host.send(json!({"type":"mute-request","peer": id(&jb),"kind":"video"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type":"mute-request","from": id(&jh),"kind":"video"})
    );
    c.barrier().await;
    host.send(json!({"type":"mute-request","peer":"all","kind":"audio"}))
        .await;
    let want = json!({"type":"mute-request","from": id(&jh),"kind":"audio"});
    assert_eq!(b.recv().await, want);
    assert_eq!(c.recv().await, want);
    host.barrier().await;
}

#[tokio::test]
async fn end_tells_everyone_and_the_lobby_and_the_room_name_starts_afresh() {
    let server = start("");
    let (mut host, _) = locked_room(&server, "over").await;
    let (mut guest, guest_id) = knock(&server, &mut host, "over", "G").await;
    host.send(json!({"type":"admit","peer":guest_id})).await;
    guest.recv_type("joined").await;
    host.recv_type("peer-joined").await;
    let (mut waiter, _) = knock(&server, &mut host, "over", "W").await;
    host.send(json!({"type":"end"})).await;
    for ws in [&mut host, &mut guest, &mut waiter] {
        assert_eq!(ws.recv().await, json!({"type":"ended"}));
        ws.barrier().await;
    }
    let mut next = Ws::connect(&server).await;
    let joined = next.join("over").await;
    assert_eq!(
        (
            joined["peers"].clone(),
            joined["host"].clone(),
            joined["locked"].clone()
        ),
        (json!([]), json!(true), json!(false))
    );
}

#[tokio::test]
async fn with_lock_new_rooms_the_first_peer_hosts_and_the_next_one_knocks() {
    let server = start("lock_new_rooms = true");
    let mut host = Ws::connect(&server).await;
    let joined = host.join("private").await;
    assert_eq!(
        (joined["host"].clone(), joined["locked"].clone()),
        (json!(true), json!(true))
    );
    knock(&server, &mut host, "private", "Knocker").await;
}

#[tokio::test]
async fn a_host_invitation_makes_its_holder_host_past_the_lobby() {
    let server = Server::start(&base_config("[access]\nmode = \"token\"\n"));
    let dir = server.dir.path();
    let cfg = dir.join("config.toml");
    let invite = |extra: &[&str]| {
        let mut args = vec!["--config", cfg.to_str().expect("UTF-8"), "invite", "board"];
        args.extend_from_slice(extra);
        let (code, out, err) = run_cli(dir, &args);
        assert_eq!(code, 0, "{err}");
        out.trim()
            .split_once("#token=")
            .expect("a token")
            .1
            .to_owned()
    };
    let guest_token = invite(&[]);
    let host_token = invite(&["--host", "--name", "Chair"]);

    let mut first = Ws::connect(&server).await;
    first
        .send(json!({"type":"join","room":"board","token":guest_token}))
        .await;
    let j1 = first.recv_type("joined").await;
    assert_eq!(j1["host"], true, "nobody holds a host invitation yet");
    first.send(json!({"type":"lock"})).await;
    first.recv_type("room-locked").await;

    let mut chair = Ws::connect(&server).await;
    chair
        .send(json!({"type":"join","room":"board","token":host_token}))
        .await;
    let jc = chair.recv_type("joined").await;
    assert_eq!(jc["host"], true, "past the lobby, as host");
    assert_eq!(
        jc["peers"],
        json!([{"id": id(&j1)}]),
        "the old host is a guest"
    );
    assert_eq!(
        first.recv_type("peer-joined").await["peer"],
        json!({"id": id(&jc), "name": "Chair", "host": true})
    );
    assert_eq!(
        first.recv().await,
        json!({"type":"host-changed","peer": id(&jc)})
    );
    first.send(json!({"type":"unlock"})).await;
    first.expect_error("not-host").await;
    // The guest invitation meets the lobby now.
    let mut late = Ws::connect(&server).await;
    late.send(json!({"type":"join","room":"board","token":guest_token}))
        .await;
    let waiting = late.recv_type("waiting").await;
    assert_eq!(chair.recv_type("knock").await["peer"], id(&waiting));
    late.send(json!({"type":"leave"})).await;
    chair.recv_type("knock-withdrawn").await;
    // Removing the first guest bars the invitation it joined with, for everyone holding it.
    chair.send(json!({"type":"remove","peer": id(&j1)})).await;
    first.expect_error("removed").await;
    late.send(json!({"type":"join","room":"board","token":guest_token}))
        .await;
    late.expect_error("removed").await;
}

const SECRET: &str = "meeting-test-secret";

/// The TURN entry of an `iceServers` list: (URI, username, credential).
fn turn_entry(ice_servers: &Value) -> (String, String, String) {
    let entry = ice_servers
        .as_array()
        .expect("iceServers is a list")
        .iter()
        .find(|e| e.get("username").is_some())
        .unwrap_or_else(|| panic!("no TURN entry in {ice_servers}"));
    let uri = entry["urls"][0].as_str().expect("a TURN URL").to_owned();
    let user = entry["username"].as_str().expect("username").to_owned();
    let pass = entry["credential"].as_str().expect("credential").to_owned();
    (uri, user, pass)
}

fn turn_server() -> Server {
    Server::start(&base_config(&format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\n\
         allow_loopback_peers = true\nworkers = 2\n"
    )))
}

/// Host and guest in `room`; returns both connections and the guest's `joined`.
async fn host_and_guest(server: &Server, room: &str) -> (Ws, Ws, Value) {
    let mut host = Ws::connect(server).await;
    let mut guest = Ws::connect(server).await;
    host.join(room).await;
    let joined = guest.join(room).await;
    host.recv_type("peer-joined").await;
    (host, guest, joined)
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
async fn a_removed_peers_turn_allocations_are_closed_and_the_hosts_stay() {
    let server = turn_server();
    let (mut host, mut guest, jg) = host_and_guest(&server, "relay").await;
    let (uri, user, pass) = turn_entry(&jg["iceServers"]);
    let mut alloc = TurnClient::new(addr_of_uri(&uri), &user, &pass);
    assert!(alloc.allocate().is_success());
    host.send(json!({"type":"remove","peer": id(&jg)})).await;
    guest.expect_error("removed").await;
    assert!(
        eventually(Duration::from_secs(3), || alloc.refresh(600).code
            == Some(437)),
        "the removed peer's allocation is gone (437 Allocation Mismatch)"
    );
}

#[tokio::test]
async fn ending_the_meeting_closes_everyones_allocations() {
    let server = turn_server();
    let (mut host, mut guest, jg) = host_and_guest(&server, "over").await;
    let (uri, user, pass) = turn_entry(&jg["iceServers"]);
    let mut alloc = TurnClient::new(addr_of_uri(&uri), &user, &pass);
    assert!(alloc.allocate().is_success());
    host.send(json!({"type":"end"})).await;
    guest.recv_type("ended").await;
    assert!(
        eventually(Duration::from_secs(3), || alloc.refresh(600).code
            == Some(437)),
        "the guest's allocation is gone"
    );
}

/// Removal goes through the same path as a leave, so the TURN server's set of live room peers
/// forgets the removed peer and refuses its credentials from then on.
#[tokio::test]
async fn a_removed_peers_credentials_are_refused_at_allocate() {
    let server = turn_server();
    let (mut host, mut guest, jg) = host_and_guest(&server, "refuse").await;
    let (uri, user, pass) = turn_entry(&jg["iceServers"]);
    host.send(json!({"type":"remove","peer": id(&jg)})).await;
    guest.expect_error("removed").await;
    host.recv_type("peer-left").await;
    assert!(
        eventually(Duration::from_secs(3), || {
            TurnClient::new(addr_of_uri(&uri), &user, &pass)
                .allocate()
                .code
                == Some(401)
        }),
        "a new Allocate with the removed peer's credentials gets 401"
    );
}
