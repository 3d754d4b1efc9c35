//! The allocation table of one worker: allocations, their permissions and channels, lifetimes
//! and quotas, as a plain state machine with time passed in (RFC 8656 §5–§12).
//!
//! Lookups on the data path are one hash probe (`by_five_tuple`, `by_relay`) plus a scan of a
//! few inline entries (permissions and channels rarely exceed a handful per allocation), with no
//! allocation and no lock. Expiry is driven by [`AllocationTable::poll_timeout`] and
//! [`AllocationTable::handle_timeout`]: each allocation has exactly one entry in an ordered
//! deadline set, at the earliest moment something in it expires, so the set's size is bounded by
//! the number of allocations. Data-path checks also compare expiry times themselves, so a timer
//! firing late never lets an expired permission through.
//!
//! Quotas are the one thing shared among workers ([`Quotas`]): a user's allocations (and one
//! client address's) may land on any worker, so the per-user and per-address counts live behind
//! mutexes that only Allocate and deletion touch.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::counters::{Counters, TransportLabel};
use crate::policy::{canonical, AddrKey};

/// A point on the server clock in milliseconds. The IO layer derives it from a monotonic clock
/// anchored at the Unix epoch, so it also serves for REST credential expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `d` later, saturating at the end of time.
    pub fn plus(self, d: Duration) -> Millis {
        Millis(
            self.0
                .saturating_add(d.as_millis().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// Whole Unix seconds, the unit of REST credential expiry and nonce timestamps.
    pub fn unix_secs(self) -> u64 {
        self.0 / 1000
    }

    /// Time from `self` to `later`, zero when `later` is not later.
    pub fn until(self, later: Millis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

/// RFC 8656 §2: transport between client and server. The relayed transport is always UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// RFC 8656 §3.1 TURN over UDP.
    Udp,
    /// RFC 8656 §3.1 TURN over TCP: the allocation lives as long as the connection.
    Tcp,
    /// TURN over TLS over TCP (`turns:`), on its own port or the HTTPS port.
    Tls,
}

/// Live permission and channel counts of one allocation.
fn counts(a: &Allocation) -> (u64, u64) {
    (a.permissions.len() as u64, a.channels.len() as u64)
}

/// Moves the live permission and channel figures by what a change did to one allocation.
fn moved(c: &mut Counters, before: (u64, u64), after: (u64, u64)) {
    c.permissions_active = (c.permissions_active + after.0).saturating_sub(before.0);
    c.channels_active = (c.channels_active + after.1).saturating_sub(before.1);
}

/// RFC 8656 §2: the 5-tuple that identifies an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as this server sees it (its server-reflexive address).
    pub client: SocketAddr,
    /// The local address of the listener the client talks to.
    pub listener: SocketAddr,
    /// UDP, TCP or TLS between client and server.
    pub transport: Transport,
}

/// Slot index plus generation, so a stale id (for example in a queued packet) never reaches a
/// newer allocation that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId {
    /// Slot in the table.
    pub index: u32,
    /// How many allocations the slot has held, this one included.
    pub generation: u32,
}

/// RFC 8656 §7.2: default allocation lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §9: permission lifetime.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel binding lifetime.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires, its number and peer stay reserved for 5 minutes.
pub const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
/// Most permissions one allocation holds (RFC 8656 §9 sets no bound; memory stays bounded
/// whatever a client asks for).
pub const MAX_PERMISSIONS: usize = 64;
/// Most channel bindings one allocation holds, for the same reason.
pub const MAX_CHANNELS: usize = 64;

/// What the table needs to know about its limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest lifetime one Allocate or Refresh grants, and the most an allocation may live
    /// past its credential (`max_allocation_lifetime`).
    pub max_lifetime: Duration,
    /// Refuse refreshes, permissions and channels once the credential has expired.
    pub strict_expiry: bool,
    /// Bytes per second per allocation and direction; 0 = no cap.
    pub max_bytes_per_sec: u64,
}

/// Why the table refused something. The server maps each to a STUN error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// `user_quota` (486).
    #[error("the user already has the most allocations user_quota allows")]
    UserQuota,
    /// `total_quota` (486).
    #[error("the server already has the most allocations total_quota allows")]
    TotalQuota,
    /// The client's address (IPv4 address or IPv6 /64) holds the most allocations (486).
    #[error("the client's address already has the most allocations max_allocations_per_ip allows")]
    AddressQuota,
    /// The REST credential has expired (401).
    #[error("the credential has expired")]
    CredentialExpired,
    /// No allocation for the 5-tuple (437).
    #[error("no allocation for this 5-tuple")]
    NoAllocation,
    /// [`MAX_PERMISSIONS`] (508).
    #[error("too many permissions on this allocation")]
    TooManyPermissions,
    /// [`MAX_CHANNELS`] (508).
    #[error("too many channels on this allocation")]
    TooManyChannels,
    /// RFC 8656 §11.2: a channel number or a peer bound to something else (400).
    #[error("the channel number or the peer is already bound to something else")]
    ChannelConflict,
}

/// Allocation counts shared by all workers: per user, per client address and in total.
#[derive(Debug)]
pub struct Quotas {
    /// Atomics so a configuration reload can change them while allocations live; a lowered
    /// quota refuses new allocations and never closes existing ones.
    user_quota: AtomicU32,
    total_quota: AtomicU32,
    /// Per client address ([`AddrKey`]: an IPv4 address or an IPv6 /64); no cap until [`Quotas::set_address_limit`].
    address_quota: AtomicU32,
    total: AtomicU32,
    per_user: Mutex<HashMap<Box<str>, u32>>,
    /// Locked after `per_user`, never before.
    per_address: Mutex<HashMap<AddrKey, u32>>,
}

impl Quotas {
    /// `user_quota` live allocations per user and `total_quota` in all.
    pub fn new(user_quota: u32, total_quota: u32) -> Quotas {
        Quotas {
            user_quota: AtomicU32::new(user_quota),
            total_quota: AtomicU32::new(total_quota),
            address_quota: AtomicU32::new(u32::MAX),
            total: AtomicU32::new(0),
            per_user: Mutex::new(HashMap::new()),
            per_address: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an allocation of `user` from `client`, or says which quota it would exceed.
    pub fn acquire(&self, user: &str, client: IpAddr) -> Result<(), AllocError> {
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.total_quota.load(Ordering::Relaxed) {
            return Err(AllocError::TotalQuota);
        }
        let count = users.get(user).copied().unwrap_or(0);
        if count >= self.user_quota.load(Ordering::Relaxed) {
            return Err(AllocError::UserQuota);
        }
        let mut addresses = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let address = AddrKey::of(client);
        let from_address = addresses.get(&address).copied().unwrap_or(0);
        if from_address >= self.address_quota.load(Ordering::Relaxed) {
            return Err(AllocError::AddressQuota);
        }
        addresses.insert(address, from_address + 1);
        users.insert(user.into(), count + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back one allocation of `user` from `client`.
    pub fn release(&self, user: &str, client: IpAddr) {
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
            let mut addresses = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let address = AddrKey::of(client);
            if let Some(n) = addresses.get_mut(&address) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    addresses.remove(&address);
                }
            }
        }
    }

    /// Live allocations on the whole server.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// New limits from a configuration reload.
    pub fn set_limits(&self, user_quota: u32, total_quota: u32) {
        self.user_quota.store(user_quota, Ordering::Relaxed);
        self.total_quota.store(total_quota, Ordering::Relaxed);
    }

    /// Most live allocations from one client address (at start and on reload).
    pub fn set_address_limit(&self, per_address: u32) {
        self.address_quota.store(per_address, Ordering::Relaxed);
    }
}

/// Everything an Allocate request established, handed to [`AllocationTable::insert`].
#[derive(Debug, Clone)]
pub struct NewAllocation {
    /// The client's 5-tuple, the allocation's identity (RFC 8656 §2).
    pub five_tuple: FiveTuple,
    /// The USERNAME that authenticated the Allocate; later requests must use the same (441).
    pub username: Box<str>,
    /// The quota key: the USER part of a REST username, else the whole username.
    pub user: Box<str>,
    /// Long-term key (RFC 8489 §9.2.2) that verified the Allocate; later requests must match it.
    pub key: [u8; 16],
    /// REST expiry of the credential, Unix seconds.
    pub credential_expiry: u64,
    /// The Allocate's transaction id, to recognise a retransmission (RFC 8656 §7.2).
    pub transaction_id: [u8; 12],
    /// LIFETIME the client asked for, if any.
    pub requested_lifetime: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    ip: IpAddr,
    expires: Millis,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Millis,
}

/// Byte budget of one direction when `max_bitrate` is set.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Millis,
}

/// RFC 8656 §5: one allocation, its relayed address, credentials and lifetime.
#[derive(Debug)]
pub struct Allocation {
    /// The client's 5-tuple.
    pub five_tuple: FiveTuple,
    /// Where the relay socket is bound.
    pub relay_local: Option<SocketAddr>,
    /// What XOR-RELAYED-ADDRESS says (differs from `relay_local` behind 1:1 NAT).
    pub relay_public: Option<SocketAddr>,
    /// The USERNAME that created it.
    pub username: Box<str>,
    /// Its quota key (see [`NewAllocation::user`]).
    pub user: Box<str>,
    /// The long-term key that created it.
    pub key: [u8; 16],
    /// REST expiry of the credential, Unix seconds.
    pub credential_expiry: u64,
    /// When it was created.
    pub created: Millis,
    /// When it expires unless refreshed (RFC 8656 §7.3).
    pub expires: Millis,
    /// The creating Allocate's transaction id.
    pub transaction_id: [u8; 12],
    /// The success response to the Allocate, answered again to a retransmission.
    pub allocate_response: Box<[u8]>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    buckets: [Bucket; 2],
    scheduled: Millis,
}

/// Direction of a relayed packet, for the bandwidth cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to peer.
    ToPeer = 0,
    /// Peer to client.
    ToClient = 1,
}

/// One worker's allocations, indexed by 5-tuple and by relayed address.
pub struct AllocationTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_five_tuple: HashMap<FiveTuple, AllocId>,
    by_relay: HashMap<SocketAddr, AllocId>,
    deadlines: BTreeSet<(Millis, AllocId)>,
    quotas: Arc<Quotas>,
    limits: Limits,
    /// What the table counted; the core adds its own counts here too.
    counters: Counters,
}

struct Slot {
    generation: u32,
    allocation: Option<Allocation>,
}

impl AllocationTable {
    /// An empty table sharing `quotas` with the other workers.
    pub fn new(quotas: Arc<Quotas>, limits: Limits) -> AllocationTable {
        AllocationTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_five_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            deadlines: BTreeSet::new(),
            quotas,
            limits,
            counters: Counters::default(),
        }
    }

    /// What this table (and the core that owns it) counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Live allocations.
    pub fn len(&self) -> usize {
        self.by_five_tuple.len()
    }

    /// Whether no allocation lives.
    pub fn is_empty(&self) -> bool {
        self.by_five_tuple.is_empty()
    }

    /// The limits the table was built with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// RFC 8656 §7.2 and §7.3: the lifetime granted for a requested LIFETIME (never zero here).
    pub fn desired_lifetime(&self, requested: Option<u32>) -> Duration {
        match requested {
            Some(secs) if Duration::from_secs(u64::from(secs)) > DEFAULT_LIFETIME => {
                Duration::from_secs(u64::from(secs)).min(self.limits.max_lifetime)
            }
            _ => DEFAULT_LIFETIME,
        }
    }

    /// The allocation of a client's 5-tuple (one hash probe).
    pub fn by_client(&self, five_tuple: &FiveTuple) -> Option<AllocId> {
        self.by_five_tuple.get(five_tuple).copied()
    }

    /// The allocation whose relay socket is bound to `relay_local` (one hash probe).
    pub fn by_relay(&self, relay_local: &SocketAddr) -> Option<AllocId> {
        self.by_relay.get(relay_local).copied()
    }

    /// The allocation `id`, unless it has gone (a stale id finds nothing).
    pub fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.allocation.as_ref())
            .flatten()
    }

    fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.allocation.as_mut()
    }

    /// Creates an allocation (RFC 8656 §7.2) after checking the credential and the quotas. The
    /// relay address is filled in by [`Self::set_relay`] once the IO layer has bound it.
    pub fn insert(&mut self, new: NewAllocation, now: Millis) -> Result<AllocId, AllocError> {
        if now.unix_secs() > new.credential_expiry {
            return Err(AllocError::CredentialExpired);
        }
        self.quotas.acquire(&new.user, new.five_tuple.client.ip())?;
        let lifetime = self.desired_lifetime(new.requested_lifetime);
        let expires = now.plus(lifetime);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    allocation: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let id = AllocId {
            index,
            generation: slot.generation,
        };
        let full = Bucket {
            tokens: self.limits.max_bytes_per_sec,
            last: now,
        };
        slot.allocation = Some(Allocation {
            five_tuple: new.five_tuple,
            relay_local: None,
            relay_public: None,
            username: new.username,
            user: new.user,
            key: new.key,
            credential_expiry: new.credential_expiry,
            created: now,
            expires,
            transaction_id: new.transaction_id,
            allocate_response: Box::new([]),
            permissions: Vec::new(),
            channels: Vec::new(),
            buckets: [full, full],
            scheduled: expires,
        });
        self.by_five_tuple.insert(new.five_tuple, id);
        self.deadlines.insert((expires, id));
        let t = TransportLabel::from(new.five_tuple.transport);
        self.counters.allocations_created.inc(t);
        self.counters.allocations_active.inc(t);
        Ok(id)
    }

    /// Records the relay socket's local address and the address advertised for it.
    pub fn set_relay(&mut self, id: AllocId, local: SocketAddr, public: SocketAddr) {
        if let Some(a) = self.get_mut(id) {
            a.relay_local = Some(local);
            a.relay_public = Some(public);
            self.by_relay.insert(local, id);
        }
    }

    /// Keeps the Allocate's success response for retransmissions (RFC 8656 §7.2).
    pub fn set_allocate_response(&mut self, id: AllocId, response: &[u8]) {
        if let Some(a) = self.get_mut(id) {
            a.allocate_response = response.into();
        }
    }

    /// Deletes an allocation and gives its quota back. Returns it for the IO layer to close
    /// the relay socket.
    pub fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let a = slot.allocation.take()?;
        self.free.push(id.index);
        self.by_five_tuple.remove(&a.five_tuple);
        if let Some(local) = a.relay_local {
            self.by_relay.remove(&local);
        }
        self.deadlines.remove(&(a.scheduled, id));
        self.quotas.release(&a.user, a.five_tuple.client.ip());
        self.counters
            .allocations_active
            .dec(a.five_tuple.transport.into());
        moved(&mut self.counters, counts(&a), (0, 0));
        Some(a)
    }

    /// Deletes every allocation whose user (the USER part of its REST username) is `user`, and
    /// returns them for the IO layer to close. Used when the peer those credentials were minted
    /// for has left its call; a scan, as it is rare next to packets.
    pub fn remove_user(&mut self, user: &str) -> Vec<(AllocId, Allocation)> {
        let ids: Vec<AllocId> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.allocation.as_ref().is_some_and(|a| &*a.user == user))
            .map(|(i, s)| AllocId {
                index: i as u32,
                generation: s.generation,
            })
            .collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|a| (id, a)))
            .collect()
    }

    /// Whether requests other than Allocate may still use this allocation's credential: while it
    /// is valid, and after that (unless `strict_expiry`) until the allocation is
    /// `max_lifetime` old.
    pub fn credential_usable(&self, id: AllocId, now: Millis) -> bool {
        let Some(a) = self.get(id) else { return false };
        now.unix_secs() <= a.credential_expiry
            || (!self.limits.strict_expiry && now < a.created.plus(self.limits.max_lifetime))
    }

    /// RFC 8656 §7.3: Refresh with a non-zero lifetime. Returns the lifetime granted.
    pub fn refresh(
        &mut self,
        id: AllocId,
        requested: Option<u32>,
        now: Millis,
    ) -> Result<Duration, AllocError> {
        if !self.credential_usable(id, now) {
            return Err(AllocError::CredentialExpired);
        }
        let mut lifetime = self.desired_lifetime(requested);
        let max_lifetime = self.limits.max_lifetime;
        let a = self.get_mut(id).ok_or(AllocError::NoAllocation)?;
        if now.unix_secs() > a.credential_expiry {
            // Past the credential: never beyond `max_lifetime` from creation.
            lifetime = lifetime.min(now.until(a.created.plus(max_lifetime)));
        }
        a.expires = now.plus(lifetime);
        self.reschedule(id);
        Ok(lifetime)
    }

    /// RFC 8656 §9: installs or refreshes a permission for `peer`'s IP.
    pub fn add_permission(
        &mut self,
        id: AllocId,
        peer: IpAddr,
        now: Millis,
    ) -> Result<(), AllocError> {
        if !self.credential_usable(id, now) {
            return Err(AllocError::CredentialExpired);
        }
        let a = self.get_mut(id).ok_or(AllocError::NoAllocation)?;
        let before = counts(a);
        let installed = install_permission(a, peer, now);
        let after = counts(a);
        moved(&mut self.counters, before, after);
        installed?;
        self.reschedule(id);
        Ok(())
    }

    /// Checks (without installing anything) that `permissions` more could be installed.
    pub fn permission_room(&self, id: AllocId, peers: &[IpAddr], now: Millis) -> bool {
        let Some(a) = self.get(id) else { return false };
        let new = peers
            .iter()
            .filter(|ip| !a.permissions.iter().any(|p| p.ip == canonical(**ip)))
            .count();
        let live = a.permissions.iter().filter(|p| p.expires > now).count();
        live + new <= MAX_PERMISSIONS
    }

    /// RFC 8656 §11.2: binds or refreshes `number` ↔ `peer`, refreshing the peer's permission.
    pub fn bind_channel(
        &mut self,
        id: AllocId,
        number: u16,
        peer: SocketAddr,
        now: Millis,
    ) -> Result<(), AllocError> {
        if !self.credential_usable(id, now) {
            return Err(AllocError::CredentialExpired);
        }
        let a = self.get_mut(id).ok_or(AllocError::NoAllocation)?;
        let existing = a.channels.iter().position(|c| c.number == number);
        let peer_taken = a
            .channels
            .iter()
            .any(|c| c.peer == peer && c.number != number);
        if peer_taken {
            return Err(AllocError::ChannelConflict);
        }
        match existing {
            Some(i) if a.channels[i].peer != peer => return Err(AllocError::ChannelConflict),
            Some(_) => {}
            None if a.channels.len() >= MAX_CHANNELS => return Err(AllocError::TooManyChannels),
            None => {}
        }
        let before = counts(a);
        if let Err(e) = install_permission(a, peer.ip(), now) {
            let after = counts(a);
            moved(&mut self.counters, before, after);
            return Err(e);
        }
        let expires = now.plus(CHANNEL_LIFETIME);
        match existing {
            Some(i) => a.channels[i].expires = expires,
            None => a.channels.push(Channel {
                number,
                peer,
                expires,
            }),
        }
        let after = counts(a);
        moved(&mut self.counters, before, after);
        self.reschedule(id);
        Ok(())
    }

    /// Data path: whether `peer`'s IP has a live permission.
    pub fn has_permission(&self, id: AllocId, peer: IpAddr, now: Millis) -> bool {
        let ip = canonical(peer);
        self.get(id)
            .is_some_and(|a| a.permissions.iter().any(|p| p.ip == ip && p.expires > now))
    }

    /// Data path, client → peer: the peer of a live channel with a live permission.
    pub fn channel_peer(&self, id: AllocId, number: u16, now: Millis) -> Option<SocketAddr> {
        let a = self.get(id)?;
        let c = a
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)?;
        let ip = canonical(c.peer.ip());
        a.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
            .then_some(c.peer)
    }

    /// Data path, peer → client: the live channel bound to `peer`, if any.
    pub fn channel_for_peer(&self, id: AllocId, peer: SocketAddr, now: Millis) -> Option<u16> {
        self.get(id)?
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Data path: spends `len` bytes of the allocation's budget in `dir`; false = drop.
    pub fn spend(&mut self, id: AllocId, dir: Direction, len: usize, now: Millis) -> bool {
        let rate = self.limits.max_bytes_per_sec;
        if rate == 0 {
            return true;
        }
        let Some(a) = self.get_mut(id) else {
            return false;
        };
        let b = &mut a.buckets[dir as usize];
        let refill = b.last.until(now).as_millis() as u64 * rate / 1000;
        if refill > 0 {
            b.tokens = (b.tokens + refill).min(rate);
            b.last = now;
        }
        match b.tokens.checked_sub(len as u64) {
            Some(left) => {
                b.tokens = left;
                true
            }
            None => false,
        }
    }

    /// The next moment [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Expires what is due: removes dead permissions and channels, and deletes expired
    /// allocations, which are returned so the IO layer can close their relay sockets.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<(AllocId, Allocation)> {
        let mut removed = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(a) = self.get_mut(id) else { continue };
            if a.expires <= now {
                a.scheduled = Millis(0);
                if let Some(a) = self.remove(id) {
                    self.counters
                        .allocations_expired
                        .inc(a.five_tuple.transport.into());
                    removed.push((id, a));
                }
                continue;
            }
            let before = counts(a);
            a.permissions.retain(|p| p.expires > now);
            a.channels
                .retain(|c| c.expires.plus(CHANNEL_QUARANTINE) > now);
            a.scheduled = Millis(0);
            let after = counts(a);
            moved(&mut self.counters, before, after);
            self.reschedule(id);
        }
        removed
    }

    /// Moves the allocation's single deadline entry to its earliest pending expiry.
    fn reschedule(&mut self, id: AllocId) {
        let Some(a) = self.get_mut(id) else { return };
        let mut next = a.expires;
        for p in &a.permissions {
            next = next.min(p.expires);
        }
        for c in &a.channels {
            next = next.min(c.expires.plus(CHANNEL_QUARANTINE));
        }
        let old = std::mem::replace(&mut a.scheduled, next);
        self.deadlines.remove(&(old, id));
        self.deadlines.insert((next, id));
    }
}

fn install_permission(a: &mut Allocation, peer: IpAddr, now: Millis) -> Result<(), AllocError> {
    let ip = canonical(peer);
    let expires = now.plus(PERMISSION_LIFETIME);
    if let Some(p) = a.permissions.iter_mut().find(|p| p.ip == ip) {
        p.expires = expires;
        return Ok(());
    }
    a.permissions.retain(|p| p.expires > now);
    if a.permissions.len() >= MAX_PERMISSIONS {
        return Err(AllocError::TooManyPermissions);
    }
    a.permissions.push(Permission { ip, expires });
    Ok(())
}

#[cfg(test)]
mod tests;
