//! Stream clients (TURN over TCP and TLS) as a worker sees them.
//!
//! A stream connection is read and written by its own tokio task ([`crate::turn::stream`]),
//! but its allocation lives in one worker's core like any other: the task hands whole frames
//! over through that worker's `StreamMail` (one lock per read, then a wake-up), and the worker
//! answers through the connection's bounded [`Outbound`] queue, which it finds in its
//! [`StreamConns`]. The worker is picked from the client address, so every frame of a
//! connection reaches the same core in order, followed by its close, which deletes the
//! allocation (RFC 8656 §3.1).
//!
//! This module knows nothing of the worker loop: the loop drains the mailbox and keeps the
//! connection table through the methods below.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::mailbox::{Arena, Packet};
use signalbox_stun::channel_data::FrameError;
use signalbox_turn_proto::allocation::FiveTuple;
use signalbox_turn_proto::framing::{self, Deframer};

/// Most bytes queued towards one connection; beyond it (a client that does not read) frames
/// are dropped, as a full UDP socket would drop them.
pub const OUTBOUND_CAP: usize = 1 << 20;
/// Most bytes of stream frames waiting in one worker's [`StreamMail`].
const STREAM_MAIL_CAP: usize = 4 << 20;

/// The queue of frames to write to one connection, shared with its task.
#[derive(Clone, Debug)]
pub struct Outbound {
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Bytes in `tx` not yet written; the task subtracts what it wrote.
    pub queued: Arc<AtomicUsize>,
}

impl Outbound {
    /// Queues one message (padded for the stream). False when the connection is gone.
    fn push(&self, message: &[u8]) -> bool {
        let len = framing::stream_frame_len(message);
        if self.queued.load(Ordering::Relaxed) + len > OUTBOUND_CAP {
            return true;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(framing::stream_frame(message)) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                matches!(e, mpsc::error::TrySendError::Full(_))
            }
        }
    }
}

/// What a connection task tells its worker.
pub(super) enum StreamEvent {
    Open {
        five: FiveTuple,
        id: u64,
        out: Outbound,
    },
    /// A whole frame, at `packet` in the mailbox's arena.
    Frame {
        five: FiveTuple,
        packet: Packet,
    },
    Close {
        five: FiveTuple,
        id: u64,
    },
}

/// What stream connection tasks hand to one worker: opens, whole frames and closes, in the
/// order each connection produced them.
///
/// Sent by the connection tasks through `Shared::stream_open`, `stream_frames` and
/// `stream_close`: one lock per read (every whole frame the read completed), then a wake-up.
/// Drained by the worker, once per wake-up.
///
/// Bounded: frames at 4 MiB of bytes, beyond which a frame is dropped and counted back to
/// its task. Opens and closes are never dropped (a lost close would leave an allocation
/// behind); a connection sends one of each.
#[derive(Default)]
pub(super) struct StreamMail {
    arena: Arena<STREAM_MAIL_CAP>,
    events: Vec<StreamEvent>,
}

/// What [`StreamMail::frames`] did with the whole frames of one read.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Handed {
    /// Frames now waiting for the worker.
    pub(super) queued: usize,
    /// Frames dropped because the mailbox was full.
    pub(super) dropped: usize,
    /// The framing error that ends the connection, after the frames before it.
    pub(super) error: Option<FrameError>,
}

impl StreamMail {
    pub(super) fn open(&mut self, five: FiveTuple, id: u64, out: Outbound) {
        self.events.push(StreamEvent::Open { five, id, out });
    }

    pub(super) fn close(&mut self, five: FiveTuple, id: u64) {
        self.events.push(StreamEvent::Close { five, id });
    }

    /// Moves every whole frame buffered in `d` in, up to the first framing error.
    pub(super) fn frames(&mut self, five: FiveTuple, d: &mut Deframer) -> Handed {
        let mut handed = Handed {
            queued: 0,
            dropped: 0,
            error: None,
        };
        loop {
            match d.next_frame() {
                Ok(Some(range)) => match self.arena.push(&d.bytes()[range]) {
                    Some(packet) => {
                        self.events.push(StreamEvent::Frame { five, packet });
                        handed.queued += 1;
                    }
                    None => handed.dropped += 1,
                },
                Ok(None) => return handed,
                Err(e) => {
                    handed.error = Some(e);
                    return handed;
                }
            }
        }
    }

    /// Takes the events in order, with the arena their frames sit in; [`StreamMail::clear`]
    /// afterwards.
    pub(super) fn parts_mut(
        &mut self,
    ) -> (
        std::vec::Drain<'_, StreamEvent>,
        &mut Arena<STREAM_MAIL_CAP>,
    ) {
        (self.events.drain(..), &mut self.arena)
    }

    /// Empties the mailbox, keeping its capacity.
    pub(super) fn clear(&mut self) {
        self.arena.clear();
        self.events.clear();
    }
}

/// A worker's open stream connections: (client, local address) → (connection id, queue).
#[derive(Default)]
pub struct StreamConns {
    conns: HashMap<(SocketAddr, SocketAddr), (u64, Outbound)>,
}

impl StreamConns {
    /// Sends `message` to the client `to` connected to `local`; false when there is no such
    /// connection (it closed).
    pub fn deliver(&self, to: SocketAddr, local: SocketAddr, message: &[u8]) -> bool {
        match self.conns.get(&(to, local)) {
            Some((_, out)) => out.push(message),
            None => false,
        }
    }

    /// Connection `id` of `five` opened; it replaces an older one of the same 5-tuple.
    pub(super) fn open(&mut self, five: &FiveTuple, id: u64, out: Outbound) {
        self.conns.insert((five.client, five.listener), (id, out));
    }

    /// Connection `id` of `five` closed. True when it was the current connection of `five`,
    /// whose allocation must then go; false for the close of one already replaced.
    pub(super) fn close(&mut self, five: &FiveTuple, id: u64) -> bool {
        let key = (five.client, five.listener);
        if self.conns.get(&key).is_some_and(|(i, _)| *i == id) {
            self.conns.remove(&key);
            return true;
        }
        false
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_turn_proto::allocation::Transport;
    use signalbox_turn_proto::server::HEADROOM;

    fn five(port: u16) -> FiveTuple {
        FiveTuple {
            client: SocketAddr::from(([127, 0, 0, 1], port)),
            listener: SocketAddr::from(([127, 0, 0, 1], 3478)),
            transport: Transport::Tcp,
        }
    }

    fn outbound() -> (Outbound, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(4);
        let out = Outbound {
            tx,
            queued: Arc::default(),
        };
        (out, rx)
    }

    /// A ChannelData frame on channel 0x4000 carrying `len` bytes (a multiple of 4: no padding).
    fn channel_data(len: u16) -> Vec<u8> {
        let mut frame = vec![0x40, 0x00];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.resize(4 + usize::from(len), 0xab);
        frame
    }

    #[test]
    fn whole_frames_are_queued_with_headroom_and_a_partial_one_waits() {
        let mut mail = StreamMail::default();
        let mut d = Deframer::new();
        let frame = channel_data(8);
        d.push(&frame);
        d.push(&frame[..6]);

        let handed = mail.frames(five(1), &mut d);

        assert_eq!(
            handed,
            Handed {
                queued: 1,
                dropped: 0,
                error: None
            }
        );
        let (mut events, arena) = mail.parts_mut();
        let Some(StreamEvent::Frame { packet, .. }) = events.next() else {
            panic!("expected one frame");
        };
        assert_eq!(&arena.packet_mut(packet)[HEADROOM..], &frame[..]);
        assert!(events.next().is_none());
        assert_eq!(d.pending(), 6);
    }

    #[test]
    fn frames_beyond_the_cap_are_dropped_and_counted() {
        let mut mail = StreamMail::default();
        let mut d = Deframer::new();
        let frame = channel_data(65_532);
        let fit = STREAM_MAIL_CAP / (HEADROOM + frame.len());
        for _ in 0..fit + 2 {
            d.push(&frame);
            let handed = mail.frames(five(1), &mut d);
            assert_eq!(handed.error, None);
        }

        let (events, arena) = mail.parts_mut();
        assert_eq!(events.count(), fit);
        assert!(arena.bytes().len() <= STREAM_MAIL_CAP);
        d.push(&frame);
        assert_eq!(mail.frames(five(1), &mut d).dropped, 1);
    }

    #[test]
    fn a_framing_error_comes_after_the_frames_before_it() {
        let mut mail = StreamMail::default();
        let mut d = Deframer::new();
        d.push(&channel_data(4));
        d.push(&[0xff; 8]);

        let handed = mail.frames(five(1), &mut d);

        assert_eq!(handed.queued, 1);
        assert_eq!(handed.error, Some(FrameError::NotStunOrChannelData(0xff)));
    }

    #[test]
    fn only_the_close_of_the_current_connection_ends_the_allocation() {
        let mut conns = StreamConns::default();
        let (old, _old_rx) = outbound();
        let (new, _new_rx) = outbound();
        conns.open(&five(1), 1, old);
        conns.open(&five(1), 2, new);

        assert!(!conns.close(&five(1), 1), "a replaced connection");
        assert_eq!(conns.len(), 1);
        assert!(conns.close(&five(1), 2));
        assert!(conns.is_empty());
        assert!(!conns.close(&five(1), 2), "closed once");
    }

    #[test]
    fn messages_reach_the_connection_of_their_client_only() {
        let mut conns = StreamConns::default();
        let (out, mut rx) = outbound();
        conns.open(&five(1), 1, out);

        assert!(conns.deliver(five(1).client, five(1).listener, b"hi"));
        assert!(!conns.deliver(five(2).client, five(2).listener, b"hi"));

        let frame = rx.try_recv().expect("queued");
        assert_eq!(&frame[..2], b"hi");
        assert!(rx.try_recv().is_err());
    }
}
