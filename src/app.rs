//! Process lifecycle: configuration, logging, listeners, signals and graceful shutdown.
//!
//! The accept loop is ours rather than `axum::serve` so that TLS, connection limits and the
//! later one-port protocol split all sit at the one place where a connection is first seen.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tracing::{debug, info, warn};

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError, Source};
use crate::signaling::{self, Signaling};
use crate::tls::{self, CertStore};
use crate::web::{self, AppState};

/// Why the process stops with an error: configuration (exit 2) or anything at run time (exit 1).
#[derive(Debug)]
pub enum Failure {
    Config(ConfigError),
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

/// Time a client gets to finish the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the configuration named on the command line, with command-line overrides applied.
pub fn load_config(cli: &Cli) -> Result<(Config, Source), ConfigError> {
    let (path, required) = cli.global.config_path();
    let (mut config, source) = Config::load(&path, required)?;
    let g = &cli.global;
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

pub fn main(cli: Cli) -> Result<(), Failure> {
    let (config, source) = load_config(&cli)?;
    match cli.command.clone().unwrap_or(Command::Run) {
        Command::CheckConfig => {
            if config.tls.cert.is_some() {
                CertStore::load(CertStore::source_from_config(&config))?;
            }
            println!(
                "{}: OK (https on {}, public host {})",
                source.name, config.http.listen, config.server.public_host
            );
            Ok(())
        }
        Command::Run => {
            // Certificates first: a bad file is a configuration error, reported as one line.
            let certs = CertStore::load(CertStore::source_from_config(&config))?;
            init_logging(&config);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("signalbox")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run(config, source, certs))
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(
    config: Config,
    source: Source,
    (certs, loaded): (Arc<CertStore>, tls::Loaded),
) -> Result<(), Failure> {
    info!(config = %source.name, "signalbox {} starting", env!("CARGO_PKG_VERSION"));
    raise_nofile_limit();
    log_certificate(&loaded, certs.is_real());
    let tls_config = tls::server_config(certs.clone(), &[b"h2", b"http/1.1"]);

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([http] listen)", config.http.listen))?;
    let https_addr = listener.local_addr().context("listener has no address")?;

    let state = Arc::new(AppState::new(
        config.http.static_dir.clone(),
        certs.is_real(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // TURN credentials will fill `iceServers`; until then browsers use host candidates.
    let signaling = Signaling::start(
        &config.rooms,
        &config.server.public_host,
        https_addr,
        signaling::no_ice_servers(),
        shutdown_rx.clone(),
    );
    let router = web::router(state).merge(signaling.router());

    announce("https", https_addr);
    if let Some(addr) = config.http.redirect_listen {
        let redirect = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ([http] redirect_listen)"))?;
        let bound = redirect.local_addr().context("listener has no address")?;
        announce("http-redirect", bound);
        tokio::spawn(serve_redirect(
            redirect,
            https_addr.port(),
            shutdown_rx.clone(),
        ));
    }
    let turn = if config.turn.enabled {
        let turn = crate::turn::service::TurnServer::start(&config)?;
        for addr in &turn.listeners {
            announce("turn-udp", *addr);
        }
        Some(turn)
    } else {
        None
    };
    println!(
        "signalbox: open https://{}/",
        host_port(&config.server.public_host, https_addr.port())
    );

    tokio::spawn(reload_on_sighup(certs));
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = shutdown_tx.send(true);
    });

    serve_https(
        listener,
        TlsAcceptor::from(tls_config),
        router,
        shutdown_rx,
        config.http.shutdown_grace,
    )
    .await;
    if let Some(turn) = turn {
        turn.stop();
    }
    // Upgraded WebSockets are no longer hyper's; they close themselves (code 1001).
    signaling.wait_closed(config.http.shutdown_grace).await;
    info!("stopped");
    Ok(())
}

/// Every WebSocket, TURN allocation and relay socket is a descriptor, and the usual soft
/// limit (1024) is far below what one server handles: raise the soft limit to the hard one.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        debug!("open file limit raised from {before} to {}", lim.rlim_max);
    } else {
        warn!("cannot raise the open file limit above {before}");
    }
}

/// One machine-readable line per listener on stdout: tests and scripts read these.
fn announce(what: &str, addr: SocketAddr) {
    println!("signalbox: {what} listening on {addr}");
}

fn host_port(host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn log_certificate(loaded: &tls::Loaded, real: bool) {
    let kind = match (real, loaded.generated_now) {
        (true, _) => "configured certificate",
        (false, true) => "generated a self-signed certificate",
        (false, false) => "reusing the self-signed certificate",
    };
    info!(
        path = %loaded.cert_path.display(),
        sha256 = %loaded.fingerprint,
        "{kind}"
    );
}

async fn reload_on_sighup(certs: Arc<CertStore>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; certificate reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        match certs.reload() {
            Ok(loaded) => info!(sha256 = %loaded.fingerprint, "SIGHUP: certificate reloaded"),
            Err(e) => warn!("SIGHUP: certificate not reloaded, the old one stays: {e}"),
        }
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}

async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => { backoff = Duration::from_millis(5); conn }
                Err(e) => {
                    // Usually EMFILE: wait for descriptors to free up instead of spinning.
                    warn!("accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Some(conn) = handshake(&acceptor, tcp, peer).await else {
                return;
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move {
                    let resp = match router.call(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    info!("no longer accepting; waiting up to {grace:?} for open connections");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after {grace:?}; closing them");
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Plain HTTP that only sends people to HTTPS on the same host.
async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    use axum::http::{header, StatusCode, Uri};
    use axum::response::IntoResponse;
    let app = Router::new().fallback(move |headers: axum::http::HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .map(|a| a.host().to_owned());
        let Some(host) = host else {
            return (StatusCode::BAD_REQUEST, "missing or invalid Host header\n").into_response();
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let location = format!("https://{}{}", host_port(&host, https_port), path);
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response()
    });
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.changed().await;
    });
    if let Err(e) = serve.await {
        warn!("redirect listener stopped: {e}");
    }
}
