//! STUN and TURN over UDP (RFC 8489, RFC 8656). The protocol core (`server`, `allocation`,
//! `policy`) is a set of state machines with time passed in; `relay` is the IO layer that owns
//! the sockets and drives one core per worker thread.

pub mod allocation;
pub mod config;
pub mod policy;
