//! Binding requests share the fixed-memory limiter of unauthenticated answers: beyond it a
//! UDP source gets silence, so spoofed sources cannot turn the server into a reflector, while
//! clients that proved their address (an allocation, a TCP or TLS connection) are not limited.

use super::*;

fn binding(h: &mut Harness) -> Vec<u8> {
    h.build(Method::BINDING, None, |_| {})
}

#[test]
fn binding_requests_over_udp_get_silence_beyond_the_per_source_limit() {
    let mut h = harness();
    let mut answered = 0;
    for port in 0..30u16 {
        let req = binding(&mut h);
        let from = format!("198.51.100.7:{}", 2000 + port);
        if h.client(&from, &req).0 != Action::Nothing {
            answered += 1;
        }
    }
    assert_eq!(answered, 10, "the harness limiter's burst, then silence");
    assert_eq!(h.core.counters().stun_bindings, 10, "only answers count");
    assert_eq!(h.core.counters().rate_limited, 20);
    let req = binding(&mut h);
    assert_ne!(
        h.client(BOB, &req).0,
        Action::Nothing,
        "other sources are unaffected"
    );
    h.now = T0.plus(Duration::from_secs(1));
    let req = binding(&mut h);
    assert_ne!(
        h.client("198.51.100.7:1999", &req).0,
        Action::Nothing,
        "the bucket refills"
    );
}

#[test]
fn bindings_and_challenges_share_one_budget() {
    let mut h = harness();
    let allocate = h.build(Method::ALLOCATE, None, |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    for _ in 0..10 {
        let req = binding(&mut h);
        assert_ne!(h.client(ALICE, &req).0, Action::Nothing);
    }
    assert_eq!(
        h.client(ALICE, &allocate).0,
        Action::Nothing,
        "the 401 challenge finds the budget spent by Bindings"
    );
}

#[test]
fn a_client_holding_an_allocation_and_stream_clients_are_not_limited() {
    let mut h = harness();
    h.allocated(ALICE, "alice");
    for _ in 0..50 {
        let req = binding(&mut h);
        let answer = h.request(ALICE, &req);
        assert_eq!(answer.class, Class::Success);
    }
    let stream = FiveTuple {
        client: addr("198.51.100.9:40000"),
        listener: addr(LISTENER),
        transport: Transport::Tcp,
    };
    for _ in 0..50 {
        let req = binding(&mut h);
        let mut buf = vec![0u8; HEADROOM + req.len()];
        buf[HEADROOM..].copy_from_slice(&req);
        let action = h
            .core
            .handle_stream(&stream, &mut buf, req.len(), h.now, &mut h.sockets);
        assert!(matches!(
            action,
            Action::Send {
                via: Via::Stream(_),
                ..
            }
        ));
    }
    assert_eq!(h.core.counters().rate_limited, 0);
}
