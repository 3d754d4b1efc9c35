//! The server under test and its surroundings: one or two [`Core`]s sharing quotas, secrets,
//! nonces and the live-relay index as the real workers do, fake relay sockets, stream
//! connections cut by a [`Deframer`] at chosen points, and clients whose requests are built
//! with the codec's writer and signed with real REST credentials.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method};
use signalbox_turn_proto::allocation::{
    AllocationTable, FiveTuple, Limits, Millis, Quotas, Transport,
};
use signalbox_turn_proto::auth::{LivePeers, NonceKey, RateLimiter, Secrets};
use signalbox_turn_proto::framing::{self, Deframer};
use signalbox_turn_proto::policy::PeerPolicy;
use signalbox_turn_proto::server::{Action, Core, CoreConfig, LiveRelays, Payload, RelayPlan, Via};

use super::ops::{Config, Op};
use super::sockets::{Relayed, Sockets};
use super::tables::{
    addr, cidr, expiry, ip, pattern, with_headroom, CredKind, CLIENTS, PEERS, REALM, RELAY_PORTS,
    RELAY_V4, RELAY_V6, SECRETS, STEPS, STREAM_LISTENER, T0, TRANSPORTS, UDP_LISTENER, USERS,
};

/// What the world saw, for the seed checks and for features.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) allocations: u64,
    pub(crate) to_peer: u64,
    pub(crate) to_client_data: u64,
    pub(crate) forwarded: u64,
    pub(crate) stream_frames: u64,
    /// Error codes answered, and 200 for successes.
    pub(crate) codes: BTreeSet<u16>,
}

pub(crate) struct World {
    pub(crate) config: Config,
    pub(crate) cores: Vec<Core>,
    pub(crate) sockets: Vec<Sockets>,
    pub(crate) policy: PeerPolicy,
    pub(crate) plan: RelayPlan,
    pub(crate) nonces: Arc<NonceKey>,
    pub(crate) now: Millis,
    pub(crate) tid: u32,
    pub(crate) history: Vec<Relayed>,
    deframers: HashMap<FiveTuple, Deframer>,
    /// The last message of each client slot, for [`Op::Repeat`].
    last: HashMap<u8, (Vec<u8>, bool)>,
    split: u8,
    pub(crate) stats: Stats,
    /// Outcomes of the current operation, as features.
    pub(crate) outcomes: Vec<u64>,
    /// A readable log of operations and transmissions, when asked for.
    pub(crate) trace: Option<Vec<String>>,
    kind: u8,
}

impl World {
    pub(crate) fn new(config: Config, trace: bool) -> World {
        let workers = config.workers();
        let plan = RelayPlan {
            v4: Some((ip(RELAY_V4.0), ip(RELAY_V4.1))),
            v6: Some((ip(RELAY_V6), ip(RELAY_V6))),
            ports: RELAY_PORTS,
            workers,
            live: LIVE.with(Arc::clone),
        };
        // Fields not named keep their defaults, so the policy can grow rules without this
        // world changing. The relay and listener addresses are documentation addresses, which
        // the built-in list refuses whatever the policy knows about this host.
        #[allow(clippy::needless_update)]
        let policy = PeerPolicy {
            allowed: vec![cidr("10.1.0.0/16"), cidr("fd00:1::/32")],
            denied: vec![cidr("8.8.4.0/24"), cidr("2001:4860:4860::8844")],
            allow_loopback: config.allow_loopback(),
            listeners: vec![
                addr("0.0.0.0:3478"),
                addr("[::]:3478"),
                addr(STREAM_LISTENER),
            ],
            ..PeerPolicy::default()
        };
        let quotas = Arc::new(Quotas::new(config.user_quota(), config.total_quota()));
        let secrets = Arc::new(
            Secrets::new(SECRETS.iter().map(|s| s.as_bytes().to_vec()).collect())
                .expect("two secrets"),
        );
        let nonces = Arc::new(NonceKey::new([7; 32]));
        let unauth = Arc::new(Mutex::new(RateLimiter::with_seed(64, 20, 40, 1)));
        let live_peers = Arc::new(LivePeers::new(64));
        let cores = (0..workers)
            .map(|worker| {
                let table = AllocationTable::new(
                    quotas.clone(),
                    Limits {
                        max_lifetime: Duration::from_secs(3600),
                        strict_expiry: config.strict_expiry(),
                        max_bytes_per_sec: if config.bandwidth_cap() { 2000 } else { 0 },
                    },
                );
                let core_config = CoreConfig {
                    realm: REALM.into(),
                    separator: ':',
                    nonce_lifetime_secs: 600,
                    policy: policy.clone(),
                    relay: plan.clone(),
                    worker,
                    draining: Default::default(),
                    live_peers: live_peers.clone(),
                    allocation_family: Default::default(),
                };
                Core::new(
                    core_config,
                    table,
                    secrets.clone(),
                    nonces.clone(),
                    unauth.clone(),
                )
            })
            .collect();
        let sockets = (0..workers)
            .map(|worker| Sockets {
                ports: plan.ports_of(worker),
                open: Vec::new(),
                opened: Vec::new(),
                misuse: None,
            })
            .collect();
        World {
            config,
            cores,
            sockets,
            policy,
            plan,
            nonces,
            now: T0,
            tid: 0,
            history: Vec::new(),
            deframers: HashMap::new(),
            last: HashMap::new(),
            split: 0,
            stats: Stats::default(),
            outcomes: Vec::new(),
            trace: trace.then(Vec::new),
            kind: 0,
        }
    }

    /// Appends a line to the trace, when there is one.
    pub(crate) fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(line());
        }
    }

    /// The client slot (address and transport), its 5-tuple and the worker that owns it.
    pub(crate) fn client(&self, client: u8) -> (u8, FiveTuple, usize) {
        let slot = client % 18;
        let index = usize::from(slot % 6);
        let transport = TRANSPORTS[usize::from(slot / 6)];
        let listener = match transport {
            Transport::Udp => addr(UDP_LISTENER),
            Transport::Tcp | Transport::Tls => addr(STREAM_LISTENER),
        };
        let five = FiveTuple {
            client: addr(CLIENTS[index]),
            listener,
            transport,
        };
        (slot, five, index % self.cores.len())
    }

    /// A peer address: `PEERS` below 24; above, relayed addresses of allocations made so far
    /// (advertised form, local form, the next port, and the IPv4-mapped spelling).
    pub(crate) fn peer(&self, peer: u8) -> SocketAddr {
        let p = usize::from(peer);
        if p < PEERS.len() || self.history.is_empty() {
            return addr(PEERS[p % PEERS.len()]);
        }
        let k = p - PEERS.len();
        let r = self.history[(k / 4) % self.history.len()];
        match k % 4 {
            0 => r.public,
            1 => r.local,
            2 => SocketAddr::new(r.public.ip(), r.public.port().wrapping_add(1)),
            _ => match r.public.ip() {
                IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), r.public.port()),
                IpAddr::V6(_) => r.public,
            },
        }
    }

    /// Runs one operation; `Err` when an invariant broke on the way.
    pub(crate) fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.kind = op.kind();
        self.note(|| format!("{op:?}"));
        match *op {
            Op::Allocate {
                client,
                cred,
                flags,
                lifetime,
            } => {
                let msg = self.allocate(client, cred, flags, lifetime);
                self.client_sends(client, msg, true)
            }
            Op::Refresh {
                client,
                cred,
                lifetime,
            } => {
                let msg = self.signed(Method::REFRESH, client, cred, |w| match lifetime {
                    255 => {}
                    l => {
                        w.u32(attr::LIFETIME, u32::from(l) * 30);
                    }
                });
                self.client_sends(client, msg, true)
            }
            Op::Permit {
                client,
                cred,
                count,
                peers,
            } => {
                let peers: Vec<SocketAddr> = peers[..usize::from(count % 5)]
                    .iter()
                    .map(|p| self.peer(*p))
                    .collect();
                let msg = self.signed(Method::CREATE_PERMISSION, client, cred, |w| {
                    for p in peers {
                        w.xor_address(attr::XOR_PEER_ADDRESS, p);
                    }
                });
                self.client_sends(client, msg, true)
            }
            Op::Bind {
                client,
                cred,
                channel,
                peer,
            } => {
                let peer = self.peer(peer);
                let msg = self.signed(Method::CHANNEL_BIND, client, cred, |w| {
                    w.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
                        .xor_address(attr::XOR_PEER_ADDRESS, peer);
                });
                self.client_sends(client, msg, true)
            }
            Op::Send {
                client,
                peer,
                len,
                flags,
            } => {
                let msg = self.send_indication(peer, len, flags);
                self.client_sends(client, msg, true)
            }
            Op::ChannelData {
                client,
                channel,
                len,
                padding,
            } => {
                let mut msg = channel.to_be_bytes().to_vec();
                msg.extend_from_slice(&u16::from(len).to_be_bytes());
                msg.extend(pattern(len));
                msg.extend(std::iter::repeat_n(0, usize::from(padding % 4)));
                self.client_sends(client, msg, true)
            }
            Op::FromPeer {
                alloc,
                peer,
                len,
                kind,
            } => self.peer_sends(alloc, peer, len, kind),
            Op::Wait { step } => {
                self.now = self
                    .now
                    .plus(Duration::from_millis(STEPS[usize::from(step % 8)]));
                for w in 0..self.cores.len() {
                    if self.cores[w].poll_timeout().is_some_and(|t| t <= self.now) {
                        self.cores[w].handle_timeout(self.now, &mut self.sockets[w]);
                    }
                }
                Ok(())
            }
            Op::CloseStream { client } => {
                let (_, five, w) = self.client(client);
                if five.transport != Transport::Udp {
                    self.deframers.remove(&five);
                    self.cores[w].close_client(&five, &mut self.sockets[w]);
                }
                Ok(())
            }
            Op::CloseUser { user } => {
                let user = match USERS.get(usize::from(user % 4)) {
                    Some(u) => (*u).to_owned(),
                    None => expiry(CredKind::NoUser).to_string(),
                };
                for w in 0..self.cores.len() {
                    self.cores[w].close_user(&user, &mut self.sockets[w]);
                }
                Ok(())
            }
            Op::Raw { client, ref bytes } => self.client_sends(client, bytes.clone(), false),
            Op::Repeat { client } => {
                let (slot, ..) = self.client(client);
                match self.last.get(&slot).cloned() {
                    Some((msg, framed)) => self.client_sends(client, msg, framed),
                    None => Ok(()),
                }
            }
            Op::Binding { client } => {
                let tid = self.next_tid();
                let mut msg = Vec::new();
                let mut w = MessageWriter::new(&mut msg, Method::BINDING, Class::Request, tid);
                w.fingerprint();
                w.finish();
                self.client_sends(client, msg, true)
            }
            Op::Split { at } => {
                self.split = at;
                Ok(())
            }
        }
    }

    /// Delivers a client's message: a datagram on UDP; on a stream, its frame (or the raw
    /// bytes) in two reads cut at the split point, framed by the connection's [`Deframer`].
    fn client_sends(&mut self, client: u8, msg: Vec<u8>, framed: bool) -> Result<(), String> {
        let (slot, five, w) = self.client(client);
        self.last.insert(slot, (msg.clone(), framed));
        if five.transport == Transport::Udp {
            let mut buf = with_headroom(&msg);
            let action = self.cores[w].handle_client(
                five.client,
                five.listener,
                &mut buf,
                msg.len(),
                self.now,
                &mut self.sockets[w],
            );
            return self.after(w, action, &buf);
        }
        let bytes = if framed {
            framing::stream_frame(&msg)
        } else {
            msg
        };
        let at = usize::from(self.split) % (bytes.len() + 1);
        self.read_stream(w, five, &bytes[..at])?;
        self.read_stream(w, five, &bytes[at..])
    }

    /// One read on a stream connection, and every whole frame it completes.
    fn read_stream(&mut self, w: usize, five: FiveTuple, bytes: &[u8]) -> Result<(), String> {
        self.deframers.entry(five).or_default().push(bytes);
        loop {
            let Some(d) = self.deframers.get_mut(&five) else {
                return Ok(());
            };
            match d.next_frame() {
                Ok(Some(range)) => {
                    let mut buf = with_headroom(&d.bytes()[range.clone()]);
                    self.stats.stream_frames += 1;
                    let action = self.cores[w].handle_stream(
                        &five,
                        &mut buf,
                        range.len(),
                        self.now,
                        &mut self.sockets[w],
                    );
                    self.after(w, action, &buf)?;
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.note(|| format!("  the stream of {} closes: {e}", five.client));
                    self.deframers.remove(&five);
                    self.cores[w].close_client(&five, &mut self.sockets[w]);
                    return Ok(());
                }
            }
        }
    }

    fn peer_sends(&mut self, alloc: u8, peer: u8, len: u8, kind: u8) -> Result<(), String> {
        if self.history.is_empty() {
            return Ok(());
        }
        let r = self.history[usize::from(alloc) % self.history.len()];
        let from = self.peer(peer);
        let payload = match kind % 3 {
            0 => pattern(len),
            1 => {
                let tid = self.next_tid();
                let mut m = Vec::new();
                let mut w = MessageWriter::new(&mut m, Method::BINDING, Class::Request, tid);
                w.attr(attr::SOFTWARE, &pattern(len));
                w.finish();
                m
            }
            _ => {
                let mut m = vec![0x40, 0x00, 0, len];
                m.extend(pattern(len));
                m
            }
        };
        let mut buf = with_headroom(&payload);
        let action =
            self.cores[r.worker].handle_peer(r.id, from, &mut buf, payload.len(), self.now);
        self.after(r.worker, action, &buf)
    }

    /// Checks one transmission of worker `w`, records what it was, and carries a hand-over
    /// to the worker it names.
    fn after(&mut self, w: usize, action: Action, buf: &[u8]) -> Result<(), String> {
        self.learn_relays(w);
        if self.trace.is_some() {
            let line = self.describe(w, action, buf);
            self.note(|| line);
        }
        self.check_action(w, action, buf)?;
        let outcome: u64 = match action {
            Action::Nothing => 0,
            Action::Send {
                via: Via::Relay(_), ..
            } => {
                self.stats.to_peer += 1;
                1
            }
            Action::Send {
                payload: Payload::Scratch,
                ..
            } => {
                let msg = MessageRef::parse(self.cores[w].scratch())
                    .map_err(|e| format!("malformed: an answer does not parse: {e}"))?;
                let code = match (msg.class(), msg.error_code()) {
                    (Class::Error, Some(Ok((code, _)))) => code,
                    (Class::Success, _) => 200,
                    _ => 0,
                };
                if code != 0 {
                    self.stats.codes.insert(code);
                }
                if code == 200 && msg.method() == Method::ALLOCATE {
                    self.stats.allocations += 1;
                }
                if msg.method() == Method::DATA {
                    self.stats.to_client_data += 1;
                }
                1000 + u64::from(code)
            }
            Action::Send {
                payload: Payload::Input { .. },
                ..
            } => {
                self.stats.to_client_data += 1;
                2
            }
            Action::Forward {
                worker,
                from,
                to,
                start,
                end,
            } => {
                self.stats.forwarded += 1;
                let mut next = with_headroom(&buf[start..end]);
                let action =
                    self.cores[worker].handle_forwarded(from, to, &mut next, end - start, self.now);
                if let Action::Forward { .. } = action {
                    return Err(format!(
                        "malformed: a packet forwarded to worker {worker} is forwarded again: \
                         {action:?}"
                    ));
                }
                self.after(worker, action, &next)?;
                3
            }
        };
        self.outcomes.push((u64::from(self.kind) << 32) | outcome);
        Ok(())
    }

    /// One transmission in words, for the trace.
    fn describe(&self, w: usize, action: Action, buf: &[u8]) -> String {
        let len = |payload| self.payload(w, payload, buf).map_or(0, <[u8]>::len);
        match action {
            Action::Nothing => "  -> nothing".into(),
            Action::Send {
                via: Via::Relay(id),
                to,
                payload,
            } => format!(
                "  -> worker {w} sends {} bytes through the relay socket of {id:?} to {to}",
                len(payload)
            ),
            Action::Send {
                via,
                to,
                payload: Payload::Scratch,
            } => match MessageRef::parse(self.cores[w].scratch()) {
                Ok(m) => format!(
                    "  -> worker {w} answers {:?} {:?} {:?} to {to} ({via:?})",
                    m.method(),
                    m.class(),
                    m.error_code().and_then(Result::ok).map(|(c, _)| c)
                ),
                Err(e) => format!("  -> worker {w} sends unparsable bytes to {to}: {e}"),
            },
            Action::Send { via, to, payload } => format!(
                "  -> worker {w} sends {} bytes of ChannelData to {to} ({via:?})",
                len(payload)
            ),
            Action::Forward {
                worker,
                from,
                to,
                start,
                end,
            } => format!(
                "  -> worker {w} hands {} bytes from {from} to worker {worker} for {to}",
                end.saturating_sub(start)
            ),
        }
    }

    /// Relay sockets opened since the last look join the history.
    fn learn_relays(&mut self, w: usize) {
        for (id, local) in std::mem::take(&mut self.sockets[w].opened) {
            let public = if local.ip() == ip(RELAY_V4.0) {
                SocketAddr::new(ip(RELAY_V4.1), local.port())
            } else {
                local
            };
            self.history.push(Relayed {
                worker: w,
                id,
                local,
                public,
            });
        }
    }
}

impl Drop for World {
    /// Leaves the shared live-relay index empty for the next input: only relayed addresses
    /// the world saw opened can be in it.
    fn drop(&mut self) {
        for r in &self.history {
            self.plan.live.remove(r.local);
        }
    }
}

thread_local! {
    /// One live-relay index per fuzzing thread, reused: building one costs more than a
    /// whole short input in a debug build.
    static LIVE: Arc<LiveRelays> = Arc::new(LiveRelays::default());
}
