//! Signaling between nodes: rooms and spaces that live on another node.
//!
//! A room (or a space) lives on one node, its *home*, where the registry runs as on a single
//! node. Redis names each one's home ([`HOME_PREFIX`]); the first node that a `join` or `hello`
//! reaches claims it with [`LOCATE_SCRIPT`], atomically, and a claim whose node is gone from the
//! node registry is taken over. A client may be connected to any node (its *owner*): the owner
//! forwards what the client says to the home, and the home sends what it has for the client
//! back, each as a [`Wire`] message on the receiving node's own channel ([`channel`]), one
//! channel per node. So the capacity of a room, its host and lobby and its peers' resume tokens
//! are decided in one place, and two nodes can never both admit the last place of a room.
//!
//! Order: every message a node sends goes through one task and one Redis connection, in the
//! order the hub made them, and Redis delivers one connection's messages to a channel in that
//! order; so what one peer sends another arrives in order, across nodes as on one node.
//!
//! Pub/sub keeps nothing for a node that is not listening: what is said to a node cut off from
//! Redis is lost (counted in `signalbox_cluster_messages_dropped_total`), as signals to a
//! connection that died are on a single node.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::metrics::METRICS;

/// Where a room's or space's home is written: `signalbox:home:room:NAME`,
/// `signalbox:home:space:NAME`.
pub const HOME_PREFIX: &str = "signalbox:home:";
/// Messages waiting to be published; more are dropped (counted) rather than make the hub wait.
pub const PUBLISH_QUEUE: usize = 65_536;
/// Messages from other nodes waiting for the hub.
pub const INBOUND_QUEUE: usize = 65_536;
/// Most messages published in one pipeline.
const PIPELINE: usize = 256;

/// Finds (or claims) a home: `KEYS[1]` the home key, `KEYS[2]` the room's peer records,
/// `ARGV[1]` this node's name, `ARGV[2]` the prefix of node registry keys, `ARGV[3]` the record
/// field of the joiner's resume token (empty: none). Keeps a claim whose node is alive;
/// otherwise this node takes it. Returns the home's name and the joiner's record, if any.
pub const LOCATE_SCRIPT: &str = r#"
local record = false
if ARGV[3] ~= '' then
  record = redis.call('HGET', KEYS[2], ARGV[3])
end
local home = redis.call('GET', KEYS[1])
if home and (home == ARGV[1] or redis.call('EXISTS', ARGV[2] .. home) == 1) then
  return {home, record}
end
redis.call('SET', KEYS[1], ARGV[1])
return {ARGV[1], record}
"#;

/// Where a room's home keeps a record of each peer, for the node that takes the room over if
/// the home dies: `signalbox:peers:ROOM`, a hash from [`record_field`] to [`PeerRecord`].
pub const PEERS_PREFIX: &str = "signalbox:peers:";

/// The key of a room's peer records.
pub fn peers_key(room: &str) -> String {
    format!("{PEERS_PREFIX}{room}")
}

/// The field of a peer's record: a hash of its resume token, which only the peer knows, so the
/// record is found from the token and the token is never stored.
pub fn record_field(resume: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, resume.as_bytes());
    crate::hex::encode(&digest.as_ref()[..16])
}

/// What a room's home keeps in Redis about one of its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Gives a home up: `KEYS[1]` the home key, deleted only if `ARGV[1]` (this node) holds it.
pub const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A node's own channel.
pub fn channel(node: &str) -> String {
    format!("signalbox:to:{node}")
}

/// The home key of a room or space.
pub fn home_key(what: Homed<'_>) -> String {
    match what {
        Homed::Room(name) => format!("{HOME_PREFIX}room:{name}"),
        Homed::Space(name) => format!("{HOME_PREFIX}space:{name}"),
    }
}

/// What has a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Homed<'a> {
    Room(&'a str),
    Space(&'a str),
}

/// One message between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Wire {
    /// The sender's node name (where answers go).
    pub node: String,
    /// The sender's instance id: tells a restarted node (same name) apart.
    pub inst: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What one node tells another about a connection. `conn` is always the owner's number for it.
/// Messages travel as JSON text in a string: the envelope is tagged and flattened, which serde
/// reads through a buffer that cannot hold a raw JSON value.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "kebab-case")]
pub enum Body {
    /// Owner → home: the client sent this message (its text as received, validated). With a
    /// `join` that resumes, the peer's record from Redis ([`PeerRecord`] as JSON), if any.
    Up {
        conn: u64,
        msg: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<String>,
    },
    /// Owner → home: the connection ended; `signals` are the signals it had not written yet.
    /// `evicted`: the server cut it off (it stopped reading), so its peer leaves at once.
    Gone {
        conn: u64,
        evicted: bool,
        signals: Vec<String>,
    },
    /// Home → owner: send this to the client.
    Down { conn: u64, msg: String },
    /// Home → owner: close the connection, its peer was resumed on another one.
    Replaced { conn: u64 },
    /// Home → owner: this peer, whose credentials the owner handed out, is gone for good.
    Removed { room: String, peer: String },
    /// Owner → home, now and then: every connection of the owner whose room or space lives on
    /// the home. The home lets go of the owner's others (their `gone` was lost with Redis).
    Held { conns: Vec<u64> },
    /// Home → owner: this node drains, so the room or space moves: close the connection, and
    /// its client joins again on a node that stays.
    Moving { conn: u64 },
}

/// What reaches the hub from the cluster.
#[derive(Debug)]
pub enum Inbound {
    /// A message from another node.
    Message(Wire),
    /// Nodes that left the registry (or restarted under a new instance id): their name and
    /// instance id.
    NodesLost(Vec<(Arc<str>, Arc<str>)>),
    /// Redis answers again after it could not be reached: it may have restarted empty, so the
    /// rooms and spaces living here are claimed again.
    RedisBack,
}

/// What the publishing task does, in order.
#[derive(Debug)]
enum Outgoing {
    Publish {
        to: String,
        text: String,
    },
    /// Claims a home for this node outright (a call's room, made by this node's space).
    Claim {
        key: String,
    },
    /// Claims a home for this node unless some node holds it.
    ClaimIfFree {
        key: String,
    },
    /// Sets (or with `None` deletes) a field of a room's peer records; a set renews the key's
    /// expiry to `ttl_ms`.
    Record {
        key: String,
        field: String,
        value: Option<String>,
        ttl_ms: u64,
    },
    /// Renews the expiry of a room's peer records.
    Renew {
        key: String,
        ttl_ms: u64,
    },
    Release {
        key: String,
    },
}

/// The hub's end of the bus. Cheap to clone; never waits.
#[derive(Clone)]
pub struct Bus {
    node: Arc<str>,
    inst: Arc<str>,
    node_timeout: Duration,
    tx: mpsc::Sender<Outgoing>,
}

impl Bus {
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Sends `body` to `node`; dropped (and counted) when the queue is full.
    pub fn send(&self, node: &str, body: Body) {
        let wire = Wire {
            node: self.node.to_string(),
            inst: self.inst.to_string(),
            body,
        };
        let text = serde_json::to_string(&wire).expect("a wire message always serializes");
        self.queue(Outgoing::Publish {
            to: channel(node),
            text,
        });
    }

    /// Makes this node the home of `what`, in order with the messages sent before and after.
    pub fn claim(&self, what: Homed<'_>) {
        self.queue(Outgoing::Claim {
            key: home_key(what),
        });
    }

    /// Claims `what` for this node again unless another node has claimed it meanwhile (after
    /// Redis came back, perhaps empty).
    pub fn reclaim(&self, what: Homed<'_>) {
        self.queue(Outgoing::ClaimIfFree {
            key: home_key(what),
        });
    }

    /// Keeps (or with `None` forgets) a peer's record in its room's records, which expire
    /// `ttl` after the last renewal.
    pub fn record(&self, room: &str, field: String, value: Option<String>, ttl: Duration) {
        self.queue(Outgoing::Record {
            key: peers_key(room),
            field,
            value,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Renews the expiry of a room's peer records.
    pub fn renew_records(&self, room: &str, ttl: Duration) {
        self.queue(Outgoing::Renew {
            key: peers_key(room),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// How long a node may go unheard before it is taken for dead.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// Gives up this node's home of `what` (the room or space ended here).
    pub fn release(&self, what: Homed<'_>) {
        self.queue(Outgoing::Release {
            key: home_key(what),
        });
    }

    fn queue(&self, out: Outgoing) {
        if self.tx.try_send(out).is_err() {
            METRICS.cluster_notes_dropped.inc();
        }
    }
}

/// The hub's receiving end, with its [`Bus`].
pub struct HubLink {
    pub bus: Bus,
    pub inbound: mpsc::Receiver<Inbound>,
}

/// Starts the publisher and the listener of this node's channel; both end on `shutdown`.
/// Returns the hub's link and the sender the node registry reports lost nodes through.
pub fn start(
    client: redis::Client,
    redis: redis::aio::ConnectionManager,
    node: Arc<str>,
    inst: Arc<str>,
    node_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> (HubLink, mpsc::Sender<Inbound>) {
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    tokio::spawn(publish_in_order(redis, node.clone(), rx, shutdown.clone()));
    tokio::spawn(listen(client, node.clone(), in_tx.clone(), shutdown));
    let link = HubLink {
        bus: Bus {
            node,
            inst,
            node_timeout,
            tx,
        },
        inbound: in_rx,
    };
    (link, in_tx)
}

async fn publish_in_order(
    mut redis: redis::aio::ConnectionManager,
    node: Arc<str>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let release = redis::Script::new(RELEASE_SCRIPT);
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, PIPELINE) => if n == 0 { return },
            _ = shutdown.changed() => return,
        }
        let mut pipe = redis::pipe();
        let mut published = 0u64;
        for out in batch.drain(..) {
            match out {
                Outgoing::Publish { to, text } => {
                    pipe.cmd("PUBLISH").arg(to).arg(text).ignore();
                    published += 1;
                }
                Outgoing::Claim { key } => {
                    pipe.cmd("SET").arg(key).arg(&*node).ignore();
                }
                Outgoing::ClaimIfFree { key } => {
                    pipe.cmd("SET").arg(key).arg(&*node).arg("NX").ignore();
                }
                Outgoing::Record {
                    key,
                    field,
                    value: Some(value),
                    ttl_ms,
                } => {
                    pipe.cmd("HSET").arg(&key).arg(field).arg(value).ignore();
                    pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
                }
                Outgoing::Record {
                    key,
                    field,
                    value: None,
                    ..
                } => {
                    pipe.cmd("HDEL").arg(key).arg(field).ignore();
                }
                Outgoing::Renew { key, ttl_ms } => {
                    pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
                }
                Outgoing::Release { key } => {
                    pipe.invoke_script(release.key(key).arg(&*node)).ignore();
                }
            }
        }
        match pipe.query_async::<()>(&mut redis).await {
            Ok(()) => METRICS.cluster_notes.at(0).add(published),
            Err(e) => {
                METRICS.cluster_notes_dropped.add(published);
                debug!("cluster: signaling messages not published: {e}");
            }
        }
    }
}

/// Listens on this node's channel and passes what other nodes say to the hub.
async fn listen(
    client: redis::Client,
    node: Arc<str>,
    hub: mpsc::Sender<Inbound>,
    shutdown: watch::Receiver<bool>,
) {
    let own = channel(&node);
    let what = "signaling from other nodes";
    super::listen(
        client,
        own.clone(),
        what,
        shutdown,
        move |payload| match serde_json::from_slice::<Wire>(payload) {
            Ok(wire) => {
                METRICS.cluster_notes.at(1).inc();
                match hub.try_send(Inbound::Message(wire)) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        METRICS.cluster_notes_dropped.inc();
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
            Err(e) => {
                METRICS.cluster_notes_dropped.inc();
                debug!("cluster: ignored a message on {own}: {e}");
                true
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_one_flat_object() {
        let wire = Wire {
            node: "n1".into(),
            inst: "ab".into(),
            body: Body::Up {
                conn: 7,
                msg: r#"{"type":"ping"}"#.into(),
                record: None,
            },
        };
        let text = serde_json::to_string(&wire).expect("serializes");
        assert_eq!(
            text,
            r#"{"node":"n1","inst":"ab","k":"up","conn":7,"msg":"{\"type\":\"ping\"}"}"#
        );
        let back: Wire = serde_json::from_str(&text).expect("parses");
        assert!(matches!(back.body, Body::Up { conn: 7, .. }));
    }

    #[test]
    fn a_record_is_found_from_the_token_which_it_does_not_hold() {
        let field = record_field("secret-token");
        assert_eq!(field.len(), 32);
        assert_eq!(field, record_field("secret-token"));
        assert_ne!(field, record_field("secret-tokem"));
        assert!(!field.contains("secret"));
    }

    #[test]
    fn homes_and_channels_are_named_apart() {
        assert_eq!(home_key(Homed::Room("a")), "signalbox:home:room:a");
        assert_eq!(home_key(Homed::Space("a")), "signalbox:home:space:a");
        assert_eq!(channel("n1"), "signalbox:to:n1");
    }
}
