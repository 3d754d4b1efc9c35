//! A signaling client for tests: tokio-tungstenite over rustls, trusting exactly the test
//! server's generated certificate, with helpers that wait a bounded time for each message.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::common::Server;

/// How long any single expected message may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub stream: Stream,
}

pub fn tls_config(server: &Server) -> Arc<rustls::ClientConfig> {
    tls_config_trusting(&[server])
}

/// A TLS client that trusts the generated certificates of all of `servers` (nodes behind one
/// balancer).
pub fn tls_config_trusting(servers: &[&Server]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for server in servers {
        let path = server.dir.path().join("certs/selfsigned-cert.pem");
        let cert = CertificateDer::from_pem_file(&path).expect("generated certificate");
        roots.add(cert).expect("certificate is usable as a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The origin a browser on this test server's page would send.
pub fn own_origin(server: &Server) -> String {
    format!("https://{}", server.addr("https"))
}

/// Opens `/ws` with the given `Origin` (or none).
pub async fn try_connect(server: &Server, origin: Option<&str>) -> Result<Ws, WsError> {
    let url = format!("wss://{}/ws", server.addr("https"));
    connect_url(&url, origin, tls_config(server)).await
}

/// Opens `url` with the given `Origin` (or none), trusting what `tls` trusts.
pub async fn connect_url(
    url: &str,
    origin: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Ws, WsError> {
    let mut req = url.into_client_request()?;
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(o).expect("origin header"));
    }
    let connector = Connector::Rustls(tls);
    let (stream, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector)),
    )
    .await
    .expect("connect in time")?;
    Ok(Ws { stream })
}

/// Opens `/ws` with this server's own origin from the local address `from` (any address of
/// 127.0.0.0/8 is a client address of its own).
pub async fn connect_from(server: &Server, from: std::net::IpAddr) -> Ws {
    let url = format!("wss://{}/ws", server.addr("https"));
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&own_origin(server)).expect("origin header"),
    );
    Ws {
        stream: upgrade_from(server, from, req).await,
    }
}

/// Sends the WebSocket upgrade `req` to the server's HTTPS port over TLS from the local address
/// `from`, and returns the upgraded stream.
pub async fn upgrade_from(
    server: &Server,
    from: std::net::IpAddr,
    req: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Stream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("bind the client address");
    let tcp = tokio::time::timeout(WAIT, socket.connect(server.addr("https")))
        .await
        .expect("connect in time")
        .expect("TCP connects");
    let connector = Connector::Rustls(tls_config(server));
    let (stream, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)),
    )
    .await
    .expect("upgrade in time")
    .expect("WebSocket connects");
    stream
}

impl Ws {
    pub async fn connect(server: &Server) -> Ws {
        try_connect(server, Some(&own_origin(server)))
            .await
            .expect("WebSocket connects")
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send frame");
    }

    /// The next JSON message; panics on close, timeout or a non-text frame.
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message in time");
            match next {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).expect("server sends JSON")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next message, which must be of `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "unexpected message {v}");
        v
    }

    /// The next message, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// Joins `room` and returns the `joined` message.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type":"join","room":room})).await;
        self.recv_type("joined").await
    }

    pub async fn join_named(&mut self, room: &str, name: &str) -> Value {
        self.send(json!({"type":"join","room":room,"name":name}))
            .await;
        self.recv_type("joined").await
    }

    /// Proves nothing else is queued for this client: a `ping` goes through the hub in order
    /// with everything addressed to this connection, so the very next message must be `pong`.
    pub async fn barrier(&mut self) {
        self.send(json!({"type":"ping"})).await;
        let v = self.recv().await;
        assert_eq!(
            v,
            json!({"type":"pong"}),
            "something was queued before the pong"
        );
    }

    /// Waits for the server's close frame (skipping other frames) and returns it.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close in time");
            match next {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Reads whatever has arrived, waiting at most a millisecond. It does wait: polled once
    /// without yielding, the socket's readiness is never updated while this task keeps the
    /// runtime busy, so a message that did arrive goes unseen.
    pub async fn try_recv(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(Duration::from_millis(1), self.stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Drops the TCP connection without a WebSocket close frame.
    pub fn drop_without_close(self) {
        drop(self.stream);
    }
}
