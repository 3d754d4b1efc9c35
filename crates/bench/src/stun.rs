//! The STUN workload: Binding requests at a fixed offered rate from many client sockets;
//! answered requests per second and the server's CPU time per answered request.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::client::{self, binding_request, is_binding_success};
use super::net::{self, Batch, Epoll};
use super::procstat::CpuWindow;
use super::report::Row;
use super::servers::Server;
use super::stats::{median, median_opt};

/// What one round measured.
#[derive(Clone, Copy, Debug)]
pub struct StunRound {
    pub sent: u64,
    pub answered: u64,
    pub window: Duration,
    pub cpu_ns_per_request: Option<f64>,
}

/// Sends Binding requests at `rate` per second for `duration` (after a short warm-up) and
/// counts the success responses.
pub fn round(
    server: &Server,
    sockets: &[UdpSocket],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<StunRound> {
    let mut epoll = Epoll::new()?;
    for (i, s) in sockets.iter().enumerate() {
        epoll.add(s.as_raw_fd(), i as u64)?;
    }
    let requests: Vec<Vec<u8>> = (0..sockets.len() as u64).map(binding_request).collect();
    let warmup = Duration::from_millis(200);
    let drain = Duration::from_millis(200);
    let interval = 1.0 / rate.max(1.0);
    let mut batch = Batch::new();
    let mut ready = Vec::new();
    let start = Instant::now();
    let (mut sent, mut sent_in, mut answered) = (0u64, 0u64, 0u64);
    let mut cpu: Option<CpuWindow> = None;
    let mut counted = false;
    let mut usage = None;
    let mut next = 0usize;
    loop {
        let t = start.elapsed();
        if t >= warmup && cpu.is_none() {
            cpu = Some(CpuWindow::start(server.pid)?);
            counted = true;
        }
        if t >= warmup + duration + drain / 2 && usage.is_none() {
            usage = cpu.as_ref().map(|w| w.finish()).transpose()?;
            counted = false;
        }
        if t >= warmup + duration + drain {
            break;
        }
        if t < warmup + duration {
            let due = ((t.as_secs_f64() / interval) as u64).saturating_sub(sent);
            for _ in 0..due.min(256) {
                net::send_connected(sockets[next].as_raw_fd(), &requests[next]);
                next = (next + 1) % sockets.len();
                if counted {
                    sent_in += 1;
                }
            }
            sent += due;
        }
        epoll.wait(Duration::from_micros(200), &mut ready);
        for &tok in &ready {
            let fd = sockets[tok as usize].as_raw_fd();
            while batch.recv(fd)? > 0 {
                if counted {
                    answered += (0..batch.len())
                        .filter(|&i| is_binding_success(batch.get(i)))
                        .count() as u64;
                }
                if batch.len() < net::BATCH {
                    break;
                }
            }
        }
    }
    for s in sockets {
        epoll.delete(s.as_raw_fd());
    }
    Ok(StunRound {
        sent: sent_in,
        answered: answered.min(sent_in),
        window: duration,
        cpu_ns_per_request: usage.and_then(|u| u.per_event_ns(answered)),
    })
}

/// Alternating rounds over `servers`; one row per server.
pub fn compare(
    servers: &[Server],
    clients: usize,
    rate: f64,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<Vec<Row>> {
    let sockets: Vec<Vec<UdpSocket>> = servers
        .iter()
        .map(|s| client::connected_sockets(clients, s.addr))
        .collect::<Result<_, _>>()?;
    let mut results: Vec<Vec<StunRound>> = servers.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for (i, s) in servers.iter().enumerate() {
            let res = round(s, &sockets[i], rate, duration)?;
            eprintln!(
                "  stun round {}: {:<14} {:>8.0} answered/s  cpu {:.0} ns/request",
                r + 1,
                s.spec.label(),
                res.answered as f64 / res.window.as_secs_f64(),
                res.cpu_ns_per_request.unwrap_or(f64::NAN)
            );
            results[i].push(res);
        }
    }
    Ok(servers
        .iter()
        .zip(results)
        .map(|(s, rs)| {
            let mut row = Row::new("stun", s.spec.kind.name(), s.spec.workers, None);
            row.set("target_req_s", Some(rate));
            row.set(
                "sent_req_s",
                median(
                    &rs.iter()
                        .map(|r| r.sent as f64 / r.window.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
            );
            row.set(
                "answered_req_s",
                median(
                    &rs.iter()
                        .map(|r| r.answered as f64 / r.window.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
            );
            row.set(
                "unanswered_pct",
                median(
                    &rs.iter()
                        .map(|r| super::stats::loss(r.sent, r.answered) * 100.0)
                        .collect::<Vec<_>>(),
                ),
            );
            row.set(
                "cpu_ns_per_req",
                median_opt(&rs.iter().map(|r| r.cpu_ns_per_request).collect::<Vec<_>>()),
            );
            row
        })
        .collect())
}
