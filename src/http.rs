//! HTTP/1.1 and HTTP/2 on one accepted connection, with every wait bounded.
//!
//! hyper enforces two limits itself once it has a timer: the HTTP/1 request-header timeout,
//! which runs from the moment a connection is ready for a request (so it also bounds how long
//! a kept-alive connection may wait for its next one), and the HTTP/2 keep-alive PING, which
//! drops a peer that does not answer within a timeout. What hyper has no setting for is a
//! connection with no request in progress, HTTP/1 or HTTP/2: that is [`IdleClock`]. The
//! service counts the requests in progress (until their response body is finished) and the
//! connection task asks hyper to close the connection gracefully once none has been in progress
//! for the idle limit (`keep_alive_timeout`, `http2_idle_timeout`). A connection still open
//! [`CLOSE_GRACE`] (or the idle limit, when shorter) after that request is dropped: a peer that
//! ignores GOAWAY, or sent half a header block on HTTP/2. A request in progress is never cut
//! off by the idle limit.
//!
//! A WebSocket upgrade ends the HTTP connection (hyper hands the stream to the WebSocket task),
//! so none of this applies to signaling, which has its own pings and timeouts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;
use tracing::debug;

use crate::config::HttpConfig;
use crate::listener::Stream;

/// Longest a connection may take to close after it was asked to for being idle (the idle limit
/// itself when that is shorter).
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The HTTPS listener's caps and timeouts, from `[http]`.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    pub http2_idle_timeout: Duration,
}

impl HttpLimits {
    pub fn from_config(http: &HttpConfig) -> HttpLimits {
        HttpLimits {
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            tls_handshake_timeout: http.tls_handshake_timeout,
            header_read_timeout: http.header_read_timeout,
            keep_alive_timeout: http.keep_alive_timeout,
            http2_keep_alive_interval: http.http2_keep_alive_interval,
            http2_keep_alive_timeout: http.http2_keep_alive_timeout,
            http2_idle_timeout: http.http2_idle_timeout,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_config(&HttpConfig::default())
    }
}

/// Serves HTTP on accepted connections with the router, within the limits.
pub struct HttpServer {
    router: Router,
    limits: HttpLimits,
    builder: auto::Builder<TokioExecutor>,
}

impl HttpServer {
    pub fn new(router: Router, limits: HttpLimits) -> HttpServer {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keep_alive_interval)
            .keep_alive_timeout(limits.http2_keep_alive_timeout);
        HttpServer {
            router,
            limits,
            builder,
        }
    }

    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Serves one connection until it ends, is upgraded, stays idle too long, or `shutdown`
    /// fires (then it may finish within `shutdown_grace`). `h2` says the client chose HTTP/2
    /// (by ALPN), which picks the idle limit.
    pub async fn serve(
        &self,
        io: Box<dyn Stream>,
        h2: bool,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
        shutdown_grace: Duration,
    ) {
        let idle = if h2 {
            self.limits.http2_idle_timeout
        } else {
            self.limits.keep_alive_timeout
        };
        let activity = Arc::new(Mutex::new(IdleClock::new(Instant::now())));
        // The router as a hyper service that tells handlers the client's address and counts
        // each request as in progress until its response body is finished (or dropped).
        let router = self.router.clone();
        let counting = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let request = InProgress::begin(counting.clone());
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move {
                let resp = match router.call(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    _request: request,
                }))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = pin!(conn);
        // Set once the connection was asked to close: the moment it is dropped regardless.
        let mut closing: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wake = closing
                .unwrap_or_else(|| lock(&activity).idle_deadline(idle).unwrap_or(now + idle));
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        debug!(%peer, "HTTP connection ended: {e}");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(wake) => {
                    if closing.is_some() {
                        debug!(%peer, "HTTP connection did not close in time; dropped");
                        return;
                    }
                    let now = Instant::now();
                    if lock(&activity).idle_deadline(idle).is_some_and(|d| d <= now) {
                        debug!(%peer, ?idle, "HTTP connection idle; closing");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(now + idle.min(CLOSE_GRACE));
                    }
                }
                _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + shutdown_grace);
                }
            }
        }
    }
}

/// Requests in progress on one connection, and since when none has been: the idle limit's
/// clock. Pure: the time is passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleClock {
    in_progress: usize,
    since: Instant,
}

impl IdleClock {
    pub fn new(now: Instant) -> IdleClock {
        IdleClock {
            in_progress: 0,
            since: now,
        }
    }

    pub fn begin(&mut self, now: Instant) {
        self.in_progress += 1;
        self.since = now;
    }

    pub fn end(&mut self, now: Instant) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.since = now;
    }

    /// When the connection will have been idle for `limit`; `None` while a request is in
    /// progress.
    pub fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        (self.in_progress == 0).then_some(self.since + limit)
    }
}

fn lock(clock: &Mutex<IdleClock>) -> std::sync::MutexGuard<'_, IdleClock> {
    // Every update is one step, so the clock is consistent even after a panic elsewhere.
    clock.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request in progress; ends when dropped.
struct InProgress(Arc<Mutex<IdleClock>>);

impl InProgress {
    fn begin(clock: Arc<Mutex<IdleClock>>) -> InProgress {
        lock(&clock).begin(Instant::now());
        InProgress(clock)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        lock(&self.0).end(Instant::now());
    }
}

/// A response body that keeps its request counted as in progress until it is finished.
pub struct Tracked {
    body: Body,
    _request: InProgress,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_new_connection_is_idle_from_its_start() {
        let t0 = Instant::now();
        let clock = IdleClock::new(t0);
        assert_eq!(clock.idle_deadline(LIMIT), Some(t0 + LIMIT));
    }

    #[test]
    fn no_deadline_while_a_request_is_in_progress_then_it_runs_from_the_end() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(t0);
        clock.begin(t0 + Duration::from_secs(1));
        clock.begin(t0 + Duration::from_secs(2));
        assert_eq!(clock.idle_deadline(LIMIT), None);
        clock.end(t0 + Duration::from_secs(30));
        assert_eq!(clock.idle_deadline(LIMIT), None, "one is still in progress");
        clock.end(t0 + Duration::from_secs(40));
        assert_eq!(
            clock.idle_deadline(LIMIT),
            Some(t0 + Duration::from_secs(40) + LIMIT)
        );
    }

    #[test]
    fn more_ends_than_begins_cannot_underflow() {
        let t0 = Instant::now();
        let mut clock = IdleClock::new(t0);
        clock.end(t0);
        clock.begin(t0);
        assert_eq!(clock.idle_deadline(LIMIT), None);
    }
}
