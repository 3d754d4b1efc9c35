//! The TURN core's seed corpus: valid call set-ups (Allocate, CreatePermission, ChannelBind,
//! Send, ChannelData, peer data) on every transport and both workers, plus the refusals a
//! server must give. Committed as `fuzz/corpus/turn_core/<name>`; the mutations start here.

use super::ops::{encode, Config, Op};

/// Client slots: `udp(i)`, `tcp(i)`, `tls(i)` of client address `i`.
const fn udp(i: u8) -> u8 {
    i
}
const fn tcp(i: u8) -> u8 {
    6 + i
}
const fn tls(i: u8) -> u8 {
    12 + i
}

/// Users and credential kinds (see `CredKind` in the world): `cred(kind, user)`.
const ALICE: u8 = 0;
const BOB: u8 = 1;
const CAROL: u8 = 2;
const fn cred(kind: u8, user: u8) -> u8 {
    kind * 3 + user
}
const SHORT_LIVED: u8 = 1;
const EXPIRED: u8 = 2;
const WRONG_SECRET: u8 = 3;
const OLD_SECRET: u8 = 4;
const NO_USER: u8 = 5;
const STALE_NONCE: u8 = 6;
const WRONG_REALM: u8 = 7;
const UNSIGNED: u8 = 8;
const SHA256: u8 = 9;
const OTHER_CLIENTS_NONCE: u8 = 10;

/// Peers: indices into the world's fixed list, or relayed addresses of the `k`-th allocation.
const PUBLIC: u8 = 0;
const PUBLIC_OTHER_PORT: u8 = 1;
const PUBLIC_LISTENER_PORT: u8 = 2;
const OTHER_PUBLIC: u8 = 3;
const RELAY_PUBLIC_IP: u8 = 4;
const RELAY_LOCAL_IP: u8 = 5;
const RELAY_LISTENER: u8 = 6;
const ALLOWED_LAN: u8 = 8;
const PRIVATE: u8 = 9;
const LOOPBACK: u8 = 10;
const METADATA: u8 = 11;
const DENIED: u8 = 12;
const MAPPED_PUBLIC: u8 = 13;
const UNSPECIFIED: u8 = 15;
const PUBLIC_V6: u8 = 16;
const fn relayed(k: u8) -> u8 {
    24 + 4 * k
}
const fn relayed_local(k: u8) -> u8 {
    25 + 4 * k
}

/// `user_quota` 2, `total_quota` 4.
const ROOMY: Config = Config {
    flags: 0,
    quotas: 7,
};

fn allocate(client: u8, cred: u8) -> Op {
    Op::Allocate {
        client,
        cred,
        flags: 0,
        lifetime: 0,
    }
}

fn permit(client: u8, cred: u8, peers: &[u8]) -> Op {
    let mut p = [0; 4];
    p[..peers.len()].copy_from_slice(peers);
    Op::Permit {
        client,
        cred,
        count: peers.len() as u8,
        peers: p,
    }
}

fn bind(client: u8, cred: u8, channel: u16, peer: u8) -> Op {
    Op::Bind {
        client,
        cred,
        channel,
        peer,
    }
}

fn send(client: u8, peer: u8, len: u8) -> Op {
    Op::Send {
        client,
        peer,
        len,
        flags: 1,
    }
}

fn channel_data(client: u8, channel: u16, len: u8) -> Op {
    Op::ChannelData {
        client,
        channel,
        len,
        padding: 0,
    }
}

fn from_peer(alloc: u8, peer: u8, len: u8) -> Op {
    Op::FromPeer {
        alloc,
        peer,
        len,
        kind: 0,
    }
}

fn refresh(client: u8, cred: u8, lifetime: u8) -> Op {
    Op::Refresh {
        client,
        cred,
        lifetime,
    }
}

/// Every seed, by file name.
pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let a = cred(0, ALICE);
    let b = cred(0, BOB);
    let c = cred(0, CAROL);
    vec![
        (
            "udp-call",
            encode(
                ROOMY,
                &[
                    allocate(udp(0), a),
                    permit(udp(0), a, &[PUBLIC]),
                    send(udp(0), PUBLIC, 16),
                    from_peer(0, PUBLIC, 16),
                    bind(udp(0), a, 0x4000, PUBLIC),
                    channel_data(udp(0), 0x4000, 32),
                    from_peer(0, PUBLIC, 8),
                    refresh(udp(0), a, 20),
                    Op::Wait { step: 6 },
                    send(udp(0), PUBLIC, 4),
                    refresh(udp(0), a, 0),
                ],
            ),
        ),
        (
            "relay-to-relay-in-memory",
            encode(
                ROOMY,
                &[
                    allocate(udp(0), a),
                    allocate(udp(2), b),
                    permit(udp(0), a, &[relayed(1)]),
                    permit(udp(2), b, &[relayed(0)]),
                    send(udp(0), relayed(1), 10),
                    send(udp(0), relayed_local(1), 10),
                    bind(udp(2), b, 0x4001, relayed(0)),
                    channel_data(udp(2), 0x4001, 12),
                    send(udp(0), relayed(1), 3),
                ],
            ),
        ),
        (
            "two-workers-forward",
            encode(
                Config {
                    flags: 1,
                    quotas: 7,
                },
                &[
                    allocate(udp(0), a),
                    allocate(udp(1), b),
                    permit(udp(0), a, &[relayed(1)]),
                    permit(udp(1), b, &[relayed(0)]),
                    send(udp(0), relayed(1), 20),
                    bind(udp(1), b, 0x4000, relayed(0)),
                    channel_data(udp(1), 0x4000, 20),
                    bind(udp(0), a, 0x4002, relayed(1)),
                    send(udp(1), relayed(0), 5),
                ],
            ),
        ),
        (
            "tcp-call-split-reads",
            encode(
                ROOMY,
                &[
                    Op::Split { at: 7 },
                    allocate(tcp(0), a),
                    bind(tcp(0), a, 0x4000, PUBLIC),
                    channel_data(tcp(0), 0x4000, 5),
                    from_peer(0, PUBLIC, 7),
                    Op::Split { at: 0 },
                    permit(tcp(0), a, &[OTHER_PUBLIC]),
                    send(tcp(0), OTHER_PUBLIC, 3),
                    from_peer(0, OTHER_PUBLIC, 9),
                    Op::CloseStream { client: tcp(0) },
                    from_peer(0, PUBLIC, 1),
                ],
            ),
        ),
        (
            "tls-ipv6-then-junk",
            encode(
                ROOMY,
                &[
                    Op::Allocate {
                        client: tls(3),
                        cred: a,
                        flags: 2,
                        lifetime: 0,
                    },
                    permit(tls(3), a, &[PUBLIC_V6]),
                    send(tls(3), PUBLIC_V6, 40),
                    from_peer(0, PUBLIC_V6, 40),
                    Op::Split { at: 2 },
                    bind(tls(3), a, 0x4fff, PUBLIC_V6),
                    channel_data(tls(3), 0x4fff, 1),
                    Op::Raw {
                        client: tls(3),
                        bytes: vec![0xff, 0, 0, 0],
                    },
                    from_peer(0, PUBLIC_V6, 2),
                ],
            ),
        ),
        (
            "quotas",
            encode(
                Config {
                    flags: 0,
                    quotas: 0,
                },
                &[
                    allocate(udp(0), a),
                    allocate(udp(1), a),
                    allocate(udp(2), b),
                    allocate(udp(3), c),
                    Op::CloseUser { user: ALICE },
                    allocate(udp(3), c),
                    refresh(udp(2), b, 0),
                    allocate(udp(1), a),
                    allocate(tcp(4), cred(NO_USER, ALICE)),
                ],
            ),
        ),
        (
            "lifetimes",
            encode(
                ROOMY,
                &[
                    allocate(udp(0), cred(SHORT_LIVED, ALICE)),
                    Op::Wait { step: 4 },
                    refresh(udp(0), cred(SHORT_LIVED, ALICE), 20),
                    allocate(udp(1), cred(SHORT_LIVED, ALICE)),
                    allocate(udp(2), cred(EXPIRED, BOB)),
                    Op::Wait { step: 7 },
                    Op::Wait { step: 7 },
                    from_peer(0, PUBLIC, 4),
                    allocate(udp(0), a),
                    Op::Allocate {
                        client: udp(1),
                        cred: b,
                        flags: 1,
                        lifetime: 30,
                    },
                    Op::Wait { step: 7 },
                    refresh(udp(1), b, 255),
                ],
            ),
        ),
        (
            "strict-expiry",
            encode(
                Config {
                    flags: 8,
                    quotas: 7,
                },
                &[
                    allocate(udp(0), cred(SHORT_LIVED, ALICE)),
                    Op::Wait { step: 4 },
                    refresh(udp(0), cred(SHORT_LIVED, ALICE), 20),
                    permit(udp(0), cred(SHORT_LIVED, ALICE), &[PUBLIC]),
                ],
            ),
        ),
        (
            "credentials",
            encode(
                ROOMY,
                &[
                    allocate(udp(0), cred(WRONG_SECRET, ALICE)),
                    allocate(udp(0), cred(STALE_NONCE, ALICE)),
                    allocate(udp(0), cred(WRONG_REALM, ALICE)),
                    allocate(udp(0), cred(UNSIGNED, ALICE)),
                    allocate(udp(0), cred(OTHER_CLIENTS_NONCE, ALICE)),
                    allocate(udp(0), cred(OLD_SECRET, ALICE)),
                    allocate(udp(1), cred(SHA256, BOB)),
                    allocate(udp(2), cred(NO_USER, CAROL)),
                    permit(udp(0), b, &[PUBLIC]),
                    permit(udp(1), cred(SHA256, BOB), &[PUBLIC]),
                ],
            ),
        ),
        (
            "refused-peers",
            encode(
                ROOMY,
                &[
                    allocate(udp(0), a),
                    permit(
                        udp(0),
                        a,
                        &[
                            PUBLIC_LISTENER_PORT,
                            RELAY_PUBLIC_IP,
                            RELAY_LISTENER,
                            PRIVATE,
                        ],
                    ),
                    permit(udp(0), a, &[METADATA, DENIED, UNSPECIFIED, RELAY_LOCAL_IP]),
                    bind(udp(0), a, 0x4000, LOOPBACK),
                    bind(udp(0), a, 0x4000, ALLOWED_LAN),
                    permit(udp(0), a, &[PUBLIC_V6]),
                    permit(udp(0), a, &[MAPPED_PUBLIC, PUBLIC_OTHER_PORT]),
                    bind(udp(0), a, 0x3fff, PUBLIC),
                    bind(udp(0), a, 0x4001, PUBLIC),
                    bind(udp(0), a, 0x4001, OTHER_PUBLIC),
                    permit(udp(0), a, &[]),
                ],
            ),
        ),
        (
            "loopback-allowed",
            encode(
                Config {
                    flags: 2,
                    quotas: 7,
                },
                &[
                    allocate(udp(0), a),
                    permit(udp(0), a, &[LOOPBACK]),
                    send(udp(0), LOOPBACK, 8),
                    from_peer(0, LOOPBACK, 8),
                ],
            ),
        ),
        (
            "bindings-raw-and-retransmissions",
            encode(
                ROOMY,
                &[
                    Op::Binding { client: udp(0) },
                    Op::Binding { client: tcp(1) },
                    Op::Raw {
                        client: udp(0),
                        bytes: vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42],
                    },
                    allocate(udp(0), a),
                    Op::Repeat { client: udp(0) },
                    allocate(udp(0), a),
                    from_peer(0, PUBLIC, 12),
                    Op::FromPeer {
                        alloc: 0,
                        peer: PUBLIC,
                        len: 12,
                        kind: 1,
                    },
                ],
            ),
        ),
        (
            "bandwidth-cap",
            encode(
                Config {
                    flags: 4,
                    quotas: 7,
                },
                &[
                    allocate(udp(0), a),
                    bind(udp(0), a, 0x4000, PUBLIC),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    channel_data(udp(0), 0x4000, 255),
                    from_peer(0, PUBLIC, 200),
                    Op::Wait { step: 2 },
                    channel_data(udp(0), 0x4000, 255),
                ],
            ),
        ),
        (
            "allocate-options",
            encode(
                ROOMY,
                &[
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 4,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 16,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 32,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 96,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 64,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 128,
                        lifetime: 0,
                    },
                    Op::Allocate {
                        client: udp(0),
                        cred: a,
                        flags: 8 | 1,
                        lifetime: 90,
                    },
                    Op::Allocate {
                        client: udp(3),
                        cred: b,
                        flags: 2,
                        lifetime: 0,
                    },
                    refresh(udp(0), a, 200),
                ],
            ),
        ),
    ]
}
