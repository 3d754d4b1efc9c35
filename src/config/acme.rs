//! The ACME keys of `[tls]`: which names, which CA, which challenge, and the checks that catch
//! a set-up that cannot work before anything is asked of the CA.
//!
//! A public CA validates TLS-ALPN-01 only on port 443 and HTTP-01 only on port 80 (RFC 8737
//! §3, RFC 8555 §8.3). Other ports are not an error (a test CA can be told to use them, and a
//! firewall may forward 443 to 8443), so they are warnings that say what the CA will do.

use std::net::IpAddr;

use base64::Engine as _;
use serde::Deserialize;

use crate::config::Config;

/// How the CA checks that this server answers for the names (`[tls] acme_challenge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737: answered on the HTTPS listener by a TLS handshake with ALPN `acme-tls/1`.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: a file under `/.well-known/acme-challenge/` on the redirect listener.
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// Let's Encrypt's production directory, used when `acme_directory` is empty.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Config {
    /// The names the certificate is for: `acme_domains` (each once, in order), or else
    /// `[server] public_host`.
    pub fn acme_domains(&self) -> Vec<String> {
        if self.tls.acme_domains.is_empty() {
            return vec![self.server.public_host.trim().to_ascii_lowercase()];
        }
        let mut names: Vec<String> = Vec::new();
        for name in &self.tls.acme_domains {
            let name = name.trim().to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The directory URL: `acme_directory`, or else Let's Encrypt production.
    pub fn acme_directory(&self) -> &str {
        match self.tls.acme_directory.trim() {
            "" => LETS_ENCRYPT,
            url => url,
        }
    }

    /// Ports the CA will not use for the chosen challenge: one line each, for `check-config`
    /// and the start-up log. Empty when ACME is off or the ports are the CA's.
    pub fn acme_port_warnings(&self) -> Vec<String> {
        if !self.tls.acme {
            return Vec::new();
        }
        let mut out = Vec::new();
        match self.tls.acme_challenge {
            AcmeChallenge::TlsAlpn01 if self.http.listen.port() != 443 => out.push(format!(
                "[tls] acme_challenge = \"tls-alpn-01\": a public CA connects to port 443 only, \
                 and [http] listen is on port {}; listen on 443, forward 443 to this port, or use \
                 acme_challenge = \"http-01\" (a test CA may be told to use this port)",
                self.http.listen.port()
            )),
            AcmeChallenge::Http01 => match self.http.redirect_listen {
                Some(addr) if addr.port() != 80 => out.push(format!(
                    "[tls] acme_challenge = \"http-01\": a public CA connects to port 80 only, \
                     and [http] redirect_listen is on port {}; listen on 80 or forward 80 to \
                     this port (a test CA may be told to use this port)",
                    addr.port()
                )),
                _ => {}
            },
            AcmeChallenge::TlsAlpn01 => {}
        }
        out
    }
}

/// Checks the ACME keys; the error names the key to change.
pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    let tls = &config.tls;
    if !tls.acme {
        return Ok(());
    }
    if tls.cert.is_some() || tls.key.is_some() {
        return Err((
            "tls.acme",
            "cannot be used together with tls.cert and tls.key: ACME obtains the certificate \
             itself (empty tls.cert and tls.key, or set acme = false)"
                .into(),
        ));
    }
    let key = if tls.acme_domains.is_empty() {
        "server.public_host"
    } else {
        "tls.acme_domains"
    };
    for name in config.acme_domains() {
        check_domain(&name).map_err(|msg| (key, msg))?;
    }
    let url = config.acme_directory();
    if !url.starts_with("https://") || url.parse::<hyper::Uri>().is_err() {
        return Err((
            "tls.acme_directory",
            format!("`{url}` is not an https:// URL of an ACME directory (RFC 8555 §7.1.1)"),
        ));
    }
    let email = tls.acme_email.trim();
    if !email.is_empty() {
        let address = email.strip_prefix("mailto:").unwrap_or(email);
        let well_formed = address.split('@').count() == 2
            && !address.starts_with('@')
            && !address.ends_with('@')
            && !address.contains([' ', ',', '<', '>']);
        if !well_formed {
            return Err((
                "tls.acme_email",
                format!("`{email}` is not an email address like admin@example.org"),
            ));
        }
    }
    validate_eab(&tls.acme_eab_kid, &tls.acme_eab_hmac_key)?;
    if let Some(path) = &tls.acme_ca_file {
        let certs = std::fs::read(path).map_err(|e| {
            (
                "tls.acme_ca_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        use rustls::pki_types::pem::PemObject as _;
        let found = rustls::pki_types::CertificateDer::pem_slice_iter(&certs)
            .filter(Result::is_ok)
            .count();
        if found == 0 {
            return Err((
                "tls.acme_ca_file",
                format!("{} holds no PEM CERTIFICATE block", path.display()),
            ));
        }
    }
    if tls.acme_challenge == AcmeChallenge::Http01 && config.http.redirect_listen.is_none() {
        return Err((
            "http.redirect_listen",
            "must be set for acme_challenge = \"http-01\": the CA fetches the challenge over \
             plain HTTP on this listener (port 80 for a public CA)"
                .into(),
        ));
    }
    Ok(())
}

/// A name a CA can validate by HTTP-01 or TLS-ALPN-01: a DNS name with at least two labels,
/// no wildcard (that needs DNS-01), no IP address.
fn check_domain(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{name}` is an IP address; ACME needs the server's DNS name here (set \
             [server] public_host or [tls] acme_domains to it)"
        ));
    }
    if name.starts_with("*.") {
        return Err(format!(
            "`{name}` is a wildcard; HTTP-01 and TLS-ALPN-01 cannot validate wildcards, list \
             each name"
        ));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{name}` is not a DNS name"));
    }
    if !name.contains('.') {
        return Err(format!(
            "`{name}` is not a public DNS name, so no CA can validate it; set [server] \
             public_host (or [tls] acme_domains) to this server's name, e.g. call.example.org"
        ));
    }
    Ok(())
}

fn validate_eab(kid: &str, hmac_key: &str) -> Result<(), (&'static str, String)> {
    match (kid.trim().is_empty(), hmac_key.trim().is_empty()) {
        (true, true) => Ok(()),
        (false, true) => Err((
            "tls.acme_eab_hmac_key",
            "required when acme_eab_kid is set".into(),
        )),
        (true, false) => Err((
            "tls.acme_eab_kid",
            "required when acme_eab_hmac_key is set".into(),
        )),
        (false, false) => eab_key(hmac_key).map(|_| ()).map_err(|e| {
            (
                "tls.acme_eab_hmac_key",
                format!("is not base64url as the CA hands it out: {e}"),
            )
        }),
    }
}

/// The external account binding HMAC key, decoded from the base64url text the CA hands out.
pub fn eab_key(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let text = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn check(toml: &str) -> Result<(), String> {
        let c = Config::parse(toml, "c.toml").map_err(|e| e.to_string())?;
        let src = Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        c.validate(&src).map_err(|e| e.key.unwrap_or_default())
    }

    #[test]
    fn the_defaults_leave_acme_off_and_say_nothing() {
        let c = Config::parse("", "c.toml").expect("parses");
        assert!(!c.tls.acme);
        assert!(c.tls.acme_domains.is_empty());
        assert_eq!(c.tls.acme_challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(c.acme_directory(), LETS_ENCRYPT);
        assert!(c.acme_port_warnings().is_empty());
    }

    #[test]
    fn the_shipped_config_file_documents_the_defaults() {
        let text = include_str!("../../config.toml");
        let c = Config::parse(text, "config.toml").expect("config.toml parses");
        assert_eq!(
            format!("{:?}", c.tls),
            format!("{:?}", Config::default().tls)
        );
    }

    #[test]
    fn acme_needs_a_dns_name_and_names_the_key_that_holds_it() {
        let ok = "[server]\npublic_host = \"call.example.org\"\n[tls]\nacme = true\n";
        assert_eq!(check(ok), Ok(()));
        let c = Config::parse(
            "[tls]\nacme_domains = [\"A.example.org\", \"b.example.org\", \"a.example.org \"]\n",
            "c.toml",
        )
        .expect("parses");
        assert_eq!(c.acme_domains(), ["a.example.org", "b.example.org"]);
        let on = "[tls]\nacme = true\n";
        assert_eq!(
            check(&format!("[server]\npublic_host = \"203.0.113.5\"\n{on}")),
            Err("server.public_host".into()),
            "an IP address"
        );
        assert_eq!(check(on), Err("server.public_host".into()), "localhost");
        for bad in ["10.0.0.1", "::1", "*.example.org", "exa mple.org", "-x.org"] {
            let toml = format!("[tls]\nacme = true\nacme_domains = [\"{bad}\"]\n");
            assert_eq!(check(&toml), Err("tls.acme_domains".into()), "{bad}");
        }
    }

    #[test]
    fn acme_and_a_certificate_file_exclude_each_other() {
        let toml = "[server]\npublic_host = \"a.example.org\"\n[tls]\nacme = true\n\
                    cert = \"c.pem\"\nkey = \"k.pem\"\n";
        assert_eq!(check(toml), Err("tls.acme".into()));
    }

    #[test]
    fn http_01_needs_the_redirect_listener_and_other_keys_are_checked() {
        let base = "[server]\npublic_host = \"a.example.org\"\n";
        let http01 = format!("{base}[tls]\nacme = true\nacme_challenge = \"http-01\"\n");
        assert_eq!(check(&http01), Err("http.redirect_listen".into()));
        let e = check(&format!(
            "{base}[tls]\nacme = true\nacme_challenge = \"dns-01\"\n"
        ));
        assert!(
            e.as_ref().is_err_and(|e| e.contains("tls.acme_challenge")),
            "{e:?}"
        );
        for (key, line) in [
            (
                "tls.acme_directory",
                "acme_directory = \"http://ca.example/dir\"",
            ),
            ("tls.acme_email", "acme_email = \"not an address\""),
            ("tls.acme_eab_hmac_key", "acme_eab_kid = \"kid-1\""),
            ("tls.acme_eab_kid", "acme_eab_hmac_key = \"c2VjcmV0\""),
            (
                "tls.acme_ca_file",
                "acme_ca_file = \"/nonexistent/roots.pem\"",
            ),
        ] {
            let toml = format!("{base}[tls]\nacme = true\n{line}\n");
            assert_eq!(check(&toml), Err(key.into()), "{line}");
        }
        let eab = format!(
            "{base}[tls]\nacme = true\nacme_eab_kid = \"kid-1\"\nacme_eab_hmac_key = \"c2VjcmV0\"\n"
        );
        assert_eq!(check(&eab), Ok(()));
    }

    #[test]
    fn ports_the_ca_does_not_use_are_warned_about() {
        let base = "[server]\npublic_host = \"a.example.org\"\n";
        let c = Config::parse(&format!("{base}[tls]\nacme = true\n"), "c.toml").expect("parses");
        let w = c.acme_port_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("port 443") && w[0].contains("8443"), "{w:?}");
        let on_443 = format!("{base}[http]\nlisten = \"0.0.0.0:443\"\n[tls]\nacme = true\n");
        let c = Config::parse(&on_443, "c.toml").expect("parses");
        assert!(c.acme_port_warnings().is_empty());
        let http01 = format!(
            "{base}[http]\nredirect_listen = \"0.0.0.0:8080\"\n[tls]\nacme = true\n\
             acme_challenge = \"http-01\"\n"
        );
        let c = Config::parse(&http01, "c.toml").expect("parses");
        let w = c.acme_port_warnings();
        assert!(
            w.len() == 1 && w[0].contains("port 80") && w[0].contains("8080"),
            "{w:?}"
        );
    }
}
