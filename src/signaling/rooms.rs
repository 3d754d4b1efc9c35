//! The room registry: who is in which room, on which connection, and who is away.
//!
//! A plain state machine in the sans-IO style: inputs are method calls (`join`, `signal`,
//! `leave`, `disconnect`, `handle_timeout`, …) with `now` passed in where time matters; outputs
//! are [`Output`] values addressed to connection ids, taken with [`Registry::poll_output`];
//! [`Registry::poll_timeout`] says when `handle_timeout` wants to run next. There is no clock,
//! no randomness (fresh ids and resume tokens come in with `join`) and no I/O, so every rule
//! below is unit-tested without a socket.
//!
//! Presence rules:
//! - A peer is either *connected* (bound to one connection) or *away* (its connection dropped
//!   less than `reconnect_grace` ago). Away peers still count as members: they appear in
//!   `peers` lists, take a place in the room, and signals to them are queued (bounded).
//! - A `join` carrying the resume token of a peer of the same room gets that peer back: same id,
//!   no `peer-joined`/`peer-left` for the others, queued signals delivered after `joined`. If
//!   the old connection still looks alive (the server has not noticed it died yet) it is closed
//!   and the new one takes over.
//! - `leave`, an eviction by the server, or the grace running out removes the peer: the others
//!   get `peer-left`, the token becomes useless, and an empty room disappears.
//! - A peer whose connection was held by a node that died ([`Registry::lose`]) is removed at
//!   once as well, but its token stays good for `reconnect_grace`: a `join` of its room with it
//!   comes back under the same id and name as a fresh member (`peer-joined` to the others,
//!   past the lobby, within `max_peers`), making the room again if it ended; see [`lost`].
//!
//! Meeting rules (host, lobby, removal; the host's actions live in [`meeting`]):
//! - A room has one host: the first peer of an empty room, or whoever joins with a host
//!   invitation. When the host is gone for good, the longest-present peer takes over.
//! - A fresh join of a locked room waits in the lobby (not a member: no peer list, no
//!   credentials, no place counted against `max_peers`) until the host admits or declines it, it
//!   leaves, or `lobby_timeout` passes. A resume skips the lobby; a host invitation too.
//! - A peer the host removed is barred until the room ends: its connection, its resume token
//!   and its invitation get `removed`.
//! - A room ends with its last member (or the host's `end`); peers still waiting get `ended`.

mod lost;
mod meeting;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::protocol::{
    ErrorCode, Joined, Payload, PeerId, PeerInfo, ResumeToken, RoomId, ServerMessage,
};
pub use meeting::{KNOCK_BURST, KNOCK_EVERY};

/// Most members of a Socket.IO room ([`RoomId::socketio`]): one call between two browsers, as
/// in the apps whose vocabularies that endpoint speaks.
pub const SOCKETIO_ROOM_SIZE: usize = 2;

/// A WebSocket connection, numbered by the shell. Never reused while the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The registry's limits.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Most peers in one room (away peers included).
    pub max_peers: usize,
    /// How long an away peer keeps its place and id.
    pub reconnect_grace: Duration,
    /// Most signals kept for one away peer; later ones are dropped.
    pub away_queue_len: usize,
    /// Most payload bytes kept for one away peer; later signals are dropped.
    pub away_queue_bytes: usize,
    /// Most peers waiting in one room's lobby; further joins get `room-full`.
    pub max_waiting: usize,
    /// How long a peer waits in the lobby before it gets `lobby-timeout`.
    pub lobby_timeout: Duration,
    /// Whether a room starts locked (`[rooms] lock_new_rooms`).
    pub lock_new_rooms: bool,
}

/// What the access rule decided about a fresh join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The display name the invitation fixes; `None` keeps the join's own.
    pub name: Option<String>,
    /// The joiner holds a host invitation: it becomes the room's host, past the lobby.
    pub host: bool,
}

/// A `join`, as the shell hands it to the registry.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: RoomId,
    pub name: Option<String>,
    pub resume: Option<ResumeToken>,
    /// The invitation it carried (token mode), barred with its holder if the host removes it.
    pub invite: Option<String>,
    /// The access rule's answer, `Err(why)` for `forbidden`. Not consulted for a resume.
    pub admission: Result<Admission, String>,
}

/// Id and resume token for a peer that is new, made by the caller (the core has no RNG).
#[derive(Debug, Clone)]
pub struct FreshPeer {
    pub id: PeerId,
    pub resume: ResumeToken,
}

/// Why the registry wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its peer was resumed on another connection.
    Replaced,
}

/// What the registry asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` on connection `conn`.
    Send { conn: ConnId, msg: ServerMessage },
    /// Close connection `conn`; it no longer belongs to any peer.
    Close { conn: ConnId, reason: CloseReason },
}

/// One room as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSnapshot {
    pub room: String,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerSnapshot {
    pub id: String,
    pub name: Option<String>,
    /// False while the peer is away within the reconnect grace.
    pub connected: bool,
}

#[derive(Debug)]
enum Presence {
    Connected(ConnId),
    Away {
        deadline: Instant,
        queue: VecDeque<ServerMessage>,
        queued_bytes: usize,
    },
}

#[derive(Debug)]
struct Peer {
    room: RoomId,
    name: Option<String>,
    resume: ResumeToken,
    /// The invitation it joined with, if any.
    invite: Option<String>,
    presence: Presence,
}

/// A peer on its way in: what a member or a waiting peer is made of.
#[derive(Debug)]
struct Entrant {
    conn: ConnId,
    id: PeerId,
    resume: ResumeToken,
    name: Option<String>,
    invite: Option<String>,
}

/// Members in join order; a room is small (`max_peers`), so a `Vec` beats a set.
#[derive(Debug)]
struct Room {
    members: Vec<PeerId>,
    /// `None` between the room's creation and its first member, and always in a hostless room.
    host: Option<PeerId>,
    /// A direct call's private room: two people, neither of whom can lock, remove or end.
    hostless: bool,
    locked: bool,
    /// Peers in the lobby, in arrival order (at most `max_waiting`).
    waiting: Vec<PeerId>,
    knocks: meeting::KnockBucket,
    barred: Barred,
}

/// What identifies peers the host removed, for as long as the room lasts.
#[derive(Debug, Default)]
struct Barred {
    conns: HashSet<ConnId>,
    resumes: HashSet<ResumeToken>,
    invites: HashSet<String>,
}

/// A peer in a room's lobby: known by its future id, not a member yet.
#[derive(Debug)]
struct Waiting {
    room: RoomId,
    name: Option<String>,
    conn: ConnId,
    resume: ResumeToken,
    invite: Option<String>,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    rooms: HashMap<RoomId, Room>,
    peers: HashMap<PeerId, Peer>,
    peers_by_conn: HashMap<ConnId, PeerId>,
    peers_by_resume: HashMap<ResumeToken, PeerId>,
    /// Connections whose peer was resumed elsewhere and that have not reported their end yet;
    /// signals still sitting in their queues are forwarded to the peer when they do.
    replaced_conns: HashMap<ConnId, PeerId>,
    /// Away deadlines; entries for peers that came back or left are skipped when they expire.
    away_deadlines: BinaryHeap<Reverse<(Instant, PeerId)>>,
    waiting: HashMap<PeerId, Waiting>,
    waiting_by_conn: HashMap<ConnId, PeerId>,
    /// Lobby deadlines; entries for peers no longer waiting are skipped when they expire.
    lobby_deadlines: BinaryHeap<Reverse<(Instant, PeerId)>>,
    /// Peers lost with their node whose token may still bring them back.
    lost: HashMap<PeerId, lost::Lost>,
    lost_by_resume: HashMap<ResumeToken, PeerId>,
    /// Lost tokens' deadlines; entries for peers that came back or were lost again are skipped.
    lost_deadlines: BinaryHeap<Reverse<(Instant, PeerId)>>,
    outputs: VecDeque<Output>,
    /// Peers removed for good (left, evicted, or away past the grace), for the parts of the
    /// server that hold per-peer state elsewhere (TURN allocations made with its credentials).
    removed: VecDeque<(RoomId, PeerId)>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            config,
            rooms: HashMap::new(),
            peers: HashMap::new(),
            peers_by_conn: HashMap::new(),
            peers_by_resume: HashMap::new(),
            replaced_conns: HashMap::new(),
            away_deadlines: BinaryHeap::new(),
            waiting: HashMap::new(),
            waiting_by_conn: HashMap::new(),
            lobby_deadlines: BinaryHeap::new(),
            lost: HashMap::new(),
            lost_by_resume: HashMap::new(),
            lost_deadlines: BinaryHeap::new(),
            outputs: VecDeque::new(),
            removed: VecDeque::new(),
        }
    }

    /// `{"type":"join"}` on `conn`. `fresh` is used unless `resume` names a peer of the room
    /// (one still there or away, or one lost with its node).
    /// The `joined` output carries an empty `iceServers`; the shell fills it in.
    pub fn join(&mut self, conn: ConnId, req: JoinRequest, fresh: FreshPeer, now: Instant) {
        if self.peers_by_conn.contains_key(&conn) || self.waiting_by_conn.contains_key(&conn) {
            self.error(
                conn,
                ErrorCode::AlreadyJoined,
                "already in a room; leave first",
            );
            return;
        }
        if self.is_barred(conn, &req) {
            let message = "the host removed you from this room";
            self.error(conn, ErrorCode::Removed, message);
            return;
        }
        let resumable = req
            .resume
            .as_ref()
            .and_then(|token| self.peers_by_resume.get(token).cloned())
            .filter(|id| self.peers.get(id).is_some_and(|p| p.room == req.room));
        if let Some(id) = resumable {
            self.resume(conn, id);
            return;
        }
        if let Some(id) = req.resume.as_ref().and_then(|t| self.lost_in(&req.room, t)) {
            self.return_lost(conn, id, now);
            return;
        }
        let admission = match req.admission {
            Ok(a) => a,
            Err(why) => {
                self.error(conn, ErrorCode::Forbidden, why);
                return;
            }
        };
        let name = admission.name.or(req.name);
        let entrant = Entrant {
            conn,
            id: fresh.id,
            resume: fresh.resume,
            name,
            invite: req.invite,
        };
        self.join_fresh(req.room, entrant, admission.host, now);
    }

    /// `{"type":"signal"}` from `conn` to `to`.
    pub fn signal(&mut self, conn: ConnId, to: &PeerId, data: Payload) {
        let Some(from) = self.peers_by_conn.get(&conn).cloned() else {
            self.error(conn, ErrorCode::NotJoined, "join a room before signaling");
            return;
        };
        let same_room = match (self.peers.get(&from), self.peers.get(to)) {
            (Some(a), Some(b)) => a.room == b.room && &from != to,
            _ => false,
        };
        if !same_room {
            let message = format!("no other peer `{to}` in your room");
            self.error(conn, ErrorCode::UnknownPeer, message);
            return;
        }
        let msg = ServerMessage::Signal { from, data };
        let to = to.clone();
        self.deliver(&to, msg);
    }

    /// `{"type":"leave"}` from `conn`: the peer is gone for good; `conn` may join again.
    pub fn leave(&mut self, conn: ConnId) {
        if self.withdraw(conn) {
            return;
        }
        match self.peers_by_conn.get(&conn).cloned() {
            Some(id) => self.remove_peer(&id),
            None => self.error(conn, ErrorCode::NotJoined, "not in a room"),
        }
    }

    /// `{"type":"ping"}`: answered in order with everything else sent to `conn`.
    pub fn ping(&mut self, conn: ConnId) {
        self.send(conn, ServerMessage::Pong);
    }

    /// `conn` ended without `leave` (closed, dropped, or silent past the ping timeout).
    /// `undelivered` are the messages still in its outbound queue; its signals are kept for the
    /// peer's return.
    pub fn disconnect(&mut self, conn: ConnId, undelivered: Vec<ServerMessage>, now: Instant) {
        if self.withdraw(conn) {
            return;
        }
        if let Some(id) = self.replaced_conns.remove(&conn) {
            for msg in undelivered.into_iter().filter(is_signal) {
                self.deliver(&id, msg);
            }
            return;
        }
        let Some(id) = self.peers_by_conn.remove(&conn) else {
            return;
        };
        if self.config.reconnect_grace.is_zero() {
            self.remove_peer(&id);
            return;
        }
        let deadline = now + self.config.reconnect_grace;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.presence = Presence::Away {
            deadline,
            queue: VecDeque::new(),
            queued_bytes: 0,
        };
        self.away_deadlines.push(Reverse((deadline, id.clone())));
        for msg in undelivered.into_iter().filter(is_signal) {
            self.deliver(&id, msg);
        }
    }

    /// The server cut `conn` off (it stopped reading): its peer leaves at once, no resume.
    pub fn evict(&mut self, conn: ConnId) {
        self.withdraw(conn);
        self.replaced_conns.remove(&conn);
        if let Some(id) = self.peers_by_conn.get(&conn).cloned() {
            self.remove_peer(&id);
        }
    }

    /// Sends fresh ICE servers to `peer` if it is connected; returns whether it was.
    pub fn push_ice_servers(&mut self, peer: &PeerId, ice_servers: serde_json::Value) -> bool {
        match self.peers.get(peer).map(|p| &p.presence) {
            Some(Presence::Connected(conn)) => {
                let conn = *conn;
                self.send(conn, ServerMessage::IceServers { ice_servers });
                true
            }
            _ => false,
        }
    }

    /// Removes away peers whose grace ended at or before `now`, forgets the tokens of lost
    /// peers whose grace ended, and turns away peers that waited in a lobby for `lobby_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_lobby(now);
        self.expire_lost(now);
        while let Some(Reverse((deadline, _))) = self.away_deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, id))) = self.away_deadlines.pop() else {
                break;
            };
            let still_away = self.peers.get(&id).is_some_and(
                |p| matches!(p.presence, Presence::Away { deadline: d, .. } if d == deadline),
            );
            if still_away {
                self.remove_peer(&id);
            }
        }
    }

    /// When [`Registry::handle_timeout`] should run next. May be early (a peer came back).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let away = self.away_deadlines.peek().map(|Reverse((d, _))| *d);
        let lobby = self.lobby_deadlines.peek().map(|Reverse((d, _))| *d);
        away.into_iter()
            .chain(lobby)
            .chain(self.next_lost_deadline())
            .min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next peer removed for good since the last call: it will never come back under that
    /// id. A peer that is merely away is not reported (it may still resume).
    pub fn poll_removed(&mut self) -> Option<(RoomId, PeerId)> {
        self.removed.pop_front()
    }

    /// Whether a `join` of `room` with `resume` would get an existing or a lost peer back.
    pub fn is_resumable(&self, room: &RoomId, resume: &ResumeToken) -> bool {
        self.peers_by_resume
            .get(resume)
            .and_then(|id| self.peers.get(id))
            .is_some_and(|p| &p.room == room)
            || self.lost_in(room, resume).is_some()
    }

    /// The display name of a peer of a room.
    pub fn peer_name(&self, id: &PeerId) -> Option<&str> {
        self.peers.get(id).and_then(|p| p.name.as_deref())
    }

    /// Every room that exists.
    pub fn room_ids(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms.keys()
    }

    /// Whether `room` exists (it has members, or peers waiting in its lobby).
    pub fn has_room(&self, room: &RoomId) -> bool {
        self.rooms.contains_key(room)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Every room with its peers in join order, for the operator's status page.
    pub fn snapshot(&self) -> Vec<RoomSnapshot> {
        let mut rooms: Vec<RoomSnapshot> = self
            .rooms
            .iter()
            .map(|(id, room)| RoomSnapshot {
                room: id.as_str().to_owned(),
                peers: room
                    .members
                    .iter()
                    .filter_map(|p| {
                        self.peers.get(p).map(|peer| PeerSnapshot {
                            id: p.as_str().to_owned(),
                            name: peer.name.clone(),
                            connected: matches!(peer.presence, Presence::Connected(_)),
                        })
                    })
                    .collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// Whether `conn` is a member of a room or waits in a lobby.
    pub fn is_joined(&self, conn: ConnId) -> bool {
        self.peers_by_conn.contains_key(&conn) || self.waiting_by_conn.contains_key(&conn)
    }

    /// Creates `room` empty and unlocked (whatever `lock_new_rooms` says), for the private room
    /// of a direct call that its two people are about to join. An existing room is left alone.
    pub fn open_room(&mut self, room: RoomId, now: Instant) {
        self.rooms.entry(room).or_insert_with(|| Room {
            members: Vec::new(),
            host: None,
            hostless: true,
            locked: false,
            waiting: Vec::new(),
            knocks: meeting::KnockBucket::new(now),
            barred: Barred::default(),
        });
    }

    /// Deletes `room` (a direct call's, when the call ended): `departing` leaves it first, so
    /// the others get `peer-left`; everyone else is then removed for good without a message,
    /// and peers lost from it cannot come back.
    pub fn close_room(&mut self, room: &RoomId, departing: Option<&PeerId>) {
        self.forget_lost_of(room);
        if let Some(id) =
            departing.filter(|id| self.peers.get(*id).is_some_and(|p| &p.room == room))
        {
            self.remove_peer(id);
        }
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let members = r.members.clone();
        self.end_room(room);
        for m in &members {
            self.remove_peer(m);
        }
    }

    /// A join that is not a resume: a new room, the lobby of a locked one, or straight in.
    fn join_fresh(&mut self, room: RoomId, entrant: Entrant, host_invite: bool, now: Instant) {
        let locked = match self.rooms.get(&room) {
            Some(r) => r.locked,
            None => {
                self.create_room(room.clone(), now);
                false
            }
        };
        if locked && !host_invite {
            self.knock(room, entrant, now);
        } else if !self.enter(room.clone(), entrant, host_invite)
            && self.rooms.get(&room).is_some_and(|r| r.members.is_empty())
        {
            // Only with a `max_peers` of 0: a room nobody could enter is not kept.
            self.rooms.remove(&room);
        }
    }

    /// Creates `room` empty, without a host yet; locked if new rooms are.
    fn create_room(&mut self, room: RoomId, now: Instant) {
        let fresh = Room {
            members: Vec::new(),
            host: None,
            hostless: false,
            // The Socket.IO vocabularies have no host to open a lobby.
            locked: self.config.lock_new_rooms && !room.is_socketio(),
            waiting: Vec::new(),
            knocks: meeting::KnockBucket::new(now),
            barred: Barred::default(),
        };
        self.rooms.insert(room, fresh);
    }

    /// Makes `entrant` a member of the existing `room` (host when `as_host`, or when the room
    /// has none), with `joined` to it and `peer-joined` to the others.
    fn enter(&mut self, room: RoomId, entrant: Entrant, as_host: bool) -> bool {
        let capacity = self.capacity(&room);
        let Some(r) = self.rooms.get_mut(&room) else {
            return false;
        };
        if r.members.len() >= capacity {
            let message = format!("room `{}` is full ({capacity} peers)", room.as_str());
            self.error(entrant.conn, ErrorCode::RoomFull, message);
            return false;
        }
        let id = entrant.id;
        let takes_over = !r.hostless && (as_host || r.host.is_none());
        let had_host = r.host.is_some();
        if takes_over {
            r.host = Some(id.clone());
        }
        let locked = r.locked;
        let peers = self.peer_infos(&room, &id);
        let me = PeerInfo {
            id: id.clone(),
            name: entrant.name.clone(),
            host: takes_over,
        };
        for other in &peers {
            self.send_to_peer(&other.id, ServerMessage::PeerJoined { peer: me.clone() });
            if takes_over && had_host {
                self.send_to_peer(&other.id, ServerMessage::HostChanged { peer: id.clone() });
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.push(id.clone());
        }
        self.peers_by_conn.insert(entrant.conn, id.clone());
        self.peers_by_resume
            .insert(entrant.resume.clone(), id.clone());
        self.peers.insert(
            id.clone(),
            Peer {
                room: room.clone(),
                name: entrant.name,
                resume: entrant.resume.clone(),
                invite: entrant.invite,
                presence: Presence::Connected(entrant.conn),
            },
        );
        self.send(
            entrant.conn,
            ServerMessage::Joined(Box::new(Joined {
                room,
                id: id.clone(),
                peers,
                ice_servers: serde_json::Value::Array(Vec::new()),
                resume: entrant.resume,
                host: takes_over,
                locked,
            })),
        );
        if takes_over {
            self.replay_knocks(&id);
        }
        true
    }

    /// Most members of `room`: `max_peers`, and at most [`SOCKETIO_ROOM_SIZE`] in a room of the
    /// Socket.IO endpoint.
    fn capacity(&self, room: &RoomId) -> usize {
        if room.is_socketio() {
            self.config.max_peers.min(SOCKETIO_ROOM_SIZE)
        } else {
            self.config.max_peers
        }
    }

    fn resume(&mut self, conn: ConnId, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let previous = std::mem::replace(&mut peer.presence, Presence::Connected(conn));
        let room = peer.room.clone();
        let resume = peer.resume.clone();
        self.peers_by_conn.insert(conn, id.clone());
        let queued = match previous {
            Presence::Connected(old) => {
                self.peers_by_conn.remove(&old);
                self.replaced_conns.insert(old, id.clone());
                self.outputs.push_back(Output::Close {
                    conn: old,
                    reason: CloseReason::Replaced,
                });
                VecDeque::new()
            }
            Presence::Away { queue, .. } => queue,
        };
        let peers = self.peer_infos(&room, &id);
        let (host, locked) = self
            .rooms
            .get(&room)
            .map_or((false, false), |r| (r.host.as_ref() == Some(&id), r.locked));
        self.send(
            conn,
            ServerMessage::Joined(Box::new(Joined {
                room,
                id: id.clone(),
                peers,
                ice_servers: serde_json::Value::Array(Vec::new()),
                resume,
                host,
                locked,
            })),
        );
        for msg in queued {
            self.send(conn, msg);
        }
        if host {
            self.replay_knocks(&id);
        }
    }

    /// The members of `room` other than `except`, in join order.
    fn peer_infos(&self, room: &RoomId, except: &PeerId) -> Vec<PeerInfo> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter(|id| *id != except)
            .filter_map(|id| {
                self.peers.get(id).map(|p| PeerInfo {
                    id: id.clone(),
                    name: p.name.clone(),
                    host: r.host.as_ref() == Some(id),
                })
            })
            .collect()
    }

    /// Sends to a peer's connection, or queues a signal while it is away.
    fn deliver(&mut self, to: &PeerId, msg: ServerMessage) {
        let away_queue_len = self.config.away_queue_len;
        let away_queue_bytes = self.config.away_queue_bytes;
        match self.peers.get_mut(to).map(|p| &mut p.presence) {
            Some(Presence::Connected(conn)) => {
                let conn = *conn;
                self.send(conn, msg);
            }
            Some(Presence::Away {
                queue,
                queued_bytes,
                ..
            }) => {
                let size = payload_len(&msg);
                if queue.len() < away_queue_len && *queued_bytes + size <= away_queue_bytes {
                    *queued_bytes += size;
                    queue.push_back(msg);
                }
            }
            None => {}
        }
    }

    /// Room events go to connected peers only: a peer that comes back gets the current
    /// `peers` list in its `joined` instead of a replay.
    fn send_to_peer(&mut self, to: &PeerId, msg: ServerMessage) {
        if let Some(Presence::Connected(conn)) = self.peers.get(to).map(|p| &p.presence) {
            let conn = *conn;
            self.send(conn, msg);
        }
    }

    fn remove_peer(&mut self, id: &PeerId) {
        let Some(peer) = self.peers.remove(id) else {
            return;
        };
        self.peers_by_resume.remove(&peer.resume);
        if let Presence::Connected(conn) = peer.presence {
            self.peers_by_conn.remove(&conn);
        }
        self.removed.push_back((peer.room.clone(), id.clone()));
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        room.members.retain(|m| m != id);
        if room.members.is_empty() {
            self.end_room(&peer.room);
            return;
        }
        let new_host = if room.host.as_ref() == Some(id) {
            room.host = room.members.first().cloned();
            room.host.clone()
        } else {
            None
        };
        let others = room.members.clone();
        for other in &others {
            self.send_to_peer(other, ServerMessage::PeerLeft { id: id.clone() });
            if let Some(host) = &new_host {
                self.send_to_peer(other, ServerMessage::HostChanged { peer: host.clone() });
            }
        }
        if let Some(host) = new_host {
            self.replay_knocks(&host);
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.outputs.push_back(Output::Send { conn, msg });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.send(conn, ServerMessage::error(code, message));
    }
}

fn is_signal(msg: &ServerMessage) -> bool {
    matches!(msg, ServerMessage::Signal { .. })
}

fn payload_len(msg: &ServerMessage) -> usize {
    match msg {
        ServerMessage::Signal { data, .. } => data.get().len(),
        _ => 0,
    }
}

#[cfg(test)]
mod socketio_tests;
#[cfg(test)]
mod tests;
