//! Command line. Each `///` line below is what `--help` prints.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// signalbox: private video calls on your own server. Serves the web app over HTTPS, does the
/// WebSocket signaling, answers STUN and relays media as a TURN server, from one binary.
#[derive(Debug, Parser)]
#[command(name = "signalbox", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Configuration file. When the default `config.toml` is absent, the built-in defaults apply;
    /// a file named explicitly must exist.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "PATH",
        env = "SIGNALBOX_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Override `[http] listen`: where HTTPS (web app and signaling) listens, e.g. 0.0.0.0:443.
    #[arg(long, global = true, value_name = "ADDR", env = "SIGNALBOX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Override `[server] public_host`: the name or IP address browsers use to reach this server.
    #[arg(
        long,
        global = true,
        value_name = "HOST",
        env = "SIGNALBOX_PUBLIC_HOST"
    )]
    pub public_host: Option<String>,
    /// Override `[log] level`, e.g. `debug` or `signalbox=trace` (RUST_LOG still wins).
    #[arg(
        long,
        global = true,
        value_name = "FILTER",
        env = "SIGNALBOX_LOG_LEVEL"
    )]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Run,
    /// Validate the configuration, print a summary and exit: 0 when valid, 2 when not.
    CheckConfig,
}

impl Global {
    /// The config path and whether it must exist (it must when named explicitly).
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("config.toml"), false),
        }
    }
}
