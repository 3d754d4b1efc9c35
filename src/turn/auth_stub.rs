//! Stand-in for `auth.rs` with the agreed API, until the real module is merged.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use md5::{Digest, Md5};
use ring::hmac;

pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

pub fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()))
}

pub struct RestUsername<'a> {
    pub expiry: u64,
    pub user: Option<&'a str>,
}

pub fn parse_rest_username(username: &str, separator: char) -> Option<RestUsername<'_>> {
    let (expiry, user) = match username.split_once(separator) {
        Some((e, u)) => (e, Some(u)),
        None => (username, None),
    };
    Some(RestUsername {
        expiry: expiry.parse().ok()?,
        user,
    })
}

pub struct Secrets(Vec<Vec<u8>>);

impl Secrets {
    pub fn new(list: Vec<Vec<u8>>) -> Self {
        Secrets(list)
    }

    pub fn mint(&self, username: &str) -> String {
        rest_password(self.0.first().map_or(&[][..], |s| s), username)
    }

    pub fn candidates<'a>(
        &'a self,
        username: &'a str,
        realm: &'a str,
    ) -> impl Iterator<Item = [u8; 16]> + 'a {
        self.0
            .iter()
            .map(move |s| long_term_key(username, realm, &rest_password(s, username)))
    }
}

pub struct NonceKey(pub [u8; 32]);

#[derive(Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    Stale,
    Invalid,
}

impl NonceKey {
    fn tag(&self, ts: u64, client: SocketAddr) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let msg = format!("{ts}|{client}");
        let t = hmac::sign(&key, msg.as_bytes());
        t.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn mint(&self, now: u64, client: SocketAddr) -> String {
        format!("{now:016x}{}", self.tag(now, client))
    }

    pub fn check(&self, nonce: &[u8], client: SocketAddr, now: u64, max_age: u64) -> NonceCheck {
        let Ok(s) = std::str::from_utf8(nonce) else {
            return NonceCheck::Invalid;
        };
        if s.len() != 40 {
            return NonceCheck::Invalid;
        }
        let Ok(ts) = u64::from_str_radix(&s[..16], 16) else {
            return NonceCheck::Invalid;
        };
        if self.tag(ts, client) != s[16..] {
            return NonceCheck::Invalid;
        }
        if now.saturating_sub(ts) > max_age {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

pub struct RateLimiter {
    slots: Vec<(IpAddr, f64, u64)>,
    rate: f64,
    burst: f64,
}

impl RateLimiter {
    pub fn new(slots: usize, rate_per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            slots: vec![(IpAddr::from([0, 0, 0, 0]), 0.0, 0); slots.max(1)],
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst),
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut h);
        let i = (h.finish() % self.slots.len() as u64) as usize;
        let slot = &mut self.slots[i];
        if slot.0 != ip {
            *slot = (ip, self.burst, now_ms);
        }
        let elapsed = now_ms.saturating_sub(slot.2) as f64 / 1000.0;
        slot.1 = (slot.1 + elapsed * self.rate).min(self.burst);
        slot.2 = now_ms;
        if slot.1 >= 1.0 {
            slot.1 -= 1.0;
            true
        } else {
            false
        }
    }
}
