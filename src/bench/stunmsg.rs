//! The few STUN message pieces the benchmark client needs (RFC 8489 / RFC 8656): building
//! requests with long-term-credential integrity and reading responses.
//!
//! It mirrors the names of the server's codec (`crate::stun`) so the client reads the same
//! either way; it exists so the benchmark can drive any TURN server independently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Method(pub u16);

impl Method {
    pub const BINDING: Method = Method(0x001);
    pub const ALLOCATE: Method = Method(0x003);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
}

pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
}

fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0;
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Appends a STUN message to a caller-owned buffer.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> MessageWriter<'b> {
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageWriter { buf }
    }

    fn set_length(&mut self, len: usize) {
        let l = (len as u16).to_be_bytes();
        self.buf[2] = l[0];
        self.buf[3] = l[1];
    }

    pub fn attr(&mut self, t: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
        let len = self.buf.len() - HEADER_LEN;
        self.set_length(len);
        self
    }

    pub fn u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.attr(t, &v.to_be_bytes())
    }

    pub fn xor_address(&mut self, t: u16, addr: SocketAddr) -> &mut Self {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = vec![0u8];
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.push(2);
                v.extend_from_slice(&port.to_be_bytes());
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                mask[4..].copy_from_slice(&self.buf[8..20]);
                v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
            }
        }
        self.attr(t, &v)
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1 with the long-term key), RFC 8489 §14.5.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let len = self.buf.len() - HEADER_LEN + 24;
        self.set_length(len);
        let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = hmac::sign(&k, self.buf);
        self.attr(attr::MESSAGE_INTEGRITY, tag.as_ref())
    }

    pub fn finish(self) -> usize {
        self.buf.len()
    }
}

/// A borrowed view of a received STUN message.
pub struct MessageRef<'a> {
    buf: &'a [u8],
}

impl<'a> MessageRef<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<MessageRef<'a>, &'static str> {
        if buf.len() < HEADER_LEN || buf[0] & 0xC0 != 0 {
            return Err("not a STUN message");
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err("no magic cookie");
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if buf.len() < HEADER_LEN + len {
            return Err("truncated");
        }
        Ok(MessageRef {
            buf: &buf[..HEADER_LEN + len],
        })
    }

    fn mtype(&self) -> u16 {
        u16::from_be_bytes([self.buf[0], self.buf[1]])
    }

    pub fn method(&self) -> Method {
        let t = self.mtype();
        Method((t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80))
    }

    pub fn class(&self) -> Class {
        let t = self.mtype();
        match ((t >> 4) & 1) | ((t >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..20]);
        TransactionId(t)
    }

    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        let mut i = HEADER_LEN;
        while i + 4 <= self.buf.len() {
            let at = u16::from_be_bytes([self.buf[i], self.buf[i + 1]]);
            let len = u16::from_be_bytes([self.buf[i + 2], self.buf[i + 3]]) as usize;
            let value = self.buf.get(i + 4..i + 4 + len)?;
            if at == t {
                return Some(value);
            }
            i += 4 + len.div_ceil(4) * 4;
        }
        None
    }

    pub fn xor_address(&self, t: u16) -> Option<Result<SocketAddr, &'static str>> {
        let v = self.get(t)?;
        if v.len() < 8 {
            return Some(Err("short address"));
        }
        let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
        Some(match (v[1], v.len()) {
            (1, 8) => {
                let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
                Ok(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
            }
            (2, 20) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                o[4..].copy_from_slice(&self.buf[8..20]);
                for (b, x) in o.iter_mut().zip(&v[4..20]) {
                    *b ^= x;
                }
                Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port))
            }
            _ => Err("bad address family"),
        })
    }

    /// The error code of an error response (e.g. 401), if any.
    pub fn error_code(&self) -> Option<u16> {
        let v = self.get(attr::ERROR_CODE)?;
        (v.len() >= 4).then(|| (v[2] & 0x07) as u16 * 100 + v[3] as u16)
    }
}

/// REST-API credentials: the password for `username` is base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    use base64::Engine as _;
    let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&k, username.as_bytes()))
}

/// The long-term key MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_encoding_matches_rfc_examples() {
        assert_eq!(message_type(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(Method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(Method::ALLOCATE, Class::Error), 0x0113);
        let mut buf = Vec::new();
        let tid = TransactionId([7; 12]);
        let mut w = MessageWriter::new(&mut buf, Method::CHANNEL_BIND, Class::Success, tid);
        w.xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:5000".parse().unwrap());
        w.finish();
        let m = MessageRef::parse(&buf).unwrap();
        assert_eq!(m.method(), Method::CHANNEL_BIND);
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.transaction_id(), tid);
        assert_eq!(
            m.xor_address(attr::XOR_PEER_ADDRESS),
            Some(Ok("127.0.0.1:5000".parse().unwrap()))
        );
    }
}
