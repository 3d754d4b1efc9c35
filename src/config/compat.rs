//! `[compat]`: endpoints that let apps written for other signaling servers run unchanged.

use serde::Deserialize;

/// `[compat]`: the Socket.IO endpoint (`docs/socketio.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Serve Socket.IO on `/socket.io/` and its client on `/socket.io/socket.io.js`.
    pub socketio: bool,
    /// Origins besides the server's own whose pages may connect (`https://app.example.org`).
    pub socketio_origins: Vec<String>,
    /// Most socket ids in one `updateUserlist`.
    pub max_userlist: usize,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            socketio: false,
            socketio_origins: Vec::new(),
            max_userlist: 200,
        }
    }
}

impl CompatConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=10_000).contains(&self.max_userlist) {
            return Err(("compat.max_userlist", "must be 1 to 10000".into()));
        }
        for origin in &self.socketio_origins {
            if !is_origin(origin) {
                return Err((
                    "compat.socketio_origins",
                    format!(
                        "`{origin}` is not an origin: write `https://HOST` or `https://HOST:PORT` \
                         (`http://` too), with no path"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `SCHEME://HOST[:PORT]` as a browser sends it in `Origin`.
pub(super) fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_scheme_and_host_only() {
        assert!(is_origin("https://app.example.org"));
        assert!(is_origin("http://localhost:3000"));
        assert!(is_origin("https://[::1]:8443"));
        assert!(!is_origin("app.example.org"));
        assert!(!is_origin("https://app.example.org/"));
        assert!(!is_origin("https://"));
        assert!(!is_origin("wss://app.example.org"));
    }

    #[test]
    fn the_userlist_cap_is_bounded() {
        let mut c = CompatConfig::default();
        assert!(c.validate().is_ok());
        c.max_userlist = 0;
        assert_eq!(c.validate().map_err(|e| e.0), Err("compat.max_userlist"));
    }
}
