//! The meeting rules on virtual time: host, hand-over, lobby, removal, mute requests, end.

use crate::signaling::protocol::{
    ErrorCode, HostAction, Joined, MediaKind, MuteTarget, PeerInfo, ResumeToken, ServerMessage,
};
use crate::signaling::rooms::tests::{
    config, error_code, info, joined, pid, room, send, Bench, LOBBY,
};
use crate::signaling::rooms::{Admission, ConnId, JoinRequest, Output};

fn req(r: &str) -> JoinRequest {
    JoinRequest {
        room: room(r),
        name: None,
        resume: None,
        invite: None,
        admission: Ok(Admission::default()),
    }
}

fn with_invite(r: &str, invite: &str, host: bool) -> JoinRequest {
    JoinRequest {
        invite: Some(invite.into()),
        admission: Ok(Admission { name: None, host }),
        ..req(r)
    }
}

impl Bench {
    fn act(&mut self, conn: u64, action: HostAction) -> Vec<Output> {
        self.reg.host_action(ConnId(conn), action);
        self.drain()
    }

    /// Peer 1 opens room `r` and locks it.
    fn locked_room(&mut self, r: &str) {
        self.joined(1, r);
        assert_eq!(
            self.act(1, HostAction::Lock),
            vec![send(1, ServerMessage::RoomLocked { locked: true })]
        );
    }

    /// Connection `conn` knocks on the locked room `r` at `secs`; asserts it waits.
    fn knocks(&mut self, conn: u64, r: &str, secs: u64) {
        let out = self.join_req(conn, req(r), secs);
        let knock = ServerMessage::Knock {
            peer: pid(conn),
            name: None,
        };
        assert_eq!(
            out,
            vec![
                send(conn, ServerMessage::Waiting { id: pid(conn) }),
                send(1, knock)
            ]
        );
    }
}

fn joined_locked(r: &str, n: u64, peers: Vec<PeerInfo>) -> ServerMessage {
    match joined(r, n, peers) {
        ServerMessage::Joined(j) => ServerMessage::Joined(Box::new(Joined { locked: true, ..*j })),
        other => other,
    }
}

fn peer_joined(n: u64) -> ServerMessage {
    ServerMessage::PeerJoined { peer: info(n) }
}

fn error(out: &[Output], conn: u64) -> Option<ErrorCode> {
    out.iter().find_map(|o| match o {
        Output::Send {
            conn: c,
            msg: ServerMessage::Error { code, .. },
        } if *c == ConnId(conn) => Some(*code),
        _ => None,
    })
}

#[test]
fn the_first_peer_is_host_and_everyone_sees_who_hosts() {
    let mut b = Bench::new();
    assert_eq!(b.join(1, "r"), vec![send(1, joined("r", 1, vec![]))]);
    assert_eq!(
        b.join(2, "r"),
        vec![
            send(1, peer_joined(2)),
            send(2, joined("r", 2, vec![info(1)]))
        ]
    );
    assert!(info(1).host && !info(2).host);
}

#[test]
fn when_the_host_leaves_the_longest_present_peer_takes_over() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.joined(n, "r");
    }
    b.reg.leave(ConnId(1));
    let changed = || ServerMessage::HostChanged { peer: pid(2) };
    assert_eq!(
        b.drain(),
        vec![
            send(2, ServerMessage::PeerLeft { id: pid(1) }),
            send(2, changed()),
            send(3, ServerMessage::PeerLeft { id: pid(1) }),
            send(3, changed()),
        ]
    );
    assert_eq!(
        error_code(&b.act(3, HostAction::Lock)),
        Some(ErrorCode::NotHost)
    );
    assert_eq!(
        b.act(2, HostAction::Lock),
        vec![
            send(2, ServerMessage::RoomLocked { locked: true }),
            send(3, ServerMessage::RoomLocked { locked: true })
        ]
    );
}

#[test]
fn an_away_host_stays_host_until_its_grace_runs_out() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(1), vec![], b.at(0));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(
        error_code(&b.act(2, HostAction::End)),
        Some(ErrorCode::NotHost)
    );
    b.reg.handle_timeout(b.at(20));
    assert_eq!(
        b.drain(),
        vec![
            send(2, ServerMessage::PeerLeft { id: pid(1) }),
            send(2, ServerMessage::HostChanged { peer: pid(2) })
        ]
    );
}

#[test]
fn a_host_invitation_makes_its_holder_host_and_the_old_host_a_guest() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    let out = b.join_req(3, with_invite("r", "inv-host", true), 0);
    let me = PeerInfo {
        id: pid(3),
        name: None,
        host: true,
    };
    let mut old_host = info(1);
    old_host.host = false;
    let changed = || ServerMessage::HostChanged { peer: pid(3) };
    let ServerMessage::Joined(mine) = joined("r", 3, vec![old_host, info(2)]) else {
        unreachable!()
    };
    assert_eq!(
        out,
        vec![
            send(1, ServerMessage::PeerJoined { peer: me.clone() }),
            send(1, changed()),
            send(2, ServerMessage::PeerJoined { peer: me }),
            send(2, changed()),
            send(
                3,
                ServerMessage::Joined(Box::new(Joined {
                    host: true,
                    ..*mine
                }))
            ),
        ]
    );
    assert_eq!(
        error_code(&b.act(1, HostAction::Lock)),
        Some(ErrorCode::NotHost)
    );
}

#[test]
fn a_join_of_a_locked_room_waits_and_the_host_gets_a_knock() {
    let mut b = Bench::new();
    b.locked_room("r");
    let named = JoinRequest {
        name: Some("Bo".into()),
        ..req("r")
    };
    assert_eq!(
        b.join_req(2, named, 0),
        vec![
            send(2, ServerMessage::Waiting { id: pid(2) }),
            send(
                1,
                ServerMessage::Knock {
                    peer: pid(2),
                    name: Some("Bo".into())
                }
            )
        ]
    );
    assert_eq!(b.reg.peer_count(), 1, "a waiting peer is no member");
    let signal = b.signal(1, &pid(2), "1");
    assert_eq!(error_code(&signal), Some(ErrorCode::UnknownPeer));
}

#[test]
fn an_admitted_peer_joins_under_the_id_it_waited_with() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    assert_eq!(
        b.act(1, HostAction::Admit(pid(2))),
        vec![
            send(1, peer_joined(2)),
            send(2, joined_locked("r", 2, vec![info(1)]))
        ]
    );
    assert_eq!(b.reg.peer_count(), 2);
    assert_eq!(
        error_code(&b.act(1, HostAction::Admit(pid(2)))),
        Some(ErrorCode::UnknownPeer),
        "already in"
    );
}

#[test]
fn a_declined_peer_is_told_and_may_join_elsewhere() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    let out = b.act(1, HostAction::Decline(pid(2)));
    assert_eq!(error_code(&out), Some(ErrorCode::Declined));
    assert!(matches!(
        &out[..],
        [Output::Send {
            conn: ConnId(2),
            ..
        }]
    ));
    assert_eq!(b.reg.peer_count(), 1);
    b.joined(2, "elsewhere");
}

#[test]
fn nobody_answering_ends_the_wait_after_the_lobby_timeout() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 10);
    assert_eq!(b.reg.poll_timeout(), Some(b.at(10) + LOBBY));
    b.reg
        .handle_timeout(b.at(10) + LOBBY - std::time::Duration::from_millis(1));
    assert_eq!(b.drain(), vec![]);
    b.reg.handle_timeout(b.at(10) + LOBBY);
    let out = b.drain();
    assert_eq!(error(&out, 2), Some(ErrorCode::LobbyTimeout));
    assert!(out.contains(&send(1, ServerMessage::KnockWithdrawn { peer: pid(2) })));
    assert_eq!(out.len(), 2);
    assert_eq!(b.reg.poll_timeout(), None);
}

#[test]
fn a_waiting_peer_that_leaves_or_drops_withdraws_its_knock() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    b.knocks(3, "r", 0);
    b.reg.leave(ConnId(2));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::KnockWithdrawn { peer: pid(2) })]
    );
    b.reg.disconnect(ConnId(3), vec![], b.at(1));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::KnockWithdrawn { peer: pid(3) })]
    );
    assert_eq!(
        error_code(&b.act(1, HostAction::Admit(pid(3)))),
        Some(ErrorCode::UnknownPeer)
    );
}

#[test]
fn a_full_lobby_refuses_with_room_full_and_waiting_peers_do_not_fill_the_room() {
    let mut b = Bench::new();
    b.locked_room("r");
    for n in 2..=4 {
        b.knocks(n, "r", 0);
    }
    assert_eq!(error_code(&b.join(5, "r")), Some(ErrorCode::RoomFull));
    // Three waiting and one member: the room (max_peers 4) still takes the three.
    for n in 2..=4 {
        b.act(1, HostAction::Admit(pid(n)));
    }
    assert_eq!(b.reg.peer_count(), 4);
}

#[test]
fn admitting_into_a_full_room_tells_the_host_and_the_peer_keeps_waiting() {
    let mut b = Bench::with(crate::signaling::rooms::RegistryConfig {
        max_peers: 2,
        ..config()
    });
    b.locked_room("r");
    b.act(1, HostAction::Unlock);
    b.joined(2, "r");
    b.act(1, HostAction::Lock);
    b.join(3, "r");
    assert_eq!(
        error(&b.act(1, HostAction::Admit(pid(3))), 1),
        Some(ErrorCode::RoomFull)
    );
    b.reg.leave(ConnId(2));
    b.drain();
    let out = b.act(1, HostAction::Admit(pid(3)));
    assert!(matches!(
        out.last(),
        Some(Output::Send {
            conn: ConnId(3),
            msg: ServerMessage::Joined(_)
        })
    ));
}

#[test]
fn knocks_are_rate_limited_per_room() {
    let mut b = Bench::with(crate::signaling::rooms::RegistryConfig {
        max_waiting: 100,
        ..config()
    });
    b.locked_room("r");
    for n in 0..u64::from(super::KNOCK_BURST) {
        b.knocks(10 + n, "r", 0);
    }
    let out = b.join_req(50, req("r"), 0);
    assert_eq!(error_code(&out), Some(ErrorCode::RateLimited));
    assert!(
        !out.iter().any(|o| matches!(
            o,
            Output::Send {
                conn: ConnId(1),
                ..
            }
        )),
        "the host hears nothing of it"
    );
    b.knocks(51, "r", 1);
    assert_eq!(
        error_code(&b.join_req(52, req("r"), 1)),
        Some(ErrorCode::RateLimited)
    );
}

#[test]
fn a_resume_skips_the_lobby() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.act(1, HostAction::Lock);
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    let out = b.join_as(9, "r", None, Some("token2"));
    assert!(matches!(
        &out[..],
        [Output::Send { conn: ConnId(9), msg: ServerMessage::Joined(j) }] if j.id == pid(2) && j.locked
    ));
}

#[test]
fn host_actions_from_others_get_not_host_or_not_joined() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(3, "r", 0);
    b.act(1, HostAction::Admit(pid(3)));
    let all = [
        HostAction::Lock,
        HostAction::Unlock,
        HostAction::Admit(pid(9)),
        HostAction::Decline(pid(9)),
        HostAction::Remove(pid(1)),
        HostAction::MuteRequest {
            target: MuteTarget::All,
            kind: MediaKind::Audio,
        },
        HostAction::End,
    ];
    b.knocks(4, "r", 0);
    for action in all {
        let guest = b.act(3, action.clone());
        assert_eq!(error_code(&guest), Some(ErrorCode::NotHost), "{action:?}");
        let waiting = b.act(4, action.clone());
        assert_eq!(
            error_code(&waiting),
            Some(ErrorCode::NotJoined),
            "{action:?}"
        );
        let stranger = b.act(7, action.clone());
        assert_eq!(
            error_code(&stranger),
            Some(ErrorCode::NotJoined),
            "{action:?}"
        );
    }
    assert_eq!(b.reg.peer_count(), 2);
}

#[test]
fn host_actions_on_absent_peers_get_unknown_peer() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.joined(5, "other");
    for action in [
        HostAction::Admit(pid(2)),
        HostAction::Decline(pid(99)),
        HostAction::Remove(pid(5)),
        HostAction::Remove(pid(1)),
        HostAction::MuteRequest {
            target: MuteTarget::Peer(pid(5)),
            kind: MediaKind::Video,
        },
    ] {
        let out = b.act(1, action.clone());
        assert_eq!(error_code(&out), Some(ErrorCode::UnknownPeer), "{action:?}");
    }
}

#[test]
fn a_removed_peer_leaves_and_is_barred_by_connection_token_and_invitation() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.join_req(2, with_invite("r", "inv-2", false), 0);
    b.joined(3, "r");
    b.drain();
    while b.reg.poll_removed().is_some() {}
    let out = b.act(1, HostAction::Remove(pid(2)));
    assert_eq!(error(&out, 2), Some(ErrorCode::Removed));
    assert!(out.contains(&send(1, ServerMessage::PeerLeft { id: pid(2) })));
    assert!(out.contains(&send(3, ServerMessage::PeerLeft { id: pid(2) })));
    assert_eq!(b.reg.poll_removed(), Some((room("r"), pid(2))));
    // The same connection, its resume token, its invitation: all `removed`.
    assert_eq!(error_code(&b.join(2, "r")), Some(ErrorCode::Removed));
    let resume = JoinRequest {
        resume: Some(ResumeToken::new("token2")),
        ..req("r")
    };
    assert_eq!(
        error_code(&b.join_req(8, resume, 0)),
        Some(ErrorCode::Removed)
    );
    let invite = with_invite("r", "inv-2", false);
    assert_eq!(
        error_code(&b.join_req(9, invite, 0)),
        Some(ErrorCode::Removed)
    );
    // A new session is a new peer; the connection may still go elsewhere.
    b.joined(10, "r");
    b.joined(2, "elsewhere");
}

#[test]
fn the_bar_ends_with_the_room() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.act(1, HostAction::Remove(pid(2)));
    b.reg.leave(ConnId(1));
    b.drain();
    assert_eq!(b.reg.room_count(), 0);
    b.joined(2, "r");
}

#[test]
fn a_mute_request_reaches_its_target_or_everyone_but_the_host() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.joined(n, "r");
    }
    let asked = |kind| ServerMessage::MuteRequest { from: pid(1), kind };
    let one = HostAction::MuteRequest {
        target: MuteTarget::Peer(pid(3)),
        kind: MediaKind::Video,
    };
    assert_eq!(b.act(1, one), vec![send(3, asked(MediaKind::Video))]);
    let all = HostAction::MuteRequest {
        target: MuteTarget::All,
        kind: MediaKind::Audio,
    };
    assert_eq!(
        b.act(1, all),
        vec![
            send(2, asked(MediaKind::Audio)),
            send(3, asked(MediaKind::Audio))
        ]
    );
}

#[test]
fn end_tells_everyone_in_the_room_and_the_lobby_and_removes_the_room() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    b.act(1, HostAction::Admit(pid(2)));
    b.knocks(3, "r", 0);
    while b.reg.poll_removed().is_some() {}
    assert_eq!(
        b.act(1, HostAction::End),
        vec![
            send(1, ServerMessage::Ended),
            send(2, ServerMessage::Ended),
            send(3, ServerMessage::Ended)
        ]
    );
    assert_eq!((b.reg.room_count(), b.reg.peer_count()), (0, 0));
    let removed: Vec<_> = std::iter::from_fn(|| b.reg.poll_removed()).collect();
    assert_eq!(removed, vec![(room("r"), pid(1)), (room("r"), pid(2))]);
    assert_eq!(b.reg.poll_timeout(), Some(b.at(0) + LOBBY), "a stale entry");
    b.reg.handle_timeout(b.at(0) + LOBBY);
    assert_eq!(b.drain(), vec![]);
    // The name is free again: a new room with a new host.
    assert_eq!(b.join(4, "r"), vec![send(4, joined("r", 4, vec![]))]);
}

#[test]
fn unlocking_lets_everyone_waiting_in_in_order() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    b.knocks(3, "r", 0);
    let out = b.act(1, HostAction::Unlock);
    assert_eq!(out[0], send(1, ServerMessage::RoomLocked { locked: false }));
    let joined_conns: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                conn,
                msg: ServerMessage::Joined(_),
            } => Some(conn.0),
            _ => None,
        })
        .collect();
    assert_eq!(joined_conns, [2, 3]);
    assert_eq!(b.reg.peer_count(), 3);
}

#[test]
fn a_new_host_and_a_host_that_resumes_learn_who_is_waiting() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    b.act(1, HostAction::Admit(pid(2)));
    b.knocks(3, "r", 0);
    let knock = || ServerMessage::Knock {
        peer: pid(3),
        name: None,
    };
    b.reg.disconnect(ConnId(1), vec![], b.at(1));
    let out = b.join_as(11, "r", None, Some("token1"));
    assert_eq!(out.last(), Some(&send(11, knock())));
    b.reg.leave(ConnId(11));
    let out = b.drain();
    assert_eq!(out.last(), Some(&send(2, knock())));
    assert!(out.contains(&send(2, ServerMessage::HostChanged { peer: pid(2) })));
}

#[test]
fn with_lock_new_rooms_the_first_peer_hosts_and_the_next_one_knocks() {
    let mut b = Bench::with(crate::signaling::rooms::RegistryConfig {
        lock_new_rooms: true,
        ..config()
    });
    assert_eq!(b.join(1, "r"), vec![send(1, joined_locked("r", 1, vec![]))]);
    b.knocks(2, "r", 0);
}

#[test]
fn a_room_whose_last_member_leaves_ends_for_those_waiting() {
    let mut b = Bench::new();
    b.locked_room("r");
    b.knocks(2, "r", 0);
    b.reg.leave(ConnId(1));
    assert_eq!(b.drain(), vec![send(2, ServerMessage::Ended)]);
    assert_eq!(b.reg.room_count(), 0);
    b.joined(2, "r");
}

#[test]
fn a_room_nobody_can_enter_is_not_kept() {
    let mut b = Bench::with(crate::signaling::rooms::RegistryConfig {
        max_peers: 0,
        ..config()
    });
    assert_eq!(error_code(&b.join(1, "r")), Some(ErrorCode::RoomFull));
    assert_eq!(b.reg.room_count(), 0);
}
