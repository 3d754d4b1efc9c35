//! Process lifecycle: configuration, logging, listeners, signals and graceful shutdown.
//!
//! The accept loop is ours rather than `axum::serve` so that TLS, connection limits and the
//! later one-port protocol split all sit at the one place where a connection is first seen.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::access::{AccessKey, AccessMode, AccessPolicy};
use crate::cli::{Cli, Command, Failure};
use crate::config::{AcmeChallenge, Config, ConfigError, Source};
use crate::credentials;
use crate::listener::{Listener, ALPN_STUN_TURN};
use crate::reload::Reloader;
use crate::signaling::{self, Signaling};
use crate::tls::{self, CertStore};
use crate::web::{self, host_port, AppState};

pub fn main(cli: Cli) -> Result<(), Failure> {
    let (config, source) = cli.load_config()?;
    match cli.command.clone().unwrap_or(Command::Run) {
        Command::CheckConfig => {
            if config.tls.cert.is_some() {
                CertStore::load(CertStore::source_from_config(&config))?;
            }
            for warning in config.acme_port_warnings() {
                eprintln!("signalbox: warning: {warning}");
            }
            println!(
                "{}: OK (https on {}, public host {})",
                source.name, config.http.listen, config.server.public_host
            );
            Ok(())
        }
        Command::Invite(args) => crate::commands::invite(&config, &source, &args),
        Command::Credentials(args) => crate::commands::credentials(&config, &args),
        Command::Reload => {
            let pid = crate::reload::signal_running_server(&config)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
            println!(
                "signalbox: asked process {pid} to reload {}; its log says what changed",
                source.name
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
            runtime.block_on(run(cli, config, source, certs))
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(
    cli: Cli,
    config: Config,
    source: Source,
    (certs, loaded): (Arc<CertStore>, tls::Loaded),
) -> Result<(), Failure> {
    info!(config = %source.name, "signalbox {} starting", env!("CARGO_PKG_VERSION"));
    signalbox_udp::socket::raise_nofile_limit();
    log_certificate(&loaded, config.tls.acme);
    // One-port mode also offers ALPN `stun.turn` (RFC 7443). It goes first: the server's order
    // wins, and coturn's client offers `http/1.1` next to it. Browsers never offer it. ACME's
    // `acme-tls/1` goes last: only a CA validating offers it, and offers nothing else.
    let mut alpn: Vec<&[u8]> = vec![b"h2", b"http/1.1"];
    if config.turn.enabled && config.turn.one_port {
        alpn.insert(0, ALPN_STUN_TURN);
    }
    if config.tls.acme && config.tls.acme_challenge == AcmeChallenge::TlsAlpn01 {
        alpn.push(crate::tls::acme::ALPN_ACME_TLS);
    }
    let tls_config = tls::server_config(certs.clone(), &alpn);

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([http] listen)", config.http.listen))?;
    let https_addr = listener.local_addr().context("listener has no address")?;

    crate::metrics::mark_start();
    let reloader = Reloader::new(cli, certs.clone(), Arc::new(config.clone()));
    let state = Arc::new(AppState::new(
        config.http.static_dir.clone(),
        certs.trusted_flag(),
        reloader.subscribe(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let turn = if config.turn.enabled {
        let turn = crate::turn::service::TurnServer::start(&config)?;
        for addr in &turn.listeners {
            announce("turn-udp", *addr);
        }
        Some(turn)
    } else {
        None
    };
    // The drain stops every accept loop; open connections keep relaying until shutdown.
    let (drain_tx, drain_rx) = watch::channel(false);
    let streams = match &turn {
        Some(t) => Some(
            crate::turn::stream::StreamService::start(
                &config.turn,
                t.shared(),
                TlsAcceptor::from(tls::server_config(certs.clone(), &[ALPN_STUN_TURN])),
                drain_rx.clone(),
                crate::proxy::TrustedProxies::new(&config.http.trusted_proxies),
                shutdown_rx.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let one_port = config.turn.one_port.then_some(https_addr.port());
    let issuer = turn.as_ref().map(|t| {
        let mut issuer = credentials::Issuer::new(&config, t);
        if let Some(s) = &streams {
            issuer.add_stream_listeners(s.tcp_listeners(), s.tls_listeners(), one_port);
        }
        Arc::new(issuer)
    });
    let (admit, admit_space) = admit_fns(&config, &source)?;
    let ttl = config.turn.credential_ttl;
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(credentials::service::EVENT_QUEUE);
    let hooks = signaling::Hooks {
        ice_servers: match &issuer {
            Some(issuer) => credentials::service::ice_servers_fn(issuer.clone(), ttl),
            None => signaling::no_ice_servers(),
        },
        admit,
        admit_space,
        events: issuer.is_some().then_some(events_tx),
    };
    // A single node (no `redis_url`) never reaches the cluster code.
    let cluster = if config.cluster.enabled() {
        let identity = crate::cluster::Identity {
            public: host_port(&config.server.public_host, https_addr.port()),
            relays: turn
                .as_ref()
                .map(|t| t.relay_addresses.clone())
                .unwrap_or_default(),
            relay_ports: turn.as_ref().map(|t| t.relay_ports),
            peer_relays: turn.as_ref().map(|t| t.cluster_relays.clone()),
            turn: turn.as_ref().map(|t| {
                let closer = t.closer();
                crate::cluster::turn::TurnHooks {
                    live_peers: t.live_peers.clone(),
                    close_user: Arc::new(move |user: &str| closer(user)),
                }
            }),
        };
        Some(crate::cluster::Cluster::start(
            &config,
            identity,
            shutdown_rx.clone(),
        )?)
    } else {
        None
    };
    let extras = signaling::Extras {
        calls: config.calls.clone(),
        allowed_origins: config.http.allowed_origins.clone(),
        cluster: cluster.clone(),
    };
    let signaling = Signaling::start_with_hooks(
        &config.rooms,
        &extras,
        &config.server.public_host,
        https_addr,
        hooks,
        shutdown_rx.clone(),
    );
    if let (Some(issuer), Some(turn)) = (&issuer, &turn) {
        let closer = turn.closer();
        let close: credentials::service::CloseUserFn =
            Arc::new(move |user: &credentials::UserPart| closer(user.as_str()));
        tokio::spawn(credentials::service::run(
            issuer.clone(),
            ttl,
            signaling.handle(),
            events_rx,
            Some(close),
            cluster.as_ref().and_then(|c| c.notes()),
        ));
    }
    let mut ops = web::ops::OpsState::new(
        state.clone(),
        signaling.handle(),
        issuer.clone(),
        config.access.mode,
    );
    ops.cluster = cluster.clone();
    let ops = Arc::new(ops);
    let socketio_turn = match (&issuer, &turn) {
        (Some(issuer), Some(turn)) => {
            let closer = turn.closer();
            Some(crate::socketio::Turn {
                issuer: issuer.clone(),
                ttl,
                close_user: Some(Arc::new(move |user: &credentials::UserPart| {
                    closer(user.as_str())
                })),
            })
        }
        _ => None,
    };
    let api = Arc::new(web::api::ApiState::new(&config.api, issuer));
    let socketio = crate::socketio::endpoint(
        &config,
        crate::socketio::Wiring {
            https_addr,
            turn: socketio_turn,
            hub: signaling.handle(),
            drain: drain_rx.clone(),
            shutdown: shutdown_rx.clone(),
        },
    );
    let mut extra = web::api::routes(api).merge(web::ops::routes(ops));
    if let Some(socketio) = &socketio {
        extra = extra.merge(socketio.router.clone());
    }
    let router = web::router_with(state.clone(), extra).merge(signaling.router());

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
            certs.acme_challenges(),
            shutdown_rx.clone(),
        ));
    }
    if let Some(addr) = config.metrics.listen {
        let metrics = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ([metrics] listen)"))?;
        announce(
            "metrics",
            metrics.local_addr().context("listener has no address")?,
        );
        tokio::spawn(serve_metrics(metrics, shutdown_rx.clone()));
    }
    let _pid_file = match &config.server.pid_file {
        Some(path) => Some(
            crate::reload::PidFile::create(path)
                .with_context(|| format!("cannot write {} ([server] pid_file)", path.display()))?,
        ),
        None => None,
    };

    // Every listener is bound: the CA's validation connections find them.
    let acme = crate::tls::acme::start(&config, certs.clone(), reloader.subscribe());
    let target = crate::selftest::Target {
        turn_udp: turn.as_ref().and_then(|t| t.listeners.first().copied()),
        secrets: turn.as_ref().map(|t| t.secrets.clone()),
        realm: turn.as_ref().map(|t| t.realm.clone()).unwrap_or_default(),
        separator: config.turn.username_separator.chars().next().unwrap_or(':'),
        relay_ip: config.turn.relay_ip,
        external_ip: config.turn.external_ip,
        certs: Some(certs.clone()),
        acme,
        cluster: cluster.clone(),
    };
    let _ = state.selftest.set(target.clone());
    tokio::task::spawn_blocking(move || log_self_test(&target));

    // Signal handlers go in before the `open` line: whoever reads it may signal at once.
    let turn = turn.map(Arc::new);
    if let Some(turn) = &turn {
        tokio::spawn(apply_reloads(reloader.subscribe(), Arc::downgrade(turn)));
    }
    reloader.run_on_sighup();
    tokio::spawn(drain_then_stop(
        stop_signals(),
        drain_tx,
        shutdown_tx,
        signaling.handle(),
        turn.as_ref().map(|t| t.drain_switch()),
        cluster,
        config.server.drain_grace,
    ));
    println!(
        "signalbox: open https://{}/",
        host_port(&config.server.public_host, https_addr.port())
    );

    let https = Listener {
        acceptor: TlsAcceptor::from(tls_config),
        router,
        turn: streams
            .as_ref()
            .filter(|_| config.turn.one_port)
            .map(|s| s.streams.handler()),
        limits: crate::http::HttpLimits::from_config(&config.http),
    };
    https
        .serve(listener, drain_rx, config.http.shutdown_grace)
        .await;
    let mut closing = shutdown_rx.clone();
    while !*closing.borrow_and_update() {
        if closing.changed().await.is_err() {
            break;
        }
    }
    // Upgraded WebSockets are no longer hyper's; they close themselves (code 1001).
    signaling.wait_closed(config.http.shutdown_grace).await;
    if let Some(socketio) = &socketio {
        socketio.wait_closed(config.http.shutdown_grace).await;
    }
    match turn.map(Arc::try_unwrap) {
        Some(Ok(turn)) => turn.stop(),
        Some(Err(_)) => warn!("TURN workers still in use at exit; they end with the process"),
        None => {}
    }
    info!("stopped");
    Ok(())
}

/// The join rules of `[access] mode`, for rooms and for spaces; in token mode the signing key
/// is loaded (or created) now, so a bad key file stops the start with one line naming
/// `access.key_file`.
fn admit_fns(
    config: &Config,
    source: &Source,
) -> Result<(signaling::AdmitFn, signaling::AdmitSpaceFn), Failure> {
    let policy = match config.access.mode {
        AccessMode::Open => {
            return Ok((
                signaling::admit_everyone(),
                signaling::admit_everyone_to_spaces(),
            ))
        }
        AccessMode::Token => {
            let path = config.access.key_path(&config.tls.generated_dir);
            let key = AccessKey::load_or_create(&path).map_err(|e| {
                ConfigError::new(&source.name, Some("access.key_file"), e.to_string())
            })?;
            info!(key = %path.display(), "rooms need an invitation ([access] mode = \"token\")");
            AccessPolicy::Token(key)
        }
    };
    let policy = Arc::new(policy);
    let spaces = policy.clone();
    let admit: signaling::AdmitFn =
        Arc::new(move |room: &signaling::RoomId, token: Option<&str>| {
            let invite = policy
                .check_join(room.as_str(), token, credentials::unix_now())
                .map_err(|e| e.to_string())?;
            Ok(
                invite.map_or_else(signaling::Admission::default, |i| signaling::Admission {
                    name: i.name,
                    host: i.host,
                }),
            )
        });
    let admit_space: signaling::AdmitSpaceFn =
        Arc::new(move |space: &signaling::SpaceId, token: Option<&str>| {
            let invite = spaces
                .check_hello(space.as_str(), token, credentials::unix_now())
                .map_err(|e| e.to_string())?;
            Ok(invite.and_then(|i| i.name))
        });
    Ok((admit, admit_space))
}

/// One log line per start-up check, at a level that matches its outcome.
fn log_self_test(target: &crate::selftest::Target) {
    for check in crate::selftest::run(target) {
        match check.status {
            "ok" => info!("self-test {}: ok: {}", check.name, check.message),
            "warn" => warn!("self-test {}: WARNING: {}", check.name, check.message),
            _ => tracing::error!("self-test {}: FAILED: {}", check.name, check.message),
        }
    }
}

/// One machine-readable line per listener on stdout: tests and scripts read these.
fn announce(what: &str, addr: SocketAddr) {
    println!("signalbox: {what} listening on {addr}");
}

fn log_certificate(loaded: &tls::Loaded, acme: bool) {
    let kind = match (loaded.trusted, acme, loaded.generated_now) {
        (true, true, _) => "certificate from the ACME CA",
        (true, false, _) => "configured certificate",
        (false, _, true) => "generated a self-signed certificate",
        (false, _, false) => "reusing the self-signed certificate",
    };
    info!(
        path = %loaded.cert_path.display(),
        sha256 = %loaded.fingerprint,
        "{kind}"
    );
}

/// Hands every accepted configuration to the parts that can change live.
async fn apply_reloads(
    mut config: watch::Receiver<Arc<Config>>,
    turn: std::sync::Weak<crate::turn::service::TurnServer>,
) {
    config.borrow_and_update();
    while config.changed().await.is_ok() {
        let current = config.borrow_and_update().clone();
        // Weak: shutting down must be able to take the TURN server back to stop it.
        let Some(turn) = turn.upgrade() else { break };
        turn.apply(&current.turn);
    }
}

/// The drain: on the stop signal the HTTPS listener stops accepting, every signaling client is
/// told `server-shutdown`, joins and new allocations are refused, and calls keep relaying
/// until `grace` ends or no client is left; then everything closes.
async fn drain_then_stop(
    stop: impl std::future::Future<Output = ()>,
    drain: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    hub: signaling::HubHandle,
    turn: Option<Arc<std::sync::atomic::AtomicBool>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    grace: std::time::Duration,
) {
    use crate::metrics::METRICS;
    // A cluster (`redis_url` set) has other nodes up: clients should move to one at once.
    let reconnect = cluster.is_some();
    stop.await;
    let _ = drain.send(true);
    if let Some(switch) = turn {
        switch.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    hub.drain(grace, reconnect).await;
    info!("draining: no new joins or allocations; calls keep relaying for up to {grace:?}");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let allocations: i64 = (0..crate::metrics::TRANSPORTS.len())
            .map(|i| METRICS.allocations_active.at(i).get())
            .sum();
        if METRICS.ws_connections_active.get() == 0 && allocations == 0 {
            info!("drained: no clients left");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            info!("drain grace over: closing {allocations} allocations and every connection");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = shutdown.send(true);
}

/// Installs the SIGTERM/SIGINT handlers now; the future completes on the first of them.
fn stop_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            warn!("cannot listen for SIGTERM/SIGINT");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
    }
}

/// Prometheus `/metrics` over plain HTTP, for a scraper on loopback or a private network.
async fn serve_metrics(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(|| async { web::metrics_response() }),
    );
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.changed().await;
    });
    if let Err(e) = serve.await {
        warn!("metrics listener stopped: {e}");
    }
}

/// Plain HTTP that only sends people to HTTPS on the same host, and answers the ACME CA's
/// HTTP-01 challenges (RFC 8555 §8.3) when `[tls] acme` is on.
async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    acme: Option<Arc<crate::tls::acme::Challenges>>,
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
    let app = match acme {
        Some(challenges) => crate::tls::acme::http01_routes(challenges).merge(app),
        None => app,
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.changed().await;
    });
    if let Err(e) = serve.await {
        warn!("redirect listener stopped: {e}");
    }
}
