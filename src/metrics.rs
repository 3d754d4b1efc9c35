//! Every instrument the server exposes, defined once, rendered in the Prometheus text format.
//!
//! Counters sit on the relay's per-packet path, so an increment must not contend: each counter
//! is split into cache-line-padded shards and a thread adds to its own shard (threads are given
//! shards round-robin), so two relay workers never write the same line. Reading sums the shards.
//! Labels only ever take values from fixed lists (`&'static str` arrays indexed by an enum), so
//! no label's set of values can grow with usernames, rooms or addresses.

use signalbox_turn_proto::counters::{Counters, Label, Tally};
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
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

/// Transports, in the order of the `transport` label values (`TransportLabel::ALL` of the TURN core).
pub const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
/// Relay directions, in the order of the core's `RelayPath::ALL`.
pub const RELAY_DIRECTIONS: [&str; 3] = ["client_to_peer", "peer_to_client", "in_memory"];
/// Index into `rate_limited`.
pub const LIMITED_TURN: usize = 0;
pub const LIMITED_SIGNALING: usize = 1;
pub const LIMITED_API: usize = 2;
pub const LIMITED_SOCKETIO: usize = 3;
/// Label values of `calls`: what became of a direct call. `accepted` counts calls when they are
/// accepted; `ended` counts the same calls again when they end.
pub const CALL_OUTCOMES: [&str; 6] = [
    "accepted",
    "declined",
    "busy",
    "cancelled",
    "missed",
    "ended",
];
/// Indexes into `tls_handshakes`.
pub const TLS_OK: usize = 0;
pub const TLS_FAILED: usize = 1;
pub const TLS_TIMED_OUT: usize = 2;
/// Indexes into `proxy_headers`.
pub const PROXY_ACCEPTED: usize = 0;
pub const PROXY_UNTRUSTED: usize = 1;
pub const PROXY_INVALID: usize = 2;
pub const PROXY_TIMED_OUT: usize = 3;

/// Label values of `auth_failures`, in the order of the core's `AuthFailure::ALL`.
const AUTH_FAILURES: [&str; 6] = [
    "missing",
    "bad_credentials",
    "expired",
    "stale_nonce",
    "bad_request",
    "departed_peer",
];
/// Label values of `peer_refusals`, in the order of the core's `PeerRefusal::ALL`.
const PEER_REFUSALS: [&str; 4] = [
    "special_range",
    "denied_peer_ranges",
    "own_listener",
    "family_mismatch",
];
/// Label values of `quota_refusals`, in the order of the core's `QuotaScope::ALL`.
const QUOTA_SCOPES: [&str; 3] = ["user", "total", "address"];

/// Adds what a TURN core counted since `published` to the process-wide instruments, and
/// remembers it as published. Each worker calls it after a pass with its own core's counters,
/// so the core's counting stays plain field updates on its own thread.
pub fn publish_turn(m: &Metrics, published: &mut Counters, now: &Counters) {
    if published == now {
        return;
    }
    m.stun_bindings
        .add(now.stun_bindings.wrapping_sub(published.stun_bindings));
    m.rate_limited
        .at(LIMITED_TURN)
        .add(now.rate_limited.wrapping_sub(published.rate_limited));
    add_tally(
        &m.relayed_packets,
        now.relayed_packets - published.relayed_packets,
    );
    add_tally(
        &m.relayed_bytes,
        now.relayed_bytes - published.relayed_bytes,
    );
    add_tally(
        &m.auth_failures,
        now.auth_failures - published.auth_failures,
    );
    add_tally(
        &m.peer_refusals,
        now.peer_refusals - published.peer_refusals,
    );
    add_tally(
        &m.quota_refusals,
        now.quota_refusals - published.quota_refusals,
    );
    add_tally(
        &m.allocations_created,
        now.allocations_created - published.allocations_created,
    );
    add_tally(
        &m.allocations_expired,
        now.allocations_expired - published.allocations_expired,
    );
    for (label, live) in now.allocations_active.iter() {
        let before = published.allocations_active.get(label);
        m.allocations_active
            .at(label.index())
            .add(live as i64 - before as i64);
    }
    m.permissions_active
        .add(now.permissions_active as i64 - published.permissions_active as i64);
    m.channels_active
        .add(now.channels_active as i64 - published.channels_active as i64);
    *published = *now;
}

fn add_tally<L: Label, const N: usize>(family: &CounterVec<N>, growth: Tally<L>) {
    for (label, n) in growth.iter() {
        if n > 0 {
            family.at(label.index()).add(n);
        }
    }
}

/// All of signalbox's instruments.
pub struct Metrics {
    // Signaling.
    pub rooms_active: Gauge,
    pub peers_active: Gauge,
    pub ws_connections_active: Gauge,
    pub joins: Counter,
    pub signaling_errors: CounterVec<18>,
    /// Direct calls by how they ended (the order of [`CALL_OUTCOMES`]).
    pub calls: CounterVec<6>,
    /// People in spaces (including those within the reconnect grace).
    pub people_active: Gauge,
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
    pub auth_failures: CounterVec<6>,
    pub peer_refusals: CounterVec<4>,
    pub quota_refusals: CounterVec<3>,
    // Edges.
    pub rate_limited: CounterVec<4>,
    pub tls_handshakes: CounterVec<3>,
    pub http_requests: Counter,
    /// Connections refused by a connection cap (`crate::caps`), by listener and cap.
    pub connections_refused: CounterVec<6>,
    /// PROXY protocol headers (`crate::proxy`), by result.
    pub proxy_headers: CounterVec<4>,
    // Cluster (`crate::cluster`): rendered only when `[cluster] redis_url` is set. Written by
    // the one heartbeat task, so plain atomics rather than shards.
    pub cluster_enabled: AtomicBool,
    pub cluster_nodes_alive: AtomicI64,
    pub cluster_redis_up: AtomicI64,
    /// Round trip of the last heartbeat, in microseconds.
    pub cluster_redis_latency_us: AtomicI64,
    pub cluster_heartbeat_failures: Counter,
    /// Messages between nodes, by direction (`sent`, `received`).
    pub cluster_notes: CounterVec<2>,
    /// Messages between nodes dropped: queue full, Redis down, unreadable, or no room.
    pub cluster_notes_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide instruments.
pub static METRICS: Metrics = Metrics::new();

impl Metrics {
    /// Every instrument at zero.
    pub const fn new() -> Metrics {
        Metrics {
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
                    "not-host",
                    "declined",
                    "lobby-timeout",
                    "removed",
                    "unknown-person",
                    "not-ringing",
                    "unavailable",
                    "other",
                ],
            ),
            calls: CounterVec::new("outcome", CALL_OUTCOMES),
            people_active: Gauge::new(),
            ws_messages: CounterVec::new("direction", ["in", "out"]),
            allocations_active: GaugeVec::new("transport", TRANSPORTS),
            allocations_created: CounterVec::new("transport", TRANSPORTS),
            allocations_expired: CounterVec::new("transport", TRANSPORTS),
            permissions_active: Gauge::new(),
            channels_active: Gauge::new(),
            relayed_packets: CounterVec::new("direction", RELAY_DIRECTIONS),
            relayed_bytes: CounterVec::new("direction", RELAY_DIRECTIONS),
            stun_bindings: Counter::new(),
            auth_failures: CounterVec::new("reason", AUTH_FAILURES),
            peer_refusals: CounterVec::new("reason", PEER_REFUSALS),
            quota_refusals: CounterVec::new("scope", QUOTA_SCOPES),
            rate_limited: CounterVec::new("what", ["turn", "signaling", "api", "socketio"]),
            tls_handshakes: CounterVec::new("result", ["ok", "failed", "timed_out"]),
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
            http_requests: Counter::new(),
            proxy_headers: CounterVec::new(
                "result",
                ["accepted", "untrusted", "invalid", "timed_out"],
            ),
            cluster_enabled: AtomicBool::new(false),
            cluster_nodes_alive: AtomicI64::new(0),
            cluster_redis_up: AtomicI64::new(0),
            cluster_redis_latency_us: AtomicI64::new(0),
            cluster_heartbeat_failures: Counter::new(),
            cluster_notes: CounterVec::new("direction", ["sent", "received"]),
            cluster_notes_dropped: Counter::new(),
        }
    }
}

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
        e.gauge(
            "signalbox_space_people_active",
            "People in spaces (including those within the reconnect grace).",
            self.people_active.get(),
        );
        e.counter_vec(
            "signalbox_calls_total",
            "Direct calls, by outcome (accepted calls count again as ended when they end).",
            &self.calls,
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
        e.counter_vec(
            "signalbox_proxy_headers_total",
            "PROXY protocol headers on the HTTPS and TURN stream listeners, by result.",
            &self.proxy_headers,
        );
        if self.cluster_enabled.load(Relaxed) {
            self.render_cluster(&mut e);
        }
        process(&mut e);
        e.0
    }

    fn render_cluster(&self, e: &mut Exposition) {
        e.gauge(
            "signalbox_cluster_nodes_alive",
            "Nodes in the cluster registry at the last heartbeat, this one included.",
            self.cluster_nodes_alive.load(Relaxed),
        );
        e.gauge(
            "signalbox_cluster_redis_up",
            "Whether the last heartbeat reached Redis (1) or not (0).",
            self.cluster_redis_up.load(Relaxed),
        );
        e.head(
            "signalbox_cluster_redis_latency_seconds",
            "gauge",
            "Round trip of the last heartbeat to Redis.",
        );
        let us = self.cluster_redis_latency_us.load(Relaxed);
        let _ = writeln!(
            e.0,
            "signalbox_cluster_redis_latency_seconds {:.6}",
            us as f64 / 1e6
        );
        e.counter(
            "signalbox_cluster_heartbeat_failures_total",
            "Heartbeats that did not reach Redis or got no answer in time.",
            &self.cluster_heartbeat_failures,
        );
        e.counter_vec(
            "signalbox_cluster_messages_total",
            "Messages between nodes through Redis, by direction.",
            &self.cluster_notes,
        );
        e.counter(
            "signalbox_cluster_messages_dropped_total",
            "Messages between nodes dropped (queue full, Redis unreachable, unreadable, no room).",
            &self.cluster_notes_dropped,
        );
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
    use signalbox_turn_proto::counters::{
        AuthFailure, PeerRefusal, QuotaScope, RelayPath, TransportLabel,
    };

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
        METRICS
            .relayed_packets
            .at(RelayPath::InMemory.index())
            .add(3);
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

    fn names<L: Label>() -> Vec<&'static str> {
        L::ALL.iter().map(|l| l.name()).collect()
    }

    #[test]
    fn turn_label_values_are_the_core_label_names_in_order() {
        assert_eq!(names::<TransportLabel>(), TRANSPORTS);
        assert_eq!(names::<RelayPath>(), RELAY_DIRECTIONS);
        assert_eq!(names::<AuthFailure>(), AUTH_FAILURES);
        assert_eq!(names::<PeerRefusal>(), PEER_REFUSALS);
        assert_eq!(names::<QuotaScope>(), QUOTA_SCOPES);
    }

    #[test]
    fn published_core_counts_move_the_instruments_by_their_growth_only() {
        let m = Metrics::new();
        let mut published = Counters::default();
        let mut now = Counters::default();
        now.relayed_packets.add(RelayPath::ClientToPeer, 7);
        now.auth_failures.inc(AuthFailure::StaleNonce);
        now.allocations_active.inc(TransportLabel::Tcp);
        now.permissions_active = 3;
        publish_turn(&m, &mut published, &now);
        publish_turn(&m, &mut published, &now);
        assert_eq!(m.relayed_packets.at(0).get(), 7);
        assert_eq!(m.auth_failures.at(3).get(), 1);
        assert_eq!(m.allocations_active.at(1).get(), 1);
        assert_eq!(m.permissions_active.get(), 3);

        now.allocations_active.dec(TransportLabel::Tcp);
        now.permissions_active = 1;
        now.relayed_packets.inc(RelayPath::ClientToPeer);
        publish_turn(&m, &mut published, &now);
        assert_eq!(m.relayed_packets.at(0).get(), 8);
        assert_eq!(m.allocations_active.at(1).get(), 0);
        assert_eq!(m.permissions_active.get(), 1);
        assert_eq!(published, now);
    }

    #[test]
    fn label_values_are_looked_up_by_name_only_from_the_fixed_list() {
        assert!(METRICS.signaling_errors.by_name("room-full").is_some());
        assert!(METRICS.signaling_errors.by_name("some-room-name").is_none());
    }
}
