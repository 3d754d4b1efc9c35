//! The core with stream (TCP/TLS) clients: the same protocol, answers addressed to the
//! client's connection, and the allocation tied to that connection.

use super::*;

const CAROL: &str = "198.51.100.3:40000";

fn stream_five(from: &str, transport: Transport) -> FiveTuple {
    FiveTuple {
        client: addr(from),
        listener: addr(LISTENER),
        transport,
    }
}

impl Harness {
    /// Feeds one whole frame of a stream client.
    fn stream(&mut self, five: &FiveTuple, frame: &[u8]) -> (Action, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let action =
            self.core
                .handle_stream(five, &mut buf, frame.len(), self.now, &mut self.sockets);
        let bytes = self.bytes_of(action, &buf);
        (action, bytes)
    }

    /// A stream request whose answer must go back on the client's connection.
    fn stream_request(&mut self, five: &FiveTuple, req: &[u8]) -> Answer {
        let (action, out) = self.stream(five, req);
        assert!(
            matches!(
                action,
                Action::Send { via: Via::Stream(l), to, payload: Payload::Scratch }
                    if l == five.listener && to == five.client
            ),
            "{action:?}"
        );
        let msg = MessageRef::parse(&out).expect("answer parses");
        Answer {
            class: msg.class(),
            code: msg.error_code().and_then(Result::ok).map(|(c, _)| c),
            bytes: out,
        }
    }
}

#[test]
fn a_stream_client_is_answered_on_its_connection_and_peer_data_follows_it() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut h = harness();
        let five = stream_five(CAROL, transport);
        let binding = h.build(Method::BINDING, None, |_| {});
        let answer = h.stream_request(&five, &binding);
        assert_eq!(answer.class, Class::Success);

        // Nonces are stateless: one from a 401 on any transport works here.
        let c = h.creds(CAROL, "carol", 3600, SECRET);
        let req = h.build(Method::ALLOCATE, Some(&c), |w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        assert_eq!(h.stream_request(&five, &req).class, Class::Success);
        let (id, _) = *h.sockets.open.last().expect("a UDP relay socket");
        // The UDP 5-tuple from the same address is another client.
        assert_eq!(h.allocate(CAROL, &c).class, Class::Success);

        let req = h.build(Method::CHANNEL_BIND, Some(&c), |w| {
            w.u32(attr::CHANNEL_NUMBER, 0x4002 << 16)
                .xor_address(attr::XOR_PEER_ADDRESS, addr("8.8.8.8:5000"));
        });
        assert_eq!(h.stream_request(&five, &req).class, Class::Success);
        // ChannelData as framed on a stream, padding included: the peer gets the payload.
        let (action, bytes) = h.stream(&five, &[0x40, 0x02, 0, 3, b'a', b'b', b'c', 0]);
        assert!(
            matches!(action, Action::Send { via: Via::Relay(r), .. } if r == id),
            "{action:?}"
        );
        assert_eq!(bytes, b"abc");
        let (action, bytes) = h.peer(id, "8.8.8.8:5000", b"xyz");
        assert!(
            matches!(action, Action::Send { via: Via::Stream(l), to, .. } if l == five.listener && to == five.client),
            "{action:?}"
        );
        assert_eq!(bytes, [0x40, 0x02, 0, 3, b'x', b'y', b'z']);
    }
}

#[test]
fn closing_the_connection_deletes_the_allocation_and_its_relay_socket() {
    let mut h = harness_with(1, PeerPolicy::default());
    let five = stream_five(CAROL, Transport::Tcp);
    let c = h.creds(CAROL, "carol", 3600, SECRET);
    let req = h.build(Method::ALLOCATE, Some(&c), |w| {
        w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(h.stream_request(&five, &req).class, Class::Success);
    let (id, _) = *h.sockets.open.last().expect("a relay socket");
    assert_eq!(
        h.allocate(CAROL, &c).code,
        Some(486),
        "user quota of 1 in use"
    );

    assert!(h.core.close_client(&five, &mut h.sockets));
    assert_eq!(h.sockets.closed, vec![id]);
    assert_eq!(h.peer(id, "8.8.8.8:5000", b"late").0, Action::Nothing);
    assert!(!h.core.close_client(&five, &mut h.sockets), "only once");
    assert_eq!(
        h.allocate(CAROL, &c).class,
        Class::Success,
        "quota given back"
    );
}

#[test]
fn half_or_garbled_frames_from_a_stream_are_dropped() {
    let mut h = harness();
    let five = stream_five(CAROL, Transport::Tls);
    for junk in [
        &[][..],
        &[0x00, 0x01],
        &[0x40, 0x00, 0xFF, 0xFF, 1],
        &[0xFF; 24],
    ] {
        assert_eq!(h.stream(&five, junk).0, Action::Nothing, "{junk:?}");
    }
}
