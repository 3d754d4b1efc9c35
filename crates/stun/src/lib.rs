//! STUN message codec (RFC 8489) with the TURN additions (RFC 8656): a borrowed, validated view
//! of a received message ([`MessageRef`]), a writer into a caller-owned buffer
//! ([`MessageWriter`]), ChannelData framing ([`channel_data`]) and the Binding responder
//! ([`binding_response`]).
//!
//! # Why not the `stun` crate on the server side
//! The `stun` crate (webrtc-rs) is a sound client-side library, and the tests use it as an
//! independent implementation to check this codec against. It does not fit the server's
//! receive path:
//! - decoding copies the datagram and every attribute value into fresh `Vec`s, which is a heap
//!   allocation per packet on a path that must not allocate (and an easy lever for floods);
//! - it has a type code for MESSAGE-INTEGRITY-SHA256 but no implementation of it, and its
//!   integrity check does not apply RFC 8489 §14.5's rule that attributes after
//!   MESSAGE-INTEGRITY are ignored;
//! - error responses are assembled from boxed setter objects, where the server needs exact,
//!   cheap control of what a 401/420/438 carries.
//!
//! So [`MessageRef::parse`] validates in one pass and keeps only a few offsets into the
//! borrowed buffer; accessors re-walk the (already validated) attribute list on demand. Parse
//! never allocates; [`MessageWriter`] appends to a `Vec` the caller reuses.
//!
//! # Parsing rules
//! - Header (RFC 8489 §5): top two bits zero, magic cookie, length a multiple of 4 and equal to
//!   the bytes after the header (one message per buffer; streams use [`frame_len`] first).
//! - Attributes: TLV with values padded to 4 bytes; an attribute running past the end is an
//!   error, so every later accessor works on a well-formed list.
//! - Integrity ordering (RFC 8489 §14.5–14.7): attributes after MESSAGE-INTEGRITY are ignored
//!   except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT; after MESSAGE-INTEGRITY-SHA256 only
//!   FINGERPRINT counts; FINGERPRINT must be last (anything after it is a parse error).
//!   Ignored attributes are invisible to [`MessageRef::attributes`], [`MessageRef::get`] and
//!   [`MessageRef::unknown_comprehension_required`], so nothing appended by someone on the
//!   path can influence the server.
//! - Integrity is an HMAC over the message up to the integrity attribute with the header's
//!   length field set as if that attribute were the last one (§14.5); the same adjustment is
//!   applied for MESSAGE-INTEGRITY-SHA256, which may be truncated to 16–32 bytes (§14.6).
//!
//! # API notes
//! - [`channel_data::frame_len`] returns `Result<Option<usize>, FrameError>`: `Ok(None)` asks
//!   for more bytes, and an error means a stream whose next bytes are neither STUN nor
//!   ChannelData, which cannot be resynchronised and must be closed (`Option` alone cannot say
//!   that).
//! - [`MessageRef::unknown_comprehension_required`] returns [`attr::UnknownAttributes`], a
//!   fixed-capacity list on the stack (it derefs to `&[u16]`), so refusing a request with 420
//!   allocates nothing.
//! - [`MessageWriter::finish`] returns 0 and clears the buffer when an attribute did not fit
//!   the 16-bit message length; nothing truncated is ever sent.
//! - [`binding_response`] returns 0 when nothing must be sent (not a Binding request, or a
//!   FINGERPRINT that does not match); otherwise the length of a success or 420 response.
//! - Besides raw values ([`MessageRef::get`], [`MessageRef::get_all`]), [`MessageRef`] decodes
//!   what the TURN methods carry ([`MessageRef::xor_addresses`], [`MessageRef::u32_attr`],
//!   [`MessageRef::error_code`]), each decode failing as a [`ParseError`] value, and names the
//!   integrity attribute a request used ([`MessageRef::integrity_algorithm`]) so the response
//!   can be signed the same way.

pub mod attr;
pub mod channel_data;
pub mod vectors;
mod writer;

use std::net::SocketAddr;

use ring::hmac;

pub use channel_data::frame_len;
pub use writer::MessageWriter;

/// RFC 8489 §5: the fixed value in bytes 4–7 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 §5: type, length, cookie, transaction id.
pub const HEADER_LEN: usize = 20;
/// RFC 8489 §14.7: XORed into the CRC-32 of FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The SOFTWARE attribute value this server sends (RFC 8489 §14.14).
pub const SOFTWARE_NAME: &str = concat!("signalbox/", env!("CARGO_PKG_VERSION"));

/// 96-bit transaction id (RFC 8489 §5). A response carries its request's id, which is how a
/// client matches the two; the IPv6 XOR address pad includes it (§14.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

/// Message class, the two C bits of the message type (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// `0b00`: answered by a success or error response with the same transaction id.
    Request,
    /// `0b01`: never answered (a Binding indication is a keepalive; TURN's Send and Data
    /// indications carry relayed data, RFC 8656 §11).
    Indication,
    /// `0b10`: success response.
    Success,
    /// `0b11`: error response, carrying ERROR-CODE (§14.8).
    Error,
}

/// The 12-bit method of the message type (RFC 8489 §5).
///
/// A number rather than an enum: a message whose method has no constant here still parses, and
/// the caller decides how to answer it. The TURN methods' values are registered in RFC 8656
/// §17; each constant cites the section that defines what the method does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// RFC 8489 §18.2 Binding: asks for the sender's reflexive transport address (answered by
    /// [`binding_response`]).
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 §7 Allocate: asks for a relayed transport address for the client's 5-tuple.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 §8 Refresh: extends an allocation's lifetime; a LIFETIME of 0 deletes it.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 §11 Send indication: client data for the peer in XOR-PEER-ADDRESS, in DATA.
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 §11 Data indication: peer data for the client when no channel is bound.
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 §10 CreatePermission: installs or refreshes permissions for the IP addresses
    /// of its XOR-PEER-ADDRESSes; traffic from a peer without one is not relayed.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 §12 ChannelBind: binds a channel number to a peer so data travels as
    /// ChannelData (4-byte header) instead of Send and Data indications.
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// Why a buffer is not a usable STUN message (or attribute value).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the 20-byte header (RFC 8489 §5).
    #[error("shorter than the 20-byte STUN header")]
    TooShort,
    /// The top two bits are not `00`: another protocol sharing the port (ChannelData, DTLS,
    /// RTP; RFC 7983), not a damaged STUN message.
    #[error("the first two bits are not zero")]
    NotStun,
    /// Bytes 4–7 are not [`MAGIC_COOKIE`]: an RFC 3489 message or another protocol.
    #[error("the magic cookie is missing")]
    BadMagicCookie,
    /// The header's length field (carried) is not a multiple of 4, as every STUN message
    /// length is (RFC 8489 §5).
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(usize),
    /// The header's length field disagrees with the bytes after the header. A buffer holds
    /// exactly one message; on a stream, cut it out with [`frame_len`] first.
    #[error("message length {declared} does not match the {actual} bytes after the header")]
    LengthMismatch {
        /// The header's length field.
        declared: usize,
        /// The bytes after the header in the buffer.
        actual: usize,
    },
    /// An attribute's padded value runs past the end of the message; carries its type (0 when
    /// even the 4-byte attribute header is cut off).
    #[error("attribute 0x{0:04x} runs past the end of the message")]
    TruncatedAttribute(u16),
    /// An attribute (type carried) follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    #[error("attribute 0x{0:04x} follows FINGERPRINT")]
    AfterFingerprint(u16),
    /// MESSAGE-INTEGRITY is not 20 bytes, MESSAGE-INTEGRITY-SHA256 not 16–32 in steps of 4, or
    /// FINGERPRINT not 4 (RFC 8489 §14.5–14.7); carries the type.
    #[error("attribute 0x{0:04x} has a length its type does not allow")]
    BadIntegrityLength(u16),
    /// A fixed-size value (see [`attr::decode_u32`]) has another length.
    #[error("attribute value has the wrong length")]
    BadAttributeLength,
    /// An XOR address value has an unknown family or a length that does not fit its family
    /// (RFC 8489 §14.2).
    #[error("malformed address attribute")]
    BadAddress,
    /// An ERROR-CODE value is shorter than 4 bytes, has a class outside 3–6 or a number above
    /// 99, or a reason phrase that is not UTF-8 (RFC 8489 §14.8).
    #[error("malformed ERROR-CODE attribute")]
    BadErrorCode,
}

/// Outcome of [`MessageRef::verify_integrity`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Integrity {
    /// The HMAC matches the key.
    Ok,
    /// Neither MESSAGE-INTEGRITY nor MESSAGE-INTEGRITY-SHA256 is present.
    Missing,
    /// An HMAC is present and does not match.
    Bad,
}

/// Which integrity attribute a message relies on; a response uses the same one (RFC 8489 §9.2.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IntegrityAlgorithm {
    /// MESSAGE-INTEGRITY, HMAC-SHA1 (RFC 8489 §14.5): what RFC 5389 clients send.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256 (RFC 8489 §14.6).
    Sha256,
}

/// A validated, borrowed view of one STUN message. Parsing keeps only offsets; it never
/// allocates and never copies the buffer.
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    buf: &'a [u8],
    /// Offsets of the attribute headers that count for integrity and fingerprint.
    mi: Option<usize>,
    mi256: Option<usize>,
    fp: Option<usize>,
}

impl<'a> MessageRef<'a> {
    /// Validates header and attribute layout of a whole message (see the module notes).
    pub fn parse(buf: &'a [u8]) -> Result<MessageRef<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if buf[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if be32(buf, 4) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        let declared = usize::from(be16(buf, 2));
        if declared % 4 != 0 {
            return Err(ParseError::UnalignedLength(declared));
        }
        let actual = buf.len() - HEADER_LEN;
        if declared != actual {
            return Err(ParseError::LengthMismatch { declared, actual });
        }
        let mut msg = MessageRef {
            buf,
            mi: None,
            mi256: None,
            fp: None,
        };
        let mut off = HEADER_LEN;
        while off < buf.len() {
            let (t, len, next) = attr_at(buf, off)?;
            if msg.fp.is_some() {
                return Err(ParseError::AfterFingerprint(t));
            }
            match t {
                attr::MESSAGE_INTEGRITY if msg.mi.is_none() && msg.mi256.is_none() => {
                    if len != 20 {
                        return Err(ParseError::BadIntegrityLength(t));
                    }
                    msg.mi = Some(off);
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.mi256.is_none() => {
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(ParseError::BadIntegrityLength(t));
                    }
                    msg.mi256 = Some(off);
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(ParseError::BadIntegrityLength(t));
                    }
                    msg.fp = Some(off);
                }
                _ => {}
            }
            off = next;
        }
        Ok(msg)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The method from the message type with the class bits taken out (RFC 8489 §5); one
    /// without a constant in [`Method`] comes back as its number.
    pub fn method(&self) -> Method {
        let t = be16(self.buf, 0);
        Method((t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2))
    }

    /// The class from the two C bits of the message type (RFC 8489 §5).
    pub fn class(&self) -> Class {
        match (self.buf[0] & 0x01, self.buf[1] & 0x10) {
            (0, 0) => Class::Request,
            (0, _) => Class::Indication,
            (_, 0) => Class::Success,
            _ => Class::Error,
        }
    }

    /// The transaction id, for the response and for decoding XOR addresses.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..HEADER_LEN]);
        TransactionId(id)
    }

    /// The attributes that count, in order: everything before the first integrity attribute,
    /// then MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT where present.
    pub fn attributes(&self) -> Attributes<'a> {
        let protected_end = [self.mi, self.mi256, self.fp]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.buf.len());
        Attributes {
            buf: self.buf,
            off: HEADER_LEN,
            protected_end,
            integrity: [self.mi, self.mi256, self.fp],
        }
    }

    /// The value of the first attribute of type `t` that counts.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(ty, _)| *ty == t).map(|(_, v)| v)
    }

    /// Every counted value of type `t`, e.g. the XOR-PEER-ADDRESSes of a CreatePermission.
    pub fn get_all(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes()
            .filter(move |(ty, _)| *ty == t)
            .map(|(_, v)| v)
    }

    /// Comprehension-required attributes not in `known` (RFC 8489 §6.3: answer 420 with them).
    /// Integrity and fingerprint attributes are handled by this codec and never reported.
    pub fn unknown_comprehension_required(&self, known: &[u16]) -> attr::UnknownAttributes {
        let mut unknown = attr::UnknownAttributes::new();
        for (t, _) in self.attributes() {
            let handled = matches!(
                t,
                attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
            );
            if attr::is_comprehension_required(t) && !handled && !known.contains(&t) {
                unknown.insert(t);
            }
        }
        unknown
    }

    /// Which integrity attribute [`verify_integrity`](Self::verify_integrity) checks:
    /// MESSAGE-INTEGRITY-SHA256 when present, else MESSAGE-INTEGRITY.
    pub fn integrity_algorithm(&self) -> Option<IntegrityAlgorithm> {
        match (self.mi256, self.mi) {
            (Some(_), _) => Some(IntegrityAlgorithm::Sha256),
            (None, Some(_)) => Some(IntegrityAlgorithm::Sha1),
            (None, None) => None,
        }
    }

    /// Checks the message's HMAC with `key` (the long-term key for the user, RFC 8489 §9.2.2,
    /// or the short-term password). When both attributes are present only
    /// MESSAGE-INTEGRITY-SHA256 is used (RFC 8489 §9.1.3/§9.2.4). Constant-time comparison.
    pub fn verify_integrity(&self, key: &[u8]) -> Integrity {
        let (off, algorithm) = match (self.mi256, self.mi) {
            (Some(off), _) => (off, hmac::HMAC_SHA256),
            (None, Some(off)) => (off, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
            (None, None) => return Integrity::Missing,
        };
        let len = usize::from(be16(self.buf, off + 2));
        let Some(received) = self.buf.get(off + 4..off + 4 + len) else {
            return Integrity::Bad;
        };
        let tag = hmac_over(algorithm, key, self.buf, off, 4 + len);
        match tag.as_ref().get(..len) {
            Some(expected) if constant_time_eq(expected, received) => Integrity::Ok,
            _ => Integrity::Bad,
        }
    }

    /// `None` when there is no FINGERPRINT; else whether its CRC-32 matches (RFC 8489 §14.7).
    pub fn has_valid_fingerprint(&self) -> Option<bool> {
        let off = self.fp?;
        let received = be32(self.buf, off + 4);
        // FINGERPRINT is last (parse enforces it), so the header length already covers it.
        Some(crc32fast::hash(&self.buf[..off]) ^ FINGERPRINT_XOR == received)
    }

    /// The first counted address of type `t`, decoded as an XOR address.
    pub fn xor_address(&self, t: u16) -> Option<Result<SocketAddr, ParseError>> {
        let tid = self.transaction_id();
        self.get(t).map(|v| attr::decode_xor_address(v, &tid))
    }

    /// Every counted address of type `t` (CreatePermission may carry several peers).
    pub fn xor_addresses(
        &self,
        t: u16,
    ) -> impl Iterator<Item = Result<SocketAddr, ParseError>> + 'a {
        let tid = self.transaction_id();
        self.get_all(t)
            .map(move |v| attr::decode_xor_address(v, &tid))
    }

    /// A 4-byte attribute such as LIFETIME or CHANNEL-NUMBER as a big-endian u32.
    pub fn u32_attr(&self, t: u16) -> Option<Result<u32, ParseError>> {
        self.get(t).map(attr::decode_u32)
    }

    /// ERROR-CODE as (code, reason).
    pub fn error_code(&self) -> Option<Result<(u16, &'a str), ParseError>> {
        self.get(attr::ERROR_CODE).map(attr::decode_error_code)
    }
}

/// Iterator over the attributes of a [`MessageRef`] that count; see
/// [`MessageRef::attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    off: usize,
    protected_end: usize,
    integrity: [Option<usize>; 3],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.off < self.buf.len() {
            let start = self.off;
            // The layout was validated by parse; a failure here only ends the iteration.
            let (t, len, next) = attr_at(self.buf, start).ok()?;
            self.off = next;
            if start < self.protected_end || self.integrity.contains(&Some(start)) {
                return self.buf.get(start + 4..start + 4 + len).map(|v| (t, v));
            }
        }
        None
    }
}

/// Answers a Binding request (RFC 8489 §18.2): a success response with XOR-MAPPED-ADDRESS set
/// to `from`, SOFTWARE and FINGERPRINT; or, when the request carries comprehension-required
/// attributes outside [`attr::BINDING_UNDERSTOOD`], a 420 error response listing them in
/// UNKNOWN-ATTRIBUTES (§6.3.1.1), with SOFTWARE and FINGERPRINT.
///
/// Writes into `buf` (cleared first) and returns the length to send. Returns 0, with `buf`
/// empty, when nothing must be sent: the message is not a Binding request (a Binding
/// indication is a keepalive and gets no answer), or it carries a FINGERPRINT that does not
/// match (RFC 8489 §7.3: not a STUN message after all).
pub fn binding_response(req: &MessageRef<'_>, from: SocketAddr, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    if req.method() != Method::BINDING || req.class() != Class::Request {
        return 0;
    }
    if req.has_valid_fingerprint() == Some(false) {
        return 0;
    }
    let unknown = req.unknown_comprehension_required(attr::BINDING_UNDERSTOOD);
    let tid = req.transaction_id();
    if unknown.is_empty() {
        let mut w = MessageWriter::new(buf, Method::BINDING, Class::Success, tid);
        w.xor_address(attr::XOR_MAPPED_ADDRESS, from)
            .attr(attr::SOFTWARE, SOFTWARE_NAME.as_bytes())
            .fingerprint();
        w.finish()
    } else {
        let mut w = MessageWriter::new(buf, Method::BINDING, Class::Error, tid);
        w.error_code(420, "Unknown Attribute")
            .unknown_attributes(&unknown)
            .attr(attr::SOFTWARE, SOFTWARE_NAME.as_bytes())
            .fingerprint();
        w.finish()
    }
}

/// Reads the attribute header at `off`: (type, value length, offset of the next attribute).
fn attr_at(buf: &[u8], off: usize) -> Result<(u16, usize, usize), ParseError> {
    let header = buf
        .get(off..off + 4)
        .ok_or(ParseError::TruncatedAttribute(0))?;
    let t = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let next = off + 4 + padded4(len);
    if next > buf.len() {
        return Err(ParseError::TruncatedAttribute(t));
    }
    Ok((t, len, next))
}

/// HMAC over `buf[..attr_off]` with the header length set as if the integrity attribute
/// (`attr_total` bytes including its header) ended the message (RFC 8489 §14.5).
pub(crate) fn hmac_over(
    algorithm: hmac::Algorithm,
    key: &[u8],
    buf: &[u8],
    attr_off: usize,
    attr_total: usize,
) -> hmac::Tag {
    let key = hmac::Key::new(algorithm, key);
    let adjusted = (attr_off + attr_total - HEADER_LEN) as u16;
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&buf[..2]);
    ctx.update(&adjusted.to_be_bytes());
    ctx.update(&buf[4..attr_off]);
    ctx.sign()
}

pub(crate) const fn padded4(len: usize) -> usize {
    (len + 3) & !3
}

fn be16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

fn be32(buf: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
