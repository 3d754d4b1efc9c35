//! UDP IO for the relay workers, with no protocol knowledge: batched receive and send
//! ([`batch`], recvmmsg/sendmmsg into slots with headroom for an in-place header), the batch
//! window that paces a worker's wake-ups under load ([`pace`]), and socket set-up ([`socket`]).
//! The role quinn-udp plays for quinn.

pub mod batch;
pub mod pace;
pub mod socket;
