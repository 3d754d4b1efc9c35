//! The fuzz input of the TURN core target: two configuration bytes, then operations. Every
//! byte string decodes (missing bytes read as zero), and [`Op::encode`] writes exactly what
//! [`Op::decode`] reads, so seeds are built as operations and committed as bytes.
//!
//! Fields are small indices into the world's fixed tables (clients, credentials, peers), so a
//! mutated byte moves a request to another client, user or peer rather than into noise; the
//! world builds each request with the codec's writer and signs it with real credentials, so
//! mutated sequences still get past authentication.

use signalbox_fuzz_harness::{Reader, Rng};

/// How the server under test is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Config {
    /// bit 0: two workers; bit 1: `allow_loopback_peers`; bit 2: a bandwidth cap;
    /// bit 3: `strict_expiry`.
    pub(crate) flags: u8,
    /// `user_quota` = 1 + `quotas % 3`, `total_quota` = 2 + `quotas / 3 % 5`.
    pub(crate) quotas: u8,
}

impl Config {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Config {
        Config {
            flags: r.u8(),
            quotas: r.u8(),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.flags, self.quotas]);
    }

    pub(crate) fn workers(&self) -> usize {
        1 + usize::from(self.flags & 1)
    }

    pub(crate) fn allow_loopback(&self) -> bool {
        self.flags & 2 != 0
    }

    pub(crate) fn bandwidth_cap(&self) -> bool {
        self.flags & 4 != 0
    }

    pub(crate) fn strict_expiry(&self) -> bool {
        self.flags & 8 != 0
    }

    pub(crate) fn user_quota(&self) -> u32 {
        1 + u32::from(self.quotas % 3)
    }

    pub(crate) fn total_quota(&self) -> u32 {
        2 + u32::from(self.quotas / 3 % 5)
    }
}

/// One step of the world. `client` picks an address and a transport, `cred` a user and a kind
/// of credential, `peer` a peer address (fixed ones, or relayed addresses of this server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `flags`: see `World::allocate`; `lifetime` × 60 s when bit 0 of `flags` is set.
    Allocate {
        client: u8,
        cred: u8,
        flags: u8,
        lifetime: u8,
    },
    /// `lifetime`: 0 deletes, 255 sends none, otherwise × 30 s.
    Refresh { client: u8, cred: u8, lifetime: u8 },
    /// The first `count % 5` of `peers`.
    Permit {
        client: u8,
        cred: u8,
        count: u8,
        peers: [u8; 4],
    },
    Bind {
        client: u8,
        cred: u8,
        channel: u16,
        peer: u8,
    },
    /// A Send indication with `len` bytes; `flags`: 1 FINGERPRINT, 2 no DATA, 4 no
    /// XOR-PEER-ADDRESS, 8 DONT-FRAGMENT.
    Send {
        client: u8,
        peer: u8,
        len: u8,
        flags: u8,
    },
    /// ChannelData with `len` bytes, plus `padding % 4` trailing bytes on UDP.
    ChannelData {
        client: u8,
        channel: u16,
        len: u8,
        padding: u8,
    },
    /// A datagram from `peer` on the relay socket of the `alloc`-th allocation ever made;
    /// `kind % 3`: plain bytes, a STUN request, ChannelData-looking bytes.
    FromPeer {
        alloc: u8,
        peer: u8,
        len: u8,
        kind: u8,
    },
    /// Time passes (`step % 8` picks 1 ms … 601 s); due timeouts run.
    Wait { step: u8 },
    /// The client's stream connection closes.
    CloseStream { client: u8 },
    /// Signaling closes every allocation of a user (the peer left its call).
    CloseUser { user: u8 },
    /// Arbitrary bytes as a datagram, or as stream bytes (unframed).
    Raw { client: u8, bytes: Vec<u8> },
    /// The client sends its last message again (a retransmission).
    Repeat { client: u8 },
    /// An unauthenticated Binding request.
    Binding { client: u8 },
    /// Where later stream messages are cut into two reads.
    Split { at: u8 },
}

/// Number of operation kinds; the first byte of an operation is its kind modulo this.
const KINDS: u8 = 14;

impl Op {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Op {
        match r.u8() % KINDS {
            0 => Op::Allocate {
                client: r.u8(),
                cred: r.u8(),
                flags: r.u8(),
                lifetime: r.u8(),
            },
            1 => Op::Refresh {
                client: r.u8(),
                cred: r.u8(),
                lifetime: r.u8(),
            },
            2 => Op::Permit {
                client: r.u8(),
                cred: r.u8(),
                count: r.u8(),
                peers: [r.u8(), r.u8(), r.u8(), r.u8()],
            },
            3 => Op::Bind {
                client: r.u8(),
                cred: r.u8(),
                channel: r.u16(),
                peer: r.u8(),
            },
            4 => Op::Send {
                client: r.u8(),
                peer: r.u8(),
                len: r.u8(),
                flags: r.u8(),
            },
            5 => Op::ChannelData {
                client: r.u8(),
                channel: r.u16(),
                len: r.u8(),
                padding: r.u8(),
            },
            6 => Op::FromPeer {
                alloc: r.u8(),
                peer: r.u8(),
                len: r.u8(),
                kind: r.u8(),
            },
            7 => Op::Wait { step: r.u8() },
            8 => Op::CloseStream { client: r.u8() },
            9 => Op::CloseUser { user: r.u8() },
            10 => Op::Raw {
                client: r.u8(),
                bytes: r.short_bytes().to_vec(),
            },
            11 => Op::Repeat { client: r.u8() },
            12 => Op::Binding { client: r.u8() },
            _ => Op::Split { at: r.u8() },
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Allocate {
                client,
                cred,
                flags,
                lifetime,
            } => out.extend_from_slice(&[0, *client, *cred, *flags, *lifetime]),
            Op::Refresh {
                client,
                cred,
                lifetime,
            } => out.extend_from_slice(&[1, *client, *cred, *lifetime]),
            Op::Permit {
                client,
                cred,
                count,
                peers,
            } => {
                out.extend_from_slice(&[2, *client, *cred, *count]);
                out.extend_from_slice(peers);
            }
            Op::Bind {
                client,
                cred,
                channel,
                peer,
            } => {
                out.extend_from_slice(&[3, *client, *cred]);
                out.extend_from_slice(&channel.to_be_bytes());
                out.push(*peer);
            }
            Op::Send {
                client,
                peer,
                len,
                flags,
            } => out.extend_from_slice(&[4, *client, *peer, *len, *flags]),
            Op::ChannelData {
                client,
                channel,
                len,
                padding,
            } => {
                out.extend_from_slice(&[5, *client]);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(&[*len, *padding]);
            }
            Op::FromPeer {
                alloc,
                peer,
                len,
                kind,
            } => out.extend_from_slice(&[6, *alloc, *peer, *len, *kind]),
            Op::Wait { step } => out.extend_from_slice(&[7, *step]),
            Op::CloseStream { client } => out.extend_from_slice(&[8, *client]),
            Op::CloseUser { user } => out.extend_from_slice(&[9, *user]),
            Op::Raw { client, bytes } => {
                let bytes = &bytes[..bytes.len().min(255)];
                out.extend_from_slice(&[10, *client, bytes.len() as u8]);
                out.extend_from_slice(bytes);
            }
            Op::Repeat { client } => out.extend_from_slice(&[11, *client]),
            Op::Binding { client } => out.extend_from_slice(&[12, *client]),
            Op::Split { at } => out.extend_from_slice(&[13, *at]),
        }
    }

    /// The operation's kind, as a small number (for features).
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Op::Allocate { .. } => 0,
            Op::Refresh { .. } => 1,
            Op::Permit { .. } => 2,
            Op::Bind { .. } => 3,
            Op::Send { .. } => 4,
            Op::ChannelData { .. } => 5,
            Op::FromPeer { .. } => 6,
            Op::Wait { .. } => 7,
            Op::CloseStream { .. } => 8,
            Op::CloseUser { .. } => 9,
            Op::Raw { .. } => 10,
            Op::Repeat { .. } => 11,
            Op::Binding { .. } => 12,
            Op::Split { .. } => 13,
        }
    }
}

/// A whole input: configuration and operations.
pub(crate) fn encode(config: Config, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    config.encode(&mut out);
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Most operations one input holds.
pub(crate) const MAX_OPS: usize = 400;

/// The configuration and operations of an input.
pub(crate) fn decode(input: &[u8]) -> (Config, Vec<Op>) {
    let mut r = Reader::new(input);
    let config = Config::decode(&mut r);
    let mut ops = Vec::new();
    while !r.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::decode(&mut r));
    }
    (config, ops)
}

/// A structure-aware mutation: inserts, drops, repeats, swaps or alters whole operations, or
/// changes the configuration; byte-level mutations cannot line these up on their own.
pub(crate) fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    let (mut config, mut ops) = decode(input);
    let n = ops.len();
    match rng.below(6) {
        1 if n > 0 => {
            ops.remove(rng.below(n));
        }
        2 if n > 1 => ops.swap(rng.below(n), rng.below(n)),
        3 if n > 0 => {
            let op = ops[rng.below(n)].clone();
            ops.insert(rng.below(n + 1), op);
        }
        4 if n > 0 => {
            let at = rng.below(n);
            let mut bytes = Vec::new();
            ops[at].encode(&mut bytes);
            let field = 1 + rng.below(bytes.len().saturating_sub(1).max(1));
            if let Some(b) = bytes.get_mut(field) {
                *b = small(rng);
            }
            ops[at] = Op::decode(&mut Reader::new(&bytes));
        }
        5 => {
            config.flags ^= 1 << rng.below(4);
            config.quotas = config.quotas.wrapping_add(rng.below(15) as u8);
        }
        _ => ops.insert(rng.below(n + 1), random_op(rng)),
    }
    *input = encode(config, &ops);
}

/// An operation with fields drawn towards the values that mean something: the first clients,
/// users and peers, valid channel numbers.
fn random_op(rng: &mut Rng) -> Op {
    let mut bytes = vec![rng.below(usize::from(KINDS)) as u8];
    bytes.extend((0..8).map(|_| small(rng)));
    let mut op = Op::decode(&mut Reader::new(&bytes));
    if let Op::Bind { channel, .. } | Op::ChannelData { channel, .. } = &mut op {
        if !rng.one_in(4) {
            *channel = 0x4000 + rng.below(4) as u16;
        }
    }
    op
}

/// A byte that is mostly small (an index into the world's tables), sometimes anything.
fn small(rng: &mut Rng) -> u8 {
    if rng.one_in(4) {
        rng.byte()
    } else {
        rng.below(40) as u8
    }
}
