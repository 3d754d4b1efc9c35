//! Starting and stopping the TURN server: relay addresses, secrets, one core and one thread per
//! worker. The only place that reads the `[turn]` configuration as a whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context as _;
use mio::{Poll, Token, Waker};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{info, warn};

use crate::config::{Config, PortRange};
use crate::turn::relay::{self, Clock, RelaySet, Shared, Worker};
use signalbox_turn_proto::allocation::{AllocationTable, Limits, Quotas};
use signalbox_turn_proto::auth::{LivePeers, NonceKey, RateLimiter, Secrets};
use signalbox_turn_proto::policy::{ClusterPeers, ClusterRelays, PeerPolicy};
use signalbox_turn_proto::server::{Core, CoreConfig, RelayPlan};

/// A running TURN server.
pub struct TurnServer {
    /// The bound listener addresses, one per `[turn] listen` entry.
    pub listeners: Vec<SocketAddr>,
    /// The REST secrets in use (configured or generated), for minting credentials.
    pub secrets: Arc<Secrets>,
    pub realm: String,
    /// The room peers whose credentials open allocations; signaling keeps it current.
    pub live_peers: Arc<LivePeers>,
    /// The relay addresses, (local, advertised), IPv4 first, and the relay port range: what
    /// other nodes of a cluster learn from the registry.
    pub relay_addresses: Vec<(IpAddr, IpAddr)>,
    pub relay_ports: PortRange,
    /// The other nodes' relay addresses and port ranges that the peer policy lets through;
    /// written by the cluster task (`[cluster]`), unused on a single node.
    pub cluster_relays: Arc<ClusterRelays>,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    quotas: Arc<Quotas>,
    threads: Vec<JoinHandle<()>>,
}

impl TurnServer {
    /// Binds every socket and starts the workers; errors name the config key at fault.
    pub fn start(config: &Config) -> anyhow::Result<TurnServer> {
        let turn = &config.turn;
        let workers = match turn.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let rng = SystemRandom::new();
        let secrets = if turn.secrets.is_empty() {
            let mut raw = [0u8; 24];
            rng.fill(&mut raw)
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            info!("[turn] secrets is empty: generated a random secret for this run (credentials minted now stop working after a restart)");
            vec![crate::hex::encode(&raw).into_bytes()]
        } else {
            turn.secrets.iter().map(|s| s.as_bytes().to_vec()).collect()
        };
        let secrets = Arc::new(Secrets::new(secrets).context("[turn] secrets")?);
        let mut nonce_key = [0u8; 32];
        rng.fill(&mut nonce_key)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let nonces = Arc::new(NonceKey::new(nonce_key));
        let realm = if turn.realm.is_empty() {
            config.server.public_host.clone()
        } else {
            turn.realm.clone()
        };
        let plan = relay_plan(config, workers)?;
        info!(
            v4 = ?plan.v4, v6 = ?plan.v6, ports = %plan.ports, workers,
            "TURN relay addresses (local, advertised)"
        );
        let bound = relay::bind_listeners(&turn.listen, workers)?;
        let listeners = bound.configured;
        let per_worker = bound.per_worker;
        let quotas = Arc::new(Quotas::new(turn.user_quota, turn.total_quota));
        quotas.set_address_limit(turn.max_allocations_per_ip);
        let limits = Limits {
            max_lifetime: turn.max_allocation_lifetime,
            strict_expiry: turn.strict_expiry,
            max_bytes_per_sec: turn.max_bitrate / 8,
        };
        let draining = Arc::new(AtomicBool::new(false));
        // Live peers are connected (at most max_connections) or away within the grace: twice
        // that leaves as much room for away peers. About 1 MiB of table at most with the
        // default 20,000 connections (16-byte entries in a hash table).
        let live_peers = Arc::new(LivePeers::new(
            config.rooms.max_connections.saturating_mul(2),
        ));
        // Other nodes' relays (rule 2a of the peer policy), kept current by the cluster task.
        let cluster_relays = Arc::new(ClusterRelays::default());
        let policy = PeerPolicy {
            allowed: turn.allowed_peer_ranges.clone(),
            denied: turn.denied_peer_ranges.clone(),
            allow_loopback: turn.allow_loopback_peers,
            listeners: bound.bound,
            own_addresses: own_addresses(turn),
            cluster: match config.cluster.enabled() {
                true => ClusterPeers::new(cluster_relays.clone()),
                false => ClusterPeers::default(),
            },
        };
        info!(
            own = ?policy.own_addresses,
            "TURN peers: this host's addresses are refused, except live relayed addresses"
        );
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new().context("cannot create an epoll instance")?;
            wakers.push(Waker::new(poll.registry(), Token(0)).context("cannot create a waker")?);
            polls.push(poll);
        }
        let shared = Arc::new(Shared::new(wakers));
        let clock = Clock::new();
        // 16 bytes a slot: 1 MiB whatever the number of sources.
        let unauth = Arc::new(Mutex::new(RateLimiter::new(
            65_536,
            turn.unauth_rate,
            turn.unauth_burst,
        )));
        let mut threads = Vec::new();
        for (index, (poll, sockets)) in polls.into_iter().zip(per_worker).enumerate() {
            let core_config = CoreConfig {
                realm: realm.clone(),
                separator: turn.separator(),
                nonce_lifetime_secs: turn.nonce_lifetime.as_secs(),
                policy: policy.clone(),
                relay: plan.clone(),
                worker: index,
                draining: draining.clone(),
                live_peers: live_peers.clone(),
                allocation_family: turn.allocation_family,
            };
            let table = AllocationTable::new(quotas.clone(), limits.clone());
            let core = Core::new(
                core_config,
                table,
                secrets.clone(),
                nonces.clone(),
                unauth.clone(),
            );
            let registry = poll
                .registry()
                .try_clone()
                .context("cannot clone the registry")?;
            let seed = u64::from_le_bytes(nonce_key[..8].try_into().unwrap_or([1; 8]))
                ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let worker = Worker {
                index,
                poll,
                listeners: sockets
                    .into_iter()
                    .map(|(a, s)| (a, mio::net::UdpSocket::from_std(s)))
                    .collect(),
                core,
                relays: RelaySet::new(registry, plan.ports_of(index), seed),
                clock,
                batch_window: turn.batch_window,
                streams: Default::default(),
            };
            threads
                .push(relay::spawn(worker, shared.clone()).context("cannot start a TURN worker")?);
        }
        Ok(TurnServer {
            listeners,
            secrets,
            realm,
            live_peers,
            relay_addresses: plan.v4.into_iter().chain(plan.v6).collect(),
            relay_ports: plan.ports,
            cluster_relays,
            shared,
            draining,
            quotas,
            threads,
        })
    }

    /// Closes, within one worker wake-up, every allocation whose REST username has the user
    /// part `user`: how signaling ends the relays of a peer that left its call.
    pub fn close_user(&self, user: &str) {
        self.shared.close_user(user);
    }

    /// What stream (TCP/TLS) connection tasks need to reach the workers.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A handle for [`TurnServer::close_user`] that other tasks can keep.
    pub fn closer(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |user: &str| shared.close_user(user)
    }

    /// Applies what a configuration reload may change while allocations live: the secrets (an
    /// empty list keeps the ones in use, such as a generated secret) and the quotas (per user,
    /// in total and per client address).
    pub fn apply(&self, turn: &crate::config::TurnConfig) {
        if !turn.secrets.is_empty() {
            let list = turn.secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
            match self.secrets.replace(list) {
                Ok(()) => info!("[turn] secrets reloaded ({} in use)", turn.secrets.len()),
                Err(e) => warn!("[turn] secrets not reloaded: {e}"),
            }
        }
        self.quotas.set_limits(turn.user_quota, turn.total_quota);
        self.quotas.set_address_limit(turn.max_allocations_per_ip);
    }

    /// A switch that, once set, refuses new allocations (508) while existing ones keep
    /// relaying: how the server drains before it stops.
    pub fn drain_switch(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Stops the workers and waits for them; their sockets close with them.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in &self.shared.wakers {
            let _ = w.wake();
        }
        for t in self.threads {
            if t.join().is_err() {
                warn!("a TURN worker panicked");
            }
        }
    }
}

/// Works out the relay addresses: `relay_ip`, else what `public_host` resolves to, else the
/// first non-loopback interface, else loopback; plus one of the other family when the host
/// has it (`relay_ip_v6` names the IPv6 one). `external_ip` applies to its own family,
/// `external_ip_v6` to IPv6.
fn relay_plan(config: &Config, workers: usize) -> anyhow::Result<RelayPlan> {
    let turn = &config.turn;
    let primary = match turn.relay_ip {
        Some(ip) => ip,
        None => resolve(&config.server.public_host)
            .filter(|ip| local_ip_usable(*ip))
            .or_else(|| {
                interfaces()
                    .into_iter()
                    .find(|ip| !ip.is_loopback() && ip.is_ipv4())
            })
            .or_else(|| interfaces().into_iter().find(|ip| !ip.is_loopback()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    if !local_ip_usable(primary) {
        anyhow::bail!("[turn] relay_ip: {primary} is not an address of this host");
    }
    if let Some(ip) = turn.relay_ip_v6 {
        if !local_ip_usable(ip) {
            anyhow::bail!("[turn] relay_ip_v6: {ip} is not an address of this host");
        }
    }
    let other = if primary.is_ipv4() && turn.relay_ip_v6.is_some() {
        turn.relay_ip_v6
    } else if primary.is_loopback() {
        let lo: IpAddr = if primary.is_ipv4() {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        Some(lo).filter(|ip| local_ip_usable(*ip))
    } else {
        interfaces()
            .into_iter()
            .find(|ip| ip.is_ipv4() != primary.is_ipv4() && !ip.is_loopback() && !is_link_local(ip))
    };
    let pair = |local: IpAddr| {
        let public = [turn.external_ip, turn.external_ip_v6]
            .into_iter()
            .flatten()
            .find(|e| e.is_ipv4() == local.is_ipv4())
            .unwrap_or(local);
        (local, public)
    };
    let (v4, v6) = if primary.is_ipv4() {
        (Some(pair(primary)), other.map(pair))
    } else {
        (other.map(pair), Some(pair(primary)))
    };
    if turn.relay_ports.len() < workers as u32 {
        anyhow::bail!(
            "[turn] relay_ports: {} has fewer ports than workers",
            turn.relay_ports
        );
    }
    Ok(RelayPlan {
        v4,
        v6,
        ports: turn.relay_ports,
        workers,
        live: Arc::default(),
    })
}

/// This host's addresses as the peer policy refuses them: every interface address at start,
/// and `relay_ip` and `external_ip` (the core adds the relay addresses it derived itself).
fn own_addresses(turn: &crate::config::TurnConfig) -> Vec<IpAddr> {
    let mut own = interfaces();
    own.extend(turn.relay_ip);
    own.extend(turn.external_ip);
    own.extend(turn.relay_ip_v6);
    own.extend(turn.external_ip_v6);
    own.sort_unstable();
    own.dedup();
    own
}

fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4())
}

/// True when a UDP socket can bind `ip` (it is assigned to this host).
fn local_ip_usable(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

/// The host's interface addresses (getifaddrs).
fn interfaces() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}
