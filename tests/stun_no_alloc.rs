//! The per-packet STUN and ChannelData paths do not touch the heap: parsing, attribute access,
//! integrity and fingerprint checks, ChannelData framing, and writing a response into a
//! buffer that is reused. Counted with a global allocator that tallies the calling thread's
//! allocations (its own binary, so no other test shares it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use signalbox::stun::{
    attr, binding_response, channel_data, Class, Integrity, MessageRef, MessageWriter, Method,
    TransactionId,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is a const-
// initialised thread-local, which needs no allocation, and `try_with` never panics during
// thread teardown.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

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

    let count = allocations_during(|| {
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
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) > 0);
}
