//! Debian's `pebble` (a test ACME CA) with `pebble-challtestsrv` as its DNS server, started on
//! free loopback ports for one test and stopped when dropped. Pebble validates TLS-ALPN-01 and
//! HTTP-01 at the ports the test names (`tlsPort`, `httpPort`), resolving the test's names
//! through the DNS server, which answers only the names added with [`Pebble::add_a`]. Pebble's
//! own HTTPS uses a certificate made here from a test CA ([`Pebble::ca_file`]); the chains it
//! issues end in its root, fetched from its management API ([`Pebble::issuing_root`]).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    management: u16,
    dns_management: u16,
}

pub use crate::common::named_port as free_port;

fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn binary(name: &str) -> &'static str {
    let path = match name {
        "pebble" => "/usr/bin/pebble",
        _ => "/usr/bin/pebble-challtestsrv",
    };
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-deps (Debian package `pebble`)"
    );
    path
}

impl Pebble {
    /// Starts the CA validating TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`.
    pub fn start(tls_port: u16, http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir");
        write_https_certificate(&dir);
        let dns_port = free_port();
        let dns_management = free_port();
        let mut dns = Command::new(binary("pebble-challtestsrv"))
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        wait_listening(dns_management, "pebble-challtestsrv", &mut dns);
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("https-cert.pem"),
            "privateKey": dir.path().join("https-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("log file");
        let mut pebble = Command::new(binary("pebble"))
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Pebble rejects 5% of good nonces by default; the client retries a rejected nonce
            // only twice, so a test with a dozen requests per order would fail now and then.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start pebble");
        wait_listening(listen, "pebble", &mut pebble);
        wait_listening(management, "pebble management", &mut pebble);
        Pebble {
            pebble: Some(pebble),
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            dns_management,
            dir,
        }
    }

    /// The PEM roots that pebble's own HTTPS (directory and management API) chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("https-ca.pem")
    }

    /// Makes the DNS server answer `host` with 127.0.0.1.
    pub async fn add_a(&self, host: &str) {
        let resp = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/add-a", self.dns_management))
            .json(&serde_json::json!({"host": host, "addresses": ["127.0.0.1"]}))
            .send()
            .await
            .expect("challtestsrv management API");
        assert!(resp.status().is_success(), "add-a: {}", resp.status());
    }

    /// The root that the certificates pebble issues chain to (PEM).
    pub async fn issuing_root(&self) -> String {
        let pem = std::fs::read(self.ca_file()).expect("CA file");
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
            .build()
            .expect("client");
        let resp = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .expect("pebble management API");
        assert!(resp.status().is_success(), "roots/0: {}", resp.status());
        resp.text().await.expect("root PEM")
    }

    /// Stops the CA (its DNS server keeps running); everything it knew is gone.
    pub fn stop_ca(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_ca();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// A test CA and a certificate from it for `localhost` and 127.0.0.1, for pebble's own HTTPS.
fn write_https_certificate(dir: &tempfile::TempDir) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        "signalbox test CA for pebble's HTTPS",
    );
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("certificate");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("https-ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(path("https-cert.pem"), leaf.pem()).expect("write");
    std::fs::write(path("https-key.pem"), key.serialize_pem()).expect("write");
}
