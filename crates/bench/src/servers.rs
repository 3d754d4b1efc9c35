//! The servers under test, each a child process on loopback: signalbox (the release binary next
//! to the benchmark's own executable), coturn (Debian's `turnserver`, installed when missing) and
//! the reference forwarder (`signalbox-bench forward`, the `limit` of this machine).
//!
//! Every server is measured the same way, from outside: its CPU time and RSS in `/proc`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::client::{binding_request, is_binding_success};
use super::net;

/// Which implementation a target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Signalbox,
    Coturn,
    Limit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Signalbox => "signalbox",
            Kind::Coturn => "coturn",
            Kind::Limit => "limit",
        }
    }
}

/// What to start: implementation and data-path worker threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    pub kind: Kind,
    pub workers: usize,
    /// signalbox's `[turn] batch_window` and the forwarder's (coturn has no such setting).
    pub window: Duration,
}

impl Spec {
    pub fn label(&self) -> String {
        format!("{} w{}", self.kind.name(), self.workers)
    }
}

/// The shared REST secret and realm every server is configured with.
pub const SECRET: &str = "signalbox-bench-secret";
pub const REALM: &str = "bench.local";

/// A running server. Dropping it stops the process and removes its directory.
pub struct Server {
    pub spec: Spec,
    pub pid: u32,
    /// Its UDP TURN/STUN listener (for `limit`: the forwarder's listener).
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "signalbox-bench-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Relay port ranges, disjoint per implementation and below the kernel's ephemeral range
/// (where the benchmark's own sockets live).
fn relay_range(kind: Kind) -> (u16, u16) {
    match kind {
        Kind::Signalbox => (5_000, 21_999),
        _ => (22_000, 32_767),
    }
}

pub fn start(spec: Spec) -> anyhow::Result<Server> {
    match spec.kind {
        Kind::Signalbox => start_signalbox(spec),
        Kind::Coturn => start_coturn(spec),
        Kind::Limit => start_forwarder(spec),
    }
}

/// A binary that sits next to the running benchmark (both come from the same `cargo build`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the benchmark executable")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found; build it first with `cargo build --release --workspace`",
            path.display()
        );
    }
    Ok(path)
}

fn start_signalbox(spec: Spec) -> anyhow::Result<Server> {
    let dir = temp_dir("signalbox")?;
    let port = net::free_udp_port()?;
    let (lo, hi) = relay_range(Kind::Signalbox);
    let config = format!(
        r#"[server]
public_host = "127.0.0.1"

[http]
listen = "127.0.0.1:0"
static_dir = "."

[log]
level = "warn"

[metrics]
listen = ""

[turn]
listen = ["127.0.0.1:{port}"]
listen_tcp = []
listen_tls = []
one_port = false
realm = "{REALM}"
secrets = ["{SECRET}"]
relay_ip = "127.0.0.1"
relay_ports = "{lo}-{hi}"
allow_loopback_peers = true
workers = {workers}
batch_window = "{window}us"
user_quota = 100000
total_quota = 100000
max_allocations_per_ip = 100000
unauth_rate = 10000000
unauth_burst = 10000000
"#,
        workers = spec.workers,
        window = spec.window.as_micros()
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let child = Command::new(sibling("signalbox")?)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start signalbox")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server {
        spec,
        pid: child.id(),
        addr,
        child,
        dir,
    };
    wait_for_line(&mut server, "turn-udp listening on")?;
    wait_for_binding(addr, Duration::from_secs(5))?;
    Ok(server)
}

/// Reads the child's stdout until a line contains `needle`; the rest is drained in the
/// background so the pipe never fills.
fn wait_for_line(server: &mut Server, needle: &str) -> anyhow::Result<()> {
    let out = server.child.stdout.take().context("no stdout")?;
    let err = server.child.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // Keep draining after the waiter left.
                continue;
            }
        }
    });
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() < 8192 {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = server.child.try_wait() {
                    std::thread::sleep(Duration::from_millis(50));
                    let e = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    bail!("{} exited ({status}): {}", server.spec.label(), e.trim());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50));
                let e = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
                bail!("{} closed its output: {}", server.spec.label(), e.trim());
            }
        }
    }
    bail!(
        "{} did not print `{needle}` within 10 s",
        server.spec.label()
    )
}

/// Waits until `addr` answers a STUN Binding request.
pub fn wait_for_binding(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let _ = s.send(&binding_request(n));
        if let Ok(len) = s.recv(&mut buf) {
            if is_binding_success(&buf[..len]) {
                return Ok(());
            }
        }
    }
    bail!("{addr} did not answer a STUN Binding request within {limit:?}")
}

/// Installs Debian's coturn when `turnserver` is missing.
pub fn ensure_coturn() -> anyhow::Result<PathBuf> {
    for p in ["/usr/bin/turnserver", "/usr/local/bin/turnserver"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    eprintln!("signalbox-bench: installing coturn (apt-get install -y coturn)");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "coturn"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").arg("update").status();
        let status = Command::new("apt-get")
            .args(["install", "-y", "coturn"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get install -y coturn failed ({status})");
        }
    }
    // Debian starts the service on install; the benchmark runs its own instance only.
    let _ = Command::new("systemctl")
        .args(["disable", "--now", "coturn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(PathBuf::from("/usr/bin/turnserver"))
}

fn start_coturn(spec: Spec) -> anyhow::Result<Server> {
    let bin = ensure_coturn()?;
    let dir = temp_dir("coturn")?;
    let port = net::free_udp_port()?;
    let (lo, hi) = relay_range(Kind::Coturn);
    let mut cmd = Command::new(bin);
    cmd.arg("-n") // no configuration file: everything is on this command line
        .args(["--listening-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args(["--relay-ip", "127.0.0.1"])
        .args(["--min-port", &lo.to_string(), "--max-port", &hi.to_string()])
        .arg("--use-auth-secret")
        .args(["--static-auth-secret", SECRET])
        .args(["--realm", REALM])
        .arg("--allow-loopback-peers")
        .args(["--no-tls", "--no-dtls", "--no-tcp-relay", "--no-cli"])
        .args(["--relay-threads", &spec.workers.to_string()])
        .args(["--user-quota", "0", "--total-quota", "0"])
        .arg("--log-file")
        .arg(dir.join("turnserver.log"))
        .args(["--simple-log", "--no-stdout-log"])
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().context("cannot start turnserver")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server {
        spec,
        pid: child.id(),
        addr,
        child,
        dir,
    };
    if let Err(e) = wait_for_binding(addr, Duration::from_secs(10)) {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("turnserver exited ({status}); see its log");
        }
        return Err(e);
    }
    Ok(server)
}

fn start_forwarder(spec: Spec) -> anyhow::Result<Server> {
    let dir = temp_dir("limit")?;
    let port = net::free_udp_port()?;
    let child = Command::new(std::env::current_exe()?)
        .arg("forward")
        .args(["--port", &port.to_string()])
        .args(["--workers", &spec.workers.to_string()])
        .args(["--batch-window-us", &spec.window.as_micros().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the reference forwarder")?;
    let mut server = Server {
        spec,
        pid: child.id(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        dir,
    };
    wait_for_line(&mut server, "forwarder listening on")?;
    Ok(server)
}
