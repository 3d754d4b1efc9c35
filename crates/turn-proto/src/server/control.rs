//! The control path of [`Core`]: STUN requests and Send indications from clients. Rare next
//! to ChannelData, so it may allocate (usernames, permission lists), but it never blocks and
//! every refusal is a STUN error response or, for unauthenticated floods, silence.
//!
//! Every request takes one flow (firezone's relay `handle_client_message` is the model):
//! 1. decode it into a typed [`Request`] (`request.rs`);
//! 2. run the checks in the order of RFC 8489 §6.3 and §9.2.4: a retransmitted Allocate is
//!    answered again before anything else (it needs no credentials), then authentication
//!    (401, 438), then the allocation the method needs (437, 441), then the decoded body's
//!    refusal if it had one (420, 400, …), then the method's own rules (`handlers.rs`); each
//!    step returns `Result<_, Refusal>`;
//! 3. [`Core::answer`] turns the outcome into bytes. It is the one place that rate-limits
//!    unauthenticated answers, counts and logs refusals (within the log budget), and signs
//!    with the request's key or seals with a challenge.

use super::outcome::{BadCredentials, Counted, Loudness, Refusal, Reply, Seal};
use super::request::{self, Request, TurnRequest};
use super::*;
use crate::auth::Authentication;

/// RFC 8656 ADDRESS-ERROR-CODE for an IPv6 address not added to an allocation: family
/// IPv6, class 4, number 40 (440 Address Family not Supported), then the reason phrase.
const ADDRESS_ERROR_440_V6: [u8; 32] = *b"\x02\x00\x04\x28Address Family not Supported";

/// The client's address as XOR-MAPPED-ADDRESS reports it: an IPv4 client of a dual-stack
/// `[::]` stream listener arrives as `::ffff:a.b.c.d`, and its reflexive address is IPv4.
fn reflexive(client: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::policy::canonical(client.ip()), client.port())
}

/// The long-term key a request verified with, and its algorithm: what signs the answer.
#[derive(Clone, Copy)]
pub(super) struct Key {
    bytes: [u8; 16],
    algorithm: IntegrityAlgorithm,
}

/// Who sent an authenticated request.
pub(super) struct Credentials {
    pub(super) key: Key,
    pub(super) username: String,
    /// REST expiry of the credential, Unix seconds.
    pub(super) expiry: u64,
}

impl Credentials {
    /// The long-term key's bytes (stored with an allocation).
    pub(super) fn key_bytes(&self) -> [u8; 16] {
        self.key.bytes
    }
}

/// What a request comes to.
pub(super) type Outcome = Result<Reply, Refusal>;

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
        match msg.class() {
            Class::Request => self.request(&msg, five, now, sockets),
            Class::Indication => match request::decode_send(&msg, buf) {
                Some(send) => self.send_indication(five, send, buf, now),
                None => Action::Nothing,
            },
            Class::Success | Class::Error => Action::Nothing,
        }
    }

    /// One request, decoded, checked, handled and answered.
    fn request(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> Action {
        let (key, outcome) = match request::decode(msg) {
            Request::Binding => (None, Ok(Reply::Binding)),
            Request::Unknown => (None, Err(Refusal::UnknownMethod)),
            Request::Turn(turn) => self.turn(msg, turn, five, now, sockets),
        };
        self.answer(msg, five, key, outcome, now)
    }

    /// A TURN method: the key to sign with (once authenticated) and the outcome.
    fn turn(
        &mut self,
        msg: &MessageRef<'_>,
        request: TurnRequest,
        five: &FiveTuple,
        now: Millis,
        sockets: &mut impl RelaySockets,
    ) -> (Option<Key>, Outcome) {
        if let TurnRequest::Allocate(_) = request {
            if let Some(id) = self.retransmission(msg, five) {
                return (None, Ok(Reply::Retransmission(id)));
            }
        }
        let creds = match self.authenticate(msg, five, now) {
            Ok(creds) => creds,
            Err(refusal) => return (None, Err(refusal)),
        };
        let tid = msg.transaction_id();
        let outcome = match request {
            TurnRequest::Allocate(body) => self.allocate(body, &creds, five, tid, now, sockets),
            TurnRequest::Refresh(body) => self
                .allocation_of(five, &creds)
                .and_then(|id| self.refresh(id, body?, five, now, sockets)),
            TurnRequest::CreatePermission(body) => self
                .allocation_of(five, &creds)
                .and_then(|id| self.create_permission(id, &body?, now)),
            TurnRequest::ChannelBind(body) => self
                .allocation_of(five, &creds)
                .and_then(|id| self.channel_bind(id, body?, now)),
        };
        (Some(creds.key), outcome)
    }

    /// RFC 8656 §7.2: an Allocate the client sent again because our answer was lost.
    fn retransmission(&self, msg: &MessageRef<'_>, five: &FiveTuple) -> Option<AllocId> {
        let id = self.table.by_client(five)?;
        let a = self.table.get(id)?;
        (a.transaction_id == msg.transaction_id().0 && !a.allocate_response.is_empty())
            .then_some(id)
    }

    /// RFC 8489 §9.2.4: long-term credentials with the REST-API username scheme. An expired
    /// REST credential authenticates here; whether it may still act is the method's rule.
    fn authenticate(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        now: Millis,
    ) -> Result<Credentials, Refusal> {
        let algorithm = msg.integrity_algorithm().ok_or(Refusal::Unauthenticated)?;
        let (Some(_), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(Refusal::IncompleteCredentials);
        };
        let secs = now.unix_secs();
        let lifetime = self.config.nonce_lifetime_secs;
        if self.nonces.check(nonce, five.client, secs, lifetime) != NonceCheck::Valid {
            return Err(Refusal::StaleNonce);
        }
        if realm != self.config.realm.as_bytes() {
            return Err(Refusal::BadCredentials(BadCredentials::Realm));
        }
        let verdict =
            self.secrets
                .authenticate(msg, &self.config.realm, self.config.separator, secs);
        match verdict {
            Authentication::Valid {
                key,
                username,
                rest,
            }
            | Authentication::Expired {
                key,
                username,
                rest,
            } => Ok(Credentials {
                key: Key {
                    bytes: key,
                    algorithm,
                },
                username: username.to_owned(),
                expiry: rest.expiry,
            }),
            Authentication::BadUsername => Err(Refusal::BadCredentials(BadCredentials::Username)),
            Authentication::BadIntegrity => Err(Refusal::BadCredentials(BadCredentials::Integrity)),
        }
    }

    /// The allocation of `five`, made by the same username (RFC 8656 §7: 437 without one,
    /// 441 for other credentials).
    fn allocation_of(&self, five: &FiveTuple, creds: &Credentials) -> Result<AllocId, Refusal> {
        let id = self.table.by_client(five).ok_or(Refusal::NoAllocation)?;
        if self
            .table
            .get(id)
            .is_some_and(|a| *a.username != *creds.username)
        {
            return Err(Refusal::WrongCredentials);
        }
        Ok(id)
    }

    /// The one place an outcome becomes an answer: a refusal is counted and logged, an
    /// unauthenticated answer passes the per-source limiter (silence beyond it), and the
    /// answer is signed with the request's key, sealed with a challenge, or carries
    /// FINGERPRINT only.
    fn answer(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        key: Option<Key>,
        outcome: Outcome,
        now: Millis,
    ) -> Action {
        let limited = match &outcome {
            Ok(Reply::Binding) => self.binding_is_limited(five),
            Ok(_) => false,
            Err(refusal) => {
                self.account(msg, five, refusal, now);
                refusal.seal() != Seal::Signed
            }
        };
        if limited && !self.unauth_allowed(five.client.ip(), now) {
            return Action::Nothing;
        }
        match outcome {
            Ok(reply) => self.write_reply(msg, five, key, reply),
            Err(refusal) => self.write_refusal(msg, five, key, &refusal, now),
        }
        self.reply(five)
    }

    /// Binding requests over UDP are answered within the unauthenticated-answer limiter: a
    /// spoofed source would otherwise turn the server into a reflector (a response is about
    /// three times the request). Over TCP and TLS the handshake proves the source and the
    /// connection caps bound the rate; a UDP 5-tuple that holds an allocation proved its
    /// address to get it (the nonce was bound to it), so its keepalives are not limited.
    fn binding_is_limited(&self, five: &FiveTuple) -> bool {
        five.transport == Transport::Udp && self.table.by_client(five).is_none()
    }

    /// Whether `ip` may get another unauthenticated answer now; counts a refusal.
    fn unauth_allowed(&mut self, ip: IpAddr, now: Millis) -> bool {
        let allowed = self
            .unauth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(ip, now.0);
        if !allowed {
            self.count().rate_limited += 1;
        }
        allowed
    }

    /// Counts a refusal under its label and logs it within the log budget.
    fn account(&mut self, msg: &MessageRef<'_>, five: &FiveTuple, refusal: &Refusal, now: Millis) {
        let counters = self.count();
        match refusal.counted() {
            Some(Counted::Auth(reason)) => counters.auth_failures.inc(reason),
            Some(Counted::Peer(reason)) => counters.peer_refusals.inc(reason),
            Some(Counted::Quota(scope)) => counters.quota_refusals.inc(scope),
            None => {}
        }
        let loudness = refusal.loudness();
        if loudness == Loudness::Quiet || !self.log.take(now) {
            return;
        }
        let method = request::method_name(msg.method());
        let code = refusal.code();
        match loudness {
            Loudness::Info => info!(client = %five.client, "{method} refused ({code}): {refusal}"),
            Loudness::Debug | Loudness::Quiet => {
                debug!(client = %five.client, "{method} refused ({code}): {refusal}")
            }
        }
    }

    fn write_reply(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        key: Option<Key>,
        reply: Reply,
    ) {
        let tid = msg.transaction_id();
        match reply {
            Reply::Binding => {
                let reflexive = reflexive(five.client);
                if signalbox_stun::binding_response(msg, reflexive, &mut self.scratch) > 0 {
                    self.count().stun_bindings += 1;
                }
            }
            Reply::Retransmission(id) => {
                self.scratch.clear();
                if let Some(a) = self.table.get(id) {
                    self.scratch.extend_from_slice(&a.allocate_response);
                }
            }
            Reply::Allocated {
                id,
                relayed,
                lifetime,
                declined_v6,
            } => {
                let mut w =
                    MessageWriter::new(&mut self.scratch, Method::ALLOCATE, Class::Success, tid);
                w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
                    .u32(attr::LIFETIME, lifetime)
                    .xor_address(attr::XOR_MAPPED_ADDRESS, reflexive(five.client));
                if declined_v6 {
                    w.attr(attr::ADDRESS_ERROR_CODE, &ADDRESS_ERROR_440_V6);
                }
                w.attr(attr::SOFTWARE, signalbox_stun::SOFTWARE_NAME.as_bytes());
                seal(&mut w, key);
                w.finish();
                self.table.set_allocate_response(id, &self.scratch);
            }
            Reply::Refreshed { lifetime } => {
                let mut w =
                    MessageWriter::new(&mut self.scratch, Method::REFRESH, Class::Success, tid);
                w.u32(attr::LIFETIME, lifetime);
                seal(&mut w, key);
                w.finish();
            }
            Reply::Done => {
                let mut w =
                    MessageWriter::new(&mut self.scratch, msg.method(), Class::Success, tid);
                seal(&mut w, key);
                w.finish();
            }
        }
    }

    fn write_refusal(
        &mut self,
        msg: &MessageRef<'_>,
        five: &FiveTuple,
        key: Option<Key>,
        refusal: &Refusal,
        now: Millis,
    ) {
        let tid = msg.transaction_id();
        let mut w = MessageWriter::new(&mut self.scratch, msg.method(), Class::Error, tid);
        w.error_code(refusal.code(), refusal.reason());
        if let Refusal::UnknownAttributes(types) = refusal {
            w.unknown_attributes(types);
        }
        match refusal.seal() {
            Seal::Challenge => {
                let nonce = self.nonces.mint(now.unix_secs(), five.client);
                w.attr(attr::REALM, self.config.realm.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes())
                    .attr(attr::SOFTWARE, signalbox_stun::SOFTWARE_NAME.as_bytes())
                    .fingerprint();
            }
            Seal::Signed => seal(&mut w, key),
            Seal::Plain => seal(&mut w, None),
        }
        w.finish();
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

    /// RFC 8656 §11.2: a Send indication's payload goes to its peer like ChannelData. Nothing
    /// is answered (indications get no answer); a drop for a missing permission is logged.
    fn send_indication(
        &mut self,
        five: &FiveTuple,
        send: request::Send,
        buf: &mut [u8],
        now: Millis,
    ) -> Action {
        let Some(id) = self.table.by_client(five) else {
            return Action::Nothing;
        };
        if !self.table.has_permission(id, send.peer.ip(), now) {
            if self.log.take(now) {
                debug!(client = %five.client, peer = %send.peer, "Send indication dropped: no permission for the peer");
            }
            return Action::Nothing;
        }
        self.relay_to_peer(id, send.peer, buf, send.data.start, send.data.end, now)
    }
}

/// Integrity with the algorithm the request used (RFC 8489 §9.2.4), then FINGERPRINT; only
/// FINGERPRINT without a key.
fn seal(w: &mut MessageWriter<'_>, key: Option<Key>) {
    match key {
        Some(Key {
            bytes,
            algorithm: IntegrityAlgorithm::Sha1,
        }) => {
            w.integrity(&bytes);
        }
        Some(Key {
            bytes,
            algorithm: IntegrityAlgorithm::Sha256,
        }) => {
            w.integrity_sha256(&bytes);
        }
        None => {}
    }
    w.fingerprint();
}
