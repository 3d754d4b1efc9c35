//! Bounds the WebSocket messages a Socket.IO client may send.
//!
//! socketioxide 0.16 has no setting for it: engineioxide 0.16.2 makes the WebSocket of every
//! Engine.IO session with `WebSocketConfig::default().read_buffer_size(ws_read_buffer_size)`
//! (`src/transport/ws.rs`, line 118, in `on_init`), so tungstenite's defaults apply — a 64 MiB
//! message of 16 MiB frames, read whole before any handler sees it. `max_payload` bounds only
//! long-polling bodies (`src/transport/polling/mod.rs`, lines 118 and 152), and the module that
//! makes the WebSocket is private.
//!
//! So the upgrade is taken here, in front of Engine.IO: the client's request is replayed to
//! Engine.IO over an in-memory HTTP/1.1 connection, Engine.IO's `101` goes back to the client,
//! and the two upgraded streams are joined by a pump that reads the WebSocket frame headers of
//! what the client sends ([`Frames`]). A frame or message announced longer than the limit is
//! never forwarded: the client gets a close frame with 1009 (RFC 6455 §7.4.1), the in-memory
//! side ends, and Engine.IO closes that one session as a closed transport. What the server
//! sends passes untouched. Requests that are no HTTP/1.1 WebSocket upgrade (long-polling, the
//! client script) pass on unchanged; WebSockets over HTTP/2 (RFC 8441) do not exist here, as
//! the HTTPS listener does not offer the extended CONNECT they need.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use engineioxide::service::NotFoundService;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use socketioxide::service::SocketIoService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// The in-memory connection's buffer, each way.
const PIPE_BUFFER: usize = 16 * 1024;
/// Bytes read at once in the pump.
const READ_CHUNK: usize = 8 * 1024;
/// How long a refused client may take to see the close frame and answer it.
const LINGER: Duration = Duration::from_secs(2);
/// RFC 6455 §7.4.1: "a message that is too big for it to process".
const CLOSE_TOO_BIG: u16 = 1009;

/// The Engine.IO service behind the guard, and the longest message it lets through.
#[derive(Clone)]
pub struct Guard {
    engine: SocketIoService<NotFoundService>,
    limit: u64,
    /// How long a write to the client may take (`[rooms] ping_timeout`).
    stall: Duration,
    open: Open,
}

/// The WebSockets the guard serves right now.
#[derive(Clone, Default)]
pub struct Open(Arc<AtomicUsize>);

impl Open {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one WebSocket until the returned value is dropped.
    fn hold(&self) -> impl Drop {
        struct Held(Arc<AtomicUsize>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self.0.clone())
    }
}

impl Guard {
    pub fn new(engine: SocketIoService<NotFoundService>, limit: usize, stall: Duration) -> Guard {
        Guard {
            engine,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            stall,
            open: Open::default(),
        }
    }

    /// The count of WebSockets this guard serves.
    pub fn open(&self) -> Open {
        self.open.clone()
    }
}

/// The middleware: WebSocket upgrades go through the guard, everything else on unchanged.
pub async fn bound_websocket(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    if !is_websocket_upgrade(req.headers()) || req.extensions().get::<OnUpgrade>().is_none() {
        return next.run(req).await;
    }
    let client = hyper::upgrade::on(&mut req);
    match guard.bridge(req, client).await {
        Ok(resp) => resp,
        Err(why) => {
            debug!("Socket.IO WebSocket upgrade failed: {why}");
            (StatusCode::BAD_GATEWAY, "the WebSocket upgrade failed").into_response()
        }
    }
}

impl Guard {
    /// Replays `req` to Engine.IO; on its `101`, joins the two upgraded streams through the
    /// pump. Any other answer goes back to the client as it is.
    async fn bridge(&self, req: Request, client: OnUpgrade) -> Result<Response, hyper::Error> {
        let (near, far) = tokio::io::duplex(PIPE_BUFFER);
        let connect_info = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned();
        let engine = self.engine.clone();
        let service = hyper::service::service_fn(move |mut r: hyper::Request<Incoming>| {
            if let Some(info) = connect_info {
                r.extensions_mut().insert(info);
            }
            engine.call(r)
        });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(far), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                debug!("in-memory Engine.IO connection: {e}");
            }
        });
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut replay = hyper::Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone());
        if let Some(headers) = replay.headers_mut() {
            *headers = req.headers().clone();
        }
        let replay = replay
            .body(Body::empty())
            .expect("a request rebuilt from a valid one is valid");
        let mut answer = sender.send_request(replay).await?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(answer.map(Body::new));
        }
        let engine_side = hyper::upgrade::on(&mut answer);
        let (limit, stall) = (self.limit, self.stall);
        let held = self.open.hold();
        tokio::spawn(async move {
            let _held = held;
            match tokio::try_join!(client, engine_side) {
                Ok((client, engine)) => {
                    pump(TokioIo::new(client), TokioIo::new(engine), limit, stall).await
                }
                Err(e) => debug!("Socket.IO WebSocket upgrade did not complete: {e}"),
            }
        });
        let (parts, _) = answer.into_parts();
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Copies both ways until either side ends; a client frame over `limit` ends it with 1009.
/// A write that cannot finish within `stall` (a client that stopped reading) ends it too.
async fn pump<C, E>(client: C, engine: E, limit: u64, stall: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    E: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut engine_rx, mut engine_tx) = tokio::io::split(engine);
    let mut from_client = Frames::new(limit);
    let mut from_engine = Frames::new(u64::MAX);
    let mut up = vec![0u8; READ_CHUNK];
    let mut down = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            read = client_rx.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Err(TooBig(len)) = from_client.feed(&up[..n]) {
                    debug!(len, limit, "Socket.IO WebSocket message over the limit; closing");
                    within(stall, engine_tx.shutdown()).await;
                    let frame = close_frame(CLOSE_TOO_BIG, limit);
                    if from_engine.at_boundary() && within(stall, client_tx.write_all(&frame)).await {
                        linger(&mut client_rx, &mut from_client).await;
                    }
                    break;
                }
                if !within(stall, engine_tx.write_all(&up[..n])).await {
                    break;
                }
            }
            read = engine_rx.read(&mut down) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Only to know where frames end; the server's own are never refused.
                let _ = from_engine.feed(&down[..n]);
                if !within(stall, client_tx.write_all(&down[..n])).await {
                    debug!("Socket.IO WebSocket client not reading; closing");
                    break;
                }
            }
        }
    }
    within(stall, client_tx.shutdown()).await;
    within(stall, engine_tx.shutdown()).await;
}

/// Whether `io` finished without error within `stall`.
async fn within(stall: Duration, io: impl Future<Output = std::io::Result<()>>) -> bool {
    matches!(tokio::time::timeout(stall, io).await, Ok(Ok(())))
}

/// After the close frame: reads and drops what the client still sends until its own close
/// frame, its end, or [`LINGER`], so that closing does not reset the connection under the
/// client's feet (losing the close frame) while the oversized message is still arriving.
async fn linger(client_rx: &mut (impl AsyncRead + Unpin), frames: &mut Frames) {
    let mut buf = vec![0u8; READ_CHUNK];
    let drain = async {
        while !frames.closed {
            match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = frames.feed(&buf[..n]);
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A server close frame (unmasked) with `code` and a reason naming the limit.
fn close_frame(code: u16, limit: u64) -> Vec<u8> {
    let reason = format!("message over {limit} bytes");
    let mut frame = vec![0x88, 0];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame.truncate(127);
    frame[1] = u8::try_from(frame.len() - 2).expect("a close payload of at most 125 bytes");
    frame
}

/// A frame or message longer than the limit was announced: its length so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig(pub u64);

/// Follows the WebSocket framing of one direction (RFC 6455 §5.2) from the headers alone,
/// without keeping any payload: where frames end, and whether a data message (its frames
/// summed) stays within the limit.
#[derive(Debug)]
pub struct Frames {
    limit: u64,
    header: [u8; 14],
    have: usize,
    payload_left: u64,
    /// Length so far of the data message whose frames are arriving.
    message: u64,
    /// A close frame went by.
    closed: bool,
}

impl Frames {
    pub fn new(limit: u64) -> Frames {
        Frames {
            limit,
            header: [0; 14],
            have: 0,
            payload_left: 0,
            message: 0,
            closed: false,
        }
    }

    /// Follows `bytes`; fails as soon as a header announces too much.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooBig> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self
                    .payload_left
                    .min(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                self.payload_left -= n;
                bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.header_done() {
                self.have = 0;
                self.frame(len)?;
            }
        }
        Ok(())
    }

    /// Whether the bytes so far end on a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// The payload length once the header is complete.
    fn header_done(&self) -> Option<u64> {
        let h = &self.header[..self.have];
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let (extended, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            short => (0, Some(u64::from(short))),
        };
        let need = 2 + extended + if masked { 4 } else { 0 };
        if h.len() < need {
            return None;
        }
        Some(len.unwrap_or_else(|| {
            h[2..2 + extended]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        }))
    }

    fn frame(&mut self, len: u64) -> Result<(), TooBig> {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        self.payload_left = len;
        if opcode == 0x8 {
            self.closed = true;
        }
        if opcode >= 0x8 {
            // Control frames stand between a message's frames and count for none.
            return Ok(());
        }
        if opcode != 0 {
            self.message = 0;
        }
        self.message = self.message.saturating_add(len);
        if self.message > self.limit {
            return Err(TooBig(self.message));
        }
        if fin {
            self.message = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for a payload of `len` bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = header(fin, opcode, len as u64);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut stream = frame(true, 1, 100);
        stream.extend(frame(true, 1, 1000));
        stream.extend(frame(true, 9, 4));
        for chunk in [1, 3, 7, 500, stream.len()] {
            let mut f = Frames::new(1000);
            for part in stream.chunks(chunk) {
                assert_eq!(f.feed(part), Ok(()), "chunks of {chunk}");
            }
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn a_frame_announced_over_the_limit_is_refused_before_its_payload() {
        let mut f = Frames::new(1000);
        assert_eq!(f.feed(&header(true, 1, 1001)), Err(TooBig(1001)));
        let mut f = Frames::new(1000);
        assert_eq!(f.feed(&header(true, 2, 1 << 40)), Err(TooBig(1 << 40)));
    }

    #[test]
    fn a_message_of_small_frames_counts_as_a_whole() {
        let mut f = Frames::new(1000);
        assert_eq!(f.feed(&frame(false, 1, 600)), Ok(()));
        // A ping between the fragments counts for nothing.
        assert_eq!(f.feed(&frame(true, 9, 10)), Ok(()));
        assert_eq!(f.feed(&header(false, 0, 401)), Err(TooBig(1001)));
        // A finished message starts the count again.
        let mut f = Frames::new(1000);
        assert_eq!(f.feed(&frame(true, 1, 600)), Ok(()));
        assert_eq!(f.feed(&frame(true, 1, 600)), Ok(()));
    }

    #[test]
    fn the_boundary_is_known_mid_header_and_mid_payload() {
        let mut f = Frames::new(u64::MAX);
        let fr = frame(true, 1, 10);
        assert_eq!(f.feed(&fr[..1]), Ok(()));
        assert!(!f.at_boundary());
        assert_eq!(f.feed(&fr[1..8]), Ok(()));
        assert!(!f.at_boundary());
        assert_eq!(f.feed(&fr[8..]), Ok(()));
        assert!(f.at_boundary());
    }

    #[test]
    fn the_close_frame_says_1009_and_the_limit() {
        let frame = close_frame(CLOSE_TOO_BIG, 131072);
        assert_eq!(&frame[..4], &[0x88, frame.len() as u8 - 2, 0x03, 0xf1]);
        assert_eq!(&frame[4..], b"message over 131072 bytes");
    }

    #[test]
    fn only_an_upgrade_to_websocket_takes_the_guard() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "WebSocket".parse().expect("value"));
        h.insert(
            header::CONNECTION,
            "keep-alive, Upgrade".parse().expect("value"),
        );
        assert!(is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, "h2c".parse().expect("value"));
        assert!(!is_websocket_upgrade(&h));
    }
}
