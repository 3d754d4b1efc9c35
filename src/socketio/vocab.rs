//! The three event vocabularies, as their Node.js servers answer them (`docs/socketio.md`):
//! 1. the WebRTC codelab (`create or join`, `message`, `ipaddr`, `bye`);
//! 2. room calls (`join`, `start_call`, `webrtc_offer`, `webrtc_answer`,
//!    `webrtc_ice_candidate`);
//! 3. a user list with direct calls (`offer`, `answer`, `refuse`, `iceCandidate`,
//!    `disconnectPeer`).
//!
//! Pure: an event's name and payload become an [`Event`] or an [`EventError`]; what goes from
//! one socket of a room to the other travels through the room registry as a signal whose
//! payload is a [`Relayed`] event. Two differences from those servers, on purpose: a codelab
//! `message` reaches only the other peer of the sender's room (the codelab broadcast it to
//! everyone), and a `from` is always the sender's own socket id, whatever the payload says.

use serde_json::{json, Value};

use super::EventError;

/// Every event a client may send.
pub(super) const EVENTS: [&str; 14] = [
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

/// Events that go from a socket to the other one of its room.
const RELAYED: [&str; 5] = [
    "message",
    "start_call",
    "webrtc_offer",
    "webrtc_answer",
    "webrtc_ice_candidate",
];

/// Longest room name, in bytes.
pub(super) const MAX_ROOM_LEN: usize = 128;

/// Which vocabulary a socket joined its room with: it decides the answers it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vocab {
    /// `create or join`: `created`, `joined` + `ready`, `full`; the one there gets `join` + `ready`.
    Codelab,
    /// `join`: `room_created`, `room_joined`, `full_room`.
    RoomCall,
}

/// A client event, validated.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    Join {
        vocab: Vocab,
        room: String,
    },
    /// `bye`: leave the room.
    Leave,
    IpAddr,
    /// Sent on to the other socket of the sender's room; `room` is `None` for the codelab's
    /// `message`, which names none.
    ToRoom {
        room: Option<String>,
        relayed: Relayed,
    },
    /// Vocabulary 3: sent on to the socket `to`, with the sender added as `from`.
    Direct {
        to: String,
        name: &'static str,
        body: serde_json::Map<String, Value>,
    },
}

/// An event as the other socket of a room receives it: its name and its one argument.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Relayed {
    pub event: &'static str,
    pub data: Value,
}

impl Relayed {
    /// The registry signal's payload.
    pub fn to_json(&self) -> String {
        json!({ "event": self.event, "data": self.data }).to_string()
    }

    /// A signal's payload back as an event; `None` for anything this module did not write.
    pub fn from_json(text: &str) -> Option<Relayed> {
        let value: Value = serde_json::from_str(text).ok()?;
        let name = value.get("event")?.as_str()?;
        let event = RELAYED.into_iter().find(|e| *e == name)?;
        let data = value.get("data").cloned().unwrap_or(Value::Null);
        Some(Relayed { event, data })
    }
}

/// Validates the event `event` with its first argument `data` (`null` when it had none).
pub(super) fn parse(event: &str, data: Value) -> Result<Event, EventError> {
    let relay = |event: &'static str, data: Value| Relayed { event, data };
    Ok(match event {
        "create or join" => Event::Join {
            vocab: Vocab::Codelab,
            room: room_name(&data, "create or join takes the room name")?,
        },
        "join" => Event::Join {
            vocab: Vocab::RoomCall,
            room: room_name(&data, "join takes the room id")?,
        },
        "bye" => Event::Leave,
        "ipaddr" => Event::IpAddr,
        "message" => Event::ToRoom {
            room: None,
            relayed: relay("message", data),
        },
        "start_call" => Event::ToRoom {
            room: Some(string(&data, "start_call takes the room id")?.to_owned()),
            relayed: relay("start_call", Value::Null),
        },
        "webrtc_offer" | "webrtc_answer" => {
            let room = field_str(&data, "roomId")?.to_owned();
            let sdp = data.get("sdp").cloned().unwrap_or(Value::Null);
            let event = if event == "webrtc_offer" {
                "webrtc_offer"
            } else {
                "webrtc_answer"
            };
            Event::ToRoom {
                room: Some(room),
                relayed: relay(event, sdp),
            }
        }
        "webrtc_ice_candidate" => Event::ToRoom {
            room: Some(field_str(&data, "roomId")?.to_owned()),
            relayed: relay("webrtc_ice_candidate", data),
        },
        _ => direct(event, &data)?,
    })
}

/// Vocabulary 3: the target and the fields sent on (all but `from`, which the caller adds).
fn direct(event: &str, data: &Value) -> Result<Event, EventError> {
    let to = field_str(data, "to")?.to_owned();
    let (name, keys): (&'static str, &[&str]) = match event {
        "offer" => ("offer", &["offerSDP", "offerType", "audioOnly"]),
        "answer" => ("answer", &["answerSDP", "answerType"]),
        "refuse" => ("refuse", &[]),
        "iceCandidate" => (
            "remoteIceCandidate",
            &["candidate", "sdpMid", "sdpMLineIndex", "to"],
        ),
        "disconnectPeer" => ("disconnectPeer", &[]),
        other => return Err(EventError::BadRequest(format!("unknown event `{other}`"))),
    };
    let mut body = serde_json::Map::new();
    for &k in keys {
        if let Some(v) = data.get(k) {
            body.insert(k.to_owned(), v.clone());
        }
    }
    Ok(Event::Direct { to, name, body })
}

fn room_name(data: &Value, what: &str) -> Result<String, EventError> {
    let room = string(data, what)?;
    if (1..=MAX_ROOM_LEN).contains(&room.len()) && !room.chars().any(char::is_control) {
        Ok(room.to_owned())
    } else {
        Err(EventError::BadRequest(format!(
            "a room name is a string of 1 to {MAX_ROOM_LEN} bytes without control characters"
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_bounded_and_printable() {
        for bad in [
            json!(""),
            json!("a\nb"),
            json!("x".repeat(MAX_ROOM_LEN + 1)),
            json!(7),
        ] {
            assert!(
                matches!(parse("join", bad.clone()), Err(EventError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse("create or join", json!("Raum ä 1")),
            Ok(Event::Join {
                vocab: Vocab::Codelab,
                room: "Raum ä 1".into()
            })
        );
    }

    #[test]
    fn a_forged_from_is_not_sent_on() {
        let Ok(Event::Direct { to, name, body }) = parse(
            "offer",
            json!({"to": "b", "from": "forged", "offerSDP": "o", "extra": 1}),
        ) else {
            panic!("an offer parses");
        };
        assert_eq!((to.as_str(), name), ("b", "offer"));
        assert_eq!(Value::Object(body), json!({"offerSDP": "o"}));
    }

    #[test]
    fn a_relayed_event_survives_the_registry_and_nothing_else_passes_for_one() {
        let sent = Relayed {
            event: "webrtc_offer",
            data: json!({"type": "offer", "sdp": "v=0"}),
        };
        assert_eq!(Relayed::from_json(&sent.to_json()), Some(sent));
        assert_eq!(Relayed::from_json(r#"{"event":"offer","data":1}"#), None);
        assert_eq!(Relayed::from_json("[1]"), None);
    }

    #[test]
    fn every_event_of_the_list_parses_or_names_what_is_missing() {
        for event in EVENTS {
            match parse(event, Value::Null) {
                Ok(_) | Err(EventError::BadRequest(_)) => {}
                Err(e) => panic!("{event}: {e}"),
            }
        }
    }
}
