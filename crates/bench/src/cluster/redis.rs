//! The Redis server a benchmark cluster shares: Debian's `redis-server` on a free loopback port,
//! with no persistence (nothing signalbox keeps in Redis needs to survive it), stopped when
//! dropped.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::net;

/// Why the Redis server could not be had.
#[derive(Debug, Error)]
pub enum RedisError {
    /// Not installed: the benchmark exits with status 2, as for a configuration error.
    #[error(
        "`{0}` not found: the cluster benchmark needs Redis (Debian: `apt-get install \
         redis-server`), or pass --redis PATH"
    )]
    NotInstalled(String),
    #[error("cannot start `{program}`: {reason}")]
    Start { program: String, reason: String },
    #[error("`{program}` exited at start ({status}); is port {port} taken?")]
    Exited {
        program: String,
        status: String,
        port: u16,
    },
    #[error("`{program}` did not answer PING on 127.0.0.1:{port} within {limit:?}")]
    NoAnswer {
        program: String,
        port: u16,
        limit: Duration,
    },
}

/// A running `redis-server`; killed and reaped when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

/// How long a fresh server gets to answer PING.
const START_LIMIT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts `program` on a free loopback port, also listening on `more` addresses (this
    /// host's ends of the nodes' links with `--netns`), and waits until it answers PING.
    pub fn start(program: &Path, more: &[Ipv4Addr]) -> Result<RedisServer, RedisError> {
        let name = program.display().to_string();
        let port = net::free_tcp_port().map_err(|e| RedisError::Start {
            program: name.clone(),
            reason: format!("no free port: {e}"),
        })?;
        let child = crate::spawn_tied(
            Command::new(program)
                .args(server_args(port, more))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RedisError::NotInstalled(name.clone()),
            _ => RedisError::Start {
                program: name.clone(),
                reason: e.to_string(),
            },
        })?;
        let mut redis = RedisServer { child, port };
        let deadline = Instant::now() + START_LIMIT;
        while !redis.answers() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(RedisError::Exited {
                    program: name,
                    status: status.to_string(),
                    port,
                });
            }
            if Instant::now() > deadline {
                return Err(RedisError::NoAnswer {
                    program: name,
                    port,
                    limit: START_LIMIT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `[cluster] redis_url` of a node that reaches Redis at `ip`.
    pub fn url(&self, ip: Ipv4Addr) -> String {
        format!("redis://{ip}:{}/0", self.port)
    }

    fn answers(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loopback (and the `more` addresses) only, no snapshots, no append-only file. Protected
/// mode, which refuses clients from other addresses than loopback when there is no password,
/// is off only when there are more addresses: they are this host's ends of links to
/// namespaces the benchmark made.
pub fn server_args(port: u16, more: &[Ipv4Addr]) -> Vec<String> {
    let mut bind = String::from("127.0.0.1");
    for ip in more {
        bind.push_str(&format!(" {ip}"));
    }
    let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", &bind]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !more.is_empty() {
        args.extend(["--protected-mode".into(), "no".into()]);
    }
    args.extend(["--save", "", "--appendonly", "no"].map(String::from));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_listens_on_loopback_only_and_keeps_nothing_on_disk() {
        let args = server_args(6390, &[]);
        let pairs: Vec<(&str, &str)> = args
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("--port", "6390"),
                ("--bind", "127.0.0.1"),
                ("--save", ""),
                ("--appendonly", "no")
            ]
        );
    }

    #[test]
    fn with_namespaces_redis_also_listens_on_their_links() {
        let args = server_args(
            6390,
            &[Ipv4Addr::new(10, 200, 1, 1), Ipv4Addr::new(10, 200, 2, 1)],
        );
        let at = |flag: &str| {
            let i = args.iter().position(|a| a == flag).expect("flag present");
            args[i + 1].clone()
        };
        assert_eq!(at("--bind"), "127.0.0.1 10.200.1.1 10.200.2.1");
        assert_eq!(at("--protected-mode"), "no");
        assert_eq!(at("--save"), "");
    }

    #[test]
    fn a_missing_program_is_reported_as_not_installed() {
        let missing = Path::new("/nonexistent/redis-server");
        match RedisServer::start(missing, &[]) {
            Err(RedisError::NotInstalled(p)) => assert_eq!(p, "/nonexistent/redis-server"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a missing program started"),
        }
    }
}
