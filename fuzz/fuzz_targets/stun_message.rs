//! Arbitrary datagrams through `MessageRef::parse` and every accessor, plus the Binding
//! responder: none may panic, and a parsed message must survive being written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_stun::{attr, binding_response, Integrity, MessageRef, MessageWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = MessageRef::parse(data) else {
        return;
    };
    let _ = msg.unknown_comprehension_required(attr::BINDING_UNDERSTOOD);
    let _ = msg.verify_integrity(b"fuzz");
    let _ = msg.has_valid_fingerprint();
    let _ = msg.xor_address(attr::XOR_MAPPED_ADDRESS);
    let _ = msg.xor_addresses(attr::XOR_PEER_ADDRESS).count();
    let _ = msg.u32_attr(attr::LIFETIME);
    let _ = msg.error_code();
    let mut out = Vec::new();
    binding_response(&msg, "192.0.2.1:3478".parse().unwrap(), &mut out);

    // Re-encode the counted attributes; the copy must parse to the same list.
    let mut copy = Vec::new();
    let mut w = MessageWriter::new(&mut copy, msg.method(), msg.class(), msg.transaction_id());
    for (t, v) in msg.attributes().filter(|(t, _)| {
        !matches!(
            *t,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        )
    }) {
        w.attr(t, v);
    }
    w.integrity(b"k").fingerprint();
    if w.finish() > 0 {
        let again = MessageRef::parse(&copy).expect("our own output parses");
        assert_eq!(again.verify_integrity(b"k"), Integrity::Ok);
        assert_eq!(again.has_valid_fingerprint(), Some(true));
    }
});
