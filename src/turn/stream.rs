//! TURN over TCP and TLS (RFC 8656 §3.1, `turn:…?transport=tcp` and `turns:`): the listeners
//! and one tokio task per connection.
//!
//! A task only frames: it cuts the byte stream into messages ([`Deframer`]), hands whole ones
//! to the worker that owns the client ([`Shared::stream_frames`]) and writes what that worker
//! queues for it. The protocol stays in the worker's core, so a stream client gets exactly the
//! answers a UDP client gets, and its relayed transport is UDP like every other.
//!
//! Slow or hostile clients hold little: connections are capped in total and per client address
//! (an IPv4 address or an IPv6 /64, [`crate::caps`]), the
//! TLS handshake and first message must finish within the handshake timeout, and a connection
//! that sends no whole message within the idle timeout is closed, so half a message followed by
//! silence cannot keep a slot. Buffers are bounded ([`crate::turn::framing::MAX_FRAME`] in,
//! [`crate::turn::relay::streams::OUTBOUND_CAP`] out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::caps::{ConnPermit, ConnectionCaps, Edge};
use crate::listener::{Stream, TurnStream, TurnStreams};
use crate::turn::allocation::{FiveTuple, Transport};
use crate::turn::config::TurnConfig;
use crate::turn::framing::Deframer;
use crate::turn::relay::streams::Outbound;
use crate::turn::relay::Shared;

/// Frames queued towards one connection (each also counts against [`OUTBOUND_CAP`]).
const OUTBOUND_FRAMES: usize = 1024;
/// Bytes read per call; a read never holds more than this beyond a partial message.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes written before one flush. Each message is its own write (one TLS record per
/// message): coturn's client reads only the first message of a TLS record.
const WRITE_BATCH: usize = 64 * 1024;

/// The limits of [`Streams`], from `[turn]`.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_total: u32,
    pub max_per_ip: u32,
}

impl StreamLimits {
    pub fn from_config(turn: &TurnConfig) -> StreamLimits {
        StreamLimits {
            handshake_timeout: turn.stream_handshake_timeout,
            idle_timeout: turn.stream_idle_timeout,
            max_total: turn.max_stream_connections,
            max_per_ip: turn.max_stream_connections_per_ip,
        }
    }
}

/// Accepts stream connections for the TURN workers, within the limits.
pub struct Streams {
    shared: Arc<Shared>,
    limits: StreamLimits,
    /// Open connections, in total and per client address.
    caps: Arc<ConnectionCaps>,
    next_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl Streams {
    pub fn new(
        shared: Arc<Shared>,
        limits: StreamLimits,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Streams> {
        let caps = ConnectionCaps::new(
            Edge::TurnStream,
            limits.max_total as usize,
            limits.max_per_ip as usize,
        );
        Arc::new(Streams {
            shared,
            limits,
            caps,
            next_id: AtomicU64::new(1),
            shutdown,
        })
    }

    /// A permit for one more connection from `ip`, or `None` at a cap (the connection is then
    /// closed without a word: nothing was read from it yet).
    pub fn admit(&self, ip: std::net::IpAddr) -> Option<ConnPermit> {
        self.caps.acquire(ip).ok()
    }

    /// The one-port handler for [`crate::listener::Listener::turn`].
    pub fn handler(self: &Arc<Self>) -> TurnStreams {
        let streams = self.clone();
        Arc::new(move |s: TurnStream| {
            let Some(slot) = streams.admit(s.peer.ip()) else {
                return;
            };
            let transport = if s.tls {
                Transport::Tls
            } else {
                Transport::Tcp
            };
            let five = FiveTuple {
                client: s.peer,
                listener: s.local,
                transport,
            };
            tokio::spawn(streams.clone().serve(s.io, five, slot));
        })
    }

    /// Serves one connection until it closes, times out, breaks framing or the server stops;
    /// then its allocation is deleted.
    pub async fn serve(self: Arc<Self>, io: Box<dyn Stream>, five: FiveTuple, slot: ConnPermit) {
        let worker = self.shared.worker_for(five.client);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOUND_FRAMES);
        let queued = Arc::new(AtomicUsize::new(0));
        self.shared.stream_open(
            worker,
            five,
            id,
            Outbound {
                tx,
                queued: queued.clone(),
            },
        );
        let (mut rd, mut wr) = tokio::io::split(io);
        let limits = self.limits.clone();
        let shared = self.shared.clone();
        let reader = async move {
            let mut d = Deframer::new();
            let mut chunk = vec![0u8; READ_CHUNK];
            let mut deadline = Instant::now() + limits.handshake_timeout;
            loop {
                let n = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
                    Err(_) if d.pending() > 0 => return "timed out inside a message",
                    Err(_) => return "idle timeout",
                    Ok(Ok(0)) => return "closed by the client",
                    Ok(Err(_)) => return "read error",
                    Ok(Ok(n)) => n,
                };
                let before = d.pending() + n;
                d.push(&chunk[..n]);
                match shared.stream_frames(worker, five, &mut d) {
                    Ok(dropped) => {
                        if dropped > 0 {
                            debug!(client = %five.client, dropped, "TURN worker behind: stream frames dropped");
                        }
                    }
                    Err(_) => return "not STUN or ChannelData",
                }
                if d.pending() < before {
                    // At least one whole message arrived.
                    deadline = Instant::now() + limits.idle_timeout;
                }
            }
        };
        let writer = async move {
            while let Some(frame) = rx.recv().await {
                let mut written = 0;
                let mut next = Some(frame);
                while let Some(frame) = next.take() {
                    if wr.write_all(&frame).await.is_err() {
                        return;
                    }
                    written += frame.len();
                    if written < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if wr.flush().await.is_err() {
                    return;
                }
                queued.fetch_sub(written, Ordering::Relaxed);
            }
        };
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            why = reader => debug!(client = %five.client, transport = ?five.transport, "TURN stream ended: {why}"),
            _ = writer => debug!(client = %five.client, "TURN stream ended: write failed"),
            _ = shutdown.changed() => {}
        }
        self.shared.stream_close(worker, five, id);
        drop(slot);
    }

    /// Accepts TURN over TCP on `listener` until `stop` fires (the drain).
    pub async fn accept_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let local = listener.local_addr().ok();
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => { accept_backoff(e).await; continue; }
                },
                _ = stop.changed() => return,
            };
            let Some(slot) = self.admit(peer.ip()) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let five = FiveTuple {
                client: peer,
                listener: tcp.local_addr().ok().or(local).unwrap_or(peer),
                transport: Transport::Tcp,
            };
            tokio::spawn(self.clone().serve(Box::new(tcp), five, slot));
        }
    }

    /// Accepts TURN over TLS on `listener` until `stop` fires (the drain).
    pub async fn accept_tls(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: TlsAcceptor,
        mut stop: watch::Receiver<bool>,
    ) {
        let local = listener.local_addr().ok();
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => { accept_backoff(e).await; continue; }
                },
                _ = stop.changed() => return,
            };
            let Some(slot) = self.admit(peer.ip()) else {
                continue;
            };
            let this = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let five = FiveTuple {
                    client: peer,
                    listener: tcp.local_addr().ok().or(local).unwrap_or(peer),
                    transport: Transport::Tls,
                };
                let handshake = acceptor.accept(tcp);
                match tokio::time::timeout(this.limits.handshake_timeout, handshake).await {
                    Ok(Ok(tls)) => this.serve(Box::new(tls), five, slot).await,
                    Ok(Err(e)) => debug!(%peer, "TURN TLS handshake failed: {e}"),
                    Err(_) => debug!(%peer, "TURN TLS handshake timed out"),
                }
            });
        }
    }
}

async fn accept_backoff(e: std::io::Error) {
    // Usually EMFILE: wait for descriptors to free up instead of spinning.
    warn!("TURN stream accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds every address of `addrs` (`key` names the config key in errors).
pub async fn bind_all(addrs: &[SocketAddr], key: &str) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on tcp {addr} ([turn] {key})"))?;
        out.push(l);
    }
    Ok(out)
}

/// The running stream listeners.
pub struct StreamService {
    pub streams: Arc<Streams>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl StreamService {
    /// Binds `[turn] listen_tcp` and `listen_tls`, prints their lines and starts accepting until
    /// `drain`; connections are served until `shutdown`.
    /// `acceptor` carries the HTTPS certificate store, so a SIGHUP reload reaches `turns:` too.
    pub async fn start(
        turn: &TurnConfig,
        shared: Arc<Shared>,
        acceptor: TlsAcceptor,
        drain: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<StreamService> {
        let streams = Streams::new(shared, StreamLimits::from_config(turn), shutdown);
        let (mut tcp, mut tls) = (Vec::new(), Vec::new());
        for l in bind_all(&turn.listen_tcp, "listen_tcp").await? {
            let addr = l.local_addr().context("listener has no address")?;
            println!("signalbox: turn-tcp listening on {addr}");
            tcp.push(addr);
            tokio::spawn(streams.clone().accept_tcp(l, drain.clone()));
        }
        for l in bind_all(&turn.listen_tls, "listen_tls").await? {
            let addr = l.local_addr().context("listener has no address")?;
            println!("signalbox: turn-tls listening on {addr}");
            tls.push(addr);
            tokio::spawn(
                streams
                    .clone()
                    .accept_tls(l, acceptor.clone(), drain.clone()),
            );
        }
        Ok(StreamService { streams, tcp, tls })
    }

    /// Names the stream listeners in the ICE server list, and the HTTPS port when one-port
    /// mode serves TURN there.
    pub fn add_endpoints(
        &self,
        endpoints: &mut crate::credentials::ice::IceEndpoints,
        https_port: Option<u16>,
    ) {
        use crate::credentials::ice::TurnTransport;
        for a in &self.tcp {
            endpoints.add_turn(TurnTransport::Tcp, a.port());
        }
        for a in &self.tls {
            endpoints.add_turn(TurnTransport::Tls, a.port());
        }
        if let Some(port) = https_port {
            endpoints.add_turn(TurnTransport::TlsOnHttpsPort, port);
        }
    }
}
