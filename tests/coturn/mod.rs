//! Debian coturn's tools as an independent TURN client and peer for interop tests.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// `name` from coturn's package; the test fails with the install command when it is missing.
pub fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: these tests need Debian's coturn tools (apt-get install -y coturn)"
    );
    Command::new(name)
}

/// A child process killed when dropped, also when the test fails.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `turnutils_uclient` reported.
pub struct Run {
    pub sent: u64,
    pub received: u64,
    /// `u64::MAX` when the summary has no loss line (the run did not finish).
    pub lost: u64,
    pub output: String,
}

/// Runs `turnutils_uclient` with REST secret `secret` against the TURN server on loopback
/// `port` with `flags` (`-t` for TCP, `-t -S` for TLS, …), relaying to a `turnutils_peer` on
/// loopback. Bounded: the client is killed after 120 s.
pub fn uclient(port: u16, secret: &str, user: &str, flags: &[&str]) -> Run {
    let peer_port = crate::common::named_port();
    let _peer = Child(
        tool("turnutils_peer")
            .args(["-p", &peer_port.to_string(), "-L", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let (port, peer_port) = (port.to_string(), peer_port.to_string());
    let mut args = vec![
        "-W",
        secret,
        "-u",
        user,
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
    ];
    args.extend_from_slice(flags);
    args.push("127.0.0.1");
    tool("turnutils_uclient");
    let out = Command::new("timeout")
        .arg("120")
        .arg("turnutils_uclient")
        .args(&args)
        .output()
        .expect("run turnutils_uclient");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let field = |key: &str| -> Option<u64> {
        output
            .lines()
            .rev()
            .find_map(|l| l.split(key).nth(1))
            .and_then(|rest| {
                rest.trim_start_matches('=')
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .map(str::to_owned)
            })
            .and_then(|n| n.parse().ok())
    };
    Run {
        sent: field("tot_send_msgs").unwrap_or(0),
        received: field("tot_recv_msgs").unwrap_or(0),
        lost: field("Total lost packets ").unwrap_or(u64::MAX),
        output,
    }
}
