//! The HTTPS listener: accept, tell protocols apart, TLS, then HTTP or TURN.
//!
//! One accept loop sees every connection first, so TLS, the one-port protocol split and
//! graceful shutdown live in one place. With a [`TurnStreams`] handler installed (one-port
//! mode), a plain STUN start is TURN over TCP and a STUN start inside TLS (or the ALPN
//! `stun.turn`, RFC 7443) is TURN over TLS; everything else is HTTP/1.1 or HTTP/2 by ALPN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tracing::{debug, info, warn};

use crate::demux::{self, Protocol, Rewind};
use crate::metrics::METRICS;

/// Time a client gets to finish the TLS handshake, and to send its first bytes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN protocol id for TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// A byte stream of any transport.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A TURN session that arrived on the HTTPS port.
pub struct TurnStream {
    pub io: Box<dyn Stream>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// True when the session runs inside TLS (`turns:`), false for plain TCP (`turn:…?transport=tcp`).
    pub tls: bool,
}

/// Takes TURN sessions found on the HTTPS port (one-port mode).
pub type TurnStreams = Arc<dyn Fn(TurnStream) + Send + Sync>;

/// What every connection of the listener needs.
#[derive(Clone)]
pub struct Listener {
    pub acceptor: TlsAcceptor,
    pub router: Router,
    pub turn: Option<TurnStreams>,
}

impl Listener {
    /// Accepts until `shutdown` fires, then waits up to `grace` for open HTTP connections.
    pub async fn serve(
        self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let graceful = GracefulShutdown::new();
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
            let this = self.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().unwrap_or(peer);
                let Some(conn) = this.open(tcp, peer, local).await else {
                    return;
                };
                let router = this.router;
                let service =
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        let mut router = router.clone();
                        async move {
                            let resp = match router.call(req).await {
                                Ok(resp) => resp,
                                Err(never) => match never {},
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    debug!(%peer, "connection ended: {e}");
                }
            });
        }
        drop(listener);
        info!("no longer accepting; waiting up to {grace:?} for open connections");
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!("connections still open after {grace:?}; closing them");
        }
    }

    /// Runs the protocol split and the TLS handshake. Returns the stream to serve as HTTP, or
    /// `None` when the connection went to TURN or was dropped.
    async fn open(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Box<dyn Stream>> {
        let within = |what| async move {
            debug!(%peer, "{what} timed out");
        };
        let Some(turn) = &self.turn else {
            // No one-port mode: every connection is HTTPS.
            return match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    METRICS.tls_handshakes.at(0).inc();
                    if crate::acme::is_validation(tls.get_ref().1) {
                        return None;
                    }
                    Some(Box::new(tls))
                }
                Ok(Err(e)) => {
                    METRICS.tls_handshakes.at(1).inc();
                    debug!(%peer, "TLS handshake failed: {e}");
                    None
                }
                Err(_) => {
                    within("TLS handshake").await;
                    None
                }
            };
        };
        let mut tcp = tcp;
        let Ok(first) = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_prefix(&mut tcp)).await else {
            within("first bytes").await;
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
                });
                return None;
            }
            Protocol::Tls => {}
            Protocol::Other | Protocol::NeedMore => {
                debug!(%peer, "neither TLS nor STUN on the HTTPS port; closing");
                if first.first().is_some_and(u8::is_ascii_alphabetic) {
                    refuse_plain_http(tcp).await;
                }
                return None;
            }
        }
        let handshake = self.acceptor.accept(Rewind::new(first, tcp));
        let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => {
                METRICS.tls_handshakes.at(0).inc();
                tls
            }
            Ok(Err(e)) => {
                METRICS.tls_handshakes.at(1).inc();
                debug!(%peer, "TLS handshake failed: {e}");
                return None;
            }
            Err(_) => {
                within("TLS handshake").await;
                return None;
            }
        };
        if crate::acme::is_validation(tls.get_ref().1) {
            return None; // a CA's TLS-ALPN-01 check: the handshake was the answer
        }
        let alpn_turn = tls.get_ref().1.alpn_protocol() == Some(ALPN_STUN_TURN);
        if !alpn_turn && tls.get_ref().1.alpn_protocol().is_some() {
            // h2 or http/1.1 negotiated: HTTP, no need to look at the bytes.
            return Some(Box::new(tls));
        }
        let inner = if alpn_turn {
            Vec::new()
        } else {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_prefix(&mut tls)).await {
                Ok(Ok(first)) => first,
                _ => {
                    within("first bytes after TLS").await;
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
            });
            return None;
        }
        Some(Box::new(Rewind::new(inner, tls)))
    }
}

/// Tells a person who typed `http://` at the HTTPS port what to do, like other servers do.
async fn refuse_plain_http(mut tcp: TcpStream) {
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

/// Reads until [`demux::classify`] can decide (at most eight bytes are needed).
async fn read_prefix<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(16);
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
