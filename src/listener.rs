//! The HTTPS listener: accept, count, tell protocols apart, TLS, then HTTP or TURN.
//!
//! One accept loop sees every connection first, so the connection caps, TLS, the one-port
//! protocol split and graceful shutdown live in one place. A connection over the total or the
//! per-address cap (`[http] max_connections`, `max_connections_per_ip`; [`crate::caps`]) is
//! closed at once, before any TLS work. The rest must send its first bytes and finish the TLS
//! handshake within `tls_handshake_timeout` of being accepted; [`crate::http`] bounds what
//! follows. A connection keeps its place in the caps until it closes, also after an upgrade to
//! a WebSocket or a hand-over to TURN, which count it in their own caps as well.
//!
//! With `[http] proxy_protocol` on, a PROXY header from a trusted proxy is read first of all
//! ([`crate::proxy`]): the caps then count the client it names (the proxy itself is held to the
//! total cap only), and everything after, logs and rate limits included, sees that client.
//!
//! With a [`TurnStreams`] handler installed (one-port mode), a plain STUN start is TURN over
//! TCP and a STUN start inside TLS (or the ALPN `stun.turn`, RFC 7443) is TURN over TLS;
//! everything else is HTTP/1.1 or HTTP/2 by ALPN.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::caps::{ConnPermit, ConnectionCaps, Edge};
use crate::demux::{self, Protocol, Rewind, Stream};
use crate::http::{HttpLimits, HttpServer};
use crate::metrics::{METRICS, TLS_FAILED, TLS_OK, TLS_TIMED_OUT};

/// ALPN protocol id for TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// A TURN session that arrived on the HTTPS port.
pub struct TurnStream {
    pub io: Box<dyn Stream>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// True when the session runs inside TLS (`turns:`), false for plain TCP (`turn:…?transport=tcp`).
    pub tls: bool,
    /// When the connection was accepted: the TURN handshake deadline runs from here.
    pub accepted: Instant,
}

/// Takes TURN sessions found on the HTTPS port (one-port mode).
pub type TurnStreams = Arc<dyn Fn(TurnStream) + Send + Sync>;

/// What every connection of the listener needs.
#[derive(Clone)]
pub struct Listener {
    pub acceptor: TlsAcceptor,
    pub router: Router,
    pub turn: Option<TurnStreams>,
    pub limits: HttpLimits,
}

impl Listener {
    /// Accepts until `shutdown` fires, then waits up to `grace` for open HTTP connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let caps = ConnectionCaps::exempting(
            Edge::Https,
            self.limits.max_connections,
            self.limits.max_connections_per_ip,
            self.limits.proxy.trusted.clone(),
        );
        let http = Arc::new(HttpServer::new(self.router.clone(), self.limits.clone()));
        let this = Arc::new(self);
        // Every connection task holds a sender; when all are gone, all have ended.
        let (serving, mut all_ended) = mpsc::channel::<()>(1);
        let mut backoff = Duration::from_millis(5);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => { backoff = Duration::from_millis(5); conn }
                    Err(e) => {
                        // Usually EMFILE: wait for descriptors to free up instead of spinning.
                        warn!("accept failed: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let Ok(permit) = caps.acquire(peer.ip()) else {
                // Closed at once: nothing was read and no TLS state exists yet.
                drop(tcp);
                continue;
            };
            let accepted = Instant::now();
            let (this, http, serving) = (this.clone(), http.clone(), serving.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(peer);
                let deadline = accepted + this.limits.tls_handshake_timeout;
                // The PROXY header comes before TLS; the caps then count the client it names.
                let Some((peer, first, permit)) = this
                    .limits
                    .proxy
                    .arrive(&mut tcp, peer, deadline, permit)
                    .await
                else {
                    return;
                };
                let tcp = Counted {
                    io: tcp,
                    _permit: permit,
                };
                let opened = this.open(tcp, first, peer, local, accepted, deadline);
                let Some((io, h2)) = opened.await else {
                    return;
                };
                let _serving = serving;
                http.serve(io, h2, peer, shutdown, grace).await;
            });
        }
        drop(listener);
        drop(serving);
        info!("no longer accepting; waiting up to {grace:?} for open connections");
        if tokio::time::timeout(grace, all_ended.recv()).await.is_err() {
            warn!("connections still open after {grace:?}; closing them");
        }
    }

    /// Runs the protocol split and the TLS handshake, all before `deadline`; `read` holds the
    /// bytes already read after a PROXY header. Returns the stream to serve as HTTP and whether
    /// the client chose HTTP/2, or `None` when the connection went to TURN or was dropped.
    async fn open(
        &self,
        mut tcp: Counted<TcpStream>,
        read: Vec<u8>,
        peer: SocketAddr,
        local: SocketAddr,
        accepted: Instant,
        deadline: Instant,
    ) -> Option<(Box<dyn Stream>, bool)> {
        let first = match &self.turn {
            // No one-port mode: every connection is HTTPS.
            None => read,
            Some(turn) => {
                let prefix = read_prefix(&mut tcp, read);
                let Ok(first) = tokio::time::timeout_at(deadline, prefix).await else {
                    debug!(%peer, "no first bytes within tls_handshake_timeout");
                    return None;
                };
                let first = first.ok()?;
                match demux::classify(&first) {
                    Protocol::Stun => {
                        turn(TurnStream {
                            io: Box::new(Rewind::new(first, tcp)),
                            peer,
                            local,
                            tls: false,
                            accepted,
                        });
                        return None;
                    }
                    Protocol::Tls => first,
                    Protocol::Other | Protocol::NeedMore => {
                        debug!(%peer, "neither TLS nor STUN on the HTTPS port; closing");
                        if first.first().is_some_and(u8::is_ascii_alphabetic) {
                            refuse_plain_http(tcp).await;
                        }
                        return None;
                    }
                }
            }
        };
        let mut tls = accept_tls(&self.acceptor, Rewind::new(first, tcp), deadline, peer).await?;
        if crate::tls::acme::is_validation(tls.get_ref().1) {
            return None; // a CA's TLS-ALPN-01 check: the handshake was the answer
        }
        let alpn = tls.get_ref().1.alpn_protocol();
        let alpn_turn = alpn == Some(ALPN_STUN_TURN);
        if let Some(alpn) = alpn.filter(|_| !alpn_turn) {
            // h2 or http/1.1 negotiated: HTTP, no need to look at the bytes.
            let h2 = alpn == b"h2";
            return Some((Box::new(tls), h2));
        }
        let Some(turn) = &self.turn else {
            return Some((Box::new(tls), false));
        };
        let inner = if alpn_turn {
            Vec::new()
        } else {
            match tokio::time::timeout_at(deadline, read_prefix(&mut tls, Vec::new())).await {
                Ok(Ok(first)) => first,
                _ => {
                    debug!(%peer, "no first bytes after TLS within tls_handshake_timeout");
                    return None;
                }
            }
        };
        if alpn_turn || demux::classify(&inner) == Protocol::Stun {
            turn(TurnStream {
                io: Box::new(Rewind::new(inner, tls)),
                peer,
                local,
                tls: true,
                accepted,
            });
            return None;
        }
        // No ALPN: HTTP/1.1, or HTTP/2 with prior knowledge (its preface starts `PRI `).
        let h2 = inner.starts_with(b"PRI ");
        Some((Box::new(Rewind::new(inner, tls)), h2))
    }
}

/// The one TLS accept path of every listener (HTTPS and TURN over TLS): the handshake must
/// finish by `deadline`. Each outcome is counted in `signalbox_tls_handshakes_total{result}`;
/// `None` when it failed or timed out (logged at debug level: the internet is full of both).
pub async fn accept_tls<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    io: S,
    deadline: Instant,
    peer: SocketAddr,
) -> Option<TlsStream<S>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
        Ok(Ok(tls)) => {
            METRICS.tls_handshakes.at(TLS_OK).inc();
            Some(tls)
        }
        Ok(Err(e)) => {
            METRICS.tls_handshakes.at(TLS_FAILED).inc();
            debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            METRICS.tls_handshakes.at(TLS_TIMED_OUT).inc();
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A stream that holds its place in the HTTPS caps for as long as it is open, through an
/// upgrade to a WebSocket or a hand-over to TURN.
struct Counted<S> {
    io: S,
    _permit: ConnPermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Tells a person who typed `http://` at the HTTPS port what to do, like other servers do.
async fn refuse_plain_http<S: AsyncRead + AsyncWrite + Unpin>(mut tcp: S) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = "This port speaks HTTPS. Use an https:// address.\n";
    // Read what the client already sent, so closing does not reset the connection before it
    // has read the answer.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut sink)).await;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Reads until [`demux::classify`] can decide (at most eight bytes are needed), after the
/// bytes in `buf` that were already read.
async fn read_prefix<S: AsyncRead + Unpin>(
    s: &mut S,
    mut buf: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut chunk = [0u8; 16];
    loop {
        if demux::classify(&buf) != Protocol::NeedMore {
            return Ok(buf);
        }
        let n = s.read(&mut chunk[..8 - buf.len().min(7)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{self, CertSource, CertStore};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    const STUN_ALLOCATE: [u8; 20] = [
        0x00, 0x03, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    struct Fixture {
        addr: SocketAddr,
        sessions: mpsc::UnboundedReceiver<(bool, Vec<u8>)>,
        _shutdown: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    /// A listener in one-port mode whose TURN handler reports (tls, first 20 bytes read).
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = CertStore::load(CertSource::Generated {
            dir: dir.path().to_path_buf(),
            hosts: vec!["localhost".into()],
        })
        .expect("generated certificate");
        let config = tls::server_config(store, &[b"h2", b"http/1.1", ALPN_STUN_TURN]);
        let (tx, sessions) = mpsc::unbounded_channel();
        let turn: TurnStreams = Arc::new(move |mut s: TurnStream| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 20];
                if s.io.read_exact(&mut buf).await.is_ok() {
                    let _ = tx.send((s.tls, buf));
                }
            });
        });
        let router = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, rx) = watch::channel(false);
        let l = Listener {
            acceptor: TlsAcceptor::from(config),
            router,
            turn: Some(turn),
            limits: HttpLimits::default(),
        };
        tokio::spawn(l.serve(listener, rx, Duration::from_secs(1)));
        Fixture {
            addr,
            sessions,
            _shutdown: shutdown,
            _dir: dir,
        }
    }

    fn client(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        #[derive(Debug)]
        struct Any;
        impl rustls::client::danger::ServerCertVerifier for Any {
            fn verify_server_cert(
                &self,
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &[rustls::pki_types::CertificateDer<'_>],
                _: &rustls::pki_types::ServerName<'_>,
                _: &[u8],
                _: rustls::pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .supported_schemes()
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    fn name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("localhost").expect("name")
    }

    #[tokio::test]
    async fn plain_stun_on_the_https_port_is_turn_over_tcp_with_its_bytes_intact() {
        let mut f = fixture().await;
        let mut tcp = TcpStream::connect(f.addr).await.expect("connect");
        // Split across writes: the demultiplexer must wait for the cookie.
        tcp.write_all(&STUN_ALLOCATE[..3]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(30)).await;
        tcp.write_all(&STUN_ALLOCATE[3..]).await.expect("write");
        let (tls, bytes) = f.sessions.recv().await.expect("a TURN session");
        assert!(!tls);
        assert_eq!(bytes, STUN_ALLOCATE);
    }

    #[tokio::test]
    async fn stun_inside_tls_without_alpn_is_turn_over_tls() {
        let mut f = fixture().await;
        let tcp = TcpStream::connect(f.addr).await.expect("connect");
        let mut tls = client(&[]).connect(name(), tcp).await.expect("handshake");
        tls.write_all(&STUN_ALLOCATE).await.expect("write");
        let (is_tls, bytes) = f.sessions.recv().await.expect("a TURN session");
        assert!(is_tls);
        assert_eq!(bytes, STUN_ALLOCATE);
    }

    #[tokio::test]
    async fn the_stun_turn_alpn_is_accepted_and_means_turn() {
        let mut f = fixture().await;
        let tcp = TcpStream::connect(f.addr).await.expect("connect");
        let mut tls = client(&[ALPN_STUN_TURN])
            .connect(name(), tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_STUN_TURN));
        tls.write_all(&STUN_ALLOCATE).await.expect("write");
        let (is_tls, bytes) = f.sessions.recv().await.expect("a TURN session");
        assert!(is_tls);
        assert_eq!(bytes, STUN_ALLOCATE);
    }

    #[tokio::test]
    async fn http_without_alpn_inside_tls_is_still_served() {
        let mut f = fixture().await;
        let tcp = TcpStream::connect(f.addr).await.expect("connect");
        let mut tls = client(&[]).connect(name(), tcp).await.expect("handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        tls.read_to_string(&mut out).await.expect("read");
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("hello"),
            "{out}"
        );
        assert!(f.sessions.try_recv().is_err(), "no TURN session for HTTP");
    }

    #[tokio::test]
    async fn plain_http_on_the_https_port_gets_a_400_that_says_so() {
        let mut f = fixture().await;
        let mut tcp = TcpStream::connect(f.addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .expect("closed, not hung");
        assert!(n.is_ok());
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 400") && out.contains("HTTPS"),
            "{out}"
        );
        assert!(f.sessions.try_recv().is_err());
    }

    #[tokio::test]
    async fn junk_that_is_neither_tls_nor_stun_is_closed() {
        let mut f = fixture().await;
        let mut tcp = TcpStream::connect(f.addr).await.expect("connect");
        tcp.write_all(&[0, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .expect("closed, not hung");
        assert!(out.is_empty(), "{read:?}");
        assert!(f.sessions.try_recv().is_err());
    }
}
