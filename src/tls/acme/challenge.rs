//! Answering the CA's challenges while an order is open: TLS-ALPN-01 (RFC 8737) through the
//! certificate resolver of the HTTPS listener, HTTP-01 (RFC 8555 §8.3) on the redirect
//! listener. The order task adds an answer before it tells the CA to validate and removes it
//! once the order is done; nothing else writes here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

/// The ALPN protocol id of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The answers to the challenges of the order in progress.
#[derive(Debug, Default)]
pub struct Challenges {
    /// TLS-ALPN-01: the validation certificate for each name being validated.
    tls_alpn_by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: the key authorization for each token.
    http_by_token: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// For a ClientHello that offers only `acme-tls/1` (a CA validating, RFC 8737 §3): the
    /// validation certificate for its SNI name, or `Some(None)` to fail the handshake when no
    /// challenge is open for that name. `None` for every other ClientHello.
    pub fn answer_tls_alpn(&self, hello: &ClientHello<'_>) -> Option<Option<Arc<CertifiedKey>>> {
        let mut offered = hello.alpn()?;
        if offered.next() != Some(ALPN_ACME_TLS) || offered.next().is_some() {
            return None;
        }
        // RFC 8737 §3: the validation names the identifier in SNI; without it, nothing to show.
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(None);
        };
        let certs = self
            .tls_alpn_by_name
            .read()
            .unwrap_or_else(|p| p.into_inner());
        Some(certs.get(&name).cloned())
    }

    /// Serves TLS-ALPN-01 for `name`: a self-signed certificate for that name only, with the
    /// critical acmeIdentifier extension holding SHA-256 of the key authorization (RFC 8737 §3).
    pub fn add_tls_alpn(
        &self,
        name: &str,
        key_authorization_sha256: &[u8; 32],
    ) -> Result<(), String> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| format!("cannot make the TLS-ALPN-01 certificate for {name}: {e}"))?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
            key_authorization_sha256,
        )];
        let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot make the TLS-ALPN-01 certificate for {name}: {e}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("cannot use the TLS-ALPN-01 key: {e}"))?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
        self.tls_alpn_by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// Serves HTTP-01 for `token`.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        self.http_by_token
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Forgets every answer (the order is over, one way or the other).
    pub fn clear(&self) {
        self.tls_alpn_by_name
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.http_by_token
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn http_answer(&self, token: &str) -> Option<String> {
        self.http_by_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// Whether a finished handshake was a CA's TLS-ALPN-01 validation: the listener closes such a
/// connection at once (RFC 8737 §4: `acme-tls/1` carries nothing after the handshake).
pub fn is_validation(conn: &rustls::ServerConnection) -> bool {
    conn.alpn_protocol() == Some(ALPN_ACME_TLS)
}

/// `GET /.well-known/acme-challenge/{token}` for the redirect listener (RFC 8555 §8.3): the
/// key authorization as `application/octet-stream`, or 404 for a token not in an open order.
pub fn http01_routes(challenges: Arc<Challenges>) -> Router {
    Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(http01),
        )
        .with_state(challenges)
}

async fn http01(State(challenges): State<Arc<Challenges>>, Path(token): Path<String>) -> Response {
    match challenges.http_answer(&token) {
        Some(answer) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such ACME challenge\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{self, CertSource, CertStore};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// A CA's validation client accepts any certificate and inspects it afterwards.
    #[derive(Debug)]
    struct Inspect;

    impl ServerCertVerifier for Inspect {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    struct Fixture {
        store: Arc<CertStore>,
        server: Arc<rustls::ServerConfig>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = CertStore::load(CertSource::Acme {
            dir: dir.path().to_path_buf(),
            hosts: vec!["a.example.org".into()],
        })
        .expect("self-signed until the CA's certificate arrives");
        let server = tls::server_config(store.clone(), &[b"h2", b"http/1.1", ALPN_ACME_TLS]);
        Fixture {
            store,
            server,
            _dir: dir,
        }
    }

    /// A whole handshake in memory: the server's connection and the certificate the client got.
    fn handshake(
        server: &Arc<rustls::ServerConfig>,
        name: &str,
        alpn: &[&[u8]],
    ) -> Result<(rustls::ServerConnection, Vec<u8>), rustls::Error> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Inspect))
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(name.to_owned()).expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut server = rustls::ServerConnection::new(server.clone()).expect("server");
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client writes");
            server.read_tls(&mut wire.as_slice()).expect("server reads");
            server.process_new_packets()?;
            let mut wire = Vec::new();
            server.write_tls(&mut wire).expect("server writes");
            client.read_tls(&mut wire.as_slice()).expect("client reads");
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                let leaf = client.peer_certificates().expect("a certificate")[0].to_vec();
                return Ok((server, leaf));
            }
        }
        panic!("the handshake did not finish");
    }

    /// DER of the acmeIdentifier extension's OID, 1.3.6.1.5.5.7.1.31 (RFC 8737 §6.1).
    const ACME_IDENTIFIER_OID: [u8; 10] =
        [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1F];

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_hello_offering_only_acme_tls_gets_the_validation_certificate_for_its_name() {
        let f = fixture();
        let digest = [0xA5; 32];
        f.store
            .acme_challenges()
            .expect("ACME store")
            .add_tls_alpn("a.example.org", &digest)
            .expect("validation certificate");
        let (server, leaf) =
            handshake(&f.server, "a.example.org", &[ALPN_ACME_TLS]).expect("handshake");
        assert!(
            is_validation(&server),
            "acme-tls/1 negotiated (RFC 8737 §3)"
        );
        assert!(
            contains(&leaf, &ACME_IDENTIFIER_OID),
            "acmeIdentifier extension"
        );
        // critical = TRUE, then the OCTET STRING holding the OCTET STRING of the digest.
        assert!(contains(
            &leaf,
            &[
                [0x01, 0x01, 0xFF, 0x04, 0x22, 0x04, 0x20].as_slice(),
                &digest
            ]
            .concat()
        ));
        assert_ne!(Some(leaf), f.store.leaf_der());
    }

    #[test]
    fn everyone_else_gets_the_certificate_in_service() {
        let f = fixture();
        let challenges = f.store.acme_challenges().expect("ACME store");
        challenges
            .add_tls_alpn("a.example.org", &[1; 32])
            .expect("validation certificate");
        let (server, leaf) =
            handshake(&f.server, "a.example.org", &[b"h2", b"http/1.1"]).expect("handshake");
        assert!(!is_validation(&server));
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            Some(leaf),
            f.store.leaf_der(),
            "a browser never sees the validation certificate"
        );
        let (server, _) = handshake(&f.server, "a.example.org", &[b"http/1.1", ALPN_ACME_TLS])
            .expect("handshake");
        assert_eq!(
            server.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "acme-tls/1 only when alone"
        );
    }

    #[test]
    fn acme_tls_for_a_name_without_an_open_challenge_fails_the_handshake() {
        let f = fixture();
        let challenges = f.store.acme_challenges().expect("ACME store");
        challenges
            .add_tls_alpn("a.example.org", &[2; 32])
            .expect("validation certificate");
        assert!(handshake(&f.server, "b.example.org", &[ALPN_ACME_TLS]).is_err());
        assert!(
            handshake(&f.server, "127.0.0.1", &[ALPN_ACME_TLS]).is_err(),
            "no SNI (an IP address), no validation certificate"
        );
        challenges.clear();
        assert!(
            handshake(&f.server, "a.example.org", &[ALPN_ACME_TLS]).is_err(),
            "nothing is answered once the order is over"
        );
    }

    #[tokio::test]
    async fn http_01_answers_only_open_tokens() {
        use tower::ServiceExt as _;
        let challenges = Arc::new(Challenges::default());
        challenges.add_http("tok-1", "tok-1.thumbprint");
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let app = http01_routes(challenges.clone());
        let resp = app
            .clone()
            .oneshot(get("/.well-known/acme-challenge/tok-1"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], b"tok-1.thumbprint");
        let resp = app
            .oneshot(get("/.well-known/acme-challenge/tok-2"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
