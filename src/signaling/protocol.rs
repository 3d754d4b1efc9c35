//! The signaling wire format: one JSON object per WebSocket text frame, tagged by `type`.
//!
//! Client messages are parsed by hand from a flat envelope rather than with a tagged serde
//! enum, for two reasons: every failure gets a specific `bad-request` message naming the field,
//! and a signal's `data` stays a borrowed-then-boxed [`RawValue`] that is relayed byte for byte
//! without being parsed into a tree and printed again (serde cannot buffer a `RawValue` inside
//! an internally tagged enum). Unknown fields are ignored so that clients may add their own.
//! `docs/protocol.md` is the reference for all of this and must stay true to this file.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

pub mod spaces;
pub use spaces::{CallAccepted, CallId, CallToken, People, PersonInfo, Ring, SpaceAction, SpaceId};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A room name: 1–64 characters of ASCII letters, digits, `-`, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    pub fn parse(text: &str) -> Option<RoomId> {
        is_valid_room(text).then(|| RoomId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The room `name` of the Socket.IO endpoint: `@` and the name, so that it can never be a
    /// native room (whose names have no `@`). The caller validates `name`.
    pub fn socketio(name: &str) -> RoomId {
        RoomId(format!("{SOCKETIO_ROOM_PREFIX}{name}").into())
    }

    /// Whether this is a room of the Socket.IO endpoint ([`RoomId::socketio`]).
    pub fn is_socketio(&self) -> bool {
        self.0.starts_with(SOCKETIO_ROOM_PREFIX)
    }
}

/// What sets the rooms of the Socket.IO endpoint apart: no native room name contains it.
const SOCKETIO_ROOM_PREFIX: char = '@';

/// A peer's id inside a room. The server makes them unguessable (128 random bits); the core
/// only compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Arc<str>);

impl PeerId {
    pub fn new(text: &str) -> PeerId {
        PeerId(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret that lets a client take its old id back after its connection dropped.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken(Arc<str>);

impl ResumeToken {
    pub fn new(text: &str) -> ResumeToken {
        ResumeToken(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(…)")
    }
}

macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    )*};
}
serialize_as_str!(RoomId, PeerId, ResumeToken);

/// A signal's `data`: any JSON value, kept as the exact text the sender wrote.
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The JSON text. Callers outside parsing use it in tests and for size accounting.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// A payload from JSON text, or `None` when the text is not one valid JSON value.
    pub fn from_json(text: &str) -> Option<Payload> {
        RawValue::from_string(text.to_owned()).ok().map(Payload)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A message from a client, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Join {
        room: RoomId,
        name: Option<String>,
        resume: Option<ResumeToken>,
        /// Invite token, required when `[access] mode = "token"`.
        token: Option<String>,
    },
    Signal {
        to: PeerId,
        data: Payload,
    },
    Leave,
    Ping,
    /// One of the messages only a room's host may send.
    Host(HostAction),
    /// A message about spaces and direct calls.
    Space(SpaceAction),
}

/// What a room's host may do; anyone else sending one gets `not-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// `lock`: further joins wait in the lobby.
    Lock,
    /// `unlock`: joins go straight in again.
    Unlock,
    /// `admit`: a waiting peer comes in.
    Admit(PeerId),
    /// `decline`: a waiting peer is turned away.
    Decline(PeerId),
    /// `remove`: a peer leaves the room and may not come back while it lasts.
    Remove(PeerId),
    /// `mute-request`: asks one peer, or everyone else, to mute.
    MuteRequest { target: MuteTarget, kind: MediaKind },
    /// `end`: the meeting ends for everyone.
    End,
}

/// Whom a `mute-request` is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuteTarget {
    Peer(PeerId),
    /// Everyone in the room but the sender.
    All,
}

/// The kind of media a `mute-request` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

/// One entry of `joined.peers` and of `peer-joined`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerInfo {
    pub id: PeerId,
    /// Omitted from the JSON when the peer gave no name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"host": true` on the room's host; omitted on everyone else.
    #[serde(skip_serializing_if = "is_false")]
    pub host: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The answer to a successful `join`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Joined {
    pub room: RoomId,
    pub id: PeerId,
    pub peers: Vec<PeerInfo>,
    #[serde(rename = "iceServers")]
    pub ice_servers: serde_json::Value,
    pub resume: ResumeToken,
    /// Whether the receiver is the room's host.
    pub host: bool,
    /// Whether the room is locked (joins wait in the lobby).
    pub locked: bool,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Boxed: it is by far the largest variant, and every queue slot is as large as the
    /// largest variant.
    Joined(Box<Joined>),
    PeerJoined {
        peer: PeerInfo,
    },
    PeerLeft {
        id: PeerId,
    },
    Signal {
        from: PeerId,
        data: Payload,
    },
    /// Fresh ICE servers (for example new TURN credentials) for a connected peer.
    IceServers {
        #[serde(rename = "iceServers")]
        ice_servers: serde_json::Value,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The server is going down: calls keep their relays for `grace_s` seconds, new joins are
    /// refused. With `reconnect` (a node of a cluster, whose other nodes are up) clients should
    /// reconnect and resume at once; without, with back-off until it is up again.
    ServerShutdown {
        grace_s: u64,
        reconnect: bool,
    },
    /// The room is locked: this connection waits in the lobby under `id` until the host answers.
    Waiting {
        id: PeerId,
    },
    /// To the host: `peer` waits in the lobby.
    Knock {
        peer: PeerId,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// To the host: `peer` no longer waits (it left, or its wait timed out).
    KnockWithdrawn {
        peer: PeerId,
    },
    /// The room has a new host.
    HostChanged {
        peer: PeerId,
    },
    /// The host locked or unlocked the room.
    RoomLocked {
        locked: bool,
    },
    /// The host asks the receiver to mute its `kind` of media.
    MuteRequest {
        from: PeerId,
        kind: MediaKind,
    },
    /// The host ended the meeting: the room is gone.
    Ended,
    /// The answer to `hello`: who else is in the space. Boxed, as `joined`.
    People(Box<People>),
    PersonJoined {
        person: Box<PersonInfo>,
    },
    PersonLeft {
        id: PeerId,
    },
    /// A person started or stopped ringing or being in a call.
    PersonBusy {
        id: PeerId,
        busy: bool,
    },
    /// To the callee.
    Ring(Box<Ring>),
    /// To the caller: the call rings (or waits for its answer).
    Ringing {
        call: CallId,
    },
    CallAccepted(Box<CallAccepted>),
    CallDeclined {
        call: CallId,
    },
    CallBusy {
        call: CallId,
    },
    CallCancelled {
        call: CallId,
    },
    CallMissed {
        call: CallId,
    },
    CallEnded {
        call: CallId,
    },
    /// A message another node of a cluster made for this connection (its room or space lives
    /// there), already in its wire form.
    #[serde(skip)]
    Relayed(Box<Relayed>),
}

/// A message made by another node, relayed as the JSON text that node wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Relayed(pub String);

impl Relayed {
    /// Its `type`, which the connection needs to follow its state (`joined`, `people`, …):
    /// server messages are written with their tag first.
    pub fn kind(&self) -> &str {
        self.0
            .strip_prefix(r#"{"type":""#)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
    }

    /// Its `code`, when it is an `error` (written right after the tag).
    pub fn code(&self) -> Option<&str> {
        self.0
            .strip_prefix(r#"{"type":"error","code":""#)
            .and_then(|rest| rest.split('"').next())
    }
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// Whether this tells how a call ended (`call-declined`, `call-cancelled`, `call-missed`,
    /// `call-ended`).
    pub fn ends_a_call(&self) -> bool {
        matches!(
            self,
            ServerMessage::CallDeclined { .. }
                | ServerMessage::CallCancelled { .. }
                | ServerMessage::CallMissed { .. }
                | ServerMessage::CallEnded { .. }
        )
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        if let ServerMessage::Relayed(r) = self {
            return r.0.clone();
        }
        // Serializing these types cannot fail: all map keys are strings and every value is
        // plain data or an already valid `RawValue`.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Invalid JSON, an unknown `type`, a missing or wrong field, or a binary frame.
    BadRequest,
    /// The room already has `[rooms] max_peers` peers.
    RoomFull,
    /// `signal` or `leave` before a successful `join`.
    NotJoined,
    /// `join` while already in a room.
    AlreadyJoined,
    /// `signal` to an id that is not another peer of the sender's room.
    UnknownPeer,
    /// More messages than the rate limit allows; the message was dropped.
    RateLimited,
    /// A frame longer than `[rooms] max_message_bytes`; it was dropped.
    TooLarge,
    /// `join` without a valid invite token for that room (`[access] mode = "token"`).
    Forbidden,
    /// `join` while the server drains before shutting down.
    ShuttingDown,
    /// A host-only message from a peer that is not the room's host.
    NotHost,
    /// The host turned this waiting peer away.
    Declined,
    /// Nobody answered this waiting peer within `[rooms] lobby_timeout`.
    LobbyTimeout,
    /// The host removed this peer; it may not come back while the room lasts.
    Removed,
    /// `call` or `block` of an id that is not another person of the sender's space.
    UnknownPerson,
    /// `accept`, `decline` or `cancel` of a call that is not ringing for the sender.
    NotRinging,
    /// `join` or `hello` while this node cannot reach the cluster's Redis.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire (and as the metrics label).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::NotHost => "not-host",
            ErrorCode::Declined => "declined",
            ErrorCode::LobbyTimeout => "lobby-timeout",
            ErrorCode::Removed => "removed",
            ErrorCode::UnknownPerson => "unknown-person",
            ErrorCode::NotRinging => "not-ringing",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::RoomFull,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownPeer,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::ShuttingDown,
        ErrorCode::NotHost,
        ErrorCode::Declined,
        ErrorCode::LobbyTimeout,
        ErrorCode::Removed,
        ErrorCode::UnknownPerson,
        ErrorCode::NotRinging,
        ErrorCode::Unavailable,
    ];
}

/// Why a client frame was refused; becomes a `bad-request` error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("missing field `type`")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("{kind}: missing field `{field}`")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },
    #[error("join: `room` must be 1-64 characters of letters, digits, `-`, `_` and `.`")]
    BadRoom,
    #[error("join: `name` must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("join: `resume` must not be empty")]
    EmptyResume,
    #[error("signal: `to` must not be empty")]
    EmptyTo,
    #[error("{kind}: `peer` must not be empty")]
    EmptyPeer { kind: &'static str },
    #[error("mute-request: `kind` must be \"audio\" or \"video\"")]
    BadMediaKind,
    #[error("hello: `space` must be 1-64 characters of letters, digits, `-`, `_` and `.`")]
    BadSpace,
    #[error(
        "hello: `name` must be 1-{MAX_NAME_CHARS} characters, not only spaces, without control characters"
    )]
    BadPersonName,
    #[error("{kind}: a field must not be empty")]
    EmptyField { kind: &'static str },
}

/// Every field any client message may carry; the `type` decides which are required.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    room: Option<String>,
    name: Option<String>,
    resume: Option<String>,
    token: Option<String>,
    to: Option<String>,
    peer: Option<String>,
    #[serde(rename = "kind")]
    media_kind: Option<String>,
    #[serde(default, deserialize_with = "raw_including_null")]
    data: Option<Box<RawValue>>,
    space: Option<String>,
    call: Option<String>,
    id: Option<String>,
    #[serde(rename = "audioOnly")]
    audio_only: Option<bool>,
}

/// `data` may be any JSON value, `null` included; only its absence is an error.
fn raw_including_null<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(de).map(Some)
}

/// Parses and validates one text frame from a client.
pub fn parse_client(text: &str) -> Result<ClientMessage, ParseError> {
    let mut env: Envelope =
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    let kind = env.kind.take().ok_or(ParseError::MissingType)?;
    // `decline` with a `call` answers a ring; with a `peer` it is the host's, below.
    let host_decline = kind == "decline" && env.call.is_none() && env.peer.is_some();
    if !host_decline {
        if let Some(action) = spaces::parse(&kind, &mut env) {
            return action.map(ClientMessage::Space);
        }
    }
    match kind.as_str() {
        "join" => {
            let room = env.room.ok_or(ParseError::MissingField {
                kind: "join",
                field: "room",
            })?;
            let room = RoomId::parse(&room).ok_or(ParseError::BadRoom)?;
            if env
                .name
                .as_ref()
                .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
            {
                return Err(ParseError::NameTooLong);
            }
            let resume = match env.resume {
                Some(t) if t.is_empty() => return Err(ParseError::EmptyResume),
                Some(t) => Some(ResumeToken::new(&t)),
                None => None,
            };
            Ok(ClientMessage::Join {
                room,
                name: env.name,
                resume,
                token: env.token,
            })
        }
        "signal" => {
            let to = env.to.ok_or(ParseError::MissingField {
                kind: "signal",
                field: "to",
            })?;
            if to.is_empty() {
                return Err(ParseError::EmptyTo);
            }
            let data = env.data.ok_or(ParseError::MissingField {
                kind: "signal",
                field: "data",
            })?;
            Ok(ClientMessage::Signal {
                to: PeerId::new(&to),
                data: Payload(data),
            })
        }
        "leave" => Ok(ClientMessage::Leave),
        "ping" => Ok(ClientMessage::Ping),
        "lock" => Ok(ClientMessage::Host(HostAction::Lock)),
        "unlock" => Ok(ClientMessage::Host(HostAction::Unlock)),
        "end" => Ok(ClientMessage::Host(HostAction::End)),
        "admit" => Ok(ClientMessage::Host(HostAction::Admit(peer_field(
            "admit", env.peer,
        )?))),
        "decline" => Ok(ClientMessage::Host(HostAction::Decline(peer_field(
            "decline", env.peer,
        )?))),
        "remove" => Ok(ClientMessage::Host(HostAction::Remove(peer_field(
            "remove", env.peer,
        )?))),
        "mute-request" => {
            let target = match peer_field("mute-request", env.peer)? {
                all if all.as_str() == "all" => MuteTarget::All,
                id => MuteTarget::Peer(id),
            };
            let kind = match env.media_kind.as_deref() {
                Some("audio") => MediaKind::Audio,
                Some("video") => MediaKind::Video,
                Some(_) => return Err(ParseError::BadMediaKind),
                None => {
                    return Err(ParseError::MissingField {
                        kind: "mute-request",
                        field: "kind",
                    })
                }
            };
            Ok(ClientMessage::Host(HostAction::MuteRequest {
                target,
                kind,
            }))
        }
        _ => Err(ParseError::UnknownType(kind)),
    }
}

/// Room names: 1–64 characters of letters, digits, `-`, `_`, `.`.
pub fn is_valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The `peer` field of a host action: present and not empty.
fn peer_field(kind: &'static str, peer: Option<String>) -> Result<PeerId, ParseError> {
    match peer {
        None => Err(ParseError::MissingField {
            kind,
            field: "peer",
        }),
        Some(p) if p.is_empty() => Err(ParseError::EmptyPeer { kind }),
        Some(p) => Ok(PeerId::new(&p)),
    }
}

#[cfg(test)]
mod tests;
