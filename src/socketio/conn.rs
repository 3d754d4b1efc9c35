//! One task per Socket.IO socket: a connection of the signaling hub, like a `/ws` connection.
//!
//! The task alone holds the socket's state (its rate budget, its room, whether a join is on
//! its way). Events reach it in order through a bounded queue fed by socketioxide's handlers;
//! joins, leaves and signals to the other socket of a room go to the hub as the native
//! commands, into rooms named by [`RoomId::socketio`]; what the hub answers comes back through
//! the connection's bounded outbox and is emitted in the socket's vocabulary. While a join is
//! on its way no further event is taken, so every answer belongs to the join that asked it.
//!
//! The end: the socket disconnecting (the client left, or Engine.IO gave up on it), the hub
//! cutting the connection off (its outbox overflowed), the socket's own Socket.IO queue
//! overflowing (the client stopped reading), or the drain's grace ending (the socket is
//! disconnected with a Socket.IO disconnect packet, so its client does not reconnect at once).
//! Either way the socket's peer leaves its room at once (a Socket.IO client never resumes),
//! then the hub forgets the connection.

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, watch, Notify};
use tracing::debug;

use super::vocab::{self, Event, Relayed, Vocab};
use super::{Compat, EventError};
use crate::metrics::{self, METRICS};
use crate::signaling::hub::Command;
use crate::signaling::limits::RateLimiter;
use crate::signaling::outbox::{ConnEnd, HubEnd};
use crate::signaling::protocol::{ClientMessage, ErrorCode, Payload, PeerId, ServerMessage};
use crate::signaling::rooms::ConnId;
use crate::signaling::RoomId;

/// An event as the handlers queue it for the task.
pub(super) type Inbound = (&'static str, Value);

/// The name of the event a socket gets when the server starts draining.
pub const SHUTDOWN_EVENT: &str = "server-shutdown";

/// The room a socket is in.
struct Room {
    vocab: Vocab,
    name: String,
    others: Vec<PeerId>,
}

/// A join sent to the hub and not answered yet.
struct Pending {
    vocab: Vocab,
    name: String,
}

pub(super) struct SocketTask {
    pub compat: Arc<Compat>,
    pub socket: SocketRef,
    pub conn: ConnId,
    pub from: IpAddr,
    pub rate: RateLimiter,
    room: Option<Room>,
    pending: Option<Pending>,
    /// The socket's own Socket.IO queue overflowed: its client stopped reading.
    stalled: bool,
}

/// How the task's loop ended.
enum End {
    /// The socket is gone already.
    Gone,
    /// The server ends the socket (drain over, cut off, not reading, hub stopped).
    Disconnect,
}

impl SocketTask {
    pub fn new(compat: Arc<Compat>, socket: SocketRef, conn: ConnId, from: IpAddr) -> SocketTask {
        let (rate, burst) = compat.rate;
        SocketTask {
            compat,
            socket,
            conn,
            from,
            rate: RateLimiter::new(rate, burst, Instant::now()),
            room: None,
            pending: None,
            stalled: false,
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Inbound>,
        gone: Arc<Notify>,
        (hub_end, out): (HubEnd, ConnEnd),
        mut shutdown: watch::Receiver<bool>,
    ) {
        let hub = self.compat.hub.clone();
        let connect = Command::Connect {
            conn: self.conn,
            out: hub_end,
            from: self.from,
        };
        let end = if !hub.send(connect).await || *shutdown.borrow_and_update() {
            End::Disconnect
        } else {
            self.serve(&mut events, &gone, &out, &mut shutdown).await
        };
        if let End::Disconnect = end {
            let _ = self.socket.clone().disconnect();
        }
        if self.room.is_some() || self.pending.is_some() {
            self.to_hub(ClientMessage::Leave).await;
        }
        let _ = hub
            .send(Command::Disconnect {
                conn: self.conn,
                out,
            })
            .await;
    }

    async fn serve(
        &mut self,
        events: &mut mpsc::Receiver<Inbound>,
        gone: &Notify,
        out: &ConnEnd,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        loop {
            let joining = self.pending.is_some();
            tokio::select! {
                biased;
                () = gone.notified() => return End::Gone,
                _ = shutdown.changed() => return End::Disconnect,
                why = poll_fn(|cx| out.poll_verdict(cx)) => {
                    debug!(sid = %self.socket.id, ?why, "Socket.IO socket cut off by the hub");
                    return End::Disconnect;
                }
                msg = poll_fn(|cx| out.poll_recv(cx)) => self.on_hub(msg),
                event = events.recv(), if !joining => match event {
                    Some((name, data)) => self.on_event(name, data).await,
                    None => return End::Gone,
                },
            }
            if self.stalled {
                debug!(sid = %self.socket.id, "Socket.IO socket not reading; disconnected");
                return End::Disconnect;
            }
        }
    }

    /// One client event, after the rate and size checks.
    async fn on_event(&mut self, name: &'static str, data: Value) {
        METRICS.ws_messages.at(0).inc();
        let result = match self.admit(&data).and_then(|()| vocab::parse(name, data)) {
            Ok(event) => self.handle(event).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.error(e.code(), &format!("{name}: {e}"));
        }
    }

    fn admit(&mut self, data: &Value) -> Result<(), EventError> {
        if !self.rate.allow(Instant::now()) {
            METRICS.rate_limited.at(metrics::LIMITED_SIGNALING).inc();
            return Err(EventError::RateLimited);
        }
        let size = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
        if size > self.compat.max_message_bytes {
            return Err(EventError::TooLarge);
        }
        Ok(())
    }

    async fn handle(&mut self, event: Event) -> Result<(), EventError> {
        match event {
            Event::Join { vocab, room } => self.join(vocab, room).await,
            Event::Leave => {
                if self.room.take().is_some() {
                    self.to_hub(ClientMessage::Leave).await;
                }
                Ok(())
            }
            Event::IpAddr => {
                let host = self.compat.public_host.clone();
                self.emit("ipaddr", &host);
                Ok(())
            }
            Event::ToRoom { room, relayed } => self.relay(room.as_deref(), &relayed).await,
            Event::Direct { to, name, mut body } => {
                let from = self.socket.id;
                let to: Sid = to.parse().map_err(|_| EventError::UnknownPeer)?;
                body.insert("from".to_owned(), json!(from.to_string()));
                if to == from || !self.compat.emit_to(to, name, &body) {
                    return Err(EventError::UnknownPeer);
                }
                Ok(())
            }
        }
    }

    /// `create or join` / `join`: answered from here when the socket is in that room already,
    /// otherwise by the hub (after leaving any other room).
    async fn join(&mut self, vocab: Vocab, name: String) -> Result<(), EventError> {
        if let Some(room) = self.room.as_ref().filter(|r| r.name == name) {
            let alone = room.others.is_empty();
            self.answer_joined(vocab, &name, alone);
            return Ok(());
        }
        if self.room.take().is_some() {
            self.to_hub(ClientMessage::Leave).await;
        }
        let room = RoomId::socketio(&name);
        self.pending = Some(Pending { vocab, name });
        self.to_hub(ClientMessage::Join {
            room,
            name: None,
            resume: None,
            token: None,
        })
        .await;
        Ok(())
    }

    /// `relayed` to the other socket of the sender's room; the room must be the one named.
    async fn relay(&mut self, named: Option<&str>, relayed: &Relayed) -> Result<(), EventError> {
        let room = self.room.as_ref().ok_or(EventError::NotInRoom)?;
        if named.is_some_and(|n| n != room.name) {
            return Err(EventError::NotInRoom);
        }
        let payload = Payload::from_json(&relayed.to_json())
            .ok_or_else(|| EventError::BadRequest("the payload is not JSON".into()))?;
        for to in room.others.clone() {
            let data = payload.clone();
            self.to_hub(ClientMessage::Signal { to, data }).await;
        }
        Ok(())
    }

    /// A message from the hub, emitted in the socket's vocabulary.
    fn on_hub(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Joined(j) => {
                let Some(p) = self.pending.take() else {
                    return;
                };
                METRICS.joins.inc();
                let others: Vec<PeerId> = j.peers.into_iter().map(|p| p.id).collect();
                self.answer_joined(p.vocab, &p.name, others.is_empty());
                self.room = Some(Room {
                    vocab: p.vocab,
                    name: p.name,
                    others,
                });
            }
            ServerMessage::PeerJoined { peer } => {
                let Some(room) = self.room.as_mut() else {
                    return;
                };
                room.others.push(peer.id);
                if room.vocab == Vocab::Codelab {
                    let name = room.name.clone();
                    self.emit("join", &(name,));
                    self.emit("ready", &());
                }
            }
            ServerMessage::PeerLeft { id } => {
                if let Some(room) = self.room.as_mut() {
                    room.others.retain(|o| o != &id);
                }
            }
            ServerMessage::Signal { data, .. } => match Relayed::from_json(data.get()) {
                Some(r) => self.emit(r.event, &r.data),
                None => debug!(sid = %self.socket.id, "a signal that is no Socket.IO event"),
            },
            ServerMessage::Error { code, message } => self.refused(code, &message),
            ServerMessage::ServerShutdown { grace_s, reconnect } => {
                let event = json!({ "grace_s": grace_s, "reconnect": reconnect });
                self.emit(SHUTDOWN_EVENT, &event);
            }
            // Meeting messages (host, lobby, TURN renewal through the room) do not occur in
            // rooms of this endpoint, and `pong` answers a ping no socket sends.
            _ => {}
        }
    }

    /// The answer to a join that went through: `created`/`room_created` when alone,
    /// `joined` + `ready`/`room_joined` when someone was there.
    fn answer_joined(&mut self, vocab: Vocab, name: &str, alone: bool) {
        let sid = self.socket.id.to_string();
        match (vocab, alone) {
            (Vocab::Codelab, true) => self.emit("created", &(name, &sid)),
            (Vocab::Codelab, false) => {
                self.emit("joined", &(name, &sid));
                self.emit("ready", &());
            }
            (Vocab::RoomCall, true) => self.emit("room_created", &(name,)),
            (Vocab::RoomCall, false) => self.emit("room_joined", &(name,)),
        }
    }

    /// An `error` from the hub: a refused join (`full` / `full_room` for a full room), or an
    /// error event with the hub's code.
    fn refused(&mut self, code: ErrorCode, message: &str) {
        if let Some(c) = METRICS.signaling_errors.by_name(code.as_str()) {
            c.inc();
        }
        let pending = self.pending.take();
        match (code, pending) {
            (ErrorCode::RoomFull, Some(p)) => {
                let event = match p.vocab {
                    Vocab::Codelab => "full",
                    Vocab::RoomCall => "full_room",
                };
                self.emit(event, &(p.name,));
            }
            (_, Some(p)) => {
                let what = match p.vocab {
                    Vocab::Codelab => "create or join",
                    Vocab::RoomCall => "join",
                };
                self.error(code.as_str(), &format!("{what}: {message}"));
            }
            (_, None) => self.error(code.as_str(), message),
        }
    }

    async fn to_hub(&self, msg: ClientMessage) {
        let _ = self
            .compat
            .hub
            .send(Command::Client {
                conn: self.conn,
                msg,
            })
            .await;
    }

    fn error(&mut self, code: &str, message: &str) {
        self.emit("error", &json!({ "code": code, "message": message }));
    }

    /// Emits to this socket; a full Socket.IO queue marks the socket as not reading.
    fn emit<T: Serialize + ?Sized>(&mut self, event: &str, data: &T) {
        use socketioxide::{SendError, SocketError};
        match self.socket.emit(event, data) {
            Ok(()) => METRICS.ws_messages.at(1).inc(),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => self.stalled = true,
            Err(e) => debug!(sid = %self.socket.id, "emit failed: {e}"),
        }
    }
}
