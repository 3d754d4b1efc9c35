//! The protocol core of one worker: a datagram in, at most one transmission out.
//!
//! [`Core::handle_client`] takes what arrived on a listener socket, [`Core::handle_peer`] what
//! arrived on a relay socket, [`Core::handle_forwarded`] what another worker handed over from
//! one of its allocations to one of ours. Each returns an [`Action`] that names bytes either
//! inside the caller's receive buffer ([`Payload::Input`], the data path: no copy, no
//! allocation) or in the core's reusable scratch buffer ([`Payload::Scratch`], STUN responses
//! and Data indications). Relay sockets are opened and closed through [`RelaySockets`], the one
//! piece of IO the core asks for; everything else (time, secrets, sockets) is passed in.
//!
//! Buffers handed in keep [`HEADROOM`] free bytes before the datagram, so a peer's payload gets
//! its ChannelData header written in place.
//!
//! Control requests follow RFC 8489 §6.3 and §9.2.4 in this order: a retransmitted Allocate,
//! authentication (401, 438), the allocation the method needs (437, 441), unknown
//! comprehension-required attributes (420), then the method's own rules. They are decoded into
//! typed requests (`request.rs`), handled into a reply or a refusal value (`handlers.rs`,
//! `outcome.rs`), and answered in one place (`control.rs`).
//!
//! Every packet to or from a peer passes the peer policy for its exact address
//! ([`PeerPolicy::check_packet`]): this host is never a peer, except the relayed address of a
//! live allocation, which is delivered in memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{debug, info};

use crate::allocation::{
    AllocId, Allocation, AllocationTable, Direction, FiveTuple, Millis, NewAllocation, Transport,
};
use crate::auth::{self, NonceCheck, NonceKey, RateLimiter, Secrets};
use crate::counters::{Counters, PeerRefusal, RelayPath};
use crate::policy::{PeerPolicy, Relayed, Verdict};
use crate::ports::PortRange;
use signalbox_stun::{attr, channel_data, Class, IntegrityAlgorithm, Method};
use signalbox_stun::{MessageRef, MessageWriter, TransactionId};

/// Highest channel number accepted. RFC 8656 §12 narrowed the range to 0x4000–0x4FFF, but
/// RFC 5766 §11 allowed 0x4000–0x7FFF, and its clients still pick any of them (coturn 4.6's
/// `turnutils_uclient` draws uniformly up to 0x7FFF inclusive); refusing them would break one
/// channel bind in 16,384 of those clients, and nothing else on a TURN 5-tuple starts with
/// 0x50–0x7F.
pub const MAX_LEGACY_CHANNEL: u16 = 0x7FFF;

/// Free bytes the IO layer leaves before each received datagram.
pub const HEADROOM: usize = channel_data::HEADER_LEN;

/// Where the bytes of a transmission are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `buf[start..end]` of the buffer that was handed in.
    Input {
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
    },
    /// [`Core::scratch`].
    Scratch,
}

/// Which socket sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The listener socket bound to this local address.
    Listener(SocketAddr),
    /// The relay socket of this allocation.
    Relay(AllocId),
    /// The stream connection (TCP or TLS) from `to` to this local address: the client's
    /// 5-tuple names exactly one connection.
    Stream(SocketAddr),
}

impl Via {
    /// How answers and peer data reach the client of `five`.
    pub fn to_client(five: &FiveTuple) -> Via {
        match five.transport {
            Transport::Udp => Via::Listener(five.listener),
            Transport::Tcp | Transport::Tls => Via::Stream(five.listener),
        }
    }
}

/// What to do after one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send: the input was consumed (or dropped, and logged within the budget).
    Nothing,
    /// Send `payload` through `via` to `to`.
    Send {
        /// The socket or connection that sends.
        via: Via,
        /// The destination: a client or a peer.
        to: SocketAddr,
        /// Where the bytes are.
        payload: Payload,
    },
    /// Hand `buf[start..end]` to `worker`, which owns the relayed address `to`; it arrives
    /// there as if sent by the peer `from` ([`Core::handle_forwarded`]).
    Forward {
        /// The worker that owns `to`.
        worker: usize,
        /// The sending allocation's relayed address (advertised form).
        from: SocketAddr,
        /// The receiving allocation's relayed address (local form).
        to: SocketAddr,
        /// First byte of the payload in the buffer handed in.
        start: usize,
        /// One past its last byte.
        end: usize,
    },
}

/// Opens and closes relay sockets for the core.
pub trait RelaySockets {
    /// Binds a relay socket on `ip` for allocation `id` (an even port when `even_port`);
    /// returns the bound address.
    fn open(&mut self, id: AllocId, ip: IpAddr, even_port: bool) -> std::io::Result<SocketAddr>;
    /// Closes the relay socket of allocation `id` (it was deleted or expired).
    fn close(&mut self, id: AllocId);
}

/// The relay addresses of this server and how the port range is shared among workers.
#[derive(Clone, Debug)]
pub struct RelayPlan {
    /// (local, advertised) IPv4 relay address.
    pub v4: Option<(IpAddr, IpAddr)>,
    /// (local, advertised) IPv6 relay address.
    pub v6: Option<(IpAddr, IpAddr)>,
    /// `relay_ports`, cut into one slice per worker.
    pub ports: PortRange,
    /// Number of workers sharing the range.
    pub workers: usize,
    /// Which relay ports hold a live allocation, shared by all workers.
    pub live: Arc<LiveRelays>,
}

/// The read-mostly index of live relayed addresses: one bit per port and family, set when an
/// allocation binds and cleared when it goes. Atomic loads only, so the data path may ask it
/// for every packet; the owning worker follows from the port ([`RelayPlan::worker_of`]).
#[derive(Debug)]
pub struct LiveRelays {
    bits: [Box<[AtomicU64]>; 2],
}

impl Default for LiveRelays {
    fn default() -> Self {
        let words = || (0..1024).map(|_| AtomicU64::new(0)).collect();
        LiveRelays {
            bits: [words(), words()],
        }
    }
}

impl LiveRelays {
    fn slot(&self, addr: SocketAddr) -> (&AtomicU64, u64) {
        let family = usize::from(addr.is_ipv6());
        let port = usize::from(addr.port());
        (&self.bits[family][port / 64], 1u64 << (port % 64))
    }

    /// Marks `local` live: an allocation's relay socket is bound there.
    pub fn insert(&self, local: SocketAddr) {
        let (word, bit) = self.slot(local);
        word.fetch_or(bit, Ordering::Release);
    }

    /// Marks `local` free: its allocation has gone.
    pub fn remove(&self, local: SocketAddr) {
        let (word, bit) = self.slot(local);
        word.fetch_and(!bit, Ordering::Release);
    }

    /// Whether a live allocation's relay socket is bound to `local` (one atomic load).
    pub fn contains(&self, local: SocketAddr) -> bool {
        let (word, bit) = self.slot(local);
        word.load(Ordering::Acquire) & bit != 0
    }
}

impl RelayPlan {
    /// The worker that owns `port`: the range is cut into `workers` contiguous slices.
    pub fn worker_of(&self, port: u16) -> usize {
        let chunk = (self.ports.len() / self.workers.max(1) as u32).max(1);
        let slot = u32::from(port.saturating_sub(self.ports.first)) / chunk;
        (slot as usize).min(self.workers.max(1) - 1)
    }

    /// The ports `worker` binds relay sockets on.
    pub fn ports_of(&self, worker: usize) -> PortRange {
        let n = self.workers.max(1) as u32;
        let chunk = (self.ports.len() / n).max(1);
        let first = u32::from(self.ports.first) + chunk * worker as u32;
        let last = if worker as u32 + 1 >= n {
            u32::from(self.ports.last)
        } else {
            first + chunk - 1
        };
        PortRange {
            first: first.min(u32::from(self.ports.last)) as u16,
            last: last.min(u32::from(self.ports.last)) as u16,
        }
    }

    /// Whether `addr` is one of this server's relayed addresses, in its local or advertised
    /// form: two to four comparisons and one atomic load, so the data path asks it per packet.
    /// Only live ones count: another process may use a port of the range.
    pub fn locate(&self, addr: SocketAddr) -> Relayed {
        let ip = crate::policy::canonical(addr.ip());
        let Some((local, _)) = [self.v4, self.v6]
            .into_iter()
            .flatten()
            .find(|(local, public)| *local == ip || *public == ip)
        else {
            return Relayed::Elsewhere;
        };
        let local = SocketAddr::new(local, addr.port());
        if self.ports.contains(addr.port()) && self.live.contains(local) {
            Relayed::Live(local)
        } else {
            Relayed::NotLive
        }
    }

    /// When `addr` is (the advertised form of) a live relayed address of this server, its
    /// local form.
    pub fn ours(&self, addr: SocketAddr) -> Option<SocketAddr> {
        match self.locate(addr) {
            Relayed::Live(local) => Some(local),
            Relayed::NotLive | Relayed::Elsewhere => None,
        }
    }

    /// The relay's local and advertised IPs: addresses of this host.
    fn ips(&self) -> impl Iterator<Item = IpAddr> {
        [self.v4, self.v6]
            .into_iter()
            .flatten()
            .flat_map(|(local, public)| [local, public])
    }

    fn public_of(&self, local: SocketAddr) -> SocketAddr {
        [self.v4, self.v6]
            .into_iter()
            .flatten()
            .find(|(l, _)| *l == local.ip())
            .map(|(_, p)| SocketAddr::new(p, local.port()))
            .unwrap_or(local)
    }
}

/// Settings of the core that come from the configuration.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// REALM of the long-term credentials (RFC 8489 §9.2).
    pub realm: String,
    /// Separator between expiry and user in REST usernames.
    pub separator: char,
    /// Age after which a nonce is stale (438, RFC 8489 §9.2.4).
    pub nonce_lifetime_secs: u64,
    /// Which peers allocations may reach; the core adds its relay addresses to
    /// [`PeerPolicy::own_addresses`].
    pub policy: PeerPolicy,
    /// The relay addresses and this worker's share of the port range.
    pub relay: RelayPlan,
    /// This core's worker index in [`RelayPlan::worker_of`].
    pub worker: usize,
    /// Set when the server drains before shutting down: new allocations are refused (508),
    /// existing ones keep relaying.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The room peers whose credentials may still open allocations (shared with signaling).
    pub live_peers: Arc<auth::LivePeers>,
    /// The relayed address family of an Allocate that does not name one.
    pub allocation_family: AllocationFamily,
}

/// Which family an Allocate without REQUESTED-ADDRESS-FAMILY gets (browsers send none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllocationFamily {
    /// IPv4, as RFC 8656 §7.2 says: every peer then has relayed addresses of one family, so
    /// relayed candidates always pair.
    #[default]
    Ipv4,
    /// The family the client reached the server over (coturn's `keep`): IPv6 clients get IPv6
    /// relayed addresses, which pair only with peers that have IPv6 too.
    Keep,
}

/// One worker's TURN server: the allocation table and the protocol around it. Owned by one
/// thread; only the quotas, the live relayed addresses and the unauthenticated-answer limiter
/// are shared with other workers.
pub struct Core {
    config: CoreConfig,
    table: AllocationTable,
    secrets: Arc<Secrets>,
    nonces: Arc<NonceKey>,
    /// Shared by all workers: SO_REUSEPORT spreads one source IP's ports over every worker,
    /// so per-worker limiters would multiply the budget. Locked only for answers to
    /// unauthenticated requests, never on the data path.
    unauth: Arc<Mutex<RateLimiter>>,
    log: LogBudget,
    scratch: Vec<u8>,
}

impl Core {
    /// A core for worker `config.worker`; `unauth` is shared by all workers.
    pub fn new(
        mut config: CoreConfig,
        table: AllocationTable,
        secrets: Arc<Secrets>,
        nonces: Arc<NonceKey>,
        unauth: Arc<Mutex<RateLimiter>>,
    ) -> Core {
        // The relay addresses are this host's whatever the caller listed: the peer policy's
        // per-packet rule relies on it (see `policy`).
        let relay_ips: Vec<IpAddr> = config.relay.ips().collect();
        config.policy.own_addresses.extend(relay_ips);
        Core {
            config,
            table,
            secrets,
            nonces,
            unauth,
            log: LogBudget::default(),
            scratch: Vec::with_capacity(1500),
        }
    }

    /// What this core counted since it started; the IO layer publishes the growth.
    pub fn counters(&self) -> &Counters {
        self.table.counters()
    }

    fn count(&mut self) -> &mut Counters {
        self.table.counters_mut()
    }

    /// Bytes of the last [`Payload::Scratch`] transmission.
    pub fn scratch(&self) -> &[u8] {
        &self.scratch
    }

    /// The allocation table, for inspection (admin page, tests).
    pub fn table(&self) -> &AllocationTable {
        &self.table
    }

    /// The next moment [`Core::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.table.poll_timeout()
    }

    /// Expires what is due at `now` and closes the relay sockets of expired allocations.
    pub fn handle_timeout(&mut self, now: Millis, sockets: &mut impl RelaySockets) {
        for (id, a) in self.table.handle_timeout(now) {
            debug!(client = %a.five_tuple.client, user = %a.username, "allocation expired");
            self.release_relay(id, &a, sockets);
        }
    }

    /// What every way of ending an allocation must do after taking it out of the table: its
    /// relayed address stops being one of ours (so in-memory forwarding no longer targets it)
    /// and its socket closes.
    fn release_relay(&mut self, id: AllocId, a: &Allocation, sockets: &mut impl RelaySockets) {
        if let Some(local) = a.relay_local {
            self.config.relay.live.remove(local);
            sockets.close(id);
        }
    }

    /// Closes every allocation made with credentials of `user` (the owner left its call);
    /// returns how many. Refreshes on them then get 437 like any unknown allocation.
    pub fn close_user(&mut self, user: &str, sockets: &mut impl RelaySockets) -> usize {
        let removed = self.table.remove_user(user);
        for (id, a) in &removed {
            debug!(client = %a.five_tuple.client, user = %a.username, "allocation closed: its user is gone");
            self.release_relay(*id, a, sockets);
        }
        removed.len()
    }

    /// A datagram from a client on the listener `listener`; it sits at
    /// `buf[HEADROOM..HEADROOM + len]`.
    pub fn handle_client(
        &mut self,
        from: SocketAddr,
        listener: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        let Some(data) = buf.get(HEADROOM..HEADROOM + len) else {
            return Action::Nothing;
        };
        let five_tuple = FiveTuple {
            client: from,
            listener,
            transport: Transport::Udp,
        };
        match data.first().map(|b| b >> 6) {
            Some(1) => self.channel_data_from_client(&five_tuple, buf, len, now),
            Some(0) => self.stun_from_client(&five_tuple, buf, len, now, sockets),
            _ => Action::Nothing,
        }
    }

    /// One frame from a stream (TCP or TLS) client, framed by the IO layer, at
    /// `buf[HEADROOM..HEADROOM + len]` (ChannelData with its stream padding).
    pub fn handle_stream(
        &mut self,
        five: &FiveTuple,
        buf: &mut [u8],
        len: usize,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        match buf.get(HEADROOM).map(|b| b >> 6) {
            Some(1) if buf.len() >= HEADROOM + len => {
                self.channel_data_from_client(five, buf, len, now)
            }
            Some(0) if buf.len() >= HEADROOM + len => {
                self.stun_from_client(five, buf, len, now, sockets)
            }
            _ => Action::Nothing,
        }
    }

    /// The stream connection of `five` closed: RFC 8656 §3.1 ties a TCP or TLS client's
    /// allocation to its connection, so the allocation goes with it.
    pub fn close_client(&mut self, five: &FiveTuple, sockets: &mut impl RelaySockets) -> bool {
        let Some(id) = self.table.by_client(five) else {
            return false;
        };
        let Some(a) = self.table.remove(id) else {
            return false;
        };
        debug!(client = %five.client, user = %a.username, "allocation closed with its connection");
        self.release_relay(id, &a, sockets);
        true
    }

    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer.
    fn channel_data_from_client(
        &mut self,
        five_tuple: &FiveTuple,
        buf: &mut [u8],
        len: usize,
        now: Millis,
    ) -> Action {
        let Some((number, data_len)) = parse_channel_data(&buf[HEADROOM..HEADROOM + len]) else {
            return Action::Nothing;
        };
        let Some(id) = self.table.by_client(five_tuple) else {
            return Action::Nothing;
        };
        let Some(peer) = self.table.channel_peer(id, number, now) else {
            return Action::Nothing;
        };
        let start = HEADROOM + channel_data::HEADER_LEN;
        self.relay_to_peer(id, peer, buf, start, start + data_len, now)
    }

    /// Sends `buf[start..end]` from allocation `id` to `peer`, whose IP has a permission: the
    /// peer policy decides for this exact address first (ChannelData and Send indications
    /// alike), then the bandwidth cap; delivery goes through the kernel, or in memory when the
    /// peer is one of our own relayed addresses.
    fn relay_to_peer(
        &mut self,
        id: AllocId,
        peer: SocketAddr,
        buf: &mut [u8],
        start: usize,
        end: usize,
        now: Millis,
    ) -> Action {
        let Some(relayed) = self.packet_allowed(peer, "to a peer", now) else {
            return Action::Nothing;
        };
        if !self.table.spend(id, Direction::ToPeer, end - start, now) {
            return Action::Nothing;
        }
        let Relayed::Live(local) = relayed else {
            self.count_relayed(RelayPath::ClientToPeer, end - start);
            return Action::Send {
                via: Via::Relay(id),
                to: peer,
                payload: Payload::Input { start, end },
            };
        };
        let Some(from) = self.table.get(id).and_then(|a| a.relay_public) else {
            return Action::Nothing;
        };
        self.count_relayed(RelayPath::InMemory, end - start);
        let worker = self.config.relay.worker_of(local.port());
        if worker != self.config.worker {
            return Action::Forward {
                worker,
                from,
                to: local,
                start,
                end,
            };
        }
        match self.table.by_relay(&local) {
            Some(target) => self.relay_to_client(target, from, buf, start, end, now),
            None => Action::Nothing,
        }
    }

    /// A datagram from `from` on the relay socket of `id`, at `buf[HEADROOM..HEADROOM + len]`.
    pub fn handle_peer(
        &mut self,
        id: AllocId,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Millis,
    ) -> Action {
        if buf.len() < HEADROOM + len {
            return Action::Nothing;
        }
        let action = self.relay_to_client(id, from, buf, HEADROOM, HEADROOM + len, now);
        if action != Action::Nothing {
            self.count_relayed(RelayPath::PeerToClient, len);
        }
        action
    }

    fn count_relayed(&mut self, path: RelayPath, bytes: usize) {
        let c = self.count();
        c.relayed_packets.inc(path);
        c.relayed_bytes.add(path, bytes as u64);
    }

    /// Data another worker's allocation sent to our relayed address `to`.
    pub fn handle_forwarded(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Millis,
    ) -> Action {
        match self.table.by_relay(&to) {
            Some(id) if buf.len() >= HEADROOM + len => {
                self.relay_to_client(id, from, buf, HEADROOM, HEADROOM + len, now)
            }
            _ => Action::Nothing,
        }
    }

    /// The peer policy on one packet (IP and port), with the relayed address it names if that
    /// is one of ours; a refused packet is logged within the budget and goes nowhere.
    fn packet_allowed(
        &mut self,
        peer: SocketAddr,
        direction: &str,
        now: Millis,
    ) -> Option<Relayed> {
        // The cluster's relays are taken where the policy is consulted: here for data, in
        // `create_permission` and `channel_bind` for requests (UDP and stream clients alike).
        self.config.policy.sync_cluster(now.0);
        let relayed = self.config.relay.locate(peer);
        if let Verdict::Denied(reason) = self.config.policy.check_packet(peer, relayed) {
            if self.log.take(now) {
                debug!(%peer, "packet {direction} dropped: {}", reason.describe());
            }
            return None;
        }
        Some(relayed)
    }

    /// RFC 8656 §11.3 and §12.6: data from `peer` for allocation `id`'s client, as ChannelData
    /// (header written into the 4 bytes before `start`) or as a Data indication. The peer
    /// policy applies to the source as to a destination: nothing the relay may not send to is
    /// delivered either, so a datagram from this host's own address reaches no client unless
    /// it comes from a live relayed address (in memory).
    fn relay_to_client(
        &mut self,
        id: AllocId,
        peer: SocketAddr,
        buf: &mut [u8],
        start: usize,
        end: usize,
        now: Millis,
    ) -> Action {
        if start < channel_data::HEADER_LEN || !self.table.has_permission(id, peer.ip(), now) {
            return Action::Nothing;
        }
        if self.packet_allowed(peer, "from a peer", now).is_none() {
            return Action::Nothing;
        }
        if !self.table.spend(id, Direction::ToClient, end - start, now) {
            return Action::Nothing;
        }
        let Some(a) = self.table.get(id) else {
            return Action::Nothing;
        };
        let (client, via) = (a.five_tuple.client, Via::to_client(&a.five_tuple));
        if let Some(number) = self.table.channel_for_peer(id, peer, now) {
            let head = start - channel_data::HEADER_LEN;
            let mut header = [0u8; 4];
            channel_data::write_header(&mut header, number, (end - start) as u16);
            buf[head..start].copy_from_slice(&header);
            return Action::Send {
                via,
                to: client,
                payload: Payload::Input { start: head, end },
            };
        }
        let tid = TransactionId(data_indication_tid(now, peer));
        let mut w = MessageWriter::new(&mut self.scratch, Method::DATA, Class::Indication, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, &buf[start..end]);
        if w.finish() == 0 {
            return Action::Nothing;
        }
        Action::Send {
            via,
            to: client,
            payload: Payload::Scratch,
        }
    }
}

mod control;
mod handlers;
mod outcome;
mod request;

/// RFC 8656 §12.4 header check over the channel range this server accepts: (channel, length).
/// Bytes after the declared length are UDP padding and ignored.
fn parse_channel_data(datagram: &[u8]) -> Option<(u16, usize)> {
    let [c0, c1, l0, l1, data @ ..] = datagram else {
        return None;
    };
    let number = u16::from_be_bytes([*c0, *c1]);
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    ((channel_data::MIN_CHANNEL..=MAX_LEGACY_CHANNEL).contains(&number) && len <= data.len())
        .then_some((number, len))
}

/// A transaction id for a Data indication: it needs no uniqueness guarantee (nobody answers
/// it), only to differ between packets so that nothing mistakes two for a retransmission.
fn data_indication_tid(now: Millis, peer: SocketAddr) -> [u8; 12] {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&now.0.to_be_bytes());
    tid[8..10].copy_from_slice(&peer.port().to_be_bytes());
    tid
}

/// Caps refusal logging: a flood of bad requests must not become a flood of log lines.
#[derive(Default)]
struct LogBudget {
    second: u64,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    const PER_SECOND: u32 = 20;

    fn take(&mut self, now: Millis) -> bool {
        let second = now.0 / 1000;
        if second != self.second {
            if self.suppressed > 0 {
                info!(
                    suppressed = self.suppressed,
                    "TURN refusals not logged individually (log rate cap)"
                );
            }
            self.second = second;
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < Self::PER_SECOND {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests;
