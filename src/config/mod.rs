//! Typed configuration, read from TOML and validated before anything listens.
//!
//! Every problem is reported as one [`ConfigError`] that names the file, the key and what is
//! wrong, so `main` can print a single line and exit with code 2. Relative paths in a config
//! file are taken relative to that file's directory, so `--config /etc/signalbox/config.toml`
//! works from any working directory; the built-in defaults are relative to the working
//! directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod acme;
mod api;
mod calls;
mod cluster;
mod compat;
mod turn;

pub use acme::{eab_key, AcmeChallenge};
pub use calls::CallsConfig;
pub use cluster::{is_valid_node_name, redact, ClusterConfig};
pub use compat::CompatConfig;
use signalbox_turn_proto::policy::Cidr;

/// The whole configuration. `Default` is the documented default (`config.toml` at the root).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub admin: AdminConfig,
    pub api: ApiConfig,
    pub access: AccessConfig,
    pub rooms: RoomsConfig,
    pub calls: CallsConfig,
    pub turn: TurnConfig,
    pub compat: CompatConfig,
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name or IP address browsers use to reach this server.
    pub public_host: String,
    /// Where the running server writes its process id, for `signalbox reload`; `None` = nowhere.
    #[serde(deserialize_with = "optional_path")]
    pub pid_file: Option<PathBuf>,
    /// After SIGTERM/SIGINT: how long calls keep relaying (no new joins or allocations) before
    /// the server closes everything; it stops sooner once no client is left.
    #[serde(deserialize_with = "duration")]
    pub drain_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            public_host: "localhost".into(),
            pid_file: Some(PathBuf::from("signalbox.pid")),
            drain_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Plain-HTTP listener that only redirects to HTTPS; `None` = off.
    #[serde(deserialize_with = "optional_addr")]
    pub redirect_listen: Option<SocketAddr>,
    pub static_dir: PathBuf,
    /// How long open connections may take to finish after SIGINT/SIGTERM.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Open connections on the HTTPS port in total, counted before the TLS handshake.
    pub max_connections: usize,
    /// Open connections on the HTTPS port from one client address (IPv4, or IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Time from accept to a finished TLS handshake (with the one-port protocol split).
    #[serde(deserialize_with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// Time for a whole HTTP/1 request header, from when the connection is ready for it.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// An HTTP/1 connection with no request in progress for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub keep_alive_timeout: Duration,
    /// How often an HTTP/2 connection is sent a PING.
    #[serde(deserialize_with = "duration")]
    pub http2_keep_alive_interval: Duration,
    /// An HTTP/2 peer that does not answer a PING within this is dropped.
    #[serde(deserialize_with = "duration")]
    pub http2_keep_alive_timeout: Duration,
    /// An HTTP/2 connection with no request in progress for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub http2_idle_timeout: Duration,
    /// Read a PROXY protocol header (v1 or v2) on the HTTPS listener from `trusted_proxies`.
    pub proxy_protocol: bool,
    /// The proxies and load balancers in front of every listener: they may send a PROXY header
    /// (where `proxy_protocol` is on) and `X-Forwarded-For` / `Forwarded`, and are exempt from
    /// the per-address connection caps.
    #[serde(deserialize_with = "turn::cidrs")]
    pub trusted_proxies: Vec<Cidr>,
    /// `Content-Security-Policy` of every response; empty = the built-in strict policy.
    pub content_security_policy: String,
    /// Origins besides the server's own whose pages may use `/ws` and load the client module
    /// under `/sdk/` (`https://app.example.org`).
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8443)),
            redirect_listen: None,
            static_dir: PathBuf::from("public"),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 25_000,
            max_connections_per_ip: 500,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            http2_keep_alive_interval: Duration::from_secs(20),
            http2_keep_alive_timeout: Duration::from_secs(10),
            http2_idle_timeout: Duration::from_secs(10),
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            content_security_policy: String::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 {
            return Err(("http.max_connections", "must be at least 1".into()));
        }
        if self.max_connections_per_ip == 0 {
            return Err(("http.max_connections_per_ip", "must be at least 1".into()));
        }
        let timeouts = [
            ("http.tls_handshake_timeout", self.tls_handshake_timeout),
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.keep_alive_timeout", self.keep_alive_timeout),
            (
                "http.http2_keep_alive_interval",
                self.http2_keep_alive_interval,
            ),
            (
                "http.http2_keep_alive_timeout",
                self.http2_keep_alive_timeout,
            ),
            ("http.http2_idle_timeout", self.http2_idle_timeout),
        ];
        for (key, value) in timeouts {
            if value < Duration::from_millis(100) {
                return Err((key, "must be at least 100ms".into()));
            }
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err((
                "http.proxy_protocol",
                "needs the proxies' addresses in http.trusted_proxies (a PROXY header from any \
                 other address is refused)"
                    .into(),
            ));
        }
        if axum::http::HeaderValue::from_str(&self.content_security_policy).is_err() {
            return Err((
                "http.content_security_policy",
                "must be printable ASCII on one line (it is sent as a header)".into(),
            ));
        }
        if let Some(origin) = self.allowed_origins.iter().find(|o| !compat::is_origin(o)) {
            return Err((
                "http.allowed_origins",
                format!(
                    "`{origin}` is not an origin: write `https://HOST` or `https://HOST:PORT` \
                     (`http://` too), with no path"
                ),
            ));
        }
        if self.keep_alive_timeout > self.header_read_timeout {
            return Err((
                "http.keep_alive_timeout",
                "must not be longer than http.header_read_timeout, which also runs while a \
                 kept-alive connection waits for its next request"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; `None` = generate a self-signed one into `generated_dir`.
    #[serde(deserialize_with = "optional_path")]
    pub cert: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path")]
    pub key: Option<PathBuf>,
    pub generated_dir: PathBuf,
    /// Obtain and renew the certificate from an ACME CA (RFC 8555).
    pub acme: bool,
    /// Names on the certificate; empty = `[server] public_host`.
    pub acme_domains: Vec<String>,
    /// Contact for the CA account; empty = none.
    pub acme_email: String,
    /// Directory URL; empty = Let's Encrypt production.
    pub acme_directory: String,
    pub acme_challenge: AcmeChallenge,
    /// PEM roots to trust for the directory's own HTTPS; `None` = the built-in public roots.
    #[serde(deserialize_with = "optional_path")]
    pub acme_ca_file: Option<PathBuf>,
    /// External account binding (RFC 8555 §7.3.4): key id and base64url HMAC key.
    pub acme_eab_kid: String,
    pub acme_eab_hmac_key: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            generated_dir: PathBuf::from("certs"),
            acme: false,
            acme_domains: Vec::new(),
            acme_email: String::new(),
            acme_directory: String::new(),
            acme_challenge: AcmeChallenge::TlsAlpn01,
            acme_ca_file: None,
            acme_eab_kid: String::new(),
            acme_eab_hmac_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `signalbox=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Plain-HTTP listener for `/metrics`; `None` = off.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` is also served on the HTTPS listener to `Authorization: Bearer TOKEN`.
    pub token: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9641))),
            token: String::new(),
        }
    }
}

pub use crate::access::{AccessConfig, AccessMode};
pub use api::{ApiConfig, ApiKeyConfig};
/// Room signaling over WebSocket (`/ws`): room size, resume grace and abuse limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Most peers in one room.
    pub max_peers: usize,
    /// How long a dropped peer keeps its id and place for a `resume`.
    #[serde(deserialize_with = "duration")]
    pub reconnect_grace: Duration,
    /// Largest text frame accepted; larger gets `too-large`, over twice this closes with 1009.
    pub max_message_bytes: usize,
    /// Messages per second one connection may send on average.
    pub rate_per_second: u32,
    /// Messages one connection may send at once above the average.
    pub rate_burst: u32,
    /// Open WebSocket connections in total.
    pub max_connections: usize,
    /// Open WebSocket connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Joins per minute from one client address (IPv4 address, IPv6 /64), and as many at once.
    pub join_rate_per_ip: u32,
    /// Messages waiting for one connection; a client that lets it fill is cut off.
    pub outbound_queue: usize,
    /// A connection that has not joined a room within this time is closed.
    #[serde(deserialize_with = "duration")]
    pub join_timeout: Duration,
    /// How often the server sends a WebSocket ping.
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// A connection silent this long after a ping is dropped.
    #[serde(deserialize_with = "duration")]
    pub ping_timeout: Duration,
    /// Most peers waiting in one room's lobby; more get `room-full`.
    pub max_waiting: usize,
    /// How long a peer waits in a lobby before it gets `lobby-timeout`.
    #[serde(deserialize_with = "duration")]
    pub lobby_timeout: Duration,
    /// Whether every new meeting room starts locked (joins wait for the host).
    pub lock_new_rooms: bool,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            max_peers: 4,
            reconnect_grace: Duration::from_secs(20),
            max_message_bytes: 65536,
            rate_per_second: 50,
            rate_burst: 200,
            max_connections: 20000,
            max_connections_per_ip: 64,
            join_rate_per_ip: 300,
            outbound_queue: 256,
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(10),
            max_waiting: 20,
            lobby_timeout: Duration::from_secs(120),
            lock_new_rooms: false,
        }
    }
}

impl RoomsConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let r = self;
        let checks: [(&'static str, bool, &str); 13] = [
            (
                "rooms.max_peers",
                (2..=64).contains(&r.max_peers),
                "must be 2 to 64",
            ),
            (
                "rooms.max_message_bytes",
                (1024..=16 << 20).contains(&r.max_message_bytes),
                "must be 1024 to 16777216",
            ),
            (
                "rooms.rate_per_second",
                r.rate_per_second >= 1,
                "must be at least 1",
            ),
            ("rooms.rate_burst", r.rate_burst >= 1, "must be at least 1"),
            (
                "rooms.max_connections",
                r.max_connections >= 1,
                "must be at least 1",
            ),
            (
                "rooms.max_connections_per_ip",
                r.max_connections_per_ip >= 1,
                "must be at least 1",
            ),
            (
                "rooms.join_rate_per_ip",
                r.join_rate_per_ip >= 1,
                "must be at least 1",
            ),
            (
                "rooms.outbound_queue",
                (4..=65536).contains(&r.outbound_queue),
                "must be 4 to 65536",
            ),
            (
                "rooms.join_timeout",
                !r.join_timeout.is_zero(),
                "must be more than 0",
            ),
            (
                "rooms.ping_interval",
                !r.ping_interval.is_zero(),
                "must be more than 0",
            ),
            (
                "rooms.ping_timeout",
                !r.ping_timeout.is_zero(),
                "must be more than 0",
            ),
            (
                "rooms.max_waiting",
                (1..=1000).contains(&r.max_waiting),
                "must be 1 to 1000",
            ),
            (
                "rooms.lobby_timeout",
                !r.lobby_timeout.is_zero(),
                "must be more than 0",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, msg)) => Err((key, msg.to_owned())),
            None => Ok(()),
        }
    }
}

pub use turn::{PortRange, TurnConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `GET /api/stats` and the `/admin` page; empty = the status API is off.
    pub token: String,
}

/// A configuration problem: which file, which key, what is wrong. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{}`: {}", self.file, key, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: impl Into<String>, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Where the configuration came from, for messages and for resolving relative paths.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name shown in messages (`config.toml`, or `built-in defaults`).
    pub name: String,
    /// Base for relative paths.
    pub base_dir: PathBuf,
}

impl Config {
    /// Loads `path`. When `required` is false and the file does not exist, the built-in defaults
    /// apply (the server runs with no config file at all).
    pub fn load(path: &Path, required: bool) -> Result<(Config, Source), ConfigError> {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                let source = Source {
                    name: "built-in defaults".into(),
                    base_dir: PathBuf::from("."),
                };
                let mut config = Config::default();
                config.validate(&source)?;
                config.fall_back_to_ipv4();
                return Ok((config, source));
            }
            Err(e) => return Err(ConfigError::new(name, None, format!("cannot read: {e}"))),
        };
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let source = Source { name, base_dir };
        let mut config = Config::parse(&text, &source.name)?;
        config.resolve_paths(&source.base_dir);
        config.validate(&source)?;
        config.fall_back_to_ipv4();
        Ok((config, source))
    }

    /// Parses TOML text; errors name the dotted key and the line.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let line = inner
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let mut message = inner.message().trim().replace('\n', " ");
            if let Some(line) = line {
                message = format!("{message} (line {line})");
            }
            let key = (!path.is_empty() && path != ".").then_some(path);
            ConfigError::new(file, key.as_deref(), message)
        })
    }

    /// Where the host has IPv6 disabled (no IPv6 sockets at all), the `[::]` listeners (the
    /// defaults) become `0.0.0.0` on the same ports, with one warning, instead of failing to
    /// start. Specific IPv6 addresses are left alone: binding them reports the error.
    pub fn fall_back_to_ipv4(&mut self) {
        if signalbox_udp::socket::ipv6_available() {
            return;
        }
        let mut changed = false;
        let mut v4 = |a: &mut SocketAddr| {
            if a.is_ipv6() && a.ip().is_unspecified() {
                *a = SocketAddr::from(([0, 0, 0, 0], a.port()));
                changed = true;
            }
        };
        v4(&mut self.http.listen);
        if let Some(a) = self.http.redirect_listen.as_mut() {
            v4(a);
        }
        let turn = &mut self.turn;
        for a in turn
            .listen
            .iter_mut()
            .chain(turn.listen_tcp.iter_mut())
            .chain(turn.listen_tls.iter_mut())
        {
            v4(a);
        }
        if changed {
            eprintln!(
                "signalbox: warning: this host has IPv6 disabled; the [::] listeners serve IPv4 \
                 only (0.0.0.0 on the same ports)"
            );
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && base != Path::new(".") {
                *p = base.join(&*p);
            }
        };
        join(&mut self.http.static_dir);
        join(&mut self.tls.generated_dir);
        if let Some(p) = self.tls.cert.as_mut() {
            join(p);
        }
        if let Some(p) = self.server.pid_file.as_mut() {
            join(p);
        }
        if let Some(p) = self.tls.key.as_mut() {
            join(p);
        }
        if let Some(p) = self.access.key_file.as_mut() {
            join(p);
        }
        if let Some(p) = self.tls.acme_ca_file.as_mut() {
            join(p);
        }
    }

    /// Checks what types alone cannot: files exist, values fit together.
    pub fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError::new(&source.name, Some(key), msg));
        if self.server.public_host.trim().is_empty() {
            return err("server.public_host", "must not be empty".into());
        }
        if self.server.public_host.contains(['/', ' ', '?', '#', '@']) {
            return err(
                "server.public_host",
                format!(
                    "`{}` is not a host name or IP address",
                    self.server.public_host
                ),
            );
        }
        if let Err((key, msg)) = acme::validate(self) {
            return err(key, msg);
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return err("tls.key", "required when tls.cert is set".into()),
            (None, Some(_)) => return err("tls.cert", "required when tls.key is set".into()),
            (Some(cert), Some(key)) => {
                for (name, path) in [("tls.cert", cert), ("tls.key", key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        return err(name, format!("cannot read {}: {e}", path.display()));
                    }
                }
            }
            (None, None) => {}
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return err(
                "admin.token",
                "must be at least 16 characters (or empty to turn the status API off)".into(),
            );
        }
        if !self.metrics.token.is_empty() && self.metrics.token.len() < 16 {
            return err(
                "metrics.token",
                "must be at least 16 characters (or empty for no /metrics on HTTPS)".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return err("log.level", format!("not a valid filter: {e}"));
        }
        if self.turn.enabled && self.turn.proxy_protocol && self.http.trusted_proxies.is_empty() {
            return err(
                "turn.proxy_protocol",
                "needs the proxies' addresses in http.trusted_proxies (a PROXY header from any \
                 other address is refused)"
                    .into(),
            );
        }
        if let Err((key, msg)) = self.api.validate() {
            return err(&key, msg);
        }
        if let Err((key, msg)) = self.http.validate() {
            return err(key, msg);
        }
        if let Err((key, msg)) = self.rooms.validate() {
            return err(key, msg);
        }
        if let Err((key, msg)) = self.turn.validate() {
            return err(key, msg);
        }
        if let Err((key, msg)) = self.calls.validate() {
            return err(key, msg);
        }
        if let Err((key, msg)) = self.compat.validate(self.access.mode) {
            return err(key, msg);
        }
        if let Err((key, msg)) = self.cluster.validate(self.turn.secrets.is_empty()) {
            return err(key, msg);
        }
        Ok(())
    }
}

/// Parses `"100us"`, `"500ms"`, `"20s"`, `"10m"`, `"24h"`, `"7d"`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 20s, 10m, 24h or 7d"))?;
    let secs = |mult: u64| {
        value
            .checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{text}` is too long"))
    };
    match unit.trim() {
        "us" | "µs" => Ok(Duration::from_micros(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(format!(
            "`{text}` has an unknown unit; use us, ms, s, m, h or d"
        )),
    }
}

/// Serde adapter: a duration as a string (`"20s"`) or an integer number of seconds.
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Serde adapter: an empty string means "not set".
fn optional_path<'de, D: Deserializer<'de>>(de: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(de)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

/// Serde adapter: `IP:PORT`, with a message that shows the expected form.
pub fn socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(de)?;
    s.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an address like 0.0.0.0:8443 or [::]:8443 (an IP address, not a name)"
        ))
    })
}

/// Serde adapter: an empty string means "off", anything else must be `IP:PORT`.
fn optional_addr<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(de)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an address like 0.0.0.0:80")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_security_policy_must_fit_in_a_header() {
        let mut http = HttpConfig {
            content_security_policy: "default-src 'self'; style-src 'unsafe-inline'".into(),
            ..HttpConfig::default()
        };
        assert!(http.validate().is_ok());
        http.content_security_policy = "default-src 'self';\nscript-src *".into();
        assert_eq!(
            http.validate().map_err(|e| e.0),
            Err("http.content_security_policy")
        );
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = Config::parse("", "config.toml").expect("empty config parses");
        assert_eq!(c.http.listen, "[::]:8443".parse().unwrap());
        assert_eq!(c.http.static_dir, PathBuf::from("public"));
        assert!(c.tls.cert.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_dotted_path_and_line() {
        let e = Config::parse("[http]\nlisten = \"0.0.0.0:1\"\nlisen = 1\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("http.lisen"));
        assert!(e.message.contains("unknown field `lisen`"), "{e}");
        assert!(e.message.contains("line 3"), "{e}");
    }

    #[test]
    fn bad_address_names_the_key() {
        let e = Config::parse("[http]\nlisten = \"nope\"\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("http.listen"));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = Config::parse("[server]\npublic_host = 5\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("server.public_host"));
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn rooms_defaults_match_the_documentation_and_limits_are_checked() {
        let c = Config::parse("", "c.toml").expect("parses");
        assert_eq!(c.rooms.max_peers, 4);
        assert_eq!(c.rooms.reconnect_grace, Duration::from_secs(20));
        assert_eq!(c.rooms.max_message_bytes, 65536);
        let src = Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        let c = Config::parse("[rooms]\nmax_peers = 1\n", "c.toml").expect("parses");
        let e = c.validate(&src).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("rooms.max_peers"));
        let c = Config::parse("[rooms]\nping_timeout = \"0s\"\n", "c.toml").expect("parses");
        assert_eq!(
            c.validate(&src).unwrap_err().key.as_deref(),
            Some("rooms.ping_timeout")
        );
    }

    #[test]
    fn http_limits_default_to_the_documented_values_and_are_checked() {
        let shipped =
            Config::parse(include_str!("../../config.toml"), "config.toml").expect("parses");
        assert_eq!(
            format!("{:?}", shipped.http),
            format!("{:?}", HttpConfig::default())
        );
        let h = HttpConfig::default();
        assert_eq!((h.max_connections, h.max_connections_per_ip), (25_000, 500));
        assert_eq!(h.header_read_timeout, Duration::from_secs(10));
        let src = Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        for (text, key) in [
            ("max_connections = 0", "http.max_connections"),
            ("max_connections_per_ip = 0", "http.max_connections_per_ip"),
            (
                "tls_handshake_timeout = \"0s\"",
                "http.tls_handshake_timeout",
            ),
            ("header_read_timeout = \"50ms\"", "http.header_read_timeout"),
            ("http2_idle_timeout = \"0s\"", "http.http2_idle_timeout"),
            ("keep_alive_timeout = \"11s\"", "http.keep_alive_timeout"),
        ] {
            let c = Config::parse(&format!("[http]\n{text}\n"), "c.toml").expect("parses");
            let e = c.validate(&src).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
        }
        let e = Config::parse("[http]\nkeep_alive_timeout = \"soon\"\n", "c.toml").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("http.keep_alive_timeout"));
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        let c = Config::parse("[tls]\ncert = \"a.pem\"\n", "c.toml").expect("parses");
        let src = Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        let e = c.validate(&src).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls.key"));
    }
}
