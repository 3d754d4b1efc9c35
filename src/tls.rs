//! Certificates for HTTPS (and, later, TURN over TLS) behind one swappable resolver.
//!
//! Every rustls `ServerConfig` the server builds shares one [`CertStore`]; a reload swaps the
//! certified key inside it, so new handshakes get the new certificate while open connections
//! keep theirs. With no files configured, a self-signed certificate for `public_host`,
//! `localhost` and `127.0.0.1` is generated once into `[tls] generated_dir` and reused (it is
//! generated anew when the host list changes).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{Config, ConfigError};

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Operator-provided PEM files (full chain + key): a "real" certificate.
    Files { cert: PathBuf, key: PathBuf },
    /// Self-signed, generated into `dir` for `hosts`.
    Generated { dir: PathBuf, hosts: Vec<String> },
}

/// What a load produced, for logging.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub fingerprint: String,
    pub generated_now: bool,
    pub cert_path: PathBuf,
}

/// The live certificate, swappable without restarting listeners.
#[derive(Debug)]
pub struct CertStore {
    source: CertSource,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn source_from_config(config: &Config) -> CertSource {
        match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                let mut hosts = vec![config.server.public_host.clone()];
                for h in ["localhost", "127.0.0.1", "::1"] {
                    if !hosts.iter().any(|x| x == h) {
                        hosts.push(h.to_owned());
                    }
                }
                CertSource::Generated {
                    dir: config.tls.generated_dir.clone(),
                    hosts,
                }
            }
        }
    }

    /// Loads (or generates) the certificate.
    pub fn load(source: CertSource) -> Result<(Arc<CertStore>, Loaded), ConfigError> {
        let (key, loaded) = load_key(&source)?;
        let store = Arc::new(CertStore {
            source,
            current: RwLock::new(key),
        });
        Ok((store, loaded))
    }

    /// Re-reads the certificate files; on error the old certificate stays in service.
    pub fn reload(&self) -> Result<Loaded, ConfigError> {
        let (key, loaded) = load_key(&self.source)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(loaded)
    }

    /// True when the operator configured a certificate (so HSTS is safe to send).
    pub fn is_real(&self) -> bool {
        matches!(self.source, CertSource::Files { .. })
    }

    /// DER of the leaf certificate in service.
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.current().cert.first().map(|c| c.as_ref().to_vec())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration that takes its certificate from `store` and offers `alpn`.
pub fn server_config(store: Arc<CertStore>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn load_key(source: &CertSource) -> Result<(Arc<CertifiedKey>, Loaded), ConfigError> {
    match source {
        CertSource::Files { cert, key } => {
            let chain = read_chain(cert, "tls.cert")?;
            let key_der = read_key(key, "tls.key")?;
            build(chain, key_der, cert, false, "tls.key")
        }
        CertSource::Generated { dir, hosts } => {
            let cert_path = dir.join("selfsigned-cert.pem");
            let key_path = dir.join("selfsigned-key.pem");
            let hosts_path = dir.join("selfsigned-hosts.txt");
            let wanted = hosts.join("\n");
            let reusable = cert_path.exists()
                && key_path.exists()
                && std::fs::read_to_string(&hosts_path).is_ok_and(|h| h.trim() == wanted)
                && lasts_another(&cert_path, RENEW_BEFORE);
            let generated_now = !reusable;
            if generated_now {
                generate(dir, hosts, &cert_path, &key_path, &hosts_path)?;
            } else {
                crate::keyfile::restrict_to_owner(&key_path).map_err(|e| {
                    ConfigError::new(
                        key_path.display().to_string(),
                        Some("tls.generated_dir"),
                        format!("cannot make the key readable by its owner only (mode 0600): {e}"),
                    )
                })?;
            }
            let chain = read_chain(&cert_path, "tls.generated_dir")?;
            let key_der = read_key(&key_path, "tls.generated_dir")?;
            build(
                chain,
                key_der,
                &cert_path,
                generated_now,
                "tls.generated_dir",
            )
        }
    }
}

fn generate(
    dir: &Path,
    hosts: &[String],
    cert_path: &Path,
    key_path: &Path,
    hosts_path: &Path,
) -> Result<(), ConfigError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ConfigError::new(
            dir.display().to_string(),
            Some("tls.generated_dir"),
            format!("{what}: {e}"),
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the directory", &e))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .map_err(|e| fail("cannot generate a certificate", &e))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| fail("cannot generate a key", &e))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| fail("cannot generate a certificate", &e))?;
    crate::keyfile::write(key_path, key_pair.serialize_pem().as_bytes())
        .map_err(|e| fail("cannot write the key", &e))?;
    std::fs::write(cert_path, cert.pem()).map_err(|e| fail("cannot write", &e))?;
    std::fs::write(hosts_path, hosts.join("\n")).map_err(|e| fail("cannot write", &e))?;
    Ok(())
}

/// Validity of a generated certificate: the longest that browsers accept for any certificate.
const VALID_DAYS: i64 = 397;
/// A generated certificate this close to its end is replaced at start.
const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Whether the certificate in `path` is still valid `margin` from now.
fn lasts_another(path: &Path, margin: std::time::Duration) -> bool {
    let Ok(Some(Ok(cert))) = CertificateDer::pem_file_iter(path).map(|mut i| i.next()) else {
        return false;
    };
    let Some((_, not_after)) = crate::selftest::validity(cert.as_ref()) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX);
    not_after > now.saturating_add(margin.as_secs())
}

fn read_chain(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let file = path.display().to_string();
    let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::new(&file, Some(key), format!("cannot read: {e}")))?
        .collect();
    let chain = chain.map_err(|e| ConfigError::new(&file, Some(key), format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            file,
            Some(key),
            "no CERTIFICATE block in the file",
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            Some(key),
            format!("no usable private key: {e}"),
        )
    })
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
    cert_path: &Path,
    generated_now: bool,
    key: &str,
) -> Result<(Arc<CertifiedKey>, Loaded), ConfigError> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        ConfigError::new(
            cert_path.display().to_string(),
            Some(key),
            format!("unsupported private key: {e}"),
        )
    })?;
    let fingerprint = fingerprint(&chain[0]);
    let certified = CertifiedKey::new(chain, signing_key);
    if let Err(e) = certified.keys_match() {
        if !matches!(
            e,
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
        ) {
            return Err(ConfigError::new(
                cert_path.display().to_string(),
                Some(key),
                format!("the private key does not belong to the certificate: {e}"),
            ));
        }
    }
    Ok((
        Arc::new(certified),
        Loaded {
            fingerprint,
            generated_now,
            cert_path: cert_path.to_path_buf(),
        },
    ))
}

/// SHA-256 of the DER certificate as colon-separated hex, as browsers show it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> CertSource {
        CertSource::Generated {
            dir: dir.to_path_buf(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }

    fn not_after(dir: &Path) -> u64 {
        let cert = CertificateDer::pem_file_iter(dir.join("selfsigned-cert.pem"))
            .expect("readable")
            .next()
            .expect("one certificate")
            .expect("valid PEM");
        crate::selftest::validity(cert.as_ref())
            .expect("validity")
            .1
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    }

    #[test]
    fn a_generated_certificate_is_valid_for_397_days_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, first) = CertStore::load(source(dir.path())).expect("generated");
        assert!(first.generated_now);
        let days = (not_after(dir.path()) - now()) / 86_400;
        assert!((396..=397).contains(&days), "{days} days");
        let (_, second) = CertStore::load(source(dir.path())).expect("reused");
        assert!(!second.generated_now);
        assert_eq!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn a_generated_key_is_owner_only_when_written_and_when_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("selfsigned-key.pem");
        let mode = || std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        CertStore::load(source(dir.path())).expect("generated");
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (_, reused) = CertStore::load(source(dir.path())).expect("reused");
        assert!(!reused.generated_now);
        assert_eq!(mode(), 0o600, "a reused key is closed off too");
    }

    #[test]
    fn a_generated_certificate_near_its_end_is_replaced_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        CertStore::load(source(dir.path())).expect("generated");
        // Replace it with one that ends in ten days, for the same hosts.
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.path().join("selfsigned-cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("selfsigned-key.pem"), key.serialize_pem()).expect("write");
        let (_, loaded) = CertStore::load(source(dir.path())).expect("loaded");
        assert!(loaded.generated_now, "renewed");
        assert!(not_after(dir.path()) > now() + 300 * 86_400);
    }
}
