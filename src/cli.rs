//! Command line. Each `///` line below is what `--help` prints.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Source};

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
    /// Ask the running server (found through `[server] pid_file`) to re-read its configuration.
    /// The file is checked first; an invalid one is not sent. The server log says what changed.
    Reload,
    /// Print an invitation link to ROOM (or, with --space, to the space of that name), signed
    /// with this server's key, for rooms and spaces that need one (`[access] mode = "token"`).
    Invite(InviteArgs),
    /// Print a TURN username and password (REST-API scheme, signed with the first of
    /// `[turn] secrets`) and the TURN URIs, for command-line tools and tests.
    Credentials(CredentialsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InviteArgs {
    /// The room (or the space, with --space): 1-64 letters, digits, `-`, `_` or `.`.
    pub room: String,
    /// Invite to the space ROOM names (its people list and direct calls) instead of a room.
    #[arg(long, conflicts_with = "host")]
    pub space: bool,
    /// How long the link admits people, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub ttl: String,
    /// Display name the invited person appears under (fixed by the invitation).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A host invitation: whoever joins with it becomes the room's host (admits, removes,
    /// locks, ends the meeting); a previous host stays in as a guest.
    #[arg(long)]
    pub host: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CredentialsArgs {
    /// How long the credentials open new allocations, e.g. 10m, 1h.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub ttl: String,
    /// User part of the username (`EXPIRY:USER`); without it the username is the bare expiry.
    /// It may not contain `~`, which marks the credentials of room peers.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// Why the process stops with an error: configuration or a bad command-line value (exit 2),
/// or anything at run time (exit 1).
#[derive(Debug)]
pub enum Failure {
    Config(ConfigError),
    /// A command-line value that cannot work; the text is the whole message.
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl Cli {
    /// Loads the configuration named on the command line, with command-line overrides applied.
    pub fn load_config(&self) -> Result<(Config, Source), ConfigError> {
        let (path, required) = self.global.config_path();
        let (mut config, source) = Config::load(&path, required)?;
        let g = &self.global;
        if let Some(listen) = g.listen {
            config.http.listen = listen;
        }
        if let Some(host) = &g.public_host {
            config.server.public_host = host.clone();
        }
        if let Some(level) = &g.log_level {
            config.log.level = level.clone();
        }
        let cli_source = Source {
            name: "command line".into(),
            base_dir: source.base_dir.clone(),
        };
        config.validate(&cli_source)?;
        Ok((config, source))
    }
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
