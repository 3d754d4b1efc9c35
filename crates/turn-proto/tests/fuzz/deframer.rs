//! The stream deframer across arbitrary read splits: whatever the cuts, the same frames come
//! out, they tile the stream, the same error (if any) ends it, and the buffer stays bounded.
//!
//! Input: a byte `n`, then `n % 8 + 1` read sizes (one byte each, size = byte + 1), then the
//! stream; the reads cycle through the sizes.

use signalbox_fuzz_harness::{Features, Reader};
use signalbox_stun::channel_data::{self, FrameError};
use signalbox_stun::{attr, Class, MessageWriter, Method, TransactionId};
use signalbox_turn_proto::framing::{self, Deframer, MAX_FRAME};

/// Frames, the error that ended the stream, and the bytes left pending (without an error).
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    pending: usize,
}

pub(crate) fn target(input: &[u8], features: &mut Features) -> Result<(), String> {
    let mut r = Reader::new(input);
    let n = usize::from(r.u8() % 8) + 1;
    let sizes: Vec<usize> = (0..n).map(|_| usize::from(r.u8()) + 1).collect();
    let stream = r.rest();

    let whole = cut(stream, &[stream.len().max(1)])?;
    let split = cut(stream, &sizes)?;
    features.add(((whole.frames.len().min(16) as u64) << 8) | u64::from(whole.error.is_some()));
    if split != whole {
        return Err(format!(
            "split: reads of {sizes:?} give {} frames, error {:?}, {} pending; one read gives \
             {} frames, error {:?}, {} pending",
            split.frames.len(),
            split.error,
            split.pending,
            whole.frames.len(),
            whole.error,
            whole.pending
        ));
    }
    if stream.len() <= 512 && cut(stream, &[1])? != whole {
        return Err("split: byte-at-a-time reads give other frames".into());
    }
    let framed: usize = whole.frames.iter().map(Vec::len).sum();
    if whole.error.is_none() && framed + whole.pending != stream.len() {
        return Err(format!(
            "tiling: {framed} framed and {} pending bytes of a {}-byte stream",
            whole.pending,
            stream.len()
        ));
    }
    if whole.frames.concat() != stream[..framed] {
        return Err("tiling: the frames are not the stream's bytes in order".into());
    }
    for f in &whole.frames {
        if channel_data::frame_len(f) != Ok(Some(f.len())) {
            return Err(format!(
                "frame: a {}-byte frame does not frame as itself",
                f.len()
            ));
        }
        if framing::stream_frame_len(f) != f.len() {
            return Err(format!(
                "frame: a {}-byte frame would be written as {} bytes",
                f.len(),
                framing::stream_frame_len(f)
            ));
        }
    }
    Ok(())
}

/// Feeds `stream` in reads of `sizes` (cycling), taking every whole frame after each read.
fn cut(stream: &[u8], sizes: &[usize]) -> Result<Cut, String> {
    let mut d = Deframer::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let read = &stream[at..(at + size).min(stream.len())];
        at += read.len();
        d.push(read);
        loop {
            match d.next_frame() {
                Ok(Some(range)) => frames.push(d.bytes()[range].to_vec()),
                Ok(None) => break,
                // The connection closes here: what else was read or is still unread does not
                // matter, so it does not count towards the comparison.
                Err(error) => {
                    return Ok(Cut {
                        frames,
                        error: Some(error),
                        pending: 0,
                    })
                }
            }
        }
        if d.bytes().len() > MAX_FRAME + read.len() {
            return Err(format!(
                "bound: the buffer holds {} bytes after a {}-byte read",
                d.bytes().len(),
                read.len()
            ));
        }
    }
    Ok(Cut {
        frames,
        error: None,
        pending: d.pending(),
    })
}

/// Streams of STUN messages and ChannelData as clients write them, with various read sizes.
pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let stun = |method, n: u8| {
        let mut m = Vec::new();
        let mut w = MessageWriter::new(&mut m, method, Class::Request, TransactionId([n; 12]));
        w.attr(attr::SOFTWARE, &vec![b'x'; usize::from(n)])
            .fingerprint();
        w.finish();
        m
    };
    let cd = |len: u8| {
        let mut m = vec![0x40, 0x01, 0, len];
        m.extend(std::iter::repeat_n(len, usize::from(len)));
        framing::stream_frame(&m)
    };
    let with_sizes = |sizes: &[u8], parts: &[Vec<u8>]| {
        let mut input = vec![sizes.len() as u8 - 1];
        input.extend_from_slice(sizes);
        input.extend(parts.concat());
        input
    };
    let allocate = stun(Method::ALLOCATE, 3);
    vec![
        (
            "stun-then-channel-data",
            with_sizes(&[6, 0, 99], &[allocate.clone(), cd(5), cd(0), cd(8)]),
        ),
        (
            "bindings-in-small-reads",
            with_sizes(&[2], &[stun(Method::BINDING, 1), stun(Method::BINDING, 7)]),
        ),
        (
            "partial-last-frame",
            with_sizes(&[15, 3], &[cd(3), allocate[..11].to_vec()]),
        ),
        (
            "junk-after-a-frame",
            with_sizes(&[4], &[cd(1), vec![0x80, 1, 2, 3], cd(2)]),
        ),
    ]
}
