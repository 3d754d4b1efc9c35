//! The worker side of stream clients (TURN over TCP and TLS).
//!
//! A stream connection is read and written by its own tokio task ([`crate::turn::stream`]),
//! but its allocation lives in one worker's core like any other: the task hands whole frames
//! over through that worker's [`Inbox`] (one lock per read, then a wake-up), and the worker
//! answers through the connection's bounded [`Outbound`] queue. The worker is picked from the
//! client address, so every frame of a connection reaches the same core in order, followed by
//! its close, which deletes the allocation (RFC 8656 §3.1).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicUsize;

use tokio::sync::mpsc;

use super::*;
use signalbox_stun::channel_data::FrameError;
use signalbox_turn_proto::allocation::FiveTuple;
use signalbox_turn_proto::framing::{self, Deframer};

/// Most bytes queued towards one connection; beyond it (a client that does not read) frames
/// are dropped, as a full UDP socket would drop them.
pub const OUTBOUND_CAP: usize = 1 << 20;
/// Most bytes of stream frames waiting in one worker's inbox.
const STREAM_INBOX_CAP: usize = 4 << 20;

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
pub enum StreamEvent {
    Open {
        five: FiveTuple,
        id: u64,
        out: Outbound,
    },
    /// A whole frame at `arena[start..end]`, with [`HEADROOM`] free bytes before `start`.
    Frame {
        five: FiveTuple,
        start: usize,
        end: usize,
    },
    Close {
        five: FiveTuple,
        id: u64,
    },
}

/// Stream events waiting for a worker; part of its [`Inbox`].
#[derive(Default)]
pub struct StreamInbox {
    arena: Vec<u8>,
    events: Vec<StreamEvent>,
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

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

impl Shared {
    /// The worker that owns the connections of `client`.
    pub fn worker_for(&self, client: SocketAddr) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut h);
        (h.finish() % self.inboxes.len().max(1) as u64) as usize
    }

    fn with_streams<R>(&self, worker: usize, f: impl FnOnce(&mut StreamInbox) -> R) -> R {
        let r = {
            let mut inbox = self.inboxes[worker]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            f(&mut inbox.streams)
        };
        let _ = self.wakers[worker].wake();
        r
    }

    pub fn stream_open(&self, worker: usize, five: FiveTuple, id: u64, out: Outbound) {
        self.with_streams(worker, |s| {
            s.events.push(StreamEvent::Open { five, id, out })
        });
    }

    pub fn stream_close(&self, worker: usize, five: FiveTuple, id: u64) {
        self.with_streams(worker, |s| s.events.push(StreamEvent::Close { five, id }));
    }

    /// Hands every whole frame in `d` to `worker`. Returns how many were dropped because the
    /// worker is behind, or the framing error that ends the connection.
    pub fn stream_frames(
        &self,
        worker: usize,
        five: FiveTuple,
        d: &mut Deframer,
    ) -> Result<usize, FrameError> {
        let mut dropped = 0;
        let mut frames = 0;
        let result = {
            let mut inbox = self.inboxes[worker]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let s = &mut inbox.streams;
            loop {
                match d.next_frame() {
                    Ok(Some(range)) => {
                        if s.arena.len() + HEADROOM + range.len() > STREAM_INBOX_CAP {
                            dropped += 1;
                            continue;
                        }
                        s.arena.extend_from_slice(&[0; HEADROOM]);
                        let start = s.arena.len();
                        s.arena.extend_from_slice(&d.bytes()[range]);
                        let end = s.arena.len();
                        s.events.push(StreamEvent::Frame { five, start, end });
                        frames += 1;
                    }
                    Ok(None) => break Ok(dropped),
                    Err(e) => break Err(e),
                }
            }
        };
        if frames > 0 {
            let _ = self.wakers[worker].wake();
        }
        result
    }
}

/// Handles what connection tasks handed to this worker: opens, frames, closes, in order.
pub(super) fn drain_streams(
    w: &mut Worker,
    inbox: &mut Inbox,
    send: &mut SendBatch,
    recv: &RecvBatch,
    outboxes: &mut [Inbox],
    now: Millis,
) {
    let mut events = std::mem::take(&mut inbox.streams.events);
    let arena = &mut inbox.streams.arena;
    for (k, event) in events.drain(..).enumerate() {
        match event {
            StreamEvent::Open { five, id, out } => {
                w.streams
                    .conns
                    .insert((five.client, five.listener), (id, out));
            }
            StreamEvent::Close { five, id } => {
                let key = (five.client, five.listener);
                if w.streams.conns.get(&key).is_some_and(|(i, _)| *i == id) {
                    w.streams.conns.remove(&key);
                    w.core.close_client(&five, &mut w.relays);
                }
            }
            StreamEvent::Frame { five, start, end } => {
                let offset = start - HEADROOM;
                let action = w.core.handle_stream(
                    &five,
                    &mut arena[offset..end],
                    end - start,
                    now,
                    &mut w.relays,
                );
                dispatch(w, action, Input::arena(arena, offset, end), send, outboxes);
            }
        }
        if k % batch::BATCH == batch::BATCH - 1 {
            send.flush(recv, arena);
        }
    }
    send.flush(recv, arena);
    arena.clear();
    // Keep the event vector's capacity for the next round.
    inbox.streams.events = events;
}
