//! `[compat]`: endpoints that let apps written for other signaling servers run unchanged.

use serde::Deserialize;

use super::AccessMode;

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
    /// Socket.IO connects per minute from one client address (IPv4 address, IPv6 /64), and as
    /// many at once.
    pub connect_rate_per_ip: u32,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            socketio: false,
            socketio_origins: Vec::new(),
            max_userlist: 200,
            connect_rate_per_ip: 120,
        }
    }
}

impl CompatConfig {
    /// `access` is `[access] mode`: invitation-only rooms cannot be served to clients that
    /// carry no invitation.
    pub(super) fn validate(&self, access: AccessMode) -> Result<(), (&'static str, String)> {
        if self.socketio && access == AccessMode::Token {
            return Err((
                "compat.socketio",
                "cannot be on with [access] mode = \"token\": the Socket.IO vocabularies carry \
                 no invitation, so their rooms and TURN credentials would be open to anyone"
                    .into(),
            ));
        }
        if !(1..=10_000).contains(&self.max_userlist) {
            return Err(("compat.max_userlist", "must be 1 to 10000".into()));
        }
        if self.connect_rate_per_ip == 0 {
            return Err(("compat.connect_rate_per_ip", "must be at least 1".into()));
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
        assert!(c.validate(AccessMode::Open).is_ok());
        c.max_userlist = 0;
        assert_eq!(
            c.validate(AccessMode::Open).map_err(|e| e.0),
            Err("compat.max_userlist")
        );
    }

    #[test]
    fn socketio_is_refused_with_invitation_only_rooms() {
        let c = CompatConfig {
            socketio: true,
            ..CompatConfig::default()
        };
        assert!(c.validate(AccessMode::Open).is_ok());
        assert_eq!(
            c.validate(AccessMode::Token).map_err(|e| e.0),
            Err("compat.socketio")
        );
        let config = crate::config::Config::parse(
            "[access]\nmode = \"token\"\n[compat]\nsocketio = true\n",
            "c.toml",
        )
        .expect("parses");
        let source = crate::config::Source {
            name: "c.toml".into(),
            base_dir: ".".into(),
        };
        let e = config.validate(&source).expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("compat.socketio"));
    }

    #[test]
    fn a_connect_rate_of_zero_is_refused() {
        let c = CompatConfig {
            connect_rate_per_ip: 0,
            ..CompatConfig::default()
        };
        assert_eq!(
            c.validate(AccessMode::Open).map_err(|e| e.0),
            Err("compat.connect_rate_per_ip")
        );
    }
}
