//! The world's fixed tables: addresses of clients, peers, listeners and relays, users and
//! credential kinds, clock steps; and small helpers for building inputs.

use std::net::{IpAddr, SocketAddr};

use signalbox_turn_proto::allocation::{Millis, Transport};
use signalbox_turn_proto::policy::Cidr;
use signalbox_turn_proto::ports::PortRange;
use signalbox_turn_proto::server::HEADROOM;

pub(crate) const REALM: &str = "fuzz.example";
pub(crate) const SECRETS: [&str; 2] = ["fuzz-secret-current", "fuzz-secret-previous"];
/// The clock at the start of every input.
pub(crate) const T0: Millis = Millis(1_700_000_000_000);
pub(crate) const UDP_LISTENER: &str = "192.0.2.10:3478";
pub(crate) const STREAM_LISTENER: &str = "192.0.2.10:5349";
/// (local, advertised) relay addresses.
pub(crate) const RELAY_V4: (&str, &str) = ("192.0.2.10", "203.0.113.10");
pub(crate) const RELAY_V6: &str = "2001:db8::10";
pub(crate) const RELAY_PORTS: PortRange = PortRange {
    first: 50000,
    last: 50015,
};
pub(crate) const USERS: [&str; 3] = ["alice", "bob", "carol"];
pub(crate) const CLIENTS: [&str; 6] = [
    "198.51.100.1:40000",
    "198.51.100.1:40001",
    "198.51.100.2:40000",
    "[2001:db8:1::1]:40000",
    "[::ffff:198.51.100.3]:40000",
    "[2001:db8:1::2]:40000",
];
pub(crate) const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];
/// Fixed peers: public, the server's own addresses and listener ports, every kind of range
/// the policy treats specially, and IPv4-mapped spellings. Higher indices name relayed
/// addresses of this server (see [`World::peer`]).
pub(crate) const PEERS: [&str; 24] = [
    "8.8.8.8:5000",
    "8.8.8.8:5001",
    "8.8.8.8:3478",
    "9.9.9.9:5000",
    "203.0.113.10:53",
    "192.0.2.10:53",
    "192.0.2.10:3478",
    "192.0.2.10:5349",
    "10.1.2.3:5000",
    "10.2.0.1:5000",
    "127.0.0.1:5000",
    "169.254.169.254:80",
    "8.8.4.4:53",
    "[::ffff:8.8.8.8]:5000",
    "[::ffff:127.0.0.1]:5000",
    "0.0.0.0:5000",
    "[2001:4860::8888]:5000",
    "[2001:4860:4860::8844]:53",
    "[fe80::1]:5000",
    "[::1]:5000",
    "[64:ff9b::808:808]:5000",
    "[fd00:1::5]:5000",
    "[2001:db8::10]:53",
    "255.255.255.255:5000",
];
/// What [`Op::Wait`] advances the clock by, in milliseconds.
pub(crate) const STEPS: [u64; 8] = [1, 200, 1_000, 10_000, 30_000, 120_000, 301_000, 601_000];

pub(crate) fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a fixed address")
}

pub(crate) fn ip(text: &str) -> IpAddr {
    text.parse().expect("a fixed address")
}

/// Which credential a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CredKind {
    Valid,
    /// Valid for 20 s from the start.
    ShortLived,
    Expired,
    WrongSecret,
    /// Signed with the second (previous) secret, which still verifies.
    OldSecret,
    /// Username `EXPIRY` without a user part: the whole username is the quota key.
    NoUser,
    StaleNonce,
    WrongRealm,
    Unsigned,
    Sha256,
    /// A nonce minted for another client address.
    OtherClientsNonce,
}

pub(crate) const CRED_KINDS: [CredKind; 11] = [
    CredKind::Valid,
    CredKind::ShortLived,
    CredKind::Expired,
    CredKind::WrongSecret,
    CredKind::OldSecret,
    CredKind::NoUser,
    CredKind::StaleNonce,
    CredKind::WrongRealm,
    CredKind::Unsigned,
    CredKind::Sha256,
    CredKind::OtherClientsNonce,
];

pub(crate) fn cidr(text: &str) -> Cidr {
    text.parse().expect("a fixed network")
}

pub(crate) fn expiry(kind: CredKind) -> u64 {
    let t0 = T0.unix_secs();
    match kind {
        CredKind::ShortLived => t0 + 20,
        CredKind::Expired => t0 - 1,
        _ => t0 + 3600,
    }
}

/// `len` recognisable payload bytes.
pub(crate) fn pattern(len: u8) -> Vec<u8> {
    (0..len).map(|i| i ^ 0x5a).collect()
}

/// A receive buffer as the IO layer hands it in: [`HEADROOM`] free bytes, then the data.
pub(crate) fn with_headroom(data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + data.len()];
    buf[HEADROOM..].copy_from_slice(data);
    buf
}
