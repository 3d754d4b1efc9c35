//! What the load generator puts on the wire: the benchmark payload (sequence number and send
//! time, so round trips and loss are measured from the packets themselves) and ChannelData
//! framing.

use std::time::Instant;

use signalbox_stun::channel_data;
use signalbox_turn_proto::client::{frame_channel_data, ChannelNumber, Transport};

/// Marks a benchmark payload, so stray datagrams are never counted.
pub const MAGIC: [u8; 4] = *b"SBX1";
/// Bytes of header inside every payload; payloads are padded with zeros to the packet size.
pub const PAYLOAD_HEADER: usize = 24;
/// Where in a payload its [`Kind`] byte is.
pub const KIND_OFFSET: usize = 4;
/// The smallest packet the benchmark sends.
pub const MIN_PAYLOAD: usize = PAYLOAD_HEADER;

/// Direction of a payload in the pairs workload (a ping is answered by a pong).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ping = 0,
    Pong = 1,
}

/// The decoded payload header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub kind: Kind,
    /// Index of the client that sent the ping.
    pub client: u32,
    pub seq: u32,
    /// Send time in nanoseconds since the run's epoch.
    pub sent_ns: u64,
}

impl Payload {
    /// Writes the header into `buf` (at least [`PAYLOAD_HEADER`] bytes).
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC);
        buf[KIND_OFFSET] = self.kind as u8;
        buf[5..8].fill(0);
        buf[8..12].copy_from_slice(&self.client.to_be_bytes());
        buf[12..16].copy_from_slice(&self.seq.to_be_bytes());
        buf[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    pub fn read(buf: &[u8]) -> Option<Payload> {
        if buf.len() < PAYLOAD_HEADER || buf[0..4] != MAGIC {
            return None;
        }
        let kind = match buf[KIND_OFFSET] {
            0 => Kind::Ping,
            1 => Kind::Pong,
            _ => return None,
        };
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&buf[16..24]);
        Some(Payload {
            kind,
            client: u32_at(8),
            seq: u32_at(12),
            sent_ns: u64::from_be_bytes(t),
        })
    }
}

/// Nanoseconds since `epoch` (the clock all payload timestamps of a run share).
pub fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// A ChannelData packet (RFC 8656 §12.4) for `channel` carrying a benchmark payload of
/// `size` bytes, framed by the TURN client; the payload header is filled in per send with
/// [`stamp`].
pub fn channel_packet(channel: ChannelNumber, size: usize) -> Vec<u8> {
    let size = size.max(MIN_PAYLOAD);
    let mut packet = Vec::with_capacity(channel_data::HEADER_LEN + size);
    frame_channel_data(channel, &vec![0u8; size], Transport::Udp, &mut packet)
        .expect("invariant: benchmark payloads fit one datagram");
    packet
}

/// Fills in the payload header of a packet made by [`channel_packet`] (after the ChannelData
/// header).
pub fn stamp(packet: &mut [u8], payload: Payload) {
    payload.write(&mut packet[channel_data::HEADER_LEN..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_survives_a_round_trip_through_a_channel_packet() {
        let channel = ChannelNumber::new(0x4001).expect("a channel number");
        let mut p = channel_packet(channel, 100);
        assert_eq!(p.len(), 104);
        let payload = Payload {
            kind: Kind::Pong,
            client: 7,
            seq: 123_456,
            sent_ns: 9_876_543_210,
        };
        stamp(&mut p, payload);
        let (ch, data) = channel_data::parse(&p).expect("valid channel data");
        assert_eq!(ch, 0x4001);
        assert_eq!(data.len(), 100);
        assert_eq!(Payload::read(data), Some(payload));
    }

    #[test]
    fn foreign_datagrams_are_not_payloads() {
        assert_eq!(Payload::read(&[0u8; 40]), None);
        assert_eq!(Payload::read(b"SBX1"), None);
    }
}
