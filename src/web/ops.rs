//! Endpoints for operators and for visitors checking their network.
//!
//! `GET /api/stats` (behind `[admin] token`) lists live rooms and peers from the signaling hub
//! and the relay's allocation counts; in a cluster also Redis and every node alive (`cluster`,
//! `null` on a single node). `GET /api/diag` hands the `/diag` page one ICE server entry per way
//! of reaching the server (STUN, TURN over UDP, TCP, TLS, TLS on the HTTPS port), each TURN
//! entry with its own short-lived credential, so the page can tell which paths a visitor's
//! network lets through.
//!
//! Anyone who can open the page can call `/api/diag`, so it is bounded: each answer's
//! credentials carry a user part of their own (`diag-` and 64 random bits), so one visitor
//! using up `[turn] user_quota` affects nobody else's check, and each client address (an IPv4
//! address or an IPv6 /64) gets [`DIAG_RATE`] answers, tracked in a fixed-size table.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::access::AccessMode;
use crate::credentials::ice::TurnTransport;
use crate::credentials::{unix_now, Issuer, UserPart};
use crate::http::error_json;
use crate::metrics::{self, METRICS, TRANSPORTS};
use crate::ratelimit::{Buckets, Rate};
use crate::signaling::HubHandle;
use crate::web::{bearer_is, AppState};
use signalbox_turn_proto::policy::AddrKey;

/// How long the connection check's credentials open new allocations.
const DIAG_TTL: Duration = Duration::from_secs(120);
/// Connection checks per minute from one client address, and as many at once: enough for a
/// room of people behind one NAT to run it together, while one client gets one every 2 s.
pub const DIAG_RATE: Rate = Rate {
    per_minute: 30,
    burst: 30,
};
/// Client addresses whose check rate is tracked at once.
const DIAG_TRACKED: usize = 4096;

/// What the operator endpoints read.
pub struct OpsState {
    pub app: Arc<AppState>,
    pub hub: HubHandle,
    pub issuer: Option<Arc<Issuer>>,
    /// `[access] mode` as the server started: joins follow it, and so does the check.
    access_mode: AccessMode,
    /// This node's membership of a cluster, with `[cluster] redis_url`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    diag_budget: Mutex<Buckets<AddrKey>>,
    started: Instant,
}

impl OpsState {
    pub fn new(
        app: Arc<AppState>,
        hub: HubHandle,
        issuer: Option<Arc<Issuer>>,
        access_mode: AccessMode,
    ) -> OpsState {
        OpsState {
            app,
            hub,
            issuer,
            access_mode,
            cluster: None,
            diag_budget: Mutex::new(Buckets::new(DIAG_RATE, DIAG_TRACKED)),
            started: Instant::now(),
        }
    }

    /// Takes one check from the budget of `client`'s address, or says how long to wait.
    fn take_diag(&self, client: IpAddr) -> Result<(), Duration> {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.diag_budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&AddrKey::of(client), now_ms)
    }
}

pub fn routes(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/api/stats", get(stats))
        .route("/api/diag", get(diag))
        .with_state(state)
}

async fn stats(State(ops): State<Arc<OpsState>>, headers: HeaderMap) -> Response {
    let token = ops.app.config.borrow().admin.token.clone();
    if token.is_empty() {
        return error_json(
            StatusCode::NOT_FOUND,
            "not-found",
            "no [admin] token is configured, so the status API is off",
        );
    }
    if !bearer_is(&headers, &token) {
        return error_json(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <[admin] token>",
        );
    }
    let Some(rooms) = ops.hub.snapshot().await else {
        return error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "signaling is shutting down",
        );
    };
    let peers: usize = rooms.iter().map(|r| r.peers.len()).sum();
    let allocations: serde_json::Map<String, serde_json::Value> = TRANSPORTS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                (*t).to_owned(),
                json!(METRICS.allocations_active.at(i).get()),
            )
        })
        .collect();
    let cluster = ops.cluster.as_ref().map(|c| c.stats());
    Json(json!({
        "uptime_s": ops.app.started.elapsed().as_secs(),
        "cluster": cluster,
        "rooms": rooms,
        "peers": peers,
        "allocations": allocations,
        "permissions": METRICS.permissions_active.get(),
        "channels": METRICS.channels_active.get(),
        "ws_connections": METRICS.ws_connections_active.get(),
    }))
    .into_response()
}

async fn diag(
    State(ops): State<Arc<OpsState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if ops.access_mode == AccessMode::Token {
        return error_json(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this server only relays for invited callers, so the connection check is off",
        );
    }
    if let Err(wait) = ops.take_diag(peer.ip()) {
        METRICS.rate_limited.at(metrics::LIMITED_API).inc();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = error_json(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            &format!(
                "more than {} connection checks per minute from your address; see Retry-After",
                DIAG_RATE.per_minute
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
        return resp;
    }
    let Some(issuer) = &ops.issuer else {
        return Json(json!({ "checks": [] })).into_response();
    };
    let mut checks = Vec::new();
    for url in issuer.endpoints.stun_uris() {
        checks.push(json!({
            "id": "stun", "label": "STUN", "url": url, "expect": "srflx",
            "iceServer": { "urls": [url] },
        }));
    }
    let user = UserPart::custom(&visitor_user());
    for (transport, url) in issuer.endpoints.turn_entries() {
        let (id, label) = match transport {
            TurnTransport::Udp => ("turn-udp", "TURN over UDP"),
            TurnTransport::Tcp => ("turn-tcp", "TURN over TCP"),
            TurnTransport::TcpOnHttpsPort => ("turn-tcp-443", "TURN over TCP on the HTTPS port"),
            TurnTransport::Tls => ("turns", "TURN over TLS"),
            TurnTransport::TlsOnHttpsPort => ("turns-443", "TURN over TLS on the HTTPS port"),
        };
        let c = issuer.minter.mint(user.as_ref(), unix_now(), DIAG_TTL);
        checks.push(json!({
            "id": id, "label": label, "url": url, "expect": "relay",
            "iceServer": { "urls": [url], "username": c.username, "credential": c.password },
        }));
    }
    let mut resp = Json(json!({ "checks": checks })).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// A user part for one run of the connection check: `diag-` and 64 random bits in hex.
fn visitor_user() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the OS random source works (a failure here means the system is broken)");
    format!("diag-{}", crate::hex::encode(&bytes))
}
