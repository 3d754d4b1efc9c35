//! What a request comes to: a [`Reply`] or a [`Refusal`], as values.
//!
//! A refusal knows everything about itself that answering it needs — its STUN error code and
//! reason phrase, how the answer is sealed ([`Seal`]), which counter it moves ([`Counted`]) and
//! how loudly it is logged — so the ritual of answering (limit, count, log, write, sign) is
//! written once, in the control path's `answer`. A new rule is one more variant here.

use std::fmt;
use std::net::SocketAddr;

use signalbox_stun::attr::UnknownAttributes;

use crate::allocation::{AllocError, AllocId};
use crate::counters::{AuthFailure, PeerRefusal, QuotaScope};

/// A request's success, before it is written.
pub(super) enum Reply {
    /// RFC 8489 §3: XOR-MAPPED-ADDRESS (or 420 for unknown attributes), unsigned.
    Binding,
    /// A retransmitted Allocate: the answer stored with the allocation, byte for byte.
    Retransmission(AllocId),
    /// RFC 8656 §7.2: the new allocation's relayed address and lifetime.
    Allocated {
        id: AllocId,
        relayed: SocketAddr,
        lifetime: u32,
        /// ADDITIONAL-ADDRESS-FAMILY asked for an IPv6 address too, which this server does not
        /// add to an allocation: the success carries ADDRESS-ERROR-CODE 440 for IPv6.
        declined_v6: bool,
    },
    /// RFC 8656 §7.3: the lifetime granted (0: deleted).
    Refreshed { lifetime: u32 },
    /// CreatePermission and ChannelBind: an empty, signed success.
    Done,
}

/// How an error response is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seal {
    /// MESSAGE-INTEGRITY with the request's key, then FINGERPRINT (RFC 8489 §9.2.4): the
    /// client authenticated.
    Signed,
    /// REALM, a fresh NONCE and FINGERPRINT (RFC 8489 §9.2.4, 401 and 438): the client must
    /// (re)authenticate. An unauthenticated answer, so rate-limited per source.
    Challenge,
    /// FINGERPRINT only: no credentials to sign with. Rate-limited per source.
    Plain,
}

/// The counter family and label a refusal moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counted {
    Auth(AuthFailure),
    Peer(PeerRefusal),
    Quota(QuotaScope),
}

/// How loudly a refusal is logged (always within the core's log budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Loudness {
    /// Routine (every client's first request is challenged; nonces go stale).
    Quiet,
    /// A client's mistake.
    Debug,
    /// Something an operator may want to see: a refused peer, a full quota, no relay port.
    Info,
}

/// Why a 400 Bad Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Malformed {
    MissingTransport,
    TokenWithPortOrFamily,
    /// REQUESTED-ADDRESS-FAMILY together with ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §7.2).
    BothFamilies,
    /// ADDITIONAL-ADDRESS-FAMILY other than IPv6, its only valid value in an Allocate (RFC 8656).
    AdditionalNotIpv6,
    TooManyPeers,
    BadPeer,
    MissingPeer,
    MissingChannel,
}

/// Why a request is refused. Each variant is one rule of RFC 8489 / RFC 8656 or of this
/// server's policy.
#[derive(Debug)]
pub(super) enum Refusal {
    /// A method this server does not implement.
    UnknownMethod,
    /// No MESSAGE-INTEGRITY: every client's first request (RFC 8489 §9.2.4).
    Unauthenticated,
    /// Integrity without USERNAME, REALM or NONCE.
    IncompleteCredentials,
    /// A nonce that is not ours for this client, or too old.
    StaleNonce,
    /// Credentials that do not verify.
    BadCredentials(BadCredentials),
    /// A REST credential past its expiry.
    CredentialExpired,
    /// Credentials minted for a room peer that has left, was removed, or whose reconnect grace
    /// ran out (see [`crate::auth::LivePeers`]).
    DepartedPeer,
    /// The server is draining before it stops.
    Draining,
    /// Allocate on a 5-tuple that already has an allocation (RFC 8656 §7.2).
    AllocationExists,
    /// A request that needs the 5-tuple's allocation, which does not exist.
    NoAllocation,
    /// A username other than the one that created the allocation (RFC 8656 §7.2, 441).
    WrongCredentials,
    /// Comprehension-required attributes this server does not know (RFC 8489 §6.3.1).
    UnknownAttributes(UnknownAttributes),
    /// A required attribute missing or malformed.
    BadRequest(Malformed),
    /// A channel number outside 0x4000–0x7FFF.
    ChannelOutOfRange(u16),
    /// REQUESTED-TRANSPORT other than UDP.
    UnsupportedTransport,
    /// RESERVATION-TOKEN: reservations are not supported.
    ReservationToken,
    /// EVEN-PORT with the R bit: reserving the next port is not supported.
    PortReservation,
    /// No relay address of the requested family (or an unknown family).
    FamilyNotSupported,
    /// The peer policy refused `peer` (403), or its family differs from the relay's (443).
    Peer {
        peer: SocketAddr,
        reason: PeerRefusal,
    },
    /// The allocation holds the most permissions allowed.
    TooManyPermissions,
    /// The allocation holds the most channels allowed.
    TooManyChannels,
    /// The channel number or the peer is bound to something else.
    ChannelConflict,
    /// A quota is full.
    Quota(QuotaScope),
    /// No relay port could be bound.
    NoRelayPort(std::io::Error),
}

/// Why credentials do not verify (all answered alike, logged apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BadCredentials {
    Realm,
    Username,
    Integrity,
}

impl Refusal {
    /// The STUN error code (RFC 8489 §14.8, RFC 8656 §19).
    pub(super) fn code(&self) -> u16 {
        match self {
            Refusal::UnknownMethod
            | Refusal::IncompleteCredentials
            | Refusal::BadRequest(_)
            | Refusal::ChannelOutOfRange(_)
            | Refusal::ChannelConflict => 400,
            Refusal::Unauthenticated
            | Refusal::BadCredentials(_)
            | Refusal::CredentialExpired
            | Refusal::DepartedPeer => 401,
            Refusal::Peer {
                reason: PeerRefusal::FamilyMismatch,
                ..
            } => 443,
            Refusal::Peer { .. } => 403,
            Refusal::UnknownAttributes(_) => 420,
            Refusal::AllocationExists | Refusal::NoAllocation => 437,
            Refusal::StaleNonce => 438,
            Refusal::FamilyNotSupported => 440,
            Refusal::WrongCredentials => 441,
            Refusal::UnsupportedTransport => 442,
            Refusal::Quota(_) => 486,
            Refusal::Draining
            | Refusal::ReservationToken
            | Refusal::PortReservation
            | Refusal::TooManyPermissions
            | Refusal::TooManyChannels
            | Refusal::NoRelayPort(_) => 508,
        }
    }

    /// The reason phrase on the wire.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownMethod => "Unknown method",
            Refusal::Unauthenticated | Refusal::BadCredentials(_) => "Unauthenticated",
            Refusal::IncompleteCredentials => "USERNAME, REALM and NONCE are required",
            Refusal::StaleNonce => "Stale Nonce",
            Refusal::CredentialExpired => "Credential expired",
            Refusal::DepartedPeer => "Credential revoked",
            Refusal::Draining => "Server Shutting Down",
            Refusal::AllocationExists | Refusal::NoAllocation => "Allocation Mismatch",
            Refusal::WrongCredentials => "Wrong Credentials",
            Refusal::UnknownAttributes(_) => "Unknown Attribute",
            Refusal::BadRequest(m) => m.reason(),
            Refusal::ChannelOutOfRange(_) => "Channel number out of range",
            Refusal::UnsupportedTransport => "Unsupported Transport Protocol",
            Refusal::ReservationToken => "Reservation tokens are not supported",
            Refusal::PortReservation => "Port reservation is not supported",
            Refusal::FamilyNotSupported => "Address Family not Supported",
            Refusal::Peer {
                reason: PeerRefusal::FamilyMismatch,
                ..
            } => "Peer Address Family Mismatch",
            Refusal::Peer { .. } => "Forbidden",
            Refusal::TooManyPermissions | Refusal::TooManyChannels | Refusal::NoRelayPort(_) => {
                "Insufficient Capacity"
            }
            Refusal::ChannelConflict => "Channel already bound differently",
            Refusal::Quota(_) => "Allocation Quota Reached",
        }
    }

    /// How the answer is sealed.
    pub(super) fn seal(&self) -> Seal {
        match self {
            Refusal::Unauthenticated
            | Refusal::StaleNonce
            | Refusal::BadCredentials(_)
            | Refusal::CredentialExpired
            | Refusal::DepartedPeer => Seal::Challenge,
            Refusal::UnknownMethod | Refusal::IncompleteCredentials => Seal::Plain,
            _ => Seal::Signed,
        }
    }

    /// The counter this refusal moves, if any.
    pub(super) fn counted(&self) -> Option<Counted> {
        match self {
            Refusal::Unauthenticated => Some(Counted::Auth(AuthFailure::Missing)),
            Refusal::IncompleteCredentials => Some(Counted::Auth(AuthFailure::BadRequest)),
            Refusal::StaleNonce => Some(Counted::Auth(AuthFailure::StaleNonce)),
            Refusal::BadCredentials(_) => Some(Counted::Auth(AuthFailure::BadCredentials)),
            Refusal::CredentialExpired => Some(Counted::Auth(AuthFailure::Expired)),
            Refusal::DepartedPeer => Some(Counted::Auth(AuthFailure::DepartedPeer)),
            Refusal::Peer { reason, .. } => Some(Counted::Peer(*reason)),
            Refusal::Quota(scope) => Some(Counted::Quota(*scope)),
            _ => None,
        }
    }

    /// How loudly it is logged.
    pub(super) fn loudness(&self) -> Loudness {
        match self {
            Refusal::Unauthenticated | Refusal::StaleNonce => Loudness::Quiet,
            Refusal::Peer {
                reason: PeerRefusal::FamilyMismatch,
                ..
            } => Loudness::Debug,
            Refusal::Peer { .. } | Refusal::Quota(_) | Refusal::NoRelayPort(_) => Loudness::Info,
            _ => Loudness::Debug,
        }
    }
}

impl From<AllocError> for Refusal {
    fn from(e: AllocError) -> Refusal {
        match e {
            AllocError::UserQuota => Refusal::Quota(QuotaScope::User),
            AllocError::TotalQuota => Refusal::Quota(QuotaScope::Total),
            AllocError::AddressQuota => Refusal::Quota(QuotaScope::Address),
            AllocError::CredentialExpired => Refusal::CredentialExpired,
            AllocError::NoAllocation => Refusal::NoAllocation,
            AllocError::TooManyPermissions => Refusal::TooManyPermissions,
            AllocError::TooManyChannels => Refusal::TooManyChannels,
            AllocError::ChannelConflict => Refusal::ChannelConflict,
        }
    }
}

/// Why, in words for the log.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownMethod => f.write_str("the method is not implemented"),
            Refusal::Unauthenticated => f.write_str("no credentials yet (challenged)"),
            Refusal::IncompleteCredentials => {
                f.write_str("integrity without USERNAME, REALM and NONCE")
            }
            Refusal::StaleNonce => f.write_str("the nonce is stale or not ours"),
            Refusal::BadCredentials(BadCredentials::Realm) => f.write_str("the realm is not ours"),
            Refusal::BadCredentials(BadCredentials::Username) => {
                f.write_str("the username is not EXPIRY or EXPIRY:USER")
            }
            Refusal::BadCredentials(BadCredentials::Integrity) => {
                f.write_str("the message integrity does not match any secret")
            }
            Refusal::CredentialExpired => f.write_str("the REST credential has expired"),
            Refusal::DepartedPeer => f.write_str("the room peer of this credential is gone"),
            Refusal::Draining => f.write_str("the server is shutting down"),
            Refusal::AllocationExists => f.write_str("the 5-tuple already has an allocation"),
            Refusal::NoAllocation => f.write_str("no allocation for this 5-tuple"),
            Refusal::WrongCredentials => f.write_str("the username differs from the allocation's"),
            Refusal::UnknownAttributes(types) => {
                write!(
                    f,
                    "unknown comprehension-required attributes {:04x?}",
                    types.as_slice()
                )
            }
            Refusal::BadRequest(m) => f.write_str(m.reason()),
            Refusal::ChannelOutOfRange(n) => {
                write!(f, "channel number 0x{n:04x} is outside 0x4000-0x7FFF")
            }
            Refusal::UnsupportedTransport => {
                f.write_str("a transport other than UDP was requested")
            }
            Refusal::ReservationToken => f.write_str("reservation tokens are not supported"),
            Refusal::PortReservation => {
                f.write_str("reserving the next port (EVEN-PORT R) is not supported")
            }
            Refusal::FamilyNotSupported => {
                f.write_str("the requested address family has no relay address")
            }
            Refusal::Peer { peer, reason } => write!(f, "{peer}: {}", reason.describe()),
            Refusal::TooManyPermissions => {
                f.write_str("the allocation has the most permissions allowed")
            }
            Refusal::TooManyChannels => f.write_str("the allocation has the most channels allowed"),
            Refusal::ChannelConflict => {
                f.write_str("the channel number or the peer is already bound to something else")
            }
            Refusal::Quota(QuotaScope::User) => {
                f.write_str("the user already has the most allocations user_quota allows")
            }
            Refusal::Quota(QuotaScope::Total) => {
                f.write_str("the server already has the most allocations total_quota allows")
            }
            Refusal::Quota(QuotaScope::Address) => f.write_str(
                "the client's address already has the most allocations max_allocations_per_ip allows",
            ),
            Refusal::NoRelayPort(e) => write!(f, "no relay port could be bound: {e}"),
        }
    }
}

impl Malformed {
    fn reason(self) -> &'static str {
        match self {
            Malformed::MissingTransport => "REQUESTED-TRANSPORT is missing",
            Malformed::TokenWithPortOrFamily => {
                "RESERVATION-TOKEN excludes EVEN-PORT and REQUESTED-ADDRESS-FAMILY"
            }
            Malformed::BothFamilies => {
                "REQUESTED-ADDRESS-FAMILY excludes ADDITIONAL-ADDRESS-FAMILY"
            }
            Malformed::AdditionalNotIpv6 => "ADDITIONAL-ADDRESS-FAMILY must be IPv6",
            Malformed::TooManyPeers => "Too many XOR-PEER-ADDRESS",
            Malformed::BadPeer => "Malformed XOR-PEER-ADDRESS",
            Malformed::MissingPeer => "XOR-PEER-ADDRESS is missing",
            Malformed::MissingChannel => "CHANNEL-NUMBER is missing",
        }
    }
}
