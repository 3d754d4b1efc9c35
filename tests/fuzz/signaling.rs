//! The signaling message parser on arbitrary text frames: every frame gets a message or a
//! specific error, whatever it accepts meets the documented rules, and a signal's `data` is
//! relayed byte for byte as valid JSON.

use signalbox::signaling::protocol::{
    parse_client, ClientMessage, HostAction, MuteTarget, ParseError, PeerId, ServerMessage,
    SpaceAction, MAX_NAME_CHARS,
};
use signalbox_fuzz_harness::Features;

/// Tokens of the wire format, for the mutations.
pub(crate) const DICTIONARY: &[&[u8]] = &[
    b"\"type\"",
    b"\"join\"",
    b"\"signal\"",
    b"\"leave\"",
    b"\"ping\"",
    b"\"room\"",
    b"\"name\"",
    b"\"resume\"",
    b"\"token\"",
    b"\"to\"",
    b"\"data\"",
    b"\"lock\"",
    b"\"admit\"",
    b"\"remove\"",
    b"\"mute-request\"",
    b"\"end\"",
    b"\"peer\"",
    b"\"kind\"",
    b"\"hello\"",
    b"\"space\"",
    b"\"call\"",
    b"\"accept\"",
    b"\"cancel\"",
    b"\"block\"",
    b"\"audioOnly\"",
    b"\"id\"",
    b"\"audio\"",
    b"\"all\"",
    b"null",
    b"true",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"\"",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"\xc3\xa9",
];

pub(crate) fn target(data: &[u8], features: &mut Features) -> Result<(), String> {
    // WebSocket text frames are UTF-8; anything else never reaches the parser.
    let text = String::from_utf8_lossy(data);
    let parsed = parse_client(&text);
    features.add(match &parsed {
        Ok(ClientMessage::Join { .. }) => 1,
        Ok(ClientMessage::Signal { .. }) => 2,
        Ok(ClientMessage::Leave) => 3,
        Ok(ClientMessage::Ping) => 4,
        Ok(ClientMessage::Host(a)) => 5 + small_hash(&std::mem::discriminant(a)),
        Ok(ClientMessage::Space(a)) => 1000 + small_hash(&std::mem::discriminant(a)),
        Err(e) => 2000 + small_hash(&std::mem::discriminant(e)),
    });
    // Syntax only: numbers of any size are JSON, though not every parser stores them.
    let valid_json = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
    match parsed {
        Err(e) => {
            if e.to_string().is_empty() {
                return Err("error: an error without a message".into());
            }
            if !valid_json && !matches!(e, ParseError::Json(_)) {
                return Err(format!("error: invalid JSON refused as {e:?}"));
            }
            Ok(())
        }
        Ok(_) if !valid_json => Err(format!("accepted: invalid JSON {text:?}")),
        Ok(ClientMessage::Join {
            room, name, resume, ..
        }) => {
            if !signalbox::signaling::protocol::is_valid_room(room.as_str()) {
                return Err(format!("join: room {:?} accepted", room.as_str()));
            }
            if name.is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
                return Err("join: a name over the limit accepted".into());
            }
            if resume.is_some_and(|r| r.as_str().is_empty()) {
                return Err("join: an empty resume token accepted".into());
            }
            Ok(())
        }
        Ok(ClientMessage::Signal { to, data }) => {
            if to.as_str().is_empty() {
                return Err("signal: an empty `to` accepted".into());
            }
            serde_json::from_str::<serde::de::IgnoredAny>(data.get())
                .map_err(|e| format!("signal: `data` is not JSON: {e}"))?;
            if !text.contains(data.get()) {
                return Err("signal: `data` is not the sender's bytes".into());
            }
            let data_text = data.get().to_owned();
            let relayed = ServerMessage::Signal {
                from: PeerId::new("p"),
                data,
            }
            .to_json();
            let back: Relayed<'_> = serde_json::from_str(&relayed)
                .map_err(|e| format!("signal: the relayed message does not parse: {e}"))?;
            if back.data.get() != data_text {
                return Err(format!(
                    "signal: `data` {data_text:?} is relayed as {:?}",
                    back.data.get()
                ));
            }
            Ok(())
        }
        Ok(ClientMessage::Leave | ClientMessage::Ping) => Ok(()),
        Ok(ClientMessage::Host(action)) => {
            let peer = match &action {
                HostAction::Admit(p) | HostAction::Decline(p) | HostAction::Remove(p) => Some(p),
                HostAction::MuteRequest {
                    target: MuteTarget::Peer(p),
                    ..
                } => Some(p),
                _ => None,
            };
            if peer.is_some_and(|p| p.as_str().is_empty()) {
                return Err(format!("{action:?}: an empty `peer` accepted"));
            }
            Ok(())
        }
        Ok(ClientMessage::Space(action)) => space_action(&action),
    }
}

/// What a space or call message that parsed must be like.
fn space_action(action: &SpaceAction) -> Result<(), String> {
    let empty = match action {
        SpaceAction::Hello {
            space,
            name,
            resume,
            ..
        } => {
            if !signalbox::signaling::protocol::is_valid_room(space.as_str()) {
                return Err(format!("hello: space {:?} accepted", space.as_str()));
            }
            let n = name.chars().count();
            if n == 0 || n > MAX_NAME_CHARS || name.trim().is_empty() {
                return Err(format!("hello: name {name:?} accepted"));
            }
            resume.as_ref().is_some_and(|r| r.as_str().is_empty())
        }
        SpaceAction::Call { to, .. } => to.as_str().is_empty(),
        SpaceAction::Accept(c) | SpaceAction::Decline(c) | SpaceAction::Cancel(c) => {
            c.as_str().is_empty()
        }
        SpaceAction::Block(p) | SpaceAction::Unblock(p) => p.as_str().is_empty(),
        SpaceAction::LeaveSpace => false,
    };
    if empty {
        return Err(format!("{action:?}: an empty field accepted"));
    }
    Ok(())
}

/// The `data` of a relayed `signal`, as the text it carries.
#[derive(serde::Deserialize)]
struct Relayed<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

fn small_hash(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish() % 1000
}

pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let seeds: &[(&'static str, &str)] = &[
        ("join", r#"{"type":"join","room":"standup-1","name":"Ann"}"#),
        (
            "join-resume-token",
            r#"{"type":"join","room":"r.2_x","resume":"abc","token":"e30.sig","extra":[1]}"#,
        ),
        (
            "signal-offer",
            r#"{"type":"signal","to":"0f3a","data":{"sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n","type":"offer"}}"#,
        ),
        (
            "signal-candidate",
            r#"{"type":"signal","to":"p","data":{"candidate":"candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        ),
        ("signal-null", r#"{"type":"signal","to":"p","data":null}"#),
        ("leave", r#"{"type":"leave"}"#),
        ("ping", r#"{"type":"ping"}"#),
        ("lock", r#"{"type":"lock"}"#),
        ("admit", r#"{"type":"admit","peer":"p"}"#),
        (
            "mute-all",
            r#"{"type":"mute-request","peer":"all","kind":"audio"}"#,
        ),
        ("unknown-type", r#"{"type":"dance","room":"r"}"#),
        ("bad-room", r#"{"type":"join","room":"a b/c"}"#),
        (
            "name-unicode",
            "{\"type\":\"join\",\"room\":\"r\",\"name\":\"\u{e9}\u{1f600}\\u00e9\"}",
        ),
    ];
    seeds
        .iter()
        .map(|(n, t)| (*n, t.as_bytes().to_vec()))
        .collect()
}
