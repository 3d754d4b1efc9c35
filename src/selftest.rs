//! Start-up self-test, and the same checks behind `GET /healthz?deep=1`.
//!
//! Operators lose hours to "STUN works but TURN doesn't": a relay address that is not this
//! host's, an expired certificate, a relay that cannot reach itself. These checks run against
//! the live server from the inside and say in one line each what is wrong. The TURN check is a
//! real client (the sans-IO one of `signalbox_turn_proto::client` over a blocking socket): it
//! authenticates two allocations on the server's own UDP listener over loopback with a freshly
//! minted REST credential, lets one send to the other's relayed address (the relay-to-relay
//! path a browser call uses), and deletes both. It sends traffic only to this host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use ring::rand::{SecureRandom, SystemRandom};
use signalbox_turn_proto::auth::Secrets;
use signalbox_turn_proto::client::{
    self as turn, AllocateOptions, Event, PeerData, Received, RequestId,
};

/// One check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `ok`, `warn` (works, but something looks wrong) or `fail`.
    pub status: &'static str,
    pub message: String,
}

impl Check {
    pub(crate) fn ok(name: &'static str, message: String) -> Self {
        Self {
            name,
            status: "ok",
            message,
        }
    }
    pub(crate) fn warn(name: &'static str, message: String) -> Self {
        Self {
            name,
            status: "warn",
            message,
        }
    }
    pub(crate) fn fail(name: &'static str, message: String) -> Self {
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
    /// This node's membership of a cluster, with `[cluster] redis_url`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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
    let mut checks = relay_checks(target);
    checks.extend(state_checks(target));
    checks
}

/// The checks that make real allocations (costly: the health endpoint reuses their result for a
/// few seconds).
pub fn relay_checks(target: &Target) -> Vec<Check> {
    match (target.turn_udp, &target.secrets) {
        (Some(addr), Some(secrets)) => {
            vec![turn_relay(addr, secrets, &target.realm, target.separator)]
        }
        _ => Vec::new(),
    }
}

/// The checks that only read the server's state (relay addresses, the certificate in service,
/// ACME): cheap, so always current, even when the relay checks' result is reused.
pub fn state_checks(target: &Target) -> Vec<Check> {
    let mut checks = relay_addresses(target.relay_ip, target.external_ip);
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
    if let Some(cluster) = &target.cluster {
        checks.push(cluster.check());
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

/// How long one request, or the relayed packet, may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// One self-test client: a loopback UDP socket and the TURN client that speaks through it.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    turn: turn::Client,
    out: Vec<u8>,
    /// Why the last message from the server could not be used, for a time-out's message.
    last_unusable: Option<turn::InputError>,
}

impl Client {
    fn new(server: SocketAddr, secrets: &Secrets, sep: char) -> Result<Self, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a socket: {e}"))?;
        let username = format!("{}{sep}signalbox-selftest", unix_now() + 300);
        let password = secrets.mint(&username);
        let credentials =
            turn::Credentials::new(&username, &password).map_err(|e| e.to_string())?;
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "no randomness for transaction ids".to_owned())?;
        // Three sends within the 2 s a request may take (the RFC's defaults wait 39.5 s).
        let config = turn::Config::new(credentials, turn::Transport::Udp, seed)
            .with_retransmission(Duration::from_millis(250), 3, 4);
        Ok(Self {
            socket,
            server,
            turn: turn::Client::new(config),
            out: Vec::with_capacity(1500),
            last_unusable: None,
        })
    }

    /// Drives the client until `request` ends: its event on success, the reason otherwise.
    fn finish(&mut self, request: RequestId) -> Result<Event, String> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            let now = Instant::now();
            self.transmit(now)?;
            self.turn.handle_timeout(now);
            while let Some(event) = self.turn.poll_event() {
                match event {
                    Event::Failed { method, error, .. } if event.request() == request => {
                        return Err(format!("{}: {error}", turn::method_name(method)));
                    }
                    _ if event.request() == request => return Ok(event),
                    _ => {}
                }
            }
            if now >= deadline {
                return Err(self.timed_out());
            }
            let wake = self
                .turn
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            let mut buf = [0u8; 1500];
            if let Some(n) = self.receive(&mut buf, wake)? {
                if let Err(e) = self.turn.handle_input(&buf[..n]) {
                    self.last_unusable = Some(e);
                }
            }
        }
    }

    /// Waits up to 2 s for a relayed packet that `want` accepts.
    fn receive_data(&mut self, want: impl Fn(&PeerData<'_>) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            let Some(n) = self.receive(&mut buf, deadline)? else {
                continue;
            };
            match self.turn.handle_input(&buf[..n]) {
                Ok(Received::Data(data)) if want(&data) => return Ok(()),
                Ok(_) => {}
                Err(e) => self.last_unusable = Some(e),
            }
        }
        Err(self.timed_out())
    }

    /// Sends what the client has due.
    fn transmit(&mut self, now: Instant) -> Result<(), String> {
        while let Some(bytes) = self.turn.poll_transmit(now) {
            self.socket
                .send_to(bytes, self.server)
                .map_err(|e| format!("cannot send to {}: {e}", self.server))?;
        }
        Ok(())
    }

    /// One datagram from the server into `buf`, or `None` when `until` passed first.
    fn receive(&mut self, buf: &mut [u8], until: Instant) -> Result<Option<usize>, String> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        match self.socket.recv_from(buf) {
            Ok((n, from)) if from == self.server => Ok(Some(n)),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("receive failed: {e}")),
        }
    }

    fn timed_out(&self) -> String {
        match &self.last_unusable {
            Some(e) => format!("no answer within 2 s (an unusable one: {e})"),
            None => "no answer within 2 s".into(),
        }
    }

    /// Allocates; checks that the server announced the configured realm.
    fn allocate(&mut self, realm: &str) -> Result<SocketAddr, String> {
        let request = self.turn.allocate(AllocateOptions::default());
        let Event::Allocated { relayed, .. } = self.finish(request)? else {
            return Err("Allocate ended without an allocation".into());
        };
        match self.turn.realm() {
            Some(announced) if announced != realm => Err(format!(
                "the server announced realm `{announced}`, not the configured `{realm}`"
            )),
            _ => Ok(relayed),
        }
    }

    fn permit(&mut self, peer: SocketAddr) -> Result<(), String> {
        let request = self
            .turn
            .create_permission(&[peer])
            .map_err(|e| e.to_string())?;
        self.finish(request).map(|_| ())
    }

    fn send(&mut self, peer: SocketAddr, payload: &[u8]) -> Result<(), String> {
        self.turn
            .send_indication(peer, payload, &mut self.out)
            .map_err(|e| e.to_string())?;
        self.socket
            .send_to(&self.out, self.server)
            .map(|_| ())
            .map_err(|e| format!("cannot send: {e}"))
    }

    fn delete(&mut self) {
        let request = self.turn.refresh(Duration::ZERO);
        let _ = self.finish(request);
    }
}

fn relay_round_trip(
    server: SocketAddr,
    secrets: &Secrets,
    realm: &str,
    sep: char,
) -> Result<(SocketAddr, SocketAddr), String> {
    let mut a = Client::new(server, secrets, sep)?;
    let mut b = Client::new(server, secrets, sep)?;
    let relay_a = a.allocate(realm)?;
    let relay_b = match b.allocate(realm) {
        Ok(r) => r,
        Err(e) => {
            a.delete();
            return Err(e);
        }
    };
    let result = (|| {
        b.permit(relay_a)?;
        a.permit(relay_b)?;
        let payload = b"signalbox self-test";
        a.send(relay_b, payload)?;
        b.receive_data(|d| d.data == payload)
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
    fn a_turn_listener_that_never_answers_fails_the_check_within_its_time() {
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let secrets = Secrets::new(vec![b"secret".to_vec()]).expect("a secret");
        let started = Instant::now();
        let check = turn_relay(silent.local_addr().expect("addr"), &secrets, "realm", ':');
        assert_eq!(check.status, "fail");
        assert!(
            check
                .message
                .contains("Allocate: no answer after 3 transmission(s)"),
            "{}",
            check.message
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_relay_ip_that_is_not_ours_fails() {
        let checks = relay_addresses(Some("203.0.113.9".parse().expect("ip")), None);
        assert_eq!(checks[0].status, "fail");
    }
}
