//! `signalbox-bench cluster`: two or three signalbox nodes sharing one `redis-server`, all on
//! this host's loopback, and what a room costs when its two peers are on different nodes.
//!
//! Each round measures placements of the same rooms of two ([`Mode`]): *cross-node*, the
//! first peer (which makes its node the room's home) on one node and the second on the next
//! node, so every signal and the second join cross Redis once; with three nodes *off-home*,
//! the home on a third node (held by a silent peer that joined first), so every signal crosses
//! Redis twice; and *one node*, both peers on the same node, the baseline. Rooms are spread
//! over all nodes in each, so every node carries the same share. Per placement: the join rate of the second peers (all released at once) with
//! their join times, the one-way latency of signals at a fixed total rate, loss, and the CPU
//! time of every node and of Redis per delivered signal. Figures are medians over `--rounds`.
//!
//! By default the nodes run in this host's network namespace on ports of their own (HTTPS and
//! TURN on `127.0.0.1:0`); with `--netns` each runs in a namespace of its own behind a veth
//! pair ([`netns`]). The report says which. It is not the default because it adds interfaces
//! to this host (removed at the end) and needs root. Two cores cannot show throughput scaling
//! with nodes: every node, Redis and the clients share them.

mod netns;
mod peers;
mod redis;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

pub use redis::{RedisError, RedisServer};

use crate::report::{Report, Row};
use crate::signaling::{load_average, tls_config};
use crate::{stats, Common, Percentiles, ServerProcess};
use peers::{Node, Pids, Plan};
use signalbox::config::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Signalbox nodes sharing the Redis server: 2 or 3.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub nodes: u8,
    /// Rooms of two (clients = twice this).
    #[arg(long, default_value_t = 500)]
    pub pairs: usize,
    /// Offered signal rate over all clients, signals per second.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// How long the signals run per placement and round.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes of padding in each signal's data (a small ICE candidate is about 200).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Pairs connecting at the same time.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// The Redis server program (Debian package `redis-server`).
    #[arg(long, default_value = "redis-server", value_name = "PATH")]
    pub redis: PathBuf,
    /// Measure one placement only (default: each in turn within every round).
    #[arg(long, value_enum)]
    pub only: Option<Mode>,
    /// Run each node in a network namespace of its own, linked to this host by a veth pair
    /// (needs root and `ip` from iproute2); default: every node on this host's loopback.
    #[arg(long)]
    pub netns: bool,
}

/// The bounds of the arguments: every run ends by itself, in minutes.
const MAX_PAIRS: usize = 20_000;
const MAX_DURATION: Duration = Duration::from_secs(300);
const MAX_ROUNDS: usize = 20;

impl Args {
    fn validate(&self, rounds: usize) -> anyhow::Result<()> {
        if !(1..=MAX_PAIRS).contains(&self.pairs) {
            bail!("--pairs must be 1 to {MAX_PAIRS}");
        }
        if !(1..=1_000_000).contains(&self.rate) {
            bail!("--rate must be 1 to 1000000 signals per second");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!("--duration must be more than 0 and at most {MAX_DURATION:?}");
        }
        if !(1..=MAX_ROUNDS).contains(&rounds) {
            bail!("--rounds must be 1 to {MAX_ROUNDS}");
        }
        if self.payload > 16_000 {
            bail!("--payload must be at most 16000 bytes");
        }
        if self.only == Some(Mode::OffHome) && self.nodes < 3 {
            bail!("--only off-home needs --nodes 3: the home is a third node");
        }
        Ok(())
    }
}

/// Where the two peers of a room are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The first peer on one node (the room's home), the second on the next one.
    CrossNode,
    /// Three nodes or more: a silent peer joins first on one node (the home), the two peers
    /// that signal join on the next two.
    OffHome,
    /// Both peers on one node: the baseline.
    OneNode,
}

/// The nodes (indices) the clients of one room connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// A silent peer that joins first and so makes its node the home.
    pub anchor: Option<usize>,
    pub first: usize,
    pub second: usize,
}

impl Mode {
    /// The placements measured with `nodes` nodes, in the order of a round.
    pub fn all(nodes: usize) -> Vec<Mode> {
        let mut modes = vec![Mode::CrossNode];
        if nodes >= 3 {
            modes.push(Mode::OffHome);
        }
        modes.push(Mode::OneNode);
        modes
    }

    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::CrossNode => "cross-node",
            Mode::OffHome => "off-home",
            Mode::OneNode => "one-node",
        }
    }

    /// Short form for room names.
    pub fn tag(self) -> &'static str {
        match self {
            Mode::CrossNode => "x",
            Mode::OffHome => "h",
            Mode::OneNode => "o",
        }
    }

    /// Where the clients of room `pair` go: rooms take turns over the nodes as their homes.
    pub fn placement(self, pair: usize, nodes: usize) -> Placement {
        let nodes = nodes.max(1);
        let home = pair % nodes;
        let next = |k: usize| (home + k) % nodes;
        match self {
            Mode::CrossNode => Placement {
                anchor: None,
                first: home,
                second: next(1),
            },
            Mode::OffHome => Placement {
                anchor: Some(home),
                first: next(1),
                second: next(2),
            },
            Mode::OneNode => Placement {
                anchor: None,
                first: home,
                second: home,
            },
        }
    }
}

/// Period and phase of client `k` of `clients` that send `rate` signals per second together:
/// each sends every `clients / rate` seconds, client k offset by k/clients of that period.
pub fn schedule(rate: u64, clients: usize, k: usize) -> (Duration, Duration) {
    let clients = clients.max(1);
    let period = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    (period, period.mul_f64(k as f64 / clients as f64))
}

/// The config of node `index` (its name is `n{index + 1}`) beyond what [`ServerProcess`]
/// writes: room limits that let the benchmark's clients, all from one address, in; TURN on a
/// free port of `ip` with its own relay range and the shared secret; the cluster.
pub fn node_config(
    index: usize,
    ip: Ipv4Addr,
    redis_url: &str,
    clients: usize,
    rate: u64,
) -> String {
    let per_client = rate.div_ceil(clients.max(1) as u64);
    let message_rate = (4 * per_client).max(50);
    let relay_lo = 23_000 + 1_000 * index;
    format!(
        "[rooms]\nmax_connections = {conns}\nmax_connections_per_ip = {conns}\n\
         join_timeout = \"10m\"\njoin_rate_per_ip = 1000000\noutbound_queue = 256\n\
         rate_per_second = {message_rate}\nrate_burst = {burst}\n\n\
         [turn]\nlisten = [\"{ip}:0\"]\nlisten_tcp = []\nlisten_tls = []\n\
         relay_ip = \"{ip}\"\nrelay_ports = \"{relay_lo}-{relay_hi}\"\nworkers = 1\n\
         secrets = [\"{SECRET}\"]\n\n\
         [cluster]\nredis_url = \"{redis_url}\"\nnode_name = \"n{name}\"\nnode_timeout = \"3s\"\n",
        conns = clients + 64,
        burst = message_rate.max(200),
        relay_hi = relay_lo + 999,
        name = index + 1,
    )
}

/// The `[turn] secrets` entry every node shares.
const SECRET: &str = "signalbox-bench-cluster-secret";

/// Runs the workload and adds its rows, checks and notes to `report`.
pub fn run(
    args: &Args,
    server: Option<&Path>,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<()> {
    args.validate(common.rounds)?;
    let binary = match server {
        Some(p) => p.to_path_buf(),
        None => crate::sibling_server()?,
    };
    signalbox_udp::socket::raise_nofile_limit();
    let nodes = usize::from(args.nodes);
    let cluster = Cluster::start(args, &binary)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // A heartbeat or two, so that every node has registered and seen the others.
    std::thread::sleep(Duration::from_secs(2));

    let modes: Vec<Mode> = match args.only {
        Some(mode) => vec![mode],
        None => Mode::all(nodes),
    };
    let mut rounds: Vec<Vec<Vec<(&'static str, f64)>>> = vec![Vec::new(); modes.len()];
    for round in 0..common.rounds {
        for (m, &mode) in modes.iter().enumerate() {
            let plan = Plan {
                mode,
                round,
                pairs: args.pairs,
                rate: args.rate,
                duration: args.duration,
                payload: args.payload,
                connect_concurrency: args.connect_concurrency,
            };
            let outcome = runtime
                .block_on(peers::measure(&cluster.targets, &cluster.pids, &plan))
                .with_context(|| format!("round {}, {}", round + 1, mode.name()))?;
            let f = figures(&outcome, args);
            eprintln!(
                "cluster: round {} {}: {}",
                round + 1,
                mode.name(),
                f.iter()
                    .map(|(n, v)| format!("{n} {}", crate::report::fmt_num(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(first) = &outcome.first_refusal {
                eprintln!("cluster: first refused signal: {first}");
            }
            rounds[m].push(f);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    for (m, mode) in modes.into_iter().enumerate() {
        let mut row = Row::new("cluster", mode.name(), 1, Some(args.payload));
        for (name, value) in medians(&rounds[m]) {
            row.set(name, Some(value));
        }
        report.rows.push(row);
    }
    add_checks(report, args, nodes);
    Ok(())
}

/// Redis and the nodes of a run. Fields drop in order: the nodes stop first, then Redis,
/// then the namespaces go.
struct Cluster {
    targets: Vec<Arc<Node>>,
    pids: Pids,
    _servers: Vec<ServerProcess>,
    _redis: RedisServer,
    _namespaces: Option<netns::Namespaces>,
}

impl Cluster {
    /// Called from the main thread, which outlives the processes (see `spawn_tied`).
    fn start(args: &Args, binary: &Path) -> anyhow::Result<Cluster> {
        let nodes = usize::from(args.nodes);
        let clients = 2 * args.pairs;
        // Where each node runs: its namespace, its address, and Redis's address as it sees it.
        let nets = args.netns.then(|| netns::plan(std::process::id(), nodes));
        let namespaces = match &nets {
            Some(nets) => Some(netns::Namespaces::create(nets).context("--netns")?),
            None => None,
        };
        let links: Vec<(Option<&str>, Ipv4Addr, Ipv4Addr)> = match &nets {
            Some(nets) => nets
                .iter()
                .map(|n| (Some(n.ns.as_str()), n.node_ip, n.host_ip))
                .collect(),
            None => vec![(None, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST); nodes],
        };
        let more: Vec<Ipv4Addr> = nets.iter().flatten().map(|n| n.host_ip).collect();
        let redis = RedisServer::start(&args.redis, &more)?;
        eprintln!(
            "cluster: redis-server pid {} on port {}",
            redis.pid(),
            redis.port
        );
        let servers = links
            .iter()
            .enumerate()
            .map(|(i, &(ns, ip, redis_ip))| {
                let config = node_config(i, ip, &redis.url(redis_ip), clients, args.rate);
                ServerProcess::start_in(binary, ip, ns, &config)
                    .with_context(|| format!("node n{}", i + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut targets = Vec::with_capacity(nodes);
        for (i, s) in servers.iter().enumerate() {
            eprintln!("cluster: node n{} pid {} on {}", i + 1, s.pid(), s.https);
            targets.push(Arc::new(Node {
                name: format!("n{}", i + 1),
                url: format!("wss://{}/ws", s.https),
                origin: format!("https://{}", s.https),
                tls: tls_config(&s.cert_path())?,
            }));
        }
        Ok(Cluster {
            targets,
            pids: Pids {
                nodes: servers.iter().map(ServerProcess::pid).collect(),
                redis: redis.pid(),
            },
            _servers: servers,
            _redis: redis,
            _namespaces: namespaces,
        })
    }
}

/// The figures of one measurement, units in the names, in display order.
fn figures(o: &peers::Outcome, args: &Args) -> Vec<(&'static str, f64)> {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut f = vec![("joins_s", args.pairs as f64 / o.join_secs.max(1e-6))];
    if let Some(p) = Percentiles::of(&mut o.join_us.clone()) {
        f.push(("join_p50_ms", ms(p.p50)));
        f.push(("join_p99_ms", ms(p.p99)));
    }
    f.push(("sent", o.sent as f64));
    f.push(("relayed_s", o.received as f64 / args.duration.as_secs_f64()));
    f.push(("loss_pct", 100.0 * stats::loss(o.sent, o.received)));
    if let Some(p) = Percentiles::of(&mut o.latencies_us.clone()) {
        f.push(("p50_ms", ms(p.p50)));
        f.push(("p99_ms", ms(p.p99)));
        f.push(("max_ms", ms(p.max)));
    }
    if o.received > 0 {
        let per_signal = |cpu: f64| cpu * 1e6 / o.received as f64;
        f.push(("cpu_us_sig", per_signal(o.cpu_nodes + o.cpu_redis)));
        f.push(("redis_us_sig", per_signal(o.cpu_redis)));
    }
    f.push(("bench_cpu_s", o.cpu_bench));
    f.push(("refused", o.refused as f64));
    f.push(("conns_lost", o.connections_lost as f64));
    f
}

/// The median of each figure over the rounds, in the order of its first appearance.
pub fn medians(rounds: &[Vec<(&'static str, f64)>]) -> Vec<(&'static str, f64)> {
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in rounds.iter().flatten() {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let values: Vec<f64> = rounds
                .iter()
                .flatten()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            stats::median(&values).map(|m| (name, m))
        })
        .collect()
}

/// The p99 target of a cross-node signal.
const P99_TARGET_MS: f64 = 10.0;

fn add_checks(report: &mut Report, args: &Args, nodes: usize) {
    let size = Some(args.payload);
    let get = |report: &Report, mode: Mode, name: &str| {
        report
            .find("cluster", mode.name(), 1, size)
            .and_then(|r| r.get(name))
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    for mode in [Mode::CrossNode, Mode::OffHome] {
        let name = mode.name();
        let p99 = get(report, mode, "p99_ms");
        report.check(
            &format!("cluster: {name} signal p99"),
            p99,
            "ms",
            P99_TARGET_MS,
            false,
        );
        report.info(
            &format!("cluster: {name} signal p99 / 10 ms target"),
            p99.map(|p| p / P99_TARGET_MS),
            "share of the target",
        );
        report.check(
            &format!("cluster: {name} signal loss"),
            get(report, mode, "loss_pct"),
            "%",
            0.0,
            false,
        );
        report.info(
            &format!("cluster: CPU per signal, {name} / one node"),
            ratio(
                get(report, mode, "cpu_us_sig"),
                get(report, Mode::OneNode, "cpu_us_sig"),
            ),
            "nodes + redis",
        );
        report.info(
            &format!("cluster: joins/s {name} / one node"),
            ratio(
                get(report, mode, "joins_s"),
                get(report, Mode::OneNode, "joins_s"),
            ),
            "second peers",
        );
    }
    report.notes.push(if args.netns {
        format!(
            "cluster: {nodes} nodes, each in a network namespace of its own linked to this host \
             by a veth pair; redis-server and the clients on this host's ends of the links"
        )
    } else {
        format!(
            "cluster: {nodes} nodes and redis-server run in this host's network namespace, each \
             node on its own loopback ports (no namespace per node; --netns gives each one); \
             clients on loopback too"
        )
    });
    report.notes.push(
        "cluster: two cores cannot show throughput scaling with nodes: every node, Redis and \
         the clients share them; read latency and CPU per signal, not capacity"
            .into(),
    );
    report.notes.push(format!(
        "cluster: {} rooms of two, homes spread over the nodes; cross-node = second peer on \
         the next node; off-home (3 nodes) = a silent third peer on the home, the two that \
         signal on the next two nodes; one-node = both on the room's home; join times: all \
         second peers join at once; CPU = all nodes + redis-server during the signals, per \
         signal delivered",
        args.pairs
    ));
    if let Some(load) = load_average() {
        report.notes.push(format!(
            "cluster: 1-minute load average at the end: {load:.2}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes_of(mode: Mode, pair: usize, nodes: usize) -> (Option<usize>, usize, usize) {
        let p = mode.placement(pair, nodes);
        (p.anchor, p.first, p.second)
    }

    #[test]
    fn cross_node_rooms_put_their_two_peers_on_different_nodes() {
        for nodes in [2, 3] {
            for pair in 0..12 {
                let (anchor, a, b) = nodes_of(Mode::CrossNode, pair, nodes);
                assert_eq!(anchor, None);
                assert_ne!(a, b, "pair {pair} of {nodes} nodes");
                assert!(a < nodes && b < nodes);
            }
        }
        assert_eq!(nodes_of(Mode::CrossNode, 0, 2), (None, 0, 1));
        assert_eq!(nodes_of(Mode::CrossNode, 1, 2), (None, 1, 0));
        assert_eq!(nodes_of(Mode::CrossNode, 2, 3), (None, 2, 0));
    }

    #[test]
    fn off_home_rooms_use_three_different_nodes_with_the_home_first() {
        for pair in 0..9 {
            let (anchor, a, b) = nodes_of(Mode::OffHome, pair, 3);
            let home = anchor.expect("a silent peer holds the home");
            assert_eq!(home, pair % 3);
            assert!(home != a && home != b && a != b, "pair {pair}");
        }
        assert_eq!(Mode::all(2), [Mode::CrossNode, Mode::OneNode]);
        assert_eq!(
            Mode::all(3),
            [Mode::CrossNode, Mode::OffHome, Mode::OneNode]
        );
    }

    #[test]
    fn one_node_rooms_keep_both_peers_on_the_home_and_use_every_node() {
        let homes: Vec<usize> = (0..6)
            .map(|pair| {
                let (anchor, a, b) = nodes_of(Mode::OneNode, pair, 3);
                assert_eq!((anchor, a), (None, b));
                a
            })
            .collect();
        assert_eq!(homes, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn the_clients_schedules_add_up_to_the_offered_rate() {
        let (period, _) = schedule(5_000, 1_000, 0);
        assert_eq!(period, Duration::from_millis(200));
        let phases: Vec<Duration> = (0..1_000).map(|k| schedule(5_000, 1_000, k).1).collect();
        assert_eq!(phases[0], Duration::ZERO);
        assert_eq!(phases[500], Duration::from_millis(100));
        assert!(phases.windows(2).all(|w| w[0] < w[1] && w[1] < period));
        // Degenerate arguments give a schedule, not a division by zero.
        assert_eq!(schedule(0, 0, 0).0, Duration::from_secs(1));
    }

    #[test]
    fn each_node_gets_its_name_relay_range_and_the_shared_cluster() {
        let lo = Ipv4Addr::LOCALHOST;
        let one = node_config(0, lo, "redis://127.0.0.1:7000/0", 1000, 5000);
        let two = node_config(
            1,
            Ipv4Addr::new(10, 200, 2, 2),
            "redis://127.0.0.1:7000/0",
            1000,
            5000,
        );
        assert!(one.contains("node_name = \"n1\"") && two.contains("node_name = \"n2\""));
        assert!(one.contains("relay_ports = \"23000-23999\""));
        assert!(two.contains("relay_ports = \"24000-24999\""));
        assert!(one.contains("listen = [\"127.0.0.1:0\"]"));
        assert!(two.contains("listen = [\"10.200.2.2:0\"]\nlisten_tcp"));
        assert!(two.contains("relay_ip = \"10.200.2.2\""));
        for c in [&one, &two] {
            assert!(c.contains("redis_url = \"redis://127.0.0.1:7000/0\""));
            assert!(c.contains(&format!("secrets = [\"{SECRET}\"]")));
            assert!(c.contains("max_connections_per_ip = 1064"));
        }
        // 5 signals/s per client stay far below the per-connection limit.
        assert!(one.contains("rate_per_second = 50\n"));
        let fast = node_config(0, lo, "redis://x", 10, 5000);
        assert!(fast.contains("rate_per_second = 2000\nrate_burst = 2000\n"));
    }

    #[test]
    fn figures_are_the_medians_over_rounds_in_first_seen_order() {
        let rounds = vec![
            vec![("p99_ms", 3.0), ("loss_pct", 0.0)],
            vec![("p99_ms", 9.0), ("loss_pct", 1.0), ("refused", 2.0)],
            vec![("p99_ms", 4.0), ("loss_pct", 0.0)],
        ];
        assert_eq!(
            medians(&rounds),
            [("p99_ms", 4.0), ("loss_pct", 0.0), ("refused", 2.0)]
        );
        assert!(medians(&[]).is_empty());
    }

    #[test]
    fn arguments_beyond_their_bounds_are_refused() {
        let ok = Args {
            nodes: 2,
            pairs: 500,
            rate: 5_000,
            duration: Duration::from_secs(5),
            payload: 200,
            connect_concurrency: 64,
            redis: PathBuf::from("redis-server"),
            only: None,
            netns: false,
        };
        assert!(ok.validate(3).is_ok());
        assert!(Args {
            pairs: 0,
            ..ok.clone()
        }
        .validate(3)
        .is_err());
        assert!(Args {
            rate: 0,
            ..ok.clone()
        }
        .validate(3)
        .is_err());
        assert!(Args {
            duration: Duration::ZERO,
            ..ok.clone()
        }
        .validate(3)
        .is_err());
        assert!(ok.validate(0).is_err());
        let off_home = Args {
            only: Some(Mode::OffHome),
            ..ok.clone()
        };
        assert!(off_home.validate(3).is_err());
        assert!(Args {
            nodes: 3,
            ..off_home
        }
        .validate(3)
        .is_ok());
    }
}
