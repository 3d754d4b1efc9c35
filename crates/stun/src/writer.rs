//! Builds a STUN message into a caller-owned `Vec<u8>` so the caller can reuse one buffer for
//! every response. The header's length field is kept current after each attribute, which is
//! what the integrity and fingerprint attributes hash over.

use std::net::SocketAddr;

use ring::hmac;

use super::{
    attr, hmac_over, padded4, Class, Method, TransactionId, FINGERPRINT_XOR, HEADER_LEN,
    MAGIC_COOKIE,
};

/// Largest message body the 16-bit length field can describe.
const MAX_BODY: usize = 0xFFFC;
/// RFC 8489 §14.8: the reason phrase is at most 127 characters (763 bytes).
const MAX_REASON_CHARS: usize = 127;

/// Appends a STUN message to a caller-owned buffer; see [`MessageWriter::new`].
///
/// Attributes are written in call order. Callers put MESSAGE-INTEGRITY,
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT last, in that order (RFC 8489 §14.5–14.7).
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    overflow: bool,
}

impl<'b> MessageWriter<'b> {
    /// Clears `buf` and writes the 20-byte header. `method` is masked to its 12 bits.
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageWriter {
            buf,
            overflow: false,
        }
    }

    /// Continues a message already in `buf` (built by another writer), e.g. to append
    /// integrity after patching bytes in tests.
    #[cfg(test)]
    pub(super) fn resume(buf: &'b mut Vec<u8>) -> Self {
        assert!(buf.len() >= HEADER_LEN, "resume needs a header");
        MessageWriter {
            buf,
            overflow: false,
        }
    }

    /// Appends an attribute, zero-padding its value to a multiple of 4 bytes.
    pub fn attr(&mut self, t: u16, value: &[u8]) -> &mut Self {
        if self.reserve(value.len()) {
            self.push_header(t, value.len());
            self.buf.extend_from_slice(value);
            self.pad();
        }
        self
    }

    /// Appends an XOR address attribute (XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS, …).
    pub fn xor_address(&mut self, t: u16, addr: SocketAddr) -> &mut Self {
        let mut value = [0u8; 20];
        let tid = self.transaction_id();
        let n = attr::encode_xor_address(addr, &tid, &mut value);
        self.attr(t, &value[..n])
    }

    /// Appends a 4-byte big-endian attribute (LIFETIME, …).
    pub fn u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.attr(t, &v.to_be_bytes())
    }

    /// Appends ERROR-CODE (RFC 8489 §14.8): class `code / 100` (3–6), number `code % 100`,
    /// and `reason` cut to 127 characters.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => &reason[..cut],
            None => reason,
        };
        let class = (code / 100) as u8 & 0x07;
        let number = (code % 100) as u8;
        if self.reserve(4 + reason.len()) {
            self.push_header(attr::ERROR_CODE, 4 + reason.len());
            self.buf.extend_from_slice(&[0, 0, class, number]);
            self.buf.extend_from_slice(reason.as_bytes());
            self.pad();
        }
        self
    }

    /// Appends UNKNOWN-ATTRIBUTES (RFC 8489 §14.13) listing `types`.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        if self.reserve(2 * types.len()) {
            self.push_header(attr::UNKNOWN_ATTRIBUTES, 2 * types.len());
            for t in types {
                self.buf.extend_from_slice(&t.to_be_bytes());
            }
            self.pad();
        }
        self
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over the message so far, with the
    /// length field already counting this attribute (RFC 8489 §14.5).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        self.append_hmac(
            attr::MESSAGE_INTEGRITY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            key,
        )
    }

    /// Appends a full-length (32-byte) MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.append_hmac(attr::MESSAGE_INTEGRITY_SHA256, hmac::HMAC_SHA256, key)
    }

    /// Appends FINGERPRINT: CRC-32 of the message so far XOR 0x5354554e (RFC 8489 §14.7).
    pub fn fingerprint(&mut self) -> &mut Self {
        if self.reserve(4) {
            self.set_length(self.body_len() + 8);
            let crc = crc32fast::hash(self.buf) ^ FINGERPRINT_XOR;
            self.push_header(attr::FINGERPRINT, 4);
            self.buf.extend_from_slice(&crc.to_be_bytes());
        }
        self
    }

    /// The total message length. When an attribute did not fit the 16-bit length field the
    /// buffer is cleared and 0 returned, so a truncated message is never sent.
    pub fn finish(self) -> usize {
        if self.overflow {
            self.buf.clear();
            return 0;
        }
        self.buf.len()
    }

    fn append_hmac(&mut self, t: u16, algorithm: hmac::Algorithm, key: &[u8]) -> &mut Self {
        let size = algorithm.digest_algorithm().output_len();
        if self.reserve(size) {
            let off = self.buf.len();
            // hmac_over hashes the header with the length adjusted to include this attribute.
            let tag = hmac_over(algorithm, key, self.buf, off, 4 + size);
            self.push_header(t, size);
            self.buf.extend_from_slice(tag.as_ref());
        }
        self
    }

    /// Whether a value of `len` bytes still fits; marks the message as overflowed if not.
    fn reserve(&mut self, len: usize) -> bool {
        if self.overflow || self.body_len() + 4 + padded4(len) > MAX_BODY {
            self.overflow = true;
            return false;
        }
        true
    }

    /// Writes a TLV header and updates the message length to include the padded value.
    fn push_header(&mut self, t: u16, len: usize) {
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        self.set_length(self.body_len() + padded4(len));
    }

    fn pad(&mut self) {
        let padded = HEADER_LEN + padded4(self.body_len());
        self.buf.resize(padded, 0);
    }

    fn body_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    fn set_length(&mut self, len: usize) {
        self.buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    }

    fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buf[8..HEADER_LEN]);
        TransactionId(id)
    }
}

/// RFC 8489 §5: M11..M7 C1 M6..M4 C0 M3..M0.
fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = match class {
        Class::Request => 0x0000,
        Class::Indication => 0x0010,
        Class::Success => 0x0100,
        Class::Error => 0x0110,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | c
}
