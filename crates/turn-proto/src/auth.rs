//! TURN authentication: long-term credentials (RFC 8489 §9.2) fed by the "TURN REST API"
//! shared-secret scheme, stateless nonces, and a fixed-memory rate limiter for answers to
//! unauthenticated sources. Everything here is pure: time (`now`) and keys come in as
//! parameters.
//!
//! # REST-API credentials
//! The web application (this server, or Synapse, Nextcloud Talk, Jitsi with coturn's
//! `use-auth-secret`) hands out `username = EXPIRY` or `EXPIRY<sep>USER` (unix seconds, `:` by
//! default) and `password = base64(HMAC-SHA1(secret, username))`. The relay recomputes the
//! password from the username, so it keeps no user table. [`Secrets`] is a list: the first
//! secret mints, every secret verifies, so an operator rotates by prepending a new secret and
//! dropping the old one once issued credentials have expired. The separator splits at its
//! first occurrence only: Matrix user ids (`@alice:example.org`) contain colons.
//!
//! # Stateless nonces
//! A nonce is `hex(timestamp) || hex(HMAC-SHA256(server key, timestamp || client address))[..16
//! bytes]`. Checking it needs the key and the clock, no table, so a flood of unauthenticated
//! requests costs no memory (the `turn` crate's server keeps a nonce map that grows per
//! request). A nonce is bound to the client's IP and port: one seen on the wire is useless from
//! elsewhere. Too old → [`NonceCheck::Stale`] (the caller answers 438 with a fresh nonce). The
//! server key is random per process, so a restart turns every nonce stale, which clients
//! handle by retrying with the new one.
//!
//! # Rate limiting
//! [`RateLimiter`] is a fixed table of token buckets indexed by a keyed hash of the source
//! (the IPv4 address, or the /64 of an IPv6 address, since one host commonly owns a /64).
//! Memory is `slots × 16` bytes whatever the number of sources. The trade-off: sources that
//! hash to the same slot share one budget, so a flood can make an innocent source that shares
//! its slot wait; in exchange the total of rate-limited answers is bounded by
//! `slots × rate` per second plus `slots × burst` at once, so the server can never be a
//! reflection amplifier, and nothing an attacker does grows memory. The hash key is secret, so
//! an attacker cannot aim at a chosen victim's slot.
//!
//! # Changes from the agreed API
//! - [`Secrets::new`] returns `Result`: a list with no secret, or an empty secret, can mint
//!   nothing safe, and that should fail at start-up, not at the first request.
//! - [`Secrets::candidates`] takes the realm (the long-term key depends on it).
//! - Additions: [`Secrets::authenticate`] (USERNAME → key → integrity → expiry in one call),
//!   [`long_term_key_sha256`] for PASSWORD-ALGORITHM SHA-256, [`RateLimiter::with_seed`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use md5::{Digest, Md5};
use ring::hmac;

use signalbox_stun::{attr, Integrity, MessageRef};

/// RFC 5389 §15.3: a USERNAME is less than 513 bytes.
pub const MAX_USERNAME_LEN: usize = 512;
/// Default separator between expiry and user, as coturn and its callers use it.
pub const DEFAULT_SEPARATOR: char = ':';

/// Why credentials cannot be set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuthError {
    /// The list is empty.
    #[error("at least one secret is needed")]
    NoSecret,
    /// The secret at this 1-based position is empty.
    #[error("secret number {0} is empty")]
    EmptySecret(usize),
}

/// RFC 8489 §9.2.2 (MD5 password algorithm): MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    for part in [username, ":", realm, ":", password] {
        md5.update(part.as_bytes());
    }
    md5.finalize().into()
}

/// RFC 8489 §9.2.2 (SHA-256 password algorithm): SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [username, ":", realm, ":", password] {
        ctx.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// The REST-API password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// A REST-API username split into its expiry and optional user part.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RestUsername<'a> {
    /// Unix seconds after which the credential no longer opens allocations.
    pub expiry: u64,
    /// What follows the separator: who the credential was minted for (the quota key).
    pub user: Option<&'a str>,
}

impl RestUsername<'_> {
    /// Expired once `now` is past the expiry (a credential is valid through its last second).
    pub fn is_expired(&self, now: u64) -> bool {
        now > self.expiry
    }
}

/// Parses `EXPIRY` or `EXPIRY<separator>USER`. EXPIRY is 1–20 ASCII digits that fit a u64;
/// USER is everything after the first separator and must not be empty. `None` otherwise,
/// and for usernames of [`MAX_USERNAME_LEN`] bytes or more.
pub fn parse_rest_username(username: &str, separator: char) -> Option<RestUsername<'_>> {
    if username.len() > MAX_USERNAME_LEN {
        return None;
    }
    let (expiry, user) = match username.split_once(separator) {
        Some((expiry, user)) if !user.is_empty() => (expiry, Some(user)),
        Some(_) => return None,
        None => (username, None),
    };
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expiry = expiry.parse().ok()?;
    Some(RestUsername { expiry, user })
}

/// The shared secrets: the first mints new credentials, all verify. The list can be replaced
/// while the server runs (a configuration reload); every holder of the same `Secrets` sees the
/// new list at its next request. Reads happen on the control path only, never per packet.
pub struct Secrets {
    list: std::sync::RwLock<std::sync::Arc<Vec<Vec<u8>>>>,
}

impl Clone for Secrets {
    fn clone(&self) -> Self {
        Secrets {
            list: std::sync::RwLock::new(self.current()),
        }
    }
}

/// Result of [`Secrets::authenticate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Authentication<'a> {
    /// Integrity verified with one of the secrets and the username has not expired. `key` is
    /// the long-term key to sign the response with.
    Valid {
        /// The long-term key (RFC 8489 §9.2.2) that verified the integrity.
        key: [u8; 16],
        /// The USERNAME as sent.
        username: &'a str,
        /// The USERNAME split into expiry and user.
        rest: RestUsername<'a>,
    },
    /// Integrity verified, but the username's expiry has passed: no new allocation, though an
    /// existing one may keep refreshing unless strict expiry is configured.
    Expired {
        /// The long-term key that verified the integrity.
        key: [u8; 16],
        /// The USERNAME as sent.
        username: &'a str,
        /// The USERNAME split into expiry and user.
        rest: RestUsername<'a>,
    },
    /// USERNAME missing, not UTF-8, too long, or not `EXPIRY[<sep>USER]`.
    BadUsername,
    /// No integrity attribute, or none of the secrets reproduces it.
    BadIntegrity,
}

impl Secrets {
    /// The list in service: the first secret mints, all verify. Empty lists and empty secrets
    /// are refused (they can mint nothing safe).
    pub fn new(list: Vec<Vec<u8>>) -> Result<Self, AuthError> {
        Self::check(&list)?;
        Ok(Secrets {
            list: std::sync::RwLock::new(std::sync::Arc::new(list)),
        })
    }

    fn check(list: &[Vec<u8>]) -> Result<(), AuthError> {
        if list.is_empty() {
            return Err(AuthError::NoSecret);
        }
        if let Some(i) = list.iter().position(Vec::is_empty) {
            return Err(AuthError::EmptySecret(i + 1));
        }
        Ok(())
    }

    /// Puts a new list in service (rotation on reload); an invalid list changes nothing.
    pub fn replace(&self, list: Vec<Vec<u8>>) -> Result<(), AuthError> {
        Self::check(&list)?;
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(list);
        Ok(())
    }

    fn current(&self) -> std::sync::Arc<Vec<Vec<u8>>> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The REST-API password for `username` under the first (current) secret.
    pub fn mint(&self, username: &str) -> String {
        let list = self.current();
        // `check` guarantees at least one secret.
        rest_password(&list[0], username)
    }

    /// The long-term key `username` would have under each secret, current first.
    pub fn candidates<'s>(
        &'s self,
        username: &'s str,
        realm: &'s str,
    ) -> impl Iterator<Item = [u8; 16]> + 's {
        let list = self.current();
        (0..list.len())
            .map(move |i| long_term_key(username, realm, &rest_password(&list[i], username)))
    }

    /// Checks a request's REST-API credentials: the USERNAME's form, then its integrity
    /// against each secret, then expiry at `now`. Integrity comes before expiry so that only
    /// the holder of a real credential learns that it has expired. The nonce is the caller's
    /// to check first (RFC 8489 §9.2.4).
    pub fn authenticate<'a>(
        &self,
        msg: &MessageRef<'a>,
        realm: &str,
        separator: char,
        now: u64,
    ) -> Authentication<'a> {
        let Some(username) = msg
            .get(attr::USERNAME)
            .and_then(|u| std::str::from_utf8(u).ok())
        else {
            return Authentication::BadUsername;
        };
        let Some(rest) = parse_rest_username(username, separator) else {
            return Authentication::BadUsername;
        };
        let Some(key) = self
            .candidates(username, realm)
            .find(|key| msg.verify_integrity(key) == Integrity::Ok)
        else {
            return Authentication::BadIntegrity;
        };
        if rest.is_expired(now) {
            Authentication::Expired {
                key,
                username,
                rest,
            }
        } else {
            Authentication::Valid {
                key,
                username,
                rest,
            }
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.current().len())
    }
}

/// Length of a nonce: 16 hex digits of timestamp and 32 of MAC.
pub const NONCE_LEN: usize = 48;
/// Nonces dated this far in the future (clock steps between workers) are still accepted.
const FUTURE_SKEW_SECS: u64 = 5;

/// The server's nonce key: random at start-up, passed in.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

/// Result of [`NonceKey::check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NonceCheck {
    /// Minted by us for this client and young enough.
    Valid,
    /// Minted by us for this client, but older than the allowed age: answer 438.
    Stale,
    /// Not minted by us for this client (forged, garbled, or from another address).
    Invalid,
}

impl NonceKey {
    /// A key from 32 random bytes the caller draws at start-up.
    pub fn new(key: [u8; 32]) -> Self {
        NonceKey(key)
    }

    /// A printable nonce for `client`, valid from `now`.
    pub fn mint(&self, now: u64, client: SocketAddr) -> String {
        let mac = self.mac(now, client);
        let mut nonce = String::with_capacity(NONCE_LEN);
        push_hex(&mut nonce, &now.to_be_bytes());
        push_hex(&mut nonce, &mac);
        nonce
    }

    /// Checks a NONCE attribute value from `client` at `now`; stale after `max_age` seconds.
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now: u64, max_age: u64) -> NonceCheck {
        let (Some(ts), Some(mac)) = (
            nonce.get(..16).and_then(unhex::<8>),
            nonce.get(16..).and_then(unhex::<16>),
        ) else {
            return NonceCheck::Invalid;
        };
        let ts = u64::from_be_bytes(ts);
        if ts > now.saturating_add(FUTURE_SKEW_SECS) {
            return NonceCheck::Invalid;
        }
        let expected = self.mac(ts, client);
        if !constant_time_eq(&expected, &mac) {
            return NonceCheck::Invalid;
        }
        if now.saturating_sub(ts) > max_age {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    fn mac(&self, ts: u64, client: SocketAddr) -> [u8; 16] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&ts.to_be_bytes());
        ctx.update(&canonical_ip(client.ip()).octets());
        ctx.update(&client.port().to_be_bytes());
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&ctx.sign().as_ref()[..16]);
        mac
    }
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(hidden)")
    }
}

/// Fixed-memory per-source token buckets; see the module notes for the trade-off.
pub struct RateLimiter {
    slots: Box<[Bucket]>,
    /// Refill in thousandths of a token per millisecond == tokens per second.
    rate_per_sec: u32,
    /// Bucket size in thousandths of a token.
    burst_milli: u64,
    seed: u64,
}

/// One bucket: 16 bytes. `last_ms == 0` marks a bucket never used, which starts full.
#[derive(Clone, Copy, Default)]
struct Bucket {
    last_ms: u64,
    /// Tokens in thousandths.
    tokens_milli: u64,
}

impl RateLimiter {
    /// `slots` buckets (at least 1) of `burst` tokens refilled at `rate_per_sec`, with a hash
    /// key derived from the process's random hasher state.
    pub fn new(slots: usize, rate_per_sec: u32, burst: u32) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5349_474e_u64);
        Self::with_seed(slots, rate_per_sec, burst, seed)
    }

    /// As [`new`](Self::new) with an explicit hash key (tests, reproducibility).
    pub fn with_seed(slots: usize, rate_per_sec: u32, burst: u32, seed: u64) -> Self {
        RateLimiter {
            slots: vec![Bucket::default(); slots.max(1)].into_boxed_slice(),
            rate_per_sec,
            burst_milli: u64::from(burst) * 1000,
            seed,
        }
    }

    /// Whether one more rate-limited answer to `ip` is allowed at `now_ms`; takes a token.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        let i = self.slot_of(ip);
        let bucket = &mut self.slots[i];
        if bucket.last_ms == 0 && bucket.tokens_milli == 0 {
            bucket.tokens_milli = self.burst_milli;
        } else {
            let elapsed = now_ms.saturating_sub(bucket.last_ms);
            let refill = elapsed.saturating_mul(u64::from(self.rate_per_sec));
            bucket.tokens_milli = bucket
                .tokens_milli
                .saturating_add(refill)
                .min(self.burst_milli);
        }
        bucket.last_ms = bucket.last_ms.max(now_ms).max(1);
        if bucket.tokens_milli >= 1000 {
            bucket.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Number of buckets, fixed at construction.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Heap bytes held by the table, fixed at construction.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    fn slot_of(&self, ip: IpAddr) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.seed.hash(&mut h);
        match canonical_ip(ip).to_ipv4_mapped() {
            Some(v4) => v4.octets().hash(&mut h),
            // One host commonly owns a /64: count it as one source.
            None => canonical_ip(ip).octets()[..8].hash(&mut h),
        }
        (h.finish() % self.slots.len() as u64) as usize
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("slots", &self.slots.len())
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &(self.burst_milli / 1000))
            .finish()
    }
}

/// First character of the user part of every credential signaling mints for a room peer
/// (`EXPIRY<sep>~ROOM<sep>PEER`). The credential API and the command line refuse it in the user
/// parts they mint, so such a user part was minted for a room peer, and it opens allocations
/// only while [`LivePeers`] holds it.
pub const PEER_MARKER: char = '~';

/// The room peers that are live right now (joined, or away within their reconnect grace), by
/// the user part of their credentials: signaling inserts a peer when it hands out credentials
/// and removes it when the peer is gone; Allocate asks [`LivePeers::admits`]. So credentials a
/// peer kept after leaving open nothing new, though they have not expired.
///
/// Fixed memory: at most `capacity` entries of 16 bytes, each a keyed hash of a user part (the
/// key is random per process, so nobody can aim at a collision; an accidental one, 1 in 2^64
/// per pair, would only let a departed peer's credential allocate until it expires, as it
/// could without this set) and the latest expiry handed out for it. An entry whose
/// credentials have all expired admits nothing and is the first to make room.
pub struct LivePeers {
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    /// Hash of the user part -> latest credential expiry (unix seconds).
    expiry_by_user: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl LivePeers {
    /// An empty set that holds at most `capacity` peers (at least 1).
    pub fn new(capacity: usize) -> LivePeers {
        LivePeers {
            capacity: capacity.max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            expiry_by_user: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Records that credentials for `user`, valid through `expiry`, were handed out at `now`.
    /// False when the set is full of peers whose credentials are still valid: then `user` is
    /// not admitted.
    pub fn insert(&self, user: &str, expiry: u64, now: u64) -> bool {
        let key = self.key(user);
        let mut map = self.lock();
        if !map.contains_key(&key) && map.len() >= self.capacity {
            map.retain(|_, e| *e >= now);
            if map.len() >= self.capacity {
                return false;
            }
        }
        let e = map.entry(key).or_insert(expiry);
        *e = (*e).max(expiry);
        true
    }

    /// Forgets `user`: its peer is gone.
    pub fn remove(&self, user: &str) {
        let key = self.key(user);
        self.lock().remove(&key);
    }

    /// Whether an Allocate authenticated as `user` may proceed at `now`: a user part without
    /// [`PEER_MARKER`] always may; a room peer's only while the peer is live.
    pub fn admits(&self, user: &str, now: u64) -> bool {
        if !user.starts_with(PEER_MARKER) {
            return true;
        }
        let key = self.key(user);
        self.lock().get(&key).is_some_and(|&expiry| now <= expiry)
    }

    /// Peers held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no peer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most peers the set holds (its fixed memory bound).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn key(&self, user: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(user)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, u64>> {
        // Every update is one step, so the map stays consistent even if a holder panicked.
        self.expiry_by_user
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for LivePeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LivePeers")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The address as IPv6, IPv4 addresses mapped (so a dual-stack socket's `::ffff:a.b.c.d` and
/// the plain IPv4 form are the same client).
fn canonical_ip(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
}

/// Lower-case hex of exactly `N` bytes.
fn unhex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
