//! What the cluster tests share: Debian's `redis-server` started on a free loopback port with no
//! persistence (stopped when dropped), waiting for a condition, and the TURN credentials of a
//! `joined`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::named_port;

/// A `redis-server` on `127.0.0.1:port` with no persistence; killed when dropped.
pub struct Redis {
    pub port: u16,
    /// More `redis-server` arguments (a password).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            port: named_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        redis.run();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on this port and waits until it answers PING.
    pub fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/install-test-deps)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PING (`+PONG`, or `-NOAUTH` with a password).
    pub fn answers(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut answer).is_ok()
            && (&answer == b"+PONG\r\n" || answer.starts_with(b"-NOAUTH"))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Redis {
    /// Sends one command (RESP) on a connection of its own and returns that connection, whose
    /// answer the caller may read or leave.
    pub fn send(&self, args: &[&str]) -> TcpStream {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        tcp.write_all(out.as_bytes()).expect("send to Redis");
        tcp
    }

    /// Runs one command and returns the first line of its answer.
    pub fn command(&self, args: &[&str]) -> String {
        let mut tcp = self.send(args);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while tcp.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            answer.push(byte[0]);
        }
        String::from_utf8_lossy(&answer).trim_end().to_owned()
    }
}

/// Waits up to `limit` for `what` to hold; says how long it took.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The TURN username and password in `joined`.
pub fn turn_credentials(joined: &Value) -> (String, String) {
    let entry = joined["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .find(|e| e.get("username").is_some())
        .unwrap_or_else(|| panic!("no TURN entry in {joined}"))
        .clone();
    (
        entry["username"].as_str().expect("username").to_owned(),
        entry["credential"].as_str().expect("credential").to_owned(),
    )
}
