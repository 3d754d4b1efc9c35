//! A blocking TURN client over UDP for the integration tests: turn-proto's sans-IO client
//! (long-term authentication from a username/password pair, realm and nonce taken from the
//! server's 401, a fresh nonce on 438) driven over a loopback socket, with Allocate, Refresh,
//! CreatePermission, ChannelBind, Send and ChannelData. Each request is sent once and waits
//! 3 s, so a test that counts what the server did is not disturbed by retransmissions. What
//! peers send through the relay while a request waits is kept for [`TurnClient::relayed`].
//! The `turn` crate and coturn's tools are the independent clients; this one provokes what
//! they cannot.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use signalbox_stun::Class;
use signalbox_turn_proto::client::{
    frame_channel_data, AddressFamily, AllocateOptions, ChannelNumber, Client, Config, Credentials,
    Event, PeerData, Received, RequestError, RequestId, Transport,
};

/// How long a request waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

pub struct TurnClient {
    pub sock: UdpSocket,
    server: SocketAddr,
    turn: Client,
    out: Vec<u8>,
    /// Peer data that arrived while a request waited, oldest first.
    received: Vec<Relayed>,
}

/// What reached the client from the relay outside a request/response exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A Data indication from the peer `from`.
    Data { from: SocketAddr, data: Vec<u8> },
    /// ChannelData on the channel `number` (the padding, if any, removed).
    Channel { number: u16, data: Vec<u8> },
    /// A datagram the client could not use, or one from elsewhere than the server.
    Unusable(String),
}

impl From<PeerData<'_>> for Relayed {
    fn from(d: PeerData<'_>) -> Relayed {
        match d.channel {
            Some(channel) => Relayed::Channel {
                number: channel.get(),
                data: d.data.to_vec(),
            },
            None => Relayed::Data {
                from: d.peer,
                data: d.data.to_vec(),
            },
        }
    }
}

/// A response: its class, error code if any, and the relayed address of an Allocate success.
#[derive(Debug)]
pub struct Reply {
    pub class: Class,
    pub code: Option<u16>,
    pub relayed: Option<SocketAddr>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.class == Class::Success
    }
}

/// The STUN/TURN URL's `HOST:PORT` as a socket address (`turn:127.0.0.1:5000?transport=udp`).
pub fn addr_of_uri(uri: &str) -> SocketAddr {
    let rest = uri
        .strip_prefix("turn:")
        .or_else(|| uri.strip_prefix("stun:"))
        .expect("a turn: or stun: URI");
    let hostport = rest.split('?').next().expect("host and port");
    hostport.parse().expect("an IP:PORT in the URI")
}

/// 32 bytes from std's per-process random hash keys: transaction ids differ between runs.
pub fn random_seed() -> [u8; 32] {
    let keys = RandomState::new();
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_exact_mut(8).enumerate() {
        let mut h = keys.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    seed
}

impl TurnClient {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        TurnClient::bound(local, server, username, password)
    }

    /// A client on the local address `bind` (any of 127.0.0.0/8 is a different source).
    pub fn bound(bind: &str, server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let sock = UdpSocket::bind(bind).expect("bind a client socket");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        TurnClient::on_socket(sock, server, username, password)
    }

    /// A client on a socket made elsewhere (for example inside a network namespace).
    pub fn on_socket(
        sock: UdpSocket,
        server: SocketAddr,
        username: &str,
        password: &str,
    ) -> TurnClient {
        let credentials = Credentials::new(username, password).expect("a usable username");
        let config = Config::new(credentials, Transport::Udp, random_seed()).with_retransmission(
            ANSWER_WITHIN,
            1,
            1,
        );
        TurnClient {
            sock,
            server,
            turn: Client::new(config),
            out: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Runs `request` to its end; data from peers arriving meanwhile is kept.
    fn finish(&mut self, request: RequestId) -> Event {
        loop {
            let now = Instant::now();
            while let Some(bytes) = self.turn.poll_transmit(now) {
                self.sock.send_to(bytes, self.server).expect("send");
            }
            self.turn.handle_timeout(now);
            while let Some(event) = self.turn.poll_event() {
                if event.request() == request {
                    return event;
                }
            }
            let wake = self.turn.poll_timeout().expect("the request is in flight");
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.sock
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            let mut rx = [0u8; 2048];
            match self.sock.recv_from(&mut rx) {
                Ok((n, from)) if from == self.server => match self.turn.handle_input(&rx[..n]) {
                    Ok(Received::Response) => {}
                    Ok(Received::Data(data)) => self.received.push(data.into()),
                    Err(e) => eprintln!("turn_raw: an unusable message from the server: {e}"),
                },
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("receive: {e}"),
            }
        }
    }

    fn call(&mut self, request: RequestId) -> Reply {
        match self.finish(request) {
            Event::Failed {
                error: RequestError::Refused { code, .. },
                ..
            } => Reply {
                class: Class::Error,
                code: Some(code),
                relayed: None,
            },
            Event::Failed { method, error, .. } => {
                panic!("no usable answer to {method:?}: {error}")
            }
            Event::Allocated { relayed, .. } => Reply {
                class: Class::Success,
                code: None,
                relayed: Some(relayed),
            },
            _ => Reply {
                class: Class::Success,
                code: None,
                relayed: None,
            },
        }
    }

    pub fn allocate(&mut self) -> Reply {
        self.allocate_with(AllocateOptions::default())
    }

    /// An Allocate for an IPv6 relay (REQUESTED-ADDRESS-FAMILY).
    pub fn allocate_v6(&mut self) -> Reply {
        self.allocate_with(AllocateOptions {
            family: Some(AddressFamily::V6),
            ..AllocateOptions::default()
        })
    }

    fn allocate_with(&mut self, options: AllocateOptions) -> Reply {
        let request = self.turn.allocate(options);
        let reply = self.call(request);
        assert!(
            self.turn.realm().is_some(),
            "an unauthenticated Allocate is challenged (401 with REALM and NONCE)"
        );
        reply
    }

    pub fn refresh(&mut self, lifetime: u32) -> Reply {
        let request = self.turn.refresh(Duration::from_secs(u64::from(lifetime)));
        self.call(request)
    }

    pub fn permission(&mut self, peer: SocketAddr) -> Reply {
        let request = self.turn.create_permission(&[peer]).expect("one peer");
        self.call(request)
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Reply {
        let channel = ChannelNumber::new(channel).expect("a channel number");
        let request = self.turn.channel_bind(channel, peer);
        self.call(request)
    }

    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        self.turn
            .send_indication(peer, data, &mut self.out)
            .expect("data fits one message");
        self.sock.send_to(&self.out, self.server).expect("send");
    }

    /// The realm the server announced in its challenge; `None` before the first 401.
    pub fn realm(&self) -> Option<&str> {
        self.turn.realm()
    }

    /// ChannelData on `channel`, whether or not this client bound it.
    pub fn channel_data(&mut self, channel: u16, data: &[u8]) {
        let channel = ChannelNumber::new(channel).expect("a channel number");
        frame_channel_data(channel, data, Transport::Udp, &mut self.out).expect("data fits");
        self.sock.send_to(&self.out, self.server).expect("send");
    }

    /// What reached the client from the relay: what arrived while requests waited, then every
    /// datagram until none comes for `quiet` (at most 5 s in all).
    pub fn relayed(&mut self, quiet: Duration) -> Vec<Relayed> {
        let mut got = std::mem::take(&mut self.received);
        self.sock
            .set_read_timeout(Some(quiet))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut rx = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut rx) else {
                break;
            };
            if from != self.server {
                got.push(Relayed::Unusable(format!("a datagram from {from}")));
                continue;
            }
            got.push(match self.turn.handle_input(&rx[..n]) {
                Ok(Received::Data(data)) => data.into(),
                Ok(Received::Response) => Relayed::Unusable("a late response".to_owned()),
                Err(e) => Relayed::Unusable(e.to_string()),
            });
        }
        got
    }

    /// The first Allocate a fresh client sends: unauthenticated, as from a stranger.
    pub fn first_allocate_request(&mut self) -> Vec<u8> {
        self.turn.allocate(AllocateOptions::default());
        self.turn
            .poll_transmit(Instant::now())
            .expect("a new request is due")
            .to_vec()
    }
}

/// A UDP peer on loopback that reports what reaches it.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a peer socket");
        sock.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("read timeout");
        Peer { sock }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("peer address")
    }

    /// The next datagram, or `None` when nothing arrives within 1.5 s.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        self.sock
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    }
}
