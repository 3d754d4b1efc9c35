//! Runs the real `signalbox` binary for integration tests: a fresh temporary directory, a
//! config with every listener on `127.0.0.1:0`, and the bound addresses read back from the
//! `signalbox: NAME listening on ADDR` lines the server prints. Dropping [`Server`] kills it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub listeners: HashMap<String, SocketAddr>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The repository's `public/` directory.
pub fn public_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("public")
}

/// A config with every listener on an ephemeral loopback port (HTTPS, metrics, TURN over UDP,
/// TCP and TLS) and the
/// web app from the repository; `extra` is appended (more sections). A `[metrics]` or `[turn]`
/// section in `extra` replaces the default one here.
pub fn base_config(extra: &str) -> String {
    let mut config = format!(
        "[server]\npublic_host = \"127.0.0.1\"\ndrain_grace = \"2s\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nstatic_dir = {:?}\nshutdown_grace = \"2s\"\n\n[log]\nlevel = \"info,signalbox=debug\"\n\n",
        public_dir().display().to_string()
    );
    if !extra.contains("[metrics]") {
        config.push_str("[metrics]\nlisten = \"127.0.0.1:0\"\n\n");
    }
    if !extra.contains("[turn]") {
        config.push_str("[turn]\nlisten = [\"127.0.0.1:0\"]\nrelay_ip = \"127.0.0.1\"\n\n");
    }
    // The TCP and TLS TURN listeners go on ephemeral loopback ports too, unless the test names
    // them: the default ports would collide between tests running in parallel.
    let mut streams = String::new();
    for key in ["listen_tcp", "listen_tls"] {
        if !extra.contains(key) {
            streams.push_str(&format!("{key} = [\"127.0.0.1:0\"]\n"));
        }
    }
    if extra.contains("[turn]") {
        config.push_str(&extra.replacen("[turn]\n", &format!("[turn]\n{streams}"), 1));
    } else {
        config = config.replacen("[turn]\n", &format!("[turn]\n{streams}"), 1);
        config.push_str(extra);
    }
    config.push('\n');
    config
}

/// [`base_config`] with `http` (lines such as `max_connections_per_ip = 2`) added to its
/// `[http]` section.
pub fn config_with_http(http: &str, extra: &str) -> String {
    base_config(extra).replacen("[http]\n", &format!("[http]\n{http}\n"), 1)
}

impl Server {
    /// Scrapes `/metrics` from the metrics listener: `series -> value` for every sample.
    #[allow(dead_code)]
    pub fn metrics(&self) -> HashMap<String, f64> {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(self.addr("metrics")).expect("metrics listener");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        tcp.read_to_string(&mut text).expect("response");
        let (_, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        body.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("`series value` line");
                (series.to_owned(), value.parse().expect("numeric value"))
            })
            .collect()
    }

    /// Waits (up to 5 s) until `series` in `/metrics` reads `value`. After a client drops its
    /// connection, `signalbox_ws_connections_active` going down says the server has seen it
    /// go and told the signaling hub; until then, messages to that peer go to the dead
    /// connection rather than being kept for its resume.
    pub fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.metrics().get(series).copied();
            if now == Some(value) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{series} is {now:?}, not {value}, after 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary with `config` (TOML text) and waits until it prints its `open` line.
    pub fn start(config: &str) -> Server {
        Self::start_with_args(config, &[])
    }

    pub fn start_with_args(config: &str, args: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().expect("temp dir"), config, args)
    }

    /// Starts the server in `dir` (its working directory, where `config.toml` is written).
    pub fn start_in(dir: tempfile::TempDir, config: &str, args: &[&str]) -> Server {
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signalbox"))
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start signalbox");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let err_buf = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                if std::env::var_os("SIGNALBOX_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                let mut b = err_buf.lock().unwrap_or_else(|p| p.into_inner());
                b.push_str(&line);
                b.push('\n');
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("signalbox: ") {
                        if let Some((name, addr)) = rest.split_once(" listening on ") {
                            let addr: SocketAddr = addr.trim().parse().expect("listener address");
                            listeners.insert(name.to_owned(), addr);
                        } else if rest.starts_with("open ") {
                            break;
                        }
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "signalbox did not start (exit {status:?}); stderr:\n{}",
                        stderr.lock().unwrap_or_else(|p| p.into_inner())
                    );
                }
            }
        }
        Server {
            child,
            dir,
            listeners,
            stderr,
        }
    }

    /// The address a named listener bound (`https`, `turn-udp`, …).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` listener in {:?}", self.listeners))
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr("https"), path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits up to `limit` for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the server (SIGKILL) and hands back its directory for a restart.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Waits up to five seconds for `needle` to appear in the server's log (stderr is read on
    /// its own thread, so a line logged before `open` may land a moment after it).
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// An HTTPS client that trusts exactly this server's generated certificate.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.dir.path().join("certs/selfsigned-cert.pem"))
            .expect("generated certificate");
        let cert = reqwest::Certificate::from_pem(&pem).expect("certificate PEM");
        reqwest::Client::builder()
            .add_root_certificate(cert)
            .use_rustls_tls()
            .build()
            .expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `signalbox ARGS` to completion and returns (exit code, stdout, stderr).
pub fn run_cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run signalbox");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port, free for both TCP and UDP right now, for a process that must be told its
/// port before it starts (pebble's validation ports, `turnutils_peer`, a proxy's front).
///
/// A port from a bind to port 0 comes out of the kernel's ephemeral range, the same range every
/// outbound connection and every other bind to port 0 on the machine draws from: between
/// releasing it here and the process binding it, a parallel test can take it (seen as "Address
/// already in use"). Ports below that range are never handed out by the kernel, so only another
/// caller of this function could take one; a per-process counter keeps those apart, starting at
/// an offset from the process id for test binaries that run side by side.
pub fn named_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral > LOW + 1_000,
        "the ephemeral port range starts at {ephemeral}: tests need ports {LOW}.. below it"
    );
    let span = ephemeral - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for TCP and UDP in {LOW}..{ephemeral}");
}
