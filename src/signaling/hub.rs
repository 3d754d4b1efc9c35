//! The registry's owner task: the one place where [`Registry`] runs.
//!
//! Connection tasks send [`Command`]s over one bounded channel; the hub applies them in
//! arrival order, in batches, and hands each output to the addressed connection's bounded
//! [outbox](super::outbox) with `try_send`, which locks that connection's outbox alone, for
//! one push. No connection can make the hub wait: an outbox that is full means that client
//! stopped reading, so it is cut off (and its peer leaves at once). The fresh ids and resume
//! tokens the pure core cannot make are drawn here from the OS random source.
//!
//! The hub owns the [spaces and calls](super::spaces) core next to the registry and links the
//! two: a join of a call's private room is admitted by the calls core, a `joined` in such a room
//! and a peer removed from it are reported back to it, and the room outputs of the calls core
//! (open a call's room, close it when the call ends) are carried out on the registry at once, so
//! a `peer-left` always goes out before the `call-ended` that follows it.
//!
//! Joins (and `hello`s) are rate-limited per client address (`[rooms] join_rate_per_ip`) here
//! too, in a fixed-size table of token buckets that only this task touches: every `join` costs
//! a fresh set of TURN credentials, so one address must not be able to churn through them.

use crate::metrics::METRICS;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::outbox::{ConnEnd, Full, HubEnd, Kill};
use super::protocol::{
    CallId, CallToken, ClientMessage, ErrorCode, PeerId, ResumeToken, RoomId, ServerMessage,
    SpaceAction,
};
use super::rooms::{
    Admission, CloseReason, ConnId, FreshPeer, JoinRequest, Output, Registry, RegistryConfig,
};
use super::spaces::{self, CallCounts, FreshCall, FreshPerson, HelloRequest, Spaces, SpacesConfig};
use super::{Hooks, PeerEvent};

mod remote;
use crate::metrics;
use crate::ratelimit::{Buckets, Rate};
use signalbox_turn_proto::policy::AddrKey;

/// Commands waiting for the hub; connection tasks wait (back-pressure) when it is full.
const COMMAND_QUEUE: usize = 8192;
/// Commands applied per wake-up before outputs are flushed.
const BATCH: usize = 256;
/// Client addresses whose join rate is tracked at once (16 bytes of bucket each, plus the key).
const TRACKED_ADDRESSES: usize = 4096;

/// What connection tasks (and the rest of the server) ask of the hub.
#[derive(Debug)]
pub enum Command {
    /// A new connection from `from` and the hub's end of its outbox.
    Connect {
        conn: ConnId,
        out: HubEnd,
        from: IpAddr,
    },
    /// A valid client message.
    Client { conn: ConnId, msg: ClientMessage },
    /// A valid client message on a node of a cluster, with what routing it needs.
    Routed {
        conn: ConnId,
        msg: ClientMessage,
        route: Box<Route>,
    },
    /// The connection ended; its outbox comes back so that unsent signals are not lost.
    Disconnect { conn: ConnId, out: ConnEnd },
    /// Send `{"type":"ice-servers"}` to a connected peer.
    PushIceServers {
        peer: PeerId,
        ice_servers: serde_json::Value,
    },
    /// The server drains: tell every connection, refuse joins from now on. `reconnect`: other
    /// nodes of the cluster are up, so clients should reconnect at once.
    Drain { grace_s: u64, reconnect: bool },
    /// Report every room and its peers.
    Snapshot {
        reply: oneshot::Sender<Vec<super::rooms::RoomSnapshot>>,
    },
}

/// What a client message carries on a node of a cluster.
#[derive(Debug)]
pub struct Route {
    /// The message as the client sent it, for a room or space that lives on another node.
    pub raw: Box<str>,
    /// For `join` and `hello`: the node where the room or space lives, or why Redis could not
    /// tell (the answer is `unavailable`).
    pub home: Option<Result<Arc<str>, String>>,
    /// For a `join` that resumes: the peer's record in Redis, left by the room's home.
    pub record: Option<String>,
}

/// A cheap, cloneable way to talk to the hub.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
}

impl HubHandle {
    /// Sends fresh ICE servers (for example new TURN credentials) to `peer`, if it is
    /// connected. Returns false only when the hub has stopped.
    pub async fn push_ice_servers(&self, peer: PeerId, ice_servers: serde_json::Value) -> bool {
        self.send(Command::PushIceServers { peer, ice_servers })
            .await
    }

    /// Starts draining: every connection gets `server-shutdown` (with `reconnect`), joins get
    /// `shutting-down`.
    pub async fn drain(&self, grace: std::time::Duration, reconnect: bool) -> bool {
        self.send(Command::Drain {
            grace_s: grace.as_secs(),
            reconnect,
        })
        .await
    }

    /// Every room and its peers, or `None` when the hub has stopped.
    pub async fn snapshot(&self) -> Option<Vec<super::rooms::RoomSnapshot>> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Snapshot { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// A connection id never used before.
    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues a command, waiting while the hub's queue is full; false when the hub has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        // Counts against the task's cooperative budget as the channel's own `send` does, so
        // that a connection reading a flood still yields to the runtime now and then.
        tokio::task::coop::consume_budget().await;
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            // Waiting is rare; boxed, its future (over 400 bytes) is not part of every idle
            // connection task.
            Err(mpsc::error::TrySendError::Full(cmd)) => Box::pin(self.tx.send(cmd)).await.is_ok(),
        }
    }
}

/// Starts the hub task on the current runtime; each client address may join `join_rate_per_ip`
/// times a minute on average, and as many at once.
pub fn spawn(
    config: RegistryConfig,
    spaces: SpacesConfig,
    join_rate_per_ip: u32,
    hooks: Hooks,
    cluster: Option<crate::cluster::bus::HubLink>,
) -> HubHandle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let next_conn = Arc::new(AtomicU64::new(1));
    let reconnect_grace = config.reconnect_grace;
    let rate = Rate {
        per_minute: join_rate_per_ip,
        burst: join_rate_per_ip,
    };
    let mut hub = Hub {
        registry: Registry::new(config),
        spaces: Spaces::new(spaces),
        links: HashMap::new(),
        joins: Buckets::new(rate, TRACKED_ADDRESSES),
        started: Instant::now(),
        hooks,
        rng: SystemRandom::new(),
        published: (0, 0),
        published_people: 0,
        published_calls: CallCounts::default(),
        draining: false,
        cluster: None,
        next_conn: next_conn.clone(),
    };
    let inbound = cluster.map(|link| {
        hub.cluster = Some(remote::Remote::new(link.bus, reconnect_grace));
        link.inbound
    });
    tokio::spawn(run(rx, inbound, hub));
    HubHandle { tx, next_conn }
}

struct Hub {
    registry: Registry,
    spaces: Spaces,
    links: HashMap<ConnId, Link>,
    /// Join budgets by client address (an IPv4 address or an IPv6 /64).
    joins: Buckets<AddrKey>,
    /// The origin of the join buckets' clock.
    started: Instant,
    hooks: Hooks,
    rng: SystemRandom,
    /// Room and peer counts last added to the gauges.
    published: (i64, i64),
    /// People count last added to its gauge, and call counts last added to the counters.
    published_people: i64,
    published_calls: CallCounts,
    /// Set by [`Command::Drain`]: joins are refused.
    draining: bool,
    /// On a node of a cluster: rooms and spaces that live on other nodes.
    cluster: Option<remote::Remote>,
    /// The connection numbers, shared with [`HubHandle::next_conn`]: other nodes' connections
    /// get theirs from here too.
    next_conn: Arc<AtomicU64>,
}

/// What the hub keeps per connection: where its messages go, whom joins from it count against,
/// and (on a node of a cluster) where its room and space live when that is another node.
struct Link {
    out: Out,
    /// `None` for a connection of another node, whose own node counts its joins.
    address: Option<AddrKey>,
    room_home: Option<Arc<str>>,
    space_home: Option<Arc<str>>,
}

/// Where a connection's messages go.
enum Out {
    Local(HubEnd),
    /// A connection held by another node, whose room or space lives here.
    Remote(remote::RemoteConn),
}

impl Link {
    fn local(out: HubEnd, from: IpAddr) -> Link {
        Link {
            out: Out::Local(out),
            address: Some(AddrKey::of(from)),
            room_home: None,
            space_home: None,
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Command>,
    mut inbound: Option<mpsc::Receiver<crate::cluster::bus::Inbound>>,
    mut hub: Hub,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let timer = tokio::time::sleep_until(super::limits::far_future(Instant::now()).into());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    let mut held = tokio::time::interval(remote::HELD_EVERY);
    held.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                for cmd in batch.drain(..) {
                    hub.apply(cmd);
                }
            }
            Some(msg) = async { inbound.as_mut()?.recv().await }, if inbound.is_some() => {
                hub.inbound(msg);
            }
            _ = held.tick(), if inbound.is_some() => hub.send_held(),
            () = &mut timer, if armed.is_some() => {
                armed = None;
                let now = Instant::now();
                hub.registry.handle_timeout(now);
                hub.flush();
                hub.spaces.handle_timeout(now);
            }
        }
        // Counters first, so a client that has a message never scrapes a count older than
        // it; and again after the flush, which carries out room changes of the calls core.
        hub.publish_gauges();
        hub.flush();
        hub.publish_gauges();
        let next =
            super::limits::earliest([hub.registry.poll_timeout(), hub.spaces.poll_timeout()]);
        if next != armed {
            armed = next;
            if let Some(at) = next {
                timer.as_mut().reset(at.into());
            }
        }
    }
    debug!("signaling hub stopped");
}

impl Hub {
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { conn, out, from } => {
                self.links.insert(conn, Link::local(out, from));
            }
            Command::Routed { conn, msg, route } => self.routed(conn, msg, *route),
            Command::Client { conn, msg } => match msg {
                ClientMessage::Join {
                    room,
                    name,
                    resume,
                    token,
                } => {
                    if self.entry_allowed(conn) {
                        self.join(conn, room, name, resume, token);
                    }
                }
                ClientMessage::Signal { to, data } => self.registry.signal(conn, &to, data),
                // Outside any room, `leave` hangs up an accepted call not joined yet.
                ClientMessage::Leave => {
                    if self.registry.is_joined(conn) || !self.spaces.hang_up(conn) {
                        self.registry.leave(conn);
                    }
                }
                ClientMessage::Ping => self.registry.ping(conn),
                ClientMessage::Host(action) => self.registry.host_action(conn, action),
                ClientMessage::Space(action) => self.space_action(conn, action),
            },
            Command::Disconnect { conn, out } => {
                let link = self.links.remove(&conn);
                let mut undelivered = out.drain();
                if let Some(link) = link {
                    self.left_homes(conn, &link, &mut undelivered);
                }
                let now = Instant::now();
                self.registry.disconnect(conn, undelivered, now);
                self.spaces.disconnect(conn, now);
            }
            Command::PushIceServers { peer, ice_servers } => {
                if !self.registry.push_ice_servers(&peer, ice_servers.clone()) {
                    self.push_ice_servers_remote(&peer, ice_servers);
                }
            }
            Command::Drain { grace_s, reconnect } => {
                self.draining = true;
                self.move_away();
                for link in self.links.values() {
                    if let Out::Local(out) = &link.out {
                        let _ = out.try_send(ServerMessage::ServerShutdown { grace_s, reconnect });
                    }
                }
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.registry.snapshot());
            }
        }
    }

    /// A `join`: of a call's private room (the calls core decides who may), or of any other.
    fn join(
        &mut self,
        conn: ConnId,
        room: RoomId,
        name: Option<String>,
        resume: Option<ResumeToken>,
        token: Option<String>,
    ) {
        let now = Instant::now();
        match self
            .spaces
            .admit_to_room(conn, &room, token.as_deref(), resume.as_ref())
        {
            Some(Err(why)) => self.reply(conn, ServerMessage::error(ErrorCode::Forbidden, why)),
            Some(Ok(entry)) => {
                let req = JoinRequest {
                    room,
                    name: Some(entry.name),
                    resume: Some(entry.resume.clone()),
                    invite: None,
                    admission: Ok(Admission::default()),
                };
                let fresh = FreshPeer {
                    id: entry.id,
                    resume: entry.resume,
                };
                self.registry.join(conn, req, fresh, now);
            }
            None => {
                // A peer coming back within the grace was admitted already; its resume
                // token is the proof, so an invite that expired meanwhile does not cut it off.
                let resuming = resume
                    .as_ref()
                    .is_some_and(|r| self.registry.is_resumable(&room, r));
                let admission = if resuming {
                    Ok(Admission::default())
                } else {
                    (self.hooks.admit)(&room, token.as_deref())
                };
                let req = JoinRequest {
                    room,
                    name,
                    resume,
                    invite: token,
                    admission,
                };
                let fresh = self.fresh_peer();
                self.registry.join(conn, req, fresh, now);
            }
        }
    }

    /// A message about spaces and calls, handed to the calls core with what it cannot make.
    fn space_action(&mut self, conn: ConnId, action: SpaceAction) {
        let now = Instant::now();
        match action {
            SpaceAction::Hello {
                space,
                name,
                resume,
                token,
            } => {
                if !self.entry_allowed(conn) {
                    return;
                }
                // As for rooms: a resume needs no invitation.
                let resuming = resume
                    .as_ref()
                    .is_some_and(|r| self.spaces.is_resumable(&space, r));
                let admission = if resuming {
                    Ok(None)
                } else {
                    (self.hooks.admit_space)(&space, token.as_deref())
                };
                let fresh = self.fresh_peer();
                let req = HelloRequest {
                    space,
                    name,
                    resume,
                    admission,
                };
                let person = FreshPerson {
                    id: fresh.id,
                    resume: fresh.resume,
                };
                self.spaces.hello(conn, req, person, now);
            }
            SpaceAction::LeaveSpace => self.spaces.leave_space(conn),
            SpaceAction::Call { to, audio_only } => {
                let fresh = self.fresh_call();
                self.spaces.call(conn, &to, audio_only, fresh, now);
            }
            SpaceAction::Accept(call) => self.spaces.accept(conn, &call, now),
            SpaceAction::Decline(call) => self.spaces.decline(conn, &call),
            SpaceAction::Cancel(call) => self.spaces.cancel(conn, &call),
            SpaceAction::Block(id) => self.spaces.block(conn, &id),
            SpaceAction::Unblock(id) => self.spaces.unblock(conn, &id),
        }
    }

    /// Whether a `join` or `hello` from `conn` may go on: not while draining (`shutting-down`),
    /// nor beyond the address's join rate (`rate-limited`).
    fn entry_allowed(&mut self, conn: ConnId) -> bool {
        if self.draining {
            let msg = ServerMessage::error(
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later",
            );
            self.reply(conn, msg);
            return false;
        }
        self.join_allowed(conn)
    }

    /// Sends `msg` to `conn` straight away (nothing is queued before it in the cores).
    fn reply(&mut self, conn: ConnId, msg: ServerMessage) {
        let _ = self.send_out(conn, msg);
    }

    /// Puts `msg` in `conn`'s outbox, or sends it to the node that holds `conn`. `Err` when
    /// the outbox is full; an unknown connection takes nothing.
    fn send_out(&mut self, conn: ConnId, msg: ServerMessage) -> Result<(), Full> {
        match self.links.get(&conn).map(|l| &l.out) {
            Some(Out::Local(out)) => out.try_send(msg),
            Some(Out::Remote(rc)) => {
                let rc = rc.clone();
                if let Some(cluster) = &mut self.cluster {
                    cluster.down(&rc, &msg);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Moves the room, peer and people gauges and the call counters to the cores' counts (the
    /// hub is their one writer).
    fn publish_gauges(&mut self) {
        let now = (
            self.registry.room_count() as i64,
            self.registry.peer_count() as i64,
        );
        METRICS.rooms_active.add(now.0 - self.published.0);
        METRICS.peers_active.add(now.1 - self.published.1);
        self.published = now;
        let people = self.spaces.people_count() as i64;
        METRICS.people_active.add(people - self.published_people);
        self.published_people = people;
        let calls = self.spaces.counts();
        let before = self.published_calls.by_outcome;
        for (i, (n, b)) in calls.by_outcome.iter().zip(before).enumerate() {
            if *n > b {
                METRICS.calls.at(i).add(n - b);
            }
        }
        self.published_calls = calls;
    }

    /// Hands every pending output of both cores to its connection, and carries out the room
    /// outputs of the calls core on the registry. The registry is flushed before each output
    /// of the calls core, so what a room change causes goes out before what follows it.
    fn flush(&mut self) {
        loop {
            self.flush_registry();
            let Some(output) = self.spaces.poll_output() else {
                break;
            };
            match output {
                spaces::Output::Send { conn, msg } => self.deliver(conn, msg),
                spaces::Output::Close { conn } => self.kill(conn, Kill::Replaced),
                spaces::Output::OpenRoom { room } => {
                    // The call's two people join it from whichever node holds them.
                    if let Some(cluster) = &self.cluster {
                        cluster
                            .bus
                            .claim(crate::cluster::bus::Homed::Room(room.as_str()));
                    }
                    self.registry.open_room(room, Instant::now())
                }
                spaces::Output::CloseRoom { room, departing } => {
                    self.registry.close_room(&room, departing.as_ref())
                }
            }
        }
    }

    fn flush_registry(&mut self) {
        while let Some(output) = self.registry.poll_output() {
            match output {
                Output::Send { conn, mut msg } => {
                    if let ServerMessage::Joined(j) = &mut msg {
                        // A Socket.IO socket has TURN credentials of its own, from its connect;
                        // another node's connection gets them from that node.
                        let remote = self.joined_at_home(conn, j);
                        if !remote && !j.room.is_socketio() {
                            j.ice_servers = (self.hooks.ice_servers)(&j.room, &j.id);
                            self.tell(PeerEvent::Issued {
                                room: j.room.clone(),
                                peer: j.id.clone(),
                            });
                        }
                        self.spaces.entered_room(&j.room, &j.id);
                    }
                    self.deliver(conn, msg);
                }
                Output::Close {
                    conn,
                    reason: CloseReason::Replaced,
                } => self.kill(conn, Kill::Replaced),
            }
        }
        self.drain_removed();
    }

    /// Queues `msg` for `conn`; a full outbox cuts the client off (it stopped reading), and
    /// its peer and person leave at once.
    fn deliver(&mut self, conn: ConnId, msg: ServerMessage) {
        if let Err(Full) = self.send_out(conn, msg) {
            debug!(conn = conn.0, "outbound queue full; cutting the client off");
            self.kill(conn, Kill::Overflow);
            if let Some(link) = self.links.remove(&conn) {
                self.evicted_from_homes(conn, &link);
            }
            self.registry.evict(conn);
            self.spaces.evict(conn);
        }
    }

    /// Reports peers removed for good to whoever listens (the credential service), and to the
    /// calls core: a peer gone from a call's room ends the call.
    fn drain_removed(&mut self) {
        while let Some((room, peer)) = self.registry.poll_removed() {
            self.spaces.left_room(&room, &peer);
            if let Some(cluster) = &mut self.cluster {
                cluster.forget_record(&peer);
                if !self.registry.has_room(&room) {
                    cluster
                        .bus
                        .release(crate::cluster::bus::Homed::Room(room.as_str()));
                }
                if cluster.removed_remote_peer(&room, &peer) {
                    continue;
                }
            }
            if !room.is_socketio() {
                self.tell(PeerEvent::Removed { room, peer });
            }
        }
    }

    fn tell(&self, event: PeerEvent) {
        if let Some(events) = &self.hooks.events {
            if events.try_send(event).is_err() {
                warn!("peer event dropped: the credential service is not keeping up");
            }
        }
    }

    /// Takes a join from the budget of `conn`'s address; when it is spent, answers
    /// `rate-limited` (the connection stays usable) and returns false.
    fn join_allowed(&mut self, conn: ConnId) -> bool {
        let Some(address) = self.links.get(&conn).and_then(|l| l.address) else {
            // Another node's connection: that node counted the join.
            return self.links.contains_key(&conn);
        };
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Err(wait) = self.joins.take(&address, now_ms) else {
            return true;
        };
        METRICS.rate_limited.at(metrics::LIMITED_SIGNALING).inc();
        self.reply(
            conn,
            ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "more than {} joins per minute from your address; join again in {} s",
                    self.joins.rate().per_minute,
                    wait.as_secs().max(1)
                ),
            ),
        );
        false
    }

    fn kill(&mut self, conn: ConnId, why: Kill) {
        match self.links.get(&conn).map(|l| &l.out) {
            Some(Out::Local(out)) => out.kill(why),
            Some(Out::Remote(rc)) => {
                if let Some(cluster) = &self.cluster {
                    cluster.replaced(rc);
                }
            }
            None => {}
        }
    }

    /// A new call's id, private room and two room tokens: 128 random bits each, URL-safe
    /// base64 (the room is `call-` and its 22 characters, a valid room name).
    fn fresh_call(&self) -> FreshCall {
        let mut bytes = [0u8; 64];
        self.rng
            .fill(&mut bytes)
            .expect("the OS random source works (a failure here means the system is broken)");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let room = format!("call-{}", b64.encode(&bytes[16..32]));
        FreshCall {
            id: CallId::new(&b64.encode(&bytes[..16])),
            room: RoomId::parse(&room).expect("`call-` and base64url is a valid room name"),
            caller_token: CallToken::new(&b64.encode(&bytes[32..48])),
            callee_token: CallToken::new(&b64.encode(&bytes[48..])),
        }
    }

    /// 128 random bits each for the peer id and the resume token, URL-safe base64.
    fn fresh_peer(&self) -> FreshPeer {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .expect("the OS random source works (a failure here means the system is broken)");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        FreshPeer {
            id: PeerId::new(&b64.encode(&bytes[..16])),
            resume: ResumeToken::new(&b64.encode(&bytes[16..])),
        }
    }
}
