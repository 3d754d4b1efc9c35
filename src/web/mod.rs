//! The HTTPS application: static files, the room page, `/healthz`, and the headers a calling
//! app needs. Transport (TLS, accept loop, shutdown) lives in [`crate::app`]; this module only
//! maps requests to responses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;

use crate::http::error_json;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

pub mod api;
pub mod ops;

/// What request handlers share. Fields are cheap to read; nothing here is locked per request.
#[derive(Debug)]
pub struct AppState {
    pub started: Instant,
    pub static_dir: PathBuf,
    /// Send `Strict-Transport-Security`: true while a trusted certificate (configured, or
    /// from the ACME CA) is in service.
    pub hsts: Arc<std::sync::atomic::AtomicBool>,
    /// What the deep health check tests (set once the TURN server runs).
    pub selftest: std::sync::OnceLock<crate::selftest::Target>,
    /// The last deep check and when it ran; locked while one runs, so there is never more
    /// than one at a time.
    deep_check: tokio::sync::Mutex<Option<(Instant, Vec<crate::selftest::Check>)>>,
    /// The live configuration (replaced on reload).
    pub config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    /// `[http] allowed_origins` as at start (like the `/ws` origin check): who gets CORS on `/sdk/`.
    sdk_origins: Vec<String>,
    not_found_html: String,
}

impl AppState {
    pub fn new(
        static_dir: PathBuf,
        hsts: Arc<std::sync::atomic::AtomicBool>,
        config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    ) -> Self {
        let not_found_html = std::fs::read_to_string(static_dir.join("404.html"))
            .unwrap_or_else(|_| "<!doctype html><title>Not found</title><h1>Not found</h1>".into());
        let sdk_origins = config.borrow().http.allowed_origins.clone();
        Self {
            started: Instant::now(),
            sdk_origins,
            static_dir,
            hsts,
            selftest: std::sync::OnceLock::new(),
            deep_check: tokio::sync::Mutex::new(None),
            config,
            not_found_html,
        }
    }
}

/// Content-Security-Policy for the app (unless `[http] content_security_policy` replaces it): everything from this origin, media from the camera,
/// no framing. `connect-src 'self'` covers `wss:` to the same host.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const PERMISSIONS: &str = "camera=(self), microphone=(self), display-capture=(self), \
fullscreen=(self), autoplay=(self), geolocation=(), payment=(), usb=(), interest-cohort=()";

/// `HOST:PORT` for URLs, with IPv6 brackets, and no port when it is 443.
pub fn host_port(host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// The application router. Other modules add their routes before the static fallback.
pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Router::new())
}

/// The application router with `extra` routes (such as the credential API) that get the same
/// headers and take precedence over the static fallback.
pub fn router_with(state: Arc<AppState>, extra: Router) -> Router {
    let static_files = ServeDir::new(&state.static_dir)
        .append_index_html_on_directories(false)
        .fallback(get(not_found).with_state(state.clone()));
    Router::new()
        .route("/", get(index))
        .route("/r/{room}", get(room_page))
        .route("/s/{space}", get(room_page))
        .route("/diag", get(diag_page))
        .route("/admin", get(admin_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_behind_token))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .with_state(state.clone())
        .merge(extra)
        .fallback_service(static_files)
        .layer(middleware::from_fn_with_state(state, headers))
}

async fn index(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_index(&state, req).await
}

async fn room_page(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    req: Request,
) -> Response {
    if !crate::signaling::protocol::is_valid_room(&room) {
        return not_found(State(state)).await.into_response();
    }
    serve_index(&state, req).await
}

async fn diag_page(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_html(&state, "diag.html", req).await
}

async fn admin_page(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_html(&state, "admin.html", req).await
}

async fn serve_index(state: &AppState, req: Request) -> Response {
    serve_html(state, "index.html", req).await
}

async fn serve_html(state: &AppState, file: &str, req: Request) -> Response {
    let file = ServeFile::new(state.static_dir.join(file));
    match file.oneshot(req).await {
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
            (StatusCode::NOT_FOUND, Html(state.not_found_html.clone())).into_response()
        }
        Ok(resp) => resp.map(Body::new),
        Err(e) => match e {},
    }
}

async fn not_found(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Html(state.not_found_html.clone()))
}

async fn api_not_found() -> impl IntoResponse {
    error_json(StatusCode::NOT_FOUND, "not-found", "no such API endpoint")
}

#[derive(serde::Deserialize)]
struct HealthQuery {
    #[serde(default)]
    deep: Option<String>,
}

/// How long a deep check's result is served again instead of running the checks anew.
const DEEP_CHECK_REUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Liveness; with `?deep=1` also the self-test (TURN relays, relay addresses, certificate):
/// 200 when nothing failed (warnings included), 503 when a check failed. The self-test makes
/// real allocations, so it runs at most once at a time, and its result is reused for
/// [`DEEP_CHECK_REUSE`]: any number of monitors calling at once cost one run.
async fn healthz(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<HealthQuery>,
) -> Response {
    let base = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    if !matches!(q.deep.as_deref(), Some("1" | "true")) {
        return Json(base).into_response();
    }
    let checks = deep_checks(&state).await;
    let failed = checks.iter().any(|c| c.status == "fail");
    let mut body = base;
    body["status"] = json!(if failed { "failing" } else { "ok" });
    body["checks"] = json!(checks);
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

/// The self-test's checks. The relay checks (real allocations) come from a run that ended less
/// than [`DEEP_CHECK_REUSE`] ago or from a new one, and callers wait for a run in progress rather
/// than start another; the checks that only read state (certificate, ACME) are always current,
/// so a certificate swapped in a moment ago shows at once.
async fn deep_checks(state: &AppState) -> Vec<crate::selftest::Check> {
    let Some(target) = state.selftest.get().cloned() else {
        return Vec::new();
    };
    let mut checks = {
        let mut last = state.deep_check.lock().await;
        match &*last {
            Some((at, checks)) if at.elapsed() < DEEP_CHECK_REUSE => checks.clone(),
            _ => {
                let t = target.clone();
                let checks = tokio::task::spawn_blocking(move || crate::selftest::relay_checks(&t))
                    .await
                    .unwrap_or_default();
                *last = Some((Instant::now(), checks.clone()));
                checks
            }
        }
    };
    checks.extend(crate::selftest::state_checks(&target));
    checks
}

/// Prometheus metrics for scrapers that only reach the HTTPS port, behind a bearer token.
async fn metrics_behind_token(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let token = state.config.borrow().metrics.token.clone();
    if token.is_empty() {
        return not_found(State(state.clone())).await.into_response();
    }
    if !bearer_is(&headers, &token) {
        return error_json(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <[metrics] token>",
        );
    }
    metrics_response()
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_is(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    secret_eq(given.as_bytes(), token.as_bytes())
}

/// Compares a presented secret with the expected one in time that depends only on the lengths.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The metrics exposition as an HTTP response.
pub fn metrics_response() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::metrics::METRICS.render(),
    )
        .into_response()
}

/// Security and caching headers on every response.
async fn headers(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    crate::metrics::METRICS.http_requests.inc();
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let sdk = req.uri().path().starts_with("/sdk/");
    let cors = sdk.then(|| sdk_cors_origin(&state, &req)).flatten();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if sdk {
        // The answer depends on `Origin`: a cache must not give one origin's to another.
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(origin) = cors {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    let csp = {
        let config = state.config.borrow();
        let custom = &config.http.content_security_policy;
        match custom.is_empty() {
            true => HeaderValue::from_static(CSP),
            // Validated as a header value when the configuration was loaded.
            false => HeaderValue::from_str(custom).unwrap_or(HeaderValue::from_static(CSP)),
        }
    };
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert("permissions-policy", HeaderValue::from_static(PERMISSIONS));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if state.hsts.load(std::sync::atomic::Ordering::Relaxed) {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if is_get && !h.contains_key(header::CACHE_CONTROL) {
        let cache = cache_policy(h.get(header::CONTENT_TYPE));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    resp
}

/// The `Origin` of a request for the client module (`/sdk/`) when it is one of
/// `[http] allowed_origins`: pages of those origins may load it (a module script is fetched
/// with CORS). Other origins get no CORS header, so their pages cannot load it.
fn sdk_cors_origin(state: &AppState, req: &Request) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    state
        .sdk_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(text.trim()))
        .then(|| origin.clone())
}

/// Pages, scripts and styles revalidate on every load (a deploy shows at once; an unchanged
/// file costs a 304); images and fonts may be cached for a day; API answers are never stored.
fn cache_policy(content_type: Option<&HeaderValue>) -> &'static str {
    let ct = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("image/") || ct.starts_with("font/") || ct.starts_with("audio/") {
        "public, max-age=86400"
    } else if ct.starts_with("application/json") {
        "no-store"
    } else {
        "no-cache"
    }
}
