//! `signalbox-bench`: load tests against the real server. Each subcommand is one workload (see
//! the `signalbox_bench` library); `docs/performance.md` says what the UDP figures mean. Build
//! and run in release mode:
//! `cargo build --release --workspace && target/release/signalbox-bench all --against coturn`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use signalbox_bench::report::{self, Report};
use signalbox_bench::workloads::{self, LimitArgs, MemoryArgs, StunArgs, TurnArgs};
use signalbox_bench::{cluster, forward, net, signaling, Common};

/// Reproducible figures for signalbox, against coturn and against the machine's ceiling.
/// All traffic stays on loopback; every workload is bounded in count and time.
#[derive(Debug, Parser)]
#[command(name = "signalbox-bench", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// The server executable for `signaling` and `cluster`; default: `signalbox` next to this
    /// program.
    #[arg(long, global = true, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Where `signaling` writes its JSON report; default: `bench-signaling.json`.
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// WebSocket signaling: many clients in rooms of two, a join storm, then relayed signals
    /// at a fixed offered rate; reports joins/s, signals/s, relay latency and RSS per connection.
    Signaling(signaling::Args),
    /// TURN data path: clients with allocations and channels to an echo peer (or in pairs).
    Turn(TurnArgs),
    /// STUN Binding requests answered per second and CPU per request.
    Stun(StunArgs),
    /// The ceiling of this machine: a minimal recvmmsg/sendmmsg UDP forwarder.
    Limit(LimitArgs),
    /// Idle RSS, RSS growth under an Allocate flood, RSS per live allocation.
    Memory(MemoryArgs),
    /// Two or three nodes sharing a redis-server: signal latency and loss, join rate and
    /// server CPU per signal with a room's peers on different nodes, next to both on one.
    Cluster(cluster::Args),
    /// Every workload above with the documented defaults.
    All,
    /// The reference forwarder process itself (started by `limit`).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 0)]
        batch_window_us: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    net::raise_fd_limit();
    signalbox_bench::apply_nice(cli.common.nice);
    let mut report = Report::default();
    let common = &cli.common;
    let result = match &cli.command {
        Workload::Signaling(args) => {
            return match signalbox_bench::run_signaling(
                args,
                cli.server.as_deref(),
                cli.json.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("signalbox-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Workload::Forward {
            port,
            workers,
            batch_window_us,
        } => {
            let window = std::time::Duration::from_micros(*batch_window_us);
            return match forward::run(*port, *workers, window) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("signalbox-bench: forwarder: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        Workload::Turn(a) => workloads::turn(a, common, &mut report),
        Workload::Stun(a) => workloads::stun(a, common, &mut report),
        Workload::Limit(a) => workloads::limit(a, common, &mut report),
        Workload::Memory(a) => workloads::memory(a, common, &mut report),
        Workload::Cluster(a) => {
            let r = cluster::run(a, cli.server.as_deref(), common, &mut report);
            if let Some(missing @ cluster::RedisError::NotInstalled(_)) =
                r.as_ref().err().and_then(|e| e.downcast_ref())
            {
                eprintln!("signalbox-bench: {missing}");
                return ExitCode::from(2);
            }
            r
        }
        Workload::All => workloads::all(common, &mut report),
    };
    finish(result, report, common)
}

/// Prints the table and writes the JSON report, also after a failure (what ran is kept).
fn finish(result: anyhow::Result<()>, mut report: Report, common: &Common) -> ExitCode {
    workloads::add_checks(&mut report);
    print!("{}", report.table());
    let machine = report::machine();
    if let Err(e) = report.write_json(&common.report, machine) {
        eprintln!(
            "signalbox-bench: cannot write {}: {e:#}",
            common.report.display()
        );
    } else {
        eprintln!(
            "signalbox-bench: report written to {}",
            common.report.display()
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signalbox-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
