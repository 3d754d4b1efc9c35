//! The subcommands' arguments and what each runs; the comparison against the targets.

use clap::Args;

use super::memory;
use super::report::Report;
use super::servers::{self, Kind, Spec};
use super::stun;
use super::turn;
use super::{cores, Against, Common};

/// `turn`: ChannelData through the relay to an echo peer (or between pairs).
#[derive(Debug, Clone, Args)]
pub struct TurnArgs {
    /// Clients, each with its own allocation, permission and channel.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Offered round trips per second over all clients (fixed-rate runs).
    #[arg(long, default_value_t = 30_000.0)]
    pub rate: f64,
    /// Payload bytes per packet; several sizes run one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1200])]
    pub sizes: Vec<usize>,
    /// Data-path worker threads of the servers (coturn: relay threads); a list such as `1,2`
    /// runs each, to compare CPU per packet across worker counts. Default: one per core.
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Pairs of allocations sending to each other's relayed addresses (relay-to-relay).
    #[arg(long)]
    pub pairs: bool,
    /// Also search for the saturated rate (loss > 1 % or fewer answered than offered).
    #[arg(long)]
    pub max_rate: bool,
    /// Skip the fixed-rate runs (with `--max-rate`: only the search).
    #[arg(long)]
    pub no_fixed: bool,
    /// Leave out the reference forwarder (the `limit` rows).
    #[arg(long)]
    pub no_limit: bool,
}

/// `stun`: Binding requests per second answered and CPU per request.
#[derive(Debug, Clone, Args)]
pub struct StunArgs {
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Offered Binding requests per second.
    #[arg(long, default_value_t = 40_000.0)]
    pub rate: f64,
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `limit`: the reference forwarder alone (fixed rate and max-rate search).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    #[arg(long, default_value_t = 30_000.0)]
    pub rate: f64,
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1200])]
    pub sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<usize>,
}

/// `memory`: idle RSS, RSS growth under an Allocate flood, RSS per live allocation.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Live allocations opened to measure RSS per allocation.
    #[arg(long, default_value_t = 10_000)]
    pub allocations: usize,
    /// Unauthenticated Allocate requests in the flood.
    #[arg(long, default_value_t = 400_000)]
    pub flood: u64,
    /// Flood requests per second.
    #[arg(long, default_value_t = 50_000.0)]
    pub flood_rate: f64,
    #[arg(long)]
    pub workers: Option<usize>,
}

fn kinds(common: &Common, limit: bool) -> Vec<Kind> {
    let mut k = vec![Kind::Signalbox];
    if common.against == Some(Against::Coturn) {
        k.push(Kind::Coturn);
    }
    if limit {
        k.push(Kind::Limit);
    }
    k
}

fn worker_list(w: &[usize]) -> Vec<usize> {
    if w.is_empty() {
        vec![cores()]
    } else {
        w.to_vec()
    }
}

pub fn turn(args: &TurnArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let workload = if args.pairs { "turn-pairs" } else { "turn" };
    for workers in worker_list(&args.workers) {
        let kinds = kinds(common, !args.no_limit && !args.pairs);
        eprintln!(
            "{workload}: starting {kinds:?} with {workers} worker(s), {} clients",
            args.clients
        );
        let targets =
            turn::start_targets(&kinds, workers, common.window(), args.clients, args.pairs)?;
        for &size in &args.sizes {
            if !args.no_fixed {
                report
                    .rows
                    .extend(turn::fixed(workload, &targets, common, args.rate, size)?);
            }
            if args.max_rate {
                let name = format!("{workload}-max");
                report
                    .rows
                    .extend(turn::max_rate(&name, &targets, common, size)?);
            }
        }
    }
    Ok(())
}

pub fn limit(args: &LimitArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    for workers in worker_list(&args.workers) {
        let targets = turn::start_targets(
            &[Kind::Limit],
            workers,
            common.window(),
            args.clients,
            false,
        )?;
        for &size in &args.sizes {
            report
                .rows
                .extend(turn::fixed("turn", &targets, common, args.rate, size)?);
            report
                .rows
                .extend(turn::max_rate("turn-max", &targets, common, size)?);
        }
    }
    Ok(())
}

pub fn stun(args: &StunArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let workers = args.workers.unwrap_or_else(cores);
    let servers = kinds(common, false)
        .into_iter()
        .map(|kind| {
            servers::start(Spec {
                kind,
                workers,
                window: common.window(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    report.rows.extend(stun::compare(
        &servers,
        args.clients,
        args.rate,
        common.duration,
        common.rounds,
    )?);
    Ok(())
}

pub fn memory(args: &MemoryArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let workers = args.workers.unwrap_or_else(cores);
    for kind in kinds(common, false) {
        let server = servers::start(Spec {
            kind,
            workers,
            window: common.window(),
        })?;
        eprintln!("memory: {}", server.spec.label());
        let f = memory::measure(&server, args.allocations, args.flood, args.flood_rate)?;
        report.rows.push(memory::row(&server, &f));
    }
    Ok(())
}

/// Everything, with the defaults that the figures in `docs/performance.md` come from.
pub fn all(common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let n = cores();
    let mut workers = vec![1];
    if n > 1 {
        workers.push(n);
    }
    let base = TurnArgs {
        clients: 50,
        rate: 30_000.0,
        sizes: vec![100, 1200],
        workers: workers.clone(),
        pairs: false,
        max_rate: false,
        no_fixed: false,
        no_limit: false,
    };
    turn(&base, common, report)?;
    turn(
        &TurnArgs {
            sizes: vec![100],
            workers: vec![1],
            max_rate: true,
            no_fixed: true,
            ..base.clone()
        },
        common,
        report,
    )?;
    turn(
        &TurnArgs {
            sizes: vec![100],
            workers: vec![n],
            pairs: true,
            ..base.clone()
        },
        common,
        report,
    )?;
    stun(
        &StunArgs {
            clients: 50,
            rate: 40_000.0,
            workers: None,
        },
        common,
        report,
    )?;
    memory(
        &MemoryArgs {
            allocations: 10_000,
            flood: 400_000,
            flood_rate: 50_000.0,
            workers: None,
        },
        common,
        report,
    )?;
    Ok(())
}

/// Compares the rows with the targets: signalbox/coturn ratios, shares of the limit, and
/// absolute memory bounds.
pub fn add_checks(report: &mut Report) {
    let rows = report.rows.clone();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    };
    for r in rows.iter().filter(|r| r.server == "signalbox") {
        let same = |server: &str| {
            rows.iter().find(|o| {
                o.workload == r.workload
                    && o.server == server
                    && o.workers == r.workers
                    && o.size == r.size
            })
        };
        let tag = format!(
            "{} w{}{}",
            r.workload,
            r.workers,
            r.size.map(|s| format!(" {s}B")).unwrap_or_default()
        );
        let coturn = same("coturn");
        let limit = same("limit");
        match r.workload.as_str() {
            "turn" => {
                if let Some(c) = coturn {
                    report.check(
                        &format!("{tag}: CPU per relayed packet"),
                        ratio(r.get("cpu_ns_per_pkt"), c.get("cpu_ns_per_pkt")),
                        "signalbox/coturn",
                        0.7,
                        false,
                    );
                    report.check(
                        &format!("{tag}: RTT p99"),
                        ratio(r.get("rtt_p99_us"), c.get("rtt_p99_us")),
                        "signalbox/coturn",
                        1.0,
                        false,
                    );
                }
                report.check(
                    &format!("{tag}: loss"),
                    r.get("loss_pct"),
                    "% (below saturation)",
                    0.0,
                    false,
                );
                if let Some(l) = limit {
                    report.info(
                        &format!("{tag}: limit CPU / signalbox CPU"),
                        ratio(l.get("cpu_ns_per_pkt"), r.get("cpu_ns_per_pkt")),
                        "share of the kernel floor",
                    );
                }
                if r.workers > 1 {
                    if let Some(one) = rows.iter().find(|o| {
                        o.workload == "turn"
                            && o.server == "signalbox"
                            && o.workers == 1
                            && o.size == r.size
                    }) {
                        report.check(
                            &format!("{tag}: CPU per packet vs 1 worker"),
                            ratio(r.get("cpu_ns_per_pkt"), one.get("cpu_ns_per_pkt")),
                            "w2/w1 (within 10 %)",
                            1.1,
                            false,
                        );
                    }
                }
            }
            "turn-max" => {
                if let Some(c) = coturn {
                    report.check(
                        &format!("{tag}: saturated rate"),
                        ratio(r.get("max_rt_s"), c.get("max_rt_s")),
                        "signalbox/coturn",
                        1.3,
                        true,
                    );
                }
                if let Some(l) = limit {
                    report.info(
                        &format!("{tag}: saturated rate / limit"),
                        ratio(r.get("max_rt_s"), l.get("max_rt_s")),
                        "share of the kernel ceiling",
                    );
                }
            }
            "turn-pairs" => {
                let two_hop = rows.iter().find(|o| {
                    o.workload == "turn"
                        && o.server == "coturn"
                        && o.size == r.size
                        && o.workers == r.workers
                });
                if let Some(c) = two_hop {
                    report.check(
                        &format!("{tag}: CPU per delivered packet vs coturn two-hop"),
                        ratio(r.get("cpu_ns_per_pkt"), c.get("cpu_ns_per_pkt")),
                        "signalbox pairs/coturn",
                        0.5,
                        false,
                    );
                }
                if let Some(c) = coturn {
                    report.info(
                        &format!("{tag}: CPU per delivered packet vs coturn pairs"),
                        ratio(r.get("cpu_ns_per_pkt"), c.get("cpu_ns_per_pkt")),
                        "signalbox/coturn",
                    );
                }
            }
            "stun" => {
                if let Some(c) = coturn {
                    report.check(
                        &format!("{tag}: CPU per Binding"),
                        ratio(r.get("cpu_ns_per_req"), c.get("cpu_ns_per_req")),
                        "signalbox/coturn",
                        0.6,
                        false,
                    );
                }
            }
            "memory" => {
                report.check(
                    "memory: RSS per live allocation",
                    r.get("kb_per_allocation"),
                    "KB",
                    5.0,
                    false,
                );
                report.check(
                    "memory: RSS growth in the Allocate flood",
                    r.get("flood_growth_mb"),
                    "MB",
                    2.0,
                    false,
                );
                report.check("memory: idle RSS", r.get("idle_rss_mb"), "MB", 20.0, false);
            }
            _ => {}
        }
    }
}
