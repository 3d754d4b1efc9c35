//! The TURN methods' own rules, once the client has authenticated: each handler takes the
//! decoded request and returns a [`Reply`] or a [`Refusal`]; none writes bytes, counts or logs
//! a refusal itself (`control.rs` does, in one place).

use super::control::{Credentials, Outcome};
use super::outcome::{Refusal, Reply};
use super::request::{self, Family};
use super::*;

impl Core {
    /// RFC 8656 §7.2. One relayed address per allocation, of the requested family (when absent,
    /// IPv4 or, with [`AllocationFamily::Keep`], the family the client reached us over); ADDITIONAL-ADDRESS-FAMILY gets the IPv4 one and ADDRESS-ERROR-CODE for IPv6.
    pub(super) fn allocate(
        &mut self,
        body: Result<request::Allocate, Refusal>,
        creds: &Credentials,
        five: &FiveTuple,
        tid: TransactionId,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Outcome {
        if self
            .config
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Refusal::Draining);
        }
        if self.table.by_client(five).is_some() {
            return Err(Refusal::AllocationExists);
        }
        let body = body?;
        let family = body.family.unwrap_or(match self.config.allocation_family {
            AllocationFamily::Ipv4 => Family::V4,
            AllocationFamily::Keep if crate::policy::canonical(five.client.ip()).is_ipv6() => {
                Family::V6
            }
            AllocationFamily::Keep => Family::V4,
        });
        let relay = match family {
            Family::V4 => self.config.relay.v4,
            Family::V6 => self.config.relay.v6,
        };
        let (local_ip, _) = relay.ok_or(Refusal::FamilyNotSupported)?;
        let new = self.new_allocation(five, creds, tid, body.lifetime);
        if !self.config.live_peers.admits(&new.user, now.unix_secs()) {
            return Err(Refusal::DepartedPeer);
        }
        let id = self.table.insert(new, now)?;
        let local = match sockets.open(id, local_ip, body.even_port) {
            Ok(local) => local,
            Err(e) => {
                self.table.remove(id);
                return Err(Refusal::NoRelayPort(e));
            }
        };
        let public = self.config.relay.public_of(local);
        self.table.set_relay(id, local, public);
        self.config.relay.live.insert(local);
        let lifetime = self
            .table
            .get(id)
            .map_or(0, |a| now.until(a.expires).as_secs());
        debug!(client = %five.client, relay = %public, lifetime, "allocation created");
        Ok(Reply::Allocated {
            id,
            relayed: public,
            lifetime: lifetime as u32,
            declined_v6: body.additional_v6,
        })
    }

    /// What the table needs to create the allocation; the quota key is the USER part of a
    /// REST username, else the whole username.
    fn new_allocation(
        &self,
        five: &FiveTuple,
        creds: &Credentials,
        tid: TransactionId,
        requested_lifetime: Option<u32>,
    ) -> NewAllocation {
        let username = creds.username.as_str();
        let user = auth::parse_rest_username(username, self.config.separator)
            .and_then(|rest| rest.user)
            .unwrap_or(username);
        NewAllocation {
            five_tuple: *five,
            username: username.into(),
            user: user.into(),
            key: creds.key_bytes(),
            credential_expiry: creds.expiry,
            transaction_id: tid.0,
            requested_lifetime,
        }
    }

    /// RFC 8656 §7.3; LIFETIME 0 deletes.
    pub(super) fn refresh(
        &mut self,
        id: AllocId,
        body: request::Refresh,
        five: &FiveTuple,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Outcome {
        if body.lifetime == Some(0) {
            if let Some(a) = self.table.remove(id) {
                self.release_relay(id, &a, sockets);
            }
            debug!(client = %five.client, "allocation deleted by the client");
            return Ok(Reply::Refreshed { lifetime: 0 });
        }
        let granted = self.table.refresh(id, body.lifetime, now)?;
        Ok(Reply::Refreshed {
            lifetime: granted.as_secs() as u32,
        })
    }

    /// RFC 8656 §10: every peer gets a permission, or none does.
    pub(super) fn create_permission(
        &mut self,
        id: AllocId,
        peers: &[SocketAddr],
        now: Millis,
    ) -> Outcome {
        self.config.policy.sync_cluster(now.0);
        for &peer in peers {
            self.check_peer(id, peer)?;
        }
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        if !self.table.permission_room(id, &ips, now) {
            return Err(Refusal::TooManyPermissions);
        }
        for ip in ips {
            self.table.add_permission(id, ip, now)?;
        }
        Ok(Reply::Done)
    }

    /// RFC 8656 §11.2.
    pub(super) fn channel_bind(
        &mut self,
        id: AllocId,
        body: request::ChannelBind,
        now: Millis,
    ) -> Outcome {
        self.config.policy.sync_cluster(now.0);
        self.check_peer(id, body.peer)?;
        self.table.bind_channel(id, body.number, body.peer, now)?;
        Ok(Reply::Done)
    }

    /// The whole peer policy for a peer named in a request: 443 when its family differs from
    /// the relayed address's (RFC 8656 §10.2), 403 when the policy refuses it.
    fn check_peer(&self, id: AllocId, peer: SocketAddr) -> Result<(), Refusal> {
        let relay_v4 = self
            .table
            .get(id)
            .and_then(|a| a.relay_local)
            .is_some_and(|r| r.is_ipv4());
        let peer_v4 = crate::policy::canonical(peer.ip()).is_ipv4();
        if relay_v4 != peer_v4 {
            return Err(Refusal::Peer {
                peer,
                reason: PeerRefusal::FamilyMismatch,
            });
        }
        let ours = self.config.relay.ours(peer).is_some();
        match self.config.policy.check(peer, ours) {
            Verdict::Allowed => Ok(()),
            Verdict::Denied(reason) => Err(Refusal::Peer { peer, reason }),
        }
    }
}
