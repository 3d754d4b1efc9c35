//! Token-mode rooms and the one-shot commands, against the real binary: `signalbox invite`
//! links admit their room until they expire, anything else gets `forbidden`;
//! `signalbox credentials` prints a pair the TURN listener accepts.

mod common;
mod turn_raw;
mod ws_client;

use std::path::Path;

use serde_json::json;

use common::{run_cli, Server};
use signalbox::access::{self, AccessKey, Invite};
use turn_raw::TurnClient;
use ws_client::Ws;

const SECRET: &str = "access-test-secret";

fn config(mode: &str) -> String {
    common::base_config(&format!(
        "[access]\nmode = \"{mode}\"\n\n[turn]\nlisten = [\"127.0.0.1:0\"]\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\nworkers = 1\n"
    ))
}

/// `signalbox invite ARGS` in the server's directory, with its config; returns the token.
fn invite(dir: &Path, args: &[&str]) -> String {
    let cfg = dir.join("config.toml");
    let mut all = vec!["--config", cfg.to_str().expect("UTF-8 path"), "invite"];
    all.extend_from_slice(args);
    let (code, out, err) = run_cli(dir, &all);
    assert_eq!(code, 0, "stderr: {err}");
    let link = out.trim();
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let (_, token) = link.split_once("#token=").expect("a #token= fragment");
    token.to_owned()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn in_token_mode_an_invite_admits_its_room_and_everything_else_is_forbidden() {
    let server = Server::start(&config("token"));
    let dir = server.dir.path();
    let token = invite(dir, &["standup", "--ttl", "1h", "--name", "Ann"]);

    let mut ws = Ws::connect(&server).await;
    ws.send(json!({"type":"join","room":"standup"})).await;
    ws.expect_error("forbidden").await;
    ws.send(json!({"type":"join","room":"standup","token":"garbage.token"}))
        .await;
    ws.expect_error("forbidden").await;
    ws.send(json!({"type":"join","room":"other","token":token}))
        .await;
    ws.expect_error("forbidden").await;

    // The connection stays usable: the right room with the token gets in, under the name
    // the invitation fixes.
    ws.send(json!({"type":"join","room":"standup","name":"Mallory","token":token}))
        .await;
    let joined = ws.recv_type("joined").await;
    let mut other = Ws::connect(&server).await;
    other
        .send(json!({"type":"join","room":"standup","token":token}))
        .await;
    let second = other.recv_type("joined").await;
    assert_eq!(
        second["peers"],
        json!([{"id": joined["id"], "name": "Ann", "host": true}])
    );
}

#[tokio::test]
async fn an_expired_invite_or_one_signed_with_another_key_is_forbidden() {
    let server = Server::start(&config("token"));
    let key_path = server.dir.path().join("certs/access.key");
    let key = AccessKey::load_or_create(&key_path).expect("the server made its key");
    let expired = access::sign(
        &key,
        &Invite {
            room: "r".into(),
            expiry: unix_now() - 1,
            name: None,
            host: false,
        },
    );
    let foreign = access::sign(
        &AccessKey::from_bytes(&[1; 32]),
        &Invite {
            room: "r".into(),
            expiry: unix_now() + 3600,
            name: None,
            host: false,
        },
    );
    let mut ws = Ws::connect(&server).await;
    for token in [expired, foreign] {
        ws.send(json!({"type":"join","room":"r","token":token}))
            .await;
        let err = ws.expect_error("forbidden").await;
        assert!(!err["message"].as_str().unwrap_or("").is_empty());
    }
}

#[tokio::test]
async fn a_peer_that_resumes_after_its_invite_expired_is_let_back_in() {
    let server = Server::start(&config("token"));
    let token = invite(server.dir.path(), &["r", "--ttl", "2s"]);
    let expiry = unix_now() + 2;
    let mut ws = Ws::connect(&server).await;
    ws.send(json!({"type":"join","room":"r","token":token}))
        .await;
    let joined = ws.recv_type("joined").await;
    ws.drop_without_close();
    while unix_now() <= expiry {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut again = Ws::connect(&server).await;
    again
        .send(json!({"type":"join","room":"r","token":token}))
        .await;
    again.expect_error("forbidden").await;
    again
        .send(json!({"type":"join","room":"r","token":token,"resume":joined["resume"]}))
        .await;
    let back = again.recv_type("joined").await;
    assert_eq!(back["id"], joined["id"], "the same peer, resumed");
}

#[tokio::test]
async fn the_key_survives_a_restart_so_invites_do_too() {
    let server = Server::start(&config("token"));
    let token = invite(server.dir.path(), &["r"]);
    let dir = server.into_dir();
    let server = Server::start_in(dir, &config("token"), &[]);
    let mut ws = Ws::connect(&server).await;
    ws.send(json!({"type":"join","room":"r","token":token}))
        .await;
    ws.recv_type("joined").await;
}

#[tokio::test]
async fn in_open_mode_no_token_is_needed() {
    let server = Server::start(&config("open"));
    let mut ws = Ws::connect(&server).await;
    ws.join("anyone").await;
}

#[test]
fn invite_prints_a_room_link_and_refuses_bad_input_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("config.toml"),
        "[server]\npublic_host = \"calls.example.org\"\n[http]\nlisten = \"0.0.0.0:443\"\n[access]\nmode = \"token\"\n",
    )
    .expect("config");
    let (code, out, _) = run_cli(dir.path(), &["invite", "team.sync", "--ttl", "2h"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("https://calls.example.org/r/team.sync#token="),
        "{out}"
    );
    let token = out.trim().rsplit_once("#token=").expect("token").1;
    let key = AccessKey::load_or_create(&dir.path().join("certs/access.key")).expect("key");
    let invite = access::verify(&key, token, "team.sync", unix_now()).expect("valid");
    assert!(invite.expiry.abs_diff(unix_now() + 7200) <= 2);

    for args in [
        &["invite", "bad room"][..],
        &["invite", "r", "--ttl", "soon"],
        &["invite", "r", "--ttl", "0s"],
    ] {
        let (code, out, err) = run_cli(dir.path(), args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("signalbox: invite: "), "{err}");
    }
}

#[test]
fn credentials_prints_a_pair_the_turn_listener_accepts() {
    let server = Server::start(&config("open"));
    let cfg = server.dir.path().join("config.toml");
    let cfg = cfg.to_str().expect("UTF-8 path");
    let (code, out, err) = run_cli(
        server.dir.path(),
        &[
            "credentials",
            "--ttl",
            "1h",
            "--user",
            "cli-test",
            "--config",
            cfg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no `{name}:` line in {out}"))
            .to_owned()
    };
    let username = field("username");
    let (expiry, user) = username.split_once(':').expect("EXPIRY:USER");
    assert_eq!(user, "cli-test");
    assert!(
        expiry
            .parse::<u64>()
            .expect("digits")
            .abs_diff(unix_now() + 3600)
            <= 2
    );
    assert_eq!(field("ttl"), "3600");
    // The printed URI names the configured port (0 here); the test talks to the bound one.
    assert!(out.contains("uri: turn:127.0.0.1:0?transport=udp"), "{out}");
    let turn = server.addr("turn-udp");
    let mut client = TurnClient::new(turn, &username, &field("password"));
    assert!(client.allocate().is_success());
}

#[test]
fn credentials_refuses_bad_input_and_a_missing_secret_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.toml"), "").expect("config");
    let (code, _, err) = run_cli(dir.path(), &["credentials"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("[turn] secrets"), "{err}");
    std::fs::write(
        dir.path().join("config.toml"),
        "[turn]\nsecrets = [\"s\"]\n",
    )
    .expect("config");
    for args in [
        &["credentials", "--ttl", "x"][..],
        &["credentials", "--user", "a b"],
    ] {
        let (code, _, err) = run_cli(dir.path(), args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (code, out, _) = run_cli(dir.path(), &["credentials", "--ttl", "10m"]);
    assert_eq!(code, 0);
    let username = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("username: "))
        .expect("username");
    assert!(
        username.parse::<u64>().is_ok(),
        "without --user the username is the expiry: {username}"
    );
}
