//! The WebSocket edge: the `/ws` upgrade and one task per connection.
//!
//! The upgrade refuses foreign origins (403) and connections over the caps (503 total, 429 per
//! client address: an IPv4 address or an IPv6 /64) before any WebSocket exists. The connection task then owns its socket alone, so reads,
//! writes, timers and the rate limit need no locks; it parses frames, answers local errors
//! (`bad-request`, `rate-limited`, `too-large`) itself and forwards valid messages to the hub.
//! Everything it writes comes from one bounded outbox that the hub and the task both feed.
//!
//! Frames that have no answer in the protocol cost no answer: a binary frame closes the
//! connection (1003), and WebSocket pings take from the same rate budget as text messages, a
//! ping beyond it closing the connection (1008) instead of drawing an error per frame.
//!
//! Timers, one `sleep` per connection: the join deadline (until `joined`, `waiting` or `people`
//! went out: a connection in a room, a lobby or a space counts as joined), the next
//! WebSocket ping, and the pong deadline (any inbound frame counts as the pong). A write that
//! cannot finish within `ping_timeout` means the client stopped reading: it is dropped.

use crate::metrics::{self, METRICS};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::SinkExt as _;
use tokio::sync::watch;
use tracing::debug;

use super::hub::{Command, HubHandle};
use super::limits::{earliest, CapError, ConnPermit, ConnectionCaps, OriginPolicy, RateLimiter};
use super::outbox::{outbox, ConnEnd, Kill};
use super::protocol::{parse_client, ClientMessage, ErrorCode, ServerMessage, SpaceAction};
use super::rooms::ConnId;
use crate::config::RoomsConfig;
use crate::http::error_json;

/// Close codes (RFC 6455 §7.4.1, plus one application code).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary frame: the protocol is JSON text.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// The node holding this connection's room went away: reconnect and join again.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The peer was resumed on another connection.
    pub const REPLACED: u16 = 4000;
}

/// Time allowed for a close frame to go out before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Queued messages written per flush.
const WRITE_BATCH: usize = 64;
/// Read buffer, and the most read from TLS at once; it grows for larger frames. Small because
/// it is zero-filled (resident) on every connection and most connections idle: 1 KiB instead
/// of 4 KiB took the bench's resident memory per idle connection from 17.4 to about 14.5 KiB,
/// and 512 bytes saves another half KiB. A join or an ICE candidate (about 300 bytes as a
/// signal) still arrives in one read; an SDP takes a few.
const READ_BUFFER: usize = 512;

/// What every connection task shares; read-only after start.
pub struct Settings {
    pub rooms: RoomsConfig,
    pub origins: OriginPolicy,
    pub caps: Arc<ConnectionCaps>,
    pub shutdown: watch::Receiver<bool>,
    /// On a node of a cluster: where rooms and spaces live.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Clone)]
pub struct WsState {
    pub hub: HubHandle,
    pub settings: Arc<Settings>,
}

/// `GET /ws`: checks origin and caps, then upgrades.
pub async fn upgrade(
    State(state): State<WsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let settings = &state.settings;
    // A non-UTF-8 Origin can match nothing; it is compared as an impossible value.
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    if !settings.origins.allows(origin) {
        debug!(%peer, ?origin, "WebSocket refused: origin not allowed");
        return error_json(
            StatusCode::FORBIDDEN,
            "forbidden-origin",
            "this page's origin may not use this server's signaling",
        );
    }
    if *settings.shutdown.borrow() {
        return error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "the server is shutting down",
        );
    }
    let permit = match settings.caps.acquire(peer.ip()) {
        Ok(p) => p,
        Err(e) => {
            let status = match e {
                CapError::Total(_) => StatusCode::SERVICE_UNAVAILABLE,
                CapError::PerAddress(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            return error_json(status, "too-many-connections", &e.to_string());
        }
    };
    let hard_limit = settings.rooms.max_message_bytes.saturating_mul(2);
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            let conn = Connection::new(state.hub.clone(), state.settings.clone(), peer);
            conn.run(socket, permit)
        })
}

/// How a connection ended, which decides the close frame (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// EOF, reset or I/O error: nothing more can be sent.
    Dropped,
    /// No frame within `ping_timeout` of a ping.
    Silent,
    /// A write did not finish within `ping_timeout`, or the queue overflowed.
    NotReading,
    JoinTimeout,
    /// A frame over twice `max_message_bytes`.
    TooBig,
    /// A binary frame.
    Binary,
    /// A WebSocket ping beyond the message rate.
    PingFlood,
    Protocol,
    InvalidUtf8,
    Replaced,
    /// The node where its room or space lived is gone.
    HomeLost,
    Shutdown,
    HubGone,
}

struct Connection {
    id: ConnId,
    hub: HubHandle,
    settings: Arc<Settings>,
    peer: SocketAddr,
    rate: RateLimiter,
    /// The connection is in a room, or a lobby, or a space.
    joined: Joined,
    join_deadline: Instant,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
}

impl Connection {
    fn new(hub: HubHandle, settings: Arc<Settings>, peer: SocketAddr) -> Connection {
        let now = Instant::now();
        let r = &settings.rooms;
        Connection {
            id: hub.next_conn(),
            rate: RateLimiter::new(r.rate_per_second, r.rate_burst, now),
            joined: Joined::default(),
            join_deadline: now + r.join_timeout,
            next_ping: now + r.ping_interval,
            pong_deadline: None,
            hub,
            settings,
            peer,
        }
    }

    // One future for the whole connection, and not an `async fn`: either a nested one or the
    // `async fn` itself would keep a second copy of the socket and the connection in every task.
    #[allow(clippy::manual_async_fn)]
    fn run(mut self, mut socket: WebSocket, permit: ConnPermit) -> impl Future<Output = ()> {
        async move {
            METRICS.ws_connections_active.inc();
            let (hub_end, out) = outbox(self.settings.rooms.outbound_queue);
            let mut shutdown = self.settings.shutdown.clone();
            let connected = self
                .hub
                .send(Command::Connect {
                    conn: self.id,
                    out: hub_end,
                    from: self.peer.ip(),
                })
                .await;
            let end = if !connected {
                End::HubGone
            } else if *shutdown.borrow_and_update() {
                End::Shutdown
            } else {
                self.serve(&mut socket, &out, &mut shutdown).await
            };
            debug!(conn = self.id.0, peer = %self.peer, ?end, "WebSocket connection ended");
            close(&mut socket, end, self.settings.rooms.max_message_bytes).await;
            drop(socket);
            drop(permit);
            if connected {
                self.hub
                    .send(Command::Disconnect { conn: self.id, out })
                    .await;
            }
            METRICS.ws_connections_active.dec();
        }
    }

    async fn serve(
        &mut self,
        socket: &mut WebSocket,
        out: &ConnEnd,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut armed = self.next_deadline();
        let timer = tokio::time::sleep_until(armed.into());
        tokio::pin!(timer);
        loop {
            let end = tokio::select! {
                biased;
                _ = shutdown.changed() => Some(End::Shutdown),
                why = poll_fn(|cx| out.poll_verdict(cx)) => Some(killed(why)),
                frame = socket.recv() => self.on_frame(frame, out).await,
                msg = poll_fn(|cx| out.poll_recv(cx)) => {
                    self.write_batch(msg, socket, out, shutdown).await
                }
                () = &mut timer => self.on_timer(socket, out, shutdown).await,
            };
            if let Some(end) = end {
                return end;
            }
            // Re-arming costs a trip through the timer wheel; most messages change nothing.
            let next = self.next_deadline();
            if next != armed {
                armed = next;
                timer.as_mut().reset(armed.into());
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let join = (!self.joined.any()).then_some(self.join_deadline);
        earliest([join, Some(self.next_ping), self.pong_deadline]).unwrap_or(self.next_ping)
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, axum::Error>>,
        out: &ConnEnd,
    ) -> Option<End> {
        let msg = match frame {
            None => return Some(End::Dropped),
            Some(Err(e)) => return Some(read_error(e)),
            Some(Ok(msg)) => msg,
        };
        self.pong_deadline = None;
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            METRICS.ws_messages.at(0).inc();
        }
        let reply = match msg {
            Message::Text(text) => match self.on_text(&text) {
                Ok(Some(msg)) => {
                    let cmd = match &self.settings.cluster {
                        None => Command::Client { conn: self.id, msg },
                        Some(cluster) => routed(cluster, self.id, msg, text.as_str()).await,
                    };
                    return (!self.hub.send(cmd).await).then_some(End::HubGone);
                }
                Ok(None) => return None,
                Err(reply) => reply,
            },
            Message::Binary(_) => return Some(End::Binary),
            // The WebSocket layer answers a ping by itself; what it costs is rate-limited.
            Message::Ping(_) if self.rate.allow(Instant::now()) => return None,
            Message::Ping(_) => {
                METRICS.rate_limited.at(metrics::LIMITED_SIGNALING).inc();
                return Some(End::PingFlood);
            }
            Message::Pong(_) => return None,
            Message::Close(_) => return Some(End::ClientClosed),
        };
        // Local replies share the outbound queue, so a client that does not read cannot
        // make them pile up either.
        out.try_send(reply).err().map(|_| End::NotReading)
    }

    /// A text frame: either a message for the hub, nothing, or an error to answer with.
    fn on_text(&mut self, text: &str) -> Result<Option<ClientMessage>, ServerMessage> {
        let now = Instant::now();
        if !self.rate.allow(now) {
            METRICS.rate_limited.at(metrics::LIMITED_SIGNALING).inc();
            let r = &self.settings.rooms;
            return Err(ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "more than {} messages per second (burst {}); message dropped",
                    r.rate_per_second, r.rate_burst
                ),
            ));
        }
        let max = self.settings.rooms.max_message_bytes;
        if text.len() > max {
            return Err(ServerMessage::error(
                ErrorCode::TooLarge,
                format!("frame of {} bytes exceeds {max} bytes; dropped", text.len()),
            ));
        }
        let msg = parse_client(text)
            .map_err(|e| ServerMessage::error(ErrorCode::BadRequest, e.to_string()))?;
        let left = match &msg {
            ClientMessage::Leave => Some(&mut self.joined.room),
            ClientMessage::Space(SpaceAction::LeaveSpace) => Some(&mut self.joined.space),
            _ => None,
        };
        if let Some(flag) = left {
            // Leaving (or trying to) starts a new wait for a join, which counts once the
            // connection is nowhere (a `call-ended` may take it out of its last room later).
            *flag = false;
            self.join_deadline = now + self.settings.rooms.join_timeout;
        }
        Ok(Some(msg))
    }

    /// Writes `first` and whatever else is queued, then flushes once.
    async fn write_batch(
        &mut self,
        first: ServerMessage,
        socket: &mut WebSocket,
        out: &ConnEnd,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<End> {
        let joined = &mut self.joined;
        let write = pin!(async {
            socket.feed(to_frame(first, joined)).await?;
            for _ in 1..WRITE_BATCH {
                match out.try_recv() {
                    Some(msg) => socket.feed(to_frame(msg, joined)).await?,
                    None => break,
                }
            }
            socket.flush().await
        });
        guarded(write, self.settings.rooms.ping_timeout, out, shutdown).await
    }

    async fn on_timer(
        &mut self,
        socket: &mut WebSocket,
        out: &ConnEnd,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<End> {
        let now = Instant::now();
        let r = &self.settings.rooms;
        if !self.joined.any() && now >= self.join_deadline {
            return Some(End::JoinTimeout);
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Some(End::Silent);
        }
        if now >= self.next_ping {
            self.next_ping = now + r.ping_interval;
            self.pong_deadline.get_or_insert(now + r.ping_timeout);
            let ping = pin!(socket.send(Message::Ping(Default::default())));
            return guarded(ping, r.ping_timeout, out, shutdown).await;
        }
        None
    }
}

/// Where a connection is, as far as `join_timeout` is concerned.
#[derive(Debug, Clone, Copy, Default)]
struct Joined {
    /// `joined` or `waiting` went out and no `leave` came since (nor `call-ended`, which takes
    /// the connection out of its call's room).
    room: bool,
    /// `people` went out and no `leave-space` came since.
    space: bool,
}

impl Joined {
    fn any(&self) -> bool {
        self.room || self.space
    }
}

/// A client message on a node of a cluster: with its text, and for `join` and `hello` the
/// node where the room or space lives (asked of Redis, which this connection waits for, so
/// that its next messages follow in order).
async fn routed(
    cluster: &crate::cluster::Cluster,
    conn: ConnId,
    msg: ClientMessage,
    text: &str,
) -> Command {
    use crate::cluster::bus::Homed;
    let located = match &msg {
        ClientMessage::Join { room, resume, .. } => {
            let resume = resume.as_ref().map(|r| r.as_str());
            Some(cluster.locate(Homed::Room(room.as_str()), resume).await)
        }
        ClientMessage::Space(SpaceAction::Hello { space, .. }) => {
            Some(cluster.locate(Homed::Space(space.as_str()), None).await)
        }
        _ => None,
    };
    let (home, record) = match located {
        Some(Ok((home, record))) => (Some(Ok(home)), record),
        Some(Err(why)) => (Some(Err(why)), None),
        None => (None, None),
    };
    let route = super::hub::Route {
        raw: text.into(),
        home,
        record,
    };
    Command::Routed {
        conn,
        msg,
        route: Box::new(route),
    }
}

/// Serializes an outbound message, noting when the connection has joined.
fn to_frame(msg: ServerMessage, joined: &mut Joined) -> Message {
    METRICS.ws_messages.at(1).inc();
    match &msg {
        ServerMessage::Joined(_) => {
            joined.room = true;
            METRICS.joins.inc();
        }
        // A connection waiting in a lobby has joined as far as `join_timeout` is concerned.
        ServerMessage::Waiting { .. } => joined.room = true,
        ServerMessage::People(_) => joined.space = true,
        ServerMessage::CallEnded { .. } => joined.room = false,
        ServerMessage::Error { code, .. } => {
            let errors = &METRICS.signaling_errors;
            if let Some(c) = errors.by_name(code.as_str()) {
                c.inc();
            }
        }
        ServerMessage::Relayed(r) => match r.kind() {
            "joined" => {
                joined.room = true;
                METRICS.joins.inc();
            }
            "waiting" => joined.room = true,
            "people" => joined.space = true,
            "call-ended" => joined.room = false,
            "error" => {
                let errors = &METRICS.signaling_errors;
                if let Some(c) = r.code().and_then(|code| errors.by_name(code)) {
                    c.inc();
                }
            }
            _ => {}
        },
        _ => {}
    }
    Message::Text(Utf8Bytes::from(msg.to_json()))
}

/// Runs a write, but gives up when it stalls, the hub kills the connection, or the server
/// shuts down. The write comes pinned by the caller: taken by value, it would be held twice in
/// the connection's future, as the argument and inside the `select!`.
async fn guarded(
    write: Pin<&mut impl Future<Output = Result<(), axum::Error>>>,
    stall: Duration,
    out: &ConnEnd,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<End> {
    tokio::select! {
        biased;
        _ = shutdown.changed() => Some(End::Shutdown),
        why = poll_fn(|cx| out.poll_verdict(cx)) => Some(killed(why)),
        r = write => r.err().map(read_error),
        () = tokio::time::sleep(stall) => Some(End::NotReading),
    }
}

fn killed(why: Option<Kill>) -> End {
    match why {
        Some(Kill::Overflow) => End::NotReading,
        Some(Kill::Replaced) => End::Replaced,
        Some(Kill::HomeLost) => End::HomeLost,
        None => End::HubGone,
    }
}

/// Maps a WebSocket error to how the connection ends.
fn read_error(e: axum::Error) -> End {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => End::TooBig,
        Some(WsError::Utf8(_)) => End::InvalidUtf8,
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => End::Dropped,
        Some(WsError::Protocol(_)) => End::Protocol,
        _ => End::Dropped,
    }
}

/// Sends the close frame that fits `end`, if the connection can still take one.
async fn close(socket: &mut WebSocket, end: End, max_message_bytes: usize) {
    use close_code::*;
    let frame = |code: u16, reason: String| {
        Some(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
    };
    let msg = match end {
        End::Shutdown => frame(GOING_AWAY, "server shutting down".into()),
        End::JoinTimeout => frame(POLICY, "no join in time".into()),
        End::TooBig => frame(
            TOO_BIG,
            format!("frame over {} bytes", max_message_bytes.saturating_mul(2)),
        ),
        End::Protocol => frame(PROTOCOL_ERROR, "WebSocket protocol error".into()),
        End::InvalidUtf8 => frame(INVALID_DATA, "text frame is not UTF-8".into()),
        End::Binary => frame(
            UNSUPPORTED_DATA,
            "binary frames are not supported; send JSON text".into(),
        ),
        End::PingFlood => frame(POLICY, "pings beyond the message rate".into()),
        End::Replaced => frame(REPLACED, "resumed on another connection".into()),
        End::HomeLost => frame(
            SERVICE_RESTART,
            "the node of your room went away; reconnect".into(),
        ),
        End::HubGone => frame(INTERNAL, "signaling stopped".into()),
        // The client's close is answered by the WebSocket layer; flushing sends the answer.
        End::ClientClosed => None,
        End::Dropped | End::Silent | End::NotReading => return,
    };
    let send = async {
        match msg {
            Some(m) => socket.send(m).await,
            None => socket.flush().await,
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
}
