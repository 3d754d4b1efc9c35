//! Live reload of config.toml: SIGHUP and `signalbox reload`.
mod common;
mod ws_client;

use std::time::Duration;

use common::{run_cli, Server};

fn config_with_token(token: &str) -> String {
    common::base_config("").replace("[metrics]\n", &format!("[metrics]\ntoken = \"{token}\"\n"))
}

async fn metrics_status(server: &Server, token: &str) -> u16 {
    server
        .client()
        .get(server.https_url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Polls until `f` returns true, for at most five seconds.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn signalbox_reload_applies_a_changed_config_to_the_running_server() {
    let server = Server::start(&config_with_token("first-token-0123456789"));
    assert_eq!(metrics_status(&server, "first-token-0123456789").await, 200);
    std::fs::write(
        server.dir.path().join("config.toml"),
        config_with_token("second-token-0123456789"),
    )
    .unwrap();
    let config = server.dir.path().join("config.toml");
    let (code, out, err) = run_cli(
        server.dir.path(),
        &["reload", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&server.pid().to_string()), "{out}");
    assert!(
        eventually(|| async { metrics_status(&server, "second-token-0123456789").await == 200 })
            .await
    );
    assert_eq!(metrics_status(&server, "first-token-0123456789").await, 401);
    assert!(server.log_contains("SIGHUP: configuration reloaded"));
}

#[tokio::test]
async fn a_broken_config_is_refused_on_reload_and_the_old_one_stays() {
    let server = Server::start(&config_with_token("first-token-0123456789"));
    let path = server.dir.path().join("config.toml");
    std::fs::write(&path, "[metrics]\ntoken = 5\n").unwrap();
    // `signalbox reload` checks the file first and does not signal.
    let (code, _, err) = run_cli(
        server.dir.path(),
        &["reload", "--config", path.to_str().unwrap()],
    );
    assert_eq!(code, 2);
    assert!(err.contains("metrics.token"), "{err}");
    // A raw SIGHUP with the broken file is refused by the server, which keeps running.
    server.signal(libc::SIGHUP);
    assert!(
        eventually(|| async {
            server
                .stderr_text()
                .contains("configuration not reloaded, the old one stays")
        })
        .await
    );
    assert_eq!(metrics_status(&server, "first-token-0123456789").await, 200);
}

#[tokio::test]
async fn a_listen_address_change_needs_a_restart() {
    let server = Server::start(&config_with_token("first-token-0123456789"));
    let path = server.dir.path().join("config.toml");
    let changed = config_with_token("second-token-0123456789").replace(
        "listen = \"127.0.0.1:0\"\nstatic_dir",
        "listen = \"127.0.0.1:1\"\nstatic_dir",
    );
    assert!(changed.contains("127.0.0.1:1"));
    std::fs::write(&path, changed).unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        eventually(|| async {
            server
                .stderr_text()
                .contains("`http.listen` changed; that needs a restart")
        })
        .await
    );
    assert_eq!(metrics_status(&server, "first-token-0123456789").await, 200);
}

#[test]
fn reload_without_a_running_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let (code, _, err) = run_cli(dir.path(), &["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no running server") && err.contains("pid_file"),
        "{err}"
    );
}

#[tokio::test]
async fn api_keys_and_the_access_mode_wait_for_a_restart_and_say_so() {
    let first = config_with_token("first-token-0123456789");
    let server = Server::start(&first);
    let changed = format!(
        "{first}\n[access]\nmode = \"token\"\n\n[api]\n[[api.keys]]\nname = \"app\"\nkey = \"0123456789abcdef-app\"\n"
    );
    std::fs::write(server.dir.path().join("config.toml"), changed).unwrap();
    server.signal(libc::SIGHUP);
    assert!(
        eventually(|| async {
            server
                .stderr_text()
                .contains("changes in [api], [access] take effect at the next restart")
        })
        .await,
        "{}",
        server.stderr_text()
    );
    // Joins and the connection check agree: still the mode the server started with.
    let diag = server
        .client()
        .get(server.https_url("/api/diag"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        diag.status(),
        200,
        "the check still runs: mode is still open"
    );
    let mut ws = ws_client::Ws::connect(&server).await;
    let joined = ws.join("no-invitation-needed").await;
    assert_eq!(joined["room"], "no-invitation-needed");
    // The new key is not in service yet.
    let api = server
        .client()
        .get(server.https_url("/api/turn?service=turn&key=0123456789abcdef-app"))
        .send()
        .await
        .expect("request");
    assert_eq!(api.status(), 404);
}

#[test]
fn a_second_server_on_the_same_pid_file_does_not_start_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pid_path = dir.path().join("signalbox.pid");
    // Left by a server that is gone (no process has this id).
    std::fs::write(&pid_path, "4294967295\n").unwrap();
    let first = Server::start_in(dir, &common::base_config(""), &[]);
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap().trim(),
        first.pid().to_string(),
        "the stale file was replaced"
    );

    let other = tempfile::tempdir().unwrap();
    let config = common::base_config("").replacen(
        "[server]\n",
        &format!(
            "[server]\npid_file = {:?}\n",
            pid_path.display().to_string()
        ),
        1,
    );
    std::fs::write(other.path().join("config.toml"), config).unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .arg("--config")
        .arg(other.path().join("config.toml"))
        .current_dir(other.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second server did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("already running as process {}", first.pid())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap().trim(),
        first.pid().to_string(),
        "the running server's pid file is left alone"
    );
}
