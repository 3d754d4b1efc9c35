//! Spaces and direct calls against the real binary, from raw WebSocket clients: presence,
//! every outcome of a call (accepted, declined, cancelled, busy, missed, ended), the private
//! room that admits only the call's two people, resume during a call, the limits, blocks,
//! token-mode spaces and the origins of other sites.

mod common;
mod ws_client;

use std::path::Path;

use serde_json::{json, Value};

use common::{run_cli, Server};
use ws_client::Ws;

/// A server whose calls ring for `ring_timeout` and where each connection may place
/// `ring_rate` calls a minute.
fn server_with(calls: &str) -> Server {
    Server::start(&common::base_config(&format!("[calls]\n{calls}\n")))
}

fn server() -> Server {
    server_with("ring_timeout = \"30s\"")
}

/// Reads the next messages and checks their types, in order; returns them.
async fn expect(ws: &mut Ws, types: &[&str]) -> Vec<Value> {
    let mut got = Vec::new();
    for kind in types {
        got.push(ws.recv_type(kind).await);
    }
    got
}

/// `hello` and its `people`.
async fn hello(ws: &mut Ws, space: &str, name: &str) -> Value {
    ws.send(json!({"type":"hello","space":space,"name":name}))
        .await;
    ws.recv_type("people").await
}

/// Three people in `space`, each having seen the arrivals after its own: (ws, id) each.
async fn three(server: &Server, space: &str) -> [(Ws, String); 3] {
    let mut a = Ws::connect(server).await;
    let pa = hello(&mut a, space, "Ann").await;
    let mut b = Ws::connect(server).await;
    let pb = hello(&mut b, space, "Bo").await;
    let mut c = Ws::connect(server).await;
    let pc = hello(&mut c, space, "Cy").await;
    expect(&mut a, &["person-joined", "person-joined"]).await;
    expect(&mut b, &["person-joined"]).await;
    let id = |p: &Value| p["you"].as_str().expect("you").to_owned();
    [(a, id(&pa)), (b, id(&pb)), (c, id(&pc))]
}

/// `caller` calls `callee`: both sides see the ring start; the call id.
async fn ring(caller: &mut Ws, callee: &mut Ws, callee_id: &str, caller_id: &str) -> String {
    caller
        .send(json!({"type":"call","to":callee_id,"audioOnly":true}))
        .await;
    let ringing = caller.recv_type("ringing").await;
    let busy = caller.recv_type("person-busy").await;
    assert_eq!(
        busy,
        json!({"type":"person-busy","id":callee_id,"busy":true})
    );
    let ring = callee.recv_type("ring").await;
    assert_eq!(ring["call"], ringing["call"]);
    assert_eq!(ring["from"], caller_id);
    assert_eq!(ring["audioOnly"], true);
    let busy = callee.recv_type("person-busy").await;
    assert_eq!(
        busy,
        json!({"type":"person-busy","id":caller_id,"busy":true})
    );
    ringing["call"].as_str().expect("call id").to_owned()
}

/// Ann (`a`) rings Bo (`b`), he accepts, and both join the call's room: the call id, the room
/// and Bo's resume token.
async fn in_call(a: &mut Ws, b: &mut Ws, ida: &str, idb: &str) -> (String, Value, Value) {
    let call = ring(a, b, idb, ida).await;
    b.send(json!({"type":"accept","call":call})).await;
    let acc_a = a.recv_type("call-accepted").await;
    let acc_b = b.recv_type("call-accepted").await;
    let room = acc_a["room"].clone();
    a.send(json!({"type":"join","room":room,"token":acc_a["token"]}))
        .await;
    a.recv_type("joined").await;
    b.send(json!({"type":"join","room":room,"token":acc_b["token"]}))
        .await;
    let resume = b.recv_type("joined").await["resume"].clone();
    a.recv_type("peer-joined").await;
    (call, room, resume)
}

#[tokio::test]
async fn people_see_each_other_come_and_go() {
    let server = server();
    let mut a = Ws::connect(&server).await;
    let pa = hello(&mut a, "space-1", "Ann").await;
    assert_eq!(pa["people"], json!([]));
    assert!(pa["resume"].as_str().is_some_and(|r| r.len() >= 22));
    let mut b = Ws::connect(&server).await;
    let pb = hello(&mut b, "space-1", "Bo").await;
    assert_eq!(
        pb["people"],
        json!([{"id": pa["you"], "name": "Ann", "busy": false}])
    );
    let joined = a.recv_type("person-joined").await;
    assert_eq!(
        joined["person"],
        json!({"id": pb["you"], "name": "Bo", "busy": false})
    );
    // Another space is another world.
    let mut other = Ws::connect(&server).await;
    assert_eq!(
        hello(&mut other, "space-2", "Cy").await["people"],
        json!([])
    );
    b.send(json!({"type":"leave-space"})).await;
    let left = a.recv_type("person-left").await;
    assert_eq!(left["id"], pb["you"]);
    a.barrier().await;
    other.barrier().await;
}

#[tokio::test]
async fn an_accepted_call_meets_in_a_private_room_that_refuses_everyone_else() {
    let server = server();
    let [(mut a, ida), (mut b, idb), (mut c, _)] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    let seen = expect(&mut c, &["person-busy", "person-busy"]).await;
    assert_eq!(seen[0], json!({"type":"person-busy","id":idb,"busy":true}));
    assert_eq!(seen[1], json!({"type":"person-busy","id":ida,"busy":true}));

    b.send(json!({"type":"accept","call":call})).await;
    let acc_a = a.recv_type("call-accepted").await;
    let acc_b = b.recv_type("call-accepted").await;
    assert_eq!(acc_a["room"], acc_b["room"]);
    assert_eq!((&acc_a["peer"], &acc_b["peer"]), (&json!(idb), &json!(ida)));
    assert_ne!(
        acc_a["token"], acc_b["token"],
        "each side has its own token"
    );
    let room = acc_a["room"].as_str().expect("room").to_owned();

    // Nobody else gets in: not a third person with a stolen token, not the other side's token.
    c.send(json!({"type":"join","room":room,"token":acc_a["token"]}))
        .await;
    c.expect_error("forbidden").await;
    c.send(json!({"type":"join","room":room})).await;
    c.expect_error("forbidden").await;
    a.send(json!({"type":"join","room":room,"token":acc_b["token"]}))
        .await;
    a.expect_error("forbidden").await;

    a.send(json!({"type":"join","room":room,"token":acc_a["token"]}))
        .await;
    let joined_a = a.recv_type("joined").await;
    assert_eq!(joined_a["id"], ida, "the peer id is the person id");
    assert_eq!(joined_a["peers"], json!([]));
    assert!(
        joined_a["iceServers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["credential"].is_string())),
        "TURN credentials as in any room: {joined_a}"
    );
    b.send(json!({"type":"join","room":room,"token":acc_b["token"]}))
        .await;
    let joined_b = b.recv_type("joined").await;
    assert_eq!(
        joined_b["peers"],
        json!([{"id": ida, "name": "Ann"}]),
        "a call's room has no host"
    );
    assert_eq!(
        (&joined_a["host"], &joined_b["host"]),
        (&json!(false), &json!(false))
    );
    a.recv_type("peer-joined").await;
    // Neither side can lock the room, remove the other or end it for both.
    for msg in [
        json!({"type":"lock"}),
        json!({"type":"remove","peer":idb}),
        json!({"type":"end"}),
    ] {
        a.send(msg).await;
        let e = a.expect_error("not-host").await;
        assert_eq!(e["message"], "a direct call's room has no host");
    }

    // A third joiner is refused even now, and signaling works between the two.
    c.send(json!({"type":"join","room":room,"token":acc_b["token"]}))
        .await;
    c.expect_error("forbidden").await;
    b.send(json!({"type":"signal","to":ida,"data":{"sdp":"offer"}}))
        .await;
    let sig = a.recv_type("signal").await;
    assert_eq!(
        (&sig["from"], &sig["data"]),
        (&json!(idb), &json!({"sdp":"offer"}))
    );
    c.barrier().await;

    // Bo hangs up: Ann sees peer-left, then call-ended; both are free again; the room is gone.
    b.send(json!({"type":"leave"})).await;
    let left = a.recv_type("peer-left").await;
    assert_eq!(left["id"], idb);
    assert_eq!(a.recv_type("call-ended").await["call"], call);
    assert_eq!(
        a.recv_type("person-busy").await,
        json!({"type":"person-busy","id":idb,"busy":false})
    );
    assert_eq!(b.recv_type("call-ended").await["call"], call);
    assert_eq!(
        b.recv_type("person-busy").await,
        json!({"type":"person-busy","id":ida,"busy":false})
    );
    expect(&mut c, &["person-busy", "person-busy"]).await;
    a.barrier().await;
    b.barrier().await;
    a.send(json!({"type":"join","room":room,"token":acc_a["token"]}))
        .await;
    a.expect_error("forbidden").await;
    let m = server.metrics();
    assert_eq!(
        m["signalbox_rooms_active"], 0.0,
        "the call's room is deleted"
    );
    assert_eq!(m["signalbox_calls_total{outcome=\"accepted\"}"], 1.0);
    assert_eq!(m["signalbox_calls_total{outcome=\"ended\"}"], 1.0);
    // Both can call again.
    let again = ring(&mut b, &mut a, &ida, &idb).await;
    assert_ne!(again, call);
}

#[tokio::test]
async fn a_decline_a_cancel_and_a_busy_callee_end_the_ring() {
    let server = server();
    let [(mut a, ida), (mut b, idb), (mut c, idc)] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    expect(&mut c, &["person-busy", "person-busy"]).await;
    b.send(json!({"type":"decline","call":call})).await;
    expect(&mut a, &["call-declined", "person-busy"]).await;
    expect(&mut b, &["call-declined", "person-busy"]).await;
    expect(&mut c, &["person-busy", "person-busy"]).await;

    let call = ring(&mut a, &mut b, &idb, &ida).await;
    expect(&mut c, &["person-busy", "person-busy"]).await;
    // A second incoming call gets busy, and nobody else hears of it.
    c.send(json!({"type":"call","to":idb})).await;
    let busy = c.recv_type("call-busy").await;
    assert!(busy["call"].as_str().is_some_and(|id| id != call));
    b.barrier().await;
    // Ringing someone while ringing is an error, not a second ring.
    a.send(json!({"type":"call","to":idc})).await;
    a.expect_error("already-joined").await;
    c.barrier().await;

    a.send(json!({"type":"cancel","call":call})).await;
    assert_eq!(a.recv_type("call-cancelled").await["call"], call);
    assert_eq!(b.recv_type("call-cancelled").await["call"], call);
    let m = server.metrics();
    for (outcome, n) in [("declined", 1.0), ("cancelled", 1.0), ("busy", 1.0)] {
        assert_eq!(
            m[&format!("signalbox_calls_total{{outcome=\"{outcome}\"}}")],
            n
        );
    }
}

#[tokio::test]
async fn answers_out_of_turn_get_not_ringing_and_strangers_unknown_person() {
    let server = server();
    let [(mut a, ida), (mut b, idb), (mut c, _)] = three(&server, "team").await;
    let mut far = Ws::connect(&server).await;
    let pf = hello(&mut far, "elsewhere", "Di").await;
    a.send(json!({"type":"call","to":pf["you"]})).await;
    a.expect_error("unknown-person").await;
    a.send(json!({"type":"call","to":ida})).await;
    a.expect_error("unknown-person").await;
    a.send(json!({"type":"block","id":"no-such-person"})).await;
    a.expect_error("unknown-person").await;

    let call = ring(&mut a, &mut b, &idb, &ida).await;
    a.send(json!({"type":"accept","call":call})).await;
    a.expect_error("not-ringing").await;
    expect(&mut c, &["person-busy", "person-busy"]).await;
    c.send(json!({"type":"decline","call":call})).await;
    c.expect_error("not-ringing").await;
    b.send(json!({"type":"cancel","call":call})).await;
    b.expect_error("not-ringing").await;
    b.send(json!({"type":"accept","call":"made-up"})).await;
    b.expect_error("not-ringing").await;
    b.send(json!({"type":"accept"})).await;
    b.expect_error("bad-request").await;
    let mut stranger = Ws::connect(&server).await;
    stranger.send(json!({"type":"call","to":idb})).await;
    stranger.expect_error("not-joined").await;
    // The ring survived all of that.
    b.send(json!({"type":"accept","call":call})).await;
    a.recv_type("call-accepted").await;
}

#[tokio::test]
async fn an_unanswered_call_is_missed_and_a_blocked_caller_cannot_tell() {
    let server = server_with("ring_timeout = \"2s\"");
    let [(mut a, ida), (mut b, idb), (mut c, _)] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    assert_eq!(a.recv_type("call-missed").await["call"], call);
    assert_eq!(b.recv_type("call-missed").await["call"], call);
    expect(&mut a, &["person-busy"]).await;
    expect(&mut b, &["person-busy"]).await;

    // Bo blocks Ann: her call looks the same to her, but it never rings for Bo.
    b.send(json!({"type":"block","id":ida})).await;
    b.barrier().await;
    a.send(json!({"type":"call","to":idb})).await;
    let ringing = a.recv_type("ringing").await;
    assert_eq!(
        a.recv_type("person-busy").await,
        json!({"type":"person-busy","id":idb,"busy":true})
    );
    assert_eq!(
        b.recv_type("person-busy").await,
        json!({"type":"person-busy","id":ida,"busy":true}),
        "Bo sees Ann busy as everyone does, but no ring"
    );
    b.send(json!({"type":"accept","call":ringing["call"]}))
        .await;
    b.expect_error("not-ringing").await;
    assert_eq!(a.recv_type("call-missed").await["call"], ringing["call"]);
    assert_eq!(
        a.recv_type("person-busy").await,
        json!({"type":"person-busy","id":idb,"busy":false})
    );
    b.recv_type("person-busy").await;
    // Cy never saw Bo busy: he was not.
    let c_saw: Vec<Value> = expect(&mut c, &["person-busy"; 6]).await;
    let bo_busy = c_saw.iter().filter(|m| m["id"] == idb).count();
    assert_eq!(bo_busy, 2, "only the real ring made Bo busy: {c_saw:?}");
    let m = server.metrics();
    assert_eq!(m["signalbox_calls_total{outcome=\"missed\"}"], 2.0);
}

#[tokio::test]
async fn the_callee_dropping_misses_the_call_and_the_caller_dropping_cancels_it() {
    let server = server();
    let [(mut a, ida), (mut b, idb), (c, idc)] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    b.drop_without_close();
    assert_eq!(a.recv_type("call-missed").await["call"], call);
    assert_eq!(
        a.recv_type("person-busy").await,
        json!({"type":"person-busy","id":idb,"busy":false})
    );
    a.barrier().await;

    let mut c = c;
    expect(&mut c, &["person-busy"; 4]).await;
    let call = ring(&mut c, &mut a, &ida, &idc).await;
    c.stream.close(None).await.expect("close");
    assert_eq!(a.recv_type("call-cancelled").await["call"], call);
    assert_eq!(
        a.recv_type("person-busy").await,
        json!({"type":"person-busy","id":idc,"busy":false})
    );
}

#[tokio::test]
async fn a_call_survives_a_dropped_connection_that_resumes_within_the_grace() {
    let server = server();
    let [(mut a, ida), (mut b, idb), (mut c, _)] = three(&server, "team").await;
    let (call, room, resume) = in_call(&mut a, &mut b, &ida, &idb).await;

    // Bo's network drops; Ann's signal meanwhile is kept for him (once the server has seen
    // the drop: Ann, Bo and Cy were three connections).
    b.drop_without_close();
    server.wait_for_metric("signalbox_ws_connections_active", 2.0);
    a.send(json!({"type":"signal","to":idb,"data":{"candidate":"x"}}))
        .await;
    let mut b = Ws::connect(&server).await;
    b.send(json!({"type":"hello","space":"team","name":"Bo","resume":resume}))
        .await;
    let people = b.recv_type("people").await;
    assert_eq!(people["you"], idb);
    assert_eq!(people["call"], call, "people names the call that goes on");
    let again = b.recv_type("call-accepted").await;
    assert_eq!((&again["call"], &again["room"]), (&json!(call), &room));
    b.send(json!({"type":"join","room":room,"token":again["token"]}))
        .await;
    let rejoined = b.recv_type("joined").await;
    assert_eq!(rejoined["id"], idb);
    assert_eq!(rejoined["peers"][0]["id"], ida);
    assert_eq!(
        b.recv_type("signal").await["data"],
        json!({"candidate":"x"})
    );
    // Nobody saw Bo leave: no person-left, no peer-left, no busy change.
    a.barrier().await;
    expect(&mut c, &["person-busy", "person-busy"]).await;
    c.barrier().await;
    b.send(json!({"type":"signal","to":ida,"data":1})).await;
    assert_eq!(a.recv_type("signal").await["from"], idb);
}

#[tokio::test]
async fn a_call_that_ended_while_one_side_was_away_is_told_when_it_resumes() {
    let server = server();
    let [(mut a, ida), (mut b, idb), _cy] = three(&server, "team").await;
    let (call, _, resume) = in_call(&mut a, &mut b, &ida, &idb).await;

    // Bo's network drops and Ann hangs up before he is back.
    b.drop_without_close();
    server.wait_for_metric("signalbox_ws_connections_active", 2.0);
    a.send(json!({"type":"leave"})).await;
    assert_eq!(a.recv_type("call-ended").await["call"], call);
    let mut b = Ws::connect(&server).await;
    b.send(json!({"type":"hello","space":"team","name":"Bo","resume":resume}))
        .await;
    let people = b.recv_type("people").await;
    assert_eq!(people["you"], idb);
    assert_eq!(people["call"], Value::Null, "people says Bo is in no call");
    assert_eq!(
        b.recv().await,
        json!({"type":"call-ended","call":call}),
        "the end of the call comes right after people"
    );
    // Told once: nothing else follows.
    b.barrier().await;
    // Bo is free to take a new call (once Ann has read the busy changes of the last one).
    a.send(json!({"type":"ping"})).await;
    while a.recv().await["type"] != "pong" {}
    let again = ring(&mut a, &mut b, &idb, &ida).await;
    assert_ne!(again, call);
}

#[tokio::test]
async fn hanging_up_before_joining_the_room_ends_the_call() {
    let server = server();
    let [(mut a, ida), (mut b, idb), _] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    b.send(json!({"type":"accept","call":call})).await;
    let acc_a = a.recv_type("call-accepted").await;
    b.recv_type("call-accepted").await;
    a.send(json!({"type":"join","room":acc_a["room"],"token":acc_a["token"]}))
        .await;
    a.recv_type("joined").await;
    b.send(json!({"type":"leave"})).await;
    assert_eq!(a.recv_type("call-ended").await["call"], call);
    assert_eq!(b.recv_type("call-ended").await["call"], call);
    // Ann is out of the room without a word and can join another.
    a.recv_type("person-busy").await;
    a.send(json!({"type":"join","room":"standup"})).await;
    a.recv_type("joined").await;
}

#[tokio::test]
async fn leaving_the_space_during_a_call_ends_it_with_peer_left_first() {
    let server = server();
    let [(mut a, ida), (mut b, idb), _] = three(&server, "team").await;
    let call = ring(&mut a, &mut b, &idb, &ida).await;
    b.send(json!({"type":"accept","call":call})).await;
    let acc_a = a.recv_type("call-accepted").await;
    let acc_b = b.recv_type("call-accepted").await;
    a.send(json!({"type":"join","room":acc_a["room"],"token":acc_a["token"]}))
        .await;
    a.recv_type("joined").await;
    b.send(json!({"type":"join","room":acc_b["room"],"token":acc_b["token"]}))
        .await;
    b.recv_type("joined").await;
    a.recv_type("peer-joined").await;
    b.send(json!({"type":"leave-space"})).await;
    expect(
        &mut a,
        &["peer-left", "call-ended", "person-busy", "person-left"],
    )
    .await;
}

#[tokio::test]
async fn a_full_space_and_too_many_calls_are_refused() {
    let server = server_with("ring_rate = 2\nmax_people_per_space = 2");
    let mut a = Ws::connect(&server).await;
    let pa = hello(&mut a, "tiny", "Ann").await;
    let mut b = Ws::connect(&server).await;
    let pb = hello(&mut b, "tiny", "Bo").await;
    a.recv_type("person-joined").await;
    let mut c = Ws::connect(&server).await;
    c.send(json!({"type":"hello","space":"tiny","name":"Cy"}))
        .await;
    c.expect_error("room-full").await;
    assert_eq!(hello(&mut c, "roomy", "Cy").await["people"], json!([]));

    let (ida, idb) = (pa["you"].as_str().unwrap(), pb["you"].as_str().unwrap());
    for _ in 0..2 {
        let call = ring(&mut a, &mut b, idb, ida).await;
        a.send(json!({"type":"cancel","call":call})).await;
        expect(&mut a, &["call-cancelled", "person-busy"]).await;
        expect(&mut b, &["call-cancelled", "person-busy"]).await;
    }
    a.send(json!({"type":"call","to":idb})).await;
    a.expect_error("rate-limited").await;
    b.barrier().await;
}

#[tokio::test]
async fn bad_hellos_get_specific_errors() {
    let server = server();
    let mut ws = Ws::connect(&server).await;
    for bad in [
        json!({"type":"hello","name":"Ann"}),
        json!({"type":"hello","space":"a b","name":"Ann"}),
        json!({"type":"hello","space":"s","name":"  "}),
        json!({"type":"hello","space":"s","name":"x".repeat(65)}),
        json!({"type":"hello","space":"s"}),
    ] {
        ws.send(bad).await;
        ws.expect_error("bad-request").await;
    }
    hello(&mut ws, "s", "Ann").await;
    ws.send(json!({"type":"hello","space":"t","name":"Ann"}))
        .await;
    ws.expect_error("already-joined").await;
}

/// `signalbox invite ARGS` in the server's directory; returns the printed link.
fn invite(dir: &Path, args: &[&str]) -> String {
    let cfg = dir.join("config.toml");
    let mut all = vec!["--config", cfg.to_str().expect("UTF-8 path"), "invite"];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(dir, &all);
    assert_eq!(code, 0, "stderr: {err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn in_token_mode_a_space_needs_its_invitation_and_the_call_room_needs_none() {
    let server = Server::start(&common::base_config("[access]\nmode = \"token\"\n"));
    let dir = server.dir.path();
    let link = invite(dir, &["team", "--space", "--name", "Ann"]);
    assert!(link.contains("/s/team#token="), "{link}");
    let (_, space_token) = link.split_once("#token=").expect("token");
    let room_link = invite(dir, &["team"]);
    let (_, room_token) = room_link.split_once("#token=").expect("token");

    let mut a = Ws::connect(&server).await;
    a.send(json!({"type":"hello","space":"team","name":"Ann"}))
        .await;
    a.expect_error("forbidden").await;
    a.send(json!({"type":"hello","space":"team","name":"Ann","token":room_token}))
        .await;
    a.expect_error("forbidden").await;
    a.send(json!({"type":"hello","space":"other","name":"Ann","token":space_token}))
        .await;
    a.expect_error("forbidden").await;
    a.send(json!({"type":"join","room":"team","token":space_token}))
        .await;
    a.expect_error("forbidden").await;
    a.send(json!({"type":"hello","space":"team","name":"Mallory","token":space_token}))
        .await;
    let pa = a.recv_type("people").await;
    let link_b = invite(dir, &["team", "--space"]);
    let (_, token_b) = link_b.split_once("#token=").expect("token");
    let mut b = Ws::connect(&server).await;
    b.send(json!({"type":"hello","space":"team","name":"Bo","token":token_b}))
        .await;
    let pb = b.recv_type("people").await;
    assert_eq!(
        pb["people"][0]["name"], "Ann",
        "the invitation fixes the name"
    );
    a.recv_type("person-joined").await;

    let (ida, idb) = (pa["you"].as_str().unwrap(), pb["you"].as_str().unwrap());
    let call = ring(&mut b, &mut a, ida, idb).await;
    a.send(json!({"type":"accept","call":call})).await;
    let acc_b = b.recv_type("call-accepted").await;
    b.send(json!({"type":"join","room":acc_b["room"],"token":acc_b["token"]}))
        .await;
    b.recv_type("joined").await;
}

#[tokio::test]
async fn allowed_origins_may_use_the_signaling_and_load_the_client_module() {
    let server = Server::start(&common::config_with_http(
        "allowed_origins = [\"https://app.example.org\"]",
        "",
    ));
    let mut ws = ws_client::try_connect(&server, Some("https://app.example.org"))
        .await
        .expect("an allowed origin connects");
    hello(&mut ws, "s", "Ann").await;
    assert!(
        ws_client::try_connect(&server, Some("https://evil.example.org"))
            .await
            .is_err(),
        "any other origin is refused"
    );
    let http = server.client();
    let get = |origin: &'static str| {
        http.get(server.https_url("/sdk/signalbox.js"))
            .header("origin", origin)
            .send()
    };
    let ok = get("https://app.example.org").await.expect("response");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://app.example.org")
    );
    assert!(ok.headers().get_all("vary").iter().any(|v| v == "origin"));
    let other = get("https://evil.example.org").await.expect("response");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_connection_in_a_space_counts_as_joined_until_it_leaves_the_space() {
    let server = Server::start(&common::base_config("[rooms]\njoin_timeout = \"1s\"\n"));
    let mut idle = Ws::connect(&server).await;
    let mut ws = Ws::connect(&server).await;
    hello(&mut ws, "s", "Ann").await;
    let close = idle.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "no join, no hello: closed");
    ws.barrier().await;
    ws.send(json!({"type":"leave-space"})).await;
    let close = ws.recv_close().await.expect("a close frame");
    assert_eq!(
        u16::from(close.code),
        1008,
        "nowhere after leave-space: closed"
    );
}
