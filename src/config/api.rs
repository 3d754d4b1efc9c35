//! The `[api]` section: keys, CORS origins, rate limits and the TTL of credentials the HTTP API
//! hands to other apps.

use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `[[api.keys]]`; none = the credential endpoints answer 404.
    pub keys: Vec<ApiKeyConfig>,
    /// Web origins (`https://app.example.org`) whose pages may call the API from a browser.
    pub cors_origins: Vec<String>,
    /// Requests per minute one API key may make (on average).
    pub rate_limit_per_key: u32,
    /// Requests per minute from one client address (an IPv6 /64), valid key or not.
    pub rate_limit_per_ip: u32,
    /// Requests allowed at once before the per-minute rates apply.
    pub rate_limit_burst: u32,
    /// Lifetime of the credentials the API mints.
    #[serde(deserialize_with = "duration")]
    pub credential_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs; never the key itself.
    pub name: String,
    pub key: String,
}

/// Shortest API key accepted: anything shorter can be guessed.
pub const MIN_KEY_LEN: usize = 16;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            cors_origins: Vec::new(),
            rate_limit_per_key: 600,
            rate_limit_per_ip: 60,
            rate_limit_burst: 20,
            credential_ttl: Duration::from_secs(3600),
        }
    }
}

impl ApiConfig {
    /// Checks what the types cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, k) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("api.keys[{i}].{field}");
            if k.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if self.keys[..i].iter().any(|o| o.name == k.name) {
                return Err((at("name"), format!("`{}` is used twice", k.name)));
            }
            if k.key.len() < MIN_KEY_LEN {
                return Err((
                    at("key"),
                    format!("must be at least {MIN_KEY_LEN} characters (use a long random string)"),
                ));
            }
            if k.key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((
                    at("key"),
                    "must not contain spaces or control characters".into(),
                ));
            }
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if !is_origin(origin) {
                return Err((
                    format!("api.cors_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://app.example.org"),
                ));
            }
        }
        if self.rate_limit_per_key == 0 || self.rate_limit_per_ip == 0 || self.rate_limit_burst == 0
        {
            return Err((
                "api.rate_limit_per_key".into(),
                "rate_limit_per_key, rate_limit_per_ip and rate_limit_burst must be at least 1"
                    .into(),
            ));
        }
        if self.credential_ttl < Duration::from_secs(1) {
            return Err(("api.credential_ttl".into(), "must be at least 1s".into()));
        }
        Ok(())
    }
}

/// `scheme://host[:port]` with scheme http or https and nothing after: what browsers send in
/// `Origin`, so an exact comparison works.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', '*'])
        && rest.parse::<axum::http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check(text: &str) -> Result<(), String> {
        let c = Config::parse(text, "c.toml").map_err(|e| e.to_string())?;
        c.api.validate().map_err(|(k, _)| k)
    }

    #[test]
    fn the_shipped_config_file_parses_to_the_defaults() {
        let text = include_str!("../../config.toml");
        let c = Config::parse(text, "config.toml").expect("config.toml parses");
        let d = Config::default();
        assert_eq!(format!("{:?}", c.api), format!("{:?}", d.api));
        assert_eq!(format!("{:?}", c.access), format!("{:?}", d.access));
    }

    #[test]
    fn keys_are_a_list_of_named_tables() {
        let c = Config::parse(
            "[[api.keys]]\nname = \"synapse\"\nkey = \"0123456789abcdef\"\n",
            "c.toml",
        )
        .expect("parses");
        assert_eq!(c.api.keys.len(), 1);
        assert_eq!(c.api.keys[0].name, "synapse");
        assert!(c.api.validate().is_ok());
    }

    #[test]
    fn short_or_duplicate_keys_are_refused_by_name() {
        assert_eq!(
            check("[[api.keys]]\nname = \"a\"\nkey = \"short\"\n"),
            Err("api.keys[0].key".into())
        );
        let twice = "[[api.keys]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n\
                     [[api.keys]]\nname = \"a\"\nkey = \"0123456789abcdeg\"\n";
        assert_eq!(check(twice), Err("api.keys[1].name".into()));
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        assert!(check("[api]\ncors_origins = [\"https://app.example.org:8443\"]\n").is_ok());
        for bad in [
            "*",
            "app.example.org",
            "https://a.org/",
            "https://a.org/path",
            "ftp://a.org",
        ] {
            assert_eq!(
                check(&format!("[api]\ncors_origins = [{bad:?}]\n")),
                Err("api.cors_origins[0]".into()),
                "{bad}"
            );
        }
    }
}
