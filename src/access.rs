//! Who may join a room: everyone (`[access] mode = "open"`), or only holders of an invite
//! token signed by this server (`mode = "token"`).
//!
//! A token is `BASE64URL(payload) "." BASE64URL(HMAC-SHA256(key, "signalbox-invite." payload))`
//! with the payload a small JSON object: `r` the room, `e` the expiry in unix seconds, `n` an
//! optional display name, which then is the name the others see (the `name` of the `join` is
//! ignored), and `h: true` on a host invitation, whose holder becomes the room's host. Tokens are stateless: the server keeps no list, so an invite cannot be revoked one
//! by one; replacing the key file revokes all of them.
//!
//! An invitation to a space (`signalbox invite --space S`, for `hello`) is the same token with
//! `r` set to `space:S`. A `:` cannot occur in a room or space name, so a room invitation never
//! admits to a space and a space invitation never to a room.
//!
//! The key lives in a file (`[access] key_file`, by default `access.key` next to the generated
//! certificate) that is created once with 256 random bits and read on every start, so invites
//! survive restarts and `signalbox invite` on the same machine signs with the same key as the
//! running server. Checking is pure: `now` comes in.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The `[access]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub mode: AccessMode,
    /// Signing key file; `None` = `access.key` in `[tls] generated_dir`.
    #[serde(deserialize_with = "optional_path")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// Anyone who knows a room's name may join it.
    #[default]
    Open,
    /// A `join` must carry a valid invite token for that room.
    Token,
}

impl AccessConfig {
    /// The key file, with the default applied.
    pub fn key_path(&self, generated_dir: &Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| generated_dir.join("access.key"))
    }
}

fn optional_path<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(de)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

/// Longest token accepted, in bytes; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 1024;

const DOMAIN: &[u8] = b"signalbox-invite.";

/// What `r` of a space invitation starts with.
const SPACE_PREFIX: &str = "space:";

/// The `r` of an invitation to `space`.
pub fn space_target(space: &str) -> String {
    format!("{SPACE_PREFIX}{space}")
}

/// The server's invite-signing key.
pub struct AccessKey(hmac::Key);

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessKey(…)")
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} must hold 64 hexadecimal characters (a 256-bit key)")]
    Format { path: String },
    #[error("cannot make {path} readable by its owner only (mode 0600): {source}")]
    Permissions {
        path: String,
        source: std::io::Error,
    },
    #[error("no random numbers from the system")]
    Random,
}

impl AccessKey {
    pub fn from_bytes(bytes: &[u8]) -> AccessKey {
        AccessKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the key file, creating it (mode 0600, with its directory) when it does not exist;
    /// a key file that exists is set to mode 0600 too.
    pub fn load_or_create(path: &Path) -> Result<AccessKey, KeyFileError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = Self::parse_file(&text, &shown)?;
                crate::keyfile::restrict_to_owner(path).map_err(|source| {
                    KeyFileError::Permissions {
                        path: shown.clone(),
                        source,
                    }
                })?;
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyFileError::Read {
                    path: shown,
                    source,
                })
            }
        }
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| KeyFileError::Random)?;
        let hex = crate::hex::encode(&bytes);
        let create = |source| KeyFileError::Create {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, crate::keyfile::KEY_MODE);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{hex}\n").as_bytes())
                    .map_err(create)?;
                Ok(Self::from_bytes(&bytes))
            }
            // Another process (the server, or a second `invite`) made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
                    path: shown.clone(),
                    source,
                })?;
                Self::parse_file(&text, &shown)
            }
            Err(e) => Err(create(e)),
        }
    }

    fn parse_file(text: &str, shown: &str) -> Result<AccessKey, KeyFileError> {
        let hex = text.trim();
        let format = || KeyFileError::Format {
            path: shown.to_owned(),
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format());
        }
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format())?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// What an invite grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    #[serde(rename = "r")]
    pub room: String,
    #[serde(rename = "e")]
    pub expiry: u64,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A host invitation: its holder becomes the room's host when joining.
    #[serde(rename = "h", default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
}

/// Why a token does not let its holder in. All of them become the signaling error `forbidden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this room needs an invitation: join with a `token`")]
    Missing,
    #[error("the invitation token is not valid")]
    Invalid,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation is for another room")]
    OtherRoom,
    #[error("this space needs an invitation: say hello with a `token`")]
    MissingForSpace,
    #[error("the invitation is for another space (or for a room)")]
    OtherSpace,
}

/// Signs `invite` into a token.
pub fn sign(key: &AccessKey, invite: &Invite) -> String {
    // Serializing a struct of strings and a number cannot fail.
    let json = serde_json::to_vec(invite).expect("an invite always serializes");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = hmac::sign(&key.0, &signed_bytes(&payload));
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks `token` for a join of `room` at `now` (unix seconds).
pub fn verify(key: &AccessKey, token: &str, room: &str, now: u64) -> Result<Invite, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid);
    }
    let (payload, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Invalid)?;
    // Constant-time comparison inside `ring`.
    hmac::verify(&key.0, &signed_bytes(payload), &tag).map_err(|_| TokenError::Invalid)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid)?;
    let invite: Invite = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
    if invite.room != room {
        return Err(TokenError::OtherRoom);
    }
    if invite.expiry <= now {
        return Err(TokenError::Expired);
    }
    Ok(invite)
}

fn signed_bytes(payload: &str) -> Vec<u8> {
    [DOMAIN, payload.as_bytes()].concat()
}

/// The join rule the signaling shell applies before a peer enters a room.
#[derive(Debug)]
pub enum AccessPolicy {
    Open,
    Token(AccessKey),
}

impl AccessPolicy {
    /// [`AccessPolicy::check_join`] for a `hello` of `space`: it needs a space invitation.
    pub fn check_hello(
        &self,
        space: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<Option<Invite>, TokenError> {
        match self.check_join(&space_target(space), token, now) {
            Err(TokenError::Missing) => Err(TokenError::MissingForSpace),
            Err(TokenError::OtherRoom) => Err(TokenError::OtherSpace),
            other => other,
        }
    }

    /// `Ok(Some(invite))` with what the token grants (a fixed display name, the host role),
    /// `Ok(None)` when no token is needed, `Err` when the join is refused.
    pub fn check_join(
        &self,
        room: &str,
        token: Option<&str>,
        now: u64,
    ) -> Result<Option<Invite>, TokenError> {
        match self {
            AccessPolicy::Open => Ok(None),
            AccessPolicy::Token(key) => {
                let token = token.ok_or(TokenError::Missing)?;
                verify(key, token, room, now).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AccessKey {
        AccessKey::from_bytes(&[7; 32])
    }

    fn invite(room: &str, expiry: u64) -> Invite {
        Invite {
            room: room.into(),
            expiry,
            name: None,
            host: false,
        }
    }

    #[test]
    fn a_signed_token_admits_its_room_until_it_expires() {
        let t = sign(&key(), &invite("standup", 1000));
        assert_eq!(
            verify(&key(), &t, "standup", 999),
            Ok(invite("standup", 1000))
        );
        assert_eq!(
            verify(&key(), &t, "standup", 1000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_for_another_room_is_refused() {
        let t = sign(&key(), &invite("a", 1000));
        assert_eq!(verify(&key(), &t, "b", 1), Err(TokenError::OtherRoom));
    }

    #[test]
    fn a_token_signed_with_another_key_or_altered_is_refused() {
        let t = sign(&AccessKey::from_bytes(&[8; 32]), &invite("a", 1000));
        assert_eq!(verify(&key(), &t, "a", 1), Err(TokenError::Invalid));
        let good = sign(&key(), &invite("a", 1000));
        let (payload, tag) = good.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"r":"a","e":99999}"#);
        assert_eq!(
            verify(&key(), &format!("{forged}.{tag}"), "a", 1),
            Err(TokenError::Invalid)
        );
        assert_eq!(verify(&key(), payload, "a", 1), Err(TokenError::Invalid));
        for junk in ["", ".", "a.b", "!!.??", &"x".repeat(5000)] {
            assert_eq!(
                verify(&key(), junk, "a", 1),
                Err(TokenError::Invalid),
                "{junk:.20}"
            );
        }
    }

    #[test]
    fn tokens_are_url_safe() {
        let t = sign(
            &key(),
            &Invite {
                room: "r".into(),
                expiry: u64::MAX,
                name: Some("Ann ünd Bob?&#".into()),
                host: true,
            },
        );
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    }

    #[test]
    fn the_name_in_a_token_is_the_name_the_peer_gets() {
        let t = sign(
            &key(),
            &Invite {
                room: "r".into(),
                expiry: 10,
                name: Some("Ann".into()),
                host: false,
            },
        );
        let policy = AccessPolicy::Token(key());
        let invite = policy.check_join("r", Some(&t), 1).expect("admitted");
        assert_eq!(invite.and_then(|i| i.name), Some("Ann".into()));
        assert_eq!(policy.check_join("r", None, 1), Err(TokenError::Missing));
        assert_eq!(AccessPolicy::Open.check_join("r", None, 1), Ok(None));
    }

    #[test]
    fn a_host_invitation_says_so_and_a_plain_one_keeps_its_old_form() {
        let mut invite = invite("r", 10);
        let plain = sign(&key(), &invite);
        let payload = URL_SAFE_NO_PAD
            .decode(plain.split('.').next().unwrap())
            .unwrap();
        assert_eq!(payload, br#"{"r":"r","e":10}"#);
        invite.host = true;
        let host = sign(&key(), &invite);
        let policy = AccessPolicy::Token(key());
        assert!(
            policy
                .check_join("r", Some(&host), 1)
                .unwrap()
                .unwrap()
                .host
        );
        assert!(
            !policy
                .check_join("r", Some(&plain), 1)
                .unwrap()
                .unwrap()
                .host
        );
    }

    #[test]
    fn space_and_room_invitations_do_not_admit_to_each_other() {
        let policy = AccessPolicy::Token(key());
        let space = sign(&key(), &invite(&space_target("team"), 10));
        let room = sign(&key(), &invite("team", 10));
        assert!(policy.check_hello("team", Some(&space), 1).is_ok());
        assert_eq!(
            policy.check_hello("team", Some(&room), 1),
            Err(TokenError::OtherSpace)
        );
        assert_eq!(
            policy.check_hello("other", Some(&space), 1),
            Err(TokenError::OtherSpace)
        );
        assert_eq!(
            policy.check_join("team", Some(&space), 1),
            Err(TokenError::OtherRoom)
        );
        assert_eq!(
            policy.check_hello("team", None, 1),
            Err(TokenError::MissingForSpace)
        );
        assert_eq!(
            policy.check_hello("team", Some(&space), 10),
            Err(TokenError::Expired)
        );
        assert_eq!(AccessPolicy::Open.check_hello("team", None, 1), Ok(None));
    }

    #[test]
    fn the_key_file_is_made_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("certs/access.key");
        let a = AccessKey::load_or_create(&path).unwrap();
        let t = sign(&a, &invite("r", 10));
        let b = AccessKey::load_or_create(&path).unwrap();
        assert!(verify(&b, &t, "r", 1).is_ok());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(), 0o600, "only the owner may read the key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        AccessKey::load_or_create(&path).unwrap();
        assert_eq!(mode(), 0o600, "a reused key is closed off too");
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.key");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            AccessKey::load_or_create(&path),
            Err(KeyFileError::Format { .. })
        ));
    }
}
