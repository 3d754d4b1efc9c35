//! The Socket.IO WebSocket guard's frame follower (`signalbox::socketio::wsguard::Frames`) on a
//! client's byte stream: the same verdict however the stream is cut into reads, and the same
//! verdict as a reference that reads RFC 6455 §5.2 headers from the whole buffer at once.
//!
//! An input is one byte that picks the read size, then the stream.

use signalbox::socketio::wsguard::{Frames, TooBig};
use signalbox_fuzz_harness::Features;

/// The longest message let through in this target.
const LIMIT: u64 = 1000;

/// What following a stream ends in: refused with a length, or accepted and on a frame boundary
/// or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    TooBig(u64),
    Accepted { at_boundary: bool },
}

pub(crate) fn target(data: &[u8], features: &mut Features) -> Result<(), String> {
    let Some((&cut, stream)) = data.split_first() else {
        return Ok(());
    };
    let cut = usize::from(cut % 64) + 1;
    let whole = follow(stream, stream.len().max(1));
    for size in [cut, 1] {
        let other = follow(stream, size);
        if other != whole {
            return Err(format!(
                "cuts: whole reads say {whole:?}, reads of {size} say {other:?}"
            ));
        }
    }
    let expected = reference(stream);
    if whole != expected {
        return Err(format!("verdict: {whole:?} where {expected:?} is due"));
    }
    features.add(match whole {
        Verdict::TooBig(_) => 0,
        Verdict::Accepted { at_boundary } => 1 + u64::from(at_boundary),
    });
    Ok(())
}

fn follow(stream: &[u8], read: usize) -> Verdict {
    let mut frames = Frames::new(LIMIT);
    for chunk in stream.chunks(read) {
        if let Err(TooBig(len)) = frames.feed(chunk) {
            return Verdict::TooBig(len);
        }
    }
    Verdict::Accepted {
        at_boundary: frames.at_boundary(),
    }
}

/// The frames of `stream`, header by header, from the whole buffer.
fn reference(stream: &[u8]) -> Verdict {
    let mut at = 0;
    let mut message = 0u64;
    while at < stream.len() {
        let rest = &stream[at..];
        if rest.len() < 2 {
            return Verdict::Accepted { at_boundary: false };
        }
        let ext = match rest[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if rest[1] & 0x80 != 0 { 4 } else { 0 };
        let header = 2 + ext + mask;
        if rest.len() < header {
            return Verdict::Accepted { at_boundary: false };
        }
        let len = if ext == 0 {
            u64::from(rest[1] & 0x7f)
        } else {
            rest[2..2 + ext]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        let (fin, opcode) = (rest[0] & 0x80 != 0, rest[0] & 0x0f);
        if opcode < 0x8 {
            message = if opcode == 0 {
                message.saturating_add(len)
            } else {
                len
            };
            if message > LIMIT {
                return Verdict::TooBig(message);
            }
            if fin {
                message = 0;
            }
        }
        let available = (rest.len() - header) as u64;
        if available < len {
            return Verdict::Accepted { at_boundary: false };
        }
        at += header + len as usize;
    }
    Verdict::Accepted { at_boundary: true }
}

pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let masked = |first: u8, len: u8| {
        let mut f = vec![first, 0x80 | len, 1, 2, 3, 4];
        f.extend(std::iter::repeat_n(b'x', usize::from(len)));
        f
    };
    let mut fragmented = vec![7];
    fragmented.extend(masked(0x01, 100));
    fragmented.extend(masked(0x89, 4));
    fragmented.extend(masked(0x80, 100));
    let mut long = vec![3, 0x81, 0x80 | 126, 0x03, 0xe9, 1, 2, 3, 4];
    long.extend(std::iter::repeat_n(b'x', 16));
    vec![
        ("engineio-ping", {
            let mut s = vec![0];
            s.extend(masked(0x81, 1));
            s
        }),
        ("fragmented-with-ping", fragmented),
        ("announced-over-the-limit", long),
        (
            "length-64-bit",
            vec![1, 0x82, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        ),
    ]
}
