use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use signalbox_stun::vectors::{hex, RFC5769_LONG_TERM, RFC8489_B1};
use signalbox_stun::{Class, MessageWriter, Method, TransactionId};

const REALM: &str = "signalbox.test";
const SECRET: &[u8] = b"n0t-a-real-secret";
/// Made with Python the way Synapse does it (synapse/rest/client/voip.py):
/// `base64.b64encode(hmac.new(secret, f"{expiry}:{user}".encode(), hashlib.sha1).digest())`.
const SYNAPSE_USERNAME: &str = "1700003600:@alice:example.org";
const SYNAPSE_PASSWORD: &str = "geKMCGZZ5310XjChaEawXyGCGlk=";
/// The same for a bare-expiry username, as coturn's `turnutils_uclient -W` makes it.
const BARE_USERNAME: &str = "1700003600";
const BARE_PASSWORD: &str = "jpnu/gVQjCQgAOXF8F/lwkK2v4s=";
const BEFORE_EXPIRY: u64 = 1_700_000_000;

fn client(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An Allocate request signed as a client holding `username`/`password` would sign it.
fn signed_allocate(username: &str, password: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::ALLOCATE,
        Class::Request,
        TransactionId([0x42; 12]),
    );
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::USERNAME, username.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, b"whatever")
        .integrity(&long_term_key(username, REALM, password))
        .fingerprint();
    w.finish();
    buf
}

fn secrets(list: &[&[u8]]) -> Secrets {
    Secrets::new(list.iter().map(|s| s.to_vec()).collect()).unwrap()
}

#[test]
fn rest_passwords_match_what_synapse_and_coturn_compute() {
    assert_eq!(rest_password(SECRET, SYNAPSE_USERNAME), SYNAPSE_PASSWORD);
    assert_eq!(rest_password(SECRET, BARE_USERNAME), BARE_PASSWORD);
}

#[test]
fn a_credential_made_as_synapse_makes_it_verifies() {
    let req = signed_allocate(SYNAPSE_USERNAME, SYNAPSE_PASSWORD);
    let msg = MessageRef::parse(&req).unwrap();
    let got = secrets(&[SECRET]).authenticate(&msg, REALM, ':', BEFORE_EXPIRY);
    let expected_key = long_term_key(SYNAPSE_USERNAME, REALM, SYNAPSE_PASSWORD);
    assert_eq!(
        got,
        Authentication::Valid {
            key: expected_key,
            username: SYNAPSE_USERNAME,
            rest: RestUsername {
                expiry: 1_700_003_600,
                user: Some("@alice:example.org"),
            },
        }
    );
}

#[test]
fn a_bare_expiry_username_verifies() {
    let req = signed_allocate(BARE_USERNAME, BARE_PASSWORD);
    let msg = MessageRef::parse(&req).unwrap();
    let got = secrets(&[SECRET]).authenticate(&msg, REALM, ':', BEFORE_EXPIRY);
    assert!(matches!(
        got,
        Authentication::Valid {
            rest: RestUsername { user: None, .. },
            ..
        }
    ));
}

#[test]
fn an_expired_username_is_reported_as_expired() {
    let req = signed_allocate(SYNAPSE_USERNAME, SYNAPSE_PASSWORD);
    let msg = MessageRef::parse(&req).unwrap();
    let s = secrets(&[SECRET]);
    // Valid through its last second, expired one second later.
    assert!(matches!(
        s.authenticate(&msg, REALM, ':', 1_700_003_600),
        Authentication::Valid { .. }
    ));
    assert!(matches!(
        s.authenticate(&msg, REALM, ':', 1_700_003_601),
        Authentication::Expired {
            rest: RestUsername {
                expiry: 1_700_003_600,
                ..
            },
            ..
        }
    ));
}

#[test]
fn a_wrong_password_or_secret_is_refused_even_when_expired() {
    let s = secrets(&[SECRET]);
    let req = signed_allocate(SYNAPSE_USERNAME, "not the password");
    let msg = MessageRef::parse(&req).unwrap();
    assert_eq!(
        s.authenticate(&msg, REALM, ':', BEFORE_EXPIRY),
        Authentication::BadIntegrity
    );
    assert_eq!(
        s.authenticate(&msg, REALM, ':', u64::MAX),
        Authentication::BadIntegrity
    );
    // Correct password, wrong realm.
    let req = signed_allocate(SYNAPSE_USERNAME, SYNAPSE_PASSWORD);
    let msg = MessageRef::parse(&req).unwrap();
    assert_eq!(
        s.authenticate(&msg, "other.realm", ':', BEFORE_EXPIRY),
        Authentication::BadIntegrity
    );
}

#[test]
fn any_listed_secret_verifies_and_the_first_one_mints() {
    let old: &[u8] = b"old secret";
    let new: &[u8] = b"new secret";
    let rotated = secrets(&[new, old]);
    assert_eq!(
        rotated.mint(SYNAPSE_USERNAME),
        rest_password(new, SYNAPSE_USERNAME)
    );
    for secret in [old, new] {
        let password = rest_password(secret, SYNAPSE_USERNAME);
        let req = signed_allocate(SYNAPSE_USERNAME, &password);
        let msg = MessageRef::parse(&req).unwrap();
        assert!(matches!(
            rotated.authenticate(&msg, REALM, ':', BEFORE_EXPIRY),
            Authentication::Valid { .. }
        ));
        // Once the old secret is dropped, its credentials stop working.
        let only_new = secrets(&[new]);
        let verdict = only_new.authenticate(&msg, REALM, ':', BEFORE_EXPIRY);
        assert_eq!(
            matches!(verdict, Authentication::Valid { .. }),
            secret == new
        );
    }
}

#[test]
fn secrets_need_at_least_one_non_empty_secret() {
    assert_eq!(Secrets::new(vec![]).unwrap_err(), AuthError::NoSecret);
    assert_eq!(
        Secrets::new(vec![b"a".to_vec(), vec![]]).unwrap_err(),
        AuthError::EmptySecret(2)
    );
    assert_eq!(format!("{:?}", secrets(&[SECRET])), "Secrets(1 hidden)");
}

#[test]
fn requests_without_a_usable_username_are_bad_usernames() {
    let s = secrets(&[SECRET]);
    for username in ["alice", "alice:1700003600", "", "1700003600:"] {
        let password = rest_password(SECRET, username);
        let req = signed_allocate(username, &password);
        let msg = MessageRef::parse(&req).unwrap();
        assert_eq!(
            s.authenticate(&msg, REALM, ':', BEFORE_EXPIRY),
            Authentication::BadUsername,
            "{username:?}"
        );
    }
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        Method::ALLOCATE,
        Class::Request,
        TransactionId([1; 12]),
    )
    .finish();
    assert_eq!(
        s.authenticate(&MessageRef::parse(&buf).unwrap(), REALM, ':', 0),
        Authentication::BadUsername
    );
}

#[test]
fn rest_usernames_parse_with_a_configurable_separator() {
    assert_eq!(
        parse_rest_username("1700003600", ':'),
        Some(RestUsername {
            expiry: 1_700_003_600,
            user: None
        })
    );
    assert_eq!(
        parse_rest_username("1700003600:@bob:matrix.org", ':'),
        Some(RestUsername {
            expiry: 1_700_003_600,
            user: Some("@bob:matrix.org")
        })
    );
    assert_eq!(
        parse_rest_username("1700003600-room42", '-'),
        Some(RestUsername {
            expiry: 1_700_003_600,
            user: Some("room42")
        })
    );
    assert_eq!(parse_rest_username("1700003600-room42", ':'), None);
    for bad in [
        "",
        ":user",
        "user:1700003600",
        "1700003600:",
        "-5:user",
        "+5:user",
        "1e9:user",
        " 17:user",
        "99999999999999999999999:user",
        "18446744073709551616",
    ] {
        assert_eq!(parse_rest_username(bad, ':'), None, "{bad:?}");
    }
    assert_eq!(
        parse_rest_username("18446744073709551615", ':').map(|r| r.expiry),
        Some(u64::MAX)
    );
    let long = format!("1700003600:{}", "u".repeat(MAX_USERNAME_LEN));
    assert_eq!(parse_rest_username(&long, ':'), None);
}

#[test]
fn the_long_term_key_verifies_rfc5769s_long_term_vector() {
    let bytes = hex(RFC5769_LONG_TERM);
    let msg = MessageRef::parse(&bytes).unwrap();
    let key = long_term_key(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
        "example.org",
        "TheMatrIX",
    );
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
}

#[test]
fn the_sha256_long_term_key_verifies_rfc8489s_b1_vector() {
    let bytes = hex(RFC8489_B1);
    let msg = MessageRef::parse(&bytes).unwrap();
    let key = long_term_key_sha256(
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
        "example.org",
        "TheMatrIX",
    );
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
}

fn nonce_key() -> NonceKey {
    NonceKey::new([7; 32])
}

#[test]
fn a_fresh_nonce_is_valid_for_its_client() {
    let key = nonce_key();
    let c = client("198.51.100.1:5000");
    let nonce = key.mint(1000, c);
    assert_eq!(nonce.len(), NONCE_LEN);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(key.check(nonce.as_bytes(), c, 1000, 600), NonceCheck::Valid);
    assert_eq!(key.check(nonce.as_bytes(), c, 1600, 600), NonceCheck::Valid);
}

#[test]
fn a_nonce_older_than_the_max_age_is_stale() {
    let key = nonce_key();
    let c = client("198.51.100.1:5000");
    let nonce = key.mint(1000, c);
    assert_eq!(key.check(nonce.as_bytes(), c, 1601, 600), NonceCheck::Stale);
}

#[test]
fn a_nonce_from_another_address_or_port_is_refused() {
    let key = nonce_key();
    let nonce = key.mint(1000, client("198.51.100.1:5000"));
    for other in [
        "198.51.100.2:5000",
        "198.51.100.1:5001",
        "[2001:db8::1]:5000",
    ] {
        assert_eq!(
            key.check(nonce.as_bytes(), client(other), 1000, 600),
            NonceCheck::Invalid,
            "{other}"
        );
    }
    // A dual-stack socket's mapped form of the same address is the same client.
    assert_eq!(
        key.check(
            nonce.as_bytes(),
            client("[::ffff:198.51.100.1]:5000"),
            1000,
            600
        ),
        NonceCheck::Valid
    );
}

#[test]
fn forged_garbled_or_future_nonces_are_refused() {
    let key = nonce_key();
    let c = client("198.51.100.1:5000");
    let nonce = key.mint(1000, c);
    // Another server's key.
    assert_eq!(
        NonceKey::new([8; 32]).check(nonce.as_bytes(), c, 1000, 600),
        NonceCheck::Invalid
    );
    // A newer timestamp with the old MAC.
    let mut bumped = nonce.clone().into_bytes();
    bumped[15] = b'f';
    assert_eq!(key.check(&bumped, c, 2000, 600), NonceCheck::Invalid);
    // Every single-character change is refused.
    for i in 0..nonce.len() {
        let mut bad = nonce.clone().into_bytes();
        bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            key.check(&bad, c, 1000, 600),
            NonceCheck::Invalid,
            "char {i}"
        );
    }
    for bad in [
        &b""[..],
        b"00",
        &nonce.as_bytes()[..47],
        b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA",
    ] {
        assert_eq!(key.check(bad, c, 1000, 600), NonceCheck::Invalid);
    }
    let mut upper = nonce.to_uppercase().into_bytes();
    upper.truncate(NONCE_LEN);
    assert_eq!(key.check(&upper, c, 1000, 600), NonceCheck::Invalid);
    // Minted in the future (beyond a small skew): not ours to accept.
    let future = key.mint(2000, c);
    assert_eq!(
        key.check(future.as_bytes(), c, 1000, 600),
        NonceCheck::Invalid
    );
    assert_eq!(
        key.check(future.as_bytes(), c, 1996, 600),
        NonceCheck::Valid
    );
}

#[test]
fn a_source_gets_its_burst_then_waits_for_refill() {
    let mut limiter = RateLimiter::with_seed(1024, 2, 5, 1);
    let ip: IpAddr = "203.0.113.1".parse().unwrap();
    let t0 = 1_000_000;
    let allowed = (0..20).filter(|_| limiter.allow(ip, t0)).count();
    assert_eq!(allowed, 5);
    // 2 per second: after 499 ms nothing, after 500 ms one more.
    assert!(!limiter.allow(ip, t0 + 499));
    assert!(limiter.allow(ip, t0 + 500));
    assert!(!limiter.allow(ip, t0 + 500));
    // A long pause refills to the burst, not beyond.
    let allowed = (0..20)
        .filter(|_| limiter.allow(ip, t0 + 3_600_000))
        .count();
    assert_eq!(allowed, 5);
}

#[test]
fn other_sources_keep_their_own_budget() {
    let mut limiter = RateLimiter::with_seed(1 << 16, 1, 3, 99);
    let flooder: IpAddr = "203.0.113.1".parse().unwrap();
    let other: IpAddr = "198.51.100.77".parse().unwrap();
    assert_ne!(
        limiter.slot_of(flooder),
        limiter.slot_of(other),
        "pick a seed that separates them"
    );
    for _ in 0..100 {
        limiter.allow(flooder, 5);
    }
    assert!(!limiter.allow(flooder, 5));
    assert!(limiter.allow(other, 5));
}

#[test]
fn an_ipv6_64_counts_as_one_source_and_mapped_ipv4_as_ipv4() {
    let mut limiter = RateLimiter::with_seed(1 << 16, 1, 2, 7);
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
    assert!(limiter.allow(a, 10));
    assert!(limiter.allow(b, 10));
    assert!(!limiter.allow(a, 10), "the /64 shares one bucket");
    let v4: IpAddr = "192.0.2.9".parse().unwrap();
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
    assert_eq!(limiter.slot_of(v4), limiter.slot_of(mapped));
}

#[test]
fn a_flood_of_400k_random_sources_keeps_memory_fixed_and_answers_bounded() {
    const SLOTS: usize = 4096;
    const BURST: u32 = 4;
    let mut limiter = RateLimiter::with_seed(SLOTS, 10, BURST, 0xDEAD_BEEF);
    let table_before = limiter.slots.as_ptr();
    let memory_before = limiter.memory_bytes();
    assert_eq!(
        memory_before,
        SLOTS * 16,
        "16 bytes per slot, nothing per source"
    );
    // xorshift64: deterministic pseudo-random spoofed sources, both families.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let now_ms = 50_000;
    let mut allowed = 0usize;
    for i in 0..400_000 {
        let r = next();
        let ip = if i % 2 == 0 {
            IpAddr::V4(Ipv4Addr::from(r as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(next())))
        };
        allowed += usize::from(limiter.allow(ip, now_ms));
    }
    // The table is the same allocation of the same size: it cannot grow by construction.
    assert_eq!(limiter.slots.as_ptr(), table_before);
    assert_eq!(limiter.slot_count(), SLOTS);
    assert_eq!(limiter.memory_bytes(), memory_before);
    // At one instant at most every bucket's burst is answered: no amplification.
    assert!(allowed <= SLOTS * BURST as usize, "{allowed}");
    // The flood spread over the table: nearly every bucket was hit.
    assert!(allowed > SLOTS * BURST as usize * 9 / 10, "{allowed}");
}

#[test]
fn a_room_peer_is_admitted_while_live_and_refused_once_removed() {
    let live = LivePeers::new(8);
    let now = BEFORE_EXPIRY;
    assert!(!live.admits("~standup:p1", now), "never handed out");
    assert!(live.insert("~standup:p1", now + 600, now));
    assert!(live.admits("~standup:p1", now));
    assert!(!live.admits("~standup:p2", now), "another peer");
    live.remove("~standup:p1");
    assert!(!live.admits("~standup:p1", now), "the peer left");
    assert!(live.is_empty());
}

#[test]
fn user_parts_without_the_marker_are_not_the_sets_business() {
    let live = LivePeers::new(1);
    for user in ["@alice:example.org", "diag-1", "1700003600", "standup:p1"] {
        assert!(live.admits(user, BEFORE_EXPIRY), "{user}");
    }
}

#[test]
fn an_entry_admits_until_the_latest_expiry_handed_out_for_it() {
    let live = LivePeers::new(8);
    let now = BEFORE_EXPIRY;
    assert!(live.insert("~r:p", now + 10, now));
    assert!(live.insert("~r:p", now + 600, now + 5), "renewed");
    assert!(
        live.insert("~r:p", now + 20, now + 6),
        "an older one changes nothing"
    );
    assert!(live.admits("~r:p", now + 600));
    assert!(!live.admits("~r:p", now + 601));
    assert_eq!(live.len(), 1);
}

#[test]
fn the_set_never_grows_past_its_capacity_and_expired_entries_make_room_first() {
    let live = LivePeers::new(3);
    let now = BEFORE_EXPIRY;
    assert!(live.insert("~r:short", now + 1, now));
    assert!(live.insert("~r:a", now + 600, now));
    assert!(live.insert("~r:b", now + 600, now));
    assert!(
        !live.insert("~r:c", now + 600, now),
        "full of valid credentials: refused, no one evicted"
    );
    assert!(live.admits("~r:a", now) && live.admits("~r:b", now));
    assert!(
        live.insert("~r:c", now + 600, now + 2),
        "the expired one made room"
    );
    assert!(!live.admits("~r:short", now + 2));
    assert_eq!(live.len(), 3);
    for i in 0..1000 {
        let _ = live.insert(&format!("~r:{i}"), now + 600, now + 3);
        assert!(live.len() <= 3);
    }
}
