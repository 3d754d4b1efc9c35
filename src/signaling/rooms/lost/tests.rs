//! Peers lost with their node, on virtual time: gone at once, back under their id within the
//! grace as fresh members, forgotten after it.

use crate::signaling::protocol::{
    ErrorCode, HostAction, Joined, PeerId, PeerInfo, ResumeToken, RoomId, ServerMessage,
};
use crate::signaling::rooms::tests::{
    config, data, error_code, info, joined, pid, room, send, Bench, GRACE,
};
use crate::signaling::rooms::{Admission, ConnId, JoinRequest, Output, RegistryConfig};

impl Bench {
    /// Connection `conn`'s node dies at `secs`.
    fn lose(&mut self, conn: u64, secs: u64) -> Vec<Output> {
        let now = self.at(secs);
        self.reg.lose(ConnId(conn), now);
        self.drain()
    }

    /// A `join` of room `r` on `conn` at `secs` with resume token `token`.
    fn come_back(&mut self, conn: u64, r: &str, token: &str, secs: u64) -> Vec<Output> {
        let req = JoinRequest {
            room: room(r),
            name: None,
            resume: Some(ResumeToken::new(token)),
            invite: None,
            admission: Ok(Admission::default()),
        };
        self.join_req(conn, req, secs)
    }

    fn removed(&mut self) -> Vec<(RoomId, PeerId)> {
        std::iter::from_fn(|| self.reg.poll_removed()).collect()
    }
}

fn peer_left(n: u64) -> ServerMessage {
    ServerMessage::PeerLeft { id: pid(n) }
}

fn peer_joined(peer: PeerInfo) -> ServerMessage {
    ServerMessage::PeerJoined { peer }
}

fn as_host(msg: ServerMessage, host: bool) -> ServerMessage {
    match msg {
        ServerMessage::Joined(j) => ServerMessage::Joined(Box::new(Joined { host, ..*j })),
        other => other,
    }
}

fn token(n: u64) -> ResumeToken {
    ResumeToken::new(&format!("token{n}"))
}

#[test]
fn a_lost_peer_is_reported_gone_at_once_and_frees_its_place() {
    let mut b = Bench::with(RegistryConfig {
        max_peers: 3,
        ..config()
    });
    for n in 1..=3 {
        b.joined(n, "r");
    }
    assert_eq!(
        b.lose(2, 0),
        vec![send(1, peer_left(2)), send(3, peer_left(2))]
    );
    assert_eq!(b.removed(), vec![(room("r"), pid(2))]);
    assert_eq!(b.reg.peer_count(), 2);
    assert!(!b.reg.is_joined(ConnId(2)));
    // Its place is free, and signals for it have nowhere to wait.
    b.joined(4, "r");
    assert_eq!(
        error_code(&b.signal(1, &pid(2), "1")),
        Some(ErrorCode::UnknownPeer)
    );
}

#[test]
fn losing_the_host_hands_the_room_to_the_longest_present_peer() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.joined(n, "r");
    }
    let host_changed = ServerMessage::HostChanged { peer: pid(2) };
    assert_eq!(
        b.lose(1, 0),
        vec![
            send(2, peer_left(1)),
            send(2, host_changed.clone()),
            send(3, peer_left(1)),
            send(3, host_changed),
        ]
    );
    // The old host comes back as a guest.
    let out = b.come_back(9, "r", "token1", 5);
    let new_host = PeerInfo {
        host: true,
        ..info(2)
    };
    let guest = PeerInfo {
        host: false,
        ..info(1)
    };
    assert_eq!(
        out,
        vec![
            send(2, peer_joined(guest.clone())),
            send(3, peer_joined(guest)),
            send(9, as_host(joined("r", 1, vec![new_host, info(3)]), false)),
        ]
    );
}

#[test]
fn a_lost_peer_back_within_the_grace_keeps_its_id_and_name_and_the_others_see_it_join() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.join_as(2, "r", Some("Bo"), None);
    b.lose(2, 0);
    b.removed();
    assert!(b.reg.is_resumable(&room("r"), &token(2)));
    assert!(!b.reg.is_resumable(&room("other"), &token(2)));
    assert_eq!(b.reg.poll_timeout(), Some(b.at(20)));

    let out = b.come_back(9, "r", "token2", 10);
    let bo = PeerInfo {
        id: pid(2),
        name: Some("Bo".into()),
        host: false,
    };
    assert_eq!(
        out,
        vec![
            send(1, peer_joined(bo)),
            send(9, joined("r", 2, vec![info(1)])),
        ]
    );
    // A member again: signals reach its new connection, and the old deadline is void.
    assert_eq!(
        b.signal(1, &pid(2), "1"),
        vec![send(
            9,
            ServerMessage::Signal {
                from: pid(1),
                data: data("1")
            }
        )]
    );
    b.reg.handle_timeout(b.at(20));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(b.reg.peer_count(), 2);
    assert_eq!(b.removed(), vec![]);
}

#[test]
fn a_lost_peer_back_as_a_member_leaves_as_one_and_its_token_dies_with_it() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.lose(2, 0);
    b.come_back(9, "r", "token2", 1);
    b.reg.leave(ConnId(9));
    assert_eq!(b.drain(), vec![send(1, peer_left(2))]);
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
}

#[test]
fn after_the_grace_the_token_is_forgotten_and_a_join_with_it_is_fresh() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.lose(2, 0);
    b.reg.handle_timeout(b.at(19));
    assert!(b.reg.is_resumable(&room("r"), &token(2)));
    b.reg.handle_timeout(b.at(20));
    assert_eq!(b.drain(), vec![]);
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
    assert_eq!(b.reg.poll_timeout(), None);

    assert_eq!(
        b.come_back(9, "r", "token2", 21),
        vec![
            send(1, peer_joined(info(9))),
            send(9, joined("r", 9, vec![info(1)])),
        ]
    );
}

#[test]
fn a_token_lost_in_one_room_is_a_fresh_join_in_another() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.lose(2, 0);
    assert_eq!(
        b.come_back(9, "s", "token2", 1),
        vec![send(9, joined("s", 9, vec![]))]
    );
    assert!(b.reg.is_resumable(&room("r"), &token(2)));
}

#[test]
fn a_return_to_a_room_filled_meanwhile_gets_room_full_and_keeps_the_token_for_the_grace() {
    let mut b = Bench::with(RegistryConfig {
        max_peers: 2,
        ..config()
    });
    b.joined(1, "r");
    b.joined(2, "r");
    b.lose(2, 0);
    b.joined(3, "r");
    assert_eq!(
        error_code(&b.come_back(9, "r", "token2", 5)),
        Some(ErrorCode::RoomFull)
    );
    assert!(b.reg.is_resumable(&room("r"), &token(2)));
    assert!(!b.reg.is_joined(ConnId(9)));

    b.reg.leave(ConnId(3));
    b.drain();
    let out = b.come_back(10, "r", "token2", 19);
    assert_eq!(out.last(), Some(&send(10, joined("r", 2, vec![info(1)]))));

    // Lost again at 20: a refusal keeps the token until the new grace ends, not the first.
    b.lose(10, 20);
    b.joined(4, "r");
    assert_eq!(
        error_code(&b.come_back(11, "r", "token2", 25)),
        Some(ErrorCode::RoomFull)
    );
    b.reg.handle_timeout(b.at(39));
    assert!(b.reg.is_resumable(&room("r"), &token(2)));
    b.reg.handle_timeout(b.at(40));
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
}

#[test]
fn a_lost_lobby_waiter_is_withdrawn_and_has_nothing_to_come_back_to() {
    let mut b = Bench::with(RegistryConfig {
        lock_new_rooms: true,
        ..config()
    });
    b.joined(1, "r");
    assert_eq!(
        b.join(2, "r"),
        vec![
            send(2, ServerMessage::Waiting { id: pid(2) }),
            send(
                1,
                ServerMessage::Knock {
                    peer: pid(2),
                    name: None
                }
            ),
        ]
    );
    assert_eq!(
        b.lose(2, 0),
        vec![send(1, ServerMessage::KnockWithdrawn { peer: pid(2) })]
    );
    assert!(!b.reg.is_joined(ConnId(2)));
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
    assert_eq!(b.removed(), vec![]);
}

#[test]
fn a_room_that_ended_meanwhile_is_made_again_with_the_returning_peer_first() {
    let mut b = Bench::with(RegistryConfig {
        lock_new_rooms: true,
        ..config()
    });
    b.joined(2, "r");
    assert_eq!(b.lose(2, 0), vec![]);
    assert_eq!(b.reg.room_count(), 0);
    assert_eq!(b.removed(), vec![(room("r"), pid(2))]);

    // Past the lobby of the new, locked room, and its host as its first member.
    let out = b.come_back(9, "r", "token2", 3);
    let locked_host = match joined("r", 2, vec![]) {
        ServerMessage::Joined(j) => ServerMessage::Joined(Box::new(Joined {
            host: true,
            locked: true,
            ..*j
        })),
        other => other,
    };
    assert_eq!(out, vec![send(9, locked_host)]);
    assert_eq!(b.reg.room_count(), 1);
}

#[test]
fn a_room_the_host_ended_takes_its_lost_tokens_with_it() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.lose(2, 0);
    b.reg.host_action(ConnId(1), HostAction::End);
    b.drain();
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
    assert_eq!(
        b.come_back(9, "r", "token2", 1),
        vec![send(9, joined("r", 9, vec![]))]
    );
}

#[test]
fn a_closed_direct_call_room_takes_its_lost_tokens_with_it() {
    let mut b = Bench::new();
    b.reg.open_room(room("call"), b.at(0));
    b.joined(1, "call");
    b.joined(2, "call");
    b.lose(2, 0);
    assert!(b.reg.is_resumable(&room("call"), &token(2)));
    b.reg.close_room(&room("call"), None);
    assert!(!b.reg.is_resumable(&room("call"), &token(2)));
}

#[test]
fn a_lost_peer_coming_back_with_a_barred_invitation_gets_removed() {
    let mut b = Bench::new();
    let with_invite = |r: &str| JoinRequest {
        room: room(r),
        name: None,
        resume: None,
        invite: Some("shared".into()),
        admission: Ok(Admission::default()),
    };
    b.joined(1, "r");
    b.join_req(2, with_invite("r"), 0);
    b.join_req(3, with_invite("r"), 0);
    b.lose(2, 0);
    b.reg.host_action(ConnId(1), HostAction::Remove(pid(3)));
    b.drain();
    let back = JoinRequest {
        resume: Some(token(2)),
        ..with_invite("r")
    };
    assert_eq!(
        error_code(&b.join_req(9, back, 1)),
        Some(ErrorCode::Removed)
    );
}

#[test]
fn with_no_grace_a_lost_peer_is_simply_gone() {
    let mut b = Bench::with(RegistryConfig {
        reconnect_grace: std::time::Duration::ZERO,
        ..config()
    });
    b.joined(1, "r");
    b.joined(2, "r");
    assert_eq!(b.lose(2, 0), vec![send(1, peer_left(2))]);
    assert!(!b.reg.is_resumable(&room("r"), &token(2)));
    assert_eq!(b.reg.poll_timeout(), None);
}

#[test]
fn losing_an_unknown_or_replaced_connection_changes_nothing() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    assert_eq!(b.lose(77, 0), vec![]);
    // Connection 2 was replaced by 9 (a resume); losing the old one keeps the peer.
    b.come_back(9, "r", "token2", 0);
    assert_eq!(b.lose(2, 0), vec![]);
    assert_eq!(b.reg.peer_count(), 2);
    assert!(b.reg.replaced_conns.is_empty());
    assert_eq!(b.removed(), vec![]);
}

#[test]
fn loss_return_and_expiry_churn_leaves_no_ghosts() {
    let mut b = Bench::new();
    for n in 0..200u64 {
        b.joined(n, &format!("room{}", n / 2));
    }
    for n in 0..200u64 {
        b.lose(n, 0);
    }
    // Half come back, as the second peer of their room, while the rest expire.
    for n in (0..200u64).step_by(4) {
        let out = b.come_back(1000 + n, &format!("room{}", n / 2), &format!("token{n}"), 1);
        assert!(matches!(
            out.last(),
            Some(Output::Send {
                msg: ServerMessage::Joined(_),
                ..
            })
        ));
    }
    b.reg.handle_timeout(b.at(1) + GRACE);
    for n in (0..200u64).step_by(4) {
        b.reg.leave(ConnId(1000 + n));
    }
    b.drain();
    assert_eq!((b.reg.room_count(), b.reg.peer_count()), (0, 0));
    assert!(b.reg.lost.is_empty() && b.reg.lost_by_resume.is_empty());
    assert_eq!(b.reg.poll_timeout(), None);
}

#[test]
fn a_peer_restored_from_another_nodes_record_comes_back_under_its_id() {
    let mut b = Bench::new();
    b.joined(1, "r");
    let now = b.at(5);
    b.reg
        .restore_lost(room("r"), pid(7), Some("Cy".into()), token(7), now);
    assert!(b.reg.is_resumable(&room("r"), &token(7)));
    let out = b.come_back(9, "r", "token7", 6);
    let cy = PeerInfo {
        id: pid(7),
        name: Some("Cy".into()),
        host: false,
    };
    assert_eq!(
        out,
        vec![
            send(1, peer_joined(cy)),
            send(9, joined("r", 7, vec![info(1)])),
        ]
    );
    assert_eq!(b.reg.peer_name(&pid(7)), Some("Cy"));
}

#[test]
fn a_restored_record_takes_no_id_or_token_in_use_and_ends_with_the_grace() {
    let mut b = Bench::new();
    b.joined(1, "r");
    let now = b.at(0);
    // Peer 1's own id, or its token under another id: ignored.
    b.reg.restore_lost(room("r"), pid(1), None, token(8), now);
    assert!(!b.reg.is_resumable(&room("r"), &token(8)));
    b.reg.restore_lost(room("r"), pid(8), None, token(1), now);
    assert_eq!(b.reg.poll_timeout(), None);
    // A fresh one lasts the grace.
    b.reg.restore_lost(room("r"), pid(8), None, token(8), now);
    assert_eq!(b.reg.poll_timeout(), Some(b.at(GRACE.as_secs())));
    b.reg.handle_timeout(b.at(GRACE.as_secs()));
    assert!(!b.reg.is_resumable(&room("r"), &token(8)));
}
