//! Live configuration reload: SIGHUP (or `signalbox reload`) re-reads the config file.
//!
//! The new file is parsed and validated like at start; if it is invalid, or changes something
//! that only a restart can change (listen addresses, certificate paths), it is refused with one
//! log line and the running configuration stays. Otherwise certificates are re-read and the new
//! configuration is published on a `watch` channel. What changes live, without dropping calls:
//! the certificates, the TURN secrets and quotas (`user_quota`, `total_quota`,
//! `max_allocations_per_ip`), and the `[metrics]` and `[admin]` tokens, which are read per
//! request. Everything else is read at start, `[rooms]`, `[api]` (keys, CORS, rate limits) and
//! `[access]` (mode, key file) among it: a reload that changes it is accepted, and the log names
//! the sections that take effect at the next restart ([`applied_at_restart`]).

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
        let (new, _) = self.cli.load_config()?;
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
        t.max_allocations_per_ip = 0;
    }
    let sections: [(&'static str, bool); 8] = [
        // The listen addresses and static_dir are refused above; the rest (caps, timeouts,
        // shutdown_grace) is read when the listener starts.
        ("[http]", differs(&old.http, &new.http)),
        ("[rooms]", differs(&old.rooms, &new.rooms)),
        ("[calls]", differs(&old.calls, &new.calls)),
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

/// The pid file of the running server, removed when dropped if it still holds this process's
/// id.
///
/// It is created exclusively (`O_CREAT|O_EXCL`) and never through a symbolic link
/// (`O_NOFOLLOW`; a link at the path is refused, not removed), so the server cannot be made to
/// write into another file. A pid file that exists already is stale, and replaced, when it names
/// no running signalbox (the server crashed, was killed, or the machine rebooted) or names this
/// very process (a container restarted with the same pid); one naming another running
/// signalbox stops the start, since `signalbox reload` could reach only one of the two.
pub struct PidFile(PathBuf);

/// Why the pid file cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("signalbox is already running as process {0}; stop it, or give this server its own pid_file")]
    Running(u32),
    #[error("it is a symbolic link, which the pid file is never written through")]
    Symlink,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, PidFileError> {
        use std::io::Write as _;
        // Twice at most: once more after taking a stale file away.
        for _ in 0..2 {
            match create_new(path) {
                Ok(mut file) => {
                    file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
                    return Ok(PidFile(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => return Err(PidFileError::Symlink),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some(pid) = running_signalbox(path) {
                return Err(PidFileError::Running(pid));
            }
            info!(path = %path.display(), "replacing a stale pid file");
            std::fs::remove_file(path)?;
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the file keeps coming back; another process is creating it",
        )
        .into())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.0) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The process id in the pid file at `path`, read without following a symbolic link.
fn read_pid(path: &Path) -> Option<u32> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// The id in the pid file at `path` when it names a running signalbox other than this one.
fn running_signalbox(path: &Path) -> Option<u32> {
    let pid = read_pid(path)?;
    if pid == std::process::id() {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "signalbox").then_some(pid)
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
        new.http.max_connections_per_ip = 7;
        assert_eq!(applied_at_restart(&old, &new)[0], "[http]");
    }

    #[test]
    fn api_keys_and_the_access_mode_are_read_only_at_start() {
        let old = Config::default();
        let mut new = Config::default();
        new.access.mode = crate::access::AccessMode::Token;
        new.api.keys.push(crate::config::ApiKeyConfig {
            name: "app".into(),
            key: "0123456789abcdef".into(),
        });
        assert_eq!(restart_only_change(&old, &new), None, "accepted");
        assert_eq!(applied_at_restart(&old, &new), ["[api]", "[access]"]);
    }

    #[test]
    fn the_pid_file_is_created_with_this_pid_and_removed_on_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("signalbox.pid");
        let pid_file = PidFile::create(&path).expect("created");
        assert_eq!(read_pid(&path), Some(std::process::id()));
        drop(pid_file);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_pid_file_is_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("signalbox.pid");
        // No process has this id (ids stop at 2^22), and a leftover with our own id.
        for stale in [
            "4294967295\n",
            &format!("{}\n", std::process::id()),
            "garbage",
        ] {
            std::fs::write(&path, stale).expect("write");
            let pid_file = PidFile::create(&path).expect("replaced");
            assert_eq!(read_pid(&path), Some(std::process::id()), "{stale:?}");
            drop(pid_file);
        }
    }

    #[test]
    fn a_symbolic_link_at_the_pid_file_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").expect("write");
        let path = dir.path().join("signalbox.pid");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(matches!(PidFile::create(&path), Err(PidFileError::Symlink)));
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me");
        let dangling = dir.path().join("dangling.pid");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        assert!(matches!(
            PidFile::create(&dangling),
            Err(PidFileError::Symlink)
        ));
        assert!(
            !dir.path().join("nowhere").exists(),
            "nothing created through it"
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
