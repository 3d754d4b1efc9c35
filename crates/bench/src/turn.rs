//! The TURN data-path workloads: a fixed offered rate, a search for the saturated rate, and
//! relay-to-relay pairs. Every server of a comparison is started once and the rounds alternate
//! between them, so a noisy neighbour hurts all of them alike; figures are medians of rounds.

use std::time::Duration;

use super::load::{self, RunResult, RunSpec};
use super::report::Row;
use super::servers::{self, Kind, Spec};
use super::setup::{self, Target};
use super::stats::{median, median_opt};
use super::Common;

/// Round trips per second at which a max-rate search starts.
const SEARCH_START: f64 = 20_000.0;
/// Stop refining when the bracket is this tight (relative).
const SEARCH_PRECISION: f64 = 0.04;
const SEARCH_STEPS: usize = 12;

/// Starts the servers of one comparison and sets up `clients` clients on each.
pub fn start_targets(
    kinds: &[Kind],
    workers: usize,
    window: Duration,
    clients: usize,
    pairs: bool,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for &kind in kinds {
        let server = servers::start(Spec {
            kind,
            workers,
            window,
        })?;
        targets.push(if pairs {
            setup::pairs_target(server, clients)?
        } else {
            setup::echo_target(server, clients)?
        });
    }
    Ok(targets)
}

fn run_on(t: &Target, spec: &RunSpec) -> anyhow::Result<RunResult> {
    load::run(&t.clients, t.echo.as_ref(), t.shape, spec, t.server.pid)
}

/// Fixed offered rate: `rounds` alternating rounds per target; one row per target.
pub fn fixed(
    workload: &str,
    targets: &[Target],
    common: &Common,
    rate: f64,
    size: usize,
) -> anyhow::Result<Vec<Row>> {
    let spec = RunSpec {
        rate,
        warmup: Duration::from_millis(300),
        duration: common.duration,
        size,
        drain: Duration::from_secs(1),
    };
    let mut results: Vec<Vec<RunResult>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..common.rounds {
        for (i, t) in targets.iter().enumerate() {
            let r = run_on(t, &spec)?;
            eprintln!(
                "  {workload} {}B round {}: {:<14} {:>8.0} rt/s  loss {:.3}%  cpu {:.0} ns/pkt",
                size,
                round + 1,
                t.server.spec.label(),
                r.round_trips_per_sec(),
                r.loss() * 100.0,
                r.cpu_per_packet_ns().unwrap_or(f64::NAN)
            );
            results[i].push(r);
        }
    }
    Ok(targets
        .iter()
        .zip(results)
        .map(|(t, mut rs)| summarize(workload, t, size, rate, &mut rs))
        .collect())
}

fn summarize(workload: &str, t: &Target, size: usize, rate: f64, rs: &mut [RunResult]) -> Row {
    let spec = t.server.spec;
    let mut row = Row::new(workload, spec.kind.name(), spec.workers, Some(size));
    let m = |f: &dyn Fn(&RunResult) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
    row.set("target_rt_s", Some(rate));
    // What the generator managed to send (below the target only on a starved machine).
    row.set("sent_rt_s", m(&|r| r.offered_per_sec()));
    row.set("rt_s", m(&|r| r.round_trips_per_sec()));
    row.set("relayed_pkt_s", m(&|r| r.relayed_per_sec()));
    row.set("loss_pct", m(&|r| r.loss() * 100.0));
    let pct = |rs: &mut [RunResult], p: f64| {
        median_opt(
            &rs.iter_mut()
                .map(|r| r.rtt.percentile(p).map(|d| d.as_secs_f64() * 1e6))
                .collect::<Vec<_>>(),
        )
    };
    row.set("rtt_p50_us", pct(rs, 50.0));
    row.set("rtt_p99_us", pct(rs, 99.0));
    row.set("rtt_p99.9_us", pct(rs, 99.9));
    row.set(
        "cpu_ns_per_pkt",
        median_opt(&rs.iter().map(|r| r.cpu_per_packet_ns()).collect::<Vec<_>>()),
    );
    row.set(
        "server_cores",
        median_opt(
            &rs.iter()
                .map(|r| r.server_cpu.map(|c| c.cores()))
                .collect::<Vec<_>>(),
        ),
    );
    row.set(
        "bench_cores",
        median_opt(
            &rs.iter()
                .map(|r| r.harness_cpu.map(|c| c.cores()))
                .collect::<Vec<_>>(),
        ),
    );
    row
}

/// One search: raise the offered rate until loss exceeds 1 % or fewer round trips complete
/// than were offered, then bisect; returns the highest passing rate and its run.
fn search(t: &Target, common: &Common, size: usize) -> anyhow::Result<(f64, Option<RunResult>)> {
    let step = |rate: f64| RunSpec {
        rate,
        warmup: Duration::from_millis(200),
        duration: common.search_step,
        size,
        drain: Duration::from_millis(500),
    };
    let (mut lo, mut hi) = (0.0f64, None::<f64>);
    let mut best: Option<RunResult> = None;
    let mut rate = SEARCH_START;
    for _ in 0..SEARCH_STEPS {
        let pass = |r: &RunResult| r.loss() <= 0.01 && r.round_trips_per_sec() >= 0.97 * rate;
        let mut r = run_on(t, &step(rate))?;
        if !pass(&r) {
            // One retry: on a shared machine a single step can lose its core to a neighbour.
            r = run_on(t, &step(rate))?;
        }
        let passed = pass(&r);
        if passed {
            lo = rate;
            if best
                .as_ref()
                .is_none_or(|b| r.round_trips_per_sec() > b.round_trips_per_sec())
            {
                best = Some(r);
            }
        } else {
            hi = Some(rate);
        }
        rate = match hi {
            None => rate * 1.5,
            Some(h) if lo == 0.0 => h / 2.0,
            Some(h) if (h - lo) / lo < SEARCH_PRECISION => break,
            Some(h) => (lo + h) / 2.0,
        };
    }
    let achieved = best
        .as_ref()
        .map(|b| b.round_trips_per_sec())
        .unwrap_or(0.0);
    Ok((achieved, best))
}

/// Max-rate search, alternating targets per round; one row per target.
pub fn max_rate(
    workload: &str,
    targets: &[Target],
    common: &Common,
    size: usize,
) -> anyhow::Result<Vec<Row>> {
    let mut found: Vec<Vec<(f64, Option<RunResult>)>> =
        targets.iter().map(|_| Vec::new()).collect();
    for round in 0..common.rounds {
        for (i, t) in targets.iter().enumerate() {
            let (rate, best) = search(t, common, size)?;
            eprintln!(
                "  {workload} {size}B round {}: {:<14} saturates at {:>8.0} rt/s",
                round + 1,
                t.server.spec.label(),
                rate
            );
            found[i].push((rate, best));
        }
    }
    Ok(targets
        .iter()
        .zip(found)
        .map(|(t, rs)| {
            let spec = t.server.spec;
            let mut row = Row::new(workload, spec.kind.name(), spec.workers, Some(size));
            row.set(
                "max_rt_s",
                median(&rs.iter().map(|(r, _)| *r).collect::<Vec<_>>()),
            );
            let bests: Vec<&RunResult> = rs.iter().filter_map(|(_, b)| b.as_ref()).collect();
            row.set(
                "cpu_ns_per_pkt",
                median_opt(
                    &bests
                        .iter()
                        .map(|b| b.cpu_per_packet_ns())
                        .collect::<Vec<_>>(),
                ),
            );
            row.set(
                "server_cores",
                median_opt(
                    &bests
                        .iter()
                        .map(|b| b.server_cpu.map(|c| c.cores()))
                        .collect::<Vec<_>>(),
                ),
            );
            row.set(
                "bench_cores",
                median_opt(
                    &bests
                        .iter()
                        .map(|b| b.harness_cpu.map(|c| c.cores()))
                        .collect::<Vec<_>>(),
                ),
            );
            row
        })
        .collect())
}
