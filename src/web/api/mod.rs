//! The credential API for other apps: TURN credentials without ever handing out the secret.
//!
//! - `GET /api/turn?service=turn&username=U&key=K`: the TURN REST API draft's shape,
//!   `{"username","password","ttl","uris"}`, so coturn-style clients work unchanged.
//! - `POST /api/ice-servers` with `Authorization: Bearer K`: `{"iceServers":[...],"ttl":N}`,
//!   ready for `new RTCPeerConnection(...)`. An optional JSON body `{"username":U}` sets the
//!   user part.
//!
//! Order of checks, so that guessing keys is as slow as using them: the per-address rate
//! limit (every request counts), then the key (compared in constant time against every
//! configured key), then the per-key rate limit. With no `[[api.keys]]` the endpoints do not
//! exist (404): an unconfigured server is never an open credential mint. CORS headers are sent
//! only to origins in `[api] cors_origins`, always with `Vary: Origin`.

pub mod ratelimit;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::any;
use axum::Router;
use ring::hmac;
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info};

use self::ratelimit::{Buckets, Rate};
use super::error_json;
use crate::config::ApiConfig;
use crate::credentials::{unix_now, Issuer, UserPart};
use signalbox_turn_proto::policy::AddrKey;

/// Most client networks whose request rate is tracked at once.
const TRACKED_CLIENTS: usize = 4096;
/// Longest request body of `POST /api/ice-servers`.
const MAX_BODY: usize = 4096;

/// Everything the API handlers need.
pub struct ApiState {
    /// `None` when TURN is off: there is nothing to mint credentials for.
    issuer: Option<Arc<Issuer>>,
    keys: Vec<ConfiguredKey>,
    /// Random per process; keys are compared as HMACs under it, in constant time.
    mac: hmac::Key,
    cors_origins: Vec<String>,
    ttl: Duration,
    limits: Mutex<Limits>,
    clock: Instant,
}

struct ConfiguredKey {
    name: String,
    tag: Vec<u8>,
}

struct Limits {
    per_key: Buckets<usize>,
    per_client: Buckets<AddrKey>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(config: &ApiConfig, issuer: Option<Arc<Issuer>>) -> ApiState {
        let rng = ring::rand::SystemRandom::new();
        // Only fails when the OS has no randomness at all, and then TLS could not work either.
        let mac = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the system random number generator works");
        let keys = config
            .keys
            .iter()
            .map(|k| ConfiguredKey {
                name: k.name.clone(),
                tag: hmac::sign(&mac, k.key.as_bytes()).as_ref().to_vec(),
            })
            .collect();
        let per_key = Rate {
            per_minute: config.rate_limit_per_key,
            burst: config.rate_limit_burst,
        };
        let per_client = Rate {
            per_minute: config.rate_limit_per_ip,
            burst: config.rate_limit_burst,
        };
        ApiState {
            issuer,
            keys,
            mac,
            cors_origins: config.cors_origins.clone(),
            ttl: config.credential_ttl,
            limits: Mutex::new(Limits {
                per_key: Buckets::new(per_key, config.keys.len().max(1)),
                per_client: Buckets::new(per_client, TRACKED_CLIENTS),
            }),
            clock: Instant::now(),
        }
    }

    /// The index of the configured key equal to `presented`. Every key is compared, each in
    /// constant time, so the answer's timing says nothing about which key came close.
    fn find_key(&self, presented: &str) -> Option<usize> {
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            if hmac::verify(&self.mac, presented.as_bytes(), &k.tag).is_ok() {
                found = Some(i);
            }
        }
        found
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.cors_origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }
}

/// The API routes; merged into the application router.
pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/turn", any(turn))
        .route("/api/ice-servers", any(ice_servers))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct TurnQuery {
    service: Option<String>,
    username: Option<String>,
    key: Option<String>,
}

async fn turn(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let origin = state.allowed_origin(&parts.headers);
    let resp = match endpoint_method(&state, &parts.method, Method::GET) {
        Err(e) => e.into_response(),
        Ok(true) => preflight(origin.is_some()),
        Ok(false) => {
            let query: HashMap<String, String> = parts
                .uri
                .query()
                .and_then(serde_urlencoded_map)
                .unwrap_or_default();
            let q = TurnQuery {
                service: query.get("service").cloned(),
                username: query.get("username").cloned(),
                key: query.get("key").cloned(),
            };
            let key = q.key.or_else(|| bearer(&parts.headers).map(str::to_owned));
            match authorize(&state, client_ip(&parts), key.as_deref()) {
                Err(e) => e.into_response(),
                Ok(name) => turn_answer(&state, &name, q.service.as_deref(), q.username),
            }
        }
    };
    with_cors(resp, origin)
}

async fn ice_servers(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let origin = state.allowed_origin(&parts.headers);
    let resp = match endpoint_method(&state, &parts.method, Method::POST) {
        Err(e) => e.into_response(),
        Ok(true) => preflight(origin.is_some()),
        Ok(false) => match authorize(&state, client_ip(&parts), bearer(&parts.headers)) {
            Err(e) => e.into_response(),
            Ok(name) => match axum::body::to_bytes(body, MAX_BODY).await {
                Err(_) => ApiError::TooLarge.into_response(),
                Ok(body) => ice_servers_answer(&state, &name, &body),
            },
        },
    };
    with_cors(resp, origin)
}

/// `Ok(true)` for a CORS preflight, `Ok(false)` for the endpoint's own method, `Err` with the
/// answer otherwise (404 when no key is configured, 405 for other methods).
fn endpoint_method(state: &ApiState, method: &Method, own: Method) -> Result<bool, ApiError> {
    if state.keys.is_empty() {
        return Err(ApiError::NotFound);
    }
    if *method == Method::OPTIONS {
        return Ok(true);
    }
    if *method == own || (own == Method::GET && *method == Method::HEAD) {
        return Ok(false);
    }
    Err(ApiError::Method(own))
}

/// Rate limits and the key. `Ok` carries the key's name.
fn authorize(state: &ApiState, ip: IpAddr, key: Option<&str>) -> Result<String, ApiError> {
    let now = state.now_ms();
    let mut limits = state.limits.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(wait) = limits.per_client.take(&AddrKey::of(ip), now) {
        debug!(%ip, "API request over the per-address rate limit");
        return Err(ApiError::RateLimited(wait));
    }
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::MissingKey);
    };
    let Some(index) = state.find_key(key) else {
        info!(%ip, "API request with a wrong key");
        return Err(ApiError::WrongKey);
    };
    if let Err(wait) = limits.per_key.take(&index, now) {
        debug!(key = %state.keys[index].name, "API key over its rate limit");
        return Err(ApiError::RateLimited(wait));
    }
    Ok(state.keys[index].name.clone())
}

fn turn_answer(
    state: &ApiState,
    key_name: &str,
    service: Option<&str>,
    username: Option<String>,
) -> Response {
    if service.is_some_and(|s| s != "turn") {
        return ApiError::BadRequest("`service` must be `turn`".into()).into_response();
    }
    let user = match parse_user(username.as_deref()) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let Some(issuer) = &state.issuer else {
        return ApiError::TurnOff.into_response();
    };
    let c = issuer.minter.mint(user.as_ref(), unix_now(), state.ttl);
    debug!(key = %key_name, username = %c.username, "API minted TURN credentials");
    no_store(Json(json!({
        "username": c.username,
        "password": c.password,
        "ttl": c.ttl,
        "uris": issuer.endpoints.turn_uris(),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IceServersBody {
    username: Option<String>,
}

fn ice_servers_answer(state: &ApiState, key_name: &str, body: &Bytes) -> Response {
    let body: IceServersBody = if body.iter().all(u8::is_ascii_whitespace) {
        IceServersBody::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("the body must be empty or {{\"username\": \"...\"}}: {e}");
                return ApiError::BadRequest(msg).into_response();
            }
        }
    };
    let user = match parse_user(body.username.as_deref()) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let Some(issuer) = &state.issuer else {
        return ApiError::TurnOff.into_response();
    };
    let c = issuer.minter.mint(user.as_ref(), unix_now(), state.ttl);
    debug!(key = %key_name, username = %c.username, "API minted ICE servers");
    no_store(Json(json!({
        "iceServers": issuer.endpoints.ice_servers(Some(&c)),
        "ttl": c.ttl,
    })))
}

fn parse_user(username: Option<&str>) -> Result<Option<UserPart>, ApiError> {
    match username.filter(|u| !u.is_empty()) {
        None => Ok(None),
        Some(u) => UserPart::custom(u).map(Some).ok_or_else(|| {
            ApiError::BadRequest(
                "`username` must be 1-128 bytes without spaces, control characters or `~` \
                 (reserved for the peers of a room)"
                    .into(),
            )
        }),
    }
}

/// Every way an API request fails, each with its status and JSON `error` code.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no such API endpoint")]
    NotFound,
    #[error("TURN is disabled on this server")]
    TurnOff,
    #[error("use {0}")]
    Method(Method),
    #[error("an API key is required")]
    MissingKey,
    #[error("the API key is not valid")]
    WrongKey,
    #[error("too many requests; see Retry-After")]
    RateLimited(Duration),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is limited to {MAX_BODY} bytes")]
    TooLarge,
    #[error("this origin is not in [api] cors_origins")]
    OriginNotAllowed,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::NotFound | ApiError::TurnOff => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::Method(_) => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::MissingKey | ApiError::WrongKey => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            ApiError::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin-not-allowed"),
        };
        let mut resp = error_json(status, code, &self.to_string());
        let h = resp.headers_mut();
        match self {
            ApiError::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::Method(own) => {
                if let Ok(v) = HeaderValue::from_str(&format!("{own}, OPTIONS")) {
                    h.insert(header::ALLOW, v);
                }
            }
            ApiError::MissingKey | ApiError::WrongKey => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

fn preflight(allowed: bool) -> Response {
    if !allowed {
        return ApiError::OriginNotAllowed.into_response();
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

fn with_cors(mut resp: Response, origin: Option<HeaderValue>) -> Response {
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
    resp
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn client_ip(parts: &axum::http::request::Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `a=1&b=2` into a map (later duplicates win); `None` when the query is not valid. Public for
/// the query-parsing fuzz target (`tests/fuzz/api_query.rs`).
pub fn serde_urlencoded_map(query: &str) -> Option<HashMap<String, String>> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{query}").parse().ok()?,
    )
    .ok()
    .map(|q| q.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn state(keys: &[(&str, &str)]) -> ApiState {
        let config = ApiConfig {
            keys: keys
                .iter()
                .map(|(name, key)| ApiKeyConfig {
                    name: (*name).into(),
                    key: (*key).into(),
                })
                .collect(),
            cors_origins: vec!["https://app.example.org".into()],
            ..ApiConfig::default()
        };
        ApiState::new(&config, None)
    }

    #[test]
    fn a_key_is_found_only_when_it_matches_exactly() {
        let s = state(&[("a", "0123456789abcdef"), ("b", "fedcba9876543210")]);
        assert_eq!(s.find_key("fedcba9876543210"), Some(1));
        assert_eq!(s.find_key("0123456789abcdef"), Some(0));
        assert_eq!(s.find_key("0123456789abcde"), None);
        assert_eq!(s.find_key("0123456789abcdef "), None);
        assert_eq!(s.find_key(""), None);
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let s = state(&[("a", "0123456789abcdef")]);
        let with = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            s.allowed_origin(&h)
        };
        assert!(with("https://app.example.org").is_some());
        assert!(with("https://app.example.org.evil.com").is_none());
        assert!(with("http://app.example.org").is_none());
        assert!(s.allowed_origin(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_bearer_token_is_read_case_insensitively_and_other_schemes_are_not() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k1"));
        assert_eq!(bearer(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn an_address_is_limited_before_its_key_is_even_looked_at() {
        let config = ApiConfig {
            keys: vec![ApiKeyConfig {
                name: "a".into(),
                key: "0123456789abcdef".into(),
            }],
            rate_limit_per_ip: 1,
            rate_limit_burst: 1,
            ..ApiConfig::default()
        };
        let s = ApiState::new(&config, None);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(
            authorize(&s, ip, Some("wrong-key-0000000")),
            Err(ApiError::WrongKey)
        ));
        assert!(matches!(
            authorize(&s, ip, Some("0123456789abcdef")),
            Err(ApiError::RateLimited(_))
        ));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            authorize(&s, other, Some("0123456789abcdef"))
                .ok()
                .as_deref(),
            Some("a")
        );
    }

    #[test]
    fn ipv6_clients_share_one_limit_per_64_and_mapped_ipv4_counts_as_ipv4() {
        let config = ApiConfig {
            rate_limit_per_ip: 1,
            rate_limit_burst: 1,
            ..ApiConfig::default()
        };
        let s = ApiState::new(&config, None);
        let limited = |ip: &str| {
            let ip: IpAddr = ip.parse().expect("test address");
            matches!(authorize(&s, ip, None), Err(ApiError::RateLimited(_)))
        };
        assert!(!limited("2001:db8:1:2::a"));
        assert!(limited("2001:db8:1:2:ffff::b"), "same /64");
        assert!(!limited("2001:db8:1:3::a"), "another /64");
        assert!(!limited("192.0.2.7"));
        assert!(limited("::ffff:192.0.2.7"), "the same IPv4 client");
    }
}
