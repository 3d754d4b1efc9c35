//! Getting a server ready for a data-path workload: clients with allocations, permissions and
//! channels (to the echo peer, or to each other in pairs), or the same shape on the reference
//! forwarder.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::client::{self, Credentials, TurnClient};
use super::forward;
use super::load::{self, LoadClient, Shape};
use super::servers::{Kind, Server, SECRET};
use signalbox_turn_proto::client::ChannelNumber;

/// The channel every client binds (channel numbers are per allocation).
pub const CHANNEL: ChannelNumber = ChannelNumber::MIN;
/// Set-up requests in flight at once.
const WINDOW: usize = 256;

/// A server with its clients and echo peer, ready to run a workload.
pub struct Target {
    pub server: Server,
    pub clients: Vec<LoadClient>,
    pub echo: Option<UdpSocket>,
    pub shape: Shape,
}

pub fn credentials() -> Credentials {
    Credentials {
        secret: SECRET.into(),
    }
}

/// `n` allocations on `server`, each on its own connected socket.
pub fn allocate(
    server: &Server,
    n: usize,
    first_id: u32,
) -> anyhow::Result<(Vec<TurnClient>, Vec<UdpSocket>)> {
    allocate_some(server, n, first_id, 0)
}

/// Like [`allocate`], but up to `tolerated` failures are accepted (the failed clients are
/// marked so; memory figures count only the live allocations).
pub fn allocate_some(
    server: &Server,
    n: usize,
    first_id: u32,
    tolerated: usize,
) -> anyhow::Result<(Vec<TurnClient>, Vec<UdpSocket>)> {
    let creds = credentials();
    let sockets = client::connected_sockets(n, server.addr)?;
    let mut clients: Vec<TurnClient> = (0..n)
        .map(|i| TurnClient::new(first_id + i as u32, &creds))
        .collect();
    for c in &mut clients {
        c.start_allocate();
    }
    let deadline = Instant::now() + Duration::from_secs(30 + n as u64 / 500);
    let failed = client::drive(&mut clients, &sockets, WINDOW, deadline)?;
    if failed > tolerated {
        bail!(
            "{}: {failed} of {n} Allocate requests failed: {}",
            server.spec.label(),
            client::first_error(&clients)
        );
    }
    Ok((clients, sockets))
}

fn bind_all(
    server: &Server,
    clients: &mut [TurnClient],
    sockets: &[UdpSocket],
    peer_of: impl Fn(usize) -> SocketAddr,
) -> anyhow::Result<()> {
    for (i, c) in clients.iter_mut().enumerate() {
        c.start_bind(peer_of(i), CHANNEL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = client::drive(clients, sockets, WINDOW, deadline)?;
    if failed > 0 {
        bail!(
            "{}: {failed} permission/channel set-ups failed: {}",
            server.spec.label(),
            client::first_error(clients)
        );
    }
    Ok(())
}

/// `n` clients whose channels lead to a fresh echo peer.
pub fn echo_target(server: Server, n: usize) -> anyhow::Result<Target> {
    let echo = load::echo_socket()?;
    let peer = echo.local_addr()?;
    let sockets = if server.spec.kind == Kind::Limit {
        let sockets = client::connected_sockets(n, server.addr)?;
        for s in &sockets {
            forward::register(s, peer)?;
        }
        sockets
    } else {
        let (mut clients, sockets) = allocate(&server, n, 0)?;
        bind_all(&server, &mut clients, &sockets, |_| peer)?;
        sockets
    };
    Ok(Target {
        server,
        clients: load_clients(sockets),
        echo: Some(echo),
        shape: Shape::Echo,
    })
}

/// `n` clients (rounded up to even) in pairs, each with a channel to its partner's relayed
/// address: the shape of relayed browser calls.
pub fn pairs_target(server: Server, n: usize) -> anyhow::Result<Target> {
    if server.spec.kind == Kind::Limit {
        bail!("the reference forwarder has no relay-to-relay path");
    }
    let n = n + n % 2;
    let (mut clients, sockets) = allocate(&server, n, 0)?;
    let relayed: Vec<SocketAddr> = clients
        .iter()
        .map(|c| c.relayed.context("allocation without relayed address"))
        .collect::<anyhow::Result<_>>()?;
    bind_all(&server, &mut clients, &sockets, |i| relayed[i ^ 1])?;
    Ok(Target {
        server,
        clients: load_clients(sockets),
        echo: None,
        shape: Shape::Pairs,
    })
}

fn load_clients(sockets: Vec<UdpSocket>) -> Vec<LoadClient> {
    sockets
        .into_iter()
        .map(|sock| LoadClient {
            sock,
            channel: CHANNEL,
        })
        .collect()
}
