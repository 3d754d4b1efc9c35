//! TURN relay (RFC 8656): credentials and nonces ([`auth`]); the allocation core and its IO
//! shell build on the codec in [`crate::stun`].

pub mod auth;
