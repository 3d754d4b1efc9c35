//! Connection caps: how many connections one listener holds at once, in total and from one
//! client address. Every listener that anyone on the internet can reach has them: the HTTPS
//! port (before the TLS handshake), the WebSocket signaling and the TURN streams.
//!
//! Addresses are counted by [`AddrKey`] (an IPv4 address, or an IPv6 /64), so one host with a
//! /64 cannot fill a cap meant for one address. A connection over a cap is refused at once,
//! before it costs anything more; the refusal is counted in
//! `signalbox_connections_refused_total{cap}` and logged, at most [`crate::ratelimit::LOG_PER_MINUTE`] lines a
//! minute per listener, so a flood of connections is not also a flood of log lines.
//!
//! A trusted proxy (`[http] trusted_proxies`, [`crate::proxy`]) carries many clients on its
//! connections, so it is exempt from the per-address cap (it still counts in the total); once
//! a PROXY header names the client, [`ConnPermit::rekey`] moves the count to that client.
//!
//! One small mutex per listener, taken when a connection opens or closes, never per message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::warn;

use crate::metrics::METRICS;
use crate::proxy::TrustedProxies;
use crate::ratelimit::RefusalLog;
use signalbox_turn_proto::policy::AddrKey;

/// The listener a set of caps guards; names the metric label and the config keys in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Https,
    WebSocket,
    TurnStream,
}

impl Edge {
    /// (what, total key, per-address key), for the log line.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Edge::Https => (
                "HTTPS",
                "[http] max_connections",
                "[http] max_connections_per_ip",
            ),
            Edge::WebSocket => (
                "WebSocket",
                "[rooms] max_connections",
                "[rooms] max_connections_per_ip",
            ),
            Edge::TurnStream => (
                "TURN stream",
                "[turn] max_stream_connections",
                "[turn] max_stream_connections_per_ip",
            ),
        }
    }

    /// Index into `connections_refused`: `<edge>_total`, then `<edge>_per_address`.
    fn metric(self, error: CapError) -> usize {
        let per_address = matches!(error, CapError::PerAddress(_));
        self as usize * 2 + usize::from(per_address)
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("too many connections (limit {0})")]
    Total(usize),
    #[error("too many connections from your address (limit {0})")]
    PerAddress(usize),
}

/// Counts one listener's open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionCaps {
    edge: Edge,
    max_total: usize,
    max_per_address: usize,
    /// Addresses not held to `max_per_address`: the trusted proxies.
    exempt: TrustedProxies,
    state: Mutex<CapState>,
}

#[derive(Debug, Default)]
struct CapState {
    total: usize,
    by_address: HashMap<AddrKey, usize>,
    log: RefusalLog,
}

impl ConnectionCaps {
    pub fn new(edge: Edge, max_total: usize, max_per_address: usize) -> Arc<ConnectionCaps> {
        ConnectionCaps::exempting(edge, max_total, max_per_address, TrustedProxies::default())
    }

    /// Caps that hold the addresses in `exempt` (the trusted proxies) to the total cap only.
    pub fn exempting(
        edge: Edge,
        max_total: usize,
        max_per_address: usize,
        exempt: TrustedProxies,
    ) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            edge,
            max_total,
            max_per_address,
            exempt,
            state: Mutex::new(CapState::default()),
        })
    }

    /// Counts a connection from `ip`; the returned permit uncounts it when dropped. A refusal
    /// is counted and logged here (within the log budget).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, CapError> {
        let key = self.key_of(ip);
        let mut s = self.lock();
        if s.total >= self.max_total {
            return Err(self.refuse(&mut s, CapError::Total(self.max_total), ip));
        }
        if let Some(key) = key {
            self.count_address(&mut s, key, ip)?;
        }
        s.total += 1;
        Ok(ConnPermit {
            caps: self.clone(),
            key,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// The key `ip` is counted under, or `None` for a trusted proxy.
    fn key_of(&self, ip: IpAddr) -> Option<AddrKey> {
        (!self.exempt.contains(ip)).then(|| AddrKey::of(ip))
    }

    /// Counts one more connection under `key`, unless that is over the per-address cap.
    fn count_address(&self, s: &mut CapState, key: AddrKey, ip: IpAddr) -> Result<(), CapError> {
        let from_key = s.by_address.get(&key).copied().unwrap_or(0);
        if from_key >= self.max_per_address {
            return Err(self.refuse(s, CapError::PerAddress(self.max_per_address), ip));
        }
        *s.by_address.entry(key).or_default() += 1;
        Ok(())
    }

    /// Counts and logs (within the log budget) a refusal.
    fn refuse(&self, s: &mut CapState, refused: CapError, ip: IpAddr) -> CapError {
        METRICS
            .connections_refused
            .at(self.edge.metric(refused))
            .inc();
        if let Some(unlogged) = s.log.take(Instant::now()) {
            let (what, total_key, address_key) = self.edge.names();
            let config_key = match refused {
                CapError::Total(_) => total_key,
                CapError::PerAddress(_) => address_key,
            };
            warn!(
                address = %AddrKey::of(ip),
                unlogged,
                "{what} connection refused: {refused} ({config_key})"
            );
        }
        refused
    }

    fn lock(&self) -> MutexGuard<'_, CapState> {
        // The counters stay consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct ConnPermit {
    caps: Arc<ConnectionCaps>,
    /// The address it counts under; `None` for a trusted proxy (total only).
    key: Option<AddrKey>,
}

impl ConnPermit {
    /// Counts this connection under `ip` from now on, as a PROXY header named the client: its
    /// place in the total stays, the per-address cap applies to `ip`. A refusal is counted and
    /// logged like one at accept, and the permit is then released.
    pub fn rekey(mut self, ip: IpAddr) -> Result<ConnPermit, CapError> {
        let key = self.caps.key_of(ip);
        if key == self.key {
            return Ok(self);
        }
        let caps = self.caps.clone();
        let mut s = caps.lock();
        if let Some(key) = key {
            if let Err(e) = caps.count_address(&mut s, key, ip) {
                drop(s);
                return Err(e); // `self` drops here and frees its place
            }
        }
        if let Some(old) = self.key.take() {
            uncount(&mut s, old);
        }
        self.key = key;
        drop(s);
        Ok(self)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self.caps.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(key) = self.key {
            uncount(&mut s, key);
        }
    }
}

fn uncount(s: &mut CapState, key: AddrKey) {
    if let Some(n) = s.by_address.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            s.by_address.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn caps_count_per_address_and_in_total_and_release_on_drop() {
        let caps = ConnectionCaps::new(Edge::WebSocket, 3, 2);
        let p1 = caps.acquire(ip("10.0.0.1")).expect("first");
        let _p2 = caps.acquire(ip("10.0.0.1")).expect("second");
        assert_eq!(
            caps.acquire(ip("10.0.0.1")).unwrap_err(),
            CapError::PerAddress(2)
        );
        let _p3 = caps.acquire(ip("10.0.0.2")).expect("another address");
        assert_eq!(
            caps.acquire(ip("10.0.0.2")).unwrap_err(),
            CapError::Total(3)
        );
        drop(p1);
        assert_eq!(caps.open(), 2);
        assert!(caps.acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let caps = ConnectionCaps::new(Edge::Https, 10, 1);
        let _p = caps.acquire(ip("10.0.0.1")).expect("first");
        assert_eq!(
            caps.acquire(ip("::ffff:10.0.0.1")).unwrap_err(),
            CapError::PerAddress(1)
        );
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_count_and_other_64s_do_not() {
        let caps = ConnectionCaps::new(Edge::TurnStream, 10, 2);
        let _a = caps.acquire(ip("2001:db8:1:2::a")).expect("first");
        let _b = caps
            .acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .expect("second");
        assert_eq!(
            caps.acquire(ip("2001:db8:1:2::c")).unwrap_err(),
            CapError::PerAddress(2)
        );
        assert!(caps.acquire(ip("2001:db8:1:3::a")).is_ok());
        assert!(caps.acquire(ip("2001:db8:1:1::a")).is_ok());
    }

    #[test]
    fn a_refused_address_leaves_no_entry_behind() {
        let caps = ConnectionCaps::new(Edge::Https, 1, 1);
        let _p = caps.acquire(ip("10.0.0.1")).expect("first");
        for i in 0..100u8 {
            assert!(caps.acquire(ip(&format!("10.0.1.{i}"))).is_err());
        }
        assert_eq!(caps.lock().by_address.len(), 1);
    }

    #[test]
    fn trusted_proxies_count_in_the_total_only_and_rekey_moves_to_the_client() {
        let proxies = TrustedProxies::new(&["127.0.0.1".parse().expect("cidr")]);
        let caps = ConnectionCaps::exempting(Edge::Https, 10, 1, proxies);
        let p1 = caps.acquire(ip("127.0.0.1")).expect("the proxy");
        let p2 = caps
            .acquire(ip("127.0.0.1"))
            .expect("exempt from the per-address cap");
        assert_eq!(caps.open(), 2);
        let c1 = p1.rekey(ip("203.0.113.7")).expect("the client's first");
        assert_eq!(
            p2.rekey(ip("203.0.113.7")).unwrap_err(),
            CapError::PerAddress(1)
        );
        assert_eq!(caps.open(), 1, "the refused one gave its place back");
        drop(c1);
        assert_eq!(caps.open(), 0);
        assert!(caps.lock().by_address.is_empty());
    }

    #[test]
    fn the_address_key_is_the_ipv4_address_or_the_ipv6_64() {
        let key = |s: &str| AddrKey::of(ip(s));
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), key("::2"), "::/64 is one network too");
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
        assert_eq!(key("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:192.0.2.1").to_string(), "192.0.2.1");
    }
}
