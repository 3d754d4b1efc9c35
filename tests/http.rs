//! HTTPS behaviour of the real binary: static files, the room page, errors, headers, health,
//! certificates and shutdown.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[tokio::test]
async fn healthz_answers_with_status_version_and_uptime() {
    let server = Server::start(&common::base_config(""));
    let resp = server
        .client()
        .get(server.https_url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64());
}

#[tokio::test]
async fn landing_and_room_pages_are_the_app_html_over_http2() {
    let server = Server::start(&common::base_config(""));
    let client = server.client();
    let index = std::fs::read_to_string(common::public_dir().join("index.html")).unwrap();
    for path in ["/", "/r/team-standup", "/r/a.b_c-9"] {
        let resp = client.get(server.https_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "ALPN h2 for {path}"
        );
        let h = resp.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["cache-control"], "no-cache");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        let pp = h["permissions-policy"].to_str().unwrap();
        for feature in [
            "camera=(self)",
            "microphone=(self)",
            "display-capture=(self)",
        ] {
            assert!(pp.contains(feature), "{pp}");
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(
            !h.contains_key("strict-transport-security"),
            "no HSTS with a self-signed certificate"
        );
        assert_eq!(resp.text().await.unwrap(), index, "{path}");
    }
}

#[tokio::test]
async fn static_files_have_their_content_types_and_revalidate() {
    let server = Server::start(&common::base_config(""));
    let client = server.client();
    let resp = client
        .get(server.https_url("/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let last_modified = resp.headers()["last-modified"].clone();
    let again = client
        .get(server.https_url("/app.css"))
        .header("if-modified-since", last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "an unchanged file costs a 304");
}

#[tokio::test]
async fn unknown_paths_get_the_404_page_and_api_paths_a_json_404() {
    let server = Server::start(&common::base_config(""));
    let client = server.client();
    for path in [
        "/nope",
        "/r/",
        "/r/has%20space",
        "/r/a/b",
        &format!("/r/{}", "x".repeat(65)),
    ] {
        let resp = client.get(server.https_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.text().await.unwrap().contains("Not found"), "{path}");
    }
    let resp = client
        .get(server.https_url("/api/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not-found");
}

/// Sends one raw HTTP/1.1 request over TLS, so the path reaches the server unnormalised.
async fn raw_get(server: &Server, path: &str) -> String {
    let pem = std::fs::read(server.dir.path().join("certs/selfsigned-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr("https"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn path_traversal_never_leaves_the_static_dir() {
    let server = Server::start(&common::base_config(""));
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/r/../../Cargo.toml",
        "/./../src/main.rs",
        "/..\\Cargo.toml",
        "//etc/passwd",
    ] {
        let resp = raw_get(&server, path).await;
        let status = resp.split_whitespace().nth(1).unwrap_or("");
        assert!(
            status == "404" || status == "400",
            "{path} answered {status}"
        );
        assert!(
            !resp.contains("[package]") && !resp.contains("fn main") && !resp.contains("root:")
        );
    }
}

#[tokio::test]
async fn the_self_signed_certificate_is_generated_once_and_reused() {
    let server = Server::start(&common::base_config(""));
    let cert_path = server.dir.path().join("certs/selfsigned-cert.pem");
    let first = std::fs::read(&cert_path).expect("certificate generated on first start");
    let key_mode = std::fs::metadata(server.dir.path().join("certs/selfsigned-key.pem"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(
        key_mode, 0o600,
        "the private key is readable by its owner only"
    );
    assert!(server.log_contains("generated a self-signed certificate"));
    let dir = server.into_dir();
    // A reused key that others may read (copied in with the wrong mode) is set back to 0600.
    let key_path = dir.path().join("certs/selfsigned-key.pem");
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let server = Server::start_in(dir, &common::base_config(""), &[]);
    let key_mode = std::fs::metadata(&key_path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key metadata");
    assert_eq!(key_mode, 0o600, "a reused key is made owner-only again");
    assert_eq!(
        std::fs::read(&cert_path).unwrap(),
        first,
        "reused, not regenerated"
    );
    assert!(server.log_contains("reusing the self-signed certificate"));
    // And it is the certificate actually served, valid for 127.0.0.1.
    let resp = server
        .client()
        .get(server.https_url("/healthz"))
        .send()
        .await;
    assert_eq!(resp.expect("TLS with the generated cert").status(), 200);
}

fn write_cert(dir: &std::path::Path, name: &str) -> String {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), c.cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), c.key_pair.serialize_pem()).unwrap();
    c.cert.pem()
}

async fn served_cert(server: &Server) -> Vec<u8> {
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
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
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr("https"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    rustls_pemfile_certs(pem.as_bytes())[0].to_vec()
}

#[tokio::test]
async fn configured_certificates_get_hsts_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path(), "cert");
    let config = common::base_config("[tls]\ncert = \"cert.pem\"\nkey = \"cert.key\"\n");
    let server = Server::start_in(dir, &config, &[]);
    assert_eq!(served_cert(&server).await, der_of(&first));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(first.as_bytes()).unwrap())
        .use_rustls_tls()
        .build()
        .unwrap();
    let resp = client.get(server.https_url("/")).send().await.unwrap();
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    let second = write_cert(server.dir.path(), "cert");
    server.signal(libc::SIGHUP);
    let mut served = Vec::new();
    for _ in 0..100 {
        served = served_cert(&server).await;
        if served == der_of(&second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        served,
        der_of(&second),
        "new handshakes get the reloaded certificate"
    );
    // The connection opened before the reload still works (HTTP/2 keeps it open).
    let resp = client
        .get(server.https_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);

    // A broken file on reload keeps the old certificate in service.
    std::fs::write(server.dir.path().join("cert.pem"), "garbage").unwrap();
    server.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_cert(&server).await, der_of(&second));
    assert!(server.log_contains("configuration not reloaded, the old one stays"));
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_zero() {
    let mut server = Server::start(&common::base_config(""));
    let client = server.client();
    assert_eq!(
        client
            .get(server.https_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(tokio::net::TcpStream::connect(server.addr("https"))
        .await
        .is_err());
}

#[tokio::test]
async fn the_plain_http_listener_only_redirects_to_https() {
    let server = Server::start(
        &common::base_config("").replace("[http]\n", "[http]\nredirect_listen = \"127.0.0.1:0\"\n"),
    );
    let http = server.addr("http-redirect");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{http}/r/room1?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!(
            "https://127.0.0.1:{}/r/room1?x=1",
            server.addr("https").port()
        )
        .as_str()
    );
}

/// Parses the Prometheus text format into `series -> value`, checking every line's shape.
fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        out.insert(series.to_owned(), value.parse().expect("numeric value"));
    }
    out
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_behind_a_token_on_https() {
    let token = "a-long-metrics-token";
    let server = Server::start(
        &common::base_config("")
            .replace("[metrics]\n", &format!("[metrics]\ntoken = \"{token}\"\n")),
    );
    let client = server.client();
    for _ in 0..3 {
        client
            .get(server.https_url("/healthz"))
            .send()
            .await
            .unwrap();
    }
    let plain = reqwest::get(format!("http://{}/metrics", server.addr("metrics")))
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = parse_exposition(&plain.text().await.unwrap());
    assert!(m["signalbox_http_requests_total"] >= 3.0);
    assert!(m["signalbox_tls_handshakes_total{result=\"ok\"}"] >= 1.0);
    assert!(m["process_resident_memory_bytes"] > 1e6);
    assert!(m["process_open_fds"] >= 3.0);

    let denied = client
        .get(server.https_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = client
        .get(server.https_url("/metrics"))
        .bearer_auth("a-long-metrics-tokeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client
        .get(server.https_url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(parse_exposition(&ok.text().await.unwrap()).contains_key("signalbox_joins_total"));
}

#[tokio::test]
async fn without_a_token_metrics_are_not_on_https() {
    let server = Server::start(&common::base_config(""));
    let resp = server
        .client()
        .get(server.https_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
