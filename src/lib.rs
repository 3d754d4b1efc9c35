//! signalbox: one binary for private video calls. The modules follow the server's concerns;
//! protocol logic lives in I/O-free state machines, and the async code around them is a thin
//! shell (see each module's notes).

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod signaling;
pub mod stun;
pub mod tls;
pub mod turn;
pub mod web;
