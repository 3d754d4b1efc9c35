//! `signalbox-bench`: load tests against the real server binary, reproducible figures for the
//! TURN/STUN data path against coturn and against the ceiling of the machine, and for the
//! WebSocket signaling; all on loopback and bounded in count and time.
//!
//! The benchmark builds nothing: it starts the `signalbox` executable that sits next to its own
//! (`target/release/signalbox` after `cargo build --release --workspace`) with a temporary config,
//! drives it over loopback, and prints a table plus a JSON report. Each kind of load is one
//! subcommand with its own module: [`signaling`], and the UDP workloads run by [`workloads`].
//! The server's cost is read from `/proc/PID/stat` (CPU time) and `/proc/PID/status` (RSS),
//! which holds on a noisy shared machine where throughput alone would not.

pub mod client;
pub mod cluster;
pub mod forward;
pub mod load;
pub mod memory;
pub mod net;
pub mod procstat;
pub mod report;
pub mod servers;
pub mod setup;
pub mod signaling;
pub mod stats;
pub mod stun;
pub mod turn;
pub mod wire;
pub mod workloads;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

/// Options every workload shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Rounds per server; servers alternate within each round and figures are medians.
    #[arg(long, default_value_t = 3, global = true)]
    pub rounds: usize,
    /// Measured length of one fixed-rate round (e.g. "3s", "1500ms"). Give it before the
    /// subcommand (`signaling` has a `--duration` of its own).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Measured length of one step of a max-rate search.
    #[arg(long, default_value = "1s", value_parser = parse_duration, global = true)]
    pub search_step: Duration,
    /// Where the JSON report is written.
    #[arg(long, default_value = "target/bench-report.json", global = true)]
    pub report: PathBuf,
    /// Nice value for the benchmark and the servers it starts (inherited), e.g. -5 to keep
    /// background jobs from starving the load generator; 0 leaves the priority alone.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, global = true)]
    pub nice: i32,
    /// Run the same workload against another server in alternating rounds.
    #[arg(long, value_enum, global = true)]
    pub against: Option<Against>,
    /// `[turn] batch_window` of signalbox, also used by the reference forwarder (e.g. "0us"
    /// to answer every packet at once). Default: the server's own default.
    #[arg(long, value_parser = parse_duration, global = true)]
    pub batch_window: Option<Duration>,
}

impl Common {
    /// The batch window the servers of this run use.
    pub fn window(&self) -> Duration {
        self.batch_window
            .unwrap_or_else(|| signalbox::config::TurnConfig::default().batch_window)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// Debian's coturn (`turnserver`), installed with apt-get when missing.
    Coturn,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    signalbox::config::parse_duration(s)
}

/// Applies `--nice` to this process (servers started later inherit it).
pub fn apply_nice(nice: i32) {
    if nice != 0 {
        // SAFETY: plain syscall on our own process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            eprintln!(
                "signalbox-bench: cannot set nice {nice}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Cores of this machine: the default worker count.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs the `signaling` workload against `server` (default: `signalbox` next to this program)
/// and writes its JSON report to `json` (default: `bench-signaling.json`).
pub fn run_signaling(
    args: &signaling::Args,
    server: Option<&Path>,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let server = match server {
        Some(p) => p.to_path_buf(),
        None => sibling_server()?,
    };
    signalbox_udp::socket::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(signaling::run(&server, args))?;
    let path = json
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("bench-signaling.json"));
    let text = serde_json::to_string_pretty(&report).context("report to JSON")?;
    std::fs::write(&path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("report written to {}", path.display());
    Ok(())
}

/// `signalbox` in the directory of the running executable.
pub fn sibling_server() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let server = exe.with_file_name("signalbox");
    if !server.exists() {
        bail!(
            "{} not found; run `cargo build --release --workspace` first or pass --server",
            server.display()
        );
    }
    Ok(server)
}

/// Spawns `command` so that the kernel kills it when the thread that spawned it ends: a
/// benchmark stopped with Ctrl-C or killed leaves no server behind. Call it from the thread
/// that outlives the child (the main thread).
pub fn spawn_tied(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the benchmark exited"));
            }
            Ok(())
        })
    };
    command.spawn()
}

/// A running server in a temporary directory; killed and cleaned up on drop.
pub struct ServerProcess {
    child: Child,
    dir: PathBuf,
    pub https: SocketAddr,
}

impl ServerProcess {
    /// Starts `binary` with HTTPS on `127.0.0.1:0` and `extra` appended to the config.
    pub fn start(binary: &Path, extra: &str) -> anyhow::Result<ServerProcess> {
        Self::start_in(binary, std::net::Ipv4Addr::LOCALHOST, None, extra)
    }

    /// Starts `binary` with HTTPS on `ip:0` (also its `public_host`), inside the named network
    /// namespace when one is given (`ip netns exec`), and `extra` appended to the config.
    pub fn start_in(
        binary: &Path,
        ip: std::net::Ipv4Addr,
        netns: Option<&str>,
        extra: &str,
    ) -> anyhow::Result<ServerProcess> {
        let dir = std::env::temp_dir().join(format!(
            "signalbox-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).context("temporary directory")?;
        // Every benchmark client comes from one address, to the HTTPS caps.
        let config = format!(
            "[server]\npublic_host = \"{ip}\"\n\n[http]\nlisten = \"{ip}:0\"\n\
             static_dir = \"public\"\nshutdown_grace = \"2s\"\n\
             max_connections = 1000000\nmax_connections_per_ip = 1000000\n\n[log]\nlevel = \"warn\"\n\n\
             [metrics]\nlisten = \"\"\n\n{extra}\n"
        );
        std::fs::write(dir.join("config.toml"), config).context("write config")?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = spawn_tied(
            command
                .arg("--config")
                .arg(dir.join("config.toml"))
                .current_dir(&dir)
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .with_context(|| format!("cannot start {}", binary.display()))?;
        let out = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut https = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("the server did not start");
                }
            };
            if let Some(addr) = line.strip_prefix("signalbox: https listening on ") {
                https = addr.trim().parse().ok();
            } else if line.starts_with("signalbox: open ") {
                break;
            }
        }
        let Some(https) = https else {
            let _ = child.kill();
            bail!("the server did not announce its HTTPS address");
        };
        Ok(ServerProcess { child, dir, https })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The generated self-signed certificate (PEM), to trust in clients.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("certs/selfsigned-cert.pem")
    }

    /// Resident memory of the server in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `VmRSS` of a process, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("bad stat field")
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// Percentiles of a set of samples (sorted in place).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(samples: &mut [u64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Some(Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        })
    }
}

/// Prints rows of (label, value, target) as an aligned table.
pub fn print_table(title: &str, rows: &[(String, String, String)]) {
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    println!("\n{title}");
    println!("{:<w0$}  {:>w1$}  target", "metric", "value");
    println!("{}", "-".repeat(w0 + w1 + 12));
    for (label, value, target) in rows {
        println!("{label:<w0$}  {value:>w1$}  {target}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut v).unwrap();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
