//! One ACME order from account to stored certificate (RFC 8555 §7.4): the account is loaded
//! from `[tls] generated_dir` or created (with external account binding when configured), an
//! order for the names is placed, each pending authorization is answered by the configured
//! challenge, the CSR is sent with a fresh key, and the chain and key are written next to the
//! account. Nothing here touches the certificate in service: the caller reloads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::challenge::Challenges;
use super::client::AcmeHttp;
use crate::config::AcmeChallenge;

/// Files in `[tls] generated_dir`.
pub const ACCOUNT_FILE: &str = "acme-account.json";
pub const CERT_FILE: &str = "acme-cert.pem";
pub const KEY_FILE: &str = "acme-key.pem";
/// The directory and names the stored certificate was ordered for, one per line.
pub const ORDERED_FOR_FILE: &str = "acme-ordered-for.txt";

/// How long the CA may take to validate, and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// What one order needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory: String,
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    /// `mailto:` contact, if any.
    pub contact: Option<String>,
    /// External account binding: key id and HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    pub ca_file: Option<PathBuf>,
    pub dir: PathBuf,
}

impl Settings {
    /// The text of [`ORDERED_FOR_FILE`] for these settings.
    pub fn ordered_for(&self) -> String {
        let mut text = self.directory.clone();
        for d in &self.domains {
            text.push('\n');
            text.push_str(d);
        }
        text
    }
}

/// Why an attempt did not end with a stored certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the CA refused: {0}")]
    Refused(String),
    #[error("cannot reach the CA: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Local(String),
}

impl From<instant_acme::Error> for OrderError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(problem) => {
                let text = problem.to_string();
                OrderError::Refused(text.trim_start_matches("API error: ").to_owned())
            }
            other => OrderError::Unreachable(other.to_string()),
        }
    }
}

/// Places one order and stores the certificate and its key in `settings.dir`.
pub async fn obtain(
    settings: &Settings,
    http: &AcmeHttp,
    challenges: &Challenges,
) -> Result<(), OrderError> {
    let acct = account(settings, http, false).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let order = match acct.new_order(&NewOrder::new(&identifiers)).await {
        Err(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
        {
            // The CA forgot the stored account (a test CA restarted, or it was deactivated).
            let fresh = account(settings, http, true).await?;
            fresh.new_order(&NewOrder::new(&identifiers)).await?
        }
        other => other?,
    };
    let result = complete(order, settings, challenges).await;
    challenges.clear();
    let (chain, key) = result?;
    store(settings, &chain, &key)
}

async fn complete(
    mut order: instant_acme::Order,
    settings: &Settings,
    challenges: &Challenges,
) -> Result<(String, String), OrderError> {
    let kind = match settings.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(OrderError::Refused(format!(
                    "the authorization for {} is {other:?}",
                    authz.identifier()
                )))
            }
        }
        let name = authz.identifier().to_string();
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            return Err(OrderError::Refused(format!(
                "the CA offers no {} challenge for {name}",
                settings.challenge.as_str()
            )));
        };
        let key_authorization = challenge.key_authorization();
        match settings.challenge {
            AcmeChallenge::TlsAlpn01 => {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(key_authorization.digest().as_ref());
                challenges
                    .add_tls_alpn(&name, &digest)
                    .map_err(OrderError::Local)?;
            }
            AcmeChallenge::Http01 => {
                challenges.add_http(&challenge.token, key_authorization.as_str());
            }
        }
        challenge.set_ready().await?;
    }
    if order.poll_ready(&POLL).await? != OrderStatus::Ready {
        return Err(OrderError::Refused(why_invalid(&mut order).await));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Local(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(settings.domains.clone())
        .map_err(|e| OrderError::Local(format!("cannot make the CSR: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::Local(format!("cannot make the CSR: {e}")))?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&POLL).await?;
    Ok((chain, key.serialize_pem()))
}

/// The validation errors of an invalid order, as one line.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        let name = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                let e = e.to_string();
                let e = e.trim_start_matches("API error: ");
                reasons.push(format!("validating {name} by {:?} failed: {e}", c.r#type));
            }
        }
        if authz.status != AuthorizationStatus::Valid && reasons.is_empty() {
            reasons.push(format!(
                "the authorization for {name} is {:?}",
                authz.status
            ));
        }
    }
    if reasons.is_empty() {
        "the order became invalid".into()
    } else {
        reasons.join("; ")
    }
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The stored account for this directory, or a new one (stored at once). `fresh` forces a new
/// account.
async fn account(settings: &Settings, http: &AcmeHttp, fresh: bool) -> Result<Account, OrderError> {
    let path = settings.dir.join(ACCOUNT_FILE);
    if !fresh {
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == settings.directory => {
                    return Ok(Account::builder_with_http(Box::new(http.clone()))
                        .from_credentials(stored.credentials)
                        .await?);
                }
                Ok(_) => {} // another CA: a new account there
                Err(e) => tracing::warn!(
                    "ACME: {} is unreadable ({e}); creating a new account",
                    path.display()
                ),
            }
        }
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let eab = settings
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    let stored = StoredAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| OrderError::Local(e.to_string()))?;
    write_private(&settings.dir, ACCOUNT_FILE, &json)?;
    tracing::info!(
        account = account.id(),
        "ACME: created an account at {}",
        settings.directory
    );
    Ok(account)
}

/// Writes the chain and key (0600, each through a temporary file and a rename), then what
/// they were ordered for.
fn store(settings: &Settings, chain: &str, key: &str) -> Result<(), OrderError> {
    write_private(&settings.dir, KEY_FILE, key.as_bytes())?;
    write_private(&settings.dir, CERT_FILE, chain.as_bytes())?;
    write_private(
        &settings.dir,
        ORDERED_FOR_FILE,
        settings.ordered_for().as_bytes(),
    )
}

fn write_private(dir: &Path, name: &str, data: &[u8]) -> Result<(), OrderError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| {
        OrderError::Local(format!("cannot write {}: {e}", dir.join(name).display()))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    // A left-over temporary file keeps its old mode through `open`; make it private.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(fail)?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)
}
