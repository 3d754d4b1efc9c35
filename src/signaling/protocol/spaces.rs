//! The wire format of spaces (who is online) and direct calls: the client messages `hello`,
//! `leave-space`, `call`, `accept`, `decline` (with `call`), `cancel`, `block`, `unblock`, and
//! the server messages they lead to. Parsed from the same flat envelope as the room messages;
//! `docs/protocol.md` ("Spaces and calls") is the reference.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::{Envelope, ParseError, PeerId, ResumeToken, RoomId, MAX_NAME_CHARS};

/// A space name: the same rule as a room name (1–64 ASCII letters, digits, `-`, `_`, `.`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(Arc<str>);

impl SpaceId {
    pub fn parse(text: &str) -> Option<SpaceId> {
        super::is_valid_room(text).then(|| SpaceId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A call's id, made by the server (128 random bits); the core only compares them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(Arc<str>);

impl CallId {
    pub fn new(text: &str) -> CallId {
        CallId(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret one side of an accepted call joins the private room with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallToken(Arc<str>);

impl CallToken {
    pub fn new(text: &str) -> CallToken {
        CallToken(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallToken(…)")
    }
}

macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    )*};
}
serialize_as_str!(SpaceId, CallId, CallToken);

/// A message about spaces and calls from a client, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SpaceAction {
    /// `hello`: enter a space (or come back to it with `resume`).
    Hello {
        space: SpaceId,
        name: String,
        resume: Option<ResumeToken>,
        /// Invitation for the space, required when `[access] mode = "token"`.
        token: Option<String>,
    },
    /// `leave-space`: leave the space for good (ends a ring or call in progress).
    LeaveSpace,
    /// `call`: ring another person of the space.
    Call { to: PeerId, audio_only: bool },
    /// `accept`: the callee takes the call.
    Accept(CallId),
    /// `decline` with a `call`: the callee refuses it.
    Decline(CallId),
    /// `cancel`: the caller stops ringing.
    Cancel(CallId),
    /// `block`: calls from this person no longer ring, for as long as the blocker is in the space.
    Block(PeerId),
    /// `unblock`: undoes a `block`.
    Unblock(PeerId),
}

/// One entry of `people` and of `person-joined`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonInfo {
    pub id: PeerId,
    pub name: String,
    /// Ringing or in a call.
    pub busy: bool,
}

/// The answer to a successful `hello`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct People {
    pub space: SpaceId,
    pub you: PeerId,
    /// Everyone else in the space, in the order they arrived.
    pub people: Vec<PersonInfo>,
    pub resume: ResumeToken,
    /// The accepted call this person is in (`null` for none): after a resume, the state a
    /// client checks its call against, whatever messages its dropped connection missed.
    pub call: Option<CallId>,
}

/// To the callee: someone calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ring {
    pub call: CallId,
    pub from: PeerId,
    pub name: String,
    #[serde(rename = "audioOnly")]
    pub audio_only: bool,
}

/// To both sides: the callee accepted; join `room` with `token`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallAccepted {
    pub call: CallId,
    pub room: RoomId,
    pub token: CallToken,
    /// The other side's id (its peer id in the room too).
    pub peer: PeerId,
    #[serde(rename = "audioOnly")]
    pub audio_only: bool,
}

/// Parses the space and call messages; `None` for a `type` that is none of them.
pub(super) fn parse(kind: &str, env: &mut Envelope) -> Option<Result<SpaceAction, ParseError>> {
    let action = match kind {
        "hello" => hello(env),
        "leave-space" => Ok(SpaceAction::LeaveSpace),
        "call" => call(env),
        "accept" => call_field("accept", env).map(SpaceAction::Accept),
        "decline" => call_field("decline", env).map(SpaceAction::Decline),
        "cancel" => call_field("cancel", env).map(SpaceAction::Cancel),
        "block" => id_field("block", env).map(SpaceAction::Block),
        "unblock" => id_field("unblock", env).map(SpaceAction::Unblock),
        _ => return None,
    };
    Some(action)
}

/// A display name in a space: 1–64 characters, not only spaces, no control characters.
pub fn is_valid_person_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control)
}

fn hello(env: &mut Envelope) -> Result<SpaceAction, ParseError> {
    let missing = |field| ParseError::MissingField {
        kind: "hello",
        field,
    };
    let space = env.space.take().ok_or(missing("space"))?;
    let space = SpaceId::parse(&space).ok_or(ParseError::BadSpace)?;
    let name = env.name.take().ok_or(missing("name"))?;
    if !is_valid_person_name(&name) {
        return Err(ParseError::BadPersonName);
    }
    let resume = match env.resume.take() {
        Some(t) if t.is_empty() => return Err(ParseError::EmptyField { kind: "hello" }),
        Some(t) => Some(ResumeToken::new(&t)),
        None => None,
    };
    Ok(SpaceAction::Hello {
        space,
        name,
        resume,
        token: env.token.take(),
    })
}

fn call(env: &mut Envelope) -> Result<SpaceAction, ParseError> {
    let to = env.to.take().ok_or(ParseError::MissingField {
        kind: "call",
        field: "to",
    })?;
    if to.is_empty() {
        return Err(ParseError::EmptyTo);
    }
    Ok(SpaceAction::Call {
        to: PeerId::new(&to),
        audio_only: env.audio_only.unwrap_or(false),
    })
}

fn call_field(kind: &'static str, env: &mut Envelope) -> Result<CallId, ParseError> {
    match env.call.take() {
        None => Err(ParseError::MissingField {
            kind,
            field: "call",
        }),
        Some(c) if c.is_empty() => Err(ParseError::EmptyField { kind }),
        Some(c) => Ok(CallId::new(&c)),
    }
}

fn id_field(kind: &'static str, env: &mut Envelope) -> Result<PeerId, ParseError> {
    match env.id.take() {
        None => Err(ParseError::MissingField { kind, field: "id" }),
        Some(c) if c.is_empty() => Err(ParseError::EmptyField { kind }),
        Some(c) => Ok(PeerId::new(&c)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_client, ClientMessage, ServerMessage};
    use super::*;
    use serde_json::json;

    fn action(text: &str) -> SpaceAction {
        match parse_client(text) {
            Ok(ClientMessage::Space(a)) => a,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn hello_parses_with_its_space_name_resume_and_token() {
        assert_eq!(
            action(r#"{"type":"hello","space":"team-x","name":"Ann","resume":"r","token":"t"}"#),
            SpaceAction::Hello {
                space: SpaceId::parse("team-x").unwrap(),
                name: "Ann".into(),
                resume: Some(ResumeToken::new("r")),
                token: Some("t".into()),
            }
        );
    }

    #[test]
    fn hello_needs_a_valid_space_and_a_real_name() {
        let err = |t: &str| parse_client(t).unwrap_err();
        assert_eq!(
            err(r#"{"type":"hello","name":"Ann"}"#),
            ParseError::MissingField {
                kind: "hello",
                field: "space"
            }
        );
        assert_eq!(
            err(r#"{"type":"hello","space":"a b","name":"Ann"}"#),
            ParseError::BadSpace
        );
        assert_eq!(
            err(r#"{"type":"hello","space":"s"}"#),
            ParseError::MissingField {
                kind: "hello",
                field: "name"
            }
        );
        for bad in ["", "   ", "a\nb", "\u{7}"] {
            let text = json!({"type":"hello","space":"s","name":bad}).to_string();
            assert_eq!(err(&text), ParseError::BadPersonName, "{bad:?}");
        }
        let long = json!({"type":"hello","space":"s","name":"é".repeat(65)}).to_string();
        assert_eq!(err(&long), ParseError::BadPersonName);
        let ok = json!({"type":"hello","space":"s","name":"é".repeat(64)}).to_string();
        assert!(parse_client(&ok).is_ok());
    }

    #[test]
    fn call_messages_parse_with_their_call_or_id() {
        assert_eq!(
            action(r#"{"type":"call","to":"p1","audioOnly":true}"#),
            SpaceAction::Call {
                to: PeerId::new("p1"),
                audio_only: true
            }
        );
        assert_eq!(
            action(r#"{"type":"call","to":"p1"}"#),
            SpaceAction::Call {
                to: PeerId::new("p1"),
                audio_only: false
            }
        );
        let c = || CallId::new("c1");
        assert_eq!(
            action(r#"{"type":"accept","call":"c1"}"#),
            SpaceAction::Accept(c())
        );
        assert_eq!(
            action(r#"{"type":"decline","call":"c1"}"#),
            SpaceAction::Decline(c())
        );
        assert_eq!(
            action(r#"{"type":"cancel","call":"c1"}"#),
            SpaceAction::Cancel(c())
        );
        assert_eq!(
            action(r#"{"type":"block","id":"p1"}"#),
            SpaceAction::Block(PeerId::new("p1"))
        );
        assert_eq!(
            action(r#"{"type":"unblock","id":"p1"}"#),
            SpaceAction::Unblock(PeerId::new("p1"))
        );
        assert_eq!(action(r#"{"type":"leave-space"}"#), SpaceAction::LeaveSpace);
    }

    #[test]
    fn a_decline_with_a_peer_is_still_the_hosts() {
        assert!(matches!(
            parse_client(r#"{"type":"decline","peer":"p1"}"#),
            Ok(ClientMessage::Host(_))
        ));
    }

    #[test]
    fn call_messages_without_their_fields_are_bad_requests() {
        let err = |t: &str| parse_client(t).unwrap_err();
        assert_eq!(
            err(r#"{"type":"accept"}"#),
            ParseError::MissingField {
                kind: "accept",
                field: "call"
            }
        );
        assert_eq!(
            err(r#"{"type":"cancel","call":""}"#),
            ParseError::EmptyField { kind: "cancel" }
        );
        assert_eq!(
            err(r#"{"type":"call"}"#),
            ParseError::MissingField {
                kind: "call",
                field: "to"
            }
        );
        assert!(matches!(
            err(r#"{"type":"call","to":"p","audioOnly":"yes"}"#),
            ParseError::Json(_)
        ));
        assert_eq!(
            err(r#"{"type":"block"}"#),
            ParseError::MissingField {
                kind: "block",
                field: "id"
            }
        );
    }

    #[test]
    fn space_and_call_messages_serialize_as_documented() {
        let p = || PeerId::new("p1");
        let c = || CallId::new("c1");
        let cases = [
            (
                ServerMessage::People(Box::new(People {
                    space: SpaceId::parse("s").unwrap(),
                    you: PeerId::new("me"),
                    people: vec![PersonInfo {
                        id: p(),
                        name: "Bo".into(),
                        busy: true,
                    }],
                    resume: ResumeToken::new("tok"),
                    call: None,
                })),
                json!({"type":"people","space":"s","you":"me",
                       "people":[{"id":"p1","name":"Bo","busy":true}],"resume":"tok",
                       "call":null}),
            ),
            (
                ServerMessage::PersonJoined {
                    person: Box::new(PersonInfo {
                        id: p(),
                        name: "Bo".into(),
                        busy: false,
                    }),
                },
                json!({"type":"person-joined","person":{"id":"p1","name":"Bo","busy":false}}),
            ),
            (
                ServerMessage::PersonLeft { id: p() },
                json!({"type":"person-left","id":"p1"}),
            ),
            (
                ServerMessage::PersonBusy {
                    id: p(),
                    busy: true,
                },
                json!({"type":"person-busy","id":"p1","busy":true}),
            ),
            (
                ServerMessage::Ring(Box::new(Ring {
                    call: c(),
                    from: p(),
                    name: "Bo".into(),
                    audio_only: true,
                })),
                json!({"type":"ring","call":"c1","from":"p1","name":"Bo","audioOnly":true}),
            ),
            (
                ServerMessage::Ringing { call: c() },
                json!({"type":"ringing","call":"c1"}),
            ),
            (
                ServerMessage::CallAccepted(Box::new(CallAccepted {
                    call: c(),
                    room: RoomId::parse("call-x").unwrap(),
                    token: CallToken::new("t"),
                    peer: p(),
                    audio_only: false,
                })),
                json!({"type":"call-accepted","call":"c1","room":"call-x","token":"t",
                       "peer":"p1","audioOnly":false}),
            ),
            (
                ServerMessage::CallDeclined { call: c() },
                json!({"type":"call-declined","call":"c1"}),
            ),
            (
                ServerMessage::CallBusy { call: c() },
                json!({"type":"call-busy","call":"c1"}),
            ),
            (
                ServerMessage::CallCancelled { call: c() },
                json!({"type":"call-cancelled","call":"c1"}),
            ),
            (
                ServerMessage::CallMissed { call: c() },
                json!({"type":"call-missed","call":"c1"}),
            ),
            (
                ServerMessage::CallEnded { call: c() },
                json!({"type":"call-ended","call":"c1"}),
            ),
        ];
        for (msg, want) in cases {
            let got: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
            assert_eq!(got, want);
        }
    }
}
