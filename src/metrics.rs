//! Every instrument the server exposes, defined once, rendered in the Prometheus text format.
//!
//! Counters sit on the relay's per-packet path, so an increment must not contend: each counter
//! is split into cache-line-padded shards and a thread adds to its own shard (threads are given
//! shards round-robin), so two relay workers never write the same line. Reading sums the shards.
//! Labels only ever take values from fixed lists (`&'static str` arrays indexed by an enum), so
//! no label's set of values can grow with usernames, rooms or addresses.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

const SHARDS: usize = 8;

#[repr(align(64))]
struct Padded<T>(T);

/// A monotonically increasing count, cheap to bump from any thread.
pub struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

/// A value that goes up and down (active rooms, allocations, connections).
pub struct Gauge {
    shards: [Padded<AtomicI64>; SHARDS],
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = Cell::new(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
}

fn shard() -> usize {
    SHARD.with(Cell::get)
}

impl Counter {
    pub const fn new() -> Self {
        Self {
            shards: [const { Padded(AtomicU64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Gauge {
    pub const fn new() -> Self {
        Self {
            shards: [const { Padded(AtomicI64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.shards[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// A family of counters with one label whose values are fixed at compile time.
pub struct CounterVec<const N: usize> {
    label: &'static str,
    values: [&'static str; N],
    counters: [Counter; N],
}

impl<const N: usize> CounterVec<N> {
    pub const fn new(label: &'static str, values: [&'static str; N]) -> Self {
        Self {
            label,
            values,
            counters: [const { Counter::new() }; N],
        }
    }

    /// The counter for label value number `i` (use the matching enum's discriminant).
    #[inline]
    pub fn at(&self, i: usize) -> &Counter {
        &self.counters[i.min(N - 1)]
    }

    /// The counter for a label value given by name; `None` for a value not in the list.
    pub fn by_name(&self, value: &str) -> Option<&Counter> {
        self.values
            .iter()
            .position(|v| *v == value)
            .map(|i| &self.counters[i])
    }
}

/// A family of gauges with one label whose values are fixed at compile time.
pub struct GaugeVec<const N: usize> {
    label: &'static str,
    values: [&'static str; N],
    gauges: [Gauge; N],
}

impl<const N: usize> GaugeVec<N> {
    pub const fn new(label: &'static str, values: [&'static str; N]) -> Self {
        Self {
            label,
            values,
            gauges: [const { Gauge::new() }; N],
        }
    }

    #[inline]
    pub fn at(&self, i: usize) -> &Gauge {
        &self.gauges[i.min(N - 1)]
    }
}

/// Transports, in the order of the `transport` label values.
pub const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
/// Relay directions, in the order of the `direction` label values.
pub const RELAY_DIRECTIONS: [&str; 3] = ["client_to_peer", "peer_to_client", "in_memory"];
/// Index into [`RELAY_DIRECTIONS`].
pub const CLIENT_TO_PEER: usize = 0;
pub const PEER_TO_CLIENT: usize = 1;
pub const IN_MEMORY: usize = 2;
/// Indexes into `auth_failures`.
pub const AUTH_MISSING: usize = 0;
pub const AUTH_BAD_CREDENTIALS: usize = 1;
pub const AUTH_EXPIRED: usize = 2;
pub const AUTH_STALE_NONCE: usize = 3;
pub const AUTH_BAD_REQUEST: usize = 4;
/// Index into `rate_limited`.
pub const LIMITED_TURN: usize = 0;
pub const LIMITED_SIGNALING: usize = 1;
pub const LIMITED_API: usize = 2;
/// Indexes into `tls_handshakes`.
pub const TLS_OK: usize = 0;
pub const TLS_FAILED: usize = 1;
pub const TLS_TIMED_OUT: usize = 2;

/// All of signalbox's instruments.
pub struct Metrics {
    // Signaling.
    pub rooms_active: Gauge,
    pub peers_active: Gauge,
    pub ws_connections_active: Gauge,
    pub joins: Counter,
    pub signaling_errors: CounterVec<11>,
    pub ws_messages: CounterVec<2>,
    // TURN.
    pub allocations_active: GaugeVec<3>,
    pub allocations_created: CounterVec<3>,
    pub allocations_expired: CounterVec<3>,
    pub permissions_active: Gauge,
    pub channels_active: Gauge,
    pub relayed_packets: CounterVec<3>,
    pub relayed_bytes: CounterVec<3>,
    pub stun_bindings: Counter,
    pub auth_failures: CounterVec<5>,
    pub peer_refusals: CounterVec<4>,
    pub quota_refusals: CounterVec<2>,
    // Edges.
    pub rate_limited: CounterVec<3>,
    pub tls_handshakes: CounterVec<3>,
    pub http_requests: Counter,
    /// Connections refused by a connection cap (`crate::caps`), by listener and cap.
    pub connections_refused: CounterVec<6>,
}

/// The process-wide instruments.
pub static METRICS: Metrics = Metrics {
    rooms_active: Gauge::new(),
    peers_active: Gauge::new(),
    ws_connections_active: Gauge::new(),
    joins: Counter::new(),
    signaling_errors: CounterVec::new(
        "code",
        [
            "bad-request",
            "room-full",
            "not-joined",
            "already-joined",
            "unknown-peer",
            "rate-limited",
            "too-large",
            "forbidden",
            "origin",
            "shutting-down",
            "other",
        ],
    ),
    ws_messages: CounterVec::new("direction", ["in", "out"]),
    allocations_active: GaugeVec::new("transport", TRANSPORTS),
    allocations_created: CounterVec::new("transport", TRANSPORTS),
    allocations_expired: CounterVec::new("transport", TRANSPORTS),
    permissions_active: Gauge::new(),
    channels_active: Gauge::new(),
    relayed_packets: CounterVec::new("direction", RELAY_DIRECTIONS),
    relayed_bytes: CounterVec::new("direction", RELAY_DIRECTIONS),
    stun_bindings: Counter::new(),
    auth_failures: CounterVec::new(
        "reason",
        [
            "missing",
            "bad_credentials",
            "expired",
            "stale_nonce",
            "bad_request",
        ],
    ),
    peer_refusals: CounterVec::new(
        "reason",
        [
            "special_range",
            "denied_peer_ranges",
            "own_listener",
            "family_mismatch",
        ],
    ),
    quota_refusals: CounterVec::new("scope", ["user", "total"]),
    rate_limited: CounterVec::new("what", ["turn", "signaling", "api"]),
    tls_handshakes: CounterVec::new("result", ["ok", "failed", "timed_out"]),
    http_requests: Counter::new(),
    connections_refused: CounterVec::new(
        "cap",
        [
            "https_total",
            "https_per_address",
            "websocket_total",
            "websocket_per_address",
            "turn_stream_total",
            "turn_stream_per_address",
        ],
    ),
};

/// Builds the exposition text.
struct Exposition(String);

impl Exposition {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn counter(&mut self, name: &str, help: &str, c: &Counter) {
        self.head(name, "counter", help);
        let _ = writeln!(self.0, "{name} {}", c.get());
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.head(name, "gauge", help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn counter_vec<const N: usize>(&mut self, name: &str, help: &str, v: &CounterVec<N>) {
        self.head(name, "counter", help);
        for (value, c) in v.values.iter().zip(&v.counters) {
            let _ = writeln!(self.0, "{name}{{{}=\"{value}\"}} {}", v.label, c.get());
        }
    }

    fn gauge_vec<const N: usize>(&mut self, name: &str, help: &str, v: &GaugeVec<N>) {
        self.head(name, "gauge", help);
        for (value, g) in v.values.iter().zip(&v.gauges) {
            let _ = writeln!(self.0, "{name}{{{}=\"{value}\"}} {}", v.label, g.get());
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4) of every instrument and the process.
    pub fn render(&self) -> String {
        let mut e = Exposition(String::with_capacity(8192));
        e.head(
            "signalbox_build_info",
            "gauge",
            "Version of the running server.",
        );
        let _ = writeln!(
            e.0,
            "signalbox_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        e.gauge(
            "signalbox_rooms_active",
            "Rooms with at least one peer.",
            self.rooms_active.get(),
        );
        e.gauge(
            "signalbox_peers_active",
            "Peers joined to a room (including those within the reconnect grace).",
            self.peers_active.get(),
        );
        e.gauge(
            "signalbox_ws_connections_active",
            "Open WebSocket connections.",
            self.ws_connections_active.get(),
        );
        e.counter(
            "signalbox_joins_total",
            "Successful room joins.",
            &self.joins,
        );
        e.counter_vec(
            "signalbox_signaling_errors_total",
            "Signaling error messages sent, by code.",
            &self.signaling_errors,
        );
        e.counter_vec(
            "signalbox_ws_messages_total",
            "WebSocket messages, by direction.",
            &self.ws_messages,
        );
        e.gauge_vec(
            "signalbox_turn_allocations_active",
            "Live TURN allocations, by client transport.",
            &self.allocations_active,
        );
        e.counter_vec(
            "signalbox_turn_allocations_created_total",
            "TURN allocations created, by client transport.",
            &self.allocations_created,
        );
        e.counter_vec(
            "signalbox_turn_allocations_expired_total",
            "TURN allocations that expired without being deleted, by client transport.",
            &self.allocations_expired,
        );
        e.gauge(
            "signalbox_turn_permissions_active",
            "Live TURN permissions.",
            self.permissions_active.get(),
        );
        e.gauge(
            "signalbox_turn_channels_active",
            "Live TURN channel bindings.",
            self.channels_active.get(),
        );
        e.counter_vec(
            "signalbox_turn_relayed_packets_total",
            "Packets relayed, by direction (in_memory: between two allocations of this server).",
            &self.relayed_packets,
        );
        e.counter_vec(
            "signalbox_turn_relayed_bytes_total",
            "Payload bytes relayed, by direction.",
            &self.relayed_bytes,
        );
        e.counter(
            "signalbox_stun_binding_requests_total",
            "STUN Binding requests answered.",
            &self.stun_bindings,
        );
        e.counter_vec(
            "signalbox_turn_auth_failures_total",
            "TURN requests refused for authentication, by reason.",
            &self.auth_failures,
        );
        e.counter_vec(
            "signalbox_turn_peer_refusals_total",
            "TURN peer addresses refused (403), by reason.",
            &self.peer_refusals,
        );
        e.counter_vec(
            "signalbox_turn_quota_refusals_total",
            "TURN allocations refused for quota (486), by scope.",
            &self.quota_refusals,
        );
        e.counter_vec(
            "signalbox_rate_limited_total",
            "Requests refused by a rate limit, by what was limited.",
            &self.rate_limited,
        );
        e.counter_vec(
            "signalbox_tls_handshakes_total",
            "TLS handshakes, by result.",
            &self.tls_handshakes,
        );
        e.counter(
            "signalbox_http_requests_total",
            "HTTP requests served.",
            &self.http_requests,
        );
        e.counter_vec(
            "signalbox_connections_refused_total",
            "Connections refused at once by a connection cap, by listener and cap.",
            &self.connections_refused,
        );
        process(&mut e);
        e.0
    }
}

/// Standard process metrics from /proc (Linux).
fn process(e: &mut Exposition) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            e.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss * 1024,
            );
        }
        if let Some(vsz) = kb("VmSize:") {
            e.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                vsz * 1024,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.gauge(
            "process_open_fds",
            "Open file descriptors.",
            fds.count() as i64,
        );
    }
    if let Some(limit) = max_fds() {
        e.gauge("process_max_fds", "Limit on open file descriptors.", limit);
    }
    if let Some(cpu) = cpu_seconds() {
        e.head(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
        );
        let _ = writeln!(e.0, "process_cpu_seconds_total {cpu:.3}");
    }
    if let Some(start) = START_TIME.get() {
        e.gauge(
            "process_start_time_seconds",
            "Start time since the Unix epoch in seconds.",
            *start,
        );
    }
}

static START_TIME: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Records the process start time (call once at start).
pub fn mark_start() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let _ = START_TIME.set(now);
}

fn max_fds() -> Option<i64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur as i64)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_their_shards_across_threads() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(c.get(), 40_000);
    }

    #[test]
    fn gauges_go_up_and_down() {
        let g = Gauge::new();
        g.inc();
        g.inc();
        g.dec();
        g.add(5);
        assert_eq!(g.get(), 6);
    }

    #[test]
    fn every_family_is_typed_once_and_every_sample_parses() {
        METRICS.relayed_packets.at(IN_MEMORY).add(3);
        let text = METRICS.render();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().expect("name");
                assert!(typed.insert(name.to_owned()), "{name} typed twice");
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample");
                value.parse::<f64>().expect("numeric value");
                let family = series.split('{').next().expect("family");
                assert!(
                    typed.contains(family),
                    "{family} has no TYPE line before it"
                );
            }
        }
        assert!(text.contains("signalbox_turn_relayed_packets_total{direction=\"in_memory\"}"));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn label_values_are_looked_up_by_name_only_from_the_fixed_list() {
        assert!(METRICS.signaling_errors.by_name("room-full").is_some());
        assert!(METRICS.signaling_errors.by_name("some-room-name").is_none());
    }
}
