//! A small TURN client for setting up the benchmark: Allocate (401 → REST long-term
//! credentials → success), CreatePermission and ChannelBind, as a sans-IO state machine per
//! client plus one driver that runs many of them at once over non-blocking sockets.
//!
//! Set-up is not what is measured, but opening 10,000 allocations one after the other would
//! take long, so the driver keeps a window of clients in flight and retransmits on timeout.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::net::{self, Epoll};
use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::auth::{long_term_key, rest_password};

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
    Allocating { authed: bool },
    Allocated,
    Permitting,
    Binding,
    Ready,
    Failed,
}

/// One client's set-up conversation with the server.
pub struct TurnClient {
    id: u32,
    username: String,
    password: String,
    realm: String,
    nonce: Vec<u8>,
    key: [u8; 16],
    phase: Phase,
    tid: TransactionId,
    counter: u32,
    request: Vec<u8>,
    sent_at: Option<Instant>,
    tries: u32,
    /// The relayed transport address the server allocated.
    pub relayed: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    channel: u16,
    /// Why set-up failed (for the one-line error the benchmark prints).
    pub error: Option<String>,
}

/// First retransmission timeout; doubles per retry.
const RTO: Duration = Duration::from_millis(250);
const MAX_TRIES: u32 = 6;

impl TurnClient {
    pub fn new(id: u32, creds: &Credentials) -> Self {
        let username = creds.username(&format!("bench{id}"));
        let password = rest_password(creds.secret.as_bytes(), &username);
        TurnClient {
            id,
            username,
            password,
            realm: String::new(),
            nonce: Vec::new(),
            key: [0; 16],
            phase: Phase::Idle,
            tid: TransactionId([0; 12]),
            counter: 0,
            request: Vec::with_capacity(256),
            sent_at: None,
            tries: 0,
            relayed: None,
            peer: None,
            channel: 0,
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
            Phase::Allocating { .. } | Phase::Permitting | Phase::Binding
        )
    }

    fn next_tid(&mut self) {
        self.counter += 1;
        let mut t = [0u8; 12];
        t[0..4].copy_from_slice(&self.id.to_be_bytes());
        t[4..8].copy_from_slice(&self.counter.to_be_bytes());
        t[8..12].copy_from_slice(&std::process::id().to_be_bytes());
        self.tid = TransactionId(t);
    }

    fn build(&mut self, method: Method) {
        self.next_tid();
        let mut buf = std::mem::take(&mut self.request);
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, self.tid);
        let authed = !matches!(self.phase, Phase::Allocating { authed: false });
        match method {
            Method::ALLOCATE => {
                w.u32(attr::REQUESTED_TRANSPORT, 17 << 24);
            }
            Method::CREATE_PERMISSION => {
                if let Some(p) = self.peer {
                    w.xor_address(attr::XOR_PEER_ADDRESS, p);
                }
            }
            Method::CHANNEL_BIND => {
                w.u32(attr::CHANNEL_NUMBER, (self.channel as u32) << 16);
                if let Some(p) = self.peer {
                    w.xor_address(attr::XOR_PEER_ADDRESS, p);
                }
            }
            _ => {}
        }
        if authed {
            w.attr(attr::USERNAME, self.username.as_bytes());
            w.attr(attr::REALM, self.realm.as_bytes());
            w.attr(attr::NONCE, &self.nonce);
            w.integrity(&self.key);
        }
        w.finish();
        self.request = buf;
        self.tries = 0;
        self.sent_at = None;
    }

    /// Begins the Allocate exchange; the request is then in [`Self::pending`].
    pub fn start_allocate(&mut self) {
        self.phase = Phase::Allocating { authed: false };
        self.build(Method::ALLOCATE);
    }

    /// After allocation: a permission for `peer`, then `channel` bound to it.
    pub fn start_bind(&mut self, peer: SocketAddr, channel: u16) {
        self.peer = Some(peer);
        self.channel = channel;
        self.phase = Phase::Permitting;
        self.build(Method::CREATE_PERMISSION);
    }

    /// The request to (re)send now, if one is due: never sent, or its timeout has passed.
    pub fn pending(&mut self, now: Instant) -> Option<&[u8]> {
        if !self.busy() {
            return None;
        }
        let due = match self.sent_at {
            None => true,
            Some(t) => now >= t + RTO * 2u32.pow(self.tries.min(5)),
        };
        if !due {
            return None;
        }
        if self.sent_at.is_some() {
            self.tries += 1;
            if self.tries >= MAX_TRIES {
                self.fail(format!("no answer after {MAX_TRIES} tries"));
                return None;
            }
        }
        self.sent_at = Some(now);
        Some(&self.request)
    }

    fn fail(&mut self, why: String) {
        self.phase = Phase::Failed;
        self.error = Some(why);
    }

    /// Feeds a datagram from the server; stray or duplicate answers are ignored.
    pub fn on_datagram(&mut self, buf: &[u8]) {
        let Ok(msg) = MessageRef::parse(buf) else {
            return;
        };
        if !self.busy() || msg.transaction_id() != self.tid {
            return;
        }
        match (self.phase, msg.class()) {
            (Phase::Allocating { .. }, Class::Error)
                if matches!(error_code(&msg), Some(401) | Some(438)) =>
            {
                let (Some(realm), Some(nonce)) = (msg.get(attr::REALM), msg.get(attr::NONCE))
                else {
                    return self.fail("401 without REALM/NONCE".into());
                };
                if error_code(&msg) == Some(401)
                    && self.phase == (Phase::Allocating { authed: true })
                {
                    return self.fail("credentials rejected (401 after authenticating)".into());
                }
                self.realm = String::from_utf8_lossy(realm).into_owned();
                self.nonce = nonce.to_vec();
                self.key = long_term_key(&self.username, &self.realm, &self.password);
                self.phase = Phase::Allocating { authed: true };
                self.build(Method::ALLOCATE);
            }
            (Phase::Allocating { .. }, Class::Success) => {
                match msg.xor_address(attr::XOR_RELAYED_ADDRESS) {
                    Some(Ok(a)) => {
                        self.relayed = Some(a);
                        self.phase = Phase::Allocated;
                    }
                    _ => self.fail("Allocate success without XOR-RELAYED-ADDRESS".into()),
                }
            }
            (Phase::Permitting, Class::Success) => {
                self.phase = Phase::Binding;
                self.build(Method::CHANNEL_BIND);
            }
            (Phase::Binding, Class::Success) => self.phase = Phase::Ready,
            (_, Class::Error) => {
                let what = match self.phase {
                    Phase::Allocating { .. } => "Allocate",
                    Phase::Permitting => "CreatePermission",
                    _ => "ChannelBind",
                };
                self.fail(format!("{what} failed with {:?}", error_code(&msg)));
            }
            _ => {}
        }
    }
}

fn error_code(msg: &MessageRef<'_>) -> Option<u16> {
    match msg.error_code() {
        Some(Ok((code, _))) => Some(code),
        _ => None,
    }
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
            if let Some(req) = c.pending(now) {
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
