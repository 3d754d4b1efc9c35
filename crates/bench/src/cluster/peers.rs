//! The clients of one measurement: `pairs` rooms of two, each peer a TLS WebSocket client of
//! the node its [`Mode`] places it on.
//!
//! Phases, each bounded in time:
//! 1. every pair connects both peers (bounded concurrency) and its first peer joins, which
//!    makes the first peer's node the room's home (off-home: a silent anchor peer joins
//!    before it, on a third node, and stays till the end);
//! 2. join storm: all second peers send `join` at once; a join time runs from that send to
//!    the `joined` that lists the first peer, and the pair counts as joined once the first peer
//!    has its `peer-joined` too;
//! 3. signals at a fixed total rate: each client sends to its partner on its own evenly phased
//!    schedule with the send time in `data`; the partner records send-to-receipt (one clock:
//!    both ends are in this process), and keeps reading for [`DRAIN`] after the last send.
//!
//! The CPU time of the nodes and of Redis is read around phase 3 only, up to half a second
//! after the last send: the clients leave (and rooms end) only after that.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use super::{schedule, Mode};
use crate::cpu_seconds;
use crate::signaling::{next_text, sent_at, Ws};

/// A node as its clients reach it.
pub struct Node {
    pub name: String,
    pub url: String,
    pub origin: String,
    pub tls: Arc<rustls::ClientConfig>,
}

/// The processes whose CPU time the servers' cost is.
pub struct Pids {
    pub nodes: Vec<u32>,
    pub redis: u32,
}

/// One measurement.
pub struct Plan {
    pub mode: Mode,
    pub round: usize,
    pub pairs: usize,
    pub rate: u64,
    pub duration: Duration,
    pub payload: usize,
    pub connect_concurrency: usize,
}

/// What one measurement saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The second peers' join times.
    pub join_us: Vec<u64>,
    /// From the release of the storm to the last pair joined.
    pub join_secs: f64,
    pub latencies_us: Vec<u64>,
    pub sent: u64,
    pub received: u64,
    /// `error` answers to signals (rate-limited, unknown-peer, …) and the first of them.
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Connections that ended during the traffic.
    pub connections_lost: usize,
    /// CPU seconds from the first signal sent to [`CPU_TAIL`] after the last.
    pub cpu_nodes: f64,
    pub cpu_redis: f64,
    pub cpu_bench: f64,
}

/// Waiting for one answer of the server (a `joined`, a `peer-joined`).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// Connecting every client, or the whole join storm.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long a client keeps reading after its last send, for signals still in flight.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How long after the last send the CPU time is read: long after the last signal normally
/// arrives, well before the clients leave.
const CPU_TAIL: Duration = Duration::from_millis(500);

pub async fn measure(nodes: &[Arc<Node>], pids: &Pids, plan: &Plan) -> anyhow::Result<Outcome> {
    if nodes.is_empty() {
        bail!("no node to measure");
    }
    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    let (storm_tx, storm_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let clients = plan.pairs * 2;
    let mut tasks = Tasks(Vec::with_capacity(plan.pairs));
    for index in 0..plan.pairs {
        let at = plan.mode.placement(index, nodes.len());
        let node = |i: usize| nodes[i % nodes.len()].clone();
        let ctx = PairCtx {
            room: format!("cluster-{}-{}-{index}", plan.round, plan.mode.tag()),
            anchor: at.anchor.map(node),
            first: node(at.first),
            second: node(at.second),
            gate: gate.clone(),
            progress: progress.clone(),
            storm_rx: storm_rx.clone(),
            go_rx: go_rx.clone(),
            base,
            schedules: [
                schedule(plan.rate, clients, 2 * index),
                schedule(plan.rate, clients, 2 * index + 1),
            ],
            duration: plan.duration,
            pad: "p".repeat(plan.payload),
        };
        tasks.0.push(tokio::spawn(pair(ctx)));
    }
    wait_for(
        &progress,
        &progress.ready,
        plan.pairs,
        "connect and first join",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let storm_us = base.elapsed().as_micros() as u64;
    storm_tx.send(true).ok();
    wait_for(&progress, &progress.joined, plan.pairs, "join storm").await?;
    let last_us = progress.last_joined_us.load(Ordering::Relaxed);
    let join_secs = last_us.saturating_sub(storm_us).max(1) as f64 / 1e6;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let nodes_before = cpu_of(&pids.nodes)?;
    let redis_before = cpu_seconds(pids.redis)?;
    let bench_before = cpu_seconds(std::process::id())?;
    let start = Instant::now() + Duration::from_millis(200);
    go_tx.send(Some(start)).ok();
    // CPU is read once the last signals have arrived and before any client leaves (after
    // DRAIN), so it holds the signals and no room teardown.
    tokio::time::sleep_until((start + plan.duration + CPU_TAIL).into()).await;
    let (cpu_nodes, cpu_redis, cpu_bench) = (
        cpu_of(&pids.nodes)? - nodes_before,
        cpu_seconds(pids.redis)? - redis_before,
        cpu_seconds(std::process::id())? - bench_before,
    );
    let limit = DRAIN + Duration::from_secs(30);
    let results = tokio::time::timeout(limit, futures_util::future::join_all(tasks.0.iter_mut()))
        .await
        .context("the signal phase did not finish in time")?;
    let mut outcome = Outcome {
        join_secs,
        cpu_nodes,
        cpu_redis,
        cpu_bench,
        ..Outcome::default()
    };
    for r in results {
        let pair = r.context("client task")??;
        outcome.join_us.push(pair.join_us);
        for t in pair.traffic {
            outcome.latencies_us.extend(t.latencies_us);
            outcome.sent += t.sent;
            outcome.received += t.received;
            outcome.refused += t.refused;
            if outcome.first_refusal.is_none() {
                outcome.first_refusal = t.first_refusal;
            }
            outcome.connections_lost += usize::from(t.lost);
        }
    }
    Ok(outcome)
}

fn cpu_of(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// The pair tasks; aborted when dropped, so a failed measurement leaves no client behind.
struct Tasks(Vec<JoinHandle<anyhow::Result<PairOutcome>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[derive(Default)]
struct Progress {
    ready: AtomicUsize,
    joined: AtomicUsize,
    failed: AtomicUsize,
    last_joined_us: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Progress {
    fn fail(&self, error: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(error);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until `counter` reaches `n`; fails at the first failed pair, with its error.
async fn wait_for(
    progress: &Progress,
    counter: &AtomicUsize,
    n: usize,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_LIMIT;
    while counter.load(Ordering::Relaxed) < n {
        let failed = progress.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = progress
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            bail!("{what}: {failed} pair(s) failed; the first: {first}");
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: only {} of {n} pairs after {PHASE_LIMIT:?}",
                counter.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

struct PairCtx {
    room: String,
    /// Off-home: the node of a silent peer that joins first, making its node the home.
    anchor: Option<Arc<Node>>,
    first: Arc<Node>,
    second: Arc<Node>,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    storm_rx: watch::Receiver<bool>,
    go_rx: watch::Receiver<Option<Instant>>,
    base: Instant,
    /// (period, phase) of the first and the second peer.
    schedules: [(Duration, Duration); 2],
    duration: Duration,
    pad: String,
}

struct PairOutcome {
    join_us: u64,
    traffic: [Traffic; 2],
}

async fn pair(ctx: PairCtx) -> anyhow::Result<PairOutcome> {
    let r = pair_inner(&ctx).await;
    if let Err(e) = &r {
        ctx.progress.fail(format!("room {}: {e:#}", ctx.room));
    }
    r
}

async fn pair_inner(ctx: &PairCtx) -> anyhow::Result<PairOutcome> {
    let (mut anchor, mut first, mut second) = {
        let _permit = ctx.gate.acquire().await.context("connect gate")?;
        let anchor = match &ctx.anchor {
            Some(node) => Some(connect(node).await?),
            None => None,
        };
        (
            anchor,
            connect(&ctx.first).await?,
            connect(&ctx.second).await?,
        )
    };
    let join = Message::text(json!({"type": "join", "room": ctx.room}).to_string());
    if let Some(anchor) = anchor.as_mut() {
        anchor.send(join.clone()).await.context("send join")?;
        expect_joined(anchor).await.context("anchor peer")?;
    }
    first.send(join.clone()).await.context("send join")?;
    let (first_id, _) = expect_joined(&mut first).await.context("first peer")?;
    ctx.progress.ready.fetch_add(1, Ordering::Relaxed);

    let mut storm = ctx.storm_rx.clone();
    idle_until(&mut first, &mut second, &mut anchor, storm.wait_for(|s| *s)).await?;
    let sent = Instant::now();
    second.send(join).await.context("send join")?;
    let (second_id, peers) = expect_joined(&mut second).await.context("second peer")?;
    let join_us = sent.elapsed().as_micros() as u64;
    if !peers.contains(&first_id) {
        bail!(
            "the second peer, joining through node {}, found the room without the first peer \
             (on node {}): this server does not share rooms across nodes",
            ctx.second.name,
            ctx.first.name
        );
    }
    expect_peer_joined(&mut first, &second_id)
        .await
        .context("first peer")?;
    ctx.progress
        .last_joined_us
        .fetch_max(ctx.base.elapsed().as_micros() as u64, Ordering::Relaxed);
    ctx.progress.joined.fetch_add(1, Ordering::Relaxed);

    let mut go = ctx.go_rx.clone();
    idle_until(
        &mut first,
        &mut second,
        &mut anchor,
        go.wait_for(|s| s.is_some()),
    )
    .await?;
    let Some(start) = *go.borrow() else {
        bail!("no start time");
    };
    let [a, b] = ctx.schedules;
    let both = async {
        tokio::join!(
            traffic(first, &second_id, start, a, ctx),
            traffic(second, &first_id, start, b, ctx)
        )
    };
    tokio::pin!(both);
    // The anchor reads (presence, pings) until both have finished, then leaves.
    let (a, b) = loop {
        tokio::select! {
            r = &mut both => break r,
            msg = next_of(&mut anchor) => still_open(msg).context("anchor peer")?,
        }
    };
    if let Some(mut anchor) = anchor {
        let _ = anchor.send(Message::text(r#"{"type":"leave"}"#)).await;
        let _ = anchor.close(None).await;
    }
    Ok(PairOutcome {
        join_us,
        traffic: [a, b],
    })
}

async fn connect(node: &Node) -> anyhow::Result<Ws> {
    let mut req = node.url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&node.origin)?);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let connector = Connector::Rustls(node.tls.clone());
    let fut =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector));
    let (ws, _) = tokio::time::timeout(ANSWER_LIMIT, fut)
        .await
        .with_context(|| format!("connecting to node {} timed out", node.name))?
        .with_context(|| format!("connect to node {}", node.name))?;
    Ok(ws)
}

/// The next message of the server, as JSON, within [`ANSWER_LIMIT`].
async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    let text = tokio::time::timeout(ANSWER_LIMIT, next_text(ws))
        .await
        .context("no answer in time")??;
    let v: Value = serde_json::from_str(&text).context("server JSON")?;
    if v["type"] == "error" {
        bail!("the server refused: {text}");
    }
    Ok(v)
}

/// Reads up to `joined`: the own id and those of the peers already there.
async fn expect_joined(ws: &mut Ws) -> anyhow::Result<(String, Vec<String>)> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == "joined" {
            let id = v["id"].as_str().context("`joined` without id")?.to_owned();
            let peers = v["peers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            return Ok((id, peers));
        }
    }
}

async fn expect_peer_joined(ws: &mut Ws, id: &str) -> anyhow::Result<()> {
    loop {
        let v = next_json(ws).await?;
        if v["type"] == "peer-joined" && v["peer"]["id"] == id {
            return Ok(());
        }
    }
}

type Next = Option<Result<Message, tokio_tungstenite::tungstenite::Error>>;

/// Waits for `until` while reading every socket, so that the servers' pings are answered.
async fn idle_until<F: std::future::Future>(
    a: &mut Ws,
    b: &mut Ws,
    anchor: &mut Option<Ws>,
    until: F,
) -> anyhow::Result<()> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return Ok(()),
            msg = a.next() => still_open(msg)?,
            msg = b.next() => still_open(msg)?,
            msg = next_of(anchor) => still_open(msg).context("anchor peer")?,
        }
    }
}

/// The next message of an optional socket; without one, never.
async fn next_of(ws: &mut Option<Ws>) -> Next {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

fn still_open(msg: Next) -> anyhow::Result<()> {
    match msg {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => bail!("{e}"),
        None => bail!("the server closed the connection"),
    }
}

#[derive(Debug, Default)]
struct Traffic {
    latencies_us: Vec<u64>,
    sent: u64,
    received: u64,
    refused: u64,
    first_refusal: Option<String>,
    lost: bool,
}

/// Sends a signal to `partner` every period from `start + phase` for the duration, records
/// the latency of every signal received, then leaves the room and closes.
async fn traffic(
    mut ws: Ws,
    partner: &str,
    start: Instant,
    (period, phase): (Duration, Duration),
    ctx: &PairCtx,
) -> Traffic {
    let end = start + ctx.duration;
    let drain_until = end + DRAIN;
    let mut next = start + phase;
    let mut t = Traffic {
        latencies_us: Vec::with_capacity(
            (ctx.duration.as_secs_f64() / period.as_secs_f64().max(1e-6)) as usize + 2,
        ),
        ..Traffic::default()
    };
    let prefix = format!("{{\"type\":\"signal\",\"to\":\"{partner}\",\"data\":{{\"t\":");
    let suffix = format!(",\"pad\":\"{}\"}}}}", ctx.pad);
    loop {
        let wake = if next < end { next } else { drain_until };
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.contains("\"type\":\"error\"") {
                        t.refused += 1;
                        t.first_refusal.get_or_insert_with(|| text.to_string());
                    } else if let Some(sent_us) = sent_at(&text) {
                        let now_us = ctx.base.elapsed().as_micros() as u64;
                        t.latencies_us.push(now_us.saturating_sub(sent_us));
                        t.received += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    t.lost = true;
                    return t;
                }
            },
            () = tokio::time::sleep_until(wake.into()) => {
                if next >= end {
                    break;
                }
                let now = ctx.base.elapsed().as_micros();
                if ws.send(Message::text(format!("{prefix}{now}{suffix}"))).await.is_err() {
                    t.lost = true;
                    return t;
                }
                t.sent += 1;
                next += period;
            }
        }
    }
    let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
    let _ = ws.close(None).await;
    t
}
