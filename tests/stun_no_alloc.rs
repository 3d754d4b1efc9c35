//! The per-packet STUN and ChannelData paths do not touch the heap: parsing, attribute access,
//! integrity and fingerprint checks, ChannelData framing, and writing a response into a
//! buffer that is reused. Counted with a global allocator that tallies the calling thread's
//! allocations (its own binary, so no other test shares it).

mod counting_alloc;

use std::net::SocketAddr;

use signalbox_stun::{
    attr, binding_response, channel_data, Class, Integrity, MessageRef, MessageWriter, Method,
    TransactionId,
};

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

#[test]
fn the_per_packet_paths_allocate_nothing() {
    let key = [0x5Au8; 16];
    let peer: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let mut request = Vec::new();
    let mut w = MessageWriter::new(
        &mut request,
        Method::CREATE_PERMISSION,
        Class::Request,
        TransactionId([9; 12]),
    );
    w.xor_address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::USERNAME, b"1700003600:alice")
        .attr(attr::REALM, b"signalbox.test")
        .attr(attr::NONCE, b"0123456789abcdef")
        .integrity(&key)
        .integrity_sha256(&key)
        .fingerprint();
    w.finish();
    let mut binding = Vec::new();
    MessageWriter::new(
        &mut binding,
        Method::BINDING,
        Class::Request,
        TransactionId([1; 12]),
    )
    .finish();
    let channel_frame = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0x00];
    let mut out = Vec::with_capacity(1500);

    let count = counting_alloc::allocations_during(|| {
        for _ in 0..100 {
            let msg = MessageRef::parse(&request).expect("valid");
            assert_eq!(msg.method(), Method::CREATE_PERMISSION);
            assert_eq!(msg.attributes().count(), 7);
            assert_eq!(msg.get(attr::REALM), Some(&b"signalbox.test"[..]));
            assert_eq!(msg.xor_addresses(attr::XOR_PEER_ADDRESS).count(), 1);
            assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(peer)));
            assert!(msg
                .unknown_comprehension_required(&[
                    attr::XOR_PEER_ADDRESS,
                    attr::USERNAME,
                    attr::REALM,
                    attr::NONCE
                ])
                .is_empty());
            assert_eq!(msg.verify_integrity(&key), Integrity::Ok);
            assert_eq!(msg.has_valid_fingerprint(), Some(true));

            let req = MessageRef::parse(&binding).expect("valid");
            assert!(binding_response(&req, peer, &mut out) > 0);

            let mut w = MessageWriter::new(
                &mut out,
                Method::CREATE_PERMISSION,
                Class::Error,
                TransactionId([9; 12]),
            );
            w.error_code(438, "Stale Nonce")
                .attr(attr::NONCE, b"0123456789abcdef")
                .integrity(&key)
                .fingerprint();
            assert!(w.finish() > 0);

            assert_eq!(
                channel_data::parse(&channel_frame),
                Some((0x4001, &b"abc"[..]))
            );
            assert_eq!(channel_data::frame_len(&channel_frame), Ok(Some(8)));
        }
    });
    assert_eq!(count, 0, "heap allocations on the per-packet paths");

    // The counter works: a fresh Vec does allocate.
    assert!(counting_alloc::allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) > 0);
}
