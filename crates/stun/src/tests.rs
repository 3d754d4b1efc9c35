//! RFC 5769 and RFC 8489 Appendix B test vectors, byte for byte, and the parser's edge cases.

use std::net::SocketAddr;

use super::*;
use crate::vectors::{hex, RFC5769_LONG_TERM, RFC8489_B1};

mod interop;
mod prop;

/// RFC 5769 §2.1: Binding request with short-term credentials (ICE), password below.
pub(super) const RFC5769_REQUEST: &str = "
    00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
    00 24 00 04  6e 00 01 ff
    80 29 00 08  93 2f f9 b1  51 26 3b 36
    00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
    00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
    80 28 00 04  e5 7a 3b cf";
/// RFC 5769 §2.2: Binding success, IPv4 XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RFC5769_RESPONSE_V4: &str = "
    01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 08  00 01 a1 47  e1 12 a6 43
    00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
    80 28 00 04  c0 7d 4c 96";
/// RFC 5769 §2.3: Binding success, IPv6 XOR-MAPPED-ADDRESS.
const RFC5769_RESPONSE_V6: &str = "
    01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
    00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
    80 28 00 04  c8 fb 0b 4c";

pub(super) const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
/// "マトリックス" (U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9).
const MATRIX_USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The RFC's password "The<U+00AD>M<U+00AA>tr<U+2168>" after OpaqueString processing.
const MATRIX_PASSWORD: &str = "TheMatrIX";

fn md5_key(user: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(format!("{user}:{realm}:{password}").as_bytes()).into()
}

fn sha256_digest(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

#[test]
fn rfc5769_sample_request_parses_and_verifies() {
    let bytes = hex(RFC5769_REQUEST);
    let msg = MessageRef::parse(&bytes).unwrap();
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.transaction_id().0, hex("b7e7a701bc34d686fa87dfae")[..]);
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert_eq!(msg.u32_attr(attr::PRIORITY), Some(Ok(0x6e00_01ff)));
    assert_eq!(msg.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(msg.integrity_algorithm(), Some(IntegrityAlgorithm::Sha1));
    assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Integrity::Ok);
    assert_eq!(msg.verify_integrity(b"wrong password"), Integrity::Bad);
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
    let types: Vec<u16> = msg.attributes().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::FINGERPRINT
        ]
    );
}

#[test]
fn rfc5769_ipv4_response_parses_and_verifies() {
    let bytes = hex(RFC5769_RESPONSE_V4);
    let msg = MessageRef::parse(&bytes).unwrap();
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::BINDING, Class::Success)
    );
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"test vector"[..]));
    let expected: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(
        msg.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(Ok(expected))
    );
    assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Integrity::Ok);
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
}

#[test]
fn rfc5769_ipv6_response_parses_and_verifies() {
    let bytes = hex(RFC5769_RESPONSE_V6);
    let msg = MessageRef::parse(&bytes).unwrap();
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(
        msg.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(Ok(expected))
    );
    assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Integrity::Ok);
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
}

#[test]
fn rfc5769_long_term_request_verifies_with_the_md5_key() {
    let bytes = hex(RFC5769_LONG_TERM);
    let msg = MessageRef::parse(&bytes).unwrap();
    assert_eq!(msg.get(attr::USERNAME), Some(MATRIX_USER.as_bytes()));
    assert_eq!(msg.get(attr::REALM), Some(&b"example.org"[..]));
    assert_eq!(
        msg.get(attr::NONCE),
        Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
    );
    let key = md5_key(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
    assert_eq!(msg.has_valid_fingerprint(), None);
}

#[test]
fn rfc8489_b1_request_verifies_with_message_integrity_sha256_and_userhash() {
    let bytes = hex(RFC8489_B1);
    let msg = MessageRef::parse(&bytes).unwrap();
    let userhash = sha256_digest(format!("{MATRIX_USER}:example.org").as_bytes());
    assert_eq!(msg.get(attr::USERHASH), Some(&userhash[..]));
    assert_eq!(
        msg.get(attr::NONCE),
        Some(&b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"[..])
    );
    assert_eq!(msg.get(attr::PASSWORD_ALGORITHM), Some(&[0, 2, 0, 0][..]));
    assert_eq!(msg.integrity_algorithm(), Some(IntegrityAlgorithm::Sha256));
    // RFC 8489 §9.2.2: with PASSWORD-ALGORITHM SHA-256 the key is SHA-256(user:realm:pass).
    let key = sha256_digest(format!("{MATRIX_USER}:example.org:{MATRIX_PASSWORD}").as_bytes());
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
    let md5 = md5_key(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    assert_eq!(msg.verify_integrity(&md5), Integrity::Bad);
}

#[test]
fn writer_reproduces_the_rfc5769_request_byte_for_byte() {
    let expected = hex(RFC5769_REQUEST);
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&expected[8..20]);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Request,
        TransactionId(tid),
    );
    w.attr(attr::SOFTWARE, b"STUN test client")
        .u32(attr::PRIORITY, 0x6e00_01ff)
        .attr(attr::ICE_CONTROLLED, &hex("932ff9b151263b36"))
        .attr(attr::USERNAME, b"evtj:h6vY");
    let n = w.finish();
    // The RFC pads USERNAME with spaces; we pad with zeros, so patch them for comparison.
    buf[n - 3..n].copy_from_slice(b"   ");
    let mut w = MessageWriter::resume(&mut buf);
    w.integrity(SHORT_TERM_PASSWORD).fingerprint();
    assert_eq!(w.finish(), expected.len());
    assert_eq!(buf, expected);
}

#[test]
fn writer_reproduces_the_rfc5769_responses_byte_for_byte() {
    for (vector, addr) in [
        (RFC5769_RESPONSE_V4, "192.0.2.1:32853"),
        (
            RFC5769_RESPONSE_V6,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let expected = hex(vector);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&expected[8..20]);
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            Method::BINDING,
            Class::Success,
            TransactionId(tid),
        );
        w.attr(attr::SOFTWARE, b"test vector");
        w.finish();
        // The RFC pads SOFTWARE with a space.
        *buf.last_mut().unwrap() = b' ';
        let mut w = MessageWriter::resume(&mut buf);
        w.xor_address(attr::XOR_MAPPED_ADDRESS, addr.parse().unwrap())
            .integrity(SHORT_TERM_PASSWORD)
            .fingerprint();
        w.finish();
        assert_eq!(buf, expected, "{addr}");
    }
}

#[test]
fn writer_reproduces_the_rfc8489_b1_request_byte_for_byte() {
    let expected = hex(RFC8489_B1);
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&expected[8..20]);
    let userhash = sha256_digest(format!("{MATRIX_USER}:example.org").as_bytes());
    let key = sha256_digest(format!("{MATRIX_USER}:example.org:{MATRIX_PASSWORD}").as_bytes());
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Request,
        TransactionId(tid),
    );
    w.attr(attr::USERHASH, &userhash)
        .attr(attr::NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .attr(attr::REALM, b"example.org")
        .attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0])
        .integrity_sha256(&key);
    w.finish();
    assert_eq!(buf, expected);
}

#[test]
fn any_flipped_byte_breaks_integrity_or_parsing() {
    let bytes = hex(RFC5769_LONG_TERM);
    let key = md5_key(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        if let Ok(msg) = MessageRef::parse(&bad) {
            assert_ne!(msg.verify_integrity(&key), Integrity::Ok, "byte {i}");
        }
    }
}

#[test]
fn a_flipped_byte_breaks_the_fingerprint() {
    let mut bytes = hex(RFC5769_REQUEST);
    bytes[30] ^= 0x20;
    let msg = MessageRef::parse(&bytes).unwrap();
    assert_eq!(msg.has_valid_fingerprint(), Some(false));
}

/// `msg` with an attribute inserted right after its MESSAGE-INTEGRITY, as someone on the
/// path could, and the header length fixed up.
fn insert_after_integrity(msg: &[u8], t: u16, value: &[u8]) -> Vec<u8> {
    let parsed = MessageRef::parse(msg).unwrap();
    let mi = parsed.mi.unwrap();
    let mut out = msg[..mi + 24].to_vec();
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(HEADER_LEN + padded4(out.len() - HEADER_LEN), 0);
    let len = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let bytes = hex(RFC5769_LONG_TERM);
    let key = md5_key(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    let forged = insert_after_integrity(&bytes, attr::LIFETIME, &0u32.to_be_bytes());
    let msg = MessageRef::parse(&forged).unwrap();
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
    assert_eq!(msg.get(attr::LIFETIME), None);
    assert!(msg
        .unknown_comprehension_required(&[attr::USERNAME, attr::NONCE, attr::REALM])
        .is_empty());
    let smuggled = insert_after_integrity(&bytes, attr::USERNAME, b"mallory");
    let msg = MessageRef::parse(&smuggled).unwrap();
    assert_eq!(msg.get_all(attr::USERNAME).count(), 1);
    assert_eq!(msg.get(attr::USERNAME), Some(MATRIX_USER.as_bytes()));
}

#[test]
fn message_integrity_sha256_after_message_integrity_counts_and_covers_it() {
    let bytes = hex(RFC5769_LONG_TERM);
    let key = md5_key(MATRIX_USER, "example.org", MATRIX_PASSWORD);
    // A client using both: MI first, then MI-SHA256 over everything including MI.
    let mut buf = bytes.clone();
    let mut w = MessageWriter::resume(&mut buf);
    w.integrity_sha256(&key).fingerprint();
    w.finish();
    let msg = MessageRef::parse(&buf).unwrap();
    assert_eq!(msg.integrity_algorithm(), Some(IntegrityAlgorithm::Sha256));
    assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
    // MI-SHA256 wins: a zeroed one is Bad although MESSAGE-INTEGRITY is fine.
    let zeroed = insert_after_integrity(&bytes, attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]);
    let msg = MessageRef::parse(&zeroed).unwrap();
    assert_eq!(msg.verify_integrity(&key), Integrity::Bad);
}

#[test]
fn truncated_message_integrity_sha256_is_checked_on_its_length() {
    let key = b"key";
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::REFRESH,
        Class::Request,
        TransactionId([7; 12]),
    );
    w.attr(attr::USERNAME, b"u");
    w.finish();
    // Append a 16-byte MESSAGE-INTEGRITY-SHA256 by hand (RFC 8489 §14.6 allows 16..=32).
    let off = buf.len();
    let tag = hmac_over(hmac::HMAC_SHA256, key, &buf, off, 4 + 16);
    buf.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
    buf.extend_from_slice(&16u16.to_be_bytes());
    buf.extend_from_slice(&tag.as_ref()[..16]);
    let len = (buf.len() - HEADER_LEN) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    let msg = MessageRef::parse(&buf).unwrap();
    assert_eq!(msg.verify_integrity(key), Integrity::Ok);
    assert_eq!(msg.verify_integrity(b"other"), Integrity::Bad);
}

#[test]
fn a_message_without_integrity_reports_missing() {
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Request,
        TransactionId([1; 12]),
    )
    .finish();
    let msg = MessageRef::parse(&buf).unwrap();
    assert_eq!(msg.verify_integrity(b"k"), Integrity::Missing);
    assert_eq!(msg.integrity_algorithm(), None);
    assert_eq!(msg.has_valid_fingerprint(), None);
    assert_eq!(msg.attributes().count(), 0);
}

#[test]
fn headers_that_are_not_stun_are_refused() {
    let good = hex(RFC5769_REQUEST);
    assert_eq!(
        MessageRef::parse(&good[..19]).unwrap_err(),
        ParseError::TooShort
    );
    let mut bad = good.clone();
    bad[0] |= 0x80;
    assert_eq!(MessageRef::parse(&bad).unwrap_err(), ParseError::NotStun);
    let mut bad = good.clone();
    bad[4] = 0;
    assert_eq!(
        MessageRef::parse(&bad).unwrap_err(),
        ParseError::BadMagicCookie
    );
    let mut bad = good.clone();
    bad[3] = 0x57;
    assert_eq!(
        MessageRef::parse(&bad).unwrap_err(),
        ParseError::UnalignedLength(0x57)
    );
    let mut bad = good.clone();
    bad[3] = 0x5c;
    assert_eq!(
        MessageRef::parse(&bad).unwrap_err(),
        ParseError::LengthMismatch {
            declared: 0x5c,
            actual: 0x58
        }
    );
    assert!(matches!(
        MessageRef::parse(&good[..good.len() - 4]),
        Err(ParseError::LengthMismatch { .. })
    ));
}

/// A header claiming `body.len()` bytes, followed by `body`.
fn with_body(body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Request,
        TransactionId([9; 12]),
    )
    .finish();
    buf.extend_from_slice(body);
    let len = body.len() as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    buf
}

#[test]
fn attributes_running_past_the_end_are_refused() {
    // Value length 8 in a 4-byte body remainder.
    let buf = with_body(&[0x80, 0x22, 0x00, 0x08, 1, 2, 3, 4]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::TruncatedAttribute(0x8022)
    );
    // Value length 5 needs 8 bytes with padding; only 4 are there.
    let buf = with_body(&[0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::TruncatedAttribute(0x8022)
    );
    // Oversized: a 0xFFFF length in a short message.
    let buf = with_body(&[0x00, 0x06, 0xFF, 0xFF, 1, 2, 3, 4]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::TruncatedAttribute(0x0006)
    );
}

#[test]
fn attributes_after_fingerprint_and_bad_integrity_lengths_are_refused() {
    let buf = with_body(&[0x80, 0x28, 0, 4, 0, 0, 0, 0, 0x80, 0x22, 0, 0]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::AfterFingerprint(0x8022)
    );
    let buf = with_body(&[0x00, 0x08, 0, 4, 0, 0, 0, 0]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::BadIntegrityLength(attr::MESSAGE_INTEGRITY)
    );
    let buf = with_body(&[0x00, 0x1c, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        MessageRef::parse(&buf).unwrap_err(),
        ParseError::BadIntegrityLength(attr::MESSAGE_INTEGRITY_SHA256)
    );
}

#[test]
fn zero_length_and_padded_attributes_walk_correctly() {
    let buf = with_body(&[0x00, 0x1A, 0, 0, 0x80, 0x22, 0, 1, b'x', 0xAA, 0xBB, 0xCC]);
    let msg = MessageRef::parse(&buf).unwrap();
    let attrs: Vec<(u16, &[u8])> = msg.attributes().collect();
    assert_eq!(
        attrs,
        [(attr::DONT_FRAGMENT, &[][..]), (attr::SOFTWARE, &b"x"[..])]
    );
}

#[test]
fn methods_and_classes_round_trip_through_the_message_type() {
    let methods = [
        Method::BINDING,
        Method::ALLOCATE,
        Method::REFRESH,
        Method::SEND,
        Method::DATA,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
        Method(0xFFF),
        Method(0x0A5),
    ];
    for method in methods {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let mut buf = Vec::new();
            MessageWriter::new(&mut buf, method, class, TransactionId([3; 12])).finish();
            let msg = MessageRef::parse(&buf).unwrap();
            assert_eq!((msg.method(), msg.class()), (method, class));
        }
    }
    // Spot checks against the RFC's wire values.
    let mut buf = Vec::new();
    MessageWriter::new(
        &mut buf,
        Method::ALLOCATE,
        Class::Error,
        TransactionId([0; 12]),
    )
    .finish();
    assert_eq!(buf[..2], [0x01, 0x13]);
    MessageWriter::new(
        &mut buf,
        Method::DATA,
        Class::Indication,
        TransactionId([0; 12]),
    )
    .finish();
    assert_eq!(buf[..2], [0x00, 0x17]);
}

#[test]
fn several_peer_addresses_are_all_returned() {
    let peers: Vec<SocketAddr> = vec![
        "198.51.100.1:1000".parse().unwrap(),
        "[2001:db8::1]:2000".parse().unwrap(),
    ];
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::CREATE_PERMISSION,
        Class::Request,
        TransactionId([4; 12]),
    );
    for p in &peers {
        w.xor_address(attr::XOR_PEER_ADDRESS, *p);
    }
    w.finish();
    let msg = MessageRef::parse(&buf).unwrap();
    let got: Vec<SocketAddr> = msg
        .xor_addresses(attr::XOR_PEER_ADDRESS)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, peers);
}

#[test]
fn error_codes_are_written_with_class_and_number() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::ALLOCATE,
        Class::Error,
        TransactionId([5; 12]),
    );
    w.error_code(438, "Stale Nonce");
    w.finish();
    assert_eq!(buf[20..28], [0x00, 0x09, 0x00, 15, 0, 0, 4, 38]);
    let msg = MessageRef::parse(&buf).unwrap();
    assert_eq!(msg.error_code(), Some(Ok((438, "Stale Nonce"))));
}

#[test]
fn long_reason_phrases_are_cut_to_127_characters() {
    let mut buf = Vec::new();
    let reason = "ä".repeat(300);
    let mut w = MessageWriter::new(
        &mut buf,
        Method::BINDING,
        Class::Error,
        TransactionId([5; 12]),
    );
    w.error_code(400, &reason);
    w.finish();
    let msg = MessageRef::parse(&buf).unwrap();
    let (code, got) = msg.error_code().unwrap().unwrap();
    assert_eq!((code, got.chars().count()), (400, 127));
}

#[test]
fn a_message_too_long_for_the_length_field_is_not_written() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::DATA,
        Class::Indication,
        TransactionId([6; 12]),
    );
    w.attr(attr::DATA, &vec![0u8; 0xFFF8]).fingerprint();
    assert_eq!(w.finish(), 0);
    assert!(buf.is_empty());
    // The largest DATA that fits is still written.
    let mut w = MessageWriter::new(
        &mut buf,
        Method::DATA,
        Class::Indication,
        TransactionId([6; 12]),
    );
    w.attr(attr::DATA, &vec![0u8; 0xFFF8]);
    assert_eq!(w.finish(), HEADER_LEN + 0xFFFC);
    assert!(MessageRef::parse(&buf).is_ok());
}

#[test]
fn binding_requests_get_xor_mapped_address_software_and_fingerprint() {
    let req_bytes = hex(RFC5769_REQUEST);
    let req = MessageRef::parse(&req_bytes).unwrap();
    let from: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let mut buf = Vec::new();
    let n = binding_response(&req, from, &mut buf);
    assert_eq!(n, buf.len());
    let resp = MessageRef::parse(&buf).unwrap();
    assert_eq!(
        (resp.method(), resp.class()),
        (Method::BINDING, Class::Success)
    );
    assert_eq!(resp.transaction_id(), req.transaction_id());
    assert_eq!(resp.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(from)));
    assert_eq!(resp.get(attr::SOFTWARE), Some(SOFTWARE_NAME.as_bytes()));
    assert_eq!(resp.has_valid_fingerprint(), Some(true));
}

#[test]
fn binding_requests_with_unknown_required_attributes_get_420_listing_them() {
    let mut req = Vec::new();
    let mut w = MessageWriter::new(
        &mut req,
        Method::BINDING,
        Class::Request,
        TransactionId([8; 12]),
    );
    w.attr(0x07AD, &[1, 2, 3, 4])
        .u32(attr::PRIORITY, 1)
        .attr(attr::CHANGE_REQUEST, &[0, 0, 0, 6])
        .attr(0x07AD, &[5])
        .attr(0x8000, &[0; 4]);
    w.finish();
    let req = MessageRef::parse(&req).unwrap();
    let mut buf = Vec::new();
    assert!(binding_response(&req, "192.0.2.1:1".parse().unwrap(), &mut buf) > 0);
    let resp = MessageRef::parse(&buf).unwrap();
    assert_eq!(resp.class(), Class::Error);
    assert_eq!(resp.error_code(), Some(Ok((420, "Unknown Attribute"))));
    assert_eq!(
        resp.get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x07, 0xAD, 0x00, 0x03][..])
    );
    assert_eq!(resp.get(attr::XOR_MAPPED_ADDRESS), None);
    assert_eq!(resp.has_valid_fingerprint(), Some(true));
}

#[test]
fn binding_indications_and_bad_fingerprints_get_no_answer() {
    let mut ind = Vec::new();
    MessageWriter::new(
        &mut ind,
        Method::BINDING,
        Class::Indication,
        TransactionId([2; 12]),
    )
    .finish();
    let mut buf = vec![1, 2, 3];
    let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
    assert_eq!(
        binding_response(&MessageRef::parse(&ind).unwrap(), from, &mut buf),
        0
    );
    assert!(buf.is_empty());
    let mut bad = hex(RFC5769_REQUEST);
    bad[30] ^= 1;
    assert_eq!(
        binding_response(&MessageRef::parse(&bad).unwrap(), from, &mut buf),
        0
    );
    let mut alloc = Vec::new();
    MessageWriter::new(
        &mut alloc,
        Method::ALLOCATE,
        Class::Request,
        TransactionId([2; 12]),
    )
    .finish();
    assert_eq!(
        binding_response(&MessageRef::parse(&alloc).unwrap(), from, &mut buf),
        0
    );
}

#[test]
fn binding_answers_to_dual_stack_sockets_carry_the_ipv4_address() {
    let mut req = Vec::new();
    MessageWriter::new(
        &mut req,
        Method::BINDING,
        Class::Request,
        TransactionId([2; 12]),
    )
    .finish();
    let req = MessageRef::parse(&req).unwrap();
    let mut buf = Vec::new();
    binding_response(&req, "[::ffff:192.0.2.7]:5000".parse().unwrap(), &mut buf);
    let resp = MessageRef::parse(&buf).unwrap();
    assert_eq!(
        resp.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(Ok("192.0.2.7:5000".parse().unwrap()))
    );
}
