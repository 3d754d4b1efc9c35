//! Socket.IO compatibility (`[compat] socketio`): `/socket.io/` speaks Engine.IO v3 and v4
//! (socket.io-client 2.x to 4.x, WebSocket and long-polling) through `socketioxide`, and
//! `/socket.io/socket.io.js` serves the official client, so an app written for one of three
//! classic Node.js signaling servers runs against signalbox unchanged (`docs/socketio.md`).
//!
//! Design: `socketioxide` owns the transports and the packet format; this module only maps the
//! three event vocabularies ([`vocab`]) onto a small room table ([`rooms`], pure, rooms of two)
//! kept with the per-socket state under one mutex, taken once per event and never held across
//! an await or an emit. Emits are `try_send`s into each socket's bounded queue, so a client
//! that stops reading cannot stall anyone else.
//!
//! The protections of `/ws`: the `Origin` check (the server's own origins plus
//! `[compat] socketio_origins`) runs on every HTTP request to `/socket.io/` before
//! `socketioxide` sees it; each socket holds a permit of its own [`ConnectionCaps`] sized by
//! `[rooms] max_connections` and `max_connections_per_ip`; every event takes a token from the
//! socket's [`RateLimiter`] (`[rooms] rate_per_second`, `rate_burst`) and is measured against
//! `[rooms] max_message_bytes`. Engine.IO refuses a long-polling body over twice that (over
//! WebSocket socketioxide 0.16 has no such limit to set). A refused event
//! gets an `error` event `{code, message}`.
//!
//! TURN: on connect each socket gets an `iceServers` event with credentials of its own (user
//! part `~@socket.io<sep>SID`, which no native room can produce). Like a native peer's, they
//! are in the TURN server's live-peer set only while the socket is connected, are renewed at
//! 80 % of their lifetime, and the socket's allocations are closed when it disconnects.

pub mod rooms;
mod vocab;

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
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;
use tracing::debug;

use crate::caps::{ConnPermit, ConnectionCaps, Edge};
use crate::config::Config;
use crate::credentials::service::CloseUserFn;
use crate::credentials::{unix_now, Issuer, UserPart};
use crate::http::error_json;
use crate::signaling::limits::{OriginPolicy, RateLimiter};

/// The official socket.io-client 4.x browser build (`dist/socket.io.min.js` of the npm package;
/// licence in `public/vendor/socket.io-client.LICENSE`).
const CLIENT_JS: &str = include_str!("../../public/vendor/socket.io.min.js");

/// The room part of every Socket.IO socket's TURN user part: `@` is never in a native room
/// name, so no native peer can share a Socket.IO socket's credentials.
const TURN_ROOM: &str = "@socket.io";

/// Where `iceServers` come from when TURN runs.
#[derive(Clone)]
pub struct Turn {
    pub issuer: Arc<Issuer>,
    pub ttl: Duration,
    pub close_user: Option<CloseUserFn>,
}

/// The `/socket.io/` routes for `config`, or `None` when `[compat] socketio` is off.
pub fn router(config: &Config, https_addr: SocketAddr, turn: Option<Turn>) -> Option<Router> {
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
    let compat = Arc::new(Compat {
        io: io.clone(),
        state: Mutex::new(Sockets::default()),
        caps: ConnectionCaps::new(
            Edge::WebSocket,
            rooms.max_connections,
            rooms.max_connections_per_ip,
        ),
        origins: Origins {
            own: OriginPolicy::new(&config.server.public_host, https_addr),
            extra: config.compat.socketio_origins.clone(),
        },
        max_message_bytes: rooms.max_message_bytes,
        rate: (rooms.rate_per_second, rooms.rate_burst),
        max_userlist: config.compat.max_userlist,
        public_host: config.server.public_host.clone(),
        turn,
    });
    let on_connect = compat.clone();
    io.ns("/", move |socket: SocketRef| on_connect.connected(socket));
    let guard = compat.clone();
    Some(
        Router::new()
            .route("/socket.io/socket.io.js", get(client_js))
            .route_service("/socket.io/", layer_svc)
            .layer(middleware::from_fn_with_state(guard, check_origin)),
    )
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
    state: Mutex<Sockets>,
    caps: Arc<ConnectionCaps>,
    origins: Origins,
    max_message_bytes: usize,
    /// `(rate_per_second, rate_burst)`.
    rate: (u32, u32),
    max_userlist: usize,
    public_host: String,
    turn: Option<Turn>,
}

#[derive(Default)]
struct Sockets {
    rooms: rooms::Rooms<Sid>,
    by_sid: HashMap<Sid, Conn>,
}

struct Conn {
    _permit: ConnPermit,
    rate: RateLimiter,
    /// The task that renews this socket's TURN credentials.
    renewal: Option<tokio::task::AbortHandle>,
}

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

impl Compat {
    fn connected(self: Arc<Self>, socket: SocketRef) {
        let ip = socket
            .req_parts()
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let Some(ip) = ip else {
            debug!("Socket.IO connection without a client address: refused");
            let _ = socket.disconnect();
            return;
        };
        let permit = match self.caps.acquire(ip) {
            Ok(p) => p,
            Err(e) => {
                send_error(&socket, "too-many-connections", &e.to_string());
                let _ = socket.disconnect();
                return;
            }
        };
        let (rate, burst) = self.rate;
        let conn = Conn {
            _permit: permit,
            rate: RateLimiter::new(rate, burst, Instant::now()),
            renewal: None,
        };
        self.lock().by_sid.insert(socket.id, conn);
        crate::metrics::METRICS.ws_connections_active.inc();
        vocab::register(&self, &socket);
        let me = self.clone();
        socket.on_disconnect(move |s: SocketRef| me.disconnected(s.id));
        self.send_ice_servers(&socket);
        self.broadcast_userlist();
    }

    fn disconnected(&self, sid: Sid) {
        let conn = {
            let mut state = self.lock();
            state.rooms.leave(&sid);
            state.by_sid.remove(&sid)
        };
        let Some(conn) = conn else { return };
        crate::metrics::METRICS.ws_connections_active.dec();
        if let Some(task) = conn.renewal {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Sockets> {
        // A panic elsewhere while holding the lock leaves plain maps behind, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate and size check every event passes first.
    fn admit(&self, sid: Sid, payload: &Value) -> Result<(), EventError> {
        {
            let mut state = self.lock();
            let conn = state.by_sid.get_mut(&sid).ok_or(EventError::UnknownPeer)?;
            if !conn.rate.allow(Instant::now()) {
                return Err(EventError::RateLimited);
            }
        }
        let size = serde_json::to_vec(payload).map_or(usize::MAX, |v| v.len());
        if size > self.max_message_bytes {
            return Err(EventError::TooLarge);
        }
        crate::metrics::METRICS.ws_messages.at(0).inc();
        Ok(())
    }

    /// Sends `event` to the socket `to`, if it is connected.
    fn emit_to<T: serde::Serialize + ?Sized>(&self, to: Sid, event: &str, data: &T) -> bool {
        match self.io.get_socket(to) {
            Some(s) => {
                let sent = s.emit(event, data).is_ok();
                if sent {
                    crate::metrics::METRICS.ws_messages.at(1).inc();
                }
                sent
            }
            None => false,
        }
    }

    /// `updateUserlist` to every socket: the connected socket ids, at most `max_userlist`.
    fn broadcast_userlist(&self) {
        let sids: Vec<Sid> = self.lock().by_sid.keys().copied().collect();
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
        let mut state = self.lock();
        match state.by_sid.get_mut(&sid) {
            Some(conn) => conn.renewal = Some(task.abort_handle()),
            // Disconnected in the meantime.
            None => task.abort(),
        }
    }
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
