//! A TURN client (RFC 8656 on RFC 8489 STUN) with no IO: the caller owns the socket and the
//! clock, the client builds the bytes to send and reads the bytes that came back.
//!
//! One [`Client`] speaks for one client transport address to one server (a UDP socket, or one
//! TCP/TLS connection). It is what the start-up self-test, the benchmark and the integration
//! tests use, so they all exercise the server the same way.
//!
//! # Driving it
//! ```text
//! let mut client = Client::new(Config::new(credentials, Transport::Udp, seed));
//! let request = client.allocate(AllocateOptions::default());
//! loop {
//!     while let Some(bytes) = client.poll_transmit(now) { send bytes to the server }
//!     wait for bytes from the server, at most until client.poll_timeout()
//!     match client.handle_input(bytes) {
//!         Ok(Received::Data(data)) => application data from data.peer,
//!         Ok(Received::Response) => {} // see poll_event
//!         Err(e) => a stray or broken message, described by e; nothing changed
//!     }
//!     client.handle_timeout(now);
//!     while let Some(event) = client.poll_event() { event.request() names the request }
//! }
//! ```
//! Requests ([`Client::allocate`], [`Client::refresh`], [`Client::create_permission`],
//! [`Client::channel_bind`], [`Client::binding`]) return a [`RequestId`] at once; the outcome
//! arrives later as one [`Event`] naming it. Time (`now`) and the randomness of transaction
//! ids ([`Config::new`]'s `seed`) are passed in, so a test can drive a client against the
//! server core in memory with virtual time.
//!
//! # Long-term credentials (RFC 8489 §9.2)
//! Until the server has challenged it, the client sends requests without credentials. A 401
//! carrying REALM and NONCE gives it the realm, the nonce and so the key
//! ([`crate::auth::long_term_key`]); the request is sent again, as a new transaction, with
//! USERNAME, REALM, NONCE and MESSAGE-INTEGRITY, and every later request is signed the same
//! way. A 438 (stale nonce) brings a fresh NONCE and the request is signed again with it, up
//! to [`MAX_STALE_RETRIES`] times in a row. A 401 to a signed request means the credentials
//! are wrong: the request fails with that 401 and is not retried.
//!
//! Success responses to signed requests must carry a MESSAGE-INTEGRITY that matches the key
//! (§9.2.5); one that does not is discarded as if never received. Error responses are taken
//! without integrity: a server answers some refusals (the challenges themselves, 437 for a
//! 5-tuple without allocation) before it has authenticated the request and cannot sign them,
//! and a forged refusal can only make a request fail, which whoever can forge packets on the
//! path can do by dropping them.
//!
//! # Retransmission (RFC 8489 §6.2)
//! Over UDP a request is sent again after RTO, 2·RTO, 4·RTO … until it has been sent
//! `max_sends` times (Rc), then waited for `last_wait`·RTO more (Rm) before it times out. Over
//! a stream it is sent once and times out after `stream_timeout` (Ti, 39.5 s).
//!
//! # Data
//! [`Client::send_indication`] and [`Client::channel_data`] frame application data for a
//! peer into a buffer the caller reuses; [`frame_channel_data`] does the same for callers that
//! manage channel numbers themselves. Received Data indications and ChannelData come back from
//! [`Client::handle_input`] as [`PeerData`] borrowing the input: nothing on the data path
//! allocates.
//!
//! # Not done
//! No automatic refresh of allocations, permissions (5 min) or channels (10 min): the caller
//! refreshes what it keeps longer. Only the MD5 long-term key with MESSAGE-INTEGRITY (no
//! PASSWORD-ALGORITHMS negotiation, no USERHASH), only UDP relaying (no RFC 6062), and Data
//! indications from peers without a permission are not filtered out.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use signalbox_stun::channel_data;
use signalbox_stun::{
    attr, Class, Integrity, MessageRef, MessageWriter, Method, ParseError, TransactionId,
};

use crate::auth::long_term_key;

mod config;
mod events;

pub use config::{AddressFamily, AllocateOptions, ChannelNumber, Config, Credentials, Transport};
pub use events::{Event, InputError, PeerData, Received, RequestError, RequestId, UsageError};

/// How many 438 (Stale Nonce) answers in a row one request is re-signed for before it fails.
pub const MAX_STALE_RETRIES: u8 = 3;
/// Most XOR-PEER-ADDRESSes one CreatePermission carries (a server may accept fewer).
pub const MAX_PEERS_PER_PERMISSION: usize = 64;
/// RFC 8489 §14.9–14.10: REALM and NONCE are under 128 characters, at most 763 bytes.
const MAX_REALM_OR_NONCE: usize = 763;
/// RFC 8656 §18.8: REQUESTED-TRANSPORT protocol number for UDP, then three reserved bytes.
const UDP_TRANSPORT: [u8; 4] = [17, 0, 0, 0];

/// One TURN client: credentials, requests in flight, the allocation's relayed address and
/// bound channels. See the module notes for how to drive it.
pub struct Client {
    config: Config,
    /// Realm, nonce and key once the server has challenged us.
    auth: Option<Auth>,
    ids: TransactionIds,
    next_request: u64,
    transactions: Vec<Transaction>,
    events: VecDeque<Event>,
    relayed: Option<SocketAddr>,
    channels: Vec<(ChannelNumber, SocketAddr)>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("credentials", &self.config.credentials)
            .field("transport", &self.config.transport)
            .field("authenticated", &self.auth.is_some())
            .field("in_flight", &self.transactions.len())
            .field("relayed", &self.relayed)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with nothing sent yet.
    pub fn new(config: Config) -> Client {
        Client {
            ids: TransactionIds {
                seed: config.seed,
                counter: 0,
            },
            config,
            auth: None,
            next_request: 0,
            transactions: Vec::new(),
            events: VecDeque::new(),
            relayed: None,
            channels: Vec::new(),
        }
    }

    /// A Binding request (RFC 8489 §7): the answer names the client's reflexive address.
    /// Never signed.
    pub fn binding(&mut self) -> RequestId {
        self.start(Request::Binding)
    }

    /// An Allocate request for a UDP relay (RFC 8656 §7.2).
    pub fn allocate(&mut self, options: AllocateOptions) -> RequestId {
        self.start(Request::Allocate(options))
    }

    /// A Refresh request (RFC 8656 §7.4); `Duration::ZERO` deletes the allocation.
    pub fn refresh(&mut self, lifetime: Duration) -> RequestId {
        self.start(Request::Refresh(lifetime))
    }

    /// A CreatePermission request for the IPs of `peers` (RFC 8656 §9.1).
    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<RequestId, UsageError> {
        match peers.len() {
            0 => Err(UsageError::NoPeers),
            n if n > MAX_PEERS_PER_PERMISSION => Err(UsageError::TooManyPeers(n)),
            _ => Ok(self.start(Request::CreatePermission(peers.to_vec()))),
        }
    }

    /// A ChannelBind request (RFC 8656 §11.1): `channel` to `peer`, which also installs or
    /// refreshes the permission for the peer's IP.
    pub fn channel_bind(&mut self, channel: ChannelNumber, peer: SocketAddr) -> RequestId {
        self.start(Request::ChannelBind { channel, peer })
    }

    /// The next message to send, if one is due at `now`: a new request, or a UDP
    /// retransmission whose timeout has passed. Call until `None` after every request and
    /// input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        let max_sends = self.config.max_sends();
        let i = self.transactions.iter().position(|t| match t.next {
            None => true,
            Some(at) => t.sends < max_sends && at <= now,
        })?;
        let wait = self.config.wait_after(self.transactions[i].sends + 1);
        let t = &mut self.transactions[i];
        t.sends += 1;
        t.next = Some(now + wait);
        Some(&t.bytes)
    }

    /// When [`Client::handle_timeout`] (or, for a retransmission, [`Client::poll_transmit`])
    /// next has something to do; `None` with no request in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions.iter().filter_map(|t| t.next).min()
    }

    /// Ends the requests whose last wait has passed at `now` ([`RequestError::TimedOut`], or
    /// [`RequestError::IntegrityViolated`] when only forged answers came).
    pub fn handle_timeout(&mut self, now: Instant) {
        let max_sends = self.config.max_sends();
        let mut i = 0;
        while i < self.transactions.len() {
            let t = &self.transactions[i];
            match t.next {
                Some(at) if t.sends >= max_sends && at <= now => {
                    let error = if t.discarded {
                        RequestError::IntegrityViolated
                    } else {
                        RequestError::TimedOut { sends: t.sends }
                    };
                    self.fail(i, error);
                }
                _ => i += 1,
            }
        }
    }

    /// The next outcome of a request, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Reads one message from the server: one UDP datagram, or one frame of a stream.
    pub fn handle_input<'a>(&mut self, bytes: &'a [u8]) -> Result<Received<'a>, InputError> {
        match bytes.first().map(|b| b >> 6) {
            None => Err(InputError::Empty),
            Some(0) => self.stun(bytes),
            Some(1) => self.channel_input(bytes).map(Received::Data),
            Some(_) => Err(InputError::NotStunOrChannelData(bytes[0])),
        }
    }

    /// Writes a Send indication carrying `data` to `peer` (RFC 8656 §11.2) into `out` and
    /// returns its length. The server drops it unless the peer's IP has a permission.
    pub fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, UsageError> {
        let tid = self.ids.next();
        let mut w = MessageWriter::new(out, Method::SEND, Class::Indication, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        match w.finish() {
            0 => Err(UsageError::TooLong(data.len())),
            n => Ok(n),
        }
    }

    /// Writes ChannelData carrying `data` on the channel bound to `peer` (RFC 8656 §12.4),
    /// padded for a stream, into `out` and returns its length.
    pub fn channel_data(
        &self,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, UsageError> {
        let channel = self.channel_to(peer).ok_or(UsageError::NoChannel(peer))?;
        frame_channel_data(channel, data, self.config.transport, out)
    }

    /// The relayed address of the live allocation, if there is one.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// The channel bound to `peer`, if any.
    pub fn channel_to(&self, peer: SocketAddr) -> Option<ChannelNumber> {
        self.channels
            .iter()
            .find(|(_, p)| *p == peer)
            .map(|(c, _)| *c)
    }

    /// Whether a request is waiting for its answer (or to be sent).
    pub fn has_requests_in_flight(&self) -> bool {
        !self.transactions.is_empty()
    }

    /// The credentials the client signs with.
    pub fn credentials(&self) -> &Credentials {
        &self.config.credentials
    }

    /// The realm the server announced in its challenge; `None` before the first 401.
    pub fn realm(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.realm.as_str())
    }

    fn start(&mut self, request: Request) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let mut t = Transaction {
            request_id: id,
            tid: TransactionId([0; 12]),
            request,
            signed: false,
            bytes: Vec::new(),
            sends: 0,
            next: None,
            stale_retries: 0,
            discarded: false,
        };
        self.build(&mut t);
        self.transactions.push(t);
        id
    }

    /// (Re)writes the request as a new transaction, signed once credentials are known.
    fn build(&mut self, t: &mut Transaction) {
        t.tid = self.ids.next();
        t.sends = 0;
        t.next = None;
        t.discarded = false;
        let mut w = MessageWriter::new(&mut t.bytes, t.request.method(), Class::Request, t.tid);
        match &t.request {
            Request::Binding => {}
            Request::Allocate(options) => {
                w.attr(attr::REQUESTED_TRANSPORT, &UDP_TRANSPORT);
                if let Some(lifetime) = options.lifetime {
                    w.u32(attr::LIFETIME, seconds(lifetime));
                }
                match options.family {
                    Some(AddressFamily::V4) => w.attr(
                        attr::REQUESTED_ADDRESS_FAMILY,
                        &[attr::FAMILY_IPV4, 0, 0, 0],
                    ),
                    Some(AddressFamily::V6) => w.attr(
                        attr::REQUESTED_ADDRESS_FAMILY,
                        &[attr::FAMILY_IPV6, 0, 0, 0],
                    ),
                    None => &mut w,
                };
            }
            Request::Refresh(lifetime) => {
                w.u32(attr::LIFETIME, seconds(*lifetime));
            }
            Request::CreatePermission(peers) => {
                for peer in peers {
                    w.xor_address(attr::XOR_PEER_ADDRESS, *peer);
                }
            }
            Request::ChannelBind { channel, peer } => {
                // RFC 8656 §18.1: the number, then two reserved bytes.
                w.u32(attr::CHANNEL_NUMBER, u32::from(channel.0) << 16)
                    .xor_address(attr::XOR_PEER_ADDRESS, *peer);
            }
        }
        t.signed = false;
        if let (Some(auth), true) = (&self.auth, t.request.can_be_signed()) {
            w.attr(attr::USERNAME, self.config.credentials.username.as_bytes())
                .attr(attr::REALM, auth.realm.as_bytes())
                .attr(attr::NONCE, &auth.nonce)
                .integrity(&auth.key);
            t.signed = true;
        }
        w.fingerprint();
        // Usernames, realms, nonces and peer lists are bounded far below the 64 KiB a
        // message can hold, so the writer cannot overflow.
        let written = w.finish();
        debug_assert!(written > 0, "a request fits one message");
    }

    fn stun<'a>(&mut self, bytes: &'a [u8]) -> Result<Received<'a>, InputError> {
        let msg = MessageRef::parse(bytes)?;
        if msg.has_valid_fingerprint() == Some(false) {
            return Err(InputError::BadFingerprint);
        }
        match (msg.class(), msg.method()) {
            (Class::Indication, Method::DATA) => data_indication(&msg).map(Received::Data),
            (Class::Success | Class::Error, _) => self.response(&msg).map(|()| Received::Response),
            (class, method) => Err(InputError::Unexpected { method, class }),
        }
    }

    fn response(&mut self, msg: &MessageRef<'_>) -> Result<(), InputError> {
        let tid = msg.transaction_id();
        let i = self
            .transactions
            .iter()
            .position(|t| t.tid == tid && t.sends > 0)
            .ok_or(InputError::UnknownTransaction(tid))?;
        if msg.method() != self.transactions[i].request.method() {
            return Err(InputError::Unexpected {
                method: msg.method(),
                class: msg.class(),
            });
        }
        if msg.class() == Class::Error {
            return self.error_response(i, msg);
        }
        if self.transactions[i].signed && !self.integrity_ok(msg) {
            return Err(self.discard(i));
        }
        match self.transactions[i].request.success(msg) {
            Ok(outcome) => self.succeed(i, outcome),
            Err(error) => self.fail(i, error),
        }
        Ok(())
    }

    /// RFC 8489 §9.2.5 and RFC 8656 §7.3: challenges, stale nonces and refusals.
    fn error_response(&mut self, i: usize, msg: &MessageRef<'_>) -> Result<(), InputError> {
        let (code, reason) = match msg.error_code() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(InputError::Malformed(e)),
            None => return Err(InputError::Malformed(ParseError::BadErrorCode)),
        };
        let signed = self.transactions[i].signed;
        let refused = RequestError::Refused {
            code,
            reason: reason.to_owned(),
        };
        match code {
            401 if !signed && self.transactions[i].request.can_be_signed() => {
                match self.learn_challenge(msg, true) {
                    Ok(()) => self.resend(i),
                    Err(why) => self.fail(i, RequestError::BadChallenge(why)),
                }
            }
            438 if signed && self.transactions[i].stale_retries < MAX_STALE_RETRIES => {
                match self.learn_challenge(msg, false) {
                    Ok(()) => {
                        self.transactions[i].stale_retries += 1;
                        self.resend(i);
                    }
                    Err(_) => self.fail(i, refused),
                }
            }
            401 => {
                // Wrong credentials: keep the fresh nonce for later requests, do not retry.
                let _ = self.learn_challenge(msg, false);
                self.fail(i, refused);
            }
            _ => {
                if signed && msg.integrity_algorithm().is_some() && !self.integrity_ok(msg) {
                    return Err(self.discard(i));
                }
                self.fail(i, refused);
            }
        }
        Ok(())
    }

    /// Takes REALM (required when `need_realm`, else optional) and NONCE from a 401 or 438.
    fn learn_challenge(
        &mut self,
        msg: &MessageRef<'_>,
        need_realm: bool,
    ) -> Result<(), &'static str> {
        let nonce = msg.get(attr::NONCE).ok_or("no NONCE")?;
        if nonce.is_empty() || nonce.len() > MAX_REALM_OR_NONCE {
            return Err("a NONCE of a length RFC 8489 does not allow");
        }
        let realm = match (msg.get(attr::REALM), &self.auth) {
            (Some(realm), _) => {
                let realm = std::str::from_utf8(realm).map_err(|_| "a REALM that is not UTF-8")?;
                if realm.len() > MAX_REALM_OR_NONCE {
                    return Err("a REALM longer than RFC 8489 allows");
                }
                realm.to_owned()
            }
            (None, Some(auth)) if !need_realm => auth.realm.clone(),
            (None, _) => return Err("no REALM"),
        };
        let c = &self.config.credentials;
        let key = long_term_key(&c.username, &realm, &c.password);
        self.auth = Some(Auth {
            realm,
            nonce: nonce.to_vec(),
            key,
        });
        Ok(())
    }

    /// The request again, as a new transaction with the current credentials.
    fn resend(&mut self, i: usize) {
        let mut t = self.transactions.swap_remove(i);
        self.build(&mut t);
        self.transactions.push(t);
    }

    fn integrity_ok(&self, msg: &MessageRef<'_>) -> bool {
        self.auth
            .as_ref()
            .is_some_and(|a| msg.verify_integrity(&a.key) == Integrity::Ok)
    }

    /// Drops a response that failed the integrity check. Over UDP the request keeps waiting
    /// (a genuine answer may follow); over a stream it ends (RFC 8489 §9.2.5).
    fn discard(&mut self, i: usize) -> InputError {
        match self.config.transport {
            Transport::Udp => self.transactions[i].discarded = true,
            Transport::Stream => self.fail(i, RequestError::IntegrityViolated),
        }
        InputError::IntegrityMismatch
    }

    fn succeed(&mut self, i: usize, outcome: Outcome) {
        let t = self.transactions.swap_remove(i);
        let request = t.request_id;
        let event = match outcome {
            Outcome::Mapped(mapped) => Event::Mapped { request, mapped },
            Outcome::Allocated {
                relayed,
                mapped,
                lifetime,
            } => {
                self.relayed = Some(relayed);
                self.channels.clear();
                Event::Allocated {
                    request,
                    relayed,
                    mapped,
                    lifetime,
                }
            }
            Outcome::Refreshed(lifetime) => {
                if lifetime.is_zero() {
                    self.relayed = None;
                    self.channels.clear();
                }
                Event::Refreshed { request, lifetime }
            }
            Outcome::Permitted => Event::PermissionCreated { request },
            Outcome::Bound { channel, peer } => {
                self.channels.retain(|(c, p)| *c != channel && *p != peer);
                self.channels.push((channel, peer));
                Event::ChannelBound {
                    request,
                    channel,
                    peer,
                }
            }
        };
        self.events.push_back(event);
    }

    fn fail(&mut self, i: usize, error: RequestError) {
        let t = self.transactions.swap_remove(i);
        self.events.push_back(Event::Failed {
            request: t.request_id,
            method: t.request.method(),
            error,
        });
    }

    /// RFC 8656 §12.6: ChannelData on a channel this client bound.
    fn channel_input<'a>(&self, bytes: &'a [u8]) -> Result<PeerData<'a>, InputError> {
        let (number, data) = channel_data::parse(bytes).ok_or(InputError::BadChannelData)?;
        let (channel, peer) = self
            .channels
            .iter()
            .find(|(c, _)| c.0 == number)
            .ok_or(InputError::UnknownChannel(number))?;
        Ok(PeerData {
            peer: *peer,
            channel: Some(*channel),
            data,
        })
    }
}

/// Writes ChannelData (RFC 8656 §12.4) carrying `data` on `channel` into `out`, padded to a
/// multiple of 4 bytes for [`Transport::Stream`] (§12.5), and returns its length. For callers
/// that keep channel numbers themselves; [`Client::channel_data`] looks the channel up.
pub fn frame_channel_data(
    channel: ChannelNumber,
    data: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Result<usize, UsageError> {
    let len = u16::try_from(data.len()).map_err(|_| UsageError::TooLong(data.len()))?;
    let mut header = [0u8; channel_data::HEADER_LEN];
    channel_data::write_header(&mut header, channel.0, len);
    out.clear();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    if transport == Transport::Stream {
        out.resize(channel_data::padded_len(data.len()), 0);
    }
    Ok(out.len())
}

/// The name of a TURN or STUN method as the RFCs write it, for messages ("Allocate refused
/// with 486 …"); `"request"` for a method this client does not send.
pub fn method_name(method: Method) -> &'static str {
    match method {
        Method::BINDING => "Binding",
        Method::ALLOCATE => "Allocate",
        Method::REFRESH => "Refresh",
        Method::SEND => "Send",
        Method::DATA => "Data",
        Method::CREATE_PERMISSION => "CreatePermission",
        Method::CHANNEL_BIND => "ChannelBind",
        _ => "request",
    }
}

/// Realm, nonce and the long-term key derived from them (RFC 8489 §9.2.2).
struct Auth {
    realm: String,
    nonce: Vec<u8>,
    key: [u8; 16],
}

/// One request in flight. `tid` changes when it is re-sent signed; `request_id` does not.
struct Transaction {
    request_id: RequestId,
    tid: TransactionId,
    request: Request,
    signed: bool,
    bytes: Vec<u8>,
    sends: u32,
    /// When it is next due (retransmission or time-out); `None` until first sent.
    next: Option<Instant>,
    stale_retries: u8,
    /// An answer failed the integrity check (UDP keeps waiting for a genuine one).
    discarded: bool,
}

/// What a request asks for, kept to rebuild it when it is re-sent with credentials.
enum Request {
    Binding,
    Allocate(AllocateOptions),
    Refresh(Duration),
    CreatePermission(Vec<SocketAddr>),
    ChannelBind {
        channel: ChannelNumber,
        peer: SocketAddr,
    },
}

/// What a success response said, before it becomes an [`Event`].
enum Outcome {
    Mapped(SocketAddr),
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
        lifetime: Duration,
    },
    Refreshed(Duration),
    Permitted,
    Bound {
        channel: ChannelNumber,
        peer: SocketAddr,
    },
}

impl Request {
    fn method(&self) -> Method {
        match self {
            Request::Binding => Method::BINDING,
            Request::Allocate(_) => Method::ALLOCATE,
            Request::Refresh(_) => Method::REFRESH,
            Request::CreatePermission(_) => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }

    /// Binding requests go without credentials (the answer reveals only our own address).
    fn can_be_signed(&self) -> bool {
        !matches!(self, Request::Binding)
    }

    /// Reads a success response to this request.
    fn success(&self, msg: &MessageRef<'_>) -> Result<Outcome, RequestError> {
        let address = |t: u16, name: &'static str| match msg.xor_address(t) {
            Some(Ok(a)) => Ok(a),
            _ => Err(RequestError::IncompleteResponse(name)),
        };
        let lifetime = || match msg.u32_attr(attr::LIFETIME) {
            Some(Ok(secs)) => Ok(Duration::from_secs(u64::from(secs))),
            _ => Err(RequestError::IncompleteResponse("LIFETIME")),
        };
        Ok(match self {
            Request::Binding => {
                Outcome::Mapped(address(attr::XOR_MAPPED_ADDRESS, "XOR-MAPPED-ADDRESS")?)
            }
            Request::Allocate(_) => Outcome::Allocated {
                relayed: address(attr::XOR_RELAYED_ADDRESS, "XOR-RELAYED-ADDRESS")?,
                mapped: msg
                    .xor_address(attr::XOR_MAPPED_ADDRESS)
                    .and_then(Result::ok),
                lifetime: lifetime()?,
            },
            Request::Refresh(_) => Outcome::Refreshed(lifetime()?),
            Request::CreatePermission(_) => Outcome::Permitted,
            Request::ChannelBind { channel, peer } => Outcome::Bound {
                channel: *channel,
                peer: *peer,
            },
        })
    }
}

/// RFC 8656 §11.6: a Data indication must carry XOR-PEER-ADDRESS and DATA.
fn data_indication<'a>(msg: &MessageRef<'a>) -> Result<PeerData<'a>, InputError> {
    let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
        Some(Ok(peer)) => peer,
        _ => return Err(InputError::IncompleteDataIndication("XOR-PEER-ADDRESS")),
    };
    let data = msg
        .get(attr::DATA)
        .ok_or(InputError::IncompleteDataIndication("DATA"))?;
    Ok(PeerData {
        peer,
        channel: None,
        data,
    })
}

/// LIFETIME is whole seconds in 32 bits.
fn seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Transaction ids: the first 12 bytes of SHA-256(seed ‖ counter). Unique per client (the
/// counter never repeats), unpredictable to anyone without the seed (RFC 8489 §5).
struct TransactionIds {
    seed: [u8; 32],
    counter: u64,
}

impl TransactionIds {
    fn next(&mut self) -> TransactionId {
        self.counter += 1;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.seed);
        ctx.update(&self.counter.to_be_bytes());
        let digest = ctx.finish();
        let mut id = [0u8; 12];
        id.copy_from_slice(&digest.as_ref()[..12]);
        TransactionId(id)
    }
}

#[cfg(test)]
mod tests;
