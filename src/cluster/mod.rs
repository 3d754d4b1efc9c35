//! Several signalbox nodes as one service, coordinated through Redis (`[cluster]`,
//! `docs/cluster.md`).
//!
//! With an empty `redis_url` nothing here runs: [`Cluster::start`] is never called, no task is
//! spawned and no Redis code is reached, so a single node behaves and performs as it always did.
//!
//! With a URL, one task per node keeps the node registry ([`registry`]): every third of
//! `node_timeout` it renews the node's entry (name, public address, relay addresses and port
//! range, load) and reads back every node alive, in one atomic script. Everything decided from
//! the answer lives in [`registry`]; this module is the thin shell that talks to Redis, keeps
//! the last view for `/api/stats`, `/metrics` and `/healthz?deep=1`, and takes the node out of
//! the registry when it drains.
//!
//! Redis is reached through a connection manager that reconnects by itself with exponential
//! backoff; each heartbeat that fails marks Redis as down (the node reports itself unhealthy)
//! until one succeeds again, with no restart.

pub mod bus;
pub mod registry;
pub mod turn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::{redact, Config};
use crate::metrics::METRICS;
use registry::{Departures, Load, NodeInfo, RelayAddress, View};

/// Longest wait for a TCP (and TLS) connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of the connection manager's backoff between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One node's membership of the cluster.
pub struct Cluster {
    node_timeout: Duration,
    redis_url: String,
    /// This node's entry, without its load (filled in at each heartbeat).
    own: NodeInfo,
    redis: ConnectionManager,
    heartbeat: redis::Script,
    leave: redis::Script,
    status: Mutex<Status>,
    /// Set once the node has left the registry (drain): no heartbeat puts it back.
    left: AtomicBool,
    /// Credential notes to the other nodes, with a TURN server.
    notes: Option<turn::Publisher>,
    /// The TURN peer policy's list of other nodes' relays, with a TURN server.
    peer_relays: Option<Arc<signalbox_turn_proto::policy::ClusterRelays>>,
    locate: redis::Script,
    /// The signaling hub's end of the bus between nodes, until the hub takes it.
    hub_link: Mutex<Option<bus::HubLink>>,
    /// Where the nodes found gone are reported to the hub.
    departures_tx: mpsc::Sender<bus::Inbound>,
}

/// Longest wait for Redis to name a room's home before the join is refused (`unavailable`).
const LOCATE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the last heartbeats found.
#[derive(Debug, Clone)]
struct Status {
    /// Whether the last heartbeat reached Redis; `None` before the first one ended.
    redis_up: Option<bool>,
    /// Since when `redis_up` has had its value.
    since: Instant,
    last_error: Option<String>,
    /// The registry as the last successful heartbeat saw it.
    view: View,
    latency: Option<Duration>,
    departures: Departures,
}

/// What a node knows about itself when it joins.
pub struct Identity {
    /// `HOST[:PORT]` of the HTTPS listener, as browsers reach it.
    pub public: String,
    pub relays: Vec<(std::net::IpAddr, std::net::IpAddr)>,
    pub relay_ports: Option<crate::config::PortRange>,
    /// The TURN server's live room peers, shared with the other nodes; `None` without TURN.
    pub turn: Option<turn::TurnHooks>,
    /// Where the other nodes' relays go for the TURN peer policy; `None` without TURN.
    pub peer_relays: Option<Arc<signalbox_turn_proto::policy::ClusterRelays>>,
}

impl Cluster {
    /// Sets up the connection (made lazily, so a Redis that is down at start only makes the
    /// node unhealthy until it is back) and starts the heartbeat task, which ends on `shutdown`.
    pub fn start(
        config: &Config,
        identity: Identity,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let cluster = &config.cluster;
        let client = redis::Client::open(cluster.redis_url.as_str())
            .context("[cluster] redis_url is not a Redis URL")?;
        let interval = registry::heartbeat_interval(cluster.node_timeout);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(interval))
            .set_min_delay(BACKOFF_MIN)
            .set_max_delay(BACKOFF_MAX)
            .set_number_of_retries(3);
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .context("cannot set up the Redis connection ([cluster] redis_url)")?;
        let instance = instance_id();
        let name = cluster.node_name();
        let (hub_link, departures_tx) = bus::start(
            client.clone(),
            redis.clone(),
            name.as_str().into(),
            instance.as_str().into(),
            cluster.node_timeout,
            shutdown.clone(),
        );
        let notes = identity.turn.map(|hooks| {
            turn::start(
                client,
                redis.clone(),
                instance.clone(),
                hooks,
                shutdown.clone(),
            )
        });
        let own = NodeInfo {
            name,
            instance,
            version: env!("CARGO_PKG_VERSION").into(),
            public: identity.public,
            relays: identity
                .relays
                .into_iter()
                .map(|(local, advertised)| RelayAddress { local, advertised })
                .collect(),
            relay_ports: identity
                .relay_ports
                .map(|p| p.to_string())
                .unwrap_or_default(),
            load: Load::default(),
        };
        let node = Arc::new(Cluster {
            node_timeout: cluster.node_timeout,
            redis_url: redact(&cluster.redis_url),
            own,
            redis,
            heartbeat: redis::Script::new(registry::HEARTBEAT_SCRIPT),
            leave: redis::Script::new(registry::LEAVE_SCRIPT),
            status: Mutex::new(Status {
                redis_up: None,
                since: Instant::now(),
                last_error: None,
                view: View::default(),
                latency: None,
                departures: Departures::default(),
            }),
            left: AtomicBool::new(false),
            notes,
            peer_relays: identity.peer_relays,
            locate: redis::Script::new(bus::LOCATE_SCRIPT),
            hub_link: Mutex::new(Some(hub_link)),
            departures_tx,
        });
        METRICS.cluster_enabled.store(true, Ordering::Relaxed);
        info!(
            node = %node.own.name, redis = %node.redis_url, node_timeout = ?cluster.node_timeout,
            "cluster: joining through Redis"
        );
        tokio::spawn(heartbeats(node.clone(), interval, shutdown));
        Ok(node)
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.own.name
    }

    /// The signaling hub's end of the bus between nodes; `None` once taken.
    pub fn take_hub_link(&self) -> Option<bus::HubLink> {
        self.hub_link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The node where `what` lives, claimed for this one if it has no live home; with a
    /// `resume` token for a room, also the peer's record there (JSON), if Redis has one. Fails
    /// while Redis is unreachable (the last heartbeat failed) or does not answer within
    /// [`LOCATE_TIMEOUT`]: the message says which, for the `unavailable` error.
    pub async fn locate(
        &self,
        what: bus::Homed<'_>,
        resume: Option<&str>,
    ) -> Result<(Arc<str>, Option<String>), String> {
        if self.lock().redis_up == Some(false) {
            return Err("this node cannot reach the cluster's Redis; try again shortly".into());
        }
        let mut redis = self.redis.clone();
        let mut call = self.locate.prepare_invoke();
        let (records, field) = match (what, resume) {
            (bus::Homed::Room(room), Some(token)) => {
                (bus::peers_key(room), bus::record_field(token))
            }
            _ => (bus::peers_key(""), String::new()),
        };
        call.key(bus::home_key(what))
            .key(records)
            .arg(&self.own.name)
            .arg(registry::NODE_KEY_PREFIX)
            .arg(field);
        let answer = call.invoke_async::<(String, Option<String>)>(&mut redis);
        match tokio::time::timeout(LOCATE_TIMEOUT, answer).await {
            Ok(Ok((home, record))) => Ok((home.into(), record)),
            Ok(Err(e)) => {
                debug!("cluster: cannot locate {what:?}: {e}");
                Err("the cluster's Redis did not answer; try again shortly".into())
            }
            Err(_) => Err("the cluster's Redis did not answer in time; try again shortly".into()),
        }
    }

    /// Where credential notes go, with a TURN server.
    pub fn notes(&self) -> Option<turn::Publisher> {
        self.notes.clone()
    }

    /// Takes this node out of the registry at once (the drain): the other nodes stop counting
    /// it at their next heartbeat instead of after `node_timeout`.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        self.remove().await;
    }

    async fn remove(&self) {
        let mut redis = self.redis.clone();
        let mut call = self.leave.prepare_invoke();
        call.key(registry::NODES_KEY)
            .key(self.own_key())
            .arg(&self.own.name)
            .arg(&self.own.instance);
        match call.invoke_async::<i64>(&mut redis).await {
            Ok(1) => info!(node = %self.own.name, "cluster: left the registry"),
            Ok(_) => {
                warn!(node = %self.own.name, "cluster: another process holds this node's name; its entry stays")
            }
            Err(e) => {
                warn!(node = %self.own.name, "cluster: could not leave the registry ({e}); the others drop this node after node_timeout")
            }
        }
    }

    /// For `/api/stats`: this node, Redis, and every node alive.
    pub fn stats(&self) -> serde_json::Value {
        let s = self.lock();
        json!({
            "node": self.own.name,
            "redis": {
                "url": self.redis_url,
                "up": s.redis_up == Some(true),
                "since_s": s.since.elapsed().as_secs(),
                "error": s.last_error,
                "latency_ms": s.latency.map(|l| l.as_secs_f64() * 1000.0),
            },
            "nodes": s.view.nodes,
        })
    }

    /// For `/healthz?deep=1`: failing while Redis cannot be reached.
    pub fn check(&self) -> crate::selftest::Check {
        use crate::selftest::Check;
        let s = self.lock();
        match s.redis_up {
            Some(true) => {
                let names: Vec<&str> = s.view.nodes.iter().map(|n| n.name.as_str()).collect();
                Check::ok(
                    "cluster",
                    format!(
                        "node {} with Redis at {}: {} node(s) alive ({})",
                        self.own.name,
                        self.redis_url,
                        names.len(),
                        names.join(", ")
                    ),
                )
            }
            Some(false) => Check::fail(
                "cluster",
                format!(
                    "Redis at {} unreachable for {} s: {}; new joins cannot be coordinated",
                    self.redis_url,
                    s.since.elapsed().as_secs(),
                    s.last_error.as_deref().unwrap_or("no answer")
                ),
            ),
            None => Check::warn(
                "cluster",
                format!(
                    "node {}: first heartbeat to {} not done yet",
                    self.own.name, self.redis_url
                ),
            ),
        }
    }

    fn own_key(&self) -> String {
        format!("{}{}", registry::NODE_KEY_PREFIX, self.own.name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One heartbeat: renew this node's entry and read the registry.
    async fn beat(&self) -> Result<View, redis::RedisError> {
        let mut own = self.own.clone();
        own.load = Load {
            peers: METRICS.peers_active.get() + METRICS.people_active.get(),
            ws_connections: METRICS.ws_connections_active.get(),
            allocations: (0..crate::metrics::TRANSPORTS.len())
                .map(|i| METRICS.allocations_active.at(i).get())
                .sum(),
        };
        let entry = serde_json::to_string(&own).expect("a NodeInfo always serializes");
        let expiry_ms = u64::try_from(self.node_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut redis = self.redis.clone();
        let mut call = self.heartbeat.prepare_invoke();
        call.key(registry::NODES_KEY)
            .key(self.own_key())
            .arg(&own.name)
            .arg(entry)
            .arg(expiry_ms)
            .arg(registry::NODE_KEY_PREFIX);
        let (previous, entries): (Option<String>, Vec<String>) =
            call.invoke_async(&mut redis).await?;
        Ok(registry::read_heartbeat(
            &own,
            previous.as_deref(),
            &entries,
        ))
    }

    /// Records a heartbeat's outcome; logs once per change between up and down.
    fn record(&self, outcome: Result<View, redis::RedisError>, took: Duration) {
        let mut s = self.lock();
        match outcome {
            Ok(view) => {
                if s.redis_up == Some(false) {
                    s.departures.forgive();
                    if self
                        .departures_tx
                        .try_send(bus::Inbound::RedisBack)
                        .is_err()
                    {
                        warn!("cluster: the signaling hub is not keeping up; rooms living here were not claimed again");
                    }
                }
                let gone = s.departures.update(&view, &self.own.instance);
                if !gone.is_empty() {
                    info!(nodes = ?gone, "cluster: nodes gone");
                    let gone = gone
                        .into_iter()
                        .map(|(n, i)| (n.into(), i.into()))
                        .collect();
                    if self
                        .departures_tx
                        .try_send(bus::Inbound::NodesLost(gone))
                        .is_err()
                    {
                        warn!("cluster: the signaling hub is not keeping up; a node departure was not passed on");
                    }
                }
                if s.redis_up != Some(true) {
                    info!(node = %self.own.name, nodes = view.nodes.len(), "cluster: Redis at {} reached", self.redis_url);
                    s.redis_up = Some(true);
                    s.since = Instant::now();
                }
                if let Some(other) = &view.name_taken_by {
                    warn!(
                        node = %self.own.name, other_instance = %other,
                        "cluster: another running process used this node's name; each node needs its own [cluster] node_name"
                    );
                }
                if let Some(relays) = &self.peer_relays {
                    relays.set(registry::other_relays(&view, &self.own.instance));
                }
                if view.unreadable > 0 {
                    warn!(
                        count = view.unreadable,
                        "cluster: registry entries that are not nodes of this version were skipped"
                    );
                }
                METRICS
                    .cluster_nodes_alive
                    .store(view.nodes.len() as i64, Ordering::Relaxed);
                METRICS.cluster_redis_up.store(1, Ordering::Relaxed);
                METRICS.cluster_redis_latency_us.store(
                    i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
                    Ordering::Relaxed,
                );
                s.latency = Some(took);
                s.last_error = None;
                s.view = view;
            }
            Err(e) => {
                METRICS.cluster_heartbeat_failures.inc();
                METRICS.cluster_redis_up.store(0, Ordering::Relaxed);
                if s.redis_up != Some(false) {
                    warn!(node = %self.own.name, "cluster: Redis at {} unreachable ({e}); retrying with backoff, new joins are refused until it is back", self.redis_url);
                    s.redis_up = Some(false);
                    s.since = Instant::now();
                }
                s.last_error = Some(e.to_string());
            }
        }
    }
}

/// The heartbeat task: one beat at once, then one per `interval`, until shutdown or the node
/// has left. A beat that takes longer than `interval` ends with an error (the response timeout).
async fn heartbeats(node: Arc<Cluster>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if node.left.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(interval, node.beat()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer within the heartbeat interval",
            ))),
        };
        // A beat that raced the drain must not leave the node registered.
        if node.left.load(Ordering::Relaxed) {
            node.remove().await;
            return;
        }
        node.record(outcome, started.elapsed());
    }
}

/// The longest wait between attempts to listen again: short, since what is published meanwhile
/// is lost.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Listens on `channel` (for `what`, in the logs) and hands each message to `on_message` until
/// it returns false or the server shuts down, reconnecting with backoff whenever the connection
/// is lost.
async fn listen(
    client: redis::Client,
    channel: String,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut on_message: impl FnMut(&[u8]) -> bool,
) {
    use futures_util::StreamExt as _;
    let mut backoff = BACKOFF_MIN;
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            info!(%channel, "cluster: listening for {what}");
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                if !on_message(msg.get_payload_bytes()) {
                    return Ok(false);
                }
            }
            Ok::<bool, redis::RedisError>(true)
        };
        tokio::select! {
            ended = session => match ended {
                Ok(false) => return,
                Ok(true) => warn!(%channel, "cluster: connection for {what} closed; reconnecting"),
                Err(e) => debug!(%channel, "cluster: cannot listen for {what}: {e}"),
            },
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// 64 random bits in hex: tells this process apart from any other that uses the same name.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the OS random source works (a failure here means the system is broken)");
    crate::hex::encode(&bytes)
}
