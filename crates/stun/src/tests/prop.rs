//! Property tests: arbitrary input never panics, and what the writer produces parses back to
//! the same attributes, here and in the `stun` crate.

use proptest::prelude::*;

use super::*;

/// Exercises every accessor, which must not panic whatever the message holds.
fn touch_everything(msg: &MessageRef<'_>) {
    let _ = (msg.method(), msg.class(), msg.transaction_id());
    for (t, v) in msg.attributes() {
        let _ = (t, v.len());
    }
    let _ = msg.unknown_comprehension_required(attr::BINDING_UNDERSTOOD);
    let _ = msg.verify_integrity(b"key");
    let _ = msg.has_valid_fingerprint();
    let _ = msg.xor_address(attr::XOR_MAPPED_ADDRESS);
    let _ = msg.xor_addresses(attr::XOR_PEER_ADDRESS).count();
    let _ = msg.u32_attr(attr::LIFETIME);
    let _ = msg.error_code();
    let mut out = Vec::new();
    let _ = binding_response(msg, "192.0.2.1:1".parse().unwrap(), &mut out);
}

/// A header with the right cookie and a length matching `body`, so the fuzzing reaches the
/// attribute walk instead of stopping at the header checks.
fn framed(method: u16, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + body.len());
    buf.extend_from_slice(&(method & 0x3FFF).to_be_bytes());
    buf.extend_from_slice(&(body.len() as u16).to_be_bytes());
    buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf.extend_from_slice(&[7; 12]);
    buf.extend_from_slice(body);
    buf
}

/// Attribute types the writer may emit freely (integrity and fingerprint are added by the
/// dedicated calls).
fn plain_type() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("integrity and fingerprint are written separately", |t| {
        !matches!(
            *t,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        )
    })
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(msg) = MessageRef::parse(&bytes) {
            touch_everything(&msg);
        }
        let _ = channel_data::parse(&bytes);
        let _ = channel_data::frame_len(&bytes);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_attribute_lists(
        method in any::<u16>(),
        mut body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        body.truncate(body.len() & !3);
        let buf = framed(method, &body);
        if let Ok(msg) = MessageRef::parse(&buf) {
            touch_everything(&msg);
        }
    }

    #[test]
    fn written_messages_parse_back_to_the_same_attributes(
        method in 0u16..0x1000,
        class in class(),
        tid in any::<[u8; 12]>(),
        attrs in proptest::collection::vec(
            (plain_type(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
        sha256 in any::<bool>(),
        fingerprint in any::<bool>(),
    ) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Method(method), class, TransactionId(tid));
        for (t, v) in &attrs {
            w.attr(*t, v);
        }
        if let Some(key) = &key {
            if sha256 { w.integrity_sha256(key); } else { w.integrity(key); }
        }
        if fingerprint {
            w.fingerprint();
        }
        let n = w.finish();
        prop_assert_eq!(n, buf.len());

        let msg = MessageRef::parse(&buf).unwrap();
        prop_assert_eq!((msg.method(), msg.class()), (Method(method), class));
        prop_assert_eq!(msg.transaction_id(), TransactionId(tid));
        let plain: Vec<(u16, &[u8])> = msg
            .attributes()
            .filter(|(t, _)| !matches!(*t, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT))
            .collect();
        let expected: Vec<(u16, &[u8])> = attrs.iter().map(|(t, v)| (*t, &v[..])).collect();
        prop_assert_eq!(plain, expected);
        match &key {
            Some(key) => prop_assert_eq!(msg.verify_integrity(key), Integrity::Ok),
            None => prop_assert_eq!(msg.verify_integrity(b"k"), Integrity::Missing),
        }
        prop_assert_eq!(msg.has_valid_fingerprint(), fingerprint.then_some(true));

        // The independent implementation reads the same message.
        let mut theirs = ::stun::message::Message::new();
        theirs.unmarshal_binary(&buf).unwrap();
        prop_assert_eq!(theirs.transaction_id.0, tid);
        // The stun crate reads the pre-RFC 5389 type 0x8020 as XOR-MAPPED-ADDRESS (0x0020), so
        // those two are compared only when the other is absent.
        let renamed = attrs.iter().any(|(t, _)| *t == 0x8020);
        for (t, _) in attrs.iter().filter(|(t, _)| !(renamed && matches!(*t, 0x8020 | 0x0020))) {
            // `get` returns the first of a type on both sides.
            let got = theirs.get(::stun::attributes::AttrType(*t)).unwrap();
            prop_assert_eq!(Some(&got[..]), msg.get(*t));
        }
        if fingerprint {
            prop_assert!(::stun::fingerprint::FINGERPRINT.check(&theirs).is_ok());
        }
        if let (Some(key), false) = (&key, sha256) {
            let integrity = ::stun::integrity::MessageIntegrity(key.clone());
            prop_assert!(integrity.check(&mut theirs).is_ok());
        }
    }

    #[test]
    fn xor_addresses_round_trip(ip in any::<std::net::IpAddr>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
        let addr = SocketAddr::new(ip, port);
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Success, TransactionId(tid));
        w.xor_address(attr::XOR_MAPPED_ADDRESS, addr);
        w.finish();
        let msg = MessageRef::parse(&buf).unwrap();
        let canonical = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        prop_assert_eq!(msg.xor_address(attr::XOR_MAPPED_ADDRESS), Some(Ok(SocketAddr::new(canonical, port))));
    }

    #[test]
    fn channel_data_round_trips(channel in channel_data::MIN_CHANNEL..=channel_data::MAX_CHANNEL,
                                data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut frame = vec![0u8; channel_data::padded_len(data.len())];
        let mut header = [0u8; 4];
        channel_data::write_header(&mut header, channel, data.len() as u16);
        frame[..4].copy_from_slice(&header);
        frame[4..4 + data.len()].copy_from_slice(&data);
        prop_assert_eq!(channel_data::parse(&frame), Some((channel, &data[..])));
        prop_assert_eq!(channel_data::frame_len(&frame), Ok(Some(frame.len())));
    }
}
