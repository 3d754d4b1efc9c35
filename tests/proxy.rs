//! Behind a proxy, against the real binary: PROXY protocol v1 and v2 from a trusted address set
//! the client address the per-address caps, the TURN core and the log see, a header from any
//! other address is refused, `X-Forwarded-For` counts for the API rate limit only from a trusted
//! proxy, and a real HAProxy (`send-proxy-v2`) and nginx (stream, `proxy_protocol on`) in front
//! of the HTTPS port carry an HTTPS request and a WebSocket join with the original client
//! address. Loopback only: any 127/8 address is a client of its own.

mod common;
mod ws_client;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const KEY: &str = "0123456789abcdef-proxy-test";

fn v1(client: &str, server: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("client address");
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

fn v2(client: &str, server: SocketAddr) -> Vec<u8> {
    let client: SocketAddr = client.parse().expect("client address");
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, server),
    )
    .build()
    .expect("v2 header")
}

/// A TCP connection to `to` from the local address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// True when the server closes `s` within `limit` (without sending anything).
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `GET /healthz` over TLS on `tcp`; the status line.
async fn healthz_over(server: &Server, tcp: TcpStream) -> String {
    let mut config = (*ws_client::tls_config(server)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .ok();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn start_proxied(http: &str, extra: &str) -> Server {
    Server::start(&common::config_with_http(
        &format!("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n{http}"),
        extra,
    ))
}

/// Waits (bounded) until the server's log contains `needle`.
async fn wait_for_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log_contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log:\n{}",
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn proxy_headers_from_a_trusted_address_set_the_client_the_caps_and_the_log_see() {
    let server = start_proxied(
        "max_connections_per_ip = 2\ntls_handshake_timeout = \"30s\"",
        "",
    );
    let https = server.addr("https");
    // Two connections for 203.0.113.7 (one v1, one v2) hold that client's places.
    let mut held = Vec::new();
    for header in [
        v1("203.0.113.7:40001", https),
        v2("203.0.113.7:40002", https),
    ] {
        let mut tcp = connect_from(PROXY, https).await;
        tcp.write_all(&header).await.expect("header");
        held.push(tcp);
    }
    // Each connection is its own task on the server: wait until both are counted.
    wait_for_log(&server, "client=203.0.113.7:40001").await;
    wait_for_log(&server, "client=203.0.113.7:40002").await;
    // A third for the same client is over its cap, although the proxy holds only two.
    let mut third = connect_from(PROXY, https).await;
    third
        .write_all(&v2("203.0.113.7:40003", https))
        .await
        .expect("header");
    assert!(
        closed_within(&mut third, Duration::from_secs(3)).await,
        "over the cap by the forwarded address"
    );
    wait_for_log(&server, "address=203.0.113.7").await;
    assert!(server.log_contains("HTTPS connection refused"));
    // Another client through the same proxy is served: the proxy itself is exempt.
    for header in [
        v1("198.51.100.9:5000", https),
        v2("198.51.100.10:5000", https),
    ] {
        let mut tcp = connect_from(PROXY, https).await;
        tcp.write_all(&header).await.expect("header");
        assert_eq!(healthz_over(&server, tcp).await, "HTTP/1.1 200 OK");
    }
    wait_for_log(&server, "client=198.51.100.10:5000 proxy=127.0.0.1").await;
    let m = server.metrics();
    assert!(m["signalbox_proxy_headers_total{result=\"accepted\"}"] >= 5.0);
    assert!(m["signalbox_connections_refused_total{cap=\"https_per_address\"}"] >= 1.0);
    drop(held);
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_address_is_refused_and_direct_clients_still_served() {
    let server = start_proxied("", "");
    let https = server.addr("https");
    for header in [v1("203.0.113.7:1", https), v2("203.0.113.7:2", https)] {
        let mut tcp = connect_from(STRANGER, https).await;
        tcp.write_all(&header).await.expect("header");
        assert!(
            closed_within(&mut tcp, Duration::from_secs(3)).await,
            "refused"
        );
    }
    wait_for_log(&server, "not in [http] trusted_proxies").await;
    assert!(
        !server.log_contains("203.0.113.7"),
        "the claim was not believed"
    );
    // Without a header the same address is an ordinary client.
    let direct = connect_from(STRANGER, https).await;
    assert_eq!(healthz_over(&server, direct).await, "HTTP/1.1 200 OK");
    let m = server.metrics();
    assert!(m["signalbox_proxy_headers_total{result=\"untrusted\"}"] >= 2.0);
    assert_eq!(m["signalbox_proxy_headers_total{result=\"accepted\"}"], 0.0);
}

/// A STUN Binding request over a stream; returns the XOR-MAPPED-ADDRESS of the answer.
async fn binding<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> SocketAddr {
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[7; 12]);
    s.write_all(&req).await.expect("binding");
    let mut head = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&head[..2], &[0x01, 0x01], "a Binding success");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
    s.read_exact(&mut body).await.expect("attributes");
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = &body[at + 4..at + 4 + len];
        if kind == 0x0020 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ 0x2112;
            let ip = [
                value[4] ^ 0x21,
                value[5] ^ 0x12,
                value[6] ^ 0xA4,
                value[7] ^ 0x42,
            ];
            return SocketAddr::from((ip, port));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    panic!("no IPv4 XOR-MAPPED-ADDRESS in {body:?}");
}

#[tokio::test]
async fn the_turn_tcp_listener_takes_the_client_from_a_trusted_proxy_header() {
    let server = Server::start(&common::config_with_http(
        "trusted_proxies = [\"127.0.0.1\"]",
        "[turn]\nlisten = \"127.0.0.1:0\"\nrelay_ip = \"127.0.0.1\"\nproxy_protocol = true\nworkers = 1\n",
    ));
    let turn = server.addr("turn-tcp");
    let mut tcp = connect_from(PROXY, turn).await;
    tcp.write_all(&v1("203.0.113.7:40000", turn))
        .await
        .expect("header");
    assert_eq!(
        binding(&mut tcp).await,
        "203.0.113.7:40000".parse::<SocketAddr>().expect("addr"),
        "the TURN core sees the client the proxy named"
    );
    let mut refused = connect_from(STRANGER, turn).await;
    refused
        .write_all(&v2("203.0.113.7:1", turn))
        .await
        .expect("header");
    assert!(closed_within(&mut refused, Duration::from_secs(3)).await);
    wait_for_log(&server, "TURN stream connection refused").await;
    let mut direct = connect_from(STRANGER, turn).await;
    assert_eq!(binding(&mut direct).await.ip(), STRANGER);
}

/// An HTTPS client from local address `from` that trusts this server's certificate.
fn client_from(server: &Server, from: IpAddr) -> reqwest::Client {
    let pem = std::fs::read(server.dir.path().join("certs/selfsigned-cert.pem")).expect("cert");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .use_rustls_tls()
        .local_address(from)
        .build()
        .expect("client")
}

#[tokio::test]
async fn x_forwarded_for_counts_for_the_api_rate_limit_only_from_a_trusted_proxy() {
    let server = Server::start(&common::config_with_http(
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!(
            "[api]\nrate_limit_per_key = 6000\nrate_limit_per_ip = 1\nrate_limit_burst = 2\n\
             [[api.keys]]\nname = \"app\"\nkey = \"{KEY}\"\n"
        ),
    ));
    let url = server.https_url("/api/turn?service=turn&key=guess-guess-guess-1");
    let get = |client: reqwest::Client, xff: &'static str| {
        let url = url.clone();
        async move {
            client
                .get(&url)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    // Through the trusted proxy, each forwarded client has its own budget.
    let proxy = client_from(&server, PROXY);
    for _ in 0..2 {
        assert_eq!(
            get(proxy.clone(), "203.0.113.1").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get(proxy.clone(), "203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(proxy.clone(), "198.51.100.1, 203.0.113.2").await,
        StatusCode::UNAUTHORIZED,
        "another client (the right-most address) still has its budget"
    );
    // From anyone else the header is ignored: the address itself runs out.
    let stranger = client_from(&server, STRANGER);
    let mut statuses = Vec::new();
    for xff in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        statuses.push(get(stranger.clone(), xff).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// A proxy process, killed when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn require(binary: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: run scripts/install-test-deps"
    );
}

/// Through the proxy on `front`: `GET /healthz` and a WebSocket join, from 127.0.0.5; then the
/// server's log must name 127.0.0.1 as the proxy and 127.0.0.5 as the client.
async fn served_through(server: &Server, front: SocketAddr) {
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let resp = client_from(server, client)
        .get(format!("https://{front}/healthz"))
        .send()
        .await
        .expect("HTTPS through the proxy");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut req = format!("wss://{front}/ws")
        .into_client_request()
        .expect("request");
    let origin = ws_client::own_origin(server);
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&origin).expect("origin header"),
    );
    let tcp = connect_from(client, front).await;
    let connector = tokio_tungstenite::Connector::Rustls(ws_client::tls_config(server));
    let (stream, _) = tokio::time::timeout(
        ws_client::WAIT,
        tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)),
    )
    .await
    .expect("upgrade in time")
    .expect("WebSocket through the proxy");
    let mut ws = ws_client::Ws { stream };
    ws.join("behind-a-proxy").await;
    wait_for_log(server, "client=127.0.0.5:").await;
    let log = server.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("PROXY header") && l.contains("proxy=127.0.0.1:")),
        "{log}"
    );
}

#[tokio::test]
async fn haproxy_with_send_proxy_v2_in_front_of_the_https_port() {
    require("/usr/sbin/haproxy");
    let server = start_proxied("", "");
    let front = SocketAddr::from(([127, 0, 0, 1], common::named_port()));
    let config = server.dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 100\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n\nfrontend https\n  bind {front}\n  \
             default_backend signalbox\n\nbackend signalbox\n  server s1 {} send-proxy-v2\n",
            server.addr("https")
        ),
    )
    .expect("haproxy config");
    let _haproxy = Proxy(
        Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    wait_listening(front, "haproxy").await;
    served_through(&server, front).await;
}

#[tokio::test]
async fn nginx_stream_with_proxy_protocol_in_front_of_the_https_port() {
    require("/usr/sbin/nginx");
    require("/usr/lib/nginx/modules/ngx_stream_module.so");
    let server = start_proxied("", "");
    let front = SocketAddr::from(([127, 0, 0, 1], common::named_port()));
    let dir = server.dir.path();
    let config = dir.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} info;\n\
             events {{ worker_connections 64; }}\n\
             stream {{\n  server {{\n    listen {front};\n    proxy_pass {https};\n    \
             proxy_protocol on;\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            log = dir.join("nginx-error.log").display(),
            https = server.addr("https"),
        ),
    )
    .expect("nginx config");
    let _nginx = Proxy(
        Command::new("/usr/sbin/nginx")
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    wait_listening(front, "nginx").await;
    served_through(&server, front).await;
}
