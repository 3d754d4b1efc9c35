//! `[cluster]`: several signalbox nodes as one service, coordinated through Redis
//! (`docs/cluster.md`). An empty `redis_url` is a single node: no Redis code runs at all.

use std::time::Duration;

use serde::Deserialize;

/// The longest node name: it goes into Redis key names and the `/admin` page.
pub const MAX_NODE_NAME: usize = 64;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS); empty = a single node.
    pub redis_url: String,
    /// This node's name in the cluster; empty = the host name.
    pub node_name: String,
    /// A node whose heartbeat is this old is taken for dead.
    #[serde(deserialize_with = "super::duration")]
    pub node_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            node_name: String::new(),
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// Never prints the password of the Redis URL.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redact(&self.redis_url))
            .field("node_name", &self.node_name)
            .field("node_timeout", &self.node_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// `node_name`, or the host name when it is empty.
    pub fn node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        host_name()
            .filter(|h| is_valid_node_name(h))
            .unwrap_or_else(|| "signalbox".into())
    }

    /// Checks what the types cannot; `secrets_empty` is `[turn] secrets` being empty (each
    /// node would make up its own, and no credential would work on another node).
    pub(super) fn validate(&self, secrets_empty: bool) -> Result<(), (&'static str, String)> {
        if !self.node_name.is_empty() && !is_valid_node_name(&self.node_name) {
            return Err((
                "cluster.node_name",
                format!(
                    "`{}` is not a node name (1-{MAX_NODE_NAME} letters, digits, `-`, `_` or `.`)",
                    self.node_name
                ),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.node_timeout) {
            return Err(("cluster.node_timeout", "must be 1s to 5m".into()));
        }
        if !self.enabled() {
            return Ok(());
        }
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            return Err((
                "cluster.redis_url",
                format!(
                    "`{}` is not a Redis URL like redis://host:6379, \
                     redis://user:password@host:6379/0 or rediss://host:6380 ({})",
                    redact(&self.redis_url),
                    e.detail().unwrap_or("invalid")
                ),
            ));
        }
        if secrets_empty {
            return Err((
                "cluster.redis_url",
                "needs [turn] secrets: every node of a cluster must share them (with none, each \
                 node makes up its own and credentials work on one node only)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// 1-64 letters, digits, `-`, `_` or `.`: safe in Redis key names, logs and pages.
pub fn is_valid_node_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_url_is_a_single_node_whatever_the_secrets() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.validate(true), Ok(()));
        assert_eq!(c.node_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_cluster_needs_shared_turn_secrets() {
        let c = ClusterConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate(false), Ok(()));
        let (key, msg) = c.validate(true).unwrap_err();
        assert_eq!(key, "cluster.redis_url");
        assert!(msg.contains("[turn] secrets"), "{msg}");
    }

    #[test]
    fn a_url_that_is_not_redis_is_refused_without_showing_the_password() {
        let c = ClusterConfig {
            redis_url: "http://admin:hunter2@example.org/".into(),
            ..ClusterConfig::default()
        };
        let (key, msg) = c.validate(false).unwrap_err();
        assert_eq!(key, "cluster.redis_url");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn tls_and_passwords_come_through_the_url() {
        for url in [
            "rediss://redis.internal:6380",
            "redis://signalbox:pw@10.0.0.5:6379/2",
        ] {
            let c = ClusterConfig {
                redis_url: url.into(),
                ..ClusterConfig::default()
            };
            assert_eq!(c.validate(false), Ok(()), "{url}");
        }
        assert_eq!(
            redact("redis://signalbox:pw@10.0.0.5:6379/2"),
            "redis://signalbox:***@10.0.0.5:6379/2"
        );
    }

    #[test]
    fn node_names_and_timeouts_are_checked() {
        let bad_name = ClusterConfig {
            node_name: "node one".into(),
            ..ClusterConfig::default()
        };
        assert_eq!(bad_name.validate(false).unwrap_err().0, "cluster.node_name");
        let bad_timeout = ClusterConfig {
            node_timeout: Duration::from_millis(200),
            ..ClusterConfig::default()
        };
        assert_eq!(
            bad_timeout.validate(false).unwrap_err().0,
            "cluster.node_timeout"
        );
        assert!(is_valid_node_name(&ClusterConfig::default().node_name()));
    }
}
