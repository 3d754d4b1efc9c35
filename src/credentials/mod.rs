//! TURN credentials over their whole life: minted per peer, handed out in `joined`, renewed
//! before they expire, and tied to the peer so its allocations can be closed when it goes.
//!
//! The scheme is the "TURN REST API" one that the TURN server verifies (see `turn::auth`):
//! username `EXPIRY<sep>USER`, password `base64(HMAC-SHA1(secret, username))`, minted with the
//! first of `[turn] secrets`. For a peer of a room the user part is `~ROOM<sep>PEER`, so the
//! username reads `EXPIRY:~ROOM:PEER`. The TURN server splits the username at the *first*
//! separator only (the expiry is all digits), so the user part may contain the separator; it
//! identifies the peer exactly, and the TURN server's per-user quota counts per peer.
//!
//! The leading `~` ([`PEER_MARKER`]) is what no one else can mint: the credential API and the
//! command line refuse it in a user part. The TURN server lets such a user part allocate only
//! while the peer is in [`LivePeers`], which the [`Issuer`] fills as it hands out credentials
//! and [`service`] empties as peers go; so credentials a peer kept after leaving open nothing.
//!
//! Nothing here reads a clock: `now` (unix seconds) comes in, which keeps minting testable and
//! lets the renewal schedule ([`renewal`]) run on virtual time.
//!
//! - [`ice`] builds the `iceServers` list (`RTCConfiguration.iceServers`) from the listeners.
//! - [`renewal`] decides when each joined peer gets fresh credentials.

pub mod ice;
pub mod renewal;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::config::Config;
use crate::turn::service::TurnServer;
use signalbox_turn_proto::auth::{LivePeers, Secrets, PEER_MARKER};

/// A peer's identity as the TURN server sees it: the user part of its REST usernames.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPart(String);

impl UserPart {
    /// The user part for peer `peer` of room `room`: `~ROOM<sep>PEER`.
    pub fn for_peer(room: &str, peer: &str, separator: char) -> UserPart {
        UserPart(format!("{PEER_MARKER}{room}{separator}{peer}"))
    }

    /// A user part chosen by a caller of the API or the command line. `None` when it is empty,
    /// longer than [`MAX_USER_LEN`] bytes, or holds control characters or whitespace (a STUN
    /// USERNAME must survive SASLprep unchanged for every client to compute the same key), or
    /// [`PEER_MARKER`], which only room peers' credentials carry.
    pub fn custom(user: &str) -> Option<UserPart> {
        let ok = !user.is_empty()
            && user.len() <= MAX_USER_LEN
            && !user
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == PEER_MARKER);
        ok.then(|| UserPart(user.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest user part accepted from callers, in bytes. Well under the 513 bytes RFC 8489 §14.3
/// allows for the whole USERNAME, leaving room for the expiry and the separator.
pub const MAX_USER_LEN: usize = 128;

/// One username/password pair and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
    /// Unix seconds after which the TURN server refuses new allocations with it.
    pub expiry: u64,
    /// Seconds from minting to `expiry`.
    pub ttl: u64,
}

/// Mints REST credentials with the first of the TURN server's secrets (configured, or generated
/// for this run), which every TURN worker accepts. Cheap to clone; shared by signaling, the
/// HTTP API and the command line.
#[derive(Debug, Clone)]
pub struct Minter {
    secrets: Arc<Secrets>,
    separator: char,
}

impl Minter {
    pub fn new(secrets: Arc<Secrets>, separator: char) -> Minter {
        Minter { secrets, separator }
    }

    pub fn separator(&self) -> char {
        self.separator
    }

    /// Credentials valid for `ttl` from `now` (unix seconds). `user: None` gives the bare
    /// `EXPIRY` username the REST scheme also allows.
    pub fn mint(&self, user: Option<&UserPart>, now: u64, ttl: Duration) -> TurnCredential {
        let ttl = ttl.as_secs().max(1);
        let expiry = now.saturating_add(ttl);
        let username = match user {
            Some(user) => format!("{expiry}{}{}", self.separator, user.as_str()),
            None => expiry.to_string(),
        };
        let password = self.secrets.mint(&username);
        TurnCredential {
            username,
            password,
            expiry,
            ttl,
        }
    }

    /// Credentials for peer `peer` of room `room`.
    pub fn mint_for_peer(&self, room: &str, peer: &str, now: u64, ttl: Duration) -> TurnCredential {
        let user = UserPart::for_peer(room, peer, self.separator);
        self.mint(Some(&user), now, ttl)
    }
}

/// What hands out ICE servers with credentials: the minter and where STUN/TURN listen. Built
/// once the listeners are bound; shared by signaling and the HTTP API.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub minter: Minter,
    pub endpoints: ice::IceEndpoints,
    /// The room peers whose credentials the TURN server accepts at Allocate.
    pub live_peers: Arc<LivePeers>,
}

impl Issuer {
    /// The issuer of a running TURN server: its secrets, its bound UDP listeners, and
    /// `[server] public_host` as the name browsers reach them by.
    pub fn new(config: &Config, turn: &TurnServer) -> Issuer {
        let mut endpoints = ice::IceEndpoints::new(&config.server.public_host);
        for addr in &turn.listeners {
            endpoints.add_turn(ice::TurnTransport::Udp, addr.port());
        }
        Issuer {
            minter: Minter::new(turn.secrets.clone(), config.turn.separator()),
            endpoints,
            live_peers: turn.live_peers.clone(),
        }
    }

    /// Names the TURN-over-TCP and TLS listeners in the ICE server list, and the HTTPS port
    /// when one-port mode serves TURN there.
    pub fn add_stream_listeners(
        &mut self,
        tcp: &[SocketAddr],
        tls: &[SocketAddr],
        https_port: Option<u16>,
    ) {
        for a in tcp {
            self.endpoints.add_turn(ice::TurnTransport::Tcp, a.port());
        }
        for a in tls {
            self.endpoints.add_turn(ice::TurnTransport::Tls, a.port());
        }
        if let Some(port) = https_port {
            self.endpoints
                .add_turn(ice::TurnTransport::TlsOnHttpsPort, port);
        }
    }

    /// `iceServers` for peer `peer` of room `room`, with credentials valid for `ttl`; from now
    /// on the TURN server lets them allocate, until the peer is gone.
    pub fn ice_servers_for_peer(
        &self,
        room: &str,
        peer: &str,
        now: u64,
        ttl: Duration,
    ) -> serde_json::Value {
        let user = UserPart::for_peer(room, peer, self.minter.separator());
        let credential = self.minter.mint(Some(&user), now, ttl);
        if !self
            .live_peers
            .insert(user.as_str(), credential.expiry, now)
        {
            warn!(
                capacity = self.live_peers.capacity(),
                "the set of live room peers is full: this peer's TURN credentials will be refused"
            );
        }
        self.endpoints.ice_servers_json(Some(&credential))
    }

    /// Forgets a peer that is gone: its credentials open no new allocation from now on.
    pub fn forget_peer(&self, user: &UserPart) {
        self.live_peers.remove(user.as_str());
    }
}

/// [`Issuer::new`], shared.
pub fn issuer_for(config: &Config, turn: &TurnServer) -> Arc<Issuer> {
    Arc::new(Issuer::new(config, turn))
}

/// `base64(HMAC-SHA1(secret, username))`, the password of the REST scheme (coturn's
/// `use-auth-secret`, Synapse's `turn_shared_secret`); the TURN server verifies with the same
/// function.
pub use signalbox_turn_proto::auth::rest_password;

/// The current time as unix seconds, for the shells that drive the pure code above.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minter(secret: &[u8], separator: char) -> Minter {
        let secrets = Secrets::new(vec![secret.to_vec()]).expect("one non-empty secret");
        Minter::new(Arc::new(secrets), separator)
    }

    #[test]
    fn a_peer_username_is_expiry_room_and_peer() {
        let m = minter(b"s3cret", ':');
        let c = m.mint_for_peer("standup", "p1", 1_700_000_000, Duration::from_secs(600));
        assert_eq!(c.username, "1700000600:~standup:p1");
        assert_eq!(c.expiry, 1_700_000_600);
        assert_eq!(c.ttl, 600);
    }

    #[test]
    fn the_configured_separator_is_used_throughout() {
        let m = minter(b"s", '|');
        let c = m.mint_for_peer("r", "p", 10, Duration::from_secs(5));
        assert_eq!(c.username, "15|~r|p");
        assert_eq!(UserPart::for_peer("r", "p", '|').as_str(), "~r|p");
    }

    #[test]
    fn the_password_is_base64_hmac_sha1_of_the_username() {
        // Reference value computed independently:
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"north",
        //   b"1433895918506:my_username",hashlib.sha1).digest()).decode())'
        assert_eq!(
            rest_password(b"north", "1433895918506:my_username"),
            "Gx/rOncp1ZXBdeBo0S3RrYQnHDA="
        );
    }

    #[test]
    fn without_a_user_the_username_is_the_bare_expiry() {
        let m = minter(b"s", ':');
        let c = m.mint(None, 100, Duration::from_secs(60));
        assert_eq!(c.username, "160");
        assert_eq!(c.password, rest_password(b"s", "160"));
    }

    #[test]
    fn custom_user_parts_refuse_what_a_stun_client_would_mangle() {
        assert!(UserPart::custom("alice@example.org").is_some());
        assert!(UserPart::custom("room:peer").is_some());
        assert!(UserPart::custom("").is_none());
        assert!(UserPart::custom("a b").is_none());
        assert!(UserPart::custom("a\u{0}").is_none());
        assert!(UserPart::custom(&"x".repeat(MAX_USER_LEN + 1)).is_none());
    }

    #[test]
    fn no_custom_user_part_can_be_a_room_peers() {
        let peer = UserPart::for_peer("standup", "p1", ':');
        assert!(peer.as_str().starts_with(PEER_MARKER));
        assert!(UserPart::custom(peer.as_str()).is_none());
        assert!(
            UserPart::custom("standup:p1").is_some(),
            "no marker, no claim"
        );
        assert!(UserPart::custom("a~b").is_none(), "the marker anywhere");
    }

    #[test]
    fn a_zero_ttl_still_gives_a_credential_that_expires_after_now() {
        let m = minter(b"s", ':');
        assert_eq!(m.mint(None, 100, Duration::ZERO).expiry, 101);
    }
}
