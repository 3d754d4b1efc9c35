//! TURN over TCP and TLS against the real binary: on the dedicated listeners (`listen_tcp`,
//! `listen_tls`) and on the HTTPS port (one-port mode), with coturn's `turnutils_uclient` as an
//! independent client and a raw client written here from RFC 8656 (framing, padding) on top of
//! the project's STUN codec. Also the stream limits: fragmented and coalesced input, half a
//! message then silence, a connection that never allocates (Bindings or ChannelData alone), the
//! per-address cap, and the allocation ending with its connection.

mod common;
mod coturn;
mod ws_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use rustls::pki_types::pem::PemObject as _;
use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};

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
// A raw TURN client over a byte stream.

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
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    tid: u32,
}

/// One decoded STUN answer.
struct Reply {
    class: Class,
    code: Option<u16>,
    bytes: Vec<u8>,
}

impl Reply {
    fn msg(&self) -> MessageRef<'_> {
        MessageRef::parse(&self.bytes).expect("answers parse")
    }
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
        let key: [u8; 16] = {
            use md5::{Digest, Md5};
            Md5::digest(format!("{username}:{REALM}:{password}").as_bytes()).into()
        };
        Client {
            io,
            tcp,
            rx: Vec::new(),
            username,
            key,
            nonce: Vec::new(),
            tid: 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
        self.io.flush().expect("flush");
    }

    /// The next whole frame, split by the RFC 8656 §12.5 rules (ChannelData padded to 4);
    /// `None` when the server closed the connection or nothing came within the read timeout.
    fn frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.rx.len() >= 4 {
                let len = usize::from(u16::from_be_bytes([self.rx[2], self.rx[3]]));
                let total = match self.rx[0] >> 6 {
                    0 => 20 + len,
                    1 => 4 + len.div_ceil(4) * 4,
                    _ => panic!(
                        "the server sent neither STUN nor ChannelData: {:?}",
                        self.rx
                    ),
                };
                if self.rx.len() >= total {
                    return Some(self.rx.drain(..total).collect());
                }
            }
            let mut buf = [0u8; 4096];
            match self.io.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn request(
        &mut self,
        method: Method,
        signed: bool,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, TransactionId(tid));
        attrs(&mut w);
        if signed {
            w.attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, REALM.as_bytes())
                .attr(attr::NONCE, &self.nonce)
                .integrity(&self.key);
        }
        w.fingerprint();
        w.finish();
        buf
    }

    /// Sends a request and returns the answer with its transaction id, skipping indications.
    fn call(
        &mut self,
        method: Method,
        signed: bool,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Reply {
        let req = self.request(method, signed, attrs);
        let tid = MessageRef::parse(&req)
            .expect("own request")
            .transaction_id();
        self.write(&req);
        loop {
            let frame = self
                .frame()
                .expect("an answer before the connection closes");
            let Ok(msg) = MessageRef::parse(&frame) else {
                continue;
            };
            if msg.transaction_id() != tid {
                continue;
            }
            if let Some(nonce) = msg.get(attr::NONCE) {
                self.nonce = nonce.to_vec();
            }
            let code = msg.error_code().and_then(Result::ok).map(|(c, _)| c);
            return Reply {
                class: msg.class(),
                code,
                bytes: frame,
            };
        }
    }

    fn authed(&mut self, method: Method, attrs: &dyn Fn(&mut MessageWriter<'_>)) -> Reply {
        if self.nonce.is_empty() {
            let challenge = self.call(Method::ALLOCATE, false, &udp);
            assert_eq!(
                challenge.code,
                Some(401),
                "unauthenticated Allocate is challenged"
            );
        }
        self.call(method, true, attrs)
    }

    fn binding(&mut self) -> SocketAddr {
        let r = self.call(Method::BINDING, false, &|_| {});
        assert_eq!(r.class, Class::Success);
        r.msg()
            .xor_address(attr::XOR_MAPPED_ADDRESS)
            .expect("XOR-MAPPED-ADDRESS")
            .expect("valid address")
    }

    fn allocate(&mut self) -> Reply {
        self.authed(Method::ALLOCATE, &udp)
    }

    fn local(&self) -> SocketAddr {
        self.tcp.local_addr().expect("local address")
    }
}

fn udp(w: &mut MessageWriter<'_>) {
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
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
    let relayed = allocate_ok(c);
    relay_both_ways(c, relayed);
}

/// A successful Allocate; returns the relayed address.
fn allocate_ok(c: &mut Client) -> SocketAddr {
    let r = c.allocate();
    assert_eq!(r.class, Class::Success, "Allocate: {:?}", r.code);
    r.msg()
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
        .expect("valid")
}

/// On an allocation at `relayed`: CreatePermission, Send and Data indications, ChannelBind and
/// ChannelData both ways with a UDP peer.
fn relay_both_ways(c: &mut Client, relayed: SocketAddr) {
    let p = peer();
    let peer_addr = p.local_addr().expect("peer address");
    let r = c.authed(Method::CREATE_PERMISSION, &|w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    assert_eq!(r.class, Class::Success, "CreatePermission: {:?}", r.code);

    // Send indication out, Data indication back.
    let mut send = Vec::new();
    let mut w = MessageWriter::new(
        &mut send,
        Method::SEND,
        Class::Indication,
        TransactionId([5; 12]),
    );
    w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
        .attr(attr::DATA, b"hello peer");
    w.finish();
    c.write(&send);
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

    // Channel 0x4000 both ways, with odd payload lengths so padding shows.
    let r = c.authed(Method::CHANNEL_BIND, &|w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
            .attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]);
    });
    assert_eq!(r.class, Class::Success, "ChannelBind: {:?}", r.code);
    for round in 0..20u8 {
        let payload: Vec<u8> = (0..(5 + round as usize)).map(|i| i as u8 ^ round).collect();
        let mut cd = vec![0x40, 0x00, 0, payload.len() as u8];
        cd.extend_from_slice(&payload);
        cd.resize(cd.len().div_ceil(4) * 4, 0);
        c.write(&cd);
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
    let req = c.request(Method::BINDING, false, &|_| {});
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
        let req = c.request(Method::BINDING, false, &|_| {});
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
            let req = c.request(Method::BINDING, false, &|_| {});
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
    c: &mut Client,
    since: Instant,
    step: &dyn Fn(&mut Client) -> bool,
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
fn binding_answered(c: &mut Client) -> bool {
    let req = c.request(Method::BINDING, false, &|_| {});
    if c.io.write_all(&req).and_then(|_| c.io.flush()).is_err() {
        return false;
    }
    c.frame().is_some()
}

#[test]
fn a_connection_that_only_sends_bindings_is_closed_after_the_handshake_timeout() {
    let server = start(SHORT_HANDSHAKE);
    for (addr, over) in entry_points(&server) {
        let since = Instant::now();
        let mut c = Client::connect(&server, addr, over, "lou");
        let (closed, answered) = poke_until_closed(&mut c, since, &binding_answered);
        let closed = closed.unwrap_or_else(|| panic!("{over:?} on {addr}: open after 5 s"));
        assert!(answered >= 2, "{over:?}: the Bindings were answered");
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
        let mut c = Client::connect(&server, addr, over, "max");
        // A Binding opens the one-port split; then 4-byte ChannelData on a channel nobody bound.
        assert!(binding_answered(&mut c));
        c.tcp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let trickle = |c: &mut Client| {
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
    let mut clients: Vec<(Client, SocketAddr)> = entry_points(&server)
        .into_iter()
        .map(|(addr, over)| {
            let mut c = Client::connect(&server, addr, over, "nia");
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
    let mut quiet = Client::connect(&server, server.addr("turn-tcp"), Over::Tcp, "hal");
    let mut talking = Client::connect(&server, server.addr("turn-tls"), Over::Tls(false), "ida");
    allocate_ok(&mut quiet);
    allocate_ok(&mut talking);
    let req = quiet.request(Method::BINDING, false, &|_| {});
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
    let req = c.request(Method::BINDING, false, &|_| {});
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
        let req = d.request(Method::BINDING, false, &|_| {});
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
