//! Setting up the benchmark's TURN clients: Allocate (401 → REST long-term credentials →
//! success), CreatePermission and ChannelBind, each client a conversation on turn-proto's
//! sans-IO [`Client`], plus one driver that runs many of them at once over non-blocking
//! sockets. Also the raw messages of the STUN workload and the Allocate flood, which are
//! deliberately not a client's conversation.
//!
//! Set-up is not what is measured, but opening 10,000 allocations one after the other would
//! take long, so the driver keeps a window of clients in flight; the client retransmits on
//! timeout.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::net::{self, Epoll};
use signalbox_stun::{attr, Class, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::auth::rest_password;
use signalbox_turn_proto::client::{
    self as turn, AllocateOptions, ChannelNumber, Client, Config, Event, InputError, RequestId,
    Transport,
};

/// REST credentials shared by the server and the benchmark.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub secret: String,
}

impl Credentials {
    /// A REST username valid for a day: `EXPIRY:USER`.
    pub fn username(&self, user: &str) -> String {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 86_400;
        format!("{expiry}:{user}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Allocating,
    Allocated,
    Permitting,
    Binding,
    Ready,
    Failed,
}

/// One client's set-up conversation with the server.
pub struct TurnClient {
    turn: Client,
    phase: Phase,
    /// The request the current phase waits for.
    request: Option<RequestId>,
    /// The relayed transport address the server allocated.
    pub relayed: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    channel: ChannelNumber,
    /// Why the last message from the server could not be used (a late duplicate, say).
    last_unusable: Option<InputError>,
    /// Why set-up failed (for the one-line error the benchmark prints).
    pub error: Option<String>,
}

/// First retransmission timeout; doubles per retry.
const RTO: Duration = Duration::from_millis(250);
/// Sends per request, and the last wait in RTOs (8 s after the sixth send).
const MAX_SENDS: u32 = 6;
const LAST_WAIT: u32 = 32;

impl TurnClient {
    pub fn new(id: u32, creds: &Credentials) -> Self {
        let username = creds.username(&format!("bench{id}"));
        let password = rest_password(creds.secret.as_bytes(), &username);
        let credentials = turn::Credentials::new(&username, &password)
            .expect("invariant: `EXPIRY:benchN` is far shorter than a USERNAME may be");
        let config = Config::new(credentials, Transport::Udp, seed(id))
            .with_retransmission(RTO, MAX_SENDS, LAST_WAIT);
        TurnClient {
            turn: Client::new(config),
            phase: Phase::Idle,
            request: None,
            relayed: None,
            peer: None,
            channel: ChannelNumber::MIN,
            last_unusable: None,
            error: None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub fn is_allocated(&self) -> bool {
        self.phase == Phase::Allocated
    }

    pub fn is_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    fn busy(&self) -> bool {
        matches!(
            self.phase,
            Phase::Allocating | Phase::Permitting | Phase::Binding
        )
    }

    /// Begins the Allocate exchange; its requests then come from [`Self::transmit`].
    pub fn start_allocate(&mut self) {
        self.phase = Phase::Allocating;
        self.request = Some(self.turn.allocate(AllocateOptions::default()));
    }

    /// After allocation: a permission for `peer`, then `channel` bound to it.
    pub fn start_bind(&mut self, peer: SocketAddr, channel: ChannelNumber) {
        self.peer = Some(peer);
        self.channel = channel;
        match self.turn.create_permission(&[peer]) {
            Ok(request) => {
                self.phase = Phase::Permitting;
                self.request = Some(request);
            }
            Err(e) => self.fail(format!("CreatePermission: {e}")),
        }
    }

    /// The next request to (re)send now, if one is due: never sent, or its timeout passed.
    pub fn transmit(&mut self, now: Instant) -> Option<&[u8]> {
        self.turn.poll_transmit(now)
    }

    /// Ends requests whose last wait passed.
    pub fn on_timeout(&mut self, now: Instant) {
        self.turn.handle_timeout(now);
        self.advance();
    }

    /// Feeds a datagram from the server; stray or duplicate answers change nothing.
    pub fn on_datagram(&mut self, buf: &[u8]) {
        if let Err(e) = self.turn.handle_input(buf) {
            self.last_unusable = Some(e);
        }
        self.advance();
    }

    /// Moves to the next phase on the outcome of the current request.
    fn advance(&mut self) {
        while let Some(event) = self.turn.poll_event() {
            if Some(event.request()) != self.request {
                continue;
            }
            match (self.phase, event) {
                (Phase::Allocating, Event::Allocated { relayed, .. }) => {
                    self.relayed = Some(relayed);
                    self.phase = Phase::Allocated;
                }
                (Phase::Permitting, Event::PermissionCreated { .. }) => match self.peer {
                    Some(peer) => {
                        self.request = Some(self.turn.channel_bind(self.channel, peer));
                        self.phase = Phase::Binding;
                    }
                    None => self.fail("a permission without a peer".into()),
                },
                (Phase::Binding, Event::ChannelBound { .. }) => self.phase = Phase::Ready,
                (_, Event::Failed { method, error, .. }) => {
                    let mut why = format!("{}: {error}", turn::method_name(method));
                    if let Some(e) = self.last_unusable {
                        why.push_str(&format!(" (an unusable answer: {e})"));
                    }
                    self.fail(why);
                }
                (phase, event) => self.fail(format!("{event:?} while {phase:?}")),
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.phase = Phase::Failed;
        self.request = None;
        self.error = Some(why);
    }
}

/// Transaction-id seed for client `id`: process-random keys (std's `RandomState`) with the id
/// mixed in, so no two clients of a run share ids.
fn seed(id: u32) -> [u8; 32] {
    let keys = RandomState::new();
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
        let mut h = keys.build_hasher();
        h.write_u32(id);
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    seed
}

/// Runs the started conversations of `clients` (each on the connected socket of the same
/// index) until none is busy or `deadline` passes, with at most `window` in flight.
/// Returns how many failed or timed out.
pub fn drive(
    clients: &mut [TurnClient],
    sockets: &[UdpSocket],
    window: usize,
    deadline: Instant,
) -> std::io::Result<usize> {
    let mut epoll = Epoll::new()?;
    let mut registered = vec![false; clients.len()];
    let mut next = 0usize;
    let mut in_flight: Vec<usize> = Vec::new();
    let mut ready = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        while in_flight.len() < window && next < clients.len() {
            if clients[next].busy() {
                epoll.add(sockets[next].as_raw_fd(), next as u64)?;
                registered[next] = true;
                in_flight.push(next);
            }
            next += 1;
        }
        in_flight.retain(|&i| {
            let c = &mut clients[i];
            c.on_timeout(now);
            while let Some(req) = c.transmit(now) {
                net::send_connected(sockets[i].as_raw_fd(), req);
            }
            let keep = c.busy();
            if !keep && registered[i] {
                epoll.delete(sockets[i].as_raw_fd());
                registered[i] = false;
            }
            keep
        });
        if in_flight.is_empty() && next >= clients.len() {
            break;
        }
        if now >= deadline {
            for &i in &in_flight {
                clients[i].fail("set-up deadline passed".into());
            }
            break;
        }
        epoll.wait(Duration::from_millis(20), &mut ready);
        for &t in &ready {
            let i = t as usize;
            while let Ok(n) = sockets[i].recv(&mut buf) {
                clients[i].on_datagram(&buf[..n]);
            }
        }
    }
    for (i, r) in registered.iter().enumerate() {
        if *r {
            epoll.delete(sockets[i].as_raw_fd());
        }
    }
    Ok(clients.iter().filter(|c| c.is_failed()).count())
}

/// Opens `n` loopback sockets connected to `server`.
pub fn connected_sockets(n: usize, server: SocketAddr) -> std::io::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = net::udp_socket(0, false)?;
            s.connect(server)?;
            Ok(s)
        })
        .collect()
}

/// The first failure's reason, for an error message.
pub fn first_error(clients: &[TurnClient]) -> String {
    clients
        .iter()
        .find_map(|c| c.error.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// A Binding request (for the STUN workload), with a transaction id derived from `n`.
pub fn binding_request(n: u64) -> Vec<u8> {
    let mut t = [0u8; 12];
    t[4..12].copy_from_slice(&n.to_be_bytes());
    let mut buf = Vec::with_capacity(20);
    MessageWriter::new(&mut buf, Method::BINDING, Class::Request, TransactionId(t)).finish();
    buf
}

/// An unauthenticated Allocate request (what a flood of strangers sends).
pub fn bare_allocate(n: u64) -> Vec<u8> {
    let mut t = [0u8; 12];
    t[4..12].copy_from_slice(&n.to_be_bytes());
    let mut buf = Vec::with_capacity(28);
    let mut w = MessageWriter::new(&mut buf, Method::ALLOCATE, Class::Request, TransactionId(t));
    w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
    w.finish();
    buf
}

/// Whether a datagram is a Binding success response.
pub fn is_binding_success(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] == 0x01 && buf[1] == 0x01
}
