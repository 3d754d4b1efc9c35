//! The hub on a node of a cluster: rooms and spaces that live on other nodes
//! ([`crate::cluster::bus`]).
//!
//! Two roles, often on one node at once:
//! - **Owner** of a client's connection. A `join` or `hello` comes with the node where its room
//!   or space lives (looked up by the connection task); when that is another node, the
//!   connection's messages for it are forwarded there as the client wrote them, and what comes
//!   back is written to the client as it is. `joined` is the one exception: the owner puts its
//!   own TURN credentials into it, so each peer uses its own node's relay, and hands them out
//!   and renews them as for a peer of its own.
//! - **Home** of a room or space. Another node's connection is an ordinary connection of the
//!   registry here, whose outputs go back to that node instead of into an outbox.
//!
//! When a node is gone (see [`crate::cluster::registry::Departures`]), the home takes its
//! connections' peers for lost (`Registry::lose`: the others get `peer-left`, and the peer may
//! come back with its resume token through another node), and the owner closes the
//! connections whose room or space lived there (close code 1012), so that their clients
//! reconnect and join again, wherever the room lives from then on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::{Command, Hub, Link, Out, Route};
use crate::cluster::bus::{record_field, Body, Bus, Inbound, PeerRecord, Wire};
use crate::signaling::outbox::Kill;
use crate::signaling::protocol::{
    parse_client, ClientMessage, ErrorCode, Joined, Payload, PeerId, Relayed, ResumeToken, RoomId,
    ServerMessage, SpaceAction,
};
use crate::signaling::rooms::ConnId;
use crate::signaling::PeerEvent;

/// A connection held by another node: that node's name and instance, and its number there.
#[derive(Debug, Clone)]
pub(super) struct RemoteConn {
    node: Arc<str>,
    inst: Arc<str>,
    conn: u64,
}

/// A node, by name and instance.
type Node = (Arc<str>, Arc<str>);

/// What the hub keeps about other nodes.
pub(super) struct Remote {
    pub bus: Bus,
    /// Other nodes' connections to rooms and spaces here: (their instance, their number).
    conns: HashMap<(Arc<str>, u64), ConnId>,
    /// Peers of rooms here that other nodes hold: the nodes that handed out their credentials
    /// (more than one after a resume through another node).
    homed_peers: HashMap<PeerId, Vec<Node>>,
    /// Peers of rooms elsewhere whose credentials this node handed out: their room, their
    /// connection here, and the room's home.
    owned_peers: HashMap<PeerId, (RoomId, ConnId, Arc<str>)>,
    /// Instances found gone: what they still send is ignored.
    lost: HashSet<Arc<str>>,
    /// The nodes this one has forwarded to: each hears now and then which connections it holds
    /// for them ([`Body::Held`]).
    homes: HashSet<Arc<str>>,
    /// Peers of rooms here whose record is in Redis: their room and record field.
    recorded: HashMap<PeerId, (RoomId, String)>,
    /// How long records outlive this node: long enough for the others to find it gone, close
    /// their clients and see them join again within `reconnect_grace`.
    records_ttl: std::time::Duration,
}

/// How often a node tells the nodes it forwards to which connections it holds for them.
pub(super) const HELD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Remote {
    pub fn new(bus: Bus, reconnect_grace: std::time::Duration) -> Remote {
        let records_ttl = reconnect_grace + 2 * bus.node_timeout() + 2 * HELD_EVERY;
        Remote {
            bus,
            recorded: HashMap::new(),
            records_ttl,
            conns: HashMap::new(),
            homed_peers: HashMap::new(),
            owned_peers: HashMap::new(),
            lost: HashSet::new(),
            homes: HashSet::new(),
        }
    }

    /// Keeps a record of a peer of a room here in Redis (its id and name, under a hash of its
    /// resume token), so that the node taking the room over, should this one die, gives the
    /// peer its id back when it resumes there.
    pub fn record(&mut self, room: &RoomId, id: &PeerId, name: Option<&str>, resume: &ResumeToken) {
        let field = record_field(resume.as_str());
        let record = PeerRecord {
            id: id.as_str().to_owned(),
            name: name.map(str::to_owned),
        };
        let value = serde_json::to_string(&record).expect("a record always serializes");
        self.bus
            .record(room.as_str(), field.clone(), Some(value), self.records_ttl);
        self.recorded.insert(id.clone(), (room.clone(), field));
    }

    /// The peer is gone for good: its record goes too.
    pub fn forget_record(&mut self, peer: &PeerId) {
        if let Some((room, field)) = self.recorded.remove(peer) {
            self.bus
                .record(room.as_str(), field, None, self.records_ttl);
        }
    }

    /// Sends `msg` to the client of `rc`, through its node.
    pub fn down(&self, rc: &RemoteConn, msg: &ServerMessage) {
        let body = Body::Down {
            conn: rc.conn,
            msg: msg.to_json(),
        };
        self.bus.send(&rc.node, body);
    }

    /// Tells `rc`'s node to close it: its peer was resumed on another connection.
    pub fn replaced(&self, rc: &RemoteConn) {
        self.bus.send(&rc.node, Body::Replaced { conn: rc.conn });
    }

    /// A peer of a room here got `joined` through `owner`, which handed it credentials.
    pub fn homed_peer(&mut self, id: &PeerId, owner: Node) {
        let owners = self.homed_peers.entry(id.clone()).or_default();
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }

    /// A peer of a room here is gone for good. If other nodes held it, they are told (each
    /// revokes the credentials it handed out) and this returns true; if one of them is gone
    /// itself, this returns false so that this node revokes them for the whole cluster.
    pub fn removed_remote_peer(&mut self, room: &RoomId, peer: &PeerId) -> bool {
        let Some(owners) = self.homed_peers.remove(peer) else {
            return false;
        };
        let mut all_alive = true;
        for (node, inst) in owners {
            if self.lost.contains(&inst) {
                all_alive = false;
                continue;
            }
            let body = Body::Removed {
                room: room.as_str().to_owned(),
                peer: peer.as_str().to_owned(),
            };
            self.bus.send(&node, body);
        }
        all_alive
    }
}

impl Hub {
    /// A `joined` made here, on a node of a cluster: the peer's record goes to Redis, and for
    /// another node's connection that node is remembered as the one that hands out the peer's
    /// credentials. Returns whether `conn` is another node's.
    pub(super) fn joined_at_home(&mut self, conn: ConnId, j: &Joined) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        if !j.room.is_socketio() {
            let name = self.registry.peer_name(&j.id);
            cluster.record(&j.room, &j.id, name, &j.resume);
        }
        match self.links.get(&conn).map(|l| &l.out) {
            Some(Out::Remote(rc)) => {
                cluster.homed_peer(&j.id, (rc.node.clone(), rc.inst.clone()));
                true
            }
            _ => false,
        }
    }

    /// A message of a connection of this node, on a node of a cluster: handled here, or
    /// forwarded to the node where its room or space lives.
    pub(super) fn routed(&mut self, conn: ConnId, msg: ClientMessage, route: Route) {
        let Some(me) = self.cluster.as_ref().map(|c| c.bus.node().clone()) else {
            return self.apply(Command::Client { conn, msg });
        };
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        let (room_home, space_home) = (link.room_home.clone(), link.space_home.clone());
        let target = match &msg {
            ClientMessage::Join { .. } | ClientMessage::Space(SpaceAction::Hello { .. }) => {
                let is_join = matches!(msg, ClientMessage::Join { .. });
                // In a room (or space) here already: refused here (`already-joined`), as on a
                // single node.
                let here = if is_join {
                    self.registry.is_joined(conn)
                } else {
                    self.spaces.has_person(conn)
                };
                if here {
                    return self.apply(Command::Client { conn, msg });
                }
                let home = match route.home {
                    Some(Ok(home)) => home,
                    Some(Err(why)) => {
                        self.reply(conn, ServerMessage::error(ErrorCode::Unavailable, why));
                        return;
                    }
                    None => me.clone(),
                };
                let new = (home != me).then_some(home);
                let (old, other) = if is_join {
                    (room_home, space_home)
                } else {
                    (space_home, room_home)
                };
                // Moving on from a room (or space) that lives on another node: that node lets
                // the connection go as if it had dropped, unless its other half lives there.
                if let Some(old) =
                    old.filter(|o| Some(o) != new.as_ref() && Some(o) != other.as_ref())
                {
                    self.send_gone(&old, conn, false, Vec::new());
                }
                if let Some(link) = self.links.get_mut(&conn) {
                    if is_join {
                        link.room_home = new.clone();
                    } else {
                        link.space_home = new.clone();
                    }
                }
                if new.is_some() && !self.entry_allowed(conn) {
                    return;
                }
                new
            }
            ClientMessage::Space(_) => space_home,
            ClientMessage::Leave if room_home.is_none() && self.registry.is_joined(conn) => None,
            ClientMessage::Leave | ClientMessage::Ping => room_home.or(space_home),
            ClientMessage::Signal { .. } | ClientMessage::Host(_) => room_home,
        };
        match (target, &mut self.cluster) {
            (Some(node), Some(cluster)) => {
                if !cluster.homes.contains(&node) {
                    cluster.homes.insert(node.clone());
                }
                let body = Body::Up {
                    conn: conn.0,
                    msg: route.raw.into(),
                    record: route.record,
                };
                cluster.bus.send(&node, body);
            }
            _ => {
                if let Some(record) = route.record {
                    self.restore(&msg, &record);
                }
                self.apply(Command::Client { conn, msg })
            }
        }
    }

    /// What another node said, or which nodes are gone.
    pub(super) fn inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Message(wire) => self.wire(wire),
            Inbound::RedisBack => self.reclaim_homes(),
            Inbound::NodesLost(nodes) => {
                for node in nodes {
                    if let Some(cluster) = &mut self.cluster {
                        cluster.homes.remove(&node.0);
                    }
                    self.node_lost(node);
                }
            }
        }
    }

    fn wire(&mut self, wire: Wire) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let node: Arc<str> = wire.node.into();
        let inst: Arc<str> = wire.inst.into();
        if cluster.lost.contains(&inst) {
            return;
        }
        match wire.body {
            Body::Up { conn, msg, record } => {
                let local = match cluster.conns.get(&(inst.clone(), conn)) {
                    Some(local) => *local,
                    None => {
                        let local = ConnId(self.next_remote_conn());
                        if let Some(cluster) = &mut self.cluster {
                            cluster.conns.insert((inst.clone(), conn), local);
                        }
                        let rc = RemoteConn { node, inst, conn };
                        let link = Link {
                            out: Out::Remote(rc),
                            address: None,
                            room_home: None,
                            space_home: None,
                        };
                        self.links.insert(local, link);
                        local
                    }
                };
                match parse_client(&msg) {
                    Ok(msg) => {
                        if let Some(record) = record {
                            self.restore(&msg, &record);
                        }
                        self.apply(Command::Client { conn: local, msg })
                    }
                    Err(e) => {
                        let msg = ServerMessage::error(ErrorCode::BadRequest, e.to_string());
                        self.reply(local, msg);
                    }
                }
            }
            Body::Gone {
                conn,
                evicted,
                signals,
            } => {
                let Some(local) = cluster.conns.remove(&(inst, conn)) else {
                    return;
                };
                self.links.remove(&local);
                if evicted {
                    self.registry.evict(local);
                    self.spaces.evict(local);
                } else {
                    let now = Instant::now();
                    let undelivered = signals.iter().filter_map(|t| signal_from(t)).collect();
                    self.registry.disconnect(local, undelivered, now);
                    self.spaces.disconnect(local, now);
                }
            }
            Body::Down { conn, msg } => {
                let conn = ConnId(conn);
                if !self.is_homed_on(conn, &node) {
                    return;
                }
                let mut relayed = Relayed(msg);
                if relayed.kind() == "joined" {
                    relayed.0 = self.joined_here(conn, &node, relayed.0);
                }
                self.deliver(conn, ServerMessage::Relayed(Box::new(relayed)));
            }
            Body::Replaced { conn } => {
                let conn = ConnId(conn);
                if self.is_homed_on(conn, &node) {
                    self.kill(conn, Kill::Replaced);
                }
            }
            Body::Held { conns } => {
                let held: HashSet<u64> = conns.into_iter().collect();
                let mut gone = Vec::new();
                cluster.conns.retain(|(i, c), local| {
                    let keep = *i != inst || held.contains(c);
                    if !keep {
                        gone.push(*local);
                    }
                    keep
                });
                let now = Instant::now();
                gone.sort();
                for local in gone {
                    debug!(node = %node, conn = local.0, "cluster: a connection's end was missed; letting it go");
                    self.links.remove(&local);
                    self.registry.disconnect(local, Vec::new(), now);
                    self.spaces.disconnect(local, now);
                }
            }
            Body::Moving { conn } => {
                let conn = ConnId(conn);
                if self.is_homed_on(conn, &node) {
                    self.kill(conn, Kill::HomeLost);
                }
            }
            Body::Removed { room, peer } => {
                let peer = PeerId::new(&peer);
                let owned = cluster.owned_peers.remove(&peer);
                if let Some((room, _, _)) = owned.filter(|(r, _, _)| r.as_str() == room) {
                    self.tell(PeerEvent::Removed { room, peer });
                }
            }
        }
    }

    /// A `join` that resumes, with the peer's record left in Redis by the room's former home:
    /// the peer is taken in as lost, so that the join gives it its id back. Nothing happens when
    /// the registry knows the token already (the home never changed).
    fn restore(&mut self, msg: &ClientMessage, record: &str) {
        let ClientMessage::Join {
            room,
            resume: Some(resume),
            ..
        } = msg
        else {
            return;
        };
        let Ok(record) = serde_json::from_str::<PeerRecord>(record) else {
            return;
        };
        if record.id.is_empty() || self.registry.is_resumable(room, resume) {
            return;
        }
        let id = PeerId::new(&record.id);
        let now = Instant::now();
        self.registry
            .restore_lost(room.clone(), id, record.name, resume.clone(), now);
    }

    /// Whether `conn` is a connection of this node whose room or space lives on `node`.
    fn is_homed_on(&self, conn: ConnId, node: &Arc<str>) -> bool {
        self.links.get(&conn).is_some_and(|l| {
            matches!(l.out, Out::Local(_))
                && (l.room_home.as_ref() == Some(node) || l.space_home.as_ref() == Some(node))
        })
    }

    /// A `joined` from the room's home for `conn`: this node's TURN credentials go in, and
    /// the peer is followed for their renewal and revocation as a peer of its own.
    fn joined_here(&mut self, conn: ConnId, home: &Arc<str>, text: String) -> String {
        let Ok(mut joined) = serde_json::from_str::<serde_json::Value>(&text) else {
            return text;
        };
        let room = joined
            .get("room")
            .and_then(|r| r.as_str())
            .and_then(RoomId::parse);
        let id = joined.get("id").and_then(|i| i.as_str()).map(PeerId::new);
        let (Some(room), Some(id)) = (room, id) else {
            return text;
        };
        joined["iceServers"] = (self.hooks.ice_servers)(&room, &id);
        if let Some(cluster) = &mut self.cluster {
            cluster
                .owned_peers
                .insert(id.clone(), (room.clone(), conn, home.clone()));
        }
        self.tell(PeerEvent::Issued { room, peer: id });
        serde_json::to_string(&joined).unwrap_or(text)
    }

    /// Fresh ICE servers for a peer of a room on another node, held here.
    pub(super) fn push_ice_servers_remote(
        &mut self,
        peer: &PeerId,
        ice_servers: serde_json::Value,
    ) {
        let Some(conn) = self
            .cluster
            .as_ref()
            .and_then(|c| c.owned_peers.get(peer))
            .map(|(_, conn, _)| *conn)
        else {
            return;
        };
        if self.links.contains_key(&conn) {
            self.deliver(conn, ServerMessage::IceServers { ice_servers });
        }
    }

    /// A connection of this node ended: the nodes where its room and space live are told, with
    /// the signals from there it had not written yet (taken out of `undelivered`).
    pub(super) fn left_homes(
        &mut self,
        conn: ConnId,
        link: &Link,
        undelivered: &mut Vec<ServerMessage>,
    ) {
        if let Some(home) = &link.room_home {
            let mut signals = Vec::new();
            undelivered.retain(|msg| match msg {
                ServerMessage::Relayed(r) => {
                    if r.kind() == "signal" {
                        signals.push(r.0.clone());
                    }
                    false
                }
                _ => true,
            });
            self.send_gone(home, conn, false, signals);
        }
        if let Some(home) = link
            .space_home
            .as_ref()
            .filter(|h| Some(*h) != link.room_home.as_ref())
        {
            self.send_gone(home, conn, false, Vec::new());
        }
    }

    /// A connection of this node was cut off (it stopped reading): its peers leave at once.
    pub(super) fn evicted_from_homes(&mut self, conn: ConnId, link: &Link) {
        if let Some(home) = &link.room_home {
            self.send_gone(home, conn, true, Vec::new());
        }
        if let Some(home) = link
            .space_home
            .as_ref()
            .filter(|h| Some(*h) != link.room_home.as_ref())
        {
            self.send_gone(home, conn, true, Vec::new());
        }
    }

    fn send_gone(&self, home: &str, conn: ConnId, evicted: bool, signals: Vec<String>) {
        if let Some(cluster) = &self.cluster {
            let body = Body::Gone {
                conn: conn.0,
                evicted,
                signals,
            };
            cluster.bus.send(home, body);
        }
    }

    /// `node` is gone: the peers it held here are lost, and the connections here whose room or
    /// space lived there are closed so that their clients join again.
    fn node_lost(&mut self, (name, inst): Node) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.lost.insert(inst.clone());
        let mut held: Vec<ConnId> = Vec::new();
        cluster.conns.retain(|(i, _), local| {
            let keep = *i != inst;
            if !keep {
                held.push(*local);
            }
            keep
        });
        let orphans: Vec<(PeerId, RoomId)> = cluster
            .owned_peers
            .iter()
            .filter(|(_, (_, _, home))| *home == name)
            .map(|(p, (r, _, _))| (p.clone(), r.clone()))
            .collect();
        for (peer, _) in &orphans {
            cluster.owned_peers.remove(peer);
        }
        debug!(node = %name, connections = held.len(), "cluster: a node's peers are lost");
        let now = Instant::now();
        held.sort();
        for conn in held {
            self.links.remove(&conn);
            self.registry.lose(conn, now);
            self.spaces.disconnect(conn, now);
        }
        let homed_there: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.room_home.as_ref() == Some(&name) || l.space_home.as_ref() == Some(&name)
            })
            .map(|(c, _)| *c)
            .collect();
        for conn in homed_there {
            if let Some(link) = self.links.get_mut(&conn) {
                link.room_home = None;
                link.space_home = None;
            }
            self.kill(conn, Kill::HomeLost);
        }
        for (peer, room) in orphans {
            self.tell(PeerEvent::Removed { room, peer });
        }
    }

    /// Claims every room and space living here again, where no other node has meanwhile: a
    /// Redis that restarted empty forgot them, and a join through another node would otherwise
    /// start a second room of the same name there.
    fn reclaim_homes(&self) {
        use crate::cluster::bus::Homed;
        let Some(cluster) = &self.cluster else {
            return;
        };
        for room in self.registry.room_ids().filter(|r| !r.is_socketio()) {
            cluster.bus.reclaim(Homed::Room(room.as_str()));
        }
        for space in self.spaces.space_ids() {
            cluster.bus.reclaim(Homed::Space(space.as_str()));
        }
    }

    /// Tells each node forwarded to which connections this node holds for it, and renews the
    /// records of the rooms living here.
    pub(super) fn send_held(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let rooms: HashSet<&RoomId> = cluster.recorded.values().map(|(r, _)| r).collect();
        for room in rooms {
            cluster
                .bus
                .renew_records(room.as_str(), cluster.records_ttl);
        }
        for home in &cluster.homes {
            let conns = self
                .links
                .iter()
                .filter(|(_, l)| {
                    matches!(l.out, Out::Local(_))
                        && (l.room_home.as_ref() == Some(home)
                            || l.space_home.as_ref() == Some(home))
                })
                .map(|(c, _)| c.0)
                .collect();
            cluster.bus.send(home, Body::Held { conns });
        }
    }

    /// The drain: the clients of other nodes in rooms and spaces here are told to join again,
    /// where the rooms will live from now on.
    pub(super) fn move_away(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        for link in self.links.values() {
            if let Out::Remote(rc) = &link.out {
                cluster.bus.send(&rc.node, Body::Moving { conn: rc.conn });
            }
        }
    }

    /// A number for another node's connection, from the same sequence as this node's own.
    fn next_remote_conn(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A `signal` in its wire form, back into the message the registry queues for an away peer.
fn signal_from(text: &str) -> Option<ServerMessage> {
    #[derive(serde::Deserialize)]
    struct Signal<'a> {
        from: &'a str,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let s: Signal<'_> = serde_json::from_str(text).ok()?;
    Some(ServerMessage::Signal {
        from: PeerId::new(s.from),
        data: Payload::from_json(s.data.get())?,
    })
}
