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
//! A worker has four inputs: datagrams on its listener sockets and on its relay sockets, and
//! what other threads leave in its mailboxes (module `mailbox`: packets forwarded by other
//! workers, frames of stream clients, commands). Each goes to the core, and whatever [`Action`]
//! the core returns is carried out in one place, `dispatch`.
//!
//! The kernel hashes each client 5-tuple to one of the listener sockets, so a client always
//! reaches the same worker, which creates its allocation on a port from its own slice of
//! `relay_ports`. The port therefore says which worker owns a relayed address, so when an
//! allocation's peer is another allocation here, the payload goes to the owning worker in
//! memory: directly inside the core on the same worker, through that worker's `Forwarded`
//! mailbox otherwise, which the sender locks once per receive batch (not per packet) and the
//! owner swaps out once per wake-up.
//!
//! Listeners: `[::]:PORT` is two sockets per worker, `[::]` (IPv6 only) and `0.0.0.0` on the
//! same port, so it serves both families as the HTTPS listener does while each socket keeps
//! plain addresses of its own family. A wildcard listener reports each datagram's destination
//! (packet info), and the core sees that address as the listener of the 5-tuple; its answers,
//! and the data relayed to that client, leave from the address the client sent to, which is
//! what a multi-homed host (a floating or additional address) needs.
//!
//! Known limit: a permission installed for one of our relayed addresses outlives that
//! allocation; after it goes, packets to that port take the kernel path like any other peer.

mod mailbox;
pub mod streams;

use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use self::mailbox::{Arena, Command, Commands, Forwarded, Packet};
use self::streams::{Outbound, StreamConns, StreamEvent, StreamMail};
use crate::config::PortRange;
use crate::metrics::{self, METRICS};
use signalbox_stun::channel_data::FrameError;
use signalbox_turn_proto::allocation::{AllocId, FiveTuple, Millis};
use signalbox_turn_proto::counters::Counters;
use signalbox_turn_proto::framing::Deframer;
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

/// What workers share: each worker's mailboxes and waker, and the stop flag.
pub struct Shared {
    /// Indexed by worker; see [`mailbox`] for who sends what.
    mailboxes: Vec<Mailboxes>,
    pub wakers: Vec<Waker>,
    pub stop: AtomicBool,
}

/// The mailboxes of one worker, each under its own lock.
#[derive(Default)]
struct Mailboxes {
    forwarded: Mutex<Forwarded>,
    streams: Mutex<StreamMail>,
    commands: Mutex<Commands>,
}

impl Shared {
    /// Empty mailboxes for as many workers as there are wakers.
    pub fn new(wakers: Vec<Waker>) -> Shared {
        Shared {
            mailboxes: wakers.iter().map(|_| Mailboxes::default()).collect(),
            wakers,
            stop: AtomicBool::new(false),
        }
    }

    /// Asks every worker to close the allocations of `user`; they do so on their next wake-up,
    /// which this triggers. Allocations of one user may sit on any worker.
    pub fn close_user(&self, user: &str) {
        for (worker, mailboxes) in self.mailboxes.iter().enumerate() {
            let pushed = lock(&mailboxes.commands).push(Command::CloseUser(user.into()));
            if let Err(e) = pushed {
                warn!("turn worker {worker}: allocations of {user} stay until they expire: {e}");
            }
            self.wake(worker);
        }
    }

    /// The worker that owns the stream connections of `client`.
    pub fn worker_for(&self, client: SocketAddr) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut h);
        (h.finish() % self.mailboxes.len().max(1) as u64) as usize
    }

    /// A stream connection of a client of `worker` ([`Shared::worker_for`]) opened.
    pub fn stream_open(&self, worker: usize, five: FiveTuple, id: u64, out: Outbound) {
        lock(&self.mailboxes[worker].streams).open(five, id, out);
        self.wake(worker);
    }

    /// A stream connection closed: its allocation goes (RFC 8656 §3.1).
    pub fn stream_close(&self, worker: usize, five: FiveTuple, id: u64) {
        lock(&self.mailboxes[worker].streams).close(five, id);
        self.wake(worker);
    }

    /// Hands every whole frame in `d` to `worker`. Returns how many were dropped because the
    /// worker is behind, or the framing error that ends the connection.
    pub fn stream_frames(
        &self,
        worker: usize,
        five: FiveTuple,
        d: &mut Deframer,
    ) -> Result<usize, FrameError> {
        let handed = lock(&self.mailboxes[worker].streams).frames(five, d);
        if handed.queued > 0 {
            self.wake(worker);
        }
        match handed.error {
            Some(e) => Err(e),
            None => Ok(handed.dropped),
        }
    }

    fn wake(&self, worker: usize) {
        let _ = self.wakers[worker].wake();
    }
}

/// Locks a mailbox, taking a poisoned one over as it is (as the rest of the server does): a
/// worker or connection task that panicked must not stop the others from handing work over.
fn lock<T>(mailbox: &Mutex<T>) -> MutexGuard<'_, T> {
    mailbox.lock().unwrap_or_else(|p| p.into_inner())
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
    pub streams: StreamConns,
}

impl Worker {
    /// The listener socket that serves the local address `addr`, and the source address to
    /// send from: none for a socket bound to `addr` itself, `addr`'s IP for a wildcard socket
    /// of its family and port (`addr` is then where the client sent to, from the packet info).
    fn listener_fd(&self, addr: SocketAddr) -> Option<(RawFd, Option<IpAddr>)> {
        if let Some((_, s)) = self.listeners.iter().find(|(a, _)| *a == addr) {
            return Some((s.as_raw_fd(), None));
        }
        self.listeners
            .iter()
            .find(|(a, _)| {
                a.ip().is_unspecified() && a.port() == addr.port() && a.is_ipv4() == addr.is_ipv4()
            })
            .map(|(_, s)| (s.as_raw_fd(), Some(addr.ip())))
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

/// The bound UDP listeners: one address per `[turn] listen` entry, and per worker its
/// (address, socket) list.
pub struct Listeners {
    /// One per `[turn] listen` entry, with the port bound.
    pub configured: Vec<SocketAddr>,
    /// Every bound address, `0.0.0.0` twins of `[::]` entries included.
    pub bound: Vec<SocketAddr>,
    pub per_worker: Vec<Vec<(SocketAddr, UdpSocket)>>,
}

/// Binds `workers` sockets on each listen address (the first decides an ephemeral port, the
/// others join it). `[::]:PORT` binds `0.0.0.0` on the same port too.
pub fn bind_listeners(listen: &[SocketAddr], workers: usize) -> anyhow::Result<Listeners> {
    let mut out = Listeners {
        configured: Vec::new(),
        bound: Vec::new(),
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
    };
    for addr in listen {
        let first = bind_udp(*addr, true)
            .with_context(|| format!("cannot listen on udp {addr} ([turn] listen)"))?;
        let bound = first.local_addr().context("listener has no address")?;
        out.configured.push(bound);
        let mut shared = vec![(bound, first)];
        if bound.is_ipv6() && bound.ip().is_unspecified() {
            let v4 = SocketAddr::from(([0, 0, 0, 0], bound.port()));
            let s = bind_udp(v4, true).with_context(|| {
                format!("cannot listen on udp {v4}, the IPv4 side of {addr} ([turn] listen)")
            })?;
            shared.push((v4, s));
        }
        for (bound, first) in shared {
            out.bound.push(bound);
            out.per_worker[0].push((bound, first));
            for list in out.per_worker.iter_mut().skip(1) {
                let s = bind_udp(bound, true).with_context(|| {
                    format!("cannot share udp {bound} among workers (SO_REUSEPORT)")
                })?;
                list.push((bound, s));
            }
        }
    }
    Ok(out)
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
    let mut out = Outgoing::new(shared.mailboxes.len());
    let mut taken = Taken::default();
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
                drain_mailboxes(&mut w, &shared, &mut taken, &mut out, &recv, now);
                flush_forwarded(&shared, &mut out.forward, w.index);
                continue;
            }
            let (more, n) = drain_socket(&mut w, token, &mut recv, &mut out, now);
            pacer.handled(n);
            flush_forwarded(&shared, &mut out.forward, w.index);
            if more {
                ready.push(token);
            }
        }
        // Published before the pass's last answers leave, so the client of a lone request finds
        // it counted once answered (answers flushed mid-pass, under load, are counted here).
        metrics::publish_turn(&METRICS, &mut published, w.core.counters());
        out.send.flush(&recv, &[]);
        recv.clear();
    }
    debug!("turn worker {} stopped", w.index);
}

/// What one pass of a worker sends: datagrams for one sendmmsg per socket, and per other
/// worker the packets for its [`Forwarded`] mailbox, moved there in one lock per batch.
struct Outgoing {
    send: SendBatch,
    /// Indexed by the target worker.
    forward: Vec<Forwarded>,
}

impl Outgoing {
    fn new(workers: usize) -> Outgoing {
        Outgoing {
            send: SendBatch::default(),
            forward: (0..workers).map(|_| Forwarded::default()).collect(),
        }
    }
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
    /// This offset in the arena of the mailbox being drained (flushed with that arena).
    Arena(usize),
}

impl<'a> Input<'a> {
    fn slot(recv: &'a RecvBatch, i: usize) -> Input<'a> {
        Input {
            bytes: recv.slot(i),
            at: At::Slot(i),
        }
    }

    fn packet<const CAP: usize>(arena: &'a Arena<CAP>, p: Packet) -> Input<'a> {
        Input {
            bytes: &arena.bytes()[p.offset..p.end],
            at: At::Arena(p.offset),
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
fn dispatch(w: &Worker, action: Action, input: Input<'_>, out: &mut Outgoing) {
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
            // A full batch drops the packet, as a full socket buffer would.
            if let Some(batch) = out.forward.get_mut(worker) {
                batch.push(from, to, &input.bytes[start..end]);
            }
            return;
        }
    };
    let sock = match via {
        Via::Relay(id) => w.relays.fd(id).map(|fd| (fd, None)),
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
    let Some((fd, from)) = sock else { return };
    match payload {
        Payload::Input { start, end } => out.send.push(fd, from, to, input.source(start, end)),
        Payload::Scratch => out.send.push_copy(fd, from, to, w.core.scratch()),
    }
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
    out: &mut Outgoing,
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
            out.send.flush(recv, &[]);
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
                    // On a wildcard socket, the address the client sent to.
                    let local = match recv.to[i] {
                        Some(ip) if l.ip().is_unspecified() => SocketAddr::new(ip, l.port()),
                        _ => l,
                    };
                    w.core
                        .handle_client(from, local, recv.slot_mut(i), len, now, &mut w.relays)
                }
                _ => Action::Nothing,
            };
            dispatch(w, action, Input::slot(recv, i), out);
        }
        if n < want {
            return (false, total);
        }
    }
    (true, total)
}

/// Moves what this worker staged for other workers into their [`Forwarded`] mailboxes: one
/// lock and at most one wake-up per target and batch.
fn flush_forwarded(shared: &Shared, batches: &mut [Forwarded], me: usize) {
    for (target, batch) in batches.iter_mut().enumerate() {
        if batch.is_empty() || target == me {
            continue;
        }
        let was_empty = {
            let mut mailbox = lock(&shared.mailboxes[target].forwarded);
            let was_empty = mailbox.is_empty();
            // A batch that does not fit whole is dropped, as a full socket buffer would.
            mailbox.append(batch);
            was_empty
        };
        batch.clear();
        if was_empty {
            shared.wake(target);
        }
    }
}

/// The mailboxes as this worker last took them: swapped with the shared ones under their
/// lock, so both sides keep the capacity they grew.
#[derive(Default)]
struct Taken {
    commands: Commands,
    forwarded: Forwarded,
    streams: StreamMail,
}

/// Handles what other threads left in this worker's mailboxes: commands first, then packets
/// forwarded by other workers, then stream events.
fn drain_mailboxes(
    w: &mut Worker,
    shared: &Shared,
    taken: &mut Taken,
    out: &mut Outgoing,
    recv: &RecvBatch,
    now: Millis,
) {
    let mailboxes = &shared.mailboxes[w.index];
    std::mem::swap(&mut *lock(&mailboxes.commands), &mut taken.commands);
    std::mem::swap(&mut *lock(&mailboxes.forwarded), &mut taken.forwarded);
    std::mem::swap(&mut *lock(&mailboxes.streams), &mut taken.streams);
    for command in taken.commands.drain() {
        match command {
            Command::CloseUser(user) => {
                w.core.close_user(&user, &mut w.relays);
            }
        }
    }
    drain_forwarded(w, &mut taken.forwarded, out, recv, now);
    drain_streams(w, &mut taken.streams, out, recv, now);
}

/// Relays packets other workers forwarded to our relayed addresses to their clients.
fn drain_forwarded(
    w: &mut Worker,
    forwarded: &mut Forwarded,
    out: &mut Outgoing,
    recv: &RecvBatch,
    now: Millis,
) {
    let (packets, arena) = forwarded.parts_mut();
    for (k, p) in packets.iter().enumerate() {
        let len = p.packet.len();
        let action = w
            .core
            .handle_forwarded(p.from, p.to, arena.packet_mut(p.packet), len, now);
        dispatch(w, action, Input::packet(arena, p.packet), out);
        if k % batch::BATCH == batch::BATCH - 1 {
            out.send.flush(recv, arena.bytes());
        }
    }
    out.send.flush(recv, arena.bytes());
    forwarded.clear();
}

/// Handles what stream connection tasks handed over: opens, frames and closes, in order.
fn drain_streams(
    w: &mut Worker,
    mail: &mut StreamMail,
    out: &mut Outgoing,
    recv: &RecvBatch,
    now: Millis,
) {
    let (events, arena) = mail.parts_mut();
    for (k, event) in events.enumerate() {
        match event {
            StreamEvent::Open {
                five,
                id,
                out: queue,
            } => w.streams.open(&five, id, queue),
            StreamEvent::Close { five, id } => {
                if w.streams.close(&five, id) {
                    w.core.close_client(&five, &mut w.relays);
                }
            }
            StreamEvent::Frame { five, packet } => {
                let len = packet.len();
                let action =
                    w.core
                        .handle_stream(&five, arena.packet_mut(packet), len, now, &mut w.relays);
                dispatch(w, action, Input::packet(arena, packet), out);
            }
        }
        if k % batch::BATCH == batch::BATCH - 1 {
            out.send.flush(recv, arena.bytes());
        }
    }
    out.send.flush(recv, arena.bytes());
    mail.clear();
}

/// Size check for the receive slot, kept next to the IO code that relies on it.
const _: () = assert!(SLOT > HEADROOM);
