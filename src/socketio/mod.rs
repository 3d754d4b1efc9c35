//! Socket.IO compatibility (`[compat] socketio`): `/socket.io/` speaks Engine.IO v3 and v4
//! (socket.io-client 2.x to 4.x, WebSocket and long-polling) through `socketioxide`, and
//! `/socket.io/socket.io.js` serves the official client, so an app written for one of three
//! classic Node.js signaling servers runs against signalbox unchanged (`docs/socketio.md`).
//!
//! Design: `socketioxide` owns the transports and the packet format; this module maps the
//! three event vocabularies ([`vocab`]) onto the signaling hub. Each socket is a connection of
//! the hub, served by a task of its own ([`conn`]) as a `/ws` connection is: the rooms of
//! vocabularies 1 and 2 are rooms of the one registry (named apart from native rooms, two
//! sockets each), so `[rooms]` limits, the join rate per address, the room gauges, the admin
//! view and the drain apply to them as to native rooms. Vocabulary 3 addresses sockets by id
//! and needs no room: its events are emitted straight to the addressee, and the user list is
//! the one table here, under a mutex taken once per connect and disconnect.
//!
//! The protections of `/ws`: the `Origin` check (the server's own origins plus
//! `[compat] socketio_origins`) runs on every HTTP request to `/socket.io/` before
//! `socketioxide` sees it; a WebSocket message is bounded by [`wsguard`] (socketioxide 0.16 has
//! no setting for it), a long-polling body by Engine.IO's `max_payload`, both at twice
//! `[rooms] max_message_bytes`; a socket's connect is refused (`connect_error`) over
//! `[compat] connect_rate_per_ip` or the connection caps (`[rooms] max_connections`,
//! `max_connections_per_ip`, counted apart from `/ws`); every event takes a token of the
//! socket's rate limit (`[rooms] rate_per_second`, `rate_burst`) and is measured against
//! `[rooms] max_message_bytes`. A refused event gets an `error` event `{code, message}`.
//!
//! TURN: on connect each socket gets an `iceServers` event with credentials of its own (user
//! part `~@socket.io<sep>SID`, which no native room can produce). Like a native peer's, they
//! are in the TURN server's live-peer set only while the socket is connected, are renewed at
//! 80 % of their lifetime, and the socket's allocations are closed when it disconnects.

mod conn;
mod vocab;
pub mod wsguard;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, watch, Notify};
use tracing::debug;

use crate::caps::{ConnPermit, ConnectionCaps, Edge};
use crate::config::Config;
use crate::credentials::service::CloseUserFn;
use crate::credentials::{unix_now, Issuer, UserPart};
use crate::http::error_json;
use crate::metrics::{self, METRICS};
use crate::ratelimit::{Buckets, Rate};
use crate::signaling::limits::OriginPolicy;
use crate::signaling::outbox::outbox;
use crate::signaling::HubHandle;
pub use conn::SHUTDOWN_EVENT;
use signalbox_turn_proto::policy::AddrKey;

/// The official socket.io-client 4.x browser build (`dist/socket.io.min.js` of the npm package;
/// licence in `public/vendor/socket.io-client.LICENSE`).
const CLIENT_JS: &str = include_str!("../../public/vendor/socket.io.min.js");

/// The room part of every Socket.IO socket's TURN user part: `@` is never in a native room
/// name, so no native peer can share a Socket.IO socket's credentials.
const TURN_ROOM: &str = "@socket.io";

/// Client addresses whose connect rate is tracked at once.
const TRACKED_ADDRESSES: usize = 4096;

/// Where `iceServers` come from when TURN runs.
#[derive(Clone)]
pub struct Turn {
    pub issuer: Arc<Issuer>,
    pub ttl: Duration,
    pub close_user: Option<CloseUserFn>,
}

/// What the endpoint needs from the rest of the server.
pub struct Wiring {
    pub https_addr: SocketAddr,
    pub turn: Option<Turn>,
    /// The signaling hub whose registry holds the rooms.
    pub hub: HubHandle,
    /// Turns true when the server starts draining: connects are refused from then on.
    pub drain: watch::Receiver<bool>,
    /// Turns true when the drain's grace ends: every socket is disconnected.
    pub shutdown: watch::Receiver<bool>,
}

/// The running endpoint: its routes, and a way to wait for its sockets at shutdown.
pub struct Endpoint {
    pub router: Router,
    compat: Arc<Compat>,
    websockets: wsguard::Open,
}

impl Endpoint {
    /// After shutdown was signalled: waits until every socket has been disconnected and every
    /// WebSocket has ended (a client closes its WebSocket once it has the disconnect packet),
    /// or until `limit`.
    pub async fn wait_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while (self.compat.caps.open() > 0 || self.websockets.open() > 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `/socket.io/` routes for `config`, or `None` when `[compat] socketio` is off.
pub fn endpoint(config: &Config, wiring: Wiring) -> Option<Endpoint> {
    if !config.compat.socketio {
        return None;
    }
    let rooms = &config.rooms;
    let hard_limit = rooms.max_message_bytes.saturating_mul(2);
    let (layer_svc, io) = SocketIo::builder()
        .max_payload(u64::try_from(hard_limit).unwrap_or(u64::MAX))
        .max_buffer_size(rooms.outbound_queue)
        .ping_interval(rooms.ping_interval)
        .ping_timeout(rooms.ping_timeout)
        .connect_timeout(rooms.join_timeout)
        .build_svc();
    let rate = Rate {
        per_minute: config.compat.connect_rate_per_ip,
        burst: config.compat.connect_rate_per_ip,
    };
    let compat = Arc::new(Compat {
        io: io.clone(),
        hub: wiring.hub,
        drain: wiring.drain,
        shutdown: wiring.shutdown,
        sockets: Mutex::new(HashMap::new()),
        connects: Mutex::new((Buckets::new(rate, TRACKED_ADDRESSES), Instant::now())),
        caps: ConnectionCaps::new(
            Edge::WebSocket,
            rooms.max_connections,
            rooms.max_connections_per_ip,
        ),
        origins: Origins {
            own: OriginPolicy::new(&config.server.public_host, wiring.https_addr),
            extra: config.compat.socketio_origins.clone(),
        },
        max_message_bytes: rooms.max_message_bytes,
        rate: (rooms.rate_per_second, rooms.rate_burst),
        max_userlist: config.compat.max_userlist,
        outbound_queue: rooms.outbound_queue,
        public_host: config.server.public_host.clone(),
        turn: wiring.turn,
    });
    let on_connect = compat.clone();
    let admit = compat.clone();
    io.ns(
        "/",
        (move |socket: SocketRef| on_connect.connected(socket))
            .with(move |socket: SocketRef| admit.admit_connect(&socket)),
    );
    let guard = compat.clone();
    let ws_guard = wsguard::Guard::new(layer_svc.clone(), hard_limit, rooms.ping_timeout);
    let websockets = ws_guard.open();
    let router = Router::new()
        .route("/socket.io/socket.io.js", get(client_js))
        .route_service("/socket.io/", layer_svc)
        .layer(middleware::from_fn_with_state(
            ws_guard,
            wsguard::bound_websocket,
        ))
        .layer(middleware::from_fn_with_state(guard, check_origin));
    Some(Endpoint {
        router,
        compat,
        websockets,
    })
}

async fn client_js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/javascript; charset=utf-8"),
        )],
        CLIENT_JS,
    )
        .into_response()
}

/// Refuses requests from pages of foreign origins before Engine.IO sees them (403).
async fn check_origin(State(compat): State<Arc<Compat>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/socket.io/socket.io.js" {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if !compat.origins.allows(origin) {
        debug!(?origin, "Socket.IO refused: origin not allowed");
        return error_json(
            StatusCode::FORBIDDEN,
            "forbidden-origin",
            "this page's origin may not use this server's Socket.IO endpoint",
        );
    }
    next.run(req).await
}

struct Origins {
    own: OriginPolicy,
    extra: Vec<String>,
}

impl Origins {
    fn allows(&self, origin: Option<&str>) -> bool {
        self.own.allows(origin)
            || origin.is_some_and(|o| self.extra.iter().any(|a| a.eq_ignore_ascii_case(o.trim())))
    }
}

/// The shared state of the endpoint.
struct Compat {
    io: SocketIo,
    hub: HubHandle,
    drain: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    /// The connected sockets, for `updateUserlist`; what each holds until it disconnects.
    sockets: Mutex<HashMap<Sid, Held>>,
    /// Connect budgets by client address, and the origin of their clock.
    connects: Mutex<(Buckets<AddrKey>, Instant)>,
    caps: Arc<ConnectionCaps>,
    origins: Origins,
    max_message_bytes: usize,
    /// `(rate_per_second, rate_burst)`.
    rate: (u32, u32),
    max_userlist: usize,
    outbound_queue: usize,
    public_host: String,
    turn: Option<Turn>,
}

/// What a connected socket holds until it disconnects.
struct Held {
    _permit: ConnPermit,
    /// Wakes the socket's task when the socket disconnects.
    gone: Arc<Notify>,
    /// The task that renews this socket's TURN credentials.
    renewal: Option<tokio::task::AbortHandle>,
}

/// The permit a socket took in [`Compat::admit_connect`], until [`Compat::connected`].
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<ConnPermit>>>);

/// Why an event was refused; sent as the `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{0}")]
    BadRequest(String),
    #[error("more than [rooms] rate_per_second events")]
    RateLimited,
    #[error("an event larger than [rooms] max_message_bytes")]
    TooLarge,
    #[error("no connected socket has this id")]
    UnknownPeer,
    #[error("this socket is not in that room")]
    NotInRoom,
}

impl EventError {
    fn code(&self) -> &'static str {
        match self {
            EventError::BadRequest(_) => "bad-request",
            EventError::RateLimited => "rate-limited",
            EventError::TooLarge => "too-large",
            EventError::UnknownPeer => "unknown-peer",
            EventError::NotInRoom => "not-in-room",
        }
    }
}

/// Why a connect was refused; the client's `connect_error` carries it as its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ConnectError {
    #[error("shutting-down: the server is shutting down; connect again later")]
    ShuttingDown,
    #[error("bad-request: the connection has no client address")]
    NoAddress,
    #[error(
        "rate-limited: more than {0} connects per minute from your address; connect again in {1} s"
    )]
    RateLimited(u32, u64),
    #[error("too-many-connections: {0}")]
    TooMany(crate::caps::CapError),
}

impl Compat {
    /// The connect middleware: the drain, the connect rate and the caps, before the socket
    /// joins the namespace. The permit waits in the socket's extensions for [`Self::connected`].
    fn admit_connect(&self, socket: &SocketRef) -> Result<(), ConnectError> {
        // A socket that connected now would miss the drain's `server-shutdown`.
        if *self.drain.borrow() || *self.shutdown.borrow() {
            return Err(ConnectError::ShuttingDown);
        }
        let ip = client_ip(socket).ok_or(ConnectError::NoAddress)?;
        let taken = {
            let (buckets, started) = &mut *self.connects.lock().unwrap_or_else(|e| e.into_inner());
            let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            take_connect(buckets, ip, now_ms)
        };
        if let Err(e) = taken {
            METRICS.rate_limited.at(metrics::LIMITED_SOCKETIO).inc();
            return Err(e);
        }
        let permit = self.caps.acquire(ip).map_err(ConnectError::TooMany)?;
        socket
            .extensions
            .insert(Admitted(Arc::new(Mutex::new(Some(permit)))));
        Ok(())
    }

    fn connected(self: Arc<Self>, socket: SocketRef) {
        let permit = socket
            .extensions
            .remove::<Admitted>()
            .and_then(|a| a.0.lock().ok()?.take());
        let (Some(permit), Some(ip)) = (permit, client_ip(&socket)) else {
            debug!("Socket.IO socket connected without passing admission; disconnected");
            let _ = socket.disconnect();
            return;
        };
        let gone = Arc::new(Notify::new());
        let held = Held {
            _permit: permit,
            gone: gone.clone(),
            renewal: None,
        };
        self.lock().insert(socket.id, held);
        METRICS.ws_connections_active.inc();

        let queue = usize::try_from(self.rate.1).unwrap_or(usize::MAX).max(1);
        let (events, inbound) = mpsc::channel(queue);
        for event in vocab::EVENTS {
            let events = events.clone();
            socket.on(event, move |s: SocketRef, TryData(data): TryData<Value>| {
                // No argument at all (`socket.emit('bye')`) reads as null.
                let data = data.unwrap_or(Value::Null);
                if events.try_send((event, data)).is_err() {
                    METRICS.rate_limited.at(metrics::LIMITED_SIGNALING).inc();
                    let message = format!("{event}: {}", EventError::RateLimited);
                    send_error(&s, EventError::RateLimited.code(), &message);
                }
            });
        }
        let me = self.clone();
        socket.on_disconnect(move |s: SocketRef| me.disconnected(s.id));

        let conn = self.hub.next_conn();
        let task = conn::SocketTask::new(self.clone(), socket.clone(), conn, ip);
        let boxes = outbox(self.outbound_queue);
        tokio::spawn(task.run(inbound, gone, boxes, self.shutdown.clone()));
        self.send_ice_servers(&socket);
        self.broadcast_userlist();
    }

    fn disconnected(&self, sid: Sid) {
        let Some(held) = self.lock().remove(&sid) else {
            return;
        };
        held.gone.notify_one();
        METRICS.ws_connections_active.dec();
        if let Some(task) = held.renewal {
            task.abort();
        }
        if let Some(turn) = &self.turn {
            let user = turn_user(turn, sid);
            turn.issuer.forget_peer(&user);
            if let Some(close) = &turn.close_user {
                close(&user);
            }
        }
        self.broadcast_userlist();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Sid, Held>> {
        // A panic elsewhere while holding the lock leaves a plain map behind, still usable.
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `event` to the socket `to`, if it is connected.
    fn emit_to<T: serde::Serialize + ?Sized>(&self, to: Sid, event: &str, data: &T) -> bool {
        match self.io.get_socket(to) {
            Some(s) => {
                let sent = s.emit(event, data).is_ok();
                if sent {
                    METRICS.ws_messages.at(1).inc();
                }
                sent
            }
            None => false,
        }
    }

    /// `updateUserlist` to every socket: the connected socket ids, at most `max_userlist`.
    fn broadcast_userlist(&self) {
        let sids: Vec<Sid> = self.lock().keys().copied().collect();
        let list: Vec<String> = sids
            .iter()
            .take(self.max_userlist)
            .map(Sid::to_string)
            .collect();
        let body = json!({ "userList": list });
        for sid in sids {
            self.emit_to(sid, "updateUserlist", &body);
        }
    }

    fn send_ice_servers(self: &Arc<Self>, socket: &SocketRef) {
        let Some(turn) = self.turn.clone() else {
            let _ = socket.emit("iceServers", &Value::Array(Vec::new()));
            return;
        };
        let sid = socket.id;
        let list = ice_servers(&turn, sid);
        let _ = socket.emit("iceServers", &list);
        let me = self.clone();
        let renew_every = (turn.ttl * 4 / 5).max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let list = ice_servers(&turn, sid);
                if !me.emit_to(sid, "iceServers", &list) {
                    break;
                }
            }
        });
        match self.lock().get_mut(&sid) {
            Some(held) => held.renewal = Some(task.abort_handle()),
            // Disconnected in the meantime.
            None => task.abort(),
        }
    }
}

/// Takes a connect from the budget of `ip`'s address (an IPv4 address, or an IPv6 /64).
fn take_connect(
    buckets: &mut Buckets<AddrKey>,
    ip: std::net::IpAddr,
    now_ms: u64,
) -> Result<(), ConnectError> {
    buckets
        .take(&AddrKey::of(ip), now_ms)
        .map_err(|wait| ConnectError::RateLimited(buckets.rate().per_minute, wait.as_secs().max(1)))
}

/// The client's address, as the HTTPS listener resolved it (a trusted proxy's client).
fn client_ip(socket: &SocketRef) -> Option<std::net::IpAddr> {
    socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn turn_user(turn: &Turn, sid: Sid) -> UserPart {
    UserPart::for_peer(TURN_ROOM, &sid.to_string(), turn.issuer.minter.separator())
}

fn ice_servers(turn: &Turn, sid: Sid) -> Value {
    turn.issuer
        .ice_servers_for_peer(TURN_ROOM, &sid.to_string(), unix_now(), turn.ttl)
}

fn send_error(socket: &SocketRef, code: &str, message: &str) {
    let _ = socket.emit("error", &json!({ "code": code, "message": message }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_are_counted_per_ipv4_address_and_per_ipv6_slash_64() {
        let rate = Rate {
            per_minute: 2,
            burst: 2,
        };
        let mut buckets = Buckets::new(rate, TRACKED_ADDRESSES);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
        assert_eq!(take_connect(&mut buckets, ip("2001:db8:1:2::1"), 0), Ok(()));
        assert_eq!(
            take_connect(&mut buckets, ip("2001:db8:1:2::ffff"), 0),
            Ok(())
        );
        assert_eq!(
            take_connect(&mut buckets, ip("2001:db8:1:2:abcd::9"), 0),
            Err(ConnectError::RateLimited(2, 30))
        );
        assert_eq!(take_connect(&mut buckets, ip("2001:db8:1:3::1"), 0), Ok(()));
        assert_eq!(take_connect(&mut buckets, ip("192.0.2.7"), 0), Ok(()));
        assert_eq!(
            take_connect(&mut buckets, ip("::ffff:192.0.2.7"), 0),
            Ok(())
        );
        assert!(take_connect(&mut buckets, ip("192.0.2.7"), 0).is_err());
        assert_eq!(take_connect(&mut buckets, ip("192.0.2.8"), 0), Ok(()));
        // A token comes back every 30 s at 2 a minute.
        assert_eq!(take_connect(&mut buckets, ip("192.0.2.7"), 30_000), Ok(()));
    }

    #[test]
    fn listed_origins_are_let_in_besides_the_servers_own() {
        let origins = Origins {
            own: OriginPolicy::new("call.example.org", "0.0.0.0:8443".parse().expect("addr")),
            extra: vec!["https://app.example.org".into()],
        };
        assert!(origins.allows(Some("https://call.example.org:8443")));
        assert!(origins.allows(Some("https://APP.example.org")));
        assert!(origins.allows(None), "scripts and native apps send none");
        assert!(!origins.allows(Some("https://evil.example.org")));
        assert!(!origins.allows(Some("https://app.example.org:8443")));
    }
}
