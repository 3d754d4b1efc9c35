//! The built-in ACME client against Debian's pebble as the CA: a certificate obtained by
//! TLS-ALPN-01 on the HTTPS port and by HTTP-01 on the redirect port, served on HTTPS, WSS and
//! TURN over TLS (the TLS port and the HTTPS port), swapped in under an open WebSocket and a
//! TURN/TLS allocation, reused after a restart with the CA gone, and kept when the CA refuses.

mod common;
mod pebble;
mod ws_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::Server;
use pebble::Pebble;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use signalbox_stun::{attr, Class, MessageRef, MessageWriter, Method, TransactionId};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use ws_client::Ws;

const NAME: &str = "signalbox.test";
const SECRET: &str = "acme-test-secret";
const ALPN_STUN_TURN: &[u8] = b"stun.turn";

fn config(https: u16, redirect: u16, pebble: &Pebble, challenge: &str, domains: &[&str]) -> String {
    format!(
        "[server]\npublic_host = \"{NAME}\"\ndrain_grace = \"1s\"\n\n\
         [http]\nlisten = \"127.0.0.1:{https}\"\nredirect_listen = \"127.0.0.1:{redirect}\"\n\
         static_dir = {static_dir:?}\nshutdown_grace = \"1s\"\n\n\
         [tls]\nacme = true\nacme_domains = {domains:?}\nacme_email = \"ops@{NAME}\"\n\
         acme_directory = \"{directory}\"\nacme_challenge = \"{challenge}\"\nacme_ca_file = {ca:?}\n\n\
         [log]\nlevel = \"info,signalbox=debug\"\n\n[metrics]\nlisten = \"\"\n\n\
         [turn]\nlisten = [\"127.0.0.1:0\"]\nlisten_tcp = [\"127.0.0.1:0\"]\n\
         listen_tls = [\"127.0.0.1:0\"]\nrelay_ip = \"127.0.0.1\"\nrealm = \"{NAME}\"\n\
         secrets = [\"{SECRET}\"]\n",
        static_dir = common::public_dir().display().to_string(),
        directory = pebble.directory,
        ca = pebble.ca_file().display().to_string(),
    )
}

/// Waits up to a minute for `needle` in the server's log (an order takes a few seconds).
fn wait_for_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.stderr_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log:\n{}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tls_client(roots_pem: &[u8], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(cert.expect("PEM")).expect("usable root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `addr` for [`NAME`]; panics when the chain does not verify.
fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let name = ServerName::try_from(NAME).expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    tls
}

fn leaf(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().expect("certificates")[0].to_vec()
}

/// `GET path` over HTTP/1.1 inside TLS; the whole response as text.
fn https_get(addr: SocketAddr, config: Arc<rustls::ClientConfig>, path: &str) -> String {
    let mut tls = connect(addr, config);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A signaling WebSocket to the HTTPS port, verified with `config`.
async fn websocket(https: SocketAddr, config: Arc<rustls::ClientConfig>) -> Ws {
    let mut req = format!("wss://{NAME}:{}/ws", https.port())
        .into_client_request()
        .expect("request");
    let origin = format!("https://{NAME}:{}", https.port());
    req.headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    let tcp = tokio::net::TcpStream::connect(https)
        .await
        .expect("connect");
    let connector = tokio_tungstenite::Connector::Rustls(config);
    let (stream, _) = tokio::time::timeout(
        ws_client::WAIT,
        tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)),
    )
    .await
    .expect("connect in time")
    .expect("WebSocket connects");
    Ws { stream }
}

/// TURN over TLS: just enough of RFC 8656 to hold an allocation and refresh it.
struct TurnTls {
    tls: Tls,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    tid: u32,
}

impl TurnTls {
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TurnTls {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3600;
        let username = format!("{expiry}:acme-test");
        let hmac =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SECRET.as_bytes());
        let password = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&hmac, username.as_bytes()).as_ref());
        let key: [u8; 16] = {
            use md5::{Digest, Md5};
            Md5::digest(format!("{username}:{NAME}:{password}").as_bytes()).into()
        };
        TurnTls {
            tls: connect(addr, config),
            username,
            key,
            nonce: Vec::new(),
            tid: 0,
        }
    }

    /// Sends a request (signed once a nonce is known) and returns (class, error code).
    fn call(
        &mut self,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriter<'_>),
    ) -> (Class, Option<u16>) {
        self.tid += 1;
        let mut tid = [7u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method, Class::Request, TransactionId(tid));
        attrs(&mut w);
        if !self.nonce.is_empty() {
            w.attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, NAME.as_bytes())
                .attr(attr::NONCE, &self.nonce)
                .integrity(&self.key);
        }
        w.fingerprint();
        w.finish();
        self.tls.write_all(&buf).expect("write");
        let mut header = [0u8; 20];
        self.tls.read_exact(&mut header).expect("an answer");
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut whole = header.to_vec();
        whole.resize(20 + len, 0);
        self.tls
            .read_exact(&mut whole[20..])
            .expect("the whole answer");
        let msg = MessageRef::parse(&whole).expect("STUN");
        if let Some(nonce) = msg.get(attr::NONCE) {
            self.nonce = nonce.to_vec();
        }
        let code = msg.error_code().and_then(Result::ok).map(|(c, _)| c);
        (msg.class(), code)
    }

    fn allocate(&mut self) {
        let udp = |w: &mut MessageWriter<'_>| {
            w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        };
        assert_eq!(self.call(Method::ALLOCATE, &udp), (Class::Error, Some(401)));
        assert_eq!(self.call(Method::ALLOCATE, &udp), (Class::Success, None));
    }

    fn refresh(&mut self) -> (Class, Option<u16>) {
        self.call(Method::REFRESH, &|w| {
            w.attr(attr::LIFETIME, &600u32.to_be_bytes());
        })
    }

    fn binding(&mut self) -> (Class, Option<u16>) {
        self.call(Method::BINDING, &|_| {})
    }
}

/// HTTPS, TURN over TLS on the HTTPS port (ALPN `stun.turn`) and on the TLS port all present a
/// chain that verifies with pebble's root alone; returns the leaf they share.
fn assert_served_from_pebble(server: &Server, root: &[u8]) -> Vec<u8> {
    let https = server.addr("https");
    let page = https_get(https, tls_client(root, &[b"http/1.1"]), "/healthz");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "HSTS once the CA's certificate is in use: {page}"
    );
    let mut one_port = TurnTls::connect(https, tls_client(root, &[ALPN_STUN_TURN]));
    assert_eq!(one_port.binding(), (Class::Success, None));
    let mut tls_port = TurnTls::connect(server.addr("turn-tls"), tls_client(root, &[]));
    assert_eq!(tls_port.binding(), (Class::Success, None));
    let cert = leaf(&one_port.tls);
    assert_eq!(cert, leaf(&tls_port.tls), "one certificate on every port");
    cert
}

fn assert_private(dir: &Path, files: &[&str]) {
    for f in files {
        let mode = std::fs::metadata(dir.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} is mode {:o}", mode & 0o777);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn_01_swaps_the_certificate_under_open_calls_and_a_restart_reuses_it() {
    let (https_port, redirect_port) = (pebble::free_port(), pebble::free_port());
    let mut ca = Pebble::start(https_port, redirect_port);
    // No DNS record yet: the first order fails and the self-signed certificate stays.
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(https_port, redirect_port, &ca, "tls-alpn-01", &[]);
    let server = Server::start_in(dir, &cfg, &[]);
    wait_for_log(&server, "ACME: no certificate for signalbox.test from");
    let failure = server.stderr_text();
    assert!(
        failure.contains("the self-signed certificate stays in service")
            && failure.contains("next attempt in 2 minutes"),
        "{failure}"
    );
    let https = server.addr("https");
    let self_signed =
        std::fs::read(server.dir.path().join("certs/selfsigned-cert.pem")).expect("self-signed");
    let page = https_get(
        https,
        tls_client(&self_signed, &[b"http/1.1"]),
        "/healthz?deep=1",
    );
    assert!(
        !page
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "no HSTS yet: {page}"
    );
    assert!(
        page.contains("\"name\":\"acme\",\"status\":\"warn\""),
        "{page}"
    );

    // An open call: a WebSocket in a room and a TURN allocation over TLS.
    let mut early = websocket(https, tls_client(&self_signed, &[])).await;
    early.join("swap").await;
    let mut turn = TurnTls::connect(server.addr("turn-tls"), tls_client(&self_signed, &[]));
    turn.allocate();

    // The name resolves now; a reload retries the failed order at once.
    ca.add_a(NAME).await;
    server.signal(libc::SIGHUP);
    wait_for_log(&server, "ACME: certificate for signalbox.test in service");

    let root = ca.issuing_root().await;
    let issued = assert_served_from_pebble(&server, root.as_bytes());
    let mut late = websocket(https, tls_client(root.as_bytes(), &[])).await;
    let joined = late.join("swap").await;
    let seen = early.recv_type("peer-joined").await;
    assert_eq!(
        seen["peer"]["id"], joined["id"],
        "the WebSocket opened before the swap"
    );
    early.barrier().await;
    assert_eq!(
        turn.refresh(),
        (Class::Success, None),
        "the allocation made before the swap lives on"
    );
    let page = https_get(
        https,
        tls_client(root.as_bytes(), &[b"http/1.1"]),
        "/healthz?deep=1",
    );
    assert!(
        page.contains("\"name\":\"acme\",\"status\":\"ok\""),
        "{page}"
    );
    let certs = server.dir.path().join("certs");
    assert_private(
        &certs,
        &["acme-account.json", "acme-cert.pem", "acme-key.pem"],
    );
    drop((early, late, turn));

    // Restart with the CA gone: the stored certificate serves at once, the CA is not asked.
    ca.stop_ca();
    let dir = server.into_dir();
    let server = Server::start_in(dir, &cfg, &[]);
    assert!(
        server.log_contains("certificate from the ACME CA"),
        "{}",
        server.stderr_text()
    );
    assert_eq!(assert_served_from_pebble(&server, root.as_bytes()), issued);
    std::thread::sleep(Duration::from_secs(2));
    let log = server.stderr_text();
    assert!(
        !log.contains("ACME: requesting") && !log.contains("ACME: no certificate"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_01_on_the_redirect_port_and_a_refusal_keeps_the_certificate_in_service() {
    let (https_port, redirect_port) = (pebble::free_port(), pebble::free_port());
    let ca = Pebble::start(https_port, redirect_port);
    ca.add_a(NAME).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(https_port, redirect_port, &ca, "http-01", &[]);
    let server = Server::start_in(dir, &cfg, &[]);
    wait_for_log(&server, "ACME: certificate for signalbox.test in service");
    let root = ca.issuing_root().await;
    let issued = assert_served_from_pebble(&server, root.as_bytes());
    let mut ws = websocket(server.addr("https"), tls_client(root.as_bytes(), &[])).await;
    ws.join("http01").await;
    drop(ws);

    // A second name that does not resolve: the CA refuses the order; the certificate in
    // service stays, and the log says why in one line.
    let dir = server.into_dir();
    let two = config(
        https_port,
        redirect_port,
        &ca,
        "http-01",
        &[NAME, "unresolvable.test"],
    );
    let server = Server::start_in(dir, &two, &[]);
    wait_for_log(
        &server,
        "ACME: no certificate for signalbox.test, unresolvable.test from",
    );
    let log = server.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("ACME: no certificate for"))
        .expect("the failure line");
    assert!(
        line.contains("the CA refused")
            && line.contains("unresolvable.test")
            && line.contains("the certificate from the CA stays in service"),
        "{line}\n{}",
        ca.log()
    );
    assert_eq!(assert_served_from_pebble(&server, root.as_bytes()), issued);
}

/// `signalbox check-config` on `config`: (exit code, stdout, stderr).
fn check_config(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.toml"), config).expect("write config");
    common::run_cli(dir.path(), &["check-config"])
}

#[test]
fn check_config_refuses_what_no_ca_can_issue_in_one_line_naming_the_key() {
    for (config, key) in [
        ("[server]\npublic_host = \"203.0.113.9\"\n[tls]\nacme = true\n", "server.public_host"),
        ("[tls]\nacme = true\nacme_domains = [\"198.51.100.4\"]\n", "tls.acme_domains"),
        (
            "[server]\npublic_host = \"call.example.org\"\n[tls]\nacme = true\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
            "tls.acme",
        ),
        (
            "[server]\npublic_host = \"call.example.org\"\n[tls]\nacme = true\nacme_challenge = \"http-01\"\n",
            "http.redirect_listen",
        ),
    ] {
        let (code, _, err) = check_config(config);
        assert_eq!(code, 2, "{config}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(err.contains(&format!("key `{key}`")), "{key} not in {err:?}");
    }
}

#[test]
fn check_config_says_which_port_a_public_ca_will_use() {
    let (code, out, err) =
        check_config("[server]\npublic_host = \"call.example.org\"\n[tls]\nacme = true\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(
        err.contains("warning:") && err.contains("port 443") && err.contains("8443"),
        "{err}"
    );
    let (code, _, err) = check_config(
        "[server]\npublic_host = \"call.example.org\"\n[http]\nlisten = \"0.0.0.0:443\"\n\
         redirect_listen = \"0.0.0.0:80\"\n[tls]\nacme = true\n",
    );
    assert_eq!(
        (code, err.as_str()),
        (0, ""),
        "the CA's ports: nothing to say"
    );
    let (code, _, err) = check_config(
        "[server]\npublic_host = \"call.example.org\"\n[http]\nredirect_listen = \"0.0.0.0:8080\"\n\
         [tls]\nacme = true\nacme_challenge = \"http-01\"\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("port 80") && err.contains("8080"), "{err}");
}
