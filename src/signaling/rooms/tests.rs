use super::*;

pub(super) const GRACE: Duration = Duration::from_secs(20);
pub(super) const LOBBY: Duration = Duration::from_secs(120);

pub(super) fn config() -> RegistryConfig {
    RegistryConfig {
        max_peers: 4,
        reconnect_grace: GRACE,
        away_queue_len: 3,
        away_queue_bytes: 1000,
        max_waiting: 3,
        lobby_timeout: LOBBY,
        lock_new_rooms: false,
    }
}

pub(super) fn room(name: &str) -> RoomId {
    RoomId::parse(name).expect("valid room")
}

pub(super) fn pid(n: u64) -> PeerId {
    PeerId::new(&format!("peer{n}"))
}

pub(super) fn data(text: &str) -> Payload {
    Payload::from_json(text).expect("valid JSON")
}

/// Test bench: connection `n` always gets peer id `peer{n}` and token `token{n}`.
pub(super) struct Bench {
    pub(super) reg: Registry,
    t0: Instant,
}

impl Bench {
    pub(super) fn new() -> Bench {
        Bench::with(config())
    }

    pub(super) fn with(config: RegistryConfig) -> Bench {
        Bench {
            reg: Registry::new(config),
            t0: Instant::now(),
        }
    }

    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    pub(super) fn join(&mut self, conn: u64, r: &str) -> Vec<Output> {
        self.join_as(conn, r, None, None)
    }

    pub(super) fn join_as(
        &mut self,
        conn: u64,
        r: &str,
        name: Option<&str>,
        resume: Option<&str>,
    ) -> Vec<Output> {
        let req = JoinRequest {
            room: room(r),
            name: name.map(str::to_owned),
            resume: resume.map(ResumeToken::new),
            invite: None,
            admission: Ok(Admission::default()),
        };
        self.join_req(conn, req, 0)
    }

    /// `join` on connection `conn` at `secs` into the bench's time.
    pub(super) fn join_req(&mut self, conn: u64, req: JoinRequest, secs: u64) -> Vec<Output> {
        let fresh = FreshPeer {
            id: pid(conn),
            resume: ResumeToken::new(&format!("token{conn}")),
        };
        let now = self.at(secs);
        self.reg.join(ConnId(conn), req, fresh, now);
        self.drain()
    }

    /// Joins and asserts the join went through, discarding the outputs.
    pub(super) fn joined(&mut self, conn: u64, r: &str) {
        let out = self.join(conn, r);
        assert!(
            out.iter().any(|o| matches!(o, Output::Send { conn: c, msg: ServerMessage::Joined(_) } if *c == ConnId(conn))),
            "{out:?}"
        );
    }

    pub(super) fn signal(&mut self, from: u64, to: &PeerId, text: &str) -> Vec<Output> {
        self.reg.signal(ConnId(from), to, data(text));
        self.drain()
    }

    pub(super) fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.reg.poll_output()).collect()
    }
}

pub(super) fn send(conn: u64, msg: ServerMessage) -> Output {
    Output::Send {
        conn: ConnId(conn),
        msg,
    }
}

pub(super) fn signal_msg(from: u64, text: &str) -> ServerMessage {
    ServerMessage::Signal {
        from: pid(from),
        data: data(text),
    }
}

/// Peer `n` as others see it; in these tests peer 1 opens every room, so it is the host.
pub(super) fn info(n: u64) -> PeerInfo {
    PeerInfo {
        id: pid(n),
        name: None,
        host: n == 1,
    }
}

pub(super) fn joined(r: &str, n: u64, peers: Vec<PeerInfo>) -> ServerMessage {
    // Peer 1 opens the rooms of these tests; whoever is alone in a room is its host.
    let host = n == 1 || peers.is_empty();
    ServerMessage::Joined(Box::new(Joined {
        room: room(r),
        id: pid(n),
        peers,
        ice_servers: serde_json::json!([]),
        resume: ResumeToken::new(&format!("token{n}")),
        host,
        locked: false,
    }))
}

pub(super) fn error_code(out: &[Output]) -> Option<ErrorCode> {
    match out {
        [Output::Send {
            msg: ServerMessage::Error { code, .. },
            ..
        }] => Some(*code),
        _ => None,
    }
}

#[test]
fn the_first_peer_creates_the_room_and_sees_nobody() {
    let mut b = Bench::new();
    assert_eq!(b.join(1, "r"), vec![send(1, joined("r", 1, vec![]))]);
    assert_eq!(b.reg.room_count(), 1);
}

#[test]
fn a_newcomer_gets_the_members_in_join_order_and_they_get_peer_joined() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    let out = b.join_as(3, "r", Some("Cy"), None);
    let me = PeerInfo {
        id: pid(3),
        name: Some("Cy".into()),
        host: false,
    };
    assert_eq!(
        out,
        vec![
            send(1, ServerMessage::PeerJoined { peer: me.clone() }),
            send(2, ServerMessage::PeerJoined { peer: me }),
            send(3, joined("r", 3, vec![info(1), info(2)])),
        ]
    );
}

#[test]
fn a_join_beyond_max_peers_gets_room_full_and_changes_nothing() {
    let mut b = Bench::new();
    for n in 1..=4 {
        b.joined(n, "r");
    }
    assert_eq!(error_code(&b.join(5, "r")), Some(ErrorCode::RoomFull));
    assert_eq!(b.reg.peer_count(), 4);
    // The refused connection may still join another room.
    b.joined(5, "other");
}

#[test]
fn joining_twice_gets_already_joined() {
    let mut b = Bench::new();
    b.joined(1, "r");
    assert_eq!(error_code(&b.join(1, "s")), Some(ErrorCode::AlreadyJoined));
    assert_eq!(b.reg.room_count(), 1);
}

#[test]
fn a_signal_reaches_exactly_the_addressee() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.joined(3, "r");
    assert_eq!(
        b.signal(1, &pid(2), r#"{"sdp":"x"}"#),
        vec![send(2, signal_msg(1, r#"{"sdp":"x"}"#))]
    );
}

#[test]
fn signals_across_rooms_to_self_or_to_nobody_get_unknown_peer() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "s");
    assert_eq!(
        error_code(&b.signal(1, &pid(2), "1")),
        Some(ErrorCode::UnknownPeer)
    );
    assert_eq!(
        error_code(&b.signal(1, &pid(1), "1")),
        Some(ErrorCode::UnknownPeer)
    );
    assert_eq!(
        error_code(&b.signal(1, &pid(99), "1")),
        Some(ErrorCode::UnknownPeer)
    );
}

#[test]
fn signal_and_leave_before_join_get_not_joined() {
    let mut b = Bench::new();
    assert_eq!(
        error_code(&b.signal(1, &pid(2), "1")),
        Some(ErrorCode::NotJoined)
    );
    b.reg.leave(ConnId(1));
    assert_eq!(error_code(&b.drain()), Some(ErrorCode::NotJoined));
}

#[test]
fn leave_tells_the_others_and_the_last_leave_removes_the_room() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.leave(ConnId(1));
    assert_eq!(
        b.drain(),
        vec![
            send(2, ServerMessage::PeerLeft { id: pid(1) }),
            send(2, ServerMessage::HostChanged { peer: pid(2) }),
        ]
    );
    b.reg.leave(ConnId(2));
    assert_eq!(b.drain(), vec![]);
    assert_eq!((b.reg.room_count(), b.reg.peer_count()), (0, 0));
    // The connection may join again, as a new peer.
    b.joined(1, "r");
}

#[test]
fn ping_is_answered_with_pong_even_before_join() {
    let mut b = Bench::new();
    b.reg.ping(ConnId(7));
    assert_eq!(b.drain(), vec![send(7, ServerMessage::Pong)]);
}

#[test]
fn a_dropped_peer_stays_silently_until_the_grace_ends_then_leaves() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(b.reg.poll_timeout(), Some(b.at(20)));
    b.reg.handle_timeout(b.at(19));
    assert_eq!(b.drain(), vec![]);
    b.reg.handle_timeout(b.at(20));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::PeerLeft { id: pid(2) })]
    );
    assert_eq!(b.reg.peer_count(), 1);
    assert_eq!(b.reg.poll_timeout(), None);
}

#[test]
fn an_away_peer_still_holds_its_place_in_a_full_room() {
    let mut b = Bench::new();
    for n in 1..=4 {
        b.joined(n, "r");
    }
    b.reg.disconnect(ConnId(4), vec![], b.at(0));
    assert_eq!(error_code(&b.join(5, "r")), Some(ErrorCode::RoomFull));
    b.reg.handle_timeout(b.at(20));
    b.drain();
    b.joined(5, "r");
}

#[test]
fn resume_within_the_grace_keeps_the_id_and_delivers_queued_signals_in_order() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(b.signal(1, &pid(2), "1"), vec![]);
    assert_eq!(b.signal(1, &pid(2), "2"), vec![]);
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(
        out,
        vec![
            send(9, joined("r", 2, vec![info(1)])),
            send(9, signal_msg(1, "1")),
            send(9, signal_msg(1, "2")),
        ]
    );
    // No peer-left later, and signals now go to the new connection.
    b.reg.handle_timeout(b.at(30));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(b.signal(1, &pid(2), "3"), vec![send(9, signal_msg(1, "3"))]);
}

#[test]
fn signals_left_in_a_dropped_connections_queue_are_kept_for_the_resume() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    let unsent = vec![
        ServerMessage::PeerJoined { peer: info(5) },
        signal_msg(1, "0"),
    ];
    b.reg.disconnect(ConnId(2), unsent, b.at(0));
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(
        out,
        vec![
            send(9, joined("r", 2, vec![info(1)])),
            send(9, signal_msg(1, "0"))
        ]
    );
}

#[test]
fn the_away_queue_is_bounded_in_count_and_bytes() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    for n in 0..5 {
        b.signal(1, &pid(2), &n.to_string());
    }
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(
        out.len(),
        1 + 3,
        "joined plus the first three signals: {out:?}"
    );

    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    let big = format!("\"{}\"", "x".repeat(598));
    b.signal(1, &pid(2), &big);
    b.signal(1, &pid(2), &big);
    b.signal(1, &pid(2), "1");
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(
        out[1..],
        [send(9, signal_msg(1, &big)), send(9, signal_msg(1, "1"))]
    );
}

#[test]
fn a_token_after_the_grace_or_for_another_room_gives_a_fresh_peer() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(
        b.join_as(3, "s", None, Some("token2")),
        vec![send(3, joined("s", 3, vec![]))]
    );
    b.reg.handle_timeout(b.at(20));
    b.drain();
    let out = b.join_as(4, "r", None, Some("token2"));
    assert_eq!(
        out,
        vec![
            send(1, ServerMessage::PeerJoined { peer: info(4) }),
            send(4, joined("r", 4, vec![info(1)])),
        ]
    );
}

#[test]
fn resuming_while_the_old_connection_looks_alive_closes_it_and_forwards_its_signals() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(
        out,
        vec![
            Output::Close {
                conn: ConnId(2),
                reason: CloseReason::Replaced
            },
            send(9, joined("r", 2, vec![info(1)])),
        ]
    );
    b.reg
        .disconnect(ConnId(2), vec![signal_msg(1, "\"late\"")], b.at(1));
    assert_eq!(b.drain(), vec![send(9, signal_msg(1, "\"late\""))]);
    // The old connection's end does not make the peer away.
    b.reg.handle_timeout(b.at(60));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(b.reg.peer_count(), 2);
}

#[test]
fn a_peer_that_comes_back_and_drops_again_gets_a_new_full_grace() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    b.join_as(9, "r", None, Some("token2"));
    b.reg.disconnect(ConnId(9), vec![], b.at(15));
    b.reg.handle_timeout(b.at(20));
    assert_eq!(b.drain(), vec![], "the first deadline no longer applies");
    b.reg.handle_timeout(b.at(35));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::PeerLeft { id: pid(2) })]
    );
}

#[test]
fn room_events_skip_away_peers() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(
        b.join(3, "r"),
        vec![
            send(1, ServerMessage::PeerJoined { peer: info(3) }),
            send(3, joined("r", 3, vec![info(1), info(2)])),
        ]
    );
    let out = b.join_as(9, "r", None, Some("token2"));
    assert_eq!(out, vec![send(9, joined("r", 2, vec![info(1), info(3)]))]);
}

#[test]
fn an_evicted_peer_leaves_at_once_and_cannot_resume() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.evict(ConnId(2));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::PeerLeft { id: pid(2) })]
    );
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(b.drain(), vec![]);
    assert_eq!(
        b.join_as(9, "r", None, Some("token2")).len(),
        2,
        "a fresh join"
    );
}

#[test]
fn a_zero_grace_makes_a_drop_an_immediate_leave() {
    let mut b = Bench::with(RegistryConfig {
        reconnect_grace: Duration::ZERO,
        ..config()
    });
    b.joined(1, "r");
    b.joined(2, "r");
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert_eq!(
        b.drain(),
        vec![send(1, ServerMessage::PeerLeft { id: pid(2) })]
    );
}

#[test]
fn ice_servers_are_pushed_only_to_connected_peers() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.joined(2, "r");
    let servers = serde_json::json!([{"urls":"stun:example.org"}]);
    assert!(b.reg.push_ice_servers(&pid(1), servers.clone()));
    assert_eq!(
        b.drain(),
        vec![send(
            1,
            ServerMessage::IceServers {
                ice_servers: servers.clone()
            }
        )]
    );
    b.reg.disconnect(ConnId(2), vec![], b.at(0));
    assert!(!b.reg.push_ice_servers(&pid(2), servers.clone()));
    assert!(!b.reg.push_ice_servers(&pid(77), servers));
    assert_eq!(b.drain(), vec![]);
}

#[test]
fn many_rooms_churn_leaves_no_ghosts() {
    let mut b = Bench::new();
    for n in 0..400u64 {
        b.joined(n, &format!("room{}", n / 2));
    }
    for n in (0..400u64).step_by(2) {
        b.reg.leave(ConnId(n));
        b.reg.disconnect(ConnId(n + 1), vec![], b.at(0));
    }
    b.drain();
    b.reg.handle_timeout(b.at(21));
    b.drain();
    assert_eq!((b.reg.room_count(), b.reg.peer_count()), (0, 0));
    assert!(b.reg.peers_by_conn.is_empty() && b.reg.peers_by_resume.is_empty());
    assert!(b.reg.replaced_conns.is_empty());
}

#[test]
fn removals_are_reported_for_leave_eviction_and_the_end_of_the_grace_but_not_for_a_drop() {
    let mut b = Bench::new();
    for conn in 1..=4 {
        b.joined(conn, "r");
    }
    b.reg.leave(ConnId(1));
    b.reg.evict(ConnId(2));
    b.reg.disconnect(ConnId(3), vec![], b.at(0));
    b.drain();
    let removed: Vec<_> = std::iter::from_fn(|| b.reg.poll_removed()).collect();
    assert_eq!(removed, vec![(room("r"), pid(1)), (room("r"), pid(2))]);
    b.reg.handle_timeout(b.at(20));
    assert_eq!(b.reg.poll_removed(), Some((room("r"), pid(3))));
    b.reg.leave(ConnId(4));
    assert_eq!(
        b.reg.poll_removed(),
        Some((room("r"), pid(4))),
        "the last peer of a room is reported too"
    );
    assert_eq!(b.reg.poll_removed(), None);
}

#[test]
fn a_resumed_peer_is_not_reported_removed_and_its_token_is_resumable_only_in_its_room() {
    let mut b = Bench::new();
    b.joined(1, "r");
    b.reg.disconnect(ConnId(1), vec![], b.at(0));
    let token = ResumeToken::new("token1");
    assert!(b.reg.is_resumable(&room("r"), &token));
    assert!(!b.reg.is_resumable(&room("other"), &token));
    assert!(!b.reg.is_resumable(&room("r"), &ResumeToken::new("nope")));
    b.join_as(5, "r", None, Some("token1"));
    b.reg.handle_timeout(b.at(60));
    assert_eq!(b.reg.poll_removed(), None);
}
