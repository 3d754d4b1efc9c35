//! Endpoints for operators and for visitors checking their network.
//!
//! `GET /api/stats` (behind `[admin] token`) lists live rooms and peers from the signaling hub
//! and the relay's allocation counts. `GET /api/diag` hands the `/diag` page one ICE server
//! entry per way of reaching the server (STUN, TURN over UDP, TCP, TLS, TLS on the HTTPS
//! port), each TURN entry with its own short-lived credential, so the page can tell which
//! paths a visitor's network lets through.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::access::AccessMode;
use crate::credentials::ice::TurnTransport;
use crate::credentials::{unix_now, Issuer, UserPart};
use crate::metrics::{METRICS, TRANSPORTS};
use crate::signaling::HubHandle;
use crate::web::{bearer_is, error_json, AppState};

/// How long the connection check's credentials open new allocations.
const DIAG_TTL: Duration = Duration::from_secs(120);

/// What the operator endpoints read.
pub struct OpsState {
    pub app: Arc<AppState>,
    pub hub: HubHandle,
    pub issuer: Option<Arc<Issuer>>,
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
    Json(json!({
        "uptime_s": ops.app.started.elapsed().as_secs(),
        "rooms": rooms,
        "peers": peers,
        "allocations": allocations,
        "permissions": METRICS.permissions_active.get(),
        "channels": METRICS.channels_active.get(),
        "ws_connections": METRICS.ws_connections_active.get(),
    }))
    .into_response()
}

async fn diag(State(ops): State<Arc<OpsState>>) -> Response {
    if ops.app.config.borrow().access.mode == AccessMode::Token {
        return error_json(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this server only relays for invited callers, so the connection check is off",
        );
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
    let user = UserPart::custom("diag");
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
