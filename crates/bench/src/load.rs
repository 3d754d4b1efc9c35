//! The load generator and the UDP echo peer, on one thread so they never fight each other
//! for the core the server leaves free.
//!
//! Each client owns a connected socket and a pre-built ChannelData packet; sending stamps the
//! payload (client, sequence number, send time) and makes one `send` call. Answers are read
//! with `recvmmsg` as epoll reports them; the echo peer reads and answers in batches with
//! `recvmmsg`/`sendmmsg`. Round-trip times come from the stamps in the returning payloads, so
//! nothing is kept per packet in flight.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::net::{self, Batch, Epoll};
use super::procstat::{CpuUsage, CpuWindow};
use super::stats::{loss, Samples};
use super::wire::{self, channel_packet, stamp, Kind, Payload};
use signalbox_stun::channel_data;
use signalbox_turn_proto::client::{frame_channel_data, ChannelNumber, Transport};

/// The epoll token of the echo peer's socket; clients use their index.
const PEER: u64 = u64::MAX;
/// At most this many packets are sent per loop turn, so receiving is never starved.
const MAX_BURST: u64 = 256;

/// One benchmark client: a connected socket with its channel.
pub struct LoadClient {
    pub sock: UdpSocket,
    pub channel: ChannelNumber,
}

/// How answers come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every client's channel leads to the echo peer, which sends each payload back.
    Echo,
    /// Clients come in pairs (0↔1, 2↔3, …) whose channels lead to each other's relayed
    /// address; a client answers a ping from its partner with a pong.
    Pairs,
}

/// One measured run at a fixed offered rate.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Round trips per second offered, over all clients.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Bytes of payload per relayed packet.
    pub size: usize,
    /// How long to wait at most for the last answers after sending stopped (the wait ends as
    /// soon as every ping of the window is answered).
    pub drain: Duration,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Pings sent in the measured window.
    pub sent: u64,
    /// Of those, how many came back.
    pub answered: u64,
    /// Datagrams the server relayed during the CPU window (seen at the peer or a client).
    pub relayed: u64,
    pub rtt: Samples,
    /// Length of the sending window.
    pub window: Duration,
    pub server_cpu: Option<CpuUsage>,
    pub harness_cpu: Option<CpuUsage>,
}

impl RunResult {
    pub fn round_trips_per_sec(&self) -> f64 {
        self.answered as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn offered_per_sec(&self) -> f64 {
        self.sent as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn relayed_per_sec(&self) -> f64 {
        self.relayed as f64
            / self
                .server_cpu
                .map(|c| c.wall)
                .unwrap_or(self.window)
                .as_secs_f64()
    }

    pub fn loss(&self) -> f64 {
        loss(self.sent, self.answered)
    }

    /// Server CPU nanoseconds per relayed packet.
    pub fn cpu_per_packet_ns(&self) -> Option<f64> {
        self.server_cpu?.per_event_ns(self.relayed)
    }
}

/// The echo peer's socket, shared by every run of a workload.
pub fn echo_socket() -> std::io::Result<UdpSocket> {
    net::udp_socket(0, false)
}

struct Phase {
    epoch: Instant,
    window_start_ns: u64,
    window_end_ns: u64,
}

/// Runs `spec` with `clients` (and the echo peer socket for [`Shape::Echo`]) against the
/// server with `server_pid`, measuring its CPU time over the window.
pub fn run(
    clients: &[LoadClient],
    echo: Option<&UdpSocket>,
    shape: Shape,
    spec: &RunSpec,
    server_pid: u32,
) -> anyhow::Result<RunResult> {
    let n = clients.len();
    anyhow::ensure!(n > 0, "no clients");
    anyhow::ensure!(
        shape == Shape::Echo || n % 2 == 0,
        "pairs need an even number of clients"
    );
    let mut epoll = Epoll::new()?;
    for (i, c) in clients.iter().enumerate() {
        epoll.add(c.sock.as_raw_fd(), i as u64)?;
    }
    if let Some(e) = echo {
        epoll.add(e.as_raw_fd(), PEER)?;
    }
    let mut pings: Vec<Vec<u8>> = clients
        .iter()
        .map(|c| channel_packet(c.channel, spec.size))
        .collect();
    let mut seqs = vec![0u32; n];
    let fds: Vec<RawFd> = clients.iter().map(|c| c.sock.as_raw_fd()).collect();
    let mut batch = Batch::new();
    let mut out = Batch::new();
    // Reused for every pong, so answering allocates nothing.
    let mut pong = Vec::with_capacity(net::SLOT);
    let mut ready = Vec::new();
    let mut rtt = Samples::with_capacity((spec.rate * spec.duration.as_secs_f64()) as usize + 1024);

    let epoch = Instant::now();
    let phase = Phase {
        epoch,
        window_start_ns: spec.warmup.as_nanos() as u64,
        window_end_ns: (spec.warmup + spec.duration).as_nanos() as u64,
    };
    let stop_ns = phase.window_end_ns + spec.drain.as_nanos() as u64;
    let interval_ns = 1e9 / spec.rate.max(1.0);
    let (mut sent_total, mut sent_in_window, mut answered, mut relayed) = (0u64, 0u64, 0u64, 0u64);
    let mut next_client = 0usize;
    let mut server_window: Option<CpuWindow> = None;
    let mut harness_window: Option<CpuWindow> = None;
    let mut server_cpu = None;
    let mut harness_cpu = None;
    let mut in_window = false;

    loop {
        let now_ns = wire::nanos_since(phase.epoch);
        if !in_window && now_ns >= phase.window_start_ns && server_window.is_none() {
            server_window = Some(CpuWindow::start(server_pid)?);
            harness_window = CpuWindow::start(std::process::id()).ok();
            in_window = true;
            relayed = 0;
        }
        let all_back = now_ns >= phase.window_end_ns && answered >= sent_in_window;
        if now_ns >= stop_ns || all_back {
            if let (Some(w), None) = (&server_window, &server_cpu) {
                server_cpu = Some(w.finish()?);
                harness_cpu = harness_window.and_then(|h| h.finish().ok());
            }
            break;
        }
        // Send what is due.
        if now_ns < phase.window_end_ns {
            let due = ((now_ns as f64 / interval_ns) as u64).saturating_sub(sent_total);
            for _ in 0..due.min(MAX_BURST) {
                let c = next_client;
                next_client = (next_client + 1) % n;
                let t = wire::nanos_since(phase.epoch);
                seqs[c] = seqs[c].wrapping_add(1);
                stamp(
                    &mut pings[c],
                    Payload {
                        kind: Kind::Ping,
                        client: c as u32,
                        seq: seqs[c],
                        sent_ns: t,
                    },
                );
                net::send_connected(fds[c], &pings[c]);
                sent_total += 1;
                if t >= phase.window_start_ns && t < phase.window_end_ns {
                    sent_in_window += 1;
                }
            }
            if due > MAX_BURST {
                // Fell behind: do not try to catch up later in one burst; what was not sent
                // was not offered.
                sent_total += due - MAX_BURST;
            }
        }
        // Wait for answers or the next send.
        let next_due_ns = ((sent_total + 1) as f64 * interval_ns) as u64;
        let wait = if now_ns < phase.window_end_ns {
            next_due_ns
                .saturating_sub(wire::nanos_since(phase.epoch))
                .min(1_000_000)
        } else {
            2_000_000
        };
        epoll.wait(Duration::from_nanos(wait), &mut ready);
        for &t in &ready {
            if t == PEER {
                let Some(e) = echo else { continue };
                let fd = e.as_raw_fd();
                while batch.recv(fd)? > 0 {
                    for i in 0..batch.len() {
                        if in_window {
                            relayed += 1;
                        }
                        let from = batch.raw_addr(i);
                        out.push(batch.get(i), Some(from));
                    }
                    out.send(fd, false);
                    if batch.len() < net::BATCH {
                        break;
                    }
                }
                continue;
            }
            let c = t as usize;
            while batch.recv(fds[c])? > 0 {
                let now = wire::nanos_since(phase.epoch);
                for i in 0..batch.len() {
                    if in_window {
                        relayed += 1;
                    }
                    let Some((_, data)) = channel_data::parse(batch.get(i)) else {
                        continue;
                    };
                    let Some(p) = Payload::read(data) else {
                        continue;
                    };
                    let answer = match (shape, p.kind) {
                        (Shape::Echo, Kind::Ping) | (Shape::Pairs, Kind::Pong) => true,
                        (Shape::Pairs, Kind::Ping) => {
                            // Answer the partner: same payload, marked as a pong, on our channel.
                            frame_channel_data(clients[c].channel, data, Transport::Udp, &mut pong)
                                .expect("invariant: data read from ChannelData fits ChannelData");
                            pong[channel_data::HEADER_LEN + wire::KIND_OFFSET] = Kind::Pong as u8;
                            out.push(&pong, None);
                            false
                        }
                        _ => false,
                    };
                    if answer
                        && p.sent_ns >= phase.window_start_ns
                        && p.sent_ns < phase.window_end_ns
                    {
                        answered += 1;
                        rtt.push_nanos(now.saturating_sub(p.sent_ns));
                    }
                }
                if !out.is_empty() {
                    out.send(fds[c], true);
                }
                if batch.len() < net::BATCH {
                    break;
                }
            }
        }
    }
    for c in clients {
        epoll.delete(c.sock.as_raw_fd());
    }
    if let Some(e) = echo {
        epoll.delete(e.as_raw_fd());
    }
    Ok(RunResult {
        sent: sent_in_window,
        answered: answered.min(sent_in_window),
        relayed,
        rtt,
        window: spec.duration,
        server_cpu,
        harness_cpu,
    })
}

/// The address the echo peer is reachable at.
pub fn echo_addr(echo: &UdpSocket) -> std::io::Result<SocketAddr> {
    echo.local_addr()
}
