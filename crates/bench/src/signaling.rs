//! `signalbox-bench signaling`: N WebSocket clients over TLS in rooms of two.
//!
//! Phases, all bounded in count and time:
//! 1. connect all clients (bounded concurrency) and let the server settle;
//! 2. join storm: every client sends `join` at once; joins/s = clients / time until the last
//!    one knows its partner;
//! 3. idle memory: server `VmRSS` with every client joined minus `VmRSS` before the first
//!    connection, divided by the clients;
//! 4. signal traffic at a fixed offered rate: each client sends on its own schedule (evenly
//!    phased, so the total is the offered rate), the payload carries the send time, and the
//!    partner records the relay latency (send call to receipt, both in this process).
//!
//! The latency therefore includes both TLS stacks, the server and this client's own
//! scheduling on the same machine: it is an upper bound on what the server adds.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{cpu_seconds, print_table, Percentiles, ServerProcess};
use signalbox::config::parse_duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent WebSocket clients (an even number; rooms of two).
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Offered signal rate, signals per second over all clients.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// How long the signal traffic runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes of padding in each signal's data (a small ICE candidate is about 200).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Limits for one phase; beyond them the run fails instead of hanging.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// What each client task reports at the end.
#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u64>,
    /// The connection ended during the traffic phase (the server cut off a client that
    /// could not keep up, or an I/O error).
    lost: bool,
    sent: u64,
    received: u64,
}

/// Shared progress counters.
#[derive(Default)]
struct Progress {
    connected: AtomicUsize,
    joined: AtomicUsize,
    failed: AtomicUsize,
    last_joined_us: AtomicU64,
}

pub async fn run(server_bin: &Path, args: &Args) -> anyhow::Result<serde_json::Value> {
    if args.clients < 2 || args.clients % 2 != 0 {
        bail!("--clients must be an even number of at least 2");
    }
    let n = args.clients;
    let config = format!(
        "[rooms]\nmax_connections = {}\nmax_connections_per_ip = {}\njoin_timeout = \"10m\"\n\
         outbound_queue = 256\njoin_rate_per_ip = 1000000\n\n[turn]\nlisten = [\"127.0.0.1:0\"]\nlisten_tcp = []\nlisten_tls = []\n\
         relay_ip = \"127.0.0.1\"\n",
        n + 64,
        n + 64
    );
    let server = ServerProcess::start(server_bin, &config)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss_kib()?;
    println!(
        "server pid {} on {}; RSS before clients {} KiB",
        server.pid(),
        server.https,
        rss_idle
    );

    let tls = tls_config(&server.cert_path())?;
    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    let (join_tx, join_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let connect_gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let url = format!("wss://{}/ws", server.https);
    let origin = format!("https://{}", server.https);

    let t_connect = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let ctx = ClientCtx {
            index: i,
            room: format!("bench-{}", i / 2),
            url: url.clone(),
            origin: origin.clone(),
            tls: tls.clone(),
            gate: connect_gate.clone(),
            progress: progress.clone(),
            join_rx: join_rx.clone(),
            go_rx: go_rx.clone(),
            base,
            period: Duration::from_secs_f64(n as f64 / args.rate.max(1) as f64),
            duration: args.duration,
            clients: n,
            payload: "p".repeat(args.payload),
        };
        tasks.push(tokio::spawn(client(ctx)));
    }
    wait_for(&progress.connected, n, &progress.failed, "connect").await?;
    let connect_secs = t_connect.elapsed().as_secs_f64();
    println!("{n} clients connected in {connect_secs:.2} s");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t_join = Instant::now();
    let join_start_us = base.elapsed().as_micros() as u64;
    join_tx.send(true).ok();
    wait_for(&progress.joined, n, &progress.failed, "join").await?;
    let join_secs = (progress
        .last_joined_us
        .load(Ordering::Relaxed)
        .saturating_sub(join_start_us)) as f64
        / 1e6;
    let joins_per_s = n as f64 / join_secs.max(1e-6);
    println!(
        "join storm: {n} joins in {join_secs:.3} s ({:.0}/s)",
        joins_per_s
    );
    let _ = t_join;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined = server.rss_kib()?;
    let per_conn_kib = rss_joined.saturating_sub(rss_idle) as f64 / n as f64;
    println!("RSS with {n} idle joined clients: {rss_joined} KiB ({per_conn_kib:.2} KiB/conn)");

    let start = Instant::now() + Duration::from_millis(200);
    let server_cpu_before = cpu_seconds(server.pid())?;
    let bench_cpu_before = cpu_seconds(std::process::id())?;
    go_tx.send(Some(start)).ok();
    let mut results = Vec::with_capacity(n);
    let all = futures_util::future::join_all(tasks);
    let limit = args.duration + Duration::from_secs(60);
    for r in tokio::time::timeout(limit, all)
        .await
        .context("signal phase did not finish in time")?
    {
        results.push(r.context("client task")??);
    }
    let elapsed = args.duration.as_secs_f64();
    let server_cpu = cpu_seconds(server.pid())? - server_cpu_before;
    let bench_cpu = cpu_seconds(std::process::id())? - bench_cpu_before;
    let rss_after = server.rss_kib()?;
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let received: u64 = results.iter().map(|r| r.received).sum();
    let lost = results.iter().filter(|r| r.lost).count();
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_us).collect();
    let p = Percentiles::of(&mut lat).context("no signal was relayed")?;
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    let rows = vec![
        (
            "clients".into(),
            n.to_string(),
            format!("10000 ({})", ok(n >= 10_000)),
        ),
        ("rooms".into(), (n / 2).to_string(), String::new()),
        (
            "connects/s".into(),
            format!("{:.0}", n as f64 / connect_secs),
            String::new(),
        ),
        (
            "join storm joins/s".into(),
            format!("{joins_per_s:.0}"),
            String::new(),
        ),
        (
            "offered signals/s".into(),
            args.rate.to_string(),
            "20000".into(),
        ),
        (
            "relayed signals/s".into(),
            format!("{:.0}", received as f64 / elapsed),
            String::new(),
        ),
        (
            "signals sent / received".into(),
            format!("{sent} / {received}"),
            String::new(),
        ),
        (
            "connections lost in traffic".into(),
            lost.to_string(),
            "0".into(),
        ),
        (
            "server CPU per relayed signal".into(),
            format!("{:.1} us", server_cpu * 1e6 / received.max(1) as f64),
            String::new(),
        ),
        (
            "CPU s during traffic srv/bench".into(),
            format!("{server_cpu:.1} / {bench_cpu:.1}"),
            String::new(),
        ),
        ("relay latency p50".into(), ms(p.p50), String::new()),
        ("relay latency p90".into(), ms(p.p90), String::new()),
        (
            "relay latency p99".into(),
            ms(p.p99),
            format!("< 5 ms ({})", ok(p.p99 < 5000)),
        ),
        ("relay latency p99.9".into(), ms(p.p999), String::new()),
        ("relay latency max".into(), ms(p.max), String::new()),
        (
            "server RSS before clients".into(),
            format!("{rss_idle} KiB"),
            String::new(),
        ),
        (
            "server RSS, clients joined".into(),
            format!("{rss_joined} KiB"),
            String::new(),
        ),
        (
            "RSS per idle connection".into(),
            format!("{per_conn_kib:.2} KiB"),
            format!("< 16 KiB ({})", ok(per_conn_kib < 16.0)),
        ),
        (
            "server RSS after traffic".into(),
            format!("{rss_after} KiB"),
            String::new(),
        ),
    ];
    print_table("signalbox-bench signaling", &rows);
    if let Some(load) = load_average() {
        println!(
            "1-minute load average at the end: {load:.2} on {} CPUs",
            num_cpus()
        );
    }
    Ok(json!({
        "bench": "signaling",
        "clients": n,
        "rooms": n / 2,
        "connect_seconds": connect_secs,
        "join_storm_seconds": join_secs,
        "joins_per_second": joins_per_s,
        "offered_signals_per_second": args.rate,
        "duration_seconds": elapsed,
        "payload_bytes": args.payload,
        "signals_sent": sent,
        "signals_received": received,
        "connections_lost_during_traffic": lost,
        "relayed_signals_per_second": received as f64 / elapsed,
        "latency_us": p,
        "cpu_seconds_during_traffic": { "server": server_cpu, "bench": bench_cpu },
        "load_average_1m_at_end": load_average(),
        "server_rss_kib": { "before_clients": rss_idle, "joined_idle": rss_joined, "after_traffic": rss_after },
        "rss_per_idle_connection_kib": per_conn_kib,
        "targets": {
            "clients_10000": n >= 10_000,
            "p99_under_5ms": p.p99 < 5000,
            "rss_per_connection_under_16kib": per_conn_kib < 16.0,
        },
    }))
}

/// The 1-minute load average: the machine may be shared, and a loaded machine explains a
/// lot of latency.
fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn wait_for(
    counter: &AtomicUsize,
    n: usize,
    failed: &AtomicUsize,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_LIMIT;
    while counter.load(Ordering::Relaxed) < n {
        let f = failed.load(Ordering::Relaxed);
        if f > 0 {
            bail!("{f} clients failed during {what}");
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: only {} of {n} after {PHASE_LIMIT:?}",
                counter.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) fn tls_config(cert: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let cert = CertificateDer::from_pem_file(cert).context("server certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).context("certificate as trust root")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

struct ClientCtx {
    index: usize,
    room: String,
    url: String,
    origin: String,
    tls: Arc<rustls::ClientConfig>,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    join_rx: watch::Receiver<bool>,
    go_rx: watch::Receiver<Option<Instant>>,
    base: Instant,
    period: Duration,
    duration: Duration,
    clients: usize,
    payload: String,
}

async fn client(mut ctx: ClientCtx) -> anyhow::Result<ClientResult> {
    let r = client_inner(&mut ctx).await;
    if r.is_err() {
        ctx.progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn client_inner(ctx: &mut ClientCtx) -> anyhow::Result<ClientResult> {
    let mut ws = {
        let _permit = ctx.gate.acquire().await.context("gate")?;
        connect(ctx).await?
    };
    ctx.progress.connected.fetch_add(1, Ordering::Relaxed);
    let mut join_rx = ctx.join_rx.clone();
    reading_while(&mut ws, join_rx.wait_for(|go| *go)).await?;
    let join = json!({"type":"join","room":ctx.room}).to_string();
    ws.send(Message::text(join)).await.context("send join")?;
    let partner = loop {
        let msg = next_text(&mut ws).await?;
        let v: serde_json::Value = serde_json::from_str(&msg).context("server JSON")?;
        match v["type"].as_str() {
            Some("joined") => {
                if let Some(id) = v["peers"][0]["id"].as_str() {
                    break id.to_owned();
                }
            }
            Some("peer-joined") => {
                if let Some(id) = v["peer"]["id"].as_str() {
                    break id.to_owned();
                }
            }
            _ => bail!("unexpected message while joining: {msg}"),
        }
    };
    ctx.progress
        .last_joined_us
        .fetch_max(ctx.base.elapsed().as_micros() as u64, Ordering::Relaxed);
    ctx.progress.joined.fetch_add(1, Ordering::Relaxed);

    let mut go_rx = ctx.go_rx.clone();
    reading_while(&mut ws, go_rx.wait_for(|s| s.is_some())).await?;
    let Some(start) = *go_rx.borrow() else {
        bail!("no start time");
    };
    let phase = ctx.period.mul_f64(ctx.index as f64 / ctx.clients as f64);
    let end = start + ctx.duration;
    let mut next = start + phase;
    let mut result = ClientResult {
        latencies_us: Vec::with_capacity(
            (ctx.duration.as_secs_f64() / ctx.period.as_secs_f64()) as usize + 2,
        ),
        ..ClientResult::default()
    };
    let prefix = format!("{{\"type\":\"signal\",\"to\":\"{partner}\",\"data\":{{\"t\":");
    let suffix = format!(",\"pad\":\"{}\"}}}}", ctx.payload);
    // After the last send, keep reading a little for signals still in flight.
    let drain_until = end + Duration::from_secs(2);
    loop {
        let wake = if next < end { next } else { drain_until };
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(sent_us) = sent_at(&t) {
                        let now_us = ctx.base.elapsed().as_micros() as u64;
                        result.latencies_us.push(now_us.saturating_sub(sent_us));
                        result.received += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    result.lost = true;
                    break;
                }
            },
            () = tokio::time::sleep_until(wake.into()) => {
                if next >= end {
                    break;
                }
                let t = ctx.base.elapsed().as_micros();
                if ws.send(Message::text(format!("{prefix}{t}{suffix}"))).await.is_err() {
                    result.lost = true;
                    break;
                }
                result.sent += 1;
                next += ctx.period;
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(result)
}

async fn connect(ctx: &ClientCtx) -> anyhow::Result<Ws> {
    let mut req = ctx.url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&ctx.origin)?);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let connector = Connector::Rustls(ctx.tls.clone());
    let fut =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector));
    let (ws, _) = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .context("connect timed out")?
        .with_context(|| format!("client {} connect", ctx.index))?;
    Ok(ws)
}

/// Waits for `until` while reading, so that the server's WebSocket pings are answered.
async fn reading_while<F: std::future::Future>(ws: &mut Ws, until: F) -> anyhow::Result<()> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return Ok(()),
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("{e}"),
                None => bail!("server closed the connection"),
            },
        }
    }
}

pub(crate) async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(PHASE_LIMIT, ws.next())
            .await
            .context("no message in time")?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("{e}"),
            None => bail!("server closed the connection"),
        }
    }
}

/// The send time in a relayed signal, found without parsing the whole message.
pub(crate) fn sent_at(text: &str) -> Option<u64> {
    let rest = &text[text.find("\"t\":")? + 4..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_from_a_relayed_signal() {
        let m = r#"{"type":"signal","from":"x","data":{"t":12345,"pad":"pp"}}"#;
        assert_eq!(sent_at(m), Some(12345));
        assert_eq!(sent_at(r#"{"type":"pong"}"#), None);
    }
}
