//! A listener on a wildcard address answers from the address each request was sent to. The
//! host needs two addresses of one family on one interface, so the test runs again inside
//! network namespaces of its own (`unshare -rn`: new user and network namespaces, gone when
//! the process ends), where it puts extra addresses on `lo`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use signalbox_udp::batch::{RecvBatch, SendBatch, Source, HEADROOM};
use signalbox_udp::socket::bind_udp;

const IN_NETNS: &str = "SIGNALBOX_TEST_IN_NETNS";

#[test]
fn a_wildcard_listener_answers_from_the_address_asked() {
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("unshare")
        .arg("-rn")
        .arg(exe)
        .args([
            "--exact",
            "answers_from_the_address_asked_in_a_namespace_of_its_own",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NETNS, "1")
        .status()
        .expect("run `unshare` (util-linux)");
    assert!(
        status.success(),
        "the multi-homed test inside a network namespace failed ({status}); it needs \
         `unshare -rn` (user namespaces) and `ip` (iproute2)"
    );
}

#[test]
#[ignore = "run by a_wildcard_listener_answers_from_the_address_asked inside its own namespace"]
fn answers_from_the_address_asked_in_a_namespace_of_its_own() {
    assert!(
        std::env::var_os(IN_NETNS).is_some(),
        "only inside the namespace: it changes the addresses of `lo`"
    );
    ip("link set lo up");
    ip("addr add 10.9.0.1/24 dev lo");
    ip("addr add 10.9.0.2/24 dev lo");
    ip("-6 addr add fd00:9::1/64 dev lo nodad");
    ip("-6 addr add fd00:9::2/64 dev lo nodad");

    for (wildcard, first, second) in [
        ("0.0.0.0:0", "10.9.0.1", "10.9.0.2"),
        ("[::]:0", "fd00:9::1", "fd00:9::2"),
    ] {
        let listener = bind_udp(wildcard.parse().expect("addr"), true).expect("bind listener");
        let port = listener.local_addr().expect("addr").port();
        let first: IpAddr = first.parse().expect("ip");
        let second: IpAddr = second.parse().expect("ip");
        // The client lives on the first address: without packet info the kernel would answer
        // it from there, whichever address it asked.
        let client = UdpSocket::bind(SocketAddr::new(first, 0)).expect("bind client");
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");

        for asked in [second, first] {
            let to = SocketAddr::new(asked, port);
            client.send_to(b"ping", to).expect("send");
            echo_one(&listener);
            let mut buf = [0u8; 16];
            let (n, answered_from) = client.recv_from(&mut buf).expect("an answer");
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(
                answered_from, to,
                "answered from another address than asked"
            );
        }
    }
}

/// Receives one datagram on `listener` and sends it back from the address it reached.
fn echo_one(listener: &UdpSocket) {
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::default();
    let deadline = Instant::now() + Duration::from_secs(2);
    let slots = loop {
        match recv.recv(listener.as_raw_fd()) {
            Ok(slots) if !slots.is_empty() => break slots,
            Ok(_) => panic!("no free slot"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nothing received");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("receive: {e}"),
        }
    };
    assert_eq!(slots.len(), 1);
    let from = recv.from[0].expect("a sender");
    let to = recv.to[0].expect("packet info with the destination address");
    let len = recv.lens[0];
    send.push(
        listener.as_raw_fd(),
        Some(to),
        from,
        Source::Recv(0, HEADROOM, HEADROOM + len),
    );
    send.flush(&recv, &[]);
}

fn ip(args: &str) {
    let ok = Command::new("ip")
        .args(args.split(' '))
        .status()
        .expect("run `ip` (iproute2)")
        .success();
    assert!(ok, "ip {args}");
}
