//! Interoperability with an independent implementation, the `stun` crate (webrtc-rs): what we
//! write must decode there with integrity and fingerprint intact, and what it writes must
//! decode here.

use std::net::{IpAddr, SocketAddr};

use ::stun::agent::TransactionId as TheirTid;
use ::stun::attributes::{
    ATTR_NONCE, ATTR_REALM, ATTR_SOFTWARE, ATTR_USERNAME, ATTR_XORMAPPED_ADDRESS,
    ATTR_XOR_PEER_ADDRESS,
};
use ::stun::error_code::{ErrorCode, ErrorCodeAttribute};
use ::stun::fingerprint::FINGERPRINT;
use ::stun::integrity::MessageIntegrity;
use ::stun::message::{
    Getter, Message, MessageType, Setter, BINDING_REQUEST, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CREATE_PERMISSION,
};
use ::stun::textattrs::TextAttribute;
use ::stun::uattrs::UnknownAttributes;
use ::stun::xoraddr::XorMappedAddress;

use super::*;

const USER: &str = "1700000000:alice";
const REALM: &str = "signalbox.test";
const PASSWORD: &str = "s3cret";

fn md5_key() -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(format!("{USER}:{REALM}:{PASSWORD}").as_bytes()).into()
}

fn theirs(bytes: &[u8]) -> Message {
    let mut m = Message::new();
    m.unmarshal_binary(bytes)
        .expect("the stun crate decodes our message");
    m
}

fn their_xor_address(m: &Message, t: ::stun::attributes::AttrType) -> SocketAddr {
    let mut a = XorMappedAddress::default();
    a.get_from_as(m, t).expect("address decodes");
    SocketAddr::new(a.ip, a.port)
}

#[test]
fn our_binding_response_decodes_in_the_stun_crate() {
    let mut req = Vec::new();
    MessageWriter::new(
        &mut req,
        Method::BINDING,
        Class::Request,
        TransactionId([1; 12]),
    )
    .finish();
    let req = MessageRef::parse(&req).unwrap();
    for from in ["198.51.100.20:61000", "[2001:db8::20]:61000"] {
        let from: SocketAddr = from.parse().unwrap();
        let mut buf = Vec::new();
        binding_response(&req, from, &mut buf);
        let m = theirs(&buf);
        assert_eq!(
            m.typ,
            MessageType::new(METHOD_BINDING, ::stun::message::CLASS_SUCCESS_RESPONSE)
        );
        assert_eq!(m.transaction_id.0, [1; 12]);
        assert_eq!(their_xor_address(&m, ATTR_XORMAPPED_ADDRESS), from);
        let software = TextAttribute::get_from_as(&m, ATTR_SOFTWARE).unwrap();
        assert_eq!(software.text, SOFTWARE_NAME);
        FINGERPRINT.check(&m).expect("fingerprint verifies there");
    }
}

#[test]
fn our_signed_request_verifies_in_the_stun_crate() {
    let peer: SocketAddr = "203.0.113.77:9000".parse().unwrap();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::CREATE_PERMISSION,
        Class::Request,
        TransactionId([0xA5; 12]),
    );
    w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::USERNAME, USER.as_bytes())
        .attr(attr::REALM, REALM.as_bytes())
        .attr(attr::NONCE, b"nonce-123")
        .integrity(&md5_key())
        .fingerprint();
    w.finish();
    let mut m = theirs(&buf);
    assert_eq!(
        m.typ,
        MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)
    );
    assert_eq!(their_xor_address(&m, ATTR_XOR_PEER_ADDRESS), peer);
    MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), PASSWORD.into())
        .check(&mut m)
        .expect("integrity verifies there");
    FINGERPRINT.check(&m).expect("fingerprint verifies there");
    // And a wrong password does not.
    assert!(
        MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), "x".into())
            .check(&mut m)
            .is_err()
    );
}

#[test]
fn our_error_responses_decode_in_the_stun_crate() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        Method::ALLOCATE,
        Class::Error,
        TransactionId([3; 12]),
    );
    w.error_code(420, "Unknown Attribute")
        .unknown_attributes(&[0x07AD, 0x0003, 0x7FFF])
        .fingerprint();
    w.finish();
    let m = theirs(&buf);
    assert_eq!(
        m.typ,
        MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)
    );
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&m).unwrap();
    assert_eq!(
        (code.code.0, &code.reason[..]),
        (420, &b"Unknown Attribute"[..])
    );
    let mut unknown = UnknownAttributes(Vec::new());
    unknown.get_from(&m).unwrap();
    let types: Vec<u16> = unknown.0.iter().map(|t| t.value()).collect();
    assert_eq!(types, [0x07AD, 0x0003, 0x7FFF]);
    FINGERPRINT.check(&m).unwrap();
}

#[test]
fn the_stun_crates_signed_request_verifies_here() {
    let peer = XorMappedAddress {
        ip: "2001:db8::99".parse::<IpAddr>().unwrap(),
        port: 4444,
    };
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    m.transaction_id = TheirTid([0x11; 12]);
    m.write_header();
    TextAttribute::new(ATTR_USERNAME, USER.into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_REALM, REALM.into())
        .add_to(&mut m)
        .unwrap();
    TextAttribute::new(ATTR_NONCE, "abc".into())
        .add_to(&mut m)
        .unwrap();
    peer.add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS).unwrap();
    MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), PASSWORD.into())
        .add_to(&mut m)
        .unwrap();
    FINGERPRINT.add_to(&mut m).unwrap();

    let msg = MessageRef::parse(&m.raw).expect("we decode the stun crate's message");
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::ALLOCATE, Class::Request)
    );
    assert_eq!(msg.transaction_id(), TransactionId([0x11; 12]));
    assert_eq!(msg.get(attr::USERNAME), Some(USER.as_bytes()));
    assert_eq!(msg.get(attr::NONCE), Some(&b"abc"[..]));
    assert_eq!(
        msg.xor_address(attr::XOR_PEER_ADDRESS),
        Some(Ok(SocketAddr::new(peer.ip, peer.port)))
    );
    assert_eq!(msg.verify_integrity(&md5_key()), Integrity::Ok);
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
}

#[test]
fn the_stun_crates_error_response_decodes_here() {
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE));
    m.transaction_id = TheirTid([0x22; 12]);
    m.write_header();
    ErrorCodeAttribute {
        code: ErrorCode(438),
        reason: b"Stale Nonce".to_vec(),
    }
    .add_to(&mut m)
    .unwrap();
    FINGERPRINT.add_to(&mut m).unwrap();
    let msg = MessageRef::parse(&m.raw).unwrap();
    assert_eq!(msg.class(), Class::Error);
    assert_eq!(msg.error_code(), Some(Ok((438, "Stale Nonce"))));
    assert_eq!(msg.has_valid_fingerprint(), Some(true));
}

#[test]
fn a_stun_crate_binding_request_is_answered() {
    let mut m = Message::new();
    m.set_type(BINDING_REQUEST);
    m.new_transaction_id().unwrap();
    m.write_header();
    FINGERPRINT.add_to(&mut m).unwrap();
    let req = MessageRef::parse(&m.raw).unwrap();
    let from: SocketAddr = "192.0.2.200:3478".parse().unwrap();
    let mut buf = Vec::new();
    assert!(binding_response(&req, from, &mut buf) > 0);
    let resp = theirs(&buf);
    assert_eq!(resp.transaction_id, m.transaction_id);
    assert_eq!(their_xor_address(&resp, ATTR_XORMAPPED_ADDRESS), from);
}
