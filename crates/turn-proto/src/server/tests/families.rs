//! Address families in an Allocate (RFC 8656 §7.2): one relayed address per allocation, of the
//! family asked for; ADDITIONAL-ADDRESS-FAMILY (both families in one allocation) is answered
//! with the IPv4 address and an ADDRESS-ERROR-CODE 440 for IPv6.

use super::*;

fn udp(w: &mut MessageWriter<'_>) {
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

#[test]
fn additional_address_family_gets_ipv4_and_an_address_error_for_ipv6() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 3600, SECRET);
    let req = h.build(Method::ALLOCATE, Some(&c), |w| {
        udp(w);
        w.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    let a = h.request(ALICE, &req);
    assert_eq!(a.class, Class::Success, "{:?}", a.code);
    let msg = a.msg();
    let relayed = msg
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
        .expect("valid");
    assert!(relayed.is_ipv4());
    let error = msg
        .get(attr::ADDRESS_ERROR_CODE)
        .expect("ADDRESS-ERROR-CODE for the family not allocated");
    assert_eq!(&error[..4], &[attr::FAMILY_IPV6, 0, 4, 40]);
    assert_eq!(h.sockets.open.len(), 1, "one relay socket");
}

#[test]
fn a_plain_allocate_carries_no_address_error() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 3600, SECRET);
    let a = h.allocate(ALICE, &c);
    assert_eq!(a.class, Class::Success, "{:?}", a.code);
    assert!(a.msg().get(attr::ADDRESS_ERROR_CODE).is_none());
}

/// RFC 8656 §7.2: a request with both REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY
/// is a 400, and so is an ADDITIONAL-ADDRESS-FAMILY other than IPv6.
#[test]
fn both_family_attributes_or_an_ipv4_additional_family_are_bad_requests() {
    let mut h = harness();
    let c = h.creds(ALICE, "alice", 3600, SECRET);
    let both = h.build(Method::ALLOCATE, Some(&c), |w| {
        udp(w);
        w.attr(
            attr::REQUESTED_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
        w.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV6, 0, 0, 0],
        );
    });
    assert_eq!(h.request(ALICE, &both).code, Some(400));
    let v4 = h.build(Method::ALLOCATE, Some(&c), |w| {
        udp(w);
        w.attr(
            attr::ADDITIONAL_ADDRESS_FAMILY,
            &[attr::FAMILY_IPV4, 0, 0, 0],
        );
    });
    assert_eq!(h.request(ALICE, &v4).code, Some(400));
    assert!(h.sockets.open.is_empty());
}

/// A dual-stack `[::]` TCP listener hands the core IPv4 clients as `::ffff:a.b.c.d`; the
/// reflexive address they learn is the IPv4 one.
#[test]
fn an_ipv4_mapped_stream_client_learns_its_ipv4_address() {
    let mut h = harness();
    let five = FiveTuple {
        client: addr("[::ffff:198.51.100.3]:40000"),
        listener: addr(LISTENER),
        transport: Transport::Tcp,
    };
    let binding = h.build(Method::BINDING, None, |_| {});
    let mut buf = vec![0u8; HEADROOM + binding.len()];
    buf[HEADROOM..].copy_from_slice(&binding);
    let action = h
        .core
        .handle_stream(&five, &mut buf, binding.len(), h.now, &mut h.sockets);
    let out = h.bytes_of(action, &buf);
    let msg = MessageRef::parse(&out).expect("answer parses");
    assert_eq!(msg.class(), Class::Success);
    let mapped = msg
        .xor_address(attr::XOR_MAPPED_ADDRESS)
        .expect("XOR-MAPPED-ADDRESS")
        .expect("valid");
    assert_eq!(mapped, addr("198.51.100.3:40000"));
}
