//! A blocking TURN client over TCP or TLS for the integration tests: turn-proto's sans-IO
//! client (long-term authentication, realm and nonce from the server's 401) driven over one
//! connection, with its input cut into messages by turn-proto's stream `Deframer`. A test can
//! also write raw bytes on the same connection (half a message, one byte at a time, a
//! ChannelData trickle) and read raw frames, to provoke what no well-behaved client sends.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use signalbox_turn_proto::client::{
    AllocateOptions, ChannelNumber, Client, Config, Credentials, Event, Received, RequestError,
    RequestId, Transport,
};
use signalbox_turn_proto::framing::Deframer;

/// The ALPN TURN over TLS may offer (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// How long a read waits, and so how long a request waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// How the connection is made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Over {
    Tcp,
    /// TLS trusting the certificate at the path given to [`StreamClient::connect`]; with the
    /// ALPN `stun.turn` offered when true.
    Tls(bool),
}

/// What a peer sent through the relay, as the client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct FromPeer {
    pub peer: SocketAddr,
    /// The channel number for ChannelData, `None` for a Data indication.
    pub channel: Option<u16>,
    pub data: Vec<u8>,
}

pub struct StreamClient {
    /// The connection, TLS or not: what the client reads and writes.
    pub io: Box<dyn Io>,
    /// The TCP socket under `io`, for timeouts and addresses.
    pub tcp: TcpStream,
    deframer: Deframer,
    /// Frames read while a request waited that were not its answer.
    early: VecDeque<Vec<u8>>,
    turn: Client,
    out: Vec<u8>,
}

/// What reading the connection gave.
enum Got {
    Frame(Vec<u8>),
    Quiet,
    Closed,
}

impl StreamClient {
    /// Connects to `addr` over `over` as `username` with `password`; `cert` is the server's
    /// self-signed certificate for TLS.
    pub fn connect(
        addr: SocketAddr,
        over: Over,
        cert: &Path,
        username: &str,
        password: &str,
    ) -> StreamClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(ANSWER_WITHIN))
            .expect("read timeout");
        tcp.set_nodelay(true).expect("nodelay");
        let io: Box<dyn Io> = match over {
            Over::Tcp => Box::new(tcp.try_clone().expect("clone")),
            Over::Tls(alpn) => Box::new(tls(&tcp, cert, alpn)),
        };
        let credentials = Credentials::new(username, password).expect("a usable username");
        let config = Config::new(
            credentials,
            Transport::Stream,
            crate::turn_raw::random_seed(),
        )
        .with_stream_timeout(ANSWER_WITHIN);
        StreamClient {
            io,
            tcp,
            deframer: Deframer::new(),
            early: VecDeque::new(),
            turn: Client::new(config),
            out: Vec::new(),
        }
    }

    /// Writes raw bytes on the connection.
    pub fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes).expect("write");
    }

    /// Writes raw bytes; an error when the server has closed the connection.
    pub fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// The next whole frame (RFC 8656 §12.5: ChannelData padded to 4); `None` when the server
    /// closed the connection or nothing came within the read timeout.
    pub fn frame(&mut self) -> Option<Vec<u8>> {
        match self.next_frame() {
            Got::Frame(frame) => Some(frame),
            Got::Quiet | Got::Closed => None,
        }
    }

    /// A Binding answered: the reflexive address the server saw.
    pub fn binding(&mut self) -> SocketAddr {
        let request = self.turn.binding();
        match self.call(request) {
            Ok(Event::Mapped { mapped, .. }) => mapped,
            other => panic!("Binding: {other:?}"),
        }
    }

    /// A Binding request not sent yet, for a test that writes it itself; its answer is read
    /// with [`StreamClient::answer`].
    pub fn binding_request(&mut self) -> (RequestId, Vec<u8>) {
        let request = self.turn.binding();
        let bytes = self
            .turn
            .poll_transmit(Instant::now())
            .expect("a new request is due")
            .to_vec();
        (request, bytes)
    }

    /// Reads the next frame as the answer to a request written raw: the request it ended, or
    /// `None` when the connection closed or went quiet first.
    pub fn answer(&mut self) -> Option<Event> {
        let frame = self.frame()?;
        match self.turn.handle_input(&frame) {
            Ok(Received::Response) => {}
            other => panic!("an answer, not {other:?}"),
        }
        Some(self.turn.poll_event().expect("the answer ends its request"))
    }

    /// An Allocate: the relayed address, or the error code it was refused with. The first
    /// Allocate is challenged (401 with REALM and NONCE) and sent again signed.
    pub fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let request = self.turn.allocate(AllocateOptions::default());
        let outcome = self.call(request);
        assert!(
            self.turn.realm().is_some(),
            "an unauthenticated Allocate is challenged"
        );
        match outcome? {
            Event::Allocated { relayed, .. } => Ok(relayed),
            other => panic!("Allocate: {other:?}"),
        }
    }

    /// A CreatePermission for `peer`; the error code if refused.
    pub fn permission(&mut self, peer: SocketAddr) -> Result<(), u16> {
        let request = self.turn.create_permission(&[peer]).expect("one peer");
        self.call(request).map(drop)
    }

    /// A ChannelBind of `channel` to `peer`; the error code if refused.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), u16> {
        let channel = ChannelNumber::new(channel).expect("a channel number");
        let request = self.turn.channel_bind(channel, peer);
        self.call(request).map(drop)
    }

    /// A Send indication carrying `data` to `peer`.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        self.turn
            .send_indication(peer, data, &mut self.out)
            .expect("data fits one message");
        let out = std::mem::take(&mut self.out);
        self.write(&out);
        self.out = out;
    }

    /// ChannelData carrying `data` on the channel bound to `peer`, padded to 4 bytes; returns
    /// the bytes written.
    pub fn channel_data(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        self.turn
            .channel_data(peer, data, &mut self.out)
            .expect("a channel bound to the peer");
        let out = self.out.clone();
        self.write(&out);
        out
    }

    /// What a frame from the server carries from a peer; panics on anything else.
    pub fn peer_data(&mut self, frame: &[u8]) -> FromPeer {
        match self.turn.handle_input(frame) {
            Ok(Received::Data(d)) => FromPeer {
                peer: d.peer,
                channel: d.channel.map(ChannelNumber::get),
                data: d.data.to_vec(),
            },
            other => panic!("peer data, not {other:?}"),
        }
    }

    /// The realm the server announced; `None` before its first challenge.
    pub fn realm(&self) -> Option<&str> {
        self.turn.realm()
    }

    pub fn local(&self) -> SocketAddr {
        self.tcp.local_addr().expect("local address")
    }

    /// Sends `request` and reads until it ends: its success event, or the error code it was
    /// refused with. Frames that are not its answer are kept for [`StreamClient::frame`].
    fn call(&mut self, request: RequestId) -> Result<Event, u16> {
        loop {
            while let Some(bytes) = self.turn.poll_transmit(Instant::now()) {
                let bytes = bytes.to_vec();
                self.write(&bytes);
            }
            self.turn.handle_timeout(Instant::now());
            while let Some(event) = self.turn.poll_event() {
                if event.request() != request {
                    continue;
                }
                return match event {
                    Event::Failed {
                        error: RequestError::Refused { code, .. },
                        ..
                    } => Err(code),
                    Event::Failed { method, error, .. } => {
                        panic!("no usable answer to {method:?}: {error}")
                    }
                    event => Ok(event),
                };
            }
            let frame = match self.read_server() {
                Got::Frame(frame) => frame,
                Got::Quiet => continue,
                Got::Closed => panic!("the server closed the connection before answering"),
            };
            if !matches!(self.turn.handle_input(&frame), Ok(Received::Response)) {
                self.early.push_back(frame);
            }
        }
    }

    /// A frame kept from a request's wait, or the next one read.
    fn next_frame(&mut self) -> Got {
        match self.early.pop_front() {
            Some(frame) => Got::Frame(frame),
            None => self.read_server(),
        }
    }

    fn read_server(&mut self) -> Got {
        loop {
            match self.deframer.next_frame() {
                Ok(Some(range)) => return Got::Frame(self.deframer.bytes()[range].to_vec()),
                Ok(None) => {}
                Err(e) => panic!("the server sent neither STUN nor ChannelData: {e}"),
            }
            let mut buf = [0u8; 4096];
            match self.io.read(&mut buf) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.deframer.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Quiet
                }
                Err(_) => return Got::Closed,
            }
        }
    }
}

/// A TLS connection over `tcp` trusting `cert`, handshake done.
fn tls(
    tcp: &TcpStream,
    cert: &Path,
    alpn: bool,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let cert = rustls::pki_types::CertificateDer::from_pem_file(cert).expect("a certificate");
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
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let mut s = rustls::StreamOwned::new(conn, tcp.try_clone().expect("clone"));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    if alpn {
        assert_eq!(s.conn.alpn_protocol(), Some(ALPN_STUN_TURN));
    }
    s
}
