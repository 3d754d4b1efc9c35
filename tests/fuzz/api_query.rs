//! The HTTP API's query parsing (`GET /api/turn?service=turn&username=U&key=K`): any query
//! gives a map or `None` without panicking, a `username` passes the user-part rules only when
//! it meets them, and a query percent-encoded from pairs decodes back to those pairs.
//!
//! Input: a first byte; when even, the rest is the query as text; when odd, the rest is up to
//! eight (key, value) pairs, each a length byte and its bytes, that the target encodes itself.

use std::collections::HashMap;

use signalbox::credentials::{UserPart, MAX_USER_LEN};
use signalbox::web::api::serde_urlencoded_map;
use signalbox_fuzz_harness::{Features, Reader};
use signalbox_turn_proto::auth::PEER_MARKER;

/// The query's own characters and the endpoint's keys, for the mutations.
pub(crate) const DICTIONARY: &[&[u8]] = &[
    b"&",
    b"=",
    b"+",
    b"%",
    b"%20",
    b"%00",
    b"%2B",
    b"%26",
    b"%3D",
    b"%C3%A9",
    b"%FF",
    b"#",
    b"service",
    b"turn",
    b"username",
    b"key",
];

pub(crate) fn target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let mut r = Reader::new(data);
    if r.u8() % 2 == 0 {
        let query = String::from_utf8_lossy(r.rest());
        let map = serde_urlencoded_map(&query);
        features.add(map.as_ref().map_or(0, |m| 1 + m.len().min(8) as u64));
        if let Some(user) = map.as_ref().and_then(|m| m.get("username")) {
            check_user(user, features)?;
        }
        return Ok(());
    }
    let mut pairs = Vec::new();
    while !r.is_empty() && pairs.len() < 8 {
        let k = String::from_utf8_lossy(r.short_bytes()).into_owned();
        let v = String::from_utf8_lossy(r.short_bytes()).into_owned();
        pairs.push((k, v));
    }
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let expected: HashMap<String, String> = pairs.iter().cloned().collect();
    features.add(100 + expected.len() as u64);
    match serde_urlencoded_map(&query) {
        Some(map) if map == expected => Ok(()),
        got => Err(format!(
            "roundtrip: {pairs:?} as {query:?} decodes to {got:?}"
        )),
    }
}

/// The user-part rules the handlers apply to `username`: no control characters or white space,
/// and never the marker of the user parts only signaling mints for room peers.
fn check_user(user: &str, features: &mut Features) -> Result<(), String> {
    let ok = UserPart::custom(user).is_some();
    features.add(if ok { 20 } else { 21 });
    let meets = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == PEER_MARKER);
    if ok != meets {
        return Err(format!(
            "username: {user:?} accepted {ok}, meets the rules {meets}"
        ));
    }
    Ok(())
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986 §2.3).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let text = |q: &str| [&[0u8][..], q.as_bytes()].concat();
    let pairs = |ps: &[(&str, &str)]| {
        let mut v = vec![1u8];
        for (k, val) in ps {
            v.push(k.len() as u8);
            v.extend_from_slice(k.as_bytes());
            v.push(val.len() as u8);
            v.extend_from_slice(val.as_bytes());
        }
        v
    };
    vec![
        (
            "turn",
            text("service=turn&username=alice&key=0123456789abcdef"),
        ),
        ("escaped", text("username=a%2Bb+c%26d&key=k%3D1")),
        ("duplicates", text("key=a&key=b&&=&username=")),
        ("bad-escape", text("username=%ZZ%C3%28&service=%")),
        ("unicode", text("username=J%C3%BCrgen&service=turn")),
        (
            "pairs",
            pairs(&[
                ("service", "turn"),
                ("username", "ann & bob=1"),
                ("key", "k+k"),
            ]),
        ),
        ("pairs-empty", pairs(&[("", ""), ("username", "")])),
    ]
}
