//! How the world's clients build their requests: the codec's writer, REST credentials of the
//! kind an operation picks, nonces minted with the server's key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use signalbox_stun::{attr, Class, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::auth;

use super::tables::{addr, expiry, pattern, CredKind, CLIENTS, CRED_KINDS, REALM, SECRETS, USERS};
use super::world::World;

impl World {
    /// An Allocate request. `flags`: 1 LIFETIME, 2 family IPv6, 4 an unknown family, 8
    /// EVEN-PORT, 16 EVEN-PORT with R, 32 TCP instead of UDP, 64 RESERVATION-TOKEN (with 32:
    /// no REQUESTED-TRANSPORT at all), 128 an unknown comprehension-required attribute.
    pub(crate) fn allocate(&mut self, client: u8, cred: u8, flags: u8, lifetime: u8) -> Vec<u8> {
        self.signed(Method::ALLOCATE, client, cred, |w| {
            let no_transport = flags & 96 == 96;
            if !no_transport {
                let protocol = if flags & 32 == 0 { 17 } else { 6 };
                w.attr(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0]);
            }
            if flags & 1 != 0 {
                w.u32(attr::LIFETIME, u32::from(lifetime) * 60);
            }
            if flags & 2 != 0 {
                w.attr(
                    attr::REQUESTED_ADDRESS_FAMILY,
                    &[attr::FAMILY_IPV6, 0, 0, 0],
                );
            }
            if flags & 4 != 0 {
                w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[5, 0, 0, 0]);
            }
            if flags & 8 != 0 {
                w.attr(attr::EVEN_PORT, &[0]);
            }
            if flags & 16 != 0 {
                w.attr(attr::EVEN_PORT, &[0x80]);
            }
            if flags & 64 != 0 && !no_transport {
                w.attr(attr::RESERVATION_TOKEN, &[1; 8]);
            }
            if flags & 128 != 0 {
                w.attr(0x0030, &[0; 4]);
            }
        })
    }

    pub(crate) fn send_indication(&mut self, peer: u8, len: u8, flags: u8) -> Vec<u8> {
        let peer = self.peer(peer);
        let tid = self.next_tid();
        let mut msg = Vec::new();
        let mut w = MessageWriter::new(&mut msg, Method::SEND, Class::Indication, tid);
        if flags & 4 == 0 {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }
        if flags & 2 == 0 {
            w.attr(attr::DATA, &pattern(len));
        }
        if flags & 8 != 0 {
            w.attr(attr::DONT_FRAGMENT, &[]);
        }
        if flags & 1 != 0 {
            w.fingerprint();
        }
        w.finish();
        msg
    }

    pub(crate) fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut tid = [0x5a; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(tid)
    }

    /// A request from `client`, signed with the credential `cred` picks (user `cred % 3`).
    pub(crate) fn signed(
        &mut self,
        method: Method,
        client: u8,
        cred: u8,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let (_, five, _) = self.client(client);
        let kind = CRED_KINDS[usize::from(cred / 3) % CRED_KINDS.len()];
        let user = USERS[usize::from(cred % 3)];
        let expiry = expiry(kind);
        let username = match kind {
            CredKind::NoUser => expiry.to_string(),
            _ => format!("{expiry}:{user}"),
        };
        let secret = match kind {
            CredKind::WrongSecret => "not-the-secret",
            CredKind::OldSecret => SECRETS[1],
            _ => SECRETS[0],
        };
        let realm = match kind {
            CredKind::WrongRealm => "other.example",
            _ => REALM,
        };
        let now = self.now.unix_secs();
        let nonce = match kind {
            CredKind::StaleNonce => self.nonce(now.saturating_sub(700), five.client),
            CredKind::OtherClientsNonce => self.nonce(now, addr(CLIENTS[2])),
            _ => self.nonce(now, five.client),
        };
        let key = KEYS.with(|keys| {
            *keys
                .borrow_mut()
                .entry((username.clone(), secret, realm))
                .or_insert_with(|| {
                    let password = auth::rest_password(secret.as_bytes(), &username);
                    auth::long_term_key(&username, realm, &password)
                })
        });
        let tid = self.next_tid();
        let mut msg = Vec::new();
        let mut w = MessageWriter::new(&mut msg, method, Class::Request, tid);
        attrs(&mut w);
        if kind != CredKind::Unsigned {
            w.attr(attr::USERNAME, username.as_bytes())
                .attr(attr::REALM, realm.as_bytes())
                .attr(attr::NONCE, nonce.as_bytes());
            if kind == CredKind::Sha256 {
                w.integrity_sha256(&key);
            } else {
                w.integrity(&key);
            }
        }
        w.fingerprint();
        w.finish();
        msg
    }

    /// A nonce as the server mints it for `client` at `now` (the same key, so it verifies).
    fn nonce(&self, now: u64, client: SocketAddr) -> String {
        NONCES.with(|nonces| {
            let mut nonces = nonces.borrow_mut();
            if nonces.len() > 4096 {
                nonces.clear();
            }
            nonces
                .entry((now, client))
                .or_insert_with(|| self.nonces.mint(now, client))
                .clone()
        })
    }
}

/// (username, secret, realm): what a long-term key is derived from.
type KeyInputs = (String, &'static str, &'static str);

thread_local! {
    /// Long-term keys by (username, secret, realm), and nonces by (time, client), computed once:
    /// the clients' side of the hashing, which is not what is under test.
    static KEYS: RefCell<HashMap<KeyInputs, [u8; 16]>> = RefCell::new(HashMap::new());
    static NONCES: RefCell<HashMap<(u64, SocketAddr), String>> = RefCell::new(HashMap::new());
}
