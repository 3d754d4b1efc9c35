//! Start-up self-test, and the same checks behind `GET /healthz?deep=1`.
//!
//! Operators lose hours to "STUN works but TURN doesn't": a relay address that is not this
//! host's, an expired certificate, a relay that cannot reach itself. These checks run against
//! the live server from the inside and say in one line each what is wrong. The TURN check is a
//! real client: it authenticates two allocations on the server's own UDP listener over
//! loopback with a freshly minted REST credential, lets one send to the other's relayed
//! address (the relay-to-relay path a browser call uses), and deletes both. It sends traffic
//! only to this host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::auth::{self, Secrets};

/// One check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `ok`, `warn` (works, but something looks wrong) or `fail`.
    pub status: &'static str,
    pub message: String,
}

impl Check {
    fn ok(name: &'static str, message: String) -> Self {
        Self {
            name,
            status: "ok",
            message,
        }
    }
    fn warn(name: &'static str, message: String) -> Self {
        Self {
            name,
            status: "warn",
            message,
        }
    }
    fn fail(name: &'static str, message: String) -> Self {
        Self {
            name,
            status: "fail",
            message,
        }
    }
}

/// What the checks need to know about the running server.
#[derive(Clone)]
pub struct Target {
    /// The TURN UDP listener to test (its wildcard address is replaced by loopback).
    pub turn_udp: Option<SocketAddr>,
    pub secrets: Option<Arc<Secrets>>,
    pub realm: String,
    pub separator: char,
    /// The configured `relay_ip` and `external_ip` (`None` when left to defaults).
    pub relay_ip: Option<IpAddr>,
    pub external_ip: Option<IpAddr>,
    /// The certificate in service, read at each run (so a new one is what gets checked).
    pub certs: Option<Arc<crate::tls::CertStore>>,
    /// The ACME task's state, with `[tls] acme`.
    pub acme: Option<Arc<crate::tls::acme::Status>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("Target")
            .field("turn_udp", &self.turn_udp)
            .field("realm", &self.realm)
            .field("relay_ip", &self.relay_ip)
            .field("external_ip", &self.external_ip)
            .finish_non_exhaustive()
    }
}

/// Runs every check (blocking: call from a blocking thread).
pub fn run(target: &Target) -> Vec<Check> {
    let mut checks = Vec::new();
    if let (Some(addr), Some(secrets)) = (target.turn_udp, &target.secrets) {
        checks.push(turn_relay(addr, secrets, &target.realm, target.separator));
    }
    checks.extend(relay_addresses(target.relay_ip, target.external_ip));
    let now = unix_now();
    if let Some(der) = target.certs.as_ref().and_then(|c| c.leaf_der()) {
        let mut check = certificate(&der, now);
        if target.acme.is_some() && check.status == "warn" {
            check.message = check.message.replace(
                "renew it, then `signalbox reload`",
                "renewal from the ACME CA has not succeeded yet (see the `acme` check)",
            );
        }
        checks.push(check);
    }
    if let Some(acme) = &target.acme {
        checks.push(match acme.describe(now) {
            Ok(message) => Check::ok("acme", message),
            Err(message) => Check::warn("acme", message),
        });
    }
    checks
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The listener address to reach from this host: a wildcard becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn turn_relay(listener: SocketAddr, secrets: &Secrets, realm: &str, sep: char) -> Check {
    const NAME: &str = "turn-relay";
    let started = Instant::now();
    match relay_round_trip(reachable(listener), secrets, realm, sep) {
        Ok(relays) => Check::ok(
            NAME,
            format!(
                "allocated {} and {} on {listener} and relayed a packet between them in {} ms",
                relays.0,
                relays.1,
                started.elapsed().as_millis()
            ),
        ),
        Err(e) => Check::fail(NAME, format!("TURN on {listener} does not relay: {e}")),
    }
}

/// A minimal blocking TURN client for the self-test.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    realm: String,
    nonce: Vec<u8>,
    buf: Vec<u8>,
    seq: u32,
}

impl Client {
    fn new(server: SocketAddr, secrets: &Secrets, realm: &str, sep: char) -> Result<Self, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a socket: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .map_err(|e| e.to_string())?;
        let username = format!("{}{sep}signalbox-selftest", unix_now() + 300);
        let password = secrets.mint(&username);
        let key = auth::long_term_key(&username, realm, &password);
        Ok(Self {
            socket,
            server,
            username,
            key,
            realm: realm.to_owned(),
            nonce: Vec::new(),
            buf: Vec::with_capacity(1500),
            seq: 0,
        })
    }

    fn tid(&mut self) -> TransactionId {
        self.seq += 1;
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(b"self");
        id[4..8].copy_from_slice(&self.seq.to_be_bytes());
        id[8..].copy_from_slice(&std::process::id().to_be_bytes());
        TransactionId(id)
    }

    /// Sends a request (authenticated once a nonce is known) and returns the response bytes;
    /// a 401/438 answer is retried once with the new nonce.
    fn request(
        &mut self,
        method: Method,
        build: &dyn Fn(&mut MessageWriter<'_>),
    ) -> Result<Vec<u8>, String> {
        for _ in 0..3 {
            let tid = self.tid();
            let mut out = std::mem::take(&mut self.buf);
            {
                let mut w = MessageWriter::new(&mut out, method, Class::Request, tid);
                build(&mut w);
                if !self.nonce.is_empty() {
                    w.attr(attr::USERNAME, self.username.as_bytes())
                        .attr(attr::REALM, self.realm.as_bytes())
                        .attr(attr::NONCE, &self.nonce)
                        .integrity(&self.key);
                }
                w.fingerprint();
                w.finish();
            }
            let sent = self.socket.send_to(&out, self.server);
            self.buf = out;
            sent.map_err(|e| format!("cannot send to {}: {e}", self.server))?;
            let resp = self.receive(|m| m.transaction_id() == tid)?;
            let msg = MessageRef::parse(&resp).map_err(|e| format!("bad response: {e:?}"))?;
            match msg.class() {
                Class::Success => return Ok(resp),
                Class::Error => {
                    let (code, reason) = msg
                        .error_code()
                        .and_then(Result::ok)
                        .map(|(c, r)| (c, r.to_owned()))
                        .unwrap_or((0, String::new()));
                    if matches!(code, 401 | 438) {
                        if let Some(nonce) = msg.get(attr::NONCE) {
                            let fresh = nonce.to_vec() != self.nonce;
                            self.nonce = nonce.to_vec();
                            if fresh || code == 438 {
                                continue;
                            }
                        }
                    }
                    return Err(format!("{method:?} answered {code} {reason}"));
                }
                _ => return Err("unexpected response class".into()),
            }
        }
        Err(format!("{method:?} kept asking for authentication"))
    }

    /// Receives until `want` matches a STUN message from the server, or times out.
    fn receive(&self, want: impl Fn(&MessageRef<'_>) -> bool) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(format!("receive failed: {e}")),
            };
            if from != self.server {
                continue;
            }
            if let Ok(m) = MessageRef::parse(&buf[..n]) {
                if want(&m) {
                    return Ok(buf[..n].to_vec());
                }
            }
        }
        Err("no answer within 2 s".into())
    }

    fn allocate(&mut self) -> Result<SocketAddr, String> {
        let resp = self.request(Method::ALLOCATE, &|w| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        })?;
        let msg = MessageRef::parse(&resp).map_err(|e| format!("{e:?}"))?;
        msg.xor_address(attr::XOR_RELAYED_ADDRESS)
            .and_then(Result::ok)
            .ok_or_else(|| "Allocate success without XOR-RELAYED-ADDRESS".into())
    }

    fn delete(&mut self) {
        let _ = self.request(Method::REFRESH, &|w| {
            w.u32(attr::LIFETIME, 0);
        });
    }
}

fn relay_round_trip(
    server: SocketAddr,
    secrets: &Secrets,
    realm: &str,
    sep: char,
) -> Result<(SocketAddr, SocketAddr), String> {
    let mut a = Client::new(server, secrets, realm, sep)?;
    let mut b = Client::new(server, secrets, realm, sep)?;
    let relay_a = a.allocate()?;
    let relay_b = match b.allocate() {
        Ok(r) => r,
        Err(e) => {
            a.delete();
            return Err(e);
        }
    };
    let result = (|| {
        b.request(Method::CREATE_PERMISSION, &|w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, relay_a);
        })?;
        a.request(Method::CREATE_PERMISSION, &|w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, relay_b);
        })?;
        let payload = b"signalbox self-test";
        let mut out = Vec::new();
        let tid = a.tid();
        let mut w = MessageWriter::new(&mut out, Method::SEND, Class::Indication, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, relay_b)
            .attr(attr::DATA, payload);
        w.finish();
        a.socket
            .send_to(&out, server)
            .map_err(|e| format!("cannot send: {e}"))?;
        b.receive(|m| {
            m.method() == Method::DATA
                && m.class() == Class::Indication
                && m.get(attr::DATA) == Some(&payload[..])
        })
        .map_err(|e| format!("the relayed packet did not arrive ({e})"))?;
        Ok((relay_a, relay_b))
    })();
    a.delete();
    b.delete();
    result
}

/// Is `ip` an address of this host? Binding a socket to it answers that without traffic.
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn relay_addresses(relay_ip: Option<IpAddr>, external_ip: Option<IpAddr>) -> Vec<Check> {
    const NAME: &str = "relay-address";
    let mut out = Vec::new();
    if let Some(ip) = relay_ip {
        if is_local(ip) {
            out.push(Check::ok(
                NAME,
                format!("relay_ip {ip} is an address of this host"),
            ));
        } else {
            out.push(Check::fail(
                NAME,
                format!(
                    "relay_ip {ip} is not an address of this host: relay sockets cannot bind to it"
                ),
            ));
        }
    }
    match external_ip {
        Some(ext) if is_local(ext) => out.push(Check::ok(
            "external-address",
            format!("external_ip {ext} is an address of this host"),
        )),
        Some(ext) => out.push(Check::warn(
            "external-address",
            format!(
                "external_ip {ext} is not an address of this host, so it cannot be verified from \
                 inside: it must be the public address whose traffic the network forwards 1:1 to \
                 relay_ip; if it is wrong, STUN works but TURN relays nothing"
            ),
        )),
        None => {
            if let Some(ip) = relay_ip.filter(|ip| is_private(*ip) && !ip.is_loopback()) {
                out.push(Check::warn(
                    "external-address",
                    format!(
                        "relay_ip {ip} is a private address and external_ip is not set: browsers \
                         outside this network cannot reach the relay (set [turn] external_ip on a \
                         1:1-NAT cloud host)"
                    ),
                ));
            }
        }
    }
    out
}

/// Warns 21 days before the certificate expires, fails once it has.
fn certificate(der: &[u8], now: u64) -> Check {
    const NAME: &str = "certificate";
    let Some((_, not_after)) = crate::tls::validity::validity(der) else {
        return Check::warn(NAME, "cannot read the certificate's validity".into());
    };
    let days = (not_after as i64 - now as i64) / 86_400;
    if not_after <= now {
        Check::fail(NAME, format!("the certificate expired {} days ago", -days))
    } else if days < 21 {
        Check::warn(
            NAME,
            format!("the certificate expires in {days} days: renew it, then `signalbox reload`"),
        )
    } else {
        Check::ok(
            NAME,
            format!("the certificate is valid for {days} more days"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_or_expiring_certificate_is_reported() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let expiry = crate::tls::validity::unix_seconds(2030, 1, 1).expect("date");
        assert_eq!(certificate(cert.der(), expiry - 100 * 86_400).status, "ok");
        assert_eq!(certificate(cert.der(), expiry - 5 * 86_400).status, "warn");
        assert_eq!(certificate(cert.der(), expiry + 86_400).status, "fail");
    }

    #[test]
    fn a_non_local_external_ip_is_flagged_without_sending_anything() {
        let checks = relay_addresses(
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some("198.51.100.7".parse().expect("ip")),
        );
        assert_eq!(checks[0].status, "ok");
        assert_eq!(checks[1].status, "warn");
        assert!(checks[1].message.contains("198.51.100.7"));
    }

    #[test]
    fn a_relay_ip_that_is_not_ours_fails() {
        let checks = relay_addresses(Some("203.0.113.9".parse().expect("ip")), None);
        assert_eq!(checks[0].status, "fail");
    }
}
