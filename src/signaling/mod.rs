//! Room signaling over WebSocket (`wss://HOST:PORT/ws`): rooms, presence, and the addressed
//! relay of SDP and ICE between the browsers of a call; spaces (who is online) and direct
//! calls that ring a person and meet in a private room. The wire protocol is documented in
//! `docs/protocol.md`.
//!
//! Design, from the wire inwards:
//! - [`ws`] upgrades `/ws` (after the `Origin` check and the connection caps) and runs one task
//!   per connection. That task alone owns its socket: it parses frames, applies the rate and
//!   size limits, keeps the ping/pong and join timers, and writes everything from the
//!   connection's bounded [`outbox`].
//! - [`hub`] is the single owner of the room registry: connection tasks send it commands over
//!   one channel and it answers by `try_send` into the addressed connections' outboxes. So the
//!   fan-out takes no shared lock — not one global lock per message, not one per room, only
//!   the addressee's own outbox for one push — and a client that stops reading fills only its
//!   own outbox and is cut off. One task is plenty:
//!   the registry does a few hash lookups per message while serialization, TLS and socket
//!   work run in the connection tasks on every core (`signalbox-bench signaling` measures it).
//! - [`rooms`] is the registry itself, a plain state machine with no I/O and no clock, tested
//!   on its own (rooms, presence and resume; and the meeting rules: host, lobby, removal); [`protocol`] is the message format; [`limits`] holds the origin policy, the
//!   rate limiter and the connection caps. [`spaces`] is the second core the hub owns:
//!   spaces, presence, ringing and the private rooms of accepted calls, in the same style.
//!
//! The `iceServers` of `joined` come from an [`IceServersFn`] given at start, so that the part
//! of the server that issues TURN credentials can fill them without this module knowing how;
//! [`HubHandle::push_ice_servers`] sends a connected peer a fresh list later.

pub mod hub;
pub mod limits;
pub mod outbox;
pub mod protocol;
pub mod rooms;
pub mod spaces;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tracing::info;

pub use hub::HubHandle;
use limits::{ConnectionCaps, OriginPolicy};
pub use protocol::{PeerId, RoomId};
pub use rooms::Admission;
use rooms::RegistryConfig;
use spaces::SpacesConfig;

use crate::config::{CallsConfig, RoomsConfig};
pub use protocol::SpaceId;

/// Builds the `iceServers` list for a peer that just joined a room (called by the hub for
/// every `joined`). Must be quick: it runs on the registry's task.
pub type IceServersFn = Arc<dyn Fn(&RoomId, &PeerId) -> serde_json::Value + Send + Sync>;

/// An [`IceServersFn`] that gives every peer an empty list (host candidates only).
pub fn no_ice_servers() -> IceServersFn {
    Arc::new(|_: &RoomId, _: &PeerId| serde_json::Value::Array(Vec::new()))
}

/// Decides whether a fresh `join` of a room may proceed, given the `token` it carried:
/// `Ok(admission)` yes (under the display name and with the host role the invitation gives),
/// `Err(message)` no (the client gets the error `forbidden` with that message). Must be quick:
/// it runs on the hub's task.
pub type AdmitFn = Arc<dyn Fn(&RoomId, Option<&str>) -> Result<Admission, String> + Send + Sync>;

/// An [`AdmitFn`] that lets everyone in (`[access] mode = "open"`).
pub fn admit_everyone() -> AdmitFn {
    Arc::new(|_: &RoomId, _: Option<&str>| Ok(Admission::default()))
}

/// Decides whether a fresh `hello` of a space may proceed, given the `token` it carried:
/// `Ok(name)` yes (with the display name the invitation fixes, if any), `Err(message)` no
/// (`forbidden`). Must be quick: it runs on the hub's task.
pub type AdmitSpaceFn =
    Arc<dyn Fn(&SpaceId, Option<&str>) -> Result<Option<String>, String> + Send + Sync>;

/// An [`AdmitSpaceFn`] that lets everyone in (`[access] mode = "open"`).
pub fn admit_everyone_to_spaces() -> AdmitSpaceFn {
    Arc::new(|_: &SpaceId, _: Option<&str>| Ok(None))
}

/// What happens to peers, for the part of the server that keeps per-peer state outside the
/// registry (TURN credentials and allocations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// `joined` (fresh or resumed) was sent with credentials from the [`IceServersFn`].
    Issued { room: RoomId, peer: PeerId },
    /// The peer left, was cut off, or stayed away past the reconnect grace: it is gone for good.
    Removed { room: RoomId, peer: PeerId },
}

/// How signaling reaches the rest of the server.
#[derive(Clone)]
pub struct Hooks {
    pub ice_servers: IceServersFn,
    pub admit: AdmitFn,
    /// The access rule of spaces (`hello`).
    pub admit_space: AdmitSpaceFn,
    /// Where [`PeerEvent`]s go; `None` = nobody listens. Bounded: a full channel drops events
    /// (logged) rather than stall the hub.
    pub events: Option<tokio::sync::mpsc::Sender<PeerEvent>>,
}

impl Hooks {
    /// Hooks with the given `iceServers` source, everyone admitted, no events.
    pub fn with_ice_servers(ice_servers: IceServersFn) -> Hooks {
        Hooks {
            ice_servers,
            admit: admit_everyone(),
            admit_space: admit_everyone_to_spaces(),
            events: None,
        }
    }
}

/// Most signals kept for a peer whose connection dropped, until it resumes.
pub const AWAY_QUEUE_LEN: usize = 64;
/// Most signal payload bytes kept for such a peer.
pub const AWAY_QUEUE_BYTES: usize = 256 * 1024;
/// Most people one person may block at once.
pub const MAX_BLOCKS: usize = 1000;

/// What signaling is configured with besides `[rooms]`.
#[derive(Clone, Default)]
pub struct Extras {
    /// `[calls]`.
    pub calls: CallsConfig,
    /// `[http] allowed_origins`: other origins whose pages may use `/ws`.
    pub allowed_origins: Vec<String>,
    /// On a node of a cluster: the cluster, whose rooms and spaces may live on other nodes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The running signaling service: its hub and what the `/ws` route needs.
#[derive(Clone)]
pub struct Signaling {
    state: ws::WsState,
}

impl Signaling {
    /// Starts the hub. `https_addr` is the bound HTTPS listener (its port and address decide the
    /// accepted origins); `shutdown` turning true closes every connection with code 1001.
    pub fn start(
        config: &RoomsConfig,
        public_host: &str,
        https_addr: SocketAddr,
        ice_servers: IceServersFn,
        shutdown: watch::Receiver<bool>,
    ) -> Signaling {
        let hooks = Hooks::with_ice_servers(ice_servers);
        let extras = Extras::default();
        Self::start_with_hooks(config, &extras, public_host, https_addr, hooks, shutdown)
    }

    /// [`Signaling::start`] with every hook: `iceServers`, the access rule, peer events.
    pub fn start_with_hooks(
        config: &RoomsConfig,
        extras: &Extras,
        public_host: &str,
        https_addr: SocketAddr,
        hooks: Hooks,
        shutdown: watch::Receiver<bool>,
    ) -> Signaling {
        let hub = hub::spawn(
            RegistryConfig {
                max_peers: config.max_peers,
                reconnect_grace: config.reconnect_grace,
                away_queue_len: AWAY_QUEUE_LEN,
                away_queue_bytes: AWAY_QUEUE_BYTES,
                max_waiting: config.max_waiting,
                lobby_timeout: config.lobby_timeout,
                lock_new_rooms: config.lock_new_rooms,
            },
            SpacesConfig {
                max_people: extras.calls.max_people_per_space,
                reconnect_grace: config.reconnect_grace,
                ring_timeout: extras.calls.ring_timeout,
                ring_rate: extras.calls.ring_rate,
                join_timeout: config.join_timeout,
                max_blocks: MAX_BLOCKS,
            },
            config.join_rate_per_ip,
            hooks,
            extras.cluster.as_ref().and_then(|c| c.take_hub_link()),
        );
        let origins =
            OriginPolicy::new(public_host, https_addr).with_others(&extras.allowed_origins);
        info!(origins = ?origins.allowed(), "signaling on /ws");
        let settings = ws::Settings {
            rooms: config.clone(),
            origins,
            caps: ConnectionCaps::new(
                crate::caps::Edge::WebSocket,
                config.max_connections,
                config.max_connections_per_ip,
            ),
            shutdown,
            cluster: extras.cluster.clone(),
        };
        Signaling {
            state: ws::WsState {
                hub,
                settings: Arc::new(settings),
            },
        }
    }

    /// The `/ws` route, to merge into the application router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(ws::upgrade))
            .with_state(self.state.clone())
    }

    pub fn handle(&self) -> HubHandle {
        self.state.hub.clone()
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.state.settings.caps.open()
    }

    /// After shutdown was signalled: waits until every connection has sent its close frame
    /// and ended, or until `limit`.
    pub async fn wait_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
