//! Attribute types and the value codecs that need more than a byte copy.
//!
//! Types below 0x8000 are comprehension-required (RFC 8489 §14): a receiver that does not
//! understand one must refuse the request with 420 and list it in UNKNOWN-ATTRIBUTES. Types
//! from 0x8000 up are comprehension-optional and may be ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{ParseError, TransactionId, MAGIC_COOKIE};

// Comprehension-required (0x0000–0x7FFF).
/// RFC 8489 §14.1 MAPPED-ADDRESS: the reflexive address in the clear, for RFC 3489 clients;
/// newer ones read [`XOR_MAPPED_ADDRESS`].
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// RFC 5780 §7.2 CHANGE-REQUEST: asks for the response from another address or port (NAT
/// behaviour discovery). Not in [`BINDING_UNDERSTOOD`], so a Binding request carrying it is
/// answered with 420.
pub const CHANGE_REQUEST: u16 = 0x0003;
/// RFC 8489 §14.3 USERNAME: the user whose key signs the message (§9.2.2 long-term
/// credentials, §9.1 short-term).
pub const USERNAME: u16 = 0x0006;
/// RFC 8489 §14.5 MESSAGE-INTEGRITY: 20-byte HMAC-SHA1 over the message up to it; checked by
/// [`MessageRef::verify_integrity`](crate::MessageRef::verify_integrity).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// RFC 8489 §14.8 ERROR-CODE: an error response's code and reason phrase; see
/// [`decode_error_code`].
pub const ERROR_CODE: u16 = 0x0009;
/// RFC 8489 §14.13 UNKNOWN-ATTRIBUTES: in a 420 response, the comprehension-required types
/// of the request that the receiver does not understand.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// RFC 8656 §18.1 CHANNEL-NUMBER: in ChannelBind, the channel (0x4000–0x4FFF) in the first
/// two bytes, then two reserved bytes.
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// RFC 8656 §18.2 LIFETIME: seconds until the allocation expires, asked for in Allocate and
/// Refresh and granted in their responses; 0 in a Refresh deletes the allocation.
pub const LIFETIME: u16 = 0x000D;
/// RFC 8656 §18.3 XOR-PEER-ADDRESS: the peer's address in CreatePermission (one or more),
/// ChannelBind, Send and Data.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// RFC 8656 §18.4 DATA: the application payload of a Send or Data indication.
pub const DATA: u16 = 0x0013;
/// RFC 8489 §14.9 REALM: the realm of the long-term credentials; part of the key (§9.2.2).
pub const REALM: u16 = 0x0014;
/// RFC 8489 §14.10 NONCE: chosen by the server and echoed in authenticated requests; a stale
/// one is refused with 438 (§9.2).
pub const NONCE: u16 = 0x0015;
/// RFC 8656 §18.5 XOR-RELAYED-ADDRESS: in an Allocate success response, the relayed
/// transport address the server allocated.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// RFC 8656 §18.6 REQUESTED-ADDRESS-FAMILY: the family of relayed address an Allocate asks
/// for, [`FAMILY_IPV4`] or [`FAMILY_IPV6`] in the first byte.
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// RFC 8656 §18.7 EVEN-PORT: asks for an even relayed port, and optionally to reserve the
/// next one (RTP and RTCP pairs).
pub const EVEN_PORT: u16 = 0x0018;
/// RFC 8656 §18.8 REQUESTED-TRANSPORT: the relay's transport in an Allocate, as the IP
/// protocol number in the first byte (17 for UDP).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// RFC 8656 §18.9 DONT-FRAGMENT: asks that datagrams relayed to peers carry the DF bit; no
/// value.
pub const DONT_FRAGMENT: u16 = 0x001A;
/// RFC 8489 §14.6 MESSAGE-INTEGRITY-SHA256: HMAC-SHA256 over the message up to it, 16–32
/// bytes; takes precedence over MESSAGE-INTEGRITY when both are present (§9.2.4).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// RFC 8489 §14.12 PASSWORD-ALGORITHM: the algorithm (MD5 or SHA-256) the client chose for
/// the long-term key, from the server's PASSWORD-ALGORITHMS.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// RFC 8489 §14.4 USERHASH: a SHA-256 hash of user name and realm, sent instead of USERNAME
/// to keep the user name off the wire.
pub const USERHASH: u16 = 0x001E;
/// RFC 8489 §14.2 XOR-MAPPED-ADDRESS: the sender's reflexive transport address in a Binding
/// or Allocate success response, XORed so that middleboxes rewriting addresses in payloads
/// leave it alone; see [`decode_xor_address`].
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RFC 8656 §18.10 RESERVATION-TOKEN: names a relayed port held in reserve by an earlier
/// Allocate with EVEN-PORT.
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// RFC 8445 §16.1 PRIORITY (ICE): the priority a peer-reflexive candidate learned from this
/// connectivity check would get.
pub const PRIORITY: u16 = 0x0024;
/// RFC 8445 §16.1 USE-CANDIDATE (ICE): nominates the checked pair; no value.
pub const USE_CANDIDATE: u16 = 0x0025;
/// RFC 6062 §6.2.1 CONNECTION-ID: names one TCP connection to a peer in a TCP allocation
/// (TURN over TCP to peers).
pub const CONNECTION_ID: u16 = 0x002A;

// Comprehension-optional (0x8000–0xFFFF).
/// RFC 8656 §18.11 ADDITIONAL-ADDRESS-FAMILY: asks Allocate for an IPv6 relayed address
/// besides the IPv4 one.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// RFC 8656 §18.12 ADDRESS-ERROR-CODE: why one family of a dual allocation was not granted.
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// RFC 8489 §14.11 PASSWORD-ALGORITHMS: the algorithms a server offers for the long-term key
/// (§9.2).
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// RFC 8489 §14.16 ALTERNATE-DOMAIN: the name to verify ALTERNATE-SERVER's certificate
/// against over TLS or DTLS.
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// RFC 8656 §18.13 ICMP: in a Data indication, the type and code of an ICMP error on the
/// path to the peer.
pub const ICMP: u16 = 0x8004;
/// RFC 8489 §14.14 SOFTWARE: the sender's software, informational only; this server sends
/// [`SOFTWARE_NAME`](crate::SOFTWARE_NAME).
pub const SOFTWARE: u16 = 0x8022;
/// RFC 8489 §14.15 ALTERNATE-SERVER: in a 300 (Try Alternate) response, the server to use
/// instead.
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// RFC 8489 §14.7 FINGERPRINT: CRC-32 of the message before it XOR
/// [`FINGERPRINT_XOR`](crate::FINGERPRINT_XOR), which tells STUN from other protocols on a
/// shared port; always the last attribute.
pub const FINGERPRINT: u16 = 0x8028;
/// RFC 8445 §16.1 ICE-CONTROLLED (ICE): the sender is the controlled agent; carries its
/// tie-breaker.
pub const ICE_CONTROLLED: u16 = 0x8029;
/// RFC 8445 §16.1 ICE-CONTROLLING (ICE): the sender is the controlling agent; carries its
/// tie-breaker.
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RFC 5780 §7.3 RESPONSE-ORIGIN: the address a response was sent from (NAT behaviour
/// discovery).
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// RFC 5780 §7.4 OTHER-ADDRESS: the server's alternate address and port that CHANGE-REQUEST
/// would answer from (NAT behaviour discovery).
pub const OTHER_ADDRESS: u16 = 0x802C;
/// ORIGIN, draft-ietf-tram-stun-origin: the web origin of the page that made the request
/// (sent by Chrome in Allocate requests).
pub const ORIGIN: u16 = 0x802F;

/// RFC 8489 §14: types 0x0000–0x7FFF must be understood by the receiver.
pub const fn is_comprehension_required(t: u16) -> bool {
    t < 0x8000
}

/// The comprehension-required attributes a Binding request may carry without a 420.
///
/// Credentials and ICE attributes are tolerated (a Binding answer reveals nothing but the
/// source address, so there is nothing to authenticate); CHANGE-REQUEST is deliberately
/// absent so that RFC 5780 clients learn from the 420 that NAT behaviour discovery is not
/// offered.
pub const BINDING_UNDERSTOOD: &[u16] = &[
    MAPPED_ADDRESS,
    XOR_MAPPED_ADDRESS,
    USERNAME,
    USERHASH,
    MESSAGE_INTEGRITY,
    MESSAGE_INTEGRITY_SHA256,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    REALM,
    NONCE,
    PASSWORD_ALGORITHM,
    PRIORITY,
    USE_CANDIDATE,
];

/// IPv4 as the family byte of (XOR-)MAPPED-ADDRESS and the other address attributes
/// (RFC 8489 §14.1); also a value of REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
pub const FAMILY_IPV4: u8 = 0x01;
/// IPv6 as the family byte of (XOR-)MAPPED-ADDRESS and the other address attributes
/// (RFC 8489 §14.1); also a value of REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6).
pub const FAMILY_IPV6: u8 = 0x02;

/// Decodes an XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS value
/// (RFC 8489 §14.2): the port is XORed with the top 16 bits of the magic cookie, an IPv4
/// address with the cookie, an IPv6 address with the cookie followed by the transaction id.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, ParseError> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match value {
        [_, FAMILY_IPV4, p0, p1, a @ ..] if a.len() == 4 => {
            let port = u16::from_be_bytes([p0 ^ cookie[0], p1 ^ cookie[1]]);
            let mut ip = [0u8; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = a[i] ^ cookie[i];
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        [_, FAMILY_IPV6, p0, p1, a @ ..] if a.len() == 16 => {
            let port = u16::from_be_bytes([p0 ^ cookie[0], p1 ^ cookie[1]]);
            let pad = xor_pad(tid);
            let mut ip = [0u8; 16];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = a[i] ^ pad[i];
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(ParseError::BadAddress),
    }
}

/// Encodes `addr` as an XOR address value into `out`, returning the used length (8 or 20).
///
/// An IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 client) is
/// written as IPv4: the client sent from an IPv4 address and must read one back.
pub fn encode_xor_address(addr: SocketAddr, tid: &TransactionId, out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port().to_be_bytes();
    out[0] = 0;
    out[2] = port[0] ^ cookie[0];
    out[3] = port[1] ^ cookie[1];
    let ip = match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            out[1] = FAMILY_IPV4;
            for (i, b) in v4.octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
            8
        }
        IpAddr::V6(v6) => {
            out[1] = FAMILY_IPV6;
            let pad = xor_pad(tid);
            for (i, b) in v6.octets().iter().enumerate() {
                out[4 + i] = b ^ pad[i];
            }
            20
        }
    }
}

/// Magic cookie followed by the transaction id: the XOR pad for IPv6 addresses.
fn xor_pad(tid: &TransactionId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(&tid.0);
    pad
}

/// Decodes an ERROR-CODE value (RFC 8489 §14.8): class in the low 3 bits of byte 2
/// (3–6), number in byte 3 (0–99), then a UTF-8 reason phrase.
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), ParseError> {
    match value {
        [_, _, class, number, reason @ ..] => {
            let class = u16::from(class & 0x07);
            let number = u16::from(*number);
            if !(3..=6).contains(&class) || number > 99 {
                return Err(ParseError::BadErrorCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ParseError::BadErrorCode)?;
            Ok((class * 100 + number, reason))
        }
        _ => Err(ParseError::BadErrorCode),
    }
}

/// Decodes a 4-byte big-endian value (LIFETIME, REQUESTED-TRANSPORT's first byte, …).
pub fn decode_u32(value: &[u8]) -> Result<u32, ParseError> {
    match value {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(ParseError::BadAttributeLength),
    }
}

/// The unknown comprehension-required attribute types of a message, kept on the stack.
///
/// Holds at most [`UnknownAttributes::CAPACITY`] distinct types, which is more than any
/// honest client sends; further ones are dropped from the list (the answer is a 420 anyway).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownAttributes {
    types: [u16; Self::CAPACITY],
    len: usize,
}

impl UnknownAttributes {
    /// How many distinct types the list keeps; a request carrying more still gets its 420,
    /// listing the first 16.
    pub const CAPACITY: usize = 16;

    pub(crate) fn new() -> Self {
        Self {
            types: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// Adds `t` unless it is already listed or the list is full.
    pub(crate) fn insert(&mut self, t: u16) {
        if self.len < Self::CAPACITY && !self.as_slice().contains(&t) {
            self.types[self.len] = t;
            self.len += 1;
        }
    }

    /// The types in the order they first appear in the message, as
    /// [`MessageWriter::unknown_attributes`](crate::MessageWriter::unknown_attributes) takes
    /// them.
    pub fn as_slice(&self) -> &[u16] {
        &self.types[..self.len]
    }
}

impl std::ops::Deref for UnknownAttributes {
    type Target = [u16];

    fn deref(&self) -> &[u16] {
        self.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    #[test]
    fn xor_addresses_round_trip_for_both_families() {
        for addr in [
            "192.0.2.1:32853",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "0.0.0.0:0",
            "[::]:65535",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = [0; 20];
            let n = encode_xor_address(addr, &TID, &mut out);
            assert_eq!(decode_xor_address(&out[..n], &TID), Ok(addr));
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_written_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().unwrap();
        let mut out = [0; 20];
        let n = encode_xor_address(mapped, &TID, &mut out);
        assert_eq!(n, 8);
        // RFC 5769 §2.2 carries exactly these bytes for 192.0.2.1:32853.
        assert_eq!(out[..8], [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    }

    #[test]
    fn malformed_xor_addresses_are_errors() {
        for bad in [
            &[][..],
            &[0, 1, 0, 0, 0, 0, 0][..],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0][..],
            &[0, 2, 0, 0, 0, 0, 0, 0][..],
            &[0, 3, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert_eq!(decode_xor_address(bad, &TID), Err(ParseError::BadAddress));
        }
    }

    #[test]
    fn error_codes_split_into_class_and_number() {
        assert_eq!(
            decode_error_code(&[0, 0, 4, 20, b'U', b'n']),
            Ok((420, "Un"))
        );
        assert_eq!(decode_error_code(&[0, 0, 5, 8]), Ok((508, "")));
        assert_eq!(
            decode_error_code(&[0, 0, 7, 0]),
            Err(ParseError::BadErrorCode)
        );
        assert_eq!(
            decode_error_code(&[0, 0, 4, 100]),
            Err(ParseError::BadErrorCode)
        );
        assert_eq!(decode_error_code(&[0, 0, 4]), Err(ParseError::BadErrorCode));
    }

    #[test]
    fn unknown_attribute_lists_are_deduplicated_and_bounded() {
        let mut list = UnknownAttributes::new();
        for t in (0..40u16).chain(0..40) {
            list.insert(t);
        }
        assert_eq!(list.len(), UnknownAttributes::CAPACITY);
        assert_eq!(list[..3], [0, 1, 2]);
    }
}
