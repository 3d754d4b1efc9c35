//! The TURN server core (RFC 8656 on RFC 8489 STUN), with no IO: datagrams, frames and time go
//! in, transmissions and timers come out.
//!
//! - [`server::Core`]: one worker's protocol engine; every input returns an [`server::Action`].
//! - [`allocation`]: the allocation table with its permissions, channels, lifetimes and quotas.
//! - [`auth`]: REST-API credentials (shared secrets), stateless nonces, the unauthenticated-answer
//!   rate limiter.
//! - [`policy`]: which peer addresses a relay may reach (never this host), decided for every
//!   request and every packet.
//! - [`framing`]: splitting a TCP/TLS byte stream into STUN messages and ChannelData frames.
//! - [`ports`]: the relay port range.
//!
//! The crate cannot import tokio, the server's configuration or its metrics: the IO layer passes
//! in sockets (through [`server::RelaySockets`]), time ([`allocation::Millis`]) and secrets, and
//! reads the core's counters ([`counters::Counters`]) to publish them.
//!
//! Every public item is documented (`missing_docs`), and nothing is public that the crate's
//! users cannot reach (`unreachable_pub`): the workspace lints apply here.

pub mod allocation;
pub mod auth;
pub mod counters;
pub mod framing;
pub mod policy;
pub mod ports;
pub mod server;
