//! What other threads hand to a worker: one typed, bounded mailbox per kind of sender.
//!
//! A worker owns its sockets and its core, so work from elsewhere reaches it through one of
//! its mailboxes, each a plain buffer under its own mutex in [`super::Shared`]:
//!
//! | mailbox | sent by | bound |
//! |---|---|---|
//! | [`Forwarded`] | the other workers: packets for relayed addresses this worker owns | bytes |
//! | [`StreamMail`](super::streams::StreamMail) | stream connection tasks: opens, frames, closes | frame bytes |
//! | [`Commands`] | the rest of the server: close a user's allocations | count |
//!
//! The data path's rules hold for all three: a sender takes the lock once per batch (a receive
//! batch, a stream read), never per packet, and the worker takes each mailbox whole once per
//! wake-up by swapping it for the empty one it kept from last time. Packets are copied into an
//! [`Arena`] that keeps its capacity, so once the buffers have grown nothing is allocated per
//! packet.

use std::net::SocketAddr;

use signalbox_turn_proto::server::HEADROOM;

/// Packets copied into one growing buffer, each after [`HEADROOM`] free bytes (where the core
/// writes a ChannelData header in place), at most `CAP` bytes in all.
#[derive(Default)]
pub(super) struct Arena<const CAP: usize> {
    bytes: Vec<u8>,
}

/// Where one packet sits in an [`Arena`]: headroom from `offset`, then the payload up to `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packet {
    pub(super) offset: usize,
    pub(super) end: usize,
}

impl Packet {
    /// The payload's length (without the headroom).
    pub(super) fn len(&self) -> usize {
        self.end - self.offset - HEADROOM
    }
}

impl<const CAP: usize> Arena<CAP> {
    /// Copies `payload` in after headroom. `None`, with nothing copied, when it would take the
    /// arena past `CAP`.
    pub(super) fn push(&mut self, payload: &[u8]) -> Option<Packet> {
        if self.bytes.len() + HEADROOM + payload.len() > CAP {
            return None;
        }
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&[0; HEADROOM]);
        self.bytes.extend_from_slice(payload);
        Some(Packet {
            offset,
            end: self.bytes.len(),
        })
    }

    /// Copies all of `other` in, or nothing when it does not fit whole; returns how far its
    /// packets moved.
    fn append(&mut self, other: &Arena<CAP>) -> Option<usize> {
        if self.bytes.len() + other.bytes.len() > CAP {
            return None;
        }
        let shift = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        Some(shift)
    }

    /// One packet with its headroom in front, for the core to handle in place.
    pub(super) fn packet_mut(&mut self, p: Packet) -> &mut [u8] {
        &mut self.bytes[p.offset..p.end]
    }

    /// Everything in the arena: what a send batch's `Source::Inbox` ranges point into.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Most bytes one [`Forwarded`] holds.
const FORWARDED_CAP: usize = 4 << 20;

/// Packets that allocations on other workers sent to relayed addresses this worker owns: the
/// relay-to-relay path, which skips the kernel.
///
/// Sent by the other workers. Each collects a receive batch's packets for this worker in a
/// `Forwarded` of its own ([`Forwarded::push`], no lock), then moves the batch into this
/// worker's shared one with [`Forwarded::append`] under one lock, waking this worker when the
/// mailbox was empty. Drained by this worker, which relays each packet to its client as if the
/// peer had sent it.
///
/// Bounded at 4 MiB: a packet that does not fit the sender's batch, or a batch that does not
/// fit the mailbox whole, is dropped, as a full socket buffer drops a datagram.
#[derive(Default)]
pub(super) struct Forwarded {
    arena: Arena<FORWARDED_CAP>,
    packets: Vec<ForwardedPacket>,
}

/// One packet in a [`Forwarded`] mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ForwardedPacket {
    /// The sending allocation's relayed address: the peer, as the receiving client sees it.
    pub(super) from: SocketAddr,
    /// The relayed address of ours it was sent to.
    pub(super) to: SocketAddr,
    pub(super) packet: Packet,
}

impl Forwarded {
    /// Adds one packet; false, and nothing added, when the mailbox is full.
    pub(super) fn push(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> bool {
        match self.arena.push(payload) {
            Some(packet) => {
                self.packets.push(ForwardedPacket { from, to, packet });
                true
            }
            None => false,
        }
    }

    /// Adds every packet of `batch`, or none when they do not all fit; false in that case.
    pub(super) fn append(&mut self, batch: &Forwarded) -> bool {
        let Some(shift) = self.arena.append(&batch.arena) else {
            return false;
        };
        self.packets
            .extend(batch.packets.iter().map(|p| ForwardedPacket {
                packet: Packet {
                    offset: p.packet.offset + shift,
                    end: p.packet.end + shift,
                },
                ..*p
            }));
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The packets in arrival order, and the arena they sit in.
    pub(super) fn parts_mut(&mut self) -> (&[ForwardedPacket], &mut Arena<FORWARDED_CAP>) {
        (&self.packets, &mut self.arena)
    }

    /// Empties the mailbox, keeping its capacity.
    pub(super) fn clear(&mut self) {
        self.arena.clear();
        self.packets.clear();
    }
}

/// A request to a worker from outside the data path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    /// Close every allocation whose REST username has this user part (its owner left).
    CloseUser(Box<str>),
}

/// Control commands for one worker: rare requests from the rest of the server.
///
/// Sent by [`super::Shared::close_user`] (signaling, when a peer leaves its call), one lock per
/// command and then a wake-up. Drained by the worker, once per wake-up, before any packet.
///
/// Bounded at [`Commands::CAP`] commands, which a live worker never has waiting: only a worker
/// that stopped draining fills it, and then the mailbox refuses more instead of growing.
#[derive(Default)]
pub(super) struct Commands {
    queue: Vec<Command>,
}

/// A [`Commands`] mailbox refused a command: the worker has not drained the ones waiting.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} commands are already waiting for the worker", Commands::CAP)]
pub(super) struct CommandsFull;

impl Commands {
    /// Most commands waiting in one mailbox.
    pub(super) const CAP: usize = 1024;

    pub(super) fn push(&mut self, command: Command) -> Result<(), CommandsFull> {
        if self.queue.len() >= Commands::CAP {
            return Err(CommandsFull);
        }
        self.queue.push(command);
        Ok(())
    }

    /// Takes the waiting commands in the order they came.
    pub(super) fn drain(&mut self) -> std::vec::Drain<'_, Command> {
        self.queue.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn an_arena_puts_headroom_before_each_packet() {
        let mut arena = Arena::<64>::default();

        let a = arena.push(b"abc").expect("fits");
        let b = arena.push(b"de").expect("fits");

        assert_eq!(a.len(), 3);
        assert_eq!(b.offset, a.end);
        assert_eq!(arena.packet_mut(a), [&[0; HEADROOM][..], b"abc"].concat());
        assert_eq!(arena.packet_mut(b), [&[0; HEADROOM][..], b"de"].concat());
    }

    #[test]
    fn an_arena_refuses_a_packet_past_its_cap_and_copies_nothing() {
        let mut arena = Arena::<{ 2 * HEADROOM + 10 }>::default();
        arena.push(&[1; 5]).expect("fits");

        assert_eq!(arena.push(&[2; 6]), None);
        assert_eq!(arena.bytes().len(), HEADROOM + 5);
        assert!(arena.push(&[3; 5]).is_some(), "exactly up to the cap fits");
        assert_eq!(arena.push(&[]), None);
    }

    #[test]
    fn a_forwarded_batch_moves_whole_with_its_packets_rebased() {
        let mut mailbox = Forwarded::default();
        mailbox.push(addr(1), addr(2), b"first");
        let mut batch = Forwarded::default();
        batch.push(addr(3), addr(4), b"second");

        assert!(mailbox.append(&batch));

        let (packets, arena) = mailbox.parts_mut();
        let last = packets[1];
        assert_eq!((last.from, last.to), (addr(3), addr(4)));
        assert_eq!(&arena.packet_mut(last.packet)[HEADROOM..], b"second");
    }

    #[test]
    fn a_full_forwarded_mailbox_drops_packets_and_whole_batches() {
        let chunk = vec![7u8; 64 * 1024 - HEADROOM];
        let mut mailbox = Forwarded::default();
        for _ in 0..FORWARDED_CAP / (64 * 1024) {
            assert!(mailbox.push(addr(1), addr(2), &chunk));
        }

        assert!(
            !mailbox.push(addr(1), addr(2), b"x"),
            "one byte past the cap"
        );
        let mut batch = Forwarded::default();
        batch.push(addr(1), addr(2), b"y");
        assert!(!mailbox.append(&batch));
        assert_eq!(mailbox.parts_mut().0.len(), FORWARDED_CAP / (64 * 1024));

        mailbox.clear();
        assert!(mailbox.is_empty());
        assert!(mailbox.append(&batch), "room again once drained");
    }

    #[test]
    fn commands_are_refused_beyond_the_cap_and_drained_in_order() {
        let mut commands = Commands::default();
        for k in 0..Commands::CAP {
            commands
                .push(Command::CloseUser(format!("u{k}").into()))
                .expect("below the cap");
        }

        assert_eq!(
            commands.push(Command::CloseUser("late".into())),
            Err(CommandsFull)
        );
        let drained: Vec<Command> = commands.drain().take(2).collect();
        assert_eq!(
            drained,
            [
                Command::CloseUser("u0".into()),
                Command::CloseUser("u1".into())
            ]
        );
        assert_eq!(commands.push(Command::CloseUser("late".into())), Ok(()));
    }
}
