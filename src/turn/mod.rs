//! The TURN server's IO shell: [`relay`] owns the UDP sockets and drives one sans-IO core
//! (`signalbox_turn_proto`) per worker thread, [`stream`] frames TCP and TLS clients into the
//! same workers, and [`service`] starts and stops it all.

pub mod relay;
pub mod service;
pub mod stream;
