//! ChannelData messages (RFC 8656 §12.4) and the framing of a byte stream into STUN and
//! ChannelData messages (RFC 8656 §12.5). Everything here is a few comparisons on the first
//! four bytes: this is the relay's per-packet path.

/// First valid channel number (RFC 8656 §12). Numbers from 0x5000 up are reserved, and a
/// ChannelData message using one is discarded (§12.6).
pub const MIN_CHANNEL: u16 = 0x4000;
/// Last valid channel number (RFC 8656 §12); see [`MIN_CHANNEL`].
pub const MAX_CHANNEL: u16 = 0x4FFF;
/// Size of the ChannelData header: channel number and length.
pub const HEADER_LEN: usize = 4;

/// Why a stream cannot be split into messages; the connection must be closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    /// The first byte (carried) starts with `10` or `11`, neither STUN (`00`) nor ChannelData
    /// (`01`) (RFC 7983): the stream is not TURN, or has lost its framing.
    #[error("stream data starting with 0x{0:02x} is neither STUN nor ChannelData")]
    NotStunOrChannelData(u8),
}

/// Splits a ChannelData datagram into (channel, application data).
///
/// `None` when the channel number is outside 0x4000–0x4FFF or the datagram is shorter than
/// the header plus the declared length (RFC 8656 §12.6: discard). Bytes after the declared
/// length are padding or junk and are ignored.
pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
    let [c0, c1, l0, l1, data @ ..] = buf else {
        return None;
    };
    let channel = u16::from_be_bytes([*c0, *c1]);
    if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    data.get(..len).map(|d| (channel, d))
}

/// Writes the 4-byte ChannelData header, e.g. into headroom left before received data.
pub fn write_header(out: &mut [u8; 4], channel: u16, len: u16) {
    out[..2].copy_from_slice(&channel.to_be_bytes());
    out[2..].copy_from_slice(&len.to_be_bytes());
}

/// Length of a ChannelData message with `len` bytes of data once padded to 4 bytes, as
/// stream transports require (RFC 8656 §12.5). UDP senders may send `HEADER_LEN + len`.
pub const fn padded_len(len: usize) -> usize {
    HEADER_LEN + ((len + 3) & !3)
}

/// Length of the next message at the start of a stream buffer.
///
/// The top two bits tell the kinds apart (RFC 7983): `00` is STUN (20-byte header plus the
/// length field), `01` is ChannelData (4-byte header plus the length field, padded to 4).
/// `Ok(None)` means more bytes are needed to know; anything else is an error and the stream
/// cannot be resynchronised.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some(len) = buf.get(2..4) else {
        return match first >> 6 {
            0 | 1 => Ok(None),
            _ => Err(FrameError::NotStunOrChannelData(first)),
        };
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    match first >> 6 {
        0 => Ok(Some(super::HEADER_LEN + len)),
        1 => Ok(Some(padded_len(len))),
        _ => Err(FrameError::NotStunOrChannelData(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trips_through_header_and_parse() {
        let mut msg = vec![0u8; 4];
        let mut header = [0u8; 4];
        write_header(&mut header, 0x4001, 5);
        msg[..4].copy_from_slice(&header);
        msg.extend_from_slice(b"hello\0\0\0");
        assert_eq!(parse(&msg), Some((0x4001, &b"hello"[..])));
        // Without the padding, as UDP senders may send it.
        assert_eq!(parse(&msg[..9]), Some((0x4001, &b"hello"[..])));
    }

    #[test]
    fn channel_data_outside_the_channel_range_or_short_is_refused() {
        assert_eq!(parse(&[0x3F, 0xFF, 0, 0]), None);
        assert_eq!(parse(&[0x50, 0x00, 0, 0]), None);
        assert_eq!(parse(&[0x40, 0x00, 0, 2, 1]), None);
        assert_eq!(parse(&[0x40, 0x00, 0]), None);
        assert_eq!(parse(&[0x4F, 0xFF, 0, 0]), Some((0x4FFF, &[][..])));
    }

    #[test]
    fn padded_length_rounds_data_up_to_four_bytes() {
        assert_eq!(padded_len(0), 4);
        assert_eq!(padded_len(1), 8);
        assert_eq!(padded_len(4), 8);
        assert_eq!(padded_len(5), 12);
    }

    #[test]
    fn stream_framing_tells_stun_from_channel_data() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00]), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(
            frame_len(&[0x80]),
            Err(FrameError::NotStunOrChannelData(0x80))
        );
        assert_eq!(
            frame_len(&[0xC0, 0, 0, 0]),
            Err(FrameError::NotStunOrChannelData(0xC0))
        );
    }
}
