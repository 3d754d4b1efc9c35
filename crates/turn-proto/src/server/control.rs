//! The control path of [`Core`]: STUN requests and Send indications from clients. Rare next
//! to ChannelData, so it may allocate (usernames, nonces), but it never blocks and every refusal
//! is a STUN error response (or, for unauthenticated floods, silence).

use super::*;
use crate::auth::Authentication;
use crate::counters::{AuthFailure, PeerRefusal, QuotaScope};

/// Attributes a TURN request may carry besides its method's own (RFC 8489 §14, RFC 8656 §18).
const COMMON: &[u16] = &[
    attr::USERNAME,
    attr::USERHASH,
    attr::REALM,
    attr::NONCE,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
];

const ALLOCATE_KNOWN: &[u16] = &[
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::LIFETIME,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::REQUESTED_ADDRESS_FAMILY,
];
const REFRESH_KNOWN: &[u16] = &[attr::LIFETIME, attr::REQUESTED_ADDRESS_FAMILY];
const PERMISSION_KNOWN: &[u16] = &[attr::XOR_PEER_ADDRESS];
const CHANNEL_KNOWN: &[u16] = &[attr::XOR_PEER_ADDRESS, attr::CHANNEL_NUMBER];

/// RFC 8656 §18.7: REQUESTED-TRANSPORT value for UDP.
const PROTOCOL_UDP: u8 = 17;
/// Most peers one CreatePermission may name.
const MAX_PEERS_PER_REQUEST: usize = 16;

impl Core {
    pub(super) fn stun_from_client(
        &mut self,
        five: &FiveTuple,
        buf: &mut [u8],
        len: usize,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        let Ok(msg) = MessageRef::parse(&buf[HEADROOM..HEADROOM + len]) else {
            return Action::Nothing;
        };
        if msg.has_valid_fingerprint() == Some(false) {
            return Action::Nothing;
        }
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => {
                self.count().stun_bindings += 1;
                if signalbox_stun::binding_response(&msg, five.client, &mut self.scratch) == 0 {
                    return Action::Nothing;
                }
                self.reply(five)
            }
            (Class::Request, Method::ALLOCATE) => self.allocate(&msg, five, now, sockets),
            (Class::Request, Method::REFRESH) => self.refresh(&msg, five, now, sockets),
            (Class::Request, Method::CREATE_PERMISSION) => self.create_permission(&msg, five, now),
            (Class::Request, Method::CHANNEL_BIND) => self.channel_bind(&msg, five, now),
            (Class::Indication, Method::SEND) => {
                let Some((id, peer, start, end)) = self.send_indication(&msg, five, buf, now)
                else {
                    return Action::Nothing;
                };
                self.relay_to_peer(id, peer, buf, start, end, now)
            }
            (Class::Request, _) => {
                if !self.unauth_allowed(five.client.ip(), now) {
                    return Action::Nothing;
                }
                self.error(&msg, five, 400, "Unknown method", None)
            }
            _ => Action::Nothing,
        }
    }

    /// RFC 8656 §7.2.
    fn allocate(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        let tid = msg.transaction_id();
        if let Some(a) = self.table.by_client(five).and_then(|id| self.table.get(id)) {
            if a.transaction_id == tid.0 && !a.allocate_response.is_empty() {
                // A retransmission: the client lost our answer; give it the same one again.
                self.scratch.clear();
                self.scratch.extend_from_slice(&a.allocate_response);
                return self.reply(five);
            }
        }
        let (key, username, expiry, alg) = match self.authenticate(msg, five, now) {
            Auth::Ok {
                key,
                username,
                expiry,
                algorithm,
            } => (key, username, expiry, algorithm),
            Auth::Answered(action) => return action,
        };
        let k = Some((&key, alg));
        if self
            .config
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.refused(now, five, "Allocate", "the server is shutting down");
            return self.error(msg, five, 508, "Server Shutting Down", k);
        }
        if self.table.by_client(five).is_some() {
            self.refused(
                now,
                five,
                "Allocate",
                "the 5-tuple already has an allocation",
            );
            return self.error(msg, five, 437, "Allocation Mismatch", k);
        }
        if let Some(action) = self.unknown_attributes(msg, five, ALLOCATE_KNOWN, k) {
            return action;
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return self.error(msg, five, 400, "REQUESTED-TRANSPORT is missing", k),
            Some(v) if v.first() != Some(&PROTOCOL_UDP) => {
                self.refused(
                    now,
                    five,
                    "Allocate",
                    "a transport other than UDP was requested",
                );
                return self.error(msg, five, 442, "Unsupported Transport Protocol", k);
            }
            Some(_) => {}
        }
        let even_port = msg.get(attr::EVEN_PORT);
        let token = msg.get(attr::RESERVATION_TOKEN);
        let family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        if (even_port.is_some() || family.is_some()) && token.is_some() {
            return self.error(
                msg,
                five,
                400,
                "RESERVATION-TOKEN excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY",
                k,
            );
        }
        if token.is_some() {
            self.refused(
                now,
                five,
                "Allocate",
                "reservation tokens are not supported",
            );
            return self.error(msg, five, 508, "Reservation tokens are not supported", k);
        }
        if even_port
            .and_then(|v| v.first())
            .is_some_and(|b| b & 0x80 != 0)
        {
            self.refused(
                now,
                five,
                "Allocate",
                "reserving the next port (EVEN-PORT R) is not supported",
            );
            return self.error(msg, five, 508, "Port reservation is not supported", k);
        }
        let relay = match family.map(|v| v.first().copied()) {
            None | Some(Some(attr::FAMILY_IPV4)) => self.config.relay.v4,
            Some(Some(attr::FAMILY_IPV6)) => self.config.relay.v6,
            Some(_) => None,
        };
        let Some((local_ip, _)) = relay else {
            self.refused(
                now,
                five,
                "Allocate",
                "the requested address family has no relay address",
            );
            return self.error(msg, five, 440, "Address Family not Supported", k);
        };
        let requested_lifetime = msg.u32_attr(attr::LIFETIME).and_then(Result::ok);
        let user = match auth::parse_rest_username(&username, self.config.separator) {
            Some(rest) => rest.user.unwrap_or(&username).to_owned(),
            None => username.clone(),
        };
        if !self.config.live_peers.admits(&user, now.unix_secs()) {
            self.count().auth_failures.inc(AuthFailure::DepartedPeer);
            self.refused(
                now,
                five,
                "Allocate",
                "the room peer of this credential is gone",
            );
            return self.challenge(msg, five, 401, "Credential revoked", now);
        }
        let new = NewAllocation {
            five_tuple: *five,
            username: username.into(),
            user: user.into(),
            key,
            credential_expiry: expiry,
            transaction_id: tid.0,
            requested_lifetime,
        };
        let id = match self.table.insert(new, now) {
            Ok(id) => id,
            Err(AllocError::CredentialExpired) => {
                self.count().auth_failures.inc(AuthFailure::Expired);
                self.refused(now, five, "Allocate", "the REST credential has expired");
                return self.challenge(msg, five, 401, "Credential expired", now);
            }
            Err(e) => {
                let scope = match e {
                    AllocError::TotalQuota => QuotaScope::Total,
                    AllocError::AddressQuota => QuotaScope::Address,
                    _ => QuotaScope::User,
                };
                self.count().quota_refusals.inc(scope);
                info!(client = %five.client, "Allocate refused: {e}");
                return self.error(msg, five, 486, "Allocation Quota Reached", k);
            }
        };
        let local = match sockets.open(id, local_ip, even_port.is_some()) {
            Ok(local) => local,
            Err(e) => {
                self.table.remove(id);
                info!(client = %five.client, "Allocate refused: no relay port could be bound: {e}");
                return self.error(msg, five, 508, "Insufficient Capacity", k);
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
        let mut w = MessageWriter::new(&mut self.scratch, Method::ALLOCATE, Class::Success, tid);
        w.xor_address(attr::XOR_RELAYED_ADDRESS, public)
            .u32(attr::LIFETIME, lifetime as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, five.client)
            .attr(attr::SOFTWARE, signalbox_stun::SOFTWARE_NAME.as_bytes());
        sign(&mut w, &key, alg);
        w.finish();
        self.table.set_allocate_response(id, &self.scratch);
        self.reply(five)
    }

    /// RFC 8656 §7.3; LIFETIME 0 deletes.
    fn refresh(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        let (id, key, alg) = match self.authenticate_for_allocation(msg, five, now, "Refresh") {
            Ok(v) => v,
            Err(action) => return action,
        };
        let k = Some((&key, alg));
        if let Some(action) = self.unknown_attributes(msg, five, REFRESH_KNOWN, k) {
            return action;
        }
        let requested = msg.u32_attr(attr::LIFETIME).and_then(Result::ok);
        let lifetime = if requested == Some(0) {
            if let Some(a) = self.table.remove(id) {
                self.release_relay(id, &a, sockets);
            }
            debug!(client = %five.client, "allocation deleted by the client");
            0
        } else {
            match self.table.refresh(id, requested, now) {
                Ok(d) => d.as_secs() as u32,
                Err(_) => {
                    self.count().auth_failures.inc(AuthFailure::Expired);
                    self.refused(now, five, "Refresh", "the credential has expired");
                    return self.challenge(msg, five, 401, "Credential expired", now);
                }
            }
        };
        let tid = msg.transaction_id();
        let mut w = MessageWriter::new(&mut self.scratch, Method::REFRESH, Class::Success, tid);
        w.u32(attr::LIFETIME, lifetime);
        sign(&mut w, &key, alg);
        w.finish();
        self.reply(five)
    }

    /// RFC 8656 §10: every XOR-PEER-ADDRESS gets a permission, or none does.
    fn create_permission(&mut self, msg: &MessageRef<'_>, five: &FiveTuple, now: Millis) -> Action {
        let (id, key, alg) =
            match self.authenticate_for_allocation(msg, five, now, "CreatePermission") {
                Ok(v) => v,
                Err(action) => return action,
            };
        let k = Some((&key, alg));
        if let Some(action) = self.unknown_attributes(msg, five, PERMISSION_KNOWN, k) {
            return action;
        }
        let mut peers = Vec::new();
        for peer in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            match peer {
                Ok(p) if peers.len() < MAX_PEERS_PER_REQUEST => peers.push(p),
                Ok(_) => return self.error(msg, five, 400, "Too many XOR-PEER-ADDRESS", k),
                Err(_) => return self.error(msg, five, 400, "Malformed XOR-PEER-ADDRESS", k),
            }
        }
        if peers.is_empty() {
            return self.error(msg, five, 400, "XOR-PEER-ADDRESS is missing", k);
        }
        for &peer in &peers {
            if let Some(action) = self.check_peer(msg, five, id, peer, now, "CreatePermission", k) {
                return action;
            }
        }
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        if !self.table.permission_room(id, &ips, now) {
            self.refused(
                now,
                five,
                "CreatePermission",
                "the allocation has the most permissions allowed",
            );
            return self.error(msg, five, 508, "Insufficient Capacity", k);
        }
        for ip in ips {
            if let Err(e) = self.table.add_permission(id, ip, now) {
                return self.alloc_error(msg, five, e, now, k);
            }
        }
        self.success(msg, five, Method::CREATE_PERMISSION, &key, alg)
    }

    /// RFC 8656 §11.2.
    fn channel_bind(&mut self, msg: &MessageRef<'_>, five: &FiveTuple, now: Millis) -> Action {
        let (id, key, alg) = match self.authenticate_for_allocation(msg, five, now, "ChannelBind") {
            Ok(v) => v,
            Err(action) => return action,
        };
        let k = Some((&key, alg));
        if let Some(action) = self.unknown_attributes(msg, five, CHANNEL_KNOWN, k) {
            return action;
        }
        let number = match msg.u32_attr(attr::CHANNEL_NUMBER) {
            Some(Ok(v)) => (v >> 16) as u16,
            _ => return self.error(msg, five, 400, "CHANNEL-NUMBER is missing", k),
        };
        if !(channel_data::MIN_CHANNEL..=MAX_LEGACY_CHANNEL).contains(&number) {
            self.refused(
                now,
                five,
                "ChannelBind",
                &format!("channel number 0x{number:04x} is outside 0x4000-0x7FFE"),
            );
            return self.error(msg, five, 400, "Channel number out of range", k);
        }
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Some(Ok(p)) => p,
            _ => return self.error(msg, five, 400, "XOR-PEER-ADDRESS is missing", k),
        };
        if let Some(action) = self.check_peer(msg, five, id, peer, now, "ChannelBind", k) {
            return action;
        }
        if let Err(e) = self.table.bind_channel(id, number, peer, now) {
            return self.alloc_error(msg, five, e, now, k);
        }
        self.success(msg, five, Method::CHANNEL_BIND, &key, alg)
    }

    /// RFC 8656 §11.2: a Send indication's payload, located inside `buf`. Silently dropped
    /// when anything is missing (indications get no answer).
    fn send_indication(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        buf: &[u8],
        now: Millis,
    ) -> Option<(AllocId, SocketAddr, usize, usize)> {
        let id = self.table.by_client(five)?;
        let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?;
        let data = msg.get(attr::DATA)?;
        if !self.table.has_permission(id, peer.ip(), now) {
            if self.log.take(now) {
                debug!(client = %five.client, %peer, "Send indication dropped: no permission for the peer");
            }
            return None;
        }
        if !self.table.spend(id, Direction::ToPeer, data.len(), now) {
            return None;
        }
        let start = (data.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        Some((id, peer, start, start + data.len()))
    }

    /// Authenticates a request that needs the client's existing allocation (437 without one,
    /// 441 when the username differs from the one that created it).
    fn authenticate_for_allocation(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
        what: &str,
    ) -> Result<(AllocId, [u8; 16], IntegrityAlgorithm), Action> {
        let (key, username, alg) = match self.authenticate(msg, five, now) {
            Auth::Ok {
                key,
                username,
                algorithm,
                ..
            } => (key, username, algorithm),
            Auth::Answered(action) => return Err(action),
        };
        let k = Some((&key, alg));
        let Some(id) = self.table.by_client(five) else {
            self.refused(now, five, what, "no allocation for this 5-tuple");
            return Err(self.error(msg, five, 437, "Allocation Mismatch", k));
        };
        if self.table.get(id).is_some_and(|a| *a.username != *username) {
            self.refused(
                now,
                five,
                what,
                "the username differs from the allocation's",
            );
            return Err(self.error(msg, five, 441, "Wrong Credentials", k));
        }
        Ok((id, key, alg))
    }

    /// RFC 8489 §9.2.4: long-term credentials with the REST-API username scheme.
    fn authenticate(&mut self, msg: &MessageRef<'_>, five: &FiveTuple, now: Millis) -> Auth {
        let Some(algorithm) = msg.integrity_algorithm() else {
            self.count().auth_failures.inc(AuthFailure::Missing);
            return Auth::Answered(self.challenge(msg, five, 401, "Unauthenticated", now));
        };
        let (Some(_), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            self.count().auth_failures.inc(AuthFailure::BadRequest);
            if !self.unauth_allowed(five.client.ip(), now) {
                return Auth::Answered(Action::Nothing);
            }
            return Auth::Answered(self.error(
                msg,
                five,
                400,
                "USERNAME, REALM and NONCE are required",
                None,
            ));
        };
        match self.nonces.check(
            nonce,
            five.client,
            now.unix_secs(),
            self.config.nonce_lifetime_secs,
        ) {
            NonceCheck::Valid => {}
            _ => {
                self.count().auth_failures.inc(AuthFailure::StaleNonce);
                return Auth::Answered(self.challenge(msg, five, 438, "Stale Nonce", now));
            }
        }
        if realm != self.config.realm.as_bytes() {
            return Auth::Answered(self.bad_credentials(msg, five, now, "the realm is not ours"));
        }
        let realm = self.config.realm.clone();
        match self
            .secrets
            .authenticate(msg, &realm, self.config.separator, now.unix_secs())
        {
            Authentication::Valid {
                key,
                username,
                rest,
            }
            | Authentication::Expired {
                key,
                username,
                rest,
            } => Auth::Ok {
                key,
                username: username.to_owned(),
                expiry: rest.expiry,
                algorithm,
            },
            Authentication::BadUsername => Auth::Answered(self.bad_credentials(
                msg,
                five,
                now,
                "the username is not EXPIRY or EXPIRY:USER",
            )),
            Authentication::BadIntegrity => Auth::Answered(self.bad_credentials(
                msg,
                five,
                now,
                "the message integrity does not match any secret",
            )),
        }
    }

    fn bad_credentials(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
        why: &str,
    ) -> Action {
        self.count().auth_failures.inc(AuthFailure::BadCredentials);
        self.refused(now, five, "request", why);
        self.challenge(msg, five, 401, "Unauthenticated", now)
    }

    /// A 401 or 438 with REALM and a fresh NONCE; rate-limited per source IP.
    fn challenge(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        code: u16,
        reason: &str,
        now: Millis,
    ) -> Action {
        if !self.unauth_allowed(five.client.ip(), now) {
            return Action::Nothing;
        }
        let nonce = self.nonces.mint(now.unix_secs(), five.client);
        let mut w = MessageWriter::new(
            &mut self.scratch,
            msg.method(),
            Class::Error,
            msg.transaction_id(),
        );
        w.error_code(code, reason)
            .attr(attr::REALM, self.config.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .attr(attr::SOFTWARE, signalbox_stun::SOFTWARE_NAME.as_bytes())
            .fingerprint();
        w.finish();
        self.reply(five)
    }

    /// 420 with UNKNOWN-ATTRIBUTES when the request has comprehension-required attributes
    /// neither the method nor the credentials use.
    fn unknown_attributes(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        known: &[u16],
        key: Option<(&[u8; 16], IntegrityAlgorithm)>,
    ) -> Option<Action> {
        let mut all = [0u16; 16];
        let n = COMMON.len() + known.len();
        all[..COMMON.len()].copy_from_slice(COMMON);
        all[COMMON.len()..n].copy_from_slice(known);
        let unknown = msg.unknown_comprehension_required(&all[..n]);
        if unknown.is_empty() {
            return None;
        }
        let mut w = MessageWriter::new(
            &mut self.scratch,
            msg.method(),
            Class::Error,
            msg.transaction_id(),
        );
        w.error_code(420, "Unknown Attribute")
            .unknown_attributes(&unknown);
        if let Some((k, alg)) = key {
            sign(&mut w, k, alg);
        }
        w.finish();
        Some(self.reply(five))
    }

    /// 403 when the policy forbids `peer`, 443 when its family differs from the relay's.
    #[allow(clippy::too_many_arguments)]
    fn check_peer(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        id: AllocId,
        peer: SocketAddr,
        now: Millis,
        what: &str,
        k: Option<(&[u8; 16], IntegrityAlgorithm)>,
    ) -> Option<Action> {
        let relay_v4 = self
            .table
            .get(id)
            .and_then(|a| a.relay_local)
            .is_some_and(|r| r.is_ipv4());
        let peer_v4 = crate::policy::canonical(peer.ip()).is_ipv4();
        if relay_v4 != peer_v4 {
            self.count().peer_refusals.inc(PeerRefusal::FamilyMismatch);
            self.refused(now, five, what, PeerRefusal::FamilyMismatch.describe());
            return Some(self.error(msg, five, 443, "Peer Address Family Mismatch", k));
        }
        let ours = self.config.relay.ours(peer).is_some();
        if let Verdict::Denied(reason) = self.config.policy.check(peer, ours) {
            self.count().peer_refusals.inc(reason);
            if self.log.take(now) {
                info!(client = %five.client, %peer, "{what} refused (403): {}", reason.describe());
            }
            return Some(self.error(msg, five, 403, "Forbidden", k));
        }
        None
    }

    fn alloc_error(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        e: AllocError,
        now: Millis,
        k: Option<(&[u8; 16], IntegrityAlgorithm)>,
    ) -> Action {
        self.refused(now, five, "request", &e.to_string());
        match e {
            AllocError::CredentialExpired => self.count().auth_failures.inc(AuthFailure::Expired),
            AllocError::UserQuota => self.count().quota_refusals.inc(QuotaScope::User),
            AllocError::TotalQuota => self.count().quota_refusals.inc(QuotaScope::Total),
            AllocError::AddressQuota => self.count().quota_refusals.inc(QuotaScope::Address),
            _ => {}
        }
        match e {
            AllocError::CredentialExpired => {
                self.challenge(msg, five, 401, "Credential expired", now)
            }
            AllocError::ChannelConflict => {
                self.error(msg, five, 400, "Channel already bound differently", k)
            }
            AllocError::NoAllocation => self.error(msg, five, 437, "Allocation Mismatch", k),
            AllocError::UserQuota | AllocError::TotalQuota | AllocError::AddressQuota => {
                self.error(msg, five, 486, "Allocation Quota Reached", k)
            }
            AllocError::TooManyPermissions | AllocError::TooManyChannels => {
                self.error(msg, five, 508, "Insufficient Capacity", k)
            }
        }
    }

    fn success(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        method: Method,
        key: &[u8; 16],
        alg: IntegrityAlgorithm,
    ) -> Action {
        let mut w = MessageWriter::new(
            &mut self.scratch,
            method,
            Class::Success,
            msg.transaction_id(),
        );
        sign(&mut w, key, alg);
        w.finish();
        self.reply(five)
    }

    fn error(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        code: u16,
        reason: &str,
        key: Option<(&[u8; 16], IntegrityAlgorithm)>,
    ) -> Action {
        let mut w = MessageWriter::new(
            &mut self.scratch,
            msg.method(),
            Class::Error,
            msg.transaction_id(),
        );
        w.error_code(code, reason);
        match key {
            Some((k, alg)) => sign(&mut w, k, alg),
            None => {
                w.fingerprint();
            }
        }
        w.finish();
        self.reply(five)
    }

    fn reply(&self, five: &FiveTuple) -> Action {
        if self.scratch.is_empty() {
            return Action::Nothing;
        }
        Action::Send {
            via: Via::to_client(five),
            to: five.client,
            payload: Payload::Scratch,
        }
    }

    /// Logs a per-request refusal at debug level, within the log budget.
    fn refused(&mut self, now: Millis, five: &FiveTuple, what: &str, why: &str) {
        if self.log.take(now) {
            debug!(client = %five.client, "{what} refused: {why}");
        }
    }
}

/// Integrity with the algorithm the request used (RFC 8489 §9.2.4), then FINGERPRINT.
fn sign(w: &mut MessageWriter<'_>, key: &[u8; 16], alg: IntegrityAlgorithm) {
    match alg {
        IntegrityAlgorithm::Sha1 => w.integrity(key),
        IntegrityAlgorithm::Sha256 => w.integrity_sha256(key),
    };
    w.fingerprint();
}
