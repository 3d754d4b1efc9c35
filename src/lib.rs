//! signalbox: one binary for private video calls. The modules follow the server's concerns;
//! protocol logic lives in I/O-free state machines, and the async code around them is a thin
//! shell (see each module's notes).

pub mod access;
pub mod app;
pub mod caps;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod demux;
pub mod hex;
pub mod http;
pub mod keyfile;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod selftest;
pub mod signaling;
pub mod socketio;
pub mod tls;
pub mod turn;
pub mod web;
