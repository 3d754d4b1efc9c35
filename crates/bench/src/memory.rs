//! Memory figures, read as RSS from `/proc/PID/status`: the idle server, the growth under a
//! flood of unauthenticated Allocate requests from many source ports (a server that keeps
//! state per stranger grows here; one with stateless nonces does not), and the cost of each
//! live allocation.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::client;
use super::net;
use super::procstat::read_rss;
use super::report::Row;
use super::servers::Server;
use super::setup;

#[derive(Clone, Copy, Debug)]
pub struct MemoryFigures {
    pub idle_rss: u64,
    pub flood_sent: u64,
    pub flood_answered: u64,
    pub flood_growth: i64,
    pub allocations: usize,
    pub per_allocation: f64,
}

/// Sockets used at once by the flood; each generation of sockets gets fresh source ports.
const FLOOD_SOCKETS: usize = 500;
/// Requests per socket before it is replaced.
const PER_SOCKET: u64 = 8;

fn settle_rss(pid: u32) -> u64 {
    // Let freed memory and late answers settle, then read.
    std::thread::sleep(Duration::from_millis(500));
    read_rss(pid).unwrap_or(0)
}

/// Sends `count` unauthenticated Allocate requests at up to `rate` per second from rotating
/// source ports; returns (sent, answered).
pub fn flood(server: &Server, count: u64, rate: f64) -> anyhow::Result<(u64, u64)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(count as f64 / rate.max(1.0) * 3.0 + 10.0);
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    let mut n = 0u64;
    while sent < count && Instant::now() < deadline {
        let sockets = client::connected_sockets(FLOOD_SOCKETS, server.addr)?;
        for _ in 0..PER_SOCKET {
            for s in &sockets {
                if sent >= count {
                    break;
                }
                // Pace: never ahead of `rate`.
                let ahead = sent as f64 / rate - start.elapsed().as_secs_f64();
                if ahead > 0.0005 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
                n += 1;
                net::send_connected(s.as_raw_fd(), &client::bare_allocate(n));
                sent += 1;
            }
            for s in &sockets {
                while let Ok(len) = s.recv(&mut buf) {
                    if len >= 20 && buf[0] == 0x01 && buf[1] == 0x13 {
                        answered += 1;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        for s in &sockets {
            while let Ok(len) = s.recv(&mut buf) {
                if len >= 20 && buf[0] == 0x01 && buf[1] == 0x13 {
                    answered += 1;
                }
            }
        }
    }
    Ok((sent, answered))
}

/// All memory figures for one server.
pub fn measure(
    server: &Server,
    allocations: usize,
    flood_count: u64,
    flood_rate: f64,
) -> anyhow::Result<MemoryFigures> {
    let idle_rss = settle_rss(server.pid);
    let (flood_sent, flood_answered) = flood(server, flood_count, flood_rate)?;
    let after_flood = settle_rss(server.pid);
    // The client sockets stay open until the reading is taken: a closed socket's port could
    // come back for the next client while the server still holds its allocation (437).
    let before = after_flood;
    let (clients, sockets) =
        setup::allocate_some(server, allocations, 1_000_000, allocations / 100)?;
    let live = clients.iter().filter(|c| c.is_allocated()).count();
    let after = settle_rss(server.pid);
    drop((clients, sockets));
    Ok(MemoryFigures {
        idle_rss,
        flood_sent,
        flood_answered,
        flood_growth: after_flood as i64 - idle_rss as i64,
        allocations: live,
        per_allocation: (after as f64 - before as f64) / live.max(1) as f64,
    })
}

pub fn row(server: &Server, f: &MemoryFigures) -> Row {
    let mut row = Row::new("memory", server.spec.kind.name(), server.spec.workers, None);
    row.set("idle_rss_mb", Some(f.idle_rss as f64 / 1e6));
    row.set("flood_requests", Some(f.flood_sent as f64));
    row.set("flood_answered", Some(f.flood_answered as f64));
    row.set("flood_growth_mb", Some(f.flood_growth as f64 / 1e6));
    row.set("allocations", Some(f.allocations as f64));
    row.set("kb_per_allocation", Some(f.per_allocation / 1e3));
    row
}
