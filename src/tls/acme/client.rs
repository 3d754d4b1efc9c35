//! The HTTPS client that talks to the ACME directory: rustls with ring, trusting either the
//! built-in public roots or the PEM roots of `[tls] acme_ca_file`, and remembering the CA's
//! last `Retry-After` on an error answer so the back-off can respect it (RFC 8555 §6.6).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// An ACME HTTP client and the `Retry-After` it last saw on an error.
#[derive(Clone)]
pub struct AcmeHttp {
    inner: Inner,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl AcmeHttp {
    /// A client trusting `ca_file`'s certificates, or the public web roots without one.
    pub fn new(ca_file: Option<&Path>) -> Result<AcmeHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("unusable root in {}: {e}", path.display()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(AcmeHttp {
            inner: Client::builder(TokioExecutor::new()).build(https),
            retry_after: Arc::new(Mutex::new(None)),
        })
    }

    /// How long the CA asked to wait, as of `now`, if it did since the last call.
    pub fn take_retry_after(&self, now: SystemTime) -> Option<Duration> {
        let until = self
            .retry_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        until.duration_since(now).ok()
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = HttpClient::request(&self.inner, req);
        let record = self.retry_after.clone();
        Box::pin(async move {
            let rsp = response.await?;
            let status = rsp.parts.status;
            if status.is_client_error() || status.is_server_error() {
                if let Some(at) = retry_after(&rsp.parts.headers, SystemTime::now()) {
                    *record.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
                }
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &hyper::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers
        .get(hyper::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(hyper::header::RETRY_AFTER, "120".parse().expect("value"));
        assert_eq!(retry_after(&h, now), Some(now + Duration::from_secs(120)));
        h.insert(
            hyper::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().expect("value"),
        );
        assert_eq!(
            retry_after(&h, now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        h.insert(hyper::header::RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&h, now), None);
    }
}
