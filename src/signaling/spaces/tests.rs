use super::*;
use crate::signaling::protocol::CallAccepted;

const GRACE: Duration = Duration::from_secs(20);
const RING: Duration = Duration::from_secs(30);
const JOIN: Duration = Duration::from_secs(10);

fn config() -> SpacesConfig {
    SpacesConfig {
        max_people: 3,
        reconnect_grace: GRACE,
        ring_timeout: RING,
        ring_rate: 3,
        join_timeout: JOIN,
        max_blocks: 2,
    }
}

fn space(name: &str) -> SpaceId {
    SpaceId::parse(name).expect("valid space")
}

/// Connection `n` is person `p{n}` with resume token `r{n}`.
fn pid(n: u64) -> PeerId {
    PeerId::new(&format!("p{n}"))
}

fn cid(k: u64) -> CallId {
    CallId::new(&format!("c{k}"))
}

fn call_room(k: u64) -> RoomId {
    RoomId::parse(&format!("call-{k}")).expect("valid room")
}

/// Test bench on virtual time; call number `k` is `c{k}` in room `call-{k}`, with the tokens
/// `a{k}` (caller) and `b{k}` (callee).
struct Bench {
    s: Spaces,
    t0: Instant,
    secs: u64,
    calls: u64,
}

impl Bench {
    fn new() -> Bench {
        Bench::with(config())
    }

    fn with(config: SpacesConfig) -> Bench {
        Bench {
            s: Spaces::new(config),
            t0: Instant::now(),
            secs: 0,
            calls: 0,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_secs(self.secs)
    }

    /// Moves virtual time to `secs` and runs what is due.
    fn at(&mut self, secs: u64) -> Vec<Output> {
        self.secs = secs;
        let now = self.now();
        self.s.handle_timeout(now);
        self.drain()
    }

    fn hello_req(&mut self, conn: u64, sp: &str, resume: Option<&str>) -> Vec<Output> {
        let req = HelloRequest {
            space: space(sp),
            name: format!("N{conn}"),
            resume: resume.map(ResumeToken::new),
            admission: Ok(None),
        };
        let fresh = FreshPerson {
            id: pid(conn),
            resume: ResumeToken::new(&format!("r{conn}")),
        };
        let now = self.now();
        self.s.hello(ConnId(conn), req, fresh, now);
        self.drain()
    }

    /// `hello` that must succeed; outputs discarded.
    fn hello(&mut self, conn: u64, sp: &str) {
        let out = self.hello_req(conn, sp, None);
        assert_eq!(
            types(&out, conn).first().map(String::as_str),
            Some("people")
        );
    }

    fn call(&mut self, from: u64, to: u64) -> Vec<Output> {
        self.calls += 1;
        let k = self.calls;
        let fresh = FreshCall {
            id: cid(k),
            room: call_room(k),
            caller_token: CallToken::new(&format!("a{k}")),
            callee_token: CallToken::new(&format!("b{k}")),
        };
        let now = self.now();
        self.s.call(ConnId(from), &pid(to), false, fresh, now);
        self.drain()
    }

    fn accept(&mut self, conn: u64, k: u64) -> Vec<Output> {
        let now = self.now();
        self.s.accept(ConnId(conn), &cid(k), now);
        self.drain()
    }

    /// Alice (1) calls Bob (2) in space `s`, Bob accepts: call 1 in room `call-1`.
    fn accepted_call(&mut self) {
        self.hello(1, "s");
        self.hello(2, "s");
        self.call(1, 2);
        self.accept(2, 1);
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.s.poll_output()).collect()
    }

    fn busy(&self, n: u64) -> bool {
        self.s.people.get(&pid(n)).is_some_and(|p| p.call.is_some())
    }
}

/// What `conn` was sent, as `type` (and `:code` for errors), in order.
fn types(out: &[Output], conn: u64) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, msg } if *c == ConnId(conn) => Some(msg),
            _ => None,
        })
        .map(|msg| {
            let v: serde_json::Value = serde_json::from_str(&msg.to_json()).expect("JSON");
            let kind = v["type"].as_str().unwrap_or("?").to_owned();
            match v["code"].as_str() {
                Some(code) => format!("{kind}:{code}"),
                None => kind,
            }
        })
        .collect()
}

fn sent(out: &[Output], conn: u64) -> Vec<ServerMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, msg } if *c == ConnId(conn) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn busy_msg(n: u64, busy: bool) -> ServerMessage {
    ServerMessage::PersonBusy { id: pid(n), busy }
}

#[test]
fn hello_lists_the_others_and_announces_the_newcomer() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(9, "other");
    let out = b.hello_req(2, "s", None);
    let people = People {
        space: space("s"),
        you: pid(2),
        people: vec![PersonInfo {
            id: pid(1),
            name: "N1".into(),
            busy: false,
        }],
        resume: ResumeToken::new("r2"),
        call: None,
    };
    assert_eq!(sent(&out, 2), [ServerMessage::People(Box::new(people))]);
    let joined = PersonInfo {
        id: pid(2),
        name: "N2".into(),
        busy: false,
    };
    assert_eq!(
        sent(&out, 1),
        [ServerMessage::PersonJoined {
            person: Box::new(joined)
        }]
    );
    assert!(sent(&out, 9).is_empty(), "another space hears nothing");
}

#[test]
fn a_second_hello_on_one_connection_is_refused() {
    let mut b = Bench::new();
    b.hello(1, "s");
    let out = b.hello_req(1, "t", None);
    assert_eq!(types(&out, 1), ["error:already-joined"]);
}

#[test]
fn a_full_space_refuses_with_room_full() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    let out = b.hello_req(4, "s", None);
    assert_eq!(types(&out, 4), ["error:room-full"]);
    assert_eq!(b.s.people_count(), 3);
}

#[test]
fn a_refused_hello_gets_forbidden() {
    let mut b = Bench::new();
    let req = HelloRequest {
        space: space("s"),
        name: "N".into(),
        resume: None,
        admission: Err("no invitation".into()),
    };
    let fresh = FreshPerson {
        id: pid(1),
        resume: ResumeToken::new("r1"),
    };
    b.s.hello(ConnId(1), req, fresh, b.t0);
    assert_eq!(types(&b.drain(), 1), ["error:forbidden"]);
}

#[test]
fn an_invitation_name_replaces_the_hello_name() {
    let mut b = Bench::new();
    let req = HelloRequest {
        space: space("s"),
        name: "Mallory".into(),
        resume: None,
        admission: Ok(Some("Ann".into())),
    };
    let fresh = FreshPerson {
        id: pid(1),
        resume: ResumeToken::new("r1"),
    };
    b.s.hello(ConnId(1), req, fresh, b.t0);
    b.drain();
    b.hello(2, "s");
    let infos = b.s.person_infos(&space("s"), &pid(2));
    assert_eq!(infos[0].name, "Ann");
}

#[test]
fn ringing_makes_both_busy_for_everyone_in_the_space() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    let out = b.call(1, 2);
    assert_eq!(types(&out, 1), ["ringing", "person-busy"]);
    assert_eq!(types(&out, 2), ["ring", "person-busy"]);
    assert_eq!(sent(&out, 3), [busy_msg(2, true), busy_msg(1, true)]);
    let ServerMessage::Ring(ring) = &sent(&out, 2)[0] else {
        panic!("no ring");
    };
    assert_eq!((ring.from.clone(), ring.name.as_str()), (pid(1), "N1"));
    assert!(b.busy(1) && b.busy(2));
}

#[test]
fn accepting_opens_the_room_and_gives_each_side_its_own_token() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    let out = b.accept(2, 1);
    assert_eq!(
        out[0],
        Output::OpenRoom { room: call_room(1) },
        "the room exists before anyone is told to join it"
    );
    let accepted = |token: &str, peer| {
        ServerMessage::CallAccepted(Box::new(CallAccepted {
            call: cid(1),
            room: call_room(1),
            token: CallToken::new(token),
            peer: pid(peer),
            audio_only: false,
        }))
    };
    assert_eq!(sent(&out, 1), [accepted("a1", 2)]);
    assert_eq!(sent(&out, 2), [accepted("b1", 1)]);
    assert!(b.busy(1) && b.busy(2), "a call in progress keeps both busy");
    assert_eq!(b.s.counts().by_outcome[Outcome::Accepted as usize], 1);
}

#[test]
fn declining_and_cancelling_end_the_ring_for_both() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    b.call(1, 2);
    b.s.decline(ConnId(2), &cid(1));
    let out = b.drain();
    assert_eq!(types(&out, 1), ["call-declined", "person-busy"]);
    assert_eq!(types(&out, 2), ["call-declined", "person-busy"]);
    assert_eq!(sent(&out, 3), [busy_msg(2, false), busy_msg(1, false)]);
    assert!(!b.busy(1) && !b.busy(2));

    b.call(1, 2);
    b.s.cancel(ConnId(1), &cid(2));
    let out = b.drain();
    assert_eq!(types(&out, 2)[0], "call-cancelled");
    assert_eq!(types(&out, 1)[0], "call-cancelled");
    assert!(!b.busy(1) && !b.busy(2));
    let counts = b.s.counts().by_outcome;
    assert_eq!(
        (
            counts[Outcome::Declined as usize],
            counts[Outcome::Cancelled as usize]
        ),
        (1, 1)
    );
}

#[test]
fn only_the_callee_answers_and_only_the_caller_cancels() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    b.call(1, 2);
    let now = b.now();
    b.s.accept(ConnId(1), &cid(1), now);
    b.s.decline(ConnId(3), &cid(1));
    b.s.cancel(ConnId(2), &cid(1));
    b.s.accept(ConnId(2), &CallId::new("nope"), now);
    let out = b.drain();
    assert_eq!(types(&out, 1), ["error:not-ringing"]);
    assert_eq!(types(&out, 2), ["error:not-ringing", "error:not-ringing"]);
    assert_eq!(types(&out, 3), ["error:not-ringing"]);
    assert!(b.busy(1) && b.busy(2), "the ring goes on");
    let out = b.accept(2, 1);
    assert_eq!(types(&out, 2), ["call-accepted"]);
    let out = b.accept(2, 1);
    assert_eq!(
        types(&out, 2),
        ["error:not-ringing"],
        "an accepted call rings no more"
    );
}

#[test]
fn a_call_to_a_busy_person_is_answered_busy_and_changes_nothing() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    b.call(1, 2);
    let out = b.call(3, 2);
    assert_eq!(sent(&out, 3), [ServerMessage::CallBusy { call: cid(2) }]);
    assert!(types(&out, 2).is_empty() && types(&out, 1).is_empty());
    assert!(!b.busy(3));
    let out = b.call(3, 1);
    assert_eq!(types(&out, 3), ["call-busy"], "the caller is busy too");
    assert_eq!(b.s.counts().by_outcome[Outcome::Busy as usize], 2);
}

#[test]
fn a_busy_person_cannot_ring_anyone_else() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    b.call(1, 2);
    let out = b.call(1, 3);
    assert_eq!(types(&out, 1), ["error:already-joined"]);
    assert!(types(&out, 3).is_empty());
}

#[test]
fn calling_yourself_someone_gone_or_in_another_space_is_unknown_person() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "t");
    assert_eq!(types(&b.call(1, 1), 1), ["error:unknown-person"]);
    assert_eq!(types(&b.call(1, 2), 1), ["error:unknown-person"]);
    assert_eq!(types(&b.call(1, 7), 1), ["error:unknown-person"]);
    let out = b.call(5, 1);
    assert_eq!(types(&out, 5), ["error:not-joined"], "no hello, no calls");
}

#[test]
fn an_unanswered_call_is_missed_after_the_ring_timeout() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    assert_eq!(b.s.poll_timeout(), Some(b.t0 + RING));
    assert!(b.at(29).is_empty());
    let out = b.at(30);
    assert_eq!(types(&out, 1), ["call-missed", "person-busy"]);
    assert_eq!(types(&out, 2), ["call-missed", "person-busy"]);
    assert!(!b.busy(1) && !b.busy(2));
    assert_eq!(b.s.counts().by_outcome[Outcome::Missed as usize], 1);
}

#[test]
fn an_answered_ring_does_not_time_out_later() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    b.s.decline(ConnId(2), &cid(1));
    b.drain();
    assert!(b.at(30).is_empty());
}

#[test]
fn the_callee_dropping_while_ringing_makes_the_call_missed() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    let out = b.drain();
    assert_eq!(types(&out, 1), ["call-missed", "person-busy"]);
    assert!(!b.busy(1) && !b.busy(2));
    assert!(b.s.people.contains_key(&pid(2)), "away, not gone");
}

#[test]
fn the_caller_dropping_while_ringing_cancels_the_call() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    let now = b.now();
    b.s.disconnect(ConnId(1), now);
    let out = b.drain();
    assert_eq!(types(&out, 2), ["call-cancelled", "person-busy"]);
    assert!(!b.busy(1) && !b.busy(2));
}

#[test]
fn leaving_the_space_while_ringing_ends_the_ring_and_says_goodbye() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    b.s.leave_space(ConnId(2));
    let out = b.drain();
    assert_eq!(
        types(&out, 1),
        ["call-missed", "person-busy", "person-left"]
    );
    assert!(!b.busy(1));
}

#[test]
fn calls_are_rate_limited_per_person() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    for _ in 0..3 {
        b.call(1, 2);
        b.s.cancel(ConnId(1), &cid(b.calls));
        b.drain();
    }
    let out = b.call(1, 2);
    assert_eq!(types(&out, 1), ["error:rate-limited"]);
    assert!(types(&out, 2).is_empty());
    b.at(20);
    assert_eq!(
        types(&b.call(1, 2), 1)[0],
        "ringing",
        "3 a minute: one back after 20 s"
    );
}

#[test]
fn a_blocked_callers_ring_is_silent_and_ends_missed() {
    let mut b = Bench::new();
    for n in 1..=3 {
        b.hello(n, "s");
    }
    b.s.block(ConnId(2), &pid(1));
    assert!(b.drain().is_empty(), "a block is not acknowledged");
    let out = b.call(1, 2);
    assert_eq!(
        sent(&out, 1),
        [ServerMessage::Ringing { call: cid(1) }, busy_msg(2, true)]
    );
    assert_eq!(
        sent(&out, 2),
        [busy_msg(1, true)],
        "the callee sees no ring"
    );
    assert_eq!(
        types(&out, 3),
        ["person-busy"],
        "only the caller is busy to the others"
    );
    assert!(!b.busy(2));
    let now = b.now();
    b.s.accept(ConnId(2), &cid(1), now);
    assert_eq!(types(&b.drain(), 2), ["error:not-ringing"]);
    let out = b.at(30);
    assert_eq!(
        sent(&out, 1)[..2],
        [
            ServerMessage::CallMissed { call: cid(1) },
            busy_msg(2, false)
        ]
    );
    assert_eq!(sent(&out, 2), [busy_msg(1, false)]);
    b.s.unblock(ConnId(2), &pid(1));
    assert_eq!(types(&b.call(1, 2), 2), ["ring", "person-busy"]);
}

#[test]
fn blocks_are_bounded_and_need_a_person_of_the_space() {
    let mut b = Bench::with(SpacesConfig {
        max_people: 10,
        ..config()
    });
    for n in 1..=4 {
        b.hello(n, "s");
    }
    b.hello(9, "t");
    b.s.block(ConnId(1), &pid(9));
    b.s.block(ConnId(1), &pid(1));
    b.s.block(ConnId(1), &pid(2));
    b.s.block(ConnId(1), &pid(3));
    b.s.block(ConnId(1), &pid(4));
    let out = b.drain();
    assert_eq!(
        types(&out, 1),
        [
            "error:unknown-person",
            "error:unknown-person",
            "error:bad-request"
        ]
    );
    b.s.leave_space(ConnId(2));
    b.drain();
    b.s.block(ConnId(1), &pid(4));
    assert!(
        types(&b.drain(), 1).is_empty(),
        "blocks of people gone make room"
    );
}

#[test]
fn only_the_two_sides_with_their_token_may_join_the_call_room() {
    let mut b = Bench::new();
    b.accepted_call();
    b.hello(3, "s");
    let r = call_room(1);
    let admit = |b: &Bench, conn, token: Option<&str>, resume: Option<&str>| {
        let resume = resume.map(ResumeToken::new);
        b.s.admit_to_room(ConnId(conn), &r, token, resume.as_ref())
    };
    let entry = |n: u64| RoomEntry {
        id: pid(n),
        name: format!("N{n}"),
        resume: ResumeToken::new(&format!("r{n}")),
    };
    assert_eq!(admit(&b, 1, Some("a1"), None), Some(Ok(entry(1))));
    assert_eq!(admit(&b, 2, Some("b1"), None), Some(Ok(entry(2))));
    assert_eq!(
        admit(&b, 2, None, Some("r2")),
        Some(Ok(entry(2))),
        "a resume"
    );
    assert!(
        matches!(admit(&b, 1, Some("b1"), None), Some(Err(_))),
        "the other's token"
    );
    assert!(
        matches!(admit(&b, 3, Some("a1"), None), Some(Err(_))),
        "a third person"
    );
    assert!(
        matches!(admit(&b, 8, Some("a1"), None), Some(Err(_))),
        "not in the space"
    );
    assert!(matches!(admit(&b, 1, None, None), Some(Err(_))));
    let other = RoomId::parse("standup").unwrap();
    assert_eq!(b.s.admit_to_room(ConnId(3), &other, None, None), None);
}

#[test]
fn leaving_the_call_room_ends_the_call_for_both() {
    let mut b = Bench::new();
    b.accepted_call();
    b.hello(3, "s");
    b.s.entered_room(&call_room(1), &pid(1));
    b.s.entered_room(&call_room(1), &pid(2));
    b.s.left_room(&call_room(1), &pid(1));
    let out = b.drain();
    assert_eq!(
        out[0],
        Output::CloseRoom {
            room: call_room(1),
            departing: None
        }
    );
    assert_eq!(types(&out, 1), ["call-ended", "person-busy"]);
    assert_eq!(types(&out, 2), ["call-ended", "person-busy"]);
    assert_eq!(sent(&out, 3), [busy_msg(1, false), busy_msg(2, false)]);
    assert!(!b.busy(1) && !b.busy(2));
    assert!(!b.s.is_call_room(&call_room(1)));
    assert!(
        matches!(b.s.admit_to_room(ConnId(1), &call_room(1), Some("a1"), None), Some(Err(m)) if m.contains("ended")),
        "a late join of the room is refused clearly"
    );
    assert_eq!(b.s.counts().by_outcome[Outcome::Ended as usize], 1);
    assert!(b.at(60).is_empty(), "no deadline of the ended call fires");
}

#[test]
fn an_accepted_call_nobody_joins_in_time_ends() {
    let mut b = Bench::new();
    b.accepted_call();
    b.s.entered_room(&call_room(1), &pid(1));
    let out = b.at(10);
    assert!(out.contains(&Output::CloseRoom {
        room: call_room(1),
        departing: None
    }));
    assert_eq!(types(&out, 2)[0], "call-ended");
}

#[test]
fn once_both_joined_the_call_has_no_deadline() {
    let mut b = Bench::new();
    b.accepted_call();
    b.s.entered_room(&call_room(1), &pid(1));
    b.s.entered_room(&call_room(1), &pid(2));
    assert!(b.at(600).is_empty());
    assert!(b.busy(1) && b.busy(2));
}

#[test]
fn hanging_up_before_joining_the_room_ends_the_call() {
    let mut b = Bench::new();
    b.accepted_call();
    assert!(b.s.hang_up(ConnId(2)));
    let out = b.drain();
    assert_eq!(
        out[0],
        Output::CloseRoom {
            room: call_room(1),
            departing: Some(pid(2))
        }
    );
    assert_eq!(types(&out, 1)[0], "call-ended");
    assert!(!b.s.hang_up(ConnId(2)), "nothing left to hang up");
}

#[test]
fn a_resume_during_a_call_keeps_everything_and_announces_the_call_again() {
    let mut b = Bench::new();
    b.accepted_call();
    b.hello(3, "s");
    b.s.entered_room(&call_room(1), &pid(1));
    b.s.entered_room(&call_room(1), &pid(2));
    b.secs = 5;
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    assert!(b.drain().is_empty(), "the others see nothing");
    b.secs = 15;
    let out = b.hello_req(12, "s", Some("r2"));
    assert_eq!(types(&out, 12), ["people", "call-accepted"]);
    let ServerMessage::People(p) = &sent(&out, 12)[0] else {
        panic!("no people");
    };
    assert_eq!((p.you.clone(), p.resume.as_str()), (pid(2), "r2"));
    assert_eq!(p.call, Some(cid(1)), "people names the call that goes on");
    assert!(types(&out, 1).is_empty() && types(&out, 3).is_empty());
    assert!(b.at(60).is_empty(), "the old grace deadline is void");
    assert!(b.busy(2));
    assert!(b
        .s
        .admit_to_room(ConnId(12), &call_room(1), Some("b1"), None)
        .is_some_and(|r| r.is_ok()));
}

#[test]
fn a_call_that_ended_while_away_is_told_on_resume_and_only_once() {
    let mut b = Bench::new();
    b.accepted_call();
    b.s.entered_room(&call_room(1), &pid(1));
    b.s.entered_room(&call_room(1), &pid(2));
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    b.drain();
    assert!(b.s.hang_up(ConnId(1)));
    b.drain();
    b.secs = 5;
    let out = b.hello_req(12, "s", Some("r2"));
    assert_eq!(types(&out, 12), ["people", "call-ended"]);
    let ServerMessage::People(p) = &sent(&out, 12)[0] else {
        panic!("no people");
    };
    assert_eq!(p.call, None);
    assert!(!b.busy(2));
    // A second resume has nothing left to tell.
    let now = b.now();
    b.s.disconnect(ConnId(12), now);
    b.drain();
    let out = b.hello_req(22, "s", Some("r2"));
    assert_eq!(types(&out, 22), ["people"]);
}

#[test]
fn a_ring_that_ended_with_the_dropped_callee_is_told_on_resume() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.call(1, 2);
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    assert_eq!(types(&b.drain(), 1)[0], "call-missed");
    let out = b.hello_req(12, "s", Some("r2"));
    assert_eq!(types(&out, 12), ["people", "call-missed"]);
}

#[test]
fn a_resume_replacing_a_live_connection_closes_the_old_one() {
    let mut b = Bench::new();
    b.hello(1, "s");
    let out = b.hello_req(11, "s", Some("r1"));
    assert_eq!(out[0], Output::Close { conn: ConnId(1) });
    assert_eq!(types(&out, 11), ["people"]);
    let now = b.now();
    b.s.disconnect(ConnId(1), now);
    assert!(
        b.drain().is_empty(),
        "the old connection's end changes nothing"
    );
    assert!(b.s.people_by_conn.contains_key(&ConnId(11)));
}

#[test]
fn a_resume_token_of_another_space_makes_a_new_person() {
    let mut b = Bench::new();
    b.hello(1, "s");
    let out = b.hello_req(2, "t", Some("r1"));
    let ServerMessage::People(p) = &sent(&out, 2)[0] else {
        panic!("no people");
    };
    assert_eq!(p.you, pid(2));
}

#[test]
fn away_past_the_grace_ends_the_call_and_the_presence() {
    let mut b = Bench::new();
    b.accepted_call();
    b.s.entered_room(&call_room(1), &pid(1));
    b.s.entered_room(&call_room(1), &pid(2));
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    b.drain();
    assert!(b.at(19).is_empty());
    let out = b.at(20);
    assert_eq!(
        out[0],
        Output::CloseRoom {
            room: call_room(1),
            departing: Some(pid(2))
        },
        "the leaver leaves the room first: the other sees peer-left before call-ended"
    );
    assert_eq!(types(&out, 1), ["call-ended", "person-busy", "person-left"]);
    assert!(!b.s.people.contains_key(&pid(2)));
    assert!(!b.busy(1));
}

#[test]
fn an_evicted_person_leaves_at_once() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    b.s.evict(ConnId(2));
    assert_eq!(types(&b.drain(), 1), ["person-left"]);
    assert_eq!(b.s.people_count(), 1);
    b.s.leave_space(ConnId(1));
    b.drain();
    assert!(b.s.spaces.is_empty(), "an empty space is forgotten");
}

#[test]
fn with_no_grace_a_drop_is_a_leave() {
    let mut b = Bench::with(SpacesConfig {
        reconnect_grace: Duration::ZERO,
        ..config()
    });
    b.hello(1, "s");
    b.hello(2, "s");
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    assert_eq!(types(&b.drain(), 1), ["person-left"]);
}

#[test]
fn a_ring_that_started_while_the_callee_was_away_reaches_it_on_resume() {
    let mut b = Bench::new();
    b.hello(1, "s");
    b.hello(2, "s");
    let now = b.now();
    b.s.disconnect(ConnId(2), now);
    let out = b.call(1, 2);
    assert_eq!(types(&out, 1), ["ringing", "person-busy"]);
    b.secs = 5;
    let out = b.hello_req(12, "s", Some("r2"));
    assert_eq!(types(&out, 12), ["people", "ring"]);
    let out = b.accept(12, 1);
    assert_eq!(types(&out, 1), ["call-accepted"]);
}
