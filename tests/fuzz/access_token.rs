//! Invitation-token verification on arbitrary tokens: nothing but the exact bytes this server
//! signed is accepted (no forgery, no second spelling of a valid token), for its room and
//! before its expiry; and every token the server signs verifies.
//!
//! Input: 4 bytes of the clock (unix seconds), a room (length byte, then its bytes), then the
//! token.

use signalbox::access::{sign, verify, AccessKey, Invite, TokenError, MAX_TOKEN_LEN};
use signalbox_fuzz_harness::{Features, Reader};

/// Base64url and the token's separator, for the mutations.
pub(crate) const DICTIONARY: &[&[u8]] = &[b".", b"-", b"_", b"=", b"eyJ", b"fQ", b"In0", b"A"];

fn key() -> AccessKey {
    AccessKey::from_bytes(&[7; 32])
}

pub(crate) fn target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let mut r = Reader::new(data);
    let now = u64::from(r.u32());
    let room = String::from_utf8_lossy(r.short_bytes()).into_owned();
    let token = String::from_utf8_lossy(r.rest()).into_owned();
    let key = key();

    let result = verify(&key, &token, &room, now);
    features.add(match &result {
        Ok(_) => 0,
        Err(e) => 1 + *e as u64,
    });
    if let Ok(invite) = &result {
        if invite.room != room || invite.expiry <= now {
            return Err(format!("accepted: {invite:?} for room {room:?} at {now}"));
        }
        if sign(&key, invite) != token {
            return Err(format!(
                "accepted: {token:?} is not the token signed for {invite:?}"
            ));
        }
    }
    if token.len() > MAX_TOKEN_LEN && result != Err(TokenError::Invalid) {
        return Err(format!(
            "length: a {}-byte token gives {result:?}",
            token.len()
        ));
    }
    if verify(&AccessKey::from_bytes(&[8; 32]), &token, &room, now).is_ok() {
        return Err("key: a token verifies under another key".into());
    }

    // Whatever the room and name, what the server signs verifies for that room until it
    // expires, and for no other room.
    let invite = Invite {
        room: room.clone(),
        expiry: now + 1,
        name: (!token.is_empty()).then(|| token.chars().take(64).collect()),
        host: token.len() % 2 == 1,
    };
    let signed = sign(&key, &invite);
    if signed.len() <= MAX_TOKEN_LEN {
        if verify(&key, &signed, &room, now) != Ok(invite.clone()) {
            return Err(format!("roundtrip: {invite:?} does not verify"));
        }
        if verify(&key, &signed, &room, now + 1) != Err(TokenError::Expired) {
            return Err(format!("roundtrip: {invite:?} verifies at its expiry"));
        }
        let other = format!("{room}x");
        if verify(&key, &signed, &other, now) != Err(TokenError::OtherRoom) {
            return Err(format!("roundtrip: {invite:?} verifies for room {other:?}"));
        }
    }
    Ok(())
}

pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let now: u32 = 1_700_000_000;
    let input = |room: &str, token: &str| {
        let mut v = now.to_be_bytes().to_vec();
        v.push(room.len() as u8);
        v.extend_from_slice(room.as_bytes());
        v.extend_from_slice(token.as_bytes());
        v
    };
    let token = |room: &str, expiry: u64, name: Option<&str>| {
        sign(
            &key(),
            &Invite {
                room: room.into(),
                expiry,
                name: name.map(Into::into),
                host: false,
            },
        )
    };
    let valid = token("standup", u64::from(now) + 3600, None);
    vec![
        ("valid", input("standup", &valid)),
        (
            "valid-with-name",
            input(
                "r",
                &token("r", u64::from(now) + 60, Some("Ann ünd Bob?&#")),
            ),
        ),
        (
            "expired",
            input("standup", &token("standup", u64::from(now), None)),
        ),
        ("other-room", input("retro", &valid)),
        ("no-dot", input("standup", "eyJyIjoic3RhbmR1cCJ9")),
        ("empty", input("standup", "")),
    ]
}
