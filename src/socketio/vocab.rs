//! The three event vocabularies, as their Node.js servers answer them (`docs/socketio.md`):
//! 1. the WebRTC codelab (`create or join`, `message`, `ipaddr`, `bye`);
//! 2. room calls (`join`, `start_call`, `webrtc_offer`, `webrtc_answer`,
//!    `webrtc_ice_candidate`);
//! 3. a user list with direct calls (`offer`, `answer`, `refuse`, `iceCandidate`,
//!    `disconnectPeer`).
//!
//! Two differences from those servers, on purpose: a codelab `message` reaches only the other
//! peer of the sender's room (the codelab broadcast it to everyone), and a `from` is always the
//! sender's own socket id, whatever the payload says.

use std::sync::Arc;

use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::socket::Sid;

use super::rooms::Joined;
use super::{send_error, Compat, EventError};

/// Every event a client may send.
const EVENTS: [&str; 14] = [
    "create or join",
    "message",
    "ipaddr",
    "bye",
    "join",
    "start_call",
    "webrtc_offer",
    "webrtc_answer",
    "webrtc_ice_candidate",
    "offer",
    "answer",
    "refuse",
    "iceCandidate",
    "disconnectPeer",
];

/// Installs the handlers of every vocabulary on `socket`.
pub(super) fn register(compat: &Arc<Compat>, socket: &SocketRef) {
    for event in EVENTS {
        let compat = compat.clone();
        socket.on(event, move |s: SocketRef, TryData(data): TryData<Value>| {
            // No argument at all (`socket.emit('bye')`) reads as null.
            let data = data.unwrap_or(Value::Null);
            if let Err(e) = compat
                .admit(s.id, &data)
                .and_then(|()| handle(&compat, &s, event, data))
            {
                send_error(&s, e.code(), &format!("{event}: {e}"));
            }
        });
    }
}

fn handle(compat: &Compat, s: &SocketRef, event: &str, data: Value) -> Result<(), EventError> {
    match event {
        "create or join" => create_or_join(compat, s, &data),
        "message" => {
            let others = compat.lock().rooms.others(&s.id);
            let others = others.ok_or(EventError::NotInRoom)?;
            for to in others {
                compat.emit_to(to, "message", &data);
            }
            Ok(())
        }
        "ipaddr" => {
            let _ = s.emit("ipaddr", &compat.public_host);
            Ok(())
        }
        "bye" => {
            compat.lock().rooms.leave(&s.id);
            Ok(())
        }
        "join" => join(compat, s, &data),
        "start_call" => {
            let room = string(&data, "start_call takes the room id")?;
            to_room(compat, s.id, room, "start_call", &())
        }
        "webrtc_offer" | "webrtc_answer" => {
            let room = field_str(&data, "roomId")?;
            let sdp = data.get("sdp").cloned().unwrap_or(Value::Null);
            to_room(compat, s.id, room, event, &sdp)
        }
        "webrtc_ice_candidate" => {
            let room = field_str(&data, "roomId")?;
            to_room(compat, s.id, room, event, &data)
        }
        _ => direct(compat, s.id, event, &data),
    }
}

/// Vocabulary 1: `created`(room, id), or `join`(room) to the one there and `joined`(room, id)
/// plus `ready` to both, or `full`(room).
fn create_or_join(compat: &Compat, s: &SocketRef, data: &Value) -> Result<(), EventError> {
    let room = string(data, "create or join takes the room name")?;
    let joined = compat.lock().rooms.join(&s.id, room);
    let sid = s.id.to_string();
    match joined.map_err(|e| EventError::BadRequest(e.to_string()))? {
        Joined::Created => {
            let _ = s.emit("created", &(room, &sid));
        }
        Joined::Joined { others } => {
            for &to in &others {
                compat.emit_to(to, "join", &(room,));
            }
            let _ = s.emit("joined", &(room, &sid));
            for to in others.into_iter().chain([s.id]) {
                compat.emit_to(to, "ready", &());
            }
            crate::metrics::METRICS.joins.inc();
        }
        Joined::Full => {
            let _ = s.emit("full", &(room,));
        }
    }
    Ok(())
}

/// Vocabulary 2: `room_created`, `room_joined` or `full_room`, each with the room id.
fn join(compat: &Compat, s: &SocketRef, data: &Value) -> Result<(), EventError> {
    let room = string(data, "join takes the room id")?;
    let joined = compat.lock().rooms.join(&s.id, room);
    let answer = match joined.map_err(|e| EventError::BadRequest(e.to_string()))? {
        Joined::Created => "room_created",
        Joined::Joined { .. } => {
            crate::metrics::METRICS.joins.inc();
            "room_joined"
        }
        Joined::Full => "full_room",
    };
    let _ = s.emit(answer, &(room,));
    Ok(())
}

/// Sends `event` to the others of `room`, if the sender is in it.
fn to_room<T: serde::Serialize + ?Sized>(
    compat: &Compat,
    from: Sid,
    room: &str,
    event: &str,
    data: &T,
) -> Result<(), EventError> {
    let others = compat.lock().rooms.others_in(&from, room);
    for to in others.ok_or(EventError::NotInRoom)? {
        compat.emit_to(to, event, data);
    }
    Ok(())
}

/// Vocabulary 3: an event addressed by socket id (`to`), sent on with the sender as `from`.
fn direct(compat: &Compat, from: Sid, event: &str, data: &Value) -> Result<(), EventError> {
    let to = field_str(data, "to")?;
    let to: Sid = to.parse().map_err(|_| EventError::UnknownPeer)?;
    let pick = |keys: &[&str]| {
        let mut out = serde_json::Map::new();
        for &k in keys {
            if let Some(v) = data.get(k) {
                out.insert(k.to_owned(), v.clone());
            }
        }
        out.insert("from".to_owned(), json!(from.to_string()));
        Value::Object(out)
    };
    let (name, body) = match event {
        "offer" => ("offer", pick(&["offerSDP", "offerType", "audioOnly"])),
        "answer" => ("answer", pick(&["answerSDP", "answerType"])),
        "refuse" => ("refuse", pick(&[])),
        "iceCandidate" => (
            "remoteIceCandidate",
            pick(&["candidate", "sdpMid", "sdpMLineIndex", "to"]),
        ),
        _ => ("disconnectPeer", pick(&[])),
    };
    if to == from || !compat.lock().by_sid.contains_key(&to) {
        return Err(EventError::UnknownPeer);
    }
    if compat.emit_to(to, name, &body) {
        Ok(())
    } else {
        Err(EventError::UnknownPeer)
    }
}

fn string<'a>(data: &'a Value, what: &str) -> Result<&'a str, EventError> {
    data.as_str()
        .ok_or_else(|| EventError::BadRequest(format!("{what} as a string")))
}

fn field_str<'a>(data: &'a Value, key: &str) -> Result<&'a str, EventError> {
    data.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| EventError::BadRequest(format!("expected an object with a string `{key}`")))
}
