//! What comes out of a [`Client`](super::Client): request outcomes ([`Event`]), peer data
//! ([`Received`]), and the errors of its three kinds of input (answers, caller requests,
//! data to frame).

use std::net::SocketAddr;
use std::time::Duration;

use signalbox_stun::{Class, Method, ParseError, TransactionId};

use super::ChannelNumber;

/// Names one request of one [`Client`](super::Client); the [`Event`] that ends it carries the same id. It
/// stays the same when the request is re-sent with credentials or a fresh nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(super) u64);

/// The outcome of a request, from [`Client::poll_event`](super::Client::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Binding success: the server-reflexive address (RFC 8489 §7.3.3).
    Mapped {
        /// The Binding request.
        request: RequestId,
        /// XOR-MAPPED-ADDRESS: this client's address as the server sees it.
        mapped: SocketAddr,
    },
    /// Allocate success (RFC 8656 §7.3).
    Allocated {
        /// The Allocate request.
        request: RequestId,
        /// XOR-RELAYED-ADDRESS: where peers send to reach this client.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS, when the server sent one.
        mapped: Option<SocketAddr>,
        /// How long the allocation lives unless refreshed.
        lifetime: Duration,
    },
    /// Refresh success (RFC 8656 §7.5); a zero lifetime means the allocation is gone.
    Refreshed {
        /// The Refresh request.
        request: RequestId,
        /// The allocation's new lifetime.
        lifetime: Duration,
    },
    /// CreatePermission success (RFC 8656 §9.3): the peers' IPs may now send to the client.
    PermissionCreated {
        /// The CreatePermission request.
        request: RequestId,
    },
    /// ChannelBind success (RFC 8656 §11.3): `channel` now carries data to and from `peer`.
    ChannelBound {
        /// The ChannelBind request.
        request: RequestId,
        /// The bound channel.
        channel: ChannelNumber,
        /// The peer it leads to.
        peer: SocketAddr,
    },
    /// The request ended without success.
    Failed {
        /// The request.
        request: RequestId,
        /// Its method (for messages such as "Allocate refused with 486").
        method: Method,
        /// Why.
        error: RequestError,
    },
}

impl Event {
    /// The request this event ends.
    pub fn request(&self) -> RequestId {
        match self {
            Event::Mapped { request, .. }
            | Event::Allocated { request, .. }
            | Event::Refreshed { request, .. }
            | Event::PermissionCreated { request }
            | Event::ChannelBound { request, .. }
            | Event::Failed { request, .. } => *request,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An error response: the server's code and reason phrase (RFC 8489 §14.8). A 401 after
    /// signing means wrong or expired credentials; a 438 means the nonce stayed stale through
    /// [`MAX_STALE_RETRIES`](super::MAX_STALE_RETRIES) fresh ones.
    #[error("refused with {code} {reason}")]
    Refused {
        /// The ERROR-CODE number (300–699).
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// No answer came in time.
    #[error("no answer after {sends} transmission(s)")]
    TimedOut {
        /// How often the request was sent.
        sends: u32,
    },
    /// Answers came, but none passed the MESSAGE-INTEGRITY check (RFC 8489 §9.2.5).
    #[error("every answer failed its MESSAGE-INTEGRITY check")]
    IntegrityViolated,
    /// A 401 without a usable REALM and NONCE, so the request cannot be signed.
    #[error("the 401 challenge has {0}")]
    BadChallenge(&'static str),
    /// A success response without an attribute the method requires.
    #[error("the success response lacks {0}")]
    IncompleteResponse(&'static str),
}

impl RequestError {
    /// The STUN error code a [`RequestError::Refused`] carries.
    pub fn code(&self) -> Option<u16> {
        match self {
            RequestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What [`Client::handle_input`](super::Client::handle_input) made of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A response to one of this client's requests. It ended the request (its [`Event`] is
    /// queued for [`Client::poll_event`](super::Client::poll_event)) or sent it again (challenge, stale nonce).
    Response,
    /// Application data from a peer.
    Data(PeerData<'a>),
}

/// Application data relayed from a peer: a Data indication (RFC 8656 §11.6) or ChannelData
/// (§12.6), borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerData<'a> {
    /// The peer that sent it.
    pub peer: SocketAddr,
    /// The channel it came on; `None` for a Data indication.
    pub channel: Option<ChannelNumber>,
    /// The application data, without padding.
    pub data: &'a [u8],
}

/// Why [`Client::handle_input`](super::Client::handle_input) could not use a message. Nothing changed in the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Zero bytes.
    #[error("empty input")]
    Empty,
    /// The first two bits are neither STUN's `00` nor ChannelData's `01` (RFC 7983).
    #[error("data starting with 0x{0:02x} is neither STUN nor ChannelData")]
    NotStunOrChannelData(u8),
    /// Not a well-formed STUN message.
    #[error("malformed STUN message: {0}")]
    Malformed(#[from] ParseError),
    /// FINGERPRINT present and wrong (RFC 8489 §7.3): not a STUN message after all.
    #[error("the FINGERPRINT does not match")]
    BadFingerprint,
    /// A message a TURN server does not send to a client, or a response whose method is not
    /// its request's.
    #[error("unexpected {class:?} for method 0x{:03x} from the server", .method.0)]
    Unexpected {
        /// The message's method.
        method: Method,
        /// The message's class.
        class: Class,
    },
    /// A response to no request in flight: late, duplicated, or for someone else.
    #[error("no request in flight has transaction id {0:02x?}")]
    UnknownTransaction(TransactionId),
    /// A success response to a signed request whose MESSAGE-INTEGRITY is missing or does not
    /// match the key; discarded (over a stream this also ends the request, RFC 8489 §9.2.5).
    #[error("a response failed its MESSAGE-INTEGRITY check and was discarded")]
    IntegrityMismatch,
    /// A Data indication without a usable XOR-PEER-ADDRESS or DATA (RFC 8656 §11.6).
    #[error("a Data indication without a valid {0}")]
    IncompleteDataIndication(&'static str),
    /// ChannelData outside the channel range or shorter than its length field (§12.4).
    #[error("malformed ChannelData")]
    BadChannelData,
    /// ChannelData on a channel this client has not bound.
    #[error("ChannelData on channel 0x{0:04x}, which this client has not bound")]
    UnknownChannel(u16),
}

/// A request or data the client cannot build from what the caller gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// RFC 8489 §14.3: a USERNAME is 1 to 512 bytes here.
    #[error("a username of {0} bytes (1 to 512 are allowed)")]
    BadUsernameLength(usize),
    /// RFC 8656 §9.1: a CreatePermission names at least one peer.
    #[error("a CreatePermission needs at least one peer")]
    NoPeers,
    /// More peers than [`MAX_PEERS_PER_PERMISSION`](super::MAX_PEERS_PER_PERMISSION) in one CreatePermission.
    #[error("{0} peers in one CreatePermission (at most 64)")]
    TooManyPeers(usize),
    /// Application data that does not fit one message.
    #[error("{0} bytes of data do not fit one message")]
    TooLong(usize),
    /// [`Client::channel_data`](super::Client::channel_data) to a peer without a bound channel.
    #[error("no channel is bound to {0}")]
    NoChannel(SocketAddr),
}
