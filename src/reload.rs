//! Live configuration reload: SIGHUP (or `signalbox reload`) re-reads the config file.
//!
//! The new file is parsed and validated like at start; if it is invalid, or changes something
//! that only a restart can change (listen addresses, certificate paths), it is refused with one
//! log line and the running configuration stays. Otherwise certificates are re-read and the new
//! configuration is published on a `watch` channel; each subsystem applies what it can change
//! live (TURN secrets and quotas, limits, API keys, access mode) without dropping calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::Cli;
use crate::config::{Config, ConfigError};
use crate::tls::CertStore;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("`{0}` changed; that needs a restart")]
    NeedsRestart(&'static str),
}

/// Re-reads the configuration on request and publishes it.
pub struct Reloader {
    cli: Cli,
    certs: Arc<CertStore>,
    current: watch::Sender<Arc<Config>>,
}

impl Reloader {
    pub fn new(cli: Cli, certs: Arc<CertStore>, config: Arc<Config>) -> Self {
        let (current, _) = watch::channel(config);
        Self {
            cli,
            certs,
            current,
        }
    }

    /// A receiver that sees every accepted configuration, starting with the running one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    /// Loads the file again and applies it, or says why not.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let (new, _) = crate::app::load_config(&self.cli)?;
        let old = self.current.borrow().clone();
        if let Some(key) = restart_only_change(&old, &new) {
            return Err(ReloadError::NeedsRestart(key));
        }
        let loaded = self.certs.reload()?;
        info!(sha256 = %loaded.fingerprint, "certificate (re)loaded");
        let later = applied_at_restart(&old, &new);
        if !later.is_empty() {
            warn!(
                "reload: changes in {} take effect at the next restart",
                later.join(", ")
            );
        }
        self.current.send_replace(Arc::new(new));
        Ok(())
    }

    /// Reloads on every SIGHUP until the process ends. The handler is installed before this
    /// returns, so a SIGHUP right after start-up is a reload and never the default "terminate".
    pub fn run_on_sighup(self) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(hup) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP; live reload is off");
            return;
        };
        tokio::spawn(self.reload_loop(hup));
    }

    async fn reload_loop(self, mut hup: tokio::signal::unix::Signal) {
        while hup.recv().await.is_some() {
            match self.reload() {
                Ok(()) => info!("SIGHUP: configuration reloaded"),
                Err(e) => warn!("SIGHUP: configuration not reloaded, the old one stays: {e}"),
            }
        }
    }
}

/// The first key whose change only a restart can apply, if any.
pub fn restart_only_change(old: &Config, new: &Config) -> Option<&'static str> {
    let (o, n) = (old, new);
    let checks = [
        ("http.listen", o.http.listen != n.http.listen),
        (
            "http.redirect_listen",
            o.http.redirect_listen != n.http.redirect_listen,
        ),
        ("http.static_dir", o.http.static_dir != n.http.static_dir),
        ("metrics.listen", o.metrics.listen != n.metrics.listen),
        (
            "server.public_host",
            o.server.public_host != n.server.public_host,
        ),
        ("tls.cert", o.tls.cert != n.tls.cert),
        ("tls.key", o.tls.key != n.tls.key),
        (
            "tls.generated_dir",
            o.tls.generated_dir != n.tls.generated_dir,
        ),
        ("tls.acme", o.tls.acme != n.tls.acme),
        ("tls.acme_domains", o.tls.acme_domains != n.tls.acme_domains),
        ("tls.acme_email", o.tls.acme_email != n.tls.acme_email),
        (
            "tls.acme_directory",
            o.tls.acme_directory != n.tls.acme_directory,
        ),
        (
            "tls.acme_challenge",
            o.tls.acme_challenge != n.tls.acme_challenge,
        ),
        ("tls.acme_ca_file", o.tls.acme_ca_file != n.tls.acme_ca_file),
        ("tls.acme_eab_kid", o.tls.acme_eab_kid != n.tls.acme_eab_kid),
        (
            "tls.acme_eab_hmac_key",
            o.tls.acme_eab_hmac_key != n.tls.acme_eab_hmac_key,
        ),
        ("turn.enabled", o.turn.enabled != n.turn.enabled),
        ("turn.listen", o.turn.listen != n.turn.listen),
        ("turn.relay_ip", o.turn.relay_ip != n.turn.relay_ip),
        ("turn.external_ip", o.turn.external_ip != n.turn.external_ip),
        ("turn.relay_ports", o.turn.relay_ports != n.turn.relay_ports),
        ("turn.workers", o.turn.workers != n.turn.workers),
        (
            "turn.batch_window",
            o.turn.batch_window != n.turn.batch_window,
        ),
        ("turn.listen_tcp", o.turn.listen_tcp != n.turn.listen_tcp),
        ("turn.listen_tls", o.turn.listen_tls != n.turn.listen_tls),
        ("turn.one_port", o.turn.one_port != n.turn.one_port),
        (
            "turn.stream_handshake_timeout",
            o.turn.stream_handshake_timeout != n.turn.stream_handshake_timeout,
        ),
        (
            "turn.stream_idle_timeout",
            o.turn.stream_idle_timeout != n.turn.stream_idle_timeout,
        ),
        (
            "turn.max_stream_connections",
            o.turn.max_stream_connections != n.turn.max_stream_connections,
        ),
        (
            "turn.max_stream_connections_per_ip",
            o.turn.max_stream_connections_per_ip != n.turn.max_stream_connections_per_ip,
        ),
    ];
    checks
        .iter()
        .find(|(_, changed)| *changed)
        .map(|(key, _)| *key)
}

/// Sections whose changes the running server does not apply (they are read at start).
pub fn applied_at_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut turn_old = old.turn.clone();
    let mut turn_new = new.turn.clone();
    // Live: secrets and quotas.
    for t in [&mut turn_old, &mut turn_new] {
        t.secrets.clear();
        t.user_quota = 0;
        t.total_quota = 0;
    }
    let sections: [(&'static str, bool); 6] = [
        ("[rooms]", differs(&old.rooms, &new.rooms)),
        ("[api]", differs(&old.api, &new.api)),
        ("[access]", differs(&old.access, &new.access)),
        ("[log]", differs(&old.log, &new.log)),
        (
            "[turn] (other than secrets and quotas)",
            differs(&turn_old, &turn_new),
        ),
        (
            "[server] drain_grace",
            old.server.drain_grace != new.server.drain_grace,
        ),
    ];
    sections
        .iter()
        .filter(|(_, d)| *d)
        .map(|(s, _)| *s)
        .collect()
}

/// Writes the pid file and removes it when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `signalbox reload`: checks the file, then signals the server named by the pid file.
pub fn signal_running_server(config: &Config) -> Result<u32, String> {
    let Some(path) = &config.server.pid_file else {
        return Err(
            "`server.pid_file` is empty, so the running server cannot be found; \
                    send SIGHUP yourself (systemctl reload signalbox)"
                .into(),
        );
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no running server: cannot read {} ([server] pid_file): {e}",
            path.display()
        )
    })?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a process id", path.display()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "signalbox" {
        return Err(format!(
            "process {pid} from {} is not a running signalbox (stale pid file?)",
            path.display()
        ));
    }
    let pid_t = libc::pid_t::try_from(pid).map_err(|_| format!("bad process id {pid}"))?;
    // SAFETY: kill has no memory-safety preconditions; the pid was checked to be ours above.
    if unsafe { libc::kill(pid_t, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_changes_need_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        assert_eq!(restart_only_change(&old, &new), None);
        new.http.listen = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(restart_only_change(&old, &new), Some("http.listen"));
        let mut new = Config::default();
        new.turn.listen_tls = Vec::new();
        assert_eq!(restart_only_change(&old, &new), Some("turn.listen_tls"));
    }

    #[test]
    fn acme_changes_need_a_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.tls.acme_domains = vec!["call.example.org".into()];
        assert_eq!(restart_only_change(&old, &new), Some("tls.acme_domains"));
        let mut new = Config::default();
        new.tls.acme = true;
        assert_eq!(restart_only_change(&old, &new), Some("tls.acme"));
    }

    #[test]
    fn changes_read_only_at_start_are_named() {
        let old = Config::default();
        let mut new = Config::default();
        new.turn.user_quota = 3;
        new.turn.secrets = vec!["s".into()];
        assert!(
            applied_at_restart(&old, &new).is_empty(),
            "secrets and quotas are live"
        );
        new.rooms.max_peers = 8;
        new.turn.max_bitrate = 1;
        assert_eq!(
            applied_at_restart(&old, &new),
            ["[rooms]", "[turn] (other than secrets and quotas)"]
        );
    }

    #[test]
    fn log_level_changes_do_not() {
        let old = Config::default();
        let mut new = Config::default();
        new.log.level = "debug".into();
        assert_eq!(restart_only_change(&old, &new), None);
    }
}
