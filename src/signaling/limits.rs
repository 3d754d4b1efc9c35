//! Abuse limits that sit in front of the registry: the `Origin` check, the connection caps and
//! the per-connection rate limit. The first and last are pure; the caps are the ones every
//! public listener shares ([`crate::caps`]), counted per client address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

pub use crate::caps::{CapError, ConnPermit, ConnectionCaps};

/// Which `Origin` header values may open a WebSocket (cross-site WebSocket hijacking guard).
///
/// Accepted, compared without regard to case:
/// - `https://PUBLIC_HOST:PORT` where PORT is the port the HTTPS listener is bound to, and
///   `https://PUBLIC_HOST` (port 443, for a server reached through a port forward or proxy);
/// - when `public_host` is an IP address or `localhost`, also the loopback forms
///   `https://localhost:PORT`, `https://127.0.0.1:PORT`, `https://[::1]:PORT`, and the
///   listener's own IP when it is bound to a specific address.
///
/// Further origins can be added with [`OriginPolicy::with_others`] (`[http] allowed_origins`).
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

    /// This policy, accepting `others` too (each `SCHEME://HOST[:PORT]`, validated with the
    /// configuration).
    pub fn with_others(mut self, others: &[String]) -> OriginPolicy {
        self.allowed
            .extend(others.iter().map(|o| o.trim().to_ascii_lowercase()));
        self.allowed.sort();
        self.allowed.dedup();
        self
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
    fn configured_origins_are_accepted_besides_the_servers_own() {
        let others = ["https://App.example.com".to_owned()];
        let p = OriginPolicy::new("call.example.org", addr("0.0.0.0:8443")).with_others(&others);
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("https://call.example.org:8443")));
        assert!(!p.allows(Some("https://app.example.com:8443")));
        assert!(!p.allows(Some("http://app.example.com")));
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
}
