//! Cutting a TURN byte stream (TCP or TLS) into messages, with no IO inside.
//!
//! On a stream, STUN messages and ChannelData follow each other with nothing in between
//! (RFC 8656 §12.5: ChannelData padded to 4 bytes), and a read may hold half a message or
//! several. [`Deframer`] buffers the bytes of a partial message and hands out whole ones; its
//! buffer never grows past one largest message plus one read, whatever the client sends.

use std::ops::Range;

use signalbox_stun::channel_data::{self, FrameError};

/// Largest message on a stream: a STUN header plus a 16-bit length, or a ChannelData header
/// plus a 16-bit length padded to 4.
pub const MAX_FRAME: usize = signalbox_stun::HEADER_LEN + 0xFFFF + 3;

/// Bytes of a stream not yet consumed, and where the next message starts.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
}

impl Deframer {
    /// An empty deframer for one connection.
    pub fn new() -> Deframer {
        Deframer {
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    /// Appends bytes just read. Call [`Deframer::next_frame`] until it returns `None` before
    /// pushing again; then the buffer holds less than one message.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, as a range of [`Deframer::bytes`]; `Ok(None)` when the rest is
    /// a partial message. An error means the stream is not TURN and cannot be resynchronised.
    pub fn next_frame(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let rest = &self.buf[self.start..];
        match channel_data::frame_len(rest)? {
            Some(len) if len <= rest.len() => {
                let range = self.start..self.start + len;
                self.start += len;
                Ok(Some(range))
            }
            _ => Ok(None),
        }
    }

    /// The buffered bytes, which the ranges of [`Deframer::next_frame`] index.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes of a partial message waiting for the rest.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Length of [`stream_frame`]`(message)`.
pub fn stream_frame_len(message: &[u8]) -> usize {
    if message.first().is_some_and(|b| b >> 6 == 1) {
        (message.len() + 3) & !3
    } else {
        message.len()
    }
}

/// The bytes to write for one outgoing message: ChannelData is padded to 4 bytes on streams
/// (RFC 8656 §12.5); STUN messages are multiples of 4 already.
pub fn stream_frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.extend_from_slice(message);
    out.resize(stream_frame_len(message), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(tid: u8) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 8, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[tid; 12]);
        m.extend_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        m
    }

    fn channel_data(len: usize) -> Vec<u8> {
        let mut m = vec![0x40, 0x00];
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m.resize(channel_data::padded_len(len), 0);
        m
    }

    fn frames(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = d.next_frame().expect("valid stream") {
            out.push(d.bytes()[r].to_vec());
        }
        out
    }

    #[test]
    fn a_message_fed_one_byte_at_a_time_comes_out_whole_once() {
        let msg = binding_request(1);
        let mut d = Deframer::new();
        let mut got = Vec::new();
        for b in &msg {
            d.push(std::slice::from_ref(b));
            got.extend(frames(&mut d));
        }
        assert_eq!(got, vec![msg]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn coalesced_messages_are_split_at_their_boundaries() {
        let (a, b, c) = (binding_request(1), channel_data(5), binding_request(2));
        let mut all = a.clone();
        all.extend_from_slice(&b);
        all.extend_from_slice(&c);
        all.extend_from_slice(&channel_data(3)[..3]);
        let mut d = Deframer::new();
        d.push(&all);
        assert_eq!(frames(&mut d), vec![a, b, c]);
        assert_eq!(d.pending(), 3, "the partial fourth message waits");
    }

    #[test]
    fn channel_data_padding_belongs_to_its_frame() {
        let m = channel_data(1);
        assert_eq!(m.len(), 8);
        let mut d = Deframer::new();
        d.push(&m[..5]);
        assert!(frames(&mut d).is_empty(), "padding not yet read");
        d.push(&m[5..]);
        assert_eq!(frames(&mut d), vec![m]);
    }

    #[test]
    fn bytes_that_are_neither_stun_nor_channel_data_are_an_error() {
        let mut d = Deframer::new();
        d.push(&[0x80, 1, 2, 3, 4]);
        assert!(d.next_frame().is_err());
        let mut d = Deframer::new();
        d.push(&binding_request(1));
        d.push(&[0xC0, 0, 0, 0]);
        assert!(d.next_frame().expect("first is fine").is_some());
        assert!(
            d.next_frame().is_err(),
            "a bad second frame ends the stream"
        );
    }

    #[test]
    fn the_buffer_stays_below_one_largest_message_plus_one_read() {
        let mut d = Deframer::new();
        let mut header = vec![0x40, 0x00, 0xFF, 0xFF];
        header.resize(1000, 1);
        d.push(&header);
        for _ in 0..65 {
            d.push(&[1u8; 1000]);
            let _ = frames(&mut d);
            assert!(d.bytes().len() <= MAX_FRAME + 1000);
        }
    }

    #[test]
    fn outgoing_channel_data_is_padded_and_stun_is_not() {
        assert_eq!(
            stream_frame(&[0x40, 0, 0, 1, 9]),
            vec![0x40, 0, 0, 1, 9, 0, 0, 0]
        );
        assert_eq!(stream_frame(&[0x40, 0, 0, 4, 1, 2, 3, 4]).len(), 8);
        let stun = binding_request(3);
        assert_eq!(stream_frame(&stun), stun);
    }
}
