//! A small TURN client over UDP for credential tests: long-term authentication from a
//! username/password pair (realm and nonce taken from the server's 401), Allocate, Refresh,
//! CreatePermission and Send. The long-term key is computed here from RFC 8489 §9.2.2, not
//! with the server's code.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};

pub struct TurnClient {
    pub sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    tid: u32,
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

impl TurnClient {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let sock = UdpSocket::bind(local).expect("bind a client socket");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        TurnClient {
            sock,
            server,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: Vec::new(),
            nonce: Vec::new(),
            tid: 0,
        }
    }

    fn key(&self) -> [u8; 16] {
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        h.update(self.username.as_bytes());
        h.update(b":");
        h.update(&self.realm);
        h.update(b":");
        h.update(self.password.as_bytes());
        h.finalize().into()
    }

    fn call(
        &mut self,
        method: Method,
        signed: bool,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Reply {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let key = self.key();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, TransactionId(tid));
        attrs(&mut w);
        if signed {
            w.attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, &self.realm)
                .attr(attr::NONCE, &self.nonce)
                .integrity(&key);
        }
        w.fingerprint();
        w.finish();
        self.sock.send_to(&buf, self.server).expect("send");
        let mut rx = [0u8; 2048];
        loop {
            let (n, from) = self.sock.recv_from(&mut rx).expect("an answer in time");
            if from != self.server {
                continue;
            }
            let Ok(msg) = MessageRef::parse(&rx[..n]) else {
                continue;
            };
            if msg.transaction_id() != TransactionId(tid) {
                continue;
            }
            if let Some(realm) = msg.get(attr::REALM) {
                self.realm = realm.to_vec();
            }
            if let Some(nonce) = msg.get(attr::NONCE) {
                self.nonce = nonce.to_vec();
            }
            return Reply {
                class: msg.class(),
                code: msg.error_code().and_then(Result::ok).map(|(c, _)| c),
                relayed: msg
                    .xor_address(attr::XOR_RELAYED_ADDRESS)
                    .and_then(Result::ok),
            };
        }
    }

    /// Sends `method` signed, fetching realm and nonce first (or again on 438 Stale Nonce).
    fn authed(&mut self, method: Method, attrs: &dyn Fn(&mut MessageWriter<'_>)) -> Reply {
        if self.nonce.is_empty() {
            let challenge = self.call(Method::ALLOCATE, false, &udp);
            assert_eq!(
                challenge.code,
                Some(401),
                "an unauthenticated Allocate is challenged"
            );
        }
        let reply = self.call(method, true, attrs);
        if reply.code == Some(438) {
            return self.call(method, true, attrs);
        }
        reply
    }

    pub fn allocate(&mut self) -> Reply {
        self.authed(Method::ALLOCATE, &udp)
    }

    /// Allocate with REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.9).
    pub fn allocate_v6(&mut self) -> Reply {
        self.authed(Method::ALLOCATE, &|w| {
            udp(w);
            w.attr(
                attr::REQUESTED_ADDRESS_FAMILY,
                &[attr::FAMILY_IPV6, 0, 0, 0],
            );
        })
    }

    pub fn refresh(&mut self, lifetime: u32) -> Reply {
        self.authed(Method::REFRESH, &|w| {
            w.u32(attr::LIFETIME, lifetime);
        })
    }

    pub fn permission(&mut self, peer: SocketAddr) -> Reply {
        self.authed(Method::CREATE_PERMISSION, &|w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }

    pub fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            Method::SEND,
            Class::Indication,
            TransactionId([7; 12]),
        );
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        w.finish();
        self.sock.send_to(&buf, self.server).expect("send");
    }
}

fn udp(w: &mut MessageWriter<'_>) {
    w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
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
