//! `signalbox-bench`: reproducible figures for the TURN/STUN data path, against coturn and
//! against the ceiling of the machine, all on loopback and bounded in count and time.
//!
//! Each workload is a module; [`workloads`] runs them from the parsed command line. The
//! server's cost is read from `/proc/PID/stat` (CPU time) and `/proc/PID/status` (RSS), which
//! holds on a noisy shared machine where throughput alone would not.

pub mod client;
pub mod forward;
pub mod load;
pub mod memory;
pub mod net;
pub mod procstat;
pub mod report;
pub mod servers;
pub mod setup;
pub mod stats;
pub mod stun;
pub mod turn;
pub mod wire;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Options every workload shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Rounds per server; servers alternate within each round and figures are medians.
    #[arg(long, default_value_t = 3, global = true)]
    pub rounds: usize,
    /// Measured length of one fixed-rate round (e.g. "3s", "1500ms").
    #[arg(long, default_value = "3s", value_parser = parse_duration, global = true)]
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// Debian's coturn (`turnserver`), installed with apt-get when missing.
    Coturn,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
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
