//! TURN over TCP and TLS against the real binary: on the dedicated listeners (`listen_tcp`,
//! `listen_tls`) and on the HTTPS port (one-port mode), with coturn's `turnutils_uclient` as an
//! independent client and turn-proto's client driven over the connection (`turn_stream_client`),
//! with raw writes on the same connection where a test needs bytes no client sends. Also the
//! stream limits: fragmented and coalesced input, half a
//! message then silence, a connection that never allocates (Bindings or ChannelData alone), the
//! per-address cap, and the allocation ending with its connection.

mod common;
mod coturn;
mod turn_raw;
mod turn_stream_client;
mod ws_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use signalbox_turn_proto::auth::rest_password;
use signalbox_turn_proto::client::Event;
use turn_stream_client::{FromPeer, Over, StreamClient};

const SECRET: &str = "stream-secret";
const REALM: &str = "streams.test";

fn start(extra: &str) -> Server {
    Server::start(&common::base_config(&format!(
        "[turn]\nlisten = [\"127.0.0.1:0\"]\nrealm = \"{REALM}\"\nsecrets = [\"{SECRET}\"]\nrelay_ip = \"127.0.0.1\"\nallow_loopback_peers = true\nworkers = 2\n{extra}\n"
    )))
}

fn rest_credentials(user: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    let username = format!("{expiry}:{user}");
    let password = rest_password(SECRET.as_bytes(), &username);
    (username, password)
}

/// A client of `user` on `addr`, trusting the server's self-signed certificate for TLS.
fn connect(server: &Server, addr: SocketAddr, over: Over, user: &str) -> StreamClient {
    let (username, password) = rest_credentials(user);
    let cert = server.dir.path().join("certs/selfsigned-cert.pem");
    StreamClient::connect(addr, over, &cert, &username, &password)
}

/// A UDP peer on loopback.
fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s
}

fn recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer receives in time");
    (buf[..n].to_vec(), from)
}

/// Binding, then the whole TURN exchange with a UDP peer: Allocate, CreatePermission, Send and
/// Data indications, ChannelBind and ChannelData both ways (padded on the stream).
fn full_exchange(c: &mut StreamClient) {
    assert_eq!(
        c.binding(),
        c.local(),
        "XOR-MAPPED-ADDRESS is the connection's source"
    );
    let relayed = allocate_ok(c);
    relay_both_ways(c, relayed);
}

/// A successful Allocate in the realm of the test; returns the relayed address.
fn allocate_ok(c: &mut StreamClient) -> SocketAddr {
    let relayed = c
        .allocate()
        .unwrap_or_else(|code| panic!("Allocate refused: {code}"));
    assert_eq!(c.realm(), Some(REALM));
    relayed
}

/// On an allocation at `relayed`: CreatePermission, Send and Data indications, ChannelBind and
/// ChannelData both ways with a UDP peer.
fn relay_both_ways(c: &mut StreamClient, relayed: SocketAddr) {
    let p = peer();
    let peer_addr = p.local_addr().expect("peer address");
    let r = c.permission(peer_addr);
    assert_eq!(r, Ok(()), "CreatePermission");

    // Send indication out, Data indication back.
    c.send_indication(peer_addr, b"hello peer");
    let (data, from) = recv(&p);
    assert_eq!(data, b"hello peer");
    assert_eq!(from, relayed);
    p.send_to(b"hello client", relayed).expect("peer sends");
    let frame = c.frame().expect("a Data indication");
    assert_eq!(
        c.peer_data(&frame),
        FromPeer {
            peer: peer_addr,
            channel: None,
            data: b"hello client".to_vec()
        }
    );

    // Channel 0x4000 both ways, with odd payload lengths so padding shows.
    let r = c.channel_bind(0x4000, peer_addr);
    assert_eq!(r, Ok(()), "ChannelBind");
    for round in 0..20u8 {
        let payload: Vec<u8> = (0..(5 + round as usize)).map(|i| i as u8 ^ round).collect();
        let mut cd = vec![0x40, 0x00, 0, payload.len() as u8];
        cd.extend_from_slice(&payload);
        cd.resize(cd.len().div_ceil(4) * 4, 0);
        assert_eq!(
            c.channel_data(peer_addr, &payload),
            cd,
            "round {round}: ChannelData is padded to 4 bytes on streams"
        );
        let (data, from) = recv(&p);
        assert_eq!(
            data, payload,
            "round {round}: the peer gets the payload without padding"
        );
        assert_eq!(from, relayed);
        p.send_to(&payload, relayed).expect("peer answers");
        let frame = c.frame().expect("ChannelData from the peer");
        assert_eq!(&frame[..4], &[0x40, 0x00, 0, payload.len() as u8]);
        assert_eq!(
            frame.len() % 4,
            0,
            "ChannelData is padded to 4 bytes on streams"
        );
        assert_eq!(
            c.peer_data(&frame),
            FromPeer {
                peer: peer_addr,
                channel: Some(0x4000),
                data: payload
            }
        );
    }
}

#[test]
fn a_rust_client_does_stun_and_a_full_turn_exchange_over_tcp() {
    let server = start("");
    let mut c = connect(&server, server.addr("turn-tcp"), Over::Tcp, "alice");
    full_exchange(&mut c);
}

#[test]
fn a_rust_client_does_stun_and_a_full_turn_exchange_over_tls() {
    let server = start("");
    for alpn in [false, true] {
        let mut c = connect(&server, server.addr("turn-tls"), Over::Tls(alpn), "bob");
        full_exchange(&mut c);
    }
}

#[test]
fn a_rust_client_does_the_same_over_tcp_and_tls_on_the_https_port() {
    let server = start("");
    let https = server.addr("https");
    for over in [Over::Tcp, Over::Tls(false), Over::Tls(true)] {
        let mut c = connect(&server, https, over, "carol");
        full_exchange(&mut c);
    }
}

#[test]
fn one_port_mode_off_leaves_the_https_port_to_https() {
    let server = start("one_port = false\n");
    let mut c = connect(&server, server.addr("https"), Over::Tcp, "dave");
    let (_, req) = c.binding_request();
    c.write(&req);
    assert!(c.frame().is_none(), "no STUN answer on the HTTPS port");
}

/// The ICE server list a browser gets names every transport, fastest first, with the HTTPS
/// port last for one-port mode.
#[tokio::test]
async fn turn_https_and_a_websocket_share_the_https_port_at_the_same_time() {
    let server = start("");
    let https = server.addr("https");
    let mut ws = ws_client::Ws::connect(&server).await;
    let joined = ws.join("streams").await;

    let urls: Vec<String> = joined["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .flat_map(|s| s["urls"].as_array().cloned().unwrap_or_default())
        .map(|u| u.as_str().expect("a URL string").to_owned())
        .collect();
    let port = |name: &str| server.addr(name).port();
    assert_eq!(
        urls,
        vec![
            format!("stun:127.0.0.1:{}", port("turn-udp")),
            format!("turn:127.0.0.1:{}?transport=udp", port("turn-udp")),
            format!("turn:127.0.0.1:{}?transport=tcp", port("turn-tcp")),
            format!("turn:127.0.0.1:{}?transport=tcp", https.port()),
            format!("turns:127.0.0.1:{}?transport=tcp", port("turn-tls")),
            format!("turns:127.0.0.1:{}?transport=tcp", https.port()),
        ]
    );

    // TURN over TLS and over TCP on the HTTPS port, while HTTPS requests and the WebSocket
    // session go on over the same port.
    let server = Arc::new(server);
    let turn = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            for over in [Over::Tls(false), Over::Tcp] {
                let mut c = connect(&server, https, over, "erin");
                full_exchange(&mut c);
            }
        })
    };
    let http = server.client();
    for _ in 0..10 {
        let r = http
            .get(server.https_url("/healthz"))
            .send()
            .await
            .expect("HTTPS request");
        assert_eq!(r.status(), 200);
        ws.barrier().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(60), turn)
        .await
        .expect("TURN exchange in time")
        .expect("TURN exchange passed");
    ws.barrier().await;
}

#[test]
fn a_message_written_one_byte_at_a_time_is_answered_once() {
    let server = start("");
    for (addr, over) in [
        (server.addr("turn-tcp"), Over::Tcp),
        (server.addr("turn-tls"), Over::Tls(false)),
        (server.addr("https"), Over::Tcp),
    ] {
        let mut c = connect(&server, addr, over, "frank");
        let (request, req) = c.binding_request();
        for b in &req {
            c.write(std::slice::from_ref(b));
            std::thread::sleep(Duration::from_millis(2));
        }
        let answer = c.answer().expect("an answer");
        assert!(
            matches!(answer, Event::Mapped { request: r, .. } if r == request),
            "{over:?}: {answer:?}"
        );
        c.tcp
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(c.frame().is_none(), "{over:?}: answered once");
    }
}

#[test]
fn several_messages_in_one_write_get_one_answer_each_in_order() {
    let server = start("");
    for (addr, over) in [
        (server.addr("turn-tcp"), Over::Tcp),
        (server.addr("turn-tls"), Over::Tls(false)),
        (server.addr("https"), Over::Tls(false)),
    ] {
        let mut c = connect(&server, addr, over, "gina");
        let mut all = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..5 {
            let (request, req) = c.binding_request();
            requests.push(request);
            all.extend_from_slice(&req);
            // ChannelData on a channel nobody bound: dropped, but framed past.
            all.extend_from_slice(&[0x40, 0x01, 0x00, 0x03, 1, 2, 3, 0]);
        }
        c.write(&all);
        for request in requests {
            let answer = c.answer().expect("an answer");
            assert!(
                matches!(answer, Event::Mapped { request: r, .. } if r == request),
                "{over:?}: answers in order, each a success: {answer:?}"
            );
        }
    }
}

/// Handshake limits of one second and an idle timeout far beyond any test.
const SHORT_HANDSHAKE: &str = "stream_handshake_timeout = \"1s\"\nstream_idle_timeout = \"60s\"\n";

/// Every stream entry point: the TCP and TLS listeners and both on the HTTPS port.
fn entry_points(server: &Server) -> [(SocketAddr, Over); 4] {
    [
        (server.addr("turn-tcp"), Over::Tcp),
        (server.addr("turn-tls"), Over::Tls(false)),
        (server.addr("https"), Over::Tcp),
        (server.addr("https"), Over::Tls(true)),
    ]
}

/// Keeps calling `step` on `c` every 200 ms until the server closes the connection or 5 s
/// pass; returns when it closed (after `since`) and how many steps were answered.
fn poke_until_closed(
    c: &mut StreamClient,
    since: Instant,
    step: &dyn Fn(&mut StreamClient) -> bool,
) -> (Option<Duration>, usize) {
    let mut answered = 0;
    while since.elapsed() < Duration::from_secs(5) {
        if !step(c) {
            return (Some(since.elapsed()), answered);
        }
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    (None, answered)
}

/// One Binding: true when answered, false when the connection is gone.
fn binding_answered(c: &mut StreamClient) -> bool {
    let (request, req) = c.binding_request();
    if c.try_write(&req).is_err() {
        return false;
    }
    match c.answer() {
        Some(answer) => {
            assert!(
                matches!(answer, Event::Mapped { request: r, .. } if r == request),
                "{answer:?}"
            );
            true
        }
        None => false,
    }
}

#[test]
fn a_connection_that_only_sends_bindings_is_closed_after_the_handshake_timeout() {
    let server = start(SHORT_HANDSHAKE);
    for (addr, over) in entry_points(&server) {
        let since = Instant::now();
        let mut c = connect(&server, addr, over, "lou");
        let (closed, answered) = poke_until_closed(&mut c, since, &binding_answered);
        let closed = closed.unwrap_or_else(|| panic!("{over:?} on {addr}: open after 5 s"));
        assert!(
            answered >= 1,
            "{over:?} on {addr}: the Bindings were answered ({answered} before the close after \
             {closed:?})"
        );
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(3)).contains(&closed),
            "{over:?} on {addr}: closed after {closed:?}"
        );
    }
}

#[test]
fn channel_data_trickled_before_any_allocate_does_not_keep_a_connection() {
    let server = start(SHORT_HANDSHAKE);
    for (addr, over) in [
        (server.addr("turn-tcp"), Over::Tcp),
        (server.addr("https"), Over::Tcp),
    ] {
        let since = Instant::now();
        let mut c = connect(&server, addr, over, "max");
        // A Binding opens the one-port split; then 4-byte ChannelData on a channel nobody bound.
        assert!(binding_answered(&mut c));
        c.tcp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let trickle = |c: &mut StreamClient| {
            if c.io.write_all(&[0x40, 0x00, 0x00, 0x00]).is_err() {
                return false;
            }
            let mut probe = [0u8; 64];
            !matches!(c.io.read(&mut probe), Ok(0))
        };
        let (closed, _) = poke_until_closed(&mut c, since, &trickle);
        let closed = closed.unwrap_or_else(|| panic!("{over:?} on {addr}: open after 5 s"));
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(3)).contains(&closed),
            "{over:?} on {addr}: closed after {closed:?}"
        );
    }
}

#[test]
fn an_allocated_connection_keeps_relaying_past_the_handshake_timeout() {
    let server = start(SHORT_HANDSHAKE);
    let mut clients: Vec<(StreamClient, SocketAddr)> = entry_points(&server)
        .into_iter()
        .map(|(addr, over)| {
            let mut c = connect(&server, addr, over, "nia");
            let relayed = allocate_ok(&mut c);
            (c, relayed)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for (c, relayed) in &mut clients {
        relay_both_ways(c, *relayed);
    }
}

#[test]
fn a_message_begun_must_finish_within_the_handshake_timeout_even_after_an_allocate() {
    let server = start(SHORT_HANDSHAKE);
    let mut quiet = connect(&server, server.addr("turn-tcp"), Over::Tcp, "hal");
    let mut talking = connect(&server, server.addr("turn-tls"), Over::Tls(false), "ida");
    allocate_ok(&mut quiet);
    allocate_ok(&mut talking);
    let (_, req) = quiet.binding_request();
    quiet.write(&req[..10]);
    let sent = Instant::now();
    // The talking client keeps sending whole messages past the timeout and is answered.
    while sent.elapsed() < Duration::from_millis(2500) {
        talking.binding();
        std::thread::sleep(Duration::from_millis(300));
    }
    quiet
        .tcp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    assert!(quiet.frame().is_none(), "the half message got no answer");
    let closed_after = sent.elapsed();
    assert!(
        closed_after < Duration::from_millis(4000),
        "closed by the server, not by our read timeout: {closed_after:?}"
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(quiet.tcp.read(&mut probe), Ok(0)),
        "the server closed the connection"
    );
    talking.binding();
    // A connection that never sends a whole message goes after the handshake timeout.
    let mut silent = TcpStream::connect(server.addr("turn-tcp")).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = Instant::now();
    assert!(matches!(silent.read(&mut probe), Ok(0)), "closed");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn the_connection_cap_per_source_ip_closes_one_more_until_one_goes() {
    let server = start("max_stream_connections_per_ip = 2\n");
    let tcp = server.addr("turn-tcp");
    let mut a = connect(&server, tcp, Over::Tcp, "jo");
    let mut b = connect(&server, server.addr("https"), Over::Tcp, "jo");
    a.binding();
    b.binding();
    let mut c = connect(&server, tcp, Over::Tcp, "jo");
    let (_, req) = c.binding_request();
    let _ = c.try_write(&req);
    assert!(
        c.frame().is_none(),
        "a third connection from 127.0.0.1 is closed"
    );
    a.binding();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = connect(&server, tcp, Over::Tcp, "jo");
        let (_, req) = d.binding_request();
        let _ = d.try_write(&req);
        if d.frame().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a slot frees when a connection closes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closing_the_connection_deletes_its_allocation() {
    let server = start("user_quota = 1\n");
    let tcp = server.addr("turn-tcp");
    let mut a = connect(&server, tcp, Over::Tcp, "kim");
    assert!(a.allocate().is_ok());
    let mut b = connect(&server, server.addr("turn-tls"), Over::Tls(false), "kim");
    assert_eq!(
        b.allocate(),
        Err(486),
        "the quota is used by the first connection"
    );
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match b.allocate() {
            Ok(_) => break,
            Err(code) => assert_eq!(code, 486),
        }
        assert!(
            Instant::now() < deadline,
            "the allocation went with its connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.log_contains("allocation closed with its connection"));
}

// ---------------------------------------------------------------------------------------------
// coturn's client over TCP and TLS.

/// Runs `turnutils_uclient` on `port` with `flags` (`-t` for TCP, `-t -S` for TLS), relaying to
/// a `turnutils_peer` on loopback; returns (sent, received, lost, output).
fn uclient(port: u16, user: &str, flags: &[&str]) -> (u64, u64, u64, String) {
    let run = coturn::uclient(port, SECRET, user, flags);
    (run.sent, run.received, run.lost, run.output)
}

/// 4 clients × 200 messages of 200 bytes, one every 5 ms each (~800 packets/s), over channels.
const LOAD: &[&str] = &["-c", "-m", "4", "-n", "200", "-l", "200", "-z", "5"];

fn assert_zero_loss(port: u16, user: &str, transport: &[&str]) {
    let mut flags = transport.to_vec();
    flags.extend_from_slice(LOAD);
    let (sent, received, lost, text) = uclient(port, user, &flags);
    assert_eq!(sent, 800, "{text}");
    assert_eq!(received, sent, "{text}");
    assert_eq!(lost, 0, "{text}");
}

#[test]
fn coturn_uclient_over_tcp_relays_with_zero_loss() {
    let server = start("");
    assert_zero_loss(server.addr("turn-tcp").port(), "tcp-user", &["-t"]);
}

#[test]
fn coturn_uclient_over_tls_relays_with_zero_loss() {
    let server = start("");
    assert_zero_loss(server.addr("turn-tls").port(), "tls-user", &["-t", "-S"]);
}

#[test]
fn coturn_uclient_over_tcp_and_tls_on_the_https_port_relays_with_zero_loss() {
    let server = start("");
    let port = server.addr("https").port();
    assert_zero_loss(port, "one-port-tcp", &["-t"]);
    assert_zero_loss(port, "one-port-tls", &["-t", "-S"]);
}

#[test]
fn coturn_uclient_client_to_client_over_tls_goes_relay_to_relay_with_zero_loss() {
    let server = start("");
    assert_zero_loss(
        server.addr("turn-tls").port(),
        "tls-pair",
        &["-t", "-S", "-y"],
    );
}
