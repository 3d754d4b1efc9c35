//! Abuse limits that sit in front of the registry: the `Origin` check, the connection caps and
//! the per-connection rate limit. The first and last are pure; the caps are one small mutex
//! taken only when a connection opens or closes, never per message.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which `Origin` header values may open a WebSocket (cross-site WebSocket hijacking guard).
///
/// Accepted, compared without regard to case:
/// - `https://PUBLIC_HOST:PORT` where PORT is the port the HTTPS listener is bound to, and
///   `https://PUBLIC_HOST` (port 443, for a server reached through a port forward or proxy);
/// - when `public_host` is an IP address or `localhost`, also the loopback forms
///   `https://localhost:PORT`, `https://127.0.0.1:PORT`, `https://[::1]:PORT`, and the
///   listener's own IP when it is bound to a specific address.
///
/// A request without `Origin` is accepted: browsers always send one on WebSocket requests, so
/// its absence means a native client, which cross-site hijacking cannot involve.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(public_host: &str, listener: SocketAddr) -> OriginPolicy {
        let port = listener.port();
        let host = public_host.trim().to_ascii_lowercase();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut hosts = vec![host.clone()];
        let is_ip = host.parse::<IpAddr>().is_ok();
        if is_ip || host == "localhost" {
            hosts.push("localhost".into());
            hosts.push(Ipv4Addr::LOCALHOST.to_string());
            hosts.push(Ipv6Addr::LOCALHOST.to_string());
            if !listener.ip().is_unspecified() {
                hosts.push(listener.ip().to_string());
            }
        }
        let mut allowed = Vec::new();
        for h in hosts {
            let h = if h.contains(':') { format!("[{h}]") } else { h };
            allowed.push(format!("https://{h}:{port}"));
            if h == public_host_form(&host) {
                allowed.push(format!("https://{h}"));
            }
        }
        allowed.sort();
        allowed.dedup();
        OriginPolicy { allowed }
    }

    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self
                .allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o.trim())),
        }
    }

    /// The accepted origins, for the log line at start.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }
}

fn public_host_form(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Token bucket: `rate` messages per second on average, up to `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("too many connections (limit {0})")]
    Total(usize),
    #[error("too many connections from your address (limit {0})")]
    PerIp(usize),
}

/// Counts open WebSocket connections, in total and per client IP.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<CapState>,
}

#[derive(Debug, Default)]
struct CapState {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            max_total,
            max_per_ip,
            state: Mutex::new(CapState::default()),
        })
    }

    /// Counts a connection from `ip`; the returned permit uncounts it when dropped.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, CapError> {
        let ip = ip.to_canonical();
        let mut s = self.lock();
        if s.total >= self.max_total {
            return Err(CapError::Total(self.max_total));
        }
        let n = s.by_ip.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return Err(CapError::PerIp(self.max_per_ip));
        }
        *n += 1;
        s.total += 1;
        Ok(ConnPermit {
            caps: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        // The counters stay consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct ConnPermit {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut s = self.caps.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.by_ip.remove(&self.ip);
            }
        }
    }
}

/// The earliest of some optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// A deadline so far away that it never fires while the process runs.
pub fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_public_host_with_the_https_port_or_443_is_accepted() {
        let p = OriginPolicy::new("call.example.org", addr("0.0.0.0:8443"));
        assert!(p.allows(Some("https://call.example.org:8443")));
        assert!(p.allows(Some("https://CALL.example.org:8443")));
        assert!(p.allows(Some("https://call.example.org")));
        assert!(!p.allows(Some("http://call.example.org:8443")));
        assert!(!p.allows(Some("https://call.example.org:9999")));
        assert!(!p.allows(Some("https://evil.example.com")));
        assert!(!p.allows(Some("https://call.example.org.evil.com:8443")));
        assert!(!p.allows(Some("null")));
        assert!(
            !p.allows(Some("https://localhost:8443")),
            "loopback only for IP hosts"
        );
    }

    #[test]
    fn an_ip_public_host_also_accepts_the_loopback_forms() {
        let p = OriginPolicy::new("192.168.1.5", addr("0.0.0.0:8443"));
        for o in [
            "https://192.168.1.5:8443",
            "https://localhost:8443",
            "https://127.0.0.1:8443",
            "https://[::1]:8443",
        ] {
            assert!(p.allows(Some(o)), "{o}");
        }
        assert!(!p.allows(Some("https://10.0.0.1:8443")));
    }

    #[test]
    fn an_ipv6_public_host_is_bracketed() {
        let p = OriginPolicy::new("2001:db8::1", addr("[::]:443"));
        assert!(p.allows(Some("https://[2001:db8::1]:443")));
        assert!(p.allows(Some("https://[2001:db8::1]")));
    }

    #[test]
    fn a_missing_origin_means_a_native_client_and_is_accepted() {
        let p = OriginPolicy::new("example.org", addr("0.0.0.0:8443"));
        assert!(p.allows(None));
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 3, t0);
        assert!((0..3).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        assert!(!r.allow(t0 + Duration::from_millis(50)));
        assert!(r.allow(t0 + Duration::from_millis(100)));
        assert!(!r.allow(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| r.allow(later)).count(), 3);
    }

    #[test]
    fn caps_count_per_ip_and_in_total_and_release_on_drop() {
        let caps = ConnectionCaps::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = caps.acquire(a).unwrap();
        let _p2 = caps.acquire(a).unwrap();
        assert_eq!(caps.acquire(a).unwrap_err(), CapError::PerIp(2));
        let _p3 = caps.acquire(b).unwrap();
        assert_eq!(caps.acquire(b).unwrap_err(), CapError::Total(3));
        drop(p1);
        assert_eq!(caps.open(), 2);
        assert!(caps.acquire(a).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let caps = ConnectionCaps::new(10, 1);
        let _p = caps.acquire("10.0.0.1".parse().unwrap()).unwrap();
        assert!(caps.acquire("::ffff:10.0.0.1".parse().unwrap()).is_err());
    }
}
