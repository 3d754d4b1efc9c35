//! A client's STUN request decoded into a typed request before anything acts on it (the
//! shape of firezone's relay `ClientMessage`): handlers get the fields their method needs,
//! already checked, and never read attributes themselves.
//!
//! Decoding is pure and happens first, but a malformed TURN request is not answered at once:
//! RFC 8489 §6.3 and §9.2.4 put authentication (401, 438) and the allocation checks (437, 441)
//! before the method's own rules, so the body of a TURN request is a `Result` whose refusal
//! the control path answers only when its turn comes. Within a body the checks keep the order
//! of the RFC text: unknown comprehension-required attributes (420) first, then the
//! attributes in the order the method's section lists them.

use std::net::SocketAddr;

use signalbox_stun::{attr, channel_data, Class, MessageRef, Method};

use super::outcome::{Malformed, Refusal};
use super::MAX_LEGACY_CHANNEL;

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
    attr::ADDITIONAL_ADDRESS_FAMILY,
];
const REFRESH_KNOWN: &[u16] = &[attr::LIFETIME, attr::REQUESTED_ADDRESS_FAMILY];
const PERMISSION_KNOWN: &[u16] = &[attr::XOR_PEER_ADDRESS];
const CHANNEL_KNOWN: &[u16] = &[attr::XOR_PEER_ADDRESS, attr::CHANNEL_NUMBER];

/// RFC 8656 §18.7: REQUESTED-TRANSPORT value for UDP.
const PROTOCOL_UDP: u8 = 17;
/// Most peers one CreatePermission may name.
const MAX_PEERS_PER_REQUEST: usize = 16;

/// A STUN request from a client.
pub(super) enum Request {
    /// RFC 8489 §3: answered with the reflexive address, no credentials needed.
    Binding,
    /// A method that needs long-term credentials.
    Turn(TurnRequest),
    /// A method this server does not implement (400).
    Unknown,
}

/// The TURN methods (RFC 8656), each with its decoded body or the refusal that waits for
/// authentication.
pub(super) enum TurnRequest {
    /// RFC 8656 §7.2.
    Allocate(Result<Allocate, Refusal>),
    /// RFC 8656 §7.3.
    Refresh(Result<Refresh, Refusal>),
    /// RFC 8656 §10: the peers, one to [`MAX_PEERS_PER_REQUEST`].
    CreatePermission(Result<Vec<SocketAddr>, Refusal>),
    /// RFC 8656 §11.2.
    ChannelBind(Result<ChannelBind, Refusal>),
}

/// What an Allocate asks for, once the server has agreed it can give it.
pub(super) struct Allocate {
    /// EVEN-PORT without the R bit: an even relay port.
    pub(super) even_port: bool,
    /// REQUESTED-ADDRESS-FAMILY; `None` when absent ([`CoreConfig::allocation_family`] decides).
    pub(super) family: Option<Family>,
    /// LIFETIME in seconds, if the client asked.
    pub(super) lifetime: Option<u32>,
    /// ADDITIONAL-ADDRESS-FAMILY (IPv6): the client asked for both families in one allocation.
    pub(super) additional_v6: bool,
}

/// RFC 8656 §18.9: the family of the relayed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

/// What a Refresh asks for.
pub(super) struct Refresh {
    /// LIFETIME in seconds; 0 deletes the allocation.
    pub(super) lifetime: Option<u32>,
}

/// What a ChannelBind asks for.
pub(super) struct ChannelBind {
    pub(super) number: u16,
    pub(super) peer: SocketAddr,
}

/// A Send indication (RFC 8656 §11.2): the peer and where the payload sits in the datagram.
pub(super) struct Send {
    pub(super) peer: SocketAddr,
    pub(super) data: std::ops::Range<usize>,
}

/// Decodes a request (the caller has checked the class).
pub(super) fn decode(msg: &MessageRef<'_>) -> Request {
    let turn = match msg.method() {
        Method::BINDING => return Request::Binding,
        Method::ALLOCATE => TurnRequest::Allocate(allocate(msg)),
        Method::REFRESH => TurnRequest::Refresh(refresh(msg)),
        Method::CREATE_PERMISSION => TurnRequest::CreatePermission(create_permission(msg)),
        Method::CHANNEL_BIND => TurnRequest::ChannelBind(channel_bind(msg)),
        _ => return Request::Unknown,
    };
    Request::Turn(turn)
}

/// Decodes a Send indication whose attributes lie inside `datagram`; `None` when something is
/// missing (indications get no answer).
pub(super) fn decode_send(msg: &MessageRef<'_>, datagram: &[u8]) -> Option<Send> {
    if msg.class() != Class::Indication || msg.method() != Method::SEND {
        return None;
    }
    let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?;
    let data = msg.get(attr::DATA)?;
    let start = (data.as_ptr() as usize).checked_sub(datagram.as_ptr() as usize)?;
    Some(Send {
        peer,
        data: start..start + data.len(),
    })
}

/// The method's name for the log.
pub(super) fn method_name(method: Method) -> &'static str {
    match method {
        Method::BINDING => "Binding",
        Method::ALLOCATE => "Allocate",
        Method::REFRESH => "Refresh",
        Method::CREATE_PERMISSION => "CreatePermission",
        Method::CHANNEL_BIND => "ChannelBind",
        _ => "request",
    }
}

/// 420 with UNKNOWN-ATTRIBUTES when the request has comprehension-required attributes
/// neither the method nor the credentials use (RFC 8489 §6.3.1).
fn known_attributes(msg: &MessageRef<'_>, known: &[u16]) -> Result<(), Refusal> {
    let mut all = [0u16; 16];
    let n = COMMON.len() + known.len();
    all[..COMMON.len()].copy_from_slice(COMMON);
    all[COMMON.len()..n].copy_from_slice(known);
    let unknown = msg.unknown_comprehension_required(&all[..n]);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Refusal::UnknownAttributes(unknown))
    }
}

/// RFC 8656 §7.2, the request's own checks in the order the section gives them.
fn allocate(msg: &MessageRef<'_>) -> Result<Allocate, Refusal> {
    known_attributes(msg, ALLOCATE_KNOWN)?;
    match msg.get(attr::REQUESTED_TRANSPORT) {
        None => return Err(Refusal::BadRequest(Malformed::MissingTransport)),
        Some(v) if v.first() != Some(&PROTOCOL_UDP) => return Err(Refusal::UnsupportedTransport),
        Some(_) => {}
    }
    let even_port = msg.get(attr::EVEN_PORT);
    let token = msg.get(attr::RESERVATION_TOKEN);
    let family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
    if (even_port.is_some() || family.is_some()) && token.is_some() {
        return Err(Refusal::BadRequest(Malformed::TokenWithPortOrFamily));
    }
    if token.is_some() {
        return Err(Refusal::ReservationToken);
    }
    if even_port
        .and_then(|v| v.first())
        .is_some_and(|b| b & 0x80 != 0)
    {
        return Err(Refusal::PortReservation);
    }
    let additional = msg.get(attr::ADDITIONAL_ADDRESS_FAMILY);
    if family.is_some() && additional.is_some() {
        return Err(Refusal::BadRequest(Malformed::BothFamilies));
    }
    if additional.is_some_and(|v| v.first() != Some(&attr::FAMILY_IPV6)) {
        return Err(Refusal::BadRequest(Malformed::AdditionalNotIpv6));
    }
    let family = match family.map(|v| v.first().copied()) {
        None => None,
        Some(Some(attr::FAMILY_IPV4)) => Some(Family::V4),
        Some(Some(attr::FAMILY_IPV6)) => Some(Family::V6),
        Some(_) => return Err(Refusal::FamilyNotSupported),
    };
    Ok(Allocate {
        even_port: even_port.is_some(),
        family,
        lifetime: msg.u32_attr(attr::LIFETIME).and_then(Result::ok),
        additional_v6: additional.is_some(),
    })
}

/// RFC 8656 §7.3.
fn refresh(msg: &MessageRef<'_>) -> Result<Refresh, Refusal> {
    known_attributes(msg, REFRESH_KNOWN)?;
    Ok(Refresh {
        lifetime: msg.u32_attr(attr::LIFETIME).and_then(Result::ok),
    })
}

/// RFC 8656 §10.2: at least one XOR-PEER-ADDRESS, all well-formed.
fn create_permission(msg: &MessageRef<'_>) -> Result<Vec<SocketAddr>, Refusal> {
    known_attributes(msg, PERMISSION_KNOWN)?;
    let mut peers = Vec::new();
    for peer in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
        match peer {
            Ok(p) if peers.len() < MAX_PEERS_PER_REQUEST => peers.push(p),
            Ok(_) => return Err(Refusal::BadRequest(Malformed::TooManyPeers)),
            Err(_) => return Err(Refusal::BadRequest(Malformed::BadPeer)),
        }
    }
    if peers.is_empty() {
        return Err(Refusal::BadRequest(Malformed::MissingPeer));
    }
    Ok(peers)
}

/// RFC 8656 §11.2: a channel number in the accepted range and one XOR-PEER-ADDRESS.
fn channel_bind(msg: &MessageRef<'_>) -> Result<ChannelBind, Refusal> {
    known_attributes(msg, CHANNEL_KNOWN)?;
    let number = match msg.u32_attr(attr::CHANNEL_NUMBER) {
        Some(Ok(v)) => (v >> 16) as u16,
        _ => return Err(Refusal::BadRequest(Malformed::MissingChannel)),
    };
    if !(channel_data::MIN_CHANNEL..=MAX_LEGACY_CHANNEL).contains(&number) {
        return Err(Refusal::ChannelOutOfRange(number));
    }
    let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
        Some(Ok(p)) => p,
        _ => return Err(Refusal::BadRequest(Malformed::MissingPeer)),
    };
    Ok(ChannelBind { number, peer })
}
