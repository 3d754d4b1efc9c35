//! TURN over TCP and TLS (RFC 8656 §3.1, `turn:…?transport=tcp` and `turns:`): the listeners
//! and one tokio task per connection.
//!
//! A task only frames: it cuts the byte stream into messages ([`Deframer`]), hands whole ones
//! to the worker that owns the client ([`Shared::stream_frames`]) and writes what that worker
//! queues for it. The protocol stays in the worker's core, so a stream client gets exactly the
//! answers a UDP client gets, and its relayed transport is UDP like every other.
//!
//! Slow or hostile clients hold little: connections are capped in total and per client address
//! (an IPv4 address or an IPv6 /64, [`crate::caps`]) before anything is read or any TLS work
//! is done. A connection must make a successful Allocate within the handshake timeout of being
//! accepted, and a message it has begun must arrive whole within that timeout too; once
//! allocated, it is closed when no whole message arrives for the idle timeout ([`StreamClock`]).
//! So neither Bindings, nor ChannelData trickled on no channel, nor half a message followed by
//! silence keep an unauthenticated connection. The task learns of the Allocate from the bytes it
//! writes (an Allocate success response), without asking the core. Plain and TLS listeners share
//! one accept path, and TLS is the HTTPS port's own ([`accept_tls`]). Buffers are bounded ([`signalbox_turn_proto::framing::MAX_FRAME`] in,
//! [`crate::turn::relay::streams::OUTBOUND_CAP`] out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::caps::{ConnPermit, ConnectionCaps, Edge};
use crate::config::TurnConfig;
use crate::demux::{Rewind, Stream};
use crate::listener::{accept_tls, TurnStream, TurnStreams};
use crate::proxy::{ProxyProtocol, TrustedProxies};
use crate::turn::relay::streams::Outbound;
use crate::turn::relay::Shared;
use signalbox_turn_proto::allocation::{FiveTuple, Transport};
use signalbox_turn_proto::framing::Deframer;

/// Frames queued towards one connection (each also counts against [`OUTBOUND_CAP`]).
const OUTBOUND_FRAMES: usize = 1024;
/// Bytes read per call; a read never holds more than this beyond a partial message.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes written before one flush. Each message is its own write (one TLS record per
/// message): coturn's client reads only the first message of a TLS record.
const WRITE_BATCH: usize = 64 * 1024;
/// STUN message type of an Allocate success response.
const ALLOCATE_SUCCESS: u16 = 0x0103;

/// The limits of [`Streams`], from `[turn]`.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_total: u32,
    pub max_per_ip: u32,
    /// `[turn] proxy_protocol` on `listen_tcp` / `listen_tls`, and the trusted proxies (exempt
    /// from the per-address cap on every TURN stream, the HTTPS port's included).
    pub proxy: ProxyProtocol,
}

impl StreamLimits {
    pub fn from_config(turn: &TurnConfig, trusted: TrustedProxies) -> StreamLimits {
        StreamLimits {
            proxy: ProxyProtocol::new(turn.proxy_protocol, trusted, "TURN stream"),
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
        let caps = ConnectionCaps::exempting(
            Edge::TurnStream,
            limits.max_total as usize,
            limits.max_per_ip as usize,
            limits.proxy.trusted.clone(),
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
            let Some(permit) = streams.admit(s.peer.ip()) else {
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
            tokio::spawn(streams.clone().serve(s.io, five, permit, s.accepted));
        })
    }

    /// Serves one connection until it closes, times out, breaks framing or the server stops;
    /// then its allocation is deleted. `accepted` starts the handshake deadline.
    pub async fn serve(
        self: Arc<Self>,
        io: Box<dyn Stream>,
        five: FiveTuple,
        permit: ConnPermit,
        accepted: Instant,
    ) {
        let worker = self.shared.worker_for(five.client);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(OUTBOUND_FRAMES);
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
        // Set by the writer when an Allocate success goes out: the client has authenticated.
        let allocated = AtomicBool::new(false);
        let (rd, wr) = tokio::io::split(io);
        let clock = StreamClock::new(&self.limits, accepted);
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            why = self.read_frames(rd, worker, five, clock, &allocated) => {
                debug!(client = %five.client, transport = ?five.transport, "TURN stream ended: {why}");
            }
            _ = write_frames(wr, rx, &queued, &allocated) => {
                debug!(client = %five.client, "TURN stream ended: write failed");
            }
            _ = shutdown.changed() => {}
        }
        self.shared.stream_close(worker, five, id);
        drop(permit);
    }

    /// Reads and deframes until the connection must end; returns why.
    async fn read_frames(
        &self,
        mut rd: ReadHalf<Box<dyn Stream>>,
        worker: usize,
        five: FiveTuple,
        mut clock: StreamClock,
        allocated: &AtomicBool,
    ) -> &'static str {
        let mut d = Deframer::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if allocated.load(Ordering::Relaxed) {
                clock.on_allocated();
            }
            let (deadline, why) = clock.deadline();
            // On a timeout the deadline is looked at again: an Allocate may have succeeded
            // meanwhile (reading is cancel-safe).
            let n = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
                Err(_) if allocated.load(Ordering::Relaxed) && !clock.allocated => continue,
                Err(_) => return why,
                Ok(Ok(0)) => return "closed by the client",
                Ok(Err(_)) => return "read error",
                Ok(Ok(n)) => n,
            };
            let before = d.pending() + n;
            d.push(&chunk[..n]);
            match self.shared.stream_frames(worker, five, &mut d) {
                Ok(0) => {}
                Ok(dropped) => {
                    debug!(client = %five.client, dropped, "TURN worker behind: stream frames dropped");
                }
                Err(_) => return "not STUN or ChannelData",
            }
            clock.on_read(Instant::now(), d.pending() < before, d.pending());
        }
    }

    /// Accepts TURN over TCP, or over TLS when `tls` is given, on `listener` until `stop`
    /// fires (the drain). The caps are checked before anything else, TLS included.
    pub async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        mut stop: watch::Receiver<bool>,
    ) {
        let local = listener.local_addr().ok();
        let transport = match tls {
            Some(_) => Transport::Tls,
            None => Transport::Tcp,
        };
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => { accept_backoff(e).await; continue; }
                },
                _ = stop.changed() => return,
            };
            let Some(permit) = self.admit(peer.ip()) else {
                continue;
            };
            let accepted = Instant::now();
            let (this, tls) = (self.clone(), tls.clone());
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tcp.set_nodelay(true);
                let deadline = accepted + this.limits.handshake_timeout;
                let listener = tcp.local_addr().ok().or(local).unwrap_or(peer);
                // The PROXY header comes before TLS; the caps then count the client it names.
                let Some((peer, first, permit)) = this
                    .limits
                    .proxy
                    .arrive(&mut tcp, peer, deadline, permit)
                    .await
                else {
                    return;
                };
                let tcp = Rewind::new(first, tcp);
                let five = FiveTuple {
                    client: peer,
                    listener,
                    transport,
                };
                let io: Box<dyn Stream> = match &tls {
                    None => Box::new(tcp),
                    Some(acceptor) => match accept_tls(acceptor, tcp, deadline, peer).await {
                        Some(tls) => Box::new(tls),
                        None => return,
                    },
                };
                this.serve(io, five, permit, accepted).await;
            });
        }
    }
}

/// Writes what the worker queues for the connection, a batch per flush, until the queue or
/// the connection closes. Marks `allocated` when an Allocate success response goes out.
async fn write_frames(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: &AtomicUsize,
    allocated: &AtomicBool,
) {
    while let Some(frame) = rx.recv().await {
        let mut written = 0;
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if !allocated.load(Ordering::Relaxed) && is_allocate_success(&frame) {
                allocated.store(true, Ordering::Relaxed);
            }
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
}

/// True for a STUN Allocate success response (message type 0x0103, RFC 8656 §7.3): the only
/// sign the stream task needs that the client authenticated, read off the bytes it writes.
fn is_allocate_success(frame: &[u8]) -> bool {
    frame.len() >= signalbox_stun::HEADER_LEN
        && frame[..2] == ALLOCATE_SUCCESS.to_be_bytes()
        && frame[4..8] == signalbox_stun::MAGIC_COOKIE.to_be_bytes()
}

/// When a stream connection must go, and why. Pure: the time is passed in.
///
/// Until its first successful Allocate a connection has `stream_handshake_timeout` from accept
/// in all (TLS handshake included; Bindings and ChannelData do not extend it); after that it is
/// closed when no whole message arrives for `stream_idle_timeout`. In both phases a message
/// that has begun must be complete within `stream_handshake_timeout`.
#[derive(Debug, Clone, Copy)]
struct StreamClock {
    handshake: Duration,
    idle: Duration,
    accepted: Instant,
    allocated: bool,
    last_message: Instant,
    partial_since: Option<Instant>,
}

impl StreamClock {
    fn new(limits: &StreamLimits, accepted: Instant) -> StreamClock {
        StreamClock {
            handshake: limits.handshake_timeout,
            idle: limits.idle_timeout,
            accepted,
            allocated: false,
            last_message: accepted,
            partial_since: None,
        }
    }

    fn on_allocated(&mut self) {
        self.allocated = true;
    }

    /// Bytes arrived at `now`: `whole` when at least one message completed, `pending` bytes of
    /// a message begun remain.
    fn on_read(&mut self, now: Instant, whole: bool, pending: usize) {
        if whole {
            self.last_message = now;
        }
        self.partial_since = match self.partial_since {
            _ if pending == 0 => None,
            Some(since) if !whole => Some(since),
            _ => Some(now),
        };
    }

    /// The next deadline and what it means when it passes.
    fn deadline(&self) -> (Instant, &'static str) {
        let (mut at, mut why) = if self.allocated {
            (self.last_message + self.idle, "idle timeout")
        } else {
            (
                self.accepted + self.handshake,
                "no successful Allocate within stream_handshake_timeout",
            )
        };
        if let Some(since) = self.partial_since {
            if since + self.handshake < at {
                at = since + self.handshake;
                why = "a message was not finished within stream_handshake_timeout";
            }
        }
        (at, why)
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
        trusted: TrustedProxies,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<StreamService> {
        let limits = StreamLimits::from_config(turn, trusted);
        let streams = Streams::new(shared, limits, shutdown);
        let (mut tcp, mut tls) = (Vec::new(), Vec::new());
        for l in bind_all(&turn.listen_tcp, "listen_tcp").await? {
            let addr = l.local_addr().context("listener has no address")?;
            println!("signalbox: turn-tcp listening on {addr}");
            tcp.push(addr);
            tokio::spawn(streams.clone().accept(l, None, drain.clone()));
        }
        for l in bind_all(&turn.listen_tls, "listen_tls").await? {
            let addr = l.local_addr().context("listener has no address")?;
            println!("signalbox: turn-tls listening on {addr}");
            tls.push(addr);
            tokio::spawn(
                streams
                    .clone()
                    .accept(l, Some(acceptor.clone()), drain.clone()),
            );
        }
        Ok(StreamService { streams, tcp, tls })
    }

    /// The bound TURN-over-TCP listener addresses.
    pub fn tcp_listeners(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// The bound TURN-over-TLS listener addresses.
    pub fn tls_listeners(&self) -> &[SocketAddr] {
        &self.tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(600);

    fn clock(accepted: Instant) -> StreamClock {
        let limits = StreamLimits {
            handshake_timeout: HANDSHAKE,
            idle_timeout: IDLE,
            max_total: 10,
            max_per_ip: 10,
            proxy: ProxyProtocol::default(),
        };
        StreamClock::new(&limits, accepted)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn whole_messages_without_an_allocate_do_not_extend_the_handshake() {
        let t0 = Instant::now();
        let mut c = clock(t0);
        for n in 1..10 {
            // A Binding, or a 4-byte ChannelData, every second.
            c.on_read(t0 + secs(n), true, 0);
            assert_eq!(c.deadline().0, t0 + HANDSHAKE, "after {n} messages");
        }
        assert!(c.deadline().1.contains("no successful Allocate"));
    }

    #[test]
    fn after_an_allocate_the_idle_timeout_runs_from_the_last_whole_message() {
        let t0 = Instant::now();
        let mut c = clock(t0);
        c.on_read(t0 + secs(1), true, 0);
        c.on_allocated();
        assert_eq!(c.deadline(), (t0 + secs(1) + IDLE, "idle timeout"));
        c.on_read(t0 + secs(100), true, 0);
        assert_eq!(c.deadline().0, t0 + secs(100) + IDLE);
    }

    #[test]
    fn a_partial_message_must_finish_within_the_handshake_timeout_in_both_phases() {
        let t0 = Instant::now();
        let mut c = clock(t0);
        c.on_read(t0 + secs(1), true, 0);
        c.on_allocated();
        // Half a message at 50 s; more of it (still not whole) at 55 s changes nothing.
        c.on_read(t0 + secs(50), true, 10);
        c.on_read(t0 + secs(55), false, 30);
        let (at, why) = c.deadline();
        assert_eq!(at, t0 + secs(50) + HANDSHAKE);
        assert!(why.contains("not finished"), "{why}");
        // It completes and a new one begins in the same read: its own clock starts then.
        c.on_read(t0 + secs(58), true, 4);
        assert_eq!(c.deadline().0, t0 + secs(58) + HANDSHAKE);
        c.on_read(t0 + secs(59), true, 0);
        assert_eq!(c.deadline(), (t0 + secs(59) + IDLE, "idle timeout"));
        // Before an Allocate the earlier of the two deadlines counts.
        let mut fresh = clock(t0);
        fresh.on_read(t0 + secs(5), false, 3);
        assert_eq!(fresh.deadline().0, t0 + HANDSHAKE);
    }

    #[test]
    fn only_an_allocate_success_response_counts_as_authenticated() {
        let header = |kind: u16| {
            let mut m = vec![0u8; 20];
            m[..2].copy_from_slice(&kind.to_be_bytes());
            m[4..8].copy_from_slice(&signalbox_stun::MAGIC_COOKIE.to_be_bytes());
            m
        };
        assert!(is_allocate_success(&header(0x0103)));
        for other in [0x0003, 0x0113, 0x0101, 0x0104, 0x0108] {
            assert!(!is_allocate_success(&header(other)), "{other:#06x}");
        }
        let mut no_cookie = header(0x0103);
        no_cookie[4] = 0;
        assert!(!is_allocate_success(&no_cookie));
        assert!(
            !is_allocate_success(&[0x01, 0x03, 0, 0]),
            "ChannelData-sized"
        );
        assert!(!is_allocate_success(&[0x40, 0x00, 0x00, 0x04, 1, 3, 0, 0]));
    }
}
