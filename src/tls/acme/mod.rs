//! Certificates from an ACME CA (RFC 8555), obtained and renewed by the server itself.
//!
//! The server starts at once with what it has — the stored ACME certificate, or the
//! self-signed one — and one task here obtains the certificate in the background. The CA's
//! challenge is answered by the server's own listeners: TLS-ALPN-01 (RFC 8737) inside the
//! HTTPS listener's certificate resolver ([`Challenges::answer_tls_alpn`]), HTTP-01 on the
//! redirect listener ([`http01_routes`]). A new certificate is written to `[tls]
//! generated_dir` and put in service by the one reload path the SIGHUP reload uses
//! ([`CertStore::reload`]), so HTTPS, WebSocket and TURN over TLS on every port change
//! together, new handshakes get it, and open connections keep theirs.
//!
//! Renewal starts when a third of the lifetime is left. A failed attempt keeps the
//! certificate in service, logs one line and is retried with exponential back-off that never
//! undercuts the CA's `Retry-After` ([`schedule`]); a reload (SIGHUP) retries a failed order
//! at once unless the CA asked to wait. The state shows in `/healthz?deep=1`.

pub mod challenge;
pub mod client;
pub mod order;
pub mod schedule;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tracing::{info, warn};

pub use challenge::{http01_routes, is_validation, Challenges, ALPN_ACME_TLS};

use crate::config::Config;
use crate::tls::CertStore;
use order::{OrderError, Settings};

/// A long sleep is cut into naps this long, so a changed clock is noticed.
const NAP: Duration = Duration::from_secs(3600);
/// The most one attempt may take, from the directory to the stored certificate.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the ACME task is doing, for `/healthz?deep=1` and the start-up self-test.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
    /// Whether a certificate from the CA is in service ([`CertStore::trusted_flag`]).
    in_service: Arc<AtomicBool>,
}

#[derive(Debug, Default, Clone)]
struct StatusInner {
    names: String,
    /// End of the stored certificate's validity, when there is one for these names.
    valid_until: Option<u64>,
    renew_at: Option<u64>,
    /// The last attempt's failure, while it is not followed by a success.
    failure: Option<String>,
    failures: u32,
    next_attempt: Option<u64>,
}

impl Status {
    /// `Ok(message)` when all is well, `Err(warning)` when the certificate from the CA is not
    /// (yet) in service or renewing it fails.
    pub fn describe(&self, now: u64) -> Result<String, String> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let when = |t: Option<u64>| match t {
            Some(t) if t > now => format!("in {}", human(Duration::from_secs(t - now))),
            Some(_) => "now".to_owned(),
            None => "not planned".to_owned(),
        };
        if let Some(failure) = s.failure {
            return Err(format!(
                "{} failed attempt(s) to get a certificate for {}, the last: {failure}; the \
                 current certificate stays in service; next attempt {}",
                s.failures,
                s.names,
                when(s.next_attempt)
            ));
        }
        match s.valid_until {
            None if self.in_service.load(Ordering::Relaxed) => Err(format!(
                "the certificate from the CA in service is not for {} (requesting one that is)",
                s.names
            )),
            None => Err(format!(
                "no certificate from the CA for {} yet (requesting one); the self-signed \
                 certificate serves until it arrives",
                s.names
            )),
            Some(until) => Ok(format!(
                "certificate for {} from the CA, valid {}, renewal {}",
                s.names,
                match until.checked_sub(now) {
                    Some(left) => format!("for {}", human(Duration::from_secs(left))),
                    None => "no longer".into(),
                },
                when(s.renew_at)
            )),
        }
    }

    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Starts the ACME task when `[tls] acme` is on. `reloads` sees every accepted reload: one
/// after a failed attempt retries at once.
pub fn start(
    config: &Config,
    certs: Arc<CertStore>,
    reloads: watch::Receiver<Arc<Config>>,
) -> Option<Arc<Status>> {
    let challenges = certs.acme_challenges()?;
    let tls = &config.tls;
    let settings = Settings {
        directory: config.acme_directory().to_owned(),
        domains: config.acme_domains(),
        challenge: tls.acme_challenge,
        contact: (!tls.acme_email.trim().is_empty()).then(|| {
            let email = tls.acme_email.trim();
            match email.strip_prefix("mailto:") {
                Some(_) => email.to_owned(),
                None => format!("mailto:{email}"),
            }
        }),
        eab: (!tls.acme_eab_kid.trim().is_empty()).then(|| {
            (
                tls.acme_eab_kid.trim().to_owned(),
                crate::config::eab_key(&tls.acme_eab_hmac_key).unwrap_or_default(),
            )
        }),
        ca_file: tls.acme_ca_file.clone(),
        dir: tls.generated_dir.clone(),
    };
    for warning in config.acme_port_warnings() {
        warn!("ACME: {warning}");
    }
    let status = Arc::new(Status {
        inner: Mutex::default(),
        in_service: certs.trusted_flag(),
    });
    status.update(|s| s.names = settings.domains.join(", "));
    let task = Task {
        settings,
        certs,
        challenges,
        status: status.clone(),
    };
    // The stored certificate's state is known before the start-up self-test reads it.
    task.renewal_due(unix_now());
    let stored = task.settings.dir.join(order::CERT_FILE);
    if stored.exists() && !task.certs.is_real() {
        warn!(
            "ACME: {} cannot be used (expired, or its key is missing or does not match); \
             requesting a new certificate",
            stored.display()
        );
    }
    tokio::spawn(task.run(reloads));
    Some(status)
}

struct Task {
    settings: Settings,
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    status: Arc<Status>,
}

impl Task {
    async fn run(self, reloads: watch::Receiver<Arc<Config>>) {
        let mut reloads = Some(reloads);
        let mut retry = schedule::Retry::default();
        loop {
            let now = unix_now();
            let due = retry.due().unwrap_or_else(|| self.renewal_due(now));
            self.status.update(|s| s.next_attempt = Some(due));
            if due > now && !wait(due - now, &mut reloads, &mut retry).await {
                continue;
            }
            match self.attempt().await {
                Ok(()) => retry.succeeded(),
                Err((e, ca_wait)) => {
                    let now = unix_now();
                    let delay = retry.failed(now, ca_wait);
                    warn!(
                        "ACME: no certificate for {} from {}: {e}; {}; next attempt in {}",
                        self.settings.domains.join(", "),
                        self.settings.directory,
                        self.in_service(now),
                        human(delay)
                    );
                    let (line, failures) = (e.to_string(), retry.failures());
                    self.status.update(|s| {
                        s.failure = Some(line);
                        s.failures = failures;
                    });
                }
            }
        }
    }

    /// When the stored certificate is due for renewal: now when there is none, it is not the
    /// one in service (unreadable, expired, its key lost), or it was ordered for other names
    /// or another CA.
    fn renewal_due(&self, now: u64) -> u64 {
        if !self.certs.is_real() {
            return now;
        }
        let dir = &self.settings.dir;
        let ordered_for = std::fs::read_to_string(dir.join(order::ORDERED_FOR_FILE));
        let validity = stored_validity(&dir.join(order::CERT_FILE));
        match (ordered_for, validity) {
            (Ok(text), Some((not_before, not_after)))
                if text.trim() == self.settings.ordered_for() =>
            {
                let renew_at = schedule::renew_at(not_before, not_after);
                self.status.update(|s| {
                    s.valid_until = Some(not_after);
                    s.renew_at = Some(renew_at);
                });
                renew_at
            }
            _ => now,
        }
    }

    /// One order, bounded in time; on success the new certificate is in service.
    async fn attempt(&self) -> Result<(), (OrderError, Option<Duration>)> {
        let http = client::AcmeHttp::new(self.settings.ca_file.as_deref())
            .map_err(|e| (OrderError::Local(e), None))?;
        info!(
            "ACME: requesting a certificate for {} from {} ({})",
            self.settings.domains.join(", "),
            self.settings.directory,
            self.settings.challenge.as_str()
        );
        let ordered = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            order::obtain(&self.settings, &http, &self.challenges),
        )
        .await
        .unwrap_or_else(|_| {
            Err(OrderError::Unreachable(format!(
                "no answer within {}",
                human(ATTEMPT_TIMEOUT)
            )))
        });
        self.challenges.clear();
        if let Err(e) = ordered {
            return Err((e, http.take_retry_after(SystemTime::now())));
        }
        let loaded = self.certs.reload().map_err(|e| {
            (
                OrderError::Local(format!("the new certificate does not load: {e}")),
                None,
            )
        })?;
        let now = unix_now();
        let until = self.renewal_due(now);
        // The health check reads the status: clear it before the line that says so.
        self.status.update(|s| {
            s.failure = None;
            s.failures = 0;
        });
        info!(
            sha256 = %loaded.fingerprint,
            "ACME: certificate for {} in service (HTTPS, WebSocket, TURN over TLS); renewal {}",
            self.settings.domains.join(", "),
            date(until)
        );
        Ok(())
    }

    /// Which certificate stays in service after a failure, for the log line.
    fn in_service(&self, now: u64) -> String {
        let der = self.certs.leaf_der();
        let until = der
            .as_deref()
            .and_then(crate::tls::validity::validity)
            .map(|(_, not_after)| not_after);
        let kind = if self.certs.is_real() {
            "the certificate from the CA"
        } else {
            "the self-signed certificate"
        };
        match until {
            Some(t) if t > now => format!(
                "{kind} stays in service (valid for {})",
                human(Duration::from_secs(t - now))
            ),
            Some(_) => format!("{kind} stays in service (EXPIRED)"),
            None => format!("{kind} stays in service"),
        }
    }
}

/// Sleeps up to `left` seconds (at most a nap). True when a reload came in and `retry` grants an
/// attempt now; false when it is simply time to look again.
async fn wait(
    left: u64,
    reloads: &mut Option<watch::Receiver<Arc<Config>>>,
    retry: &mut schedule::Retry,
) -> bool {
    let nap = Duration::from_secs(left).min(NAP);
    let reloaded = async {
        match reloads.as_mut() {
            Some(r) => r.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(nap) => false,
        open = reloaded => {
            if !open {
                *reloads = None;
                return false;
            }
            match retry.retry_now(unix_now()) {
                Ok(granted) => {
                    if granted {
                        info!("ACME: reload: trying the failed order again now");
                    }
                    granted
                }
                Err(until) => {
                    info!("ACME: reload: the CA asked to wait, so the next attempt stays {}", date(until));
                    false
                }
            }
        }
    }
}

/// `notBefore` and `notAfter` of the first certificate in a PEM file.
pub fn stored_validity(path: &Path) -> Option<(u64, u64)> {
    let cert = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    crate::tls::validity::validity(cert.as_ref())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn date(unix: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
}

/// `90 days`, `5 hours`, `2 minutes`, `30 seconds`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} seconds"),
        120..7200 => format!("{} minutes", s / 60),
        7200..172_800 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_secs(30)), "30 seconds");
        assert_eq!(human(Duration::from_secs(240)), "4 minutes");
        assert_eq!(human(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human(Duration::from_secs(60 * 86_400)), "60 days");
    }

    #[test]
    fn the_status_warns_until_a_certificate_is_in_service_and_after_a_failure() {
        let status = Status::default();
        status.update(|s| s.names = "call.example.org".into());
        let waiting = status.describe(1000).unwrap_err();
        assert!(waiting.contains("no certificate from the CA"), "{waiting}");
        status.update(|s| {
            s.valid_until = Some(1000 + 90 * 86_400);
            s.renew_at = Some(1000 + 60 * 86_400);
        });
        let fine = status.describe(1000).expect("fine");
        assert!(
            fine.contains("valid for 90 days") && fine.contains("renewal in 60 days"),
            "{fine}"
        );
        status.update(|s| {
            s.failure = Some("the CA refused: rate limited".into());
            s.failures = 2;
            s.next_attempt = Some(1000 + 240);
        });
        let failing = status.describe(1000).unwrap_err();
        assert!(
            failing.contains("2 failed")
                && failing.contains("rate limited")
                && failing.contains("in 4 minutes"),
            "{failing}"
        );
    }
}
