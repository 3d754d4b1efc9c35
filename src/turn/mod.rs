//! STUN and TURN over UDP (RFC 8489, RFC 8656). Credentials and nonces live in [`auth`]; the
//! protocol core ([`server`], [`allocation`], [`policy`]) is a set of state machines with time
//! passed in; [`relay`] is the IO layer that owns the sockets and drives one core per worker
//! thread; [`service`] starts and stops it all.

pub mod allocation;
pub mod auth;
pub mod config;
pub mod framing;
pub mod policy;
pub mod relay;
pub mod server;
pub mod service;
pub mod stream;
