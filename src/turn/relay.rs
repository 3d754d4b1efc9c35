//! The IO layer of the TURN server: N worker threads, each a single-threaded mio loop that owns
//! one SO_REUSEPORT socket per listener address, the relay sockets of its allocations and one
//! [`Core`] (its share of the allocation table).
//!
//! Why mio rather than a tokio runtime per worker: the loop is one `epoll_wait` followed by
//! recvmmsg/sendmmsg on raw descriptors, with the core's `poll_timeout` as the wait. A tokio
//! runtime would add a waker and a task per socket and hide the batching; here every syscall
//! on the data path is visible and there is no task per allocation. Under load the wait itself
//! is paced ([`pace`]): the worker takes a batch window's worth of packets per wake-up instead
//! of waking for each, and what the relay sockets of one pass received leaves for the clients
//! in one sendmmsg.
//!
//! A worker has four inputs: datagrams on its listener sockets and on its relay sockets,
//! packets other workers forwarded to it, and frames of stream clients. Each goes to the core,
//! and whatever [`Action`] the core returns is carried out in one place, [`dispatch`].
//!
//! The kernel hashes each client 5-tuple to one of the listener sockets, so a client always
//! reaches the same worker, which creates its allocation on a port from its own slice of
//! `relay_ports`. The port therefore says which worker owns a relayed address, so when an
//! allocation's peer is another allocation here, the payload goes to the owning worker in
//! memory: directly inside the core on the same worker, through that worker's inbox otherwise.
//! An inbox is a byte arena under a mutex that the sender locks once per receive batch (not per
//! packet) and the owner swaps out once per wake-up.
//!
//! Known limits: a wildcard listener (`0.0.0.0:3478`) answers from the address the kernel
//! picks, which is right on single-address hosts but not on multi-homed ones (that needs
//! IP_PKTINFO; list the addresses in `[turn] listen` instead). A permission installed for one of
//! our relayed addresses outlives that allocation; after it goes, packets to that port take the
//! kernel path like any other peer.

pub mod streams;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::config::PortRange;
use crate::metrics::{self, METRICS};
use signalbox_turn_proto::allocation::{AllocId, Millis};
use signalbox_turn_proto::counters::Counters;
use signalbox_turn_proto::server::{Action, Core, Payload, RelaySockets, Via, HEADROOM};
use signalbox_udp::batch::{self, RecvBatch, SendBatch, Source, SLOT};

// The receive batch leaves exactly the room the core writes a ChannelData header into.
const _: () = assert!(signalbox_udp::batch::HEADROOM == HEADROOM);
use signalbox_udp::pace::{self, Pacer, Wait};
pub use signalbox_udp::socket::bind_udp;

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const RELAY_BASE: usize = 1 << 20;
/// Receive batches taken from one socket before the others get a turn.
const BATCHES_PER_TURN: usize = 8;
/// Most bytes waiting in one worker's inbox; beyond it forwarded packets are dropped.
const INBOX_CAP: usize = 4 << 20;

/// The server clock: monotonic, anchored at the Unix epoch at start.
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_unix_ms: unix,
        }
    }

    pub fn now(&self) -> Millis {
        self.at(Instant::now())
    }

    /// The server time of an instant the caller already read (one clock read per pass).
    pub fn at(&self, t: Instant) -> Millis {
        Millis(self.start_unix_ms + t.saturating_duration_since(self.start).as_millis() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Packets another worker sent to this worker's relayed addresses.
#[derive(Default)]
pub struct Inbox {
    /// Each entry's bytes are `arena[start - HEADROOM..end]`: headroom, then the payload.
    arena: Vec<u8>,
    entries: Vec<(SocketAddr, SocketAddr, usize, usize)>,
    /// Users whose allocations are to be closed (their owner left), from [`Shared::close_user`].
    close_users: Vec<Box<str>>,
    /// Frames and connection events of stream (TCP/TLS) clients, from their tasks.
    streams: streams::StreamInbox,
}

/// What workers share: their inboxes and wakers, and the stop flag.
pub struct Shared {
    pub inboxes: Vec<Mutex<Inbox>>,
    pub wakers: Vec<Waker>,
    pub stop: AtomicBool,
}

impl Shared {
    /// Asks every worker to close the allocations of `user`; they do so on their next wake-up,
    /// which this triggers. Allocations of one user may sit on any worker.
    pub fn close_user(&self, user: &str) {
        for (inbox, waker) in self.inboxes.iter().zip(&self.wakers) {
            inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .close_users
                .push(user.into());
            let _ = waker.wake();
        }
    }
}

/// One worker's sockets and core.
pub struct Worker {
    pub index: usize,
    pub poll: Poll,
    pub listeners: Vec<(SocketAddr, mio::net::UdpSocket)>,
    pub core: Core,
    pub relays: RelaySet,
    pub clock: Clock,
    /// `[turn] batch_window`: see [`pace`].
    pub batch_window: Duration,
    /// The stream connections whose clients this worker serves.
    pub streams: streams::StreamConns,
}

impl Worker {
    /// The listener socket bound to `addr`.
    fn listener_fd(&self, addr: SocketAddr) -> Option<RawFd> {
        self.listeners
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, s)| s.as_raw_fd())
    }
}

/// The relay sockets of one worker, indexed by allocation slot.
pub struct RelaySet {
    registry: mio::Registry,
    ports: PortRange,
    sockets: Vec<Option<(AllocId, mio::net::UdpSocket)>>,
    seed: u64,
}

impl RelaySet {
    pub fn new(registry: mio::Registry, ports: PortRange, seed: u64) -> RelaySet {
        RelaySet {
            registry,
            ports,
            sockets: Vec::new(),
            seed: seed | 1,
        }
    }

    fn fd(&self, id: AllocId) -> Option<RawFd> {
        match self.sockets.get(id.index as usize) {
            Some(Some((owner, s))) if *owner == id => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: port choice only needs to be spread, not secret.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

impl RelaySockets for RelaySet {
    fn open(&mut self, id: AllocId, ip: IpAddr, even_port: bool) -> io::Result<SocketAddr> {
        let span = u64::from(self.ports.len());
        let start = self.random() % span;
        let mut last_err = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port");
        for k in 0..span.min(64) {
            let port = self.ports.first as u64 + (start + k) % span;
            let port = if even_port { port & !1 } else { port } as u16;
            if !self.ports.contains(port) {
                continue;
            }
            match bind_udp(SocketAddr::new(ip, port), false) {
                Ok(std) => {
                    let local = std.local_addr()?;
                    let mut sock = mio::net::UdpSocket::from_std(std);
                    self.registry.register(
                        &mut sock,
                        Token(RELAY_BASE + id.index as usize),
                        Interest::READABLE,
                    )?;
                    let i = id.index as usize;
                    if self.sockets.len() <= i {
                        self.sockets.resize_with(i + 1, || None);
                    }
                    self.sockets[i] = Some((id, sock));
                    return Ok(local);
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn close(&mut self, id: AllocId) {
        if let Some(entry) = self.sockets.get_mut(id.index as usize) {
            if entry.as_ref().is_some_and(|(owner, _)| *owner == id) {
                if let Some((_, mut s)) = entry.take() {
                    let _ = self.registry.deregister(&mut s);
                }
            }
        }
    }
}

/// Binds `workers` sockets on each listen address (the first decides an ephemeral port, the
/// others join it). Returns, per worker, its (address, socket) list.
pub fn bind_listeners(
    listen: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<Vec<Vec<(SocketAddr, UdpSocket)>>> {
    let mut per_worker: Vec<Vec<(SocketAddr, UdpSocket)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for addr in listen {
        let first = bind_udp(*addr, true)
            .with_context(|| format!("cannot listen on udp {addr} ([turn] listen)"))?;
        let bound = first.local_addr().context("listener has no address")?;
        per_worker[0].push((bound, first));
        for list in per_worker.iter_mut().skip(1) {
            let s = bind_udp(bound, true).with_context(|| {
                format!("cannot share udp {bound} among workers (SO_REUSEPORT)")
            })?;
            list.push((bound, s));
        }
    }
    Ok(per_worker)
}

/// Starts a worker thread running [`run`].
pub fn spawn(worker: Worker, shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("turn-{}", worker.index))
        .spawn(move || run(worker, shared))
}

/// The worker loop: wait for readiness or the next deadline, then drain what is ready in
/// batches. Returns when `shared.stop` is set.
pub fn run(mut w: Worker, shared: Arc<Shared>) {
    let mut events = Events::with_capacity(256);
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::default();
    let mut inbox = Inbox::default();
    let mut outboxes: Vec<Inbox> = (0..shared.inboxes.len())
        .map(|_| Inbox::default())
        .collect();
    let mut ready: Vec<Token> = Vec::new();
    let mut published = Counters::default();
    let mut pacer = Pacer::new(w.batch_window);
    pace::tighten_timer_slack(w.batch_window);
    for (i, (_, s)) in w.listeners.iter_mut().enumerate() {
        if let Err(e) = w
            .poll
            .registry()
            .register(s, Token(LISTENER_BASE + i), Interest::READABLE)
        {
            warn!("turn worker {}: cannot watch a listener: {e}", w.index);
        }
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let before = Instant::now();
        // Sockets left with more to read are read on at once, whatever the pacer says.
        let paced = ready.is_empty();
        let wait = if paced {
            pacer.next_wait(before)
        } else {
            Wait::Poll
        };
        let timeout = wait.settle(|| {
            let now = w.clock.at(before);
            w.core
                .poll_timeout()
                .map(|t| now.until(t) + Duration::from_millis(1))
                .unwrap_or(Duration::from_secs(3600))
        });
        if let Err(e) = w.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!("turn worker {}: poll failed: {e}", w.index);
            }
            continue;
        }
        let woke = Instant::now();
        if paced {
            pacer.woke(woke, !events.is_empty());
        }
        // One wait reports each token once; only tokens carried over from the last pass (a
        // socket with more to read) can repeat.
        let carried = ready.len();
        for e in events.iter() {
            if !ready[..carried].contains(&e.token()) {
                ready.push(e.token());
            }
        }
        let now = w.clock.at(woke);
        w.core.handle_timeout(now, &mut w.relays);
        let tokens = std::mem::take(&mut ready);
        for token in tokens {
            if token == WAKER {
                drain_inbox(
                    &mut w,
                    &shared,
                    &mut inbox,
                    &mut send,
                    &recv,
                    &mut outboxes,
                    now,
                );
                streams::drain_streams(&mut w, &mut inbox, &mut send, &recv, &mut outboxes, now);
                flush_outboxes(&shared, &mut outboxes, w.index);
                continue;
            }
            let (more, n) = drain_socket(&mut w, token, &mut recv, &mut send, &mut outboxes, now);
            pacer.handled(n);
            flush_outboxes(&shared, &mut outboxes, w.index);
            if more {
                ready.push(token);
            }
        }
        send.flush(&recv, &[]);
        recv.clear();
        metrics::publish_turn(&METRICS, &mut published, w.core.counters());
    }
    debug!("turn worker {} stopped", w.index);
}

/// Reads up to [`BATCHES_PER_TURN`] batches from one socket; returns whether it may have more
/// and how many datagrams it read.
///
/// What relay sockets receive goes to clients through the listener, so their datagrams stay in
/// the receive batch across sockets and leave in one sendmmsg per pass (or per full batch).
/// A listener's datagrams go out through as many relay sockets as clients sent them, so a
/// listener starts from an empty batch to read as many as it can at once.
fn drain_socket(
    w: &mut Worker,
    token: Token,
    recv: &mut RecvBatch,
    send: &mut SendBatch,
    outboxes: &mut [Inbox],
    now: Millis,
) -> (bool, usize) {
    let (fd, relay, listener) = if token.0 >= RELAY_BASE {
        let index = token.0 - RELAY_BASE;
        match w.relays.sockets.get(index) {
            Some(Some((id, s))) => (s.as_raw_fd(), Some(*id), None),
            _ => return (false, 0),
        }
    } else {
        match w.listeners.get(token.0 - LISTENER_BASE) {
            Some((addr, s)) => (s.as_raw_fd(), None, Some(*addr)),
            None => return (false, 0),
        }
    };
    let mut total = 0;
    for _ in 0..BATCHES_PER_TURN {
        if listener.is_some() || recv.free() == 0 {
            send.flush(recv, &[]);
            recv.clear();
        }
        let want = recv.free();
        let slots = match recv.recv(fd) {
            Ok(slots) => slots,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (false, total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors surface as ECONNREFUSED etc. on the next read; skip them.
                debug!("turn worker {}: receive error: {e}", w.index);
                continue;
            }
        };
        let n = slots.len();
        total += n;
        for i in slots {
            let Some(from) = recv.from[i] else { continue };
            let len = recv.lens[i];
            let action = match (relay, listener) {
                (Some(id), _) => w.core.handle_peer(id, from, recv.slot_mut(i), len, now),
                (None, Some(l)) => {
                    w.core
                        .handle_client(from, l, recv.slot_mut(i), len, now, &mut w.relays)
                }
                _ => Action::Nothing,
            };
            dispatch(w, action, Input::slot(recv, i), send, outboxes);
        }
        if n < want {
            return (false, total);
        }
    }
    (true, total)
}

/// The buffer the core was handed for one input, which a [`Payload::Input`] of the action it
/// returned points into, and where the send batch finds those bytes again when it flushes.
#[derive(Clone, Copy)]
struct Input<'a> {
    bytes: &'a [u8],
    at: At,
}

#[derive(Clone, Copy)]
enum At {
    /// Receive slot `i` of the pass's [`RecvBatch`].
    Slot(usize),
    /// This offset in the arena of the inbox being drained (flushed with that arena).
    Arena(usize),
}

impl<'a> Input<'a> {
    fn slot(recv: &'a RecvBatch, i: usize) -> Input<'a> {
        Input {
            bytes: recv.slot(i),
            at: At::Slot(i),
        }
    }

    /// `arena[offset..end]`: headroom, then the payload.
    fn arena(arena: &'a [u8], offset: usize, end: usize) -> Input<'a> {
        Input {
            bytes: &arena[offset..end],
            at: At::Arena(offset),
        }
    }

    fn source(&self, start: usize, end: usize) -> Source {
        match self.at {
            At::Slot(i) => Source::Recv(i, start, end),
            At::Arena(offset) => Source::Inbox(offset + start, offset + end),
        }
    }
}

/// Carries out one [`Action`] of the core, whatever input it answered: queues a datagram on
/// a listener or relay socket, hands a message to a stream connection, or stages a packet for
/// the worker that owns its destination.
fn dispatch(
    w: &Worker,
    action: Action,
    input: Input<'_>,
    send: &mut SendBatch,
    outboxes: &mut [Inbox],
) {
    let (via, to, payload) = match action {
        Action::Nothing => return,
        Action::Send { via, to, payload } => (via, to, payload),
        Action::Forward {
            worker,
            from,
            to,
            start,
            end,
        } => {
            let Some(out) = outboxes.get_mut(worker) else {
                return;
            };
            if out.arena.len() + HEADROOM + (end - start) > INBOX_CAP {
                return;
            }
            out.arena.extend_from_slice(&[0; HEADROOM]);
            let s = out.arena.len();
            out.arena.extend_from_slice(&input.bytes[start..end]);
            out.entries.push((from, to, s, out.arena.len()));
            return;
        }
    };
    let fd = match via {
        Via::Relay(id) => w.relays.fd(id),
        Via::Listener(addr) => w.listener_fd(addr),
        Via::Stream(local) => {
            let bytes = match payload {
                Payload::Input { start, end } => &input.bytes[start..end],
                Payload::Scratch => w.core.scratch(),
            };
            w.streams.deliver(to, local, bytes);
            return;
        }
    };
    let Some(fd) = fd else { return };
    match payload {
        Payload::Input { start, end } => send.push(fd, to, input.source(start, end)),
        Payload::Scratch => send.push_copy(fd, to, w.core.scratch()),
    }
}

/// Moves what this worker collected for other workers into their inboxes: one lock and at
/// most one wake-up per target and batch.
fn flush_outboxes(shared: &Shared, outboxes: &mut [Inbox], me: usize) {
    for (target, out) in outboxes.iter_mut().enumerate() {
        if out.entries.is_empty() || target == me {
            continue;
        }
        let was_empty = {
            let mut inbox = shared.inboxes[target]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let was_empty = inbox.entries.is_empty();
            if inbox.arena.len() + out.arena.len() <= INBOX_CAP {
                let base = inbox.arena.len();
                inbox.arena.extend_from_slice(&out.arena);
                for &(from, to, s, e) in &out.entries {
                    inbox.entries.push((from, to, base + s, base + e));
                }
            }
            was_empty
        };
        out.arena.clear();
        out.entries.clear();
        if was_empty {
            let _ = shared.wakers[target].wake();
        }
    }
}

/// Handles packets other workers forwarded to our relayed addresses.
fn drain_inbox(
    w: &mut Worker,
    shared: &Shared,
    inbox: &mut Inbox,
    send: &mut SendBatch,
    recv: &RecvBatch,
    outboxes: &mut [Inbox],
    now: Millis,
) {
    {
        let mut shared_inbox = shared.inboxes[w.index]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *shared_inbox, inbox);
    }
    for user in inbox.close_users.drain(..) {
        w.core.close_user(&user, &mut w.relays);
    }
    for k in 0..inbox.entries.len() {
        let (from, to, start, end) = inbox.entries[k];
        let offset = start - HEADROOM;
        let action =
            w.core
                .handle_forwarded(from, to, &mut inbox.arena[offset..end], end - start, now);
        dispatch(
            w,
            action,
            Input::arena(&inbox.arena, offset, end),
            send,
            outboxes,
        );
        if k % batch::BATCH == batch::BATCH - 1 {
            send.flush(recv, &inbox.arena);
        }
    }
    send.flush(recv, &inbox.arena);
    inbox.arena.clear();
    inbox.entries.clear();
}

/// Size check for the receive slot, kept next to the IO code that relies on it.
const _: () = assert!(SLOT > HEADROOM);
