//! The reference forwarder behind the `limit` figures: the least a UDP relay can do on this
//! kernel. It speaks just enough of the TURN data path to run the same workload as the real
//! servers — ChannelData in from a client, the bare payload out of that client's own relay
//! socket to its peer, and the peer's answers back with a 4-byte ChannelData header — with
//! `recvmmsg`/`sendmmsg`, one worker thread per core on `SO_REUSEPORT` sockets, no locks, and
//! no checks at all. It waits for packets the way signalbox does, with the same batch window
//! (see `signalbox_udp::pace`), so no real server waiting that way can be cheaper: its CPU per
//! packet is the floor and its saturated rate the ceiling.
//!
//! Set-up is one control datagram per client: `PEER a.b.c.d:port`, answered with `OK`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::net::{self, Batch, Epoll};
use signalbox_stun::channel_data;
use signalbox_udp::pace::Pacer;

/// Listener token in a worker's epoll set; relay sockets use their index.
const LISTENER: u64 = u64::MAX;

struct Relay {
    sock: UdpSocket,
    client: libc::sockaddr_in,
    channel: u16,
}

fn key(sa: &libc::sockaddr_in) -> u64 {
    (u64::from(sa.sin_addr.s_addr) << 16) | u64::from(sa.sin_port)
}

/// Runs the forwarder until killed: `workers` threads on `127.0.0.1:port`.
pub fn run(port: u16, workers: usize, window: Duration) -> anyhow::Result<()> {
    net::raise_fd_limit();
    let mut sockets = Vec::new();
    for _ in 0..workers.max(1) {
        sockets.push(net::udp_socket(port, true)?);
    }
    println!("signalbox-bench: forwarder listening on 127.0.0.1:{port}");
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|s| std::thread::spawn(move || worker(s, window)))
        .collect();
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            return Err(e.into());
        }
    }
    Ok(())
}

fn worker(listener: UdpSocket, window: Duration) -> std::io::Result<()> {
    let mut epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd(), LISTENER)?;
    let lfd = listener.as_raw_fd();
    let mut relays: Vec<Relay> = Vec::new();
    let mut by_client: HashMap<u64, usize> = HashMap::new();
    let mut inb = Batch::new();
    let mut out = Batch::new();
    let mut one = Batch::new();
    let mut ready = Vec::new();
    let mut pacer = Pacer::new(window);
    signalbox_udp::pace::tighten_timer_slack(window);
    loop {
        let timeout = pacer
            .next_wait(Instant::now())
            .settle(|| Duration::from_millis(500));
        epoll.wait(timeout, &mut ready);
        pacer.woke(Instant::now(), !ready.is_empty());
        for &t in &ready {
            if t == LISTENER {
                while inb.recv(lfd)? > 0 {
                    pacer.handled(inb.len());
                    for i in 0..inb.len() {
                        let from = inb.raw_addr(i);
                        let data = inb.get(i);
                        if let Some(&r) = by_client.get(&key(&from)) {
                            if let Some((ch, payload)) = channel_data::parse(data) {
                                let relay = &mut relays[r];
                                relay.channel = ch;
                                net::send_connected(relay.sock.as_raw_fd(), payload);
                            }
                        } else if let Some(peer) = control_peer(data) {
                            let sock = net::udp_socket(0, false)?;
                            sock.connect(peer)?;
                            epoll.add(sock.as_raw_fd(), relays.len() as u64)?;
                            by_client.insert(key(&from), relays.len());
                            relays.push(Relay {
                                sock,
                                client: from,
                                channel: 0x4000,
                            });
                            one.push(b"OK", Some(from));
                            one.send(lfd, false);
                        }
                    }
                    if inb.len() < net::BATCH {
                        break;
                    }
                }
            } else if let Some(relay) = relays.get(t as usize) {
                let rfd = relay.sock.as_raw_fd();
                while inb.recv(rfd)? > 0 {
                    pacer.handled(inb.len());
                    for i in 0..inb.len() {
                        let len = inb.get(i).len() as u16;
                        let mut hdr = [0u8; 4];
                        hdr[..2].copy_from_slice(&relay.channel.to_be_bytes());
                        hdr[2..].copy_from_slice(&len.to_be_bytes());
                        if out.is_full() {
                            out.send(lfd, false);
                        }
                        // Prepending in place needs the receive batch; copy the framed
                        // datagram into the outgoing batch instead (one memcpy, as any
                        // relay that batches its sends must do).
                        inb.prepend(i, &hdr);
                        out.push(inb.get(i), Some(relay.client));
                    }
                    if inb.len() < net::BATCH {
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            out.send(lfd, false);
        }
    }
}

/// `PEER a.b.c.d:port` → the peer address.
fn control_peer(data: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(data.strip_prefix(b"PEER ")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Registers one client socket (connected to the forwarder) with `peer`; waits for `OK`.
pub fn register(sock: &UdpSocket, peer: SocketAddr) -> anyhow::Result<()> {
    let msg = format!("PEER {peer}");
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        net::send_connected(sock.as_raw_fd(), msg.as_bytes());
        let deadline = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) if &buf[..n] == b"OK" => return Ok(()),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    anyhow::bail!("the forwarder did not acknowledge a client")
}
