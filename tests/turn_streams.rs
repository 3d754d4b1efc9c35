//! TURN over TCP and TLS against the real binary: on the dedicated listeners (`listen_tcp`,
//! `listen_tls`) and on the HTTPS port (one-port mode), with coturn's `turnutils_uclient` as an
//! independent client and the project's own (turn-proto's sans-IO client over a blocking
//! stream, frames split by the codec's RFC 8656 §12.5 rules). Also the stream limits:
//! fragmented and coalesced input, half a message then silence, the per-IP cap, and the
//! allocation ending with its connection.

mod common;
mod coturn;
mod turn_raw;
mod ws_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use rustls::pki_types::pem::PemObject as _;
use signalbox_stun::{attr, Class, MessageRef, Method};
use signalbox_turn_proto::client::{self as turn, PeerData, Received};
use turn_raw::random_seed;

const SECRET: &str = "stream-secret";
const REALM: &str = "streams.test";
const ALPN_STUN_TURN: &[u8] = b"stun.turn";

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
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

// ---------------------------------------------------------------------------------------------
// The project's TURN client over a byte stream.

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Over {
    Tcp,
    /// TLS; with the ALPN `stun.turn` offered when true.
    Tls(bool),
}

fn tls_config(server: &Server, alpn: bool) -> Arc<rustls::ClientConfig> {
    let path = server.dir.path().join("certs/selfsigned-cert.pem");
    let cert =
        rustls::pki_types::CertificateDer::from_pem_file(&path).expect("generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("usable root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    }
    Arc::new(config)
}

struct Client {
    io: Box<dyn Io>,
    tcp: TcpStream,
    rx: Vec<u8>,
    turn: turn::Client,
    out: Vec<u8>,
}

/// The outcome of one request.
struct Reply {
    class: Class,
    code: Option<u16>,
    /// XOR-RELAYED-ADDRESS of an Allocate success.
    relayed: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS of a Binding success.
    mapped: Option<SocketAddr>,
}

impl Client {
    fn connect(server: &Server, addr: SocketAddr, over: Over, user: &str) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        tcp.set_nodelay(true).expect("nodelay");
        let io: Box<dyn Io> = match over {
            Over::Tcp => Box::new(tcp.try_clone().expect("clone")),
            Over::Tls(alpn) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
                let conn = rustls::ClientConnection::new(tls_config(server, alpn), name)
                    .expect("TLS client");
                let mut s = rustls::StreamOwned::new(conn, tcp.try_clone().expect("clone"));
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock).expect("TLS handshake");
                }
                if alpn {
                    assert_eq!(s.conn.alpn_protocol(), Some(ALPN_STUN_TURN));
                }
                Box::new(s)
            }
        };
        let (username, password) = rest_credentials(user);
        let credentials = turn::Credentials::new(&username, &password).expect("username");
        let config = turn::Config::new(credentials, turn::Transport::Stream, random_seed());
        Client {
            io,
            tcp,
            rx: Vec::new(),
            turn: turn::Client::new(config),
            out: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().expect("flush");
    }

    /// The next whole frame, split by the codec's RFC 8656 §12.5 rules (ChannelData padded to
    /// 4); `None` when the server closed the connection or nothing came within the read timeout.
    fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match signalbox_stun::frame_len(&self.rx) {
                Ok(Some(total)) if self.rx.len() >= total => {
                    return Some(self.rx.drain(..total).collect())
                }
                Ok(_) => {}
                Err(e) => panic!("the server sent neither STUN nor ChannelData: {e}"),
            }
            let mut buf = [0u8; 4096];
            match self.io.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A Binding request as the client writes it, for tests that cut or batch the bytes.
    fn binding_request(&mut self) -> Vec<u8> {
        self.turn.binding();
        self.turn
            .poll_transmit(Instant::now())
            .expect("a new request is due")
            .to_vec()
    }

    /// Writes what the client has due and reads frames until `request` ends; frames that
    /// are not its answer (peer data, answers to requests written by hand) are passed over.
    fn call(&mut self, request: turn::RequestId) -> Reply {
        loop {
            while let Some(bytes) = self.turn.poll_transmit(Instant::now()) {
                let bytes = bytes.to_vec();
                self.write(&bytes);
            }
            while let Some(event) = self.turn.poll_event() {
                if event.request() != request {
                    continue;
                }
                let success = |relayed, mapped| Reply {
                    class: Class::Success,
                    code: None,
                    relayed,
                    mapped,
                };
                return match event {
                    turn::Event::Failed { error, .. } => Reply {
                        class: Class::Error,
                        code: Some(error.code().unwrap_or_else(|| panic!("{error}"))),
                        relayed: None,
                        mapped: None,
                    },
                    turn::Event::Allocated { relayed, .. } => success(Some(relayed), None),
                    turn::Event::Mapped { mapped, .. } => success(None, Some(mapped)),
                    _ => success(None, None),
                };
            }
            let frame = self
                .frame()
                .expect("an answer before the connection closes");
            let _ = self.turn.handle_input(&frame);
        }
    }

    fn binding(&mut self) -> SocketAddr {
        let request = self.turn.binding();
        let r = self.call(request);
        assert_eq!(r.class, Class::Success);
        r.mapped.expect("XOR-MAPPED-ADDRESS")
    }

    fn allocate(&mut self) -> Reply {
        let request = self.turn.allocate(turn::AllocateOptions::default());
        let reply = self.call(request);
        assert!(
            self.turn.realm().is_some(),
            "unauthenticated Allocate is challenged (401 with REALM and NONCE)"
        );
        reply
    }

    fn permission(&mut self, peer: SocketAddr) -> Reply {
        let request = self.turn.create_permission(&[peer]).expect("one peer");
        self.call(request)
    }

    fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Reply {
        let channel = turn::ChannelNumber::new(channel).expect("a channel number");
        let request = self.turn.channel_bind(channel, peer);
        self.call(request)
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        self.turn
            .send_indication(peer, data, &mut self.out)
            .expect("fits one message");
        let bytes = std::mem::take(&mut self.out);
        self.write(&bytes);
        self.out = bytes;
    }

    /// ChannelData on the channel bound to `peer`, padded for the stream by the client.
    fn channel_data(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        self.turn
            .channel_data(peer, data, &mut self.out)
            .expect("a bound channel");
        let bytes = self.out.clone();
        self.write(&bytes);
        bytes
    }

    fn local(&self) -> SocketAddr {
        self.tcp.local_addr().expect("local address")
    }
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
fn full_exchange(c: &mut Client) {
    assert_eq!(
        c.binding(),
        c.local(),
        "XOR-MAPPED-ADDRESS is the connection's source"
    );
    let r = c.allocate();
    assert_eq!(r.class, Class::Success, "Allocate: {:?}", r.code);
    let relayed = r.relayed.expect("XOR-RELAYED-ADDRESS");
    let p = peer();
    let peer_addr = p.local_addr().expect("peer address");
    let r = c.permission(peer_addr);
    assert_eq!(r.class, Class::Success, "CreatePermission: {:?}", r.code);

    // Send indication out, Data indication back.
    c.send_indication(peer_addr, b"hello peer");
    let (data, from) = recv(&p);
    assert_eq!(data, b"hello peer");
    assert_eq!(from, relayed);
    p.send_to(b"hello client", relayed).expect("peer sends");
    let frame = c.frame().expect("a Data indication");
    let msg = MessageRef::parse(&frame).expect("STUN");
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(msg.get(attr::DATA), Some(&b"hello client"[..]));
    assert_eq!(
        c.turn.handle_input(&frame),
        Ok(Received::Data(PeerData {
            peer: peer_addr,
            channel: None,
            data: b"hello client"
        }))
    );

    // Channel 0x4000 both ways, with odd payload lengths so padding shows.
    let r = c.channel_bind(0x4000, peer_addr);
    assert_eq!(r.class, Class::Success, "ChannelBind: {:?}", r.code);
    for round in 0..20u8 {
        let payload: Vec<u8> = (0..(5 + round as usize)).map(|i| i as u8 ^ round).collect();
        let cd = c.channel_data(peer_addr, &payload);
        assert_eq!(cd.len() % 4, 0, "the client pads ChannelData on streams");
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
        assert_eq!(&frame[4..4 + payload.len()], &payload[..]);
        let channel = turn::ChannelNumber::new(0x4000);
        assert_eq!(
            c.turn.handle_input(&frame),
            Ok(Received::Data(PeerData {
                peer: peer_addr,
                channel,
                data: &payload
            }))
        );
    }
}

#[test]
fn a_rust_client_does_stun_and_a_full_turn_exchange_over_tcp() {
    let server = start("");
    let mut c = Client::connect(&server, server.addr("turn-tcp"), Over::Tcp, "alice");
    full_exchange(&mut c);
}

#[test]
fn a_rust_client_does_stun_and_a_full_turn_exchange_over_tls() {
    let server = start("");
    for alpn in [false, true] {
        let mut c = Client::connect(&server, server.addr("turn-tls"), Over::Tls(alpn), "bob");
        full_exchange(&mut c);
    }
}

#[test]
fn a_rust_client_does_the_same_over_tcp_and_tls_on_the_https_port() {
    let server = start("");
    let https = server.addr("https");
    for over in [Over::Tcp, Over::Tls(false), Over::Tls(true)] {
        let mut c = Client::connect(&server, https, over, "carol");
        full_exchange(&mut c);
    }
}

#[test]
fn one_port_mode_off_leaves_the_https_port_to_https() {
    let server = start("one_port = false\n");
    let mut c = Client::connect(&server, server.addr("https"), Over::Tcp, "dave");
    let req = c.binding_request();
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
                let mut c = Client::connect(&server, https, over, "erin");
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
        let mut c = Client::connect(&server, addr, over, "frank");
        let req = c.binding_request();
        for b in &req {
            c.write(std::slice::from_ref(b));
            std::thread::sleep(Duration::from_millis(2));
        }
        let frame = c.frame().expect("an answer");
        let msg = MessageRef::parse(&frame).expect("STUN");
        assert_eq!(msg.class(), Class::Success, "{over:?}");
        assert_eq!(
            msg.transaction_id(),
            MessageRef::parse(&req).expect("own").transaction_id()
        );
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
        let mut c = Client::connect(&server, addr, over, "gina");
        let mut all = Vec::new();
        let mut tids = Vec::new();
        for _ in 0..5 {
            let req = c.binding_request();
            tids.push(MessageRef::parse(&req).expect("own").transaction_id());
            all.extend_from_slice(&req);
            // ChannelData on a channel nobody bound: dropped, but framed past.
            all.extend_from_slice(&[0x40, 0x01, 0x00, 0x03, 1, 2, 3, 0]);
        }
        c.write(&all);
        for tid in tids {
            let frame = c.frame().expect("an answer");
            let msg = MessageRef::parse(&frame).expect("STUN");
            assert_eq!(msg.class(), Class::Success);
            assert_eq!(msg.transaction_id(), tid, "{over:?}: answers in order");
        }
    }
}

#[test]
fn half_a_message_then_silence_is_dropped_on_the_idle_timeout_while_a_talking_client_stays() {
    let server = start("stream_idle_timeout = \"1s\"\nstream_handshake_timeout = \"1s\"\n");
    let mut quiet = Client::connect(&server, server.addr("turn-tcp"), Over::Tcp, "hal");
    let mut talking = Client::connect(&server, server.addr("turn-tls"), Over::Tls(false), "ida");
    quiet.binding();
    let req = quiet.binding_request();
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
    let mut a = Client::connect(&server, tcp, Over::Tcp, "jo");
    let mut b = Client::connect(&server, server.addr("https"), Over::Tcp, "jo");
    a.binding();
    b.binding();
    let mut c = Client::connect(&server, tcp, Over::Tcp, "jo");
    let req = c.binding_request();
    let _ = c.io.write_all(&req);
    assert!(
        c.frame().is_none(),
        "a third connection from 127.0.0.1 is closed"
    );
    a.binding();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Client::connect(&server, tcp, Over::Tcp, "jo");
        let req = d.binding_request();
        let _ = d.io.write_all(&req);
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
    let mut a = Client::connect(&server, tcp, Over::Tcp, "kim");
    assert_eq!(a.allocate().class, Class::Success);
    let mut b = Client::connect(&server, server.addr("turn-tls"), Over::Tls(false), "kim");
    assert_eq!(
        b.allocate().code,
        Some(486),
        "the quota is used by the first connection"
    );
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = b.allocate();
        if r.class == Class::Success {
            break;
        }
        assert_eq!(r.code, Some(486));
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
